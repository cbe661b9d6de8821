"""Gravity from an accelerometer at rest.

At rest an accelerometer measures the specific force, which points *up* (the sensor is held against
gravity, +1 g). Averaging still samples (m/s^2, the accelerometer's axes) and rotating the mean into
a camera frame gives that camera's up and down; the Kinect's depth camera frame is OpenCV style
(x right, y down, z forward), so a level Kinect reads ``down_depth = (0, 1, 0)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ImuGravity:
    """Gravity from the accelerometer at rest. ``acc_mean`` (3,) m/s^2 in the accelerometer's frame:
    the mean specific force, which points up; ``samples`` how many were averaged; ``down_depth`` (3,)
    unit vector of gravity (pointing down) in the depth camera frame, None without the
    accelerometer-to-depth rotation."""

    acc_mean: np.ndarray
    samples: int
    down_depth: np.ndarray | None

    @property
    def magnitude(self) -> float:
        """Length of the mean specific force, m/s^2 (about 9.8 when the device stood still)."""
        return float(np.linalg.norm(self.acc_mean))

    @property
    def up_depth(self) -> np.ndarray | None:
        """Unit up direction (3,) in the depth camera frame, None without the rotation."""
        return None if self.down_depth is None else -self.down_depth


def gravity_from_accelerometer(acc: np.ndarray, R_depth_accel: np.ndarray | None = None) -> ImuGravity:
    """``acc`` (N,3) accelerometer samples (m/s^2, accelerometer frame) of a device that stood still;
    ``R_depth_accel`` (3,3) rotates accelerometer-frame vectors into the depth camera frame. Raises
    ValueError without samples."""
    acc = np.asarray(acc, dtype=np.float64).reshape(-1, 3)
    if len(acc) == 0:
        raise ValueError("no accelerometer samples")
    mean = acc.mean(axis=0)
    down = None
    if R_depth_accel is not None:
        down = -(np.asarray(R_depth_accel, dtype=np.float64) @ mean)
        down /= np.linalg.norm(down)
    return ImuGravity(mean, len(acc), down)
