"""``omnimocap record OUT_DIR``: headless capture of Kinects and a 360 camera into a session folder.

Sources: ``--kinect N [N ...]`` (live Azure Kinects by device index; with several, the first is the
wired-sync master and the others subordinates), one of ``--pano-uvc DEV`` / ``--pano-url URL`` /
``--pano-gst PIPELINE`` / ``--pano-file F``, or ``--simulate`` (a simulated rig replayed in real time, exercising the recorder
exactly as devices do). Ctrl-C stops cleanly; the session is then complete, and so it is when the
disk fills up (the recording stops there and says so). A recorder killed hard leaves status
``recording``: every file written so far stays readable, and readers take the session as it is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omnimocap.apps.config_cli import add_config_options, config_from_args
from omnimocap.apps.options import add_pano_arguments, pano_config
from omnimocap.errors import UserError

CONFIG = "omnimocap.capture.recorder:RecordConfig"
# The RecordConfig fields that are options of ``record`` (``simulated`` is set by --simulate, which
# also chooses the sources; ``notes`` and ``sync_interval_s`` are the library's).
OPTIONS = ("seconds", "min_free_gb", "stop_free_gb", "disconnect_timeout_s", "overwrite")
KINECT_CONFIG = "omnimocap.capture.kinect_live:KinectDeviceConfig"
# The settings every recorded Kinect shares (device index and sync role come from --kinect).
KINECT_OPTIONS = ("fps", "depth_mode", "color_resolution", "exposure_usec", "body_tracking")


def register(sub) -> None:
    p = sub.add_parser("record", help="record Kinects and a 360 camera into a session folder (headless)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", metavar="OUT_DIR", type=Path)
    p.add_argument("--simulate", action="store_true", help="record the simulated rig in real time")
    p.add_argument("--kinect", type=int, nargs="+", metavar="N", default=[],
                   help="Azure Kinect device indices; the first is the sync master when there are several")
    add_pano_arguments(p)
    add_config_options(p, CONFIG, OPTIONS, metavars={"seconds": "S", "min_free_gb": "GB", "stop_free_gb": "GB",
                                                     "disconnect_timeout_s": "S"})
    add_config_options(p.add_argument_group("Kinect settings"), KINECT_CONFIG, KINECT_OPTIONS,
                       choices={"fps": (5, 15, 30)}, flags={"exposure_usec": "--exposure-us"})
    # record_simulated's arguments; SimConfig's defaults are those of a processed simulation, not of this rig.
    sim = p.add_argument_group("simulation (--simulate)")
    sim.add_argument("--people", type=int, default=2, help="people in the scene (default: 2)")
    sim.add_argument("--kinects", type=int, default=2, help="simulated Kinects (default: 2)")
    sim.add_argument("--seed", type=int, default=0, help="seed of the simulation (default: 0)")
    sim.add_argument("--pano-width", type=int, default=960, help="panorama width, pixels (default: 960)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    pano = pano_config(args)
    if args.simulate and (args.kinect or pano.given):
        raise UserError("--simulate records the simulated rig only", fix="drop --kinect / --pano-* or drop --simulate")
    config = config_from_args(CONFIG, args, OPTIONS, simulated=args.simulate)
    if args.simulate:
        from omnimocap.sim.record import record_simulated

        result = record_simulated(args.out, config, people=args.people, kinects=args.kinects, seed=args.seed,
                                  pano_width=args.pano_width)
    else:
        from omnimocap.capture.record_devices import record_devices

        kinect = config_from_args(KINECT_CONFIG, args, KINECT_OPTIONS)
        result = record_devices(args.out, config, pano, args.kinect, kinect)
    if result.disconnected:
        print(f"omnimocap record: disconnected during the recording: {', '.join(result.disconnected)}", file=sys.stderr)
    if result.stop_reason in ("disk", "error"):
        print(f"omnimocap record: {result.message}", file=sys.stderr)
    print(json.dumps({"out": str(result.session_dir), "stop_reason": result.stop_reason,
                      "seconds": round(result.seconds, 3), "frames": result.frames, "disconnected": result.disconnected}))
    return 1 if result.stop_reason == "error" else 0
