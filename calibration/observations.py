"""What the calibration and sync solvers observe in a session: the Kinects' trajectories of a set of
body joints, and their bearings in the panorama, as arrays on their own clocks.

Tracks are indexed the same way on both sides: track ``TRACKS_PER_PERSON * p + j`` is person
``p``'s joint ``TRACKED_KINECT_JOINTS[j]`` (wrists first, then the head, elbows, shoulders, knees,
ankles, the k4abt hand joints and the face's nose, eyes and ears: points that body and hand keypoint
detectors find in an image),
person ``p`` being k4abt body id ``p``. The hands move fastest, so they carry most of the timing. The legs and the head spread the observations over more of the space than the hands alone,
which is what separates the pose's rotation from its translation; every joint carries its own
tracking noise, so more joints average more of it out.

The Kinect side fuses every Kinect of the rig into the reference Kinect's depth frame (through the
rig's poses and time maps), weighting each joint by its k4abt confidence: a LOW joint (occluded,
predicted) is far noisier than a MEDIUM one, and a joint hidden from one Kinect is often seen by
another. Bodies are matched across Kinects by body id, and a joint whose Kinects disagree by more
than :data:`FUSION_GATE_M` keeps the reference Kinect's value.

The panorama side has two sources:

* the **simulated observer** (``simulated_observer=True`` in what it returns): for simulated sessions
  only. It reads the ground truth (capture/truth.py) and projects the true joints (the points the
  simulated body tracking models the Kinect joints as, ``kinect_joints_from_truth``; wrist and hand
  joints only while the hand is visible, the other joints always)
  through the TRUE panorama pose at the true frame times, adds isotropic
  angular noise (``noise_deg``, default 0.2 deg per axis), and stamps the frames with the
  camera-clock times of ``pano_frames.csv``. It is an instrument for measuring the solvers, not a
  detector: its track of person p is body id p, which is the simulator's body id for person p only
  at ``--realism ideal``; at ``field`` the Kinects' ids start at 1, change and swap
  (``sim/k4abt.py``), so the Kinect side has to be associated as with real sessions: the observer
  is refused there (``calibration/pano_observer.py`` ``observer_kind``; ``auto`` picks the
  simulated detector).
* detections over the panorama (hand boxes and body keypoints), associated with the Kinect bodies
  under the current pose and clock (``calibration/pano_hands.py``, ``calibration/pano_bodies.py``).

Body keypoints over the panorama come from a pose model (COCO-17, ``data/skeletons.py``
``COCO_KEYPOINTS``) run on perspective views cut from the equirect frames, the same views as the
hand detector's (``geometry/views.py`` ``WristView``): per view, :class:`PoseDetections` (what the
model returns: boxes and keypoints in view pixels with their confidences), turned into panorama
bearings per detected person by :func:`body_bearings_from_detections`
(:class:`BodyKeypointBearings`). ``hands/sim_pose.py`` fills the same structure from a
simulated session's truth (the ``simulated-detector`` observer's body keypoints).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from omnimocap.capture.rig import Rig
from omnimocap.geometry.quaternions import quat_wxyz_to_matrix
from omnimocap.geometry.resample import linear_brackets
from omnimocap.geometry.transforms import invert_pose, transform_points
from omnimocap.capture.bodies import BodyRecording
from omnimocap.capture.pano import read_pano_timestamps
from omnimocap.capture.session import PANO_FRAMES, Session, kinect_name
from omnimocap.capture.truth import kinect_joints_from_truth, open_truth
from omnimocap.data.skeletons import (
    KINECT_CONFIDENCE_LOW, KINECT_CONFIDENCE_NONE, KINECT_FROM_SMPLX, KINECT_INDEX, KINECT_JOINTS, KINECT_WRIST,
    SIDES,
)
from omnimocap.errors import InputError, UserError
from omnimocap.geometry.views import WristView, view_pixel_to_pano_bearing
from omnimocap.hands.estimator import PoseDetections

# Kinect joints tracked per person, in track order (see the module docstring); the wrists come first.
TRACKED_KINECT_JOINTS = (
    KINECT_WRIST["left"], KINECT_WRIST["right"], KINECT_INDEX["HEAD"],
    KINECT_INDEX["ELBOW_LEFT"], KINECT_INDEX["ELBOW_RIGHT"], KINECT_INDEX["SHOULDER_LEFT"],
    KINECT_INDEX["SHOULDER_RIGHT"], KINECT_INDEX["KNEE_LEFT"], KINECT_INDEX["KNEE_RIGHT"],
    KINECT_INDEX["ANKLE_LEFT"], KINECT_INDEX["ANKLE_RIGHT"],
    KINECT_INDEX["HAND_LEFT"], KINECT_INDEX["HAND_RIGHT"], KINECT_INDEX["HANDTIP_LEFT"],
    KINECT_INDEX["HANDTIP_RIGHT"], KINECT_INDEX["THUMB_LEFT"], KINECT_INDEX["THUMB_RIGHT"],
    KINECT_INDEX["NOSE"], KINECT_INDEX["EYE_LEFT"], KINECT_INDEX["EYE_RIGHT"], KINECT_INDEX["EAR_LEFT"],
    KINECT_INDEX["EAR_RIGHT"],
)
TRACKS_PER_PERSON = len(TRACKED_KINECT_JOINTS)
# Noise of a LOW-confidence joint relative to a MEDIUM one (std): predicted joints behind the body.
LOW_CONFIDENCE_NOISE_FACTOR = 2.5
# Two Kinects' values of one joint farther apart than this are not the same joint (a body id mix-up).
FUSION_GATE_M = 0.15
# Frames of two Kinects farther apart in time than this are not interpolated between.
MAX_FRAME_GAP_S = 0.07


@dataclass
class PanoObservations:
    """Bearings (F,K,3) of K joint tracks in the panorama frame (NaN where unseen) at camera-clock
    frame times ``t_pano`` (F,) with host arrival times ``t_host`` (F,) on the session clock."""

    t_pano: np.ndarray
    t_host: np.ndarray
    bearings: np.ndarray
    simulated_observer: bool
    noise_deg: float | None = None


@dataclass
class BodyKeypointBearings:
    """Detected people over the panorama, one row each: pano ``frame`` index (M,), COCO-17 unit
    ``bearing`` (M,17,3) in the panorama frame (NaN where the keypoint's confidence is below the
    threshold it was made with), ``confidence`` (M,17) the keypoints', ``box_confidence`` (M,)."""

    frame: np.ndarray
    bearing: np.ndarray
    confidence: np.ndarray
    box_confidence: np.ndarray

    def __len__(self) -> int:
        return len(self.frame)


# A person seen by two overlapping views: the keypoints both views are confident of lie closer than
# this (median angle).
BODY_MERGE_DEG = 3.0


def _same_person(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two (17,3) keypoint bearing sets (NaN where a view has none) are one person."""
    both = np.all(np.isfinite(a), axis=-1) & np.all(np.isfinite(b), axis=-1)
    if not both.any():
        return False
    cos = np.clip(np.sum(a[both] * b[both], axis=-1), -1.0, 1.0)
    return bool(np.degrees(np.median(np.arccos(cos))) < BODY_MERGE_DEG)


def body_bearings_from_detections(frame_index: int, views: Sequence[WristView], detections: Sequence[PoseDetections],
                                  min_confidence: float = 0.5) -> BodyKeypointBearings:
    """Every view's people as panorama bearings of their keypoints (those at ``min_confidence`` or
    more; NaN otherwise). A person found by several views is kept once, from the view where the box
    centre lies nearest the image centre (least cut off); two detections are one person when the
    keypoints both give (whatever their confidence) lie within :data:`BODY_MERGE_DEG` (median)."""
    rows = []
    for view, det in zip(views, detections):
        for m in range(len(det)):
            box = np.asarray(det.boxes_xyxy[m], dtype=np.float64)
            conf = np.asarray(det.keypoint_confidence[m], dtype=np.float64)
            raw = view_pixel_to_pano_bearing(view, np.asarray(det.keypoints[m], dtype=np.float64))
            b = np.where((conf >= min_confidence)[:, None], raw, np.nan)
            ok = np.all(np.isfinite(b), axis=-1)
            if not ok.any():
                continue
            off_centre = np.linalg.norm(0.5 * (box[:2] + box[2:]) - (view.size - 1) / 2.0) / view.size
            rows.append((off_centre, b, conf, float(det.confidence[m]), raw))
    rows.sort(key=lambda r: r[0])
    kept: list[tuple] = []
    for r in rows:
        if not any(_same_person(r[4], k[4]) for k in kept):
            kept.append(r)
    n = len(kept)
    return BodyKeypointBearings(np.full(n, frame_index, dtype=np.int64),
                                np.array([k[1] for k in kept]).reshape(n, 17, 3),
                                np.array([k[2] for k in kept]).reshape(n, 17),
                                np.array([k[3] for k in kept], dtype=np.float64))


@dataclass
class KinectTracks:
    """Joint trajectories (N,K,3) fused from the rig's Kinects into the depth frame of Kinect
    ``serial`` (metres, NaN where untracked) at its session-clock frame times ``t_session`` (N,)
    (device times mapped by the rig's time map). ``sigma`` (N,K) is each fused point's noise relative
    to a single MEDIUM-confidence joint (inverse-variance fusion; NaN where untracked)."""

    serial: str
    t_session: np.ndarray
    points: np.ndarray
    sigma: np.ndarray
    kinects_used: tuple[str, ...] = ()
    rotations: np.ndarray | None = None
    """(N,K,3,3) each joint's reported orientation (its body segment's frame; columns: the segment's
    axes) in Kinect ``serial``'s depth frame: the reference Kinect's where it tracks the joint,
    another Kinect's at the nearest frame otherwise; NaN where none does. None: not read."""


def _joint_tracks(rec: BodyRecording, people: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (F,K,3) (device frame, metres), relative variances (F,K) and orientations
    (F,K,3,3) (device frame; NaN where untracked) of the tracked joints."""
    pts = np.full((len(rec), TRACKS_PER_PERSON * people, 3), np.nan)
    var = np.full(pts.shape[:2], np.inf)
    rot = np.full(pts.shape + (3,), np.nan)
    joints = list(TRACKED_KINECT_JOINTS)
    for body_id, track in rec.bodies.items():
        if 0 <= body_id < people:
            cols = slice(TRACKS_PER_PERSON * body_id, TRACKS_PER_PERSON * (body_id + 1))
            pts[:, cols] = track.positions[:, joints]
            q = track.orientations[:, joints]
            known = np.all(np.isfinite(q), axis=-1) & (np.linalg.norm(np.nan_to_num(q), axis=-1) > 0.5)
            rot[:, cols][known] = quat_wxyz_to_matrix(q[known])
            conf = track.confidences[:, joints]
            var[:, cols] = np.where(conf == KINECT_CONFIDENCE_LOW, LOW_CONFIDENCE_NOISE_FACTOR ** 2, 1.0)
            var[:, cols][conf == KINECT_CONFIDENCE_NONE] = np.inf
    bad = ~np.all(np.isfinite(pts), axis=-1)
    pts[bad] = np.nan
    var[bad] = np.inf
    rot[bad] = np.nan
    return pts, var, rot


def kinect_wrist_tracks(session: Session, serial: str, rig: Rig, num_people: int | None = None,
                        align_definitions: bool = True, difference_window_s: float | None = None) -> KinectTracks:
    """Read every Kinect's ``bodies_<serial>.json``, map its times onto the session clock and its
    joints into Kinect ``serial``'s depth frame with ``rig``, and fuse them (see the module
    docstring) at Kinect ``serial``'s frame times. Kinects without body tracking or without a pose in
    ``rig`` are left out.

    With ``align_definitions`` each other Kinect's joints are first brought onto a common definition
    with the reference Kinect's (:func:`definition_difference`): k4abt places a person's joint with
    a bias of its own on each Kinect, constant in the joint's reported orientation, so a fused point
    that passes from two Kinects to one (the person hidden from one of them, dropped, or given a new
    id) would step by half their difference, and the trajectory's smoothing turns the step into
    motion that the clock follows.

    With ``difference_window_s`` (seconds; None or 0: off) what remains of each other Kinect's
    difference from the reference Kinect is taken out too where it is slow: its mean over the frames
    within that many seconds where both Kinects see the joint (:func:`slow_difference`), carried
    across the frames where only one of them does. The Kinects' errors also differ in ways that no
    constant captures (slow tracking noise, a Kinect pose a few millimetres off), so the fused point
    would still step where one Kinect loses, drops or re-identifies a person; with the difference
    carried it passes from two Kinects to one without a step."""
    kinects = session.kinects()
    entry = next((d for d in kinects if d.serial == serial), None)
    if entry is None or not entry.bodies:
        raise InputError(f"the session has no body tracking for Kinect {serial}", path=session.root,
                         fix="run `omnimocap track` on the session first")
    from omnimocap.capture.people import people_recordings

    # bodies as people: ids consistent over time and across Kinects, left/right the right way round
    recordings = people_recordings(session, rig)
    rec = recordings[serial]
    people = num_people if num_people is not None else (max(rec.bodies) + 1 if rec.bodies else 0)
    t = rig.time_map(kinect_name(serial)).to_session(rec.timestamps)
    pts, var, rot = _joint_tracks(rec, people)
    rot_own = rot.copy()  # the reference Kinect's own orientations (``rot`` is filled from the others)
    T_kinect_world = invert_pose(rig.pose(kinect_name(serial)))
    wsum = 1.0 / var
    acc = np.where(np.isfinite(pts), pts, 0.0) * wsum[..., None]
    used = [serial]
    for other in kinects:
        name = other.name
        if other.serial == serial or not other.bodies or name not in rig.T_world_sensor:
            continue
        rec_o = recordings[other.serial]
        if len(rec_o) < 2:
            continue
        p_o, var_o, rot_o_own = _joint_tracks(rec_o, people)
        T_kinect_other = T_kinect_world @ rig.pose(name)
        p_o = transform_points(T_kinect_other, p_o)
        # onto the reference Kinect's times, between two frames at most MAX_FRAME_GAP_S apart
        at = linear_brackets(rig.time_map(name).to_session(rec_o.timestamps), t, MAX_FRAME_GAP_S)
        p_o = at.apply(p_o)
        nearest = np.where(at.w < 0.5, at.lo, at.hi)
        rot_o = np.where(at.ok[:, None, None, None], T_kinect_other[:3, :3] @ rot_o_own[nearest], np.nan)
        rot = np.where(np.isnan(rot), rot_o, rot)
        v_o = np.full(p_o.shape[:-1], np.inf)
        v_o[at.ok] = np.maximum(*at.neighbours(var_o))
        p_o[~np.isfinite(v_o)] = np.nan
        # A disagreement beyond the gate means a different body (or a tracking failure): keep the
        # reference Kinect's joint there rather than averaging two things.
        far = np.linalg.norm(p_o - pts, axis=-1) > FUSION_GATE_M
        v_o = np.where(far, np.inf, v_o)
        if align_definitions:
            d = definition_difference(pts, rot_own, p_o, rot_o, ~far & np.isfinite(v_o) & np.isfinite(var))
            # onto the reference Kinect's definition, whichever Kinects see the joint
            p_o = p_o - np.einsum("nkij,kj->nki", np.nan_to_num(rot_o), d)
        if difference_window_s:
            p_o = p_o - slow_difference(t, pts, p_o, ~far & np.isfinite(v_o) & np.isfinite(var), difference_window_s)
        w_o = 1.0 / v_o
        acc += np.where(np.isfinite(p_o), p_o, 0.0) * w_o[..., None]
        wsum = wsum + w_o
        used.append(other.serial)
    with np.errstate(invalid="ignore", divide="ignore"):
        fused = acc / wsum[..., None]
        sigma = 1.0 / np.sqrt(wsum)
    fused[wsum <= 0] = np.nan
    sigma[wsum <= 0] = np.nan
    return KinectTracks(serial, t, fused, sigma, tuple(used), rot)


def slow_difference(t: np.ndarray, p_ref: np.ndarray, p_other: np.ndarray, both: np.ndarray, half_window_s: float,
                    min_frames: int = 3) -> np.ndarray:
    """(N,K,3) metres: the slow part of ``p_other - p_ref`` ((N,K,3) metres: K joints as two Kinects
    report them, in one frame, at times ``t`` (N,) seconds): at each frame, the mean difference over
    the frames ``both`` (N,K) within ``half_window_s`` seconds on either side where there are at
    least ``min_frames`` of them; elsewhere (one Kinect alone sees the joint there) linearly
    interpolated in time between the nearest frames that have it, and held beyond the first and the
    last. Zero for joints that the two Kinects never see together."""
    N, K = both.shape
    ok = both & np.all(np.isfinite(p_ref), axis=-1) & np.all(np.isfinite(p_other), axis=-1)
    diff = np.where(ok[..., None], np.nan_to_num(p_other - p_ref), 0.0)
    # frames exactly half a window away count on both sides (up to rounding of the times)
    lo = np.searchsorted(t, t - half_window_s - 1e-9, side="left")
    hi = np.searchsorted(t, t + half_window_s + 1e-9, side="right")
    csum = np.concatenate([np.zeros((1, K, 3)), np.cumsum(diff, axis=0)])
    ccount = np.concatenate([np.zeros((1, K)), np.cumsum(ok, axis=0)])
    count = ccount[hi] - ccount[lo]
    out = np.zeros((N, K, 3))
    for k in range(K):
        has = count[:, k] >= min_frames
        if not has.any():
            continue
        mean = (csum[hi[has], k] - csum[lo[has], k]) / count[has, k][:, None]
        for axis in range(3):
            out[:, k, axis] = np.interp(t, t[has], mean[:, axis])
    return out


def definition_difference(p_ref: np.ndarray, R_ref: np.ndarray, p_other: np.ndarray, R_other: np.ndarray,
                          both: np.ndarray, min_frames: int = 30) -> np.ndarray:
    """(K,3) metres: for each of K joints, the constant offset d, in the joint's reported orientation
    (its frame's axes in the columns of ``R_ref`` and ``R_other`` (N,K,3,3), the same joint as two
    Kinects report it, in one frame), such that ``p_other - R_other d`` agrees with ``p_ref`` (N,K,3,
    metres): the per-axis median over the frames ``both`` (N,K) of the difference seen in the two
    orientations' local frames (averaged). Zero for joints with fewer than ``min_frames`` such frames
    or without orientations."""
    K = p_ref.shape[1]
    out = np.zeros((K, 3))
    ok = both & np.all(np.isfinite(p_ref), -1) & np.all(np.isfinite(p_other), -1) \
        & np.all(np.isfinite(R_ref), (-2, -1)) & np.all(np.isfinite(R_other), (-2, -1))
    for k in range(K):
        m = ok[:, k]
        if m.sum() < min_frames:
            continue
        diff = p_other[m, k] - p_ref[m, k]
        # each Kinect's local frame; the difference is the offset in either (their orientations agree
        # up to the trackers' noise), so the mean of both readings is taken
        local = 0.5 * (np.einsum("nji,nj->ni", R_other[m, k], diff) + np.einsum("nji,nj->ni", R_ref[m, k], diff))
        out[k] = np.median(local, axis=0)
    return out


def simulated_pano_observations(session: Session, noise_deg: float = 0.2, seed: int = 0) -> PanoObservations:
    """The simulated observer (see the module docstring). Needs the session's ground truth."""
    truth = open_truth(session.root, fix="the simulated observer needs a simulated session; use another observer")
    truth_rig = truth.rig()
    m = truth.motion(("t_session", "smplx_joints", "hand_joints", "hand_visible", "pano_frame_t_session"))
    t_truth = m["t_session"]
    smplx = m["smplx_joints"]  # (P,N,55,3) world
    hands = m["hand_joints"]  # (P,N,2,21,3) world
    visible = m["hand_visible"]  # (P,N,2)
    t_frames = m["pano_frame_t_session"]
    stamps = read_pano_timestamps(session.path(session.pano().timestamps or PANO_FRAMES))
    F = min(len(t_frames), len(stamps.t_pano))
    t_frames = t_frames[:F]
    P = smplx.shape[0]
    K = TRACKS_PER_PERSON
    # the tracked joints as the simulated body tracking models them
    joints = kinect_joints_from_truth(smplx, hands, joints=TRACKED_KINECT_JOINTS)  # (P,N,K,3)
    hand_side = [next((s for s, side in enumerate(SIDES) if KINECT_JOINTS[j].endswith(side.upper())), None)
                 if KINECT_JOINTS[j] not in KINECT_FROM_SMPLX or KINECT_JOINTS[j].startswith("WRIST") else None
                 for j in TRACKED_KINECT_JOINTS]
    nearest = np.clip(np.searchsorted(t_truth, t_frames), 1, len(t_truth) - 1)
    nearest -= (t_frames - t_truth[nearest - 1]) < (t_truth[nearest] - t_frames)
    pts = np.empty((F, K * P, 3))
    vis = np.ones((F, K * P), dtype=bool)
    for p in range(P):
        for k in range(K):
            for axis in range(3):
                pts[:, K * p + k, axis] = np.interp(t_frames, t_truth, joints[p, :, k, axis])
        for k, s in enumerate(hand_side):  # wrist and hand joints are seen while the hand is
            if s is not None:
                vis[:, K * p + k] = visible[p, nearest, s]
    d = transform_points(invert_pose(truth_rig.pose("pano")), pts)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    rng = np.random.default_rng(seed)
    d = d + rng.normal(0.0, np.radians(noise_deg), d.shape)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    d[~vis] = np.nan
    return PanoObservations(stamps.t_pano[:F], stamps.t_host[:F], d, True, noise_deg)


def pano_observations(session: Session, noise_deg: float = 0.2, seed: int = 0) -> PanoObservations:
    """The panorama's joint bearings: the simulated observer for simulated sessions; real sessions
    need hand and body keypoint detections associated with Kinect bodies, which this version does
    not provide."""
    if session.manifest.simulated:
        return simulated_pano_observations(session, noise_deg, seed)
    raise UserError("joint bearings from real panorama frames (hand and body keypoint detections associated "
                    "with Kinect bodies) are not available in this version", path=session.root,
                    fix="calibrate with --method board, or give the rig by other means")
