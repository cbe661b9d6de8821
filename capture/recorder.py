"""The crash-safe recorder: live sources in, a session folder out.

What lands on disk, and when (a killed recorder loses at most about a second of any stream):

- ``session.json`` is written atomically at the start (status ``recording``, one device entry per
  source), again as soon as a stream creates its files (so the manifest names every file a killed
  recorder leaves) and whenever a stream ends or is finalized; ``complete`` only after a clean stop.
- every stream is written as it arrives (:mod:`omnimocap.capture.record_streams`): the body
  journals, the Kinect recordings and the 360 video grow on disk, flushed at least every second.

Free disk space is checked before (refuse below ``min_free_gb``) and every second during the
recording (stop cleanly below ``stop_free_gb``). Should the disk fill up all the same (another
program writing), the recording stops there: a few MB held back from the start
(``.omnimocap-reserve``) are released so that the session can still be finalized, and a stream
that cannot finish its file keeps what was flushed, with a note. A source that ends or delivers nothing for
``disconnect_timeout_s`` has its stream finalized; its device entry becomes ``disconnected`` and the
session notes say when and why. Ctrl-C (KeyboardInterrupt) stops cleanly and marks the session
complete; SIGKILL leaves it ``recording``, readable as it is through
:func:`~omnimocap.capture.recovery.recover_session`.

:meth:`Recorder.run` reads the sources itself; :func:`record_session` wraps it for one recording
from start to end (the checks before the sources are opened, SIGTERM taken as Ctrl-C). A program
that already reads the sources (the live session window) feeds the same writers instead:
:meth:`Recorder.begin`, :meth:`Recorder.push` per frame from its capture threads, :meth:`Recorder.end`.
"""

from __future__ import annotations

import errno
import math
import os
import queue
import shutil
import signal
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from omnimocap.capture.record_streams import KinectStream, PanoStream
from omnimocap.capture.rig import Rig
from omnimocap.capture.session import DeviceEntry, Session
from omnimocap.capture.sources import EndOfStream, KinectFrame, PanoFrame, SessionClock, Source
from omnimocap.errors import InputError, UserError

GB = 1024 ** 3
# Disk space held back while recording, released to finalize the session when the disk fills up.
RESERVE_FILE = ".omnimocap-reserve"
RESERVE_BYTES = 8 * 1024 ** 2


# --- the recorder ----------------------------------------------------------------------------------
@dataclass
class RecordConfig:
    """How a recording runs and when it stops (the options of ``omnimocap record``)."""

    seconds: float | None = None
    """Recording length, seconds (default: until stopped; 10 for a simulated rig)."""
    min_free_gb: float = 2.0
    """Refuse to start with less free disk space, GB."""
    stop_free_gb: float | None = None
    """Stop cleanly when the free disk space falls below this during the recording, GB (default:
    half of min_free_gb)."""
    disconnect_timeout_s: float = 3.0
    """A source that delivers nothing for this long counts as disconnected, seconds."""
    sync_interval_s: float = 0.5
    """Period at which the body journals are synced to disk, seconds."""
    simulated: bool = False
    """The sources replay a simulation (marked in the manifest)."""
    overwrite: bool = False
    """Replace an existing non-empty output folder."""
    notes: str = ""
    """Text that opens the manifest's notes."""

    def check(self) -> None:
        """Raise :class:`UserError` on a length, size or period that is not one."""
        if self.seconds is not None and not 0 < self.seconds < math.inf:
            raise UserError(f"--seconds {self.seconds:g} is not a positive length", fix="give a length in seconds")
        for name in ("min_free_gb", "stop_free_gb"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < math.inf:
                raise UserError(f"--{name.replace('_', '-')} {value:g} is not a size", fix="give gigabytes, e.g. 2")
        for name in ("disconnect_timeout_s", "sync_interval_s"):
            if not 0 < getattr(self, name) < math.inf:
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name):g} is not a positive time",
                                fix="give seconds, e.g. 1")


@dataclass
class RecordResult:
    """How a recording ended: ``stop_reason`` duration | interrupted | disk | sources-ended | error,
    ``message`` one line for the user, per-device ``frames`` and the ``disconnected`` device names."""

    session_dir: Path
    stop_reason: str
    message: str
    seconds: float
    frames: dict[str, int] = field(default_factory=dict)
    disconnected: list[str] = field(default_factory=list)


def free_bytes(path: str | Path) -> int:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def check_free_space(out_dir: str | Path, min_free_gb: float, disk_free: Callable[[Path], int] = free_bytes) -> None:
    """Refuse (:class:`UserError`) to record into ``out_dir`` with less than ``min_free_gb`` free."""
    free_gb = disk_free(Path(out_dir)) / GB
    if free_gb < min_free_gb:
        raise UserError(f"only {free_gb:.2f} GB free, less than --min-free-gb {min_free_gb:g}", path=out_dir,
                        fix="free some space, record elsewhere, or lower --min-free-gb")


def check_out_dir(out_dir: str | Path, overwrite: bool) -> None:
    """Refuse (:class:`InputError`) to record into a folder that is not empty, unless ``overwrite``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("is a file, not a folder", path=out_dir, fix="choose a folder for the session")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise InputError("folder exists and is not empty", path=out_dir,
                         fix="choose a new folder, or pass --overwrite to replace it")


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the file system is full (or the user's quota used up)."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class _Worker(threading.Thread):
    """Reads one source and writes its stream until told to stop or the source ends."""

    def __init__(self, recorder: "Recorder", source: Source, entry: DeviceEntry, sink):
        super().__init__(name=f"record-{entry.name}", daemon=True)
        self.recorder, self.source, self.entry, self.sink = recorder, source, entry, sink
        self.halt = threading.Event()
        self.ended: str | None = None  # why the source ended on its own
        self.error: BaseException | None = None

    def run(self) -> None:
        clock, timeout = self.recorder.clock, self.recorder.config.disconnect_timeout_s
        last_frame = clock.now()
        try:
            while not self.halt.is_set():
                try:
                    frame = self.source.read(0.2)
                except EndOfStream as exc:
                    self.ended = str(exc)
                    break
                if frame is None:
                    if clock.now() - last_frame > timeout:
                        self.ended = f"no frame for {timeout:g} s"
                        break
                else:
                    last_frame = clock.now()
                    self.sink.write(frame)
                self.sink.tick()
        except BaseException as exc:  # a device or disk failure ends this stream; the recorder stops the rest
            self.error = exc
        if self.ended is not None:
            self.recorder._mark_disconnected(self.entry, self.ended)


class Recorder:
    """Records ``sources`` (Kinects and at most one 360 camera, connected or not) into ``out_dir``.

    ``clock`` is the session clock the sources stamp with; it restarts when the sources start, so
    session time 0 is the start of the recording. ``disk_free(path) -> bytes`` is injectable for tests.
    """

    def __init__(self, out_dir: str | Path, sources: list[Source], config: RecordConfig = RecordConfig(),
                 clock: SessionClock | None = None, disk_free: Callable[[Path], int] = free_bytes):
        if not sources:
            raise UserError("nothing to record", fix="name a Kinect (--kinect), a 360 source (--pano-*) or --simulate")
        if sum(s.kind == "pano" for s in sources) > 1:
            raise UserError("more than one 360 source", fix="a session holds one 360 stream")
        self.out_dir = Path(out_dir)
        self.sources = sources
        self.config = config
        self.clock = clock or SessionClock()
        self.disk_free = disk_free
        self.session: Session | None = None
        self._manifest_lock = threading.Lock()
        self._workers: list[_Worker] = []
        self.bytes_written = 0
        self.free_bytes: int | None = None
        self.started_at = 0.0
        self.fault = ""
        self.dropped = 0
        self._feed: queue.Queue | None = None
        self._feed_thread: threading.Thread | None = None
        self._reserve: Path | None = None

    @property
    def stop_free_gb(self) -> float:
        c = self.config
        return c.min_free_gb / 2 if c.stop_free_gb is None else c.stop_free_gb

    def frame_counts(self) -> dict[str, int]:
        """Frames written so far, per device name."""
        return {w.entry.name: w.sink.frames for w in self._workers}

    def run(self, stop: threading.Event | None = None) -> RecordResult:
        """Record until ``seconds`` pass, ``stop`` is set, Ctrl-C, low disk space or every source ended."""
        stop = stop or threading.Event()
        self._open(restart_clock=True)
        reason, message = "duration", ""
        try:
            for source in self.sources:  # in the given order: a Kinect rig lists subordinates first
                source.start()
            for worker in self._workers:
                worker.start()
            reason, message = self._wait(stop)
        except KeyboardInterrupt:
            reason, message = "interrupted", "stopped by the user"
        finally:
            stopped_at = self.clock.now()
            with _ignoring_sigint():
                self._finish(stop_sources=True)
        errors = [w for w in self._workers if w.error is not None]
        if errors and all(disk_full(w.error) for w in errors):
            reason = "disk"
            message = (f"stopped at {stopped_at:.1f} s: the disk holding {self.out_dir} is full; the session is "
                       "complete up to there")
        elif errors and reason != "disk":
            reason = "error"
            message = "; ".join(f"{w.entry.name}: {type(w.error).__name__}: {w.error}" for w in errors)
        return RecordResult(self.out_dir, reason, message, stopped_at, self.frame_counts(),
                            [w.entry.name for w in self._workers if w.entry.status == "disconnected"])

    # --- fed by a caller that reads the sources ----------------------------------------------------
    def begin(self, rig: Rig | None = None, queue_size: int = 900) -> None:
        """Start a recording that :meth:`push` feeds: the same checks, files and manifest as
        :meth:`run`, but the sources are neither started nor stopped here and the session clock is
        not restarted, so the recording keeps the caller's clock and ``rig`` (saved into the
        session) still maps its device times. A writer thread drains up to ``queue_size`` queued
        frames; frames pushed while it is full are lost and counted in ``dropped``. Free space is
        checked every second; below ``stop_free_gb`` writing stops and ``fault`` says why."""
        self._open(restart_clock=False)
        if rig is not None:
            rig.save(self.session.rig_path)
        self.started_at = self.clock.now()
        self._feed = queue.Queue(maxsize=max(1, queue_size))
        self._feed_thread = threading.Thread(target=self._drain, name="record-writer", daemon=True)
        self._feed_thread.start()

    def push(self, source: Source, frame: KinectFrame | PanoFrame) -> None:
        """Queue one frame of ``source`` for writing; never blocks (safe in a capture thread)."""
        try:
            self._feed.put_nowait((source, frame))
        except queue.Full:
            self.dropped += 1

    def source_ended(self, source: Source, reason: str) -> None:
        """Record that ``source`` ended mid-recording (its device entry becomes ``disconnected``)."""
        entry = next((w.entry for w in self._workers if w.source is source), None)
        if entry is not None:
            self._mark_disconnected(entry, reason)

    def end(self) -> RecordResult:
        """Write what is queued, finalize the files and mark the session complete."""
        self._feed.put(None)
        self._feed_thread.join()
        stopped_at = self.clock.now()
        for worker in self._workers:
            if worker.sink.frames == 0 and worker.entry.status == "recording":
                self._mark_disconnected(worker.entry, "no frame arrived while recording")
        self._finish(stop_sources=False)
        self._measure()
        reason, message = ("error", self.fault) if self.fault else ("interrupted", "stopped on request")
        return RecordResult(self.out_dir, reason, message, stopped_at - self.started_at, self.frame_counts(),
                            [w.entry.name for w in self._workers if w.entry.status == "disconnected"])

    def _drain(self) -> None:
        sinks = {id(w.source): w.sink for w in self._workers}
        next_check = 0.0
        while True:
            try:
                item = self._feed.get(timeout=0.2)
            except queue.Empty:
                item = ()
            if item is None:
                return
            if self.fault:
                continue  # keep draining so that push never blocks; nothing more is written
            try:
                if item:
                    source, frame = item
                    sinks[id(source)].write(frame)
                for worker in self._workers:
                    worker.sink.tick()
                now = self.clock.now()
                if now >= next_check:
                    next_check = now + 1.0
                    self._measure()
                    if self.free_bytes / GB < self.stop_free_gb:
                        self.fault = (f"stopped writing at {now:.1f} s: only {self.free_bytes / GB:.2f} GB free on "
                                      f"{self.out_dir} (below {self.stop_free_gb:g} GB)")
                        self._note(self.fault)
            except Exception as exc:  # a full or vanished disk: keep what was written, say why
                self.fault = f"recording failed ({type(exc).__name__}: {exc})"
                self._note(self.fault)

    def _measure(self) -> None:
        self.free_bytes = self.disk_free(self.out_dir)
        self.bytes_written = sum(p.stat().st_size for p in self.out_dir.rglob("*") if p.is_file())

    # --- shared by both ways of recording -----------------------------------------------------------
    def _open(self, restart_clock: bool) -> None:
        check_free_space(self.out_dir, self.config.min_free_gb, self.disk_free)
        check_out_dir(self.out_dir, self.config.overwrite)
        try:
            for source in self.sources:
                source.connect()
        except BaseException:
            for source in self.sources:
                source.stop()
            raise
        self.session = Session.create(self.out_dir, simulated=self.config.simulated, overwrite=self.config.overwrite)
        self._hold_reserve()
        if restart_clock:
            self.clock.restart()
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.session.manifest.notes = self.config.notes
        self._note(f"recording started {started}; session clock = host monotonic time (CLOCK_MONOTONIC) minus "
                   f"{self.clock.start_monotonic:.6f} s")
        for source in self.sources:
            info = source.info
            if source.kind == "pano":
                entry = DeviceEntry(kind="pano", serial=info.serial or "pano", role="camera", fps=info.fps,
                                    width=info.width, height=info.height)
                sink = PanoStream(self.session, entry, source, self.config.sync_interval_s, self._save)
            else:
                entry = DeviceEntry(kind="kinect", serial=info.serial, role=info.role, fps=info.fps)
                sink = KinectStream(self.session, entry, source, self.clock, self.config.sync_interval_s, self._save)
            self._workers.append(_Worker(self, source, entry, sink))
        # The manifest lists the master (the reference Kinect) first and the 360 camera last.
        rank = {"master": 0, "standalone": 1, "subordinate": 2, "camera": 3}
        self.session.manifest.devices = sorted((w.entry for w in self._workers), key=lambda e: rank.get(e.role, 1))
        self._save()

    def _wait(self, stop: threading.Event) -> tuple[str, str]:
        next_disk_check = 0.0
        while True:
            now = self.clock.now()
            if stop.is_set():
                return "interrupted", "stopped on request"
            if self.config.seconds is not None and now >= self.config.seconds:
                return "duration", f"recorded {self.config.seconds:g} s"
            if any(w.error is not None for w in self._workers):
                return "error", "a stream failed"
            if all(not w.is_alive() for w in self._workers):
                return "sources-ended", "every source ended"
            if now >= next_disk_check:
                next_disk_check = now + 1.0
                free_gb = self.disk_free(self.out_dir) / GB
                if free_gb < self.stop_free_gb:
                    message = (f"stopped at {now:.1f} s: only {free_gb:.2f} GB free on {self.out_dir} "
                               f"(below {self.stop_free_gb:g} GB); the session is complete up to there")
                    self._note(message)
                    return "disk", message
            stop.wait(0.05)

    def _finish(self, stop_sources: bool) -> None:
        """Stop the workers, finalize every stream and mark the session complete. A full disk does
        not stop this half-way: the space held back at the start is released first, and a stream
        that cannot be finalized keeps what was flushed, with a note."""
        for worker in self._workers:
            worker.halt.set()
        for worker in self._workers:
            if worker.is_alive():
                worker.join()
        self._release_reserve()
        for worker in self._workers:
            try:
                if stop_sources:
                    worker.source.stop()
            except Exception as exc:
                self._note(f"{worker.entry.name}: stopping the source failed ({type(exc).__name__}: {exc})")
            summary = worker.sink.close()
            with self._manifest_lock:
                entry = worker.entry
                entry.notes = "; ".join(n for n in (entry.notes, summary) if n)
                if entry.status == "recording":
                    entry.status = "complete"
        with self._manifest_lock:
            for worker in self._workers:
                if worker.error is not None:
                    self._note_locked(f"{worker.entry.name} failed: {type(worker.error).__name__}: {worker.error}")
            try:
                self.session.mark_complete()
            except OSError as exc:
                raise UserError(f"the session could not be finalized ({exc.strerror or exc}); its files hold what was "
                                "written and readers take it as an interrupted recording", path=self.out_dir,
                                fix="free some disk space") from None

    def _hold_reserve(self) -> None:
        """Hold back a little disk space for finalizing (the manifest, the body JSON, the cues)."""
        path = self.out_dir / RESERVE_FILE
        try:
            with open(path, "wb") as f:
                os.posix_fallocate(f.fileno(), 0, RESERVE_BYTES)
            self._reserve = path
        except OSError:
            path.unlink(missing_ok=True)

    def _release_reserve(self) -> None:
        if self._reserve is not None:
            self._reserve.unlink(missing_ok=True)
            self._reserve = None

    def _mark_disconnected(self, entry: DeviceEntry, reason: str) -> None:
        t = self.clock.now()
        with self._manifest_lock:
            entry.status = "disconnected"
            entry.notes = f"disconnected at {t:.2f} s: {reason}"
            self._note_locked(f"{entry.name} disconnected at {t:.2f} s ({reason}); its stream ends there")
            self.session.save()

    def _note(self, text: str) -> None:
        with self._manifest_lock:
            self._note_locked(text)

    def _note_locked(self, text: str) -> None:
        m = self.session.manifest
        m.notes = "\n".join(n for n in (m.notes, text) if n)

    def _save(self) -> None:
        with self._manifest_lock:
            self.session.save()


class _ignoring_sigint:
    """Ignore Ctrl-C while the files are finalized (main thread only), so a second press does not
    leave them half-closed."""

    def __enter__(self):
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# --- one recording, start to end -------------------------------------------------------------------
@dataclass
class RecordingRig:
    """The sources of one recording, stamping on ``clock``. ``close`` releases what opening them
    made (a simulation's files); ``fills_out_dir``: opening them already wrote into the output
    folder (a simulated rig's calibration and truth), so the recorder writes beside those files;
    ``notes`` open the manifest's notes."""

    clock: SessionClock
    sources: list[Source]
    close: Callable[[], None] = lambda: None
    fills_out_dir: bool = False
    notes: str = ""


def record_session(out_dir: str | Path, config: RecordConfig,
                   open_rig: Callable[[Path], RecordingRig]) -> RecordResult:
    """Record the sources ``open_rig(out_dir)`` opens into ``out_dir`` until ``config.seconds``
    pass, Ctrl-C or SIGTERM, low disk space or every source ended. ``config`` and the folder are
    checked first, before minutes of device set-up or simulation; the rig is closed whatever happens."""
    out_dir = Path(out_dir)
    config.check()
    check_free_space(out_dir, config.min_free_gb)
    check_out_dir(out_dir, config.overwrite)
    rig = open_rig(out_dir)
    if rig.fills_out_dir or rig.notes:
        config = replace(config, overwrite=config.overwrite or rig.fills_out_dir,
                         notes="\n".join(n for n in (rig.notes, config.notes) if n))
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return Recorder(out_dir, rig.sources, config, rig.clock).run()
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        rig.close()


def _raise_interrupt(signum, frame) -> None:
    """SIGTERM stops a recording as Ctrl-C does: cleanly, the session complete."""
    raise KeyboardInterrupt
