"""`calibrate --method board` places the non-reference Kinects from the board their colour cameras share
with the reference."""

from __future__ import annotations

import json

from omnimocap.apps.cli import main
from omnimocap.capture.rig import Rig
from omnimocap.sim.simulate import SimConfig, simulate_session


def test_board_places_the_other_kinect(tmp_path, capsys):
    root = tmp_path / "session"
    simulate_session(root, SimConfig(seconds=3.5, people=1, kinects=2, seed=3, pano_width=1920, board=True))
    assert main(["calibrate", str(root), "--method", "board"]) == 0
    capsys.readouterr()
    rig = Rig.load(root / "rig.json")
    other = "000000000002"
    residuals = rig.residuals["kinects"][other]
    used = rig.inputs["kinect_poses_from_board"][other]
    assert residuals["method"] == "board" and residuals["poses_used"] == len(used) >= 3
    assert residuals["reference_rms_deg"] < 0.1 and residuals["other_rms_deg"] < 0.1
    assert "skeletons" in residuals  # the skeleton-based estimate it replaced is kept for comparison
    result = tmp_path / "result"
    assert main(["process", str(root), "--out", str(result), "--hands", "sim", "--quiet", "--no-preview"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(result), "--truth", str(root)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    print(metrics)
    assert metrics["calibration.kinect_rotation_error_deg"] <= 0.2, metrics["calibration.kinect_rotation_error_deg"]
    assert metrics["calibration.kinect_translation_error_mm"] <= 5.0, metrics["calibration.kinect_translation_error_mm"]
