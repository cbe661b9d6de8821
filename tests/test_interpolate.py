"""Resampling of positions and rotations onto other timestamps."""

import numpy as np
from scipy.spatial.transform import Rotation

from omnimocap.geometry.resample import interpolate_linear, interpolate_positions, interpolate_rotations, linear_brackets


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


def test_linear_matches_np_interp_inside_and_is_nan_outside():
    t = np.arange(0, 2, 1 / 30)
    x = _traj(t)
    td = np.linspace(-0.2, 2.2, 301)
    got = interpolate_linear(t, x, td)
    inside = (td >= t[0]) & (td <= t[-1])
    expected = np.stack([np.interp(td, t, x[:, i]) for i in range(3)], axis=-1)
    np.testing.assert_allclose(got[inside], expected[inside], atol=1e-12)
    assert np.isnan(got[~inside]).all()
    np.testing.assert_array_equal(interpolate_linear(t, x, t), x)  # exact on the samples


def test_linear_gaps_neighbours_and_degenerate_tracks():
    t = np.array([0.0, 0.1, 0.2, 0.6, 0.7])
    x = np.arange(5.0)[:, None, None] * np.ones((5, 2, 3))
    td = np.array([0.05, 0.2, 0.4, 0.65, 0.7])
    at = linear_brackets(t, td, max_gap=0.25)
    np.testing.assert_array_equal(at.ok, [True, True, False, True, True])  # 0.2..0.6 is a 0.4 s gap
    got = at.apply(x)
    np.testing.assert_allclose(got[[0, 1, 3, 4], 0, 0], [0.5, 2.0, 3.5, 4.0])
    assert np.isnan(got[2]).all()
    c = np.array([3, 1, 2, 2, 0])
    lo, hi = at.neighbours(c)
    np.testing.assert_array_equal(np.minimum(lo, hi), [1, 1, 0, 0])  # per served target, in order
    assert np.isnan(interpolate_linear(t, x, td, max_gap=0.05)).all()
    # one sample serves only its own time; none serves nothing
    one = linear_brackets(np.array([1.0]), np.array([1.0, 1.0 + 1e-12, 1.5]))
    np.testing.assert_array_equal(one.ok, [True, True, False])
    np.testing.assert_array_equal(one.apply(np.array([[7.0, 8.0, 9.0]]))[0], [7.0, 8.0, 9.0])
    assert not linear_brackets(np.zeros(0), td).ok.any()
    assert np.isnan(interpolate_linear(np.zeros(0), np.zeros((0, 3)), td)).all()
