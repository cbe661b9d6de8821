"""The rig file stores the 360 camera's optics (``capture.rig.Rig.pano_optics``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from omnimocap.capture.rig import Rig, TimeMap
from omnimocap.errors import InputError
from omnimocap.geometry.pano_optics import PanoOptics

FIELD_OPTICS = PanoOptics(baseline_m=0.03, readout_s=0.025, exposure_s=0.01, fov_deg=195.0, blend_deg=3.0)


def test_optics_round_trip(tmp_path):
    rig = Rig({"pano": np.eye(4)}, {"pano": TimeMap(1.0, 0.25)}, method="board", pano_optics=FIELD_OPTICS)
    rig.save(tmp_path / "rig.json")
    assert json.loads((tmp_path / "rig.json").read_text())["pano_optics"]["baseline_m"] == 0.03
    assert Rig.load(tmp_path / "rig.json").pano_optics == FIELD_OPTICS


def test_old_rig_file_is_the_ideal_camera(tmp_path):
    # a rig.json as written before the optics were stored: no "pano_optics" record
    old = {"method": "truth", "is_truth": True, "sensors": {"pano": {"T_world_sensor": np.eye(4).tolist()}},
           "time_maps": {"pano": {"a": 1.0, "b": 0.0, "residual_rms_ms": None}}, "residuals": {}, "inputs": {}}
    (tmp_path / "rig.json").write_text(json.dumps(old))
    optics = Rig.load(tmp_path / "rig.json").pano_optics
    assert optics == PanoOptics.ideal() and optics.is_ideal


@pytest.mark.parametrize("record", [{"baseline_m": -0.03}, {"readout_s": float("nan")}, ["not", "a", "record"],
                                    {"baseline_m": "thirty"}])
def test_malformed_optics_are_one_user_error(tmp_path, record):
    rig = Rig({"pano": np.eye(4)}, {"pano": TimeMap()}).to_json()
    rig["pano_optics"] = record
    (tmp_path / "rig.json").write_text(json.dumps(rig))
    with pytest.raises(InputError, match="malformed rig calibration") as exc:
        Rig.load(tmp_path / "rig.json")
    assert "rig.json" in str(exc.value) and "\n" not in str(exc.value)


def test_simulated_rig_carries_the_cameras_true_optics(tmp_path):
    from omnimocap.capture.truth import Truth
    from omnimocap.geometry.pano_optics import PanoOptics
    from omnimocap.sim.simulate import SimConfig, simulate_session

    out = tmp_path / "s"
    simulate_session(out, SimConfig(seconds=0.5, people=1, kinects=1, pano_width=128, kinect_video=False, realism="field",
                                    seed=1))
    truth = Truth(out)
    expected = PanoOptics(baseline_m=0.03, readout_s=0.025, exposure_s=0.01)
    assert truth.pano_optics() == expected
    assert truth.rig().pano_optics == expected
    assert Rig.load(out / "rig.json").pano_optics == expected
