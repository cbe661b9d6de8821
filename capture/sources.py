"""Live sources: one interface for every device that delivers frames, and the frame types.

A :class:`Source` is a Kinect (live through pyk4a, or a recording replayed as if live), a 360 camera
(a video file, a UVC webcam, an RTSP/RTMP stream) or the simulated rig. Its life:
``connect()`` (open the device, learn its size and rate; errors are :class:`DeviceError` or
:class:`InputError` lines), ``start()`` (frames begin), ``read(timeout)`` (blocking, ``None`` on
timeout, :class:`EndOfStream` once the source has ended or the device is gone) or
``start_async(on_frame)`` (a thread calls back per frame), ``stop()``. ``health()`` is a snapshot
of its counters; a running source that delivers nothing for ``stall_after_s`` seconds reads as
``stalled`` there (an unplugged cable looks exactly like that), and comes back to ``running`` with
its next frame.

Time: every frame carries the device's own timestamp (seconds, device or camera clock) and the host
arrival time on the *session clock*: the host's ``time.monotonic()`` (CLOCK_MONOTONIC on Linux, the
clock libk4a stamps ``*_system_timestamp_nsec`` with) minus the session start, in seconds. Arrival
times carry transport latency and jitter; they seed the time maps, they do not replace them.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import asdict, dataclass
from typing import Callable, Generic, TypeVar

import numpy as np

# Source states. ``disconnected`` covers a device that vanished, a stream or file that ended and a
# read that failed; ``stalled`` is a running source that has delivered nothing for a while.
IDLE, CONNECTED, RUNNING, STOPPED, DISCONNECTED = "idle", "connected", "running", "stopped", "disconnected"
STALLED = "stalled"

# The window of arrival times over which a source's frame rate is measured, seconds.
RATE_WINDOW_S = 2.0


class EndOfStream(Exception):
    """The source delivers no more frames (end of file, device unplugged, stream closed); the
    message says which."""


class SessionClock:
    """Seconds since the session start on the host's monotonic clock (float64)."""

    def __init__(self, start_monotonic: float | None = None):
        self.start_monotonic = time.monotonic() if start_monotonic is None else float(start_monotonic)

    def now(self) -> float:
        return time.monotonic() - self.start_monotonic

    def restart(self) -> None:
        """Make now the session start (before any source stamps a frame)."""
        self.start_monotonic = time.monotonic()

    def from_monotonic_ns(self, t_ns: int) -> float:
        """A host CLOCK_MONOTONIC time in nanoseconds (libk4a's system timestamps) on the session clock."""
        return t_ns / 1e9 - self.start_monotonic


@dataclass
class KinectBody:
    """One tracked body: ``positions`` (32,3) metres in the depth camera frame (x right, y down,
    z forward), ``orientations`` (32,4) unit quaternions (w, x, y, z), ``confidences`` (32,) k4abt
    levels."""

    positions: np.ndarray
    orientations: np.ndarray
    confidences: np.ndarray


@dataclass
class KinectFrame:
    """One Kinect capture.

    ``device_timestamp``: seconds on the device clock (the depth image's mid-exposure time, or the
    colour image's without depth). ``host_time``: arrival on the session clock (seconds).
    ``color``: BGR uint8 (H,W,3), or the JPEG bytes of an MJPG stream as the device sent them.
    ``depth`` uint16 millimetres, ``ir`` uint16 counts (depth-mode size). ``bodies``: body id ->
    :class:`KinectBody` when body tracking ran on this capture (empty when nobody was seen), None
    when it did not run. ``temperature_c``: the device's reported temperature, if any.
    """

    serial: str
    frame_id: int
    device_timestamp: float
    host_time: float
    color: np.ndarray | bytes | None = None
    depth: np.ndarray | None = None
    ir: np.ndarray | None = None
    color_timestamp: float | None = None
    bodies: dict[int, KinectBody] | None = None
    temperature_c: float | None = None

    @property
    def stream_time(self) -> float:
        return self.device_timestamp


@dataclass
class PanoFrame:
    """One equirectangular frame: ``image`` BGR uint8 (H, W, 3); ``t_pano`` seconds on the camera
    clock (stream pts, or the arrival time where the camera gives none); ``host_time`` arrival on the
    session clock minus the source's latency compensation (seconds)."""

    index: int
    image: np.ndarray
    t_pano: float
    host_time: float

    @property
    def stream_time(self) -> float:
        return self.t_pano


@dataclass
class SourceHealth:
    """Counters of one source. ``fps``: frames per second over the last two seconds of arrivals;
    ``drops``: frames lost (missing from the device's timestamps, or discarded because the reader
    fell behind); ``timestamp_gaps``: steps of the device clock longer than 1.5 frame periods or not
    increasing; ``decode_errors``: packets that did not decode. ``kind``: kinect | pano."""

    name: str
    kind: str = "source"
    state: str = IDLE
    frames: int = 0
    drops: int = 0
    decode_errors: int = 0
    timestamp_gaps: int = 0
    fps: float = 0.0
    last_host_time: float | None = None
    temperature_c: float | None = None
    message: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


Frame = TypeVar("Frame", KinectFrame, PanoFrame)


class Source(ABC, Generic[Frame]):
    """The interface every device implements; see the module docstring for the life cycle.

    Subclasses implement :meth:`_connect`, :meth:`_start`, :meth:`_read` and :meth:`_stop`; the
    base class keeps the state and the counters. ``nominal_fps`` (set by ``_connect``) lets the
    counters see missing frames in the device timestamps. ``stall_after_s`` (None: never) is how
    long a running source may stay silent before :meth:`health` calls it stalled.
    """

    kind = "source"

    def __init__(self, name: str, clock: SessionClock | None = None):
        self.name = name
        self.clock = clock or SessionClock()
        self.nominal_fps: float | None = None
        self.stall_after_s: float | None = None
        self.info = StreamInfo(serial=name)
        self._health = SourceHealth(name)
        self._lock = threading.Lock()
        self._arrivals: deque[float] = deque()
        self._last_arrival: float | None = None
        self._last_stream_time: float | None = None
        self._async_thread: threading.Thread | None = None
        self._async_stop = threading.Event()

    # --- life cycle ----------------------------------------------------------------------------
    def connect(self) -> None:
        if self._health.state == IDLE:
            self._connect()
            self._set_state(CONNECTED)

    def start(self) -> None:
        self.connect()
        if self._health.state == CONNECTED:
            self._start()
            self._last_arrival = time.monotonic()  # silence is measured from the start
            self._set_state(RUNNING)

    def read(self, timeout: float = 1.0) -> Frame | None:
        """The next frame, or None when none arrived within ``timeout`` seconds. Raises
        :class:`EndOfStream` once the source has ended."""
        if self._health.state in (STOPPED, DISCONNECTED):
            raise EndOfStream(self._health.message or f"{self.name} is {self._health.state}")
        self.start()
        try:
            frame = self._read(timeout)
        except EndOfStream as exc:
            self._set_state(DISCONNECTED, str(exc))
            raise
        if frame is not None:
            self._count_frame(frame.stream_time)
        return frame

    def start_async(self, on_frame: Callable[[Frame], None],
                    on_end: Callable[[str], None] | None = None) -> threading.Thread:
        """Read on a background thread: ``on_frame(frame)`` per frame, ``on_end(reason)`` once the
        source ends (not after :meth:`stop`). A read that raises ends the source too: the device or
        file failing mid-stream becomes its ``disconnected`` state and message, not a dead thread."""
        self.start()
        self._async_stop.clear()

        def loop() -> None:
            while not self._async_stop.is_set():
                try:
                    frame = self.read(0.2)
                except EndOfStream as exc:
                    if on_end is not None:
                        on_end(str(exc))
                    return
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                    self._set_state(DISCONNECTED, reason)
                    if on_end is not None:
                        on_end(reason)
                    return
                if frame is not None:
                    on_frame(frame)

        self._async_thread = threading.Thread(target=loop, name=f"read-{self.name}", daemon=True)
        self._async_thread.start()
        return self._async_thread

    def stop(self) -> None:
        """Stop delivering frames and release the device; safe to call more than once."""
        self._async_stop.set()
        if self._async_thread is not None and self._async_thread is not threading.current_thread():
            self._async_thread.join(timeout=5.0)
        if self._health.state in (CONNECTED, RUNNING, DISCONNECTED):
            self._stop()
        if self._health.state != DISCONNECTED:
            self._set_state(STOPPED)

    def health(self) -> SourceHealth:
        with self._lock:
            now = time.monotonic()
            self._trim_arrivals(now)
            span = (self._arrivals[-1] - self._arrivals[0]) if len(self._arrivals) > 1 else 0.0
            self._health.fps = (len(self._arrivals) - 1) / span if span > 0 else 0.0
            health = SourceHealth(**asdict(self._health))
        health.name, health.kind = self.name, self.kind  # a live device learns its name on connect
        if (health.state == RUNNING and self.stall_after_s is not None and self._last_arrival is not None
                and now - self._last_arrival > self.stall_after_s):
            health.state, health.fps = STALLED, 0.0
        return health

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- for subclasses ------------------------------------------------------------------------
    @abstractmethod
    def _connect(self) -> None: ...

    def _start(self) -> None:
        """Begin streaming (default: connecting was enough)."""

    @abstractmethod
    def _read(self, timeout: float) -> Frame | None: ...

    def _stop(self) -> None:
        """Release the device (default: nothing to release)."""

    def _set_state(self, state: str, message: str = "") -> None:
        with self._lock:
            self._health.state = state
            if message:
                self._health.message = message

    def _trim_arrivals(self, now: float) -> None:
        """Keep the arrival times of the last :data:`RATE_WINDOW_S` (the measured frame rate's window):
        a source that nobody asks for its health must not grow with the recording."""
        while self._arrivals and now - self._arrivals[0] > RATE_WINDOW_S:
            self._arrivals.popleft()

    def _count_frame(self, stream_time: float) -> None:
        with self._lock:
            h = self._health
            h.frames += 1
            h.last_host_time = self.clock.now()
            self._last_arrival = time.monotonic()
            self._arrivals.append(self._last_arrival)
            self._trim_arrivals(self._last_arrival)
            previous, self._last_stream_time = self._last_stream_time, stream_time
            if previous is None:
                return
            step = stream_time - previous
            period = 1.0 / self.nominal_fps if self.nominal_fps else None
            if step <= 0:
                h.timestamp_gaps += 1
            elif period is not None and step > 1.5 * period:
                h.timestamp_gaps += 1
                h.drops += max(0, int(round(step / period)) - 1)

    def _count_drop(self, n: int = 1) -> None:
        with self._lock:
            self._health.drops += n

    def _count_decode_error(self) -> None:
        with self._lock:
            self._health.decode_errors += 1

    def _set_temperature(self, celsius: float | None) -> None:
        with self._lock:
            self._health.temperature_c = celsius


class Pacer:
    """Releases recorded frames at the pace they were recorded. By default the first stream
    timestamp is anchored at the session-clock time of its release and each later one is due
    ``(t - t_first) / speed`` seconds after; a frame may instead name its own due time on the
    session clock. ``realtime=False`` releases everything at once (as fast as the consumer reads)."""

    def __init__(self, clock: SessionClock, realtime: bool = True, speed: float = 1.0):
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.clock, self.realtime, self.speed = clock, realtime, speed
        self._anchor: tuple[float, float] | None = None  # (stream time, session time)

    def wait(self, stream_time: float, timeout: float, due: float | None = None) -> bool:
        """Sleep until the frame at ``stream_time`` (or at session time ``due``) is due, at most
        ``timeout`` seconds. True when it is due."""
        if not self.realtime:
            return True
        now = self.clock.now()
        if due is None:
            if self._anchor is None:
                self._anchor = (stream_time, now)
            due = self._anchor[1] + (stream_time - self._anchor[0]) / self.speed
        if due - now > timeout:
            time.sleep(max(0.0, timeout))
            return False
        if due > now:
            time.sleep(due - now)
        return True


@dataclass
class StreamInfo:
    """What a connected source tells the recorder about its stream (for the manifest and writers).

    Kinect: ``serial``, ``role`` (master | subordinate | standalone), ``fps``, ``color_mode`` (a
    ``K4A_COLOR_MODE`` such as ``MJPG_720P``, None without colour), ``depth_mode``,
    ``calibration_json`` (the factory calibration, needed to write a recording), ``depth_delay_ns``,
    ``color_firmware``/``depth_firmware`` (the device's firmware versions as the SDK's recorder tags
    them, e.g. ``1.6.110``; None where the device did not tell).
    Pano: ``width``, ``height``, ``fps``.
    """

    serial: str = ""
    role: str = "standalone"
    fps: float = 30.0
    width: int | None = None
    height: int | None = None
    color_mode: str | None = None
    depth_mode: str | None = None
    calibration_json: bytes | None = None
    depth_delay_ns: int = 0
    color_firmware: str | None = None
    depth_firmware: str | None = None
