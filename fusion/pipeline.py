"""The offline pipeline: a recorded session in, fused whole-body motion out.

Stages, and where each lives:
1. people (:func:`load_inputs`, :func:`load_people`): every Kinect's body tracking mapped into the
   world frame and onto the session clock, bodies made people (``capture.people``,
   ``capture.skeleton_fusion``);
2-4. the hand stage (:func:`observe_window` in batches of panorama frames, running
   ``fusion.frame_stage.HandStage``, the same stage the live preview runs, ``fusion.live.preview``):
   the Kinect hand joints predicted at each frame's time, a wrist-centred view per person and side
   (``geometry.views``), the hand backend (``sim`` observer or ``wilor``, :func:`make_estimator`),
   association to the skeleton's side (``fusion.frame_stage.SideConsistency``), lifting on the Kinect
   hand joints (``fusion.lifting``) and the depth cue from the Kinect depth maps (``fusion.depth_cue``);
5. resampling of the hands from panorama frame times to the output times (the reference Kinect's
   frame times), positions by cubic Hermite, rotations by slerp, then smoothing
   (:func:`_hands_at_output_times`, ``geometry.resample``, ``fusion.filtering``);
6. the SMPL-X body fit to the Kinect joints, each smoothed with its own noise (:func:`body_targets`),
   and hand integration (:func:`_fit_bodies`, ``fusion.body_fit``, ``fusion.hand_integration``), then the results folder (:func:`write_results`, ``fusion.export``).

Stage 1 reads the whole session once; stages 2-6 run over a window of output frames
(:func:`process_window`), so a long session is processed in time chunks with overlap and stitched
(``fusion.chunks``; ``omnimocap batch`` runs the chunks in parallel) and each stage's cost is linear
in the session's length.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from omnimocap import __version__
from omnimocap.capture.dual_fisheye import pano_camera
from omnimocap.capture.rig import Rig
from omnimocap.geometry.transforms import transform_points
from omnimocap.capture.session import MANIFEST, RIG, Session, atomic_write_json
from omnimocap.data.skeletons import HAND21_INDEX, KINECT_WRIST, SIDES
from omnimocap.errors import InputError, UserError
from omnimocap.fusion.depth_cue import DepthCueConfig, load_depth_frames
from omnimocap.fusion.body_fit import BodyFitConfig
from omnimocap.capture.people import PeopleConfig
from omnimocap.fusion.filtering import SmootherConfig, estimate_noise_std, smooth_positions, smooth_rotations
from omnimocap.fusion.hand_refine import HandRefineConfig
from omnimocap.geometry.resample import interpolate_positions, interpolate_rotations
from omnimocap.fusion.results_folder import check_output_path, results_lock, write_results_folder
from omnimocap.fusion.frame_stage import (  # noqa: F401  (VIEW_*: names of the pipeline's results)
    VIEW_GATED, VIEW_NO_HAND, VIEW_OBSERVED, VIEW_RELABELLED, VIEW_SIDE_MISMATCH, HandStage, ObservedView,
    PanoModelConfig, hand_centre_velocity, joint_depth_std, predicted_hands, smooth_anchors,
)
from omnimocap.hands.estimator import HandEstimator

# Hand views on the contact sheet views_preview.png.
PREVIEW_VIEWS = 12


@dataclass
class ProcessConfig:
    """Configuration of ``omnimocap process``; saved as ``config.json`` beside every result."""

    hands: str = "wilor"
    """Hand backend: wilor (real reconstruction) or sim (the simulated observer, an instrument for
    simulated sessions)."""
    device: str = "cpu"
    """Torch device for WiLoR and the body fit: ``cpu`` or ``cuda``."""
    hand_noise_mm: float = 0.0
    """``sim`` only: Gaussian noise on the observed hand joints, millimetres."""
    hand_noise_deg: float = 0.0
    """``sim`` only: rotation noise on the observed hand rotations, degrees."""
    hand_dropout: float = 0.0
    """``sim`` only: probability that a hand is not returned."""
    seed: int = 0
    """Seed of the ``sim`` observer's noise."""
    view_size: int = 256
    """Side of the wrist-centred views, pixels."""
    view_margin: float = 1.25
    """Field of view = margin x the predicted hand's angular extent."""
    hand_radius_m: float = 0.13
    """Radius of the sphere around the predicted hand centre that the view must contain, metres."""
    camera_model: PanoModelConfig = field(default_factory=PanoModelConfig)
    """Which of the 360 camera's optics (the rig's ``pano_optics``: lens centres, rolling shutter,
    seam) and native resolution the hand views and lifting model (``fusion.frame_stage``)."""
    batch_frames: int = 16
    """Panorama frames whose views go through the hand backend as one batch."""
    depth_weights: dict[str, float] = field(default_factory=lambda: {"wrist": 1.0, "hand": 1.0, "handtip": 0.5, "thumb": 0.5})
    """Weights of the Kinect hand joints in the hand's depth along the viewing ray (``depth.arm_anchor`` off)."""
    hand_refine: HandRefineConfig = field(default_factory=HandRefineConfig)
    """Repairs of the hand network's observations before and after lifting: its hand size held to
    the track's, its position from all its 2D keypoints, another hand's box and false hands rejected
    by their consistency with the Kinect's prediction (``fusion.hand_refine``)."""
    max_gate_m: float = 0.15
    """A lifted wrist further than this from the Kinect-predicted wrist is rejected, metres."""
    max_hand_gap_s: float = 0.1
    """Hand observations further apart in time than this are not interpolated between, seconds."""
    depth_cue: bool = True
    """Refine each hand's depth along its viewing ray with the Kinect depth maps, where the session's
    Kinect recordings have them (``fusion.depth_cue``)."""
    depth: DepthCueConfig = field(default_factory=DepthCueConfig)
    """Parameters of the depth cue."""
    joint_depth_floor_m: float = 0.002
    """Lowest standard deviation assumed for the depth fitted to the Kinect hand joints, metres
    (otherwise the measured noise of the person's Kinect hand joints)."""
    surface_mano: str | None = None
    """MANO_RIGHT file (or its folder) that poses the hand surface for backends that return no
    vertices (the ``sim`` observer); default: the built-in synthetic MANO that simulations draw."""
    side_persist: int = 3
    """Consecutive observations of a (person, side) labelled as the other side after which the label is
    overruled by the skeleton's side (see :class:`~omnimocap.fusion.frame_stage.SideConsistency`)."""
    models: str | None = None
    """Models directory (default: $OMNIMOCAP_MODELS or ~/.cache/omnimocap/models)."""
    smplx_model: str | None = None
    """SMPL-X model file whose skeleton the body is fitted on (default: the models folder's
    ``smplx/SMPLX_<GENDER>.npz`` when present, else the built-in skeleton, which the synthetic model
    files reproduce)."""
    gender: str = "neutral"
    """Which SMPL-X file of the models folder the fit uses: neutral, female or male."""
    preview: bool = True
    """Write ``views_preview.png``, a contact sheet of hand views (decodes some panorama frames)."""
    people: PeopleConfig = field(default_factory=PeopleConfig)
    """How Kinect bodies become people: id re-linking, left/right repair, drop-out bridging
    (``capture.people``)."""
    body: BodyFitConfig = field(default_factory=BodyFitConfig)
    """The SMPL-X body fit (``fusion.body_fit``; its ``device`` is replaced by ``device`` above)."""
    body_joint_smoothing: bool = True
    """Smooth each Kinect joint the body fit reads with its own measured noise (``smoothing`` adapts
    one noise level per person, so the far noisier ankles, feet and wrists are smoothed as little as
    the trunk); with ``smoothing`` off, or this off, the body is fitted to the hand anchors."""
    body_noise_scale: float = 16.0
    """Factor on each Kinect joint's noise measured from second differences
    (:func:`~omnimocap.fusion.filtering.estimate_noise_std`) for ``body_joint_smoothing``: k4abt's
    noise is correlated over a few frames, and second differences see only a small part of it. On
    simulated 15 s sessions (ideal, field, independent errors) the body error fell with the factor
    up to about 16 (by 0.9-1.3 mm against the person's one noise level) and rose again beyond 25."""
    smoothing: bool = True
    """Temporal smoothing, adapted to each track's measured noise, of the Kinect joints that anchor
    the hands' depth and of the fused hands (noise-free data pass unchanged)."""
    position_smoother: SmootherConfig = field(default_factory=SmootherConfig)
    """Smoother for positions (Kinect joints, hand joints), metres."""
    rotation_smoother: SmootherConfig = field(default_factory=lambda: SmootherConfig(jerk_std=100.0, noise_floor_m=1e-4))
    """Smoother for hand rotations (on unit quaternions)."""


@dataclass
class PeopleTracks:
    """Kinect bodies in the world frame at the output times (the reference Kinect's frames)."""

    t_session: np.ndarray  # (F,)
    person_ids: list[int]
    joints: np.ndarray  # (P, F, 32, 3) world, NaN where missing
    confidence: np.ndarray  # (P, F, 32) k4abt levels
    counts: dict = field(default_factory=dict)
    repairs: dict = field(default_factory=dict)
    """What ``capture.people`` found: people, body tracks, frames whose left/right labels were exchanged."""


def load_people(session: Session, rig: Rig, config: PeopleConfig | None = None) -> PeopleTracks:
    """Read every Kinect's body tracking, map it into the world and onto the session clock.

    The first Kinect in the manifest is the reference: its frame times are the output times.
    Bodies become people through ``capture.people`` (ids re-linked over time, left/right labels
    decided, drop-outs bridged; ``config`` switches each) and, with several Kinects, their skeletons
    are fused per person (``capture.skeleton_fusion``). A person's id is its body id in the reference
    Kinect (the first one it had there), or a new id above all body ids.
    """
    from omnimocap.capture.bodies import read_bodies
    from omnimocap.capture.skeleton_fusion import BodyTrack, fuse_people

    config = config or PeopleConfig()
    kinects = session.kinects()
    if not kinects:
        raise InputError("the session has no Kinect", path=session.root / MANIFEST)
    tracks = []
    counts: dict = {}
    t_ref = None
    for entry in kinects:
        if not entry.bodies:
            raise InputError(f"Kinect {entry.serial} has no body tracking file",
                             path=session.root / MANIFEST, fix=f"run `omnimocap track {session.root}`")
        rec = read_bodies(session.path(entry.bodies))
        T = rig.pose(entry.name)
        t = rig.time_map(entry.name).to_session(rec.timestamps)
        if t_ref is None:
            t_ref = t
        for body_id in sorted(rec.bodies):
            track = rec.bodies[body_id]
            tracks.append(BodyTrack(entry.name, body_id, t, transform_points(T, track.positions),
                                    track.confidences, T[:3, 3]))
        counts[entry.name] = rec.stats.to_dict()
    reference = kinects[0].name
    if not any(tr.device == reference for tr in tracks):
        raise InputError("no body was tracked in the reference Kinect's recording",
                         path=session.path(kinects[0].bodies))
    people = fuse_people(tracks, t_ref, config=config)
    if not config.relink_ids:
        people = [pp for pp in people if any(tracks[k].device == reference for k in pp.tracks)]
    if not people:
        raise InputError("no person was tracked long enough in the Kinects' recordings",
                         path=session.path(kinects[0].bodies))
    ids: list[int] = []
    spare = max(tr.body_id for tr in tracks) + 1
    for pp in people:
        own = [tracks[k].body_id for k in pp.tracks if tracks[k].device == reference and tracks[k].body_id not in ids]
        ids.append(own[0] if own else spare)
        spare += 0 if own else 1
    joints = np.stack([pp.joints for pp in people])
    # fused confidence in [0, 1] back onto the k4abt levels the body fit weighs
    conf = np.stack([np.digitize(pp.confidence, [1e-6, 0.5, 0.97]) for pp in people]).astype(np.int64)
    repairs = {"people": len(people), "body_tracks": len(tracks),
               "frames_relabelled": {str(i): int(sum(m.sum() for m in pp.swapped.values())) for i, pp in zip(ids, people)}}
    return PeopleTracks(t_ref, list(ids), joints, conf, counts, repairs)


def make_estimator(config: ProcessConfig, session: Session) -> HandEstimator:
    if config.hands == "sim":
        if not session.manifest.simulated or not session.truth_dir.is_dir():
            raise UserError("--hands sim needs a simulated session with truth/", path=session.root,
                            fix="use --hands wilor for recorded sessions")
        from omnimocap.hands.sim_backend import SimHandObserver

        return SimHandObserver(session.root, noise_mm=config.hand_noise_mm, noise_deg=config.hand_noise_deg,
                               dropout=config.hand_dropout, seed=config.seed)
    if config.hands == "wilor":
        from omnimocap.hands.wilor.backend import WilorEstimator

        return WilorEstimator.from_models_dir(config.models, device=config.device)
    raise UserError(f"unknown hand backend '{config.hands}'", fix="use --hands sim or --hands wilor")


"""File that marks a folder as written by ``omnimocap process``: ``--overwrite`` replaces only such
folders. JSON: the format name, the omnimocap version and the session's identity."""


def session_identity(session: Session) -> str:
    """A hex digest that identifies a recording, unchanged by calibration, sync and tracking: the
    manifest's creation time, the simulated flag, the devices' kinds and serials, and the 360
    stream's frame times file (written while recording; it differs between recordings and between
    simulations of different seeds or lengths)."""
    manifest = session.manifest
    stable = {"created": manifest.created, "simulated": bool(manifest.simulated),
              "devices": [[d.kind, d.serial] for d in manifest.devices]}
    digest = hashlib.sha256(json.dumps(stable, sort_keys=True).encode())
    pano = [d for d in manifest.devices if d.kind == "pano"]
    if pano and pano[0].timestamps and session.path(pano[0].timestamps).is_file():
        digest.update(session.path(pano[0].timestamps).read_bytes())
    return digest.hexdigest()


def _check_pano_size(session: Session) -> None:
    """The manifest's 360 frame size, when given, must be a positive whole number of pixels."""
    entry = session.pano()
    for key in ("width", "height"):
        value = getattr(entry, key)
        whole = isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
        if value is not None and not (whole and value > 0):
            raise InputError(f"the 360 stream's {key} is {value!r}, not a positive whole number of pixels",
                             path=session.root / MANIFEST,
                             fix=f"set the pano device's {key} to the video's frame {key}, or remove it")


def process_session(session_dir: str | Path, out_dir: str | Path, config: ProcessConfig | None = None,
                    overwrite: bool = False, progress: bool = True) -> dict:
    """Run the whole offline pipeline; returns the report (also written as ``report.json``).

    Results are assembled in a partial folder beside ``out_dir`` and moved to ``out_dir`` only when
    complete, so a crash never leaves a half-written folder that looks finished; a failed run
    removes only its own partial folder. ``out_dir`` may not be, contain or lie inside the session;
    an existing one is replaced only with ``overwrite`` and only when it is a results folder
    (``fusion.results_folder``). One process at a time writes a given ``out_dir`` (:func:`results_lock`).
    """
    config = config or ProcessConfig()
    out_dir = Path(os.path.abspath(out_dir))
    check_output_path(out_dir, Path(session_dir))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with results_lock(out_dir):
        # a recorder that was killed leaves journals and a manifest still saying "recording": read
        # them as the recorder would have finalized them, without writing into the session
        from omnimocap.capture.recovery import recover_session

        session, recovered = recover_session(session_dir)
        rig = Rig.load(session.rig_path)
        _check_pano_size(session)
        return write_results_folder(out_dir, overwrite, session_identity(session),
                                    lambda work: _process(session, rig, work, config, progress, recovered))


@dataclass
class SessionInputs:
    """What every time window of a session's processing reads, loaded once per session."""

    people: PeopleTracks
    t_pano_session: np.ndarray  # (F_pano,) session time of every panorama frame, seconds
    anchor_noise_std: np.ndarray  # (P,) measured noise of each person's Kinect joints, metres
    joint_depth_std: np.ndarray  # (P,) standard deviation assumed for the depth on the Kinect hand joints, metres
    smplx_path: Path | None = None  # the SMPL-X file every window fits (resolved once), None: the built-in skeleton
    betas: np.ndarray | None = None  # (P, B) body shape over the whole session; None: fitted per window
    joint_offsets: np.ndarray | None = None  # (P, J, 3) joint-definition offsets over the session; None: per window
    notes: list[str] = field(default_factory=list)  # losses found while loading, for the report
    joint_noise_std: np.ndarray | None = None  # (P, 32) measured noise of each Kinect joint of each person, metres


def load_inputs(session: Session, rig: Rig, config: ProcessConfig) -> SessionInputs:
    """Kinect people, panorama frame times and the session-wide noise of the Kinect joints (so that
    windows of one session are smoothed alike)."""
    from omnimocap.capture.pano import read_pano_timestamps
    from omnimocap.fusion.body_model import resolve_smplx_model

    people = load_people(session, rig, config.people)
    pano_entry = session.pano()
    stamps = read_pano_timestamps(session.pano_frames_path(pano_entry))
    t_pano_session = rig.time_map("pano").to_session(stamps.t_pano)
    from omnimocap.capture.session_check import coverage_notes, pano_frame_notes

    notes = pano_frame_notes(session, pano_entry, stamps) + coverage_notes(people.t_session, t_pano_session,
                                                                          session.rig_path)
    noise = np.array([estimate_noise_std(j) for j in people.joints])
    joint_std = joint_depth_std(people, config.joint_depth_floor_m, config.depth.arm_anchor, config.depth.wrist_floor_m)
    return SessionInputs(people, t_pano_session, noise, joint_std,
                         resolve_smplx_model(config.smplx_model, config.models, config.gender),
                         joint_noise_std=joint_noise_std(people), notes=notes)


def joint_noise_std(people: PeopleTracks) -> np.ndarray:
    """(P, 32) the measured noise (metres) of every Kinect joint of every person over the tracks
    given (:func:`~omnimocap.fusion.filtering.estimate_noise_std`; NaN for a joint never seen)."""
    P, _, J, _ = people.joints.shape
    noise = np.full((P, J), np.nan)
    for p in range(P):
        for j in range(J):
            track = people.joints[p][:, j]
            if np.isfinite(track).any():
                noise[p, j] = estimate_noise_std(track)
    return noise


# Frames a session-wide body fit looks at, at most (evenly spread): enough for a shape and constant
# offsets, and a cost that does not grow with the session.
SESSION_BODY_FRAMES = 900


def fit_session_body(inputs: SessionInputs, config: ProcessConfig) -> None:
    """Fit every person's body shape and joint-definition offsets over the whole session (at most
    :data:`SESSION_BODY_FRAMES` frames spread over it), into ``inputs.betas`` and
    ``inputs.joint_offsets``, so that windows fitted apart share them."""
    from omnimocap.fusion.body_fit import KINECT_BODY_FOR_FIT, fit_body
    from omnimocap.fusion.body_model import load_skeleton

    skeleton = load_skeleton(inputs.smplx_path)
    body_cfg = replace(config.body, device=config.device)
    people = inputs.people
    P, F = len(people.person_ids), len(people.t_session)
    stride = max(1, -(-F // SESSION_BODY_FRAMES))
    betas = np.zeros((P, skeleton.num_betas))
    offsets = np.zeros((P, len(KINECT_BODY_FOR_FIT), 3))
    # the joints the windows' fits read (each smoothed with its own noise), so that shape and offsets agree with them
    joints = (body_targets(people, config, inputs.joint_noise_std) if config.body_joint_smoothing and config.smoothing
              else people.joints)
    for p in range(P):
        fit = fit_body(joints[p, ::stride], people.confidence[p, ::stride], skeleton, body_cfg)
        betas[p] = fit.betas
        offsets[p] = list(fit.joint_offsets.values())
    inputs.betas, inputs.joint_offsets = betas, offsets


@dataclass
class WindowResult:
    """The stages' outputs for the output frames ``first..last-1`` of a session (indices into the
    reference Kinect's frames); hand views and observations of the panorama frames
    ``pano_first..pano_last-1``. World frame, metres; rotations as matrices."""

    first: int
    last: int
    pano_first: int
    pano_last: int
    fps: float
    hand_joints: np.ndarray  # (P, n, 2, 21, 3), NaN where not valid
    hand_R: np.ndarray  # (P, n, 2, 3, 3)
    hand_pose: np.ndarray  # (P, n, 2, 15, 3, 3)
    hand_valid: np.ndarray  # (P, n, 2)
    obs_betas: np.ndarray  # (P, n_pano, 2, 10) MANO shape of each observed hand
    obs_valid: np.ndarray  # (P, n_pano, 2)
    local: np.ndarray  # (P, n, 55, 3, 3) SMPL-X local rotations
    transl: np.ndarray  # (P, n, 3)
    betas: np.ndarray  # (P, B)
    status: np.ndarray  # (P, n, 2) hand integration status
    views: dict  # per planned view: frame_index (global), person, side, t_session, R_pano_view, fx, size, outcome, t_capture
    depth_shifts: np.ndarray  # (V,) per view that used the depth cue: pano frame index and shift (metres), (V, 2)
    depth_not_measured: np.ndarray  # (W,) pano frame index of each lifted hand the depth maps did not measure
    kinects_with_depth: int
    notes: list
    preview: list
    timings: dict


def process_window(session: Session, rig: Rig, inputs: SessionInputs, config: ProcessConfig, first: int,
                   last: int, estimator: HandEstimator | None = None, progress: bool = False,
                   preview: bool = True) -> WindowResult:
    """Stages 2-6 for the output frames ``first..last-1``: the views, hands and lifting of every
    panorama frame from ``max_hand_gap_s`` before the first to as much after the last (all of them
    at the session's ends), the hands resampled to the output times, the body fit and hand
    integration. Every cost is proportional to the window's length; the whole session is one window.
    ``preview``: collect the hand views of ``views_preview.png`` (decodes panorama frames)."""
    people, pano_first, pano_last = _window_people(inputs, config, first, last)
    t_pano = inputs.t_pano_session[pano_first:pano_last]
    timings: dict[str, float] = {}
    t_views = time.perf_counter()
    anchors = smooth_anchors(people, inputs.anchor_noise_std, config)
    observed = observe_window(session, rig, inputs, config, anchors, pano_first, pano_last, estimator,
                              config.preview and preview, progress)
    timings["views_and_hands"] = time.perf_counter() - t_views
    hands = _hands_at_output_times(observed, t_pano, people.t_session, config)
    t_fit = time.perf_counter()
    bodies = _fit_bodies(inputs, anchors, people, hands, config)
    timings["body_fit"] = time.perf_counter() - t_fit
    return WindowResult(first, last, pano_first, pano_last, hands.fps, hands.joints, hands.R, hands.pose, hands.valid,
                        observed.betas, observed.valid, *bodies, observed.views_table(),
                        np.array(observed.depth_shifts, dtype=np.float64).reshape(-1, 2),
                        np.array(observed.depth_not_measured, dtype=np.int64), observed.kinects_with_depth,
                        observed.depth_notes,
                        observed.preview, timings)


def _window_people(inputs: SessionInputs, config: ProcessConfig, first: int, last: int) -> tuple[PeopleTracks, int, int]:
    """The people at the output frames ``first..last-1`` and the panorama frames whose hands they
    need: from ``max_hand_gap_s`` before to as much after (to the session's ends at its ends)."""
    people_all = inputs.people
    F_all, F_pano_all = len(people_all.t_session), len(inputs.t_pano_session)
    people = replace(people_all, t_session=people_all.t_session[first:last],
                     joints=people_all.joints[:, first:last], confidence=people_all.confidence[:, first:last])
    t_all = inputs.t_pano_session
    pano_first = 0 if first == 0 else int(np.searchsorted(t_all, people.t_session[0] - config.max_hand_gap_s))
    pano_last = F_pano_all if last >= F_all else int(np.searchsorted(t_all, people.t_session[-1] + config.max_hand_gap_s,
                                                                     side="right"))
    return people, pano_first, pano_last


@dataclass
class WindowObservations:
    """The hands lifted in a window's panorama frames (P, F_pano, 2, ...), world frame, and what
    became of every planned view (rows of ``WindowResult.views``)."""

    valid: np.ndarray  # (P, F_pano, 2)
    t_capture: np.ndarray  # (P, F_pano, 2) session time each hand was captured (its frame's where none), s
    joints: np.ndarray  # (P, F_pano, 2, 21, 3)
    R: np.ndarray  # (P, F_pano, 2, 3, 3)
    pose: np.ndarray  # (P, F_pano, 2, 15, 3, 3)
    betas: np.ndarray  # (P, F_pano, 2, 10)
    pano_first: int
    rows: list = field(default_factory=list)
    depth_shifts: list = field(default_factory=list)  # (pano frame index, shift m)
    depth_not_measured: list = field(default_factory=list)  # pano frame indices
    preview: list = field(default_factory=list)  # view images for views_preview.png
    kinects_with_depth: int = 0  # Kinects whose depth maps the depth cue read
    depth_notes: list = field(default_factory=list)  # depth recordings that could not be used

    @classmethod
    def empty(cls, P: int, F_pano: int, pano_first: int, t_pano: np.ndarray) -> "WindowObservations":
        """No hands yet in the ``F_pano`` frames from ``pano_first``, taken at ``t_pano`` (F_pano,)."""
        t_capture = np.broadcast_to(np.asarray(t_pano, dtype=np.float64)[None, :, None], (P, F_pano, 2)).copy()
        return cls(np.zeros((P, F_pano, 2), dtype=bool), t_capture, np.full((P, F_pano, 2, 21, 3), np.nan),
                   np.broadcast_to(np.eye(3), (P, F_pano, 2, 3, 3)).copy(),
                   np.broadcast_to(np.eye(3), (P, F_pano, 2, 15, 3, 3)).copy(), np.zeros((P, F_pano, 2, 10)), pano_first)

    def add(self, views: list[ObservedView]) -> None:
        """Keep the outcome of every view and the hands that are used."""
        for ov in views:
            pv = ov.planned
            self.rows.append((ov.request.frame_index, pv.person, pv.side, ov.request.t_session, pv.view.R_pano_view,
                              pv.view.camera.fx, pv.view.size, ov.outcome, ov.t_capture))
            if ov.depth_tried:
                if ov.depth_shift_m is None:
                    self.depth_not_measured.append(ov.request.frame_index)
                else:
                    self.depth_shifts.append((ov.request.frame_index, ov.depth_shift_m))
            if ov.lifted is None:
                continue
            at = (pv.person, pv.k, pv.side)
            self.valid[at] = True
            self.t_capture[at] = ov.t_capture
            self.joints[at], self.R[at] = ov.lifted.joints, ov.lifted.R_world
            self.pose[at], self.betas[at] = ov.lifted.hand_pose, ov.lifted.betas

    def add_preview(self, views: list[ObservedView]) -> None:
        """Views of every 15th panorama frame, until the contact sheet is full."""
        for ov in views:
            if len(self.preview) < PREVIEW_VIEWS and ov.request.image_bgr is not None and ov.request.frame_index % 15 == 0:
                self.preview.append(ov.request.image_bgr)

    def views_table(self) -> dict:
        rows = self.rows
        return {
            "frame_index": np.array([r[0] for r in rows], dtype=np.int64),
            "person": np.array([r[1] for r in rows], dtype=np.int64),
            "side": np.array([r[2] for r in rows], dtype=np.int64),
            "t_session": np.array([r[3] for r in rows], dtype=np.float64),
            "R_pano_view": np.array([r[4] for r in rows]).reshape(-1, 3, 3),
            "fx": np.array([r[5] for r in rows], dtype=np.float64),
            "size": np.array([r[6] for r in rows], dtype=np.int64),
            "outcome": np.array([r[7] for r in rows], dtype=np.int64),
            "t_capture": np.array([r[8] for r in rows], dtype=np.float64),
        }


def observe_window(session: Session, rig: Rig, inputs: SessionInputs, config: ProcessConfig, anchors: PeopleTracks,
                   pano_first: int, pano_last: int, estimator: HandEstimator | None = None, want_preview: bool = False,
                   progress: bool = False) -> WindowObservations:
    """Stages 2-4, the hand stage (``fusion.frame_stage.HandStage``), over the panorama frames
    ``pano_first..pano_last-1`` in batches of ``batch_frames``, on the Kinect joints ``anchors``
    (world frame, already smoothed). Panorama images are decoded while the backend looks at them or
    ``want_preview`` and the preview is not full."""
    t_pano = inputs.t_pano_session[pano_first:pano_last]
    depth_frames, depth_notes = load_depth_frames(session, rig) if config.depth_cue else ([], [])
    pano_entry = session.pano()
    stage = HandStage(config, estimator or make_estimator(config, session), rig.pose("pano"),
                      pano_camera(session, pano_entry), depth_frames, rig.pano_optics)
    pred = predicted_hands(anchors, t_pano)
    velocity = hand_centre_velocity(anchors, t_pano, config.depth.arm_anchor) if depth_frames else None
    P, F_pano = len(anchors.person_ids), len(t_pano)
    observed = WindowObservations.empty(P, F_pano, pano_first, t_pano)
    observed.kinects_with_depth, observed.depth_notes = len(depth_frames), depth_notes
    frame_iter = _pano_frames(session, session.pano(), stage.needs_images or want_preview, pano_first, pano_first + F_pano)
    bar = tqdm(total=F_pano, desc="hands", unit="frame", disable=not progress, file=sys.stderr)
    for start in range(0, F_pano, config.batch_frames):
        stop = min(F_pano, start + config.batch_frames)
        preview_open = want_preview and len(observed.preview) < PREVIEW_VIEWS
        if frame_iter is not None and not (stage.needs_images or preview_open):
            frame_iter.close()  # the preview is full and the backend does not look: stop decoding
            frame_iter = None
        frames = {}
        if frame_iter is not None:
            for _ in range(start, stop):
                item = next(frame_iter, None)
                if item is None:
                    break
                frames[item[0] - pano_first] = item[1]
        views = stage.run(pred, t_pano, range(start, stop), anchors.person_ids, pano_first, inputs.joint_depth_std, velocity,
                          frames=frames, render=preview_open, anchors=anchors)
        observed.add(views)
        if preview_open:
            observed.add_preview(views)
        bar.update(stop - start)
    bar.close()
    if frame_iter is not None:
        frame_iter.close()
    return observed


@dataclass
class OutputHands:
    """Hands at the output times (P, F, 2, ...), world frame; ``fps`` the output rate."""

    joints: np.ndarray
    R: np.ndarray
    pose: np.ndarray
    valid: np.ndarray
    fps: float


def _hands_at_output_times(observed: WindowObservations, t_pano: np.ndarray, t_out: np.ndarray,
                           config: ProcessConfig) -> OutputHands:
    """Stage 5: the lifted hands resampled from the times they were captured (``observed.t_capture``;
    ``t_pano`` (F_pano,) the frames' timestamps) to ``t_out`` (positions by cubic Hermite, rotations
    by slerp, across gaps up to ``max_hand_gap_s``), then smoothed."""
    P, F = observed.valid.shape[0], len(t_out)
    # A rolling shutter moves each capture time off its frame's timestamp by up to its readout. The
    # hands are interpolated between the times they were captured, but which output times are served
    # is decided on the frames' timestamps, as without a rolling shutter: the rows a hand happened to
    # be on decide neither whether a gap of missed frames is bridged nor whether an output time
    # between a track's last capture and its last frame's timestamp is served (extrapolated there).
    offsets = (observed.t_capture - np.asarray(t_pano, dtype=np.float64)[None, :, None])[observed.valid]
    shift = float(np.max(np.abs(offsets))) if len(offsets) else 0.0
    max_gap = config.max_hand_gap_s + 2.0 * shift
    hand_joints = np.full((P, F, 2, 21, 3), np.nan)
    hand_R = np.broadcast_to(np.eye(3), (P, F, 2, 3, 3)).copy()
    hand_pose = np.broadcast_to(np.eye(3), (P, F, 2, 15, 3, 3)).copy()
    hand_valid = np.zeros((P, F, 2), dtype=bool)
    for p in range(P):
        for s in range(2):
            v = observed.valid[p, :, s]
            if not np.any(v):
                continue
            # bracket over observed frames only, so a single missed frame is bridged
            t_seen = observed.t_capture[p, :, s]
            hand_joints[p, :, s] = interpolate_positions(t_seen[v], observed.joints[p, v, s], t_out, max_gap=max_gap,
                                                         max_extrapolate=shift)
            rots = np.concatenate([observed.R[p, :, s][:, None], observed.pose[p, :, s]], axis=1)
            t_rot = np.clip(t_out, t_seen[v][0], t_seen[v][-1]) if shift > 0.0 else t_out
            R_out, ok = interpolate_rotations(t_seen, rots, v, t_rot, max_gap=max_gap)
            if shift > 0.0:
                ok &= np.isfinite(interpolate_positions(t_pano[v], np.zeros((int(v.sum()), 1)), t_out,
                                                        max_gap=config.max_hand_gap_s))[:, 0]
            ok &= np.all(np.isfinite(hand_joints[p, :, s]), axis=(-1, -2))
            hand_valid[p, :, s] = ok
            hand_R[p, ok, s] = R_out[ok, 0]
            hand_pose[p, ok, s] = R_out[ok, 1:]
            hand_joints[p, ~ok, s] = np.nan
    fps = float(1.0 / np.median(np.diff(t_out))) if F > 1 else 30.0
    if config.smoothing and F > 2:
        _smooth_hands(hand_joints, hand_R, hand_pose, hand_valid, fps, config)
    return OutputHands(hand_joints, hand_R, hand_pose, hand_valid, fps)


def body_targets(people: PeopleTracks, config: ProcessConfig, noise: np.ndarray | None = None) -> np.ndarray:
    """The Kinect joints (P, F, 32, 3) the body fit reads (world metres, NaN where missing): every
    joint of every person smoothed on its own (``config.position_smoother``), with its own noise
    (``noise`` (P, 32), metres: the session's, so that windows of one session are smoothed alike;
    default measured on ``people``) times ``config.body_noise_scale``."""
    joints = people.joints.copy()
    if len(people.t_session) <= 2:
        return joints
    noise = joint_noise_std(people) if noise is None else noise
    fps = float(1.0 / np.median(np.diff(people.t_session)))
    for p in range(joints.shape[0]):
        for j in range(joints.shape[2]):
            track = people.joints[p][:, j]
            if np.isfinite(track).any() and np.isfinite(noise[p, j]):
                sd = config.body_noise_scale * noise[p, j]
                joints[p][:, j] = smooth_positions(track, fps, config.position_smoother, noise_std=sd)
    return joints


def body_seen(people: PeopleTracks, min_joints: int) -> np.ndarray:
    """(P, F) bool: the frames where the Kinects give a person's body, at least ``min_joints`` of
    its joints (drop-outs that ``capture.people`` bridged count as seen). Elsewhere (before a person
    is first seen, after it is last seen, across a longer absence) the body fit only holds or
    interpolates a pose that no Kinect saw."""
    if people.joints.size == 0:
        return np.zeros(people.joints.shape[:2], dtype=bool)
    return np.all(np.isfinite(people.joints), axis=-1).sum(axis=-1) >= min_joints


def _unseen_note(person_id: int, runs: list[tuple[float, float]], t: np.ndarray) -> str:
    spans = ", ".join(f"{a - t[0]:.2f}-{b - t[0]:.2f} s" for a, b in runs[:4]) + (", ..." if len(runs) > 4 else "")
    total = sum(b - a for a, b in runs) + len(runs) * float(np.median(np.diff(t)) if len(t) > 1 else 0.0)
    return (f"person {person_id} is seen by no Kinect over {spans} of the session ({total:.1f} s in all): its body "
            "there holds or interpolates a pose no Kinect saw (False in fused.npz body_valid and in its smplx npz "
            "valid)")


def _fit_bodies(inputs: SessionInputs, anchors: PeopleTracks, people: PeopleTracks, hands: OutputHands,
                config: ProcessConfig) -> tuple:
    """Stage 6: the SMPL-X body fit to each person's (smoothed) Kinect joints and the hands put on
    its wrists; returns local rotations (P, F, 55, 3, 3), translations (P, F, 3), betas (P, B) and
    the hand integration status (P, F, 2)."""
    from omnimocap.fusion.body_fit import fit_body
    from omnimocap.fusion.body_model import load_skeleton
    from omnimocap.fusion.hand_integration import integrate_hands

    skeleton = load_skeleton(inputs.smplx_path)
    body_cfg = replace(config.body, device=config.device)
    P, F = len(people.person_ids), len(people.t_session)
    local = np.zeros((P, F, 55, 3, 3))
    transl = np.zeros((P, F, 3))
    betas = np.zeros((P, skeleton.num_betas))
    status = np.zeros((P, F, 2), dtype="U8")
    targets = (body_targets(people, config, inputs.joint_noise_std) if config.body_joint_smoothing and config.smoothing
               else anchors.joints)
    for p in range(P):
        fit = fit_body(targets[p], people.confidence[p], skeleton, body_cfg,
                       betas=None if inputs.betas is None else inputs.betas[p],
                       joint_offsets=None if inputs.joint_offsets is None else inputs.joint_offsets[p],
                       wrist_targets=hands.joints[p][:, :, HAND21_INDEX["wrist"]])
        integ = integrate_hands(fit, skeleton, hands.R[p], hands.pose[p], hands.valid[p])
        local[p], transl[p], betas[p] = integ.local_rotmats, fit.transl, fit.betas
        status[p] = np.asarray(integ.status).astype("U8")
    return local, transl, betas, status



def _process(session: Session, rig: Rig, work: Path, config: ProcessConfig, progress: bool,
             recovered: dict | None) -> dict:
    from omnimocap.fusion.chunks import ChunkPlan, process_chunks

    t0 = time.perf_counter()
    inputs = load_inputs(session, rig, config)
    t_load = time.perf_counter() - t0
    plan = ChunkPlan.for_times(inputs.people.t_session)
    if len(plan.chunks) > 1:
        fit_session_body(inputs, config)
    result = process_chunks(session, rig, inputs, config, plan, progress=progress)
    return write_results(work, session, rig, inputs, result, config, recovered,
                         {"load_bodies": t_load, **result.timings}, t0)


def write_results(work: Path, session: Session, rig: Rig, inputs: SessionInputs, result: WindowResult,
                  config: ProcessConfig, recovered: dict | None, timings: dict, t0: float) -> dict:
    """Write a session's results (``fused.npz``, ``views.npz``, ``smplx*.npz``, the preview,
    ``rig.json``, ``config.json``, ``report.json``) from the stages' outputs over all its frames;
    returns the report."""
    from omnimocap.fusion.body_model import body_model_record, load_skeleton
    from omnimocap.fusion.export import unseen_runs, write_amass_npz

    people = inputs.people
    report: dict = {"omnimocap_version": __version__, "session": str(session.root.resolve()),
                    "session_complete": session.complete, "hands_backend": config.hands,
                    "rig_method": rig.method, "rig_is_truth": rig.is_truth, "notes": []}
    if recovered and recovered.get("recovered"):
        report["notes"].append("the recording was interrupted; the session was recovered from what was written")
        report["notes"].extend(recovered["notes"])
        report["recovery"] = recovered
    report["notes"].extend(inputs.notes)
    report["kinect_counts"] = people.counts
    report["people_repairs"] = people.repairs
    P, F = len(people.person_ids), len(people.t_session)
    F_pano = len(inputs.t_pano_session)
    outcome = result.views["outcome"]
    n_views = len(outcome)
    counts = {"views": n_views,
              "observed": int(np.sum((outcome == VIEW_OBSERVED) | (outcome == VIEW_RELABELLED))),
              "no_hand": int(np.sum(outcome == VIEW_NO_HAND)), "gated": int(np.sum(outcome == VIEW_GATED)),
              "no_kinect": 2 * P * F_pano - n_views, "side_mismatch": int(np.sum(outcome == VIEW_SIDE_MISMATCH)),
              "side_relabelled": int(np.sum(outcome == VIEW_RELABELLED))}
    report["hand_counts"] = counts
    report["notes"].extend(result.notes)
    depth_counts = {"kinects_with_depth": result.kinects_with_depth, "hands_used": len(result.depth_shifts),
                    "hands_not_measured": len(result.depth_not_measured)}
    if len(result.depth_shifts):
        depth_counts["median_abs_shift_mm"] = round(1000.0 * float(np.median(np.abs(result.depth_shifts[:, 1]))), 2)
    report["depth_cue"] = depth_counts

    hand_betas = np.zeros((P, 2, 10))
    for p in range(P):
        for s in range(2):
            v = result.obs_valid[p, :, s]
            if np.any(v):
                hand_betas[p, s] = np.median(result.obs_betas[p, v, s], axis=0)
    skeleton = load_skeleton(inputs.smplx_path)
    model_record = body_model_record(inputs.smplx_path)
    t_out, fps = people.t_session, result.fps
    wrist_kinect = np.stack([people.joints[:, :, KINECT_WRIST[s]] for s in SIDES], axis=2) if P else np.zeros((0, F, 2, 3))
    seen = body_seen(people, config.body.min_joints)
    report["body_seen_fraction"] = {str(pid): round(float(seen[p].mean()), 4) for p, pid in enumerate(people.person_ids)}
    for p, pid in enumerate(people.person_ids):
        runs = unseen_runs(seen[p], t_out)
        if runs:
            report["notes"].append(_unseen_note(pid, runs, t_out))
    np.savez_compressed(
        work / "fused.npz", t_session=t_out, person_ids=np.array(people.person_ids),
        smplx_local_rotmats=result.local, smplx_transl=result.transl, smplx_betas=result.betas,
        hand_R_world=result.hand_R, hand_pose=result.hand_pose, hand_joints_world=result.hand_joints,
        hand_wrist_world=result.hand_joints[..., 0, :], hand_valid=result.hand_valid, hand_betas=hand_betas,
        hand_status=result.status, body_valid=seen, kinect_joints_world=people.joints, kinect_wrist_world=wrist_kinect,
        kinect_confidence=people.confidence, **model_record)
    if n_views:
        v = result.views
        np.savez_compressed(
            work / "views.npz", frame_index=v["frame_index"], person=v["person"], side=v["side"],
            t_session=v["t_session"], t_capture=v["t_capture"], R_pano_view=v["R_pano_view"], fx=v["fx"], size=v["size"],
            pano_frame_t_session=inputs.t_pano_session)
    smplx_files = []
    for p in range(P):
        name = "smplx.npz" if p == 0 else f"smplx_person{p}.npz"
        write_amass_npz(work / name, result.local[p], result.transl[p], result.betas[p], t_session=t_out, skeleton=skeleton,
                        gender=config.gender, valid=seen[p], extra={"person_id": people.person_ids[p], **model_record})
        smplx_files.append(name)
    if result.preview:
        _write_preview(work / "views_preview.png", result.preview)
    rig.save(work / RIG)
    atomic_write_json(work / "config.json", asdict(config))
    timings = dict(timings)
    timings["total"] = time.perf_counter() - t0
    report.update({
        "fps": fps, "frames": F, "pano_frames": F_pano, "people": people.person_ids,
        "smplx_files": smplx_files, "skeleton": model_record["body_model_path"] or "built-in", **model_record,
        "hand_status_counts": {k: int(v) for k, v in zip(*np.unique(result.status, return_counts=True))},
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    })
    atomic_write_json(work / "report.json", report)
    return report


def _smooth_hands(joints, R_root, pose, valid, fps: float, config: ProcessConfig) -> None:
    """Filter the fused hands in place over time: joint positions, root and finger rotations.
    Unobserved frames stay unobserved (the filter restarts after a gap)."""
    for p in range(joints.shape[0]):
        for s in range(joints.shape[2]):
            v = valid[p, :, s]
            if v.sum() < 3:
                continue
            joints[p, :, s] = smooth_positions(joints[p, :, s], fps, config.position_smoother)
            rots = np.concatenate([R_root[p, :, s][:, None], pose[p, :, s]], axis=1)
            rots[~v] = np.nan
            rots = smooth_rotations(rots, fps, config.rotation_smoother)
            R_root[p, v, s] = rots[v, 0]
            pose[p, v, s] = rots[v, 1:]


def _pano_frames(session: Session, entry, wanted: bool, first: int = 0, last: int | None = None):
    if not wanted:
        return None
    from omnimocap.capture.pano import PanoReader

    reader = PanoReader(session.pano_video_path(entry), session.pano_frames_path(entry))
    return reader.frames(first, last)


def _write_preview(path: Path, images: list[np.ndarray]) -> None:
    import cv2

    cols = 6
    size = images[0].shape[0]
    rows = (len(images) + cols - 1) // cols
    sheet = np.zeros((rows * size, cols * size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        sheet[r * size:(r + 1) * size, c * size:(c + 1) * size] = img
    cv2.imwrite(str(path), sheet)

