"""``omnimocap track SESSION_DIR``: run Azure Kinect body tracking over a session's recordings."""

from __future__ import annotations

import argparse
import sys

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
    from omnimocap.capture.k4abt import track_session

    session_dir = existing_dir(args.session, "session folder")
    for recording, bodies in track_session(session_dir, cpu=args.cpu, overwrite=args.overwrite,
                                           progress=not args.quiet):
        print(f"{recording} -> {bodies}", file=sys.stderr)
    return 0
