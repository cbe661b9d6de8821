"""Azure Kinect sources: live devices through pyk4a (one, or several on a wired sync chain), and
recordings replayed as if live.

The SDK's rules for a rig, checked by :func:`plan_rig` before any device opens (each violation is
one :class:`UserError` line):

- WFOV unbinned depth and 3072p colour run at most 15 fps; NV12/YUY2 colour only at 720p.
- A wired rig has one master (its colour camera on: the master's colour timing drives the sync
  pulse) and subordinates; ``subordinate_delay_off_master_usec`` is 0 unless subordinate and at
  most one frame period; ``depth_delay_off_color_usec`` at most one frame period either way.
- Depth captures of the devices are interleaved by at least 160 us so their lasers do not see each
  other: each device's depth fires at ``subordinate_delay + depth_delay`` after the master's colour
  start; unset subordinate delays are chosen as the master's depth time + 160 us x k.
- Colour exposure is manual on every device of a wired rig (auto exposure shifts the capture time).
- Start subordinates first and the master last (:func:`start_order`); a subordinate waits for the
  master's pulse.

Timestamps per capture: ``*_timestamp_usec`` (device clock, mid-exposure) become seconds;
``*_system_timestamp_nsec`` (host CLOCK_MONOTONIC at arrival) become the session clock. Missing
frames show as steps in the device timestamps (counted as drops). Body tracking runs through
:mod:`omnimocap.capture.k4abt` when enabled; its results are paired with their captures by depth
timestamp, so a frame leaves the source once its bodies are known.
"""

from __future__ import annotations

import ctypes
import importlib
import itertools
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from omnimocap.capture.rig import TimeMap
from omnimocap.capture.bodies import read_bodies
from omnimocap.capture.kinect_calibration import COLOR_RESOLUTIONS, DEPTH_MODES, KinectCalibration, parse_calibration
from omnimocap.capture.kinect_mkv import KinectRecording
from omnimocap.capture.sources import EndOfStream, KinectBody, KinectFrame, Pacer, SessionClock, Source, StreamInfo
from omnimocap.errors import DeviceError, UserError
from omnimocap.geometry.gravity import ImuGravity, gravity_from_accelerometer
from omnimocap.capture.session import kinect_name

PYK4A_INSTALL_HINT = (
    "either pip install pyk4a-bundle (it ships libk4a 1.4 and the depth engine, but its extension is built "
    "against NumPy 1.x, so it imports only with numpy<2: use a separate environment for recording), or install "
    "the Azure Kinect Sensor SDK 1.4 (Linux: apt install libk4a1.4-dev from packages.microsoft.com; Windows: "
    "the SDK installer) and then pip install pyk4a"
)
INTERLEAVE_USEC = 160
FPS_CHOICES = (5, 15, 30)
COLOR_FORMATS = ("MJPG", "BGRA32", "NV12", "YUY2")
ROLES = ("standalone", "master", "subordinate")
DEFAULT_EXPOSURE_USEC = 8000


def import_pyk4a():
    """Import pyk4a, or raise :class:`DeviceError` saying exactly what is missing and what to install."""
    try:
        return importlib.import_module("pyk4a")
    except (ImportError, AttributeError, OSError) as exc:
        text = str(exc)
        if getattr(exc, "name", None) == "pyk4a":
            problem = "pyk4a is not installed"
        elif "numpy" in text.lower() or "_ARRAY_API" in text:
            problem = (f"pyk4a is built for NumPy 1.x and this environment has NumPy {np.__version__} "
                       f"({text.splitlines()[0] if text else type(exc).__name__})")
        elif "k4a" in text:
            problem = f"pyk4a cannot load the Azure Kinect library libk4a ({text.splitlines()[0]})"
        else:
            problem = f"pyk4a does not import ({type(exc).__name__}: {text.splitlines()[0] if text else ''})"
        raise DeviceError(problem, path="pyk4a", fix=PYK4A_INSTALL_HINT) from None


# --- configuration and the SDK's rules -------------------------------------------------------------
@dataclass(frozen=True)
class KinectDeviceConfig:
    """One device of a rig. Names follow the K4A recording tags: ``color_resolution`` ``OFF`` or a
    key of :data:`COLOR_RESOLUTIONS` (``720P``...), ``depth_mode`` ``OFF`` or a key of
    :data:`DEPTH_MODES`, ``role`` standalone | master | subordinate (``K4A_WIRED_SYNC_MODE``, any case).
    Delays and exposure in microseconds; ``subordinate_delay_off_master_usec`` None lets
    :func:`plan_rig` interleave the depth captures. ``exposure_usec`` None means auto exposure."""

    device_id: int = 0
    role: str = "standalone"
    color_resolution: str = "720P"
    """K4A colour resolution (720P, 1080P, 1440P, 1536P, 2160P, 3072P), or OFF."""
    color_format: str = "MJPG"
    depth_mode: str = "NFOV_UNBINNED"
    """K4A depth mode (NFOV_2X2BINNED, NFOV_UNBINNED, WFOV_2X2BINNED, WFOV_UNBINNED, PASSIVE_IR), or OFF."""
    fps: int = 30
    """Camera rate, frames per second."""
    exposure_usec: int | None = DEFAULT_EXPOSURE_USEC
    """Manual colour exposure, microseconds (None: automatic exposure)."""
    depth_delay_off_color_usec: int = 0
    subordinate_delay_off_master_usec: int | None = None
    synchronized_images_only: bool = True
    body_tracking: bool = False
    """Run k4abt body tracking live on the device's captures (needs libk4abt)."""

    @property
    def period_usec(self) -> int:
        return 1_000_000 // self.fps

    @property
    def depth_time_usec(self) -> int:
        """When this device's depth exposure starts, after the master's colour start (us)."""
        return (self.subordinate_delay_off_master_usec or 0) + self.depth_delay_off_color_usec


def _check_device(c: KinectDeviceConfig) -> KinectDeviceConfig:
    who = f"Kinect {c.device_id}"
    role = c.role.lower()
    if role not in ROLES:
        raise UserError(f"{who}: unknown sync role {c.role!r}", fix=f"use one of {', '.join(ROLES)}")
    if c.fps not in FPS_CHOICES:
        raise UserError(f"{who}: {c.fps} fps is not an Azure Kinect rate", fix="use 5, 15 or 30")
    if c.color_resolution != "OFF" and c.color_resolution not in COLOR_RESOLUTIONS:
        raise UserError(f"{who}: unknown colour resolution {c.color_resolution!r}",
                        fix=f"use OFF or one of {', '.join(COLOR_RESOLUTIONS)}")
    if c.depth_mode != "OFF" and c.depth_mode not in DEPTH_MODES:
        raise UserError(f"{who}: unknown depth mode {c.depth_mode!r}", fix=f"use OFF or one of {', '.join(DEPTH_MODES)}")
    if c.color_format not in COLOR_FORMATS:
        raise UserError(f"{who}: unknown colour format {c.color_format!r}", fix=f"use one of {', '.join(COLOR_FORMATS)}")
    if c.color_resolution == "OFF" and c.depth_mode == "OFF":
        raise UserError(f"{who}: colour and depth are both off", fix="enable at least one camera")
    for mode in (c.depth_mode, c.color_resolution):
        if mode in ("WFOV_UNBINNED", "3072P") and c.fps > 15:
            raise UserError(f"{who}: {mode} runs at most 15 fps, not {c.fps}",
                            fix="use --fps 15 (or 5), or a binned depth mode / a lower colour resolution")
    if c.color_format in ("NV12", "YUY2") and c.color_resolution not in ("720P", "OFF"):
        raise UserError(f"{who}: {c.color_format} colour exists only at 720P", fix="use MJPG or BGRA32, or 720P")
    if abs(c.depth_delay_off_color_usec) >= c.period_usec:
        raise UserError(f"{who}: depth_delay_off_color_usec {c.depth_delay_off_color_usec} is a frame period or more",
                        fix=f"keep it within +-{c.period_usec - 1} us at {c.fps} fps")
    if c.exposure_usec is not None and not 0 < c.exposure_usec < c.period_usec:
        raise UserError(f"{who}: exposure {c.exposure_usec} us does not fit in a frame ({c.period_usec} us)",
                        fix="choose a manual exposure shorter than the frame period")
    if c.body_tracking and c.depth_mode in ("OFF", "PASSIVE_IR"):
        raise UserError(f"{who}: body tracking needs depth and IR", fix="choose an NFOV or WFOV depth mode")
    sync_only = c.synchronized_images_only and c.color_resolution != "OFF" and c.depth_mode != "OFF"
    return replace(c, role=role, synchronized_images_only=sync_only)


def plan_rig(configs: list[KinectDeviceConfig], interleave_usec: int = INTERLEAVE_USEC) -> list[KinectDeviceConfig]:
    """Check a rig against the SDK's rules and fill in the subordinate delays. Returns the resolved
    configs in the input order; raises :class:`UserError` naming the device and the fix."""
    if not configs:
        raise UserError("no Kinect configured", fix="name at least one device, e.g. --kinect 0")
    resolved = [_check_device(c) for c in configs]
    ids = [c.device_id for c in resolved]
    if len(set(ids)) != len(ids):
        raise UserError(f"Kinect device ids repeat: {ids}", fix="list each device once")
    roles = [c.role for c in resolved]
    wired = any(r != "standalone" for r in roles)
    if not wired:
        return resolved
    if roles.count("master") != 1:
        raise UserError(f"a wired sync rig needs exactly one master, got {roles.count('master')} (roles {roles})",
                        fix="make one device master and the others subordinate")
    if "standalone" in roles:
        raise UserError(f"a wired sync rig mixes standalone devices in (roles {roles})",
                        fix="make every device of the chain master or subordinate")
    if len({c.fps for c in resolved}) != 1:
        raise UserError(f"devices of a wired rig run at different rates ({[c.fps for c in resolved]} fps)",
                        fix="use one --fps for all devices")
    master = resolved[roles.index("master")]
    if master.color_resolution == "OFF":
        raise UserError(f"Kinect {master.device_id}: the master's colour camera is off; its timing drives the sync",
                        fix="enable colour on the master")
    if master.subordinate_delay_off_master_usec:
        raise UserError(f"Kinect {master.device_id}: subordinate_delay_off_master_usec is "
                        f"{master.subordinate_delay_off_master_usec} on the master", fix="it must be 0 unless subordinate")
    for c in resolved:
        if c.exposure_usec is None:
            raise UserError(f"Kinect {c.device_id}: auto exposure in a wired rig (it shifts each device's capture time)",
                            fix="set a manual exposure on every device, e.g. --exposure-us 8000")
    out, k = [], 0
    for c in resolved:
        if c.role == "master":
            out.append(replace(c, subordinate_delay_off_master_usec=0))
            continue
        k += 1
        delay = c.subordinate_delay_off_master_usec
        if delay is None:
            delay = master.depth_time_usec + interleave_usec * k - c.depth_delay_off_color_usec
            if delay < 0:
                raise UserError(f"Kinect {c.device_id}: its depth_delay_off_color_usec {c.depth_delay_off_color_usec} puts "
                                f"its depth before the master's", fix="reduce that delay or set the subordinate delay by hand")
        if not 0 <= delay <= c.period_usec:
            raise UserError(f"Kinect {c.device_id}: subordinate delay {delay} us is outside one frame period "
                            f"(0..{c.period_usec} us)", fix="use fewer devices or a smaller interleave")
        out.append(replace(c, subordinate_delay_off_master_usec=delay))
    times = sorted((c.depth_time_usec, c.device_id) for c in out)
    for (t0, a), (t1, b) in zip(times, times[1:]):
        if t1 - t0 < interleave_usec:
            raise UserError(f"Kinects {a} and {b} fire their depth lasers {t1 - t0} us apart",
                            fix=f"interleave depth captures by at least {interleave_usec} us (leave the delays unset to "
                                "have them chosen)")
    return out


def start_order(configs: list[KinectDeviceConfig]) -> list[KinectDeviceConfig]:
    """Subordinates first, then standalone devices, the master last (it starts the sync pulses)."""
    rank = {"subordinate": 0, "standalone": 1, "master": 2}
    return sorted(configs, key=lambda c: rank[c.role.lower()])


def pyk4a_config(pyk4a, c: KinectDeviceConfig):
    """The ``pyk4a.Config`` of a resolved device config."""
    return pyk4a.Config(
        color_resolution=getattr(pyk4a.ColorResolution, "OFF" if c.color_resolution == "OFF" else f"RES_{c.color_resolution}"),
        color_format=getattr(pyk4a.ImageFormat, f"COLOR_{c.color_format}"),
        depth_mode=getattr(pyk4a.DepthMode, c.depth_mode),
        camera_fps=getattr(pyk4a.FPS, f"FPS_{c.fps}"),
        synchronized_images_only=c.synchronized_images_only,
        depth_delay_off_color_usec=c.depth_delay_off_color_usec,
        wired_sync_mode=getattr(pyk4a.WiredSyncMode, c.role.upper()),
        subordinate_delay_off_master_usec=c.subordinate_delay_off_master_usec or 0,
    )


def stream_calibration(info: StreamInfo) -> KinectCalibration | None:
    """The colour and depth camera models of a Kinect source's stream (its factory calibration in
    the stream's modes), or None when the source has no calibration or no colour camera."""
    if info.calibration_json is None or not info.color_mode:
        return None
    color_resolution = info.color_mode.partition("_")[2]
    depth_mode = info.depth_mode if info.depth_mode in DEPTH_MODES else "NFOV_UNBINNED"
    if color_resolution not in COLOR_RESOLUTIONS:
        return None
    return parse_calibration(info.calibration_json, color_resolution=color_resolution, depth_mode=depth_mode,
                             source=f"kinect {info.serial} factory calibration")


# --- body tracking pairing -------------------------------------------------------------------------
class _BodyPairing:
    """Feeds captures to a k4abt tracker and releases each frame once its bodies are known.

    The tracker answers in order with a lag of a few frames; a result is matched to the pending frame
    with the same depth timestamp (integer microseconds), and pending frames older than a result
    were skipped by the tracker (they leave with ``bodies`` None)."""

    def __init__(self, tracker, max_pending: int = 8):
        self.tracker = tracker
        self.max_pending = max_pending
        self.pending: deque[KinectFrame] = deque()
        self.untracked = 0

    def push(self, frame: KinectFrame, capture_handle) -> list[KinectFrame]:
        ready: list[KinectFrame] = []
        if len(self.pending) >= self.max_pending:  # the tracker fell behind: give up on the oldest
            ready.append(self.pending.popleft())
            self.untracked += 1
        if not self.tracker.enqueue(capture_handle, 0):
            self.untracked += 1
            if not self.pending:
                return ready + [frame]
        self.pending.append(frame)  # an untracked frame waits too, so frames leave in order
        return ready + self.collect(0)

    def collect(self, timeout_ms: int) -> list[KinectFrame]:
        ready: list[KinectFrame] = []
        while self.pending:
            result = self.tracker.pop(timeout_ms)
            if result is None:
                break
            t_us = int(round(result.timestamp * 1e6))
            while self.pending and int(round(self.pending[0].device_timestamp * 1e6)) < t_us:
                ready.append(self.pending.popleft())
            if self.pending and int(round(self.pending[0].device_timestamp * 1e6)) == t_us:
                frame = self.pending.popleft()
                frame.bodies = {int(i): KinectBody(p, q, c) for i, p, q, c in zip(
                    result.body_ids, result.positions, result.orientations, result.confidences)}
                ready.append(frame)
        return ready


def _capsule_address(capsule) -> int:
    """The pointer a pyk4a PyCapsule holds (pyk4a stores a pointer to the k4a handle or struct)."""
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype, api.PyCapsule_GetName.argtypes = ctypes.c_char_p, [ctypes.py_object]
    api.PyCapsule_GetPointer.restype, api.PyCapsule_GetPointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule))


class k4a_version_t(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32), ("iteration", ctypes.c_uint32)]


class k4a_hardware_version_t(ctypes.Structure):
    _fields_ = [("rgb", k4a_version_t), ("depth", k4a_version_t), ("audio", k4a_version_t),
                ("depth_sensor", k4a_version_t), ("firmware_build", ctypes.c_int), ("firmware_signature", ctypes.c_int)]


def _loaded_libk4a():
    """libk4a as this process already loaded it (pyk4a links it), through ctypes; None if not loaded."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "libk4a" in line and "record" not in line and "k4abt" not in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def device_firmware(device, lib=None) -> tuple[str, str] | None:
    """(colour, depth) firmware versions ("major.minor.iteration") of an open pyk4a device, read with
    libk4a's ``k4a_device_get_version`` (pyk4a does not wrap it); None when they cannot be read (no
    native handle, the library not loaded, the call failing). ``lib``: the loaded libk4a (default:
    the one in this process)."""
    handle = getattr(device, "_device_handle", None)
    if handle is None:
        return None
    try:
        address = _capsule_address(handle)
        native = ctypes.c_void_p.from_address(address).value
    except (TypeError, ValueError, ctypes.ArgumentError):
        return None
    lib = lib if lib is not None else _loaded_libk4a()
    if lib is None or not native:
        return None
    version = k4a_hardware_version_t()
    try:
        if lib.k4a_device_get_version(ctypes.c_void_p(native), ctypes.byref(version)) != 0:
            return None
    except (AttributeError, ctypes.ArgumentError):
        return None

    def text(v: k4a_version_t) -> str:
        return f"{v.major}.{v.minor}.{v.iteration}"
    return text(version.rgb), text(version.depth)


# --- live devices ----------------------------------------------------------------------------------
class KinectLiveSource(Source[KinectFrame]):
    """One live Azure Kinect. Create through :class:`KinectRig` (it opens the devices, sets the
    exposure and starts them in the SDK's order)."""

    kind = "kinect"

    def __init__(self, pyk4a, device, config: KinectDeviceConfig, clock: SessionClock):
        super().__init__(f"kinect{config.device_id}", clock)
        self._pyk4a, self._device, self.config = pyk4a, device, config
        self._ready: deque[KinectFrame] = deque()
        self._pairing: _BodyPairing | None = None
        self._frame_id = 0
        self._started = False

    def _connect(self) -> None:
        c = self.config
        serial = str(getattr(self._device, "serial", "") or f"device{c.device_id}")
        self.name = kinect_name(serial)
        color_mode = None if c.color_resolution == "OFF" else f"MJPG_{c.color_resolution}"
        raw = getattr(self._device, "calibration_raw", None)
        self.info = replace(self.info, serial=serial, role=c.role, fps=float(c.fps), color_mode=color_mode,
                            depth_mode=None if c.depth_mode == "OFF" else c.depth_mode,
                            calibration_json=raw.encode() if isinstance(raw, str) else raw,
                            depth_delay_ns=c.depth_delay_off_color_usec * 1000,
                            **dict(zip(("color_firmware", "depth_firmware"), device_firmware(self._device) or (None, None))))
        self.nominal_fps = float(c.fps)
        if c.body_tracking:
            from omnimocap.capture.k4abt import BodyTracker, k4a_calibration_t

            address = _capsule_address(self._device.calibration._calibration_handle)
            calibration = k4a_calibration_t.from_buffer_copy(ctypes.string_at(address, ctypes.sizeof(k4a_calibration_t)))
            self._pairing = _BodyPairing(BodyTracker(calibration))

    def _start(self) -> None:
        if not self._started:
            self._device.start()
            self._started = True

    def _read(self, timeout: float) -> KinectFrame | None:
        if self._ready:
            return self._ready.popleft()
        deadline = time.monotonic() + timeout
        while True:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            try:
                capture = self._device.get_capture(timeout=remaining_ms)
            except self._pyk4a.K4ATimeoutException:
                return None
            except self._pyk4a.K4AException as exc:
                raise EndOfStream(f"{self.name} stopped delivering captures ({exc or 'device error'}); "
                                  "check its USB 3 and power cables") from None
            frame = self._frame(capture)
            if self._pairing is None:
                return frame
            handle = ctypes.c_void_p.from_address(_capsule_address(capture._capture_handle)).value
            self._ready.extend(self._pairing.push(frame, handle))
            if self._ready:
                return self._ready.popleft()
            if time.monotonic() >= deadline:
                return None

    def _frame(self, capture) -> KinectFrame:
        depth, ir, color = capture.depth, capture.ir, capture.color
        if color is not None and self.config.color_format == "MJPG":
            color = np.asarray(color).tobytes()
        elif color is not None and color.ndim == 3 and color.shape[2] == 4:
            color = np.ascontiguousarray(color[:, :, :3])  # BGRA -> BGR
        if depth is not None:
            t_us, host_ns = capture.depth_timestamp_usec, capture.depth_system_timestamp_nsec
        else:
            t_us, host_ns = capture.color_timestamp_usec, capture.color_system_timestamp_nsec
        host = self.clock.from_monotonic_ns(host_ns) if host_ns else self.clock.now()
        try:
            temperature = float(capture.temperature)
        except (AttributeError, TypeError, ValueError):
            temperature = None
        if temperature is not None and np.isfinite(temperature):
            self._set_temperature(temperature)
        frame = KinectFrame(self.info.serial, self._frame_id, t_us / 1e6, host, color=color, depth=depth, ir=ir,
                            color_timestamp=capture.color_timestamp_usec / 1e6 if capture.color is not None else None,
                            temperature_c=temperature)
        self._frame_id += 1
        return frame

    def measure_gravity(self, seconds: float = 0.5) -> ImuGravity:
        """Average the accelerometer for ``seconds`` (the device must be still and started)."""
        acc = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                sample = self._device.get_imu_sample(timeout=100)
            except self._pyk4a.K4ATimeoutException:
                continue
            acc.append(sample["acc_sample"])
        if not acc:
            raise DeviceError(f"{self.name}: no IMU samples in {seconds} s", fix="check that the IMU was started")
        R = None
        calibration = getattr(self._device, "calibration", None)
        if calibration is not None:
            R, _ = calibration.get_extrinsic_parameters(self._pyk4a.CalibrationType.ACCEL, self._pyk4a.CalibrationType.DEPTH)
        return gravity_from_accelerometer(np.asarray(acc), None if R is None else np.asarray(R).reshape(3, 3))

    def _stop(self) -> None:
        if self._pairing is not None:
            self._pairing.tracker.close()
            self._pairing = None
        if self._started:
            self._device.stop()
            self._started = False
        self._device.close()


class KinectRig:
    """Several (or one) live Kinects: validated with :func:`plan_rig`, opened with manual exposure,
    started subordinates first and master last. ``sources`` lists them in that start order."""

    def __init__(self, configs: list[KinectDeviceConfig], clock: SessionClock | None = None, pyk4a=None):
        self.configs = plan_rig(configs)
        self.clock = clock or SessionClock()
        self._pyk4a = pyk4a or import_pyk4a()
        self.sources: list[KinectLiveSource] = []

    def open(self) -> list[KinectLiveSource]:
        """Open every device and set its exposure; returns the sources in start order."""
        pk = self._pyk4a
        try:
            for c in start_order(self.configs):
                device = pk.PyK4A(config=pyk4a_config(pk, c), device_id=c.device_id)
                try:
                    device.open()
                except pk.K4AException as exc:
                    raise DeviceError(f"cannot open Kinect {c.device_id} ({exc or 'not found'})", path=f"kinect {c.device_id}",
                                      fix="check that it is plugged into USB 3 and powered, and that no other program uses it") from None
                if c.exposure_usec is not None:
                    device.exposure = c.exposure_usec  # a manual value: pyk4a switches the control to manual
                source = KinectLiveSource(pk, device, c, self.clock)
                source.connect()
                self.sources.append(source)
        except BaseException:
            self.stop()
            raise
        return self.sources

    def start(self) -> None:
        for source in self.sources:
            source.start()

    def stop(self) -> None:
        for source in reversed(self.sources):
            source.stop()


# --- recordings replayed as live -------------------------------------------------------------------
def open_kinects(clock: SessionClock, *, body_tracking: bool = False) -> list[Source]:
    """Every connected Azure Kinect, opened standalone (each on its own clock) through
    :class:`KinectRig`. Raises :class:`DeviceError` when pyk4a is missing or no device is connected."""
    pyk4a = import_pyk4a()
    count = pyk4a.connected_device_count()
    if count == 0:
        raise DeviceError("no Azure Kinect is connected",
                          fix="plug in the devices, or run `omnimocap gui --simulate` / `--session DIR`")
    configs = [KinectDeviceConfig(device_id=i, body_tracking=body_tracking) for i in range(count)]
    return list(KinectRig(configs, clock, pyk4a).open())


class KinectFileSource(Source[KinectFrame]):
    """A recorded Kinect replayed as if live: its body tracking (``bodies_<serial>.json``) and/or its
    recording (``kinect_<serial>.mkv``; each capture gets the body frame within half a frame period
    of its depth timestamp, as tracking results may be stamped slightly apart). ``fps``: the
    nominal rate (default: from the body timestamps, else 30). Frames keep
    their device timestamps; host times are the session clock at release minus ``latency_s``.
    ``realtime`` paces them as recorded (``speed`` x), otherwise as fast as they are read.
    ``release_map`` (device -> session clock, e.g. a simulated rig's true time map) releases each
    frame when the session clock reaches its mapped time plus ``latency_s``, so that a replayed
    session keeps the clock of the original one (the session clock must start with it).
    ``loop_period_s`` replays the stream again and again: pass ``k`` moves the device timestamps on
    by ``k * loop_period_s`` seconds of session time (divided by ``release_map.a``, the device
    clock's rate), so timestamps keep increasing and the session's time maps still hold; frame ids
    keep counting up. ``jpeg_color``: an MJPG colour stream is delivered as the JPEG bytes recorded,
    as the device delivers it (decoded where it is drawn, re-recorded without re-encoding); False:
    decoded to BGR here."""

    kind = "kinect"

    def __init__(self, serial: str, *, bodies_path: str | Path | None = None, recording_path: str | Path | None = None,
                 role: str = "standalone", fps: float | None = None, clock: SessionClock | None = None,
                 realtime: bool = True, speed: float = 1.0, latency_s: float = 0.0,
                 release_map: TimeMap | None = None, loop_period_s: float | None = None, jpeg_color: bool = True):
        super().__init__(kinect_name(serial), clock)
        self.jpeg_color = jpeg_color
        if bodies_path is None and recording_path is None:
            raise ValueError("a Kinect file source needs a bodies file or a recording")
        if loop_period_s is not None and loop_period_s <= 0:
            raise ValueError(f"loop period must be positive, got {loop_period_s}")
        self.loop_period_s = loop_period_s
        self.serial, self.role = serial, role
        self.bodies_path = None if bodies_path is None else Path(bodies_path)
        self.recording_path = None if recording_path is None else Path(recording_path)
        self.latency_s, self._fps, self.release_map = latency_s, fps, release_map
        self._pacer = Pacer(self.clock, realtime, speed)
        self._frames: Iterator[KinectFrame] | None = None
        self._next: KinectFrame | None = None

    def _connect(self) -> None:
        bodies = read_bodies(self.bodies_path) if self.bodies_path is not None else None
        recording = KinectRecording(self.recording_path) if self.recording_path is not None else None
        fps = self._fps
        if fps is None:
            fps = 1.0 / float(np.median(np.diff(bodies.timestamps))) if bodies is not None and len(bodies) > 1 else 30.0
        self.nominal_fps = fps
        self.info = replace(self.info, serial=self.serial, role=self.role, fps=fps,
                            color_mode=recording.color_mode if recording else None,
                            depth_mode=recording.depth_mode if recording else None,
                            calibration_json=recording.calibration_json if recording else None,
                            depth_delay_ns=recording.depth_delay_ns if recording else 0,
                            color_firmware=recording.tags.get("K4A_COLOR_FIRMWARE_VERSION") if recording else None,
                            depth_firmware=recording.tags.get("K4A_DEPTH_FIRMWARE_VERSION") if recording else None)
        self._frames = self._passes(bodies, recording)

    def _passes(self, bodies, recording) -> Iterator[KinectFrame]:
        rate = self.release_map.a if self.release_map is not None else 1.0
        frame_id = 0
        for k in itertools.count():
            shift = 0.0 if k == 0 else k * self.loop_period_s / rate
            delivered = False
            for frame in self._iterate(bodies, recording):
                frame.frame_id = frame_id
                frame.device_timestamp += shift
                if frame.color_timestamp is not None:
                    frame.color_timestamp += shift
                frame_id += 1
                delivered = True
                yield frame
            if self.loop_period_s is None or not delivered:
                return

    def _iterate(self, bodies, recording) -> Iterator[KinectFrame]:
        def frame_bodies(f: int) -> dict[int, KinectBody]:
            return {i: KinectBody(track.positions[f], track.orientations[f], track.confidences[f])
                    for i, track in bodies.bodies.items() if track.present[f]}

        if recording is None:
            for f, t in enumerate(bodies.timestamps):
                yield KinectFrame(self.serial, f, float(t), 0.0, bodies=frame_bodies(f))
            return
        body_times = np.asarray(bodies.timestamps) if bodies is not None else np.zeros(0)
        tolerance = 0.5 / self.nominal_fps
        for capture in recording.captures(jpeg_bytes=self.jpeg_color):
            t = capture.timestamp
            matched = None
            i = int(np.searchsorted(body_times, t))
            nearest = [j for j in (i - 1, i) if 0 <= j < len(body_times)]
            if nearest:
                f = min(nearest, key=lambda j: abs(body_times[j] - t))
                if abs(body_times[f] - t) <= tolerance:
                    matched = frame_bodies(f)
            yield KinectFrame(self.serial, capture.index, t, 0.0, color=capture.color, depth=capture.depth, ir=capture.ir,
                              color_timestamp=capture.color_timestamp,
                              bodies=matched)

    def _read(self, timeout: float) -> KinectFrame | None:
        if self._next is None:
            self._next = next(self._frames, None)
            if self._next is None:
                raise EndOfStream(f"{self.name}: end of the recorded stream")
        t = self._next.device_timestamp
        due = None if self.release_map is None else float(self.release_map.to_session(t)) + self.latency_s
        if not self._pacer.wait(t, timeout, due):
            return None
        frame, self._next = self._next, None
        frame.host_time = self.clock.now() - self.latency_s
        return frame
