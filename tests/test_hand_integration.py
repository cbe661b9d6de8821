"""Hands onto the SMPL-X body: finger round trip for both sides, held fingers, the wrist rule."""

from __future__ import annotations

import numpy as np

from omnimocap.geometry.transforms import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    mirror_rotation,
    relative_angle_deg,
)
from omnimocap.data.skeletons import MANO_PARENTS, SMPLX_ELBOW, SMPLX_HAND_START, SMPLX_WRIST
from omnimocap.fusion.body_fit import BodyFit
from omnimocap.fusion.body_model import default_skeleton, forward_kinematics
from omnimocap.fusion.hand_integration import HandIntegrationConfig, integrate_hands


def _body(F: int, seed: int = 0, still: bool = False) -> tuple:
    skeleton = default_skeleton()
    rng = np.random.default_rng(seed)
    aa = np.zeros((F, 55, 3))
    if not still:
        aa[:, :22] = rng.uniform(-0.6, 0.6, (F, 22, 3))
    local = axis_angle_to_matrix(aa)
    betas = np.zeros(10)
    transl = np.zeros((F, 3))
    joints, _ = forward_kinematics(skeleton, local, betas, transl)
    return skeleton, BodyFit(local_rotmats=local, betas=betas, transl=transl, joints=joints)


def _mano_relative(hand_pose: np.ndarray) -> np.ndarray:
    """(F, 15, 3, 3) finger rotations relative to the MANO wrist (chain products over MANO_PARENTS)."""
    F = len(hand_pose)
    glob = np.zeros((F, 16, 3, 3))
    glob[:, 0] = np.eye(3)
    for j in range(1, 16):
        glob[:, j] = glob[:, MANO_PARENTS[j]] @ hand_pose[:, j - 1]
    return glob[:, 1:]


def _random_hands(F: int, rng):
    right_pose = axis_angle_to_matrix(rng.uniform(-0.7, 0.7, (F, 15, 3)))
    right_R = axis_angle_to_matrix(rng.normal(0.0, 1.0, (F, 3)))
    other_pose = axis_angle_to_matrix(rng.uniform(-0.7, 0.7, (F, 15, 3)))
    # Left: a proper left hand (mirror of a right hand), as the hand backends deliver it.
    left_pose = mirror_rotation(other_pose)
    left_R = mirror_rotation(axis_angle_to_matrix(rng.normal(0.0, 1.0, (F, 3))))
    return np.stack([left_R, right_R], 1), np.stack([left_pose, right_pose], 1)


def test_fingers_round_trip_both_sides():
    F = 20
    skeleton, fit = _body(F, seed=1)
    hand_R, hand_pose = _random_hands(F, np.random.default_rng(2))
    out = integrate_hands(fit, skeleton, hand_R, hand_pose, np.ones((F, 2), dtype=bool))
    _, glob = forward_kinematics(skeleton, out.local_rotmats, fit.betas)
    for s, side in enumerate(("left", "right")):
        w, start = SMPLX_WRIST[side], SMPLX_HAND_START[side]
        rel = np.swapaxes(glob[:, w : w + 1], -1, -2) @ glob[:, start : start + 15]
        assert relative_angle_deg(rel, _mano_relative(hand_pose[:, s])).max() < 0.5
    assert np.all(out.status == "observed") and np.all(out.finger_confidence == 1.0)
    # Body joints up to the elbows are untouched.
    np.testing.assert_allclose(out.local_rotmats[:, :18], fit.local_rotmats[:, :18])


def test_left_hand_is_the_mirror_of_the_right():
    """A left hand given as the mirror of a right hand lands on the SMPL-X left hand as the mirror
    image of that right hand on the right side: finger joints relative to the wrist are M times."""
    F = 6
    skeleton, fit = _body(F, still=True)
    rng = np.random.default_rng(3)
    pose_r = axis_angle_to_matrix(rng.uniform(-0.6, 0.6, (F, 15, 3)))
    # A hand near the rest direction, so the wrist rule applies no limit.
    R_r = axis_angle_to_matrix(rng.uniform(-0.3, 0.3, (F, 3)))
    hand_R = np.stack([mirror_rotation(R_r), R_r], 1)
    hand_pose = np.stack([mirror_rotation(pose_r), pose_r], 1)
    out = integrate_hands(fit, skeleton, hand_R, hand_pose, np.ones((F, 2), dtype=bool))
    joints, glob = forward_kinematics(skeleton, out.local_rotmats, fit.betas)
    left = joints[:, 25:40] - joints[:, 20:21]
    right = joints[:, 40:55] - joints[:, 21:22]
    np.testing.assert_allclose(left, right * np.array([-1.0, 1.0, 1.0]), atol=1e-9)
    assert relative_angle_deg(glob[:, 20], hand_R[:, 0]).max() < 1e-6
    assert np.abs(out.wrist_deviation_deg).max() < 1e-6


def test_unobserved_hands_are_held_with_decaying_confidence():
    F = 8
    skeleton, fit = _body(F, seed=4)
    hand_R, hand_pose = _random_hands(F, np.random.default_rng(5))
    valid = np.zeros((F, 2), dtype=bool)
    valid[[1, 2, 6], 1] = True  # right hand seen in frames 1, 2, 6; left never
    cfg = HandIntegrationConfig(hold_decay_per_frame=0.9)
    out = integrate_hands(fit, skeleton, hand_R, hand_pose, valid, cfg)
    assert list(out.status[:, 1]) == ["kinect", "observed", "observed", "held", "held", "held", "observed", "held"]
    assert np.all(out.status[:, 0] == "kinect")
    np.testing.assert_allclose(out.finger_confidence[:, 1], [0, 1, 1, 0.9, 0.81, 0.729, 1, 0.9])
    np.testing.assert_array_equal(out.finger_confidence[:, 0], 0.0)
    r0 = SMPLX_HAND_START["right"]
    for f, source in ((3, 2), (5, 2), (7, 6)):
        np.testing.assert_allclose(out.local_rotmats[f, r0 : r0 + 15], hand_pose[source, 1])
    # Never seen: flat fingers; held frames: the body's wrist.
    np.testing.assert_allclose(out.local_rotmats[:, 25:40], np.broadcast_to(np.eye(3), (F, 15, 3, 3)))
    wr = SMPLX_WRIST["right"]
    np.testing.assert_allclose(out.local_rotmats[[0, 3, 4, 5, 7], wr], fit.local_rotmats[[0, 3, 4, 5, 7], wr])


def test_wrist_rule_moves_twist_into_the_forearm_and_limits_the_bend():
    skeleton, fit = _body(2, still=True)
    cfg = HandIntegrationConfig(wrist_twist_limit_deg=35.0, wrist_swing_limit_deg=95.0)
    rest = skeleton.joints_at_rest()
    axis = rest[21] - rest[19]  # the right forearm at rest (about -x)
    axis /= np.linalg.norm(axis)
    perp = np.cross(axis, [0.0, 1.0, 0.0])
    perp /= np.linalg.norm(perp)
    bend = axis_angle_to_matrix(perp * np.radians(30.0))
    twist = axis_angle_to_matrix(axis * np.radians(120.0))
    over_bent = axis_angle_to_matrix(perp * np.radians(150.0))
    hand_R = np.broadcast_to(np.eye(3), (2, 2, 3, 3)).copy()
    hand_R[0, 1] = twist @ bend
    hand_R[1, 1] = over_bent
    valid = np.array([[False, True], [False, True]])
    pose = np.broadcast_to(np.eye(3), (2, 2, 15, 3, 3))
    out = integrate_hands(fit, skeleton, hand_R, pose, valid, cfg)
    joints, glob = forward_kinematics(skeleton, out.local_rotmats, fit.betas)
    wr, el = SMPLX_WRIST["right"], SMPLX_ELBOW["right"]
    # Frame 0: the hand keeps its observed rotation; 35 deg of twist stay in the wrist, 85 go to the elbow.
    assert relative_angle_deg(glob[0, wr], hand_R[0, 1]) < 1e-6
    elbow_twist = matrix_to_axis_angle(out.local_rotmats[0, el])
    np.testing.assert_allclose(elbow_twist, axis * np.radians(85.0), atol=1e-9)
    wrist_aa = matrix_to_axis_angle(out.local_rotmats[0, wr])
    np.testing.assert_allclose(wrist_aa, matrix_to_axis_angle(axis_angle_to_matrix(axis * np.radians(35.0)) @ bend), atol=1e-9)
    np.testing.assert_allclose(joints[0, :22], fit.joints[0, :22], atol=1e-12)  # no body joint moves
    # Frame 1: a 150 deg bend is limited to 95 deg; the hand yields by 55 deg.
    assert abs(np.degrees(np.linalg.norm(matrix_to_axis_angle(out.local_rotmats[1, wr]))) - 95.0) < 1e-6
    assert abs(out.wrist_deviation_deg[1, 1] - 55.0) < 1e-6
    assert out.wrist_deviation_deg[0, 1] < 1e-6
