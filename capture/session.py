"""The session folder on disk (contract, see ARCHITECTURE.md).

A session is a folder holding ``session.json`` (the manifest), the Kinect recordings
``kinect_<serial>.mkv``, their body tracking ``bodies_<serial>.json``, the 360 stream ``pano.mkv``
with its per-frame timestamps ``pano_frames.csv``, the calibration ``rig.json`` and, for simulated
sessions, ``truth/``.

The manifest is always replaced atomically (temp file + rename) so a crash leaves either the old or
the new one, never a torn file. ``status`` is ``recording`` until every stream is finalized, then
``complete``; readers accept an incomplete session and say so.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from omnimocap.errors import InputError

FORMAT_NAME = "omnimocap-session"
FORMAT_VERSION = 1
MANIFEST = "session.json"
RIG = "rig.json"
PANO_VIDEO = "pano.mkv"
PANO_FRAMES = "pano_frames.csv"
TRUTH_DIR = "truth"
# ``record --simulate`` keeps the simulation it replays here, inside the session, until it ends.
SIMULATION_DIR = ".simulation"
# Verbs that read a raw dual-fisheye 360 stream as well as a stitched one (their observers cut views
# from one lens each, calibration/pano_observer.py); Session.require_stitched_pano refuses the others.
RAW_PANO_VERBS = ("calibrate", "sync")


def kinect_name(serial: str) -> str:
    """A Kinect's sensor name in rig.json, in messages and as the stem of its recording:
    ``kinect_<serial>``."""
    return f"kinect_{serial}"


def kinect_recording_name(serial: str) -> str:
    """The file name of a Kinect's recording: ``kinect_<serial>.mkv``."""
    return f"{kinect_name(serial)}.mkv"


def bodies_name(serial: str) -> str:
    """The file name of a Kinect's body tracking: ``bodies_<serial>.json``."""
    return f"bodies_{serial}.json"


def journal_name(serial: str) -> str:
    """The file name of a Kinect's body journal while recording: ``bodies_<serial>.jsonl``."""
    return f"bodies_{serial}.jsonl"


def current_umask() -> int:
    """The process umask, read without changing it where Linux exposes it (``/proc/self/status``):
    setting and restoring it would briefly apply a wrong mask to files other threads create."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write_chunks`)."""
    atomic_write_chunks(path, (data,))


def atomic_write_chunks(path: str | Path, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``path`` via a temp file in the same folder, fsync, then rename: a crash
    leaves the old file or the new one, never a torn one. The file gets the permissions the umask
    gives a newly created file (``mkstemp`` alone would make it readable by its owner only)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: str | Path, what: str) -> Any:
    """Read a JSON file; a missing or malformed file raises one clear InputError line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found", path=path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} is not valid JSON ({exc})", path=path,
                         fix="the file is truncated or corrupt; restore it or re-create it") from None


@dataclass
class DeviceEntry:
    """One device of a session. ``kind`` is ``kinect`` or ``pano``; file names are relative."""

    kind: str
    serial: str
    role: str = "standalone"  # kinect: master | subordinate | standalone; pano: camera
    fps: float = 30.0
    recording: str | None = None  # kinect_<serial>.mkv or pano.mkv
    bodies: str | None = None  # bodies_<serial>.json (kinect)
    timestamps: str | None = None  # pano_frames.csv (pano)
    width: int | None = None
    height: int | None = None
    status: str = "recording"  # recording | complete | disconnected
    notes: str = ""
    lenses: str | None = None  # pano: lens model JSON of a raw dual-fisheye stream (None: equirectangular)

    def validate(self) -> None:
        """Raise ValueError for values no recorder writes: a file name that leaves the session
        folder (absolute, ``..``), a Kinect serial that is no file name part, a non-positive or
        non-finite rate, an image size that is not a whole number."""
        if self.kind not in ("kinect", "pano"):
            raise ValueError(f"unknown device kind {self.kind!r}")
        if not isinstance(self.serial, str):
            raise ValueError(f"serial {self.serial!r} is not text")
        # a Kinect's serial names its files (a 360 camera's may be a device path or a URL)
        if self.kind == "kinect" and (not self.serial or any(c in self.serial for c in "/\\\0")):
            raise ValueError(f"serial {self.serial!r} cannot be part of a file name")
        if self.lenses is not None and self.kind != "pano":
            raise ValueError("only a 360 camera has a lens model")
        for key in ("recording", "bodies", "timestamps", "lenses"):
            name = getattr(self, key)
            if name is None:
                continue
            parts = PurePosixPath(name).parts if isinstance(name, str) else ()
            if (not parts or "\\" in name or "\0" in name or PurePosixPath(name).is_absolute()
                    or any(p in ("..", ".") for p in parts)):
                raise ValueError(f"{key} {name!r} is not a file name inside the session folder")
        if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)) or not 0 < self.fps < math.inf:
            raise ValueError(f"fps {self.fps!r} is not a positive number")
        for key in ("width", "height"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{key} {value!r} is not a whole number of pixels")

    @property
    def name(self) -> str:
        """Sensor name used in rig.json: ``kinect_<serial>`` or ``pano``."""
        return "pano" if self.kind == "pano" else kinect_name(self.serial)


@dataclass
class Manifest:
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    status: str = "recording"
    simulated: bool = False
    devices: list[DeviceEntry] = field(default_factory=list)
    notes: str = ""
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Any, path: Path) -> "Manifest":
        if not isinstance(obj, dict) or obj.get("format") != FORMAT_NAME:
            raise InputError("not an omnimocap session manifest (format field missing)", path=path)
        if int(obj.get("format_version", 0)) > FORMAT_VERSION:
            raise InputError(f"session format {obj['format_version']} is newer than this omnimocap "
                             f"reads ({FORMAT_VERSION})", path=path, fix="upgrade omnimocap")
        try:
            devices = [DeviceEntry(**d) for d in obj.get("devices", [])]
            for device in devices:
                device.validate()
        except (TypeError, ValueError) as exc:
            raise InputError(f"malformed device entry ({exc})", path=path,
                             fix="restore the manifest written by the recorder") from None
        fields = {k: obj[k] for k in ("created", "status", "simulated", "notes") if k in obj}
        return cls(devices=devices, **fields)


class Session:
    """A session folder: paths, the manifest and what is in it."""

    def __init__(self, root: str | Path, manifest: Manifest):
        self.root = Path(root)
        self.manifest = manifest

    # --- creating and updating -----------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, *, simulated: bool = False, overwrite: bool = False) -> "Session":
        """Create a new session folder. An existing non-empty folder is refused unless ``overwrite``."""
        root = Path(root)
        if root.exists() and any(root.iterdir()) and not overwrite:
            raise InputError("folder exists and is not empty", path=root,
                             fix="choose a new folder, or pass --overwrite to replace it")
        root.mkdir(parents=True, exist_ok=True)
        session = cls(root, Manifest(simulated=simulated))
        session.save()
        return session

    def save(self) -> None:
        atomic_write_json(self.root / MANIFEST, self.manifest.to_json())

    def add_device(self, entry: DeviceEntry) -> DeviceEntry:
        self.manifest.devices.append(entry)
        self.save()
        return entry

    def mark_complete(self) -> None:
        self.manifest.status = "complete"
        for d in self.manifest.devices:
            if d.status == "recording":
                d.status = "complete"
        self.save()

    # --- reading -------------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path) -> "Session":
        root = Path(root)
        if not root.is_dir():
            raise InputError("session folder not found", path=root)
        manifest = Manifest.from_json(read_json(root / MANIFEST, "session manifest"), root / MANIFEST)
        return cls(root, manifest)

    @property
    def complete(self) -> bool:
        return self.manifest.status == "complete"

    def kinects(self) -> list[DeviceEntry]:
        return [d for d in self.manifest.devices if d.kind == "kinect"]

    def pano(self) -> DeviceEntry:
        panos = [d for d in self.manifest.devices if d.kind == "pano"]
        if not panos:
            raise InputError("the session has no 360 camera stream", path=self.root / MANIFEST)
        return panos[0]

    def require_stitched_pano(self, verb: str) -> None:
        """:class:`InputError` in one line when the 360 stream is raw dual-fisheye and ``verb`` reads
        stitched equirect frames only (``calibrate`` and ``sync`` read both: they are let through)."""
        pano = self.pano()
        if pano.lenses is not None and verb not in RAW_PANO_VERBS:
            raise InputError(f"{verb} reads a stitched (equirectangular) 360 stream; this one is raw dual-fisheye "
                             f"(lens model {pano.lenses})", path=self.root / MANIFEST,
                             fix=f"run {verb} on a stitched recording of the same set-up and copy its rig.json here")

    def path(self, name: str) -> Path:
        """A file of the session; names come from the validated manifest or from this module."""
        return self.root / name

    def pano_video_path(self, entry: DeviceEntry | None = None) -> Path:
        """The 360 stream's video (``entry`` or :meth:`pano`): the manifest's name, else ``pano.mkv``."""
        return self.path((entry or self.pano()).recording or PANO_VIDEO)

    def pano_frames_path(self, entry: DeviceEntry | None = None) -> Path:
        """The 360 stream's per-frame timestamps (``entry`` or :meth:`pano`): the manifest's name,
        else ``pano_frames.csv``."""
        return self.path((entry or self.pano()).timestamps or PANO_FRAMES)

    @property
    def rig_path(self) -> Path:
        return self.root / RIG

    @property
    def truth_dir(self) -> Path:
        return self.root / TRUTH_DIR
