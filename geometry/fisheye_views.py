"""Wrist-centred virtual views cut straight from a raw dual-fisheye frame, from the lens that sees
the hand: no stitching, so no seam and no parallax from blending two lenses into one centre.

A view is the :class:`~omnimocap.geometry.views.WristView` of :mod:`omnimocap.geometry.views` (square
pinhole, the camera's up as its up, field of view fitted to the hand's points with a margin), with
two differences: its rotation maps view directions into the 360 camera's frame
(``d_cam = R_pano_view @ d_view``, the camera frame being the panorama's), and its optical centre is
the chosen lens's centre ``t_cam_lens``, not the camera's centre. A point p (camera frame, metres)
therefore lands at ``view.camera.project(R_pano_view.T @ (p - t_cam_lens))``
(:func:`project_to_fisheye_view`).

Resampling is bilinear (cv2.remap, float maps). A view beside the seam can reach past its lens's
image circle at its margin; those pixels read the other lens (the hand's own pixels come from the
chosen lens).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from omnimocap.geometry.cameras import DualFisheyeCamera
from omnimocap.geometry.views import WristView, plan_views


@dataclass(frozen=True, eq=False)
class FisheyeWristView:
    """A wrist view cut from lens ``lens`` of a dual-fisheye frame; ``view.R_pano_view`` maps view
    directions to camera-frame directions, the view's centre is ``t_cam_view`` (the lens centre)."""

    view: WristView
    lens: int
    t_cam_view: np.ndarray


def plan_fisheye_views(camera: DualFisheyeCamera, points_cam: np.ndarray, size: int = 256, margin: float = 1.3,
                       min_fov_deg: float = 10.0, max_fov_deg: float = 120.0, centres_cam: np.ndarray | None = None,
                       lens_points: np.ndarray | None = None,
                       max_focal_px: float | None = None) -> list[FisheyeWristView]:
    """Plan V views from points (V,N,3) in the camera frame (metres; NaN ignored): each from the
    lens that sees its ``lens_points`` (V,3) nearest its axis (default: the mean of its points),
    looking at its ``centres_cam`` (V,3) (default: that mean), fitted as :func:`plan_views` fits
    them (``max_focal_px``: the largest focal length, pixels per radian), about that lens's centre."""
    points = np.asarray(points_cam, dtype=np.float64)
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"points_cam must be (V,N,3), got {points.shape}")
    mean = np.nanmean(points, axis=1)
    centre = mean if centres_cam is None else np.asarray(centres_cam, dtype=np.float64).reshape(-1, 3)
    chooser = mean if lens_points is None else np.asarray(lens_points, dtype=np.float64).reshape(-1, 3)
    lenses = camera.best_lens(chooser)
    out = []
    for v, i in enumerate(np.atleast_1d(lenses)):
        t = np.asarray(camera.lenses[i].t_cam_lens, dtype=np.float64)
        view = plan_views(points[v:v + 1] - t, size, margin, min_fov_deg, max_fov_deg, (centre[v] - t)[None],
                          max_focal_px)[0]
        out.append(FisheyeWristView(view, int(i), t))
    return out


def project_to_fisheye_view(fview: FisheyeWristView, points_cam: np.ndarray) -> np.ndarray:
    """Camera-frame points (...,3) -> view pixels (...,2); NaN behind the view's image plane."""
    d_view = (np.asarray(points_cam, dtype=np.float64) - fview.t_cam_view) @ fview.view.R_pano_view
    return fview.view.camera.project(np.where(d_view[..., 2:] > 0, d_view, np.nan))


def fisheye_view_maps(camera: DualFisheyeCamera, fview: FisheyeWristView) -> tuple[np.ndarray, np.ndarray]:
    """(map_x, map_y) float32 (size,size): the frame pixel (column, row) each view pixel reads, from
    the view's lens, or from the other lens where the ray leaves the view's lens's image circle; -1
    where neither images it."""
    cam = fview.view.camera
    rows, cols = np.mgrid[0:cam.height, 0:cam.width].astype(np.float64)
    d_view = np.stack([(cols - cam.cx) / cam.fx, (rows - cam.cy) / cam.fy, np.ones_like(cols)], axis=-1)
    d_cam = d_view @ fview.view.R_pano_view.T
    px = np.full(d_cam.shape[:-1] + (2,), np.nan)
    # The view's own lens first; the margin of a view beside the seam may leave its image circle and
    # read the other lens there (the hand itself stays in the chosen lens).
    for i in (fview.lens, 1 - fview.lens):
        lens = camera.lenses[i]
        more = lens.project(lens.lens_from_cam(d_cam, points=False)) + [camera.column_offset(i), 0.0]
        px = np.where(np.isfinite(px), px, more)
    px = np.where(np.isfinite(px), px, -1.0)
    return px[..., 0].astype(np.float32), px[..., 1].astype(np.float32)


def render_fisheye_view(frame: np.ndarray, camera: DualFisheyeCamera, fview: FisheyeWristView) -> np.ndarray:
    """Resample one view from the raw dual-fisheye frame (H,W[,C]) -> (size,size[,C]), bilinear."""
    if frame.shape[:2] != (camera.height, camera.width):
        raise ValueError(f"frame is {frame.shape[:2]} (rows, columns) but the camera is {camera.height}x{camera.width}")
    map_x, map_y = fisheye_view_maps(camera, fview)
    return cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def lens_view(camera: DualFisheyeCamera, view: WristView, lens: int) -> FisheyeWristView:
    """``view`` (its rotation maps view directions to camera-frame directions) cut from lens ``lens``
    of ``camera``: the same framing, seen from that lens's optical centre (camera frame, metres)."""
    return FisheyeWristView(view, int(lens), np.asarray(camera.lenses[int(lens)].t_cam_lens, dtype=np.float64))


def cut_views(frame: np.ndarray, camera: DualFisheyeCamera, fviews: list[FisheyeWristView]) -> list[np.ndarray]:
    """The images (size, size[, C]) of views cut from one raw frame (H, W[, C]), each from its lens."""
    return [render_fisheye_view(frame, camera, fview) for fview in fviews]
