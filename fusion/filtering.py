"""Temporal smoothing: the One Euro filter for positions and for rotations (on the rotation manifold).

One Euro (Casiez et al. 2012): a first-order low-pass whose cutoff rises with speed,
``cutoff = min_cutoff + beta * |speed|``, so slow motion is smoothed hard (less jitter) and fast
motion follows with little lag. Offline, the filter runs forward and then backward over the forward
result (``zero_phase``), which cancels the lag of one pass.

Rotations (F, ..., 3, 3) are filtered as rotations: unit quaternions, each new sample put on the
hemisphere of the current estimate (q and -q are the same rotation), the low-pass step a slerp
``q_hat <- q_hat * exp(alpha * log(q_hat^-1 q))`` and the speed the angular speed (rad/s); results
are re-normalised and returned as matrices.

Missing samples (NaN) are never smoothed across: the output is NaN there and the filter restarts
after the gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omnimocap.geometry.quaternions import (
    IDENTITY_WXYZ, continuous_signs, matrix_to_quat_wxyz, quat_conjugate, quat_exp, quat_log, quat_multiply,
    quat_wxyz_to_matrix,
)


@dataclass
class FilterConfig:
    """One Euro settings. Units: positions in metres, rotations in radians, time in seconds."""

    min_cutoff_hz: float = 1.0
    """Cutoff frequency at rest (Hz): lower smooths more and lags more on slow motion."""
    beta: float = 3.0
    """Cutoff increase per unit speed (Hz per m/s for positions, Hz per rad/s for rotations)."""
    d_cutoff_hz: float = 1.0
    """Cutoff of the low-pass on the speed estimate (Hz)."""
    zero_phase: bool = True
    """Run forward then backward (offline use: no lag); False for a causal (live) filter."""


def _alpha(cutoff_hz: np.ndarray | float, fps: float) -> np.ndarray:
    tau = 1.0 / (2.0 * np.pi * np.asarray(cutoff_hz))
    return 1.0 / (1.0 + tau * fps)


def _one_euro_positions(x: np.ndarray, fps: float, cfg: FilterConfig) -> np.ndarray:
    """One causal pass over x (F, N, 3)."""
    out = np.full_like(x, np.nan)
    ok = np.all(np.isfinite(x), axis=-1)  # (F, N)
    a_d = _alpha(cfg.d_cutoff_hz, fps)
    prev = np.zeros(x.shape[1:])
    speed = np.zeros(x.shape[1])
    live = np.zeros(x.shape[1], dtype=bool)
    for t in range(len(x)):
        m = ok[t]
        v = np.where(live[:, None], (x[t] - prev) * fps, 0.0)
        speed = np.where(live, speed + a_d * (np.linalg.norm(np.nan_to_num(v), axis=-1) - speed), 0.0)
        a = _alpha(cfg.min_cutoff_hz + cfg.beta * speed, fps)
        est = np.where(live[:, None], prev + a[:, None] * (x[t] - prev), x[t])
        prev = np.where(m[:, None], est, prev)
        out[t, m] = est[m]
        live = m
    return out


def filter_positions(x: np.ndarray, fps: float, cfg: FilterConfig | None = None) -> np.ndarray:
    """One Euro filter over time for positions ``x`` (F, ..., 3), sampled at ``fps`` Hz.

    Each point (the 3-vector) is filtered with its own speed-dependent cutoff. NaN samples stay NaN
    and split the track (see the module docstring)."""
    cfg = cfg or FilterConfig()
    x = np.asarray(x, dtype=np.float64)
    flat = x.reshape(len(x), -1, 3)
    out = _one_euro_positions(flat, fps, cfg)
    if cfg.zero_phase:
        out = _one_euro_positions(out[::-1], fps, cfg)[::-1]
    return out.reshape(x.shape)


def _one_euro_quaternions(q: np.ndarray, ok: np.ndarray, fps: float, cfg: FilterConfig) -> np.ndarray:
    """One causal pass over unit quaternions q (F, N, 4); ok (F, N) marks present samples."""
    out = np.full_like(q, np.nan)
    a_d = _alpha(cfg.d_cutoff_hz, fps)
    prev = np.tile(IDENTITY_WXYZ, (q.shape[1], 1))
    speed = np.zeros(q.shape[1])
    live = np.zeros(q.shape[1], dtype=bool)
    for t in range(len(q)):
        m = ok[t]
        qt = np.where(m[:, None], q[t], prev)
        qt = np.where(np.sum(qt * prev, axis=-1, keepdims=True) < 0, -qt, qt)  # hemisphere of the estimate
        delta = quat_log(quat_multiply(quat_conjugate(prev), qt))  # rotation from the estimate to the sample
        w = np.where(live, np.linalg.norm(delta, axis=-1) * fps, 0.0)
        speed = np.where(live, speed + a_d * (w - speed), 0.0)
        a = _alpha(cfg.min_cutoff_hz + cfg.beta * speed, fps)
        est = np.where(live[:, None], quat_multiply(prev, quat_exp(a[:, None] * delta)), qt)
        est = est / np.linalg.norm(est, axis=-1, keepdims=True)
        prev = np.where(m[:, None], est, prev)
        out[t, m] = est[m]
        live = m
    return out


def filter_rotations(R: np.ndarray, fps: float, cfg: FilterConfig | None = None) -> np.ndarray:
    """One Euro filter over time for rotations ``R`` (F, ..., 3, 3), sampled at ``fps`` Hz, on the
    rotation manifold (see the module docstring). Returns orthonormal matrices; NaN where the
    input is NaN."""
    cfg = cfg or FilterConfig()
    R = np.asarray(R, dtype=np.float64)
    F = len(R)
    flat = R.reshape(F, -1, 3, 3)
    ok = np.all(np.isfinite(flat), axis=(-1, -2))
    q = np.zeros(flat.shape[:2] + (4,))
    q[ok] = matrix_to_quat_wxyz(flat[ok])
    out = _one_euro_quaternions(q, ok, fps, cfg)
    if cfg.zero_phase:
        out = _one_euro_quaternions(out[::-1], ok[::-1], fps, cfg)[::-1]
    mats = np.full(flat.shape, np.nan)
    mats[ok] = quat_wxyz_to_matrix(out[ok])
    return mats.reshape(R.shape)


# --- adaptive smoothing: constant-acceleration Kalman filter + RTS smoother --------------------------
@dataclass
class SmootherConfig:
    """Offline smoothing whose strength follows the measured noise of each track: data without noise
    pass unchanged, noisy data are smoothed as much as human motion allows."""

    jerk_std: float = 60.0
    """Standard deviation of the white jerk driving the motion model, m/s^3 (larger follows faster motion)."""
    noise_floor_m: float = 0.0005
    """Lowest measurement noise assumed, metres."""
    max_gap_s: float = 0.25
    """A gap longer than this restarts the track."""


def estimate_noise_std(x: np.ndarray) -> float:
    """Robust estimate of white measurement noise (metres) of a track x (F, ..., 3) from its second
    differences: for white noise of std s they have std sqrt(6) s, while smooth motion sampled at
    30 Hz or more contributes far less. NaN samples are ignored."""
    d2 = x[2:] - 2 * x[1:-1] + x[:-2]
    d2 = d2[np.isfinite(d2)]
    if len(d2) < 10:
        return 0.0
    return float(1.4826 * np.median(np.abs(d2 - np.median(d2))) / np.sqrt(6.0))


def smooth_positions(x: np.ndarray, fps: float, cfg: SmootherConfig | None = None,
                     noise_std: float | np.ndarray | None = None) -> np.ndarray:
    """Kalman filter + Rauch-Tung-Striebel smoother with a constant-acceleration model for each
    coordinate of x (F, ..., 3), sampled at ``fps``. The measurement noise is ``noise_std`` (metres;
    one value, or an array broadcastable to ``x.shape[1:]``, e.g. one per person of a stack of
    people's tracks) or, by default, :func:`estimate_noise_std` of the track. Each coordinate is
    smoothed on its own. NaN samples stay NaN (they are predicted over, not filled)."""
    cfg = cfg or SmootherConfig()
    x = np.asarray(x, dtype=np.float64)
    F = len(x)
    flat = x.reshape(F, -1)
    M = flat.shape[1]
    sigma = np.maximum(cfg.noise_floor_m, estimate_noise_std(x) if noise_std is None else noise_std)
    sigma = np.broadcast_to(sigma, x.shape[1:]).reshape(M)
    dt = 1.0 / fps
    A = np.array([[1.0, dt, dt * dt / 2], [0.0, 1.0, dt], [0.0, 0.0, 1.0]])
    q = cfg.jerk_std ** 2
    Q = q * np.array([[dt**5 / 20, dt**4 / 8, dt**3 / 6], [dt**4 / 8, dt**3 / 3, dt**2 / 2], [dt**3 / 6, dt**2 / 2, dt]])
    R = sigma**2
    ok = np.isfinite(flat)
    xs_f = np.zeros((F, M, 3))
    Ps_f = np.zeros((F, M, 3, 3))
    xs_p = np.zeros((F, M, 3))
    Ps_p = np.zeros((F, M, 3, 3))
    state = np.zeros((M, 3))
    P = np.zeros((M, 3, 3))
    live = np.zeros(M, dtype=bool)
    gap = np.zeros(M)
    big = np.diag([1e2, 1e2, 1e4])
    measured = np.zeros((M, 3, 3))  # the state's covariance right after a restart on a measurement
    measured[:, 0, 0], measured[:, 1, 1], measured[:, 2, 2] = R, 1e2, 1e4
    restarted = np.zeros((F, M), dtype=bool)
    for t in range(F):
        if t > 0:
            state = state @ A.T
            P = A @ P @ A.T + Q
        gap = np.where(ok[t], 0.0, gap + dt)
        restart = ok[t] & (~live | (gap > cfg.max_gap_s))
        restarted[t] = restart
        state[restart] = 0.0
        state[restart, 0] = flat[t, restart]
        P[restart] = big
        xs_p[t], Ps_p[t] = state, P
        m = ok[t] & ~restart
        S = P[:, 0, 0] + R
        K = P[:, :, 0] / S[:, None]
        innov = np.where(m, np.nan_to_num(flat[t]) - state[:, 0], 0.0)
        state = state + np.where(m[:, None], K * innov[:, None], 0.0)
        P = np.where(m[:, None, None], P - K[:, :, None] * P[:, None, 0, :], P)
        P[restart] = measured[restart]
        live = live | ok[t]
        live &= ~(gap > cfg.max_gap_s)
        xs_f[t], Ps_f[t] = state, P
    out = xs_f.copy()
    for t in range(F - 2, -1, -1):
        # no smoothing across a restart: the later segment does not inform the earlier one
        cont = ~restarted[t + 1]
        G = Ps_f[t] @ A.T @ np.linalg.inv(Ps_p[t + 1])
        upd = out[t] + np.einsum("mij,mj->mi", G, out[t + 1] - xs_p[t + 1])
        out[t] = np.where(cont[:, None], upd, out[t])
    res = np.where(ok, out[:, :, 0], np.nan)
    return res.reshape(x.shape)



def smooth_rotations(R: np.ndarray, fps: float, cfg: SmootherConfig | None = None) -> np.ndarray:
    """Adaptive smoothing of rotations R (F, ..., 3, 3) as rotations: unit quaternions with their
    hemispheres aligned along time are smoothed by :func:`smooth_positions` (noise measured on the
    quaternions) and renormalised. NaN rotations stay NaN."""
    cfg = cfg or SmootherConfig(jerk_std=100.0, noise_floor_m=1e-4)
    R = np.asarray(R, dtype=np.float64)
    F = len(R)
    flat = R.reshape(F, -1, 3, 3)
    ok = np.all(np.isfinite(flat), axis=(-1, -2))
    q = np.full(flat.shape[:2] + (4,), np.nan)
    q[ok] = matrix_to_quat_wxyz(flat[ok])
    q = continuous_signs(q)
    q_smooth = smooth_positions(np.where(ok[..., None], q, np.nan), fps, cfg)
    q_smooth /= np.linalg.norm(q_smooth, axis=-1, keepdims=True)
    mats = np.full(flat.shape, np.nan)
    mats[ok] = quat_wxyz_to_matrix(q_smooth[ok])
    return mats.reshape(R.shape)
