"""When the detector's class disagrees with the skeleton's side, the skeleton's side wins (see
``omnimocap.hands.wilor.detector.associate``); a detection of the skeleton's side wins over one of
the other side. Runs the wilor backend with a tiny random network and a stub detector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnimocap.geometry.cameras import PinholeCamera
from omnimocap.hands.estimator import ViewRequest
from omnimocap.hands.wilor import reconstruct
from omnimocap.hands.wilor.backend import WilorEstimator
from omnimocap.hands.wilor.detector import Detections, associate
from omnimocap.hands.wilor.model import ManoLayer, WilorDims, WilorModel

PREDICTED = np.array([90, 80, 170, 170.0])
SAME_SIDE_BOX = np.array([95, 86, 165, 166.0])  # overlaps the prediction less ...
OTHER_SIDE_BOX = np.array([91, 81, 169, 169.0])  # ... than this one, which is also more confident


def tiny_model(seed: int = 0) -> WilorModel:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    w = rng.random((778, 16))
    mano = ManoLayer.from_arrays({
        "v_template": rng.normal(size=(778, 3)) * 0.05, "shapedirs": rng.normal(size=(778, 3, 10)) * 1e-3,
        "posedirs": rng.normal(size=(135, 2334)) * 1e-3, "J_regressor": rng.random((16, 778)) / 778,
        "lbs_weights": w / w.sum(1, keepdims=True), "parents": np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]),
    })
    model = WilorModel(WilorDims(160, 1, 2, 16, 192, 16, 10, (1, 2), 256), mano).eval()
    with torch.no_grad():
        model.backbone.init_cam.fill_(1.0)
    return model


class StubDetector:
    def __init__(self, dets: Detections):
        self.dets = dets

    def detect(self, images):
        return [self.dets for _ in images]


def _request(side: str, image: np.ndarray) -> ViewRequest:
    cam = PinholeCamera(fx=200.0, fy=200.0, cx=128.0, cy=128.0, width=256, height=256)
    return ViewRequest(frame_index=0, t_session=0.0, person_id=1, side=side, R_pano_view=np.eye(3), camera=cam,
                       predicted_wrist_view=np.array([0, 0, 0.5]), predicted_box_xyxy=PREDICTED, image_bgr=image)


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(1).integers(0, 255, (256, 256, 3), dtype=np.uint8)


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_detection_of_the_skeletons_side_wins(side):
    dets = Detections(np.stack([OTHER_SIDE_BOX, SAME_SIDE_BOX]), np.array([side == "left", side == "right"]),
                      np.array([0.95, 0.5]))
    a = associate(dets, PREDICTED, side)
    np.testing.assert_array_equal(a.box_xyxy, SAME_SIDE_BOX)
    assert a.is_right == (side == "right") and a.confidence == 0.5 and not a.notes


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_disagreeing_detection_gives_its_box_and_the_skeleton_keeps_the_side(side, image):
    model = tiny_model()
    detector_says_right = side == "left"
    est = WilorEstimator(model, StubDetector(Detections(OTHER_SIDE_BOX[None], np.array([detector_says_right]),
                                                        np.array([0.9]))))
    (obs,) = est.estimate([_request(side, image)])
    assert obs.is_right == (side == "right") and obs.confidence == pytest.approx(0.9)
    assert "skeleton side used" in obs.notes[0]
    (as_skeleton,) = reconstruct(model, image, OTHER_SIDE_BOX[None], np.array([side == "right"]))
    (as_detector,) = reconstruct(model, image, OTHER_SIDE_BOX[None], np.array([detector_says_right]))
    np.testing.assert_allclose(obs.vertices, as_skeleton.vertices, atol=1e-6)
    np.testing.assert_allclose(obs.global_orient, as_skeleton.global_orient, atol=1e-6)
    assert np.abs(obs.vertices - as_detector.vertices).max() > 1e-3  # the choice changes the hand
