"""``omnimocap batch SESSION... --out DIR``: process many sessions, resumably, on Ray or in this process."""

from __future__ import annotations

import argparse
from pathlib import Path

from omnimocap.apps.options import add_device, add_models, add_quiet
from omnimocap.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("batch", help="process many sessions (resumable; chunks of long sessions in parallel on Ray)",
                       description="Process every session into OUT/<session name>. Finished sessions are skipped on "
                                   "a re-run and finished chunks of a session are kept, so a killed batch loses only "
                                   "the chunks in flight; a failing session is reported in one line and the others go "
                                   "on. Writes OUT/batch_report.json and prints a table.")
    p.add_argument("sessions", nargs="+", metavar="SESSION",
                   help="session folders, folders of sessions, or globs (quote them)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the results folders and batch_report.json")
    p.add_argument("--workers", type=int, default=1,
                   help="CPU workers of a local Ray cluster started on 127.0.0.1; 1 runs in this process "
                        "without Ray (default: 1)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="join a running Ray cluster (the address `ray start --head` prints) instead")
    p.add_argument("--chunk-s", type=float, default=None, metavar="S",
                   help="core length of a chunk of a session, seconds (default: 60)")
    p.add_argument("--overlap-s", type=float, default=None, metavar="S",
                   help="frames processed either side of a chunk, seconds (default: 3)")
    p.add_argument("--hands", default="wilor", choices=["wilor", "sim"],
                   help="hand backend, as for `process` (default: wilor)")
    add_device(p)
    p.add_argument("--no-preview", action="store_true", help="do not write views_preview.png")
    add_models(p)
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from omnimocap.fusion.batch import BatchConfig, find_sessions, format_table, run_batch
    from omnimocap.fusion.chunks import DEFAULT_CHUNK_S, DEFAULT_OVERLAP_S
    from omnimocap.fusion.pipeline import ProcessConfig

    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}", fix="pass --workers 1 or more")
    chunk_s = DEFAULT_CHUNK_S if args.chunk_s is None else args.chunk_s
    overlap_s = DEFAULT_OVERLAP_S if args.overlap_s is None else args.overlap_s
    if chunk_s <= 0 or overlap_s < 0:
        raise UserError("--chunk-s must be positive and --overlap-s not negative", fix="e.g. --chunk-s 60 --overlap-s 3")
    sessions = find_sessions(args.sessions)
    config = ProcessConfig(hands=args.hands, device=args.device, models=args.models, preview=not args.no_preview)
    batch = BatchConfig(out=Path(args.out), workers=args.workers, ray_address=args.ray_address,
                        chunk_s=chunk_s, overlap_s=overlap_s)
    statuses = run_batch(sessions, config, batch, progress=not args.quiet)
    print(format_table(statuses))
    return 1 if any(s.status == "failed" for s in statuses) else 0
