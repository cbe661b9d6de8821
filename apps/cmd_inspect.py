"""``omnimocap inspect PATH [--dump DIR]``: a JSON summary of a Kinect recording, a body tracking
file or a session folder on stdout; ``--dump`` writes a recording's frames as PNG (colour as BGR
8-bit, depth as 16-bit millimetres)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omnimocap.capture.session import bodies_name, kinect_recording_name
from omnimocap.geometry.cameras import PinholeCamera
from omnimocap.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect", help="summarize a Kinect recording (.mkv), a bodies_*.json or a session folder",
        description=__doc__)
    parser.add_argument("path", type=Path, help="a .mkv recording, a bodies_*.json file or a session folder")
    parser.add_argument("--dump", type=Path, metavar="DIR",
                        help="write each capture as color_NNNNN.png and depth_NNNNN.png (16-bit mm)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path: Path = args.path
    if args.dump is not None and args.dump.exists() and not args.dump.is_dir():
        raise InputError("--dump exists and is not a folder", path=args.dump,
                         fix="name a new or existing folder for the frames")
    if path.is_dir():
        summary = summarize_session(path, args.dump)
    elif path.suffix.lower() == ".mkv":
        summary = summarize_recording(path)
        if args.dump:
            summary["dumped"] = dump_recording(path, args.dump)
    elif path.suffix.lower() == ".json" and path.is_file():
        summary = summarize_bodies(path)
    else:
        raise InputError("not a .mkv recording, a body tracking .json or a session folder", path=path,
                         fix="pass an existing kinect_<serial>.mkv, bodies_<serial>.json or session folder")
    print(json.dumps(summary, indent=2))
    return 0


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
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
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
    manifest_path = folder / "session.json"
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
