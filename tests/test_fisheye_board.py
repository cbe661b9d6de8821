"""Both lenses of a dual-fisheye camera calibrated from the ChArUco board in simulated raw frames:
intrinsics (Kannala-Brandt), the back lens's pose relative to the front one, and the one-line refusal
when the board never spans the seam."""

from __future__ import annotations

import numpy as np
import pytest

from omnimocap.calibration.board import BoardSpec, draw_board
from omnimocap.geometry.cameras import R_CAM_BACK_LENS, DualFisheyeCamera
from omnimocap.calibration.fisheye_board import calibrate_dual_fisheye, detect_halves
from omnimocap.geometry.transforms import axis_angle_to_matrix, invert_pose, look_at, make_pose
from omnimocap.errors import UserError

SPEC = BoardSpec()
KB = (0.03, -0.006, 0.0008, -0.00005)
TRUE = DualFisheyeCamera.nominal(1024, k=KB, baseline_m=0.03,
                                 R_back=axis_angle_to_matrix(np.radians([0.6, -0.4, 0.9])) @ R_CAM_BACK_LENS)


def _board_towards(direction, dist: float, rng: np.random.Generator) -> np.ndarray:
    """``T_cam_board`` of the board centred ``dist`` metres along ``direction``, facing the camera,
    tilted at random by up to ~20 deg."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    R = look_at(d, np.array([0.0, 1.0, 0.0])) @ axis_angle_to_matrix(rng.normal(scale=0.2, size=3))
    w, h = SPEC.squares_x * SPEC.square_m, SPEC.squares_y * SPEC.square_m
    return make_pose(R, d * dist - R @ np.array([w / 2, h / 2, 0.0]))


def _frame(camera: DualFisheyeCamera, T_cam_board: np.ndarray, lenses=(0, 1)) -> np.ndarray:
    halves = []
    for i, lens in enumerate(camera.lenses):
        img = np.full((lens.height, lens.width), 128, np.uint8)
        if i in lenses:
            draw_board(img, SPEC, lens, invert_pose(make_pose(lens.R_cam_lens, lens.t_cam_lens)) @ T_cam_board,
                       supersample=2)
        halves.append(img)
    return np.concatenate(halves, axis=1)


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(7)
    out = []
    for lens, sign in ((0, 1.0), (1, -1.0)):
        for direction in ([0, 0, 1], [0.6, 0.3, 1], [-0.7, -0.2, 1], [0.2, -0.8, 1], [-0.3, 0.7, 1], [1.2, 0, 1]):
            d = np.array(direction, dtype=np.float64) * [1, 1, sign]
            out.append(_frame(TRUE, _board_towards(d, 0.55, rng), lenses=(lens,)))
    seam = [_frame(TRUE, _board_towards(d, 0.6, rng)) for d in ([1, 0.1, 0.03], [-1, -0.15, -0.02], [1, -0.3, -0.04])]
    return out, seam


def test_lenses_and_their_relative_pose_from_the_board(frames):
    near_axis, seam = frames
    result = calibrate_dual_fisheye(SPEC, near_axis + seam)
    assert max(result.rms_px) < 0.5 and len(result.frames_both) >= 2
    rng = np.random.default_rng(0)
    d = rng.normal(size=(400, 3))
    for i in (0, 1):
        lens, true = result.camera.lenses[i], TRUE.lenses[i]
        d_lens = d @ np.asarray(true.R_cam_lens)
        d_lens = d_lens[np.arccos(d_lens[:, 2] / np.linalg.norm(d_lens, axis=1)) < np.radians(85)]
        err = np.linalg.norm(lens.project(d_lens) - true.project(d_lens), axis=1)
        # ~1 px (0.4 deg at 139 px per radian): a principal point shift and a turn of every board trade
        # off almost exactly in a fisheye, so the lens axis is the least determined part.
        assert np.median(err) < 1.5 and err.max() < 2.5, (i, np.median(err), err.max())
    R_err = result.camera.lenses[1].R_cam_lens.T @ TRUE.lenses[1].R_cam_lens
    assert np.degrees(np.arccos(np.clip((np.trace(R_err) - 1) / 2, -1, 1))) < 0.3
    # The 30 mm between the optical centres, from boards 0.6 m away, to about a centimetre.
    np.testing.assert_allclose(result.camera.lenses[1].t_cam_lens - result.camera.lenses[0].t_cam_lens,
                               [0, 0, -0.03], atol=0.012)


def test_without_the_board_across_the_seam_the_refusal_is_one_line(frames):
    near_axis, _ = frames
    with pytest.raises(UserError, match="no frame shows the board to both lenses") as exc:
        calibrate_dual_fisheye(SPEC, near_axis)
    assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match="lens sees the board in 0 frames"):
        calibrate_dual_fisheye(SPEC, [np.full((512, 1024), 128, np.uint8)] * 3)


def test_corners_are_found_in_each_half(frames):
    near_axis, seam = frames
    front_only = detect_halves(SPEC, near_axis[0])
    assert len(front_only[0][0]) >= 12 and len(front_only[1][0]) == 0
    both = detect_halves(SPEC, seam[0])
    assert len(both[0][0]) >= 6 and len(both[1][0]) >= 6
