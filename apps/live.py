"""The live capture session: sources, the live hand preview, calibration and recording, without Qt.

This is the model/controller half of the session GUI (``apps/gui.py`` is the thin view). It follows
the online-processing pattern: every source (:mod:`omnimocap.capture.sources`: live Kinects,
360 cameras, or a session folder replayed as if live) is read on its own thread into a bounded
display queue, one worker thread runs the same stage functions as ``omnimocap process`` on the
newest panorama frame and publishes an immutable :class:`LiveState` snapshot, and the view polls
:meth:`LiveController.latest` on its own timer. Nothing here ever blocks on the view and nothing
queues for it. Recording goes through :class:`~omnimocap.capture.recorder.Recorder`, fed every frame
from the capture threads (the display may drop frames, the recording must not).

Times: ``t_session`` seconds on the session clock (a sensor's device time through the rig's time
map, or its host arrival time where the rig has none); ``released_wall`` is ``time.perf_counter()``
when the frame left its capture thread (the start of the capture-to-display latency). Positions are
metres: Kinect joints in that Kinect's depth camera frame, everything in :class:`WorldState` in the
world frame (y up).
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
from typing import Any, Callable

import numpy as np

from omnimocap.geometry.cameras import EquirectCamera
from omnimocap.capture.rig import Rig, TimeMap
from omnimocap.geometry.transforms import invert_pose, transform_points
from omnimocap.capture.kinect_calibration import KinectCalibration
from omnimocap.capture.kinect_live import KinectDeviceConfig, KinectRig, import_pyk4a, stream_calibration
from omnimocap.capture.recorder import RecordConfig, Recorder
from omnimocap.capture.replay import replay_sources
from omnimocap.capture.session import Session
from omnimocap.capture.sources import (
    DISCONNECTED, RUNNING, STALLED, KinectBody, KinectFrame, PanoFrame, SessionClock, Source, SourceHealth,
)
from omnimocap.data.skeletons import SIDES
from omnimocap.errors import DeviceError, UserError
from omnimocap.fusion.lifting import lift_observation
from omnimocap.fusion.pipeline import (
    PeopleTracks, ProcessConfig, make_estimator, plan_hand_views, predicted_hands,
)
from omnimocap.hands.estimator import ViewRequest
from omnimocap.geometry.views import render_views, view_pixel_to_pano_bearing

NUM_KINECT_JOINTS = 32
DEFAULT_SIM_SECONDS = 4.0
# Points along each edge of a view's border when it is drawn into the panorama.
OUTLINE_POINTS_PER_EDGE = 24


# --- queues and feeds ------------------------------------------------------------------------------
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
class Released:
    """A frame as it left its capture thread, at ``released_wall`` (``time.perf_counter()``)."""

    frame: KinectFrame | PanoFrame
    released_wall: float


class SourceFeed:
    """One source read on its own thread (``Source.start_async``) into a :class:`DropOldestQueue`.

    ``on_frame(source, frame)`` runs in the capture thread for every frame, before any can be
    dropped (the recorder hook); keep it short. ``on_end(source, reason)`` runs once the source
    ends on its own. ``dropped`` counts the frames the display never saw: pushed out of the full
    queue, or polled but skipped for a newer one (:meth:`count_skipped`).
    """

    def __init__(self, source: Source, queue_size: int,
                 on_frame: Callable[[Source, KinectFrame | PanoFrame], None] | None = None,
                 on_end: Callable[[Source, str], None] | None = None):
        self.source = source
        self.queue = DropOldestQueue(queue_size)
        self._on_frame, self._on_end = on_frame, on_end
        self._skipped = 0

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def dropped(self) -> int:
        return self.queue.dropped + self._skipped

    def start(self) -> None:
        self.source.start_async(self._frame, self._end)

    def stop(self) -> None:
        self.source.stop()

    def poll(self) -> list[Released]:
        """Frames that arrived since the last poll, oldest first (older ones may have been dropped)."""
        return self.queue.drain()

    def count_skipped(self, n: int) -> None:
        self._skipped += n

    def health(self) -> SourceHealth:
        """The source's counters, with the display's drops added to its own."""
        health = self.source.health()
        return replace(health, drops=health.drops + self.dropped)

    def _frame(self, frame: KinectFrame | PanoFrame) -> None:
        released = Released(frame, time.perf_counter())
        if self._on_frame is not None:
            self._on_frame(self.source, frame)
        self.queue.put(released)

    def _end(self, reason: str) -> None:
        if self._on_end is not None:
            self._on_end(self.source, reason)


def _sync_label(time_map: TimeMap | None, is_truth: bool = False) -> str:
    """How a sensor's clock maps onto the session clock, for the device table."""
    if time_map is None:
        return "host arrival times"
    if is_truth:
        return "simulated truth"
    if time_map.residual_rms_ms is None:
        return "mapped"
    return f"rms {time_map.residual_rms_ms:.1f} ms"


def session_time(rig: Rig, name: str, frame: KinectFrame | PanoFrame) -> float:
    """A frame's time on the session clock (seconds): its device/camera time through the rig's time
    map for ``name``, or its host arrival time where the rig has none."""
    time_map = rig.time_maps.get(name)
    if time_map is None:
        return float(frame.host_time)
    return float(time_map.to_session(frame.stream_time))


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
    """One Kinect: its colour image (BGR, or None), its skeletons in its depth frame (metres) and,
    with a colour image and the device calibration, the same joints as colour pixels (column, row)."""

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


HAND_SEEN, HAND_HELD, HAND_LOST = "seen", "held", "lost"


@dataclass(frozen=True)
class WorldState:
    """The 3D scene, world frame (y up, metres): skeletons keyed ``<device>/<body id>`` (32,3),
    lifted hands (21,3) and every sensor's pose (4,4).

    The live whole-body pose (what the streams send): ``bodies``, the reference Kinect's people by
    body id (32,3); ``person_hands``, (body id, side) -> the hand (21,3) seen in the newest
    panorama frame or, for up to ``LiveConfig.hand_hold_s``, the last one seen moved with the
    wrist (held); ``hand_status``, (body id, side) -> seen | held | lost for every tracked person;
    ``t_session``, the newest panorama frame's session time (s); ``frame_key``, which Kinect and
    panorama frames the pose comes from (it changes when either does)."""

    skeletons: dict[str, np.ndarray] = field(default_factory=dict)
    hands: list[np.ndarray] = field(default_factory=list)
    sensor_poses: dict[str, np.ndarray] = field(default_factory=dict)
    bodies: dict[int, np.ndarray] = field(default_factory=dict)
    person_hands: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)
    hand_status: dict[tuple[int, str], str] = field(default_factory=dict)
    t_session: float = float("nan")
    frame_key: tuple = ()


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
    """One snapshot of the whole session; the view draws it and never writes to it. ``devices``:
    each source's counters (drops include the frames the display skipped); ``sync``: per device,
    how its clock maps onto the session clock."""

    seq: int
    published_wall: float
    running: bool
    preview: bool
    kinects: list[KinectPane]
    pano: PanoPane | None
    hand_views: list[HandView]
    world: WorldState
    devices: list[SourceHealth]
    sync: dict[str, str]
    calibration: CalibrationState
    recording: RecordingState
    messages: tuple[Message, ...]
    hands_backend: str
    pipeline_ms: float


# --- the live hand pipeline ----------------------------------------------------------------------------
class BodyHistory:
    """Recent body frames of one Kinect (a few seconds, session clock), for interpolating wrists to
    pano times. Frames whose body tracking did not run are left out."""

    def __init__(self, seconds: float = 2.0):
        self.seconds = seconds
        self.frames: deque[tuple[float, dict[int, KinectBody]]] = deque()

    def add(self, t_session: float, bodies: dict[int, KinectBody] | None) -> None:
        if bodies is None:
            return
        if self.frames and t_session <= self.frames[-1][0]:
            self.frames.clear()  # a restarted device clock: the old samples no longer line up
        self.frames.append((t_session, bodies))
        while self.frames and t_session - self.frames[0][0] > self.seconds:
            self.frames.popleft()

    def people(self, T_world_kinect: np.ndarray):
        """The history as the offline pipeline's :class:`~omnimocap.fusion.pipeline.PeopleTracks`
        (world frame, session clock)."""
        frames = list(self.frames)
        ids = sorted({i for _, bodies in frames for i in bodies})
        joints = np.full((len(ids), len(frames), NUM_KINECT_JOINTS, 3), np.nan)
        conf = np.zeros((len(ids), len(frames), NUM_KINECT_JOINTS))
        for k, (_, bodies) in enumerate(frames):
            for p, body_id in enumerate(ids):
                body = bodies.get(body_id)
                if body is not None:
                    joints[p, k] = transform_points(T_world_kinect, body.positions)
                    conf[p, k] = body.confidences
        return PeopleTracks(np.array([t for t, _ in frames]), ids, joints, conf)


@dataclass
class PreviewResult:
    """``hands_by``: (body id, side) -> lifted hand (21,3, world); ``wrists``: (body id, side) ->
    the Kinect wrist predicted at the frame's time (3, world) for every planned view."""

    pano: PanoPane
    hand_views: list[HandView]
    hands_world: list[np.ndarray]
    hands_by: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)
    wrists: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)


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

    def run(self, released: Released, t_session: float, history: BodyHistory, render: bool) -> PreviewResult:
        """The preview of one panorama frame at ``t_session`` (its time on the session clock)."""
        frame = released.frame
        cfg = self.config
        T_world_pano = self.rig.pose("pano")
        T_pano_world = invert_pose(T_world_pano)
        people = history.people(self.rig.pose(self.reference_kinect))
        t = np.array([t_session])
        pred = predicted_hands(people, t)
        planned = plan_hand_views(pred, T_pano_world, [0], cfg)
        wrists_px: list[tuple[int, str, np.ndarray]] = []
        outlines: list[np.ndarray] = []
        hand_views: list[HandView] = []
        hands_world: list[np.ndarray] = []
        hands_by: dict[tuple[int, str], np.ndarray] = {}
        wrists: dict[tuple[int, str], np.ndarray] = {}
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
                    frame_index=frame.index, t_session=t_session, person_id=people.person_ids[p],
                    side=SIDES[s], R_pano_view=pv.view.R_pano_view, camera=pv.view.camera,
                    predicted_wrist_view=pv.view.R_pano_view.T @ pv.wrist_pano,
                    predicted_box_xyxy=pv.box_xyxy,
                    image_bgr=None if images is None else images[i]))
            observations = self.estimator.estimate(requests) if (render and self.estimator is not None) else \
                [None] * len(requests)
            for pv, req, obs in zip(planned, requests, observations):
                p, s = pv.person, pv.side
                key = (people.person_ids[p], SIDES[s])
                wrists[key] = pred["wrist"][p, 0, s]
                keypoints = None
                if obs is not None and obs.is_right == (SIDES[s] == "right"):
                    lifted = lift_observation(obs, req, T_world_pano, pred["wrist"][p, 0, s])
                    if lifted.lateral_offset <= cfg.max_gate_m:
                        keypoints = obs.keypoints_2d
                        hands_world.append(lifted.joints)
                        hands_by[key] = lifted.joints
                if render:
                    hand_views.append(HandView(req.person_id, req.side, req.image_bgr, req.predicted_box_xyxy,
                                               keypoints))
        pane = PanoPane(frame.index, t_session, released.released_wall, frame.image, wrists_px, outlines)
        return PreviewResult(pane, hand_views, hands_world, hands_by, wrists)


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
    min_free_gb: float = 2.0
    """Recording refuses to start below this much free disk space (GiB) and stops below half of it."""
    body_tracking: bool = False
    """Live Kinects: run k4abt body tracking (needs libk4abt)."""
    hand_hold_s: float = 0.5
    """A hand no longer seen is held (its last shape moved with the Kinect wrist) for this long,
    session seconds, before it is lost."""


class LiveController:
    """Owns the sources, the live preview and the recorder; publishes :class:`LiveState` snapshots.

    ``sources`` stamp their frames on ``clock``, which restarts when the session starts. A source
    cannot start again once stopped; ``reopen(clock)`` (when given) opens a fresh set for the next
    start. Controls are plain methods safe to call from any thread. Long work (calibration) runs in
    a background thread and reports progress through the snapshot and an optional callback.
    """

    def __init__(self, sources: list[Source], *, clock: SessionClock | None = None,
                 reopen: Callable[[SessionClock], list[Source]] | None = None, rig: Rig | None = None,
                 session_dir: str | Path | None = None, config: LiveConfig | None = None,
                 cleanup: Callable[[], None] | None = None):
        self.clock = clock or SessionClock()
        self.rig = rig or Rig()
        self.session_dir = Path(session_dir) if session_dir is not None else None
        self.config = config or LiveConfig()
        self._reopen = reopen
        self._cleanup = cleanup
        self._preview_on = True
        self._running = False
        self._used = False  # the sources have been started (and cannot be again)
        self._halt = threading.Event()
        self._wake = threading.Event()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self._messages: deque[Message] = deque(maxlen=500)
        self._message_ids = itertools.count()
        self._reported: dict[str, str] = {}
        self._seq = 0
        self._recorder: Recorder | None = None
        self._last_recording = RecordingState()
        self._calibration = self._calibration_from_rig("")
        self._latest_kinect: dict[str, Released] = {}
        self._kinect_images: dict[str, tuple[int, np.ndarray | None]] = {}
        self._calibrations: dict[str, KinectCalibration | None] = {}
        self._preview_result: PreviewResult | None = None
        self._pipeline_ms = 0.0
        self._preview: LivePreview | None = None
        self._estimator_tried = False
        self._hands_backend = "none"
        self._sinks: list[Callable[[LiveState], None]] = []
        self._hand_memory: dict[tuple[int, str], tuple[float, np.ndarray, np.ndarray]] = {}
        self._person_hands: dict[tuple[int, str], np.ndarray] = {}
        self._hand_status: dict[tuple[int, str], str] = {}
        self._use_sources(sources)
        self._state = self._snapshot()

    # --- construction ------------------------------------------------------------------------------
    @classmethod
    def from_session(cls, session_dir: str | Path, *, loop: bool = True, config: LiveConfig | None = None,
                     cleanup: Callable[[], None] | None = None) -> "LiveController":
        """Replay a recorded (or simulated) session folder as if live: on its own session clock
        (through ``rig.json``'s time maps) when it has one, else each stream paced from its first
        frame."""
        config = config or LiveConfig()
        session = Session.open(session_dir)
        has_rig = session.rig_path.is_file()
        rig = Rig.load(session.rig_path) if has_rig else Rig()
        if not session.manifest.devices:
            raise UserError("the session lists no devices", path=session.root / "session.json")

        def reopen(clock: SessionClock) -> list[Source]:
            return replay_sources(session_dir, clock, on_session_clock=has_rig, loop=loop)

        clock = SessionClock()
        controller = cls(reopen(clock), clock=clock, reopen=reopen, rig=rig, session_dir=session_dir, config=config,
                         cleanup=cleanup)
        if not has_rig:
            controller.post("warning", "rig", "the session has no rig.json: calibrate before the preview can place hands")
        return controller

    @classmethod
    def simulated(cls, seconds: float = DEFAULT_SIM_SECONDS, *, people: int = 2, kinects: int = 2, seed: int = 0,
                  pano_width: int = 960, config: LiveConfig | None = None) -> "LiveController":
        """Simulate a short session into a temporary folder and replay it in a loop."""
        try:
            from omnimocap.sim.simulate import SimConfig, simulate_session
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
    def from_devices(cls, config: LiveConfig | None = None,
                     pano: Callable[[SessionClock], Source | None] | None = None) -> "LiveController":
        """Every connected Azure Kinect (each on its own clock, no wired sync) and the 360 camera
        ``pano(clock)`` opens, if any. When a device cannot be opened the controller runs with what
        it has and its message panel says why."""
        config = config or LiveConfig()
        problems: list[str] = []

        def reopen(clock: SessionClock) -> list[Source]:
            problems.clear()
            sources: list[Source] = []
            try:
                sources += open_kinects(clock, body_tracking=config.body_tracking)
            except UserError as exc:
                problems.append(str(exc))
            if pano is not None:
                try:
                    camera = pano(clock)
                    if camera is not None:
                        camera.connect()
                        sources.append(camera)
                except UserError as exc:
                    problems.append(str(exc))
            return sources

        clock = SessionClock()
        controller = cls(reopen(clock), clock=clock, reopen=reopen, config=config)
        for problem in problems:
            controller.post("fault", "devices", problem)
        return controller

    # --- controls ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every source and the live pipeline (a fresh set of sources after a stop)."""
        if self._running:
            return
        if self._used and self._reopen is not None:
            try:
                self._use_sources(self._reopen(self.clock))
            except UserError as exc:
                self.post("fault", "devices", str(exc))
                return
        self._used = True
        self._halt.clear()
        self._running = True
        self._reported.clear()
        self.clock.restart()  # replays release their frames on this clock from its start
        for feed in self.feeds:
            try:
                feed.start()
            except UserError as exc:
                self.post("fault", feed.name, f"{feed.name}: {exc}")
        self._worker = threading.Thread(target=self._run, name="live-pipeline", daemon=True)
        self._worker.start()
        self.post("info", "session", f"started {len(self.feeds)} source(s)")

    def stop(self) -> None:
        """Stop the sources and the pipeline (a running recording is finalized first)."""
        if self._recorder is not None:
            self.stop_recording()
        self._halt.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(5.0)
        self._worker = None
        for feed in self.feeds:
            feed.stop()
        if self._running:
            self._running = False
            self.post("info", "session", "stopped")
        self._publish()

    def close(self) -> None:
        """Stop, close every sink that has a ``close()`` and remove the session's temporary files."""
        self.stop()
        sinks, self._sinks = self._sinks, []
        for sink in sinks:
            if hasattr(sink, "close"):
                sink.close()
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = None

    @property
    def running(self) -> bool:
        return self._running

    @property
    def sources(self) -> list[Source]:
        return [feed.source for feed in self.feeds]

    def set_preview(self, on: bool) -> None:
        """Turn the hand preview (views, estimator, lifting) on or off; streams keep playing."""
        self._preview_on = bool(on)
        self.post("info", "preview", "hand preview on" if on else "hand preview off")
        self._publish()

    def latest(self) -> LiveState:
        """The newest snapshot (never blocks)."""
        return self._state

    def add_sink(self, sink: Callable[[LiveState], None]) -> None:
        """Call ``sink(state)`` with every snapshot a pipeline pass publishes, on the pipeline's
        thread (a stream out, e.g. :class:`~omnimocap.fusion.live_stream.VmcSender`); it must be
        quick. A sink that raises is reported once as a fault and the session goes on."""
        self._sinks.append(sink)

    def post(self, level: str, source: str, text: str) -> None:
        with self._lock:
            self._messages.append(Message(next(self._message_ids), time.time(), level, source, text))
        self._publish()

    def calibrate(self, method: str, progress: Callable[[float, str], None] | None = None) -> bool:
        """Calibrate the replayed session in a background thread (``method`` ``board`` or
        ``markerless``, see :func:`calibration_steps`). Returns False, with a message, when it cannot
        start."""
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
        """Record every source into a new session folder (the rig in use saved with it). Returns
        False (with a fault message) when the folder is not empty or the disk is too full."""
        if self._recorder is not None:
            self.post("warning", "recording", "already recording")
            return False
        simulated = False
        if self.session_dir is not None:
            simulated = Session.open(self.session_dir).manifest.simulated
        try:
            recorder = Recorder(out_dir, self.sources, RecordConfig(min_free_gb=self.config.min_free_gb,
                                                                    simulated=simulated), self.clock)
            recorder.begin(self.rig, queue_size=self.config.record_queue)
        except UserError as exc:
            self.post("fault", "recording", str(exc))
            return False
        self._recorder = recorder
        self.post("info", "recording", f"recording to {out_dir}")
        return True

    def stop_recording(self) -> RecordingState | None:
        """Finalize the recording; returns its final state (None when nothing was recording)."""
        recorder, self._recorder = self._recorder, None
        if recorder is None:
            return None
        result = recorder.end()
        self._last_recording = RecordingState(False, str(recorder.out_dir), result.seconds, recorder.bytes_written,
                                              recorder.free_bytes or 0, result.frames, recorder.dropped)
        if recorder.fault:
            self.post("fault", "recording", recorder.fault)
        self.post("info", "recording", f"recording stopped: {sum(result.frames.values())} frames, "
                                       f"{recorder.bytes_written / 2**20:.1f} MiB in {recorder.out_dir}")
        return self._last_recording

    # --- internals -------------------------------------------------------------------------------------
    def _use_sources(self, sources: list[Source]) -> None:
        self.feeds: list[SourceFeed] = []
        for source in sources:
            source.stall_after_s = self.config.stall_after_s
            size = self.config.kinect_queue if source.kind == "kinect" else self.config.display_queue
            self.feeds.append(SourceFeed(source, size, self._on_frame, self._on_end))
        self._histories = {f.name: BodyHistory() for f in self.feeds if f.source.kind == "kinect"}
        self._latest_kinect.clear()

    def _on_frame(self, source: Source, frame: KinectFrame | PanoFrame) -> None:
        recorder = self._recorder
        if recorder is not None:
            recorder.push(source, frame)
        self._wake.set()

    def _on_end(self, source: Source, reason: str) -> None:
        recorder = self._recorder
        if recorder is not None:
            recorder.source_ended(source, reason)
        self._wake.set()

    def _make_preview(self, image: np.ndarray) -> LivePreview | None:
        kinects = [f.name for f in self.feeds if f.source.kind == "kinect"]
        if not kinects:
            return None
        config = ProcessConfig(hands="sim", device=self.config.device, models=self.config.models,
                               view_size=self.config.view_size)
        h, w = image.shape[:2]
        return LivePreview(self.rig, (w, h), kinects[0], config)

    def _make_estimator(self) -> None:
        """Load the hand backend in the worker thread (WiLoR takes seconds); failures are faults."""
        self._estimator_tried = True
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

    def _run(self) -> None:
        while not self._halt.is_set():
            self._wake.wait(0.05)
            self._wake.clear()
            self.step()

    def step(self) -> LiveState:
        """One pass of the live pipeline over the frames queued since the last pass: the Kinect
        frames into the body histories, the newest panorama frame through the preview, the fault
        checks and a new snapshot, which is returned. The worker thread runs it whenever a frame
        arrives; a caller that fills the feeds' queues itself (without :meth:`start`) can drive the
        pipeline frame by frame."""
        pano = None
        for feed in self.feeds:
            released = feed.poll()
            if not released:
                continue
            if feed.source.kind == "kinect":
                for r in released:
                    self._histories[feed.name].add(session_time(self.rig, feed.name, r.frame), r.frame.bodies)
                self._latest_kinect[feed.name] = released[-1]
            else:
                pano = (feed.name, released[-1])
                feed.count_skipped(len(released) - 1)
        if pano is not None:
            self._run_preview(*pano)
        self._check_faults()
        self._publish()
        state = self._state
        for sink in list(self._sinks):
            try:
                sink(state)
            except Exception as exc:  # a stream that fails must not end the session
                self._report_once(f"sink {id(sink)}", "failed", "fault",
                                  f"stream out failed ({type(exc).__name__}: {exc})")
        return state

    def _run_preview(self, name: str, released: Released) -> None:
        t0 = time.perf_counter()
        frame = released.frame
        t_session = session_time(self.rig, name, frame)
        bare = PreviewResult(PanoPane(frame.index, t_session, released.released_wall, frame.image, [], []), [], [])
        if self._preview is None or (self._preview.pano_cam.width, self._preview.pano_cam.height) != \
                (frame.image.shape[1], frame.image.shape[0]):
            self._preview = self._make_preview(frame.image)
        if self._preview is not None and not self._estimator_tried:
            self._make_estimator()
        if self._preview is None or "pano" not in self.rig.T_world_sensor or \
                self._preview.reference_kinect not in self.rig.T_world_sensor:
            self._preview_result = bare
            return
        try:
            self._preview_result = self._preview.run(released, t_session, self._histories[self._preview.reference_kinect],
                                                     self._preview_on)
        except Exception as exc:  # one bad frame must not end the session; the message says what broke
            self._report_once("preview", "failed", "fault", f"preview failed on frame {frame.index} ({type(exc).__name__}: {exc})")
            self._preview_result = bare
        self._update_hands(t_session, self._preview_result)
        self._pipeline_ms = 1000 * (time.perf_counter() - t0)

    def _update_hands(self, t_session: float, result: PreviewResult) -> None:
        """Each tracked hand's status after a panorama frame: seen (lifted in this frame), held (seen
        within ``hand_hold_s`` before: the last hand moved by the wrist's motion since) or lost."""
        hold = self.config.hand_hold_s
        memory = self._hand_memory
        for key in [k for k, (t, _, _) in memory.items() if not 0.0 <= t_session - t <= hold]:
            del memory[key]
        hands, status = {}, {}
        for key, wrist in result.wrists.items():
            if key in result.hands_by:
                hands[key] = result.hands_by[key]
                memory[key] = (t_session, result.hands_by[key], wrist)
                status[key] = HAND_SEEN
            elif key in memory and np.all(np.isfinite(wrist)):
                _, joints, seen_wrist = memory[key]
                hands[key] = joints + (wrist - seen_wrist)
                status[key] = HAND_HELD
            else:
                status[key] = HAND_LOST
        self._person_hands, self._hand_status = hands, status

    def _check_faults(self) -> None:
        for feed in self.feeds:
            h = feed.source.health()
            if h.state == STALLED:
                self._report_once(h.name, "stalled", "fault", f"{h.name}: no data for more than "
                                  f"{self.config.stall_after_s:g} s (unplugged or stopped?)")
            elif h.state == DISCONNECTED:
                self._report_once(h.name, "disconnected", "fault", f"{h.name}: {h.message or 'disconnected'}")
            elif h.state == RUNNING and self._reported.get(h.name) == "stalled":
                self._reported[h.name] = "running"
                self.post("info", h.name, f"{h.name}: streaming again")
        recorder = self._recorder
        if recorder is not None and recorder.fault:
            self.stop_recording()
        elif recorder is not None and recorder.dropped:
            self._report_once("recording", f"lost {recorder.dropped}", "fault",
                              f"recording fell behind: {recorder.dropped} frames lost (disk too slow?)")

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
        with self._lock:
            self._calibration = replace(self._calibration_from_rig(self._calibration.status), progress=1.0)
        self._publish()

    def _publish(self) -> None:
        self._state = self._snapshot()

    def _recording_state(self) -> RecordingState:
        recorder = self._recorder
        if recorder is None:
            return self._last_recording
        return RecordingState(True, str(recorder.out_dir), self.clock.now() - recorder.started_at,
                              recorder.bytes_written, recorder.free_bytes or 0, recorder.frame_counts(),
                              recorder.dropped)

    def _snapshot(self) -> LiveState:
        result = self._preview_result
        kinects = [self._kinect_pane(f.source) for f in self.feeds if f.source.kind == "kinect"]
        skeletons = {f"{pane.name}/{i}": transform_points(self.rig.T_world_sensor[pane.name], joints)
                     for pane in kinects if pane.name in self.rig.T_world_sensor
                     for i, joints in pane.skeletons_depth.items()}
        reference = kinects[0] if kinects else None
        bodies = {} if reference is None else \
            {i: skeletons[f"{reference.name}/{i}"] for i in reference.skeletons_depth if f"{reference.name}/{i}" in skeletons}
        ref_frame = self._latest_kinect.get(reference.name) if reference is not None else None
        world = WorldState(
            skeletons=skeletons,
            hands=list(result.hands_world) if result is not None else [],
            sensor_poses=dict(self.rig.T_world_sensor),
            bodies=bodies,
            person_hands=dict(self._person_hands),
            hand_status={k: v for k, v in self._hand_status.items() if k[0] in bodies},
            t_session=result.pano.t_session if result is not None else float("nan"),
            frame_key=(None if ref_frame is None else (ref_frame.frame.frame_id, ref_frame.released_wall),
                       None if result is None else (result.pano.index, result.pano.released_wall)))
        devices = [f.health() for f in self.feeds]
        sync = {d.name: _sync_label(self.rig.time_maps.get(d.name), self.rig.is_truth) for d in devices}
        with self._lock:
            self._seq += 1
            return LiveState(
                seq=self._seq, published_wall=time.perf_counter(), running=self._running, preview=self._preview_on,
                kinects=kinects, pano=None if result is None else result.pano,
                hand_views=[] if result is None else list(result.hand_views), world=world,
                devices=devices, sync=sync, calibration=self._calibration, recording=self._recording_state(),
                messages=tuple(self._messages), hands_backend=self._hands_backend, pipeline_ms=self._pipeline_ms)

    def _kinect_pane(self, source: Source) -> KinectPane:
        released = self._latest_kinect.get(source.name)
        if released is None:
            return KinectPane(source.name, float("nan"), None, {}, {})
        frame = released.frame
        skeletons = {i: b.positions for i, b in (frame.bodies or {}).items()}
        color = self._color_image(source.name, frame)
        calib = self._calibration_of(source)
        color_px = {}
        if color is not None and calib is not None:
            color_px = {i: calib.color.project(transform_points(calib.T_color_depth, p)) for i, p in skeletons.items()}
        return KinectPane(source.name, session_time(self.rig, source.name, frame), color, skeletons, color_px)

    def _color_image(self, name: str, frame: KinectFrame) -> np.ndarray | None:
        """The frame's colour image as BGR; an MJPG stream's JPEG is decoded once per frame."""
        if not isinstance(frame.color, bytes):
            return frame.color
        cached = self._kinect_images.get(name)
        if cached is None or cached[0] != frame.frame_id:
            import cv2

            cached = (frame.frame_id, cv2.imdecode(np.frombuffer(frame.color, np.uint8), cv2.IMREAD_COLOR))
            self._kinect_images[name] = cached
        return cached[1]

    def _calibration_of(self, source: Source) -> KinectCalibration | None:
        if source.name not in self._calibrations:
            try:
                self._calibrations[source.name] = stream_calibration(source.info)
            except UserError as exc:
                self._calibrations[source.name] = None
                self.post("warning", source.name, f"{source.name}: skeletons not drawn on colour ({exc})")
        return self._calibrations[source.name]


def open_kinects(clock: SessionClock, *, body_tracking: bool = False) -> list[Source]:
    """Every connected Azure Kinect, opened standalone (each on its own clock) through
    :class:`~omnimocap.capture.kinect_live.KinectRig`. Raises :class:`DeviceError` when pyk4a is
    missing or no device is connected."""
    pyk4a = import_pyk4a()
    count = pyk4a.connected_device_count()
    if count == 0:
        raise DeviceError("no Azure Kinect is connected",
                          fix="plug in the devices, or run `omnimocap gui --simulate` / `--session DIR`")
    configs = [KinectDeviceConfig(device_id=i, body_tracking=body_tracking) for i in range(count)]
    return list(KinectRig(configs, clock, pyk4a).open())


def calibration_steps(method: str) -> list[tuple[str, Callable[[Path], Any]]]:
    """The calibration stages of ``omnimocap calibrate`` / ``omnimocap sync`` as (label, step(session_dir)):
    the board places the 360 camera, then the clock is refined from motion with that pose; markerless
    solves pose and clock together, refining the session's previous calibration when it has one
    (``calibrate --refine``) and searching from nothing otherwise. Raises ImportError where this
    installation has no calibration."""
    from omnimocap.apps.cmd_calibrate import calibrate_session, sync_session

    if method == "board":
        return [("board calibration", lambda d: calibrate_session(d, method="board")), ("time sync", sync_session)]
    return [("markerless calibration", lambda d: calibrate_session(d, method="markerless", refine=has_pano_calibration(d)))]


def has_pano_calibration(session_dir: str | Path) -> bool:
    """Whether the session's rig.json holds an estimated pose and clock of the 360 camera (not the
    simulated truth) that a calibration can start from."""
    try:
        rig = Rig.load(Path(session_dir) / "rig.json")
    except (UserError, OSError):
        return False
    return not rig.is_truth and "pano" in rig.T_world_sensor and "pano" in rig.time_maps


def _residual_text(residuals: dict) -> str:
    numbers = {k: v for k, v in residuals.items() if isinstance(v, (int, float))}
    return ", ".join(f"{k} {v:.3g}" for k, v in numbers.items()) or "no residuals reported"
