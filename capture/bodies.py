"""Body tracking results in the k4abt ``offline_processor`` JSON format.

File layout (millimetres and microseconds, the SDK's units)::

    {"k4abt_sdk_version": "1.1.2", "source_file": "kinect_X.mkv",
     "joint_names": [32 names], "bone_list": [[parent, child] x 31],
     "frames": [{"timestamp_usec": 800222, "frame_id": 0, "num_bodies": 1,
                 "bodies": [{"body_id": 1,
                             "joint_positions": [[x, y, z] x 32],        # mm, depth camera frame
                             "joint_orientations": [[w, x, y, z] x 32],
                             "joint_confidences": [c x 32]}]}]}          # extension, k4abt levels

``joint_confidences`` is this project's extension; files without it get
:data:`KINECT_CONFIDENCE_MEDIUM` for every tracked joint (``has_confidences`` is False then).
Inside the program: metres, seconds on the device clock, positions in the depth camera frame
(OpenCV: x right, y down, z forward), orientations as unit quaternions (w, x, y, z), the one place
where quaternions live. A joint that is missing holds NaN position and orientation and confidence
:data:`KINECT_CONFIDENCE_NONE`; the writer stores missing joints as ``null``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from omnimocap.capture.session import atomic_write_chunks
from omnimocap.data.skeletons import (
    KINECT_BONES,
    KINECT_CONFIDENCE_MEDIUM,
    KINECT_CONFIDENCE_NONE,
    KINECT_JOINTS,
)
from omnimocap.errors import InputError

NUM_JOINTS = len(KINECT_JOINTS)
SDK_VERSION = "1.1.2"
# The recorder's append-only journal (see capture/record_streams.py): a header line, then one k4abt frame
# per line with ``host_time`` added and ``bodies`` null where tracking did not run.
JOURNAL_FORMAT = "omnimocap-bodies-journal"
JOURNAL_SUFFIX = ".jsonl"
_FIX = "re-run body tracking on the recording to regenerate the file"


@dataclass
class BodyTrack:
    """One tracked body over all F frames of a recording.

    ``positions`` (F,32,3) metres in the depth camera frame, NaN where the body or joint is missing;
    ``orientations`` (F,32,4) unit quaternions (w, x, y, z), NaN where missing; ``confidences``
    (F,32) int k4abt levels, :data:`KINECT_CONFIDENCE_NONE` where missing.
    """

    positions: np.ndarray
    orientations: np.ndarray
    confidences: np.ndarray

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float64)
        self.orientations = np.asarray(self.orientations, dtype=np.float64)
        self.confidences = np.asarray(self.confidences, dtype=np.int64)
        F = len(self.positions)
        for name, arr, shape in (("positions", self.positions, (F, NUM_JOINTS, 3)),
                                 ("orientations", self.orientations, (F, NUM_JOINTS, 4)),
                                 ("confidences", self.confidences, (F, NUM_JOINTS))):
            if arr.shape != shape:
                raise ValueError(f"BodyTrack.{name} has shape {arr.shape}, expected {shape}")

    @classmethod
    def empty(cls, num_frames: int) -> "BodyTrack":
        """A body missing in all ``num_frames`` frames."""
        return cls(np.full((num_frames, NUM_JOINTS, 3), np.nan), np.full((num_frames, NUM_JOINTS, 4), np.nan),
                   np.full((num_frames, NUM_JOINTS), KINECT_CONFIDENCE_NONE))

    @property
    def present(self) -> np.ndarray:
        """(F,) bool: frames where the body has at least one joint."""
        return np.isfinite(self.positions).all(axis=-1).any(axis=-1)


@dataclass
class BodyStats:
    """What reading a body file found and repaired (counts)."""

    frames: int = 0
    nan_joints: int = 0
    frames_without_bodies: int = 0
    frames_with_reordered_ids: int = 0
    frames_dropped_out_of_order: int = 0  # journals only: see read_journal_bodies

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class BodyRecording:
    """Body tracking of one Kinect: ``timestamps`` (F,) seconds on the device clock (the depth
    frames' times), ``frame_ids`` (F,), and one :class:`BodyTrack` per k4abt body id."""

    timestamps: np.ndarray
    frame_ids: np.ndarray
    bodies: dict[int, BodyTrack] = field(default_factory=dict)
    source_file: str = ""
    sdk_version: str = SDK_VERSION
    has_confidences: bool = True
    stats: BodyStats = field(default_factory=BodyStats)

    def __post_init__(self) -> None:
        self.timestamps = np.asarray(self.timestamps, dtype=np.float64).reshape(-1)
        self.frame_ids = np.asarray(self.frame_ids, dtype=np.int64).reshape(-1)
        if len(self.frame_ids) != len(self.timestamps):
            raise ValueError(f"{len(self.timestamps)} timestamps but {len(self.frame_ids)} frame ids")
        for body_id, track in self.bodies.items():
            if len(track.positions) != len(self.timestamps):
                raise ValueError(f"body {body_id} has {len(track.positions)} frames, the recording {len(self.timestamps)}")

    def __len__(self) -> int:
        return len(self.timestamps)


def read_bodies(path: str | Path) -> BodyRecording:
    """Read a k4abt offline_processor JSON file (with or without ``joint_confidences``), or a
    recorder's journal (``.jsonl``, see :func:`read_journal_bodies`).

    Repairs and counts (in ``stats``): joints with NaN/null position or orientation become missing.
    Also counted: frames without bodies, frames whose body ids come in a different order than in the
    previous frame. Raises :class:`InputError` for unreadable, truncated or malformed files, for
    timestamps that do not strictly increase (the device clock is monotonic, so frames out of order
    or repeated mean a damaged file) and for body ids outside k4abt's uint32 range.
    """
    path = Path(path)
    if path.suffix == JOURNAL_SUFFIX:
        return read_journal_bodies(path)
    try:
        doc = json.loads(path.read_bytes())
    except OSError as exc:
        raise InputError(f"cannot read body tracking file ({exc.strerror})", path=path, fix=_FIX) from None
    except ValueError as exc:
        raise InputError(f"truncated or malformed JSON ({exc})", path=path, fix=_FIX) from None
    try:
        return _parse(doc, path)
    except _ClockError as exc:
        raise InputError(f"device timestamps out of order: {exc}", path=path,
                         fix="the file is damaged or was edited; " + _FIX) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"not a k4abt body tracking file ({type(exc).__name__}: {exc})", path=path, fix=_FIX) from None


class _ClockError(ValueError):
    """Frame timestamps that do not strictly increase."""


def _integer(value, what: str) -> int:
    """A JSON integer (an integral float is accepted: some writers emit 1.0e6)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or (isinstance(value, float) and not (math.isfinite(value) and value.is_integer()))):
        raise ValueError(f"{what} {value!r} is not an integer")
    return int(value)


def _body_id(value) -> int:
    """A k4abt body id: a uint32 (``k4abt_body_t.id``)."""
    body_id = _integer(value, "body_id")
    if not 0 <= body_id < 2 ** 32:
        raise ValueError(f"body_id {body_id} is outside k4abt's range 0..2^32-1")
    return body_id


def _parse(doc: dict, path: Path) -> BodyRecording:
    names = tuple(doc.get("joint_names", KINECT_JOINTS))
    if names != KINECT_JOINTS:
        raise ValueError(f"joint_names differ from the 32 k4abt joints: {names[:3]}...")
    return _build(lambda: iter(doc["frames"]), str(doc.get("source_file", "")), str(doc.get("k4abt_sdk_version", "")))


def _build(frames: Callable[[], Iterator[dict]], source_file: str, sdk_version: str) -> BodyRecording:
    """A recording from k4abt frames, in two passes over ``frames()`` (so that a journal of an hour
    is never held in memory as JSON objects): the first checks the clock and the ids and counts the
    frames, the second fills the arrays."""
    stats = BodyStats()
    times: list[int] = []
    frame_ids: list[int] = []
    previous_order: list[int] = []
    last_us = -math.inf
    for index, frame in enumerate(frames()):
        t_us = _integer(frame["timestamp_usec"], "timestamp_usec")
        if t_us <= last_us:
            # the device clock only moves forward: frames out of order or repeated mean a damaged file
            raise _ClockError(f"frame {index}: timestamp_usec {t_us} does not increase (previous {last_us})")
        last_us = t_us
        bodies = frame.get("bodies") or []
        order = [_body_id(b["body_id"]) for b in bodies]
        common = set(order) & set(previous_order)
        if [i for i in order if i in common] != [i for i in previous_order if i in common]:
            stats.frames_with_reordered_ids += 1
        previous_order = order
        if not bodies:
            stats.frames_without_bodies += 1
        times.append(t_us)
        frame_ids.append(int(frame.get("frame_id", len(frame_ids))))
    F = len(times)
    stats.frames = F
    tracks: dict[int, BodyTrack] = {}
    has_confidences = True
    for f, frame in enumerate(frames()):
        for body in frame.get("bodies") or []:
            body_id = _body_id(body["body_id"])
            track = tracks.get(body_id)
            if track is None:  # (not setdefault: that would build a whole empty track per body and frame)
                track = tracks[body_id] = BodyTrack.empty(F)
            pos = _joint_array(body["joint_positions"], 3)
            rot = _joint_array(body["joint_orientations"], 4)
            if "joint_confidences" in body:
                conf = np.asarray(body["joint_confidences"], dtype=np.int64).reshape(NUM_JOINTS)
            else:
                has_confidences = False
                conf = np.full(NUM_JOINTS, KINECT_CONFIDENCE_MEDIUM)
            bad = ~(np.isfinite(pos).all(axis=1) & np.isfinite(rot).all(axis=1))
            stats.nan_joints += int(bad.sum())
            track.positions[f] = np.where(bad[:, None], np.nan, pos / 1000.0)
            track.orientations[f] = np.where(bad[:, None], np.nan, rot)
            track.confidences[f] = np.where(bad, KINECT_CONFIDENCE_NONE, conf)
    return BodyRecording(
        timestamps=np.array(times, dtype=np.float64) / 1e6, frame_ids=np.array(frame_ids, dtype=np.int64),
        bodies=dict(sorted(tracks.items())), source_file=source_file, sdk_version=sdk_version,
        has_confidences=has_confidences, stats=stats)


def _joint_array(rows: list, width: int) -> np.ndarray:
    """32 rows of ``width`` numbers; null entries (or a null row) become NaN."""
    return np.array(_joint_rows(rows, width), dtype=np.float64).reshape(NUM_JOINTS, width)


@dataclass
class Journal:
    """A read journal: its header and the complete capture lines (a torn last line is left out)."""

    header: dict
    frames: list[dict]
    torn: bool = False


class JournalReader:
    """A recorder's body journal, read line by line. The header is read and checked at once;
    :meth:`frames` yields the complete capture lines on each call. Only the last line can be cut by
    a crash: a damaged line is taken as that end, nothing after it is trusted, and ``torn`` is set."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.torn = False
        try:
            with open(self.path, "rb") as f:
                first = f.readline()
        except OSError as exc:
            raise InputError(f"cannot read the body journal ({exc.strerror})", path=self.path) from None
        try:
            header = json.loads(first)
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("format") != JOURNAL_FORMAT:
            raise InputError("not an omnimocap body journal (header line missing or damaged)", path=self.path,
                             fix="the recorder died before writing anything; this Kinect has no body data")
        self.header: dict = header

    def frames(self) -> Iterator[dict]:
        try:
            with open(self.path, "rb") as f:
                f.readline()
                for line in f:
                    if not line.strip():
                        continue
                    try:
                        frame = json.loads(line)
                        _integer(frame["timestamp_usec"], "timestamp_usec")
                    except (ValueError, KeyError, TypeError):
                        self.torn = True
                        return
                    yield frame
        except OSError as exc:
            raise InputError(f"cannot read the body journal ({exc.strerror})", path=self.path) from None


def read_journal(path: str | Path) -> Journal:
    """Read a recorder's body journal whole (see :class:`JournalReader`)."""
    reader = JournalReader(path)
    frames = list(reader.frames())
    return Journal(reader.header, frames, reader.torn)


def read_journal_bodies(path: str | Path) -> BodyRecording:
    """The body tracking of a recorder's journal, as :func:`read_bodies` gives it for the JSON the
    recorder writes on stop: captures without tracking are left out, and so are captures whose
    device time does not increase (a device that restarted its clock; counted in
    ``stats.frames_dropped_out_of_order``). The journal is streamed, not held in memory."""
    reader = JournalReader(path)
    dropped = [0]

    def tracked_frames() -> Iterator[dict]:
        dropped[0], last_us = 0, -math.inf
        for frame in reader.frames():
            if frame.get("bodies") is None:
                continue
            if int(frame["timestamp_usec"]) <= last_us:
                dropped[0] += 1
                continue
            last_us = int(frame["timestamp_usec"])
            yield frame

    try:
        recording = _build(tracked_frames, str(reader.header.get("source_file", "")),
                           str(reader.header.get("k4abt_sdk_version", SDK_VERSION)))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"malformed body journal ({type(exc).__name__}: {exc})", path=path, fix=_FIX) from None
    recording.stats.frames_dropped_out_of_order = dropped[0]
    return recording


def write_journal_bodies(journal_path: str | Path, bodies_path: str | Path) -> BodyStats:
    """Convert a recorder's journal into k4abt JSON at ``bodies_path`` (atomically), one capture at
    a time: memory stays constant whatever the journal's length. The file is byte for byte what
    :func:`write_bodies` writes for :func:`read_journal_bodies` of the same journal (the same
    captures left out, bodies ordered by id, a joint whose position or orientation is not finite
    written as ``null``, a body without any joint left out of its frame). Returns the counts
    (``frames`` written, ``nan_joints``, ``frames_without_bodies``,
    ``frames_dropped_out_of_order``). Raises :class:`InputError` for a malformed capture line."""
    journal_path = Path(journal_path)
    reader = JournalReader(journal_path)
    head = {"k4abt_sdk_version": str(reader.header.get("k4abt_sdk_version", SDK_VERSION)),
            "source_file": str(reader.header.get("source_file", "")),
            "joint_names": list(KINECT_JOINTS), "bone_list": [list(b) for b in KINECT_BONES]}
    stats = BodyStats()

    def chunks() -> Iterator[bytes]:
        yield json.dumps(head)[:-1].encode() + b', "frames": ['
        last_us = -math.inf
        for frame in reader.frames():
            if frame.get("bodies") is None:
                continue
            t_us = int(frame["timestamp_usec"])
            if t_us <= last_us:
                stats.frames_dropped_out_of_order += 1
                continue
            last_us = t_us
            line = _k4abt_frame(frame, stats)
            yield (b", " if stats.frames else b"") + json.dumps(line, allow_nan=False).encode()
            stats.frames += 1
        yield b"]}"

    Path(bodies_path).parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write_chunks(bodies_path, chunks())
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"malformed body journal ({type(exc).__name__}: {exc})", path=journal_path,
                         fix=_FIX) from None
    return stats


def _k4abt_frame(frame: dict, stats: BodyStats) -> dict:
    """One journal capture as :func:`write_bodies` writes it (positions pass through metres and back
    to millimetres exactly as they do there, so the digits agree)."""
    bodies: dict[int, dict] = {}
    for body in frame.get("bodies") or []:
        body_id = _body_id(body["body_id"])
        pos = _joint_rows(body["joint_positions"], 3)
        rot = _joint_rows(body["joint_orientations"], 4)
        if "joint_confidences" in body:
            conf = [int(c) for c in body["joint_confidences"]]
            if len(conf) != NUM_JOINTS:
                raise ValueError(f"{len(conf)} joint confidences, expected {NUM_JOINTS}")
        else:
            conf = [KINECT_CONFIDENCE_MEDIUM] * NUM_JOINTS
        valid = [all(map(math.isfinite, p)) and all(map(math.isfinite, q)) for p, q in zip(pos, rot)]
        stats.nan_joints += valid.count(False)
        if not any(valid):  # a body without any joint is not written (nor is an earlier one of its id)
            bodies.pop(body_id, None)
            continue
        bodies[body_id] = {  # a repeated id: the last one stands, as in read_journal_bodies
            "body_id": body_id,
            "joint_positions": [[v / 1000.0 * 1000.0 for v in p] if ok else None for p, ok in zip(pos, valid)],
            "joint_orientations": [q if ok else None for q, ok in zip(rot, valid)],
            "joint_confidences": [c if ok else KINECT_CONFIDENCE_NONE for c, ok in zip(conf, valid)]}
    if not frame.get("bodies"):
        stats.frames_without_bodies += 1
    written = [bodies[body_id] for body_id in sorted(bodies)]
    return {"timestamp_usec": int(round(int(frame["timestamp_usec"]) / 1e6 * 1e6)),
            "frame_id": int(frame.get("frame_id", stats.frames)), "num_bodies": len(written), "bodies": written}


def _joint_rows(rows: list, width: int) -> list[list[float]]:
    """32 rows of ``width`` floats; null entries (or a null row) become NaN."""
    if len(rows) != NUM_JOINTS:
        raise ValueError(f"{len(rows)} joints, expected {NUM_JOINTS}")
    out = []
    for j, row in enumerate(rows):
        if row is None:
            out.append([math.nan] * width)
            continue
        if len(row) != width:
            raise ValueError(f"joint {KINECT_JOINTS[j]} has {len(row)} values, expected {width}")
        out.append([math.nan if v is None else float(v) for v in row])
    return out


def write_bodies(path: str | Path, recording: BodyRecording) -> None:
    """Write ``recording`` as k4abt offline_processor JSON with the ``joint_confidences`` extension,
    atomically (temporary file beside ``path``, then rename), one frame at a time. Bodies appear in
    a frame where they have any joint; missing joints are written as ``null``."""
    path = Path(path)
    head = {"k4abt_sdk_version": recording.sdk_version, "source_file": recording.source_file,
            "joint_names": list(KINECT_JOINTS), "bone_list": [list(b) for b in KINECT_BONES]}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_chunks(path, _json_chunks(head, recording))


def _json_chunks(head: dict, recording: BodyRecording) -> Iterator[bytes]:
    yield json.dumps(head)[:-1].encode() + b', "frames": ['
    present = {body_id: track.present for body_id, track in recording.bodies.items()}  # once, not per frame
    for f, (t, frame_id) in enumerate(zip(recording.timestamps, recording.frame_ids)):
        bodies = []
        for body_id, track in recording.bodies.items():
            if not present[body_id][f]:
                continue
            valid = np.isfinite(track.positions[f]).all(axis=1) & np.isfinite(track.orientations[f]).all(axis=1)
            bodies.append({
                "body_id": int(body_id),
                "joint_positions": [(p * 1000.0).tolist() if ok else None for p, ok in zip(track.positions[f], valid)],
                "joint_orientations": [q.tolist() if ok else None for q, ok in zip(track.orientations[f], valid)],
                "joint_confidences": [int(c) if ok else KINECT_CONFIDENCE_NONE for c, ok in zip(track.confidences[f], valid)],
            })
        frame = {"timestamp_usec": int(round(float(t) * 1e6)), "frame_id": int(frame_id),
                 "num_bodies": len(bodies), "bodies": bodies}
        yield (b", " if f else b"") + json.dumps(frame, allow_nan=False).encode()
    yield b"]}"
