"""``omnimocap calibrate-lens``: both lenses of a dual-fisheye camera from a simulated raw recording
of the ChArUco board (sim/fisheye.py), written as the lens model a session names; bad inputs
refused in one line."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from omnimocap.apps.cli import main
from omnimocap.calibration.board import BoardSpec
from omnimocap.capture.dual_fisheye import load_dual_fisheye
from omnimocap.geometry.cameras import R_CAM_BACK_LENS, DualFisheyeCamera
from omnimocap.geometry.transforms import axis_angle_to_matrix
from omnimocap.sim.fisheye import board_frame, board_poses
from tests.tools.cli import one_line_error

TRUE = DualFisheyeCamera.nominal(1024, k=(0.03, -0.006, 0.0008, -0.00005), baseline_m=0.03,
                                 R_back=axis_angle_to_matrix(np.radians([0.6, -0.4, 0.9])) @ R_CAM_BACK_LENS)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A folder of raw frames: the board before each lens and across the seam (sim/fisheye.py
    ``board_poses``)."""
    folder = tmp_path_factory.mktemp("board_recording")
    spec = BoardSpec()
    for i, T in enumerate(board_poses(spec, np.random.default_rng(7))):
        cv2.imwrite(str(folder / f"frame_{i:03d}.png"), board_frame(TRUE, spec, T))
    return folder


@pytest.mark.slow
def test_the_lens_model_recovers_both_lenses_and_the_baseline(recording, tmp_path, capsys):
    """About 90 s: 23 frames of 1024 px rendered, then the fit (smaller lenses lose the corners at
    the image circle's edge, where both lenses see the board)."""
    out = tmp_path / "lenses.json"
    assert main(["calibrate-lens", str(recording), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "front lens: reprojection RMS" in printed and "back lens: reprojection RMS" in printed
    rms = [float(line.split("RMS ")[1].split(" px")[0]) for line in printed.splitlines() if "RMS" in line]
    assert len(rms) == 2 and max(rms) < 0.5, printed
    camera = load_dual_fisheye(out)
    baseline = camera.lenses[1].t_cam_lens - camera.lenses[0].t_cam_lens
    # The 30 mm between the optical centres, from boards across the seam in several directions and at
    # two distances: to within 3 mm (measured: 29.5 mm, 0.6 mm off as a vector).
    assert np.linalg.norm(baseline - [0.0, 0.0, -0.03]) < 0.003, baseline
    assert f"{1000 * np.linalg.norm(baseline):.1f} mm" in printed
    R_err = camera.lenses[1].R_cam_lens.T @ TRUE.lenses[1].R_cam_lens
    # The back lens's orientation relative to the front one to within 0.2 deg (measured: 0.11 deg).
    assert np.degrees(np.arccos(np.clip((np.trace(R_err) - 1) / 2, -1, 1))) < 0.2
    assert (camera.width, camera.height) == (TRUE.width, TRUE.height)


def test_bad_inputs_are_refused_in_one_line(tmp_path, capsys):
    out = str(tmp_path / "lenses.json")
    assert "not found" in one_line_error(capsys, ["calibrate-lens", str(tmp_path / "missing"), "--out", out])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no image files" in one_line_error(capsys, ["calibrate-lens", str(empty), "--out", out])
    stitched = tmp_path / "stitched"
    stitched.mkdir()
    cv2.imwrite(str(stitched / "pano.png"), np.full((300, 900, 3), 100, np.uint8))
    line = one_line_error(capsys, ["calibrate-lens", str(stitched), "--out", out])
    assert "not two square fisheye images side by side" in line
    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(4):
        cv2.imwrite(str(blank / f"{i}.png"), np.full((256, 512, 3), 128, np.uint8))
    assert "sees the board in 0 frames" in one_line_error(capsys, ["calibrate-lens", str(blank), "--out", out])
    (tmp_path / "lenses.json").write_text("{}")
    assert "exists" in one_line_error(capsys, ["calibrate-lens", str(blank), "--out", out])
