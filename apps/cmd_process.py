"""``omnimocap process SESSION_DIR --out RESULT_DIR``: run the offline pipeline on a session."""

from __future__ import annotations

import argparse
import json
import sys

from omnimocap.apps.options import add_device, add_models, add_overwrite, add_quiet, existing_dir


def register(sub) -> None:
    p = sub.add_parser("process", help="fuse a recorded or simulated session into whole-body motion",
                       description="Run the offline pipeline: Kinect bodies, wrist-centred 360 views, hands, "
                                   "lifting, SMPL-X fit and export into RESULT_DIR.")
    p.add_argument("session", metavar="SESSION_DIR")
    p.add_argument("--out", required=True, metavar="RESULT_DIR")
    p.add_argument("--hands", default="wilor", choices=["wilor", "sim"],
                   help="hand backend: wilor (real reconstruction) or sim (the simulated observer, "
                        "an instrument for simulated sessions) (default: wilor)")
    add_device(p)
    p.add_argument("--hand-noise-mm", type=float, default=0.0, help="sim observer: joint noise, mm")
    p.add_argument("--hand-noise-deg", type=float, default=0.0, help="sim observer: rotation noise, degrees")
    p.add_argument("--hand-dropout", type=float, default=0.0, help="sim observer: probability a hand is missed")
    p.add_argument("--seed", type=int, default=0, help="sim observer: noise seed")
    p.add_argument("--smplx-model", default=None, metavar="FILE",
                   help="SMPL-X model file (default: <models>/smplx/SMPLX_<GENDER>.npz if present, else a built-in skeleton)")
    p.add_argument("--gender", default="neutral", choices=["neutral", "female", "male"],
                   help="which SMPL-X file of the models folder the body is fitted on (default neutral)")
    p.add_argument("--no-preview", action="store_true", help="do not write views_preview.png")
    p.add_argument("--no-smoothing", action="store_true",
                   help="no temporal smoothing of the Kinect anchors and the fused hands")
    p.add_argument("--no-depth-cue", action="store_true",
                   help="do not use the Kinect depth maps for the hands' depth (recordings with depth only)")
    add_models(p)
    add_overwrite(p)
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from omnimocap.fusion.pipeline import ProcessConfig, process_session

    existing_dir(args.session, "session folder")
    config = ProcessConfig(
        hands=args.hands, device=args.device, hand_noise_mm=args.hand_noise_mm,
        hand_noise_deg=args.hand_noise_deg, hand_dropout=args.hand_dropout, seed=args.seed,
        models=args.models, smplx_model=args.smplx_model, gender=args.gender, preview=not args.no_preview,
        smoothing=not args.no_smoothing, depth_cue=not args.no_depth_cue)
    report = process_session(args.session, args.out, config, overwrite=args.overwrite, progress=not args.quiet)
    for note in report["notes"]:
        print(f"omnimocap process: note: {note}", file=sys.stderr)
    print(json.dumps({"out": args.out, "frames": report["frames"], "people": report["people"],
                      "hand_counts": report["hand_counts"], "timings_s": report["timings_s"]}))
    return 0
