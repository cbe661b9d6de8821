"""Markerless Kinect-to-360 calibration from people moving in the shared space.

Input: body-tracking joints that the panorama also sees (wrists, hands, heads) as 3D trajectories in
a Kinect's depth camera frame (session clock), and their bearings observed in the panorama (camera
clock). Output: the panorama's pose in the Kinect frame ``T_kinect_pano`` and the time map
``t_session = a * t_pano + b``, solved together.

1. Initialisation from nothing: for each candidate time offset on a grid, correspondences (3D point,
   bearing) are formed and a pose is found by RANSAC over 6-point sets on the sphere (a linear
   solve of ``f x (R X + t) = 0``, which holds for bearings in any direction, behind the camera
   too); the offset whose best pose explains the most bearings within ``inlier_deg`` wins.
2. Refinement: robust non-linear least squares of the angular residuals over rotation, translation,
   offset and rate together (:func:`omnimocap.calibration.timesync.fine_time_map`).
3. Checks: degenerate inputs (no bearings, too few, nobody moving, a poorly constrained result) raise
   :class:`UserError` naming what is missing; a wrong calibration is never returned silently.

Frames: OpenCV camera frames (x right, y down, z forward), metres, seconds; ``T_a_b`` maps frame-b
points into frame a (``geometry/transforms.py``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from omnimocap.geometry.pano_optics import PanoOptics
from omnimocap.calibration.bearing_problem import BearingProblem, flatten_observations, offset_grid
from omnimocap.calibration.config import MarkerlessConfig, RobustConfig
from omnimocap.calibration.timesync import SyncResult, fine_time_map
from omnimocap.calibration.track_splines import TrackSplines, track_motion_m
from omnimocap.capture.rig import TimeMap
from omnimocap.geometry.transforms import invert_pose, make_pose
from omnimocap.errors import UserError


@dataclass
class MarkerlessResult:
    """``T_kinect_pano`` (4x4), the pano time map, the refinement's residuals and what RANSAC found."""

    T_kinect_pano: np.ndarray
    time_map: TimeMap
    sync: SyncResult
    ransac_inlier_fraction: float | None
    ransac_offset_s: float | None
    height: dict | None = None
    """What :func:`height_from_tracks` did (None: not run): the shift along up (mm), its 1-sigma (mm), the
    bearings it used and whether it was applied."""

    def to_json(self) -> dict:
        out = {**self.sync.to_json(), "ransac_inlier_fraction": self.ransac_inlier_fraction,
               "ransac_offset_s": self.ransac_offset_s}
        if self.height is not None:
            out["height_from_hands"] = self.height
        return out


def calibrate_markerless(t_pano: np.ndarray, bearings: np.ndarray, t_kinect: np.ndarray, points_kinect: np.ndarray,
                         *, traj_sigma: np.ndarray | None = None, init_time: TimeMap | None = None,
                         init_T_kinect_pano: np.ndarray | None = None,
                         search_s: float = 0.5, step_s: float = 1 / 30, ransac_iterations: int = 300,
                         inlier_deg: float = 2.0, noise_deg: float = 0.3, rate_prior_std_ppm: float | None = None,
                         max_rotation_std_deg: float = 0.5, max_translation_std_mm: float = 25.0,
                         noise_ar_order: int = 2, seed: int = 0,
                         body_frames: tuple[np.ndarray, np.ndarray] | None = None,
                         offset_tracks: np.ndarray | None = None, offset_prior_m: float | np.ndarray = 0.015,
                         limits: MarkerlessConfig | None = None, robust: RobustConfig | None = None,
                         optics: PanoOptics | None = None) -> MarkerlessResult:
    """Solve ``T_kinect_pano`` and the pano time map from motion.

    ``t_pano`` (F,) camera-clock frame times; ``bearings`` (F,K,3) unit directions in the panorama
    frame of K tracked points (NaN where unseen); ``t_kinect`` (N,) session-clock times and
    ``points_kinect`` (N,K,3) the same points in the Kinect depth frame (metres, NaN where untracked);
    ``traj_sigma`` (N,K) their relative noise (e.g. ``KinectTracks.sigma``; NaN or inf = untracked;
    default all 1), which weighs the refinement, and ``noise_ar_order`` its noise model (see
    :func:`omnimocap.calibration.timesync.fine_time_map`). ``offset_tracks``, ``body_frames`` and
    ``offset_prior_m``: per-track constant offsets in the body's frame for keypoints whose definition
    differs from the Kinect's joints (body keypoints), solved with the pose and clock in the
    refinement (see ``fine_time_map``).
    ``init_time`` (default: identity clock) must be within ``search_s`` of the true offset; its rate
    is the starting rate, a measurement of ``rate_prior_std_ppm`` (ppm) when given (see
    :func:`omnimocap.calibration.timesync.rate_std_ppm`). With ``init_T_kinect_pano`` the RANSAC stage is skipped (refinement only).
    The inputs are refused (UserError) below ``limits.min_frames`` panorama frames or
    ``limits.min_observations`` bearings inside the trajectories, or with less than
    ``limits.min_motion_m`` of motion (default :class:`MarkerlessConfig`); the result is refused when
    its 1-sigma rotation or translation uncertainty exceeds ``max_rotation_std_deg`` /
    ``max_translation_std_mm``. ``robust``: the refinement's robust loss (default :class:`RobustConfig`).
    ``optics``: the 360 camera's lenses and rolling shutter (see :class:`BearingProblem`; default ideal).
    """
    init_time = init_time or TimeMap()
    limits = limits or MarkerlessConfig()
    tp, track, f = flatten_observations(t_pano, bearings)
    if len(tp) == 0:
        raise UserError("no bearings of the tracked joints were observed in the panorama; markerless "
                        "calibration needs people (their hands) visible to the 360 camera")
    robust = robust or RobustConfig()
    splines = TrackSplines(t_kinect, points_kinect, sigma=traj_sigma, smooth_hz=3.0,
                           max_speed_m_s=robust.jump_speed_m_s if robust.split_jumps else None)
    problem = BearingProblem(splines, tp, track, f, init_time, np.eye(4), search_s, optics)
    frames = len(np.unique(problem.t_frame))
    if len(problem) < limits.min_observations or frames < limits.min_frames:
        raise UserError(f"too few frames for markerless calibration: {frames} panorama frames ({len(problem)} "
                        f"bearings) overlap the Kinect joint trajectories in time, need {limits.min_frames} frames "
                        f"and {limits.min_observations} bearings",
                        fix="record at least 10-30 s with people moving in view of both sensors")
    motion = track_motion_m(splines, problem.seg, problem.track, init_time.to_session(problem.t_pano))
    if motion < limits.min_motion_m:
        raise UserError(f"the people stand still (tracked joints move {motion * 1e3:.0f} mm RMS, need "
                        f"{limits.min_motion_m * 1e3:.0f} mm); pose and time offset are unobservable",
                        fix="record people walking and moving their arms across the shared space")

    ransac_fraction = ransac_offset = None
    if init_T_kinect_pano is None:
        T_pano_kinect, ransac_offset, ransac_fraction = _ransac_over_offsets(
            problem, search_s, step_s, ransac_iterations, np.radians(inlier_deg), np.random.default_rng(seed))
        if ransac_fraction < 0.3:
            raise UserError(f"no consistent pose found (best RANSAC hypothesis explains {ransac_fraction:.0%} "
                            "of the bearings); the panorama detections do not match the Kinect joints",
                            fix="check that the Kinect and the 360 camera see the same people at the same time")
        init_T_kinect_pano = invert_pose(T_pano_kinect)
        start = TimeMap(init_time.a, init_time.b + ransac_offset)
        refine_search = step_s
    else:
        start, refine_search = init_time, search_s
    sync = fine_time_map(t_pano, bearings, t_kinect, points_kinect, init_T_kinect_pano, start,
                         traj_sigma=traj_sigma, refine_extrinsics=True, search_s=refine_search,
                         noise_deg=noise_deg, rate_prior_std_ppm=rate_prior_std_ppm, noise_ar_order=noise_ar_order,
                         min_observations=limits.min_observations, min_frames=limits.min_frames,
                         min_motion_m=limits.min_motion_m, body_frames=body_frames, offset_tracks=offset_tracks,
                         offset_prior_m=offset_prior_m, robust=robust, optics=optics)
    if sync.n_inliers < 0.5 * sync.n_observations:
        raise UserError(f"only {sync.n_inliers} of {sync.n_observations} bearings agree with the solved pose; "
                        "refusing the calibration", fix="check the detections and the time overlap")
    if not (sync.rotation_std_deg <= max_rotation_std_deg and sync.translation_std_mm <= max_translation_std_mm):
        raise UserError(f"the pose is poorly constrained (1-sigma {sync.rotation_std_deg:.2f} deg, "
                        f"{sync.translation_std_mm:.0f} mm): the tracked joints cover too little of the space",
                        fix="record people moving at different distances and directions around the 360 camera")
    return MarkerlessResult(sync.T_ref_pano, sync.time_map, sync, ransac_fraction, ransac_offset)


def _ransac_over_offsets(problem: BearingProblem, search_s: float, step_s: float, iterations: int,
                         threshold_rad: float, rng: np.random.Generator,
                         max_points: int = 1500) -> tuple[np.ndarray, float, float]:
    """Best (T_pano_kinect, offset, inlier fraction) over a grid of time offsets."""
    sel = np.sort(rng.choice(len(problem), size=min(max_points, len(problem)), replace=False))
    t = problem.time_map(np.zeros(2)).to_session(problem.t_pano[sel])
    seg, f = problem.seg[sel], problem.bearings[sel]
    samples = np.stack([rng.choice(len(sel), size=6, replace=False) for _ in range(iterations)])
    best = (None, 0.0, -1.0)
    for d in offset_grid(search_s, step_s):
        X = problem.splines.evaluate(seg, t + d)
        T, frac = ransac_bearing_pose(X, f, samples, threshold_rad)
        if frac > best[2]:
            best = (T, float(d), frac)
    return best


def ransac_bearing_pose(X: np.ndarray, f: np.ndarray, samples: np.ndarray,
                        threshold_rad: float) -> tuple[np.ndarray, float]:
    """RANSAC absolute pose of a central camera from 3D points X (M,3) and unit bearings f (M,3) in
    any direction. ``samples`` (S,6) index the 6-point sets tried. Returns ``T_cam_points`` (4x4) of
    the best hypothesis (re-solved on its inliers) and its inlier fraction."""
    mu = X.mean(axis=0)
    scale = np.sqrt(np.mean(np.sum((X - mu) ** 2, axis=-1))) or 1.0
    Xn = (X - mu) / scale
    R, t, ok = dlt_pose(Xn[samples], f[samples])
    cos_thr = np.cos(threshold_rad)
    p = np.einsum("sij,mj->smi", R, Xn) + t[:, None]
    cosang = np.sum(p * f, axis=-1) / np.linalg.norm(p, axis=-1)
    counts = np.where(ok, np.sum(cosang > cos_thr, axis=1), -1)
    i = int(np.argmax(counts))
    inl = cosang[i] > cos_thr
    if inl.sum() >= 6:
        R2, t2, ok2 = dlt_pose(Xn[inl][None], f[inl][None])
        if ok2[0]:
            p2 = Xn @ R2[0].T + t2[0]
            inl2 = np.sum(p2 * f, axis=-1) / np.linalg.norm(p2, axis=-1) > cos_thr
            if inl2.sum() >= inl.sum():
                R, t, i, inl = R2, t2, 0, inl2
    # undo the normalisation: R (X - mu)/s + t, scaled by s, is R X + (s t - R mu)
    T = make_pose(R[i], scale * t[i] - R[i] @ mu)
    return T, float(inl.mean())


def dlt_pose(X: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear pose from batches of points X (S,n,3) and bearings f (S,n,3), n >= 6: the null vector
    of ``[f]x [R | t] [X; 1] = 0``, projected onto a rotation with the scale and sign fixed so that
    the points lie along (not against) their bearings. Returns R (S,3,3), t (S,3), ok (S,)."""
    S, n, _ = X.shape
    Xh = np.concatenate([X, np.ones((S, n, 1))], axis=-1)
    fx = np.zeros((S, n, 3, 3))
    fx[..., 0, 1], fx[..., 0, 2], fx[..., 1, 2] = -f[..., 2], f[..., 1], -f[..., 0]
    fx[..., 1, 0], fx[..., 2, 0], fx[..., 2, 1] = f[..., 2], -f[..., 1], f[..., 0]
    A = np.einsum("snir,snc->snirc", fx, Xh).reshape(S, 3 * n, 12)
    P = np.linalg.svd(A, full_matrices=False)[2][:, -1].reshape(S, 3, 4)
    M, tt = P[:, :, :3], P[:, :, 3]
    flip = np.linalg.det(M) < 0
    M = np.where(flip[:, None, None], -M, M)
    tt = np.where(flip[:, None], -tt, tt)
    U, sv, Vt = np.linalg.svd(M)
    R = U @ Vt
    lam = sv.mean(axis=1)
    ok = lam > 1e-12
    t = tt / np.where(ok, lam, 1.0)[:, None]
    front = np.einsum("sij,snj->sni", R, X) + t[:, None]
    ok &= np.mean(np.sum(front * f, axis=-1) > 0, axis=1) > 0.5
    return R, t, ok


def height_from_tracks(result: MarkerlessResult, t_pano: np.ndarray, bearings: np.ndarray, t_kinect: np.ndarray,
                       points_kinect: np.ndarray, up_kinect: np.ndarray, *, traj_sigma: np.ndarray | None = None,
                       height_std_mm: float | None = None, track_offset_mm: float = 0.0,
                       noise_deg: float = 0.3, point_noise_m: float = 0.01, margin_s: float = 0.05,
                       min_observations: int = 150, min_track_observations: int = 30, max_shift_mm: float = 50.0,
                       robust: RobustConfig | None = None, optics: PanoOptics | None = None) -> MarkerlessResult:
    """``result`` with the 360 camera moved along ``up_kinect`` (unit, the reference Kinect's frame: the
    world's up, against gravity) to where the bearings of tracks that carry no offset (the hands:
    ``bearings`` (F,K,3) at camera-clock times ``t_pano`` (F,), Kinect points ``points_kinect`` (N,K,3),
    metres, at session times ``t_kinect`` (N,), relative noise ``traj_sigma`` (N,K)) put it; rotation,
    the rest of the position and the clock stay ``result``'s.

    Body keypoints each carry an offset from their Kinect joint solved in the body's frame, which
    turns only about the vertical as people walk and turn: a height shared by every keypoint's offset
    and the camera's height then explain the bearings equally well, and the camera's height follows
    the mean vertical definition offset of the keypoints (the pose model's against k4abt's: the
    offsets' prior alone decides it: its error is their mean vertical offset, of 1-sigma
    ``height_std_mm``, e.g. the offsets' prior over the square root of the keypoints' number). The
    hands' bearings carry no offset of their own, so they measure that one direction, with an error
    of their own: each hand track's vertical offset from its Kinect point, ``track_offset_mm`` per
    track (millimetres, 1-sigma; the hand centre's definition against the detector's box), over the
    square root of the number of tracks with at least ``min_track_observations`` bearings. The two
    measurements are combined by their variances (the hands' fit's own uncertainty added to
    theirs); ``height_std_mm`` None takes the hands' height whole.

    The hands' fit is a one-parameter robust least squares (loss and scale as ``robust``, default
    :class:`RobustConfig`, on the scatter of the angles), each bearing weighed by its expected error
    at its distance (:meth:`BearingProblem.weigh_by_distance` with ``noise_deg`` and
    ``point_noise_m``). The shift is kept unless fewer than ``min_observations`` bearings fall within
    the trajectories or it exceeds ``max_shift_mm`` (millimetres); ``result.height`` says which.
    Frames and units as :func:`calibrate_markerless`."""
    robust = robust or RobustConfig()
    up = np.asarray(up_kinect, dtype=np.float64)
    up = up / np.linalg.norm(up)
    tp, track, f = flatten_observations(t_pano, bearings)
    T = result.T_kinect_pano
    info = {"shift_mm": 0.0, "hands_shift_mm": None, "hands_std_mm": None, "hands_weight": None, "observations": 0,
            "applied": False}
    if len(tp) == 0:
        return dataclasses.replace(result, height=info)
    splines = TrackSplines(t_kinect, points_kinect, sigma=traj_sigma, smooth_hz=3.0,
                           max_speed_m_s=robust.jump_speed_m_s if robust.split_jumps else None)
    problem = BearingProblem(splines, tp, track, f, result.time_map, T, margin_s, optics)
    info["observations"] = len(problem)
    if len(problem) < min_observations:
        return dataclasses.replace(result, height=info)
    direction = T[:3, :3].T @ up  # up in the panorama frame: the pose's translation parameters are there (mm)

    def x_of(h: float) -> np.ndarray:
        x = np.zeros(8)
        x[5:8] = direction * h
        return x

    problem.weigh_by_distance(x_of(0.0), noise_deg, point_noise_m)
    sigma = np.radians(float(np.median(problem.angles_deg(x_of(0.0))))) / 1.1774
    scale = max(robust.scale_sigmas * sigma, np.radians(robust.min_scale_deg))
    fit = least_squares(lambda h: problem.residuals(x_of(h[0])), [0.0], loss=robust.loss, f_scale=scale)
    h = float(fit.x[0])
    J = fit.jac.reshape(-1)
    inlier = np.repeat(problem.angles_deg(x_of(h)) < np.degrees(scale), 3)
    r = fit.fun[inlier]
    std = float(np.sqrt((r @ r) / max(inlier.sum() // 3 * 2 - 1, 1) / max(J[inlier] @ J[inlier], 1e-300)))
    tracks = int(np.sum(np.bincount(problem.track, minlength=splines.num_tracks) >= min_track_observations))
    hands_var = track_offset_mm ** 2 / max(tracks, 1) + std ** 2
    weight = 1.0 if height_std_mm is None else height_std_mm ** 2 / (height_std_mm ** 2 + hands_var)
    info.update(hands_shift_mm=h, hands_std_mm=float(np.sqrt(hands_var)), hands_weight=float(weight))
    if not (np.isfinite(h) and abs(h) <= max_shift_mm):
        return dataclasses.replace(result, height=info)
    h *= weight
    info["shift_mm"] = h
    info["applied"] = True
    T_new = T.copy()
    T_new[:3, 3] = T[:3, 3] + up * h * 1e-3
    sync = dataclasses.replace(result.sync, T_ref_pano=T_new)
    return dataclasses.replace(result, T_kinect_pano=T_new, sync=sync, height=info)
