"""Resampling of positions and rotations onto other timestamps."""

import numpy as np
from scipy.spatial.transform import Rotation

from omnimocap.geometry.resample import interpolate_positions, interpolate_rotations


def _traj(t):
    return np.stack([np.sin(2 * t), 0.3 * t**2, np.cos(3 * t)], axis=-1)


def test_cubic_beats_linear_on_smooth_motion():
    t = np.arange(0, 2, 1 / 30)
    td = np.arange(0.05, 1.9, 1 / 31.3)
    cubic = interpolate_positions(t, _traj(t), td)
    linear = np.stack([np.interp(td, t, _traj(t)[:, i]) for i in range(3)], axis=-1)
    err_c = np.abs(cubic - _traj(td)).max()
    err_l = np.abs(linear - _traj(td)).max()
    assert err_c < 0.2 * err_l
    assert err_c < 1e-4


def test_exact_at_samples_and_gaps_not_bridged():
    t = np.arange(0, 1, 0.1)
    x = _traj(t)
    x[4:6] = np.nan
    out = interpolate_positions(t, x, t, max_gap=0.15)
    ok = np.isfinite(x).all(-1)
    assert np.allclose(out[ok], x[ok])
    between = interpolate_positions(t, x, np.array([0.45, 0.35, 0.62]), max_gap=0.15)
    assert np.isnan(between[0]).all() and np.isnan(between[1]).all()  # next to missing samples
    assert np.isfinite(between[2]).all()  # both neighbours present
    far = interpolate_positions(t, _traj(t), np.array([0.05]), max_gap=0.05)
    assert np.isnan(far).all()


def test_extrapolation_is_bounded():
    t = np.arange(0, 1, 0.1)
    out = interpolate_positions(t, _traj(t), np.array([0.93, 0.97, -0.02]), max_extrapolate=0.05)
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all() and np.isfinite(out[2]).all()


def test_slerp_follows_constant_rotation_rate():
    t = np.arange(0, 1, 1 / 30)
    rv = np.stack([t, -0.5 * t, 0.2 * t], axis=-1)
    R = Rotation.from_rotvec(rv).as_matrix()[:, None]
    valid = np.ones(len(t), bool)
    valid[10] = False
    td = np.array([0.1, 0.33, 0.5])
    out, ok = interpolate_rotations(t, R, valid, td, max_gap=0.1)
    assert ok.all()
    expect = Rotation.from_rotvec(np.stack([td, -0.5 * td, 0.2 * td], axis=-1)).as_matrix()
    assert np.allclose(out[:, 0], expect, atol=1e-9)
    _, ok_strict = interpolate_rotations(t, R, valid, np.array([0.33]), max_gap=0.04)
    assert not ok_strict[0]  # sample 10 (t = 0.333) is missing; its neighbours are 67 ms apart
