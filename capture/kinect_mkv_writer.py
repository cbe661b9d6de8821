"""Write Azure Kinect recordings (.mkv) for simulated and replayed sessions.

A small Matroska (EBML) writer that lays a file out the way the Azure Kinect recorder does, so the
SDK's playback, FFmpeg/PyAV and :mod:`omnimocap.capture.kinect_mkv` all read it:

- Segment: SeekHead, Info (TimestampScale 1000 ns, so every timestamp is in microseconds),
  Tracks, Attachments (``calibration.json``), Tags, then one Cluster per write and Cues at the end.
- Tracks ``COLOR`` (MJPG), ``DEPTH`` and ``IR`` (16-bit big-endian, FourCC ``b16g``), all as
  ``V_MS/VFW/FOURCC`` with a BITMAPINFOHEADER, and ``IMU`` (``S_K4A/IMU``, one 40-byte sample per
  block, layout in :data:`omnimocap.capture.kinect_mkv.IMU_SAMPLE`).
- Tags: per track ``K4A_<NAME>_TRACK`` (its UID) and ``K4A_<NAME>_MODE``; per file
  ``K4A_DEVICE_SERIAL_NUMBER``, ``K4A_START_OFFSET_NS``, ``K4A_DEPTH_DELAY_NS``,
  ``K4A_WIRED_SYNC_MODE``, firmware versions; ``K4A_CALIBRATION_FILE`` on the attachment.
- Block timestamps are device microseconds minus the start offset.

Streaming: each write appends complete clusters and flushes, the segment size starts as "unknown".
A killed writer leaves a file whose complete clusters any Matroska reader can read; :meth:`close`
adds the cues, the seek entry for them, the duration and the segment size.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from omnimocap.capture.kinect_calibration import COLOR_RESOLUTIONS, DEPTH_MODES
from omnimocap.capture.kinect_mkv import IMU_SAMPLE

# Matroska element IDs used here (with their length marker bits, as written).
_EBML, _SEGMENT, _SEEKHEAD, _SEEK, _SEEKID, _SEEKPOS = 0x1A45DFA3, 0x18538067, 0x114D9B74, 0x4DBB, 0x53AB, 0x53AC
_INFO, _TIMESTAMPSCALE, _DURATION, _MUXINGAPP, _WRITINGAPP, _TITLE = 0x1549A966, 0x2AD7B1, 0x4489, 0x4D80, 0x5741, 0x7BA9
_TRACKS, _TRACKENTRY, _TRACKNUMBER, _TRACKUID, _TRACKTYPE, _NAME, _CODECID, _CODECPRIVATE = (
    0x1654AE6B, 0xAE, 0xD7, 0x73C5, 0x83, 0x536E, 0x86, 0x63A2)
_DEFAULTDURATION, _VIDEO, _PIXELWIDTH, _PIXELHEIGHT, _FLAGLACING = 0x23E383, 0xE0, 0xB0, 0xBA, 0x9C
_ATTACHMENTS, _ATTACHEDFILE, _FILENAME, _FILEMIME, _FILEDATA, _FILEUID = 0x1941A469, 0x61A7, 0x466E, 0x4660, 0x465C, 0x46AE
_TAGS, _TAG, _TARGETS, _TARGETTYPE, _TAGTRACKUID, _TAGATTACHMENTUID = 0x1254C367, 0x7373, 0x63C0, 0x63CA, 0x63C5, 0x63C6
_SIMPLETAG, _TAGNAME, _TAGSTRING = 0x67C8, 0x45A3, 0x4487
_CLUSTER, _TIMESTAMP, _SIMPLEBLOCK, _BLOCKGROUP, _BLOCK, _BLOCKDURATION = 0x1F43B675, 0xE7, 0xA3, 0xA0, 0xA1, 0x9B
_CUES, _CUEPOINT, _CUETIME, _CUETRACKPOSITIONS, _CUETRACK, _CUECLUSTERPOSITION = 0x1C53BB6B, 0xBB, 0xB3, 0xB7, 0xF7, 0xF1
_VOID = 0xEC

_UNKNOWN_SIZE = b"\x01\xff\xff\xff\xff\xff\xff\xff"
_SEEKHEAD_RESERVED = 160  # bytes kept at the segment start for the seek head written at close
_TRACK_VIDEO, _TRACK_SUBTITLE = 1, 17
_INT16_MIN, _INT16_MAX = -(1 << 15), (1 << 15) - 1
_K4A_OFFSET_LIMIT_US = 1 << 32


def _vint_size(n: int, length: int | None = None) -> bytes:
    """EBML variable-length size. All-ones is reserved (unknown size), hence the ``- 1``."""
    if length is None:
        length = 1
        while n >= (1 << (7 * length)) - 1:
            length += 1
    return ((1 << (7 * length)) | n).to_bytes(length, "big")


def _id(eid: int) -> bytes:
    return eid.to_bytes((eid.bit_length() + 7) // 8, "big")


def _el(eid: int, payload: bytes) -> bytes:
    return _id(eid) + _vint_size(len(payload)) + payload


def _uint(eid: int, v: int) -> bytes:
    return _el(eid, v.to_bytes(max(1, (v.bit_length() + 7) // 8), "big"))


def _str(eid: int, s: str) -> bytes:
    return _el(eid, s.encode("utf-8"))


def _void(total: int) -> bytes:
    """A Void element of exactly ``total`` bytes (>= 2), its size field padded to fit."""
    for size_len in (1, 8):
        payload = total - 1 - size_len
        if 0 <= payload < (1 << (7 * size_len)) - 1:
            return _id(_VOID) + _vint_size(payload, size_len) + bytes(payload)
    raise ValueError(f"cannot make a Void of {total} bytes")


def _bitmapinfoheader(width: int, height: int, bit_count: int, fourcc: bytes, image_size: int) -> bytes:
    return struct.pack("<IiiHH4sIiiII", 40, width, height, 1, bit_count, fourcc, image_size, 0, 0, 0, 0)


def _uid(*parts: str) -> int:
    """Stable 63-bit UID from names, so a simulated session writes the same bytes every time."""
    return int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:8], "big") >> 1


@dataclass(frozen=True)
class _Track:
    number: int
    name: str
    uid: int
    mode_tag: str


class KinectMkvWriter:
    """Write one Azure Kinect recording.

    Args:
        path: output .mkv.
        calibration_json: the raw factory calibration (bytes), attached as ``calibration.json``.
        color_mode: ``K4A_COLOR_MODE`` value such as ``"MJPG_720P"`` (only MJPG is written), or None
            for no colour track.
        depth_mode: ``K4A_DEPTH_MODE`` value such as ``"NFOV_UNBINNED"``, or None for no depth track.
        ir: write an IR track (the depth mode's size; body tracking needs it).
        imu: write an IMU track.
        fps: camera frame rate (5, 15 or 30; an Orbbec Femto also 25).
        device_serial, start_offset_s, depth_delay_ns, wired_sync_mode, *_firmware: file tags (a
            firmware of None is not tagged).
            ``start_offset_s`` is the device time (seconds) of block timestamp 0; by default the
            first written timestamp (the Azure Kinect recorder's choice; modulo 2**32 us for an
            epoch-like clock, see :func:`_default_start_us`; Orbbec's K4A wrapper writes
            minutes there while its device times are epoch-like, see
            :mod:`omnimocap.capture.kinect_models`).

    Use as a context manager; :meth:`write_capture` and :meth:`write_imu` take device timestamps in
    seconds, in increasing order per track.
    """

    def __init__(self, path: str | Path, calibration_json: bytes, *, color_mode: str | None = "MJPG_720P",
                 depth_mode: str | None = "NFOV_UNBINNED", ir: bool = True, imu: bool = False, fps: int = 30,
                 device_serial: str = "000000000000", start_offset_s: float | None = None,
                 depth_delay_ns: int = 0, wired_sync_mode: str = "STANDALONE",
                 color_firmware: str | None = "1.6.110", depth_firmware: str | None = "1.6.79"):
        self.path = Path(path)
        self._calibration = bytes(calibration_json)
        self._fps = int(fps)
        self._file_tags = {
            "K4A_DEPTH_DELAY_NS": str(int(depth_delay_ns)),
            "K4A_WIRED_SYNC_MODE": wired_sync_mode,
            "K4A_COLOR_FIRMWARE_VERSION": color_firmware,
            "K4A_DEPTH_FIRMWARE_VERSION": depth_firmware,
            "K4A_DEVICE_SERIAL_NUMBER": device_serial,
        }
        # An unknown firmware is left out rather than written as some device's version.
        self._file_tags = {k: v for k, v in self._file_tags.items() if v is not None}
        self._start_us = None if start_offset_s is None else _to_us(start_offset_s)
        self._tracks: dict[str, _Track] = {}
        self._entries: list[bytes] = []
        self._color_size: tuple[int, int] | None = None
        self._depth_size: tuple[int, int] | None = None
        if color_mode is not None:
            fmt, _, res = color_mode.partition("_")
            if fmt != "MJPG" or res not in COLOR_RESOLUTIONS:
                raise ValueError(f"colour mode {color_mode!r}: only MJPG_<resolution> is written")
            self._color_size = COLOR_RESOLUTIONS[res].output_size
            self._add_video_track("COLOR", color_mode, self._color_size, 24, b"MJPG", 0, device_serial)
        if depth_mode is not None:
            if depth_mode not in DEPTH_MODES:
                raise ValueError(f"unknown depth mode {depth_mode!r}")
            self._depth_size = DEPTH_MODES[depth_mode].output_size
            w, h = self._depth_size
            if depth_mode != "PASSIVE_IR":
                self._add_video_track("DEPTH", depth_mode, self._depth_size, 16, b"b16g", w * h * 2, device_serial)
            if ir:
                self._add_video_track("IR", "PASSIVE" if depth_mode == "PASSIVE_IR" else "ACTIVE", self._depth_size, 16,
                                      b"b16g", w * h * 2, device_serial)
        if imu:
            track = self._new_track("IMU", "ON", device_serial)
            self._entries.append(_el(_TRACKENTRY, _uint(_TRACKNUMBER, track.number) + _uint(_TRACKUID, track.uid)
                                     + _uint(_TRACKTYPE, _TRACK_SUBTITLE) + _uint(_FLAGLACING, 0)
                                     + _str(_CODECID, "S_K4A/IMU") + _str(_NAME, "IMU")))
        if not self._tracks:
            raise ValueError("a recording needs at least one track")
        self._file: BinaryIO | None = open(self.path, "wb")
        self._segment_data_start = 0
        self._duration_offset = 0
        self._cues: list[tuple[int, int, int]] = []  # (time us, track number, cluster position)
        self._last_us = 0
        self._header_written = False

    # -- tracks and header -------------------------------------------------------------------------
    def _new_track(self, name: str, mode: str, serial: str) -> _Track:
        track = _Track(len(self._tracks) + 1, name, _uid(serial, name), mode)
        self._tracks[name] = track
        return track

    def _add_video_track(self, name: str, mode: str, size: tuple[int, int], bits: int, fourcc: bytes,
                         image_size: int, serial: str) -> None:
        track = self._new_track(name, mode, serial)
        w, h = size
        self._entries.append(_el(_TRACKENTRY, b"".join((
            _uint(_TRACKNUMBER, track.number), _uint(_TRACKUID, track.uid), _uint(_TRACKTYPE, _TRACK_VIDEO),
            _uint(_FLAGLACING, 0), _str(_CODECID, "V_MS/VFW/FOURCC"), _str(_NAME, name),
            _el(_CODECPRIVATE, _bitmapinfoheader(w, h, bits, fourcc, image_size)),
            _uint(_DEFAULTDURATION, 1_000_000_000 // self._fps),
            _el(_VIDEO, _uint(_PIXELWIDTH, w) + _uint(_PIXELHEIGHT, h)),
        ))))

    def _write_header(self, first_us: int) -> None:
        if self._start_us is None:
            self._start_us = _default_start_us(first_us)
        f = self._file
        f.write(_el(_EBML, b"".join((_uint(0x4286, 1), _uint(0x42F7, 1), _uint(0x42F2, 4), _uint(0x42F3, 8),
                                      _str(0x4282, "matroska"), _uint(0x4287, 2), _uint(0x4285, 2)))))
        f.write(_id(_SEGMENT) + _UNKNOWN_SIZE)
        self._segment_data_start = f.tell()
        info_head = _uint(_TIMESTAMPSCALE, 1000) + _str(_MUXINGAPP, "omnimocap") + _str(_WRITINGAPP, "omnimocap")
        duration_head = _id(_DURATION) + _vint_size(8)
        info_payload = info_head + duration_head + struct.pack(">d", 0.0) + _str(_TITLE, "Azure Kinect")
        info = _el(_INFO, info_payload)
        tracks = _el(_TRACKS, b"".join(self._entries))
        attachment_uid = _uid(self._file_tags["K4A_DEVICE_SERIAL_NUMBER"], "calibration.json")
        attachments = _el(_ATTACHMENTS, _el(_ATTACHEDFILE, _str(_FILENAME, "calibration.json")
                                            + _str(_FILEMIME, "application/octet-stream")
                                            + _el(_FILEDATA, self._calibration) + _uint(_FILEUID, attachment_uid)))
        tags = []
        for track in self._tracks.values():
            target = _el(_TARGETS, _str(_TARGETTYPE, "TRACK") + _uint(_TAGTRACKUID, track.uid))
            tags.append(_el(_TAG, target + _simple_tag(f"K4A_{track.name}_TRACK", str(track.uid))))
            tags.append(_el(_TAG, target + _simple_tag(f"K4A_{track.name}_MODE", track.mode_tag)))
        for name, value in {**self._file_tags, "K4A_START_OFFSET_NS": str(self._start_us * 1000)}.items():
            tags.append(_el(_TAG, _el(_TARGETS, b"") + _simple_tag(name, value)))
        tags.append(_el(_TAG, _el(_TARGETS, _str(_TARGETTYPE, "ATTACHMENT") + _uint(_TAGATTACHMENTUID, attachment_uid))
                        + _simple_tag("K4A_CALIBRATION_FILE", "calibration.json")))
        tags_el = _el(_TAGS, b"".join(tags))
        # Offsets relative to the segment data, as seek entries and cues count them.
        self._level1 = {}
        pos = _SEEKHEAD_RESERVED
        for eid, element in ((_INFO, info), (_TRACKS, tracks), (_ATTACHMENTS, attachments), (_TAGS, tags_el)):
            self._level1[eid] = pos
            pos += len(element)
        self._duration_offset = (self._segment_data_start + self._level1[_INFO] + len(_id(_INFO))
                                 + len(_vint_size(len(info_payload))) + len(info_head) + len(duration_head))
        f.write(self._seekhead())
        f.write(info + tracks + attachments + tags_el)
        f.flush()
        self._header_written = True

    def _seekhead(self) -> bytes:
        seeks = b"".join(_el(_SEEK, _el(_SEEKID, _id(eid)) + _uint(_SEEKPOS, pos)) for eid, pos in self._level1.items())
        head = _el(_SEEKHEAD, seeks)
        return head + _void(_SEEKHEAD_RESERVED - len(head))

    # -- data --------------------------------------------------------------------------------------
    def write_capture(self, timestamp_s: float, *, color: np.ndarray | bytes | None = None,
                      depth: np.ndarray | None = None, ir: np.ndarray | None = None,
                      color_timestamp_s: float | None = None, ir_timestamp_s: float | None = None) -> None:
        """Append one capture as one cluster.

        ``timestamp_s`` is the device time (seconds) of the depth image, also used for colour and IR
        unless given. ``color``: JPEG bytes, or a BGR uint8 image (HxWx3) encoded here. ``depth`` and
        ``ir``: uint16 (HxW) in the depth mode's size, depth in millimetres.
        """
        blocks = []
        if color is not None:
            if isinstance(color, np.ndarray):
                if color.shape[:2][::-1] != self._color_size:
                    raise ValueError(f"colour image {color.shape} does not match the colour mode {self._color_size}")
                ok, encoded = cv2.imencode(".jpg", color, [cv2.IMWRITE_JPEG_QUALITY, 90])
                color = encoded.tobytes()
            blocks.append(("COLOR", color_timestamp_s if color_timestamp_s is not None else timestamp_s, bytes(color)))
        for name, image, t in (("DEPTH", depth, timestamp_s), ("IR", ir, ir_timestamp_s if ir_timestamp_s is not None else timestamp_s)):
            if image is not None:
                image = np.asarray(image)
                if image.dtype != np.uint16 or image.shape[::-1] != self._depth_size:
                    raise ValueError(f"{name} image must be uint16 of size {self._depth_size[::-1]}, got {image.dtype} {image.shape}")
                blocks.append((name, t, image.astype(">u2").tobytes()))
        if blocks:
            self._write_cluster([(self._track(n), _to_us(t), data) for n, t, data in blocks], cue=True)

    def write_imu(self, acc_timestamps_s: np.ndarray, acc: np.ndarray, gyro_timestamps_s: np.ndarray, gyro: np.ndarray) -> None:
        """Append IMU samples: (N,) device times in seconds, accelerations (N,3) in m/s^2 and angular
        rates (N,3) in rad/s, in the IMU's own frame. Each sample is a block at its accelerometer time."""
        track = self._track("IMU")
        acc_us = [_to_us(t) for t in np.atleast_1d(acc_timestamps_s)]
        gyro_us = [_to_us(t) for t in np.atleast_1d(gyro_timestamps_s)]
        acc, gyro = np.asarray(acc, dtype=np.float32).reshape(-1, 3), np.asarray(gyro, dtype=np.float32).reshape(-1, 3)
        if self._start_us is None and acc_us:
            self._start_us = _default_start_us(acc_us[0])
        pending: list[tuple[_Track, int, bytes]] = []
        for a_us, a, g_us, g in zip(acc_us, acc, gyro_us, gyro):
            if pending and a_us - pending[0][1] > _INT16_MAX:
                self._write_cluster(pending, cue=False)
                pending = []
            pending.append((track, a_us, IMU_SAMPLE.pack(a_us * 1000, *a, g_us * 1000, *g)))
        if pending:
            self._write_cluster(pending, cue=False)

    def _track(self, name: str) -> _Track:
        if name not in self._tracks:
            raise ValueError(f"this recording has no {name} track (tracks: {list(self._tracks)})")
        return self._tracks[name]

    def _write_cluster(self, blocks: list[tuple[_Track, int, bytes]], *, cue: bool) -> None:
        """One cluster holding ``blocks`` (track, device time us, payload), then flush."""
        if self._file is None:
            raise ValueError(f"{self.path} is closed")
        if not self._header_written:
            self._write_header(min(t for _, t, _ in blocks))
        rel_us = [t - self._start_us for _, t, _ in blocks]
        if min(rel_us) < 0:
            raise ValueError(f"timestamp {min(rel_us)} us before the recording start offset")
        cluster_us = min(rel_us)
        body = [_uint(_TIMESTAMP, cluster_us)]
        for (track, _, data), rel in zip(blocks, rel_us):
            offset = rel - cluster_us
            if offset > _INT16_MAX:
                raise ValueError(f"blocks of one cluster span {offset} us, more than a Matroska block can offset")
            header = _vint_size(track.number) + struct.pack(">hB", offset, 0x80)
            if track.name == "IMU":
                body.append(_el(_BLOCKGROUP, _el(_BLOCK, header + data) + _uint(_BLOCKDURATION, 1)))
            else:
                body.append(_el(_SIMPLEBLOCK, header + data))
        position = self._file.tell() - self._segment_data_start
        self._file.write(_el(_CLUSTER, b"".join(body)))
        self._file.flush()
        if cue:
            self._cues.append((cluster_us, blocks[0][0].number, position))
        self._last_us = max(self._last_us, max(rel_us) + 1_000_000 // self._fps)

    def close(self) -> None:
        """Write cues, the seek head, the duration and the segment size; the file is then final."""
        if self._file is None:
            return
        f = self._file
        if not self._header_written:
            self._write_header(self._start_us or 0)
        if self._cues:
            self._level1[_CUES] = f.tell() - self._segment_data_start
            f.write(_el(_CUES, b"".join(
                _el(_CUEPOINT, _uint(_CUETIME, t) + _el(_CUETRACKPOSITIONS, _uint(_CUETRACK, n) + _uint(_CUECLUSTERPOSITION, p)))
                for t, n, p in self._cues)))
        end = f.tell()
        f.seek(self._segment_data_start - len(_UNKNOWN_SIZE))
        f.write(_vint_size(end - self._segment_data_start, 8))
        f.write(self._seekhead())
        f.seek(self._duration_offset)
        f.write(struct.pack(">d", float(self._last_us)))
        f.close()
        self._file = None

    def __enter__(self) -> "KinectMkvWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _simple_tag(name: str, value: str) -> bytes:
    return _el(_SIMPLETAG, _str(_TAGNAME, name) + _str(_TAGSTRING, value))


def _default_start_us(first_us: int) -> int:
    """The start offset (us) for a recording whose first timestamp is ``first_us``: that timestamp,
    as the Azure Kinect recorder writes, unless it is 2**32 us or more (an Orbbec device's
    epoch-like clock): Microsoft's playback (libk4arecord 1.4) then reports device times modulo
    2**32 us, so the offset becomes the first timestamp modulo 2**32 and block timestamps carry the
    rest; every reader still gets ``block + offset`` = the device time."""
    return first_us if first_us < _K4A_OFFSET_LIMIT_US else first_us % _K4A_OFFSET_LIMIT_US


def _to_us(t_s: float) -> int:
    """Device seconds to the integer microseconds Kinect files store."""
    return int(round(float(t_s) * 1e6))
