"""Bad input ends with one clear line and a non-zero exit, never a traceback, and loses nothing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from omnimocap.apps.cli import main
from omnimocap.capture.session import PANO_FRAMES


@pytest.fixture(scope="module")
def small_session(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    assert main(["simulate", str(root / "s"), "--no-kinect-video", "--seconds", "1.5", "--pano-width", "512", "--seed", "3"]) == 0
    return root / "s"


def _copy(small_session, tmp_path):
    dst = tmp_path / "s"
    shutil.copytree(small_session, dst)
    return dst


def _process_fails(capsys, session, out, match):
    code = main(["process", str(session), "--out", str(out), "--hands", "sim", "--quiet"])
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("omnimocap")]
    assert len(lines) == 1 and match in lines[0], err
    assert not out.exists() or not any(out.iterdir())


def test_missing_manifest(small_session, tmp_path, capsys):
    s = _copy(small_session, tmp_path)
    (s / "session.json").unlink()
    _process_fails(capsys, s, tmp_path / "out", "session manifest not found")


def test_truncated_body_json(small_session, tmp_path, capsys):
    s = _copy(small_session, tmp_path)
    body = next(s.glob("bodies_*.json"))
    body.write_bytes(body.read_bytes()[: body.stat().st_size // 2])
    _process_fails(capsys, s, tmp_path / "out", body.name)


def test_empty_pano_stream(small_session, tmp_path, capsys):
    s = _copy(small_session, tmp_path)
    (s / PANO_FRAMES).write_text("index,t_pano,t_host\n")
    _process_fails(capsys, s, tmp_path / "out", "no frames")


def test_malformed_rig(small_session, tmp_path, capsys):
    s = _copy(small_session, tmp_path)
    (s / "rig.json").write_text("{ not json")
    _process_fails(capsys, s, tmp_path / "out", "rig.json")


def test_nan_joints_are_skipped_and_counted(small_session, tmp_path):
    s = _copy(small_session, tmp_path)
    body = next(s.glob("bodies_*.json"))
    doc = json.loads(body.read_text())
    doc["frames"][5]["bodies"][0]["joint_positions"][7] = [None, None, None]  # a tracker's NaN wrist
    body.write_text(json.dumps(doc).replace("null", "NaN", 1))
    assert main(["process", str(s), "--out", str(tmp_path / "out"), "--hands", "sim", "--quiet"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert sum(c["nan_joints"] for c in report["kinect_counts"].values()) >= 1
    fused = np.load(tmp_path / "out" / "fused.npz")
    assert np.isfinite(fused["smplx_transl"]).all()
