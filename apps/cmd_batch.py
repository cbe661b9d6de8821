"""``omnimocap batch SESSION... --out DIR``: process many sessions, resumably, on Ray or in this process."""

from __future__ import annotations

import argparse
from pathlib import Path

from omnimocap.apps.cmd_process import CHOICES
from omnimocap.apps.config_cli import add_config_options, config_from_args
from omnimocap.apps.options import add_quiet
from omnimocap.errors import UserError

BATCH_CONFIG = "omnimocap.fusion.batch:BatchConfig"
# BatchConfig fields that are options; chunk_s and overlap_s are declared by hand below because their
# defaults are named constants of fusion.chunks, which the options reader does not evaluate.
BATCH_OPTIONS = ("workers", "ray_address")
PROCESS_CONFIG = "omnimocap.fusion.pipeline:ProcessConfig"
# ProcessConfig fields that are options of ``batch`` (as for ``process``).
PROCESS_OPTIONS = ("hands", "device", "preview", "models")


def register(sub) -> None:
    p = sub.add_parser("batch", help="process many sessions (resumable; chunks of long sessions in parallel on Ray)",
                       description="Process every session into OUT/<session name>. Finished sessions are skipped on "
                                   "a re-run and finished chunks of a session are kept, so a killed batch loses only "
                                   "the chunks in flight; a failing session is reported in one line and the others go "
                                   "on. Writes OUT/batch_report.json and prints a table.")
    p.add_argument("sessions", nargs="+", metavar="SESSION",
                   help="session folders, folders of sessions, or globs (quote them)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the results folders and batch_report.json")
    add_config_options(p, BATCH_CONFIG, BATCH_OPTIONS, metavars={"ray_address": "ADDR"})
    p.add_argument("--chunk-s", type=float, default=None, metavar="S",
                   help="core length of a chunk of a session, seconds (default: 60)")
    p.add_argument("--overlap-s", type=float, default=None, metavar="S",
                   help="frames processed either side of a chunk, seconds (default: 3)")
    add_config_options(p, PROCESS_CONFIG, PROCESS_OPTIONS, choices=CHOICES, metavars={"models": "DIR"})
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from omnimocap.fusion.batch import find_sessions, format_table, run_batch

    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}", fix="pass --workers 1 or more")
    if (args.chunk_s is not None and args.chunk_s <= 0) or (args.overlap_s is not None and args.overlap_s < 0):
        raise UserError("--chunk-s must be positive and --overlap-s not negative", fix="e.g. --chunk-s 60 --overlap-s 3")
    chunks = {k: getattr(args, k) for k in ("chunk_s", "overlap_s") if getattr(args, k) is not None}
    batch = config_from_args(BATCH_CONFIG, args, BATCH_OPTIONS, out=Path(args.out), **chunks)
    config = config_from_args(PROCESS_CONFIG, args, PROCESS_OPTIONS)
    statuses = run_batch(find_sessions(args.sessions), config, batch, progress=not args.quiet)
    print(format_table(statuses))
    return 1 if any(s.status == "failed" for s in statuses) else 0
