"""Every export opened by the program its users open it with: Blender (bpy, in its own environment:
glb, BVH, FBX), the Khronos glTF validator (npm), and `rerun rrd verify`. Where a client is not
installed the test skips and says so; scripts/setup.sh installs them all."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from omnimocap.geometry.transforms import axis_angle_to_matrix
from omnimocap.data.skeletons import SMPLX_JOINTS
from omnimocap.fusion.body_model import default_skeleton, forward_kinematics

ROOT = Path(__file__).resolve().parents[1]
VALIDATOR = ROOT / "tools" / "node_modules" / "gltf-validator"
# Blender's importers turn our y-up world into its z-up one: (x, y, z) -> (x, -z, y).
Y_UP_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def _results(folder: Path, F: int = 8, P: int = 2) -> dict:
    """A results folder with P people over F frames at a Kinect-like 29.999 Hz."""
    from omnimocap.fusion.body_model import body_model_record

    rng = np.random.default_rng(11)
    local = axis_angle_to_matrix(rng.normal(0, 0.25, (P, F, 55, 3)))
    transl = rng.normal(0, 0.3, (P, F, 3)) + np.array([0.0, 0.9, 0.0])
    betas = rng.normal(0, 1.0, (P, 10))
    t = 2.0 + np.arange(F) / 29.999
    np.savez(folder / "fused.npz", t_session=t, person_ids=np.arange(P) + 1, smplx_local_rotmats=local,
             smplx_transl=transl, smplx_betas=betas, hand_R_world=local[:, :, 20:22],
             hand_pose=np.broadcast_to(local[:, :, None, 25:40], (P, F, 2, 15, 3, 3)),
             hand_wrist_world=rng.normal(size=(P, F, 2, 3)), hand_valid=np.ones((P, F, 2), bool),
             **body_model_record(None))
    return {"t": t, "local": local, "transl": transl, "betas": betas}


def _our_joints(motion: dict, person: int, rate: float = 30.0) -> np.ndarray:
    """Our forward kinematics of one person on the export's uniform grid, in Blender's world."""
    from omnimocap.fusion.export import resample_motion

    _, R, trans = resample_motion(motion["t"], motion["local"][person], motion["transl"][person], rate)
    joints, _ = forward_kinematics(default_skeleton(10), R, motion["betas"][person], trans)
    return joints @ Y_UP_TO_BLENDER.T


def _export(folder: Path, fmt: str) -> None:
    from omnimocap.apps.cli import main

    assert main(["export", str(folder), "--format", fmt, "--models", str(folder / "no-models")]) == 0


@pytest.fixture(scope="module")
def blender():
    from omnimocap.fusion.export_blender import blender_python

    python = blender_python()
    if python is None or subprocess.run([python, "-c", "import bpy"], capture_output=True).returncode != 0:
        pytest.skip("Blender's Python module (bpy) is not installed: scripts/setup.sh installs it into .venv-blender")
    return python


def _probe(blender: str, path: Path) -> dict:
    from omnimocap.fusion.export_blender import JOB_SCRIPT

    out = path.with_suffix(path.suffix + ".probe.json")
    proc = subprocess.run([blender, str(JOB_SCRIPT), "probe", str(path), str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("fmt,suffix", [("gltf", ".glb"), ("bvh", ".bvh"), ("fbx", ".fbx")])
def test_blender_imports_bones_at_our_kinematics(tmp_path, blender, fmt, suffix):
    motion = _results(tmp_path)
    _export(tmp_path, fmt)
    for person, name in enumerate((f"smplx{suffix}", f"smplx_person1{suffix}")):
        probe = _probe(blender, tmp_path / name)
        ours = _our_joints(motion, person)
        frames = sorted(probe["heads"], key=int)
        assert len(frames) == len(ours) == probe["frame_end"] - probe["frame_start"] + 1
        assert abs(probe["fps"] - 30.0) < 1e-4
        assert set(SMPLX_JOINTS) <= set(probe["bones"])
        if fmt != "bvh":
            assert probe["skinned_meshes"], "the glTF and FBX files carry the skinned mesh"
        for k in (0, len(frames) // 2, len(frames) - 1):
            heads = np.array([probe["heads"][frames[k]][n] for n in SMPLX_JOINTS])
            err_mm = 1000 * np.abs(heads - ours[k]).max()
            assert err_mm < 1.0, f"{name} frame {frames[k]}: {err_mm:.3f} mm"


def test_khronos_validator_reports_nothing(tmp_path):
    node = shutil.which("node")
    if node is None or not VALIDATOR.is_dir():
        pytest.skip("the Khronos glTF validator (npm gltf-validator) is not installed: scripts/setup.sh installs it "
                    "into tools/node_modules")
    _results(tmp_path)
    _export(tmp_path, "gltf")
    proc = subprocess.run([node, str(ROOT / "tools" / "gltf_validate.js"), str(tmp_path / "smplx.glb"),
                           str(tmp_path / "smplx_person1.glb")], capture_output=True, text=True, timeout=300)
    reports = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(reports) == 2, proc.stderr
    for r in reports:
        assert (r["errors"], r["warnings"]) == (0, 0), r
    assert proc.returncode == 0
    import pygltflib

    doc = pygltflib.GLTF2().load(str(tmp_path / "smplx.glb"))
    assert doc.asset.extras["fps"] == 30.0 and doc.asset.extras["body_model"] == "built-in"


def test_rerun_verifies_the_recording(tmp_path):
    pytest.importorskip("rerun", reason="rerun-sdk is not installed: scripts/setup.sh installs it (extra 'viz')")
    exe = shutil.which("rerun") or str(Path(__import__("sys").executable).with_name("rerun"))
    if not Path(exe).is_file():
        pytest.skip("the rerun command is not installed: scripts/setup.sh installs rerun-sdk")
    _results(tmp_path)
    _export(tmp_path, "rrd")
    proc = subprocess.run([exe, "rrd", "verify", str(tmp_path / "fused.rrd")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_fbx_without_blender_is_one_line(tmp_path, capsys, monkeypatch):
    from omnimocap.fusion import export_blender
    from tests.tools.cli import one_line_error

    monkeypatch.setattr(export_blender, "blender_python", lambda: None)
    _results(tmp_path)
    line = one_line_error(capsys, ["export", str(tmp_path), "--format", "fbx", "--models", str(tmp_path / "none")])
    assert "bpy" in line and "setup.sh" in line
    assert not list(tmp_path.glob("*.fbx*"))


AITVIEWER_LOAD = """
import json, sys
import numpy as np
from aitviewer.configuration import CONFIG as C
C.update_conf({"smplx_models": sys.argv[1]})
from aitviewer.models.smpl import SMPLLayer
from aitviewer.renderables.smpl import SMPLSequence
seq = SMPLSequence.from_amass(sys.argv[2], smpl_layer=SMPLLayer(model_type="smplx"))
shown = np.asarray(seq.joints) @ np.asarray(seq.rotation).T  # what the viewer displays, y up
json.dump({"joints": shown.tolist(), "frames": seq.n_frames}, open(sys.argv[3], "w"))
"""


def test_aitviewer_loads_the_amass_file_with_only_a_smplx_layer(tmp_path):
    """aitviewer's ``SMPLSequence.from_amass(path, smpl_layer=SMPLLayer(model_type="smplx"))``, no other
    option: it reads ``mocap_framerate`` and treats the file as z up (its default), and shows the body
    where our kinematics put it. Its loader slices the hands at SMPL-H's offsets, so only body joints
    are compared (AMASS's own SMPL-X files load the same way)."""
    python = ROOT / ".venv-aitviewer" / "bin" / "python"
    if not python.is_file():
        pytest.skip("aitviewer is not installed: scripts/setup.sh installs it into .venv-aitviewer")
    from omnimocap.fusion.export import read_amass_npz
    from omnimocap.sim.synthetic_models import write_synthetic_smplx

    write_synthetic_smplx(tmp_path / "models" / "smplx")
    motion = _results(tmp_path, P=1)
    _export(tmp_path, "amass")
    script = tmp_path / "load.py"
    script.write_text(AITVIEWER_LOAD)
    out = tmp_path / "aitviewer.json"
    proc = subprocess.run([str(python), str(script), str(tmp_path / "models"), str(tmp_path / "smplx.npz"), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shown = np.array(json.loads(out.read_text())["joints"])
    ours = _our_joints(motion, 0) @ Y_UP_TO_BLENDER  # back to our y-up world
    assert shown.shape[0] == len(ours) == len(read_amass_npz(tmp_path / "smplx.npz")["poses"])
    assert 1000 * np.abs(shown[:, :22] - ours[:, :22]).max() < 0.1
