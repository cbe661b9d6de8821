"""Command-line options shared by several verbs, defined once."""

from __future__ import annotations

import argparse
from pathlib import Path

from omnimocap.errors import UserError


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="torch device for WiLoR and the body fit (default: cpu)")


def add_models(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default=None, metavar="DIR",
                        help="models directory (default: $OMNIMOCAP_MODELS or ~/.cache/omnimocap/models)")


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing non-empty output folder")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def existing_dir(path: str, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{what} not found", path=p, fix="check the path")
    return p
