"""The body keypoint model (hands/pose_model.py): a YOLO11 pose network built from ultralytics' YAML
with random weights and saved as ultralytics saves checkpoints, loaded without running pickled
code, run on panorama views; its post-processing pinned to hand-made network outputs and to
ultralytics' own predictor; harmful files refused in one line; the model store's entry."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from omnimocap.apps.cli import main
from omnimocap.data.skeletons import COCO_FLIP, COCO_KEYPOINTS
from omnimocap.errors import ModelFilesMissing
from omnimocap.geometry.cameras import EquirectCamera
from omnimocap.geometry.views import render_views, view_from_yaw_pitch
from omnimocap.hands import model_store
from omnimocap.hands.estimator import PoseDetections
from omnimocap.hands.model_files import RestrictedUnpicklingError
from omnimocap.hands.pose_model import (POSE_GLOBALS, Letterbox, PoseModel, load_pose_checkpoint, open_pose_detector,
                                        poses_from_output)
from omnimocap.hands.yolo_checkpoint import LEGACY_DATA_GLOBALS, checkpoint_globals

IMGSZ = 160  # small network input: the tests check geometry and types, not accuracy


def _save_pose_checkpoint(path: Path, cfg: str = "yolo11n-pose.yaml", **kwargs) -> Path:
    """A pose network from ultralytics' YAML, one class (person), random weights, saved by
    ``YOLO.save`` (ultralytics' checkpoint dict). The class bias is raised so that the untrained
    network reports people (ultralytics initialises it for a 1 % prior)."""
    from ultralytics import YOLO
    from ultralytics.nn.tasks import PoseModel as UltralyticsPoseModel

    torch.manual_seed(0)
    yolo = YOLO(cfg)
    yolo.model = UltralyticsPoseModel(cfg, nc=1, verbose=False, **kwargs)
    yolo.model.names = {0: "person"}
    for branch in yolo.model.model[-1].cv3:
        torch.nn.init.constant_(branch[-1].bias, 2.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    yolo.save(path)
    return path


@pytest.fixture(scope="module")
def pose_pt(tmp_path_factory):
    """yolo11n-pose with random weights, built with network access made to fail loudly."""

    def no_network(*args, **kwargs):
        raise AssertionError("building the pose model tried to reach the network")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", no_network)
        return _save_pose_checkpoint(tmp_path_factory.mktemp("pose") / "yolo11n-pose.pt")


@pytest.fixture(scope="module")
def pose_model(pose_pt):
    return PoseModel(pose_pt, imgsz=IMGSZ)


@pytest.fixture(scope="module")
def pano():
    from tests.conftest import shared_path

    img = cv2.imread(str(shared_path("data", "pano", "demo_equirec.png")))
    assert img is not None
    return img


class _Payload:
    """Unpickling calls os.system, which creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class _ConstructorCall:
    """A pickled call of an allowed class with constructor arguments."""

    def __reduce__(self):
        from ultralytics.nn.tasks import PoseModel as UltralyticsPoseModel

        return UltralyticsPoseModel, ("yolo11n-pose.yaml",)


class _ForbiddenMethod:
    """``getattr(Detect, "__init__")``: the getattr form old checkpoints use, on another name."""

    def __reduce__(self):
        from ultralytics.nn.modules.head import Detect

        return getattr, (Detect, "__init__")


class _Reduce:
    """A pickled call of ``func`` with ``args``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class _ObjectScalar:
    """A numpy scalar of object dtype (numpy's pickle of it would hand over an arbitrary object)."""

    def __reduce__(self):
        return np.float64(0).__reduce__()[0], (np.dtype(object), b"\0" * 8)


# --- the keypoint order ----------------------------------------------------------------------------


def test_coco_keypoint_order_is_ultralytics_order():
    import yaml
    from ultralytics.utils import ROOT

    coco = yaml.safe_load((ROOT / "cfg" / "datasets" / "coco-pose.yaml").read_text())
    assert tuple(coco["kpt_names"][0]) == COCO_KEYPOINTS
    assert tuple(coco["flip_idx"]) == COCO_FLIP
    assert coco["kpt_shape"] == [17, 3]


# --- loading ---------------------------------------------------------------------------------------


def test_a_genuine_checkpoint_needs_only_the_allowed_globals(pose_pt):
    assert set(checkpoint_globals(pose_pt)) <= set(POSE_GLOBALS)
    ckpt = load_pose_checkpoint(pose_pt)
    model = ckpt["model"]
    assert type(model).__name__ == "PoseModel" and next(model.parameters()).dtype == torch.float32
    assert not model.training and model.names == {0: "person"}


def test_a_checkpoint_of_an_earlier_ultralytics_loads(tmp_path, pose_pt):
    """Earlier ultralytics versions pickle the head's ``Detect.forward``, numpy metrics, the settings
    namespace and paths."""
    from ultralytics.nn.modules.head import Detect
    from ultralytics.utils import IterableSimpleNamespace

    ckpt = torch.load(pose_pt, weights_only=False)  # our own trusted test file
    ckpt["model"].model[-1].detect = Detect.forward
    ckpt["model"].args = IterableSimpleNamespace(imgsz=96, data="coco-pose.yaml")
    ckpt["train_metrics"] = {"metrics/mAP50(P)": np.float64(0.5), "fitness": np.float32(0.25)}
    ckpt["train_args"] = {"imgsz": 96, "save_dir": Path("runs/pose/train")}
    path = tmp_path / "old.pt"
    torch.save(ckpt, path)
    assert {"builtins.getattr", "ultralytics.nn.modules.head.Detect", "numpy.dtype",
            "ultralytics.utils.IterableSimpleNamespace"} <= set(checkpoint_globals(path))
    loaded = load_pose_checkpoint(path)
    assert loaded["model"].model[-1].detect is Detect.forward
    assert loaded["model"].args.imgsz == 96 and loaded["model"].args.data == "coco-pose.yaml"
    assert loaded["train_metrics"] == {"metrics/mAP50(P)": 0.5, "fitness": 0.25}
    assert loaded["train_args"]["save_dir"] == Path("runs/pose/train")
    assert PoseModel(path).imgsz == 96  # the checkpoint's training size by default


def test_harmful_checkpoints_are_refused_in_one_line_and_run_nothing(tmp_path, pose_pt):
    from ultralytics.utils import IterableSimpleNamespace

    marker = tmp_path / "payload_ran"
    harmful = tmp_path / "harmful" / "yolo11n-pose.pt"
    harmful.parent.mkdir()
    torch.save({"model": _Payload(marker), "date": "2024-10-01"}, harmful)
    for load in (PoseModel, lambda p: open_pose_detector(weights=p), load_pose_checkpoint):
        with pytest.raises(RestrictedUnpicklingError) as err:
            load(harmful)
        line = str(err.value)
        assert "global posix.system" in line and str(harmful) in line and "\n" not in line
    hidden = tmp_path / "hidden.pt"  # a genuine model with one more entry carrying the payload
    ckpt = torch.load(pose_pt, weights_only=False)
    ckpt["train_args"] = {"imgsz": 640, "hook": _Payload(marker)}
    torch.save(ckpt, hidden)
    with pytest.raises(RestrictedUnpicklingError, match="global posix.system"):
        PoseModel(hidden)
    calls = ((_ConstructorCall(), "PoseModel called with constructor arguments"),
             (_ForbiddenMethod(), "builtins.getattr called for Detect.__init__"),
             (_ObjectScalar(), "numpy.dtype called for"),
             (_Reduce(type(Path()), 1), "pathlib path called with parts that are not strings"),
             (_Reduce(IterableSimpleNamespace, 1), "IterableSimpleNamespace called with arguments"))
    for i, (payload, reason) in enumerate(calls):
        path = tmp_path / f"call{i}.pt"
        torch.save({"model": payload}, path)
        assert set(checkpoint_globals(path)) <= set(POSE_GLOBALS + LEGACY_DATA_GLOBALS)  # the scan passes ...
        with pytest.raises(RestrictedUnpicklingError, match=reason):
            PoseModel(path)  # ... and the unpickler refuses
    assert not marker.exists()


def test_models_verify_refuses_a_harmful_pose_file(tmp_path, capsys):
    marker = tmp_path / "payload_ran"
    models = tmp_path / "models"
    (models / "pose").mkdir(parents=True)
    torch.save({"model": _Payload(marker)}, models / model_store.POSE_WEIGHTS)
    capsys.readouterr()
    assert main(["models", "verify", "--models", str(models)]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if model_store.POSE_WEIGHTS in line]
    assert len(lines) == 1 and "FAILED" in lines[0] and "global posix.system" in lines[0]
    assert not marker.exists()


def test_models_that_are_no_coco_body_model_are_refused(tmp_path, detector_pt):
    with pytest.raises(ModelFilesMissing, match="2 classes, a body keypoint model has 1"):
        PoseModel(detector_pt)  # WiLoR's hand detector: a pose model, but of hands
    hand21 = _save_pose_checkpoint(tmp_path / "hand21.pt", "yolov8n-pose.yaml", data_kpt_shape=(21, 3))
    with pytest.raises(ModelFilesMissing, match=r"keypoint shape \[21, 3\]"):
        PoseModel(hand21)
    (tmp_path / "text.pt").write_text("not a model")
    with pytest.raises(ModelFilesMissing, match="not a torch model archive"):
        PoseModel(tmp_path / "text.pt")


# --- running ---------------------------------------------------------------------------------------


def test_detect_poses_on_panorama_views(pose_model, pano):
    from omnimocap.calibration.observations import body_bearings_from_detections

    views = [view_from_yaw_pitch(yaw, pitch, 90.0, 128) for yaw, pitch in ((0, 0), (90, 0), (-120, 20))]
    views.append(view_from_yaw_pitch(180, -10, 70.0, 96))  # a second view size in the same call
    dets = pose_model.detect_poses(7, pano, views)
    assert len(dets) == len(views) and all(isinstance(d, PoseDetections) for d in dets)
    assert sum(len(d) for d in dets) > 0
    for view, d in zip(views, dets):
        m = len(d)
        assert d.boxes_xyxy.shape == (m, 4) and d.confidence.shape == (m,)
        assert d.keypoints.shape == (m, 17, 2) and d.keypoint_confidence.shape == (m, 17)
        for a in (d.boxes_xyxy, d.confidence, d.keypoints, d.keypoint_confidence):
            assert a.dtype == np.float64 and np.all(np.isfinite(a))
        assert np.all((d.boxes_xyxy >= 0) & (d.boxes_xyxy <= view.size))  # view pixels
        assert np.all(d.boxes_xyxy[:, :2] <= d.boxes_xyxy[:, 2:])
        assert np.all((d.confidence >= pose_model.conf) & (d.confidence <= 1))
        assert np.all((d.keypoint_confidence >= 0) & (d.keypoint_confidence <= 1))
    # The same views, rendered here and detected as images, give the same people.
    same = [v for v in views if v.size == 128]
    images = render_views(pano, EquirectCamera(pano.shape[1], pano.shape[0]), same)
    for d, e in zip(dets, pose_model.detect_images(list(images))):
        assert len(d) == len(e) and np.allclose(d.keypoints, e.keypoints, atol=1e-3)
    # What calibration makes of them: unit panorama bearings.
    found = body_bearings_from_detections(7, views, dets, min_confidence=0.0)
    assert len(found) > 0 and np.all(found.frame == 7)
    norms = np.linalg.norm(found.bearing, axis=-1)
    assert np.allclose(norms[np.isfinite(norms)], 1.0)
    assert pose_model.detect_poses(7, pano, []) == []
    with pytest.raises(ValueError, match="needs the panorama image"):
        pose_model.detect_poses(7, None, views)


def test_detect_image_on_a_wide_image(pose_pt, pano, device):
    """A 2:1 image is letterboxed with padding: boxes stay inside the image it was given."""
    small = cv2.resize(pano, (256, 128), interpolation=cv2.INTER_AREA)
    d = PoseModel(pose_pt, device=device, imgsz=IMGSZ).detect_image(small)
    assert len(d) > 0 and d.keypoints.shape == (len(d), 17, 2)
    assert np.all((d.boxes_xyxy[:, 0::2] >= 0) & (d.boxes_xyxy[:, 0::2] <= 256))
    assert np.all((d.boxes_xyxy[:, 1::2] >= 0) & (d.boxes_xyxy[:, 1::2] <= 128))


# --- post-processing -------------------------------------------------------------------------------


def _raw_output() -> torch.Tensor:
    """A network output (1, 4+1+51, 3) for a 90 x 200 image in a 160 x 320 input: person 0 with its
    box centred at (100, 60), 40 x 200 input pixels, score 0.9, keypoint k at (80 + k, 40 + 2k),
    visibility 0.8, except keypoint 16 at (-20, 150); person 1 the same box 2 pixels over with
    score 0.6 (suppressed); person 2 with score 0.1 (under the threshold)."""
    raw = torch.zeros(1, 56, 3)
    k = torch.arange(17, dtype=torch.float32)
    kx, ky = 80.0 + k, 40.0 + 2.0 * k
    kx[16], ky[16] = -20.0, 150.0
    for a, (cx, score) in enumerate(((100.0, 0.9), (102.0, 0.6), (200.0, 0.1))):
        raw[0, :5, a] = torch.tensor([cx, 60.0, 40.0, 200.0, score])
        raw[0, 5::3, a], raw[0, 6::3, a], raw[0, 7::3, a] = kx, ky, 0.8
    return raw


def test_letterbox_is_ultralytics_letterbox():
    from ultralytics.data.augment import LetterBox

    image = np.zeros((90, 200, 3), dtype=np.uint8)
    boxed = LetterBox(320, auto=True, stride=32)(image=image)
    box = Letterbox.fit((90, 200), boxed.shape[:2])
    assert boxed.shape[:2] == (160, 320) and box.gain == (1.6, 1.6) and box.pad == (0.0, 8.0)
    assert np.all(boxed[:8] == 114) and np.all(boxed[8:152] == 0) and np.all(boxed[152:] == 114)


def test_post_processing_maps_input_pixels_to_image_pixels():
    box = Letterbox.fit((90, 200), (160, 320))
    (d,) = poses_from_output(_raw_output(), [box], conf=0.25, iou=0.7)
    assert len(d) == 1 and np.isclose(d.confidence[0], 0.9)
    k = np.arange(17.0)
    want = np.stack([(80.0 + k) / 1.6, (40.0 + 2.0 * k - 8.0) / 1.6], axis=-1)
    want[16] = [-20.0 / 1.6, (150.0 - 8.0) / 1.6]  # outside the image: not clipped
    assert np.allclose(d.keypoints[0], want, atol=1e-4)
    assert np.allclose(d.keypoint_confidence[0], 0.8)
    # Box x0, x1 = (100 -/+ 20) / 1.6; y0, y1 = (60 -/+ 100 - 8) / 1.6 = -30, 95, clipped to 0, 90.
    assert np.allclose(d.boxes_xyxy[0], [50.0, 0.0, 75.0, 90.0], atol=1e-4)
    (none,) = poses_from_output(_raw_output(), [box], conf=0.95)
    assert len(none) == 0 and none.keypoints.shape == (0, 17, 2)


def test_post_processing_agrees_with_ultralytics_predictor(pose_model):
    """The same network output through ultralytics' PosePredictor gives the same boxes and, inside
    the image (ultralytics clips keypoints to it), the same keypoints."""
    from ultralytics.models.yolo.pose import PosePredictor

    threads = torch.get_num_threads()  # ultralytics' device selection changes it process-wide
    try:
        predictor = PosePredictor(overrides={"task": "pose", "mode": "predict", "imgsz": 320, "conf": 0.25,
                                             "iou": 0.7, "save": False, "verbose": False, "device": "cpu"})
        predictor.setup_model(pose_model.model, verbose=False)
        predictor.batch = [["image"]]
        image = np.zeros((90, 200, 3), dtype=np.uint8)
        (result,) = predictor.postprocess(_raw_output(), torch.zeros(1, 3, 160, 320), [image])
    finally:
        torch.set_num_threads(threads)
    (d,) = poses_from_output(_raw_output(), [Letterbox.fit((90, 200), (160, 320))])
    assert np.allclose(result.boxes.xyxy.numpy(), d.boxes_xyxy, atol=1e-4)
    assert np.allclose(result.boxes.conf.numpy(), d.confidence)
    xy, conf = result.keypoints.xy.numpy(), result.keypoints.conf.numpy()
    assert np.allclose(conf, d.keypoint_confidence)
    inside = np.all((d.keypoints >= 0) & (d.keypoints <= [200, 90]), axis=-1)
    assert inside.sum() == 16 and np.allclose(xy[inside], d.keypoints[inside], atol=1e-4)


# --- finding the weights, the model store ----------------------------------------------------------


def test_open_pose_detector(tmp_path, pose_pt):
    models = tmp_path / "models"
    assert open_pose_detector(models) is None  # absent: hands only
    with pytest.raises(ModelFilesMissing) as err:
        open_pose_detector(models, weights=tmp_path / "nowhere.pt")
    assert "nowhere.pt" in str(err.value) and "weights are missing" in str(err.value)
    with pytest.raises(ModelFilesMissing) as err:
        model_store.require_pose_weights(models)
    assert model_store.POSE_WEIGHTS in str(err.value) and "omnimocap models download" in str(err.value)
    (models / "pose").mkdir(parents=True)
    shutil.copy(pose_pt, models / model_store.POSE_WEIGHTS)
    found = open_pose_detector(models)
    assert isinstance(found, PoseModel) and found.weights == models / model_store.POSE_WEIGHTS
    assert isinstance(open_pose_detector(weights=pose_pt), PoseModel)
    assert model_store.require_pose_weights(models) == models / model_store.POSE_WEIGHTS


def test_store_entry(tmp_path, pose_pt, capsys):
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    url = model_store.download_urls()[model_store.POSE_WEIGHTS]
    assert url.startswith("https://github.com/ultralytics/assets/releases/download/")
    assert Path(url).name == Path(model_store.POSE_WEIGHTS).name and Path(url).name in GITHUB_ASSETS_NAMES
    capsys.readouterr()
    main(["models", "status", "--models", str(tmp_path)])
    lines = [line for line in capsys.readouterr().out.splitlines() if model_store.POSE_WEIGHTS in line]
    assert len(lines) == 1 and "missing (optional)" in lines[0]
    (tmp_path / "pose").mkdir()
    shutil.copy(pose_pt, tmp_path / model_store.POSE_WEIGHTS)
    main(["models", "verify", "--models", str(tmp_path)])
    assert f"{model_store.POSE_WEIGHTS}: ok" in capsys.readouterr().out


def test_the_detector_observer_takes_the_pose_model_when_its_weights_are_there(tmp_path, pose_pt, monkeypatch):
    from omnimocap.calibration.pano_observer import open_pose_detector as observer_pose_detector

    models = tmp_path / "models"
    monkeypatch.setenv("OMNIMOCAP_MODELS", str(models))
    assert observer_pose_detector(None, "detector") is None  # no weights: hands only
    (models / "pose").mkdir(parents=True)
    shutil.copy(pose_pt, models / model_store.POSE_WEIGHTS)
    found = observer_pose_detector(None, "detector")
    assert isinstance(found, PoseModel) and found.weights == models / model_store.POSE_WEIGHTS
    assert observer_pose_detector(None, "detector", weights=str(pose_pt)).weights == pose_pt
    given = object()
    assert observer_pose_detector(None, "detector", given) is given
