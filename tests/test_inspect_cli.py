"""``omnimocap inspect``: summaries of a recording, a body file and a session folder; ``--dump``;
one-line errors with exit code 2 for bad inputs."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from omnimocap.apps.cli import main
from omnimocap.geometry.cameras import PinholeCamera
from omnimocap.capture.bodies import BodyRecording, BodyTrack, write_bodies
from omnimocap.capture.kinect_calibration import calibration_json
from omnimocap.capture.kinect_mkv_writer import KinectMkvWriter
from omnimocap.capture.session import bodies_name, kinect_recording_name

SERIAL = "000111222333"


def _inspect(capsys, *argv) -> tuple[int, dict | None, str]:
    rc = main(["inspect", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if rc == 0 else None), err


def _small_recording(path, n: int = 2) -> np.ndarray:
    color = PinholeCamera(610.0, 611.0, 639.5, 360.5, 1280, 720)
    depth = PinholeCamera(252.0, 252.0, 160.0, 144.0, 320, 288)
    raw = calibration_json(color, depth, np.eye(4), depth_mode="NFOV_2X2BINNED", serial=SERIAL)
    depths = np.random.default_rng(2).integers(0, 5000, (n, 288, 320), dtype=np.uint16)
    with KinectMkvWriter(path, raw, depth_mode="NFOV_2X2BINNED", device_serial=SERIAL, fps=30) as writer:
        for k in range(n):
            image = np.full((720, 1280, 3), 30 * k + 50, np.uint8)
            writer.write_capture(1.0 + k / 30, color=image, depth=depths[k], ir=depths[k] // 2)
    return depths


def test_sample_recording_summary(shared, capsys):
    rc, summary, _ = _inspect(capsys, shared("data", "kinect", "recording.mkv"))
    assert rc == 0
    assert summary["device_serial"] == "001514394512"
    assert [t["name"] for t in summary["tracks"]] == ["COLOR", "DEPTH", "IR", "IMU"]
    assert summary["captures"] == 1 and summary["first_depth_timestamp_us"] == 800222
    c = summary["color_intrinsics"]
    np.testing.assert_allclose([c["fx"], c["fy"], c["cx"], c["cy"]], [611.80, 611.93, 639.30, 365.85], atol=0.01)
    assert len(c["distortion"]) == 8 and len(summary["depth_intrinsics"]["distortion"]) == 8
    T = np.array(summary["T_color_depth"])
    assert T.shape == (4, 4) and abs(T[0, 3] + 0.0321) < 1e-3  # metres
    assert summary["truncated"] is False


def test_dump_writes_color_and_16bit_depth(tmp_path, capsys):
    path = tmp_path / kinect_recording_name(SERIAL)
    depths = _small_recording(path)
    out = tmp_path / "frames"
    rc, summary, _ = _inspect(capsys, path, "--dump", out)
    assert rc == 0 and summary["dumped"] == 2 and summary["captures"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["color_00000.png", "color_00001.png", "depth_00000.png", "depth_00001.png"]
    depth = cv2.imread(str(out / "depth_00001.png"), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16
    np.testing.assert_array_equal(depth, depths[1])
    color = cv2.imread(str(out / "color_00001.png"))
    assert color.shape == (720, 1280, 3) and abs(float(color.mean()) - 80) < 3


def test_session_folder_summary(tmp_path, capsys):
    _small_recording(tmp_path / kinect_recording_name(SERIAL), n=3)
    F = 3
    track = BodyTrack(np.full((F, 32, 3), 0.5), np.tile([1.0, 0, 0, 0], (F, 32, 1)), np.full((F, 32), 2))
    write_bodies(tmp_path / bodies_name(SERIAL), BodyRecording(1.0 + np.arange(F) / 30, np.arange(F), {1: track}))
    (tmp_path / "session.json").write_text(json.dumps({"format_version": 1, "status": "complete"}))
    rc, summary, _ = _inspect(capsys, tmp_path)
    assert rc == 0
    assert summary["manifest"]["status"] == "complete"
    assert summary["files"] == sorted(["session.json", kinect_recording_name(SERIAL), bodies_name(SERIAL)])
    kinect = summary["kinects"][kinect_recording_name(SERIAL)]
    assert kinect["captures"] == 3 and kinect["first_depth_timestamp_us"] == 1_000_000
    bodies = summary["bodies"][bodies_name(SERIAL)]
    assert bodies["frames"] == 3 and bodies["body_ids"] == [1]
    assert bodies["duration_s"] == pytest.approx(2 / 30, abs=1e-6)


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "full.mkv"
    _small_recording(path, n=1)
    truncated = tmp_path / "truncated.mkv"
    truncated.write_bytes(path.read_bytes()[:300])
    corrupt = tmp_path / "corrupt_calibration.mkv"
    data = path.read_bytes()
    corrupt.write_bytes(data.replace(b'{"CalibrationInformation"', b'{"CalibrationInformation"'[::-1], 1))
    broken = tmp_path / "bodies_x.json"
    broken.write_text('{"frames": [{"timestamp_usec": 1')
    bare = tmp_path / "not_a_session"
    bare.mkdir()
    for bad, expected in ((truncated, "truncated"), (corrupt, "calibration.json attachment"),
                          (broken, "truncated or malformed JSON"), (bare, "without session.json"),
                          (tmp_path / "missing.mkv", "not found")):
        rc, _, err = _inspect(capsys, bad)
        assert rc == 2, bad
        assert expected in err and str(bad) in err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_session_summary_prints_each_recordings_warnings(tmp_path, capsys):
    from tests.test_femto import SERIAL as FEMTO_SERIAL, _write_femto

    _write_femto(tmp_path / f"kinect_{FEMTO_SERIAL}.mkv", firmware="1.1.1", jump_at=2)
    (tmp_path / "session.json").write_text(json.dumps({"format_version": 1, "status": "complete"}))
    rc, summary, err = _inspect(capsys, tmp_path)
    warnings = summary["kinects"][f"kinect_{FEMTO_SERIAL}.mkv"]["warnings"]
    assert rc == 0 and len(warnings) == 2 and "1.1.1" in warnings[1]
    assert [line for line in err.splitlines() if line.startswith("warning:")] == [f"warning: {w}" for w in warnings]
