"""``omnimocap evaluate RESULT_DIR --truth SESSION_DIR``: metrics against simulated ground truth."""

from __future__ import annotations

import argparse
import json

from omnimocap.apps.options import existing_dir


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="compare a result with a simulated session's ground truth",
                       description="Print one JSON object of metrics (also written to RESULT_DIR/metrics.json).")
    p.add_argument("result", metavar="RESULT_DIR")
    p.add_argument("--truth", required=True, metavar="SESSION_DIR", help="the simulated session (with truth/)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from omnimocap.fusion.evaluate import evaluate

    existing_dir(args.result, "results folder")
    print(json.dumps(evaluate(args.result, args.truth), indent=2))
    return 0
