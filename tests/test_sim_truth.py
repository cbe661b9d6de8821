"""The ground truth folder (capture/truth.py): what the writer writes reads back equal, a session
without truth is one clear line, and the k4abt joint model answers the same for any joint subset."""

from __future__ import annotations

import numpy as np
import pytest

from omnimocap.capture.rig import Rig, TimeMap
from omnimocap.capture.session import Session
from omnimocap.capture.truth import MOTION_FILE, Truth, kinect_joints_from_truth, open_truth
from omnimocap.data.skeletons import KINECT_INDEX, KINECT_JOINTS, SMPLX_INDEX
from omnimocap.errors import InputError
from omnimocap.geometry.transforms import axis_angle_to_matrix, make_pose
from omnimocap.hands.sim_backend import SimHandObserver
from tests.tools.cli import one_line_error


def _motion(rng: np.random.Generator) -> dict[str, np.ndarray]:
    P, N = 2, 7
    return {"t_session": np.arange(N) / 240.0,
            "smplx_joints": rng.normal(size=(P, N, 55, 3)),
            "smplx_local_rotmats": rng.normal(size=(P, N, 55, 3, 3)).astype(np.float32),
            "hand_visible": rng.random((P, N, 2)) < 0.5,
            "kinect_frame_t_session_000000000001": rng.random(3)}


def _rig() -> Rig:
    rig = Rig(method="truth", is_truth=True)
    rig.T_world_sensor["pano"] = make_pose(axis_angle_to_matrix(np.array([0.1, -0.2, 0.3])), np.array([0.1, 1.1, 0.0]))
    rig.T_world_sensor["kinect_000000000001"] = make_pose(np.eye(3), np.array([0.5, 1.2, -2.5]))
    rig.time_maps["pano"] = TimeMap(1.0003, -12.5)
    return rig


def test_what_the_writer_writes_reads_back_equal(tmp_path):
    motion = _motion(np.random.default_rng(0))
    records = {"kinects": {"kinects": [{"serial": "000000000001", "T_world_color": np.eye(4).tolist()}]},
               "board": {"holds_t_session": [[0.1, 0.5]]}, "flashes": {"t_session": [1.0], "hold_s": 0.5},
               "realism": {"realism": "ideal", "kinects": {"000000000001": {"people": 2}}}}
    writer = Truth(tmp_path / "s")
    assert not writer.exists()
    writer.write_motion(motion)
    writer.write_rig(_rig())
    writer.write_kinects(records["kinects"])
    writer.write_board(records["board"])
    writer.write_flashes(records["flashes"])
    writer.write_realism(records["realism"])

    truth = open_truth(tmp_path / "s")
    back = truth.motion()
    assert back.keys() == motion.keys()
    for key, value in motion.items():
        assert back[key].dtype == value.dtype, key
        np.testing.assert_array_equal(back[key], value)
    subset = truth.motion(["hand_visible"])
    assert list(subset) == ["hand_visible"]
    assert truth.rig().to_json() == _rig().to_json()
    assert (truth.kinects(), truth.board(), truth.flashes(), truth.realism()) == (
        records["kinects"], records["board"], records["flashes"], records["realism"])

    writer.copy_to(tmp_path / "replay")
    np.testing.assert_array_equal(open_truth(tmp_path / "replay").motion()["smplx_joints"], motion["smplx_joints"])


def test_a_session_without_truth_is_one_clear_line(tmp_path, capsys):
    Session.create(tmp_path / "real").mark_complete()
    with pytest.raises(InputError) as info:
        open_truth(tmp_path / "real", fix="only simulated sessions can be evaluated")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "real"))
    assert "ground truth" in message and "only simulated sessions can be evaluated" in message
    with pytest.raises(InputError, match="ground truth"):
        SimHandObserver(tmp_path / "real")
    (tmp_path / "result").mkdir()
    line = one_line_error(capsys, ["evaluate", str(tmp_path / "result"), "--truth", str(tmp_path / "real")])
    assert str(tmp_path / "real") in line and "ground truth" in line


def test_an_incomplete_or_corrupt_motion_file_is_one_clear_line(tmp_path):
    truth = Truth(tmp_path / "s")
    truth.write_motion(_motion(np.random.default_rng(1)))
    with pytest.raises(InputError, match="lacks hand_joints") as info:
        truth.motion(["t_session", "hand_joints"])
    assert "\n" not in str(info.value)
    (truth.dir / MOTION_FILE).write_bytes((truth.dir / MOTION_FILE).read_bytes()[:200])
    with pytest.raises(InputError, match="truncated or corrupt"):
        truth.motion()


def test_kinect_joint_model_is_the_same_for_any_subset_of_joints():
    rng = np.random.default_rng(2)
    smplx = rng.normal(size=(2, 5, 55, 3))
    hands = rng.normal(size=(2, 5, 2, 21, 3))
    R_head = axis_angle_to_matrix(rng.normal(size=(2, 5, 3)))
    full = kinect_joints_from_truth(smplx, hands, R_head)
    assert full.shape == (2, 5, len(KINECT_JOINTS), 3) and np.all(np.isfinite(full))
    subset = [KINECT_INDEX[n] for n in ("THUMB_RIGHT", "PELVIS", "NOSE", "WRIST_LEFT", "EYE_RIGHT")]
    np.testing.assert_array_equal(kinect_joints_from_truth(smplx, hands, R_head, joints=subset), full[..., subset, :])
    # the wrist is the SMPL-X wrist; the nose sits 11 cm in front of the head joint, along the head's z
    np.testing.assert_array_equal(full[..., KINECT_INDEX["WRIST_LEFT"], :], smplx[..., SMPLX_INDEX["left_wrist"], :])
    nose = full[..., KINECT_INDEX["NOSE"], :] - smplx[..., SMPLX_INDEX["head"], :]
    np.testing.assert_allclose(np.einsum("...ji,...j->...i", R_head, nose), np.broadcast_to([0.0, 0.03, 0.11], nose.shape),
                               atol=1e-12)
    without_head = kinect_joints_from_truth(smplx, hands)
    assert np.all(np.isnan(without_head[..., KINECT_INDEX["NOSE"], :]))
    np.testing.assert_array_equal(without_head[..., KINECT_INDEX["HAND_LEFT"], :], full[..., KINECT_INDEX["HAND_LEFT"], :])


def test_only_the_truth_module_names_the_truth_files():
    import ast
    from pathlib import Path

    from omnimocap.capture import truth

    names = {truth.MOTION_FILE, truth.KINECTS_FILE, truth.BOARD_FILE, truth.FLASHES_FILE, truth.REALISM_FILE}
    repo = Path(truth.__file__).resolve().parents[1]
    found = []
    for package in ("data", "geometry", "capture", "hands", "calibration", "fusion", "sim", "apps"):
        for path in sorted((repo / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in names:
                    found.append(f"{path.relative_to(repo)}:{node.lineno}")
    assert found and all(f.startswith("capture/truth.py:") for f in found), found
