"""``omnimocap inspect PATH [--dump DIR]``: a JSON summary of a Kinect recording, a body tracking
file or a session folder on stdout; ``--dump`` writes a recording's frames as PNG (colour as BGR
8-bit, depth as 16-bit millimetres)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect", help="summarize a Kinect recording (.mkv), a bodies_*.json or a session folder",
        description=__doc__)
    parser.add_argument("path", type=Path, help="a .mkv recording, a bodies_*.json file or a session folder")
    parser.add_argument("--dump", type=Path, metavar="DIR",
                        help="write each capture as color_NNNNN.png and depth_NNNNN.png (16-bit mm)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from omnimocap.capture.summary import summarize, summary_warnings

    summary = summarize(args.path, args.dump)
    for line in summary_warnings(summary):
        print(f"warning: {line}", file=sys.stderr)
    print(json.dumps(summary, indent=2))
    return 0
