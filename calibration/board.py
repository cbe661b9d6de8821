"""ChArUco board calibration of the 360 camera against a Kinect's colour camera.

The board frame is OpenCV's: origin at the board's top-left outer corner, x along the columns,
y along the rows (down the printed image), z into the board; metres. Corners are detected with
``cv2.aruco.CharucoDetector`` in pinhole images (Kinect colour) and in perspective views cut from the
equirectangular frame (a grid of search views over the sphere, then one view fitted to the board).
Every detection becomes unit bearings in its camera frame, so both cameras share one pose solver:
RANSAC over 4-point sets in a tangent frame around the board's bearings (planar PnP), then
non-linear refinement of angular residuals. A sequence of board poses is then refined jointly over
``T_color_pano`` and every board pose, and composed with the Kinect's colour-to-depth extrinsics into
``T_depth_pano``.

``render_board_pinhole`` / ``render_board_equirect`` draw the board at a 3D pose (anti-aliased by
supersampling) on a uniform background, ``draw_board`` over an existing image (the simulated rig's
frames).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import cv2
import numpy as np
from scipy.optimize import least_squares

from omnimocap.geometry.cameras import EquirectCamera, PinholeCamera
from omnimocap.geometry.pano_optics import PanoOptics
from omnimocap.geometry.transforms import (
    average_poses, invert_pose, look_at, make_pose, pose_from_vector, transform_points,
)
from omnimocap.errors import UserError
from omnimocap.geometry.views import plan_view, render_view, tiling_views, view_pixel_to_pano_bearing

# Search views for a board in a panorama: every 45 deg of yaw at the horizon, then below and above.
SEARCH_PITCHES_DEG = (0.0, -40.0, 40.0)
SEARCH_YAW_STEP_DEG = 45.0


@dataclass(frozen=True)
class BoardSpec:
    """A ChArUco board: ``squares_x`` x ``squares_y`` squares of ``square_m`` metres with ArUco
    markers of ``marker_m`` metres from ``dictionary`` (a cv2.aruco predefined dictionary id)."""

    squares_x: int = 7
    squares_y: int = 5
    square_m: float = 0.08
    marker_m: float = 0.06
    dictionary: int = cv2.aruco.DICT_5X5_100

    def board(self) -> cv2.aruco.CharucoBoard:
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_m, self.marker_m,
                                      cv2.aruco.getPredefinedDictionary(self.dictionary))

    def corners(self) -> np.ndarray:
        """Inner chessboard corners (M,3) in the board frame, metres, indexed by ChArUco id."""
        return np.asarray(self.board().getChessboardCorners(), dtype=np.float64)

    def texture(self, px_per_square: int = 64) -> np.ndarray:
        """The board image (uint8), exactly ``px_per_square`` pixels per square, no margin: board point
        (x, y) lies at pixel (x / square_m * px_per_square - 0.5, y / square_m * px_per_square - 0.5)."""
        size = (self.squares_x * px_per_square, self.squares_y * px_per_square)
        return self.board().generateImage(size, marginSize=0, borderBits=1)

    def outline(self, per_edge: int = 40) -> np.ndarray:
        """Points (4*per_edge,3) along the board's outer edge, board frame."""
        w, h = self.squares_x * self.square_m, self.squares_y * self.square_m
        s = np.linspace(0.0, 1.0, per_edge, endpoint=False)
        z = np.zeros_like(s)
        return np.concatenate([np.stack([s * w, z, z], -1), np.stack([w + z, s * h, z], -1),
                               np.stack([(1 - s) * w, h + z, z], -1), np.stack([z, (1 - s) * h, z], -1)])


# --- rendering -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _texture(spec: BoardSpec, px_per_square: int) -> np.ndarray:
    return spec.texture(px_per_square).astype(np.float32)


def _shade(spec: BoardSpec, rays: np.ndarray, T_cam_board: np.ndarray, px_per_square: int) -> tuple[np.ndarray, np.ndarray]:
    """Brightness (...) of the board along camera-frame rays (...,3), 0 where a ray misses it, and
    the board's coverage (...) in [0, 1] (fractional at the board's edge)."""
    tex = _texture(spec, px_per_square)
    R, t = T_cam_board[:3, :3], T_cam_board[:3, 3]
    origin = -R.T @ t  # camera centre in the board frame
    d = rays @ R  # R^T d, rays into the board frame
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = -origin[2] / d[..., 2]
    hit = np.isfinite(lam) & (lam > 0)
    x = origin[0] + lam * d[..., 0]
    y = origin[1] + lam * d[..., 1]
    scale = px_per_square / spec.square_m
    map_x = np.where(hit, x * scale - 0.5, -10.0).astype(np.float32)
    map_y = np.where(hit, y * scale - 0.5, -10.0).astype(np.float32)
    value = cv2.remap(tex, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    cover = cv2.remap(np.ones_like(tex), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return value, cover


@functools.lru_cache(maxsize=4)
def _patch(spec: BoardSpec, camera: PinholeCamera | EquirectCamera, T_key: bytes, supersample: int,
           px_per_square: int) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]:
    """The board's brightness and coverage (h, w) in its pixel box (c0, r0, c1, r1) for the pose
    ``T_cam_board`` given as float64 bytes; cached, since a board held still repeats its pose
    frame after frame. Columns may run past the right edge and wrap (the panorama's seam)."""
    T_cam_board = np.frombuffer(T_key, dtype=np.float64).reshape(4, 4)
    equirect = isinstance(camera, EquirectCamera)
    bbox = _equirect_bbox(spec, camera, T_cam_board) if equirect else _pinhole_bbox(spec, camera, T_cam_board)
    c0, r0, c1, r1 = bbox
    if c1 <= c0 or r1 <= r0:
        return bbox, np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    offs = (np.arange(supersample) + 0.5) / supersample - 0.5
    cols = (np.arange(c0, c1)[:, None] + offs).ravel()
    rows = (np.arange(r0, r1)[:, None] + offs).ravel()
    # an equirectangular grid's rays are separable: one longitude per column, one latitude per row
    rays = camera.grid_bearings(cols, rows) if equirect else camera.unproject(np.stack(np.meshgrid(cols, rows), -1))
    value, cover = _shade(spec, rays, T_cam_board, px_per_square)
    shape = (r1 - r0, supersample, c1 - c0, supersample)
    return bbox, value.reshape(shape).mean(axis=(1, 3)), cover.reshape(shape).mean(axis=(1, 3))


def _pinhole_bbox(spec: BoardSpec, camera: PinholeCamera, T_cam_board: np.ndarray) -> tuple[int, int, int, int]:
    outline = transform_points(T_cam_board, spec.outline())
    if not np.all(outline[:, 2] > 0):
        return 0, 0, camera.width, camera.height
    px = camera.project(outline)
    c0, r0 = np.floor(px.min(axis=0)).astype(int) - 2
    c1, r1 = np.ceil(px.max(axis=0)).astype(int) + 3
    return max(c0, 0), max(r0, 0), min(c1, camera.width), min(r1, camera.height)


def _equirect_bbox(spec: BoardSpec, pano: EquirectCamera, T_pano_board: np.ndarray) -> tuple[int, int, int, int]:
    px = pano.bearing_to_pixel(transform_points(T_pano_board, spec.outline()))
    cols = px[:, 0]
    if np.ptp(cols) > pano.width / 2:  # across the seam: continue the columns past the right edge
        cols = np.where(cols < pano.width / 2, cols + pano.width, cols)
    c0, r0 = int(np.floor(cols.min())) - 2, int(np.floor(px[:, 1].min())) - 2
    c1, r1 = int(np.ceil(cols.max())) + 3, int(np.ceil(px[:, 1].max())) + 3
    if c1 - c0 > pano.width / 2:  # the board surrounds a pole: every column
        c0, c1, r0, r1 = 0, pano.width, 0, pano.height
    return max(c0, 0), max(r0, 0), min(c1, max(c0, 0) + pano.width), min(r1, pano.height)


def draw_board(image: np.ndarray, spec: BoardSpec, camera: PinholeCamera | EquirectCamera, T_cam_board: np.ndarray, *,
               supersample: int = 3, px_per_square: int = 96) -> np.ndarray:
    """Draw the board at ``T_cam_board`` over ``image`` (H,W) or (H,W,3) uint8, in place, as
    ``camera`` (a pinhole camera with its distortion, or a panorama of the image's size) sees it;
    returns ``image``. The board hides whatever the image showed behind it, each pixel the mean of
    supersample^2 rays."""
    T_key = np.ascontiguousarray(T_cam_board, dtype=np.float64).tobytes()
    (c0, r0, c1, r1), value, cover = _patch(spec, camera, T_key, supersample, px_per_square)
    if value.size == 0:
        return image
    idx = np.arange(c0, c1) % image.shape[1]
    under = image[r0:r1, idx].astype(np.float32)
    if image.ndim == 3:
        value, cover = value[..., None], cover[..., None]
    image[r0:r1, idx] = np.clip(np.rint(value + (1.0 - cover) * under), 0, 255).astype(np.uint8)
    return image


def render_board_pinhole(spec: BoardSpec, camera: PinholeCamera, T_cam_board: np.ndarray, *,
                         supersample: int = 3, background: int = 128, px_per_square: int = 96) -> np.ndarray:
    """Grayscale uint8 image (H,W) of the board at ``T_cam_board`` seen by ``camera`` (its
    distortion included) in front of a uniform ``background``."""
    img = np.full((camera.height, camera.width), background, np.uint8)
    return draw_board(img, spec, camera, T_cam_board, supersample=supersample, px_per_square=px_per_square)


def render_board_equirect(spec: BoardSpec, pano: EquirectCamera, T_pano_board: np.ndarray, *,
                          supersample: int = 3, background: int = 128, px_per_square: int = 96) -> np.ndarray:
    """Grayscale uint8 equirectangular panorama (H,W) of the board at ``T_pano_board``."""
    img = np.full((pano.height, pano.width), background, np.uint8)
    return draw_board(img, spec, pano, T_pano_board, supersample=supersample, px_per_square=px_per_square)


# --- detection -----------------------------------------------------------------------------------

@dataclass
class BoardDetection:
    """Detected corners: ChArUco ``ids`` (n,) and unit ``bearings`` (n,3) in the camera frame."""

    ids: np.ndarray
    bearings: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def _detect(detector: cv2.aruco.CharucoDetector, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    corners, ids, _, _ = detector.detectBoard(gray)
    if ids is None or len(ids) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 2))
    return ids.ravel().astype(np.int64), corners.reshape(-1, 2).astype(np.float64)


def _gray(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


def detect_pinhole(spec: BoardSpec, image: np.ndarray, camera: PinholeCamera) -> BoardDetection:
    """Corners in a pinhole image (BGR or gray) as undistorted bearings in the camera frame."""
    ids, px = _detect(cv2.aruco.CharucoDetector(spec.board()), _gray(image))
    return BoardDetection(ids, camera.unproject(px) if len(ids) else np.zeros((0, 3)))


def detect_equirect(spec: BoardSpec, pano_img: np.ndarray, pano: EquirectCamera, *,
                    search_fov_deg: float = 80.0, view_size: int = 1024) -> BoardDetection:
    """Corners in an equirectangular frame as bearings in the panorama frame. Search views (yaw every
    45 deg, pitch -40/0/40, at the panorama's resolution up to ``view_size`` pixels) find the board;
    one view fitted to the found corners re-detects them at up to ``view_size`` pixels."""
    gray = _gray(pano_img)
    search_size = int(min(view_size, np.ceil(2 * np.tan(np.radians(search_fov_deg) / 2) * pano.pixels_per_radian)))
    detector = cv2.aruco.CharucoDetector(spec.board())
    found: dict[int, np.ndarray] = {}
    for view in tiling_views(search_fov_deg, search_size, SEARCH_PITCHES_DEG, SEARCH_YAW_STEP_DEG, -180.0):
        ids, px = _detect(detector, render_view(gray, pano, view))
        for i, b in zip(ids, view_pixel_to_pano_bearing(view, px)):
            found.setdefault(int(i), b)
    if len(found) < 4:
        return BoardDetection(np.zeros(0, dtype=np.int64), np.zeros((0, 3)))
    pts = np.stack(list(found.values()))
    view = plan_view(pts, size=search_size, margin=1.6)
    # as many view pixels per radian as the panorama has, capped at view_size
    size = int(min(view_size, max(search_size, np.ceil(2 * np.tan(np.radians(view.fov_deg) / 2)
                                                       * pano.pixels_per_radian))))
    view = plan_view(pts, size=size, margin=1.6)
    ids, px = _detect(detector, render_view(gray, pano, view))
    if len(ids) < len(found) // 2:
        ids = np.array(sorted(found), dtype=np.int64)
        return BoardDetection(ids, np.stack([found[i] for i in ids]))
    return BoardDetection(ids, view_pixel_to_pano_bearing(view, px))


# --- poses ---------------------------------------------------------------------------------------

def _angular_residuals(T_cam_board: np.ndarray, X: np.ndarray, f: np.ndarray) -> np.ndarray:
    p = transform_points(T_cam_board, X)
    return (p / np.linalg.norm(p, axis=-1, keepdims=True) - f).ravel()


def _perturb(T: np.ndarray, x: np.ndarray) -> np.ndarray:
    return pose_from_vector(x) @ T


def board_pose(spec: BoardSpec, det: BoardDetection, *, ransac_deg: float = 0.3,
               iterations: int = 200) -> tuple[np.ndarray, np.ndarray, float]:
    """``T_cam_board`` from detected bearings: planar PnP with RANSAC in a tangent frame around the
    bearings, then robust refinement of the angular residuals. Returns the pose, the inlier mask and
    the inliers' RMS angle (degrees). Raises UserError with fewer than 6 corners."""
    if len(det) < 6:
        raise UserError(f"only {len(det)} board corners detected (need 6)",
                        fix="show the whole board, closer or better lit")
    X = spec.corners()[det.ids]
    R_c = look_at(det.bearings.mean(axis=0))
    local = det.bearings @ R_c
    if np.any(local[:, 2] <= 0.05):
        raise UserError("the detected corners span more than a hemisphere; not a single board")
    uv = (local[:, :2] / local[:, 2:]).astype(np.float64)
    T, mask = _pnp_all(X, uv, R_c, det.bearings, ransac_deg)
    if T is None:
        # OpenCV's RANSAC turns down sets that one planar PnP over every corner fits to a fraction
        # of the threshold (measured on equirect detections within 0.18 deg of the truth), so it
        # only runs when that fit leaves outliers.
        ok, rvec, tvec, inl = cv2.solvePnPRansac(X, uv, np.eye(3), None, iterationsCount=iterations,
                                                 reprojectionError=float(np.tan(np.radians(ransac_deg))),
                                                 flags=cv2.SOLVEPNP_IPPE)
        if not ok or inl is None or len(inl) < 6:
            raise UserError("no consistent board pose in the detected corners")
        T = make_pose(R_c, np.zeros(3)) @ make_pose(cv2.Rodrigues(rvec)[0], tvec.ravel())
        mask = np.zeros(len(det), dtype=bool)
        mask[inl.ravel()] = True
    fit = least_squares(lambda x: _angular_residuals(_perturb(T, x), X[mask], det.bearings[mask]), np.zeros(6),
                        loss="soft_l1", f_scale=np.radians(ransac_deg))
    T = _perturb(T, fit.x)
    ang = _angles_deg(T, X[mask], det.bearings[mask])
    return T, mask, float(np.sqrt(np.mean(ang ** 2)))


def _pnp_all(X: np.ndarray, uv: np.ndarray, R_c: np.ndarray, bearings: np.ndarray,
             threshold_deg: float) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Planar PnP (IPPE) over every corner in the tangent frame ``R_c``; the pose ``T_cam_board``
    and an all-True mask when every corner lies within ``threshold_deg`` of it, else (None, None)."""
    ok, rvec, tvec = cv2.solvePnP(X, uv, np.eye(3), None, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        return None, None
    T = make_pose(R_c, np.zeros(3)) @ make_pose(cv2.Rodrigues(rvec)[0], tvec.ravel())
    if not np.all(_angles_deg(T, X, bearings) < threshold_deg):
        return None, None
    return T, np.ones(len(X), dtype=bool)


def _angles_deg(T: np.ndarray, X: np.ndarray, f: np.ndarray, optics: PanoOptics | None = None) -> np.ndarray:
    """Angles (degrees) between bearings ``f`` and board points ``X`` at ``T_cam_board``; with
    ``optics``, the points as the stitched 360 frame shows them (from their lens's centre)."""
    p = transform_points(T, X)
    if optics is not None:
        p = optics.apparent(p)[0]
    cos = np.sum(p * f, axis=-1) / np.linalg.norm(p, axis=-1)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


@dataclass
class BoardCalibration:
    """``T_depth_pano`` (the panorama's pose in the Kinect depth frame), ``T_color_pano``, the inlier
    RMS angles (degrees) per camera, which sequence frames were used, and the 360 camera's optics the
    solve used (with the lens baseline estimated when ``baseline_estimated``)."""

    T_depth_pano: np.ndarray
    T_color_pano: np.ndarray
    kinect_rms_deg: float
    pano_rms_deg: float
    frames_used: list[int]
    board_poses_color: list[np.ndarray]
    optics: PanoOptics = PanoOptics()
    baseline_estimated: bool = False

    def to_json(self) -> dict:
        return {"kinect_rms_deg": self.kinect_rms_deg, "pano_rms_deg": self.pano_rms_deg,
                "frames_used": self.frames_used, "board_poses_color": [T.tolist() for T in self.board_poses_color],
                "optics": self.optics.to_dict(), "baseline_estimated": self.baseline_estimated}


def _lens_residuals(T_cam_board: np.ndarray, X: np.ndarray, f: np.ndarray, optics: PanoOptics) -> np.ndarray:
    """Angular residuals of the 360 camera's bearings ``f`` of board points ``X``: each point as the
    stitched frame shows it, seen from the lens whose half holds it (geometry/pano_optics.py)."""
    p, _, _ = optics.apparent(transform_points(T_cam_board, X))
    return (p / np.linalg.norm(p, axis=-1, keepdims=True) - f).ravel()


def seen_by_both_lenses(detections: list[BoardDetection | None], min_corners: int = 6) -> bool:
    """Whether the panorama's detections hold at least ``min_corners`` corners on each side of the
    seam (so the lens baseline can be told apart from the camera's position)."""
    z = [d.bearings[:, 2] for d in detections if d is not None and len(d)]
    if not z:
        return False
    z = np.concatenate(z)
    return int(np.sum(z > 0.05)) >= min_corners and int(np.sum(z < -0.05)) >= min_corners


def calibrate_board_sequence(spec: BoardSpec, color_detections: list[BoardDetection | None],
                             pano_detections: list[BoardDetection | None], T_depth_color: np.ndarray,
                             *, min_frames: int = 1,
                             cameras: tuple[str, str] = ("the Kinect colour camera", "the 360 camera"),
                             optics: PanoOptics | None = None, estimate_baseline: bool = False) -> BoardCalibration:
    """Joint refinement over ``T_color_pano`` and each board pose ``T_color_board_k`` of the angular
    residuals of both cameras, over the frames where both saw the board; composed with the
    Kinect's ``T_depth_color``. The second camera may be any camera whose detections are bearings
    in its own frame (another Kinect's colour camera: ``T_color_pano`` is then the pose of that
    colour camera); ``cameras`` names both in the error. Raises UserError with fewer than
    ``min_frames`` usable frames.

    ``optics``: the second camera is a stitched two-lens 360 camera with these optics (its bearings
    are seen from each lens's centre); with ``estimate_baseline`` the lens baseline is solved too
    when the board was seen on both sides of the seam (:func:`seen_by_both_lenses`), else kept.
    The rolling shutter plays no part: the board holds still."""
    optics = PanoOptics.ideal() if optics is None else optics
    frames, poses_c, poses_p, masks = [], [], [], []
    for k, (dc, dp) in enumerate(zip(color_detections, pano_detections)):
        if dc is None or dp is None or len(dc) < 6 or len(dp) < 6:
            continue
        try:
            Tc, mc, _ = board_pose(spec, dc)
            Tp, mp, _ = board_pose(spec, dp)
        except UserError:
            continue
        frames.append(k)
        poses_c.append(Tc)
        poses_p.append(Tp)
        masks.append((mc, mp))
    if len(frames) < min_frames:
        raise UserError(f"the board was seen by both {cameras[0]} and {cameras[1]} in "
                        f"{len(frames)} frames (need {min_frames})",
                        fix="hold the ChArUco board where both cameras see it, in several poses")
    T_cp = [Tc @ invert_pose(Tp) for Tc, Tp in zip(poses_c, poses_p)]
    T0 = average_poses(np.stack(T_cp))
    corners = spec.corners()
    obs = []
    for k, (mc, mp) in zip(frames, masks):
        dc, dp = color_detections[k], pano_detections[k]
        obs.append((corners[dc.ids[mc]], dc.bearings[mc], corners[dp.ids[mp]], dp.bearings[mp]))
    solve_baseline = estimate_baseline and seen_by_both_lenses([pano_detections[k] for k in frames])
    n = 6 + 6 * len(frames)

    def unpack(x):
        T_color_pano = _perturb(T0, x[:6] * 1e-3)
        lens = replace(optics, baseline_m=optics.baseline_m + x[n] * 1e-3) if solve_baseline else optics
        return T_color_pano, [_perturb(Tc, x[6 + 6 * i:12 + 6 * i] * 1e-3) for i, Tc in enumerate(poses_c)], lens

    def residuals(x):
        T_color_pano, boards, lens = unpack(x)
        T_pano_color = invert_pose(T_color_pano)
        r = []
        for Tb, (Xc, fc, Xp, fp) in zip(boards, obs):
            r.append(_angular_residuals(Tb, Xc, fc))
            r.append(_lens_residuals(T_pano_color @ Tb, Xp, fp, lens))
        return np.concatenate(r)

    fit = least_squares(residuals, np.zeros(n + int(solve_baseline)), loss="soft_l1", f_scale=np.radians(0.1),
                        diff_step=1e-6)
    T_color_pano, boards, lens = unpack(fit.x)
    if lens.baseline_m < 0.0:  # no lens pair sits back to front: the data say the lenses share a centre
        solve_baseline, optics = False, replace(optics, baseline_m=0.0)
        fit = least_squares(residuals, np.zeros(n), loss="soft_l1", f_scale=np.radians(0.1), diff_step=1e-6)
        T_color_pano, boards, lens = unpack(fit.x)
    T_pano_color = invert_pose(T_color_pano)
    ang_c = np.concatenate([_angles_deg(Tb, Xc, fc) for Tb, (Xc, fc, _, _) in zip(boards, obs)])
    ang_p = np.concatenate([_angles_deg(T_pano_color @ Tb, Xp, fp, lens) for Tb, (_, _, Xp, fp) in zip(boards, obs)])
    return BoardCalibration(T_depth_color @ T_color_pano, T_color_pano, float(np.sqrt(np.mean(ang_c ** 2))),
                            float(np.sqrt(np.mean(ang_p ** 2))), frames, boards, lens, solve_baseline)
