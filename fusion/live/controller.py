"""The live session controller, without Qt: sources, the live hand preview, calibration and
recording, published as immutable :class:`~omnimocap.fusion.live.state.LiveState` snapshots.

It follows the online-processing pattern: every source (:mod:`omnimocap.capture.sources`: live
Kinects, 360 cameras, or a session folder replayed as if live) is read on its own thread into a
bounded display queue (``fusion.live.feeds``); one worker thread runs the hand stage of ``omnimocap
process`` on the newest panorama frame (``fusion.live.preview``) and publishes a snapshot, and a view
polls :meth:`LiveController.latest` on its own timer. Nothing here ever blocks on the view and
nothing queues for it. Recording goes through :class:`~omnimocap.capture.recorder.Recorder`, fed
every frame from the capture threads (the display may drop frames, the recording must not).

Times: ``t_session`` seconds on the session clock (a sensor's device time through the rig's time
map, or its host arrival time where the rig has none).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from omnimocap.capture.dual_fisheye import DualFisheyeSource
from omnimocap.capture.kinect_live import open_kinects
from omnimocap.capture.recorder import RecordConfig, Recorder
from omnimocap.capture.replay import ReplayLoop, replay_loop, replay_sources
from omnimocap.capture.rig import Rig, TimeMap
from omnimocap.capture.session import MANIFEST, Session
from omnimocap.capture.sources import (
    DISCONNECTED, RUNNING, STALLED, KinectFrame, PanoFrame, SessionClock, Source,
)
from omnimocap.errors import UserError
from omnimocap.fusion.live import calibration as live_calibration
from omnimocap.fusion.live.body import LiveBody
from omnimocap.fusion.live.calibration import CalibrationRun
from omnimocap.fusion.live.feeds import Released, SourceFeed, session_time
from omnimocap.fusion.live.history import BodyHistory, RecentDepthFrames
from omnimocap.fusion.live.panes import KinectPanes, world_state
from omnimocap.fusion.live.preview import HandHold, LivePreview, PreviewResult
from omnimocap.fusion.live.state import (
    LiveState, Message, PanoPane, RecordingState,
)
from omnimocap.fusion.pipeline import ProcessConfig, make_estimator
from omnimocap.geometry.cameras import EquirectCamera
from omnimocap.hands.estimator import HandEstimator


@dataclass
class LiveConfig:
    """Settings of a live session."""

    process: ProcessConfig = field(default_factory=ProcessConfig)
    """The hand stage's settings, those of ``omnimocap process`` (backend and its default, device,
    models, view size, lifting, side consistency, depth cue, smoothing); ``process.hands`` may also
    be ``none``: no backend, the preview shows predicted wrists and views only."""
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
    body: bool = True
    """Fit the SMPL-X body live (``fusion.live.body``) to the reference Kinect's people, on the newest
    panorama frame the hand preview ran on (at most ``body_max_hz`` times a second), with the hands
    on it."""
    body_shape_s: float = 1.5
    """Seconds a person is tracked before the body's shape is fitted and held (at most the 2 s of
    Kinect history the preview keeps)."""
    body_max_hz: float = 15.0
    """The body thread fits at most this often (the window's 3D view draws at 15 Hz): its fit holds
    Python's interpreter lock for most of its time, which the window's thread needs to draw."""
    body_warm_iterations: int = 2
    """Levenberg-Marquardt steps of a body fit started from the person's previous fit (0: every
    frame from the fit's analytic initialisation, with its 6 + 3 steps, as ``process`` starts)."""
    worker_niceness: int = 10
    """How much lower than the rest of the process the hand preview's and the body fit's threads are
    scheduled (the thread's nice value raised by this much; Linux, where a thread has its own; 0:
    not lowered): on a machine short of cores, the capture threads and the window draw first, and
    the preview and the fit take what is left."""
    display_every_frame: bool = True
    """Publish every panorama frame the moment it is polled, drawn with the overlays (predicted
    wrists, view outlines, hand views, hands) of the newest frame the hand preview has finished,
    while the preview runs on its own thread on the newest frame it can take: the panorama plays at
    the source rate however long a preview takes. False: a panorama frame is published only with
    its own preview, so the display runs at the preview's rate."""


class LiveController:
    """Owns the sources, the live preview and the recorder; publishes :class:`LiveState` snapshots.

    ``sources`` stamp their frames on ``clock``, which restarts when the session starts. A source
    cannot start again once stopped; ``reopen(clock)`` (when given) opens a fresh set for the next
    start. Controls are plain methods safe to call from any thread. Long work (calibration, loading
    the hand backend) runs in a background thread and reports progress through the snapshot and an
    optional callback. ``replay_loop``: the loop the sources replay, when they replay a session in a
    loop (its frames reach the hand backend by their index in the recording).
    """

    def __init__(self, sources: list[Source], *, clock: SessionClock | None = None,
                 reopen: Callable[[SessionClock], list[Source]] | None = None, rig: Rig | None = None,
                 session_dir: str | Path | None = None, config: LiveConfig | None = None,
                 cleanup: Callable[[], None] | None = None, replay_loop: ReplayLoop | None = None):
        self.clock = clock or SessionClock()
        self.rig = rig or Rig()
        self.session_dir = Path(session_dir) if session_dir is not None else None
        self.config = config or LiveConfig()
        self._reopen = reopen
        self._cleanup = cleanup
        self.replay_loop = replay_loop
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
        self.calibration = CalibrationRun(self.rig, self._publish, self.post, self._set_rig)
        self.panes = KinectPanes(lambda source, text: self.post("warning", source, text))
        self._preview_result: PreviewResult | None = None
        self._pipeline_ms = 0.0
        self._preview: LivePreview | None = None
        self._hands_loader: threading.Thread | None = None
        self._hands_backend = "none"
        self._sinks: list[Callable[[LiveState], None]] = []
        self._estimator: HandEstimator | None = None  # set once, by the loader thread
        self.hand_hold = HandHold(self.config.hand_hold_s)
        self._depth: dict[str, RecentDepthFrames] = {}  # each Kinect's newest depth images, for the depth cue
        self.body: LiveBody | None = None  # made by the first fit (it may load a model file)
        self._body_failed = False
        self._body_job: tuple | None = None  # the newest people and hands for the body thread
        self._body_wake = threading.Event()
        self._body_worker: threading.Thread | None = None
        self._body_ms = 0.0
        self._display: tuple[Released, float] | None = None  # the newest panorama frame polled and its t_session
        self._preview_job: tuple[str, Released] | None = None  # the newest panorama frame for the preview thread
        self._preview_wake = threading.Event()
        self._preview_worker: threading.Thread | None = None
        self._use_sources(sources)
        self._state = self._snapshot()

    # --- construction ------------------------------------------------------------------------------
    @classmethod
    def from_session(cls, session_dir: str | Path, *, loop: bool = True, realtime: bool = True,
                     config: LiveConfig | None = None, cleanup: Callable[[], None] | None = None) -> "LiveController":
        """Replay a recorded (or simulated) session folder as if live: on its own session clock
        (through ``rig.json``'s time maps) when it has one, else each stream paced from its first
        frame; ``realtime`` False releases the frames as fast as they are read."""
        config = config or LiveConfig()
        session = Session.open(session_dir)
        has_rig = session.rig_path.is_file()
        rig = Rig.load(session.rig_path) if has_rig else Rig()
        if not session.manifest.devices:
            raise UserError("the session lists no devices", path=session.root / MANIFEST)

        def reopen(clock: SessionClock) -> list[Source]:
            return replay_sources(session_dir, clock, realtime=realtime, on_session_clock=has_rig, loop=loop)

        clock = SessionClock()
        controller = cls(reopen(clock), clock=clock, reopen=reopen, rig=rig, session_dir=session_dir, config=config,
                         cleanup=cleanup, replay_loop=replay_loop(session_dir, on_session_clock=has_rig) if loop else None)
        if not has_rig:
            controller.post("warning", "rig", "the session has no rig.json: calibrate before the preview can place hands")
        return controller

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
        """Start every source and the live pipeline (a fresh set of sources after a stop), and the
        first time, the loading of the hand backend on its own thread: the streams play meanwhile and
        the snapshot's ``hands_backend`` says ``loading <backend>`` until it is ready."""
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
        self._load_hands()
        self.clock.restart()  # replays release their frames on this clock from its start
        for feed in self.feeds:
            try:
                feed.start()
            except UserError as exc:
                self.post("fault", feed.name, f"{feed.name}: {exc}")
        self._worker = threading.Thread(target=self._run, name="live-pipeline", daemon=True)
        if self.config.display_every_frame:
            self._preview_worker = threading.Thread(target=self._run_previews, name="live-hands", daemon=True)
            self._preview_worker.start()
        self._worker.start()
        if self.config.body:
            self._body_worker = threading.Thread(target=self._run_body, name="live-body", daemon=True)
            self._body_worker.start()
        self.post("info", "session", f"started {len(self.feeds)} source(s)")

    def stop(self) -> None:
        """Stop the sources and the pipeline (a running recording is finalized first)."""
        if self._recorder is not None:
            self.stop_recording()
        self._halt.set()
        self._wake.set()
        self._body_wake.set()
        self._preview_wake.set()
        for worker in (self._worker, self._preview_worker, self._body_worker):
            if worker is not None:
                worker.join(5.0)
        self._worker = self._preview_worker = self._body_worker = None
        self._preview_job = None
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

    @property
    def preview_result(self) -> PreviewResult | None:
        """The newest panorama frame's preview: its hand views, lifted hands and the hand stage's
        outcome of every planned view."""
        return self._preview_result

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

    def calibration_steps(self, method: str) -> list[tuple[str, Callable[[Path], Any]]]:
        """The calibration stages for ``method`` as (label, step(session_dir)), run in order by
        :meth:`calibrate`: those of ``omnimocap calibrate`` and ``sync``
        (:func:`omnimocap.fusion.live.calibration.calibration_steps`)."""
        return live_calibration.calibration_steps(method)

    def calibrate(self, method: str, progress: Callable[[float, str], None] | None = None) -> bool:
        """Calibrate the replayed session in a background thread (``method`` ``board`` or
        ``markerless``, see :meth:`calibration_steps`). Returns False, with a message, when it cannot
        start."""
        if method not in ("board", "markerless"):
            raise ValueError(f"unknown calibration method {method!r}")
        return self.calibration.start(method, self.session_dir, self.calibration_steps, progress)

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
        self._depth.clear()  # the preview holds this dict
        self.panes.clear()
        self._display = None

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
        h, w = image.shape[:2]
        # a camera delivering raw dual-fisheye frames brings its lens model; any other, an equirectangular panorama
        raw = next((f.source for f in self.feeds if isinstance(f.source, DualFisheyeSource)), None)
        camera = raw.camera if raw is not None else EquirectCamera(w, h)
        return LivePreview(self.rig, camera, kinects[0], self.config.process, self._estimator, self._depth)

    def _load_hands(self, wait: bool = False) -> None:
        """Start loading the hand backend on its own thread, once per controller: WiLoR takes
        seconds, and the pipeline must keep draining the Kinect queues meanwhile. Nothing loads
        without a panorama and a Kinect source to preview. ``wait``: return once it is loaded (or
        has failed)."""
        backend = self.config.process.hands
        kinds = {feed.source.kind for feed in self.feeds}
        if backend != "none" and self._hands_loader is None and {"kinect", "pano"} <= kinds:
            self._hands_backend = f"loading {backend}"
            self.post("info", "hands", f"loading the hand backend '{backend}'")
            self._hands_loader = threading.Thread(target=self._make_estimator, name="live-hands-loader", daemon=True)
            self._hands_loader.start()
        if wait and self._hands_loader is not None:
            self._hands_loader.join()

    def _make_estimator(self) -> None:
        """The hand backend of ``config.process.hands``; the pipeline thread hands it to the preview
        at its next pass. Failures are faults: the preview then shows predicted wrists and views."""
        backend = self.config.process.hands
        try:
            if self.session_dir is None and backend == "sim":
                raise UserError("the simulated hand observer needs a simulated session folder")
            session = Session.open(self.session_dir) if self.session_dir is not None else None
            self._estimator = make_estimator(self.config.process, session)
            self._hands_backend = backend
            self.post("info", "hands", f"hand backend '{backend}' ready")
        except Exception as exc:  # on this thread, anything that breaks must reach the message panel
            detail = str(exc) if isinstance(exc, (UserError, ImportError)) else f"{type(exc).__name__}: {exc}"
            self._hands_backend = "none"
            self.post("fault", "hands", f"hand backend '{backend}' not available ({detail}); "
                                        "the preview shows predicted wrists and views only")
        self._publish()
        self._wake.set()

    def _run(self) -> None:
        while not self._halt.is_set():
            self._wake.wait(0.05)
            self._wake.clear()
            self.step()

    def step(self) -> LiveState:
        """One pass of the live pipeline over the frames queued since the last pass: the Kinect
        frames into the body histories, the newest panorama frame to the preview, the fault checks
        and a new snapshot, which is returned. The worker thread runs it whenever a frame arrives,
        and the preview then runs on its own thread (``LiveConfig.display_every_frame``; else in
        this pass); a caller that fills the feeds' queues itself (without :meth:`start`) can drive
        the pipeline frame by frame: the preview runs in the pass, on that very frame, and the hand
        backend loads in the first pass, which waits for it."""
        self._load_hands(wait=not self._running)
        pano = None
        for feed in self.feeds:
            released = feed.poll()
            if not released:
                continue
            if feed.source.kind == "kinect":
                for r in released:
                    self._add_kinect_frame(feed.source, r.frame)
                self.panes.latest[feed.name] = released[-1]
            else:
                pano = (feed.name, released[-1])
                feed.count_skipped(len(released) - 1)
        if pano is not None:
            name, released = pano
            self._display = (released, session_time(self.rig, name, released.frame))
            if self._preview_worker is None:
                self._run_preview(name, released)
            else:
                self._preview_job = pano  # the preview thread takes the newest; older ones are skipped
                self._preview_wake.set()
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

    def _add_kinect_frame(self, source: Source, frame: KinectFrame) -> None:
        """A Kinect frame into the body history and, with its depth image, the recent depth frames."""
        t_session = session_time(self.rig, source.name, frame)
        self._histories[source.name].add(t_session, frame.bodies)
        if frame.depth is not None and self.config.process.depth_cue:
            calib = self.panes.calibration(source)
            if calib is not None:
                self._depth.setdefault(source.name, RecentDepthFrames(source.name, calib.depth)).add(t_session, frame.depth)

    def _run_preview(self, name: str, released: Released) -> None:
        t0 = time.perf_counter()
        frame = released.frame
        t_session = session_time(self.rig, name, frame)
        bare = PreviewResult(PanoPane(frame.index, t_session, released.released_wall, frame.image, [], []), [], [])
        if self._preview is None or (self._preview.pano_cam.width, self._preview.pano_cam.height) != \
                (frame.image.shape[1], frame.image.shape[0]):
            self._preview = self._make_preview(frame.image)
        if self._preview is not None and self._preview.estimator is not self._estimator:
            self._preview.estimator = self._estimator  # loaded since the last pass
        if self._preview is None or "pano" not in self.rig.T_world_sensor or \
                self._preview.reference_kinect not in self.rig.T_world_sensor:
            self._preview_result = bare
            return
        try:
            index = frame.index if self.replay_loop is None else self.replay_loop.recorded_index(frame.index)
            self._preview_result = self._preview.run(released, t_session, self._histories[self._preview.reference_kinect],
                                                     self._preview_on, index)
        except Exception as exc:  # one bad frame must not end the session; the message says what broke
            self._report_once("preview", "failed", "fault", f"preview failed on frame {frame.index} ({type(exc).__name__}: {exc})")
            self._preview_result = bare
        self.hand_hold.update(t_session, self._preview_result)
        self._pipeline_ms = 1000 * (time.perf_counter() - t0)
        if self.config.body and self._preview_result.anchors is not None:
            job = (self._preview_result.anchors, dict(self.hand_hold.lifted))
            if self._body_worker is None:
                self._fit_body(job)  # driven frame by frame: the body of this very frame
            else:
                self._body_job = job  # the body thread takes the newest; older ones are dropped
                self._body_wake.set()

    def _run_previews(self) -> None:
        """The preview thread: the hand preview on the newest panorama frame the pipeline polled
        (frames that arrive while it runs wait for the next pass, and only the newest of them is
        taken), then a snapshot with its overlays."""
        lower_thread_priority(self.config.worker_niceness)
        while not self._halt.is_set():
            self._preview_wake.wait(0.05)
            self._preview_wake.clear()
            job, self._preview_job = self._preview_job, None
            if job is not None:
                self._run_preview(*job)
                self._publish()

    def _run_body(self) -> None:
        """The body thread: fits the newest people the pipeline handed over (the fit of two people
        costs about as much as the hand preview: apart, neither waits for the other), at most
        ``body_max_hz`` times a second."""
        import torch

        # The fit's tensors are small: a pool of threads only contends with the pipeline for the
        # cores (with OpenMP, the setting holds for this thread alone).
        torch.set_num_threads(1)
        lower_thread_priority(self.config.worker_niceness)
        period = 1.0 / self.config.body_max_hz if self.config.body_max_hz > 0 else 0.0
        while not self._halt.is_set():
            self._body_wake.wait(0.05)
            self._body_wake.clear()
            job, self._body_job = self._body_job, None
            if job is not None:
                t0 = time.perf_counter()
                self._fit_body(job)
                self._publish()
                self._halt.wait(max(0.0, period - (time.perf_counter() - t0)))

    def _fit_body(self, job: tuple) -> None:
        """The live body (``fusion.live.body``) on one preview's people and hands; made at the first
        call (loading the SMPL-X model file, if any). A failure is a fault, reported once."""
        if self._body_failed:
            return
        t0 = time.perf_counter()
        try:
            if self.body is None:
                self.body = LiveBody(self.config.process, self.config.body_shape_s,
                                     warm_iterations=self.config.body_warm_iterations)
            self.body.update(*job)
        except Exception as exc:  # on a worker thread: what breaks must reach the message panel
            detail = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            self._body_failed = self.body is None  # a model file that cannot be read stops the body
            self._report_once("body", "failed", "fault", f"live body fit failed ({detail})")
            return
        self._body_ms = 1000 * (time.perf_counter() - t0)

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

    def _set_rig(self, rig: Rig) -> None:
        self.rig = rig
        if self._preview is not None:
            self._preview.rig = rig

    def _publish(self) -> None:
        """Make a snapshot the newest, unless a newer one (made on another thread meanwhile) already is."""
        state = self._snapshot()
        with self._lock:
            if state.seq > self._state.seq:
                self._state = state

    def _recording_state(self) -> RecordingState:
        recorder = self._recorder
        if recorder is None:
            return self._last_recording
        return RecordingState(True, str(recorder.out_dir), self.clock.now() - recorder.started_at,
                              recorder.bytes_written, recorder.free_bytes or 0, recorder.frame_counts(),
                              recorder.dropped)

    def _snapshot(self) -> LiveState:
        result = self._preview_result
        pano = None if result is None else result.pano
        display = self._display
        if display is not None and self._preview_worker is not None and \
                (pano is None or display[0].frame.index != pano.index or display[0].released_wall != pano.released_wall):
            # the newest frame, with the overlays of the newest frame the preview finished
            released, t_session = display
            pano = PanoPane(released.frame.index, t_session, released.released_wall, released.frame.image,
                            [] if pano is None else pano.wrists_px, [] if pano is None else pano.view_outlines,
                            None if pano is None else pano.index, None if pano is None else pano.released_wall)
        kinects = [self.panes.pane(f.source, self.rig) for f in self.feeds if f.source.kind == "kinect"]
        reference_frame = self.panes.latest.get(kinects[0].name) if kinects else None
        world = world_state(kinects, self.rig, result, self.hand_hold, reference_frame, self.body)
        devices = [f.health() for f in self.feeds]
        sync = {d.name: _sync_label(self.rig.time_maps.get(d.name), self.rig.is_truth) for d in devices}
        with self._lock:
            self._seq += 1
            return LiveState(
                seq=self._seq, published_wall=time.perf_counter(), running=self._running, preview=self._preview_on,
                kinects=kinects, pano=pano,
                hand_views=[] if result is None else list(result.hand_views), world=world,
                devices=devices, sync=sync, calibration=self.calibration.state, recording=self._recording_state(),
                messages=tuple(self._messages), hands_backend=self._hands_backend, pipeline_ms=self._pipeline_ms,
                body_ms=self._body_ms)


def lower_thread_priority(niceness: int) -> bool:
    """Raise the calling thread's nice value by ``niceness`` (Linux, where each thread has its own;
    elsewhere the call would lower the whole process, so nothing is done). Returns whether it was."""
    import os
    import sys

    if niceness <= 0 or not sys.platform.startswith("linux"):
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness))
    except OSError:
        return False
    return True


def _sync_label(time_map: TimeMap | None, is_truth: bool = False) -> str:
    """How a sensor's clock maps onto the session clock, for the device table."""
    if time_map is None:
        return "host arrival times"
    if is_truth:
        return "simulated truth"
    if time_map.residual_rms_ms is None:
        return "mapped"
    return f"rms {time_map.residual_rms_ms:.1f} ms"
