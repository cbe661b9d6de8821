"""Summaries of capture files as JSON-ready dicts: a Kinect recording (tracks, tags, captures,
camera models), a body tracking file, a session folder; and a recording's frames dumped as PNG
(colour as BGR 8-bit, depth as 16-bit millimetres)."""

from __future__ import annotations

import json
from pathlib import Path

from omnimocap.errors import InputError
from omnimocap.geometry.cameras import PinholeCamera
from omnimocap.capture.session import MANIFEST, bodies_name, kinect_recording_name


def summarize(path: Path, dump: Path | None = None) -> dict:
    """The summary of ``path``: a session folder, a ``.mkv`` Kinect recording or a body tracking
    ``.json``; with ``dump``, the recordings' frames go there as well (see :func:`dump_recording`).
    Raises :class:`InputError` for any other path."""
    path = Path(path)
    if dump is not None and dump.exists() and not dump.is_dir():
        raise InputError("--dump exists and is not a folder", path=dump, fix="name a new or existing folder for the frames")
    if path.is_dir():
        return summarize_session(path, dump)
    if path.suffix.lower() == ".mkv":
        summary = summarize_recording(path)
        if dump:
            summary["dumped"] = dump_recording(path, dump)
        return summary
    if path.suffix.lower() == ".json" and path.is_file():
        return summarize_bodies(path)
    raise InputError("not a .mkv recording, a body tracking .json or a session folder", path=path,
                     fix="pass an existing kinect_<serial>.mkv, bodies_<serial>.json or session folder")


def summary_warnings(summary: dict) -> list[str]:
    """The recordings' warnings (clock problems, firmware) anywhere in a summary, in order."""
    found = list(summary.get("warnings", []))
    for recording in summary.get("kinects", {}).values():
        found.extend(recording.get("warnings", []))
    return found


def summarize_recording(path: Path) -> dict:
    """Tracks, tags, capture count and camera models of one Kinect recording. Timestamps are the
    device's, in microseconds; intrinsics in pixels; ``T_color_depth`` in metres."""
    from omnimocap.capture.kinect_mkv import KinectRecording

    rec = KinectRecording(path)
    calibration = rec.calibration
    depth_times = []
    captures = 0
    for capture in rec.captures(decode_color=False):
        captures += 1
        if capture.depth_timestamp is not None:
            depth_times.append(capture.depth_timestamp)
    imu_samples = len(rec.imu()) if "IMU" in rec.tracks else 0
    warnings = [w for w in (rec.clock_problem, rec.firmware_warning) if w]
    return {
        "path": str(path),
        "device_serial": rec.device_serial,
        "device_family": rec.device_family,
        "tracks": [t.to_dict() for t in rec.tracks.values()],
        "tags": rec.tags,
        "start_offset_us": rec.start_offset_us,
        "captures": captures,
        "imu_samples": imu_samples,
        "first_depth_timestamp_us": _us(depth_times[0]) if depth_times else None,
        "last_depth_timestamp_us": _us(depth_times[-1]) if depth_times else None,
        "color_intrinsics": _intrinsics(calibration.color),
        "depth_intrinsics": _intrinsics(calibration.depth),
        "T_color_depth": calibration.T_color_depth.tolist(),
        "truncated": rec.truncated,
        "problems": rec.problems,
        "warnings": warnings,
    }


def summarize_bodies(path: Path) -> dict:
    """Frames, body ids, time span (seconds, device clock) and repair counts of a body file."""
    from omnimocap.capture.bodies import read_bodies

    bodies = read_bodies(path)
    t = bodies.timestamps
    return {
        "path": str(path),
        "frames": len(bodies),
        "duration_s": float(t[-1] - t[0]) if len(t) > 1 else 0.0,
        "first_timestamp_us": _us(t[0]) if len(t) else None,
        "body_ids": list(bodies.bodies),
        "frames_per_body": {str(i): int(track.present.sum()) for i, track in bodies.bodies.items()},
        "has_confidences": bodies.has_confidences,
        "stats": bodies.stats.to_dict(),
    }


def summarize_session(folder: Path, dump: Path | None) -> dict:
    """The manifest as stored plus a summary of every kinect_*.mkv and bodies_*.json in ``folder``;
    with ``dump``, each recording's frames go to ``dump/<recording name>/``."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise InputError("is a folder without session.json", path=folder,
                         fix="pass a session folder, or a .mkv / bodies .json file directly")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as exc:
        raise InputError(f"truncated or malformed JSON ({exc})", path=manifest_path,
                         fix="restore session.json from the recording's backup or re-create the session") from None
    summary = {
        "path": str(folder),
        "manifest": manifest,
        "files": sorted(p.name for p in folder.iterdir()),
        "kinects": {},
        "bodies": {},
    }
    for mkv in sorted(folder.glob(kinect_recording_name("*"))):
        summary["kinects"][mkv.name] = summarize_recording(mkv)
        if dump:
            summary["kinects"][mkv.name]["dumped"] = dump_recording(mkv, dump / mkv.stem)
    for body_file in sorted(folder.glob(bodies_name("*"))):
        summary["bodies"][body_file.name] = summarize_bodies(body_file)
    return summary


def dump_recording(path: Path, out: Path) -> int:
    """Write each capture's colour (``color_NNNNN.png``) and depth (``depth_NNNNN.png``, uint16 mm)
    into ``out``; returns the number of captures written."""
    import cv2
    from tqdm import tqdm

    from omnimocap.capture.kinect_mkv import KinectRecording

    rec = KinectRecording(path)
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for capture in tqdm(rec.captures(), desc=f"dump {path.name}", unit="capture"):
        for name, image in (("color", capture.color), ("depth", capture.depth)):
            if image is not None and not cv2.imwrite(str(out / f"{name}_{capture.index:05d}.png"), image):
                raise InputError("cannot write PNG", path=out, fix="check that the folder is writable")
        count += 1
    return count


def _intrinsics(camera: PinholeCamera) -> dict:
    return {"fx": camera.fx, "fy": camera.fy, "cx": camera.cx, "cy": camera.cy, "width": camera.width,
            "height": camera.height, "distortion": list(camera.distortion)}


def _us(t_s: float) -> int:
    return int(round(float(t_s) * 1e6))
