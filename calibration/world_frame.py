"""The world frame from the reference Kinect: y up, floor at y = 0, metres.

Up comes from the Kinect's accelerometer (at rest it measures the specific force, which points
away from the ground: +1 g up) rotated from the IMU axes into the depth camera frame, or from the
floor plane fitted to a depth point cloud. The world's z axis is the depth camera's viewing direction
projected onto the floor, and x = y cross z (so x points to the camera's left); the world origin
lies on the floor straight below the depth camera.
"""

from __future__ import annotations

import numpy as np

from omnimocap.calibration.cameras import PinholeCamera
from omnimocap.calibration.transforms import make_pose
from omnimocap.errors import UserError


def up_from_accelerometer(acc_imu: np.ndarray, R_depth_imu: np.ndarray) -> np.ndarray:
    """Unit up direction (3,) in the depth camera frame from accelerometer samples (N,3) m/s^2 in the
    IMU frame (their mean, so the device must stand still) and the IMU-to-depth rotation."""
    acc = np.asarray(acc_imu, dtype=np.float64).reshape(-1, 3)
    if len(acc) == 0:
        raise UserError("the reference Kinect recorded no accelerometer samples; gravity is unknown",
                        fix="record with the IMU enabled, or use the floor plane")
    g = acc.mean(axis=0)
    if not 7.0 < np.linalg.norm(g) < 12.5:
        raise UserError(f"the accelerometer mean is {np.linalg.norm(g):.1f} m/s^2, not about 9.8: the Kinect moved "
                        "during the recording", fix="keep the reference Kinect still, or use the floor plane")
    up = np.asarray(R_depth_imu, dtype=np.float64) @ g
    return up / np.linalg.norm(up)


def world_from_up(up_depth: np.ndarray, height_m: float) -> np.ndarray:
    """T_world_kinect (4x4) from the up direction in the depth frame and the depth camera's height
    above the floor (metres)."""
    y = np.asarray(up_depth, dtype=np.float64)
    y = y / np.linalg.norm(y)
    z = np.array([0.0, 0.0, 1.0]) - y[2] * y
    if np.linalg.norm(z) < 1e-6:
        raise UserError("the reference Kinect looks straight up or down; the world's forward is undefined")
    z /= np.linalg.norm(z)
    x = np.cross(y, z)
    R_world_depth = np.stack([x, y, z])  # rows: world axes in depth coordinates
    return make_pose(R_world_depth, np.array([0.0, height_m, 0.0]))


def points_from_depth(depth_mm: np.ndarray, camera: PinholeCamera, stride: int = 4) -> np.ndarray:
    """Points (N,3) in the depth camera frame, metres, from a depth image in millimetres (the Kinect's
    value is the z coordinate), every ``stride``-th pixel, zeros skipped."""
    d = np.asarray(depth_mm)[::stride, ::stride].astype(np.float64) * 1e-3
    rows, cols = np.mgrid[0:depth_mm.shape[0]:stride, 0:depth_mm.shape[1]:stride]
    ok = d > 0
    rays = camera.unproject(np.stack([cols[ok], rows[ok]], -1).astype(np.float64))
    return rays / rays[:, 2:] * d[ok][:, None]


def fit_floor(points: np.ndarray, *, up_hint: np.ndarray = np.array([0.0, -1.0, 0.0]), max_tilt_deg: float = 35.0,
              threshold_m: float = 0.015, iterations: int = 500, seed: int = 0) -> tuple[np.ndarray, float, float]:
    """Floor plane ``n . p + d = 0`` (n unit, pointing up, towards the camera) fitted by RANSAC to
    points (N,3) in the depth frame. Only planes within ``max_tilt_deg`` of ``up_hint`` count (walls
    and tables are rejected by that and by being above other points); among them the one with the
    most inliers, then refined by least squares on its inliers. Returns (n, d, inlier fraction)."""
    p = np.asarray(points, dtype=np.float64)
    p = p[np.all(np.isfinite(p), axis=1)]
    if len(p) < 100:
        raise UserError(f"only {len(p)} depth points; the floor cannot be fitted",
                        fix="point the reference Kinect so it sees the floor")
    rng = np.random.default_rng(seed)
    hint = np.asarray(up_hint, dtype=np.float64) / np.linalg.norm(up_hint)
    tri = p[rng.integers(0, len(p), (iterations, 3))]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(n, axis=1)
    good = norm > 1e-9
    n = n[good] / norm[good, None]
    n *= np.sign(n @ hint)[:, None]
    d = -np.einsum("ij,ij->i", n, tri[good, 0])
    good = n @ hint > np.cos(np.radians(max_tilt_deg))
    n, d = n[good], d[good]
    if len(n) == 0:
        raise UserError("no plane near the expected floor orientation", fix="point the reference Kinect so it sees the floor")
    dist = p @ n.T + d  # (N, H) signed heights above each plane
    count = (np.abs(dist) < threshold_m).sum(axis=0)
    # the floor has (almost) nothing below it
    below = (dist < -5 * threshold_m).mean(axis=0)
    score = np.where(below < 0.02, count, 0)
    best = int(np.argmax(score))
    if score[best] == 0:
        raise UserError("no plane with the scene above it was found; the floor is not in view")
    inl = np.abs(dist[:, best]) < threshold_m
    q = p[inl]
    c = q.mean(axis=0)
    normal = np.linalg.svd(q - c, full_matrices=False)[2][-1]
    normal *= np.sign(normal @ n[best])
    return normal, float(-normal @ c), float(inl.mean())


def world_from_floor(points: np.ndarray, up_hint: np.ndarray | None = None, **kw) -> np.ndarray:
    """T_world_kinect with y along the floor normal and y = 0 on the floor."""
    n, d, _ = fit_floor(points, **({"up_hint": up_hint} if up_hint is not None else {}), **kw)
    return world_from_up(n, d)  # the camera centre lies d above the plane n . p + d = 0


def world_from_gravity(acc_imu: np.ndarray, R_depth_imu: np.ndarray, *, height_m: float | None = None,
                       floor_points: np.ndarray | None = None) -> np.ndarray:
    """T_world_kinect with y up from gravity; the floor height from ``height_m`` or, when given, from
    the floor plane fitted to ``floor_points`` with gravity as its orientation hint (its normal is
    then replaced by gravity's direction, only its distance is used)."""
    up = up_from_accelerometer(acc_imu, R_depth_imu)
    if floor_points is not None:
        n, d, _ = fit_floor(floor_points, up_hint=up)
        height_m = d / max(n @ up, 1e-6)
    if height_m is None:
        raise UserError("the floor height is unknown", fix="give the Kinect's height or a depth frame showing the floor")
    return world_from_up(up, height_m)
