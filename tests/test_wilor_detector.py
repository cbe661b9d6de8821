"""Hand detector loading/running, association with the predicted hand, and the wilor backend."""

from __future__ import annotations

import numpy as np
import pytest

from omnimocap.geometry.cameras import PinholeCamera
from omnimocap.hands.estimator import HandEstimator, ViewRequest
from omnimocap.hands.wilor.detector import Detections, HandDetector, associate, box_iou


def test_detector_loads_and_runs_batched(detector_pt):
    det = HandDetector(detector_pt, conf=0.0)  # random weights: accept anything so boxes come back
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) for _ in range(2)]
    out = det.detect(images)
    assert len(out) == 2
    for d in out:
        assert d.boxes_xyxy.shape == (len(d.is_right), 4) and d.confidence.shape == d.is_right.shape
        assert d.is_right.dtype == bool
        assert np.all(d.boxes_xyxy[:, 2] >= d.boxes_xyxy[:, 0])
    assert sum(len(d.is_right) for d in out) > 0
    assert HandDetector(detector_pt).detect([]) == []


def _dets(boxes, right, conf):
    return Detections(np.asarray(boxes, float), np.asarray(right, bool), np.asarray(conf, float))


def test_association_prefers_overlap_and_side():
    pred = np.array([100, 100, 150, 150.0])
    dets = _dets([[0, 0, 30, 30], [105, 102, 155, 148], [98, 100, 148, 152]], [True, False, True], [0.9, 0.8, 0.6])
    a = associate(dets, pred, "right")
    np.testing.assert_array_equal(a.box_xyxy, [98, 100, 148, 152])  # the right hand, despite lower confidence
    assert a.detected and a.is_right and a.confidence == 0.6 and not a.notes
    a = associate(dets, pred, "left")
    np.testing.assert_array_equal(a.box_xyxy, [105, 102, 155, 148])


def test_association_notes_handedness_disagreement_and_fallback():
    pred = np.array([100, 100, 150, 150.0])
    a = associate(_dets([[102, 98, 149, 151]], [False], [0.7]), pred, "right")
    assert a.detected and a.is_right and "left" in a.notes[0]
    far = associate(_dets([[300, 300, 340, 340]], [True], [0.99]), pred, "right")
    assert not far.detected and far.confidence == 0.0 and "predicted box used" in far.notes[0]
    np.testing.assert_array_equal(far.box_xyxy, pred)
    assert not associate(Detections.empty(), pred, "left").detected


def test_box_iou():
    np.testing.assert_allclose(box_iou(np.array([0, 0, 2, 2.0]), [[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]]), [1 / 7, 1, 0])


def test_backend_matches_reconstruct(shared):
    from omnimocap.hands.wilor import load_wilor, reconstruct
    from omnimocap.hands.wilor.backend import WilorEstimator

    folder = shared("fixtures", "wilor_parity")
    model = load_wilor(folder / "wilor_tiny.ckpt", folder / "model_config.yaml")
    photo = np.load(folder / "pipeline_inputs.npz")["image_0"]
    cam = PinholeCamera(fx=200.0, fy=200.0, cx=128.0, cy=128.0, width=256, height=256)
    views = [np.ascontiguousarray(photo[100:356, 200:456]), np.ascontiguousarray(photo[80:336, 0:256])]
    boxes = [np.array([65, 60, 195, 180.0]), np.array([50, 135, 140, 265.0])]
    requests = [ViewRequest(frame_index=0, t_session=0.0, person_id=1, side=s, R_pano_view=np.eye(3), camera=cam,
                            predicted_wrist_view=np.array([0, 0, 0.5]), predicted_box_xyxy=b, image_bgr=v)
                for s, b, v in zip(("right", "left"), boxes, views)]
    est = WilorEstimator(model)
    conforming: HandEstimator = est  # static protocol check; at runtime the name is what callers use
    assert conforming.name == "wilor"
    obs = est.estimate(requests)
    for o, r in zip(obs, requests):
        (ref,) = reconstruct(model, r.image_bgr, r.predicted_box_xyxy[None], np.array([r.side == "right"]))
        assert o.is_right == (r.side == "right") and o.confidence == 0.0 and o.notes
        np.testing.assert_allclose(o.keypoints_2d, ref.keypoints_2d_full, atol=1e-3)
        np.testing.assert_allclose(o.keypoints_3d, ref.keypoints_3d, atol=1e-6)
        np.testing.assert_allclose(o.global_orient, ref.global_orient, atol=1e-5)
        np.testing.assert_allclose(o.cam_t_view, ref.cam_t_full, atol=1e-5)
        assert o.hand_pose.shape == (15, 3, 3) and o.vertices.shape == (778, 3)
        side = o.box_xyxy[2] - o.box_xyxy[0]
        assert side == pytest.approx(ref.box_size) and o.box_xyxy[3] - o.box_xyxy[1] == pytest.approx(side)
