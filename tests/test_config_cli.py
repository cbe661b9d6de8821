"""Options generated from the configuration dataclasses agree with the library's defaults."""

import argparse
import dataclasses

import pytest

from omnimocap.apps import cmd_process
from omnimocap.apps.config_cli import add_config_options, config_class, config_fields, config_from_args

# target -> the values of its fields without a default
TARGETS = {
    "omnimocap.fusion.pipeline:ProcessConfig": {},
    "omnimocap.capture.recorder:RecordConfig": {},
    "omnimocap.capture.pano_open:PanoConfig": {},
    "omnimocap.fusion.export_results:ExportConfig": {"format": "amass"},
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
