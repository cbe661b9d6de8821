"""WiLoR's hand detector and its association with the skeleton-predicted hand.

The detector is the authors' ultralytics YOLOv8 pose model (``detector.pt``): class 0 = left hand,
1 = right hand; the original demo's confidence 0.3 and NMS IoU 0.5; only boxes and classes are used.
Boxes are pixels (x0, y0, x1, y1) of the image they were found in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

DETECTOR_CONF = 0.3
DETECTOR_IOU = 0.5
GATE_IOU = 0.1  # a detection overlapping the predicted box at least this much is a candidate ...
GATE_CENTER = 0.5  # ... as is one whose centre is within this fraction of the predicted box's diagonal


@dataclass
class Detections:
    """Hands found in one image."""

    boxes_xyxy: np.ndarray  # (n, 4) pixels
    is_right: np.ndarray  # (n,) bool
    confidence: np.ndarray  # (n,)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4)), np.zeros(0, dtype=bool), np.zeros(0))


class HandDetector:
    """The WiLoR YOLO hand detector, run on a batch of images."""

    def __init__(self, weights: str | Path, device: str = "cpu", conf: float = DETECTOR_CONF, iou: float = DETECTOR_IOU):
        from ultralytics import YOLO

        self.weights = Path(weights)
        self.model = YOLO(str(weights))
        self.device = device
        self.conf = conf
        self.iou = iou

    def detect(self, images_bgr: Sequence[np.ndarray]) -> list[Detections]:
        """Detections for each BGR uint8 image, one batched call."""
        if not images_bgr:
            return []
        results = self.model.predict(list(images_bgr), conf=self.conf, iou=self.iou, device=self.device, verbose=False)
        out = []
        for r in results:
            b = r.boxes
            out.append(Detections(
                boxes_xyxy=b.xyxy.detach().cpu().numpy().astype(np.float64),
                is_right=b.cls.detach().cpu().numpy().astype(int) == 1,
                confidence=b.conf.detach().cpu().numpy().astype(np.float64),
            ))
        return out


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
    then higher IoU, then the nearer centre. With no candidate the predicted box is used."""
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
