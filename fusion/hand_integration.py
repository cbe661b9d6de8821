"""Putting MANO hands onto the fitted SMPL-X body (wrists and fingers).

Conventions: world frame = SMPL-X model frame (y up, metres). Side index 0 = left, 1 = right.
``hand_R_world`` is each hand's root (wrist) rotation in the world; ``hand_pose`` are MANO joints
1..15 relative to their parents in the flat-hand convention (no hand mean). Left hands are proper
left-hand MANO parameters (``M R M`` of the mirrored right hand, ``M = diag(-1, 1, 1)``).

Fingers are copied as they are: SMPL-X finger joints 25..39 (left) and 40..54 (right) follow MANO
joints 1..15 in order, and the SMPL-X left hand is the mirror image of its right hand, so proper
left-hand MANO parameters are its hand pose.

Wrist rule. The copy-paste wrist is ``q = G_elbow^T R_hand`` (the local rotation that gives the hand
its observed world rotation). The Kinect cannot see the forearm's twist, so the body's elbow twist
is a guess and ``q`` often carries a large twist about the forearm, which a real wrist cannot do.
``q`` is split into a twist about the forearm axis (in the elbow's frame) and a swing (bend):
- twist beyond ``wrist_twist_limit_deg`` moves into the elbow joint (the forearm's pronation). A
  rotation of the elbow about the forearm axis leaves the wrist where it is, so the hand keeps its
  observed world rotation and the arm's joints do not move;
- a swing beyond ``wrist_swing_limit_deg`` (the forearm and the hand disagree: one of them is wrong)
  is clamped to the limit; then the hand's world rotation yields by the excess, reported per frame
  in :attr:`HandIntegration.wrist_deviation_deg`.

Frames without an observation: fingers are held from the last observation with a confidence that
decays per frame ("held"); the wrist comes from the body. A side never observed so far keeps the
body's wrist and flat fingers ("kinect").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omnimocap.geometry.quaternions import matrix_to_quat_wxyz
from omnimocap.geometry.transforms import axis_angle_to_matrix, matrix_to_axis_angle, relative_angle_deg
from omnimocap.data.skeletons import SIDES, SMPLX_ELBOW, SMPLX_HAND_START, SMPLX_WRIST
from omnimocap.fusion.body_fit import BodyFit
from omnimocap.fusion.body_model import Skeleton, forward_kinematics

STATUS_OBSERVED, STATUS_HELD, STATUS_KINECT = "observed", "held", "kinect"


@dataclass
class HandIntegrationConfig:
    """Settings of :func:`integrate_hands`."""

    wrist_twist_limit_deg: float = 35.0
    """Twist about the forearm axis the wrist joint keeps; any more moves into the elbow joint."""
    wrist_swing_limit_deg: float = 95.0
    """Largest wrist bend relative to the forearm; beyond it the hand's world rotation yields."""
    hold_decay_per_frame: float = 0.97
    """Finger confidence of a held hand is this to the power of the frames since its last observation."""


@dataclass
class HandIntegration:
    """Body plus hands, per frame F and side (0 left, 1 right)."""

    local_rotmats: np.ndarray  # (F, 55, 3, 3) with elbows' twist, wrists and fingers set
    status: np.ndarray  # (F, 2) str: "observed" | "held" | "kinect"
    finger_confidence: np.ndarray  # (F, 2) in [0, 1]
    wrist_deviation_deg: np.ndarray  # (F, 2) angle between the observed and the applied hand rotation


def _twist_swing(q: np.ndarray, axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split rotations q (N, 3, 3) as q = T(twist) @ S with T about ``axis`` (N, 3) (unit) and S a
    swing about an axis perpendicular to it. Returns the signed twist angle (N,) in (-pi, pi] and
    the swing's axis-angle (N, 3)."""
    quat = matrix_to_quat_wxyz(q)  # w >= 0
    w, v = quat[:, 0], quat[:, 1:]
    proj = np.sum(v * axis, axis=-1)
    twist = 2.0 * np.arctan2(proj, w)  # w >= 0 keeps it in [-pi, pi]
    T = axis_angle_to_matrix(axis * twist[:, None])
    S = np.swapaxes(T, -1, -2) @ q
    return twist, matrix_to_axis_angle(S)


def _wrist_rotation(G_elbow: np.ndarray, R_hand: np.ndarray, axis: np.ndarray, cfg: HandIntegrationConfig):
    """Apply the wrist rule (module docstring) to N frames. Returns the elbow's extra local twist
    (N, 3, 3) (to right-multiply its local rotation) and the wrist's local rotation (N, 3, 3)."""
    q = np.swapaxes(G_elbow, -1, -2) @ R_hand
    axis = np.broadcast_to(axis, (len(q), 3))
    twist, swing = _twist_swing(q, axis)
    limit_t = np.radians(cfg.wrist_twist_limit_deg)
    kept = np.clip(twist, -limit_t, limit_t)
    to_elbow = axis_angle_to_matrix(axis * (twist - kept)[:, None])
    angle = np.linalg.norm(swing, axis=-1)
    limit_s = np.radians(cfg.wrist_swing_limit_deg)
    swing = swing * np.where(angle > limit_s, limit_s / np.maximum(angle, 1e-12), 1.0)[:, None]
    wrist = axis_angle_to_matrix(axis * kept[:, None]) @ axis_angle_to_matrix(swing)
    return to_elbow, wrist


def integrate_hands(
    fit: BodyFit,
    skeleton: Skeleton,
    hand_R_world: np.ndarray,
    hand_pose: np.ndarray,
    hand_valid: np.ndarray,
    config: HandIntegrationConfig | None = None,
) -> HandIntegration:
    """Set wrists and fingers of a fitted body from MANO hands (see the module docstring).

    Args:
        fit: the body fit (its wrists and fingers are replaced).
        skeleton: the skeleton the body was fitted with.
        hand_R_world: (F, 2, 3, 3) hand root rotations in the world, [left, right].
        hand_pose: (F, 2, 15, 3, 3) MANO finger rotations, flat-hand convention.
        hand_valid: (F, 2) bool, whether the side was observed in the frame.
        config: settings; defaults when None.
    """
    cfg = config or HandIntegrationConfig()
    local = np.array(fit.local_rotmats, dtype=np.float64, copy=True)
    F = len(local)
    hand_R_world = np.asarray(hand_R_world, dtype=np.float64)
    hand_pose = np.asarray(hand_pose, dtype=np.float64)
    valid = np.asarray(hand_valid, dtype=bool)
    _, glob = forward_kinematics(skeleton, local, fit.betas)
    rest = skeleton.joints_at_rest(fit.betas)
    status = np.full((F, 2), STATUS_KINECT, dtype="<U8")
    confidence = np.zeros((F, 2))
    deviation = np.zeros((F, 2))
    for s, side in enumerate(SIDES):
        wrist, elbow, start = SMPLX_WRIST[side], SMPLX_ELBOW[side], SMPLX_HAND_START[side]
        obs = np.flatnonzero(valid[:, s])
        if len(obs):
            axis = rest[wrist] - rest[elbow]
            axis = axis / np.linalg.norm(axis)
            to_elbow, wrist_R = _wrist_rotation(glob[obs, elbow], hand_R_world[obs, s], axis, cfg)
            local[obs, elbow] = local[obs, elbow] @ to_elbow
            local[obs, wrist] = wrist_R
            applied = glob[obs, elbow] @ to_elbow @ wrist_R
            deviation[obs, s] = relative_angle_deg(applied, hand_R_world[obs, s])
        # Fingers: the latest observation at or before each frame.
        last = np.maximum.accumulate(np.where(valid[:, s], np.arange(F), -1))
        seen = last >= 0
        local[seen, start:start + 15] = hand_pose[last[seen], s]
        status[seen, s] = STATUS_HELD
        status[valid[:, s], s] = STATUS_OBSERVED
        confidence[seen, s] = cfg.hold_decay_per_frame ** (np.arange(F)[seen] - last[seen])
    return HandIntegration(local_rotmats=local, status=status, finger_confidence=confidence,
                           wrist_deviation_deg=deviation)
