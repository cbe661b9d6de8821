"""One body model from fit to file: `process` fits on the models folder's SMPL-X file, every output
records its name and SHA-256, and `export` uses that file and refuses another."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from omnimocap.apps.cli import main
from omnimocap.fusion.body_model import BUILT_IN, body_model_record, resolve_smplx_model, smplx_file_in
from omnimocap.sim.synthetic_models import write_synthetic_smplx


def test_resolve_prefers_the_models_folder(tmp_path):
    assert resolve_smplx_model(None, tmp_path) is None
    neutral = write_synthetic_smplx(tmp_path / "smplx")
    female = write_synthetic_smplx(tmp_path / "smplx", gender="female", seed=2)
    assert resolve_smplx_model(None, tmp_path) == neutral == smplx_file_in(tmp_path)
    assert resolve_smplx_model(None, tmp_path, gender="female") == female
    assert resolve_smplx_model(tmp_path / "smplx", None, gender="female") == female
    assert resolve_smplx_model(neutral, tmp_path / "elsewhere") == neutral
    record = body_model_record(neutral)
    assert record["body_model"] == "SMPLX_NEUTRAL.npz"
    assert record["body_model_sha256"] == hashlib.sha256(neutral.read_bytes()).hexdigest()
    assert body_model_record(None)["body_model"] == BUILT_IN


@pytest.mark.slow
def test_process_fits_on_the_models_folder_file_and_export_follows(tmp_path, capsys, monkeypatch):
    from tests.tools.cli import one_line_error

    models = tmp_path / "models"
    model = write_synthetic_smplx(models / "smplx")
    monkeypatch.setenv("OMNIMOCAP_MODELS", str(models))
    assert main(["simulate", str(tmp_path / "s"), "--no-kinect-video", "--seconds", "1.5", "--pano-width", "512",
                 "--seed", "3", "--realism", "ideal"]) == 0
    assert main(["process", str(tmp_path / "s"), "--out", str(tmp_path / "r"), "--hands", "sim", "--quiet"]) == 0
    result = tmp_path / "r"
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    report = json.loads((result / "report.json").read_text())
    assert report["body_model"] == "SMPLX_NEUTRAL.npz" and report["body_model_sha256"] == sha
    for name in ("fused.npz", "smplx.npz"):
        with np.load(result / name) as data:
            assert str(data["body_model"]) == "SMPLX_NEUTRAL.npz" and str(data["body_model_sha256"]) == sha
    with np.load(result / "smplx.npz") as data:  # process's own AMASS file is AMASS-shaped too
        assert int(data["mocap_frame_rate"]) == 30 and str(data["up_axis"]) == "z"
    _mano_reproduces_the_fused_hands(result, tmp_path / "mano")
    capsys.readouterr()
    assert main(["export", str(result), "--format", "gltf"]) == 0
    assert (result / "smplx.glb").is_file()
    other = write_synthetic_smplx(tmp_path / "other", seed=5)
    line = one_line_error(capsys, ["export", str(result), "--format", "bvh", "--smplx-model", str(other)])
    assert "not the model file the fit used" in line
    model.unlink()
    line = one_line_error(capsys, ["export", str(result), "--format", "gltf"])
    assert "SMPLX_NEUTRAL.npz" in line and "is not there" in line
    # Gendered when asked: the female file of the models folder.
    female = write_synthetic_smplx(models / "smplx", gender="female", seed=4)
    assert main(["process", str(tmp_path / "s"), "--out", str(tmp_path / "rf"), "--hands", "sim", "--quiet",
                 "--gender", "female"]) == 0
    with np.load(tmp_path / "rf" / "smplx.npz") as data:
        assert str(data["body_model"]) == "SMPLX_FEMALE.npz" and str(data["gender"]) == "female"
        assert str(data["body_model_sha256"]) == hashlib.sha256(female.read_bytes()).hexdigest()


def _mano_reproduces_the_fused_hands(result, mano_dir) -> None:
    """smplx's MANO layer, given the exported ``global_orient``, ``hand_pose``, ``betas`` and ``transl``,
    puts the 16 MANO joints where ``process`` fused them (the sim observer draws the synthetic MANO,
    which the export uses when the models folder has no MANO file)."""
    pytest.importorskip("smplx")
    from tests.tools.mano import smplx_mano_joints
    from omnimocap.data.skeletons import HAND21_FROM_MANO
    from omnimocap.hands.synthetic_mano import write_synthetic_mano

    assert main(["export", str(result), "--format", "mano"]) == 0
    write_synthetic_mano(mano_dir)
    order = [list(HAND21_FROM_MANO).index(m) for m in range(16)]
    with np.load(result / "fused.npz") as fused:
        fused_joints = fused["hand_joints_world"][0]
    for s, side in enumerate(("left", "right")):
        with np.load(result / f"mano_person0_{side}.npz") as data:
            assert all(np.all(np.isfinite(data[k])) for k in data.files if data[k].dtype.kind == "f")
            F = len(data["transl"])
            joints = smplx_mano_joints(mano_dir, side, data)
            valid = data["valid"]
        assert valid.sum() > F // 2
        err_mm = 1000 * np.linalg.norm(joints[valid] - fused_joints[valid, s][:, order], axis=-1)
        assert err_mm.max() < 0.1, f"{side}: {err_mm.max():.3f} mm"
