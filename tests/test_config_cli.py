"""Options generated from the configuration dataclasses agree with the library's defaults."""

import argparse
import dataclasses
import json

import numpy as np
import pytest

from omnimocap.apps import cmd_process
from omnimocap.apps.config_cli import add_config_options, config_class, config_fields, config_from_args
from omnimocap.capture.rig import Rig, TimeMap

# target -> the values of its fields without a default
TARGETS = {
    "omnimocap.fusion.pipeline:ProcessConfig": {},
    "omnimocap.capture.recorder:RecordConfig": {},
    "omnimocap.capture.pano_open:PanoConfig": {},
    "omnimocap.fusion.export_results:ExportConfig": {"format": "amass"},
    "omnimocap.sim.simulate:SimConfig": {},
    "omnimocap.capture.kinect_live:KinectDeviceConfig": {},
    **{f"omnimocap.calibration.config:{name}": {} for name in (
        "CalibrateConfig", "SyncConfig", "KinectPosesConfig", "ObserverConfig", "MarkerlessConfig", "BoardConfig",
        "MotionSyncConfig", "FlashSyncConfig", "RobustConfig")},
}


@pytest.mark.parametrize("target", TARGETS)
def test_source_defaults_are_the_dataclass_defaults(target):
    cls = config_class(target)
    instance = cls(**TARGETS[target])
    fields = config_fields(target)
    assert fields, "no scalar field read from the source"
    for name, spec in fields.items():
        assert getattr(instance, name) == spec.default, name
        assert isinstance(spec.default, (spec.kind, type(None))), name
    scalar = {f.name for f in dataclasses.fields(cls)
              if isinstance(getattr(instance, f.name), (bool, int, float, str)) and f.name not in TARGETS[target]}
    assert scalar <= set(fields), f"scalar fields not read from the source: {scalar - set(fields)}"


def test_process_options_round_trip():
    parser = argparse.ArgumentParser()
    add_config_options(parser, cmd_process.CONFIG, cmd_process.OPTIONS, choices=cmd_process.CHOICES)
    default = config_from_args(cmd_process.CONFIG, parser.parse_args([]), cmd_process.OPTIONS)
    assert default == config_class(cmd_process.CONFIG)()
    args = parser.parse_args(["--hands", "sim", "--no-depth-cue", "--hand-noise-mm", "2.5", "--gender", "male"])
    config = config_from_args(cmd_process.CONFIG, args, cmd_process.OPTIONS)
    assert (config.hands, config.depth_cue, config.hand_noise_mm, config.gender) == ("sim", False, 2.5, "male")
    assert config.smoothing is True
    with pytest.raises(SystemExit):
        parser.parse_args(["--hands", "mediapipe"])


def test_help_is_the_field_docstring():
    parser = argparse.ArgumentParser()
    add_config_options(parser, cmd_process.CONFIG, ["view_size", "depth_cue"])
    text = " ".join(parser.format_help().split())
    assert "--view-size VIEW_SIZE Side of the wrist-centred views, pixels. (default: 256)" in text
    assert "--no-depth-cue turn off: Refine each hand's depth" in text


def _calibration_parser() -> argparse.ArgumentParser:
    from omnimocap.apps import cmd_calibrate

    parser = argparse.ArgumentParser()
    cmd_calibrate.register(parser.add_subparsers(dest="verb"))
    return parser


def test_calibrate_and_sync_options_build_their_configs():
    from omnimocap.calibration.config import CalibrateConfig, SyncConfig

    calls = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("omnimocap.calibration.session.calibrate_session", lambda d, c, **kw: calls.append((d, c, kw)) or {})
        mp.setattr("omnimocap.calibration.sync.sync_session", lambda d, c, **kw: calls.append((d, c, kw)) or {})
        args = _calibration_parser().parse_args(["calibrate", "S"])
        args.func(args)
        args = _calibration_parser().parse_args(
            ["calibrate", "S", "--method", "board", "--kinects", "rig", "--observer", "simulated-detector",
             "--stride", "3", "--search-frames", "60", "--noise-deg", "0.5", "--refine", "--quiet"])
        args.func(args)
        args = _calibration_parser().parse_args(["sync", "S", "--flash", "--device", "cuda", "--quiet"])
        args.func(args)
    (_, default, kw), (_, config, _), (_, sync, sync_kw) = calls
    assert default == CalibrateConfig() and kw == {"progress": True}
    assert (config.method, config.refine, config.kinect_poses.kinects, config.observer.observer, config.observer.stride,
            config.markerless.search_frames, config.observer.noise_deg) == ("board", True, "rig", "simulated-detector",
                                                                           3, 60, 0.5)
    assert config.board == CalibrateConfig().board and config.robust == CalibrateConfig().robust
    assert sync.flash and sync.observer.device == "cuda" and sync.motion == SyncConfig().motion
    assert sync_kw == {"progress": False}
    with pytest.raises(SystemExit):
        _calibration_parser().parse_args(["calibrate", "S", "--kinects", "guess"])


def test_calibrate_help_is_the_field_docstrings(capsys):
    with pytest.raises(SystemExit):
        _calibration_parser().parse_args(["calibrate", "--help"])
    sub = " ".join(capsys.readouterr().out.split())
    assert "--noise-deg NOISE_DEG Angular noise of the simulated observer, degrees (simulated sessions only). " \
           "(default: 0.2)" in sub
    assert "--search-frames SEARCH_FRAMES 360 frames searched whole for hands" in sub


def test_rig_files_without_configs_still_load(tmp_path):
    rig = Rig({"pano": np.eye(4)}, {"pano": TimeMap(1.0, 0.5)}, method="sync", configs={"sync": {"flash": True}})
    rig.save(tmp_path / "rig.json")
    assert Rig.load(tmp_path / "rig.json").configs == {"sync": {"flash": True}}
    old = json.loads((tmp_path / "rig.json").read_text())
    del old["configs"]
    (tmp_path / "rig.json").write_text(json.dumps(old))
    loaded = Rig.load(tmp_path / "rig.json")
    assert loaded.configs == {} and loaded.time_map("pano").b == 0.5
