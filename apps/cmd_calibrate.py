"""``omnimocap calibrate SESSION_DIR [--method markerless|board] [--kinects estimate|rig]`` and
``omnimocap sync SESSION_DIR [--flash]``.

Both write the session's ``rig.json`` atomically: the method, the inputs used and the residuals.

``--kinects estimate`` (the default when the reference (first) Kinect's recording has IMU samples)
first solves every Kinect's pose and the world frame: the reference Kinect's up from its
accelerometer (the device must stand still), its height from the floor plane fitted to a few of its
depth frames (y = 0 on the floor); the world's forward (+z) is the reference depth camera's optical
axis projected on the floor and its origin the floor point straight below that camera (see
calibration/world_frame.py). Every other Kinect follows from the skeletons it shares with the
reference. ``--kinects rig`` (the default without IMU samples) keeps the rig's Kinect poses and says
so in ``inputs``. The 360 camera is then solved relative to the reference Kinect.

``--method board`` reads the reference (first) Kinect's colour frames from its recording, finds the
runs of frames where a ChArUco board (``BoardSpec()``: 7 x 5 squares of 80 mm, 60 mm DICT_5X5_100
markers) holds still, detects the board in the 360 frame nearest the middle of each run (matched
through the rig's time maps), solves the board poses and the 360 camera jointly, and composes the
result with the Kinect's factory colour-to-depth extrinsics into the 360 camera's world pose.
When the Kinects' poses are estimated, every other Kinect whose colour camera saw the board in at least
``min_kinect_poses`` of those still runs (``BoardConfig``) is placed from it (its colour frame nearest each run's middle,
solved jointly with the reference's and composed with both devices' colour-to-depth extrinsics); the
poses used go to ``inputs.kinect_poses_from_board`` and the residuals, with the skeleton-based estimate
it replaced, to ``residuals.kinects``. A Kinect that never saw the board keeps its skeleton-based pose.
The panorama's side of ``--method markerless`` and of ``sync`` (``--observer``): ``simulated`` (the
simulated observer's joint bearings; ``--realism ideal`` simulated sessions only, the default there),
``detector`` (WiLoR's hand detector over the 360 frames: search views from nothing, then views around
the Kinect hands; with the body keypoint model, when ``<models>/pose/yolo11n-pose.pt`` or
``--pose-model`` is there, also the people's shoulders, elbows, wrists, knees and ankles, each with
its offset from the Kinect joint solved in the body's frame; the default for recorded sessions,
needs ``detector.pt``), or ``simulated-detector`` (simulated hand boxes and body keypoints in those
same views; simulated sessions only, the default for ``--realism field`` ones). See
calibration/pano_hands.py and calibration/pano_bodies.py.
``sync --flash`` times the 360 camera by flashes instead of motion: a light switched on (a flash, a
lamp) that both the 360 camera and the reference Kinect's colour camera see. Every frame's mean
brightness is read, the rising steps are located to a fraction of a frame in each stream
(calibration/flash_sync.py), the Kinect's on the session clock through the rig's
time map of that Kinect, and paired under the host-arrival map of ``pano_frames.csv``: one flash fixes
the offset (the rate stays that of the host arrival times), two or more at least a second apart fit
rate and offset.
The library side of both verbs is calibration/session.py and calibration/sync.py; the options below
are the fields of ``CalibrateConfig`` / ``SyncConfig`` (calibration/config.py), which are written
into ``rig.json`` under ``configs``.
A simulated session's ground truth lives in ``truth/rig.json`` and is never written; the session's
own ``rig.json`` (which starts as a copy of the truth) is replaced by the estimate, and the command
says so.
"""

from __future__ import annotations

import argparse
import json
import sys

from omnimocap.apps.config_cli import add_config_options, config_from_args
from omnimocap.apps.options import add_quiet
from omnimocap.calibration.config import OBSERVERS
from omnimocap.errors import UserError

_CONFIG = "omnimocap.calibration.config"
CALIBRATE = f"{_CONFIG}:CalibrateConfig"
SYNC = f"{_CONFIG}:SyncConfig"
KINECT_POSES = f"{_CONFIG}:KinectPosesConfig"
MARKERLESS = f"{_CONFIG}:MarkerlessConfig"
OBSERVER = f"{_CONFIG}:ObserverConfig"
# The config fields that are options (the others keep their defaults on the command line).
CALIBRATE_OPTIONS = ("method", "refine")
KINECT_POSES_OPTIONS = ("kinects",)
MARKERLESS_OPTIONS = ("search_frames",)
OBSERVER_OPTIONS = ("observer", "noise_deg", "detector", "body_keypoints", "pose_model", "device", "stride")
SYNC_OPTIONS = ("flash",)
CHOICES = {"method": ("markerless", "board"), "kinects": ("estimate", "rig"), "observer": OBSERVERS}


def register(subparsers) -> None:
    p = subparsers.add_parser("calibrate", help="solve the 360 camera's pose (and time map) in the rig",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("session", metavar="SESSION_DIR")
    add_config_options(p, CALIBRATE, CALIBRATE_OPTIONS, choices=CHOICES)
    add_config_options(p, KINECT_POSES, KINECT_POSES_OPTIONS, choices=CHOICES)
    add_config_options(p, MARKERLESS, MARKERLESS_OPTIONS)
    add_config_options(p, OBSERVER, OBSERVER_OPTIONS, choices=CHOICES, metavars={"detector": "PATH", "pose_model": "PATH"})
    add_quiet(p)
    p.set_defaults(func=run_calibrate)
    s = subparsers.add_parser("sync", help="estimate the 360 camera's time map (offset and rate) from motion or "
                                           "flashes",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("session", metavar="SESSION_DIR")
    add_config_options(s, SYNC, SYNC_OPTIONS)
    add_config_options(s, OBSERVER, OBSERVER_OPTIONS, choices=CHOICES, metavars={"detector": "PATH", "pose_model": "PATH"})
    add_quiet(s)
    s.set_defaults(func=run_sync)


def _observer_config(args: argparse.Namespace):
    if args.stride < 1:
        raise UserError(f"--stride {args.stride} is not a frame step", fix="give 1 (every 360 frame) or more")
    return config_from_args(OBSERVER, args, OBSERVER_OPTIONS)


def run_calibrate(args: argparse.Namespace) -> int:
    from omnimocap.calibration.session import calibrate_session

    config = config_from_args(CALIBRATE, args, CALIBRATE_OPTIONS, observer=_observer_config(args),
                              kinect_poses=config_from_args(KINECT_POSES, args, KINECT_POSES_OPTIONS),
                              markerless=config_from_args(MARKERLESS, args, MARKERLESS_OPTIONS))
    print(json.dumps(calibrate_session(args.session, config, progress=not args.quiet)))
    return 0


def run_sync(args: argparse.Namespace) -> int:
    from omnimocap.calibration.sync import sync_session

    config = config_from_args(SYNC, args, SYNC_OPTIONS, observer=_observer_config(args))
    result = sync_session(args.session, config, progress=not args.quiet)
    for warning in result.get("warnings", []):
        print(f"omnimocap sync: warning: {warning}", file=sys.stderr)
    print(json.dumps(result))
    return 0
