"""The ``omnimocap`` command line.

Each verb lives in its own module under ``omnimocap.apps`` that defines ``register(subparsers)``;
``register`` adds the verb's parser and sets ``func`` (a callable taking the parsed namespace and
returning an exit code). A :class:`~omnimocap.errors.UserError` raised anywhere ends the command
with its one line on stderr and exit code 2, never a traceback; so does an operating-system error the
user can fix (a full disk, a folder without write permission: :func:`~omnimocap.errors.os_error_line`),
translated here and nowhere else.

Verb modules import only the standard library, numpy and light omnimocap modules at import time;
heavy libraries (torch, OpenCV, ultralytics, Open3D, PyAV, SciPy) are imported by the functions that
need them, so ``--version``, ``--help`` and a verb's own ``--help`` start in well under a second.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from omnimocap import __version__
from omnimocap.errors import UserError, os_error_line

# Modules that contribute verbs, in the order `omnimocap --help` lists them.
VERB_MODULES = (
    "omnimocap.apps.cmd_demo",
    "omnimocap.apps.cmd_simulate",
    "omnimocap.apps.cmd_process",
    "omnimocap.apps.cmd_batch",
    "omnimocap.apps.cmd_evaluate",
    "omnimocap.apps.cmd_inspect",
    "omnimocap.apps.cmd_calibrate",
    "omnimocap.apps.cmd_calibrate_lens",
    "omnimocap.apps.cmd_export",
    "omnimocap.apps.cmd_models",
    "omnimocap.apps.cmd_record",
    "omnimocap.apps.cmd_track",
    "omnimocap.apps.cmd_gui",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omnimocap",
        description="Whole-body capture from Azure Kinect body tracking and a 360 camera.",
    )
    parser.add_argument("--version", action="version", version=f"omnimocap {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in VERB_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a verb not built yet in this checkout
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"omnimocap {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        line = os_error_line(exc)
        if line is None:
            raise
        print(f"omnimocap {args.verb}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"omnimocap {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
