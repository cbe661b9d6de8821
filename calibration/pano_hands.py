"""Hand bearings in the panorama from a hand detector, associated with the Kinect bodies: what the
markerless calibration and the time sync observe in sessions without ground truth.

The detector (WiLoR's YOLO hand detector through :class:`ImageViewDetector`, or any
:class:`ViewDetector`) runs on perspective views cut from the equirect frames. A detection's box
centre, unprojected through its view, is the bearing of the hand's centre; it is compared with the
Kinect hand centre (:func:`hand_centres`: the mean of k4abt's wrist, hand, hand tip and thumb) of
the body and side it is associated with. What is left between the two (hand shape and pose) is part
of the detections' noise (:data:`DETECTION_NOISE_DEG`).

Two passes:

1. **Search** (calibration from nothing): on about ``search_frames`` frames spread over the time
   the Kinect tracks cover, in runs of three consecutive frames, views that tile the band of the
   sphere where hands appear (:func:`search_views`). A hand seen by two overlapping views is kept
   once; a detection counts only when a neighbouring frame of its run has one near it
   (:func:`confirmed_detections`), which removes most false hands. The association and
   the pose are then solved together (:func:`ransac_association`): for each time offset on a grid,
   RANSAC hypotheses from 6 detections, each paired with a random candidate hand (one of the Kinect
   bodies' hands of the detected side with probability :data:`SIDE_TRUST`, of the other side
   otherwise, since the detector swaps sides now and then); a hypothesis scores the detections that
   lie within ``inlier_deg`` of any candidate hand. The winner gives the starting pose and offset.
2. **Tracked views** (every ``stride``-th frame; also the sync of an already calibrated rig): each
   tracked Kinect hand, through the current pose and time map, gets a view around it
   (:func:`tracked_views`). Detections are associated frame by frame with the predicted hands by
   angle (:func:`associate_detections`: optimal assignment, gated at ``gate_deg``; a detection of
   the other side costs :data:`SIDE_PENALTY_DEG` more) and fill an (F,2P,3) bearing array, track
   ``2 p + s`` for person p's side s, against the (N,2P,3) hand centres: what the solvers
   (``calibrate_markerless``, ``fine_time_map``) take. Association is cheap, so it is redone after
   each solve with the better pose and clock.

Frames: panorama camera frame OpenCV style (x right, y down, z forward); ``T_kinect_pano`` maps
panorama-frame points into the reference Kinect's depth frame; times in seconds.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Iterator, Protocol, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from omnimocap.geometry.cameras import DualFisheyeCamera, EquirectCamera
from omnimocap.geometry.fisheye_views import cut_views, lens_view
from omnimocap.geometry.pano_optics import PanoOptics
from omnimocap.calibration.bearing_problem import offset_grid
from omnimocap.calibration.coarse_sync import coarse_time_map
from omnimocap.calibration.markerless import dlt_pose
from omnimocap.calibration.observations import TRACKED_KINECT_JOINTS, TRACKS_PER_PERSON, KinectTracks, PanoObservations
from omnimocap.capture.rig import TimeMap
from omnimocap.calibration.track_splines import TrackSplines
from omnimocap.geometry.transforms import invert_pose, make_pose, transform_points
from omnimocap.capture.pano import PanoReader, read_pano_timestamps
from omnimocap.capture.session import MANIFEST, Session
from omnimocap.data.skeletons import KINECT_INDEX, SIDES
from omnimocap.errors import InputError, UserError
from omnimocap.geometry.resample import interpolate_positions
from omnimocap.geometry.views import WristView, plan_views, render_views, tiling_views, view_pixel_to_pano_bearing
from omnimocap.hands.centre import HAND_CENTRE_REACH_M, HAND_JOINT_MEAN, HAND_JOINTS, collapsed_hand, hand_centre
from omnimocap.hands.wilor.detector import Detections, HandDetector

# Angular noise of a detection's bearing against the Kinect HAND joint: box-centre jitter plus the
# centre-to-joint offset (a few cm at 1-2 m).
DETECTION_NOISE_DEG = 1.0
# The most uncertain pose (1 sigma) a calibration from hand detections may return: hands alone span
# less of the space than whole bodies, and their bearings are noisier than body joints' in the
# simulated observer, so a sound session lands near half a degree.
DETECTION_MAX_ROTATION_STD_DEG = 1.0
DETECTION_MAX_TRANSLATION_STD_MM = 40.0
# The detections' errors against the hand centres follow the hand's shape and pose, which change
# over seconds: an autoregressive model over neighbouring frames does not capture them, so the fit on
# detections keeps ordinary least squares with the covariance inflated by the residuals'
# autocorrelation time (whitening made the reported 1-sigma 2-4 times smaller than the errors).
DETECTION_NOISE_AR_ORDER = 0
# How often the detector's side is right, for drawing RANSAC candidates.
SIDE_TRUST = 0.85
SIDE_PENALTY_DEG = 2.0
# Search grid: views of SEARCH_FOV_DEG every SEARCH_YAW_STEP_DEG at these pitches cover latitudes
# -77..+37 deg, where the hands of people standing around a camera on a tripod are.
SEARCH_PITCHES_DEG = (0.0, -40.0)
SEARCH_YAW_STEP_DEG = 45.0
SEARCH_FOV_DEG = 75.0
SEARCH_VIEW_PX = 640  # the detector's input size
TRACKED_VIEW_PX = 320
TRACKED_MIN_FOV_DEG = 30.0  # leaves room for the starting pose's and clock's error
TRACKED_MARGIN = 2.0
# Two detections closer than this fraction of the larger box's angular size (or MERGE_MIN_DEG) are
# one hand seen by two views.
MERGE_FRACTION = 0.5
MERGE_MIN_DEG = 1.0
MIN_RANSAC_FRACTION = 0.3
# The search looks at runs of SEARCH_BURST consecutive frames; a detection counts when a neighbouring
# frame has one within CONFIRM_DEG (hands move up to ~2 deg per frame at 30 fps and 1 m).
SEARCH_BURST = 3
CONFIRM_DEG = 5.0
HYPOTHESIS_CHUNK = 64  # RANSAC hypotheses scored at once

# Per-hand Kinect joints whose mean a detection is compared with and a tracked view is planned on.
_HAND_JOINTS = tuple(name.upper() for name in HAND_JOINTS)


def hand_track(person: int, side: str, joint: str) -> int:
    """Index of ``person``'s ``joint`` of ``side`` in the Kinect track layout of ``calibration/observations.py``."""
    return TRACKS_PER_PERSON * person + TRACKED_KINECT_JOINTS.index(KINECT_INDEX[f"{joint}_{side.upper()}"])


@dataclass
class HandBearings:
    """Detected hands, one row each: pano ``frame`` index (M,), unit ``bearing`` (M,3) of the box
    centre in the panorama frame, detected side ``is_right`` (M,), ``confidence`` (M,) and angular box
    size ``size_deg`` (M,) (its diagonal)."""

    frame: np.ndarray
    bearing: np.ndarray
    is_right: np.ndarray
    confidence: np.ndarray
    size_deg: np.ndarray

    @classmethod
    def concat(cls, parts: Sequence["HandBearings"]) -> "HandBearings":
        if not parts:
            return cls(np.zeros(0, dtype=np.int64), np.zeros((0, 3)), np.zeros(0, dtype=bool), np.zeros(0), np.zeros(0))
        return cls(*(np.concatenate([getattr(p, f) for p in parts])
                     for f in ("frame", "bearing", "is_right", "confidence", "size_deg")))

    def __len__(self) -> int:
        return len(self.frame)

    def subset(self, mask: np.ndarray) -> "HandBearings":
        return HandBearings(self.frame[mask], self.bearing[mask], self.is_right[mask], self.confidence[mask],
                            self.size_deg[mask])


class ViewDetector(Protocol):
    """Finds hands in views of one panorama frame. ``needs_images`` False: the frame is not decoded
    (``pano_bgr`` is None)."""

    needs_images: bool

    def detect_views(self, frame_index: int, pano_bgr: np.ndarray | None,
                     views: Sequence[WristView]) -> list[Detections]: ...


def view_lens(view: WristView) -> int:
    """The lens a view is cut from on a raw dual-fisheye stream: the one the solvers assign to its
    axis (``PanoOptics.lens_of``; calibration/pano_observer.py)."""
    return int(PanoOptics.lens_of(np.asarray(view.R_pano_view, dtype=np.float64)[:, 2]))


def cut_from_lenses(frame_bgr: np.ndarray, camera: DualFisheyeCamera, views: Sequence[WristView]) -> list[np.ndarray]:
    """The images of ``views`` cut from a raw dual-fisheye frame, each from the lens of :func:`view_lens`."""
    return cut_views(frame_bgr, camera, [lens_view(camera, v, view_lens(v)) for v in views])


def on_view_lens(view: WristView, px: np.ndarray) -> np.ndarray:
    """Whether view pixels (...,2) lie on the side of the seam of the lens the view is cut from
    (:func:`view_lens`), as the solvers assign bearings to lenses (False for NaN pixels)."""
    return PanoOptics.lens_of(view_pixel_to_pano_bearing(view, np.asarray(px, dtype=np.float64))) == view_lens(view)


class ImageViewDetector:
    """A :class:`HandDetector` on views resampled from the equirect frame, or, with a
    :class:`DualFisheyeCamera` (a raw stream's lens model), cut from the raw frame's lens of
    :func:`view_lens` (``geometry/fisheye_views.py``): the view's pixels are then rays from that
    lens's optical centre."""

    needs_images = True

    def __init__(self, detector: HandDetector, pano_camera: EquirectCamera | DualFisheyeCamera):
        self.detector = detector
        self.pano_camera = pano_camera

    def detect_views(self, frame_index: int, pano_bgr: np.ndarray | None,
                     views: Sequence[WristView]) -> list[Detections]:
        if not views:
            return []
        if isinstance(self.pano_camera, DualFisheyeCamera):
            images = cut_from_lenses(pano_bgr, self.pano_camera, views)
        else:
            images = render_views(pano_bgr, self.pano_camera, views)
        return self.detector.detect(list(images))


def search_views(fov_deg: float = SEARCH_FOV_DEG, size: int = SEARCH_VIEW_PX,
                 pitches_deg: Sequence[float] = SEARCH_PITCHES_DEG,
                 yaw_step_deg: float = SEARCH_YAW_STEP_DEG) -> list[WristView]:
    """Views that tile the sphere's band at ``pitches_deg`` (positive up), ``yaw_step_deg`` apart
    (:func:`omnimocap.geometry.views.tiling_views`)."""
    return tiling_views(fov_deg, size, pitches_deg, yaw_step_deg)


def bearings_from_detections(frame_index: int, views: Sequence[WristView],
                             detections: Sequence[Detections]) -> HandBearings:
    """Box centres of every view's detections as panorama bearings; a hand found by several views
    is kept once, from the view where its box lies nearest the image centre (least cut off). Two
    boxes of one view are two hands (the detector's own suppression has run)."""
    rows = []
    for v, (view, det) in enumerate(zip(views, detections)):
        if not len(det.boxes_xyxy):
            continue
        boxes = np.asarray(det.boxes_xyxy, dtype=np.float64)
        centre = 0.5 * (boxes[:, :2] + boxes[:, 2:])
        diag = np.hypot(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        size_deg = np.degrees(diag / view.camera.fx)
        off_centre = np.linalg.norm(centre - (view.size - 1) / 2.0, axis=1) / view.size
        b = view_pixel_to_pano_bearing(view, centre)
        for i in range(len(boxes)):
            rows.append((off_centre[i], b[i], bool(det.is_right[i]), float(det.confidence[i]), float(size_deg[i]), v))
    rows.sort(key=lambda r: r[0])
    kept: list[tuple] = []
    for r in rows:
        dup = any(k[5] != r[5] and np.degrees(np.arccos(np.clip(r[1] @ k[1], -1.0, 1.0)))
                  < max(MERGE_MIN_DEG, MERGE_FRACTION * max(r[4], k[4])) for k in kept)
        if not dup:
            kept.append(r)
    n = len(kept)
    return HandBearings(np.full(n, frame_index, dtype=np.int64),
                        np.array([k[1] for k in kept]).reshape(n, 3),
                        np.array([k[2] for k in kept], dtype=bool),
                        np.array([k[3] for k in kept], dtype=np.float64),
                        np.array([k[4] for k in kept], dtype=np.float64))


def search_frame_indices(frames: np.ndarray, count: int, burst: int = SEARCH_BURST) -> np.ndarray:
    """About ``count`` of ``frames`` (sorted indices) for the search, in runs of ``burst``
    consecutive frames spread evenly (so that a detection can be confirmed by its neighbours)."""
    starts = np.unique(np.linspace(0, max(len(frames) - burst, 0), max(1, count // burst)).round().astype(int))
    idx = np.unique((starts[:, None] + np.arange(burst)[None]).ravel())
    return frames[idx[idx < len(frames)]]


def confirmed_detections(hands: HandBearings, frames: np.ndarray) -> np.ndarray:
    """Mask (M,) of detections with a detection within :data:`CONFIRM_DEG` in the previous or next
    searched frame (when that is the adjacent video frame): a hand moves a degree or two between
    frames, while a detector's flickering false hands rarely repeat in one place."""
    ok = np.zeros(len(hands), dtype=bool)
    cos_thr = np.cos(np.radians(CONFIRM_DEG))
    searched = set(int(i) for i in frames)
    for i in np.unique(hands.frame):
        mine = np.nonzero(hands.frame == i)[0]
        for j in (i - 1, i + 1):
            if j not in searched:
                continue
            other = np.nonzero(hands.frame == j)[0]
            if len(other):
                ok[mine] |= (hands.bearing[mine] @ hands.bearing[other].T > cos_thr).any(axis=1)
    return ok


def read_frames(reader: PanoReader | None, indices: np.ndarray) -> Iterator[tuple[int, np.ndarray | None]]:
    """(index, BGR frame) for the wanted indices in order; frames are not decoded without a reader."""
    if reader is None:
        for i in indices:
            yield int(i), None
        return
    wanted = set(int(i) for i in indices)
    last = int(indices.max()) + 1 if len(indices) else 0
    for i, img in reader.frames(0, last):
        if i in wanted:
            yield i, img


def detect_frames(detector: ViewDetector, reader: PanoReader | None, indices: np.ndarray,
                  views_for_frame, desc: str, progress: bool) -> HandBearings:
    """Run ``detector`` on ``views_for_frame(i)`` of every frame in ``indices``."""
    parts = []
    with tqdm(total=len(indices), desc=desc, unit="frame", disable=not progress, file=sys.stderr) as bar:
        for i, img in read_frames(reader, indices):
            views = views_for_frame(i)
            if views:
                parts.append(bearings_from_detections(i, views, detector.detect_views(i, img, views)))
            bar.update(1)
    return HandBearings.concat(parts)


# --- association -------------------------------------------------------------------------------------

@dataclass
class HandCentreConfig:
    """Where the Kinect puts the hand a detection is compared with."""

    from_arm: bool = False
    """The wrist moved ``reach_m`` along the forearm (elbow to wrist), which ignores k4abt's hand
    joints altogether but misses the box centre by about 4 cm (the hand bends at the wrist); off: the
    mean of k4abt's wrist, hand, hand tip and thumb joints (about 1.4 cm from the box centre)."""
    reach_m: float = HAND_CENTRE_REACH_M
    """Distance from the wrist to the centre of an open hand, metres."""
    collapse_check: bool = True
    """Without ``from_arm``: where k4abt's hand tip or thumb collapse onto its HAND joint (closer than
    ``collapse_m``), the centre is extrapolated from the wrist through the HAND joint instead, so the
    collapse does not pull the centre towards the wrist."""
    collapse_m: float = 0.025
    """Hand tip or thumb closer than this to the HAND joint count as collapsed, metres."""
    collapse_gain: float = 1.06
    """Centre = wrist + gain * (HAND - wrist) in collapsed frames (the four-joint mean of an open hand
    lies about this far along the wrist-to-HAND line)."""


# The settings :func:`hand_centres` uses; replace to change them for a run.
HAND_CENTRES = HandCentreConfig()


def hand_centres(tracks: KinectTracks) -> tuple[np.ndarray, np.ndarray]:
    """Hand centres (N,2P,3) and their relative noise (N,2P): for person p and side s (track
    ``2 p + s``, sides in ``SIDES`` order), per :data:`HAND_CENTRES`, either the mean of the Kinect's
    wrist, hand, hand tip and thumb joints (NaN unless all four are tracked; the noise of a mean of
    independent joints; extrapolated from wrist and HAND where the hand tip or thumb collapsed onto
    the HAND joint) or the wrist moved along the forearm (noise of the wrist and the elbow through the
    lever ``reach / forearm``). A detector's box spans the hand from the wrist to the fingertips; its
    centre lies about 1 deg (RMS, at 1 m) from the bearing of the four-joint mean, against 2.4 deg
    from the HAND joint alone (measured on simulated hands)."""
    people = tracks.points.shape[1] // TRACKS_PER_PERSON
    points = np.empty((len(tracks.t_session), len(SIDES) * people, 3))
    sigma = np.empty(points.shape[:2])
    cfg = HAND_CENTRES
    for p in range(people):
        for s, side in enumerate(SIDES):
            k = len(SIDES) * p + s
            cols = {name: hand_track(p, side, name.upper()) for name in (*HAND_JOINTS, "elbow")}
            joints = {name: tracks.points[:, c] for name, c in cols.items()}
            noise = {name: tracks.sigma[:, c] for name, c in cols.items()}
            points[:, k] = hand_centre(joints, cfg.from_arm, weights=HAND_JOINT_MEAN, reach_m=cfg.reach_m,
                                       collapse_m=cfg.collapse_m if cfg.collapse_check else None,
                                       collapse_gain=cfg.collapse_gain, wrist_fallback=False)
            if cfg.from_arm:
                length = np.linalg.norm(joints["wrist"] - joints["elbow"], axis=-1)
                with np.errstate(invalid="ignore"):
                    lever = cfg.reach_m / np.maximum(length, 0.1)
                sigma[:, k] = np.sqrt(noise["wrist"] ** 2 * (1 + lever) ** 2 + noise["elbow"] ** 2 * lever ** 2)
                continue
            sigma[:, k] = np.sqrt(np.sum([noise[name] ** 2 for name in HAND_JOINTS], axis=0)) / len(HAND_JOINTS)
            if cfg.collapse_check:
                collapsed = collapsed_hand(joints, cfg.collapse_m)
                sigma[collapsed, k] = np.hypot((cfg.collapse_gain - 1) * noise["wrist"],
                                               cfg.collapse_gain * noise["hand"])[collapsed]
    return points, sigma


@dataclass
class HandCandidates:
    """The Kinect hands detections can belong to: splines through the hand centres
    (:func:`hand_centres`) of every tracked body and side, in the reference Kinect's frame and on the
    session clock. ``tracks`` are their indices in the hand-centre layout."""

    t_session: np.ndarray  # (N,)
    points: np.ndarray  # (N,2P,3) hand centres
    sigma: np.ndarray  # (N,2P) their relative noise
    splines: TrackSplines
    tracks: np.ndarray  # (C,)
    is_right: np.ndarray  # (C,)

    @classmethod
    def from_tracks(cls, tracks: KinectTracks) -> "HandCandidates":
        points, sigma = hand_centres(tracks)
        idx = [k for k in range(points.shape[1]) if np.isfinite(points[:, k]).all(axis=-1).sum() >= 6]
        if not idx:
            raise UserError("the Kinect body tracking has no tracked hands to compare the panorama's detections with",
                            fix="record people in view of the reference Kinect")
        splines = TrackSplines(tracks.t_session, points[:, idx], smooth_hz=3.0)
        right = np.array([SIDES[k % len(SIDES)] == "right" for k in idx], dtype=bool)
        return cls(tracks.t_session, points, sigma, splines, np.array(idx), right)

    def positions(self, t_session: np.ndarray) -> np.ndarray:
        """Candidate hand positions (M,C,3) at session times (M,); NaN where a hand is untracked."""
        out = np.full((len(t_session), len(self.tracks), 3), np.nan)
        for c in range(len(self.tracks)):
            seg = self.splines.locate(np.full(len(t_session), c), t_session)
            ok = seg >= 0
            if ok.any():
                out[ok, c] = self.splines.evaluate(seg[ok], t_session[ok])
        return out


@dataclass
class RansacAssociation:
    T_kinect_pano: np.ndarray
    offset_s: float
    inlier_fraction: float
    detections_used: int


def ransac_association(hands: HandBearings, t_pano: np.ndarray, candidates: HandCandidates, init: TimeMap, *,
                       search_s: float = 0.5, step_s: float = 1 / 30, iterations: int = 1000,
                       inlier_deg: float = 3.0, seed: int = 0, max_detections: int = 1500) -> RansacAssociation:
    """Pose and time offset (added to ``init``) that explain the most detections by some Kinect
    hand (see the module docstring). Detections are drawn in proportion to their confidence.
    Raises UserError when too few detections meet the Kinect hands in time or when the best
    hypothesis explains less than :data:`MIN_RANSAC_FRACTION`."""
    rng = np.random.default_rng(seed)
    t0 = init.to_session(t_pano[hands.frame])
    usable = np.isfinite(candidates.positions(t0)).all(axis=-1).any(axis=1)
    sel = np.nonzero(usable)[0]
    if len(sel) < 30:
        raise UserError(f"only {len(sel)} hand detections in the panorama fall within the Kinect hand tracks in "
                        "time; markerless calibration needs people moving their hands in view of both sensors",
                        fix="record 10-30 s with people's hands visible to the 360 camera and the Kinect")
    if len(sel) > max_detections:
        sel = np.sort(rng.choice(sel, size=max_detections, replace=False))
    f = hands.bearing[sel]
    same_side = hands.is_right[sel][:, None] == candidates.is_right[None, :]
    prior = np.where(same_side, SIDE_TRUST, 1.0 - SIDE_TRUST)
    confidence = np.clip(hands.confidence[sel], 1e-3, None)
    thr = np.radians(inlier_deg)
    best = (np.inf, None)
    for d in offset_grid(search_s, step_s):
        X = candidates.positions(t0[sel] + d)  # (M,C,3)
        valid = np.isfinite(X).all(axis=-1)
        rows = np.nonzero(valid.any(axis=1))[0]
        if len(rows) < 6:
            continue
        w = np.where(valid, prior, 0.0)
        w /= w.sum(axis=1, keepdims=True).clip(1e-12)
        p_row = confidence[rows] / confidence[rows].sum()
        det = np.stack([rng.choice(rows, size=6, replace=False, p=p_row) for _ in range(iterations)])  # (S,6)
        cdf = np.cumsum(w[det], axis=-1)
        cand = np.minimum((cdf < rng.random(det.shape)[..., None]).sum(-1), X.shape[1] - 1)
        mu = np.mean(X[valid], axis=0)
        scale = float(np.sqrt(np.mean(np.sum((X[valid] - mu) ** 2, axis=-1)))) or 1.0
        Xn = np.where(valid[..., None], (X - mu) / scale, 0.0)
        R, t, ok = dlt_pose(Xn[det, cand], f[det])
        if not ok.any():
            continue
        R, t = R[ok], t[ok]
        costs = np.concatenate([_msac(R[i:i + HYPOTHESIS_CHUNK], t[i:i + HYPOTHESIS_CHUNK], Xn, valid, f, thr)[0]
                                for i in range(0, len(R), HYPOTHESIS_CHUNK)])
        s_best = int(np.argmin(costs))
        R_s, t_s = R[s_best], t[s_best]
        cost, ang, assign = (v[0] for v in _msac(R_s[None], t_s[None], Xn, valid, f, thr))
        # Local optimisation: refit on the hypothesis' inliers (with their nearest hands) while it
        # lowers the cost; a 6-point pose from noisy bearings is rough, the offsets are compared on
        # the refined ones.
        for _ in range(3):
            inl = ang < thr
            if inl.sum() < 6:
                break
            R2, t2, ok2 = dlt_pose(Xn[inl, assign[inl]][None], f[inl][None])
            if not ok2[0]:
                break
            cost2, ang2, assign2 = (v[0] for v in _msac(R2, t2, Xn, valid, f, thr))
            if cost2 >= cost:
                break
            cost, ang, assign, R_s, t_s = cost2, ang2, assign2, R2[0], t2[0]
        if cost < best[0]:
            # undo the normalisation: R (X - mu)/s + t, scaled by s, is R X + (s t - R mu)
            best = (cost, (d, make_pose(R_s, scale * t_s - R_s @ mu), float((ang < thr).mean())))
    if best[1] is None:
        raise UserError("no pose hypothesis could be formed from the hand detections", fix="record longer")
    d, T_pano_kinect, fraction = best[1]
    if fraction < MIN_RANSAC_FRACTION:
        raise UserError(f"the panorama's hand detections do not match the Kinect hands (the best pose explains "
                        f"{fraction:.0%} of {len(sel)} detections)",
                        fix="check that both sensors see the same people at the same time, and the detector's weights")
    return RansacAssociation(invert_pose(T_pano_kinect), float(d), float(fraction), int(len(sel)))


def _msac(R: np.ndarray, t: np.ndarray, Xn: np.ndarray, valid: np.ndarray, f: np.ndarray,
          thr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MSAC costs (S,) of poses R (S,3,3), t (S,3) over detections f (M,3) with candidate points Xn
    (M,C,3) (valid (M,C)), every detection's angle (S,M) to its nearest candidate, and which one it
    is (S,M). Inliers count by how well they fit, which separates neighbouring offsets better than a
    bare count when hands move a threshold's worth in a few frames."""
    p = np.einsum("sij,mcj->smci", R, Xn) + t[:, None, None, :]
    cosang = np.sum(p * f[None, :, None, :], axis=-1) / np.linalg.norm(p, axis=-1).clip(1e-12)
    cosang = np.where(valid[None], cosang, -1.0)
    ang = np.arccos(np.clip(cosang.max(axis=-1), -1.0, 1.0))
    return np.sum(np.minimum(ang, thr) ** 2, axis=-1), ang, cosang.argmax(axis=-1)


@dataclass
class AssociationStats:
    detections: int = 0
    associated: int = 0
    other_side: int = 0  # associated with the hand of the side the detector did not say

    def to_json(self) -> dict:
        return {"detections": self.detections, "associated": self.associated, "other_side": self.other_side}


def predicted_bearings(candidates: HandCandidates, T_kinect_pano: np.ndarray, time_map: TimeMap,
                       t_pano: np.ndarray) -> np.ndarray:
    """Unit bearings (F,C,3) in the panorama frame of the candidate hands at camera times (F,)."""
    X = candidates.positions(time_map.to_session(t_pano))
    p = transform_points(invert_pose(T_kinect_pano), X)
    return p / np.linalg.norm(p, axis=-1, keepdims=True)


def rows_by_frame(frame: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The distinct frame indices of ``frame`` (M,) in ascending order, and for each the ascending
    row indices that carry it: one sort, so the cost stays linear in the session's length."""
    order = np.argsort(frame, kind="stable")
    frames, starts = np.unique(frame[order], return_index=True)
    return frames, np.split(order, starts[1:])


def associate_detections(hands: HandBearings, t_pano: np.ndarray, candidates: HandCandidates,
                         T_kinect_pano: np.ndarray, time_map: TimeMap, num_tracks: int,
                         gate_deg: float = 6.0) -> tuple[np.ndarray, AssociationStats]:
    """Bearings (F,K,3) (NaN where nothing was associated) with each frame's detections assigned to
    the predicted Kinect hands (optimal assignment on angle + side penalty, gated at ``gate_deg``)."""
    F = len(t_pano)
    out = np.full((F, num_tracks, 3), np.nan)
    stats = AssociationStats(detections=len(hands))
    if not len(hands):
        return out, stats
    frames, rows = rows_by_frame(hands.frame)
    pred = predicted_bearings(candidates, T_kinect_pano, time_map, t_pano[frames])
    for row, fi in enumerate(frames):
        m = rows[row]
        cosang = np.clip(hands.bearing[m] @ pred[row].T, -1.0, 1.0)  # (n,C), NaN where untracked
        ang = np.degrees(np.arccos(cosang))
        cost = ang + SIDE_PENALTY_DEG * (hands.is_right[m][:, None] != candidates.is_right[None, :])
        allowed = np.isfinite(ang) & (ang < gate_deg)
        cost = np.where(allowed, cost, 1e6)
        r, c = linear_sum_assignment(cost)
        for i, j in zip(r, c):
            if allowed[i, j]:
                out[fi, candidates.tracks[j]] = hands.bearing[m[i]]
                stats.associated += 1
                stats.other_side += int(hands.is_right[m[i]] != candidates.is_right[j])
    return out, stats


def tracked_views(points: np.ndarray, T_kinect_pano: np.ndarray, size: int = TRACKED_VIEW_PX) -> list[WristView]:
    """A view around each tracked Kinect hand, from the Kinect joints ``points`` (K,3) of one
    instant (track layout of ``calibration/observations.py``, NaN where untracked), planned on its
    wrist and the hand's extent about its centre (:data:`HAND_CENTRES`; or on its wrist, hand, hand
    tip and thumb joints) with a generous margin (the pose and clock may still be
    off)."""
    hands = []
    for p in range(points.shape[0] // TRACKS_PER_PERSON):
        for side in SIDES:
            names = ("WRIST", "ELBOW") if HAND_CENTRES.from_arm else _HAND_JOINTS
            joints = points[[hand_track(p, side, j) for j in names]]
            if HAND_CENTRES.from_arm:
                centre = hand_centre({"wrist": joints[0], "elbow": joints[1]}, True, reach_m=HAND_CENTRES.reach_m,
                                     wrist_fallback=False)
                # the hand lies around its centre, within a fist's reach either way (NaN without an elbow)
                joints = np.vstack([joints[:1], centre + 0.1 * np.vstack([np.eye(3), -np.eye(3)])])
            if np.isfinite(joints).all(axis=-1).any():
                hands.append(joints)
    if not hands:
        return []
    pano_pts = transform_points(invert_pose(T_kinect_pano), np.stack(hands))
    return plan_views(pano_pts, size=size, margin=TRACKED_MARGIN, min_fov_deg=TRACKED_MIN_FOV_DEG)


# --- the whole panorama side -------------------------------------------------------------------------

@dataclass
class DetectedHands:
    """Everything the detections gave: the detected hands, the frames' times, the candidate Kinect
    hands, and (after a search) the starting pose and clock."""

    hands: HandBearings
    t_pano: np.ndarray
    t_host: np.ndarray
    candidates: HandCandidates
    T_kinect_pano: np.ndarray
    time_map: TimeMap
    info: dict = field(default_factory=dict)

    @property
    def num_tracks(self) -> int:
        return self.candidates.points.shape[1]

    def observations(self, T_kinect_pano: np.ndarray | None = None,
                     time_map: TimeMap | None = None, gate_deg: float = 6.0) -> PanoObservations:
        """The solvers' observations, associated under the given (default: starting) pose and clock;
        ``info["association"]`` holds the counts."""
        bearings, stats = associate_detections(self.hands, self.t_pano, self.candidates,
                                               self.T_kinect_pano if T_kinect_pano is None else T_kinect_pano,
                                               self.time_map if time_map is None else time_map,
                                               self.num_tracks, gate_deg)
        self.info["association"] = stats.to_json()
        return PanoObservations(self.t_pano, self.t_host, bearings, False, DETECTION_NOISE_DEG)


def detect_hands(session: Session, tracks: KinectTracks, detector: ViewDetector, *,
                 T_kinect_pano: np.ndarray | None = None, init_time: TimeMap | None = None,
                 search_frames: int = 150, stride: int = 1, progress: bool = True, seed: int = 0) -> DetectedHands:
    """Detect the hands over a session's panorama and prepare their association with ``tracks``
    (fused Kinect tracks in the reference Kinect's frame). Without ``T_kinect_pano`` the pose and
    the clock offset are searched first (pass 1 of the module docstring); ``init_time`` defaults to
    the host-arrival map."""
    entry = session.pano()
    stamps = read_pano_timestamps(session.pano_frames_path(entry))
    t_pano, t_host = stamps.t_pano, stamps.t_host
    if init_time is None:
        init_time = coarse_time_map(t_pano, t_host)
    reader = None
    if detector.needs_images:
        if not entry.recording:
            raise InputError("the session has no 360 video to detect hands in", path=session.root / MANIFEST)
        reader = PanoReader(session.pano_video_path(entry), session.pano_frames_path(entry))
    candidates = HandCandidates.from_tracks(tracks)
    t_session = init_time.to_session(t_pano)
    inside = np.nonzero((t_session >= tracks.t_session[0]) & (t_session <= tracks.t_session[-1]))[0]
    if len(inside) == 0:
        raise UserError("the 360 frames and the Kinect body tracking do not overlap in time",
                        path=session.root, fix="check the session's clocks (host arrival times)")
    info: dict = {"detector": type(detector).__name__, "frames": int(len(t_pano))}
    time_map = init_time
    if T_kinect_pano is None:
        pick = search_frame_indices(inside, search_frames)
        views = search_views()
        found = detect_frames(detector, reader, pick, lambda i: views, "search hands", progress)
        confirmed = confirmed_detections(found, pick)
        if not confirmed.any():
            raise UserError(f"the hand detector found no hands seen in consecutive frames among the {len(pick)} "
                            "panorama frames searched", path=session.root,
                            fix="check the 360 video and the detector's weights")
        ransac = ransac_association(found.subset(confirmed), t_pano, candidates, init_time, seed=seed)
        T_kinect_pano = ransac.T_kinect_pano
        time_map = TimeMap(init_time.a, init_time.b + ransac.offset_s)
        info["search"] = {"frames": int(len(pick)), "views_per_frame": len(views), "detections": int(len(found)),
                          "confirmed": int(confirmed.sum()),
                          "ransac_inlier_fraction": ransac.inlier_fraction, "ransac_offset_s": ransac.offset_s}
    frames = inside[::max(1, int(stride))]
    at_frames = interpolate_positions(tracks.t_session, tracks.points, time_map.to_session(t_pano[frames]))
    row = {int(i): n for n, i in enumerate(frames)}
    found = detect_frames(detector, reader, frames, lambda i: tracked_views(at_frames[row[i]], T_kinect_pano),
                          "hands", progress)
    info["tracked"] = {"frames": int(len(frames)), "detections": int(len(found))}
    return DetectedHands(found, t_pano, t_host, candidates, T_kinect_pano, time_map, info)
