"""The Kinect .mkv writer: round trips through the reader, streaming behaviour when a writer stops
early or a file is cut, and the synthetic calibration JSON."""

from __future__ import annotations

import numpy as np
import pytest

from omnimocap.geometry.cameras import PinholeCamera
from omnimocap.geometry.transforms import axis_angle_to_matrix, make_pose
from omnimocap.capture.kinect_calibration import COLOR_RESOLUTIONS, DEPTH_MODES, calibration_json, parse_calibration
from omnimocap.capture.kinect_mkv import KinectRecording
from omnimocap.capture.kinect_mkv_writer import KinectMkvWriter

DEPTH_HW = (288, 320)  # NFOV 2x2 binned keeps the test files small


def _calibration(color_resolution: str = "720P", depth_mode: str = "NFOV_2X2BINNED") -> tuple[bytes, tuple]:
    cw, ch = COLOR_RESOLUTIONS[color_resolution].output_size
    dw, dh = DEPTH_MODES[depth_mode].output_size
    color = PinholeCamera(0.48 * cw, 0.48 * cw, cw / 2 - 0.3, ch / 2 + 1.2, cw, ch, (0.3, -2.4, 1e-4, -2e-4, 1.4, 0.2, -2.3, 1.3))
    depth = PinholeCamera(0.79 * dw, 0.79 * dw, dw / 2 + 0.7, dh / 2 - 0.4, dw, dh, (0.5, -0.02, 2e-5, -7e-5, -3e-3, 0.9, 0.08, -0.01))
    T = make_pose(axis_angle_to_matrix(np.array([0.1, 0.002, -0.001])), [-0.032, -0.002, 0.004])
    raw = calibration_json(color, depth, T, color_resolution=color_resolution, depth_mode=depth_mode, serial="000111222333")
    return raw, (color, depth, T)


def _frames(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    depth = rng.integers(0, 65535, (n, *DEPTH_HW), dtype=np.uint16)  # full range: catches byte-order mistakes
    ir = rng.integers(0, 3000, (n, *DEPTH_HW), dtype=np.uint16)
    color = np.zeros((n, 720, 1280, 3), np.uint8)
    for k in range(n):
        color[k, :, :, k % 3] = 60 + 40 * k
    return depth, ir, color


def _write(path, n: int = 3, *, close: bool = True, imu: bool = True, fps: int = 30):
    raw, _ = _calibration()
    depth, ir, color = _frames(n)
    writer = KinectMkvWriter(path, raw, color_mode="MJPG_720P", depth_mode="NFOV_2X2BINNED", imu=imu, fps=fps,
                             device_serial="000111222333", start_offset_s=0.25, depth_delay_ns=0)
    times = 0.5 + np.arange(n) / fps
    for k, t in enumerate(times):
        if imu:
            writer.write_imu(t + np.arange(4) / 1600, np.tile([0.1, -9.8, 0.2], (4, 1)) + k,
                             t + np.arange(4) / 1600 + 1e-6, np.full((4, 3), 0.01 * k))
        writer.write_capture(t, color=color[k], depth=depth[k], ir=ir[k])
    if close:
        writer.close()
    return writer, times, depth, ir, color


def test_round_trip_exact_depth_ir_and_timestamps(tmp_path):
    path = tmp_path / "kinect_000111222333.mkv"
    _, times, depth, ir, color = _write(path)
    rec = KinectRecording(path)
    assert not rec.truncated, rec.problems
    assert list(rec.tracks) == ["COLOR", "DEPTH", "IR", "IMU"]
    assert rec.tracks["DEPTH"].fourcc == "b16g" and rec.tracks["COLOR"].fourcc == "MJPG"
    assert (rec.device_serial, rec.start_offset_us, rec.depth_mode, rec.color_mode) == (
        "000111222333", 250000, "NFOV_2X2BINNED", "MJPG_720P")
    captures = list(rec.captures())
    assert len(captures) == 3
    for k, cap in enumerate(captures):
        np.testing.assert_array_equal(cap.depth, depth[k])
        np.testing.assert_array_equal(cap.ir, ir[k])
        assert round(cap.depth_timestamp * 1e6) == round(times[k] * 1e6)
        assert np.abs(cap.color.astype(int) - color[k]).mean() < 3  # JPEG
    imu = rec.imu()
    assert len(imu) == 12
    np.testing.assert_allclose(imu.acc_timestamps[:4], times[0] + np.arange(4) / 1600, atol=1e-6)
    np.testing.assert_allclose(imu.acc[4], [1.1, -8.8, 1.2], rtol=1e-6)
    np.testing.assert_allclose(imu.gyro[8], [0.02] * 3, rtol=1e-6)


def test_attached_calibration_survives(tmp_path):
    path = tmp_path / "k.mkv"
    _write(path, n=1, imu=False)
    rec = KinectRecording(path)
    color, depth, T = _calibration()[1]
    cal = rec.calibration
    assert (cal.depth_mode, cal.serial) == ("NFOV_2X2BINNED", "000111222333")
    np.testing.assert_allclose(cal.color.K, color.K, atol=1e-9)
    np.testing.assert_allclose(cal.depth.K, depth.K, atol=1e-9)
    np.testing.assert_allclose(cal.depth.distortion, depth.distortion)
    np.testing.assert_allclose(cal.T_color_depth, T, atol=1e-12)


@pytest.mark.parametrize("color_resolution", sorted(COLOR_RESOLUTIONS))
@pytest.mark.parametrize("depth_mode", ["NFOV_UNBINNED", "WFOV_2X2BINNED"])
def test_calibration_json_inverts_parse(color_resolution, depth_mode):
    raw, (color, depth, T) = _calibration(color_resolution, depth_mode)
    cal = parse_calibration(raw, color_resolution=color_resolution, depth_mode=depth_mode)
    for got, want in ((cal.color, color), (cal.depth, depth)):
        np.testing.assert_allclose([got.fx, got.fy, got.cx, got.cy], [want.fx, want.fy, want.cx, want.cy], rtol=1e-12)
        assert (got.width, got.height) == (want.width, want.height)
        np.testing.assert_allclose(got.distortion, want.distortion)
    np.testing.assert_allclose(cal.T_color_depth, T, atol=1e-12)


def test_killed_writer_leaves_readable_prefix(tmp_path):
    path = tmp_path / "killed.mkv"
    writer, times, depth, _, _ = _write(path, n=3, close=False)
    try:
        rec = KinectRecording(path)  # the writer never closed: no cues, segment size unknown
        assert rec.truncated and any("did not finish" in p for p in rec.problems)
        captures = list(rec.captures(decode_color=False))
        assert len(captures) == 3
        np.testing.assert_array_equal(captures[2].depth, depth[2])
    finally:
        writer.close()
    assert not KinectRecording(path).truncated


def test_file_cut_mid_cluster_reads_complete_captures(tmp_path):
    path = tmp_path / "full.mkv"
    _, _, depth, _, _ = _write(path, n=3, imu=False)
    data = path.read_bytes()
    cut = tmp_path / "cut.mkv"
    last_cluster = data.rindex(b"\x1f\x43\xb6\x75")
    cut.write_bytes(data[:last_cluster + 5000])  # inside the last capture's colour block
    rec = KinectRecording(cut)
    assert rec.truncated
    captures = list(rec.captures())
    assert len(captures) == 2
    np.testing.assert_array_equal(captures[1].depth, depth[1])


def test_writer_rejects_wrong_images(tmp_path):
    raw, _ = _calibration()
    with KinectMkvWriter(tmp_path / "w.mkv", raw, color_mode=None, depth_mode="NFOV_2X2BINNED") as writer:
        with pytest.raises(ValueError, match="uint16"):
            writer.write_capture(1.0, depth=np.zeros((576, 640), np.uint16))
        with pytest.raises(ValueError, match="uint16"):
            writer.write_capture(1.0, depth=np.zeros(DEPTH_HW, np.float32))
        with pytest.raises(ValueError, match="no COLOR track"):
            writer.write_capture(1.0, color=b"\xff\xd8\xff\xd9")
    with pytest.raises(ValueError, match="only MJPG"):
        KinectMkvWriter(tmp_path / "x.mkv", raw, color_mode="BGRA_720P")
