"""Wrist-centred virtual views cut from the equirectangular 360 frame.

Each predicted hand gets a virtual pinhole camera (the UmeTrack pattern): it looks at the centre of
the hand's points, keeps the panorama's up as its up (no roll), and has a field of view fitted to the
points plus a margin. The view is then resampled from the panorama.

Frames: the panorama camera frame is OpenCV style (x right, y down, z forward, metres); a view's
rotation ``R_pano_view`` maps view-frame directions to panorama-frame directions,
``d_pano = R_pano_view @ d_view``. Pixels are (column, row) with the centre of the top-left pixel at
(0, 0); the equirectangular mapping is the one documented in ``geometry/cameras.py``.

Resampling is bilinear and touches only the samples a view needs (its cost does not grow with the
panorama's size). The cv2 path rounds sample positions to 1/32 pixel, as py360convert's ``e2p``
does, and then reproduces ``e2p(img, fov, u, v, (size, size))`` for
``view_from_yaw_pitch(u, v, fov, size)`` except near the poles; the torch path interpolates without
that rounding, so the two differ by about g/32 grey levels where the image changes by g levels per
pixel. The longitude seam wraps (column -1 is column W-1); rows are clamped at the poles,
so the half pixel nearest each pole reads the pole row alone instead of blending with the row across
the pole (those pixels are all within 180/H degrees of the pole, where a panorama row is nearly one
colour).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

from omnimocap.geometry.cameras import EquirectCamera, PinholeCamera
from omnimocap.geometry.transforms import look_at

_PANO_UP = np.array([0.0, -1.0, 0.0])


@dataclass(frozen=True, eq=False)
class WristView:
    """A virtual square pinhole view: ``d_pano = R_pano_view @ d_view``; ``camera`` has no distortion
    and its principal point at the image centre, cx = cy = (size - 1) / 2."""

    R_pano_view: np.ndarray
    camera: PinholeCamera

    @property
    def size(self) -> int:
        return self.camera.width

    @property
    def fov_deg(self) -> float:
        """Field of view in degrees between the centres of the first and last pixel columns."""
        return float(np.degrees(2.0 * np.arctan((self.size - 1) / (2.0 * self.camera.fx))))


def square_camera(size: int, fov_deg: float) -> PinholeCamera:
    """Square undistorted pinhole whose field of view, measured between the centres of the first and
    last pixel columns, is ``fov_deg`` (the convention of py360convert's ``e2p``)."""
    f = (size - 1) / (2.0 * np.tan(np.radians(fov_deg) / 2.0))
    c = (size - 1) / 2.0
    return PinholeCamera(f, f, c, c, size, size)


def view_from_yaw_pitch(yaw_deg: float, pitch_deg: float, fov_deg: float, size: int = 256) -> WristView:
    """The view that looks at yaw ``yaw_deg`` (positive right, 0 at the panorama centre) and pitch
    ``pitch_deg`` (positive up), without roll: its x axis stays horizontal, also straight up or down,
    where the yaw still fixes which way the image's bottom points."""
    u, v = np.radians(yaw_deg), np.radians(pitch_deg)
    cu, su, cv, sv = np.cos(u), np.sin(u), np.cos(v), np.sin(v)
    x = [cu, 0.0, -su]
    y = [sv * su, cv, sv * cu]
    z = [cv * su, -sv, cv * cu]
    return WristView(np.array([x, y, z]).T, square_camera(size, fov_deg))


def tiling_views(fov_deg: float, size: int, pitches_deg: Sequence[float], yaw_step_deg: float,
                 yaw_start_deg: float = 0.0) -> list[WristView]:
    """Views of ``fov_deg`` and ``size`` pixels (:func:`view_from_yaw_pitch`) that tile the sphere's
    bands at ``pitches_deg`` (degrees, positive up): at each pitch in the given order, yaws from
    ``yaw_start_deg`` every ``yaw_step_deg`` degrees round the full circle (positive right). Neighbours
    overlap where ``fov_deg`` exceeds the step; search views that find things anywhere in a band."""
    return [view_from_yaw_pitch(yaw, pitch, fov_deg, size)
            for pitch in pitches_deg for yaw in np.arange(yaw_start_deg, yaw_start_deg + 360.0, yaw_step_deg)]


def plan_view(points_pano: np.ndarray, size: int = 256, margin: float = 1.3, min_fov_deg: float = 10.0,
              max_fov_deg: float = 120.0, center_pano: np.ndarray | None = None,
              max_focal_px: float | None = None) -> WristView:
    """Plan the view of one hand from its points (N,3) in the panorama frame (metres; any
    directions work too, only their bearings matter). See ``plan_views``."""
    points = np.asarray(points_pano, dtype=np.float64)[None]
    center = None if center_pano is None else np.asarray(center_pano, dtype=np.float64)[None]
    return plan_views(points, size, margin, min_fov_deg, max_fov_deg, center, max_focal_px)[0]


def plan_views(points_pano: np.ndarray, size: int = 256, margin: float = 1.3, min_fov_deg: float = 10.0,
               max_fov_deg: float = 120.0, center_pano: np.ndarray | None = None,
               max_focal_px: float | None = None) -> list[WristView]:
    """Plan V views at once from points (V,N,3) in the panorama frame; NaN points are ignored.

    Each view looks at its ``center_pano`` (V,3), by default the mean of its points, with the
    panorama's up as up. Its half field of view is ``margin`` times the largest angle, about the view
    axis, of any point's horizontal or vertical offset, clamped to [min_fov_deg/2, max_fov_deg/2].
    Because tan(m a) >= m tan(a) for m >= 1, every point then lies within the central 1/margin of the
    view (pixel centres 0..size-1) unless the clamp at ``max_fov_deg`` bites. ``max_focal_px``: the
    largest focal length (pixels per radian at the view's centre) a view may have; views that would
    be narrower are widened to it (the points then lie further inside).
    """
    points = np.asarray(points_pano, dtype=np.float64)
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"points_pano must be (V,N,3), got {points.shape}")
    if margin < 1.0:
        raise ValueError(f"margin must be >= 1, got {margin}")
    valid = np.all(np.isfinite(points), axis=-1)
    if not np.all(np.any(valid, axis=-1)):
        raise ValueError("every view needs at least one finite point")
    if center_pano is None:
        center = np.where(valid[..., None], points, 0.0).sum(1) / valid.sum(1)[:, None]
    else:
        center = np.broadcast_to(np.asarray(center_pano, dtype=np.float64), (len(points), 3))
    if np.any(np.linalg.norm(center, axis=-1) < 1e-9):
        raise ValueError("a view centre coincides with the panorama camera centre; it has no bearing")
    R = look_at(center, _PANO_UP)
    d_view = np.einsum("vji,vnj->vni", R, np.where(valid[..., None], points, center[:, None]))
    # atan2 against z (not atan of a ratio) so points beside or behind the camera give angles >= 90
    # degrees and the field of view saturates instead of wrapping.
    angle = np.maximum(np.arctan2(np.abs(d_view[..., 0]), d_view[..., 2]),
                       np.arctan2(np.abs(d_view[..., 1]), d_view[..., 2]))
    lowest = np.radians(min_fov_deg) / 2
    if max_focal_px is not None:
        lowest = max(lowest, float(np.arctan((size - 1) / (2.0 * max_focal_px))))
    half = np.clip(margin * angle.max(axis=1), lowest, np.radians(max_fov_deg) / 2)
    return [WristView(R[i], square_camera(size, float(np.degrees(2 * half[i])))) for i in range(len(R))]


def project_to_view(view: WristView, points_pano: np.ndarray) -> np.ndarray:
    """Points or directions (...,3) in the panorama frame -> view pixels (...,2); NaN for points
    on or behind the view's image plane (z <= 0 in the view frame)."""
    d_view = np.asarray(points_pano, dtype=np.float64) @ view.R_pano_view
    return view.camera.project(np.where(d_view[..., 2:] > 0, d_view, np.nan))


def view_pixel_to_pano_bearing(view: WristView, px: np.ndarray) -> np.ndarray:
    """View pixels (...,2) -> unit bearings (...,3) in the panorama frame."""
    return view.camera.unproject(px) @ view.R_pano_view.T


@functools.lru_cache(maxsize=4)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Column and row indices of a (size,size) image as float32 arrays (read-only, cached)."""
    cols = np.broadcast_to(np.arange(size, dtype=np.float32), (size, size)).copy()
    rows = np.ascontiguousarray(cols.T)
    cols.flags.writeable = rows.flags.writeable = False
    return cols, rows


def _maps_numpy(pano: EquirectCamera, views: Sequence[WristView]) -> tuple[np.ndarray, np.ndarray]:
    """Panorama pixel coordinates (V,size,size) float32 of every view pixel (views undistorted).

    The ray of view pixel (u, v) is R[:,0] (u - cx)/fx + R[:,1] (v - cy)/fy + R[:,2], an affine
    function of the pixel indices per component, which cv2.addWeighted evaluates in one float32
    pass. This keeps a 256x256 view to ~0.2 ms (the float64 ``EquirectCamera.bearing_to_pixel``
    takes ~4 ms); float32 resolves 1e-3 pixel at 5760 columns, finer than remap's 1/32 pixel.
    """
    size = _common_size(views)
    cols, rows = _pixel_grid(size)
    map_x = np.empty((len(views), size, size), np.float32)
    map_y = np.empty_like(map_x)
    for i, view in enumerate(views):
        cam = view.camera
        # (x, -y, z) of the bearing: lat needs -y.
        M = np.diag([1.0, -1.0, 1.0]) @ view.R_pano_view @ np.linalg.inv(cam.K)
        dx, ndy, dz = (cv2.addWeighted(cols, M[j, 0], rows, M[j, 1], M[j, 2]) for j in range(3))
        np.arctan2(dx, dz, out=map_x[i])
        np.arctan2(ndy, cv2.magnitude(dx, dz), out=map_y[i])
    map_x *= np.float32(pano.width / (2 * np.pi))
    map_x += np.float32(pano.width / 2 - 0.5)
    map_y *= np.float32(-pano.height / np.pi)
    map_y += np.float32(pano.height / 2 - 0.5)
    return map_x, map_y


def _common_size(views: Sequence[WristView]) -> int:
    if not views:
        raise ValueError("no views given")
    sizes = {(v.camera.width, v.camera.height) for v in views}
    if len(sizes) != 1 or views[0].camera.width != views[0].camera.height:
        raise ValueError(f"views must share one square size, got {sorted(sizes)}")
    return views[0].camera.width


def view_sampling_maps(pano: EquirectCamera, view: WristView) -> tuple[np.ndarray, np.ndarray]:
    """(map_x, map_y), float32 (size,size): the panorama pixel (column, row) seen by each view pixel.
    Columns lie in [-0.5, W-0.5] (the seam is at both ends), rows in [-0.5, H-0.5]."""
    map_x, map_y = _maps_numpy(pano, [view])
    return map_x[0], map_y[0]


def _check_pano(pano_img: np.ndarray, pano_cam: EquirectCamera) -> None:
    if pano_img.shape[:2] != (pano_cam.height, pano_cam.width):
        raise ValueError(f"panorama image is {pano_img.shape[:2]} (rows, columns) but the camera is "
                         f"{pano_cam.height}x{pano_cam.width}")


def _remap(pano_img: np.ndarray, pano_cam: EquirectCamera, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    # BORDER_WRAP supplies column -1 = W-1 and column W = 0, the seam; rows are clamped first so the
    # wrap never reaches across from the bottom row to the top one. Fixed-point maps (1/32 pixel,
    # as py360convert uses) make the memory-bound remap ~20% faster than float maps; 1/32 pixel is
    # 0.002 degrees at 5760 columns.
    map_y = np.clip(map_y, 0.0, pano_cam.height - 1, out=map_y)
    xy, frac = cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)
    return cv2.remap(pano_img, xy, frac, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


def render_view(pano_img: np.ndarray, pano_cam: EquirectCamera, view: WristView) -> np.ndarray:
    """Resample one view from the panorama image (H,W) or (H,W,C), any dtype cv2.remap takes ->
    (size,size) or (size,size,C), bilinear."""
    _check_pano(pano_img, pano_cam)
    map_x, map_y = view_sampling_maps(pano_cam, view)
    return _remap(pano_img, pano_cam, map_x, map_y)


def render_views(pano_img: np.ndarray, pano_cam: EquirectCamera, views: Sequence[WristView]) -> np.ndarray:
    """Resample V views of one size from the panorama image -> (V,size,size[,C]), one remap call."""
    _check_pano(pano_img, pano_cam)
    map_x, map_y = _maps_numpy(pano_cam, views)
    v, s = map_x.shape[:2]
    out = _remap(pano_img, pano_cam, map_x.reshape(v * s, s), map_y.reshape(v * s, s))
    return out.reshape((v, s, s) + out.shape[2:])


def render_views_torch(pano: torch.Tensor, pano_cam: EquirectCamera, views: Sequence[WristView],
                       device: torch.device | str | None = None) -> torch.Tensor:
    """Resample V views with one batched ``grid_sample`` -> float32 (V,C,size,size) on ``device``
    (default: the panorama's device), in the panorama's units (uint8 input gives 0..255 floats).

    ``pano`` is (C,H,W), (H,W,C) or (H,W), told apart by ``pano_cam``'s size, uint8 or float, on any
    device. Only the band of panorama rows the views reach is moved to ``device`` and converted to
    float; the seam is handled by padding that band with one wrapped column on each side.
    """
    size = _common_size(views)
    device = torch.device(device) if device is not None else pano.device
    H, W = pano_cam.height, pano_cam.width
    if pano.ndim == 2 and tuple(pano.shape) == (H, W):
        pano = pano[None]
    elif pano.ndim == 3 and tuple(pano.shape[1:]) == (H, W):
        pass
    elif pano.ndim == 3 and tuple(pano.shape[:2]) == (H, W):
        pano = pano.permute(2, 0, 1)
    else:
        raise ValueError(f"panorama tensor {tuple(pano.shape)} matches neither (C,H,W) nor (H,W,C) for "
                         f"a {H}x{W} panorama")

    R = torch.as_tensor(np.stack([v.R_pano_view for v in views]), dtype=torch.float32, device=device)
    k = torch.tensor([[v.camera.fx, v.camera.fy, v.camera.cx, v.camera.cy] for v in views],
                     dtype=torch.float32, device=device)
    grid = torch.arange(size, dtype=torch.float32, device=device)
    x = ((grid[None] - k[:, 2:3]) / k[:, 0:1])[:, None, :, None]
    y = ((grid[None] - k[:, 3:4]) / k[:, 1:2])[:, :, None, None]
    d = R[:, None, None, :, 0] * x + R[:, None, None, :, 1] * y + R[:, None, None, :, 2]
    lon = torch.atan2(d[..., 0], d[..., 2])
    lat = torch.atan2(-d[..., 1], torch.sqrt(d[..., 0] ** 2 + d[..., 2] ** 2))
    col = lon * (W / (2 * np.pi)) + (W / 2 - 0.5)
    row = (lat * (-H / np.pi) + (H / 2 - 0.5)).clamp(0.0, H - 1)

    lo, hi = torch.stack(torch.aminmax(row)).tolist()
    r0 = int(np.floor(lo))
    r1 = max(int(np.ceil(hi)), r0 + 1)
    if r1 > H - 1:
        r0, r1 = max(H - 1 - (r1 - r0), 0), H - 1
    band = pano[:, r0:r1 + 1].to(device, non_blocking=True)
    band = torch.cat([band[..., -1:], band, band[..., :1]], dim=-1).to(torch.float32)
    # align_corners=True puts -1 and +1 on the centres of the first and last pixels, which is the
    # pixel convention here; the padded band is W+2 columns wide and starts one column left.
    gx = (col + 1.0) * (2.0 / (W + 1)) - 1.0
    gy = (row - r0) * (2.0 / (r1 - r0)) - 1.0
    g = torch.stack([gx, gy], dim=-1).reshape(1, len(views) * size, size, 2)
    out = torch.nn.functional.grid_sample(band[None], g, mode="bilinear", padding_mode="border",
                                          align_corners=True)
    return out[0].reshape(-1, len(views), size, size).permute(1, 0, 2, 3)
