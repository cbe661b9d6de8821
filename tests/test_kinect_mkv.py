"""The Kinect recording reader and calibration parser against the real sample recording
(../shared/data/kinect). Reference values are the Azure Kinect SDK's own (playback of the same
file through pyk4a 1.5 / libk4a 1.4.2)."""

from __future__ import annotations

import numpy as np
import pytest

from omnimocap.capture.kinect_calibration import load_calibration, parse_calibration
from omnimocap.capture.kinect_mkv import KinectRecording
from omnimocap.errors import InputError

# What the SDK reports for the sample (pyk4a: get_camera_matrix, get_distortion_coefficients,
# get_extrinsic_parameters(DEPTH, COLOR)).
SDK_COLOR_K = (611.7953491210938, 611.927001953125, 639.3043212890625, 365.8529052734375)  # fx fy cx cy
SDK_DEPTH_K = (504.6076354980469, 504.7325134277344, 332.78106689453125, 348.8297119140625)
SDK_COLOR_DIST_K1_P1_P2 = (0.33012130856513977, -0.00016178244550246745, -0.00012944525224156678)
SDK_T_COLOR_DEPTH_T = (-0.03208343124389648, -0.0022053730487823484, 0.003883692741394043)
SDK_R_COLOR_DEPTH_ROW1 = (-0.0011387512786313891, 0.9962806105613708, 0.0861603245139122)


@pytest.fixture
def sample(shared):
    return shared("data", "kinect", "recording.mkv")


def test_sample_tracks_and_tags(sample):
    rec = KinectRecording(sample)
    assert list(rec.tracks) == ["COLOR", "DEPTH", "IR", "IMU"]
    assert (rec.tracks["COLOR"].fourcc, rec.tracks["COLOR"].mode) == ("MJPG", "MJPG_720P")
    assert (rec.tracks["DEPTH"].fourcc, rec.tracks["DEPTH"].width, rec.tracks["DEPTH"].height) == ("b16g", 640, 576)
    assert rec.depth_mode == "NFOV_UNBINNED" and rec.color_mode == "MJPG_720P"
    assert rec.device_serial == "001514394512"
    assert rec.start_offset_us == 336277
    assert rec.wired_sync_mode == "STANDALONE" and rec.depth_delay_ns == 0
    assert rec.tags["K4A_DEPTH_FIRMWARE_VERSION"] == "1.6.79"
    assert not rec.truncated


def test_sample_first_capture_equals_sdk_decode(sample):
    captures = list(KinectRecording(sample).captures())
    assert len(captures) == 1
    cap = captures[0]
    assert round(cap.depth_timestamp * 1e6) == 800222
    assert cap.color_timestamp == cap.ir_timestamp == cap.depth_timestamp
    assert cap.depth.dtype == np.uint16 and cap.depth.shape == (576, 640)
    assert int(cap.depth.sum(dtype=np.int64)) == 380924829
    assert int(cap.depth.max()) == 3690
    assert int(cap.ir.sum(dtype=np.int64)) == 1041828584  # the SDK's IR decode of the same frame
    assert cap.color.shape == (720, 1280, 3) and cap.color.dtype == np.uint8
    assert 20 < cap.color.mean() < 235  # a decoded picture, not a blank buffer


def test_sample_colour_as_recorded_jpeg_decodes_to_the_same_image(sample):
    """``jpeg_bytes``: the MJPG colour image comes as the JPEG the device sent (the live stream's
    form), which decodes to exactly the image the reader decodes; depth and IR are unchanged."""
    import cv2

    decoded = next(KinectRecording(sample).captures())
    raw = next(KinectRecording(sample).captures(jpeg_bytes=True))
    assert isinstance(raw.color, bytes) and raw.color[:2] == b"\xff\xd8" and raw.color[-2:] == b"\xff\xd9"
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(raw.color, np.uint8), cv2.IMREAD_COLOR), decoded.color)
    np.testing.assert_array_equal(raw.depth, decoded.depth)
    assert raw.color_timestamp == decoded.color_timestamp


def test_sample_imu_sample_layout(sample):
    imu = KinectRecording(sample).imu()
    assert len(imu) == 1
    assert imu.acc_timestamps[0] == pytest.approx(0.336277, abs=1e-9)
    np.testing.assert_allclose(imu.acc[0], [-2.888193130493164, -0.19380511343479156, -9.43713665008545], rtol=1e-6)
    assert 9.0 < np.linalg.norm(imu.acc[0]) < 10.5  # gravity, m/s^2
    np.testing.assert_allclose(imu.gyro[0], [-0.0010146003914996982, -0.0019477708265185356, 0.00602347869426012], rtol=1e-6)


def test_sample_calibration_matches_sdk(sample):
    cal = KinectRecording(sample).calibration
    assert (cal.color.width, cal.color.height, cal.depth.width, cal.depth.height) == (1280, 720, 640, 576)
    np.testing.assert_allclose((cal.color.fx, cal.color.fy, cal.color.cx, cal.color.cy), SDK_COLOR_K, atol=1e-3)
    np.testing.assert_allclose((cal.color.fx, cal.color.fy, cal.color.cx, cal.color.cy), (611.80, 611.93, 639.30, 365.85), atol=0.01)
    np.testing.assert_allclose((cal.depth.fx, cal.depth.fy, cal.depth.cx, cal.depth.cy), SDK_DEPTH_K, atol=1e-3)
    k1, _, p1, p2 = cal.color.distortion[:4]
    np.testing.assert_allclose((k1, p1, p2), SDK_COLOR_DIST_K1_P1_P2, rtol=1e-6)
    np.testing.assert_allclose(cal.T_color_depth[:3, 3], SDK_T_COLOR_DEPTH_T, atol=1e-8)
    np.testing.assert_allclose(cal.T_color_depth[1, :3], SDK_R_COLOR_DEPTH_ROW1, atol=1e-7)
    np.testing.assert_allclose(cal.T_color_depth @ cal.T_depth_color, np.eye(4), atol=1e-6)


def test_calibration_file_equals_attachment_and_scales_per_mode(sample, shared):
    from_file = load_calibration(shared("data", "kinect", "calibration.json"))
    from_mkv = KinectRecording(sample).calibration
    assert from_file.color == from_mkv.color and from_file.depth == from_mkv.depth
    wide = load_calibration(shared("data", "kinect", "calibration.json"), color_resolution="1536P", depth_mode="WFOV_2X2BINNED")
    assert (wide.color.width, wide.color.height, wide.depth.width, wide.depth.height) == (2048, 1536, 512, 512)
    # Same lens: focal length scales with the calibration image size (1280 -> 2048 wide, 1024 -> 512).
    assert wide.color.fx == pytest.approx(from_file.color.fx * 2048 / 1280)
    assert wide.depth.fx == pytest.approx(from_file.depth.fx / 2)
    # NFOV unbinned crops (192, 180) px off the 1024 x 1024 calibration image; WFOV binned does not crop.
    assert wide.depth.cx == pytest.approx((from_file.depth.cx + 0.5 + 192) / 2 - 0.5)


def test_cut_mid_cluster_keeps_complete_images(sample, tmp_path):
    data = sample.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[:1_200_000])  # inside the IR block of the only capture
    rec = KinectRecording(cut)
    assert rec.truncated
    captures = list(rec.captures())
    assert len(captures) == 1
    assert int(captures[0].depth.sum(dtype=np.int64)) == 380924829
    assert captures[0].ir is None
    assert any("segment declares" in p for p in rec.problems)


def test_cut_in_header_is_one_line_input_error(sample, tmp_path):
    cut = tmp_path / "header_only.mkv"
    cut.write_bytes(sample.read_bytes()[:1200])
    with pytest.raises(InputError) as err:
        KinectRecording(cut)
    assert str(cut) in str(err.value) and "\n" not in str(err.value)


def test_corrupt_calibration_attachment(sample, tmp_path):
    data = bytearray(sample.read_bytes())
    start = data.index(b'{"CalibrationInformation"')
    data[start:start + 10] = b"#corrupt#!"
    bad = tmp_path / "bad_calibration.mkv"
    bad.write_bytes(bytes(data))
    rec = KinectRecording(bad)
    assert len(list(rec.captures(decode_color=False))) == 1  # the images are still readable
    with pytest.raises(InputError, match="calibration.json attachment.*not valid JSON"):
        rec.calibration


def test_malformed_calibration_json():
    with pytest.raises(InputError, match="not valid JSON"):
        parse_calibration(b'{"CalibrationInformation": {"Cameras": [', source="x.json")
    with pytest.raises(InputError, match="colour/depth camera"):
        parse_calibration(b'{"CalibrationInformation": {"Cameras": []}}', source="x.json")
    with pytest.raises(InputError, match="14 finite"):
        parse_calibration({"CalibrationInformation": {"Cameras": [
            {"Purpose": p, "Intrinsics": {"ModelParameters": [0.5] * 4}, "Rt": {"Rotation": [1, 0, 0, 0, 1, 0, 0, 0, 1], "Translation": [0, 0, 0]}}
            for p in ("CALIBRATION_CameraPurposeDepth", "CALIBRATION_CameraPurposePhotoVideo")]}})
