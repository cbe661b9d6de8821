"""Command-line options shared by several verbs, defined once."""

from __future__ import annotations

import argparse
from pathlib import Path

from omnimocap.apps.config_cli import add_config_options, config_from_args
from omnimocap.errors import UserError

PANO_CONFIG = "omnimocap.capture.pano_open:PanoConfig"
PANO_SOURCES = ("pano_uvc", "pano_url", "pano_gst", "pano_file")
PANO_SETTINGS = ("pano_size", "pano_fps", "pano_fourcc", "pano_latency_ms", "pano_lenses")


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


def add_pano_arguments(parser: argparse.ArgumentParser) -> None:
    """The 360 camera options of ``record`` and ``gui`` (:class:`PanoConfig` fields): which camera,
    at most one, and its settings."""
    add_config_options(parser.add_mutually_exclusive_group(), PANO_CONFIG, PANO_SOURCES,
                       metavars={"pano_uvc": "DEV", "pano_url": "URL", "pano_gst": "PIPELINE", "pano_file": "F"})
    add_config_options(parser.add_argument_group("360 camera settings"), PANO_CONFIG, PANO_SETTINGS,
                       metavars={"pano_size": "WxH", "pano_fps": "FPS", "pano_fourcc": "FOURCC",
                                "pano_latency_ms": "MS", "pano_lenses": "JSON"})


def pano_config(args: argparse.Namespace):
    """The :class:`~omnimocap.capture.pano_open.PanoConfig` of the parsed ``--pano-*`` options."""
    return config_from_args(PANO_CONFIG, args, PANO_SOURCES + PANO_SETTINGS)
