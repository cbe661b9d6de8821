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
import math
import signal
import sys
from pathlib import Path

from omnimocap.apps.options import add_overwrite
from omnimocap.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("record", help="record Kinects and a 360 camera into a session folder (headless)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", metavar="OUT_DIR", type=Path)
    p.add_argument("--simulate", action="store_true", help="record the simulated rig in real time")
    p.add_argument("--seconds", type=float, default=None,
                   help="recording length in seconds (default: until Ctrl-C; 10 with --simulate)")
    p.add_argument("--kinect", type=int, nargs="+", metavar="N", default=[],
                   help="Azure Kinect device indices; the first is the sync master when there are several")
    add_pano_arguments(p)
    p.add_argument("--min-free-gb", type=float, default=2.0,
                   help="refuse to start with less free disk space; stop cleanly below half of it (default: 2)")
    kin = p.add_argument_group("Kinect settings")
    kin.add_argument("--fps", type=int, default=30, choices=[5, 15, 30], help="camera rate (default: 30)")
    kin.add_argument("--depth-mode", default="NFOV_UNBINNED", help="K4A depth mode, or OFF (default: NFOV_UNBINNED)")
    kin.add_argument("--color-resolution", default="720P", help="K4A colour resolution, or OFF (default: 720P)")
    kin.add_argument("--exposure-us", type=int, default=8000, help="manual colour exposure in us (default: 8000)")
    kin.add_argument("--body-tracking", action="store_true", help="run k4abt body tracking live (needs libk4abt)")
    sim = p.add_argument_group("simulation (--simulate)")
    sim.add_argument("--people", type=int, default=2)
    sim.add_argument("--kinects", type=int, default=2)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--pano-width", type=int, default=960)
    add_overwrite(p)
    p.set_defaults(func=run)


def add_pano_arguments(p: argparse.ArgumentParser) -> None:
    """The 360 camera options shared by ``record`` and ``gui``: which camera and its settings."""
    pano = p.add_mutually_exclusive_group()
    pano.add_argument("--pano-uvc", metavar="DEV", help="360 camera in USB webcam mode: index (0) or device path")
    pano.add_argument("--pano-url", metavar="URL", help="360 camera stream (rtsp://..., rtmp://...)")
    pano.add_argument("--pano-gst", metavar="PIPELINE",
                      help="360 camera through a GStreamer pipeline without its sink (gst-launch syntax), or 'theta' / "
                           "'theta-2k' for a RICOH THETA Z1/V on Linux through gstthetauvc's thetauvcsrc")
    pano.add_argument("--pano-file", metavar="F", type=Path, help="equirect video file replayed in real time")
    cam = p.add_argument_group("360 camera settings")
    cam.add_argument("--pano-size", metavar="WxH", default=None, help="requested UVC size, e.g. 3840x1920")
    cam.add_argument("--pano-fps", type=float, default=None, help="requested UVC rate")
    cam.add_argument("--pano-fourcc", default="MJPG", help="UVC FourCC: MJPG or H264 (default: MJPG)")
    cam.add_argument("--pano-latency-ms", type=float, default=0.0,
                     help="subtracted from the 360 frames' host arrival times (default: 0)")


def pano_given(args: argparse.Namespace) -> bool:
    return any(v is not None for v in (args.pano_uvc, args.pano_url, args.pano_file, args.pano_gst))


def _pano_size(text: str | None) -> tuple[int | None, int | None]:
    if not text:
        return None, None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--pano-size {text!r} is not WIDTHxHEIGHT", fix="e.g. --pano-size 3840x1920") from None
    return w, h


def pano_source(args: argparse.Namespace, clock):
    """The 360 source the ``--pano-*`` options name (None without one), stamping on ``clock``."""
    from omnimocap.capture.pano_sources import (
        StreamPanoSource, UvcPanoSource, VideoFilePanoSource, gstreamer_pano_source,
    )

    latency = args.pano_latency_ms / 1000.0
    if args.pano_uvc is not None:
        device = int(args.pano_uvc) if args.pano_uvc.isdigit() else args.pano_uvc
        w, h = _pano_size(args.pano_size)
        return UvcPanoSource(device, width=w, height=h, fps=args.pano_fps, fourcc=args.pano_fourcc,
                             latency_s=latency, clock=clock)
    if args.pano_url is not None:
        return StreamPanoSource(args.pano_url, latency_s=latency, clock=clock)
    if args.pano_gst is not None:
        return gstreamer_pano_source(args.pano_gst, latency_s=latency, clock=clock)
    if args.pano_file is not None:
        sidecar = args.pano_file.parent / "pano_frames.csv"
        return VideoFilePanoSource(args.pano_file, timestamps=sidecar if sidecar.is_file() else None,
                                   latency_s=latency, clock=clock)
    return None


def run(args: argparse.Namespace) -> int:
    from omnimocap.capture.recorder import RecordConfig, Recorder, check_free_space, check_out_dir
    from omnimocap.capture.session import SIMULATION_DIR
    from omnimocap.sim.replay import simulated_rig
    from omnimocap.capture.sources import SessionClock

    if args.simulate and (args.kinect or pano_given(args)):
        raise UserError("--simulate records the simulated rig only", fix="drop --kinect / --pano-* or drop --simulate")
    if args.seconds is not None and not 0 < args.seconds < math.inf:
        raise UserError(f"--seconds {args.seconds:g} is not a positive length", fix="give a length in seconds")
    if not 0 <= args.min_free_gb < math.inf:
        raise UserError(f"--min-free-gb {args.min_free_gb:g} is not a size", fix="give gigabytes, e.g. 2")
    config = RecordConfig(seconds=args.seconds, min_free_gb=args.min_free_gb, simulated=args.simulate,
                          overwrite=args.overwrite)
    # before minutes of device set-up or simulation
    check_free_space(args.out, args.min_free_gb)
    check_out_dir(args.out, args.overwrite)
    rig = None
    if args.simulate:
        config.seconds = config.seconds or 10.0
        print(f"simulating {config.seconds:g} s ...", file=sys.stderr)
        # The simulation lives inside the session until the recording ends, and the session has its
        # calibration and truth from the start: a killed recorder leaves one whole folder behind.
        rig = simulated_rig(config.seconds, args.out / SIMULATION_DIR, people=args.people, kinects=args.kinects,
                            seed=args.seed, pano_width=args.pano_width)
        rig.copy_calibration(args.out)
        config.overwrite = True  # the folder now holds the simulation and its calibration
        clock, sources = rig.clock, list(rig.sources)
        config.notes = "simulated rig replayed in real time"
    else:
        clock = SessionClock()
        pano = pano_source(args, clock)
        sources = []
        if args.kinect:
            from omnimocap.capture.kinect_live import KinectDeviceConfig, KinectRig

            roles = ["standalone"] if len(args.kinect) == 1 else ["master"] + ["subordinate"] * (len(args.kinect) - 1)
            kinect_rig = KinectRig([KinectDeviceConfig(device_id=i, role=r, fps=args.fps, depth_mode=args.depth_mode,
                                                       color_resolution=args.color_resolution,
                                                       exposure_usec=args.exposure_us, body_tracking=args.body_tracking)
                                    for i, r in zip(args.kinect, roles)], clock)
            sources.extend(kinect_rig.open())
        if pano is not None:
            sources.append(pano)
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        result = Recorder(args.out, sources, config, clock).run()
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        if rig is not None:
            rig.cleanup()
    if result.disconnected:
        print(f"omnimocap record: disconnected during the recording: {', '.join(result.disconnected)}", file=sys.stderr)
    if result.stop_reason in ("disk", "error"):
        print(f"omnimocap record: {result.message}", file=sys.stderr)
    print(json.dumps({"out": str(result.session_dir),
                      "stop_reason": result.stop_reason, "seconds": round(result.seconds, 3),
                      "frames": result.frames, "disconnected": result.disconnected}))
    return 1 if result.stop_reason == "error" else 0


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
