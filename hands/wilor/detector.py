"""WiLoR's hand detector and its association with the skeleton-predicted hand.

The detector is the authors' ultralytics YOLOv8 pose model (``detector.pt``): class 0 = left hand,
1 = right hand; only boxes, classes and confidences are used. Boxes are pixels (x0, y0, x1, y1) of
the image they were found in.

Defaults follow the official WiLoR ``demo.py`` (github.com/rolpotamias/WiLoR), which calls
``detector(img, conf=0.3, verbose=False)`` once per image: confidence 0.3, and the NMS IoU left at
ultralytics' default 0.7 (the 0.5 seen elsewhere is the Gradio demo's ``app.py``). Each call
letterboxes its image on its own (scaled to the checkpoint's training size, 640 by default, on
the long side, the short side padded to a multiple of the stride); :meth:`HandDetector.detect` batches only images of one size, for which one batched call
letterboxes exactly as per-image calls do.

Loading never unpickles arbitrary objects: :func:`load_detector_checkpoint` reads the file through
hands/yolo_checkpoint.py (an opcode scan against :data:`DETECTOR_GLOBALS`, then torch's weights-only
unpickler with exactly those classes allowed, no constructor call of the file's choosing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from omnimocap.errors import ModelFilesMissing
from omnimocap.hands.estimator import Detections  # noqa: F401  (the detector's result type)
from omnimocap.hands.yolo_checkpoint import (LEGACY_DATA_GLOBALS, YOLOV8_POSE_GLOBALS, checkpoint_globals,
                                             load_yolo_checkpoint, train_imgsz)

DETECTOR_CONF = 0.3  # official demo.py
DETECTOR_IOU = 0.7  # ultralytics' default NMS IoU: demo.py passes none
GATE_IOU = 0.1  # a detection overlapping the predicted box at least this much is a candidate ...
GATE_CENTER = 0.5  # ... as is one whose centre is within this fraction of the predicted box's diagonal

# Every global a YOLOv8-pose checkpoint (``model`` / ``ema`` entries, as ultralytics saves them)
# pickles besides tensors and plain containers; torch's own rebuild functions are allowed by
# weights-only loading itself.
DETECTOR_GLOBALS = YOLOV8_POSE_GLOBALS + LEGACY_DATA_GLOBALS
_WHAT = "the hand detector's"
_FIX = "use the official detector.pt (omnimocap models download)"


def detector_globals(path: str | Path, data: bytes | None = None) -> list[str]:
    """Names of the globals (besides torch's own allowed ones) the checkpoint's pickle refers to,
    found by scanning its opcodes; nothing is imported or run. ``data``: the file's bytes when
    already read. Raises ModelFilesMissing when the file is not a torch zip archive."""
    return checkpoint_globals(path, data, _WHAT)


def load_detector_checkpoint(path: str | Path) -> dict[str, Any]:
    """The detector checkpoint's top-level dict, read weights-only on the CPU with the YOLOv8-pose
    module classes allowed; ``"model"`` is the network (float32, eval mode). Raises
    RestrictedUnpicklingError naming the globals of a file that needs anything else, and
    ModelFilesMissing for a file that is not a detector checkpoint."""
    path = Path(path)
    ckpt = load_yolo_checkpoint(path, DETECTOR_GLOBALS, _WHAT, _FIX)
    nc = len(getattr(ckpt["model"], "names", {}) or {})
    if nc != 2:
        raise ModelFilesMissing(f"the detector has {nc} classes, a hand detector has 2 (left, right)", path=path,
                                fix=_FIX)
    return ckpt


class HandDetector:
    """The WiLoR YOLO hand detector (loaded safely, see the module docstring), run through
    ultralytics' pose predictor with the official demo's settings."""

    def __init__(self, weights: str | Path, device: str = "cpu", conf: float = DETECTOR_CONF, iou: float = DETECTOR_IOU):
        self.weights = Path(weights)
        ckpt = load_detector_checkpoint(self.weights)
        self.model = ckpt["model"]
        self.imgsz = train_imgsz(ckpt)
        self.device = device
        self.conf = conf
        self.iou = iou
        self._predictor = None

    def _predict(self, images: list[np.ndarray]) -> list:
        import torch

        threads = torch.get_num_threads()  # ultralytics' CPU device selection sets it to cores - 1 process-wide
        try:
            return self._predict_unguarded(images)
        finally:
            torch.set_num_threads(threads)

    def _predict_unguarded(self, images: list[np.ndarray]) -> list:
        if self._predictor is None:
            from ultralytics.models.yolo.pose import PosePredictor

            # What YOLO(path).predict(img, conf=..., verbose=False) runs: rect letterboxing, the checkpoint's imgsz.
            self._predictor = PosePredictor(overrides={
                "task": "pose", "mode": "predict", "imgsz": self.imgsz, "conf": self.conf, "iou": self.iou,
                "batch": 1, "rect": True, "save": False, "verbose": False, "device": self.device})
            self._predictor.setup_model(self.model, verbose=False)
        return self._predictor(source=images, model=self.model)

    def detect(self, images_bgr: Sequence[np.ndarray]) -> list[Detections]:
        """Detections for each BGR uint8 image: one batched call per image size, which letterboxes
        each image as the official demo's per-image call does."""
        out: list[Detections | None] = [None] * len(images_bgr)
        groups: dict[tuple, list[int]] = {}
        for i, img in enumerate(images_bgr):
            groups.setdefault(tuple(np.shape(img)), []).append(i)
        for idx in groups.values():
            for i, r in zip(idx, self._predict([images_bgr[i] for i in idx])):
                b = r.boxes
                out[i] = Detections(
                    boxes_xyxy=b.xyxy.detach().cpu().numpy().astype(np.float64),
                    is_right=b.cls.detach().cpu().numpy().astype(int) == 1,
                    confidence=b.conf.detach().cpu().numpy().astype(np.float64),
                )
        return out  # type: ignore[return-value]


@dataclass
class Association:
    """The box a hand is reconstructed from, and why."""

    box_xyxy: np.ndarray  # (4,) pixels
    is_right: bool  # the skeleton's side: it knows which arm the view follows
    confidence: float  # detector confidence, 0 when the predicted box is used
    detected: bool
    notes: list[str] = field(default_factory=list)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) against boxes (n, 4)."""
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[0], b[:, 0])
    y0 = np.maximum(a[1], b[:, 1])
    x1 = np.minimum(a[2], b[:, 2])
    y1 = np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: np.clip(r[..., 2] - r[..., 0], 0, None) * np.clip(r[..., 3] - r[..., 1], 0, None)
    union = area(np.asarray(a, dtype=np.float64)) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def associate(dets: Detections, predicted_box: np.ndarray, side: str) -> Association:
    """Choose the detection that belongs to the skeleton-predicted hand.

    Candidates overlap the predicted box (IoU >= GATE_IOU) or have their centre within GATE_CENTER
    of its diagonal. Among them a detection of the predicted side wins over one of the other side,
    then higher IoU, then the nearer centre. With no candidate the predicted box is used.

    Handedness: the skeleton's side always wins. When the chosen detection's class disagrees (no
    candidate of the skeleton's side), its box is still used, as evidence of where the hand is, but
    the hand is reconstructed as the skeleton's side (mirrored when left) and labelled so, with a
    note. Why: the view is centred on that side's wrist, which the body tracker follows along the
    whole arm, while the detector judges a small crop, where the back of one hand looks like the
    palm of the other; choosing the detector's side would mirror the crop and return the other
    hand's pose (about 180 degrees off) for this wrist. Consequently the wilor backend never hands
    the pipeline a label that disagrees with the request's side."""
    pred = np.asarray(predicted_box, dtype=np.float64)
    want_right = side == "right"
    if len(dets.boxes_xyxy):
        iou = box_iou(pred, dets.boxes_xyxy)
        diag = float(np.hypot(pred[2] - pred[0], pred[3] - pred[1])) or 1.0
        centers = (dets.boxes_xyxy[:, :2] + dets.boxes_xyxy[:, 2:]) / 2
        dist = np.linalg.norm(centers - (pred[:2] + pred[2:]) / 2, axis=1) / diag
        ok = (iou >= GATE_IOU) | (dist <= GATE_CENTER)
        if ok.any():
            same = dets.is_right == want_right
            order = np.lexsort((dist, -iou, ~same))  # last key is the primary one
            best = int(next(i for i in order if ok[i]))
            notes = []
            if not same[best]:
                found = "right" if dets.is_right[best] else "left"
                notes.append(f"detector classified the hand as {found}, skeleton says {side}: skeleton side used")
            return Association(dets.boxes_xyxy[best].copy(), want_right, float(dets.confidence[best]), True, notes)
    note = "detector found no hand near the predicted one: predicted box used"
    return Association(pred.copy(), want_right, 0.0, False, [note])
