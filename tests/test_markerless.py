"""Markerless Kinect-to-360 calibration on synthetic people with known poses, clocks and noise."""

from __future__ import annotations

import numpy as np
import pytest

from omnimocap.calibration.markerless import dlt_pose, calibrate_markerless, ransac_bearing_pose
from omnimocap.capture.rig import TimeMap
from omnimocap.geometry.transforms import (
    axis_angle_to_matrix, invert_pose, make_pose, relative_angle_deg, transform_points,
)
from omnimocap.errors import UserError

A, B = 1.0 + 200e-6, 3.21  # t_session = A t_pano + B

# The Kinect looks level-ish across the room; the 360 camera stands 1.5 m to its side.
T_WORLD_KINECT = make_pose(axis_angle_to_matrix(np.array([0.1, 0.3, 0.0])) @ np.diag([-1.0, -1.0, 1.0]),
                           np.array([0.0, 1.3, -0.5]))
T_WORLD_PANO = make_pose(axis_angle_to_matrix(np.array([0.02, -1.1, 0.04])), np.array([1.5, 1.1, 1.0]))


def people(t: np.ndarray, seed: int = 0, still: bool = False) -> np.ndarray:
    """World positions (N, 6, 3) of two people's wrists and heads (y up): the people walk slow loops
    1-3.5 m in front of the Kinect while their wrists wave about their shoulders."""
    rng = np.random.default_rng(seed)
    tt = np.zeros_like(t) if still else t
    out = []
    for p in range(2):
        c = np.array([-0.6 + 1.4 * p, 0.0, 2.0 + 0.6 * p])
        w = 2 * np.pi / rng.uniform(12, 18)
        body = c + np.stack([0.8 * np.sin(w * tt + p), np.zeros_like(tt), 0.9 * np.cos(w * tt + 2 * p)], -1)
        out.append(body + [0.0, 1.65, 0.0] + 0.03 * np.sin(3 * tt)[:, None])  # head
        for side in (-1, 1):
            wave = np.stack([0.25 * side + 0.2 * np.sin(2 * np.pi * rng.uniform(0.4, 1.1) * tt + rng.uniform(0, 6)),
                             1.2 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.3, 0.9) * tt + rng.uniform(0, 6)),
                             0.2 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * tt + rng.uniform(0, 6))], -1)
            out.append(body + wave)
    return np.stack(out, axis=1)


def scene(seconds: float = 30.0, seed: int = 0, still: bool = False):
    rng = np.random.default_rng(seed + 100)
    t_kinect = np.arange(B, B + seconds + 1.0, 1 / 30)
    t_pano = np.arange(0.3, 0.3 + seconds, 1 / 30)
    T_kinect_world = invert_pose(T_WORLD_KINECT)
    pts = transform_points(T_kinect_world, people(t_kinect, seed, still))
    pts += rng.normal(0.0, 0.015, pts.shape)
    p = transform_points(invert_pose(T_WORLD_PANO), people(A * t_pano + B, seed, still))
    f = p / np.linalg.norm(p, axis=-1, keepdims=True) + rng.normal(0.0, np.radians(0.2), p.shape)
    f /= np.linalg.norm(f, axis=-1, keepdims=True)
    f[rng.random(f.shape[:2]) < 0.15] = np.nan  # missed detections
    swap = rng.random(len(f)) < 0.03  # left/right confusions: gross outliers
    f[swap, 1], f[swap, 2] = f[swap, 2].copy(), f[swap, 1].copy()
    return t_pano, f, t_kinect, pts


def truth_T_kinect_pano() -> np.ndarray:
    return invert_pose(T_WORLD_KINECT) @ T_WORLD_PANO


def test_dlt_pose_is_exact_on_clean_bearings_all_around():
    rng = np.random.default_rng(1)
    R = axis_angle_to_matrix(np.array([0.3, -2.0, 0.5]))
    t = np.array([0.3, -0.2, 0.5])
    X = rng.normal(0, 2.0, (3, 8, 3))
    p = np.einsum("ij,snj->sni", R, X) + t
    f = p / np.linalg.norm(p, axis=-1, keepdims=True)
    assert np.any(f[..., 2] < 0)  # bearings behind the camera too
    Rs, ts, ok = dlt_pose(X, f)
    assert ok.all()
    np.testing.assert_allclose(Rs, np.broadcast_to(R, Rs.shape), atol=1e-9)
    np.testing.assert_allclose(ts, np.broadcast_to(t, ts.shape), atol=1e-9)


def test_ransac_pose_ignores_outliers():
    rng = np.random.default_rng(2)
    T = make_pose(axis_angle_to_matrix(np.array([1.0, 0.2, -0.3])), np.array([1.0, 0.5, -0.2]))
    X = rng.uniform(-3, 3, (300, 3))
    p = transform_points(T, X)
    f = p / np.linalg.norm(p, axis=-1, keepdims=True)
    f[:90] = rng.normal(size=(90, 3))
    f /= np.linalg.norm(f, axis=-1, keepdims=True)
    samples = np.stack([rng.choice(300, 6, replace=False) for _ in range(200)])
    T_est, frac = ransac_bearing_pose(X, f, samples, np.radians(1.0))
    assert 0.69 < frac < 0.75
    np.testing.assert_allclose(T_est, T, atol=1e-8)


def test_markerless_from_nothing_meets_target():
    """30 s of two people moving: <= 0.3 deg and <= 10 mm, with the time offset found as well."""
    t_pano, f, t_kinect, pts = scene()
    res = calibrate_markerless(t_pano, f, t_kinect, pts, init_time=TimeMap(1.0, B + 0.3), search_s=0.5)
    truth = truth_T_kinect_pano()
    rot_err = relative_angle_deg(res.T_kinect_pano[:3, :3], truth[:3, :3])
    trans_err_mm = np.linalg.norm(res.T_kinect_pano[:3, 3] - truth[:3, 3]) * 1e3
    assert rot_err <= 0.3, rot_err
    assert trans_err_mm <= 10.0, trans_err_mm
    assert abs(res.time_map.to_session(15.0) - (A * 15.0 + B)) < 2e-3
    assert res.ransac_inlier_fraction > 0.5
    assert res.sync.n_inliers < res.sync.n_observations  # the swapped detections were rejected


def test_markerless_refines_a_rough_start():
    t_pano, f, t_kinect, pts = scene(seed=3)
    truth = truth_T_kinect_pano()
    rough = truth @ make_pose(axis_angle_to_matrix(np.radians([2.0, -1.5, 1.0])), np.array([0.05, -0.04, 0.03]))
    res = calibrate_markerless(t_pano, f, t_kinect, pts, init_time=TimeMap(A, B + 0.05),
                               init_T_kinect_pano=rough, search_s=0.1)
    assert res.ransac_inlier_fraction is None
    assert relative_angle_deg(res.T_kinect_pano[:3, :3], truth[:3, :3]) <= 0.3
    assert np.linalg.norm(res.T_kinect_pano[:3, 3] - truth[:3, 3]) <= 0.01


def test_markerless_refuses_degenerate_inputs():
    t_pano, f, t_kinect, pts = scene(seconds=12.0)
    init = TimeMap(1.0, B)
    with pytest.raises(UserError, match="no bearings"):
        calibrate_markerless(t_pano, np.full_like(f, np.nan), t_kinect, pts, init_time=init)
    with pytest.raises(UserError, match="too few frames"):
        calibrate_markerless(t_pano[:20], f[:20], t_kinect, pts, init_time=init)
    with pytest.raises(UserError, match="stand still"):
        calibrate_markerless(*scene(seconds=12.0, still=True), init_time=init)
    # bearings of unrelated motion: no pose explains them
    rng = np.random.default_rng(0)
    noise = rng.normal(size=f.shape)
    with pytest.raises(UserError, match="no consistent pose|poorly constrained|agree"):
        calibrate_markerless(t_pano, noise / np.linalg.norm(noise, axis=-1, keepdims=True), t_kinect, pts,
                             init_time=init, search_s=0.1)
