"""Lifting hand observations from a wrist-centred view into the world frame.

The 360 view gives a precise *direction* to the hand; its depth is anchored on the Kinect: the
wrist is placed on the viewing ray (through WiLoR's wrist keypoint) at the depth that best fits the
Kinect's hand joints (wrist, knuckles, fingertip, thumb tip; weighted least squares along the ray,
each Kinect joint matched to the observed hand keypoint it corresponds to). WiLoR's own depth (from
its fixed 5000 px focal length) is never used.

The viewing ray starts where the 360 camera saw the hand from: with the camera's optics
(``geometry.pano_optics``), the optical centre of the lens that shows the wrist keypoint's direction
in the stitched frame (``PanoOptics.rays``); without them, the camera's origin. The Kinect joints
given are those predicted at the time the hand was captured (its rows' time under a rolling shutter).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from omnimocap.data.skeletons import HAND21_INDEX, KINECT_HAND_JOINT_TO_HAND21
from omnimocap.geometry.pano_optics import PanoOptics
from omnimocap.hands.estimator import HandObservation, ViewRequest


@dataclass
class LiftedHand:
    """One hand in the world frame (y up, metres) at the time it was captured."""

    wrist: np.ndarray  # (3,)
    joints: np.ndarray  # (21, 3) OpenPose hand order
    R_world: np.ndarray  # (3, 3) hand root rotation (left hands: proper left-hand params)
    hand_pose: np.ndarray  # (15, 3, 3)
    betas: np.ndarray  # (10,)
    lateral_offset: float  # distance of the Kinect wrist from the viewing ray, metres
    confidence: float
    ray: np.ndarray  # (3,) unit viewing ray through the wrist, world
    depth: float  # distance of the wrist from the ray's origin (the lens's centre) along ``ray``, metres


def lift_observation(obs: HandObservation, request: ViewRequest, T_world_pano: np.ndarray,
                     kinect_wrist_world: np.ndarray,
                     kinect_hand_world: dict[str, np.ndarray] | None = None,
                     weights: dict[str, float] | None = None, optics: PanoOptics | None = None) -> LiftedHand:
    """Place ``obs`` (seen in ``request``'s view) in the world.

    Args:
        T_world_pano: (4, 4) pose of the 360 camera in the world.
        kinect_wrist_world: (3,) the Kinect wrist predicted at the time the hand was captured, world.
        kinect_hand_world: optional Kinect hand joints at that time, by the names of
            ``data.skeletons.KINECT_HAND_JOINT_TO_HAND21`` (world; NaN when missing); without it the
            depth comes from the wrist alone.
        weights: weight of each of those joints in the depth fit (default 1 for all).
        optics: the 360 camera's lenses (360 camera frame); the ray starts at the centre of the lens
            that shows the wrist. None, or a zero baseline: at the camera's origin.
    """
    R_world_view = T_world_pano[:3, :3] @ request.R_pano_view
    origin = T_world_pano[:3, 3]
    bearing_view = request.camera.unproject(obs.keypoints_2d[0])
    ray = R_world_view @ bearing_view
    if optics is not None and optics.baseline_m > 0.0:
        lens_centre, _ = optics.rays(request.R_pano_view @ bearing_view)
        origin = origin + T_world_pano[:3, :3] @ lens_centre
    offsets = (R_world_view @ (obs.keypoints_3d - obs.keypoints_3d[0]).T).T  # hand joints from the wrist
    points = dict(kinect_hand_world or {})
    points["wrist"] = kinect_wrist_world
    num = den = 0.0
    for name, point in points.items():
        w = 1.0 if weights is None else weights.get(name, 0.0)
        if w <= 0 or not np.all(np.isfinite(point)):
            continue
        num += w * float(ray @ (point - origin - offsets[HAND21_INDEX[KINECT_HAND_JOINT_TO_HAND21[name]]]))
        den += w
    depth = num / den if den > 0 else float(ray @ (kinect_wrist_world - origin))
    wrist = origin + depth * ray
    joints = offsets + wrist
    return LiftedHand(
        wrist=wrist,
        joints=joints,
        R_world=R_world_view @ obs.global_orient,
        hand_pose=obs.hand_pose,
        betas=obs.betas,
        lateral_offset=float(np.linalg.norm(kinect_wrist_world - wrist)),
        confidence=obs.confidence,
        ray=ray,
        depth=float(depth),
    )


def fuse_ray_depth(lifted: LiftedHand, var_joints: float, shift_m: float, var_shift: float) -> LiftedHand:
    """Fuse ``lifted`` (whose depth along its ray comes from the Kinect joints, variance
    ``var_joints`` m^2) with a second estimate of that depth, ``lifted.depth + shift_m`` with variance
    ``var_shift`` m^2, by inverse variance. The whole hand moves along the ray; rotations stay.
    """
    gain = var_joints / (var_joints + var_shift)
    move = gain * shift_m * lifted.ray
    return replace(lifted, wrist=lifted.wrist + move, joints=lifted.joints + move,
                   depth=lifted.depth + gain * shift_m)
