"""One Euro filtering of positions and rotations."""

from __future__ import annotations

import numpy as np

from omnimocap.geometry.transforms import axis_angle_to_matrix, relative_angle_deg
from omnimocap.fusion.filtering import FilterConfig, filter_positions, filter_rotations, smooth_positions

FPS = 30.0


def _jitter(x: np.ndarray) -> float:
    """Mean |third difference| * fps^3 (m/s^3 for positions)."""
    return float(np.nanmean(np.linalg.norm(np.diff(x, n=3, axis=0), axis=-1)) * FPS**3)


def _accel_error(x: np.ndarray, truth: np.ndarray) -> float:
    return float(np.nanmean(np.linalg.norm(np.diff(x, n=2, axis=0) - np.diff(truth, n=2, axis=0), axis=-1)))


def _trajectory(F: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = np.arange(F) / FPS
    freq = rng.uniform(0.2, 1.2, (1, 8, 3))
    amp = rng.uniform(0.05, 0.4, (1, 8, 3))
    truth = amp * np.sin(2 * np.pi * freq * t[:, None, None] + rng.uniform(0, 6, (1, 8, 3)))
    return truth, truth + rng.normal(0.0, 0.01, truth.shape)


def test_positions_jitter_down_3x_and_acceleration_error_not_up():
    truth, noisy = _trajectory()
    out = filter_positions(noisy, FPS, FilterConfig())
    assert out.shape == noisy.shape
    assert _jitter(noisy) / _jitter(out) >= 3.0
    assert _accel_error(out, truth) <= _accel_error(noisy, truth)
    # Zero-phase: no lag, so the filtered track is closer to the truth than the samples.
    assert np.abs(out - truth).mean() < np.abs(noisy - truth).mean()


def test_positions_causal_mode_also_reduces_jitter():
    truth, noisy = _trajectory(seed=1)
    out = filter_positions(noisy, FPS, FilterConfig(min_cutoff_hz=1.0, beta=1.0, zero_phase=False))
    assert _jitter(noisy) / _jitter(out) >= 3.0
    assert _accel_error(out, truth) <= _accel_error(noisy, truth)


def test_gaps_are_not_smoothed_across():
    x = np.zeros((40, 1, 3))
    x[20:] = 1.0
    x[18:20] = np.nan
    out = filter_positions(x, FPS)
    assert np.all(np.isnan(out[18:20]))
    np.testing.assert_allclose(out[:18], 0.0, atol=1e-12)
    np.testing.assert_allclose(out[20:], 1.0, atol=1e-12)


def test_rotations_stay_orthonormal_and_cross_the_quaternion_sign_flip():
    rng = np.random.default_rng(2)
    F = 240
    t = np.arange(F) / FPS
    # About z from 120 to 240 deg: matrix->quaternion conversion (w >= 0) flips the sign at 180 deg.
    angle = np.radians(120.0 + 120.0 * t / t[-1])
    truth = axis_angle_to_matrix(np.stack([np.zeros(F), np.zeros(F), angle], -1))
    noisy = truth @ axis_angle_to_matrix(rng.normal(0.0, np.radians(2.0), (F, 3)))
    out = filter_rotations(noisy[:, None], FPS)[:, 0]
    eye = np.broadcast_to(np.eye(3), out.shape)
    np.testing.assert_allclose(np.swapaxes(out, -1, -2) @ out, eye, atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(out), 1.0, atol=1e-9)
    err_out = relative_angle_deg(out, truth)
    assert err_out.max() < 5.0  # a sign-flip mistake would show up as ~180 deg
    assert err_out.mean() < 0.6 * relative_angle_deg(noisy, truth).mean()
    step = relative_angle_deg(out[1:], out[:-1])
    assert step.max() < 3.0  # smooth through 180 deg, no jump
    # A missing frame stays missing.
    gap = noisy.copy()
    gap[100] = np.nan
    out_gap = filter_rotations(gap, FPS)
    assert np.all(np.isnan(out_gap[100])) and np.all(np.isfinite(out_gap[99])) and np.all(np.isfinite(out_gap[101]))


def test_smoother_with_one_noise_per_person_equals_one_call_per_person():
    """Stacking people's tracks with a noise each (the live preview smooths everyone at once) gives
    exactly what smoothing each person alone with their noise gives, gaps included."""
    rng = np.random.default_rng(5)
    x = np.cumsum(rng.normal(scale=0.01, size=(3, 60, 7, 3)), axis=1)
    x[0, 10:14, 3] = np.nan
    x[2, 40:, 5] = np.nan
    noise = np.array([0.004, 0.02, 0.05])
    alone = np.stack([smooth_positions(x[p], 30.0, noise_std=float(noise[p])) for p in range(3)])
    together = np.moveaxis(smooth_positions(np.moveaxis(x, 0, 1), 30.0, noise_std=noise.reshape(-1, 1, 1)), 1, 0)
    np.testing.assert_array_equal(np.isnan(together), np.isnan(alone))
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-12)
    # and the noise matters: the noisiest person's track is smoothed more than with the quietest's noise
    quiet = smooth_positions(x[2], 30.0, noise_std=0.004)
    assert np.nanmax(np.abs(quiet - together[2])) > 1e-3
