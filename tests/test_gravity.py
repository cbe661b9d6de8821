"""The one gravity estimate from a still accelerometer, and the two places that use it."""

import numpy as np
import pytest

from omnimocap.calibration import world_frame
from omnimocap.capture import kinect_live
from omnimocap.errors import UserError
from omnimocap.geometry.gravity import gravity_from_accelerometer
from omnimocap.geometry.transforms import axis_angle_to_matrix


def _still(R_depth_accel: np.ndarray, n: int = 300, seed: int = 2) -> np.ndarray:
    """Samples of a still accelerometer whose depth camera has up = -y rotated by R_depth_accel^T."""
    up_accel = R_depth_accel.T @ np.array([0.0, -1.0, 0.0])
    return 9.81 * up_accel + np.random.default_rng(seed).normal(scale=0.05, size=(n, 3))


def test_up_and_down_are_the_rotated_mean():
    R = axis_angle_to_matrix(np.array([0.3, -1.1, 0.4]))
    acc = _still(R)
    g = gravity_from_accelerometer(acc, R)
    up = R @ acc.mean(axis=0)
    np.testing.assert_allclose(g.up_depth, up / np.linalg.norm(up), atol=1e-15)
    np.testing.assert_allclose(g.down_depth, -g.up_depth)
    np.testing.assert_allclose(g.down_depth, [0.0, 1.0, 0.0], atol=0.01)
    assert g.samples == 300 and g.magnitude == pytest.approx(9.81, abs=0.02)
    assert gravity_from_accelerometer(acc).up_depth is None
    with pytest.raises(ValueError):
        gravity_from_accelerometer(np.zeros((0, 3)))


def test_the_live_kinect_and_the_world_frame_share_it():
    assert kinect_live.gravity_from_accelerometer is gravity_from_accelerometer
    R = axis_angle_to_matrix(np.array([0.1, 0.2, -0.3]))
    acc = _still(R)
    np.testing.assert_array_equal(world_frame.up_from_accelerometer(acc, R),
                                  -gravity_from_accelerometer(acc, R).down_depth)


def test_the_world_frame_refuses_a_moving_or_silent_accelerometer():
    R = np.eye(3)
    with pytest.raises(UserError, match="no accelerometer samples"):
        world_frame.up_from_accelerometer(np.zeros((0, 3)), R)
    with pytest.raises(UserError, match="the Kinect moved"):
        world_frame.up_from_accelerometer(_still(R) * 2.0, R)
