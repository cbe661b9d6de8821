"""The hand-estimator protocol: what every hand backend receives and returns.

The contract is WiLoR's output, expressed per wrist-centred view. A backend receives a batch of
:class:`ViewRequest` (the 256x256 view image cut from the panorama plus the view's geometry and the
Kinect-predicted hand) and returns, for each, a :class:`HandObservation` or ``None`` (no hand).

Frames and conventions
- The view camera is an OpenCV pinhole camera (x right, y down, z forward) whose orientation in the
  360 camera frame is ``R_pano_view`` (``d_pano = R_pano_view @ d_view``).
- ``global_orient`` and ``hand_pose`` are rotation matrices. ``global_orient`` is the hand's root
  rotation in the view camera frame; ``hand_pose`` are MANO joints 1..15 relative to their parents,
  flat-hand convention (no hand mean added).
- Left hands are proper left-hand MANO parameters under the mirror convention: with
  ``M = diag(-1, 1, 1)``, a left hand's rotations are ``M R M`` of the right hand whose mirror image it
  is, and its geometry is ``M`` times that right hand's geometry.
- ``keypoints_3d`` (21, 3) are metres in the view camera's orientation, relative to the MANO model
  origin (WiLoR's ``pred_keypoints_3d``, no translation), OpenPose hand order
  (``omnimocap.data.skeletons.HAND21_JOINTS``); left hands hold true left-hand geometry.
- ``keypoints_2d`` (21, 2) are view-image pixels (column, row).
- ``cam_crop`` is WiLoR's crop camera (s, tx, ty) for ``box_xyxy`` (the square crop region in view
  pixels); ``cam_t_view`` is WiLoR's full-image translation for the view image. Its depth comes from
  WiLoR's fixed focal length and is *not* metric for our views: lifting never uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from omnimocap.geometry.cameras import PinholeCamera


@dataclass
class ViewRequest:
    """One wrist-centred view to be looked at by a hand backend."""

    frame_index: int  # index of the panorama frame the view was cut from
    t_session: float  # that frame's time on the session clock, seconds
    person_id: int
    side: str  # "left" | "right" (the Kinect skeleton side it was planned for)
    R_pano_view: np.ndarray  # (3, 3)
    camera: PinholeCamera  # the view's intrinsics (square, ``camera.width`` pixels)
    predicted_wrist_view: np.ndarray  # (3,) Kinect-predicted wrist in the view camera frame, metres
    predicted_box_xyxy: np.ndarray  # (4,) predicted hand extent in view pixels
    image_bgr: np.ndarray | None = None  # (S, S, 3) uint8; None for backends that do not look
    # (3,) optical centre (360 camera frame, metres) of the image the view was cut from: a raw
    # dual-fisheye lens's; None for the stitched panorama (each direction from the lens that shows it)
    view_centre: np.ndarray | None = None


@dataclass
class HandObservation:
    """A hand reconstructed in one view (WiLoR's contract, see the module docstring)."""

    is_right: bool
    global_orient: np.ndarray  # (3, 3)
    hand_pose: np.ndarray  # (15, 3, 3)
    betas: np.ndarray  # (10,)
    keypoints_3d: np.ndarray  # (21, 3)
    keypoints_2d: np.ndarray  # (21, 2)
    box_xyxy: np.ndarray  # (4,)
    cam_crop: np.ndarray  # (3,)
    cam_t_view: np.ndarray  # (3,)
    confidence: float = 1.0
    vertices: np.ndarray | None = None  # (778, 3) like keypoints_3d, when the backend has them
    notes: list[str] = field(default_factory=list)  # e.g. "detector found nothing: predicted box used"


class HandEstimator(Protocol):
    """A hand backend. ``estimate`` keeps the order of ``requests``."""

    name: str

    def estimate(self, requests: Sequence[ViewRequest]) -> list[HandObservation | None]: ...


@dataclass
class PoseDetections:
    """A pose model's people in one view: ``boxes_xyxy`` (M,4) view pixels, ``confidence`` (M,) per
    person, ``keypoints`` (M,17,2) COCO-17 keypoints in view pixels (x right, y down; NaN where the
    model gives none) and ``keypoint_confidence`` (M,17) in [0,1]."""

    boxes_xyxy: np.ndarray
    confidence: np.ndarray
    keypoints: np.ndarray
    keypoint_confidence: np.ndarray

    @classmethod
    def empty(cls) -> "PoseDetections":
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 17, 2)), np.zeros((0, 17)))

    def __len__(self) -> int:
        return len(self.confidence)


@dataclass
class Detections:
    """Hands found in one image."""

    boxes_xyxy: np.ndarray  # (n, 4) pixels
    is_right: np.ndarray  # (n,) bool
    confidence: np.ndarray  # (n,)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4)), np.zeros(0, dtype=bool), np.zeros(0))
