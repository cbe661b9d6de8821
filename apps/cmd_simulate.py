"""``omnimocap simulate OUT_DIR``: write a simulated session with ground truth (see sim/simulate.py)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from omnimocap.apps.config_cli import add_config_options, config_from_args
from omnimocap.capture.kinect_models import KINECT_MODELS
from omnimocap.errors import InputError

CONFIG = "omnimocap.sim.simulate:SimConfig"
# The SimConfig fields that are options of ``simulate`` (``--flash`` takes a list, below).
OPTIONS = ("seconds", "people", "kinects", "seed", "pano_width", "pano_baseline_mm", "pano_readout_ms",
           "pano_exposure_ms", "kinect_noise_mm", "kinect_video", "board", "kinect_model", "realism", "pano_format", "overwrite")
# The smallest value each 360 camera option takes (pixels, millimetres, milliseconds).
PANO_LOWEST = {"pano_width": 64, "pano_baseline_mm": 0, "pano_readout_ms": 0, "pano_exposure_ms": 0}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate", help="write a simulated session (Kinect body tracking, 360 video, ground truth)",
        description="Simulate a capture session: people moving in front of a 360 camera and K Kinects, "
                    "with k4abt body tracking JSON, Kinect recordings (colour, depth, IR), an equirectangular "
                    "video and the ground truth in truth/.")
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="session folder to create")
    add_config_options(parser, CONFIG, OPTIONS, choices={"kinect_model": tuple(KINECT_MODELS),
                                                         "realism": ("field", "ideal"),
                                                         "pano_format": ("equirect", "dual-fisheye")})
    parser.add_argument("--flash", type=float, nargs="+", default=(), metavar="T",
                        help="switch a light on at each session time T (seconds) for about half a second, seen by the "
                             "360 camera and the Kinects' colour cameras, for `omnimocap sync --flash`")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from omnimocap.sim.simulate import simulate_session

    flashes = _checked_args(args)
    config = config_from_args(CONFIG, args, OPTIONS, flashes=flashes)
    with tqdm(total=int(args.seconds * 30), unit="frame", desc="rendering frames") as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        session = simulate_session(args.out_dir, config, progress)
    print(f"simulated session written to {session.root}")
    return 0


def _checked_args(args: argparse.Namespace) -> tuple[float, ...]:
    """The flash times, sorted, once every option is checked (one InputError line naming the option)."""
    from omnimocap.sim.render import FLASH_HOLD_S

    if not 1 <= args.people <= 3:
        raise InputError(f"--people {args.people} is not supported", fix="choose 1, 2 or 3")
    if args.kinects < 1:
        raise InputError(f"--kinects {args.kinects} is not supported", fix="use at least 1")
    if not math.isfinite(args.seconds):
        raise InputError(f"--seconds {args.seconds} is not a length", fix="give a finite number of seconds, e.g. 8")
    if args.seconds <= 0.2:
        raise InputError(f"--seconds {args.seconds:g} is too short", fix="simulate more than 0.2 s")
    if not math.isfinite(args.kinect_noise_mm):
        raise InputError(f"--kinect-noise-mm {args.kinect_noise_mm} is not a number", fix="give millimetres, e.g. 15")
    _check_pano(args)
    if args.kinect_noise_mm < 0:
        raise InputError("--kinect-noise-mm must not be negative", fix="pass 0 for exact joints")
    if not all(math.isfinite(t) for t in args.flash):
        raise InputError("--flash times must be finite", fix="give session times in seconds")
    flashes = tuple(sorted(args.flash))
    if flashes and (flashes[0] < 0 or flashes[-1] > args.seconds):
        raise InputError(f"--flash {' '.join(f'{t:g}' for t in flashes)} lies outside the {args.seconds:g} s session",
                         fix=f"give times between 0 and {args.seconds:g}")
    if any(b - a < FLASH_HOLD_S for a, b in zip(flashes, flashes[1:])):
        raise InputError(f"--flash times must be at least {FLASH_HOLD_S:g} s apart (the light stays on that long)",
                         fix="space the flashes further apart")
    if args.board and not args.kinect_video:
        raise InputError("--board needs the Kinect recordings", fix="drop --no-kinect-video")
    return flashes


def _check_pano(args: argparse.Namespace) -> None:
    """One InputError line for a 360 camera option below its smallest value (None: the level's default),
    or for a rolling shutter or blur asked of raw dual-fisheye frames."""
    for name, lowest in PANO_LOWEST.items():
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value >= lowest):
            raise InputError(f"--{name.replace('_', '-')} {value:g} is out of range", fix=f"give {lowest} or more")
    if args.pano_format == "dual-fisheye" and (args.pano_readout_ms or args.pano_exposure_ms):
        raise InputError("--pano-format dual-fisheye is simulated with a global shutter and no blur",
                         fix="drop --pano-readout-ms and --pano-exposure-ms or pass 0 for both")
