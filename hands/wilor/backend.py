"""WiLoR as a :class:`~omnimocap.hands.estimator.HandEstimator`.

For a batch of wrist-centred views: detect hands in all views at once, pick the detection that
belongs to the skeleton-predicted hand, crop, and run the reconstructor once for the whole batch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from omnimocap.hands.estimator import HandObservation, ViewRequest
from omnimocap.hands.wilor import PRECISIONS, WilorModel, network_autocast, postprocess
from omnimocap.hands.wilor.crop import crop_boxes, crop_image, normalize_crops
from omnimocap.hands.wilor.detector import Detections, HandDetector, associate


class WilorEstimator:
    """Hand backend "wilor". ``detector=None`` skips detection and crops the predicted boxes.
    ``precision``: "fp32", "bf16" or "fp16" (CUDA) autocast for the network, MANO kept in float32
    (see ``omnimocap.hands.wilor.network_autocast``); ``from_models_dir`` picks fp16 on CUDA."""

    name = "wilor"
    needs_images = True

    @classmethod
    def from_models_dir(cls, models_dir=None, device: str = "cpu") -> "WilorEstimator":
        """Load the checkpoint and the detector from the models directory (layout of
        ``omnimocap models``); a missing file raises the message ``models status`` prints."""
        from omnimocap.hands.model_store import require_wilor_files
        from omnimocap.hands.wilor import load_wilor

        paths = require_wilor_files(models_dir)
        detector = HandDetector(paths["detector"], device=device)  # small: a refused file stops before the 2.4 GB load
        model = load_wilor(checkpoint=paths["checkpoint"], model_config=paths["model_config"],
                           mean_params=paths["mean_params"], device=device)
        return cls(model, detector, precision="fp16" if torch.device(device).type == "cuda" else "fp32")

    def __init__(self, model: WilorModel, detector: HandDetector | None = None, rescale_factor: float = 2.0,
                 precision: str = "fp32"):
        self.model = model
        self.detector = detector
        self.rescale_factor = rescale_factor
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision

    def estimate(self, requests: Sequence[ViewRequest]) -> list[HandObservation | None]:
        if not requests:
            return []
        if any(r.image_bgr is None for r in requests):
            raise ValueError("the wilor backend needs ViewRequest.image_bgr for every view")
        images = [r.image_bgr for r in requests]
        dets = self.detector.detect(images) if self.detector is not None else [Detections.empty() for _ in requests]
        assoc = [associate(d, r.predicted_box_xyxy, r.side) for d, r in zip(dets, requests)]
        if self.detector is None:
            for a in assoc:
                a.notes = ["no detector: predicted box used"]
        boxes = [crop_boxes(a.box_xyxy[None], np.array([a.is_right]), self.rescale_factor, self.model.bbox_shape)[0]
                 for a in assoc]
        crops = np.stack([crop_image(img, b, self.model.image_size) for img, b in zip(images, boxes)])
        p = next(self.model.parameters())
        x = torch.from_numpy(normalize_crops(crops, self.model.image_mean, self.model.image_std)).to(p.device, p.dtype)
        with torch.inference_mode(), network_autocast(self.precision, p.device):
            out = self.model(x)
        observations: list[HandObservation | None] = []
        for i, (req, a, box) in enumerate(zip(requests, assoc, boxes)):
            (hand,) = postprocess(self.model, {k: v[i : i + 1] for k, v in out.items()}, [box],
                                  (req.image_bgr.shape[1], req.image_bgr.shape[0]))
            observations.append(HandObservation(
                is_right=hand.is_right, global_orient=hand.global_orient, hand_pose=hand.hand_pose,
                betas=hand.betas, keypoints_3d=hand.keypoints_3d, keypoints_2d=hand.keypoints_2d_full,
                box_xyxy=box.xyxy(), cam_crop=hand.cam_crop, cam_t_view=hand.cam_t_full,
                confidence=a.confidence if a.detected else 0.0, vertices=hand.vertices, notes=list(a.notes),
            ))
        return observations
