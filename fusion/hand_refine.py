"""Repairs of a hand observation whose errors are correlated over time (a hand network's).

A hand network such as WiLoR errs in ways that a temporal smoother cannot average out: its errors
drift slowly (over a few tenths of a second) rather than jump from frame to frame. Two of them
have a structure that the pipeline can use instead:

- *Where the hand is across the viewing ray.* Lifting (``fusion.lifting``) puts the wrist on the
  ray through the wrist keypoint. One keypoint carries its whole 2D error into the wrist; the hand
  as a whole is better located by all 21 keypoints: :func:`place_on_keypoints` moves the lifted hand
  across its central ray (its depth along that ray stays the Kinect's) so that its joints lie
  nearest, in the least-squares sense, to the rays through their keypoints. Under a rotation error
  the hand then turns about where the image shows it rather than about its wrist.
- *The hand's size.* A person's hand does not change size, but the network's apparent size does (its
  depth and its 3D keypoints' scale come from it). :class:`HandSizeTrack` keeps each (person, side)'s
  running median of the observed size (the summed lengths of the 20 bones of the wrist-relative 3D
  keypoints) and :func:`rescale_keypoints` brings each observation to it. The median uses only
  past and present observations, so the live preview and ``process`` agree.

Two kinds of observation are not the hand asked for: the box of another hand close to it, and a
false hand elsewhere in the view. They are rejected by their consistency with the Kinect's
prediction: a wrist nearer another predicted hand than its own (:func:`nearer_other_hand`), or
further from its own than the track's predictions usually are (:class:`OffsetGate`).

World frame y up, metres; the view camera's frame as ``hands.estimator`` defines it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from omnimocap.fusion.lifting import LiftedHand
from omnimocap.geometry.pano_optics import PanoOptics
from omnimocap.hands.estimator import HandObservation, ViewRequest

# Parent of each of the 21 OpenPose hand joints (the wrist, 0, has none).
HAND21_PARENTS = (-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19)


@dataclass
class HandRefineConfig:
    """Repairs of the hand observations (``fusion.hand_refine``); each one off leaves that step as
    lifting alone does it."""

    keypoint_position: bool = True
    """Place the lifted hand across its central viewing ray by all 21 2D keypoints
    (:func:`place_on_keypoints`), not by the wrist keypoint alone; its depth along the ray stays."""
    track_size: bool = True
    """Scale each observation's wrist-relative 3D keypoints to its (person, side)'s running median
    size (:class:`HandSizeTrack`) before lifting."""
    size_window: int = 300
    """Observations of a (person, side) the running median size (and the running gate) looks back over."""
    size_min_samples: int = 5
    """Observations of a (person, side) before its sizes are brought to their median."""
    nearest_hand: bool = True
    """Reject a lifted hand whose wrist lies nearer another predicted hand (the other side, another
    person's) than its own, by more than ``nearest_margin_m``: the network's box held another hand
    (:func:`nearer_other_hand`)."""
    nearest_margin_m: float = 0.04
    """How much nearer, metres, another predicted hand must be: about the Kinect's wrist error, so
    that correct hands held together, whose predictions err by more than their distance, are kept
    (without it, 4 of 86 hands of an exact observer on a 1.5 s replay were turned away)."""
    track_gate: bool = True
    """Reject a lifted hand whose wrist lies further from its own predicted wrist than ``gate_scale``
    times the running median of that distance over its (person, side)'s accepted hands, and at least
    ``gate_floor_m`` (:class:`OffsetGate`): a gate that follows how well the Kinect predicts this
    hand, inside ``ProcessConfig.max_gate_m``."""
    gate_scale: float = 3.0
    """Multiple of the running median distance (predicted to lifted wrist) beyond which a hand is
    rejected."""
    gate_floor_m: float = 0.08
    """The running gate is never tighter than this, metres: about a hand's length, within which the
    Kinect's wrist strays now and then even when it is usually close."""
    gate_min_samples: int = 10
    """Accepted hands of a (person, side) before its running gate applies."""
    huber_px_frac: float = 0.02
    """Keypoint residuals beyond this fraction of the hand's box side (as an angle, through the
    view's focal length) count linearly, not quadratically, in :func:`place_on_keypoints`."""


def hand_size(keypoints_3d: np.ndarray) -> float:
    """Summed length of the 20 bones of a hand's 21 joints (OpenPose order), in their units."""
    k = np.asarray(keypoints_3d, dtype=np.float64)
    return float(np.sum(np.linalg.norm(k[1:] - k[list(HAND21_PARENTS[1:])], axis=-1)))


class HandSizeTrack:
    """Running median of each (person, side)'s observed hand size (:func:`hand_size`) over its last
    ``window`` observations; the median is given once ``min_samples`` have been seen."""

    def __init__(self, window: int, min_samples: int):
        self.window, self.min_samples = max(1, int(window)), max(1, int(min_samples))
        self._sizes: dict[tuple[int, int], deque] = {}

    def update(self, key: tuple[int, int], size: float) -> float | None:
        """Record ``size`` for ``key``; returns the median including it, or None while fewer than
        ``min_samples`` sizes are known (or ``size`` is not a positive number)."""
        if not np.isfinite(size) or size <= 0:
            return None
        sizes = self._sizes.setdefault(key, deque(maxlen=self.window))
        sizes.append(float(size))
        return float(np.median(sizes)) if len(sizes) >= self.min_samples else None


class OffsetGate:
    """A gate on the distance (metres) between a hand's lifted wrist and the Kinect's prediction that
    follows the prediction's own accuracy: per (person, side), ``scale`` times the running median of
    the distances of its last ``window`` accepted hands, at least ``floor_m``; open until
    ``min_samples`` have been accepted."""

    def __init__(self, window: int, min_samples: int, scale: float, floor_m: float):
        self.window, self.min_samples = max(1, int(window)), max(1, int(min_samples))
        self.scale, self.floor_m = float(scale), float(floor_m)
        self._accepted: dict[tuple[int, int], deque] = {}

    def reject(self, key: tuple[int, int], offset_m: float) -> bool:
        """Whether ``offset_m`` is beyond ``key``'s gate; an accepted one is recorded."""
        seen = self._accepted.setdefault(key, deque(maxlen=self.window))
        if len(seen) >= self.min_samples and offset_m > max(self.floor_m, self.scale * float(np.median(seen))):
            return True
        if np.isfinite(offset_m):
            seen.append(float(offset_m))
        return False


def nearer_other_hand(wrist: np.ndarray, predicted_wrists: np.ndarray, person: int, side: int,
                      margin_m: float = 0.0) -> bool:
    """Whether ``wrist`` (3,) lies nearer another of the ``predicted_wrists`` (P, 2, 3) (NaN where
    unknown) than that of (``person``, ``side``) by more than ``margin_m``; world frame, metres."""
    d = np.linalg.norm(np.asarray(predicted_wrists, dtype=np.float64) - wrist, axis=-1)
    own = d[person, side]
    d[person, side] = np.nan
    others = d[np.isfinite(d)]
    return bool(np.isfinite(own) and len(others) and others.min() + margin_m < own)


def rescale_keypoints(obs: HandObservation, size: float | None) -> HandObservation:
    """``obs`` with its 3D keypoints scaled about the wrist keypoint to the hand size ``size``
    (:func:`hand_size`, metres); ``obs`` itself when ``size`` is None."""
    if size is None:
        return obs
    k = np.asarray(obs.keypoints_3d, dtype=np.float64)
    own = hand_size(k)
    if own <= 0:
        return obs
    return replace(obs, keypoints_3d=k[0] + (size / own) * (k - k[0]))


def place_on_keypoints(lifted: LiftedHand, obs: HandObservation, request: ViewRequest, T_world_pano: np.ndarray,
                       optics: PanoOptics | None = None, kinect_wrist_world: np.ndarray | None = None,
                       huber_px_frac: float = 0.02, iterations: int = 3) -> LiftedHand:
    """``lifted`` moved across its central viewing ray so that its 21 joints lie nearest the rays
    through their 2D keypoints.

    The rays start at the optical centre of the lens that shows each keypoint (``optics``; the 360
    camera's origin without them). The shift lies in the plane perpendicular to ``lifted.ray`` (the
    ray through the wrist): the depth along it, which lifting took from the Kinect, is kept. The
    residual of a joint is its distance from its ray, divided by its distance along it (an angle);
    residuals beyond ``huber_px_frac`` of the observed box side (through the view's focal length)
    are weighted down (Huber, ``iterations`` reweightings). Rotations and the hand's shape stay;
    ``lateral_offset`` is measured again from ``kinect_wrist_world`` (world, metres) when given.
    """
    kp = np.asarray(obs.keypoints_2d, dtype=np.float64)
    if kp.shape != (21, 2) or not np.all(np.isfinite(kp)):
        return lifted
    R_world_view = T_world_pano[:3, :3] @ request.R_pano_view
    bearing_view = request.camera.unproject(kp)
    dirs = bearing_view @ R_world_view.T
    origins = np.broadcast_to(T_world_pano[:3, 3], (21, 3)).copy()
    if optics is not None and optics.baseline_m > 0.0:
        centres, _ = optics.rays(bearing_view @ np.asarray(request.R_pano_view).T)
        origins = origins + centres @ T_world_pano[:3, :3].T
    d0 = lifted.ray / np.linalg.norm(lifted.ray)
    basis = np.linalg.svd(np.eye(3) - np.outer(d0, d0))[0][:, :2]  # (3, 2) spans the plane across d0
    box = np.asarray(obs.box_xyxy, dtype=np.float64)
    focal = 0.5 * (request.camera.fx + request.camera.fy)
    side = float(np.max(box[2:] - box[:2])) if box.shape == (4,) and np.all(np.isfinite(box)) else 0.0
    threshold = max(huber_px_frac * side / focal, 1e-4) if focal > 0 else 1e-4  # radians
    joints = np.asarray(lifted.joints, dtype=np.float64)
    P = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]  # (21, 3, 3) across each ray
    rel = joints - origins
    depth = np.maximum(np.sum(rel * dirs, axis=-1), 1e-3)
    shift = np.zeros(2)
    weights = 1.0 / depth ** 2  # residuals as angles
    for _ in range(max(1, iterations)):
        A = np.einsum("ia,nij,jb,n->ab", basis, P, basis, weights)
        b = -np.einsum("ia,nij,nj,n->a", basis, P, rel, weights)
        if np.linalg.cond(A) > 1e12:
            return lifted
        shift = np.linalg.solve(A, b)
        moved = rel + basis @ shift
        residual = np.linalg.norm(np.einsum("nij,nj->ni", P, moved), axis=-1) / depth
        weights = np.where(residual > threshold, threshold / np.maximum(residual, 1e-12), 1.0) / depth ** 2
    move = basis @ shift
    wrist = lifted.wrist + move
    origin = lifted.wrist - lifted.depth * d0  # the wrist ray's origin (the lens's centre)
    to_wrist = wrist - origin
    dist = float(np.linalg.norm(to_wrist))
    offset = lifted.lateral_offset if kinect_wrist_world is None else \
        float(np.linalg.norm(np.asarray(kinect_wrist_world, dtype=np.float64) - wrist))
    return replace(lifted, wrist=wrist, joints=joints + move, ray=to_wrist / dist, depth=dist, lateral_offset=offset)
