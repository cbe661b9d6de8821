"""``omnimocap track SESSION_DIR``: run Azure Kinect body tracking over a session's recordings."""

from __future__ import annotations

import argparse
import sys

import numpy as np
from tqdm import tqdm

from omnimocap.apps.options import add_overwrite, add_quiet, existing_dir


def register(sub) -> None:
    p = sub.add_parser("track", help="run k4abt body tracking over a session's Kinect recordings",
                       description="Writes bodies_<serial>.json for every kinect_<serial>.mkv of the session "
                                   "(needs the Azure Kinect Body Tracking SDK).")
    p.add_argument("session", metavar="SESSION_DIR")
    p.add_argument("--cpu", action="store_true", help="run the tracker's network on the CPU")
    add_overwrite(p)
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from omnimocap.capture.session import Session
    from omnimocap.errors import UserError

    session = Session.open(existing_dir(args.session, "session folder"))
    todo = [d for d in session.kinects() if d.recording and (args.overwrite or not d.bodies)]
    if not todo:
        raise UserError("nothing to track: no Kinect recording without body tracking", path=session.root,
                        fix="pass --overwrite to track again")
    for entry in todo:
        name = f"bodies_{entry.serial}.json"
        track_recording(session.path(entry.recording), session.path(name), cpu=args.cpu, progress=not args.quiet)
        entry.bodies = name
        session.save()
        print(f"{entry.recording} -> {name}", file=sys.stderr)
    return 0


def track_recording(mkv_path, json_path, *, cpu: bool = False, progress: bool = True) -> None:
    """Track every capture of one recording and write the k4abt JSON (with confidences)."""
    from omnimocap.capture.bodies import BodyRecording, BodyTrack, write_bodies
    from omnimocap.capture.k4a_playback import Playback
    from omnimocap.capture.k4abt import (
        K4ABT_TRACKER_PROCESSING_MODE_CPU, K4ABT_TRACKER_PROCESSING_MODE_GPU, BodyTracker,
    )

    frames = []
    with Playback(mkv_path) as playback:
        mode = K4ABT_TRACKER_PROCESSING_MODE_CPU if cpu else K4ABT_TRACKER_PROCESSING_MODE_GPU
        with BodyTracker(playback.calibration(), processing_mode=mode) as tracker:
            bar = tqdm(desc=f"tracking {mkv_path.name}", unit="frame", disable=not progress, file=sys.stderr)
            for capture in playback.captures():
                tracker.enqueue(capture)
                result = tracker.pop()
                if result is not None:
                    frames.append(result)
                bar.update()
            bar.close()
    ids = sorted({int(i) for f in frames for i in f.body_ids})
    bodies = {i: BodyTrack.empty(len(frames)) for i in ids}
    for k, f in enumerate(frames):
        for b, body_id in enumerate(f.body_ids):
            track = bodies[int(body_id)]
            track.positions[k], track.orientations[k], track.confidences[k] = f.positions[b], f.orientations[b], f.confidences[b]
    write_bodies(json_path, BodyRecording(np.array([f.timestamp for f in frames]), np.arange(len(frames)), bodies,
                                          source_file=mkv_path.name))
