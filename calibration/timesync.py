"""The 360 camera's time map from motion: ``t_session = a * t_pano + b`` from people moving in view.

Points that move in the shared space (hands, wrists), known on the session clock from the Kinects
(in some reference frame, usually the world) and seen as bearings in the panorama on the camera
clock. The map (and optionally the panorama's pose) is the one under which the bearings of the
Kinect trajectories, interpolated (cubic, sub-frame) at ``a * t_pano + b``, agree best with the
observed bearings, with a robust loss on the angular residuals, each weighed by its expected noise
(bearing noise, and the trajectory's noise at its distance) and whitened along its track (the
tracker's noise drifts slowly); see ``calibration/bearing_problem.py``. The rate is estimated with
the offset, so clock drift over long sessions is absorbed. It starts from the host-arrival map
(``calibration/coarse_sync.py``).

Units: seconds and metres; bearings are unit vectors in the panorama's camera frame (OpenCV axes,
see ``geometry/cameras.py``). Poses follow ``geometry/transforms.py``: ``T_ref_pano`` maps
panorama-frame points into the reference frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


from omnimocap.geometry.pano_optics import PanoOptics
from omnimocap.calibration.bearing_problem import BearingProblem, flatten_observations
from omnimocap.calibration.config import RobustConfig
from omnimocap.calibration.track_splines import TrackSplines, track_motion_m
from omnimocap.capture.rig import TimeMap
from omnimocap.errors import UserError


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
    """(n,3) the modelled tracks' offsets, millimetres, each in its frame (track by track, one per frame that
    ``body_frames`` gives a track; None when none is modelled)."""
    iterations: int = 0
    """Trust-region iterations of the solve, all its fits together."""
    fits: list | None = None
    """Each fit of the solve: its iterations, residual evaluations and why it stopped."""
    track_weights: np.ndarray | None = None
    """(K,) the factor each track's weights were scaled by after the first fit (1: unchanged; see
    ``RobustConfig.weigh_tracks``)."""
    cut_observations: int = 0
    """Bearings dropped with their track's window of outlying residuals (see ``RobustConfig.cut_outlying_runs``)."""

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
            "iterations": self.iterations,
            "fits": self.fits,
            "cut_observations": self.cut_observations,
            "track_weights": None if self.track_weights is None else [round(float(w), 3) for w in self.track_weights],
        }


def fine_time_map(t_pano: np.ndarray, bearings: np.ndarray, t_traj: np.ndarray, traj: np.ndarray,
                  T_ref_pano: np.ndarray, init: TimeMap, *, traj_sigma: np.ndarray | None = None,
                  refine_extrinsics: bool = False, rate_prior_std_ppm: float | None = None,
                  search_s: float = 0.25, noise_deg: float = 0.3, smooth_hz: float | None = 3.0,
                  point_noise_m: float = 0.01, noise_ar_order: int = 2, window_s: float = 60.0,
                  min_observations: int = 100, min_frames: int = 60, min_motion_m: float = 0.03,
                  body_frames: tuple[np.ndarray, np.ndarray] | None = None, offset_tracks: np.ndarray | None = None,
                  offset_prior_m: float | np.ndarray = 0.015, robust: RobustConfig | None = None,
                  optics: PanoOptics | None = None) -> SyncResult:
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

    With ``offset_tracks`` (K,) bool and ``body_frames`` = (times (N,), rotations (N,K,3,3), or
    (N,K,S,3,3) for S frames per track) (see :func:`body_frames`), those tracks get a constant offset
    in each of those frames (the body's, the limb's), solved jointly
    (prior ``offset_prior_m`` per axis, metres, or (K,) one per track; :meth:`BearingProblem.set_offsets`): for keypoints of a
    detector whose definition differs from the Kinect's joints (body keypoints; see
    :attr:`SyncResult.offsets_mm`). ``robust`` sets the robust loss (default :class:`RobustConfig`);
    ``optics`` the 360 camera's lenses and rolling shutter (see :class:`BearingProblem`; default ideal).

    Raises :class:`UserError` when fewer than ``min_frames`` frames or ``min_observations`` bearings
    meet the trajectories, or when nothing moves (less than ``min_motion_m`` RMS).
    """
    tp, track, b = flatten_observations(t_pano, bearings)
    if len(tp) == 0:
        raise UserError("no hand bearings were observed in the panorama; the time map needs people moving "
                        "their hands in view of the 360 camera")
    robust = robust or RobustConfig()
    splines = TrackSplines(t_traj, traj, sigma=traj_sigma, smooth_hz=smooth_hz,
                           max_speed_m_s=robust.jump_speed_m_s if robust.split_jumps else None)
    problem = BearingProblem(splines, tp, track, b, init, T_ref_pano, search_s, optics)
    frames = len(np.unique(problem.t_frame))
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
    x, stats = problem.solve(x, noise_deg, rate_prior_std_ppm, noise_ar_order, robust)
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
        iterations=stats["iterations"], fits=stats["fits"], cut_observations=stats["cut_observations"],
        track_weights=stats["track_weights"],
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
    sub.t_frame, sub.lens_centre = problem.t_frame[mask], problem.lens_centre[mask]
    sub.weights = problem.weights[mask]
    sub.ar = np.zeros(0)
    return sub
