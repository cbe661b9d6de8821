"""``omnimocap models status|download|verify``: the CLI of :mod:`omnimocap.hands.model_store`."""

from __future__ import annotations

import argparse
from pathlib import Path

from omnimocap.hands.model_store import WILOR_BASE_URL, default_models_dir, run_download, run_status, run_verify


def _models_dir(args: argparse.Namespace) -> Path:
    return Path(args.models).expanduser() if args.models else default_models_dir()


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models", help="show, download and verify the WiLoR, body keypoint, MANO and SMPL-X model files",
        description="Model files live in --models DIR, else $OMNIMOCAP_MODELS, else ~/.cache/omnimocap/models.",
    )
    parser.add_argument("action", choices=("status", "download", "verify"))
    parser.add_argument("--models", default=None, help="models folder (default: $OMNIMOCAP_MODELS or ~/.cache/omnimocap/models)")
    parser.add_argument("--base-url", default=WILOR_BASE_URL, help="where wilor_final.ckpt and detector.pt are fetched from")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def run(args: argparse.Namespace) -> int:
        models = _models_dir(args)
        if args.action == "status":
            return run_status(models)
        if args.action == "download":
            return run_download(models, args.base_url, progress=not args.no_progress)
        return run_verify(models)

    parser.set_defaults(func=run)
