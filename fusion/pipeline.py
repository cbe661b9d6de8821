"""The offline pipeline: a recorded session in, fused whole-body motion out.

Stages (each a plain function; the live driver feeds the same ones from device queues):
1. people: Kinect body tracking mapped into the world frame and onto the session clock;
2. views: per panorama frame, person and side, the Kinect wrist interpolated to the frame's time,
   the hand's predicted extent and a wrist-centred virtual camera (``hands.views``);
3. hands: a hand backend (``sim`` observer or ``wilor``) on all views of a batch of frames;
4. lifting: bearing from the view, depth anchored on the Kinect hand joints (``fusion.lifting``)
   and, where the Kinects recorded depth maps, refined by the measured hand surface
   (``fusion.depth_cue``); the skeleton's side is the authority on handedness (:class:`SideConsistency`);
5. resampling of the hands from panorama frame times to the output times (the reference Kinect's
   frame times), positions by cubic Hermite, rotations by slerp;
6. SMPL-X body fit to the Kinect joints, hand integration, export.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from omnimocap import __version__
from omnimocap.calibration.cameras import EquirectCamera
from omnimocap.calibration.rig import Rig
from omnimocap.calibration.transforms import invert_pose, transform_points
from omnimocap.capture.session import Session, atomic_write_json
from omnimocap.data.skeletons import (
    KINECT_HAND, KINECT_HANDTIP, KINECT_THUMB, KINECT_WRIST, SIDES,
)
from omnimocap.errors import InputError, UserError
from omnimocap.fusion.depth_cue import DepthCueConfig, HandSurface, depth_shift, load_depth_frames
from omnimocap.fusion.filtering import SmootherConfig, estimate_noise_std, smooth_positions, smooth_rotations
from omnimocap.fusion.interpolate import interpolate_positions, interpolate_rotations
from omnimocap.fusion.lifting import fuse_ray_depth, lift_observation
from omnimocap.hands.estimator import HandEstimator, ViewRequest
from omnimocap.hands.views import WristView, plan_views, project_to_view

# Hand views on the contact sheet views_preview.png.
PREVIEW_VIEWS = 12


@dataclass
class ProcessConfig:
    """Configuration of ``omnimocap process``; saved as ``config.json`` beside every result."""

    hands: str = "sim"
    """Hand backend: ``sim`` (simulated observer, simulated sessions only) or ``wilor``."""
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
    batch_frames: int = 16
    """Panorama frames whose views go through the hand backend as one batch."""
    depth_weights: dict[str, float] = field(default_factory=lambda: {"wrist": 1.0, "hand": 1.0, "handtip": 0.5, "thumb": 0.5})
    """Weights of the Kinect hand joints in the hand's depth along the viewing ray."""
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
    overruled by the skeleton's side (see :class:`SideConsistency`)."""
    models: str | None = None
    """Models directory (default: $OMNIMOCAP_MODELS or ~/.cache/omnimocap/models)."""
    smplx_model: str | None = None
    """SMPL-X model file whose skeleton the body is fitted on (default: the built-in skeleton, which
    the synthetic model files reproduce)."""
    preview: bool = True
    """Write ``views_preview.png``, a contact sheet of hand views (decodes some panorama frames)."""
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


def load_people(session: Session, rig: Rig) -> PeopleTracks:
    """Read every Kinect's body tracking, map it into the world and onto the session clock.

    The first Kinect in the manifest is the reference: its frame times are the output times.
    With several Kinects, their skeletons are fused per person (``fusion.skeleton_fusion``).
    """
    from omnimocap.capture.bodies import read_bodies
    from omnimocap.fusion.skeleton_fusion import BodyTrack, fuse_people

    kinects = session.kinects()
    if not kinects:
        raise InputError("the session has no Kinect", path=session.root / "session.json")
    tracks = []
    counts: dict = {}
    t_ref = None
    for entry in kinects:
        if not entry.bodies:
            raise InputError(f"Kinect {entry.serial} has no body tracking file",
                             path=session.root / "session.json", fix=f"run `omnimocap track {session.root}`")
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
    if len(kinects) == 1:
        ref_tracks = [tr for tr in tracks if tr.device == reference]
        ids = [tr.body_id for tr in ref_tracks]
        joints = np.stack([tr.joints for tr in ref_tracks])
        conf = np.stack([tr.confidence for tr in ref_tracks]).astype(np.int64)
    else:
        people = fuse_people(tracks, t_ref)
        people = [pp for pp in people if any(tracks[k].device == reference for k in pp.tracks)]
        ids = [next(tracks[k].body_id for k in pp.tracks if tracks[k].device == reference) for pp in people]
        joints = np.stack([pp.joints for pp in people])
        # fused confidence in [0, 1] back onto the k4abt levels the body fit weighs
        conf = np.stack([np.digitize(pp.confidence, [1e-6, 0.5, 0.97]) for pp in people]).astype(np.int64)
    return PeopleTracks(t_ref, list(ids), joints, conf, counts)


def predicted_hands(people: PeopleTracks, t: np.ndarray) -> dict[str, np.ndarray]:
    """Kinect hand joints (wrist, hand, handtip, thumb) interpolated to times ``t`` (M,).

    Returns arrays (P, M, 2, 3) per joint name (side 0 left, 1 right), world frame, NaN where
    the Kinect had no data nearby. Up to 50 ms beyond the ends are extrapolated.
    """
    joint_ids = {"wrist": KINECT_WRIST, "hand": KINECT_HAND, "handtip": KINECT_HANDTIP, "thumb": KINECT_THUMB}
    out = {}
    for key, ids in joint_ids.items():
        cols = [ids[s] for s in SIDES]
        arr = np.stack([
            interpolate_positions(people.t_session, people.joints[p][:, cols], t, max_gap=0.2, max_extrapolate=0.05)
            for p in range(len(people.person_ids))
        ]) if people.person_ids else np.zeros((0, len(t), 2, 3))
        out[key] = arr
    return out


# Blend of the Kinect's WRIST, HAND, HANDTIP and THUMB joints that best predicts the mean of the
# 21 hand joints over open, closed, pointing and pinching hands (least squares on simulated hands,
# rounded); it sums to 1, so it is a point, not a direction.
HAND_CENTRE_BLEND = {"wrist": 0.10, "hand": 0.45, "handtip": 0.33, "thumb": 0.12}


def hand_centre(pred: dict[str, np.ndarray]) -> np.ndarray:
    """Predicted hand centre (an estimate of the mean of the 21 hand joints) from the Kinect hand
    joints; falls back to the wrist where the other joints are missing."""
    c = sum(w * pred[name] for name, w in HAND_CENTRE_BLEND.items())
    return np.where(np.isfinite(c), c, pred["wrist"])


@dataclass
class PlannedView:
    """A wrist-centred view planned for one hand at one time (indices into the stage's inputs)."""

    k: int  # time index into the predicted hands
    person: int  # person index
    side: int  # 0 left, 1 right
    view: WristView
    box_xyxy: np.ndarray  # (4,) predicted hand extent in view pixels
    wrist_pano: np.ndarray  # (3,) predicted wrist in the 360 camera frame, metres


def plan_hand_views(pred: dict[str, np.ndarray], T_pano_world: np.ndarray, time_indices, config: ProcessConfig) -> list[PlannedView]:
    """Plan a view for every person and side with a Kinect-predicted hand at each time index.

    ``pred`` are the outputs of :func:`predicted_hands` (world frame). The view looks at the
    predicted hand centre and contains a sphere of ``hand_radius_m`` around it and the Kinect hand
    joints, with ``view_margin``."""
    centre_world = hand_centre(pred)
    keys, points, centres = [], [], []
    for k in time_indices:
        for p in range(centre_world.shape[0]):
            for s in range(len(SIDES)):
                c = centre_world[p, k, s]
                if not np.all(np.isfinite(c)):
                    continue
                pts = [pred[n][p, k, s] for n in ("wrist", "hand", "handtip", "thumb")]
                pts += list(c + config.hand_radius_m * np.vstack([np.eye(3), -np.eye(3)]))
                pts = np.array([q for q in pts if np.all(np.isfinite(q))])
                points.append(transform_points(T_pano_world, pts))
                centres.append(transform_points(T_pano_world, c))
                keys.append((k, p, s))
    if not keys:
        return []
    padded = np.full((len(points), max(len(q) for q in points), 3), np.nan)
    for i, q in enumerate(points):
        padded[i, : len(q)] = q
    views = plan_views(padded, size=config.view_size, margin=config.view_margin, center_pano=np.array(centres))
    planned = []
    for (k, p, s), view, pts in zip(keys, views, padded):
        pts = pts[np.all(np.isfinite(pts), axis=-1)]
        px = project_to_view(view, pts)
        box = np.concatenate([px.min(0), px.max(0)])
        planned.append(PlannedView(k, p, s, view, box, transform_points(T_pano_world, pred["wrist"][p, k, s])))
    return planned


class SideConsistency:
    """Handedness over time for every (person, side) of the skeleton.

    The skeleton's side is the authority: a view is planned for a side and its hand stays that side.
    A backend's detector can swap a hand's left/right label (WiLoR's sometimes does), for a frame or
    for a stretch. The rule: an observation labelled as the other side is dropped
    (``side_mismatch``) unless it is at least the ``persist``-th in a row for that (person, side) and
    its lifted wrist passes the Kinect gate; such a hand is kept for the skeleton's side, with the
    backend's parameters as they are (only the label is overruled), and counted as
    ``side_relabelled``. An observation whose label agrees ends the run; views without a hand leave
    it as it is.
    """

    def __init__(self, persist: int):
        self.persist = max(1, int(persist))
        self._run: dict[tuple[int, int], int] = {}

    def observe(self, key: tuple[int, int], agrees: bool) -> bool:
        """Record one observation of ``key`` = (person, side); True when a disagreeing label is
        persistent enough to be overruled (always False for an agreeing one)."""
        if agrees:
            self._run[key] = 0
            return False
        self._run[key] = self._run.get(key, 0) + 1
        return self._run[key] >= self.persist


def _hand_surface(config: ProcessConfig) -> HandSurface:
    from omnimocap.hands.mano import ManoModel

    if config.surface_mano:
        return HandSurface(ManoModel.load(config.surface_mano))
    from omnimocap.fusion.synthetic_models import make_synthetic_mano

    return HandSurface(ManoModel.from_dict(make_synthetic_mano("right")))


def _joint_depth_std(people: PeopleTracks, floor_m: float) -> np.ndarray:
    """Per person, the standard deviation (metres) assumed for the depth fitted to the Kinect hand
    joints: their measured white noise, at least ``floor_m``."""
    cols = [ids[s] for ids in (KINECT_WRIST, KINECT_HAND, KINECT_HANDTIP, KINECT_THUMB) for s in SIDES]
    return np.array([max(floor_m, estimate_noise_std(j[:, cols])) for j in people.joints])


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


def _prepare_output(out_dir: Path, overwrite: bool) -> Path:
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise UserError("results folder exists and is not empty", path=out_dir,
                            fix="choose a new --out folder, or pass --overwrite")
    partial = out_dir.with_name(out_dir.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    return partial


def process_session(session_dir: str | Path, out_dir: str | Path, config: ProcessConfig | None = None,
                    overwrite: bool = False, progress: bool = True) -> dict:
    """Run the whole offline pipeline; returns the report (also written as ``report.json``).

    Results are assembled in ``<out>.partial`` and renamed to ``out_dir`` only when complete, so a
    crash never leaves a half-written folder that looks finished.
    """
    config = config or ProcessConfig()
    # a recorder that was killed leaves journals and a manifest still saying "recording": read
    # them as the recorder would have finalized them, without writing into the session
    from omnimocap.capture.recorder import recover_session

    session, recovered = recover_session(session_dir)
    rig = Rig.load(session.rig_path)
    out_dir = Path(out_dir)
    work = _prepare_output(out_dir, overwrite)
    try:
        report = _process(session, rig, work, config, progress, recovered)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    work.rename(out_dir)
    return report


def _process(session: Session, rig: Rig, work: Path, config: ProcessConfig, progress: bool,
             recovered: dict | None) -> dict:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    report: dict = {"omnimocap_version": __version__, "session": str(session.root.resolve()),
                    "session_complete": session.complete, "hands_backend": config.hands,
                    "rig_method": rig.method, "rig_is_truth": rig.is_truth, "notes": []}
    if recovered and recovered.get("recovered"):
        report["notes"].append("the recording was interrupted; the session was recovered from what was written")
        report["notes"].extend(recovered["notes"])
        report["recovery"] = recovered

    people = load_people(session, rig)
    report["kinect_counts"] = people.counts
    timings["load_bodies"] = time.perf_counter() - t0

    # --- views and hands, per panorama frame -----------------------------------------------------
    from omnimocap.capture.pano import read_pano_timestamps

    pano_entry = session.pano()
    stamps = read_pano_timestamps(session.path(pano_entry.timestamps or "pano_frames.csv"))
    t_pano_session = rig.time_map("pano").to_session(stamps.t_pano)
    from omnimocap.capture.session_check import coverage_notes, pano_frame_notes

    report["notes"].extend(pano_frame_notes(session, pano_entry, stamps)
                           + coverage_notes(people.t_session, t_pano_session, session.rig_path))
    T_world_pano = rig.pose("pano")
    T_pano_world_inv = invert_pose(T_world_pano)
    pano_cam = EquirectCamera(int(pano_entry.width or 0), int(pano_entry.height or 0))
    estimator = make_estimator(config, session)
    needs_images = bool(getattr(estimator, "needs_images", config.hands != "sim"))

    anchors = people
    if config.smoothing and len(people.t_session) > 2:
        kinect_fps = float(1.0 / np.median(np.diff(people.t_session)))
        anchors = replace(people, joints=np.stack([smooth_positions(j, kinect_fps, config.position_smoother)
                                                   for j in people.joints]))
    pred = predicted_hands(anchors, t_pano_session)
    P, F_pano = len(people.person_ids), len(t_pano_session)
    obs_valid = np.zeros((P, F_pano, 2), dtype=bool)
    obs_joints = np.full((P, F_pano, 2, 21, 3), np.nan)
    obs_R = np.broadcast_to(np.eye(3), (P, F_pano, 2, 3, 3)).copy()
    obs_pose = np.broadcast_to(np.eye(3), (P, F_pano, 2, 15, 3, 3)).copy()
    obs_betas = np.zeros((P, F_pano, 2, 10))
    view_rows: list[tuple] = []
    counts = {"views": 0, "observed": 0, "no_hand": 0, "gated": 0, "no_kinect": 0, "side_mismatch": 0,
              "side_relabelled": 0}
    sides = SideConsistency(config.side_persist)
    depth_frames, depth_notes = load_depth_frames(session, rig) if config.depth_cue else ([], [])
    report["notes"].extend(depth_notes)
    depth_counts = {"kinects_with_depth": len(depth_frames), "hands_used": 0, "hands_not_measured": 0}
    depth_shifts: list[float] = []
    if depth_frames:
        surface = _hand_surface(config)
        joint_std = _joint_depth_std(people, config.joint_depth_floor_m)
        # the hand's predicted velocity carries a candidate hand to the time of a depth frame
        with np.errstate(invalid="ignore", divide="ignore"):
            centre_velocity = (np.gradient(hand_centre(pred), t_pano_session, axis=1)
                               if F_pano > 1 else np.full(hand_centre(pred).shape, np.nan))
    preview: list[np.ndarray] = []

    frame_iter = _pano_frames(session, pano_entry, needs_images or config.preview)
    t_views = time.perf_counter()
    bar = tqdm(total=F_pano, desc="hands", unit="frame", disable=not progress, file=sys.stderr)
    for start in range(0, F_pano, config.batch_frames):
        stop = min(F_pano, start + config.batch_frames)
        frames = {}
        if frame_iter is not None and not (needs_images or len(preview) < PREVIEW_VIEWS):
            frame_iter.close()  # the preview is full and the backend does not look: stop decoding
            frame_iter = None
        if frame_iter is not None:
            for _ in range(start, stop):
                item = next(frame_iter, None)
                if item is None:
                    break
                frames[item[0]] = item[1]
        planned = plan_hand_views(pred, T_pano_world_inv, range(start, stop), config)
        requests: list[ViewRequest] = []
        if planned:
            keys = [(pv.k, pv.person, pv.side) for pv in planned]
            views = [pv.view for pv in planned]
            images = None
            if needs_images or (config.preview and len(preview) < PREVIEW_VIEWS):
                images = _render(frames, keys, views, pano_cam, needs_images, preview)
            for i, pv in enumerate(planned):
                requests.append(ViewRequest(
                    frame_index=pv.k, t_session=float(t_pano_session[pv.k]), person_id=people.person_ids[pv.person],
                    side=SIDES[pv.side], R_pano_view=pv.view.R_pano_view, camera=pv.view.camera,
                    predicted_wrist_view=pv.view.R_pano_view.T @ pv.wrist_pano, predicted_box_xyxy=pv.box_xyxy,
                    image_bgr=None if images is None else images[i]))
                view_rows.append((pv.k, pv.person, pv.side, float(t_pano_session[pv.k]), pv.view.R_pano_view,
                                  pv.view.camera.fx, pv.view.size))
        counts["views"] += len(requests)
        observations = estimator.estimate(requests) if requests else []
        for pv, req, obs in zip(planned, requests, observations):
            k, p, s = pv.k, pv.person, pv.side
            if obs is None:
                counts["no_hand"] += 1
                continue
            agrees = obs.is_right == (SIDES[s] == "right")
            overruled = sides.observe((p, s), agrees)
            if not agrees and not overruled:
                counts["side_mismatch"] += 1
                continue
            lifted = lift_observation(obs, req, T_world_pano, pred["wrist"][p, k, s],
                                      {name: pred[name][p, k, s] for name in config.depth_weights},
                                      config.depth_weights)
            if lifted.lateral_offset > config.max_gate_m:
                counts["gated"] += 1
                continue
            if not agrees:
                counts["side_relabelled"] += 1
            if depth_frames:
                verts, faces = surface.mesh(obs)
                verts_world = verts @ (T_world_pano[:3, :3] @ req.R_pano_view).T + lifted.wrist
                cue = depth_shift(depth_frames, float(t_pano_session[k]), verts_world, faces, lifted.ray,
                                  centre_velocity[p, k, s], config.depth)
                if cue is None:
                    depth_counts["hands_not_measured"] += 1
                else:
                    lifted = fuse_ray_depth(lifted, float(joint_std[p]) ** 2, cue[0], cue[1])
                    depth_counts["hands_used"] += 1
                    depth_shifts.append(cue[0])
            obs_valid[p, k, s] = True
            obs_joints[p, k, s] = lifted.joints
            obs_R[p, k, s] = lifted.R_world
            obs_pose[p, k, s] = lifted.hand_pose
            obs_betas[p, k, s] = lifted.betas
            counts["observed"] += 1
        bar.update(stop - start)
    bar.close()
    counts["no_kinect"] = 2 * P * F_pano - counts["views"]
    timings["views_and_hands"] = time.perf_counter() - t_views
    report["hand_counts"] = counts
    if depth_shifts:
        depth_counts["median_abs_shift_mm"] = round(1000.0 * float(np.median(np.abs(depth_shifts))), 2)
    report["depth_cue"] = depth_counts

    # --- hands at the output times --------------------------------------------------------------
    t_out = people.t_session
    F = len(t_out)
    hand_joints = np.full((P, F, 2, 21, 3), np.nan)
    hand_R = np.broadcast_to(np.eye(3), (P, F, 2, 3, 3)).copy()
    hand_pose = np.broadcast_to(np.eye(3), (P, F, 2, 15, 3, 3)).copy()
    hand_valid = np.zeros((P, F, 2), dtype=bool)
    hand_betas = np.zeros((P, 2, 10))
    for p in range(P):
        for s in range(2):
            v = obs_valid[p, :, s]
            if not np.any(v):
                continue
            # bracket over observed frames only, so a single missed frame is bridged
            hand_joints[p, :, s] = interpolate_positions(t_pano_session[v], obs_joints[p, v, s], t_out,
                                                         max_gap=config.max_hand_gap_s)
            rots = np.concatenate([obs_R[p, :, s][:, None], obs_pose[p, :, s]], axis=1)
            R_out, ok = interpolate_rotations(t_pano_session, rots, v, t_out, max_gap=config.max_hand_gap_s)
            ok &= np.all(np.isfinite(hand_joints[p, :, s]), axis=(-1, -2))
            hand_valid[p, :, s] = ok
            hand_R[p, ok, s] = R_out[ok, 0]
            hand_pose[p, ok, s] = R_out[ok, 1:]
            hand_joints[p, ~ok, s] = np.nan
            hand_betas[p, s] = np.median(obs_betas[p, v, s], axis=0)
    fps = float(1.0 / np.median(np.diff(t_out))) if F > 1 else 30.0
    if config.smoothing and F > 2:
        _smooth_hands(hand_joints, hand_R, hand_pose, hand_valid, fps, config)

    # --- body fit, hand integration, export -----------------------------------------------------
    from omnimocap.fusion.body_fit import BodyFitConfig, fit_body
    from omnimocap.fusion.body_model import load_skeleton
    from omnimocap.fusion.export import write_amass_npz
    from omnimocap.fusion.hand_integration import integrate_hands

    t_fit = time.perf_counter()
    skeleton = load_skeleton(config.smplx_model)
    body_cfg = BodyFitConfig(device=config.device)
    local = np.zeros((P, F, 55, 3, 3))
    transl = np.zeros((P, F, 3))
    betas = np.zeros((P, skeleton.num_betas))
    status = np.zeros((P, F, 2), dtype="U8")
    for p in range(P):
        fit = fit_body(anchors.joints[p], people.confidence[p], skeleton, body_cfg)
        integ = integrate_hands(fit, skeleton, hand_R[p], hand_pose[p], hand_valid[p])
        local[p], transl[p], betas[p] = integ.local_rotmats, fit.transl, fit.betas
        status[p] = np.asarray(integ.status).astype("U8")
    timings["body_fit"] = time.perf_counter() - t_fit

    wrist_kinect = np.stack([people.joints[:, :, KINECT_WRIST[s]] for s in SIDES], axis=2) if P else np.zeros((0, F, 2, 3))
    np.savez_compressed(
        work / "fused.npz", t_session=t_out, person_ids=np.array(people.person_ids),
        smplx_local_rotmats=local, smplx_transl=transl, smplx_betas=betas,
        hand_R_world=hand_R, hand_pose=hand_pose, hand_joints_world=hand_joints,
        hand_wrist_world=hand_joints[..., 0, :], hand_valid=hand_valid, hand_betas=hand_betas,
        hand_status=status, kinect_joints_world=people.joints, kinect_wrist_world=wrist_kinect,
        kinect_confidence=people.confidence)
    if view_rows:
        np.savez_compressed(
            work / "views.npz", frame_index=np.array([r[0] for r in view_rows]),
            person=np.array([r[1] for r in view_rows]), side=np.array([r[2] for r in view_rows]),
            t_session=np.array([r[3] for r in view_rows]), R_pano_view=np.array([r[4] for r in view_rows]),
            fx=np.array([r[5] for r in view_rows]), size=np.array([r[6] for r in view_rows]),
            pano_frame_t_session=t_pano_session)
    smplx_files = []
    for p in range(P):
        name = "smplx.npz" if p == 0 else f"smplx_person{p}.npz"
        write_amass_npz(work / name, local[p], transl[p], betas[p], fps, skeleton=skeleton,
                        extra={"t_session": t_out, "person_id": people.person_ids[p]})
        smplx_files.append(name)
    if preview:
        _write_preview(work / "views_preview.png", preview)
    rig.save(work / "rig.json")
    atomic_write_json(work / "config.json", asdict(config))
    timings["total"] = time.perf_counter() - t0
    report.update({
        "fps": fps, "frames": F, "pano_frames": F_pano, "people": people.person_ids,
        "smplx_files": smplx_files, "skeleton": config.smplx_model or "built-in",
        "hand_status_counts": {k: int(v) for k, v in zip(*np.unique(status, return_counts=True))},
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


def _pano_frames(session: Session, entry, wanted: bool):
    if not wanted:
        return None
    from omnimocap.capture.pano import PanoReader

    reader = PanoReader(session.path(entry.recording or "pano.mkv"), session.path(entry.timestamps or "pano_frames.csv"))
    return reader.frames()


def _render(frames, keys, views, pano_cam, needs_images, preview):
    from omnimocap.hands.views import render_views

    images: list = [None] * len(keys)
    by_frame: dict[int, list[int]] = {}
    for i, (k, _, _) in enumerate(keys):
        by_frame.setdefault(k, []).append(i)
    for k, idx in by_frame.items():
        if k not in frames:
            continue
        if not needs_images and len(preview) >= PREVIEW_VIEWS:
            break
        rendered = render_views(frames[k], pano_cam, [views[i] for i in idx])
        for j, i in enumerate(idx):
            images[i] = rendered[j]
        if len(preview) < PREVIEW_VIEWS and k % 15 == 0:
            preview.extend(rendered[: PREVIEW_VIEWS - len(preview)])
    return images if needs_images else None


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

