"""Resampling time series onto other timestamps: positions by cubic Hermite (Catmull-Rom tangents,
linear where the outer neighbours are missing), rotations by slerp, and the linear resampling of
joint tracks (:func:`linear_brackets`, :func:`interpolate_linear`: the Kinect joints onto another
device's or the session's times). Gaps longer than ``max_gap`` seconds are never bridged; missing
samples are NaN (positions) or flagged by ``valid``. Times are seconds on one clock, increasing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation


def _brackets(t_src: np.ndarray, t_dst: np.ndarray, max_gap: float, max_extrapolate: float):
    """Indices i1 < i2 of the samples around each target time and the fraction u in [0, 1]
    (outside [0, 1] when extrapolating), plus a mask of targets that can be served."""
    n = len(t_src)
    if n < 2:
        i1 = np.zeros(len(t_dst), dtype=int)
        ok = np.zeros(len(t_dst), dtype=bool)
        if n == 1:
            ok = np.abs(t_dst - t_src[0]) <= max_extrapolate
        return i1, i1, np.zeros(len(t_dst)), ok
    idx = np.searchsorted(t_src, t_dst, side="right")
    i2 = np.clip(idx, 1, n - 1)
    i1 = i2 - 1
    dt = t_src[i2] - t_src[i1]
    u = (t_dst - t_src[i1]) / np.where(dt > 0, dt, 1.0)
    inside = (t_dst >= t_src[0]) & (t_dst <= t_src[-1])
    before = (t_dst < t_src[0]) & (t_src[0] - t_dst <= max_extrapolate)
    after = (t_dst > t_src[-1]) & (t_dst - t_src[-1] <= max_extrapolate)
    ok = (inside | before | after) & (dt > 0) & (dt <= max_gap)
    return i1, i2, u, ok


def interpolate_positions(t_src: np.ndarray, x_src: np.ndarray, t_dst: np.ndarray, max_gap: float = 0.1,
                          max_extrapolate: float = 0.0) -> np.ndarray:
    """Resample ``x_src`` (N, ...) sampled at increasing ``t_src`` (N,) onto ``t_dst`` (M,).

    NaN samples are missing; a target whose bracketing samples are missing or further apart than
    ``max_gap`` is NaN. Up to ``max_extrapolate`` seconds beyond the ends the first/last segment is
    extended linearly.
    """
    t_src = np.asarray(t_src, dtype=np.float64)
    t_dst = np.asarray(t_dst, dtype=np.float64)
    x_src = np.asarray(x_src, dtype=np.float64)
    out = np.full((len(t_dst),) + x_src.shape[1:], np.nan)
    if len(t_src) == 0 or len(t_dst) == 0:
        return out
    i1, i2, u, ok = _brackets(t_src, t_dst, max_gap, max_extrapolate)
    if len(t_src) == 1:
        out[ok] = x_src[0]
        return out
    n = len(t_src)
    x1, x2 = x_src[i1], x_src[i2]
    h = (t_src[i2] - t_src[i1])
    i0 = np.clip(i1 - 1, 0, n - 1)
    i3 = np.clip(i2 + 1, 0, n - 1)
    secant = x2 - x1
    shape = (-1,) + (1,) * (x_src.ndim - 1)

    def tangent(ia, ib, use):
        span = (t_src[ib] - t_src[ia])
        good = use & (span > 0) & (span <= 2 * max_gap)
        m = (x_src[ib] - x_src[ia]) * (h / np.where(span > 0, span, 1.0)).reshape(shape)
        m = np.where(np.isfinite(m) & good.reshape(shape), m, secant)
        return m

    m1 = tangent(i0, i2, i1 > 0)
    m2 = tangent(i1, i3, i2 < n - 1)
    interior = ((u >= 0) & (u <= 1)).reshape(shape)
    m1 = np.where(interior, m1, secant)
    m2 = np.where(interior, m2, secant)
    uu = u.reshape(shape)
    h00 = 2 * uu**3 - 3 * uu**2 + 1
    h10 = uu**3 - 2 * uu**2 + uu
    h01 = -2 * uu**3 + 3 * uu**2
    h11 = uu**3 - uu**2
    res = h00 * x1 + h10 * m1 + h01 * x2 + h11 * m2
    out[ok] = res[ok]
    exact = (t_dst == t_src[i1]) & (np.abs(t_dst - t_src[i1]) <= max_gap)
    out[exact] = x1[exact]  # a target on a sample needs no neighbour
    return out


def interpolate_rotations(t_src: np.ndarray, R_src: np.ndarray, valid: np.ndarray, t_dst: np.ndarray,
                          max_gap: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Slerp rotations ``R_src`` (N, K, 3, 3) (K rotations per sample) onto ``t_dst`` (M,).

    ``valid`` (N,) marks usable samples. Returns (M, K, 3, 3) (identity where not served) and the
    (M,) mask of served targets. No extrapolation.
    """
    t_src = np.asarray(t_src, dtype=np.float64)
    R_src = np.asarray(R_src, dtype=np.float64)
    k = R_src.shape[1]
    out = np.broadcast_to(np.eye(3), (len(t_dst), k, 3, 3)).copy()
    keep = np.asarray(valid, dtype=bool)
    t_v, R_v = t_src[keep], R_src[keep]
    if len(t_v) < 2:
        return out, np.zeros(len(t_dst), dtype=bool)
    i1, i2, u, ok = _brackets(t_v, np.asarray(t_dst, dtype=np.float64), max_gap, 0.0)
    if not np.any(ok):
        return out, ok
    R1, R2 = R_v[i1[ok]], R_v[i2[ok]]
    rel = Rotation.from_matrix((np.swapaxes(R1, -1, -2) @ R2).reshape(-1, 3, 3)).as_rotvec()
    step = Rotation.from_rotvec(rel * np.repeat(u[ok], k)[:, None]).as_matrix().reshape(-1, k, 3, 3)
    out[ok] = R1 @ step
    return out, ok


@dataclass(frozen=True)
class LinearBrackets:
    """For each of M target times: the source samples ``lo`` and ``hi`` (M,) around it, the weight
    ``w`` (M,) of ``hi`` (a value is ``(1 - w) x[lo] + w x[hi]``), and ``ok`` (M,), the targets that
    can be served. Indices are meaningful only where ``ok``."""

    lo: np.ndarray
    hi: np.ndarray
    w: np.ndarray
    ok: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Samples ``x`` (N, ...) at the target times: (M, ...), NaN where not ``ok``."""
        x = np.asarray(x, dtype=np.float64)
        out = np.full((len(self.ok),) + x.shape[1:], np.nan)
        w = self.w[self.ok].reshape((-1,) + (1,) * (x.ndim - 1))
        out[self.ok] = (1 - w) * x[self.lo[self.ok]] + w * x[self.hi[self.ok]]
        return out

    def neighbours(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``x`` (N, ...) at the two samples around each served target: two arrays (ok.sum(), ...),
        for combining per-sample values other than by interpolation (the lower confidence, the
        larger variance)."""
        return x[self.lo[self.ok]], x[self.hi[self.ok]]


def linear_brackets(t_src: np.ndarray, t_dst: np.ndarray, max_gap: float = np.inf) -> LinearBrackets:
    """Where each target time ``t_dst`` (M,) falls among the increasing sample times ``t_src`` (N,):
    served when it lies within ``[t_src[0], t_src[-1]]`` and its two neighbouring samples (the last
    one before it and the first at or after it) are at most ``max_gap`` seconds apart; no
    extrapolation. A target on a sample time takes that sample's weight in full. A single sample
    serves only targets within 1 ns of it."""
    t_src = np.asarray(t_src, dtype=np.float64)
    t_dst = np.asarray(t_dst, dtype=np.float64)
    n = len(t_src)
    if n < 2:
        zero = np.zeros(len(t_dst), dtype=int)
        ok = np.abs(t_dst - t_src[0]) < 1e-9 if n == 1 else np.zeros(len(t_dst), dtype=bool)
        return LinearBrackets(zero, zero, np.zeros(len(t_dst)), ok)
    hi = np.clip(np.searchsorted(t_src, t_dst), 1, n - 1)
    lo = hi - 1
    dt = t_src[hi] - t_src[lo]
    ok = (t_dst >= t_src[0]) & (t_dst <= t_src[-1]) & (dt <= max_gap)
    return LinearBrackets(lo, hi, (t_dst - t_src[lo]) / np.maximum(dt, 1e-9), ok)


def interpolate_linear(t_src: np.ndarray, x_src: np.ndarray, t_dst: np.ndarray, max_gap: float = np.inf) -> np.ndarray:
    """Linear interpolation of ``x_src`` (N, ...) sampled at ``t_src`` (N,) onto ``t_dst`` (M,):
    (M, ...), NaN where :func:`linear_brackets` does not serve a target (and where a neighbouring
    sample is NaN)."""
    return linear_brackets(t_src, t_dst, max_gap).apply(x_src)


def mask_runs(mask: np.ndarray) -> list[list[int]]:
    """``[first, last]`` (inclusive) index runs where the 1-D bool ``mask`` is True."""
    m = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    d = np.flatnonzero(np.diff(m.astype(np.int8)))
    return [[int(a), int(b) - 1] for a, b in zip(d[::2], d[1::2])]
