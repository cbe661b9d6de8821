"""The per-frame hand stage that ``omnimocap process`` and the live preview both run.

For a batch of panorama frames: the Kinect arm and hand joints predicted at each frame's time
(:func:`predicted_hands`), a wrist-centred view per person and side (:func:`plan_hand_views`, rendered
by ``geometry.views``), the hand estimator on all views at once, association of each hand to the
skeleton's side (:class:`SideConsistency`), lifting into the world on the Kinect hand joints
(``fusion.lifting``) with the repairs of a network's correlated errors (``fusion.hand_refine``: the
track's hand size, the hand placed by all its 2D keypoints, another hand's box and false hands
rejected by the Kinect's prediction) and, where Kinect depth maps are at hand, the depth cue along the
viewing ray (``fusion.depth_cue``). :class:`HandStage` holds what persists from batch to batch (the
estimator, the side runs, the tracks' hand sizes and gates, the depth streams); the drivers hand it
predictions and frames and keep what they need.

The 360 camera is modelled as the rig's ``pano_optics`` describe it (``geometry.pano_optics``;
:class:`PanoModelConfig` switches each property): a view looks where the stitched frame shows the
hand (from the lens on the hand's side of the seam), at the time that lens's rows were exposed there
(each view's ``t_capture``: the frame's timestamp plus the rolling-shutter offset of its centre);
the Kinect hand is predicted at that time, and the hand lifted along the ray from that lens's
optical centre. With ideal optics every view's ``t_capture`` is its frame's timestamp and every ray
starts at the camera's origin.

World frame y up, metres; session clock, seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from omnimocap.data.skeletons import (
    KINECT_ELBOW, KINECT_HAND, KINECT_HANDTIP, KINECT_THUMB, KINECT_WRIST, SIDES,
)
from omnimocap.fusion.depth_cue import HandSurface, depth_shift
from omnimocap.fusion.filtering import estimate_noise_std, smooth_positions
from omnimocap.fusion.hand_refine import (
    HandSizeTrack, OffsetGate, hand_size, nearer_other_hand, place_on_keypoints, rescale_keypoints,
)
from omnimocap.fusion.lifting import LiftedHand, fuse_ray_depth, lift_observation
from omnimocap.geometry.cameras import DualFisheyeCamera, EquirectCamera
from omnimocap.geometry.resample import interpolate_positions
from omnimocap.geometry.transforms import invert_pose, transform_points
from omnimocap.geometry.pano_optics import FRONT, PanoOptics
from omnimocap.geometry.views import WristView, plan_views, project_to_view, render_views
from omnimocap.hands.centre import hand_centre
from omnimocap.hands.estimator import HandEstimator, HandObservation, ViewRequest

if TYPE_CHECKING:
    from omnimocap.fusion.pipeline import PeopleTracks, ProcessConfig


# The Kinect joints the hands are predicted from, by name, per side.
PREDICTED_JOINTS = {"elbow": KINECT_ELBOW, "wrist": KINECT_WRIST, "hand": KINECT_HAND, "handtip": KINECT_HANDTIP,
                    "thumb": KINECT_THUMB}
# Their columns among the 32 Kinect joints.
PREDICTED_JOINT_COLUMNS = sorted(ids[s] for ids in PREDICTED_JOINTS.values() for s in SIDES)


# A view may magnify the panorama at most this much: its focal length, pixels per radian at its
# centre, at most this times the panorama's (width / 2 pi). Beyond it the view only interpolates
# between the panorama's pixels, and a hand that small should be seen wider, not enlarged.
MAX_UPSAMPLING = 2.0


@dataclass
class PanoModelConfig:
    """Which properties of the rig's 360 camera optics (``capture.rig.Rig.pano_optics``) the hand
    stage models. Each one off falls back to the single-viewpoint, global-shutter camera for that
    property; with ideal optics none of them changes anything but ``native_resolution``."""

    lens_origin: bool = True
    """Views centred where the stitched frame shows the hand (seen from the lens on its side of the
    seam) and viewing rays from that lens's optical centre, not from the camera's origin."""
    row_time: bool = True
    """Each view at the time the rows of its centre were exposed (rolling shutter): the Kinect hand
    predicted, the hand lifted, gated and resampled at that time, not at the frame's timestamp."""
    seam_views: bool = True
    """A hand whose centre lies in the seam's blend band gets a view centred just outside the band, on
    the side of the lens that shows the centre, widened to keep the whole hand inside."""
    native_resolution: bool = True
    """No view magnifies the panorama more than :data:`MAX_UPSAMPLING` times (its focal length at
    most that times ``width / 2 pi`` pixels per radian): smaller hands get a wider view."""


# The Kinect hand is predicted across gaps up to this long, and this far beyond a track's ends (seconds).
PREDICT_MAX_GAP_S = 0.2
PREDICT_EXTRAPOLATE_S = 0.05


def predicted_hands(people: PeopleTracks, t: np.ndarray) -> dict[str, np.ndarray]:
    """Kinect arm and hand joints (elbow, wrist, hand, handtip, thumb) interpolated to times ``t`` (M,).

    Returns arrays (P, M, 2, 3) per joint name (side 0 left, 1 right), world frame, NaN where
    the Kinect had no data nearby. Up to 50 ms beyond the ends are extrapolated.
    """
    out = {}
    for key, ids in PREDICTED_JOINTS.items():
        cols = [ids[s] for s in SIDES]
        arr = np.stack([
            interpolate_positions(people.t_session, people.joints[p][:, cols], t, max_gap=PREDICT_MAX_GAP_S,
                                  max_extrapolate=PREDICT_EXTRAPOLATE_S)
            for p in range(len(people.person_ids))
        ]) if people.person_ids else np.zeros((0, len(t), 2, 3))
        out[key] = arr
    return out


def predicted_hands_at(people: PeopleTracks, t: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`predicted_hands` at a time per person, frame and side: ``t`` (P, M, 2) session seconds;
    returns (P, M, 2, 3) per joint name, world frame, NaN where the Kinect had no data nearby."""
    t = np.asarray(t, dtype=np.float64)
    out = {}
    for key, ids in PREDICTED_JOINTS.items():
        arr = np.full(t.shape + (3,), np.nan)
        for p in range(t.shape[0]):
            for s in range(len(SIDES)):
                arr[p, :, s] = interpolate_positions(people.t_session, people.joints[p][:, ids[SIDES[s]]], t[p, :, s],
                                                     max_gap=PREDICT_MAX_GAP_S, max_extrapolate=PREDICT_EXTRAPOLATE_S)
        out[key] = arr
    return out


def stitched_points(points_pano: np.ndarray, optics: PanoOptics, lens_origin: bool) -> np.ndarray:
    """Camera-frame points (...,3) as the stitched frame shows them (``PanoOptics.apparent``: their
    directions are where the panorama shows them), or as they are without ``lens_origin``."""
    if not lens_origin or optics.baseline_m == 0.0:
        return points_pano
    return optics.apparent(points_pano)[0]


def capture_predictions(pred: dict[str, np.ndarray], t_pano: np.ndarray, time_indices, anchors: PeopleTracks,
                        T_pano_world: np.ndarray, optics: PanoOptics, config: ProcessConfig,
                        iterations: int = 2) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The predicted hands at the times the 360 camera captured them (rolling shutter).

    ``pred``: :func:`predicted_hands` of ``anchors`` at the frame timestamps ``t_pano`` (M,).
    Returns ``(pred_at, t_capture)``: copies of ``pred`` ((P, M, 2, 3) per joint, world) and of
    ``t_pano`` broadcast to (P, M, 2), in which the columns ``time_indices`` hold each hand at the
    time the rows showing its predicted centre were exposed: the frame's timestamp plus
    ``optics.time_offset_s`` of where the stitched frame shows the centre then (``iterations``
    fixed-point steps, as ``geometry.pano_optics.capture_times``). A global shutter (or no
    hand to predict) returns ``(pred, None)``: every hand at its frame's timestamp."""
    cols = np.asarray(list(time_indices), dtype=np.int64)
    if optics.readout_s == 0.0 or not len(cols) or not anchors.person_ids:
        return pred, None
    t_capture = np.broadcast_to(np.asarray(t_pano, dtype=np.float64)[None, :, None],
                                (len(anchors.person_ids), len(t_pano), 2)).copy()
    pred_at = {name: a.copy() for name, a in pred.items()}
    sub = {name: a[:, cols] for name, a in pred.items()}
    t_frame = t_capture[:, cols]
    t_sub = t_frame
    for _ in range(iterations):
        centre = transform_points(T_pano_world, hand_centre(sub, config.depth.arm_anchor))
        offset = optics.time_offset_s(stitched_points(centre, optics, config.camera_model.lens_origin))
        t_sub = t_frame + np.where(np.isfinite(offset), offset, 0.0)
        sub = predicted_hands_at(anchors, t_sub)
    for name in pred_at:
        pred_at[name][:, cols] = sub[name]
    t_capture[:, cols] = t_sub
    return pred_at, t_capture


def off_seam_centre(centre_pano: np.ndarray, optics: PanoOptics) -> np.ndarray:
    """View centres (V,3) (camera frame, as the stitched frame shows them) moved out of the seam's
    blend band: a centre within ``optics.blend_deg`` of the seam's plane turns about the camera's
    origin, keeping its longitude round the z axis, until it lies ``blend_deg`` from the plane on
    its own lens's side; its distance from the origin stays. Others are returned as they are."""
    c = np.asarray(centre_pano, dtype=np.float64)
    inside = optics.in_blend(c)
    if not np.any(inside):
        return c
    norm = np.linalg.norm(c, axis=-1, keepdims=True)
    across = np.hypot(c[..., 0], c[..., 1])[..., None]
    sign = np.where(optics.lens_of(c) == FRONT, 1.0, -1.0)[..., None]
    blend = np.radians(optics.blend_deg)
    with np.errstate(invalid="ignore", divide="ignore"):
        moved = np.concatenate([c[..., :2] / across * np.cos(blend), sign * np.sin(blend) * np.ones_like(across)],
                               axis=-1) * norm
    return np.where(inside[..., None] & (across > 0), moved, c)


@dataclass
class PlannedView:
    """A wrist-centred view planned for one hand at one time (indices into the stage's inputs)."""

    k: int  # time index into the predicted hands
    person: int  # person index
    side: int  # 0 left, 1 right
    view: WristView
    box_xyxy: np.ndarray  # (4,) predicted hand extent in view pixels
    wrist_pano: np.ndarray  # (3,) predicted wrist in the 360 camera frame as the stitched frame shows it, metres
    t_capture: float | None = None  # session time at which the view's centre was exposed, s (None: the frame's)


def padded_points(points: list[np.ndarray]) -> np.ndarray:
    """Point sets of different sizes (each (n_i, 3)) as one array (N, max n_i, 3), NaN-padded."""
    padded = np.full((len(points), max(len(q) for q in points), 3), np.nan)
    for i, q in enumerate(points):
        padded[i, : len(q)] = q
    return padded


def hand_extents(pred: dict[str, np.ndarray], time_indices, config: ProcessConfig):
    """For every time index, person and side with a predicted hand centre (:func:`hand_centre`):
    ``(k, p, s, centre (3,), points (n, 3))``, world frame, metres; the points are the Kinect's hand
    joints (the wrist only with ``config.depth.arm_anchor``) and the centre's ``hand_radius_m``
    sphere along the axes, which a wrist view must hold."""
    centre_world = hand_centre(pred, config.depth.arm_anchor)
    extent = ("wrist",) if config.depth.arm_anchor else ("wrist", "hand", "handtip", "thumb")
    for k in time_indices:
        for p in range(centre_world.shape[0]):
            for s in range(len(SIDES)):
                c = centre_world[p, k, s]
                if not np.all(np.isfinite(c)):
                    continue
                pts = [pred[n][p, k, s] for n in extent]
                pts += list(c + config.hand_radius_m * np.vstack([np.eye(3), -np.eye(3)]))
                yield k, p, s, c, np.array([q for q in pts if np.all(np.isfinite(q))])


def plan_hand_views(pred: dict[str, np.ndarray], T_pano_world: np.ndarray, time_indices, config: ProcessConfig,
                    optics: PanoOptics | None = None, pano_width: int | None = None,
                    t_capture: np.ndarray | None = None) -> list[PlannedView]:
    """Plan a view for every person and side with a Kinect-predicted hand at each time index.

    ``pred`` are the outputs of :func:`predicted_hands` (world frame), or of
    :func:`capture_predictions` with their times ``t_capture`` (P, M, 2, session seconds), which the
    planned views carry. The view looks at the predicted hand centre and contains a sphere of
    ``hand_radius_m`` around it and the Kinect hand joints, with ``view_margin``; with ``optics``
    (default ideal) all of them as the stitched frame shows them, off the seam's blend band and no
    more magnified than ``pano_width`` (the panorama's columns) allows, as ``config.camera_model``
    says."""
    optics = optics or PanoOptics.ideal()
    model = config.camera_model
    keys, points, centres = [], [], []
    for k, p, s, c, pts in hand_extents(pred, time_indices, config):
        points.append(stitched_points(transform_points(T_pano_world, pts), optics, model.lens_origin))
        centres.append(stitched_points(transform_points(T_pano_world, c), optics, model.lens_origin))
        keys.append((k, p, s))
    if not keys:
        return []
    padded = padded_points(points)
    centres = np.array(centres)
    if model.seam_views and optics.baseline_m > 0.0:
        centres = off_seam_centre(centres, optics)
    max_focal = MAX_UPSAMPLING * pano_width / (2.0 * np.pi) if model.native_resolution and pano_width else None
    views = plan_views(padded, size=config.view_size, margin=config.view_margin, center_pano=centres,
                       max_focal_px=max_focal)
    planned = []
    for (k, p, s), view, pts in zip(keys, views, padded):
        pts = pts[np.all(np.isfinite(pts), axis=-1)]
        px = project_to_view(view, pts)
        box = np.concatenate([px.min(0), px.max(0)])
        wrist = stitched_points(transform_points(T_pano_world, pred["wrist"][p, k, s]), optics, model.lens_origin)
        planned.append(PlannedView(k, p, s, view, box, wrist,
                                   None if t_capture is None else float(t_capture[p, k, s])))
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


def hand_surface(config: ProcessConfig) -> HandSurface:
    from omnimocap.hands.mano import ManoModel

    if config.surface_mano:
        return HandSurface(ManoModel.load(config.surface_mano))
    from omnimocap.hands.synthetic_mano import make_synthetic_mano

    return HandSurface(ManoModel.from_dict(make_synthetic_mano("right")))


def joint_depth_std(people: PeopleTracks, floor_m: float, wrist_only: bool = False,
                     wrist_floor_m: float = 0.0) -> np.ndarray:
    """Per person, the standard deviation (metres) assumed for the depth fitted to the Kinect hand
    joints (``wrist_only``: the wrists): their measured white noise, at least ``floor_m`` (and
    ``wrist_floor_m`` for the wrists alone)."""
    groups = (KINECT_WRIST,) if wrist_only else (KINECT_WRIST, KINECT_HAND, KINECT_HANDTIP, KINECT_THUMB)
    cols = [ids[s] for ids in groups for s in SIDES]
    floor = max(floor_m, wrist_floor_m) if wrist_only else floor_m
    return np.array([max(floor, estimate_noise_std(j[:, cols])) for j in people.joints])


# Outcome of a planned view.
VIEW_OBSERVED, VIEW_NO_HAND, VIEW_GATED, VIEW_SIDE_MISMATCH, VIEW_RELABELLED = range(5)


# Half the time step of the hand centre's central difference, seconds (a panorama frame at 30 fps).
VELOCITY_STEP_S = 1.0 / 30.0


def hand_centre_velocity(people: PeopleTracks, t: np.ndarray, from_arm: bool = False) -> np.ndarray:
    """Velocity (P, M, 2, 3) of the predicted hand centre (:func:`hand_centre`) at the times ``t``
    (M,), world metres per second: the central difference of the centres predicted from ``people``
    (world frame) at ``t`` -/+ :data:`VELOCITY_STEP_S`; NaN where either is missing."""
    t = np.asarray(t, dtype=np.float64)
    centre = hand_centre(predicted_hands(people, np.concatenate([t - VELOCITY_STEP_S, t + VELOCITY_STEP_S])), from_arm)
    return (centre[:, len(t):] - centre[:, :len(t)]) / (2.0 * VELOCITY_STEP_S)


@dataclass
class ObservedView:
    """A planned view after the stage: its request (with the rendered image, when there is one), the
    backend's observation, the outcome (``VIEW_*``) and, when the hand is used, the lifted hand
    (world frame, after the depth cue). ``depth_shift_m``: the depth cue's shift along the ray,
    metres (None where it did not measure); ``depth_tried``: the depth cue looked at this hand."""

    planned: PlannedView
    request: ViewRequest
    outcome: int
    observation: HandObservation | None = None
    lifted: LiftedHand | None = None
    depth_shift_m: float | None = None
    depth_tried: bool = False

    @property
    def t_capture(self) -> float:
        """Session time (seconds) at which the view's hand was captured (:func:`capture_time`)."""
        return capture_time(self.planned, self.request)


class HandStage:
    """Views -> hand estimator -> association -> lifting -> depth cue, batch after batch.

    ``estimator`` None: no backend, every view comes back without a hand. ``depth_frames``: Kinect
    depth streams (anything with the interface of ``fusion.depth_cue.DepthFrames``); empty: no depth
    cue; the live driver replaces the list between runs with the depth images it holds. The side
    runs of :class:`SideConsistency` carry over from one :meth:`run` to the next, so batches must
    come in time order, without frames skipped, for two drivers to agree. ``optics``: the 360
    camera's (the rig's ``pano_optics``; default ideal). ``pano_cam``: the 360 stream's camera; a
    ``DualFisheyeCamera`` (raw dual-fisheye frames) cuts the views from its lenses instead
    (``fusion.fisheye_stage.FisheyeViews``).
    """

    def __init__(self, config: ProcessConfig, estimator: HandEstimator | None, T_world_pano: np.ndarray,
                 pano_cam: EquirectCamera | DualFisheyeCamera, depth_frames: Sequence = (),
                 optics: PanoOptics | None = None):
        self.config = config
        self.optics = optics or PanoOptics.ideal()
        self.estimator = estimator
        self.T_world_pano = np.asarray(T_world_pano, dtype=np.float64)
        self.T_pano_world = invert_pose(self.T_world_pano)
        self.pano_cam = pano_cam
        self.depth_frames = list(depth_frames)
        self._surface: HandSurface | None = None
        self.sides = SideConsistency(config.side_persist)
        refine = config.hand_refine
        self.sizes = HandSizeTrack(refine.size_window, refine.size_min_samples)
        self.gates = OffsetGate(refine.size_window, refine.gate_min_samples, refine.gate_scale, refine.gate_floor_m)
        self.needs_images = estimator is not None and bool(getattr(estimator, "needs_images", config.hands != "sim"))
        self.fisheye = None
        if isinstance(pano_cam, DualFisheyeCamera):
            from omnimocap.fusion.fisheye_stage import FisheyeViews

            self.fisheye = FisheyeViews(pano_cam, config)

    def plan(self, pred: dict[str, np.ndarray], time_indices, t_capture: np.ndarray | None = None) -> list[PlannedView]:
        """The views of every person and side with a predicted hand at ``time_indices`` of ``pred``
        (captured at ``t_capture``, (P, M, 2) session seconds, when given)."""
        if self.fisheye is not None:
            return self.fisheye.plan(pred, self.T_pano_world, time_indices, t_capture)
        return plan_hand_views(pred, self.T_pano_world, time_indices, self.config, self.optics, self.pano_cam.width,
                               t_capture)

    def requests(self, planned: list[PlannedView], t_pano: np.ndarray, person_ids: Sequence[int], first_index: int,
                 frames: dict[int, np.ndarray] | None = None, render: bool = False) -> list[ViewRequest]:
        """One request per planned view; its image is rendered from ``frames`` (time index ->
        panorama BGR image) when the backend looks at images or ``render`` asks for them.
        ``first_index``: the panorama frame index of time index 0."""
        images: list = [None] * len(planned)
        if frames and (render or self.needs_images):
            by_frame: dict[int, list[int]] = {}
            for i, pv in enumerate(planned):
                by_frame.setdefault(pv.k, []).append(i)
            for k, idx in by_frame.items():
                if k in frames:
                    views = [planned[i] for i in idx]
                    rendered = self.fisheye.render(frames[k], views) if self.fisheye is not None else \
                        render_views(frames[k], self.pano_cam, [pv.view for pv in views])
                    for i, image in zip(idx, rendered):
                        images[i] = image
        return [ViewRequest(frame_index=first_index + pv.k, t_session=float(t_pano[pv.k]),
                            person_id=int(person_ids[pv.person]), side=SIDES[pv.side],
                            R_pano_view=pv.view.R_pano_view, camera=pv.view.camera,
                            predicted_wrist_view=pv.view.R_pano_view.T @ pv.wrist_pano,
                            predicted_box_xyxy=pv.box_xyxy, image_bgr=image, view_centre=getattr(pv, "t_cam_view", None))
                for pv, image in zip(planned, images)]

    def run(self, pred: dict[str, np.ndarray], t_pano: np.ndarray, time_indices, person_ids: Sequence[int],
            first_index: int, joint_std: np.ndarray, centre_velocity: np.ndarray | None,
            frames: dict[int, np.ndarray] | None = None, render: bool = False, estimate: bool = True,
            anchors: PeopleTracks | None = None) -> list[ObservedView]:
        """The stage on the panorama frames ``time_indices`` of ``pred`` (outputs of
        :func:`predicted_hands` at the session times ``t_pano``, world frame).

        ``joint_std`` (P,): standard deviation of the depth fitted to each person's Kinect hand
        joints, metres (:func:`joint_depth_std`); ``centre_velocity`` (P, M, 2, 3): the predicted
        hand centre's velocity at ``t_pano``, m/s (:func:`hand_centre_velocity`), which carries a
        hand to the time of a depth frame (None without depth frames). ``estimate`` False: views
        only, no backend call. ``anchors``: the Kinect joints ``pred`` was predicted from; with them
        (and ``camera_model.row_time`` and a rolling shutter) each hand is predicted again at the time
        its rows were exposed (:func:`capture_predictions`), else at its frame's timestamp."""
        t_capture = None
        if anchors is not None and self.config.camera_model.row_time:
            pred, t_capture = capture_predictions(pred, t_pano, time_indices, anchors, self.T_pano_world,
                                                  self.optics, self.config)
        planned = self.plan(pred, time_indices, t_capture)
        requests = self.requests(planned, t_pano, person_ids, first_index, frames, render)
        observations = self.estimator.estimate(requests) if (requests and estimate and self.estimator is not None) \
            else [None] * len(requests)
        return [self._observe(pv, req, obs, pred, joint_std, centre_velocity)
                for pv, req, obs in zip(planned, requests, observations)]

    def _lift(self, obs: HandObservation, req: ViewRequest, key: tuple[int, int], kinect_wrist: np.ndarray,
              kinect_hand: dict[str, np.ndarray], weights: dict[str, float], optics) -> LiftedHand:
        """Lifting (``fusion.lifting``) along the rays of ``optics`` (the stitched camera's lenses,
        a raw view's lens, or None: the camera's origin) with the repairs of ``config.hand_refine``
        (``fusion.hand_refine``): the 3D keypoints brought to the running median size of ``key``
        = (person, side), the hand placed across its ray by all its 2D keypoints."""
        refine = self.config.hand_refine
        if refine.track_size:
            obs = rescale_keypoints(obs, self.sizes.update(key, hand_size(obs.keypoints_3d)))
        lifted = lift_observation(obs, req, self.T_world_pano, kinect_wrist, kinect_hand, weights, optics)
        if refine.keypoint_position:
            lifted = place_on_keypoints(lifted, obs, req, self.T_world_pano, optics, kinect_wrist, refine.huber_px_frac)
        return lifted

    def _inconsistent(self, lifted: LiftedHand, pred: dict[str, np.ndarray], key: tuple[int, int], k: int) -> bool:
        """Whether a lifted hand of ``key`` = (person, side) at time index ``k`` disagrees with the
        Kinect's prediction beyond what ``config.hand_refine`` allows: its wrist nearer another
        predicted hand than its own (the box of another hand), or further from its own than the
        track's running gate (:class:`~omnimocap.fusion.hand_refine.OffsetGate`)."""
        refine = self.config.hand_refine
        p, s = key
        if refine.nearest_hand and nearer_other_hand(lifted.wrist, pred["wrist"][:, k], p, s, refine.nearest_margin_m):
            return True
        return refine.track_gate and self.gates.reject(key, lifted.lateral_offset)

    def _observe(self, pv: PlannedView, req: ViewRequest, obs: HandObservation | None, pred, joint_std,
                 centre_velocity) -> ObservedView:
        """Association (the skeleton's side decides), lifting and the depth cue for one view."""
        k, p, s = pv.k, pv.person, pv.side
        if obs is None:
            return ObservedView(pv, req, VIEW_NO_HAND)
        agrees = obs.is_right == (SIDES[s] == "right")
        overruled = self.sides.observe((p, s), agrees)
        if not agrees and not overruled:
            return ObservedView(pv, req, VIEW_SIDE_MISMATCH, obs)
        cfg = self.config
        weights = {"wrist": 1.0} if cfg.depth.arm_anchor else cfg.depth_weights
        optics = (self.fisheye.lift_optics(pv) if self.fisheye is not None else
                  self.optics if cfg.camera_model.lens_origin else None)
        lifted = self._lift(obs, req, (p, s), pred["wrist"][p, k, s], {name: pred[name][p, k, s] for name in weights},
                            weights, optics)
        if lifted.lateral_offset > cfg.max_gate_m or self._inconsistent(lifted, pred, (p, s), k):
            return ObservedView(pv, req, VIEW_GATED, obs)
        view = ObservedView(pv, req, VIEW_OBSERVED if agrees else VIEW_RELABELLED, obs, lifted)
        if self.depth_frames:
            self._surface = self._surface or hand_surface(cfg)
            verts, faces = self._surface.mesh(obs)
            verts_world = verts @ (self.T_world_pano[:3, :3] @ req.R_pano_view).T + lifted.wrist
            cue = depth_shift(self.depth_frames, capture_time(pv, req), verts_world, faces, lifted.ray,
                              centre_velocity[p, k, s], cfg.depth)
            view.depth_tried = True
            if cue is not None:
                view.lifted = fuse_ray_depth(lifted, float(joint_std[p]) ** 2, cue[0], cue[1])
                view.depth_shift_m = cue[0]
        return view


def capture_time(planned: PlannedView, request: ViewRequest) -> float:
    """Session time (seconds) at which a view's hand was captured: its ``t_capture``, else its frame's."""
    return request.t_session if planned.t_capture is None else planned.t_capture


def smooth_anchors(people: PeopleTracks, noise_std: np.ndarray, config: ProcessConfig,
                   columns: Sequence[int] | None = None) -> PeopleTracks:
    """The Kinect joints that anchor the hands, smoothed over time (``config.smoothing``; Kalman
    filter and Rauch-Tung-Striebel smoother, adapted to ``noise_std`` (P,), each person's measured
    joint noise, metres) when there are more than two frames; else ``people`` as it is. The smoother
    uses every frame of ``people``: offline the window's past and future, live only the past.
    ``columns``: smooth only these Kinect joints (each coordinate is smoothed on its own, so they come
    out as they would with all), e.g. :data:`PREDICTED_JOINT_COLUMNS`; the others stay as they are."""
    if not config.smoothing or len(people.t_session) <= 2:
        return people
    kinect_fps = float(1.0 / np.median(np.diff(people.t_session)))
    cols = slice(None) if columns is None else list(columns)
    joints = people.joints.copy()
    if len(joints):
        # every person at once, each coordinate on its own with its person's noise: (F, P, C, 3)
        stacked = np.moveaxis(people.joints[:, :, cols], 0, 1)
        sd = np.asarray(noise_std, dtype=np.float64).reshape(-1, 1, 1)
        joints[:, :, cols] = np.moveaxis(smooth_positions(stacked, kinect_fps, config.position_smoother, noise_std=sd), 1, 0)
    return replace(people, joints=joints)
