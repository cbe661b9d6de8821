"""Observed bearings in the panorama against interpolated Kinect trajectories: the residual, its
robust weighted least-squares solve and the solution's uncertainty, shared by the motion sync and
the markerless calibration.

Units: seconds and metres; bearings are unit vectors in the panorama's camera frame (OpenCV axes,
see ``geometry/cameras.py``). Poses follow ``geometry/transforms.py``: ``T_ref_pano`` maps
panorama-frame points into the trajectories' reference frame.
"""

from __future__ import annotations

import inspect

import numpy as np
from scipy import sparse
from scipy.optimize import least_squares

from omnimocap.calibration.config import RobustConfig
from omnimocap.calibration.track_splines import TrackSplines
from omnimocap.capture.rig import TimeMap
from omnimocap.geometry.pano_optics import PanoOptics
from omnimocap.geometry.transforms import invert_pose, pose_from_vector, transform_points

# Finite-difference step of the fit's parameters (ppm, ms, mrad, mm).
FD_STEP = 1e-5
# scipy before 1.15 has no least_squares callback: bounded fits then stop on max_nfev alone.
_HAS_CALLBACK = "callback" in inspect.signature(least_squares).parameters


def offset_grid(search_s: float, step_s: float) -> np.ndarray:
    """Offsets (seconds) from ``-search_s`` to ``search_s`` in steps of ``step_s``, with an exact 0."""
    n = int(np.floor(search_s / step_s + 1e-9))
    return step_s * np.arange(-n, n + 1)




class BearingProblem:
    """Observed bearings against interpolated trajectories, the residual shared by sync and
    markerless calibration.

    Parameters, relative to the initial values, in units that keep them O(1):
    ``x = [rate (ppm), offset at the middle pano time (ms), rotation (mrad, axis-angle in the pano
    frame), translation (mm, pano frame)]``; the pose is ``T_ref_pano = T0 @ [exp(w) | dt]``.
    """

    def __init__(self, splines: TrackSplines, t_pano: np.ndarray, track: np.ndarray, bearings: np.ndarray,
                 init: TimeMap, T_ref_pano: np.ndarray, margin_s: float, optics: PanoOptics | None = None):
        """``optics``: the 360 camera's (geometry/pano_optics.py; default ideal): each observation is
        taken at its frame's time plus its row's offset (rolling shutter), and its bearing is seen
        from the centre of the lens that shows it."""
        optics = PanoOptics.ideal() if optics is None else optics
        t_frame = np.asarray(t_pano, dtype=np.float64)
        t_pano = t_frame + optics.time_offset_s(bearings)
        self.splines = splines
        self.n_offsets = 0  # see set_offsets
        self.n_sets = 1
        self.t_mid = float(np.median(t_pano)) if len(t_pano) else 0.0
        self.a0 = init.a
        self.c0 = init.a * self.t_mid + init.b
        self.T0 = np.asarray(T_ref_pano, dtype=np.float64)
        tq = init.to_session(t_pano)
        seg = splines.locate(track, tq, margin_s)
        keep = seg >= 0
        self.t_pano = t_pano[keep]  # each observation's capture time, camera clock
        self.t_frame = t_frame[keep]  # its frame's timestamp
        self.track = track[keep]
        self.seg = seg[keep]
        self.bearings = bearings[keep]
        self.lens_centre = optics.centre(optics.lens_of(self.bearings))  # (M,3), pano frame, metres
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
        return self.T0 @ pose_from_vector(x[2:8] * 1e-3)

    def set_offsets(self, t_frames: np.ndarray, frames: np.ndarray, offset_tracks: np.ndarray,
                    prior_m: float | np.ndarray, noise_deg: float) -> None:
        """Model a constant offset per track of ``offset_tracks`` (K,) bool in each of S frames that
        move with the body: ``frames`` (N,K,3,3) or (N,K,S,3,3) rotations (columns: the frame's axes
        in the reference frame) at times ``t_frames`` (N,) (the nearest one is used; NaN where
        unknown, where that frame's offset then does nothing). The offsets (mm; S per track, track
        by track) follow the other parameters in ``x``, each with a prior of ``prior_m`` per axis
        (metres; one value, or (K,) one per track: what a track's offset is expected to be, e.g.
        smaller for k4abt's hand joints against a hand detector than for a pose model's keypoints)
        weighed like a bearing of ``noise_deg``. A detector's keypoint is not the Kinect's joint:
        the difference stays with the body (or with the limb), turns with it, and would otherwise
        look like a clock error."""
        frames = np.asarray(frames, dtype=np.float64)
        if frames.ndim == 4:
            frames = frames[:, :, None]
        self.n_sets = frames.shape[2]
        slots = np.full(self.splines.num_tracks, -1, dtype=np.int64)
        slots[np.flatnonzero(offset_tracks)] = np.arange(int(np.sum(offset_tracks)))
        self.n_offsets = int(np.sum(offset_tracks)) * self.n_sets
        self.offset_slot = slots[self.track]
        self.offset_t = np.asarray(t_frames, dtype=np.float64)
        self.offset_frames = np.nan_to_num(frames)
        prior = np.broadcast_to(np.asarray(prior_m, dtype=np.float64), (self.splines.num_tracks,))
        # per mm of offset, one weight per offset parameter (track by track, S frames of 3 axes each)
        self.offset_prior = np.repeat(np.radians(noise_deg) / prior[np.flatnonzero(offset_tracks)] * 1e-3,
                                      3 * self.n_sets)

    def offsets_m(self, x: np.ndarray) -> np.ndarray:
        """The modelled offsets (n,3), metres, each in its frame (track by track, S frames each)."""
        return x[len(x) - 3 * self.n_offsets:].reshape(-1, 3) * 1e-3 if self.n_offsets else np.zeros((0, 3))

    def _reference_points(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Session times (M,) of the observations under ``x``, the trajectories' points there (M,3)
        in the reference frame with the modelled offsets added, and the frames (m,S,3,3) of the
        observations that carry an offset (None without offsets)."""
        tq = self.time_map(x).to_session(self.t_pano)
        p_ref = self.splines.evaluate(self.seg, tq)
        if not self.n_offsets:
            return tq, p_ref, None
        on = self.offset_slot >= 0
        i = np.clip(np.searchsorted(self.offset_t, tq[on]), 0, len(self.offset_t) - 1)
        R_body = self.offset_frames[i, self.track[on]]  # (m,S,3,3)
        offsets = self.offsets_m(x).reshape(-1, self.n_sets, 3)[self.offset_slot[on]]
        p_ref[on] = p_ref[on] + np.einsum("msij,msj->mi", R_body, offsets)
        return tq, p_ref, R_body

    def predicted(self, x: np.ndarray) -> np.ndarray:
        """Unit bearings (M,3) of the interpolated trajectories in the panorama frame."""
        T = self.pose(x)
        p = (self._reference_points(x)[1] - T[:3, 3]) @ T[:3, :3] - self.lens_centre
        return p / np.linalg.norm(p, axis=-1, keepdims=True)

    def jacobian(self, x: np.ndarray, prior_weight: float = 0.0):
        """Derivatives of the fit's residual vector (:meth:`residuals`, then the offsets' prior,
        then ``prior_weight`` times the rate when non-zero) with respect to ``x``: dense (rows, n)
        without offsets, sparse CSR with them (each bearing depends on its own track's offset only).

        The clock columns are exact (the trajectory's velocity from its spline), the offsets' too
        (they move the point along the body frame's axes); the pose columns are forward
        differences of the projection alone (a step of ``FD_STEP`` mrad or mm), the trajectory
        points being evaluated once. A bearing's derivative is ``(I - u u^T) / |p|`` times the
        point's in the panorama frame; weights and whitening are linear."""
        tq, p_ref, R_body = self._reference_points(x)
        T = self.pose(x)
        R = T[:3, :3]
        p = (p_ref - T[:3, 3]) @ R - self.lens_centre
        norm = np.linalg.norm(p, axis=-1, keepdims=True)
        u = p / norm

        def d_bearing(dp, rows=slice(None)):  # (m,3) point derivatives in the panorama frame
            return (dp - u[rows] * np.sum(u[rows] * dp, axis=-1, keepdims=True)) / norm[rows]

        n = len(x) - 3 * self.n_offsets
        J = np.empty((len(self), 3, n))
        v = self.splines.evaluate(self.seg, tq, nu=1) @ R  # velocity, panorama frame, m/s
        J[:, :, 0] = d_bearing(v * ((self.t_pano - self.t_mid) * 1e-6)[:, None])  # per ppm of rate
        J[:, :, 1] = d_bearing(v * 1e-3)  # per ms of offset
        for k in range(2, n):
            step = x.copy()
            step[k] += FD_STEP
            Tk = self.pose(step)
            pk = (p_ref - Tk[:3, 3]) @ Tk[:3, :3] - self.lens_centre
            J[:, :, k] = (pk / np.linalg.norm(pk, axis=-1, keepdims=True) - u) / FD_STEP
        J = self._whiten(J * self.weights[:, None, None]).reshape(3 * len(self), n)
        if not self.n_offsets:
            return np.vstack([J, np.eye(1, n) * prior_weight]) if prior_weight else J
        on = self.offset_slot >= 0
        S = self.n_sets
        D = np.zeros((len(self), 3, 3 * S))
        for f in range(S):
            for a in range(3):  # per mm along frame f's axis a
                D[on, :, 3 * f + a] = d_bearing(R_body[:, f, :, a] @ R * 1e-3, on)
        # A track's predecessors are its own observations, so whitening keeps each row in its slot.
        D = self._whiten(D * self.weights[:, None, None]).reshape(3 * len(self), 3 * S)
        mask, indices, indptr, shape = self._sparsity(n, bool(prior_weight))
        data = np.r_[np.concatenate([J, D], axis=1)[mask], self.offset_prior,
                     [prior_weight] if prior_weight else []]
        return sparse.csr_matrix((data, indices, indptr), shape=shape)

    def _sparsity(self, n: int, rate_row: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
        """The CSR layout of :meth:`jacobian` with offsets: which of each bearing row's n clock and
        pose columns and 3 S offset columns are stored, the column indices and the row pointers."""
        rows = 3 * len(self)
        k = 3 * self.n_offsets
        per = 3 * self.n_sets
        on = np.repeat(self.offset_slot >= 0, 3)
        slot = np.repeat(np.maximum(self.offset_slot, 0), 3)
        cols = np.concatenate([np.broadcast_to(np.arange(n), (rows, n)),
                               n + per * slot[:, None] + np.arange(per)], axis=1)
        mask = np.concatenate([np.ones((rows, n), dtype=bool), np.repeat(on[:, None], per, axis=1)], axis=1)
        indices = np.r_[cols[mask], n + np.arange(k), [0] if rate_row else []].astype(np.int64)
        counts = np.r_[n + per * on, np.ones(k + int(rate_row), dtype=np.int64)]
        indptr = np.r_[0, np.cumsum(counts)].astype(np.int64)
        return mask, indices, indptr, (rows + k + int(rate_row), n + k)

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

    def weigh_tracks(self, x: np.ndarray, min_factor: float = 0.25, min_observations: int = 30) -> np.ndarray:
        """Scale each track's weights by ``min(1, s / s_k)``, clipped below at ``min_factor``: ``s_k``
        the median weighted angle at ``x`` of track k's observations (the weights of
        :meth:`weigh_by_distance`, so each angle is judged against its expected error), ``s`` the
        median over every observation. A track whose residuals are larger than the others' at the
        first fit's solution carries a larger error than assumed (a joint defined differently, a
        slowly drifting joint) and is trusted correspondingly less; no track gains weight. Tracks
        with fewer than ``min_observations`` observations or weight 0 keep their weights. Returns the
        factors (num_tracks,) (1 where unchanged)."""
        factors = np.ones(self.splines.num_tracks)
        a = self.angles_deg(x) * self.weights
        used = self.weights > 0
        if not used.any():
            return factors
        typical = float(np.median(a[used]))
        for k in np.unique(self.track[used]):
            m = used & (self.track == k)
            if m.sum() < min_observations:
                continue
            own = float(np.median(a[m]))
            if own > typical > 0:
                factors[k] = max(typical / own, min_factor)
        self.weights = self.weights * factors[self.track]
        return factors

    def angles_deg(self, x: np.ndarray) -> np.ndarray:
        chord = np.linalg.norm(self.predicted(x) - self.bearings, axis=-1)
        return np.degrees(2 * np.arcsin(np.clip(chord / 2, 0.0, 1.0)))

    def outlying_runs(self, x: np.ndarray, window_s: float, sigmas: float) -> np.ndarray:
        """(M,) bool: the observations of each track's windows of ``window_s`` seconds (panorama
        clock) whose median weighted angle at ``x`` exceeds ``sigmas`` robust standard deviations of
        all the weighted angles (the median angle of a 2-D Gaussian error is 1.177 sigma). Angles are
        scaled by the observations' weights (:meth:`weigh_by_distance`), so a hand near the camera
        is judged against its own expected error; observations of weight 0 stay out of the scale."""
        a = self.angles_deg(x) * self.weights
        used = self.weights > 0
        if not used.any():
            return np.zeros(len(self), dtype=bool)
        sigma = float(np.median(a[used])) / 1.1774
        window = np.floor((self.t_pano - self.t_pano.min()) / window_s).astype(np.int64)
        key = self.track.astype(np.int64) * (int(window.max()) + 1) + window
        order = np.lexsort((a, key))
        ks, av = key[order], a[order]
        starts = np.r_[0, np.flatnonzero(np.diff(ks)) + 1]
        counts = np.diff(np.r_[starts, len(ks)])
        median = 0.5 * (av[starts + (counts - 1) // 2] + av[starts + counts // 2])
        out = np.zeros(len(self), dtype=bool)
        out[order] = np.repeat(median > sigmas * sigma, counts)
        return out

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
              noise_ar_order: int = 0, robust: RobustConfig | None = None) -> tuple[np.ndarray, dict]:
        """Robust least squares from ``x0``; returns the solution and its statistics. A first
        soft-L1 fit with the scale ``2 * noise_deg``; with ``robust.scale_from_data`` (default
        :class:`RobustConfig`) a second fit with ``robust.loss`` (Cauchy by default) whose scale comes
        from that fit's residuals (the detections' real scatter, not the assumed one), which keeps
        mislabelled or misassociated bearings from pulling.

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
        with the same correction; with ``robust.rate_prior_throughout`` in every fit (weighted by the
        previous fit's scatter, the first by ``noise_deg``), else in a last fit only."""
        robust = robust or RobustConfig()
        scale = np.radians(2.0 * noise_deg)
        loss = "soft_l1"
        self.fits = []

        def prior(stats: dict | None) -> float:
            # the rate's measurement in every fit: without it a short session's rate wanders off
            # along a flat valley of the cost (rate against offsets) that the last fit must crawl back
            if not (rate_prior_std_ppm and robust.rate_prior_throughout):
                return 0.0
            sigma = np.radians(noise_deg) if stats is None else stats["sigma"] * np.sqrt(stats["tau"])
            return sigma / rate_prior_std_ppm

        fit = self._fit(x0, scale, prior(None), loss, robust)
        stats = self._stats(fit, noise_deg, None)
        self.track_factors = np.ones(self.splines.num_tracks)
        if robust.weigh_tracks:
            self.track_factors = self.weigh_tracks(fit.x, robust.track_weight_min, robust.track_weight_min_observations)
        if robust.scale_from_data:
            # the loss's scale from the residuals themselves: the median angle of a 2-D Gaussian
            # bearing error is 1.177 sigma per axis
            sigma = np.radians(float(np.median(self.angles_deg(fit.x)))) / 1.1774
            scale = max(robust.scale_sigmas * sigma, np.radians(robust.min_scale_deg))
            loss = robust.loss
            fit = self._fit(fit.x, scale, prior(stats), loss, robust)
            stats = self._stats(fit, noise_deg, None)
        cut = np.zeros(len(self), dtype=bool)
        if robust.cut_outlying_runs:
            cut = self.outlying_runs(fit.x, robust.run_window_s, robust.run_cut_sigmas)
            if cut.any():
                self.weights = np.where(cut, 0.0, self.weights)
                fit = self._fit(fit.x, scale, prior(stats), loss, robust)
                stats = self._stats(fit, noise_deg, None)
        if noise_ar_order > 0:
            self.estimate_whitening(fit.x, noise_ar_order, stats["inlier"])
            # The innovations are smaller than the residuals; the outlier threshold follows.
            scale *= self.start_scale if len(self.ar) else 1.0
            fit = self._fit(fit.x, scale, prior(stats), loss, robust)
            stats = self._stats(fit, noise_deg, None)
        if rate_prior_std_ppm:
            w = stats["sigma"] * np.sqrt(stats["tau"]) / rate_prior_std_ppm
            fit = self._fit(fit.x, scale, w, loss, robust)
            stats = self._stats(fit, noise_deg, rate_prior_std_ppm)
        stats["fits"] = list(self.fits)
        stats["cut_observations"] = int(cut.sum())
        stats["track_weights"] = self.track_factors
        stats["iterations"] = int(sum(f["iterations"] for f in self.fits))
        return fit.x, stats

    def _fit(self, x0: np.ndarray, scale: float, prior_weight: float, loss: str = "soft_l1",
             robust: RobustConfig | None = None):
        """One scipy least-squares fit from ``x0``; with ``robust.bounded_steps`` (the default) it stops
        on :class:`_StepRule`. Appends ``{"iterations", "evaluations", "stopped"}`` to ``self.fits``."""
        robust = robust or RobustConfig()
        def fun(x):
            r = self.residuals(x)
            if self.n_offsets:
                r = np.r_[r, self.offset_prior * x[len(x) - 3 * self.n_offsets:]]
            return np.r_[r, prior_weight * x[0]] if prior_weight else r
        def jac(x):
            return self.jacobian(x, prior_weight)
        options = {}
        rule = None
        if robust.bounded_steps:
            rule = _StepRule(self, x0, robust)
            # every iteration evaluates the residuals at least once; rejected steps add evaluations
            options = {"max_nfev": 2 * robust.max_iterations}
            if _HAS_CALLBACK:
                options["callback"] = rule
        # With offsets the Jacobian is sparse and the trust-region steps are solved iteratively
        # (tight tolerances: the offset and the clock are fine parameters).
        if self.n_offsets:
            fit = least_squares(fun, x0, jac=jac, loss=loss, f_scale=scale, x_scale=1.0, tr_solver="lsmr",
                                tr_options={"atol": 1e-10, "btol": 1e-10}, **options)
        else:
            fit = least_squares(fun, x0, jac=jac, loss=loss, f_scale=scale, x_scale=1.0, **options)
        stopped = {-2: "step", 0: "max_evaluations", 1: "gtol", 2: "ftol", 3: "xtol", 4: "ftol+xtol"}
        self.fits = getattr(self, "fits", [])
        self.fits.append({"iterations": rule.iterations if rule and _HAS_CALLBACK else int(fit.njev or fit.nfev),
                          "evaluations": int(fit.nfev), "stopped": stopped.get(int(fit.status), str(fit.status))})
        return fit

    def _stats(self, fit, noise_deg: float, rate_prior_std_ppm: float | None) -> dict:
        x = fit.x
        ang = self.angles_deg(x)
        inlier = ang < max(3.0 * 1.4826 * np.median(ang), 3 * noise_deg)
        jac = fit.jac.toarray() if sparse.issparse(fit.jac) else fit.jac
        J = jac[:3 * len(self)].reshape(len(self), 3, -1)[inlier].reshape(-1, len(x))
        res = self.residuals(x).reshape(-1, 3)
        r = res[inlier].ravel()
        # Two of the three chord components carry the angular error; the radial one is ~0.
        sigma2 = float(r @ r / max(2 * inlier.sum() - len(x), 1))
        tau = _autocorrelation_time(np.where(inlier[:, None], res, 0.0), self.track, self.t_pano)
        info = J.T @ J / (sigma2 * tau)
        if self.n_offsets:
            k = 3 * self.n_offsets
            info[-k:, -k:] += np.diag(self.offset_prior ** 2) / sigma2
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


class _StepRule:
    """The stopping rule of a bounded fit, a scipy ``least_squares`` callback: stop once two
    successive accepted trust-region steps each change the clock by less than
    ``robust.step_offset_ms`` (the offset, and the rate times half the observations' time span),
    the pose by less than ``robust.step_rotation_deg`` and ``robust.step_translation_mm``, and every
    keypoint offset by less than ``robust.step_translation_mm``: the fit has settled to far below
    what the calibration is measured to, and further steps only creep along a flat valley of the
    cost. Stops after ``robust.max_iterations`` iterations in any case. Rejected trust-region steps
    leave ``x`` as it was and count as iterations, not as small steps."""

    def __init__(self, problem: "BearingProblem", x0: np.ndarray, robust: RobustConfig):
        self.x = np.array(x0, dtype=np.float64)
        n = len(x0) - 3 * problem.n_offsets
        half_span = 0.5 * float(np.ptp(problem.t_pano)) if len(problem) else 0.0
        # tolerance per parameter in its own unit (ppm, ms, mrad, mm, mm)
        tol = np.full(len(x0), robust.step_translation_mm)
        tol[0] = robust.step_offset_ms * 1e-3 / max(half_span, 1e-3) * 1e6
        tol[1] = robust.step_offset_ms
        self.rotation = slice(2, 5) if n >= 8 else slice(0, 0)
        self.rotation_tol = np.radians(robust.step_rotation_deg) * 1e3
        self.tol = tol
        self.n = n
        self.max_iterations = robust.max_iterations
        self.iterations = 0
        self.small_steps = 0

    def small(self, dx: np.ndarray) -> bool:
        """Whether step ``dx`` (parameter units) is below every tolerance."""
        if np.linalg.norm(dx[self.rotation]) >= self.rotation_tol:
            return False
        if self.n >= 8 and np.linalg.norm(dx[5:8]) >= self.tol[5]:
            return False
        if abs(dx[0]) >= self.tol[0] or abs(dx[1]) >= self.tol[1]:
            return False
        offsets = dx[self.n:].reshape(-1, 3)
        return not len(offsets) or float(np.max(np.linalg.norm(offsets, axis=1))) < self.tol[self.n]

    def __call__(self, intermediate_result) -> None:
        self.iterations += 1
        x = np.asarray(intermediate_result.x, dtype=np.float64)
        dx = x - self.x
        if np.any(dx):  # an accepted step (a rejected one leaves x as it was)
            self.small_steps = self.small_steps + 1 if self.small(dx) else 0
            self.x = x.copy()
        if self.small_steps >= 2 or self.iterations >= self.max_iterations:
            raise StopIteration


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
