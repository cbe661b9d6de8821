"""``omnimocap process SESSION_DIR --out RESULT_DIR``: run the offline pipeline on a session."""

from __future__ import annotations

import argparse
import json
import sys

from omnimocap.apps.config_cli import add_config_options, config_from_args
from omnimocap.apps.options import add_overwrite, add_quiet, existing_dir

CONFIG = "omnimocap.fusion.pipeline:ProcessConfig"
# The ProcessConfig fields that are options of ``process`` (the others: config.json, or the library).
OPTIONS = ("hands", "device", "hand_noise_mm", "hand_noise_deg", "hand_dropout", "seed", "smplx_model", "gender",
           "preview", "smoothing", "depth_cue", "models")
CHOICES = {"hands": ("wilor", "sim"), "device": ("cpu", "cuda"), "gender": ("neutral", "female", "male")}


def register(sub) -> None:
    p = sub.add_parser("process", help="fuse a recorded or simulated session into whole-body motion",
                       description="Run the offline pipeline: Kinect bodies, wrist-centred 360 views, hands, "
                                   "lifting, SMPL-X fit and export into RESULT_DIR.")
    p.add_argument("session", metavar="SESSION_DIR")
    p.add_argument("--out", required=True, metavar="RESULT_DIR")
    add_config_options(p, CONFIG, OPTIONS, choices=CHOICES, metavars={"smplx_model": "FILE", "models": "DIR"})
    add_overwrite(p)
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from omnimocap.fusion.pipeline import process_session

    existing_dir(args.session, "session folder")
    config = config_from_args(CONFIG, args, OPTIONS)
    report = process_session(args.session, args.out, config, overwrite=args.overwrite, progress=not args.quiet)
    for note in report["notes"]:
        print(f"omnimocap process: note: {note}", file=sys.stderr)
    print(json.dumps({"out": args.out, "frames": report["frames"], "people": report["people"],
                      "hand_counts": report["hand_counts"], "timings_s": report["timings_s"]}))
    return 0
