"""Body keypoints over the panorama, associated with the Kinect bodies: bearings that the time sync
and the markerless calibration solve with beside the hands' (calibration/pano_hands.py).

A pose model (any :class:`PoseDetector`: the simulated one of ``hands/sim_pose.py``, or a COCO-17
model) runs on one perspective view per Kinect body, planned around the body's tracked joints
predicted through the current pose and clock (:func:`body_views`). Its people become panorama
bearings per keypoint (``calibration/observations.py`` ``body_bearings_from_detections``), and
each frame's people are assigned to the predicted Kinect bodies by the median angle over the
keypoints of :data:`BODY_KEYPOINTS` (:func:`associate_bodies`; optimal assignment gated at
``gate_deg``). A pose model mirrors people now and then (mostly people seen from behind), so each
detected person is also compared with its keypoints' left and right exchanged and the better
labelling is kept.

The keypoints compared are the ones both skeletons name (shoulders, elbows, wrists, knees, ankles,
and the face's nose, eyes and ears):
a COCO keypoint and k4abt's joint of the same name differ by a definition offset that stays with
the body (annotators mark a surface point, k4abt a joint centre, each with its own convention). A
body that walks forward turns such an offset into an apparent time shift (15 mm at 1 m/s is 15 ms),
so every body track gets a constant offset in the body's frame (shoulders and head,
``calibration/timesync.py`` :func:`body_frames`) solved with the pose and clock
(:meth:`BearingProblem.set_offsets`). The face keypoints are compared with k4abt's NOSE, EYE and EAR
joints (not its HEAD, the skull's centre a decimetre behind the nose); their offsets are also solved
in the frame of those joints' reported orientation, which turns with the head. A pose model misses
the face of a person who looks away, so the face tracks come and go with the person's facing; with
``face=False`` (:func:`with_bodies`) they are left out.

Track layout of the body part: track ``len(BODY_KEYPOINTS) * p + j`` is Kinect person p's keypoint
``BODY_KEYPOINTS[j]``; the solvers put it after the hands' tracks. Frames: panorama camera frame
(OpenCV axes), ``T_kinect_pano`` maps panorama-frame points into the reference Kinect's depth
frame; metres, seconds.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from omnimocap.calibration.observations import (
    TRACKED_KINECT_JOINTS, TRACKS_PER_PERSON, BodyKeypointBearings, KinectTracks, body_bearings_from_detections,
)
from omnimocap.calibration.pano_hands import read_frames, rows_by_frame
from omnimocap.calibration.timesync import body_frames
from omnimocap.capture.pano import PanoReader
from omnimocap.capture.rig import TimeMap
from omnimocap.capture.session import Session
from omnimocap.data.skeletons import COCO_FLIP, COCO_INDEX, KINECT_INDEX, SIDES
from omnimocap.geometry.resample import interpolate_positions
from omnimocap.geometry.transforms import invert_pose, transform_points
from omnimocap.geometry.views import WristView, plan_views
from omnimocap.hands.estimator import PoseDetections

# (COCO keypoint, k4abt joint) pairs compared, in track order.
BODY_KEYPOINTS = (
    ("left_shoulder", "SHOULDER_LEFT"), ("right_shoulder", "SHOULDER_RIGHT"),
    ("left_elbow", "ELBOW_LEFT"), ("right_elbow", "ELBOW_RIGHT"),
    ("left_wrist", "WRIST_LEFT"), ("right_wrist", "WRIST_RIGHT"),
    ("left_knee", "KNEE_LEFT"), ("right_knee", "KNEE_RIGHT"),
    ("left_ankle", "ANKLE_LEFT"), ("right_ankle", "ANKLE_RIGHT"),
    ("nose", "NOSE"), ("left_eye", "EYE_LEFT"), ("right_eye", "EYE_RIGHT"),
    ("left_ear", "EAR_LEFT"), ("right_ear", "EAR_RIGHT"),
)
# Indices into BODY_KEYPOINTS of the face's keypoints.
FACE_KEYPOINTS = tuple(j for j, (c, _) in enumerate(BODY_KEYPOINTS) if c in ("nose", "left_eye", "right_eye",
                                                                            "left_ear", "right_ear"))
KEYPOINTS_PER_PERSON = len(BODY_KEYPOINTS)
# Each side's wrist among a person's keypoints.
_WRIST_KEYPOINT = {side: [k for _, k in BODY_KEYPOINTS].index(f"WRIST_{side.upper()}") for side in SIDES}
_COCO = np.array([COCO_INDEX[c] for c, _ in BODY_KEYPOINTS])
_COCO_FLIPPED = np.array([COCO_FLIP[i] for i in _COCO])
_KINECT = [TRACKED_KINECT_JOINTS.index(KINECT_INDEX[k]) for _, k in BODY_KEYPOINTS]
# Keypoints a detected person and a Kinect body must share to be compared.
MIN_COMMON_KEYPOINTS = 3
BODY_VIEW_PX = 640  # a COCO pose model's input size
BODY_VIEW_MARGIN = 1.3
BODY_MIN_FOV_DEG = 40.0


class PoseDetector(Protocol):
    """Finds people's COCO-17 keypoints in views of one panorama frame (``hands/sim_pose.py``
    ``SimPoseDetector``, or a pose model). ``needs_images`` False: the frame is not decoded."""

    needs_images: bool

    def detect_poses(self, frame_index: int, pano_bgr: np.ndarray | None,
                     views: Sequence[WristView]) -> list[PoseDetections]: ...


@dataclass
class BodyCandidates:
    """The Kinect bodies detected people can be: the keypoints of :data:`BODY_KEYPOINTS` per person
    (N,P*B,3) in the reference Kinect's frame at session times (N,), their relative noise (N,P*B),
    each track's body frame (N,P*B,3,3) (columns: the body's x left, y up, z forward) and, when the
    Kinects report joint orientations, each track's segment frame (N,P*B,3,3) (the Kinect joint's
    reported orientation; NaN where unknown)."""

    t_session: np.ndarray
    points: np.ndarray
    sigma: np.ndarray
    frames: np.ndarray
    all_joints: np.ndarray  # (N,P,TRACKS_PER_PERSON,3): what the views are planned on
    segment_frames: np.ndarray | None = None

    @property
    def num_people(self) -> int:
        return self.all_joints.shape[1]

    @classmethod
    def from_tracks(cls, tracks: KinectTracks) -> "BodyCandidates":
        P = tracks.points.shape[1] // TRACKS_PER_PERSON
        joints = tracks.points.reshape(len(tracks.t_session), P, TRACKS_PER_PERSON, 3)
        sigma = tracks.sigma.reshape(len(tracks.t_session), P, TRACKS_PER_PERSON)
        col = {name: TRACKED_KINECT_JOINTS.index(KINECT_INDEX[name])
               for name in ("SHOULDER_LEFT", "SHOULDER_RIGHT", "HEAD")}
        left, right, head = (joints[:, :, col[n]] for n in ("SHOULDER_LEFT", "SHOULDER_RIGHT", "HEAD"))
        frame = body_frames(left, right, 0.5 * (left + right), head)  # (N,P,3,3)
        B, N = KEYPOINTS_PER_PERSON, len(tracks.t_session)
        segments = None
        if tracks.rotations is not None:
            segments = tracks.rotations.reshape(N, P, TRACKS_PER_PERSON, 3, 3)[:, :, _KINECT].reshape(N, P * B, 3, 3)
        return cls(tracks.t_session, joints[:, :, _KINECT].reshape(N, P * B, 3),
                   sigma[:, :, _KINECT].reshape(N, P * B), np.repeat(frame, B, axis=1), joints, segments)

    def joints_at(self, t_session: np.ndarray) -> np.ndarray:
        """Every tracked joint (M,P,TRACKS_PER_PERSON,3) at session times (M,), NaN where untracked."""
        return interpolate_positions(self.t_session, self.all_joints, t_session)


def body_views(joints: np.ndarray, T_kinect_pano: np.ndarray, size: int = BODY_VIEW_PX) -> list[WristView]:
    """One view per Kinect body of ``joints`` (P,K,3) (one instant, reference Kinect frame, NaN where
    untracked) that holds its tracked joints with a margin (the pose and clock may still be off)."""
    bodies = [j for j in joints if np.isfinite(j).all(axis=-1).sum() >= MIN_COMMON_KEYPOINTS]
    if not bodies:
        return []
    pano_pts = transform_points(invert_pose(T_kinect_pano), np.stack(bodies))
    return plan_views(pano_pts, size=size, margin=BODY_VIEW_MARGIN, min_fov_deg=BODY_MIN_FOV_DEG)


def concat_bodies(parts: Sequence[BodyKeypointBearings]) -> BodyKeypointBearings:
    if not parts:
        return BodyKeypointBearings(np.zeros(0, dtype=np.int64), np.zeros((0, 17, 3)), np.zeros((0, 17)),
                                    np.zeros(0))
    return BodyKeypointBearings(*(np.concatenate([getattr(p, f) for p in parts])
                                  for f in ("frame", "bearing", "confidence", "box_confidence")))


def detect_bodies(session: Session, tracks: KinectTracks, detector: PoseDetector, t_pano: np.ndarray,
                  T_kinect_pano: np.ndarray, time_map: TimeMap, stride: int = 1,
                  progress: bool = False) -> "DetectedBodies":
    """Run ``detector`` on the body views (:func:`body_views`) of every ``stride``-th pano frame
    (camera times ``t_pano``) that ``time_map`` puts within ``tracks`` (fused Kinect tracks in the
    reference Kinect's frame), the Kinect bodies predicted through ``T_kinect_pano``."""
    candidates = BodyCandidates.from_tracks(tracks)
    t = time_map.to_session(t_pano)
    frames = np.nonzero((t >= tracks.t_session[0]) & (t <= tracks.t_session[-1]))[0][::max(1, int(stride))]
    found = _detect_frames(session, candidates, detector, frames, t_pano, T_kinect_pano, time_map, progress)
    return DetectedBodies(found, t_pano, candidates, {"frames": int(len(frames)), "people": int(len(found))})


def _detect_frames(session: Session, candidates: BodyCandidates, detector: PoseDetector, frames: np.ndarray,
                   t_pano: np.ndarray, T_kinect_pano: np.ndarray, time_map: TimeMap,
                   progress: bool) -> BodyKeypointBearings:
    reader = None
    if detector.needs_images:
        entry = session.pano()
        reader = PanoReader(session.pano_video_path(entry), session.pano_frames_path(entry))
    at = candidates.joints_at(time_map.to_session(t_pano[frames]))
    row = {int(i): n for n, i in enumerate(frames)}
    parts = []
    with tqdm(total=len(frames), desc="bodies", unit="frame", disable=not progress, file=sys.stderr) as bar:
        for i, img in read_frames(reader, frames):
            views = body_views(at[row[i]], T_kinect_pano)
            if views:
                parts.append(body_bearings_from_detections(i, views, detector.detect_poses(i, img, views)))
            bar.update(1)
    return concat_bodies(parts)


@dataclass
class BodyAssociationStats:
    people: int = 0
    associated: int = 0
    flipped: int = 0  # associated with left and right exchanged

    def to_json(self) -> dict:
        return {"people": self.people, "associated": self.associated, "flipped": self.flipped}


def _median_angles(det: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Median angle (n,P) in degrees between detected keypoints det (n,B,3) and predicted pred
    (P,B,3) over the keypoints both have (inf with fewer than :data:`MIN_COMMON_KEYPOINTS`)."""
    cos = np.einsum("nbi,pbi->npb", det, pred)
    ang = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    enough = np.isfinite(ang).sum(axis=-1) >= MIN_COMMON_KEYPOINTS
    if not ang.size:
        return np.full(cos.shape[:2], np.inf)
    with warnings.catch_warnings():  # pairs without any common keypoint: All-NaN, set to inf below
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(ang, axis=-1)
    return np.where(enough, med, np.inf)


def associate_bodies(bodies: BodyKeypointBearings, t_pano: np.ndarray, candidates: BodyCandidates,
                     T_kinect_pano: np.ndarray, time_map: TimeMap,
                     gate_deg: float = 5.0) -> tuple[np.ndarray, BodyAssociationStats]:
    """Bearings (F,P*B,3) of the body tracks (NaN where nothing was associated): each frame's
    detected people assigned to the predicted Kinect bodies (optimal assignment on the median angle
    of their common keypoints, as labelled or with left and right exchanged, whichever is smaller;
    gated at ``gate_deg``)."""
    P, B = candidates.num_people, KEYPOINTS_PER_PERSON
    out = np.full((len(t_pano), P * B, 3), np.nan)
    stats = BodyAssociationStats(people=len(bodies))
    if not len(bodies):
        return out, stats
    frames, rows = rows_by_frame(bodies.frame)
    X = interpolate_positions(candidates.t_session, candidates.points, time_map.to_session(t_pano[frames]))
    p = transform_points(invert_pose(T_kinect_pano), X)
    pred = (p / np.linalg.norm(p, axis=-1, keepdims=True)).reshape(len(frames), P, B, 3)
    for row, fi in enumerate(frames):
        m = rows[row]
        direct, flipped = bodies.bearing[m][:, _COCO], bodies.bearing[m][:, _COCO_FLIPPED]
        a_direct, a_flipped = _median_angles(direct, pred[row]), _median_angles(flipped, pred[row])
        use_flip = a_flipped < a_direct
        cost = np.minimum(a_direct, a_flipped)
        allowed = cost < gate_deg
        r, c = linear_sum_assignment(np.where(allowed, cost, 1e6))
        for i, j in zip(r, c):
            if allowed[i, j]:
                out[fi, B * j:B * (j + 1)] = flipped[i] if use_flip[i, j] else direct[i]
                stats.associated += 1
                stats.flipped += int(use_flip[i, j])
    return out, stats


@dataclass
class DetectedBodies:
    """The detected people and the Kinect bodies they are associated with, ready for the solvers."""

    bodies: BodyKeypointBearings
    t_pano: np.ndarray
    candidates: BodyCandidates
    info: dict = field(default_factory=dict)

    def observations(self, T_kinect_pano: np.ndarray, time_map: TimeMap, gate_deg: float) -> np.ndarray:
        """Bearings (F,P*B,3) associated under the given pose and clock; ``info["association"]``
        holds the counts."""
        bearings, stats = associate_bodies(self.bodies, self.t_pano, self.candidates, T_kinect_pano, time_map,
                                           gate_deg)
        self.info["association"] = stats.to_json()
        return bearings


@dataclass
class JointObservations:
    """Hand and body tracks side by side for the solvers: bearings (F,K,3), trajectories (N,K,3)
    with their relative noise (N,K), and what :func:`~omnimocap.calibration.timesync.fine_time_map`
    needs to model the body keypoints' offsets (``body_frames``, ``offset_tracks``)."""

    bearings: np.ndarray
    points: np.ndarray
    sigma: np.ndarray
    body_frames: tuple[np.ndarray, np.ndarray] | None
    offset_tracks: np.ndarray | None


def with_bodies(hand_bearings: np.ndarray, hand_points: np.ndarray, hand_sigma: np.ndarray,
                bodies: DetectedBodies | None, T_kinect_pano: np.ndarray, time_map: TimeMap,
                gate_deg: float, segment_offsets: bool = True, hand_offsets: bool = True,
                face: bool = True) -> JointObservations:
    """The hands' tracks (bearings (F,H,3), Kinect points (N,H,3), relative noise (N,H)), followed
    by the body tracks of ``bodies`` associated under ``T_kinect_pano`` and ``time_map`` (hands
    only when ``bodies`` is None). Each body track's offset is modelled in its body frame and, with
    ``segment_offsets`` and the Kinect joints' orientations known, in its segment frame too
    (``body_frames`` then holds two frames per track, (N,K,2,3,3)): a pose model's keypoint sits
    where annotators mark the person (an offset that turns with the body), k4abt's joint where its
    own definition puts it on the limb (an offset that turns with the limb: a forearm swinging
    through 60 degrees moves a 10 mm offset by 10 mm, in step with the walk). With ``hand_offsets``
    each hand track (person p, side s: track ``2 p + s``) gets an offset too, in the frames of the
    same person's wrist keypoint: the hand centre is built from k4abt's wrist and hand joints, whose
    definition bias turns with the forearm as the wrist's does. Without ``face`` the face keypoints'
    tracks (:data:`FACE_KEYPOINTS`) observe nothing."""
    if bodies is None:
        return JointObservations(hand_bearings, hand_points, hand_sigma, None, None)
    cand = bodies.candidates
    H, N = hand_points.shape[1], len(cand.t_session)
    hands_modelled = hand_offsets and H == len(SIDES) * cand.num_people
    wrist = [p * KEYPOINTS_PER_PERSON + _WRIST_KEYPOINT[side] for p in range(H // len(SIDES)) for side in SIDES]

    def hand_frames(body: np.ndarray) -> np.ndarray:
        return body[:, wrist] if hands_modelled else np.broadcast_to(np.eye(3), (N, H, 3, 3))

    frames = np.concatenate([hand_frames(cand.frames), cand.frames], axis=1)
    if segment_offsets and cand.segment_frames is not None:
        segments = np.concatenate([hand_frames(cand.segment_frames), cand.segment_frames], axis=1)
        frames = np.stack([frames, segments], axis=2)
    body = bodies.observations(T_kinect_pano, time_map, gate_deg)
    if not face:  # a new array on every call: blanked in place
        for j in FACE_KEYPOINTS:
            body[:, j::KEYPOINTS_PER_PERSON] = np.nan
    return JointObservations(
        np.concatenate([hand_bearings, body], axis=1),
        np.concatenate([hand_points, cand.points], axis=1), np.concatenate([hand_sigma, cand.sigma], axis=1),
        (cand.t_session, frames), np.r_[np.full(H, hands_modelled), np.ones(cand.points.shape[1], dtype=bool)])
