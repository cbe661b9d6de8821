"""Orbbec Femto recordings (Orbbec's K4A wrapper): a start offset of minutes that differs per
recording, epoch-like device timestamps, Orbbec serials and firmware tags, and the timestamp
overflow of Femto Bolt firmware before 1.1.2. The files are written by our writer with those tags
and timestamp patterns; the SDK's own playback (libk4arecord from pyk4a-bundle in `.venv-k4a`)
opens them where it is installed."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from omnimocap.apps.cli import main
from omnimocap.capture.kinect_mkv import KinectRecording
from omnimocap.capture.kinect_mkv_writer import KinectMkvWriter
from omnimocap.capture.truth import Truth
from omnimocap.capture.kinect_models import (
    EPOCH_LIKE_S, KINECT_MODELS, device_clock, device_family, firmware_version, overflowing_firmware,
    scale_color_camera, timestamp_jumps,
)
from tests.test_kinect_writer import _calibration, _frames
from omnimocap.capture.session import kinect_recording_name

SERIAL = "CL8F2100015"


def _write_femto(path, *, firmware: str = "1.1.2", start_offset_s: float | None = 1834.25, n: int = 4, fps: int = 25,
                 jump_at: int | None = None, jump_s: float = -(2 ** 32) / 1e6):
    """A Femto-style recording: epoch-like device times at ``fps``, K4A_START_OFFSET_NS of minutes;
    with ``jump_at``, the device clock jumps by ``jump_s`` from that capture on."""
    raw, _ = _calibration()
    depth, ir, color = _frames(n)
    times = EPOCH_LIKE_S + 12.345678 + np.arange(n) / fps
    if jump_at is not None:
        times[jump_at:] += jump_s
    times = np.round(times * 1e6) / 1e6
    with KinectMkvWriter(path, raw, color_mode="MJPG_720P", depth_mode="NFOV_2X2BINNED", imu=True, fps=fps,
                         device_serial=SERIAL, start_offset_s=start_offset_s, color_firmware=firmware,
                         depth_firmware=firmware) as writer:
        for k, t in enumerate(times):
            writer.write_imu(t + np.arange(2) / 1600, np.tile([0.1, -9.8, 0.2], (2, 1)), t + np.arange(2) / 1600,
                             np.zeros((2, 3)))
            writer.write_capture(float(t), color=color[k], depth=depth[k], ir=ir[k])
    return times, depth


def test_epoch_like_timestamps_and_minutes_long_offset_read_exactly(tmp_path):
    path = tmp_path / kinect_recording_name(SERIAL)
    times, depth = _write_femto(path)
    rec = KinectRecording(path)
    assert rec.start_offset_us == 1_834_250_000  # about half an hour, as the wrapper writes
    assert rec.device_family == "orbbec" and rec.firmware_warning is None
    captures = list(rec.captures(decode_color=False))
    assert [round(c.depth_timestamp * 1e6) for c in captures] == [round(t * 1e6) for t in times]
    assert all(np.array_equal(c.depth, d) for c, d in zip(captures, depth))
    assert rec.clock_problem is None and not rec.truncated
    imu = rec.imu()
    assert len(imu) == 8 and imu.acc_timestamps[0] == pytest.approx(times[0], abs=1e-6)
    assert KinectRecording(path).calibration.color.width == 1280


def test_offset_changing_per_recording_does_not_change_device_times(tmp_path):
    a, b = tmp_path / "a.mkv", tmp_path / "b.mkv"
    times, _ = _write_femto(a, start_offset_s=125.5)
    _write_femto(b, start_offset_s=2301.0)
    ta = [c.depth_timestamp for c in KinectRecording(a).captures(decode_color=False)]
    tb = [c.depth_timestamp for c in KinectRecording(b).captures(decode_color=False)]
    assert KinectRecording(a).start_offset_us != KinectRecording(b).start_offset_us
    assert ta == tb and [round(t * 1e6) for t in ta] == [round(t * 1e6) for t in times]


def _sdk_run(path):
    from tests.test_pyk4a_playback import K4A_PYTHON, PROBE

    if not K4A_PYTHON.exists():
        pytest.skip(f"{K4A_PYTHON} not found: scripts/setup.sh creates it (pyk4a-bundle with numpy<2)")
    return subprocess.run([str(K4A_PYTHON), str(PROBE), str(path)], capture_output=True, text=True, timeout=120)


def test_femto_recording_opens_in_the_sdk_with_the_same_device_times(tmp_path):
    from tests.test_pyk4a_playback import _ours

    path = tmp_path / kinect_recording_name(SERIAL)
    times, depth = _write_femto(path, fps=30)
    out = _sdk_run(path)
    assert out.returncode == 0, out.stderr
    sdk = json.loads(out.stdout)
    assert [f["depth_timestamp_usec"] for f in sdk["frames"]] == [round(t * 1e6) for t in times]
    assert [f["depth_sum"] for f in sdk["frames"]] == [int(d.astype(np.int64).sum()) for d in depth]
    assert _ours(path) == sdk["frames"]


def test_25_fps_opens_here_and_microsofts_playback_refuses_it(tmp_path):
    path = tmp_path / "bolt_25fps.mkv"
    times, _ = _write_femto(path, fps=25)
    assert [round(c.depth_timestamp * 1e6) for c in KinectRecording(path).captures(decode_color=False)] == \
        [round(t * 1e6) for t in times]
    out = _sdk_run(path)
    assert out.returncode != 0 and "Unsupported recording frame period: 40000000" in out.stdout + out.stderr


def test_epoch_like_start_offset_reads_whole_where_microsofts_playback_wraps_it(tmp_path):
    """A start offset that is itself epoch-like (at the first timestamp) makes libk4arecord 1.4 report
    device times modulo 2**32 us: one reason the same file shows other times in Microsoft's tools.
    Our reader reads it whole; our writer's default offset (the first timestamp modulo 2**32 us)
    gives both the same times."""
    epoch_offset = tmp_path / "epoch_offset.mkv"
    times, _ = _write_femto(epoch_offset, fps=30, start_offset_s=EPOCH_LIKE_S + 12.345678)
    ours = [round(c.depth_timestamp * 1e6) for c in KinectRecording(epoch_offset).captures(decode_color=False)]
    assert ours == [round(t * 1e6) for t in times]
    out = _sdk_run(epoch_offset)
    assert out.returncode == 0, out.stderr
    assert [f["depth_timestamp_usec"] for f in json.loads(out.stdout)["frames"]] == [t % 2 ** 32 for t in ours]

    default_offset = tmp_path / "default_offset.mkv"
    _write_femto(default_offset, fps=30, start_offset_s=None)
    rec = KinectRecording(default_offset)
    assert rec.start_offset_us == ours[0] % 2 ** 32
    assert [round(c.depth_timestamp * 1e6) for c in rec.captures(decode_color=False)] == ours
    out = _sdk_run(default_offset)
    assert out.returncode == 0, out.stderr
    assert [f["depth_timestamp_usec"] for f in json.loads(out.stdout)["frames"]] == ours


def test_bolt_firmware_before_1_1_2_overflow_is_one_line(tmp_path, capsys):
    path = tmp_path / kinect_recording_name(SERIAL)
    _write_femto(path, firmware="1.1.1", jump_at=2)
    rec = KinectRecording(path)
    assert rec.firmware_warning and "1.1.1" in rec.firmware_warning and "\n" not in rec.firmware_warning
    assert len(list(rec.captures(decode_color=False))) == 4
    problem = rec.clock_problem
    assert problem is not None and "\n" not in problem
    assert "capture 2" in problem and "-4294.927296 s" in problem and "1.1.1 before 1.1.2" in problem
    assert str(path) in problem

    capsys.readouterr()
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out)
    assert summary["device_family"] == "orbbec" and summary["warnings"] == [problem, rec.firmware_warning]
    assert [line for line in out.err.splitlines() if line.startswith("warning:")] == [
        f"warning: {problem}", f"warning: {rec.firmware_warning}"]


def test_a_jump_on_current_firmware_is_reported_without_blaming_it(tmp_path):
    path = tmp_path / "k.mkv"
    _write_femto(path, firmware="1.1.2", jump_at=3, jump_s=7200.0)
    rec = KinectRecording(path)
    list(rec.captures(decode_color=False))
    assert rec.firmware_warning is None
    assert "+7200.040000 s at capture 3" in rec.clock_problem and "firmware" not in rec.clock_problem


def test_sample_azure_recording_is_azure_without_warnings(shared):
    rec = KinectRecording(shared("data", "kinect", "recording.mkv"))
    list(rec.captures(decode_color=False))
    assert rec.device_family == "azure" and rec.firmware_warning is None and rec.clock_problem is None


@pytest.mark.parametrize("tags, family, overflow", [
    ({"K4A_DEVICE_SERIAL_NUMBER": "001514394512", "K4A_DEPTH_FIRMWARE_VERSION": "1.6.79"}, "azure", None),
    ({"K4A_DEVICE_SERIAL_NUMBER": "CL8F2100015", "K4A_DEPTH_FIRMWARE_VERSION": "1.0.9"}, "orbbec", "1.0.9"),
    ({"K4A_DEVICE_SERIAL_NUMBER": "CL8F2100015", "K4A_DEPTH_FIRMWARE_VERSION": "1.1.2"}, "orbbec", None),
    ({"K4A_DEPTH_FIRMWARE_VERSION": "1.1.1"}, "orbbec", "1.1.1"),
    ({"K4A_DEPTH_FIRMWARE_VERSION": "1.6.79"}, "azure", None),
    ({}, "azure", None),
])
def test_device_family_and_overflowing_firmware_from_tags(tags, family, overflow):
    assert device_family(tags) == family
    assert overflowing_firmware(tags) == overflow


def test_firmware_version_and_timestamp_jumps():
    assert firmware_version("1.1.2") == (1, 1, 2) and firmware_version("v1.6.110") == (1, 6, 110)
    assert firmware_version("") is None
    t = np.array([10.0, 10.04, 10.08, 5.0, 5.04, 9000.0])
    assert timestamp_jumps(t) == [(3, pytest.approx(-5.08)), (5, pytest.approx(8994.96))]
    assert timestamp_jumps(np.arange(5) / 30) == []


def test_models_state_the_datasheet_differences():
    azure, bolt = KINECT_MODELS["azure"], KINECT_MODELS["femto-bolt"]
    assert 25 in bolt.fps and 25 not in azure.fps
    assert "1536P" in azure.color_resolutions and "1536P" not in bolt.color_resolutions
    assert bolt.depth_modes == azure.depth_modes
    # 80 x 51 deg against 90 x 59 deg at 1280 x 720: the Bolt's focal length is longer.
    f = bolt.color_focal_px(1280)
    assert np.degrees(2 * np.arctan(640 / f)) == pytest.approx(80.0)
    assert np.degrees(2 * np.arctan(360 / f)) == pytest.approx(51.0, abs=0.6)
    from omnimocap.geometry.cameras import PinholeCamera

    cam = scale_color_camera(PinholeCamera(605.0, 606.0, 639.5, 365.5, 1280, 720, (0.08,)), bolt)
    assert cam.fx == pytest.approx(605.0 * f / azure.color_focal_px(1280)) and cam.cx == 639.5
    assert bolt.serial(0) == "CL8F0000001" and not bolt.serial(0).isdigit() and azure.serial(1).isdigit()
    clock = device_clock(bolt, np.random.default_rng(0))
    assert EPOCH_LIKE_S <= clock.epoch_s <= EPOCH_LIKE_S + 86_400 and 120 <= clock.start_offset_s <= 2400
    assert device_clock(azure, np.random.default_rng(0)).epoch_s == 0.0


# --- `simulate --kinect-model femto-bolt` ------------------------------------------------------------
@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    from omnimocap.sim.simulate import SimConfig, simulate_session

    root = tmp_path_factory.mktemp("femto_sims")
    out = {}
    for model in ("azure", "femto-bolt"):
        simulate_session(root / model, SimConfig(seconds=3.0, people=1, kinects=1, seed=4, pano_width=256,
                                                 kinect_video=False, kinect_model=model, realism="ideal"))
        out[model] = root / model
    simulate_session(root / "bolt_video", SimConfig(seconds=0.5, people=1, kinects=1, seed=4, pano_width=128,
                                                    kinect_model="femto-bolt"))
    out["bolt_video"] = root / "bolt_video"
    return out


def test_simulated_bolt_recording_has_the_wrappers_clock_tags_and_narrower_colour(sims):
    from omnimocap.capture.bodies import read_bodies

    rec = KinectRecording(sims["bolt_video"] / "kinect_CL8F0000001.mkv")
    assert rec.device_family == "orbbec" and rec.tags["K4A_DEPTH_FIRMWARE_VERSION"] == "1.1.2"
    assert 120e6 <= rec.start_offset_us <= 2400e6  # minutes
    times = [c.depth_timestamp for c in rec.captures(decode_color=False)]
    assert rec.clock_problem is None and rec.firmware_warning is None
    assert EPOCH_LIKE_S < times[0] < EPOCH_LIKE_S + 86_400  # epoch-like device times
    body_times = read_bodies(sims["bolt_video"] / "bodies_CL8F0000001.json").timestamps
    assert [round(t * 1e6) for t in times] == [round(t * 1e6) for t in body_times]
    # The datasheets' fields of view (distortion included) scale the simulated Azure Kinect's 605 px
    # focal length by tan(45 deg) / tan(40 deg); the draws move it by about 2 px.
    color = rec.calibration.color
    assert color.fx == pytest.approx(605.0 * np.tan(np.radians(45)) / np.tan(np.radians(40)), abs=8.0)


def test_bolt_and_azure_sessions_differ_only_in_the_device_clock(sims):
    truth = {m: Truth(sims[m]).motion() for m in ("azure", "femto-bolt")}
    a = truth["azure"]["kinect_frame_t_session_000000000001"]
    b = truth["femto-bolt"]["kinect_frame_t_session_CL8F0000001"]
    np.testing.assert_allclose(b, a, atol=2e-6)  # the same frames in session time
    np.testing.assert_array_equal(truth["azure"]["smplx_joints"], truth["femto-bolt"]["smplx_joints"])


def test_sync_on_epoch_like_kinect_times_finds_the_same_time_map(sims):
    from omnimocap.calibration.sync import sync_session
    from omnimocap.capture.rig import Rig

    maps = {}
    for model in ("azure", "femto-bolt"):
        sync_session(sims[model])
        maps[model] = Rig.load(sims[model] / "rig.json").time_maps["pano"]
    truth = Truth(sims["azure"]).rig().time_maps["pano"]
    t = np.array([truth.to_sensor(0.5), truth.to_sensor(2.5)])
    azure, bolt = maps["azure"].to_session(t), maps["femto-bolt"].to_session(t)
    np.testing.assert_allclose(bolt, azure, atol=2e-5)  # 20 us: the same answer as with an Azure Kinect
    np.testing.assert_allclose(bolt, truth.to_session(t), atol=0.02)


def test_recorder_keeps_the_bolts_epoch_like_device_times(sim_rig, tmp_path):
    from omnimocap.capture.recorder import GB, RecordConfig, Recorder

    rig = sim_rig(0.5, people=1, kinects=1, seed=4, pano_width=128, kinect_model="femto-bolt")
    out = tmp_path / "rec"
    Recorder(out, rig.sources, RecordConfig(min_free_gb=0.1), rig.clock, disk_free=lambda path: 100 * GB).run()
    source = KinectRecording(rig.sim_dir / "kinect_CL8F0000001.mkv")
    recorded = KinectRecording(out / "kinect_CL8F0000001.mkv")
    t_in = [round(c.depth_timestamp * 1e6) for c in source.captures(decode_color=False)]
    t_out = [round(c.depth_timestamp * 1e6) for c in recorded.captures(decode_color=False)]
    assert t_out == t_in and t_out[0] > EPOCH_LIKE_S * 1e6
    assert recorded.device_family == "orbbec" and recorded.clock_problem is None
    # the device's own firmware tags, not an Azure Kinect's
    for key in ("K4A_COLOR_FIRMWARE_VERSION", "K4A_DEPTH_FIRMWARE_VERSION"):
        assert recorded.tags[key] == source.tags[key] == KINECT_MODELS["femto-bolt"].depth_firmware


def _capsule(address: int, name: bytes = b"pyk4a device handle"):
    import ctypes

    new = ctypes.pythonapi.PyCapsule_New
    new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    return new(address, name, None)


def test_live_device_firmware_is_read_from_libk4a():
    import ctypes

    from omnimocap.capture.kinect_live import device_firmware, k4a_hardware_version_t

    native = ctypes.c_void_p(0xBEEF)  # the k4a_device_t a pyk4a capsule points at
    calls = []

    class Lib:
        @staticmethod
        def k4a_device_get_version(handle, out):
            calls.append(handle.value)
            v = ctypes.cast(out, ctypes.POINTER(k4a_hardware_version_t)).contents
            v.rgb.major, v.rgb.minor, v.rgb.iteration = 1, 1, 2
            v.depth.major, v.depth.minor, v.depth.iteration = 1, 1, 3
            return 0

    class Device:
        _device_handle = _capsule(ctypes.addressof(native))

    assert device_firmware(Device(), lib=Lib()) == ("1.1.2", "1.1.3")
    assert calls == [0xBEEF]

    class Failing(Lib):
        @staticmethod
        def k4a_device_get_version(handle, out):
            return 1  # K4A_RESULT_FAILED

    assert device_firmware(Device(), lib=Failing()) is None
    assert device_firmware(object(), lib=Lib()) is None  # a fake device without a native handle


def test_unknown_firmware_is_left_out_of_the_tags(tmp_path):
    raw, _ = _calibration()
    depth, ir, color = _frames(2)
    path = tmp_path / "k.mkv"
    with KinectMkvWriter(path, raw, color_mode="MJPG_720P", depth_mode="NFOV_2X2BINNED", device_serial=SERIAL,
                         color_firmware=None, depth_firmware=None) as writer:
        for k in range(2):
            writer.write_capture(1.0 + k / 30, color=color[k], depth=depth[k], ir=ir[k])
    tags = KinectRecording(path).tags
    assert "K4A_COLOR_FIRMWARE_VERSION" not in tags and "K4A_DEPTH_FIRMWARE_VERSION" not in tags
    assert tags["K4A_DEVICE_SERIAL_NUMBER"] == SERIAL
