"""The world frame from the reference Kinect: y up, floor at y = 0, metres.

Up comes from the Kinect's accelerometer (at rest it measures the specific force, which points
away from the ground: +1 g up) rotated from the IMU axes into the depth camera frame, or from the
floor plane fitted to a depth point cloud. The world's z axis is the depth camera's viewing direction
projected onto the floor, and x = y cross z (so x points to the camera's left); the world origin
lies on the floor straight below the depth camera. With gravity and a depth view of the floor, the
floor fixes only the height: the plane is fitted with gravity as its orientation hint and the depth
camera's distance to it, measured along gravity, is the height.

Every other Kinect is placed from the skeletons it shares with the reference
(:func:`align_kinect_skeletons`): a rigid alignment of the bodies' midline joints (which a left/right
labelling error cannot move) over time gives the first estimate and picks which bodies are the same
person, then :func:`refine_kinect_extrinsic` refines it on all
joints both devices see confidently.
"""

from __future__ import annotations

import numpy as np

from omnimocap.geometry.cameras import PinholeCamera
from omnimocap.geometry.gravity import ImuGravity, gravity_from_accelerometer
from omnimocap.geometry.transforms import axis_angle_to_matrix, make_pose, rigid_align, rotation_angle, transform_points
from omnimocap.data.skeletons import KINECT_CONFIDENCE_MEDIUM
from omnimocap.errors import UserError
from omnimocap.capture.skeleton_fusion import MIDLINE, resolve_swaps

# Frames in which both bodies show all midline joints confidently, before two bodies can be aligned.
MIN_SHARED_FRAMES = 30
# A pair of bodies is one person when their midline joints lie this close after the alignment (metres).
SAME_PERSON_M = 0.1


def _still_gravity(acc_imu: np.ndarray, R_depth_imu: np.ndarray) -> ImuGravity:
    """:func:`omnimocap.geometry.gravity.gravity_from_accelerometer`, refused in one line where there
    are no samples or their mean is not about 1 g (the Kinect moved)."""
    acc = np.asarray(acc_imu, dtype=np.float64).reshape(-1, 3)
    if len(acc) == 0:
        raise UserError("the reference Kinect recorded no accelerometer samples; gravity is unknown",
                        fix="record with the IMU enabled, or use the floor plane")
    gravity = gravity_from_accelerometer(acc, R_depth_imu)
    if not 7.0 < gravity.magnitude < 12.5:
        raise UserError(f"the accelerometer mean is {gravity.magnitude:.1f} m/s^2, not about 9.8: the Kinect moved "
                        "during the recording", fix="keep the reference Kinect still, or use the floor plane")
    return gravity


def up_from_accelerometer(acc_imu: np.ndarray, R_depth_imu: np.ndarray) -> np.ndarray:
    """Unit up direction (3,) in the depth camera frame from accelerometer samples (N,3) m/s^2 in the
    IMU frame (their mean, so the device must stand still) and the IMU-to-depth rotation."""
    return _still_gravity(acc_imu, R_depth_imu).up_depth


def world_from_up(up_depth: np.ndarray, height_m: float) -> np.ndarray:
    """T_world_kinect (4x4) from the up direction in the depth frame and the depth camera's height
    above the floor (metres)."""
    y = np.asarray(up_depth, dtype=np.float64)
    y = y / np.linalg.norm(y)
    z = np.array([0.0, 0.0, 1.0]) - y[2] * y
    if np.linalg.norm(z) < 1e-6:
        raise UserError("the reference Kinect looks straight up or down; the world's forward is undefined")
    z /= np.linalg.norm(z)
    x = np.cross(y, z)
    R_world_depth = np.stack([x, y, z])  # rows: world axes in depth coordinates
    return make_pose(R_world_depth, np.array([0.0, height_m, 0.0]))


def points_from_depth(depth_mm: np.ndarray, camera: PinholeCamera, stride: int = 4) -> np.ndarray:
    """Points (N,3) in the depth camera frame, metres, from a depth image in millimetres (the Kinect's
    value is the z coordinate), every ``stride``-th pixel, zeros skipped."""
    d = np.asarray(depth_mm)[::stride, ::stride].astype(np.float64) * 1e-3
    rows, cols = np.mgrid[0:depth_mm.shape[0]:stride, 0:depth_mm.shape[1]:stride]
    ok = d > 0
    rays = camera.unproject(np.stack([cols[ok], rows[ok]], -1).astype(np.float64))
    return rays / rays[:, 2:] * d[ok][:, None]


def fit_floor(points: np.ndarray, *, up_hint: np.ndarray = np.array([0.0, -1.0, 0.0]), max_tilt_deg: float = 35.0,
              threshold_m: float = 0.015, iterations: int = 500, seed: int = 0) -> tuple[np.ndarray, float, float]:
    """Floor plane ``n . p + d = 0`` (n unit, pointing up, towards the camera) fitted by RANSAC to
    points (N,3) in the depth frame. Only planes within ``max_tilt_deg`` of ``up_hint`` count (walls
    and tables are rejected by that and by being above other points); among them the one with the
    most inliers, then refined by least squares on its inliers. Returns (n, d, inlier fraction)."""
    p = np.asarray(points, dtype=np.float64)
    p = p[np.all(np.isfinite(p), axis=1)]
    if len(p) < 100:
        raise UserError(f"only {len(p)} depth points; the floor cannot be fitted",
                        fix="point the reference Kinect so it sees the floor")
    rng = np.random.default_rng(seed)
    hint = np.asarray(up_hint, dtype=np.float64) / np.linalg.norm(up_hint)
    tri = p[rng.integers(0, len(p), (iterations, 3))]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(n, axis=1)
    good = norm > 1e-9
    n = n[good] / norm[good, None]
    n *= np.sign(n @ hint)[:, None]
    d = -np.einsum("ij,ij->i", n, tri[good, 0])
    good = n @ hint > np.cos(np.radians(max_tilt_deg))
    n, d = n[good], d[good]
    if len(n) == 0:
        raise UserError("no plane near the expected floor orientation", fix="point the reference Kinect so it sees the floor")
    dist = p @ n.T + d  # (N, H) signed heights above each plane
    count = (np.abs(dist) < threshold_m).sum(axis=0)
    # the floor has (almost) nothing below it
    below = (dist < -5 * threshold_m).mean(axis=0)
    score = np.where(below < 0.02, count, 0)
    best = int(np.argmax(score))
    if score[best] == 0:
        raise UserError("no plane with the scene above it was found; the floor is not in view")
    inl = np.abs(dist[:, best]) < threshold_m
    q = p[inl]
    c = q.mean(axis=0)
    normal = np.linalg.svd(q - c, full_matrices=False)[2][-1]
    normal *= np.sign(normal @ n[best])
    return normal, float(-normal @ c), float(inl.mean())


def world_from_floor(points: np.ndarray, up_hint: np.ndarray | None = None, **kw) -> np.ndarray:
    """T_world_kinect with y along the floor normal and y = 0 on the floor."""
    n, d, _ = fit_floor(points, **({"up_hint": up_hint} if up_hint is not None else {}), **kw)
    return world_from_up(n, d)  # the camera centre lies d above the plane n . p + d = 0


def world_from_gravity(acc_imu: np.ndarray, R_depth_imu: np.ndarray, *, height_m: float | None = None,
                       floor_points: np.ndarray | None = None) -> np.ndarray:
    """T_world_kinect with y up from gravity; the floor height from ``height_m`` or, when given, from
    the floor plane fitted to ``floor_points`` with gravity as its orientation hint (its normal is
    then replaced by gravity's direction, only its distance is used)."""
    up = up_from_accelerometer(acc_imu, R_depth_imu)
    if floor_points is not None:
        height_m, _ = floor_height(floor_points, up)
    if height_m is None:
        raise UserError("the floor height is unknown", fix="give the Kinect's height or a depth frame showing the floor")
    return world_from_up(up, height_m)


def floor_height(points: np.ndarray, up: np.ndarray, threshold_m: float = 0.015) -> tuple[float, dict]:
    """Height (metres) of the depth camera above the floor fitted to ``points`` (N,3, depth frame),
    measured along the unit ``up`` (depth frame), and the fit's diagnostics: inlier fraction, RMS
    distance of the inliers from the plane (mm) and the angle between its normal and ``up`` (deg)."""
    n, d, frac = fit_floor(points, up_hint=up, threshold_m=threshold_m)
    p = np.asarray(points, dtype=np.float64)
    dist = p @ n + d
    inl = np.abs(dist) < threshold_m
    return d / max(float(n @ up), 1e-6), {
        "floor_inlier_fraction": frac, "floor_rms_mm": float(np.sqrt(np.mean(dist[inl] ** 2)) * 1e3),
        "floor_tilt_to_gravity_deg": float(np.degrees(np.arccos(np.clip(n @ up, -1.0, 1.0))))}


def reference_world_pose(acc_imu: np.ndarray, R_depth_imu: np.ndarray, floor_points: np.ndarray) -> tuple[np.ndarray, dict]:
    """T_world_kinect (4x4) of the reference Kinect from its still accelerometer (N,3, m/s^2, IMU
    axes), the IMU-to-depth rotation and depth points (M,3, metres, depth frame) that show the floor
    (see :func:`world_from_gravity`), with the residuals: the accelerometer's sample count, mean
    magnitude (m/s^2) and the standard error of the up direction (deg), the height (m) and the
    floor fit's diagnostics (:func:`floor_height`)."""
    acc = np.asarray(acc_imu, dtype=np.float64).reshape(-1, 3)
    gravity = _still_gravity(acc, R_depth_imu)
    up = gravity.up_depth
    height, floor_info = floor_height(floor_points, up)
    g = gravity.acc_mean
    # spread of the samples across the mean direction, as an angle, over sqrt(N)
    across = acc - np.outer(acc @ g / (g @ g), g)
    up_sem = np.degrees(np.sqrt(np.mean(np.sum(across ** 2, axis=1)) / len(acc)) / np.linalg.norm(g))
    return world_from_up(up, height), {
        "accelerometer_samples": gravity.samples, "accelerometer_mean_ms2": gravity.magnitude,
        "up_std_deg": float(up_sem), "height_m": float(height), **floor_info}


def align_kinect_skeletons(ref_bodies: list[tuple[np.ndarray, np.ndarray]],
                           other_bodies: list[tuple[np.ndarray, np.ndarray]],
                           T_world_ref: np.ndarray, up_other: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """T_world_other (4x4) of a Kinect from the bodies it shares with the reference Kinect.

    Each body is (joints (T,32,3) metres in its own Kinect's depth frame, confidences (T,32) k4abt
    levels), all on the same T session times (NaN where missing). The pair of bodies whose midline
    joints align best (rigidly, over frames where both see them at MEDIUM or better) sets the first
    estimate; every pair within :data:`SAME_PERSON_M` after it is the same person, and all of them
    together are refined by :func:`refine_kinect_extrinsic`. With ``up_other`` (the unit up direction
    in the other depth frame, from its own accelerometer, far more precise than the skeletons about
    tilt) the result is then turned, about the centroid of the shared joints so that the bodies stay
    aligned, by the smallest rotation that gives it that up. Returns the pose and the residuals
    {people, init_rms_mm, rms_mm, used, correction_deg, correction_mm[, tilt_correction_deg]}.
    Raises :class:`UserError` when no body is seen by both."""
    best = None
    for a, (ja, ca) in enumerate(ref_bodies):
        for b, (jb, cb) in enumerate(other_bodies):
            src, dst = _shared_midline(jb, cb, ja, ca)
            if len(src) < MIN_SHARED_FRAMES * len(MIDLINE):
                continue
            R, t = rigid_align(src, dst)
            rms = float(np.sqrt(np.mean(np.sum((src @ R.T + t - dst) ** 2, axis=1))))
            if best is None or rms < best[0]:
                best = (rms, make_pose(R, t))
    if best is None:
        raise UserError(f"no person is seen by this Kinect and the reference Kinect in {MIN_SHARED_FRAMES} common "
                        "frames; its pose cannot be found from skeletons",
                        fix="record a person moving where both Kinects see them")
    init_rms, T_ref_other = best
    pairs = []
    for ja, ca in ref_bodies:
        for jb, cb in other_bodies:
            src, dst = _shared_midline(jb, cb, ja, ca)
            if len(src) and np.median(np.linalg.norm(transform_points(T_ref_other, src) - dst, axis=1)) < SAME_PERSON_M:
                pairs.append(((ja, ca), (jb, cb)))
    if not pairs:
        raise UserError(f"the skeletons this Kinect shares with the reference Kinect differ by {init_rms * 1e3:.0f} mm "
                        "RMS even at their best alignment; they are not the same people",
                        fix="record a person moving where both Kinects see them")
    T_world_other = T_world_ref @ T_ref_other
    ref_world = np.concatenate([transform_points(T_world_ref, ja) for (ja, _), _ in pairs])
    other_world = np.concatenate([transform_points(T_world_other, jb) for _, (jb, _) in pairs])
    dT, info = refine_kinect_extrinsic(ref_world, np.concatenate([ca for (_, ca), _ in pairs]), other_world,
                                       np.concatenate([cb for _, (_, cb) in pairs]))
    T_world_other = dT @ T_world_other
    out = {"people": len(pairs), "init_rms_mm": init_rms * 1e3, "rms_mm": info["rms_mm"], "used": info["used"],
           "correction_deg": info["rotation_deg"], "correction_mm": info["translation_mm"]}
    if up_other is not None:
        R = T_world_other[:3, :3]
        u_imu = np.asarray(up_other, dtype=np.float64) / np.linalg.norm(up_other)
        u_est = R.T @ np.array([0.0, 1.0, 0.0])
        axis = np.cross(u_imu, u_est)
        angle = np.arctan2(np.linalg.norm(axis), u_imu @ u_est)
        Q = R @ axis_angle_to_matrix(axis / max(np.linalg.norm(axis), 1e-12) * angle) @ R.T  # in world axes
        pivot = np.nanmean(ref_world.reshape(-1, 3), axis=0)
        T_world_other = make_pose(Q, pivot - Q @ pivot) @ T_world_other
        out["tilt_correction_deg"] = float(np.degrees(angle))
    return T_world_other, out


def _shared_midline(j_src: np.ndarray, c_src: np.ndarray, j_dst: np.ndarray, c_dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Midline joints (N,3) of two bodies in the frames where both see all of them confidently."""
    ok = np.all(np.isfinite(j_src[:, MIDLINE, 0]) & np.isfinite(j_dst[:, MIDLINE, 0])
                & (c_src[:, MIDLINE] >= KINECT_CONFIDENCE_MEDIUM) & (c_dst[:, MIDLINE] >= KINECT_CONFIDENCE_MEDIUM), axis=1)
    return j_src[ok][:, MIDLINE].reshape(-1, 3), j_dst[ok][:, MIDLINE].reshape(-1, 3)


def refine_kinect_extrinsic(joints_ref: np.ndarray, conf_ref: np.ndarray, joints_other: np.ndarray,
                            conf_other: np.ndarray, *, min_level: int = KINECT_CONFIDENCE_MEDIUM,
                            iterations: int = 5) -> tuple[np.ndarray, dict]:
    """Correction ``dT`` (4x4, world) with ``T_world_other_new = dT @ T_world_other`` from one person
    seen by a reference Kinect and another Kinect, both (T,32,3) in the world with the current
    extrinsics on common times, confidences (T,32). Labels are made to agree first (:func:`resolve_swaps`);
    joints at ``min_level`` or better in both are aligned rigidly, dropping pairs beyond three robust
    sigmas and re-fitting. Returns dT and {rms_mm, used, rotation_deg, translation_mm}."""
    (jr, jo), (cr, co), _ = resolve_swaps([joints_ref, joints_other], [conf_ref, conf_other])
    ok = np.isfinite(jr[..., 0]) & np.isfinite(jo[..., 0]) & (cr >= min_level) & (co >= min_level)
    src, dst = jo[ok], jr[ok]
    if len(src) < 10:
        raise UserError(f"only {len(src)} joints are confidently seen by both Kinects (need 10); their "
                        "extrinsics cannot be refined from skeletons",
                        fix="record a person moving where both Kinects see them")
    keep = np.ones(len(src), dtype=bool)
    for _ in range(iterations):
        R, tvec = rigid_align(src[keep], dst[keep])
        err = np.linalg.norm(src @ R.T + tvec - dst, axis=-1)
        sigma = 1.4826 * np.median(err[keep])
        keep = err < max(3.0 * sigma, 1e-6)
    R, tvec = rigid_align(src[keep], dst[keep])
    err = np.linalg.norm(src[keep] @ R.T + tvec - dst[keep], axis=-1)
    angle = float(np.degrees(rotation_angle(R)))
    return make_pose(R, tvec), {"rms_mm": float(np.sqrt(np.mean(err ** 2)) * 1e3), "used": int(keep.sum()),
                                "rotation_deg": angle, "translation_mm": float(np.linalg.norm(tvec) * 1e3)}

