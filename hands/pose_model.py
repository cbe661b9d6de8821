"""The body keypoint model on the panorama: an ultralytics YOLO pose checkpoint (COCO-17 keypoints,
officially ``yolo11n-pose.pt``, at ``<models>/pose/``) run on perspective views cut from the 360
frame. Its people come back as :class:`PoseDetections` per view (hands/estimator.py), what
calibration/observations.py turns into panorama bearings for sync and markerless calibration.

Loading runs no pickled code: the checkpoint goes through hands/yolo_checkpoint.py with the classes
of the YOLOv8 / YOLO11 pose networks allowed (:data:`POSE_GLOBALS`); a file that needs anything else
is refused in one line naming the global. The network must have one class (person) and 17 keypoints
with a visibility channel (``kpt_shape`` [17, 3]), whose order is ultralytics' COCO order, the
order of ``data/skeletons.py`` ``COCO_KEYPOINTS``.

Inference is ultralytics' predict path without its predictor: each image is letterboxed as
``YOLO(path).predict`` letterboxes it (ultralytics' ``LetterBox``: scaled to ``imgsz`` on the long
side, the short side padded to a multiple of the stride with grey 114), images of one size go
through the network in batches, and ultralytics' non-maximum suppression keeps the people
(confidence ``conf``, IoU ``iou``; ultralytics' defaults 0.25 and 0.7). :func:`poses_from_output`
maps boxes and keypoints back to image pixels. Pixels are (column, row), x right, y down, integer
values at pixel centres: COCO's keypoint annotations are pixel indices, and the network learns them
scaled with the image, so undoing the letterbox's scale and padding gives pixel indices of the
image (the project's convention, geometry/views.py), with no half-pixel shift. Boxes are clipped to
the image as ultralytics clips them; keypoints are not (a keypoint the model places outside the view
keeps its direction, and its confidence says how sure the model is).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from omnimocap.data.skeletons import COCO_KEYPOINTS
from omnimocap.errors import ModelFilesMissing
from omnimocap.geometry.cameras import EquirectCamera
from omnimocap.geometry.views import WristView, render_views
from omnimocap.hands.estimator import PoseDetections
from omnimocap.hands.yolo_checkpoint import YOLO11_POSE_GLOBALS, YOLOV8_POSE_GLOBALS, load_yolo_checkpoint, train_imgsz

POSE_GLOBALS = YOLOV8_POSE_GLOBALS + YOLO11_POSE_GLOBALS
POSE_CONF = 0.25  # ultralytics' default predict confidence
POSE_IOU = 0.7  # ultralytics' default NMS IoU
POSE_MAX_DET = 300  # ultralytics' default
BATCH = 16  # views per forward pass
KPT_SHAPE = (len(COCO_KEYPOINTS), 3)
_WHAT = "the body keypoint model's"
_FIX = "use an official ultralytics COCO pose checkpoint such as yolo11n-pose.pt (omnimocap models download)"


def load_pose_checkpoint(path: str | Path) -> dict:
    """The pose checkpoint's top-level dict, read safely (see the module docstring); ``"model"`` is
    the network (float32, eval mode, on the CPU). Raises RestrictedUnpicklingError for a file that
    needs a global outside :data:`POSE_GLOBALS`, ModelFilesMissing for a missing file or one that
    is not a one-class COCO-17 pose model."""
    import torch

    path = Path(path)
    ckpt = load_yolo_checkpoint(path, POSE_GLOBALS, _WHAT, _FIX)
    model = ckpt["model"]
    head = model.model[-1] if isinstance(getattr(model, "model", None), torch.nn.Sequential) else None
    kpt_shape = tuple(getattr(model, "kpt_shape", None) or (getattr(model, "yaml", None) or {}).get("kpt_shape")
                      or getattr(head, "kpt_shape", None) or ())
    if kpt_shape != KPT_SHAPE:
        raise ModelFilesMissing(f"the pose model has keypoint shape {list(kpt_shape)}, a COCO body model has "
                                f"{list(KPT_SHAPE)}", path=path, fix=_FIX)
    nc = len(getattr(model, "names", {}) or {})
    if nc != 1:
        raise ModelFilesMissing(f"the pose model has {nc} classes, a body keypoint model has 1 (person)", path=path, fix=_FIX)
    return ckpt


@dataclass(frozen=True)
class Letterbox:
    """How an image of ``image_hw`` pixels sits in a network input of ``input_hw`` pixels: input
    pixel = image pixel * ``gain`` + ``pad`` (x, y), as ultralytics' ``LetterBox`` places it."""

    image_hw: tuple[int, int]
    input_hw: tuple[int, int]
    gain: tuple[float, float]
    pad: tuple[float, float]

    @classmethod
    def fit(cls, image_hw: tuple[int, int], input_hw: tuple[int, int]) -> "Letterbox":
        """The placement of an image letterboxed into ``input_hw`` (each side scaled and rounded,
        padding split evenly), the inverse ultralytics' ``scale_coords`` applies."""
        h0, w0 = image_hw
        h1, w1 = input_hw
        g = min(h1 / h0, w1 / w0)
        new_h, new_w = max(round(h0 * g), 1), max(round(w0 * g), 1)
        pad = (float(round((w1 - new_w) / 2 - 0.1)), float(round((h1 - new_h) / 2 - 0.1)))
        return cls((int(h0), int(w0)), (int(h1), int(w1)), (new_w / w0, new_h / h0), pad)

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Input pixels (...,2) (x, y) -> image pixels (...,2)."""
        xy = np.asarray(xy, dtype=np.float64)
        return (xy - np.asarray(self.pad)) / np.asarray(self.gain)


def poses_from_output(pred, letterboxes: Sequence[Letterbox], conf: float = POSE_CONF, iou: float = POSE_IOU,
                      max_det: int = POSE_MAX_DET) -> list[PoseDetections]:
    """People per image from the pose network's inference output ``pred`` (torch, (B, 4+1+51, A):
    per anchor the box centre x, y, width, height and the person score, then 17 times keypoint x, y
    and visibility, all in input pixels of the letterboxed batch), after ultralytics' non-maximum
    suppression; ``letterboxes[b]`` places image b in the input. Boxes (x0, y0, x1, y1) are clipped
    to the image, keypoints are image pixels (see the module docstring)."""
    from ultralytics.utils.nms import non_max_suppression

    kept = non_max_suppression(pred, conf, iou, max_det=max_det, nc=1)
    out = []
    for rows, box in zip(kept, letterboxes):
        rows = rows.detach().float().cpu().numpy().astype(np.float64)
        m = len(rows)
        h, w = box.image_hw
        xyxy = box.to_image(rows[:, :4].reshape(m, 2, 2)).reshape(m, 4)
        xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, w)
        xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, h)
        kpts = rows[:, 6:].reshape(m, *KPT_SHAPE)
        out.append(PoseDetections(xyxy, rows[:, 4].copy(), box.to_image(kpts[..., :2]), kpts[..., 2].copy()))
    return out


class PoseModel:
    """An ultralytics YOLO COCO-17 pose checkpoint, loaded safely and run on BGR images or on
    panorama views (see the module docstring). ``imgsz``: network input size (default the
    checkpoint's training size, 640 for the official weights)."""

    needs_images = True

    def __init__(self, weights: str | Path, device: str = "cpu", conf: float = POSE_CONF, iou: float = POSE_IOU,
                 imgsz: int | None = None):
        import torch

        self.weights = Path(weights)
        ckpt = load_pose_checkpoint(self.weights)
        self.device = torch.device(device)
        self.model = ckpt["model"].fuse(verbose=False).to(self.device)  # batch norms folded, as ultralytics predicts
        self.imgsz = imgsz if imgsz is not None else train_imgsz(ckpt)
        self.stride = int(max(float(torch.as_tensor(getattr(self.model, "stride", 32.0)).max()), 32.0))
        self.conf = conf
        self.iou = iou

    def _letterboxed(self, image_bgr: np.ndarray) -> np.ndarray:
        from ultralytics.data.augment import LetterBox

        return LetterBox(self.imgsz, auto=True, stride=self.stride)(image=image_bgr)

    def detect_images(self, images_bgr: Sequence[np.ndarray]) -> list[PoseDetections]:
        """People in each BGR uint8 image (H, W, 3); images of one size are batched."""
        import torch

        out: list[PoseDetections | None] = [None] * len(images_bgr)
        groups: dict[tuple, list[int]] = {}
        for i, img in enumerate(images_bgr):
            if np.ndim(img) != 3 or np.shape(img)[2] != 3:
                raise ValueError(f"expected BGR images (H, W, 3), got shape {np.shape(img)}")
            groups.setdefault(tuple(np.shape(img)), []).append(i)
        for idx in groups.values():
            for start in range(0, len(idx), BATCH):
                part = idx[start:start + BATCH]
                boxed = np.stack([self._letterboxed(np.ascontiguousarray(images_bgr[i], dtype=np.uint8)) for i in part])
                x = torch.from_numpy(boxed[..., ::-1].copy()).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
                with torch.inference_mode():
                    pred = self.model(x)
                pred = pred[0] if isinstance(pred, (tuple, list)) else pred
                boxes = [Letterbox.fit(tuple(np.shape(images_bgr[i])[:2]), tuple(boxed.shape[1:3])) for i in part]
                for i, det in zip(part, poses_from_output(pred, boxes, self.conf, self.iou)):
                    out[i] = det
        return out  # type: ignore[return-value]

    def detect_image(self, image_bgr: np.ndarray) -> PoseDetections:
        """People in one BGR uint8 image (H, W, 3): boxes and keypoints in its pixels."""
        return self.detect_images([image_bgr])[0]

    def detect_poses(self, frame_index: int, pano_bgr: np.ndarray | None, views: Sequence[WristView]) -> list[PoseDetections]:
        """One :class:`PoseDetections` per view of the equirectangular BGR frame ``pano_bgr``
        (``frame_index`` is not used: the image is all the model needs), keypoints in view pixels."""
        if not views:
            return []
        if pano_bgr is None:
            raise ValueError(f"the body keypoint model needs the panorama image of frame {frame_index}")
        pano_camera = EquirectCamera(int(pano_bgr.shape[1]), int(pano_bgr.shape[0]))
        images: list[np.ndarray | None] = [None] * len(views)
        by_size: dict[int, list[int]] = {}
        for i, view in enumerate(views):
            by_size.setdefault(view.size, []).append(i)
        for idx in by_size.values():
            for i, img in zip(idx, render_views(pano_bgr, pano_camera, [views[i] for i in idx])):
                images[i] = img
        return self.detect_images(images)  # type: ignore[arg-type]


def open_pose_detector(models_dir: str | Path | None = None, weights: str | Path | None = None,
                       device: str = "cpu") -> PoseModel | None:
    """The body keypoint model: ``weights`` when given (a missing file is a ModelFilesMissing
    error), else ``<models>/pose/yolo11n-pose.pt`` (``models_dir`` or the default models folder)
    when present, else None (the panorama then gives hands only)."""
    from omnimocap.hands.model_store import POSE_WEIGHTS, default_models_dir

    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelFilesMissing("the body keypoint model's weights are missing", path=path,
                                    fix="give the path of a pose checkpoint, or run `omnimocap models download` "
                                        f"for {POSE_WEIGHTS}")
        return PoseModel(path, device=device)
    path = (Path(models_dir).expanduser() if models_dir is not None else default_models_dir()) / POSE_WEIGHTS
    return PoseModel(path, device=device) if path.is_file() else None
