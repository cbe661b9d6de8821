"""Point trajectories of the Kinects (hands, wrists) as cubic splines, evaluated at any session time.

What the motion sync and the markerless calibration compare the panorama's bearings with: each
trajectory is cut into segments at missing samples and gaps, low-passed without delay, and carries
its relative noise. Units: seconds (session clock) and metres (the trajectories' reference frame).
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.signal import butter, sosfiltfilt


class TrackSplines:
    """Cubic splines through K point trajectories sampled at times ``t`` (N,) seconds, ``points``
    (N,K,3) metres (NaN where a point is missing). A trajectory is cut into segments at missing
    samples and at gaps longer than ``max_gap_s``; segments with fewer than ``min_samples`` are dropped.
    With ``max_speed_m_s`` it is also cut where it moves faster than that between two samples: no
    joint moves so fast, but a track that a tracker hands over to another person (or whose left and
    right labels swap) jumps there, and a spline smoothed across the jump would turn it into a burst
    of motion that pulls the clock.

    ``smooth_hz`` applies a zero-phase low-pass (Butterworth, forward-backward, so it shifts nothing in
    time) to each segment first: body motion is slow next to the sensor's frame rate, so this removes
    much of the per-frame noise without delaying the trajectory. It assumes near-uniform sampling
    within a segment.

    ``sigma`` (N,K) is each sample's noise relative to a reference point noise (default: all 1);
    samples where it is NaN or infinite count as missing. The smoothed trajectory averages the noise
    of neighbouring samples, so :meth:`relative_noise` reports the RMS of ``sigma`` over the same
    low-pass window (the filter applied to the variances).
    """

    def __init__(self, t: np.ndarray, points: np.ndarray, *, sigma: np.ndarray | None = None,
                 smooth_hz: float | None = None, max_gap_s: float = 0.25, min_samples: int = 6,
                 max_speed_m_s: float | None = None):
        t = np.asarray(t, dtype=np.float64)
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 3 or points.shape[0] != len(t) or points.shape[2] != 3:
            raise ValueError(f"points must be (N,K,3) with N = len(t), got {points.shape} for {len(t)} times")
        if np.any(np.diff(t) <= 0):
            raise ValueError("trajectory times must increase strictly")
        if sigma is None:
            var = np.ones(points.shape[:2])
        else:
            sigma = np.asarray(sigma, dtype=np.float64)
            if sigma.shape != points.shape[:2]:
                raise ValueError(f"sigma must be (N,K) = {points.shape[:2]}, got {sigma.shape}")
            var = np.where(np.isfinite(sigma) & (sigma > 0), sigma, np.nan) ** 2
        self.num_tracks = points.shape[1]
        self.t0: list[float] = []
        self.t1: list[float] = []
        self.track: list[int] = []
        self.splines: list[CubicSpline] = []
        self.variance: list[tuple[np.ndarray, np.ndarray]] = []
        for k in range(self.num_tracks):
            finite = np.all(np.isfinite(points[:, k]), axis=-1) & np.isfinite(var[:, k])
            jump = np.zeros(len(t), dtype=bool)
            if max_speed_m_s:
                step = np.linalg.norm(np.diff(points[:, k], axis=0), axis=-1)
                jump[1:] = step > max_speed_m_s * np.diff(t)  # NaN steps compare False
            for lo, hi in _runs(finite, t, max_gap_s, jump):
                if hi - lo < min_samples:
                    continue
                ts, ps, vs = t[lo:hi], points[lo:hi, k], var[lo:hi, k]
                if smooth_hz:
                    ps = _lowpass(ts, ps, smooth_hz)
                    # The filter's small negative lobes could push a variance below any sample's.
                    vs = np.clip(_lowpass(ts, vs, smooth_hz), vs.min(), vs.max())
                self.t0.append(ts[0])
                self.t1.append(ts[-1])
                self.track.append(k)
                self.splines.append(CubicSpline(ts, ps, axis=0))
                self.variance.append((ts, vs))
        self._pack()

    def _pack(self) -> None:
        """All segments' polynomial pieces in one table, so that :meth:`evaluate` finds and evaluates
        every query's piece at once (the solvers evaluate the same queries hundreds of times; a loop
        over the segments made that cost grow with the number of track breaks)."""
        starts = [s.x[:-1] for s in self.splines]
        self._first = np.cumsum([0] + [len(x) for x in starts])[:-1].astype(np.int64)
        self._count = np.array([len(x) for x in starts], dtype=np.int64)
        self._breaks = np.concatenate(starts) if starts else np.zeros(0)
        self._coef = np.concatenate([s.c for s in self.splines], axis=1) if starts else np.zeros((4, 0, 3))
        # Segment s's pieces sorted on s * width + (t - origin): one sorted key for every segment.
        self._origin = float(min(self.t0)) if starts else 0.0
        self._width = float(max(self.t1) - self._origin + 1.0) if starts else 1.0
        seg_of_piece = np.repeat(np.arange(len(starts)), self._count)
        self._keys = seg_of_piece * self._width + (self._breaks - self._origin)

    def locate(self, track: np.ndarray, t_query: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Segment index (M,) holding each query (track k, time t) with ``margin`` seconds to spare on
        both sides, -1 where none does."""
        seg = np.full(len(t_query), -1, dtype=np.int64)
        for s, (k, a, b) in enumerate(zip(self.track, self.t0, self.t1)):
            inside = (track == k) & (t_query >= a + margin) & (t_query <= b - margin)
            seg[inside] = s
        return seg

    def evaluate(self, seg: np.ndarray, t_query: np.ndarray, nu: int = 0) -> np.ndarray:
        """Positions (M,3) (or their ``nu``-th time derivative) at ``t_query`` in segments ``seg``
        (from :meth:`locate`; all >= 0)."""
        seg = np.asarray(seg, dtype=np.int64)
        t_query = np.asarray(t_query, dtype=np.float64)
        if not len(seg):
            return np.zeros((0, 3))
        key = seg * self._width + (t_query - self._origin)
        piece = np.searchsorted(self._keys, key, side="right") - 1
        # outside a segment's span its end pieces extrapolate, as scipy's CubicSpline does
        piece = np.clip(piece, self._first[seg], self._first[seg] + self._count[seg] - 1)
        dt = (t_query - self._breaks[piece])[:, None]
        c3, c2, c1, c0 = self._coef[:, piece]  # coefficients of dt**3, dt**2, dt, 1
        if nu == 0:
            return ((c3 * dt + c2) * dt + c1) * dt + c0
        if nu == 1:
            return (3.0 * c3 * dt + 2.0 * c2) * dt + c1
        if nu == 2:
            return 6.0 * c3 * dt + 2.0 * c2
        if nu == 3:
            return np.broadcast_to(6.0 * c3, (len(t_query), 3)).copy()
        raise ValueError(f"derivative order nu must be 0..3, got {nu}")

    def relative_noise(self, seg: np.ndarray, t_query: np.ndarray) -> np.ndarray:
        """Relative noise (M,) of the (smoothed) positions at ``t_query`` in segments ``seg`` (all >= 0):
        the RMS of ``sigma`` over the smoothing window, linearly interpolated between samples."""
        out = np.empty(len(t_query))
        for s in np.unique(seg):
            m = seg == s
            ts, vs = self.variance[s]
            out[m] = np.sqrt(np.interp(t_query[m], ts, vs))
        return out


def _runs(finite: np.ndarray, t: np.ndarray, max_gap_s: float,
          jump: np.ndarray | None = None) -> list[tuple[int, int]]:
    """[lo, hi) index ranges of finite samples without a time gap above ``max_gap_s``, each also
    starting at every sample that ``jump`` (N,) bool marks."""
    breaks = ~finite | np.r_[True, np.diff(t) > max_gap_s]
    if jump is not None:
        breaks |= jump
    runs, lo = [], None
    for i in range(len(t)):
        if not finite[i]:
            if lo is not None:
                runs.append((lo, i))
            lo = None
        elif breaks[i] or lo is None:
            if lo is not None:
                runs.append((lo, i))
            lo = i
    if lo is not None:
        runs.append((lo, len(t)))
    return runs


def _lowpass(t: np.ndarray, p: np.ndarray, cutoff_hz: float) -> np.ndarray:
    fs = 1.0 / np.median(np.diff(t))
    if cutoff_hz >= 0.45 * fs:
        return p
    sos = butter(2, cutoff_hz, fs=fs, output="sos")
    if len(p) <= 3 * (2 * len(sos) + 1):
        return p
    return sosfiltfilt(sos, p, axis=0)


def track_motion_m(splines: TrackSplines, seg: np.ndarray, track: np.ndarray, t: np.ndarray) -> float:
    """Largest RMS distance (metres) of a track's interpolated positions at times ``t`` from their mean:
    how much the observed points move. Smoothed sensor noise alone stays well below a few centimetres."""
    p = splines.evaluate(seg, t)
    best = 0.0
    for k in np.unique(track):
        q = p[track == k]
        best = max(best, float(np.sqrt(np.mean(np.sum((q - q.mean(axis=0)) ** 2, axis=-1)))))
    return best
