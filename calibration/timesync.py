"""Time synchronization of the 360 camera with the session clock: ``t_session = a * t_pano + b``.

Three estimators, from coarse to fine:

* :func:`coarse_time_map`: a robust line through the host arrival times of the frames. Arrival is
  the true time plus a transport latency plus jitter, so this map is biased by the mean latency
  (typically tens of milliseconds) but gets the rate and the rough offset.
* :func:`fine_time_map`: from motion. Points that move in the shared space (hands, wrists), known on
  the session clock from the Kinects (in some reference frame, usually the world) and seen as
  bearings in the panorama on the camera clock. The map (and optionally the panorama's pose) is the
  one under which the bearings of the Kinect trajectories, interpolated (cubic, sub-frame) at
  ``a * t_pano + b``, agree best with the observed bearings, with a robust loss on the angular
  residuals, each weighed by its expected noise (bearing noise, and the trajectory's noise at its
  distance) and whitened along its track (the tracker's noise drifts slowly). The rate is estimated
  with the offset, so clock drift over long sessions is absorbed.
* :func:`flash_events` / :func:`align_flash_events`: a brightness step (a flash, a light switched on)
  seen by both streams, located to a fraction of a frame.

Units: seconds and metres; bearings are unit vectors in the panorama's camera frame (OpenCV axes,
see ``calibration/cameras.py``). Poses follow ``calibration/transforms.py``: ``T_ref_pano`` maps
panorama-frame points into the reference frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.optimize import least_squares
from scipy.signal import butter, sosfiltfilt

from omnimocap.capture.rig import TimeMap
from omnimocap.geometry.transforms import axis_angle_to_matrix, invert_pose, make_pose, transform_points
from omnimocap.errors import UserError


# --- coarse: host arrival times ------------------------------------------------------------------

def coarse_time_map(t_sensor: np.ndarray, t_host: np.ndarray) -> TimeMap:
    """Robust line fit ``t_host ~ a * t_sensor + b`` over the frames whose arrival time is known.

    ``t_sensor`` (N,) seconds on the device clock, ``t_host`` (N,) seconds on the session clock (NaN
    where unknown). A soft-L1 loss keeps late frames (a stalled USB transfer) from tilting the line.
    The offset keeps the mean transport latency; :func:`fine_time_map` removes it.
    Residual RMS (ms) is of the inliers (|residual| < 3 robust sigmas).
    """
    t_sensor = np.asarray(t_sensor, dtype=np.float64)
    t_host = np.asarray(t_host, dtype=np.float64)
    ok = np.isfinite(t_sensor) & np.isfinite(t_host)
    if ok.sum() < 2 or np.ptp(t_sensor[ok]) <= 0:
        raise UserError("the 360 stream has fewer than two frames with host arrival times; no coarse time map "
                        "can be fitted", fix="record with host timestamps, or give the time map by other means")
    x, y = t_sensor[ok], t_host[ok]
    x0 = np.mean(x)
    slope, icept = np.polyfit(x - x0, y, 1)
    jitter = max(1e-4, _mad_sigma(y - (slope * (x - x0) + icept)))
    fit = least_squares(lambda p: p[0] * (x - x0) + p[1] - y, [slope, icept], loss="soft_l1", f_scale=jitter)
    a, c = fit.x
    r = y - (a * (x - x0) + c)
    inl = np.abs(r) < 3 * max(_mad_sigma(r), 1e-6)
    return TimeMap(float(a), float(c - a * x0), float(np.sqrt(np.mean(r[inl] ** 2)) * 1e3))


def rate_std_ppm(t_sensor: np.ndarray, time_map: TimeMap) -> float:
    """1-sigma uncertainty (ppm) of a coarse map's rate, from its residual RMS and the time span: the
    arrival jitter averages out over many frames while a steady latency does not touch the rate."""
    t = np.asarray(t_sensor, dtype=np.float64)
    t = t[np.isfinite(t)]
    if len(t) < 3 or time_map.residual_rms_ms is None:
        return float("inf")
    return float(time_map.residual_rms_ms * 1e-3 / (np.sqrt(len(t)) * np.std(t)) * 1e6)


def _mad_sigma(r: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(r - np.median(r))))


# --- trajectories, interpolated --------------------------------------------------------------------

class TrackSplines:
    """Cubic splines through K point trajectories sampled at times ``t`` (N,) seconds, ``points``
    (N,K,3) metres (NaN where a point is missing). A trajectory is cut into segments at missing
    samples and at gaps longer than ``max_gap_s``; segments with fewer than ``min_samples`` are dropped.

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
                 smooth_hz: float | None = None, max_gap_s: float = 0.25, min_samples: int = 6):
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
            for lo, hi in _runs(finite, t, max_gap_s):
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
        out = np.empty((len(t_query), 3))
        for s in np.unique(seg):
            m = seg == s
            out[m] = self.splines[s](t_query[m], nu)
        return out

    def relative_noise(self, seg: np.ndarray, t_query: np.ndarray) -> np.ndarray:
        """Relative noise (M,) of the (smoothed) positions at ``t_query`` in segments ``seg`` (all >= 0):
        the RMS of ``sigma`` over the smoothing window, linearly interpolated between samples."""
        out = np.empty(len(t_query))
        for s in np.unique(seg):
            m = seg == s
            ts, vs = self.variance[s]
            out[m] = np.sqrt(np.interp(t_query[m], ts, vs))
        return out


def _runs(finite: np.ndarray, t: np.ndarray, max_gap_s: float) -> list[tuple[int, int]]:
    """[lo, hi) index ranges of finite samples without a time gap above ``max_gap_s``."""
    breaks = ~finite | np.r_[True, np.diff(t) > max_gap_s]
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


# --- fine: motion ------------------------------------------------------------------------------------

# Finite-difference step of the fit's parameters (ppm, ms, mrad, mm).
FD_STEP = 1e-5


def offset_grid(search_s: float, step_s: float) -> np.ndarray:
    """Offsets (seconds) from ``-search_s`` to ``search_s`` in steps of ``step_s``, with an exact 0."""
    n = int(np.floor(search_s / step_s + 1e-9))
    return step_s * np.arange(-n, n + 1)


@dataclass
class SyncResult:
    """Outcome of :func:`fine_time_map`: the map, the (possibly refined) pose ``T_ref_pano``, and the
    angular residuals (degrees) of the inliers, with 1-sigma uncertainties from the fit's covariance."""

    time_map: TimeMap
    T_ref_pano: np.ndarray
    residual_rms_deg: float
    residual_median_deg: float
    n_observations: int
    n_inliers: int
    offset_std_ms: float
    rate_std_ppm: float
    rotation_std_deg: float | None = None
    translation_std_mm: float | None = None
    offsets_mm: np.ndarray | None = None
    """(n,3) the modelled tracks' offsets in the body's frame, millimetres (None when none is modelled)."""

    def to_json(self) -> dict:
        return {
            "residual_rms_deg": self.residual_rms_deg,
            "residual_median_deg": self.residual_median_deg,
            "n_observations": self.n_observations,
            "n_inliers": self.n_inliers,
            "offset_std_ms": self.offset_std_ms,
            "rate_std_ppm": self.rate_std_ppm,
            "rotation_std_deg": self.rotation_std_deg,
            "translation_std_mm": self.translation_std_mm,
        }


@dataclass
class RobustConfig:
    """The robust loss of :meth:`BearingProblem.solve` (sync and markerless calibration)."""

    scale_from_data: bool = True
    """Refit with the loss scaled by the residuals of a first fit (off: soft-L1 at ``2 * noise_deg``)."""
    loss: str = "cauchy"
    """scipy ``least_squares`` loss of the refit."""
    scale_sigmas: float = 2.5
    """The refit's loss scale in robust standard deviations of the first fit's residuals (per axis)."""
    min_scale_deg: float = 0.05
    """Lowest loss scale, degrees (noise-free simulations)."""


# The settings every solve uses; replace to change them for a run.
ROBUST = RobustConfig()


class BearingProblem:
    """Observed bearings against interpolated trajectories, the residual shared by sync and
    markerless calibration.

    Parameters, relative to the initial values, in units that keep them O(1):
    ``x = [rate (ppm), offset at the middle pano time (ms), rotation (mrad, axis-angle in the pano
    frame), translation (mm, pano frame)]``; the pose is ``T_ref_pano = T0 @ [exp(w) | dt]``.
    """

    def __init__(self, splines: TrackSplines, t_pano: np.ndarray, track: np.ndarray, bearings: np.ndarray,
                 init: TimeMap, T_ref_pano: np.ndarray, margin_s: float):
        self.splines = splines
        self.n_offsets = 0  # see set_offsets
        self.t_mid = float(np.median(t_pano)) if len(t_pano) else 0.0
        self.a0 = init.a
        self.c0 = init.a * self.t_mid + init.b
        self.T0 = np.asarray(T_ref_pano, dtype=np.float64)
        tq = init.to_session(t_pano)
        seg = splines.locate(track, tq, margin_s)
        keep = seg >= 0
        self.t_pano = t_pano[keep]
        self.track = track[keep]
        self.seg = seg[keep]
        self.bearings = bearings[keep]
        self.weights = np.ones(len(self.t_pano))
        self.ar = np.zeros(0)
        self.prev = np.zeros((len(self.t_pano), 0), dtype=np.int64)
        self.start_scale = 1.0

    def __len__(self) -> int:
        return len(self.t_pano)

    def time_map(self, x: np.ndarray) -> TimeMap:
        a = self.a0 + x[0] * 1e-6
        c = self.c0 + x[1] * 1e-3
        return TimeMap(float(a), float(c - a * self.t_mid))

    def pose(self, x: np.ndarray) -> np.ndarray:
        if len(x) - 3 * self.n_offsets <= 2:
            return self.T0
        return self.T0 @ make_pose(axis_angle_to_matrix(x[2:5] * 1e-3), x[5:8] * 1e-3)

    def set_offsets(self, t_frames: np.ndarray, frames: np.ndarray, offset_tracks: np.ndarray,
                    prior_m: float, noise_deg: float) -> None:
        """Model a constant offset per track of ``offset_tracks`` (K,) bool, in a frame that moves
        with the body: ``frames`` (N,K,3,3) rotations (columns: the frame's axes in the reference
        frame) at times ``t_frames`` (N,) (the nearest one is used). The offsets (mm) follow the
        other parameters in ``x``, with a prior of ``prior_m`` per axis weighed like a bearing of
        ``noise_deg``. A detector's keypoint is not the Kinect's joint: the difference stays with the
        body, turns with it, and would otherwise look like a clock error."""
        slots = np.full(self.splines.num_tracks, -1, dtype=np.int64)
        slots[np.flatnonzero(offset_tracks)] = np.arange(int(np.sum(offset_tracks)))
        self.n_offsets = int(np.sum(offset_tracks))
        self.offset_slot = slots[self.track]
        self.offset_t = np.asarray(t_frames, dtype=np.float64)
        self.offset_frames = np.nan_to_num(np.asarray(frames, dtype=np.float64))
        self.offset_prior = np.radians(noise_deg) / prior_m * 1e-3  # per mm of offset

    def offsets_m(self, x: np.ndarray) -> np.ndarray:
        """The modelled offsets (n,3), metres, in the body's frame."""
        return x[len(x) - 3 * self.n_offsets:].reshape(-1, 3) * 1e-3 if self.n_offsets else np.zeros((0, 3))

    def predicted(self, x: np.ndarray) -> np.ndarray:
        """Unit bearings (M,3) of the interpolated trajectories in the panorama frame."""
        tq = self.time_map(x).to_session(self.t_pano)
        p_ref = self.splines.evaluate(self.seg, tq)
        if self.n_offsets:
            on = self.offset_slot >= 0
            i = np.clip(np.searchsorted(self.offset_t, tq[on]), 0, len(self.offset_t) - 1)
            R = self.offset_frames[i, self.track[on]]
            p_ref[on] = p_ref[on] + (R @ self.offsets_m(x)[self.offset_slot[on]][..., None])[..., 0]
        p = transform_points(invert_pose(self.pose(x)), p_ref)
        return p / np.linalg.norm(p, axis=-1, keepdims=True)

    def residuals(self, x: np.ndarray) -> np.ndarray:
        """Chord vectors (3M,) between predicted and observed bearings (about the angle in radians),
        each scaled by its observation's weight, and whitened once :meth:`estimate_whitening` has
        run."""
        r = (self.predicted(x) - self.bearings) * self.weights[:, None]
        return self._whiten(r).ravel()

    def _whiten(self, r: np.ndarray) -> np.ndarray:
        if not len(self.ar):
            return r
        full = np.all(self.prev >= 0, axis=1)
        e = r.copy()
        for lag, phi in enumerate(self.ar):
            e[full] -= phi * r[self.prev[full, lag]]
        e[~full] *= self.start_scale
        return e

    def estimate_whitening(self, x: np.ndarray, order: int, inlier: np.ndarray) -> None:
        """Fit an autoregressive model of ``order`` to the weighted residuals at ``x`` (each track's,
        over consecutive panorama frames, pooled over the tracks; Yule-Walker) and whiten the
        residuals with it from now on: :meth:`residuals` becomes each residual minus its prediction
        from the same track's previous frames, the innovation, and a residual without those
        frames (the start of a run, or after an outlier, ``inlier`` False) is scaled to the
        innovation's size. Order 0 turns whitening off."""
        self.ar = np.zeros(0)
        if order <= 0:
            return
        prev = _predecessors(self.t_pano, self.track, order)
        prev[(prev >= 0) & ~inlier[np.maximum(prev, 0)]] = -1
        r = np.where(inlier[:, None], (self.predicted(x) - self.bearings) * self.weights[:, None], 0.0)
        gamma = [np.sum(r * r) / max(inlier.sum(), 1)]
        for lag in range(order):
            ok = (prev[:, lag] >= 0) & inlier
            gamma.append(np.sum(r[ok] * r[prev[ok, lag]]) / max(ok.sum(), 1))
        gamma = np.asarray(gamma)
        if not gamma[0] > 0:
            return
        toeplitz = gamma[np.abs(np.subtract.outer(np.arange(order), np.arange(order)))]
        try:
            phi = np.linalg.solve(toeplitz, gamma[1:])
        except np.linalg.LinAlgError:
            return
        innovation = gamma[0] - phi @ gamma[1:]
        if not (np.all(np.isfinite(phi)) and 0 < innovation <= gamma[0]):
            return
        self.ar, self.prev = phi, prev
        self.start_scale = float(np.sqrt(innovation / gamma[0]))

    def weigh_by_distance(self, x: np.ndarray, noise_deg: float, point_noise_m: float) -> None:
        """Weights from each observation's expected angular error: the bearing noise ``noise_deg``
        plus the trajectory's noise seen from the point's distance to the panorama at ``x``. That
        noise is ``point_noise_m`` (metres, per axis, after smoothing, for a trajectory of relative
        noise 1) times the trajectory's relative noise at the observation's time
        (:meth:`TrackSplines.relative_noise`). A hand 0.5 m from the camera turns the same
        tracking error into three times the angle it makes at 1.5 m; weighted least squares
        then trusts the far points, and the well-tracked ones, more. Weights are 1 for a noise-free
        trajectory."""
        tq = self.time_map(x).to_session(self.t_pano)
        p = transform_points(invert_pose(self.pose(x)), self.splines.evaluate(self.seg, tq))
        dist = np.maximum(np.linalg.norm(p, axis=-1), 0.1)
        point_noise = point_noise_m * self.splines.relative_noise(self.seg, tq)
        s_obs = np.radians(noise_deg)
        self.weights = s_obs / np.sqrt(s_obs ** 2 + (point_noise / dist) ** 2)

    def angles_deg(self, x: np.ndarray) -> np.ndarray:
        chord = np.linalg.norm(self.predicted(x) - self.bearings, axis=-1)
        return np.degrees(2 * np.arcsin(np.clip(chord / 2, 0.0, 1.0)))

    def scan_offset(self, x: np.ndarray, search_s: float, step_s: float) -> np.ndarray:
        """``x`` with its offset replaced by the grid value of least median angle."""
        best, best_x = np.inf, x
        for d in offset_grid(search_s, step_s):
            trial = x.copy()
            trial[1] = x[1] + d * 1e3
            med = np.median(self.angles_deg(trial))
            if med < best:
                best, best_x = med, trial
        return best_x

    def solve(self, x0: np.ndarray, noise_deg: float, rate_prior_std_ppm: float | None = None,
              noise_ar_order: int = 0) -> tuple[np.ndarray, dict]:
        """Robust least squares from ``x0``; returns the solution and its statistics. A first
        soft-L1 fit with the scale ``2 * noise_deg``; with :data:`ROBUST` ``scale_from_data`` a second
        fit with ``ROBUST.loss`` (Cauchy by default) whose scale comes from that fit's residuals (the
        detections' real scatter, not the assumed one), which keeps mislabelled or misassociated
        bearings from pulling.

        Residuals of one track are correlated over neighbouring frames: the Kinect joint noise is
        partly slow (it drifts over a fraction of a second, which no low-pass removes without
        removing the motion too), and the smoothing correlates the rest. Ordinary least squares
        treats every frame as new evidence; the covariance inflated by the autocorrelation time at
        zero lag then overstates the uncertainty (about twice the scatter of the errors on simulated
        sessions). With ``noise_ar_order`` > 0, a first fit's residuals give an autoregressive noise
        model that whitens them (:meth:`estimate_whitening`) and the fit is repeated on the
        innovations (generalised least squares). Whatever correlation remains inflates the
        covariance by the residuals' integrated autocorrelation time.
        ``rate_prior_std_ppm`` adds the initial rate as a measurement of that uncertainty (the host
        arrival times measure the rate independently of the latency), weighted against the motion
        with the same correction."""
        scale = np.radians(2.0 * noise_deg)
        loss = "soft_l1"
        fit = self._fit(x0, scale, 0.0)
        stats = self._stats(fit, noise_deg, None)
        if ROBUST.scale_from_data:
            # the loss's scale from the residuals themselves: the median angle of a 2-D Gaussian
            # bearing error is 1.177 sigma per axis
            sigma = np.radians(float(np.median(self.angles_deg(fit.x)))) / 1.1774
            scale = max(ROBUST.scale_sigmas * sigma, np.radians(ROBUST.min_scale_deg))
            loss = ROBUST.loss
            fit = self._fit(fit.x, scale, 0.0, loss)
            stats = self._stats(fit, noise_deg, None)
        if noise_ar_order > 0:
            self.estimate_whitening(fit.x, noise_ar_order, stats["inlier"])
            # The innovations are smaller than the residuals; the outlier threshold follows.
            scale *= self.start_scale if len(self.ar) else 1.0
            fit = self._fit(fit.x, scale, 0.0, loss)
            stats = self._stats(fit, noise_deg, None)
        if rate_prior_std_ppm:
            w = stats["sigma"] * np.sqrt(stats["tau"]) / rate_prior_std_ppm
            fit = self._fit(fit.x, scale, w, loss)
            stats = self._stats(fit, noise_deg, rate_prior_std_ppm)
        return fit.x, stats

    def _fit(self, x0: np.ndarray, scale: float, prior_weight: float, loss: str = "soft_l1"):
        def fun(x):
            r = self.residuals(x)
            if self.n_offsets:
                r = np.r_[r, self.offset_prior * x[len(x) - 3 * self.n_offsets:]]
            return np.r_[r, prior_weight * x[0]] if prior_weight else r
        def jac(x):
            # Forward differences with an absolute step: the parameters are in units that keep them
            # O(1), and a relative step (scipy's diff_step) vanishes for a parameter that starts at
            # a round-off value such as 1e-14 (a zero Jacobian, and a fit that never moves).
            f0 = fun(x)
            return np.stack([(fun(x + FD_STEP * e) - f0) / FD_STEP for e in np.eye(len(x))], axis=1)
        return least_squares(fun, x0, jac=jac, loss=loss, f_scale=scale, x_scale=1.0)

    def _stats(self, fit, noise_deg: float, rate_prior_std_ppm: float | None) -> dict:
        x = fit.x
        ang = self.angles_deg(x)
        inlier = ang < max(3.0 * 1.4826 * np.median(ang), 3 * noise_deg)
        J = fit.jac[:3 * len(self)].reshape(len(self), 3, -1)[inlier].reshape(-1, len(x))
        res = self.residuals(x).reshape(-1, 3)
        r = res[inlier].ravel()
        # Two of the three chord components carry the angular error; the radial one is ~0.
        sigma2 = float(r @ r / max(2 * inlier.sum() - len(x), 1))
        tau = _autocorrelation_time(np.where(inlier[:, None], res, 0.0), self.track, self.t_pano)
        info = J.T @ J / (sigma2 * tau)
        if self.n_offsets:
            k = 3 * self.n_offsets
            info[-k:, -k:] += np.eye(k) * self.offset_prior ** 2 / sigma2
        if rate_prior_std_ppm:
            info[0, 0] += 1.0 / rate_prior_std_ppm ** 2
        try:
            std = np.sqrt(np.clip(np.diag(np.linalg.inv(info)), 0.0, None))
        except np.linalg.LinAlgError:
            std = np.full(len(x), np.inf)
        return {
            "residual_rms_deg": float(np.sqrt(np.mean(ang[inlier] ** 2))) if inlier.any() else float("nan"),
            "residual_median_deg": float(np.median(ang)),
            "n_inliers": int(inlier.sum()),
            "inlier": inlier,
            "sigma": float(np.sqrt(sigma2)),
            "tau": tau,
            "std": std,
        }


def _predecessors(t: np.ndarray, track: np.ndarray, order: int) -> np.ndarray:
    """Index (M, order) of each observation's own track's observation 1..order frames earlier, -1 where
    that frame has none; frames are counted from the times' typical step, so dropped frames count."""
    u = np.unique(t)
    step = np.median(np.diff(u)) if len(u) > 1 else 1.0
    frame = np.r_[0, np.cumsum(np.maximum(np.round(np.diff(u) / step), 1))].astype(np.int64)
    f = frame[np.searchsorted(u, t)]
    key = track.astype(np.int64) * (frame[-1] + order + 1) + f
    idx = np.argsort(key)
    sorted_key = key[idx]
    out = np.full((len(t), order), -1, dtype=np.int64)
    for lag in range(1, order + 1):
        pos = np.clip(np.searchsorted(sorted_key, key - lag), 0, len(key) - 1)
        hit = sorted_key[pos] == key - lag
        out[:, lag - 1] = np.where(hit, idx[pos], -1)
    return out


def _autocorrelation_time(res: np.ndarray, track: np.ndarray, t: np.ndarray, max_lag: int = 30) -> float:
    """Integrated autocorrelation time (in observations, >= 1) of residual sequences (M,3), per track
    in time order, summed over the initial positive lags."""
    num = np.zeros(max_lag + 1)
    for k in np.unique(track):
        idx = np.nonzero(track == k)[0]
        r = res[idx[np.argsort(t[idx])]]
        r = r - r.mean(axis=0)
        for lag in range(min(max_lag, len(r) - 1) + 1):
            num[lag] += np.sum(r[lag:] * r[:len(r) - lag])
    if num[0] <= 0:
        return 1.0
    rho = num[1:] / num[0]
    stop = np.argmax(rho <= 0) if np.any(rho <= 0) else len(rho)
    return float(max(1.0, 1.0 + 2.0 * rho[:stop].sum()))


def flatten_observations(t_pano: np.ndarray, bearings: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flatten (F,) times and (F,K,3) bearings (NaN = unseen) into per-observation arrays."""
    t_pano = np.asarray(t_pano, dtype=np.float64)
    bearings = np.asarray(bearings, dtype=np.float64)
    if bearings.ndim != 3 or bearings.shape[0] != len(t_pano) or bearings.shape[2] != 3:
        raise ValueError(f"bearings must be (F,K,3) with F = len(t_pano), got {bearings.shape}")
    ok = np.all(np.isfinite(bearings), axis=-1)
    f_idx, k_idx = np.nonzero(ok)
    b = bearings[f_idx, k_idx]
    return t_pano[f_idx], k_idx, b / np.linalg.norm(b, axis=-1, keepdims=True)


def fine_time_map(t_pano: np.ndarray, bearings: np.ndarray, t_traj: np.ndarray, traj: np.ndarray,
                  T_ref_pano: np.ndarray, init: TimeMap, *, traj_sigma: np.ndarray | None = None,
                  refine_extrinsics: bool = False, rate_prior_std_ppm: float | None = None,
                  search_s: float = 0.25, noise_deg: float = 0.3, smooth_hz: float | None = 3.0,
                  point_noise_m: float = 0.01, noise_ar_order: int = 2, window_s: float = 60.0,
                  min_observations: int = 100, min_frames: int = 60, min_motion_m: float = 0.03,
                  body_frames: tuple[np.ndarray, np.ndarray] | None = None, offset_tracks: np.ndarray | None = None,
                  offset_prior_m: float = 0.015) -> SyncResult:
    """Time map of the panorama from motion.

    ``t_pano`` (F,) frame times on the camera clock; ``bearings`` (F,K,3) observed directions of K
    tracked points (e.g. each person's two wrists) in the panorama frame, NaN where unseen;
    ``t_traj`` (N,) session-clock times and ``traj`` (N,K,3) the same points from the Kinects in the
    reference frame (metres; NaN where untracked); ``traj_sigma`` (N,K) each trajectory sample's
    noise relative to ``point_noise_m`` (e.g. ``KinectTracks.sigma`` of ``calibration/observations.py``;
    NaN or inf = untracked; default all 1); ``T_ref_pano`` the panorama's pose in that frame;
    ``init`` a starting map (e.g. :func:`coarse_time_map`) whose offset may be off by up to
    ``search_s`` seconds; ``rate_prior_std_ppm`` (see :func:`rate_std_ppm`) makes ``init``'s rate a
    measurement with that uncertainty. ``noise_deg`` sets the robust loss scale; ``smooth_hz`` the
    low-pass of the trajectories (:class:`TrackSplines`); ``point_noise_m`` their remaining noise
    (metres per axis), which weighs the observations by distance (see
    :meth:`BearingProblem.weigh_by_distance`; 0 weighs all alike); ``noise_ar_order`` the order of the
    autoregressive model that whitens each track's correlated residuals (see
    :meth:`BearingProblem.solve`; 0: none). With ``refine_extrinsics`` the
    panorama's rotation and translation are refined jointly. Sessions longer than ``2 * window_s``
    first get per-window offsets (so a large rate error in ``init`` cannot defeat the offset scan),
    then one fit over everything.

    With ``offset_tracks`` (K,) bool and ``body_frames`` = (times (N,), rotations (N,K,3,3)) (see
    :func:`body_frames`), those tracks get a constant offset in the body's frame, solved jointly
    (prior ``offset_prior_m`` per axis; :meth:`BearingProblem.set_offsets`): for keypoints of a
    detector whose definition differs from the Kinect's joints (body keypoints; see
    :attr:`SyncResult.offsets_mm`).

    Raises :class:`UserError` when fewer than ``min_frames`` frames or ``min_observations`` bearings
    meet the trajectories, or when nothing moves (less than ``min_motion_m`` RMS).
    """
    tp, track, b = flatten_observations(t_pano, bearings)
    if len(tp) == 0:
        raise UserError("no hand bearings were observed in the panorama; the time map needs people moving "
                        "their hands in view of the 360 camera")
    splines = TrackSplines(t_traj, traj, sigma=traj_sigma, smooth_hz=smooth_hz)
    problem = BearingProblem(splines, tp, track, b, init, T_ref_pano, search_s)
    frames = len(np.unique(problem.t_pano))
    if len(problem) < min_observations or frames < min_frames:
        raise UserError(f"too few frames to sync: {frames} panorama frames ({len(problem)} bearings) fall within "
                        f"the Kinect trajectories, need {min_frames} frames and {min_observations} bearings; "
                        "the streams barely overlap in time or in what they see",
                        fix="record longer, with people moving their hands in view of all sensors")
    motion = track_motion_m(splines, problem.seg, problem.track, init.to_session(problem.t_pano))
    if motion < min_motion_m:
        raise UserError(f"the tracked hands barely move (at most {motion * 1e3:.0f} mm RMS about their mean "
                        f"position, need {min_motion_m * 1e3:.0f} mm); the time offset is unobservable",
                        fix="record a few seconds of arm motion in view of all sensors")

    n = 8 if refine_extrinsics else 2
    if offset_tracks is not None and np.any(offset_tracks) and body_frames is not None:
        problem.set_offsets(body_frames[0], body_frames[1], np.asarray(offset_tracks, dtype=bool), offset_prior_m,
                            noise_deg)
    x = np.zeros(n + 3 * problem.n_offsets)
    span = np.ptp(problem.t_pano)
    if span > 2 * window_s:
        x = _windowed_start(problem, x, search_s, window_s)
    else:
        x = problem.scan_offset(x, search_s, step_s=0.005)
    if point_noise_m:
        problem.weigh_by_distance(x, noise_deg, point_noise_m)
    x, stats = problem.solve(x, noise_deg, rate_prior_std_ppm, noise_ar_order)
    std = stats["std"]
    tm = problem.time_map(x)
    return SyncResult(
        time_map=tm, T_ref_pano=problem.pose(x),
        residual_rms_deg=stats["residual_rms_deg"], residual_median_deg=stats["residual_median_deg"],
        n_observations=len(problem), n_inliers=stats["n_inliers"],
        offset_std_ms=float(std[1]), rate_std_ppm=float(std[0]),
        rotation_std_deg=float(np.degrees(np.linalg.norm(std[2:5]) * 1e-3)) if n == 8 else None,
        translation_std_mm=float(np.linalg.norm(std[5:8])) if n == 8 else None,
        offsets_mm=problem.offsets_m(x) * 1e3 if problem.n_offsets else None,
    )


def body_frames(left: np.ndarray, right: np.ndarray, up_from: np.ndarray, up_to: np.ndarray) -> np.ndarray:
    """Rotations (N,3,3) of a frame that turns with a body, from its labelled left and right points
    (N,3) (e.g. shoulders) and an upward direction ``up_to - up_from`` (e.g. mid-shoulders to head):
    columns x = left - right, y = up made perpendicular to x, z = x cross y. NaN where undefined."""
    x = left - right
    with np.errstate(invalid="ignore", divide="ignore"):
        x = x / np.linalg.norm(x, axis=-1, keepdims=True)
        y = up_to - up_from
        y = y - np.sum(y * x, axis=-1, keepdims=True) * x
        y = y / np.linalg.norm(y, axis=-1, keepdims=True)
    return np.stack([x, y, np.cross(x, y)], axis=-1)


def track_motion_m(splines: TrackSplines, seg: np.ndarray, track: np.ndarray, t: np.ndarray) -> float:
    """Largest RMS distance (metres) of a track's interpolated positions at times ``t`` from their mean:
    how much the observed points move. Smoothed sensor noise alone stays well below a few centimetres."""
    p = splines.evaluate(seg, t)
    best = 0.0
    for k in np.unique(track):
        q = p[track == k]
        best = max(best, float(np.sqrt(np.mean(np.sum((q - q.mean(axis=0)) ** 2, axis=-1)))))
    return best


def _windowed_start(problem: BearingProblem, x: np.ndarray, search_s: float, window_s: float) -> np.ndarray:
    """Offsets scanned per window, then a line through them: a start that already follows the drift."""
    centers, offsets = [], []
    edges = np.arange(problem.t_pano.min(), problem.t_pano.max() + window_s, window_s)
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (problem.t_pano >= lo) & (problem.t_pano < hi)
        if m.sum() < 50:
            continue
        sub = _subset(problem, m)
        xs = sub.scan_offset(x.copy(), search_s, step_s=0.005)
        centers.append(np.median(sub.t_pano) - problem.t_mid)
        offsets.append(xs[1] * 1e-3)
    if len(centers) < 2:
        return problem.scan_offset(x, search_s, step_s=0.005)
    slope, icept = np.polyfit(centers, offsets, 1)
    out = x.copy()
    out[0] = slope * 1e6
    out[1] = icept * 1e3
    return out


def _subset(problem: BearingProblem, mask: np.ndarray) -> BearingProblem:
    sub = object.__new__(BearingProblem)
    sub.__dict__.update(problem.__dict__)
    sub.t_pano, sub.track = problem.t_pano[mask], problem.track[mask]
    sub.seg, sub.bearings = problem.seg[mask], problem.bearings[mask]
    sub.weights = problem.weights[mask]
    sub.ar = np.zeros(0)
    return sub


# --- flashes -------------------------------------------------------------------------------------

# Flash pairs closer together than this (sensor seconds) fix the offset only: over a shorter span a
# sub-millisecond error in each event would be a rate error of hundreds of ppm.
FLASH_MIN_RATE_SPAN_S = 1.0

def frame_brightness(image: np.ndarray, max_width: int = 320) -> float:
    """Mean brightness (grey levels, BT.601 luma of a BGR image, or the mean of a single-channel one)
    of ``image``, from every n-th pixel of every n-th row so that at most ``max_width`` columns are
    read: a mean over tens of thousands of pixels is as good as over all of them for a brightness
    step, and reading a full 5.7K frame would cost more than decoding it."""
    step = max(1, int(np.ceil(image.shape[1] / max_width)))
    small = image[::step, ::step]
    if small.ndim == 2:
        return float(small.mean())
    b, g, r = small.reshape(-1, small.shape[-1])[:, :3].mean(axis=0)
    return float(0.114 * b + 0.587 * g + 0.299 * r)


def flash_events(t: np.ndarray, brightness: np.ndarray, *, min_step: float | None = None,
                 plateau: int = 3) -> np.ndarray:
    """Times (seconds, the stream's clock) of rising brightness steps in a frame sequence.

    ``t`` (N,) frame times (mid-exposure), ``brightness`` (N,) mean image brightness. A step is a jump
    of at least ``min_step`` (default: half the brightness range) between ``plateau``-frame levels.
    It is located by the area under the transition: each frame is taken to be exposed for the
    typical frame period T (fitted over all frames), centred on its time, so its fraction f_j of
    the way from the low to the high level is the fraction of its exposure after the step,
    ``clip((t_j + T/2 - t_step) / T, 0, 1)``. The step is the time whose predicted fractions sum to
    the observed ones over the frames from the last low-plateau frame to the high plateau: exact for
    frames at irregular times (capture jitter) as long as their exposure is T; for uniform times it
    is ``t_step = t_lo + T * sum(1 - f_j) - T / 2``. Shorter exposures err by at most half the frame
    period.
    """
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(brightness, dtype=np.float64)
    if len(t) < 2 * plateau + 2:
        return np.zeros(0)
    T = _frame_period(t)
    if min_step is None:
        min_step = 0.5 * (np.percentile(y, 99) - np.percentile(y, 1))
    if min_step <= 0:
        return np.zeros(0)
    events = []
    i = plateau
    while i < len(y) - plateau - 2:
        lo = np.median(y[i - plateau:i])
        hi = np.median(y[i + 1:i + 1 + plateau])
        if hi - lo < min_step:
            i += 1
            continue
        # The first index where the levels differ enough can still see the ramp in its "high" window,
        # so the levels are re-read from frames clear of the ramp, which spans at most two frames.
        start = i - 1  # the last low-plateau frame
        lo = np.median(y[max(start - plateau + 1, 0):start + 1])
        hi = np.median(y[start + 3:start + 3 + plateau])
        window = slice(start, start + 3 + plateau)
        f = np.clip((y[window] - lo) / (hi - lo), 0.0, 1.0)
        events.append(_step_time(t[window], float(np.sum(f)), T))
        i += 2 * plateau
    return np.asarray(events)


def _frame_period(t: np.ndarray) -> float:
    """The typical frame period (seconds) of frame times ``t``: the slope of the times against frame
    numbers counted in steps of the median interval (so dropped frames count), which averages out
    the capture jitter that a median of the intervals keeps."""
    d = np.diff(t)
    T0 = float(np.median(d))
    frame = np.r_[0.0, np.cumsum(np.maximum(np.round(d / T0), 1.0))]
    return float(np.polyfit(frame, t, 1)[0])


def _step_time(t: np.ndarray, lit: float, T: float) -> float:
    """The step time s at which frames at ``t`` exposed for ``T`` each would see, summed, ``lit``
    frames' worth of the high level: the sum, ``sum_j clip((t_j + T/2 - s) / T, 0, 1)``, is piecewise
    linear and non-increasing in s with corners at ``t_j +- T/2``, so it is inverted exactly by
    interpolating between its values there."""
    corners = np.unique(np.r_[t - 0.5 * T, t + 0.5 * T])
    total = np.clip((t[None, :] + 0.5 * T - corners[:, None]) / T, 0.0, 1.0).sum(axis=1)
    # np.interp wants increasing abscissae: the sum falls as s grows.
    return float(np.interp(lit, total[::-1], corners[::-1]))


def pair_flash_events(t_sensor_events: np.ndarray, t_session_events: np.ndarray,
                      init: TimeMap | None = None, tolerance_s: float = 0.5) -> np.ndarray:
    """Pairs (M, 2) ``[t_sensor, t_session]`` of flash events: each sensor event with the nearest
    session event under ``init`` (default: the identity), kept when within ``tolerance_s``."""
    init = init or TimeMap()
    es = np.asarray(t_sensor_events, dtype=np.float64)
    eh = np.sort(np.asarray(t_session_events, dtype=np.float64))
    pairs = []
    for e in es:
        if len(eh) == 0:
            break
        j = int(np.argmin(np.abs(eh - init.to_session(e))))
        if abs(eh[j] - init.to_session(e)) <= tolerance_s:
            pairs.append((e, eh[j]))
    return np.asarray(pairs, dtype=np.float64).reshape(-1, 2)


def align_flash_events(t_sensor_events: np.ndarray, t_session_events: np.ndarray,
                       init: TimeMap | None = None, tolerance_s: float = 0.5) -> TimeMap:
    """Time map from flash events seen on the sensor clock and on the session clock.

    Events are paired by :func:`pair_flash_events`. One pair (or pairs within
    FLASH_MIN_RATE_SPAN_S of each other) fixes the offset (rate from ``init``, default the
    identity); two or more further apart fit rate and offset. Residual RMS in ms. Raises
    :class:`UserError` when no pair matches."""
    init = init or TimeMap()
    pairs = pair_flash_events(t_sensor_events, t_session_events, init, tolerance_s)
    if not len(pairs):
        raise UserError(f"no flash was seen by both streams within {tolerance_s:g} s of each other",
                        fix="flash a light in view of both cameras, or widen the tolerance")
    x, y = pairs.T
    if np.ptp(x) < FLASH_MIN_RATE_SPAN_S:
        b = float(np.mean(y - init.a * x))
        return TimeMap(init.a, b, float(np.sqrt(np.mean((y - init.a * x - b) ** 2)) * 1e3))
    a, b = np.polyfit(x, y, 1)
    return TimeMap(float(a), float(b), float(np.sqrt(np.mean((y - (a * x + b)) ** 2)) * 1e3))
