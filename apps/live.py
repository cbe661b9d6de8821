"""The live capture session: sources, the live hand preview, calibration and recording, without Qt.

This is the model/controller half of the session GUI (``apps/gui.py`` is the thin view). It follows
the online-processing pattern: capture threads push packets into bounded queues, one worker thread
runs the same stage functions as ``omnimocap process`` on the newest panorama frame and publishes an
immutable :class:`LiveState` snapshot, and the view polls :meth:`LiveController.latest` on its own
timer. Nothing here ever blocks on the view and nothing queues for it.

Sources share one small interface (:class:`Source`): ``start()``, ``stop()``, ``poll()`` (drain
the packets that arrived), ``health()`` (fps, drops, last timestamp, state) and listeners called in
the capture thread for every packet (the recorder hook, which must see every frame even when the
display drops some).

- :class:`ReplayKinectSource` / :class:`ReplayPanoSource` replay a recorded session folder as if
  live: body frames and panorama frames are released at their session-clock times in real time,
  optionally in a loop. On every loop the device clocks move on by the loop length (divided by each
  device's clock rate), so timestamps keep increasing and the rig's time maps still hold.
- :class:`KinectDeviceSource` reads a connected Azure Kinect through pyk4a.

Times: ``t_session`` seconds on the session clock; ``t_device``/``t_pano`` seconds on the device's
own clock; ``released_wall`` is ``time.perf_counter()`` when the packet left its capture thread
(the start of the capture-to-display latency). Positions are metres: Kinect joints in that Kinect's
depth camera frame, everything in :class:`WorldState` in the world frame (y up).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from omnimocap.calibration.cameras import EquirectCamera
from omnimocap.calibration.rig import Rig, TimeMap
from omnimocap.calibration.transforms import invert_pose, transform_points
from omnimocap.capture.session import DeviceEntry, Session
from omnimocap.data.skeletons import SIDES
from omnimocap.errors import DeviceError, UserError
from omnimocap.fusion.lifting import lift_observation
from omnimocap.fusion.pipeline import (
    PeopleTracks, ProcessConfig, make_estimator, plan_hand_views, predicted_hands,
)
from omnimocap.hands.estimator import ViewRequest
from omnimocap.hands.views import render_views, view_pixel_to_pano_bearing

NUM_KINECT_JOINTS = 32
DEFAULT_SIM_SECONDS = 4.0
# Points along each edge of a view's border when it is drawn into the panorama.
OUTLINE_POINTS_PER_EDGE = 24


# --- queues and packets ----------------------------------------------------------------------------
class DropOldestQueue:
    """A bounded FIFO that drops its oldest item when full and counts what it dropped.

    Display data goes stale; a consumer that falls behind should see the newest frames, and the
    memory used never grows with how far behind it is.
    """

    def __init__(self, maxlen: int):
        if maxlen < 1:
            raise ValueError(f"queue length must be >= 1, got {maxlen}")
        self.maxlen = maxlen
        self._items: deque = deque()
        self._lock = threading.Lock()
        self.dropped = 0

    def put(self, item: Any) -> None:
        with self._lock:
            if len(self._items) >= self.maxlen:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)

    def drain(self) -> list:
        with self._lock:
            items = list(self._items)
            self._items.clear()
        return items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


@dataclass(frozen=True)
class BodySample:
    """One tracked body in one Kinect frame: ``positions`` (32,3) metres in the depth camera frame,
    ``orientations`` (32,4) quaternions (w, x, y, z), ``confidences`` (32,) k4abt levels; NaN /
    confidence 0 where a joint is missing."""

    positions: np.ndarray
    orientations: np.ndarray
    confidences: np.ndarray


@dataclass(frozen=True)
class KinectFrame:
    """A Kinect frame as it leaves the capture thread. ``index`` is the frame's index in its
    recording (it repeats across replay loops)."""

    device: str
    index: int
    t_device: float
    t_session: float
    bodies: dict[int, BodySample]
    color: np.ndarray | None  # (H,W,3) BGR uint8
    released_wall: float


@dataclass(frozen=True)
class PanoFrame:
    """An equirect frame (BGR uint8, (H,W,3)) as it leaves the capture thread."""

    device: str
    index: int
    t_pano: float
    t_session: float
    image: np.ndarray
    released_wall: float


@dataclass(frozen=True)
class SourceHealth:
    """What the device list shows. ``state``: waiting | streaming | stalled | ended | stopped | fault.
    ``sync``: how the device's clock maps onto the session clock."""

    name: str
    kind: str
    state: str
    fps: float
    frames: int
    drops: int
    last_t_session: float | None
    sync: str = ""
    message: str = ""


class Source:
    """Base of every live source: a capture thread feeding a :class:`DropOldestQueue`.

    Subclasses implement :meth:`_produce` (runs in the capture thread until ``self._halt`` is set,
    calling :meth:`_emit` per packet). A source that stops delivering while running reads as
    ``stalled`` after ``stall_after_s`` seconds: an unplugged device looks exactly like that.
    """

    def __init__(self, name: str, kind: str, queue_size: int, stall_after_s: float = 1.0):
        self.name = name
        self.kind = kind
        self.queue = DropOldestQueue(queue_size)
        self.stall_after_s = stall_after_s
        self.sync = ""
        self._listeners: list[Callable[[Any], None]] = []
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._release_walls: deque[float] = deque(maxlen=30)
        self._frames = 0
        self._skipped = 0
        self._last_t_session: float | None = None
        self._ended = False
        self._fault = ""

    def add_listener(self, callback: Callable[[Any], None]) -> None:
        """``callback(packet)`` runs in the capture thread for every packet; keep it short."""
        self._listeners.append(callback)

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._halt.clear()
        self._ended, self._fault = False, ""
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def poll(self) -> list:
        """Packets that arrived since the last poll, oldest first (older ones may have been dropped)."""
        return self.queue.drain()

    def count_skipped(self, n: int) -> None:
        """Packets the consumer received but did not display count as drops too."""
        self._skipped += n

    def health(self) -> SourceHealth:
        now = time.perf_counter()
        walls = list(self._release_walls)
        fps = (len(walls) - 1) / (walls[-1] - walls[0]) if len(walls) > 1 and walls[-1] > walls[0] else 0.0
        if self._fault:
            state = "fault"
        elif self._ended:
            state = "ended"
        elif not self.running:
            state = "stopped"
        elif not walls:
            state = "waiting"
        elif now - walls[-1] > self.stall_after_s:
            state, fps = "stalled", 0.0
        else:
            state = "streaming"
        return SourceHealth(self.name, self.kind, state, fps, self._frames, self.queue.dropped + self._skipped,
                            self._last_t_session, self.sync, self._fault)

    def _run(self) -> None:
        try:
            self._produce()
        except Exception as exc:  # a device or file failing mid-stream is a fault to show, not a crash
            self._fault = f"{type(exc).__name__}: {exc}"

    def _produce(self) -> None:
        raise NotImplementedError

    def _emit(self, packet: KinectFrame | PanoFrame) -> None:
        self._frames += 1
        self._release_walls.append(packet.released_wall)
        self._last_t_session = packet.t_session
        self.queue.put(packet)
        for callback in self._listeners:
            callback(packet)


# --- replaying a session folder as if live ---------------------------------------------------------
class ReplayClock:
    """Maps session time to wall time for all sources of one replay: the session's first sample is
    released at ``start()``; loop ``k`` is shifted by ``k * period`` seconds of session time, the
    replayed span plus one frame."""

    def __init__(self, speed: float = 1.0):
        if speed <= 0:
            raise ValueError(f"replay speed must be > 0, got {speed}")
        self.speed = speed
        self.t_first = 0.0
        self.period = 0.0
        self.wall0 = time.perf_counter()

    def set_span(self, t_first: float, t_last: float, frame_period: float) -> None:
        self.t_first = t_first
        self.period = (t_last - t_first) + frame_period

    def start(self) -> None:
        self.wall0 = time.perf_counter()

    def wall_time(self, t_session: float, loop: int) -> float:
        return self.wall0 + (t_session - self.t_first + loop * self.period) / self.speed


class _ReplaySource(Source):
    """Releases ``_samples()`` (session time, payload) at their wall times, looping if asked."""

    def __init__(self, name: str, kind: str, clock: ReplayClock, time_map: TimeMap, loop: bool, queue_size: int,
                 stall_after_s: float):
        super().__init__(name, kind, queue_size, stall_after_s)
        self.clock = clock
        self.time_map = time_map
        self.loop = loop
        self.sync = _sync_label(time_map)

    def _samples(self) -> Iterator[tuple[float, Any]]:
        raise NotImplementedError

    def _packet(self, payload: Any, loop: int, t_session: float, wall: float) -> KinectFrame | PanoFrame:
        raise NotImplementedError

    def _produce(self) -> None:
        for loop in itertools.count():
            emitted = False
            for t_session, payload in self._samples():
                wall = self.clock.wall_time(t_session, loop)
                if self._halt.wait(max(0.0, wall - time.perf_counter())):
                    return
                self._emit(self._packet(payload, loop, t_session + loop * self.clock.period, time.perf_counter()))
                emitted = True
            if not self.loop or not emitted:
                self._ended = True
                return

    def _device_shift(self, loop: int) -> float:
        """How far the device clock moves on per loop: the loop's session seconds at its rate."""
        return loop * self.clock.period / self.time_map.a


class ReplayKinectSource(_ReplaySource):
    """One Kinect of a session folder: its body tracking (``bodies_<serial>.json``) and, when the
    session holds the recording, its colour images matched to the body frames by device time."""

    def __init__(self, session: Session, entry: DeviceEntry, clock: ReplayClock, time_map: TimeMap, *,
                 loop: bool = True, queue_size: int = 64, stall_after_s: float = 1.0):
        from omnimocap.capture.bodies import read_bodies

        super().__init__(entry.name, "kinect", clock, time_map, loop, queue_size, stall_after_s)
        if not entry.bodies:
            raise UserError(f"Kinect {entry.serial} has no body tracking file", path=session.root / "session.json",
                            fix=f"run `omnimocap track {session.root}`")
        self.recording = read_bodies(session.path(entry.bodies))
        self.video_path = session.path(entry.recording) if entry.recording else None
        self.calibration = None
        if self.video_path is not None and self.video_path.is_file():
            from omnimocap.capture.kinect_mkv import KinectRecording

            self._video = KinectRecording(self.video_path)
            self.calibration = self._video.calibration()
        else:
            self._video = None

    @property
    def session_times(self) -> np.ndarray:
        return self.time_map.to_session(self.recording.timestamps)

    def _samples(self) -> Iterator[tuple[float, Any]]:
        rec = self.recording
        colors = _ColorMatcher(self._video)
        for f, t_session in enumerate(self.session_times):
            bodies = {}
            for body_id, track in rec.bodies.items():
                if track.present[f]:
                    bodies[body_id] = BodySample(track.positions[f], track.orientations[f], track.confidences[f])
            yield float(t_session), (f, float(rec.timestamps[f]), bodies, colors.at(float(rec.timestamps[f])))

    def _packet(self, payload, loop, t_session, wall) -> KinectFrame:
        f, t_device, bodies, color = payload
        return KinectFrame(self.name, f, t_device + self._device_shift(loop), t_session, bodies, color, wall)


class _ColorMatcher:
    """Walks a Kinect recording's captures alongside the body frames (both in device-time order)."""

    def __init__(self, video):
        self._captures = iter(video.captures()) if video is not None else iter(())
        self._current = next(self._captures, None)

    def at(self, t_device: float, tolerance: float = 0.017) -> np.ndarray | None:
        while self._current is not None and self._current.timestamp < t_device - tolerance:
            self._current = next(self._captures, None)
        if self._current is not None and abs(self._current.timestamp - t_device) <= tolerance:
            return self._current.color
        return None


class ReplayPanoSource(_ReplaySource):
    """The 360 stream of a session folder (``pano.mkv`` + ``pano_frames.csv``)."""

    def __init__(self, session: Session, entry: DeviceEntry, clock: ReplayClock, time_map: TimeMap, *,
                 loop: bool = True, queue_size: int = 2, stall_after_s: float = 1.0):
        from omnimocap.capture.pano import PanoReader

        super().__init__(entry.name, "pano", clock, time_map, loop, queue_size, stall_after_s)
        self.reader = PanoReader(session.path(entry.recording or "pano.mkv"),
                                 session.path(entry.timestamps or "pano_frames.csv"))
        self.width, self.height = self.reader.width, self.reader.height

    @property
    def session_times(self) -> np.ndarray:
        return self.time_map.to_session(self.reader.timestamps.t_pano)

    def _samples(self) -> Iterator[tuple[float, Any]]:
        t_session = self.session_times
        for k, image in self.reader.frames():
            yield float(t_session[k]), (k, float(self.reader.timestamps.t_pano[k]), image)

    def _packet(self, payload, loop, t_session, wall) -> PanoFrame:
        k, t_pano, image = payload
        return PanoFrame(self.name, k, t_pano + self._device_shift(loop), t_session, image, wall)


def _sync_label(time_map: TimeMap | None, is_truth: bool = False) -> str:
    if time_map is None:
        return "no time map"
    if is_truth:
        return "simulated truth"
    if time_map.residual_rms_ms is None:
        return "mapped"
    return f"rms {time_map.residual_rms_ms:.1f} ms"


def replay_sources(session_dir: str | Path, rig: Rig, *, loop: bool = True, speed: float = 1.0,
                   kinect_queue: int = 64, display_queue: int = 2, stall_after_s: float = 1.0) -> list[Source]:
    """One source per device of ``session_dir``, sharing one replay clock. Sensors without a time
    map in ``rig`` replay on the identity map (their state says so)."""
    session = Session.open(session_dir)
    entries = session.kinects()
    pano_entry = next((d for d in session.manifest.devices if d.kind == "pano"), None)
    if pano_entry is not None:
        entries = entries + [pano_entry]
    if not entries:
        raise UserError("the session lists no devices", path=session.root / "session.json")
    maps = {e.name: rig.time_maps.get(e.name, TimeMap()) for e in entries}
    clock = ReplayClock(speed)
    sources: list[Source] = []
    for e in entries:
        if e.kind == "pano":
            sources.append(ReplayPanoSource(session, e, clock, maps[e.name], loop=loop, queue_size=display_queue,
                                            stall_after_s=stall_after_s))
        else:
            sources.append(ReplayKinectSource(session, e, clock, maps[e.name], loop=loop, queue_size=kinect_queue,
                                              stall_after_s=stall_after_s))
        sources[-1].sync = _sync_label(rig.time_maps.get(e.name), rig.is_truth)
    times = np.concatenate([s.session_times for s in sources])
    if len(times) == 0:
        raise UserError("the session has no frames to replay", path=session.root)
    rates = [e.fps for e in entries if e.fps]
    clock.set_span(float(times.min()), float(times.max()), 1.0 / max(rates) if rates else 1 / 30)
    return sources


# --- live devices ------------------------------------------------------------------------------------
class KinectDeviceSource(Source):
    """A connected Azure Kinect read through pyk4a (colour and depth times; body tracking live needs
    libk4abt, which this source does not drive: its frames carry no bodies)."""

    def __init__(self, device_index: int, queue_size: int = 8, stall_after_s: float = 1.0):
        try:
            import pyk4a
        except ImportError:
            raise DeviceError("pyk4a is not installed, so no Azure Kinect can be opened",
                              fix="pip install omnimocap[device] (needs the Azure Kinect Sensor SDK)") from None
        self._pyk4a = pyk4a
        self.device = pyk4a.PyK4A(pyk4a.Config(color_resolution=pyk4a.ColorResolution.RES_720P,
                                               depth_mode=pyk4a.DepthMode.NFOV_UNBINNED,
                                               synchronized_images_only=True), device_id=device_index)
        self.device.start()
        super().__init__(f"kinect_{self.device.serial}", "kinect", queue_size, stall_after_s)
        self.sync = "device clock"

    def _produce(self) -> None:
        index = 0
        while not self._halt.is_set():
            capture = self.device.get_capture(timeout=int(self.stall_after_s * 1000))
            t_device = capture.depth_timestamp_usec / 1e6
            color = capture.color
            if color is not None and color.ndim == 3 and color.shape[2] == 4:
                color = np.ascontiguousarray(color[..., :3])
            self._emit(KinectFrame(self.name, index, t_device, t_device, {}, color, time.perf_counter()))
            index += 1

    def stop(self, timeout: float = 2.0) -> None:
        super().stop(timeout)
        self.device.stop()


def open_device_sources(stall_after_s: float = 1.0) -> list[Source]:
    """Every connected Azure Kinect. Raises :class:`DeviceError` when none can be opened."""
    try:
        import pyk4a
    except ImportError:
        raise DeviceError("pyk4a is not installed, so no Azure Kinect can be opened",
                          fix="pip install omnimocap[device], or run `omnimocap gui --simulate`") from None
    count = pyk4a.connected_device_count()
    if count == 0:
        raise DeviceError("no Azure Kinect is connected",
                          fix="plug in the devices, or run `omnimocap gui --simulate` / `--session DIR`")
    return [KinectDeviceSource(i, stall_after_s=stall_after_s) for i in range(count)]


# --- the snapshot the view draws ---------------------------------------------------------------------
@dataclass(frozen=True)
class Message:
    """A line of the message panel. ``level``: info | warning | fault."""

    id: int
    wall: float
    level: str
    source: str
    text: str


@dataclass(frozen=True)
class KinectPane:
    """One Kinect: its colour image (or None), its skeletons in its depth frame (metres) and, with
    a colour image and the device calibration, the same joints as colour pixels (column, row)."""

    name: str
    t_session: float
    color: np.ndarray | None
    skeletons_depth: dict[int, np.ndarray]
    skeletons_color_px: dict[int, np.ndarray]


@dataclass(frozen=True)
class HandView:
    """A wrist-centred view: its image (S,S,3 BGR; None when the preview does not render), the
    predicted hand box and the reconstructed 2D keypoints (21,2) in view pixels, when there are any."""

    person_id: int
    side: str
    image: np.ndarray | None
    predicted_box: np.ndarray
    keypoints_2d: np.ndarray | None


@dataclass(frozen=True)
class PanoPane:
    """The panorama with predicted wrist pixels (person, side, (2,) column/row) and each view's
    border as a polyline of panorama pixels (N,2), NaN rows where it crosses the seam."""

    index: int
    t_session: float
    released_wall: float
    image: np.ndarray
    wrists_px: list[tuple[int, str, np.ndarray]]
    view_outlines: list[np.ndarray]


@dataclass(frozen=True)
class WorldState:
    """The 3D scene, world frame (y up, metres): skeletons keyed ``<device>/<body id>`` (32,3),
    lifted hands (21,3) and every sensor's pose (4,4)."""

    skeletons: dict[str, np.ndarray] = field(default_factory=dict)
    hands: list[np.ndarray] = field(default_factory=list)
    sensor_poses: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class CalibrationState:
    method: str = "none"
    is_truth: bool = False
    residuals: dict = field(default_factory=dict)
    running: bool = False
    progress: float = 0.0
    status: str = ""


@dataclass(frozen=True)
class RecordingState:
    active: bool = False
    out_dir: str = ""
    elapsed_s: float = 0.0
    bytes_written: int = 0
    disk_free_bytes: int = 0
    frames: dict[str, int] = field(default_factory=dict)
    dropped: int = 0


@dataclass(frozen=True)
class LiveState:
    """One snapshot of the whole session; the view draws it and never writes to it."""

    seq: int
    published_wall: float
    running: bool
    preview: bool
    kinects: list[KinectPane]
    pano: PanoPane | None
    hand_views: list[HandView]
    world: WorldState
    devices: list[SourceHealth]
    calibration: CalibrationState
    recording: RecordingState
    messages: tuple[Message, ...]
    hands_backend: str
    pipeline_ms: float


# --- the live hand pipeline ----------------------------------------------------------------------------
class BodyHistory:
    """Recent body frames of one Kinect (a few seconds), for interpolating wrists to pano times."""

    def __init__(self, seconds: float = 2.0):
        self.seconds = seconds
        self.frames: deque[KinectFrame] = deque()

    def add(self, frame: KinectFrame) -> None:
        if self.frames and frame.t_session <= self.frames[-1].t_session:
            self.frames.clear()  # a restarted device clock: the old samples no longer line up
        self.frames.append(frame)
        while self.frames and frame.t_session - self.frames[0].t_session > self.seconds:
            self.frames.popleft()

    def people(self, T_world_kinect: np.ndarray):
        """The history as the offline pipeline's :class:`~omnimocap.fusion.pipeline.PeopleTracks`
        (world frame, session clock)."""
        frames = list(self.frames)
        ids = sorted({i for f in frames for i in f.bodies})
        joints = np.full((len(ids), len(frames), NUM_KINECT_JOINTS, 3), np.nan)
        conf = np.zeros((len(ids), len(frames), NUM_KINECT_JOINTS))
        for k, f in enumerate(frames):
            for p, body_id in enumerate(ids):
                body = f.bodies.get(body_id)
                if body is not None:
                    joints[p, k] = transform_points(T_world_kinect, body.positions)
                    conf[p, k] = body.confidences
        return PeopleTracks(np.array([f.t_session for f in frames]), ids, joints, conf)


@dataclass
class PreviewResult:
    pano: PanoPane
    hand_views: list[HandView]
    hands_world: list[np.ndarray]


class LivePreview:
    """Per panorama frame, the stages of ``omnimocap process``: Kinect hands predicted at the frame's
    time (``predicted_hands``), wrist-centred views (``plan_hand_views``,
    ``render_views``), the hand estimator and ``lift_observation`` into the world."""

    def __init__(self, rig: Rig, pano_size: tuple[int, int], reference_kinect: str, config: ProcessConfig):
        self.rig = rig
        self.pano_cam = EquirectCamera(*pano_size)
        self.reference_kinect = reference_kinect
        self.config = config
        self.estimator = None

    def run(self, frame: PanoFrame, history: BodyHistory, render: bool) -> PreviewResult:
        cfg = self.config
        T_world_pano = self.rig.pose("pano")
        T_pano_world = invert_pose(T_world_pano)
        people = history.people(self.rig.pose(self.reference_kinect))
        t = np.array([frame.t_session])
        pred = predicted_hands(people, t)
        planned = plan_hand_views(pred, T_pano_world, [0], cfg)
        wrists_px: list[tuple[int, str, np.ndarray]] = []
        outlines: list[np.ndarray] = []
        hand_views: list[HandView] = []
        hands_world: list[np.ndarray] = []
        if planned:
            needs_images = bool(getattr(self.estimator, "needs_images", False))
            views = [pv.view for pv in planned]
            images = render_views(frame.image, self.pano_cam, views) if (render or needs_images) else None
            requests = []
            for i, pv in enumerate(planned):
                p, s = pv.person, pv.side
                if np.all(np.isfinite(pv.wrist_pano)):
                    wrists_px.append((people.person_ids[p], SIDES[s], self.pano_cam.bearing_to_pixel(pv.wrist_pano)))
                outlines.append(view_outline(pv.view, self.pano_cam))
                requests.append(ViewRequest(
                    frame_index=frame.index, t_session=frame.t_session, person_id=people.person_ids[p],
                    side=SIDES[s], R_pano_view=pv.view.R_pano_view, camera=pv.view.camera,
                    predicted_wrist_view=pv.view.R_pano_view.T @ pv.wrist_pano,
                    predicted_box_xyxy=pv.box_xyxy,
                    image_bgr=None if images is None else images[i]))
            observations = self.estimator.estimate(requests) if (render and self.estimator is not None) else \
                [None] * len(requests)
            for pv, req, obs in zip(planned, requests, observations):
                p, s = pv.person, pv.side
                keypoints = None
                if obs is not None and obs.is_right == (SIDES[s] == "right"):
                    lifted = lift_observation(obs, req, T_world_pano, pred["wrist"][p, 0, s])
                    if lifted.lateral_offset <= cfg.max_gate_m:
                        keypoints = obs.keypoints_2d
                        hands_world.append(lifted.joints)
                if render:
                    hand_views.append(HandView(req.person_id, req.side, req.image_bgr, req.predicted_box_xyxy,
                                               keypoints))
        pane = PanoPane(frame.index, frame.t_session, frame.released_wall, frame.image, wrists_px, outlines)
        return PreviewResult(pane, hand_views, hands_world)


def view_outline(view, pano_cam: EquirectCamera, per_edge: int = OUTLINE_POINTS_PER_EDGE) -> np.ndarray:
    """The border of a wrist-centred view (its outermost pixel centres) as panorama pixels (N,2),
    closed, with a NaN row inserted wherever the line crosses the longitude seam."""
    last = view.size - 1
    s = np.linspace(0.0, last, per_edge, endpoint=False)
    edge = np.concatenate([np.stack([s, np.zeros_like(s)], 1), np.stack([np.full_like(s, last), s], 1),
                           np.stack([last - s, np.full_like(s, last)], 1), np.stack([np.zeros_like(s), last - s], 1),
                           [[0.0, 0.0]]])
    px = pano_cam.bearing_to_pixel(view_pixel_to_pano_bearing(view, edge))
    jumps = np.nonzero(np.abs(np.diff(px[:, 0])) > pano_cam.width / 2)[0]
    return np.insert(px, jumps + 1, np.nan, axis=0)


# --- recording ----------------------------------------------------------------------------------------------
class SessionRecorder:
    """Copies the live streams into a new session folder while they play.

    Every packet goes through its own bounded queue (the display may drop frames, the recording must
    not; if the disk cannot keep up the recorder reports how many it lost). Panorama frames are
    encoded as they come (``pano.mkv`` + ``pano_frames.csv``, flushed per frame); body tracking is
    rewritten atomically every ``checkpoint_s`` seconds and at the end, so a crash leaves a
    readable session whose manifest still says ``recording``.
    """

    def __init__(self, out_dir: str | Path, rig: Rig, sources: list[Source], *, min_free_bytes: int,
                 queue_size: int = 900, checkpoint_s: float = 5.0):
        out_dir = Path(out_dir)
        self.min_free_bytes = min_free_bytes
        free = _disk_free(out_dir)
        if free < min_free_bytes:
            raise UserError(f"only {free / 2**30:.2f} GiB free on the disk", path=out_dir,
                            fix=f"free space or choose another folder (recording needs {min_free_bytes / 2**30:.1f} GiB)")
        self.session = Session.create(out_dir)
        self.root = out_dir
        self.checkpoint_s = checkpoint_s
        self.queue = DropOldestQueue(queue_size)
        self.frames: dict[str, int] = {}
        self._bodies: dict[str, list[KinectFrame]] = {}
        self._pano_writer = None
        self._pano_entry: DeviceEntry | None = None
        for src in sources:
            serial = src.name.removeprefix("kinect_")
            if src.kind == "kinect":
                self.session.add_device(DeviceEntry(kind="kinect", serial=serial, bodies=f"bodies_{serial}.json"))
                self._bodies[src.name] = []
            elif src.kind == "pano":
                self._pano_entry = self.session.add_device(DeviceEntry(
                    kind="pano", serial=serial, role="camera", recording="pano.mkv", timestamps="pano_frames.csv"))
            self.frames[src.name] = 0
        rig.save(self.session.rig_path)
        self.started_wall = time.perf_counter()
        self.bytes_written = 0
        self.disk_free = free
        self.fault = ""
        self._halt = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def push(self, packet: KinectFrame | PanoFrame) -> None:
        """Called in the capture threads for every packet."""
        self.queue.put(packet)
        self._wake.set()

    def state(self) -> RecordingState:
        return RecordingState(True, str(self.root), time.perf_counter() - self.started_wall, self.bytes_written,
                              self.disk_free, dict(self.frames), self.queue.dropped)

    def stop(self) -> RecordingState:
        """Write everything still queued, finalize the files and mark the session complete."""
        self._halt.set()
        self._wake.set()
        self._thread.join()
        final = self.state()
        return replace(final, active=False)

    def _run(self) -> None:
        last_checkpoint = time.perf_counter()
        try:
            while True:
                self._wake.wait(0.2)
                self._wake.clear()
                for packet in self.queue.drain():
                    self._write(packet)
                now = time.perf_counter()
                if now - last_checkpoint > self.checkpoint_s:
                    self._write_bodies()
                    last_checkpoint = now
                self._measure()
                if self._halt.is_set() and len(self.queue) == 0:
                    break
            self._finish()
        except Exception as exc:  # a full or vanished disk: keep what was written, say so
            self.fault = f"recording failed ({type(exc).__name__}: {exc})"

    def _write(self, packet: KinectFrame | PanoFrame) -> None:
        if isinstance(packet, PanoFrame):
            if self._pano_writer is None:
                from omnimocap.capture.pano import PanoWriter

                h, w = packet.image.shape[:2]
                self._pano_entry.width, self._pano_entry.height = w, h
                self.session.save()
                self._pano_writer = PanoWriter(self.session.path("pano.mkv"), self.session.path("pano_frames.csv"),
                                               w, h, fps=self._pano_entry.fps)
            self._pano_writer.write(packet.image, packet.t_pano, packet.t_session)
        else:
            self._bodies[packet.device].append(packet)
        self.frames[packet.device] = self.frames.get(packet.device, 0) + 1

    def _write_bodies(self) -> None:
        from omnimocap.capture.bodies import BodyRecording, BodyTrack, write_bodies

        for name, frames in self._bodies.items():
            if not frames:
                continue
            ids = sorted({i for f in frames for i in f.bodies})
            tracks = {i: BodyTrack.empty(len(frames)) for i in ids}
            for k, f in enumerate(frames):
                for i, body in f.bodies.items():
                    tracks[i].positions[k] = body.positions
                    tracks[i].orientations[k] = body.orientations
                    tracks[i].confidences[k] = body.confidences
            rec = BodyRecording(np.array([f.t_device for f in frames]), np.arange(len(frames)), tracks,
                                source_file=f"{name}.mkv")
            write_bodies(self.session.path(f"bodies_{name.removeprefix('kinect_')}.json"), rec)

    def _measure(self) -> None:
        self.bytes_written = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        self.disk_free = _disk_free(self.root)
        if self.disk_free < self.min_free_bytes:
            self.fault = f"disk nearly full ({self.disk_free / 2**30:.2f} GiB free): recording stopped"
            self._halt.set()

    def _finish(self) -> None:
        if self._pano_writer is not None:
            self._pano_writer.close()
        self._write_bodies()
        for entry in self.session.manifest.devices:
            if self.frames.get(entry.name, 0) == 0:
                entry.status = "disconnected"
        self.session.mark_complete()
        self._measure()


def _disk_free(path: Path) -> int:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


# --- the controller ---------------------------------------------------------------------------------
@dataclass
class LiveConfig:
    """Settings of a live session."""

    hands: str = "auto"
    """Hand backend for the preview: ``auto`` (``sim`` for simulated sessions, else ``wilor``),
    ``sim``, ``wilor`` or ``none``."""
    device: str = "cpu"
    """Torch device for WiLoR."""
    models: str | None = None
    """Models directory (default: $OMNIMOCAP_MODELS or ~/.cache/omnimocap/models)."""
    view_size: int = 192
    """Side of the live wrist-centred views, pixels."""
    display_queue: int = 2
    """Panorama frames a source holds for the preview before dropping the oldest."""
    kinect_queue: int = 64
    """Kinect frames a source holds before dropping the oldest (body history needs them all)."""
    record_queue: int = 900
    """Frames the recorder holds before it starts losing them (30 s of a 30 fps stream)."""
    stall_after_s: float = 1.0
    """A running source that delivers nothing for this long is reported as stalled (unplugged)."""
    min_free_bytes: int = 2 * 2**30
    """Recording refuses to start, and stops, below this much free disk space."""


class LiveController:
    """Owns the sources, the live preview and the recorder; publishes :class:`LiveState` snapshots.

    Controls are plain methods safe to call from any thread. Long work (calibration) runs in a
    background thread and reports progress through the snapshot and an optional callback.
    """

    def __init__(self, sources: list[Source], *, rig: Rig | None = None, session_dir: str | Path | None = None,
                 config: LiveConfig | None = None, cleanup: Callable[[], None] | None = None):
        self.sources = list(sources)
        self.rig = rig or Rig()
        self.session_dir = Path(session_dir) if session_dir is not None else None
        self.config = config or LiveConfig()
        self._cleanup = cleanup
        self._preview_on = True
        self._running = False
        self._halt = threading.Event()
        self._wake = threading.Event()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self._messages: deque[Message] = deque(maxlen=500)
        self._message_ids = itertools.count()
        self._reported: dict[str, str] = {}
        self._seq = 0
        self._recorder: SessionRecorder | None = None
        self._last_recording = RecordingState()
        self._calibration = self._calibration_from_rig("")
        self._histories = {s.name: BodyHistory() for s in self.sources if s.kind == "kinect"}
        self._latest_kinect: dict[str, KinectFrame] = {}
        self._preview_result: PreviewResult | None = None
        self._pipeline_ms = 0.0
        self._preview = self._make_preview()
        self._hands_backend = "none"
        for s in self.sources:
            s.add_listener(self._on_packet)
        self._state = self._snapshot()

    # --- construction ------------------------------------------------------------------------------
    @classmethod
    def from_session(cls, session_dir: str | Path, *, loop: bool = True, speed: float = 1.0,
                     config: LiveConfig | None = None, cleanup: Callable[[], None] | None = None) -> "LiveController":
        """Replay a recorded (or simulated) session folder as if live."""
        config = config or LiveConfig()
        session = Session.open(session_dir)
        rig = Rig.load(session.rig_path) if session.rig_path.is_file() else Rig()
        sources = replay_sources(session_dir, rig, loop=loop, speed=speed, kinect_queue=config.kinect_queue,
                                 display_queue=config.display_queue, stall_after_s=config.stall_after_s)
        controller = cls(sources, rig=rig, session_dir=session_dir, config=config, cleanup=cleanup)
        if not session.rig_path.is_file():
            controller.post("warning", "rig", "the session has no rig.json: calibrate before the preview can place hands")
        return controller

    @classmethod
    def simulated(cls, seconds: float = DEFAULT_SIM_SECONDS, *, people: int = 2, kinects: int = 2, seed: int = 0,
                  pano_width: int = 960, config: LiveConfig | None = None) -> "LiveController":
        """Simulate a short session into a temporary folder and replay it in a loop."""
        try:
            from omnimocap.capture.simulate import SimConfig, simulate_session
        except ImportError:
            raise UserError("the simulated rig is not available in this installation",
                            fix="use --session DIR to replay a recorded session") from None
        tmp = Path(tempfile.mkdtemp(prefix="omnimocap_live_"))
        try:
            simulate_session(tmp / "session", SimConfig(seconds=seconds, people=people, kinects=kinects, seed=seed,
                                                         pano_width=pano_width))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls.from_session(tmp / "session", loop=True, config=config,
                                cleanup=lambda: shutil.rmtree(tmp, ignore_errors=True))

    @classmethod
    def from_devices(cls, config: LiveConfig | None = None) -> "LiveController":
        """Connected devices; when none can be opened the controller runs empty and says why."""
        config = config or LiveConfig()
        try:
            sources = open_device_sources(config.stall_after_s)
            problem = None
        except UserError as exc:
            sources, problem = [], str(exc)
        controller = cls(sources, config=config)
        if problem:
            controller.post("fault", "devices", problem)
        return controller

    # --- controls ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every source and the live pipeline."""
        if self._running:
            return
        self._halt.clear()
        self._running = True
        clocks = {id(s.clock): s.clock for s in self.sources if isinstance(s, _ReplaySource)}
        for clock in clocks.values():
            clock.start()
        for s in self.sources:
            s.start()
        self._worker = threading.Thread(target=self._run, name="live-pipeline", daemon=True)
        self._worker.start()
        self.post("info", "session", f"started {len(self.sources)} source(s)")

    def stop(self) -> None:
        """Stop the sources and the pipeline (a running recording is finalized first)."""
        if self._recorder is not None:
            self.stop_recording()
        for s in self.sources:
            s.stop()
        self._halt.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(5.0)
        self._worker = None
        if self._running:
            self._running = False
            self.post("info", "session", "stopped")
        self._publish()

    def close(self) -> None:
        self.stop()
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = None

    @property
    def running(self) -> bool:
        return self._running

    def set_preview(self, on: bool) -> None:
        """Turn the hand preview (views, estimator, lifting) on or off; streams keep playing."""
        self._preview_on = bool(on)
        self.post("info", "preview", "hand preview on" if on else "hand preview off")
        self._publish()

    def latest(self) -> LiveState:
        """The newest snapshot (never blocks)."""
        return self._state

    def post(self, level: str, source: str, text: str) -> None:
        with self._lock:
            self._messages.append(Message(next(self._message_ids), time.time(), level, source, text))
        self._publish()

    def calibrate(self, method: str, progress: Callable[[float, str], None] | None = None) -> bool:
        """Calibrate the replayed session in a background thread (time sync, then ``method``:
        ``board`` or ``markerless``). Returns False, with a message, when it cannot start."""
        if method not in ("board", "markerless"):
            raise ValueError(f"unknown calibration method {method!r}")
        if self._calibration.running:
            self.post("warning", "calibration", "a calibration is already running")
            return False
        if self.session_dir is None:
            self._set_calibration(status="calibration needs a session folder (--session or --simulate)")
            self.post("fault", "calibration", self._calibration.status)
            return False
        try:
            steps = calibration_steps(method)
        except ImportError:
            self._set_calibration(status="calibration not available")
            self.post("fault", "calibration", "calibration not available in this installation")
            return False

        def report(fraction: float, text: str) -> None:
            self._set_calibration(running=fraction < 1.0, progress=fraction, status=text)
            if progress is not None:
                progress(fraction, text)

        def work() -> None:
            try:
                for i, (label, step) in enumerate(steps):
                    report(i / len(steps), label)
                    step(self.session_dir)
                rig = Rig.load(Path(self.session_dir) / "rig.json")
            except UserError as exc:
                self._set_calibration(running=False, status=f"failed: {exc}")
                self.post("fault", "calibration", str(exc))
                return
            except Exception as exc:  # shown, not raised: the session keeps running
                self._set_calibration(running=False, status=f"failed: {type(exc).__name__}: {exc}")
                self.post("fault", "calibration", f"{method} calibration failed ({type(exc).__name__}: {exc})")
                return
            self._set_rig(rig)
            report(1.0, f"{method} calibration done")
            self.post("info", "calibration", f"{method} calibration done: {_residual_text(rig.residuals)}")

        self._set_calibration(running=True, progress=0.0, status=f"{method}: starting")
        threading.Thread(target=work, name="calibration", daemon=True).start()
        return True

    def start_recording(self, out_dir: str | Path) -> bool:
        """Record every source into a new session folder. Returns False (with a fault message) when
        the folder is not empty or the disk is too full."""
        if self._recorder is not None:
            self.post("warning", "recording", "already recording")
            return False
        try:
            self._recorder = SessionRecorder(out_dir, self.rig, self.sources, min_free_bytes=self.config.min_free_bytes,
                                             queue_size=self.config.record_queue)
        except UserError as exc:
            self.post("fault", "recording", str(exc))
            return False
        self.post("info", "recording", f"recording to {out_dir}")
        self._publish()
        return True

    def stop_recording(self) -> RecordingState | None:
        recorder, self._recorder = self._recorder, None
        if recorder is None:
            return None
        self._last_recording = recorder.stop()
        if recorder.fault:
            self.post("fault", "recording", recorder.fault)
        self.post("info", "recording", f"recording stopped: {sum(self._last_recording.frames.values())} frames, "
                                       f"{self._last_recording.bytes_written / 2**20:.1f} MiB in {recorder.root}")
        self._publish()
        return self._last_recording

    # --- internals -------------------------------------------------------------------------------------
    def _make_preview(self) -> LivePreview | None:
        pano = next((s for s in self.sources if isinstance(s, ReplayPanoSource)), None)
        kinects = [s.name for s in self.sources if s.kind == "kinect"]
        if pano is None or not kinects:
            return None
        config = ProcessConfig(hands="sim", device=self.config.device, models=self.config.models,
                               view_size=self.config.view_size)
        return LivePreview(self.rig, (pano.width, pano.height), kinects[0], config)

    def _make_estimator(self) -> None:
        """Load the hand backend in the worker thread (WiLoR takes seconds); failures are faults."""
        if self._preview is None:
            return
        backend = self.config.hands
        if backend == "none":
            return
        session = Session.open(self.session_dir) if self.session_dir is not None else None
        if backend == "auto":
            backend = "sim" if session is not None and session.manifest.simulated else "wilor"
        try:
            if session is None:
                raise UserError("the live hand preview needs a session folder for its estimator")
            self._preview.estimator = make_estimator(replace(self._preview.config, hands=backend), session)
            self._hands_backend = backend
        except (UserError, ImportError) as exc:
            self.post("fault", "hands", f"hand backend '{backend}' not available ({exc}); "
                                        "the preview shows predicted wrists and views only")

    def _on_packet(self, packet) -> None:
        recorder = self._recorder
        if recorder is not None:
            recorder.push(packet)
        self._wake.set()

    def _run(self) -> None:
        self._make_estimator()
        while not self._halt.is_set():
            self._wake.wait(0.05)
            self._wake.clear()
            pano_frame = None
            for s in self.sources:
                packets = s.poll()
                if not packets:
                    continue
                if s.kind == "kinect":
                    for f in packets:
                        self._histories[s.name].add(f)
                    self._latest_kinect[s.name] = packets[-1]
                else:
                    pano_frame = packets[-1]
                    s.count_skipped(len(packets) - 1)
            if pano_frame is not None:
                self._run_preview(pano_frame)
            self._check_faults()
            self._publish()

    def _run_preview(self, frame: PanoFrame) -> None:
        t0 = time.perf_counter()
        if self._preview is None or "pano" not in self.rig.T_world_sensor or \
                self._preview.reference_kinect not in self.rig.T_world_sensor:
            self._preview_result = PreviewResult(PanoPane(frame.index, frame.t_session, frame.released_wall,
                                                          frame.image, [], []), [], [])
            return
        try:
            self._preview_result = self._preview.run(frame, self._histories[self._preview.reference_kinect],
                                                     self._preview_on)
        except Exception as exc:  # one bad frame must not end the session; the message says what broke
            self._report_once("preview", "failed", "fault", f"preview failed on frame {frame.index} ({type(exc).__name__}: {exc})")
            self._preview_result = PreviewResult(PanoPane(frame.index, frame.t_session, frame.released_wall,
                                                          frame.image, [], []), [], [])
        self._pipeline_ms = 1000 * (time.perf_counter() - t0)

    def _check_faults(self) -> None:
        for s in self.sources:
            h = s.health()
            if h.state == "stalled":
                self._report_once(s.name, "stalled", "fault", f"{s.name}: no data for more than {s.stall_after_s:g} s "
                                                   "(unplugged or stopped?)")
            elif h.state == "fault":
                self._report_once(s.name, "fault", "fault", f"{s.name}: {h.message}")
            elif h.state == "ended":
                self._report_once(s.name, "ended", "info", f"{s.name}: replay ended")
            elif h.state == "streaming" and self._reported.get(s.name) in ("stalled", "fault"):
                self._reported[s.name] = "streaming"
                self.post("info", s.name, f"{s.name}: streaming again")
        recorder = self._recorder
        if recorder is not None and recorder.fault:
            self.post("fault", "recording", recorder.fault)
            self.stop_recording()
        elif recorder is not None and recorder.queue.dropped:
            self._report_once("recording", f"lost {recorder.queue.dropped}", "fault",
                              f"recording fell behind: {recorder.queue.dropped} frames lost (disk too slow?)")

    def _report_once(self, key: str, condition: str, level: str, text: str) -> None:
        """Post ``text`` unless ``key`` is already known to be in ``condition``."""
        if self._reported.get(key) == condition:
            return
        self._reported[key] = condition
        self.post(level, key, text)

    def _set_calibration(self, **changes) -> None:
        with self._lock:
            self._calibration = replace(self._calibration, **changes)
        self._publish()

    def _calibration_from_rig(self, status: str) -> CalibrationState:
        return CalibrationState(self.rig.method, self.rig.is_truth, dict(self.rig.residuals), False,
                                0.0, status)

    def _set_rig(self, rig: Rig) -> None:
        self.rig = rig
        if self._preview is not None:
            self._preview.rig = rig
        for s in self.sources:
            if isinstance(s, _ReplaySource) and s.name in rig.time_maps:
                s.sync = _sync_label(rig.time_maps[s.name], rig.is_truth)
        with self._lock:
            self._calibration = replace(self._calibration_from_rig(self._calibration.status), progress=1.0)
        self._publish()

    def _publish(self) -> None:
        self._state = self._snapshot()

    def _snapshot(self) -> LiveState:
        result = self._preview_result
        kinects = [self._kinect_pane(s) for s in self.sources if s.kind == "kinect"]
        world = WorldState(
            skeletons={f"{pane.name}/{i}": transform_points(self.rig.T_world_sensor[pane.name], joints)
                       for pane in kinects if pane.name in self.rig.T_world_sensor
                       for i, joints in pane.skeletons_depth.items()},
            hands=list(result.hands_world) if result is not None else [],
            sensor_poses=dict(self.rig.T_world_sensor))
        recorder = self._recorder
        with self._lock:
            self._seq += 1
            return LiveState(
                seq=self._seq, published_wall=time.perf_counter(), running=self._running, preview=self._preview_on,
                kinects=kinects, pano=None if result is None else result.pano,
                hand_views=[] if result is None else list(result.hand_views), world=world,
                devices=[s.health() for s in self.sources], calibration=self._calibration,
                recording=recorder.state() if recorder is not None else self._last_recording,
                messages=tuple(self._messages), hands_backend=self._hands_backend, pipeline_ms=self._pipeline_ms)

    def _kinect_pane(self, source: Source) -> KinectPane:
        frame = self._latest_kinect.get(source.name)
        if frame is None:
            return KinectPane(source.name, float("nan"), None, {}, {})
        skeletons = {i: b.positions for i, b in frame.bodies.items()}
        calib = getattr(source, "calibration", None)
        color_px = {}
        if frame.color is not None and calib is not None:
            color_px = {i: calib.color.project(transform_points(calib.T_color_depth, p)) for i, p in skeletons.items()}
        return KinectPane(source.name, frame.t_session, frame.color, skeletons, color_px)


def calibration_steps(method: str) -> list[tuple[str, Callable[[Path], Any]]]:
    """The calibration stages of ``omnimocap sync`` / ``omnimocap calibrate`` as (label, step(session_dir)).
    Raises ImportError where this installation has no calibration."""
    from omnimocap.apps.cmd_calibrate import calibrate_session, sync_session

    return [("time sync", sync_session), (f"{method} calibration", lambda d: calibrate_session(d, method=method))]


def _residual_text(residuals: dict) -> str:
    numbers = {k: v for k, v in residuals.items() if isinstance(v, (int, float))}
    return ", ".join(f"{k} {v:.3g}" for k, v in numbers.items()) or "no residuals reported"
