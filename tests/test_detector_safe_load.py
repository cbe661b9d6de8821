"""A harmful ``detector.pt`` never runs code: not when loaded, not through any verb that loads it.

The harmful files are real torch archives whose pickle would, on an ordinary ``torch.load`` (what
ultralytics' ``YOLO(path)`` does), create a marker file; the first test shows that it does. Every
other path must refuse the file in one line naming the global, and leave no marker."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from omnimocap.apps.cli import main
from omnimocap.hands.model_files import RestrictedUnpicklingError
from omnimocap.hands.wilor.detector import DETECTOR_GLOBALS, HandDetector, detector_globals, load_detector_checkpoint
from tests.tools.cli import one_line_error


class _Payload:
    """Unpickling calls os.system, which creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class _PoseModelCall:
    """A pickled call of an allowed class with constructor arguments (PoseModel(cfg=...) would read
    and build whatever configuration the file names)."""

    def __reduce__(self):
        from ultralytics.nn.tasks import PoseModel

        return PoseModel, ("yolov8n-pose.yaml",)


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "payload_ran"


@pytest.fixture
def harmful_pt(tmp_path, marker):
    path = tmp_path / "harmful" / "detector.pt"
    path.parent.mkdir()
    torch.save({"model": _Payload(marker), "date": "2024-04-01"}, path)
    return path


def _valid_model_with_payload(tmp_path, marker, detector_pt):
    """A genuine detector checkpoint with one more entry carrying the payload."""
    ckpt = torch.load(detector_pt, weights_only=False)  # our own trusted test file
    ckpt["train_args"] = {"imgsz": 640, "hook": _Payload(marker)}
    path = tmp_path / "hidden" / "detector.pt"
    path.parent.mkdir()
    torch.save(ckpt, path)
    return path


def test_the_harmful_file_runs_its_payload_when_fully_unpickled(harmful_pt, marker, tmp_path):
    copy = tmp_path / "copy.pt"
    shutil.copy(harmful_pt, copy)
    torch.load(copy, weights_only=False)  # what YOLO(path) does: the payload runs
    assert marker.exists()


def test_load_refuses_by_global_name_and_runs_nothing(harmful_pt, marker, tmp_path, detector_pt):
    with pytest.raises(RestrictedUnpicklingError) as err:
        HandDetector(harmful_pt)
    assert "global posix.system" in str(err.value) and str(harmful_pt) in str(err.value)
    hidden = _valid_model_with_payload(tmp_path, marker, detector_pt)
    with pytest.raises(RestrictedUnpicklingError, match="global posix.system"):
        load_detector_checkpoint(hidden)
    call = tmp_path / "call.pt"
    torch.save({"model": _PoseModelCall()}, call)
    assert detector_globals(call) == ["ultralytics.nn.tasks.PoseModel"]  # an allowed name, so the scan passes ...
    with pytest.raises(RestrictedUnpicklingError, match="PoseModel called with constructor arguments"):
        load_detector_checkpoint(call)  # ... and the unpickler refuses the call
    assert not marker.exists()


def test_a_genuine_detector_needs_only_the_allowed_globals(detector_pt):
    assert set(detector_globals(detector_pt)) <= set(DETECTOR_GLOBALS)
    ckpt = load_detector_checkpoint(detector_pt)
    assert type(ckpt["model"]).__name__ == "PoseModel" and next(ckpt["model"].parameters()).dtype == torch.float32


def test_models_verify_refuses_and_records_no_checksum(tmp_path, harmful_pt, marker, capsys):
    models = tmp_path / "models"
    (models / "wilor").mkdir(parents=True)
    shutil.copy(harmful_pt, models / "wilor" / "detector.pt")
    capsys.readouterr()
    assert main(["models", "verify", "--models", str(models)]) == 1
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "detector.pt" in line]
    assert len(lines) == 1 and "FAILED" in lines[0] and "global posix.system" in lines[0]
    sums = json.loads((models / "checksums.json").read_text()) if (models / "checksums.json").exists() else {}
    assert "wilor/detector.pt" not in sums
    assert not marker.exists()


def test_calibrate_with_the_detector_observer_refuses_in_one_line(tmp_path, harmful_pt, marker, capsys):
    session = tmp_path / "s"
    assert main(["simulate", str(session), "--no-kinect-video", "--realism", "ideal", "--seconds", "1", "--pano-width", "256",
                 "--seed", "3"]) == 0
    line = one_line_error(capsys, ["calibrate", str(session), "--method", "markerless", "--observer", "detector",
                                   "--detector", str(harmful_pt), "--quiet"])
    assert "global posix.system" in line and str(harmful_pt) in line
    assert not marker.exists()


def test_process_with_wilor_refuses_in_one_line(tmp_path, harmful_pt, marker, capsys):
    models = tmp_path / "models"
    (models / "wilor").mkdir(parents=True)
    (models / "mano").mkdir()
    shutil.copy(harmful_pt, models / "wilor" / "detector.pt")
    for rel in ("wilor/wilor_final.ckpt", "wilor/model_config.yaml", "mano/mano_mean_params.npz"):
        (models / rel).write_bytes(b"placeholder: the detector is loaded first")
    session = tmp_path / "s"
    assert main(["simulate", str(session), "--no-kinect-video", "--realism", "ideal", "--seconds", "1", "--pano-width", "256",
                 "--seed", "5"]) == 0
    line = one_line_error(capsys, ["process", str(session), "--out", str(tmp_path / "r"), "--hands", "wilor",
                                   "--models", str(models), "--quiet"])
    assert "global posix.system" in line and "detector.pt" in line
    assert not marker.exists()


def test_models_verify_reports_a_corrupt_npz_in_one_line_and_goes_on(tmp_path, capsys):
    from omnimocap.hands import model_store

    models = tmp_path
    (models / "mano").mkdir()
    (models / "smplx").mkdir()
    (models / "mano" / "mano_mean_params.npz").write_bytes(b"PK\x03\x04 truncated zip")
    np.savez(models / "smplx" / "SMPLX_NEUTRAL.npz", v_template=np.zeros((3, 3)))
    model_store._copy_package_file("wilor_model_config.yaml", models / "wilor" / "model_config.yaml")
    capsys.readouterr()
    assert main(["models", "verify", "--models", str(models)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    for rel in ("mano/mano_mean_params.npz", "smplx/SMPLX_NEUTRAL.npz"):
        lines = [line for line in captured.out.splitlines() if rel in line and "FAILED" in line]
        assert len(lines) == 1, captured.out
    assert "wilor/model_config.yaml: ok" in captured.out
    sums = json.loads((models / "checksums.json").read_text())
    assert set(sums) == {"wilor/model_config.yaml"}
