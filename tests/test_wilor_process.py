"""`process --hands wilor` end to end on a simulated session, with the parity fixture's tiny
checkpoint and a randomly initialised YOLO detector in a models folder laid out as `omnimocap models`
expects. The numbers are meaningless; the whole real path runs (views rendered from the panorama,
detection and association with fallback, batched reconstruction, lifting, fitting, export)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from omnimocap.apps.cli import main


@pytest.fixture
def models_dir(tmp_path, shared, detector_pt):
    fixture = shared("fixtures", "wilor_parity")
    models = tmp_path / "models"
    (models / "wilor").mkdir(parents=True)
    (models / "mano").mkdir()
    shutil.copy(fixture / "wilor_tiny.ckpt", models / "wilor" / "wilor_final.ckpt")
    shutil.copy(fixture / "model_config.yaml", models / "wilor" / "model_config.yaml")
    shutil.copy(fixture / "mano_mean_params.npz", models / "mano" / "mano_mean_params.npz")
    shutil.copy(detector_pt, models / "wilor" / "detector.pt")
    return models


def test_process_with_wilor_runs_end_to_end(tmp_path, models_dir):
    session = tmp_path / "s"
    assert main(["simulate", str(session), "--no-kinect-video", "--realism", "ideal", "--seconds", "1", "--pano-width", "640", "--seed", "4"]) == 0
    out = tmp_path / "r"
    assert main(["process", str(session), "--out", str(out), "--hands", "wilor", "--models", str(models_dir),
                 "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["hands_backend"] == "wilor"
    assert report["hand_counts"]["views"] > 0
    assert report["hand_counts"]["observed"] + report["hand_counts"]["gated"] + report["hand_counts"]["no_hand"] \
        + report["hand_counts"]["side_mismatch"] == report["hand_counts"]["views"]
    fused = np.load(out / "fused.npz")
    assert fused["smplx_local_rotmats"].shape[-3:] == (55, 3, 3)


def test_process_with_wilor_names_missing_files(tmp_path, capsys):
    session = tmp_path / "s"
    assert main(["simulate", str(session), "--no-kinect-video", "--realism", "ideal", "--seconds", "1", "--pano-width", "256", "--seed", "5"]) == 0
    code = main(["process", str(session), "--out", str(tmp_path / "r"), "--hands", "wilor",
                 "--models", str(tmp_path / "empty"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "wilor_final.ckpt" in err and "Traceback" not in err
