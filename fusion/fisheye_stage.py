"""The hand stage's views on a raw dual-fisheye 360 stream (a session whose 360 entry names a lens
model, capture/dual_fisheye.py): each wrist view is cut straight from the lens that sees the hand
(geometry/fisheye_views.py), so there is no seam, no blend band and no stitching parallax, and the
hand is lifted along the ray from that lens's optical centre.

:class:`~omnimocap.fusion.frame_stage.HandStage` uses :class:`FisheyeViews` in place of its
equirectangular views when it is given a :class:`~omnimocap.geometry.cameras.DualFisheyeCamera`;
everything after the views (hand estimator, association, lifting, depth cue) is the same stage.

Choices, as the equirect views make them (``fusion.frame_stage.plan_hand_views``): a view per person
and side with a predicted hand, looking at the predicted hand centre, holding the Kinect hand joints
and a sphere of ``hand_radius_m`` with ``view_margin``, no more magnified than
:data:`~omnimocap.fusion.frame_stage.MAX_UPSAMPLING` times the lens's focal length (pixels per radian
on its axis). The lens is the one that sees the predicted wrist nearest its axis (the wrist keypoint
is what the hand is lifted through). The frames are taken with a global shutter: every view is at its
frame's timestamp (the rig's ``pano_optics`` still set the capture times when they hold a readout).

Frames: the 360 camera's (OpenCV axes, metres), its pose ``T_world_pano`` in the rig; world y up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from omnimocap.fusion.frame_stage import MAX_UPSAMPLING, PlannedView, hand_extents, padded_points
from omnimocap.geometry.cameras import DualFisheyeCamera
from omnimocap.geometry.fisheye_views import (
    FisheyeWristView, cut_views, plan_fisheye_views, project_to_fisheye_view,
)
from omnimocap.geometry.transforms import transform_points


@dataclass
class FisheyePlannedView(PlannedView):
    """A :class:`~omnimocap.fusion.frame_stage.PlannedView` cut from lens ``lens`` whose optical
    centre is ``t_cam_view`` (camera frame, metres); its ``view.R_pano_view`` maps view directions to
    camera-frame directions from that centre, and ``wrist_pano`` is the predicted wrist as that lens
    sees it (minus its centre)."""

    lens: int = 0
    t_cam_view: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @property
    def fisheye_view(self) -> FisheyeWristView:
        return FisheyeWristView(self.view, self.lens, self.t_cam_view)


class LensRays:
    """The optics ``fusion.lifting.lift_observation`` lifts along for one view: every ray from the
    optical centre ``centre_cam`` (3,) of the view's lens (camera frame, metres). ``baseline_m`` is
    that centre's distance from the camera's origin (zero: rays from the origin, the same thing)."""

    def __init__(self, centre_cam: np.ndarray):
        self.centre_cam = np.asarray(centre_cam, dtype=np.float64)
        self.baseline_m = float(np.linalg.norm(self.centre_cam))

    def rays(self, dirs_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(origins (...,3), unit directions (...,3)) of camera-frame directions (...,3)."""
        d = np.asarray(dirs_cam, dtype=np.float64)
        d = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-12)
        return np.broadcast_to(self.centre_cam, d.shape).copy(), d


class FisheyeViews:
    """Plans, renders and gives the lifting rays of wrist views on the raw frames of ``camera``
    (the session's lens model) under ``config`` (a ``ProcessConfig``)."""

    def __init__(self, camera: DualFisheyeCamera, config):
        self.camera = camera
        self.config = config

    @property
    def max_focal_px(self) -> float | None:
        """The largest focal length a view may have (pixels per radian), or None when
        ``camera_model.native_resolution`` is off."""
        if not self.config.camera_model.native_resolution:
            return None
        return MAX_UPSAMPLING * min(min(lens.fx, lens.fy) for lens in self.camera.lenses)

    def plan(self, pred: dict[str, np.ndarray], T_pano_world: np.ndarray, time_indices,
             t_capture: np.ndarray | None = None) -> list[FisheyePlannedView]:
        """A view for every person and side with a predicted hand at each time index of ``pred``
        ((P, M, 2, 3) per joint name, world frame; captured at ``t_capture`` (P, M, 2) session
        seconds when given)."""
        config = self.config
        keys, points, centres, wrists = [], [], [], []
        for k, p, s, c, pts in hand_extents(pred, time_indices, config):
            wrist = pred["wrist"][p, k, s]
            points.append(transform_points(T_pano_world, pts))
            centres.append(transform_points(T_pano_world, c))
            wrists.append(transform_points(T_pano_world, wrist if np.all(np.isfinite(wrist)) else c))
            keys.append((k, p, s))
        if not keys:
            return []
        padded = padded_points(points)
        fviews = plan_fisheye_views(self.camera, padded, config.view_size, config.view_margin,
                                    centres_cam=np.array(centres), lens_points=np.array(wrists),
                                    max_focal_px=self.max_focal_px)
        planned = []
        for (k, p, s), fview, pts, wrist in zip(keys, fviews, padded, wrists):
            pts = pts[np.all(np.isfinite(pts), axis=-1)]
            px = project_to_fisheye_view(fview, pts)
            box = np.concatenate([np.nanmin(px, axis=0), np.nanmax(px, axis=0)])
            planned.append(FisheyePlannedView(k, p, s, fview.view, box, wrist - fview.t_cam_view,
                                              None if t_capture is None else float(t_capture[p, k, s]),
                                              lens=fview.lens, t_cam_view=fview.t_cam_view))
        return planned

    def render(self, frame: np.ndarray, planned: list[FisheyePlannedView]) -> list[np.ndarray]:
        """The images (size, size, 3) of ``planned`` views cut from one raw frame (H, W, 3)."""
        return cut_views(frame, self.camera, [pv.fisheye_view for pv in planned])

    @staticmethod
    def lift_optics(planned: FisheyePlannedView) -> LensRays:
        """The rays a view's hand is lifted along: from its lens's optical centre."""
        return LensRays(planned.t_cam_view)
