"""The options of ``record``, ``gui``, ``export`` and ``batch`` generated from their configuration
dataclasses: defaults that are the library's, values that reach the config, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from omnimocap.apps import cmd_batch, cmd_export, cmd_record
from omnimocap.apps.cli import build_parser
from omnimocap.apps.config_cli import config_from_args
from omnimocap.apps.options import pano_config
from omnimocap.capture.pano_open import PanoConfig, pano_size, pano_source
from omnimocap.capture.recorder import RecordConfig
from omnimocap.capture.sources import SessionClock
from omnimocap.errors import UserError
from tests.tools.cli import one_line_error


def _parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_record_defaults_are_the_configs_defaults():
    args = _parse("record", "out")
    assert config_from_args(cmd_record.CONFIG, args, cmd_record.OPTIONS) == RecordConfig()
    assert pano_config(args) == PanoConfig() and not PanoConfig().given


def test_record_options_reach_the_configs():
    args = _parse("record", "out", "--seconds", "5", "--stop-free-gb", "0.5", "--disconnect-timeout-s", "1",
                  "--overwrite", "--pano-uvc", "0", "--pano-size", "3840x1920", "--pano-latency-ms", "40")
    config = config_from_args(cmd_record.CONFIG, args, cmd_record.OPTIONS)
    assert (config.seconds, config.min_free_gb, config.stop_free_gb, config.disconnect_timeout_s, config.overwrite) \
        == (5.0, 2.0, 0.5, 1.0, True)
    pano = pano_config(args)
    assert pano.given and (pano.pano_uvc, pano.pano_size, pano.pano_fourcc, pano.pano_latency_ms) \
        == ("0", "3840x1920", "MJPG", 40.0)
    with pytest.raises(SystemExit):
        _parse("record", "out", "--pano-uvc", "0", "--pano-url", "rtsp://camera/live")


def test_gui_takes_the_same_pano_options():
    assert pano_config(_parse("gui", "--pano-file", "v.mkv", "--pano-fps", "29.97")) == \
        PanoConfig(pano_file="v.mkv", pano_fps=29.97)


def test_pano_source_from_a_config(tmp_path):
    assert pano_size("3840x1920") == (3840, 1920) and pano_size(None) == (None, None)
    assert pano_source(PanoConfig(), SessionClock()) is None
    with pytest.raises(UserError, match="more than one 360 camera"):
        pano_source(PanoConfig(pano_uvc="0", pano_url="rtsp://camera/live"), SessionClock())


def test_record_errors_are_one_line(tmp_path, capsys):
    line = one_line_error(capsys, ["record", str(tmp_path / "s"), "--pano-uvc", "0", "--pano-size", "3840",
                                   "--min-free-gb", "0"])
    assert "--pano-size '3840' is not WIDTHxHEIGHT" in line
    line = one_line_error(capsys, ["record", str(tmp_path / "s"), "--pano-file", "v.mkv", "--disconnect-timeout-s", "0"])
    assert "--disconnect-timeout-s 0 is not a positive time" in line
    line = one_line_error(capsys, ["record", str(tmp_path / "s"), "--simulate", "--pano-uvc", "0"])
    assert "--simulate records the simulated rig only" in line
    assert not (tmp_path / "s").exists()


def test_export_options():
    from omnimocap.fusion.export_results import FORMATS, ExportConfig

    assert cmd_export.FORMATS == FORMATS
    args = _parse("export", "result", "--format", "bvh")
    assert config_from_args(cmd_export.CONFIG, args, cmd_export.OPTIONS, format=args.format) == ExportConfig("bvh")
    args = _parse("export", "result", "--format", "amass", "--fps", "60", "--y-up", "--models", "m")
    config = config_from_args(cmd_export.CONFIG, args, cmd_export.OPTIONS, format=args.format)
    assert (config.fps, config.y_up, config.models, config.smplx_model) == (60.0, True, "m", None)


def test_batch_defaults_are_the_configs_defaults():
    from omnimocap.fusion.batch import BatchConfig
    from omnimocap.fusion.pipeline import ProcessConfig

    args = _parse("batch", "s1", "--out", "o")
    assert config_from_args(cmd_batch.BATCH_CONFIG, args, cmd_batch.BATCH_OPTIONS, out=Path("o")) == \
        BatchConfig(out=Path("o"))
    assert config_from_args(cmd_batch.PROCESS_CONFIG, args, cmd_batch.PROCESS_OPTIONS) == ProcessConfig()
    args = _parse("batch", "s1", "--out", "o", "--hands", "sim", "--no-preview", "--workers", "3")
    config = config_from_args(cmd_batch.PROCESS_CONFIG, args, cmd_batch.PROCESS_OPTIONS)
    assert (config.hands, config.preview, args.workers) == ("sim", False, 3)
