"""Live Kinects without a device: the SDK's rules, start order and delays, the pyk4a calls (through a
fake module that records them), timestamps and drops, body pairing, gravity, missing libraries."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import numpy as np
import pytest

from omnimocap.capture.k4abt import BodyFrame
from omnimocap.capture.kinect_live import (
    KinectDeviceConfig,
    KinectRig,
    _BodyPairing,
    gravity_from_accelerometer,
    import_pyk4a,
    plan_rig,
    start_order,
)
from omnimocap.capture.sources import DISCONNECTED, EndOfStream, KinectFrame, SessionClock
from omnimocap.errors import DeviceError, UserError


def _rig(n: int, **kw) -> list[KinectDeviceConfig]:
    return [KinectDeviceConfig(device_id=i, role="master" if i == 0 else "subordinate", **kw) for i in range(n)]


def test_plan_rig_interleaves_depth_by_160_us():
    planned = plan_rig(_rig(4))
    assert [c.subordinate_delay_off_master_usec for c in planned] == [0, 160, 320, 480]
    times = sorted(c.depth_time_usec for c in planned)
    assert min(np.diff(times)) >= 160
    # A subordinate with its own depth delay is shifted so that its depth still lands 160 us apart.
    planned = plan_rig([KinectDeviceConfig(0, "MASTER", depth_delay_off_color_usec=100),
                        KinectDeviceConfig(1, "Subordinate", depth_delay_off_color_usec=50)])
    assert [c.role for c in planned] == ["master", "subordinate"]
    assert planned[1].depth_time_usec - planned[0].depth_time_usec == 160


@pytest.mark.parametrize("configs, words", [
    ([KinectDeviceConfig(depth_mode="WFOV_UNBINNED", fps=30)], "at most 15 fps"),
    ([KinectDeviceConfig(color_resolution="3072P", fps=30)], "at most 15 fps"),
    ([KinectDeviceConfig(fps=25)], "not an Azure Kinect rate"),
    ([KinectDeviceConfig(color_format="NV12", color_resolution="1080P")], "only at 720P"),
    ([KinectDeviceConfig(color_resolution="OFF", depth_mode="OFF")], "both off"),
    ([KinectDeviceConfig(depth_delay_off_color_usec=40000)], "frame period"),
    ([KinectDeviceConfig(0, "master"), KinectDeviceConfig(1, "master")], "exactly one master"),
    ([KinectDeviceConfig(0, "subordinate"), KinectDeviceConfig(1, "subordinate")], "exactly one master"),
    ([KinectDeviceConfig(0, "master"), KinectDeviceConfig(1, "standalone")], "mixes standalone"),
    ([KinectDeviceConfig(0, "master", exposure_usec=None), KinectDeviceConfig(1, "subordinate")], "manual exposure"),
    ([KinectDeviceConfig(0, "master", subordinate_delay_off_master_usec=100), KinectDeviceConfig(1, "subordinate")],
     "must be 0 unless subordinate"),
    ([KinectDeviceConfig(0, "master"), KinectDeviceConfig(1, "subordinate", subordinate_delay_off_master_usec=40000)],
     "outside one frame period"),
    ([KinectDeviceConfig(0, "master"), KinectDeviceConfig(1, "subordinate", subordinate_delay_off_master_usec=100)],
     "100 us apart"),
    ([KinectDeviceConfig(0, "master", color_resolution="OFF"), KinectDeviceConfig(1, "subordinate")], "colour camera is off"),
    ([KinectDeviceConfig(0, "master", fps=15), KinectDeviceConfig(1, "subordinate")], "different rates"),
    ([KinectDeviceConfig(0), KinectDeviceConfig(0)], "repeat"),
    ([KinectDeviceConfig(role="leader")], "unknown sync role"),
])
def test_plan_rig_refuses_what_the_sdk_refuses(configs, words):
    with pytest.raises(UserError, match=words) as exc:
        plan_rig(configs)
    assert "\n" not in str(exc.value) and exc.value.fix


def test_wfov_unbinned_at_15_fps_and_standalone_auto_exposure_are_fine():
    plan_rig([KinectDeviceConfig(depth_mode="WFOV_UNBINNED", fps=15, exposure_usec=None)])


def test_start_order_is_subordinates_then_master():
    order = start_order(plan_rig([KinectDeviceConfig(0, "subordinate"), KinectDeviceConfig(1, "master"),
                                  KinectDeviceConfig(2, "subordinate")]))
    assert [c.device_id for c in order] == [0, 2, 1]


# --- a fake pyk4a that records what is called ------------------------------------------------------
def _fake_pyk4a(calls: list, captures: dict[int, list]):
    m = types.ModuleType("pyk4a")

    class K4AException(Exception):
        pass

    class K4ATimeoutException(K4AException):
        pass

    def enum(name, *members):
        return type(name, (), {k: f"{name}.{k}" for k in members})

    m.K4AException, m.K4ATimeoutException = K4AException, K4ATimeoutException
    m.ColorResolution = enum("ColorResolution", "OFF", "RES_720P", "RES_1080P", "RES_1440P", "RES_1536P", "RES_2160P", "RES_3072P")
    m.ImageFormat = enum("ImageFormat", "COLOR_MJPG", "COLOR_NV12", "COLOR_YUY2", "COLOR_BGRA32")
    m.DepthMode = enum("DepthMode", "OFF", "NFOV_2X2BINNED", "NFOV_UNBINNED", "WFOV_2X2BINNED", "WFOV_UNBINNED", "PASSIVE_IR")
    m.FPS = enum("FPS", "FPS_5", "FPS_15", "FPS_30")
    m.WiredSyncMode = enum("WiredSyncMode", "STANDALONE", "MASTER", "SUBORDINATE")
    m.Config = lambda **kw: dict(kw)

    class PyK4A:
        def __init__(self, config, device_id):
            self.config, self.device_id = config, device_id
            self.serial = f"00000{device_id}"
            self.calibration_raw = '{"CalibrationInformation": {}}'
            calls.append(("init", device_id, config))

        def open(self):
            calls.append(("open", self.device_id))

        def __setattr__(self, name, value):
            if name == "exposure":
                calls.append(("exposure", self.device_id, value))
            object.__setattr__(self, name, value)

        def start(self):
            calls.append(("start", self.device_id))

        def get_capture(self, timeout):
            queue = captures.get(self.device_id, [])
            if not queue:
                raise K4ATimeoutException()
            item = queue.pop(0)
            if isinstance(item, Exception):
                raise item
            return item

        def stop(self):
            calls.append(("stop", self.device_id))

        def close(self):
            calls.append(("close", self.device_id))

    m.PyK4A = PyK4A
    return m


@dataclass
class FakeCapture:
    depth_timestamp_usec: int
    depth_system_timestamp_nsec: int
    depth: np.ndarray | None = None
    ir: np.ndarray | None = None
    color: np.ndarray | None = None
    color_timestamp_usec: int = 0
    color_system_timestamp_nsec: int = 0
    temperature: float = 31.5


def test_rig_opens_sets_exposure_then_starts_subordinates_before_master():
    calls: list = []
    pk = _fake_pyk4a(calls, {})
    rig = KinectRig([KinectDeviceConfig(0, "master", exposure_usec=10000), KinectDeviceConfig(1, "subordinate", exposure_usec=10000),
                     KinectDeviceConfig(2, "subordinate", exposure_usec=10000)], SessionClock(), pyk4a=pk)
    sources = rig.open()
    assert [s.config.device_id for s in sources] == [1, 2, 0]
    rig.start()
    starts = [c[1] for c in calls if c[0] == "start"]
    assert starts == [1, 2, 0]
    for device_id in (0, 1, 2):  # manual exposure on every device, before any starts
        assert calls.index(("exposure", device_id, 10000)) < calls.index(("start", 1))
    configs = {c[1]: c[2] for c in calls if c[0] == "init"}
    assert configs[0]["wired_sync_mode"] == "WiredSyncMode.MASTER"
    assert configs[1]["wired_sync_mode"] == "WiredSyncMode.SUBORDINATE"
    assert [configs[i]["subordinate_delay_off_master_usec"] for i in (0, 1, 2)] == [0, 160, 320]
    assert configs[0]["color_resolution"] == "ColorResolution.RES_720P" and configs[0]["camera_fps"] == "FPS.FPS_30"
    assert sources[2].info.serial == "000000" and sources[2].info.role == "master"
    assert sources[2].info.color_mode == "MJPG_720P" and sources[2].info.calibration_json.startswith(b"{")
    rig.stop()
    assert [c[1] for c in calls if c[0] == "stop"] == [0, 2, 1]  # master stops first


def test_live_source_timestamps_drops_and_disconnect():
    calls: list = []
    clock = SessionClock()
    base_ns = int(clock.start_monotonic * 1e9)
    depth = np.full((576, 640), 1500, np.uint16)
    queue = [FakeCapture(1_000_000 + k * 33_333, base_ns + int(0.5e9) + k * 33_333_000, depth=depth, ir=depth)
             for k in (0, 1, 4)]  # two captures missing between the 2nd and 3rd
    captures = {0: queue}
    pk = _fake_pyk4a(calls, captures)
    queue.append(pk.K4AException("device lost"))
    rig = KinectRig([KinectDeviceConfig(0)], clock, pyk4a=pk)
    source = rig.open()[0]
    frames = [source.read(0.1) for _ in range(3)]
    assert [f.device_timestamp for f in frames] == pytest.approx([1.0, 1.033333, 1.133332])
    assert [f.host_time for f in frames] == pytest.approx([0.5, 0.533333, 0.633332], abs=1e-6)
    assert frames[0].depth is depth and frames[0].temperature_c == 31.5
    with pytest.raises(EndOfStream, match="USB"):
        source.read(0.1)
    h = source.health()
    assert (h.frames, h.drops, h.timestamp_gaps, h.state) == (3, 2, 1, DISCONNECTED)
    assert h.temperature_c == 31.5


def test_live_source_timeout_returns_none():
    pk = _fake_pyk4a([], {})
    source = KinectRig([KinectDeviceConfig(0)], SessionClock(), pyk4a=pk).open()[0]
    assert source.read(0.05) is None


class FakeTracker:
    """Answers each enqueued capture two pushes later; skips the capture at ``skip_us``."""

    def __init__(self, skip_us: int):
        self.queue: list[float] = []
        self.skip_us = skip_us
        self.handles = []

    def enqueue(self, handle, timeout_ms):
        self.handles.append(handle)
        self.queue.append(handle)
        return True

    def pop(self, timeout_ms):
        while len(self.queue) > 2 or (self.queue and timeout_ms > 0):
            t = self.queue.pop(0)
            if int(round(t * 1e6)) == self.skip_us:
                continue
            pos = np.full((1, 32, 3), t)
            return BodyFrame(t, np.array([1]), pos, np.tile([1.0, 0, 0, 0], (1, 32, 1)), np.full((1, 32), 2))
        return None


def test_body_pairing_releases_frames_in_order_with_their_bodies():
    times = [1.0 + k / 30 for k in range(6)]
    tracker = FakeTracker(skip_us=int(round(times[2] * 1e6)))
    pairing = _BodyPairing(tracker)
    out = []
    for k, t in enumerate(times):
        out += pairing.push(KinectFrame("s", k, t, 0.0), t)  # the handle is the time, for the fake
    out += pairing.collect(100)
    assert [f.frame_id for f in out] == list(range(6))
    assert [None if f.bodies is None else float(f.bodies[1].positions[0, 0]) for f in out] == \
        pytest.approx([times[0], times[1], None, times[3], times[4], times[5]])


def test_gravity_points_down_in_the_depth_frame():
    rng = np.random.default_rng(1)
    acc = np.array([0.0, 0.0, 9.81]) + rng.normal(scale=0.05, size=(200, 3))  # IMU z up at rest
    R_depth_accel = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # accel +z = depth -y (up)
    g = gravity_from_accelerometer(acc, R_depth_accel)
    assert g.samples == 200 and g.acc_mean[2] == pytest.approx(9.81, abs=0.02)
    np.testing.assert_allclose(g.down_depth, [0, 1, 0], atol=0.01)  # depth +y is down
    assert gravity_from_accelerometer(acc).down_depth is None


def test_missing_pyk4a_names_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyk4a", None)  # import fails as if not installed
    with pytest.raises(DeviceError) as exc:
        import_pyk4a()
    text = str(exc.value)
    assert "pyk4a is not installed" in text and "pip install pyk4a-bundle" in text
    assert "numpy<2" in text and "Azure Kinect Sensor SDK" in text and "\n" not in text


def test_pyk4a_built_for_numpy_1_is_explained(monkeypatch):
    class Finder:
        def find_spec(self, name, path=None, target=None):
            if name == "pyk4a":
                raise ImportError("numpy.core.multiarray failed to import")
            return None

    monkeypatch.delitem(sys.modules, "pyk4a", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Finder()] + sys.meta_path)
    with pytest.raises(DeviceError, match="built for NumPy 1.x") as exc:
        import_pyk4a()
    assert "numpy<2" in str(exc.value)


def test_missing_libk4a_is_named(monkeypatch):
    class Finder:
        def find_spec(self, name, path=None, target=None):
            if name == "pyk4a":
                raise ImportError("libk4a.so.1.4: cannot open shared object file: No such file or directory")
            return None

    monkeypatch.delitem(sys.modules, "pyk4a", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Finder()] + sys.meta_path)
    with pytest.raises(DeviceError, match="cannot load the Azure Kinect library libk4a"):
        import_pyk4a()


# --- Orbbec's K4A wrapper: pyk4a's transformation calls fail there ---------------------------------
class WrapperCapture(FakeCapture):
    """A capture as pyk4a hands it out over Orbbec's K4A wrapper, where the transformation functions
    fail (depth-to-colour parameter validation, a point cloud from YUY2): every transformed image and
    point cloud raises."""

    def __getattr__(self, name):
        if name.startswith("transformed_") or name.endswith("point_cloud"):
            raise AssertionError(f"live capture used pyk4a's transformation ({name}); our camera models must do it")
        raise AttributeError(name)


def test_live_capture_never_calls_pyk4a_transformations():
    calls: list = []
    clock = SessionClock()
    depth = np.full((576, 640), 1500, np.uint16)
    color = np.frombuffer(b"\xff\xd8jpeg\xff\xd9", np.uint8)
    queue = [WrapperCapture(1_730_800_000_000_000 + k * 33_333, 0, depth=depth, ir=depth, color=color,
                            color_timestamp_usec=1_730_800_000_000_000 + k * 33_333) for k in range(3)]
    pk = _fake_pyk4a(calls, {0: queue})

    def refuse(*args, **kwargs):
        raise AssertionError("live capture used pyk4a's transformation module")

    for name in ("depth_image_to_color_camera", "depth_image_to_color_camera_custom", "color_image_to_depth_camera",
                 "depth_image_to_point_cloud"):
        setattr(pk, name, refuse)
    pk.transformation = types.SimpleNamespace(**{n: refuse for n in ("depth_image_to_color_camera",
                                                                    "color_image_to_depth_camera",
                                                                    "depth_image_to_point_cloud")})
    source = KinectRig([KinectDeviceConfig(0)], clock, pyk4a=pk).open()[0]
    frames = [source.read(0.1) for _ in range(3)]
    assert [round(f.device_timestamp * 1e6) for f in frames] == [1_730_800_000_000_000 + k * 33_333 for k in range(3)]
    assert all(f.depth is depth and f.color == color.tobytes() for f in frames)
    with pytest.raises(AssertionError, match="transformed_depth"):
        WrapperCapture(0, 0).transformed_depth  # the fake does refuse, so the check above can fail


def test_no_module_names_pyk4a_transformations():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    words = ("transformed_depth", "transformed_color", "transformed_ir", "point_cloud", "depth_image_to_color_camera",
             "color_image_to_depth_camera")
    users = [f"{p.relative_to(root)}: {w}" for folder in ("capture", "apps", "calibration", "hands", "fusion")
             for p in sorted((root / folder).rglob("*.py")) for w in words if w in p.read_text()]
    assert users == []
