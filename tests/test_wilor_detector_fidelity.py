"""The detection path against ultralytics' own predictor, box by box.

tests/data/wilor_detector_fidelity.npz holds what ``YOLO(path)(image, conf=0.3)`` (the official
demo's call, once per image) returned for the fixture detector and images of tests/tools/
detector_fixture.py; HandDetector must return the same boxes, scores and classes with its defaults,
while batching the images (two of them share a size, the others do not)."""

from __future__ import annotations

import numpy as np
import pytest

from omnimocap.hands.wilor.detector import DETECTOR_CONF, DETECTOR_IOU, HandDetector
from tests.tools import detector_fixture as fx

STORED_THREADS = 2


@pytest.fixture(scope="module", autouse=True)
def stored_threads():
    """torch's thread count the stored outputs were computed with, for the whole module: float32
    convolutions sum in another order on another number of threads (the detector built and run on
    one thread moved two scores by 1.5e-4 and a box by 0.08 px, and two detections whose scores are
    1e-5 apart changed places)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(STORED_THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fixture_detector(tmp_path_factory):
    return fx.build_detector(tmp_path_factory.mktemp("detector") / "detector.pt")


@pytest.fixture(scope="module")
def images():
    return fx.fixture_images()


def _expected():
    with np.load(fx.FIXTURE) as f:
        return [{k: f[f"{k}_{i}"] for k in ("boxes", "scores", "classes")} for i in range(len(fx.IMAGE_SHAPES))]


def _assert_same(ours, expected):
    """The same detections, each matched to the expected one with the nearest box: ultralytics lists them
    by score, and two scores a few 1e-5 apart change places with the sums' order."""
    assert len(ours.boxes_xyxy) == len(expected["boxes"])
    boxes = np.asarray(ours.boxes_xyxy)
    match = [int(np.argmin(np.abs(boxes - b).max(axis=1))) for b in expected["boxes"]]
    assert sorted(match) == list(range(len(match)))
    np.testing.assert_array_equal(np.asarray(ours.is_right)[match], expected["classes"] == 1)
    np.testing.assert_allclose(boxes[match], expected["boxes"], atol=0.05)
    np.testing.assert_allclose(np.asarray(ours.confidence)[match], expected["scores"], atol=1e-4)


def test_defaults_are_the_official_demo_thresholds():
    assert DETECTOR_CONF == 0.3 and DETECTOR_IOU == 0.7


def test_detections_match_the_stored_ultralytics_outputs(fixture_detector, images):
    expected = _expected()
    assert sum(len(e["scores"]) for e in expected) > 20 and any(len(e["scores"]) == 0 for e in expected)
    assert all(set(np.unique(e["classes"])) <= {0, 1} for e in expected)
    assert {0, 1} <= set(np.concatenate([e["classes"] for e in expected]))
    ours = HandDetector(fixture_detector).detect(images)
    for o, e in zip(ours, expected):
        _assert_same(o, e)


def test_detections_match_ultralytics_run_now(fixture_detector, images):
    live = fx.ultralytics_detections(fixture_detector, images, conf=DETECTOR_CONF)
    ours = HandDetector(fixture_detector).detect(images[::-1])[::-1]  # order and batching do not matter
    for o, e in zip(ours, live):
        _assert_same(o, e)


def test_thresholds_change_the_result(fixture_detector, images):
    """The fixture pins conf and IoU: other values give other boxes."""
    expected = _expected()
    n = [len(e["scores"]) for e in expected]
    looser = HandDetector(fixture_detector, conf=0.25).detect(images)
    tighter_nms = HandDetector(fixture_detector, iou=0.5).detect(images)
    assert sum(len(d.confidence) for d in looser) > sum(n)
    assert sum(len(d.confidence) for d in tighter_nms) < sum(n)


def test_mixed_sizes_in_one_ultralytics_call_letterbox_differently(fixture_detector, images):
    """Why detect() groups images by size: one ultralytics call over images of different sizes pads
    them all to a 640 square, unlike the demo's per-image call, and changes the boxes."""
    from ultralytics import YOLO

    yolo = YOLO(str(fixture_detector), task="pose")
    mixed = yolo([images[0], images[3]], conf=DETECTOR_CONF, verbose=False)
    expected = _expected()
    r = mixed[0].boxes
    same = len(r.conf) == len(expected[0]["scores"]) and np.allclose(r.conf.numpy(), expected[0]["scores"], atol=1e-4)
    assert not same


def test_detection_leaves_the_torch_thread_count_alone(fixture_detector, images):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        HandDetector(fixture_detector).detect(images[:1])
        assert torch.get_num_threads() == 2  # ultralytics' device set-up would leave cores - 1
    finally:
        torch.set_num_threads(before)
