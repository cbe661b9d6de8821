"""``omnimocap demo [--out DIR]``: simulate a short session, process it, evaluate it.

Runs on a fresh machine with no hardware and no downloaded models: the session comes from the
simulated rig and the hands from the simulated observer (an instrument that returns the true hand
through WiLoR's output contract, with noise). By default the simulated Kinects make k4abt's errors
(``--realism field``: joint-definition bias, noisy hands, mirrored bodies, new and swapped ids,
drop-outs) and the 360 camera has two lenses, a rolling shutter and motion blur, so the numbers are
those of a realistic capture; ``--realism ideal`` measures the geometry of the pipeline alone: sync,
calibration, views, lifting, fitting and export. The demo's panorama is 1920 px wide at both levels
(``--pano-width``): a field session's own 3840 px makes the simulation 2.7 times slower than 1920 px
does (benchmarks/results/sim_camera.json, without the Kinect recordings), and every later step
decodes four times the pixels.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from omnimocap.apps.options import add_overwrite

DEMO_PANO_WIDTH = 1920


def register(sub) -> None:
    p = sub.add_parser("demo", help="simulate, process and evaluate a short session (no hardware needed)",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("--out", default="demo_out", metavar="DIR", help="output folder (default: ./demo_out)")
    p.add_argument("--seconds", type=float, default=15.0, help="length of the simulated session (default: 15)")
    p.add_argument("--people", type=int, default=2, help="people in the scene, 1 to 3 (default: 2)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--pano-width", type=int, default=DEMO_PANO_WIDTH,
                   help=f"width of the simulated panorama, pixels (default: {DEMO_PANO_WIDTH})")
    p.add_argument("--realism", choices=("field", "ideal"), default="field",
                   help="field (default): the Kinects make k4abt's errors; ideal: none of them")
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from omnimocap.sim.simulate import SimConfig, simulate_session
    from omnimocap.errors import UserError
    from omnimocap.fusion.evaluate import evaluate
    from omnimocap.fusion.pipeline import ProcessConfig, process_session

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UserError("demo output folder exists and is not empty", path=out,
                        fix="pass --overwrite or choose another --out")
    session_dir, result_dir = out / "session", out / "result"
    t0 = time.perf_counter()
    print(f"[1/4] simulating {args.seconds:g} s with {args.people} people ({args.realism} realism) -> {session_dir}",
          file=sys.stderr)
    simulate_session(session_dir, SimConfig(seconds=args.seconds, people=args.people, seed=args.seed,
                                            realism=args.realism, pano_width=args.pano_width, overwrite=True))
    steps = _calibrate(session_dir)
    print(f"[3/4] processing -> {result_dir}", file=sys.stderr)
    config = ProcessConfig(hands="sim", hand_noise_mm=5.0, hand_noise_deg=3.0, hand_dropout=0.1, seed=args.seed)
    process_session(session_dir, result_dir, config, overwrite=True)
    print("[4/4] evaluating against the ground truth", file=sys.stderr)
    metrics = evaluate(result_dir, session_dir)
    print(json.dumps({"realism": args.realism, "metrics": metrics, "calibration": steps,
                      "outputs": _outputs(session_dir, result_dir), "seconds": round(time.perf_counter() - t0, 1)},
                     indent=2))
    return 0


def _outputs(session_dir: Path, result_dir: Path) -> dict[str, str]:
    """Where the demo's files are."""
    return {"session": str(session_dir), "result": str(result_dir), "smplx": str(result_dir / "smplx.npz"),
            "report": str(result_dir / "report.json"), "metrics": str(result_dir / "metrics.json"),
            "views_preview": str(result_dir / "views_preview.png")}


def _calibrate(session_dir: Path) -> dict:
    """Estimate the rig instead of using the simulated truth: the world frame from the reference
    Kinect's IMU gravity and the floor in its depth, the other Kinects from the skeletons they
    share, the 360 camera's pose and clock by markerless calibration from nothing, then sync
    refined with that pose."""
    from omnimocap.calibration.session import calibrate_session
    from omnimocap.calibration.sync import sync_session

    print("[2/4] calibration (Kinects from IMU, floor and shared skeletons; 360 camera markerless) and sync",
          file=sys.stderr)
    calib = calibrate_session(session_dir)
    sync = sync_session(session_dir)
    return {"calibration": calib, "sync": sync}
