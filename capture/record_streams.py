"""What each stream of a recording writes, frame by frame, so that a killed recorder loses at most
about a second of it.

- Kinect body tracking goes to a journal ``bodies_<serial>.jsonl`` (:class:`BodyJournal`): a
  header line (with the session clock's origin, ``session_clock_start_monotonic``, seconds of
  CLOCK_MONOTONIC), then one line per capture (the k4abt frame layout of
  :mod:`omnimocap.capture.bodies` plus ``host_time``, the arrival on the session clock in seconds;
  ``bodies`` null where tracking did not run). Each line is flushed; the file is fsync'd at least
  every ``sync_interval_s``. On stop the journal becomes ``bodies_<serial>.json``; the journal stays
  as the record of the host arrival times. For a session whose recorder was killed,
  :func:`~omnimocap.capture.recovery.recover_session` reads the journal in its place (in memory:
  readers never write into a session).
- Kinect images go to ``kinect_<serial>.mkv`` (:class:`KinectMkvWriter`: a flushed cluster per
  capture) when the source delivers colour or depth and knows its factory calibration.
- The 360 stream goes through :class:`PanoWriter` (``pano_frames.csv`` flushed per frame). Its
  Matroska muxer is set to close a cluster every 0.5 s of stream time and to flush each packet,
  and x264 to zero latency, so the video on disk trails the CSV by well under a second (by
  default FFmpeg would hold everything in memory until the file is closed).

A stream's writer (``KinectStream`` / ``PanoStream``) calls ``announce()`` whenever it creates a
file, so that the manifest on disk names every file a killed recorder leaves; ``close()``
finalizes the files and returns one line for the manifest's notes.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from omnimocap.capture.bodies import JOURNAL_FORMAT, SDK_VERSION, write_journal_bodies
from omnimocap.capture.dual_fisheye import LENSES_FILE, DualFisheyeSource, save_dual_fisheye
from omnimocap.capture.kinect_mkv_writer import KinectMkvWriter
from omnimocap.capture.pano import PanoWriter
from omnimocap.capture.session import (
    PANO_FRAMES, PANO_VIDEO, DeviceEntry, Session, bodies_name, journal_name, kinect_recording_name,
)
from omnimocap.capture.sources import KinectFrame, PanoFrame, SessionClock, Source


# --- the body journal ------------------------------------------------------------------------------
def _rows(values: np.ndarray, digits: int) -> list:
    """(32,k) floats -> JSON rows, a joint with any non-finite value as null."""
    return [[round(float(v), digits) for v in row] if np.isfinite(row).all() else None for row in values]


class BodyJournal:
    """Append-only journal of one Kinect's captures (see the module docstring for the layout)."""

    def __init__(self, path: str | Path, serial: str, source_file: str, clock_start_monotonic: float,
                 sync_interval_s: float = 0.5):
        self.path = Path(path)
        self.sync_interval_s = sync_interval_s
        self._file = open(self.path, "w", encoding="utf-8")
        self._lock = threading.Lock()
        self.frames = 0
        self.last_host_time: float | None = None
        self._write({"format": JOURNAL_FORMAT, "version": 1, "serial": serial, "source_file": source_file,
                     "k4abt_sdk_version": SDK_VERSION, "session_clock_start_monotonic": clock_start_monotonic})
        self._last_sync = time.monotonic()
        self.sync()

    def _write(self, obj: dict) -> None:
        self._file.write(json.dumps(obj, allow_nan=False, separators=(",", ":")) + "\n")
        self._file.flush()

    def append(self, frame: KinectFrame) -> None:
        """One capture: device time (us), frame id, host arrival (s), the bodies (mm, as k4abt)."""
        bodies = None
        if frame.bodies is not None:
            bodies = [{"body_id": int(i), "joint_positions": _rows(b.positions * 1000.0, 2),
                       "joint_orientations": _rows(b.orientations, 6),
                       "joint_confidences": [int(c) for c in b.confidences]} for i, b in sorted(frame.bodies.items())]
        with self._lock:
            self._write({"timestamp_usec": int(round(frame.device_timestamp * 1e6)), "frame_id": int(frame.frame_id),
                         "host_time": round(float(frame.host_time), 6),
                         "num_bodies": None if bodies is None else len(bodies), "bodies": bodies})
            self.frames += 1
            self.last_host_time = frame.host_time

    def sync_if_due(self) -> None:
        if time.monotonic() - self._last_sync >= self.sync_interval_s:
            self.sync()

    def sync(self) -> None:
        with self._lock:
            if not self._file.closed:
                os.fsync(self._file.fileno())
                self._last_sync = time.monotonic()

    def close(self) -> None:
        self.sync()
        with self._lock:
            self._file.close()


def journal_to_bodies(journal_path: str | Path, bodies_path: str | Path) -> int:
    """Convert a journal into the k4abt JSON ``bodies_path`` (atomically, streamed in constant
    memory); see :func:`~omnimocap.capture.bodies.read_journal_bodies` for what is left out. Returns
    the frames written."""
    return write_journal_bodies(journal_path, bodies_path).frames


# --- per-stream writers ----------------------------------------------------------------------------
class KinectStream:
    """One Kinect's stream: the body journal from the first capture, the recording from the first
    capture with images (see the module docstring for ``announce`` and ``close``)."""

    def __init__(self, session: Session, entry: DeviceEntry, source: Source, clock: SessionClock, sync_interval_s: float,
                 announce: Callable[[], None]):
        self.session, self.entry, self.info, self.announce = session, entry, source.info, announce
        self.journal = BodyJournal(session.path(journal_name(entry.serial)), entry.serial,
                                   kinect_recording_name(entry.serial), clock.start_monotonic, sync_interval_s)
        self.mkv: KinectMkvWriter | None = None
        self.images_skipped = False
        self.tracked = 0

    @property
    def frames(self) -> int:
        return self.journal.frames

    @property
    def last_host_time(self) -> float | None:
        return self.journal.last_host_time

    def write(self, frame: KinectFrame) -> None:
        self.journal.append(frame)
        self.tracked += frame.bodies is not None
        if frame.color is None and frame.depth is None:
            return
        if self.mkv is None and not self.images_skipped:
            if self.info.calibration_json is None:
                self.images_skipped = True  # without the factory calibration the file would be useless
                return
            self.mkv = KinectMkvWriter(
                self.session.path(kinect_recording_name(self.entry.serial)), self.info.calibration_json,
                color_mode=self.info.color_mode, depth_mode=self.info.depth_mode, ir=self.info.depth_mode is not None,
                fps=int(round(self.info.fps)), device_serial=self.entry.serial, depth_delay_ns=self.info.depth_delay_ns,
                wired_sync_mode=self.entry.role.upper(), color_firmware=self.info.color_firmware,
                depth_firmware=self.info.depth_firmware)
            self.entry.recording = kinect_recording_name(self.entry.serial)
            self.announce()
        if self.mkv is not None:
            self.mkv.write_capture(frame.device_timestamp, color=frame.color, depth=frame.depth, ir=frame.ir,
                                   color_timestamp_s=frame.color_timestamp)

    def tick(self) -> None:
        self.journal.sync_if_due()

    def close(self) -> str:
        """Finalize the files; a failure (a full disk) is noted, and what was flushed stays readable."""
        notes = [f"{self.frames} captures"]
        for what, close in (("the body journal", self.journal.close),
                            (kinect_recording_name(self.entry.serial), self.mkv.close if self.mkv is not None else None)):
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    notes.append(f"closing {what} failed ({type(exc).__name__}: {exc})")
        if self.tracked:
            try:
                n = journal_to_bodies(self.journal.path, self.session.path(bodies_name(self.entry.serial)))
                self.entry.bodies = bodies_name(self.entry.serial)
                notes.append(f"{n} with body tracking")
            except OSError as exc:
                self.entry.bodies = self.journal.path.name  # read_bodies reads the journal as well
                notes.append(f"{self.tracked} with body tracking, kept in {self.journal.path.name} "
                             f"({bodies_name(self.entry.serial)} not written: {exc.strerror or exc})")
        if self.images_skipped:
            notes.append("images not saved (the source has no factory calibration)")
        return ", ".join(notes)


class PanoStream:
    """The 360 stream: the video and ``pano_frames.csv`` from the first frame; frames of another size
    or out of time order are skipped and counted."""

    def __init__(self, session: Session, entry: DeviceEntry, source: Source, sync_interval_s: float,
                 announce: Callable[[], None]):
        self.session, self.entry, self.fps, self.announce = session, entry, source.info.fps, announce
        self.camera = source.camera if isinstance(source, DualFisheyeSource) else None
        self.writer: PanoWriter | None = None
        self.frames = 0
        self.skipped = 0
        self.last_host_time: float | None = None
        self._last_t: float | None = None

    def write(self, frame: PanoFrame) -> None:
        h, w = frame.image.shape[:2]
        if self.writer is None:
            self.writer = PanoWriter(self.session.path(PANO_VIDEO), self.session.path(PANO_FRAMES), w, h, fps=self.fps,
                                    live=True)
            self.entry.recording, self.entry.timestamps = PANO_VIDEO, PANO_FRAMES
            self.entry.width, self.entry.height = w, h
            if self.camera is not None:  # raw dual-fisheye frames: the lens model goes beside them
                save_dual_fisheye(self.camera, self.session.path(LENSES_FILE))
                self.entry.lenses = LENSES_FILE
            self.announce()
        # A frame of another size (the camera switched modes) or out of time order cannot join the stream.
        if (h, w) != (self.writer.height, self.writer.width) or (self._last_t is not None and frame.t_pano <= self._last_t):
            self.skipped += 1
            return
        self.writer.write(frame.image, frame.t_pano, frame.host_time)
        self._last_t = frame.t_pano
        self.frames += 1
        self.last_host_time = frame.host_time

    def tick(self) -> None:
        """The CSV is flushed per frame and the muxer per cluster; nothing waits here."""

    def close(self) -> str:
        """Finalize the video; a failure (a full disk) is noted, and the flushed clusters stay readable."""
        notes = f"{self.frames} frames"
        if self.skipped:
            notes += f", {self.skipped} skipped (size change or time going back)"
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception as exc:
                notes += f", closing {PANO_VIDEO} failed ({type(exc).__name__}: {exc})"
        return notes
