"""The 360 stream of a session: an equirectangular video plus per-frame timestamps.

``pano.mkv`` holds the frames (H.264 or any codec FFmpeg decodes); ``pano_frames.csv`` holds one
row per frame: ``index, t_pano, t_host`` where ``t_pano`` is the camera's own timestamp (seconds,
camera clock; also the container pts) and ``t_host`` the host arrival time on the session clock
(seconds; empty when unknown). The camera clock is mapped onto the session clock by the rig's
time map for ``pano``; host arrival times only seed that estimate (they carry latency and jitter).

The writer appends rows and flushes them as frames are written, so a killed recorder leaves a
readable prefix.
"""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from omnimocap.errors import InputError

TIME_BASE = Fraction(1, 1_000_000)


@dataclass
class PanoTimestamps:
    t_pano: np.ndarray  # (N,) seconds, camera clock
    t_host: np.ndarray  # (N,) seconds, session clock, NaN when unknown


def read_pano_timestamps(path: str | Path) -> PanoTimestamps:
    path = Path(path)
    if not path.is_file():
        raise InputError("pano timestamps not found", path=path)
    t_pano, t_host = [], []
    fix = "the file is damaged or was edited; restore the one the recorder wrote"
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != ["index", "t_pano", "t_host"]:
            raise InputError("pano timestamps have no 'index,t_pano,t_host' header", path=path)
        rows = list(reader)
        for i, row in enumerate(rows):
            try:
                if len(row) != 3:
                    raise ValueError
                tp = float(row[1])
                th = float(row[2]) if row[2] else np.nan
            except ValueError:
                if i == len(rows) - 1:
                    break  # the last row cut off by a crash: keep what is complete
                raise InputError(f"line {i + 2} is malformed ({','.join(row)!r})", path=path, fix=fix) from None
            # Only an empty t_host means "unknown"; a NaN or infinite time is a hole in the stream.
            if not np.isfinite(tp) or (row[2] and not np.isfinite(th)):
                raise InputError(f"frame {len(t_pano)} has no valid time ({row[1]!r}, {row[2]!r})", path=path, fix=fix)
            if t_pano and tp <= t_pano[-1]:
                raise InputError(f"frame {len(t_pano)}: t_pano {tp:g} does not increase (previous {t_pano[-1]:g}); "
                                 "the camera clock only moves forward", path=path, fix=fix)
            t_pano.append(tp)
            t_host.append(th)
    if not t_pano:
        raise InputError("the 360 stream has no frames", path=path,
                         fix="record again; the camera delivered nothing")
    return PanoTimestamps(np.asarray(t_pano), np.asarray(t_host))


# While recording live, the file must stay readable as it grows: Matroska clusters closed every
# 0.5 s and written out at once, and an encoder that holds no frames back.
LIVE_MUXER_OPTIONS = {"cluster_time_limit": "500", "flush_packets": "1"}
LIVE_ENCODER_OPTIONS = {"tune": "zerolatency"}


class PanoWriter:
    """Writes equirect frames (BGR uint8) to an MKV with pts on the camera clock, plus the CSV.
    ``live=True`` keeps the file on disk within about half a second of the last frame written.
    The H.264 quality is constant (``crf``) unless ``bitrate`` (bits per second) caps the stream
    as a camera's encoder does (average ``bitrate``, at most ``bitrate`` over any second)."""

    def __init__(self, video_path: str | Path, timestamps_path: str | Path, width: int, height: int,
                 fps: float = 30.0, crf: int = 20, live: bool = False, bitrate: int | None = None):
        import av

        self.width, self.height = width, height
        self._container = av.open(str(video_path), mode="w", format="matroska",
                                  options=dict(LIVE_MUXER_OPTIONS) if live else {})
        self._stream = self._container.add_stream("libx264", rate=int(round(fps)))
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = TIME_BASE
        # No B-frames: packets leave in capture order, so a cut-off file keeps every frame it lists.
        rate = {"crf": str(crf)} if bitrate is None else {"maxrate": str(int(bitrate)), "bufsize": str(int(bitrate))}
        if bitrate is not None:
            self._stream.bit_rate = int(bitrate)
        self._stream.options = {**rate, "preset": "ultrafast", "bf": "0", "g": str(int(fps)),
                                **(LIVE_ENCODER_OPTIONS if live else {})}
        self._csv_file = open(timestamps_path, "w", newline="")
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(["index", "t_pano", "t_host"])
        self._count = 0
        self._last_pts = -1

    def write(self, frame_bgr: np.ndarray, t_pano: float, t_host: float | None = None) -> None:
        import av

        if frame_bgr.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame is {frame_bgr.shape[:2]}, stream is {(self.height, self.width)}")
        pts = int(round(t_pano * 1e6))
        if pts <= self._last_pts:
            raise ValueError(f"pano timestamps must increase (got {t_pano} after {self._last_pts / 1e6})")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_bgr), format="bgr24")
        frame.pts = pts
        frame.time_base = TIME_BASE
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self._csv.writerow([self._count, f"{t_pano:.6f}", "" if t_host is None else f"{t_host:.6f}"])
        self._csv_file.flush()
        self._count += 1
        self._last_pts = pts

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._csv_file.close()


class PanoReader:
    """Reads a session's 360 stream in order. Frames are BGR uint8 (H, W, 3).

    Frame ``i`` of the stream is row ``i`` of ``pano_frames.csv``. Reading from a later frame seeks
    to the key frame at or before it and decodes forward from there, so a chunk late in a session
    does not decode the frames before it; ``decoded`` counts the frames the last :meth:`frames`
    call decoded (those it yielded and those it skipped)."""

    def __init__(self, video_path: str | Path, timestamps_path: str | Path):
        import av

        self.video_path = Path(video_path)
        self.timestamps = read_pano_timestamps(timestamps_path)
        self.decoded = 0
        if not self.video_path.is_file():
            raise InputError("360 video not found", path=self.video_path)
        try:
            with av.open(str(self.video_path)) as c:
                if not c.streams.video:
                    raise InputError("file has no video stream", path=self.video_path)
                s = c.streams.video[0]
                self.width, self.height = s.codec_context.width, s.codec_context.height
        except av.error.FFmpegError as exc:
            raise InputError(f"cannot open the 360 video ({exc})", path=self.video_path) from None

    def __len__(self) -> int:
        return len(self.timestamps.t_pano)

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (index, frame) for frames start..stop-1; stops early (without error) at a
        truncated end. Frames are matched to timestamp rows by order: from the file's first frame,
        or, for ``start`` > 0, from the key frame the reader seeks to, whose row its timestamp
        names (see :meth:`_seek_row`); where that cannot be told for sure, from the first frame."""
        import av

        stop = len(self) if stop is None else min(stop, len(self))
        self.decoded = 0
        if start >= stop:
            return
        try:
            with av.open(str(self.video_path)) as c:
                stream = c.streams.video[0]
                row, decoded = self._seek_row(c, stream, start) if start > 0 else (0, c.decode(stream))
                for i, frame in enumerate(decoded, start=row):
                    self.decoded += 1
                    if i >= start:
                        yield i, frame.to_ndarray(format="bgr24")
                    if i + 1 >= stop:
                        break
        except av.error.FFmpegError:
            return  # a cut-off tail: what decoded is all there is

    def _seek_row(self, container, stream, start: int):
        """Seek to the key frame at or before row ``start``; returns (its row, the decoded frames
        from it on). Its row is the one whose ``t_pano`` gives its presentation time: the writer's
        encoder rounds each ``t_pano`` to its frame rate's tick (1/rate s) and the container to its
        time base (the seek aims at row ``start``'s time so rounded), so the frame's tick must equal
        exactly one row's, and the two times differ by at most half a tick plus a time base. Anything else (a file written another way, rows that
        share a tick): back to the first frame, rows by order."""
        t_pano = self.timestamps.t_pano
        rate = stream.average_rate or stream.guessed_rate
        if rate and stream.time_base:
            rate, tb = float(rate), float(stream.time_base)
            ticks = np.round(t_pano * rate)
            if np.all(np.diff(ticks) > 0):
                container.seek(int(round(ticks[start] / rate / tb)), stream=stream,
                               backward=True, any_frame=False)
                decoded = container.decode(stream)
                frame = next(decoded, None)
                if frame is not None and frame.pts is not None:
                    t = float(frame.pts * stream.time_base)
                    row = int(np.searchsorted(ticks, round(t * rate)))
                    if row <= start and ticks[row] == round(t * rate) and abs(t - t_pano[row]) <= 0.5 / rate + tb:
                        return row, itertools.chain([frame], decoded)
                container.seek(0, stream=stream, backward=True, any_frame=False)
                self.decoded += frame is not None
        return 0, container.decode(stream)
