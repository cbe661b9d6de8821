"""``omnimocap gui [--simulate | --session DIR] [--seconds S]``: the live capture session window.

Without ``--simulate`` or ``--session`` it opens the connected Azure Kinects and the 360 camera
named by ``--pano-uvc`` / ``--pano-url`` / ``--pano-file`` (the same options as ``record``); the
window then lists every device problem in its message panel.
"""

from __future__ import annotations

import argparse
import os
import sys

from omnimocap.apps.options import add_device, add_models, add_pano_arguments, existing_dir, pano_config
from omnimocap.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("gui", help="live capture session window (devices, sync, calibration, hands, recording)",
                       description="Open the live session window over connected devices, a simulated rig "
                                   "(--simulate) or a recorded session replayed as if live (--session).")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--simulate", action="store_true", help="simulate a short session and replay it in a loop")
    source.add_argument("--session", metavar="DIR", help="replay a recorded session folder as if live")
    p.add_argument("--seconds", type=float, default=4.0,
                   help="--simulate: seconds simulated (plus 0.5 s) and replayed in a loop (default: 4)")
    p.add_argument("--people", type=int, default=2, help="--simulate: people in the scene (default: 2)")
    p.add_argument("--pano-width", type=int, default=960, help="--simulate: panorama width, pixels (default: 960)")
    p.add_argument("--hands", choices=["sim", "wilor", "none"],
                   help="hand backend of the live preview: wilor (default, as for process), sim (the simulated "
                        "observer; the default with --simulate) or none")
    p.add_argument("--record-dir", default="recordings", metavar="DIR",
                   help="where Record creates new session folders (default: ./recordings)")
    p.add_argument("--body-tracking", action="store_true", help="live Kinects: run k4abt body tracking (needs libk4abt)")
    p.add_argument("--vmc", nargs="?", const="127.0.0.1:39539", metavar="HOST:PORT",
                   help="stream the live pose as VMC bone messages (OSC over UDP; default 127.0.0.1:39539)")
    p.add_argument("--vmc-person", type=int, metavar="ID",
                   help="--vmc: the body id to stream (default: the lowest id the first Kinect tracks)")
    p.add_argument("--rerun", nargs="?", const="spawn", metavar="TARGET",
                   help="log the live pose to rerun: spawn a viewer (default), a rerun+http:// URL, or FILE.rrd")
    add_pano_arguments(p)
    add_device(p)
    add_models(p)
    p.set_defaults(func=run)


def check_gui_environment() -> None:
    """Raise a one-line UserError when the window cannot open here (no Qt, or no display)."""
    try:
        import pyqtgraph  # noqa: F401
        import PySide6  # noqa: F401
    except ImportError as exc:
        raise UserError(f"the GUI needs PySide6 and pyqtgraph ({exc.name} is missing)",
                        fix="pip install omnimocap[gui]") from None
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if sys.platform.startswith("linux") and not platform and not os.environ.get("DISPLAY") \
            and not os.environ.get("WAYLAND_DISPLAY"):
        raise UserError("no display to open the window on (DISPLAY is not set)",
                        fix="run under `xvfb-run omnimocap gui ...`, or set QT_QPA_PLATFORM=offscreen")


def run(args: argparse.Namespace) -> int:
    pano = pano_config(args)
    if (args.simulate or args.session) and pano.given:
        raise UserError("--pano-* opens a live 360 camera; --simulate and --session replay their own",
                        fix="drop --pano-* or drop --simulate / --session")
    check_gui_environment()
    from omnimocap.apps.gui import run_app
    from omnimocap.apps.live import LiveController

    config = live_config(args)
    if args.simulate:
        print(f"simulating {args.seconds:g} s with {args.people} people ...", file=sys.stderr)
        controller = LiveController.simulated(args.seconds, people=args.people, pano_width=args.pano_width,
                                              config=config)
    elif args.session:
        controller = LiveController.from_session(existing_dir(args.session, "session folder"), config=config)
    else:
        from omnimocap.capture.pano_open import pano_source

        controller = LiveController.from_devices(config, pano=lambda clock: pano_source(pano, clock))
    add_streams(controller, args)
    return run_app(controller, record_dir=args.record_dir)


def live_config(args: argparse.Namespace):
    """The session's settings: the hand stage of ``process`` with its defaults, the simulated
    observer's hands for ``--simulate`` unless ``--hands`` says otherwise."""
    from omnimocap.fusion.live.controller import LiveConfig
    from omnimocap.fusion.pipeline import ProcessConfig

    process = ProcessConfig(device=args.device, models=args.models)
    if args.hands or args.simulate:
        process.hands = args.hands or "sim"
    return LiveConfig(process=process, body_tracking=args.body_tracking)


def add_streams(controller, args: argparse.Namespace) -> None:
    """The --vmc and --rerun streams out, as sinks of the controller."""
    from omnimocap.fusion.live_stream import RerunSink, VmcSender, parse_host_port

    if args.vmc:
        try:
            host, port = parse_host_port(args.vmc)
        except ValueError as exc:
            controller.close()
            raise UserError(f"--vmc {exc}", fix="give --vmc HOST:PORT, e.g. 127.0.0.1:39539") from None
        controller.add_sink(VmcSender(host, port, args.vmc_person))
        print(f"streaming VMC to {host}:{port}", file=sys.stderr)
    if args.rerun:
        try:
            controller.add_sink(RerunSink(args.rerun))
        except ImportError:
            controller.close()
            raise UserError("--rerun needs the rerun SDK", fix="pip install omnimocap[viz]") from None
        except (RuntimeError, OSError) as exc:
            controller.close()
            raise UserError(f"--rerun {args.rerun}: {exc}", fix="check the viewer URL or the file path") from None
