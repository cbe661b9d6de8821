"""Read Azure Kinect recordings (.mkv) with PyAV, without the Azure Kinect SDK.

What a recording holds (see also :mod:`omnimocap.capture.kinect_mkv_writer`):

- tracks titled ``COLOR`` (MJPG, or raw BGRA/NV12/YUY2), ``DEPTH`` and ``IR`` (16-bit samples
  stored big-endian, FourCC ``b16g``), ``IMU`` (subtitle track ``S_K4A/IMU``), each tagged
  ``K4A_<NAME>_MODE``;
- file tags ``K4A_DEVICE_SERIAL_NUMBER``, ``K4A_START_OFFSET_NS``, ``K4A_WIRED_SYNC_MODE``,
  ``K4A_DEPTH_DELAY_NS`` and the firmware versions;
- the factory calibration as the attachment ``calibration.json``.

Packet timestamps are microseconds from the recording start; the device timestamp is
``pts + K4A_START_OFFSET_NS / 1000`` (microseconds). This module hands out device times in seconds
(float64: exact to the microsecond up to about 4e9 s, so also for the epoch-like clocks of Orbbec
devices, see :mod:`omnimocap.capture.kinect_models`).

Recordings of Orbbec Femto devices (Orbbec's K4A wrapper) read the same way: their start offset of
minutes and epoch-like device times need nothing special. A device clock that jumps (back, or
forward by more than an hour; Femto Bolt firmware before 1.1.2 overflows) is reported in
:attr:`KinectRecording.clock_problem` once the captures have been read. Depth stays uint16 millimetres
and IR uint16 counts, as images; convert depth to metres where it becomes geometry.

IMU blocks hold packed little-endian samples of 40 bytes (:data:`IMU_SAMPLE`): accelerometer
timestamp (uint64, device nanoseconds, already including the start offset), acceleration x, y, z
(float32, m/s^2), gyroscope timestamp (uint64, device ns), angular rate x, y, z (float32, rad/s),
in the IMU's own axes (the calibration's inertial ``Rt`` relates them to the depth camera).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from omnimocap.capture.kinect_calibration import COLOR_RESOLUTIONS, DEPTH_MODES, KinectCalibration, parse_calibration
from omnimocap.capture.kinect_models import device_family, overflowing_firmware, timestamp_jumps
from omnimocap.errors import InputError

IMU_SAMPLE = struct.Struct("<Q3fQ3f")
CAMERA_TRACKS = ("COLOR", "DEPTH", "IR")
_FIX = "re-export or re-record the file; a recording cut short keeps only its complete frames"


@dataclass(frozen=True)
class KinectTrack:
    """One track of a recording: its K4A name, stream index, codec, FourCC, size (pixels, 0 for
    IMU), ``K4A_<NAME>_MODE`` tag and track UID."""

    name: str
    index: int
    codec: str
    fourcc: str
    width: int
    height: int
    mode: str
    uid: str

    def to_dict(self) -> dict:
        return {"name": self.name, "index": self.index, "codec": self.codec, "fourcc": self.fourcc,
                "width": self.width, "height": self.height, "mode": self.mode}


@dataclass
class KinectCapture:
    """Images of one capture. Timestamps: device clock, seconds (None where the image is absent).

    ``color``: BGR uint8 (H,W,3); ``depth``: uint16 (H,W) millimetres, 0 = no measurement;
    ``ir``: uint16 (H,W) counts.
    """

    index: int
    color: np.ndarray | None = None
    depth: np.ndarray | None = None
    ir: np.ndarray | None = None
    color_timestamp: float | None = None
    depth_timestamp: float | None = None
    ir_timestamp: float | None = None

    @property
    def timestamp(self) -> float:
        """Device time of the capture (seconds): the depth image's, else the first image's."""
        for t in (self.depth_timestamp, self.color_timestamp, self.ir_timestamp):
            if t is not None:
                return t
        raise ValueError("empty capture")


@dataclass
class ImuSamples:
    """IMU samples on the device clock: timestamps (N,) seconds, ``acc`` (N,3) m/s^2 and ``gyro``
    (N,3) rad/s in the IMU axes."""

    acc_timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    acc: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    gyro_timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gyro: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))

    def __len__(self) -> int:
        return len(self.acc_timestamps)


class KinectRecording:
    """An Azure Kinect recording: header read at construction, data read on demand (each pass
    opens the file anew, so the object holds no open file).

    ``start_offset_us``: device time (microseconds) of packet timestamp 0; ``depth_delay_ns``: the
    K4A_DEPTH_DELAY_NS tag. Raises :class:`InputError` when the file cannot be opened or lacks the
    header (tracks, tags), e.g. a file cut off before its first cluster. A file cut off later
    opens: iteration yields the complete captures and sets :attr:`truncated` (with the reason in
    :attr:`problems`). A full pass over :meth:`captures` sets :attr:`clock_problem` (one line) when
    the device timestamps jump.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.problems: list[str] = []
        self.truncated = False
        self.clock_problem: str | None = None
        if not self.path.is_file():
            raise InputError("recording not found", path=self.path, fix="check the path")
        try:
            container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as exc:
            raise InputError(f"cannot open as a Matroska recording, truncated or not a .mkv ({exc})", path=self.path, fix=_FIX) from None
        with container:
            self._read_header(container)
            self._frame_period_us = _frame_period_us(container, self.tracks)
        if not any(t in self.tracks for t in CAMERA_TRACKS) or "K4A_START_OFFSET_NS" not in self.tags:
            raise InputError("no Azure Kinect tracks or K4A tags (not a Kinect recording, or cut off in its header)",
                             path=self.path, fix=_FIX)
        try:
            self.start_offset_us = int(self.tags["K4A_START_OFFSET_NS"]) // 1000
            self.depth_delay_ns = int(self.tags.get("K4A_DEPTH_DELAY_NS", "0"))
        except ValueError as exc:
            raise InputError(f"K4A timing tag is not an integer ({exc})", path=self.path, fix=_FIX) from None
        self._check_segment_size()

    def _read_header(self, container: av.container.InputContainer) -> None:
        self.tags: dict[str, str] = dict(container.metadata)
        self.tracks: dict[str, KinectTrack] = {}
        self._attachment: bytes | None = None
        for stream in container.streams:
            meta = dict(stream.metadata)
            if stream.type == "attachment":
                if meta.get("filename") == "calibration.json":
                    self._attachment = bytes(stream.data)
                continue
            name = meta.get("title", "")
            if name in CAMERA_TRACKS or name == "IMU":
                ctx = stream.codec_context
                self.tracks[name] = KinectTrack(
                    name=name, index=stream.index, codec=(ctx.name if ctx else None) or "",
                    fourcc=(ctx.codec_tag if ctx and ctx.codec_tag else "") if stream.type == "video" else "",
                    width=ctx.width if stream.type == "video" else 0, height=ctx.height if stream.type == "video" else 0,
                    mode=meta.get(f"K4A_{name}_MODE", ""), uid=meta.get(f"K4A_{name}_TRACK", ""))

    # -- metadata ---------------------------------------------------------------------------------
    @property
    def device_serial(self) -> str:
        return self.tags.get("K4A_DEVICE_SERIAL_NUMBER", "")

    @property
    def device_family(self) -> str:
        """``"azure"`` (Microsoft's Azure Kinect) or ``"orbbec"`` (a Femto through Orbbec's K4A
        wrapper), from the serial number's form and the firmware tags."""
        return device_family(self.tags)

    @property
    def firmware_warning(self) -> str | None:
        """One line when the firmware tags are an Orbbec device's from before 1.1.2, else None."""
        version = overflowing_firmware(self.tags)
        if version is None:
            return None
        return (f"{self.path}: Orbbec firmware {version} (before 1.1.2) overflows its timestamps; "
                "update the Femto Bolt's firmware to 1.1.2 or later before recording")

    @property
    def wired_sync_mode(self) -> str:
        return self.tags.get("K4A_WIRED_SYNC_MODE", "STANDALONE")

    @property
    def color_mode(self) -> str | None:
        """``K4A_COLOR_MODE`` such as ``"MJPG_720P"``, None without a colour track."""
        return self.tracks["COLOR"].mode if "COLOR" in self.tracks else None

    @property
    def depth_mode(self) -> str | None:
        """``K4A_DEPTH_MODE`` such as ``"NFOV_UNBINNED"``, None without a depth track."""
        if "DEPTH" in self.tracks:
            return self.tracks["DEPTH"].mode
        return "PASSIVE_IR" if "IR" in self.tracks and self.tracks["IR"].mode == "PASSIVE" else None

    @property
    def calibration_json(self) -> bytes:
        if self._attachment is None:
            raise InputError("has no calibration.json attachment", path=self.path,
                             fix="record with the Azure Kinect recorder, which attaches the factory calibration")
        return self._attachment

    @property
    def calibration(self) -> KinectCalibration:
        """Camera models for this recording's modes (a sensor the recording lacks gets 720P colour
        or NFOV unbinned depth)."""
        color_resolution = (self.color_mode or "_720P").partition("_")[2]
        depth_mode = self.depth_mode or "NFOV_UNBINNED"
        if color_resolution not in COLOR_RESOLUTIONS or depth_mode not in DEPTH_MODES:
            raise InputError(f"unknown sensor mode (colour {self.color_mode!r}, depth {self.depth_mode!r})",
                             path=self.path, fix=_FIX)
        return parse_calibration(self.calibration_json, color_resolution=color_resolution, depth_mode=depth_mode,
                                 source=f"{self.path} (calibration.json attachment)")

    # -- data -------------------------------------------------------------------------------------
    def captures(self, *, decode_color: bool = True, jpeg_bytes: bool = False) -> Iterator[KinectCapture]:
        """Captures in file order. Images of one capture are those whose timestamps lie within half
        a frame period of the first, one per track. ``decode_color=False`` skips colour decoding
        (``color`` stays None, ``color_timestamp`` is set). ``jpeg_bytes``: an MJPG colour image is
        left as the JPEG bytes recorded (as the device delivers it; a truncated one is dropped as
        when decoding)."""
        half_period_us = self._frame_period_us // 2
        current: KinectCapture | None = None
        current_us = 0
        count = 0
        starts: list[int] = []
        for name, t_us, data in self._packets(CAMERA_TRACKS):
            image = self._decode(name, data, decode_color, jpeg_bytes)
            if image is None and not (name == "COLOR" and not decode_color):
                continue
            slot = name.lower()
            if current is None or getattr(current, f"{slot}_timestamp") is not None or abs(t_us - current_us) > half_period_us:
                if current is not None:
                    yield current
                current, current_us = KinectCapture(index=count), t_us
                starts.append(t_us)
                count += 1
            setattr(current, slot, image)
            setattr(current, f"{slot}_timestamp", t_us / 1e6)
        if current is not None:
            yield current
        self._check_clock(np.array(starts, dtype=np.float64) / 1e6)

    def _check_clock(self, t_s: np.ndarray) -> None:
        jumps = timestamp_jumps(t_s)
        if not jumps:
            self.clock_problem = None
            return
        index, step = jumps[0]
        version = overflowing_firmware(self.tags)
        cause = (f"Orbbec firmware {version} before 1.1.2 overflows its timestamps; update the Femto Bolt's firmware "
                 "and re-record" if version else "the device clock was reset or overflowed; re-record")
        more = f" (and {len(jumps) - 1} more)" if len(jumps) > 1 else ""
        self.clock_problem = (f"{self.path}: device timestamps jump by {step:+.6f} s at capture {index}{more}: "
                              f"{cause}; times after the jump are not comparable with those before")

    def imu(self) -> ImuSamples:
        """All IMU samples (empty without an IMU track)."""
        if "IMU" not in self.tracks:
            return ImuSamples()
        rows = []
        for _, _, data in self._packets(("IMU",)):
            usable = len(data) - len(data) % IMU_SAMPLE.size
            if usable != len(data):
                self._note_truncated(f"IMU block of {len(data)} bytes is not a whole number of {IMU_SAMPLE.size}-byte samples")
            rows.extend(IMU_SAMPLE.iter_unpack(data[:usable]))
        if not rows:
            return ImuSamples()
        a = np.array(rows, dtype=np.float64)
        return ImuSamples(acc_timestamps=a[:, 0] / 1e9, acc=a[:, 1:4], gyro_timestamps=a[:, 4] / 1e9, gyro=a[:, 5:8])

    def _packets(self, names: tuple[str, ...]) -> Iterator[tuple[str, int, bytes]]:
        """(track name, device time us, payload) of every packet of the named tracks, in file order.
        Each pass opens its own demuxer: seeking to 0 would follow the cues to the first video
        cluster and skip IMU blocks stored before it."""
        by_index = {t.index: t.name for t in self.tracks.values() if t.name in names}
        offset_us = self.start_offset_us
        with av.open(str(self.path)) as container:
            try:
                for packet in container.demux([container.streams[i] for i in by_index]):
                    if packet.pts is None or packet.size == 0:
                        continue
                    pts_us = int(packet.pts * Fraction(packet.time_base) * 1_000_000)
                    yield by_index[packet.stream.index], pts_us + offset_us, bytes(packet)
            except av.error.FFmpegError as exc:
                self._note_truncated(f"reading stopped early ({exc})")

    def _decode(self, name: str, data: bytes, decode_color: bool, jpeg_bytes: bool = False) -> np.ndarray | bytes | None:
        track = self.tracks[name]
        if name in ("DEPTH", "IR"):
            expected = track.width * track.height * 2
            if len(data) != expected:
                self._note_truncated(f"{name} frame of {len(data)} bytes, expected {expected}")
                return None
            return np.frombuffer(data, dtype=">u2").reshape(track.height, track.width).astype(np.uint16)
        if not decode_color:
            return None
        if jpeg_bytes and track.mode.partition("_")[0] == "MJPG":
            if data[-2:] != b"\xff\xd9":
                self._note_truncated(f"COLOR frame of {len(data)} bytes is not a complete JPEG")
                return None
            return bytes(data)
        return self._decode_color(data, track)

    def _decode_color(self, data: bytes, track: KinectTrack) -> np.ndarray | None:
        fmt = track.mode.partition("_")[0]
        w, h = track.width, track.height
        buf = np.frombuffer(data, dtype=np.uint8)
        if fmt == "MJPG":
            image = cv2.imdecode(buf, cv2.IMREAD_COLOR) if data[-2:] == b"\xff\xd9" else None
            if image is None:
                self._note_truncated(f"COLOR frame of {len(data)} bytes is not a complete JPEG")
            return image
        sizes = {"BGRA": w * h * 4, "NV12": w * h * 3 // 2, "YUY2": w * h * 2}
        if fmt not in sizes:
            raise InputError(f"colour format {track.mode!r} is not supported", path=self.path,
                             fix="record colour as MJPG, BGRA32, NV12 or YUY2")
        if len(buf) != sizes[fmt]:
            self._note_truncated(f"COLOR frame of {len(buf)} bytes, expected {sizes[fmt]}")
            return None
        if fmt == "BGRA":
            return np.ascontiguousarray(buf.reshape(h, w, 4)[..., :3])
        if fmt == "NV12":
            return cv2.cvtColor(buf.reshape(h * 3 // 2, w), cv2.COLOR_YUV2BGR_NV12)
        return cv2.cvtColor(buf.reshape(h, w, 2), cv2.COLOR_YUV2BGR_YUY2)

    def _note_truncated(self, problem: str) -> None:
        self.truncated = True
        if problem not in self.problems:
            self.problems.append(problem)

    def _check_segment_size(self) -> None:
        """Compare the Segment's declared size with the file size: smaller file = cut off; unknown
        size = a writer that never finished (its complete clusters are still readable)."""
        with open(self.path, "rb") as f:
            head = f.read(64)
        try:
            pos = _skip_element(head, 0)  # EBML header
            eid_len = _vint_length(head[pos])
            size, size_len = _read_vint(head, pos + eid_len)
        except IndexError:
            self._note_truncated("file ends inside the Matroska header")
            return
        data_start = pos + eid_len + size_len
        if size == (1 << (7 * size_len)) - 1:
            self._note_truncated("segment size unknown: the writer did not finish")
        elif data_start + size > self.path.stat().st_size:
            self._note_truncated(f"file has {self.path.stat().st_size} bytes, its segment declares {data_start + size}")



def _frame_period_us(container: av.container.InputContainer, tracks: dict[str, KinectTrack]) -> int:
    """Camera frame period from the tracks' default duration; 30 fps when none says."""
    for name in CAMERA_TRACKS:
        if name in tracks:
            rate = container.streams[tracks[name].index].guessed_rate
            if rate:
                return int(round(1_000_000 / float(rate)))
    return 33_333


def _vint_length(first: int) -> int:
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    return length


def _read_vint(buf: bytes, pos: int) -> tuple[int, int]:
    """EBML variable-length integer at ``pos`` (marker bit removed) and its length in bytes."""
    length = _vint_length(buf[pos])
    value = buf[pos] & ((0x80 >> (length - 1)) - 1)
    for b in buf[pos + 1:pos + length]:
        value = (value << 8) | b
    if pos + length > len(buf):
        raise IndexError("vint past the end")
    return value, length


def _skip_element(buf: bytes, pos: int) -> int:
    pos += _vint_length(buf[pos])
    size, size_len = _read_vint(buf, pos)
    return pos + size_len + size
