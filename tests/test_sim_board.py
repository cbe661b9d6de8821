"""Simulated Kinect recordings with a ChArUco board sequence, and `calibrate --method board` on them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from omnimocap.apps.cli import main
from omnimocap.calibration.board import BoardSpec, board_pose, detect_pinhole
from omnimocap.capture.rig import Rig
from omnimocap.geometry.transforms import invert_pose, relative_angle_deg
from omnimocap.capture.kinect_mkv import KinectRecording
from omnimocap.capture.session import Session, kinect_name, kinect_recording_name
from omnimocap.capture.truth import Truth
from omnimocap.sim.simulate import SimConfig, simulate_session


@pytest.fixture(scope="module")
def board_session(tmp_path_factory):
    root = tmp_path_factory.mktemp("simboard") / "session"
    # The 360 camera with one viewpoint and a global shutter: the board calibration's target holds for the
    # geometry it models (with the field camera's two lenses and rolling shutter it errs by about 1 deg).
    simulate_session(root, SimConfig(seconds=3.8, people=1, kinects=1, seed=5, pano_width=2560, kinect_noise_mm=0.0,
                                     board=True, pano_baseline_mm=0.0, pano_readout_ms=0.0, pano_exposure_ms=0.0))
    return root


def test_kinect_recording_matches_truth_and_shows_the_board(board_session):
    entry = Session.open(board_session).kinects()[0]
    assert entry.recording == kinect_recording_name(entry.serial)
    rec = KinectRecording(board_session / entry.recording)
    assert (rec.color_mode, rec.depth_mode, rec.device_serial) == ("MJPG_720P", "NFOV_2X2BINNED", entry.serial)
    cal = rec.calibration
    truth = Truth(board_session)
    truth_rig = truth.rig()
    kinect_truth = truth.kinects()["kinects"][0]
    T_world_color = np.array(kinect_truth["T_world_color"])
    # the colour pose is derivable from the rig's depth pose and the recording's calibration
    np.testing.assert_allclose(truth_rig.pose(kinect_name(entry.serial)) @ cal.T_depth_color, T_world_color, atol=1e-9)
    board = truth.board()
    holds, poses = np.array(board["holds_t_session"]), np.array(board["T_world_board"])
    t_session = truth.motion([f"kinect_frame_t_session_{entry.serial}"])[f"kinect_frame_t_session_{entry.serial}"]
    captures = list(rec.captures())
    assert len(captures) == len(t_session)
    spec = BoardSpec()
    # the middle of the first hold: the board is detected where the truth puts it
    i = int(np.argmin(np.abs(t_session - holds[0].mean())))
    cap = captures[i]
    assert cap.color.shape == (720, 1280, 3) and cap.depth.shape == (288, 320) and cap.depth.dtype == np.uint16
    valid = cap.depth[cap.depth > 0]
    assert 0.3 < valid.size / cap.depth.size and 500 <= valid.min() and valid.max() <= 3860
    assert cap.ir.dtype == np.uint16 and np.all((cap.ir > 0) == (cap.depth > 0))
    det = detect_pinhole(spec, cap.color, cal.color)
    assert len(det) >= 12
    T_color_board, _, rms = board_pose(spec, det)
    T_true = invert_pose(T_world_color) @ poses[0]
    assert rms < 0.1
    assert relative_angle_deg(T_color_board[:3, :3], T_true[:3, :3]) < 3.0
    assert np.linalg.norm(T_color_board[:3, 3] - T_true[:3, 3]) < 0.05
    # after the sequence the board is gone
    assert len(detect_pinhole(spec, captures[-1].color, cal.color)) == 0


def test_board_calibration_meets_target(board_session, tmp_path, capsys):
    assert main(["calibrate", str(board_session), "--method", "board"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "board" and out["poses_used"] >= 3
    rig = Rig.load(board_session / "rig.json")
    assert rig.method == "board" and not rig.is_truth and len(rig.inputs["poses_used"]) == out["poses_used"]
    result = tmp_path / "result"
    assert main(["process", str(board_session), "--out", str(result), "--hands", "sim", "--quiet", "--no-preview"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(result), "--truth", str(board_session)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["calibration.rotation_error_deg"] <= 0.05, metrics["calibration.rotation_error_deg"]
    assert metrics["calibration.translation_error_mm"] <= 3.0, metrics["calibration.translation_error_mm"]


def test_board_calibration_refuses_a_session_without_the_board(tmp_path, capsys):
    root = tmp_path / "noboard"
    simulate_session(root, SimConfig(seconds=0.4, people=1, kinects=1, pano_width=256))
    before = (root / "rig.json").read_bytes()
    assert main(["calibrate", str(root), "--method", "board"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "kinect_000000000001.mkv" in err and "never seen" in err and "--method markerless" in err
    assert (root / "rig.json").read_bytes() == before
