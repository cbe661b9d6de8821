"""Lifting hand observations from a wrist-centred view into the world frame.

The 360 view gives a precise *direction* to the hand; its depth is anchored on the Kinect: the
wrist is the point of the viewing ray (through WiLoR's wrist keypoint) closest to the
Kinect-predicted wrist. WiLoR's own depth (from its fixed 5000 px focal length) is never used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omnimocap.hands.estimator import HandObservation, ViewRequest


@dataclass
class LiftedHand:
    """One hand in the world frame (y up, metres) at the time of its panorama frame."""

    wrist: np.ndarray  # (3,)
    joints: np.ndarray  # (21, 3) OpenPose hand order
    R_world: np.ndarray  # (3, 3) hand root rotation (left hands: proper left-hand params)
    hand_pose: np.ndarray  # (15, 3, 3)
    betas: np.ndarray  # (10,)
    lateral_offset: float  # distance of the Kinect wrist from the viewing ray, metres
    confidence: float


def lift_observation(obs: HandObservation, request: ViewRequest, T_world_pano: np.ndarray,
                     kinect_wrist_world: np.ndarray) -> LiftedHand:
    """Place ``obs`` (seen in ``request``'s view) in the world.

    Args:
        T_world_pano: (4, 4) pose of the 360 camera in the world.
        kinect_wrist_world: (3,) the Kinect wrist predicted at the panorama frame's time, world.
    """
    R_world_view = T_world_pano[:3, :3] @ request.R_pano_view
    origin = T_world_pano[:3, 3]
    bearing_view = request.camera.unproject(obs.keypoints_2d[0])
    ray = R_world_view @ bearing_view
    depth = float(ray @ (kinect_wrist_world - origin))
    wrist = origin + depth * ray
    joints = (R_world_view @ (obs.keypoints_3d - obs.keypoints_3d[0]).T).T + wrist
    return LiftedHand(
        wrist=wrist,
        joints=joints,
        R_world=R_world_view @ obs.global_orient,
        hand_pose=obs.hand_pose,
        betas=obs.betas,
        lateral_offset=float(np.linalg.norm(kinect_wrist_world - wrist)),
        confidence=obs.confidence,
    )
