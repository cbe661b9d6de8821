"""``omnimocap simulate OUT_DIR``: write a simulated session with ground truth (see sim/simulate.py)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from omnimocap.capture.kinect_models import KINECT_MODELS
from omnimocap.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate", help="write a simulated session (Kinect body tracking, 360 video, ground truth)",
        description="Simulate a capture session: people moving in front of a 360 camera and K Kinects, "
                    "with k4abt body tracking JSON, Kinect recordings (colour, depth, IR), an equirectangular "
                    "video and the ground truth in truth/.")
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="session folder to create")
    parser.add_argument("--seconds", type=float, default=8.0, help="session length in seconds (default 8)")
    parser.add_argument("--people", type=int, default=2, help="number of people, 1-3 (default 2)")
    parser.add_argument("--kinects", type=int, default=2, help="number of Kinects, >= 1 (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--pano-width", type=int, default=1920, help="equirect width in pixels (height = width/2)")
    parser.add_argument("--kinect-noise-mm", type=float, default=15.0,
                        help="body tracking joint noise in mm; 0 gives exact joints and no dropouts (default 15)")
    parser.add_argument("--no-kinect-video", action="store_true",
                        help="write no kinect_<serial>.mkv (colour, depth, IR); body tracking JSON only")
    parser.add_argument("--board", action="store_true",
                        help="a ChArUco board held still in several poses during the first ~3 s, "
                             "for `omnimocap calibrate --method board`")
    parser.add_argument("--flash", type=float, nargs="+", default=(), metavar="T",
                        help="switch a light on at each session time T (seconds) for about half a second, seen by the "
                             "360 camera and the Kinects' colour cameras, for `omnimocap sync --flash`")
    parser.add_argument("--kinect-model", choices=tuple(KINECT_MODELS), default="azure",
                        help="the Kinects' device model: azure (Azure Kinect DK) or femto-bolt (Orbbec Femto Bolt through "
                             "Orbbec's K4A wrapper: 80x51 deg colour, epoch-like device times, start offsets of minutes)")
    parser.add_argument("--realism", choices=("field", "ideal"), default="field",
                        help="field (default): the Kinects make k4abt's errors (joint-definition bias, noisy hands, "
                             "mirrored bodies, new and swapped ids, drop-outs); ideal: none of them")
    parser.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty OUT_DIR")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from omnimocap.sim.simulate import SimConfig, simulate_session

    flashes = _checked_args(args)
    config = SimConfig(seconds=args.seconds, people=args.people, kinects=args.kinects, seed=args.seed,
                       pano_width=args.pano_width, kinect_noise_mm=args.kinect_noise_mm,
                       kinect_video=not args.no_kinect_video, board=args.board, flashes=flashes,
                       kinect_model=args.kinect_model, realism=args.realism, overwrite=args.overwrite)
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
    if args.pano_width < 64:
        raise InputError(f"--pano-width {args.pano_width} is too small", fix="use at least 64 pixels")
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
    if args.board and args.no_kinect_video:
        raise InputError("--board needs the Kinect recordings", fix="drop --no-kinect-video")
    return flashes
