"""World frame (y up, floor at y = 0) from gravity and from a fitted floor, on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from omnimocap.geometry.cameras import PinholeCamera
from omnimocap.geometry.transforms import axis_angle_to_matrix, invert_pose, make_pose, transform_points
from omnimocap.calibration.world_frame import fit_floor, points_from_depth, world_from_floor, world_from_gravity
from omnimocap.errors import UserError

DEPTH = PinholeCamera(504.0, 504.0, 319.5, 287.5, 640, 576)
# Depth camera 1.4 m above the floor, pitched 15 deg down and rolled 3 deg (world y up, x left).
R_WORLD_DEPTH = axis_angle_to_matrix(np.radians([0.0, 0.0, 3.0])) @ axis_angle_to_matrix(np.radians([15.0, 0.0, 0.0])) \
    @ np.diag([-1.0, -1.0, 1.0])
T_WORLD_DEPTH = make_pose(R_WORLD_DEPTH, np.array([0.0, 1.4, 0.0]))
R_DEPTH_IMU = axis_angle_to_matrix(np.array([0.02, -1.5, 1.6]))


def render_depth(noise_mm: float = 3.0, seed: int = 0) -> np.ndarray:
    """Depth (mm) of a floor, a wall 3 m ahead and a box standing on the floor."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:DEPTH.height, 0:DEPTH.width]
    rays_d = DEPTH.unproject(np.stack([cols, rows], -1).astype(float))
    rays = rays_d @ R_WORLD_DEPTH.T
    c = T_WORLD_DEPTH[:3, 3]
    best = np.full(rays.shape[:2], np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for n, d in ((np.array([0.0, 1.0, 0.0]), 0.0), (np.array([0.0, 0.0, -1.0]), 3.0)):
            lam = -(c @ n + d) / (rays @ n)
            best = np.where((lam > 0) & (lam < best), lam, best)
        lam_box = -(c @ [0, 1, 0] - 0.7) / (rays @ [0, 1, 0])  # box top at 0.7 m
        hit = rays * lam_box[..., None] + c
        on_box = (np.abs(hit[..., 0]) < 0.4) & (np.abs(hit[..., 2] - 1.8) < 0.3) & (lam_box > 0)
        best = np.where(on_box & (lam_box < best), lam_box, best)
    z = best * rays_d[..., 2]  # the Kinect's depth value is the z coordinate
    depth = z * 1e3 + rng.normal(0.0, noise_mm, z.shape)
    return np.where(np.isfinite(depth) & (z < 6), np.clip(depth, 0, None), 0).astype(np.uint16)


def check(T_world_kinect: np.ndarray, rot_tol_deg: float, height_tol_m: float):
    # The world's up and floor must match; yaw about up is a free choice of the convention.
    up_est = T_world_kinect[:3, :3].T @ [0, 1, 0]
    up_true = R_WORLD_DEPTH.T @ [0, 1, 0]
    assert np.degrees(np.arccos(np.clip(up_est @ up_true, -1, 1))) < rot_tol_deg
    assert abs(T_world_kinect[1, 3] - 1.4) < height_tol_m
    # a floor point maps to y = 0
    floor_pt = transform_points(invert_pose(T_WORLD_DEPTH), np.array([0.3, 0.0, 2.0]))
    assert abs(transform_points(T_world_kinect, floor_pt)[1]) < max(height_tol_m, 0.005)
    # the world z axis is the camera's forward on the floor
    fwd = T_world_kinect[:3, :3] @ [0, 0, 1]
    assert fwd[2] > 0.9 and abs(fwd[0]) < 1e-9


def test_world_from_floor_ignores_wall_and_box():
    pts = points_from_depth(render_depth(), DEPTH, stride=4)
    n, d, frac = fit_floor(pts)
    assert 0.2 < frac < 0.9
    check(world_from_floor(pts), rot_tol_deg=0.3, height_tol_m=0.01)


def test_world_from_gravity_with_height_and_with_floor():
    rng = np.random.default_rng(1)
    up_depth = R_WORLD_DEPTH.T @ [0, 1, 0]
    acc = (R_DEPTH_IMU.T @ (9.81 * up_depth)) + rng.normal(0, 0.05, (500, 3))
    check(world_from_gravity(acc, R_DEPTH_IMU, height_m=1.4), rot_tol_deg=0.05, height_tol_m=1e-9)
    pts = points_from_depth(render_depth(seed=2), DEPTH, stride=6)
    check(world_from_gravity(acc, R_DEPTH_IMU, floor_points=pts), rot_tol_deg=0.05, height_tol_m=0.01)


def test_world_frame_refuses_bad_inputs():
    with pytest.raises(UserError, match="no accelerometer"):
        world_from_gravity(np.zeros((0, 3)), R_DEPTH_IMU, height_m=1.0)
    with pytest.raises(UserError, match="moved"):
        world_from_gravity(np.full((10, 3), 10.0), R_DEPTH_IMU, height_m=1.0)
    with pytest.raises(UserError, match="floor height is unknown"):
        world_from_gravity(np.array([[0.0, 9.81, 0.0]]), np.eye(3))
    # only a wall in view: no floor-like plane
    wall = np.random.default_rng(0).uniform(-1, 1, (2000, 3)) * [1, 1, 0] + [0, 0, 3]
    with pytest.raises(UserError, match="floor"):
        fit_floor(wall)
