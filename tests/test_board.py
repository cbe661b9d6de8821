"""ChArUco board rendering, detection and Kinect-to-360 calibration on simulated images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from omnimocap.calibration.board import (
    BoardDetection, BoardSpec, board_pose, calibrate_board_sequence, detect_equirect, detect_pinhole,
    render_board_equirect, render_board_pinhole,
)
from omnimocap.geometry.cameras import EquirectCamera, PinholeCamera
from omnimocap.geometry.transforms import (
    axis_angle_to_matrix, invert_pose, look_at, make_pose, relative_angle_deg,
)
from omnimocap.errors import UserError

SPEC = BoardSpec(squares_x=6, squares_y=4, square_m=0.08, marker_m=0.06)
COLOR = PinholeCamera(610.0, 610.0, 639.3, 365.8, 1280, 720, (0.08, -0.05, 0.001, -0.0005, 0.01))
PANO = EquirectCamera(4096, 2048)
# colour camera -> depth camera (the Kinect's ~6 deg tilt and 32 mm baseline)
T_DEPTH_COLOR = make_pose(axis_angle_to_matrix(np.radians([-6.0, 0.1, 0.2])), np.array([-0.032, -0.002, 0.004]))
# the 360 camera sits 0.6 m right of and 0.2 m behind the Kinect, turned 30 deg
T_COLOR_PANO = make_pose(axis_angle_to_matrix(np.radians([2.0, -30.0, 1.0])), np.array([0.6, 0.05, -0.2]))


def board_facing(center_color: np.ndarray, tilt_deg) -> np.ndarray:
    """T_color_board of a board centred at ``center_color`` facing the colour camera, tilted."""
    R = look_at(center_color) @ axis_angle_to_matrix(np.radians(tilt_deg))  # board z away from camera
    c = np.array([SPEC.squares_x * SPEC.square_m / 2, SPEC.squares_y * SPEC.square_m / 2, 0.0])
    return make_pose(R, center_color - R @ c)


POSES = [board_facing(np.array([0.1, 0.0, 1.3]), [10, -25, 5]), board_facing(np.array([0.35, -0.1, 1.5]), [-15, -35, 0]),
         board_facing(np.array([-0.2, 0.1, 1.2]), [5, -10, -8])]


def test_render_and_detect_pinhole_recovers_the_pose():
    img = render_board_pinhole(SPEC, COLOR, POSES[0])
    assert img.dtype == np.uint8 and img.shape == (720, 1280)
    assert 0 < np.mean((img > 0) & (img < 255) & (img != 128)) < 0.5  # grey levels at edges: anti-aliased
    det = detect_pinhole(SPEC, img, COLOR)
    assert len(det) == (SPEC.squares_x - 1) * (SPEC.squares_y - 1)
    T, inl, rms = board_pose(SPEC, det)
    assert inl.all() and rms < 0.05
    # one planar pose: rotation and translation trade off, so these bounds are loose
    assert relative_angle_deg(T[:3, :3], POSES[0][:3, :3]) < 0.3
    assert np.linalg.norm(T[:3, 3] - POSES[0][:3, 3]) < 0.005


def test_equirect_detection_across_the_seam():
    # a board straight behind the 360 camera straddles the panorama's seam
    T = make_pose(look_at(np.array([0.0, 0.0, -1.0])), np.array([0.24, -0.16, -1.3]))
    img = render_board_equirect(SPEC, PANO, T)
    assert img[:, 0].min() < 60 and img[:, -1].min() < 60  # dark marker pixels on both sides of the seam
    det = detect_equirect(SPEC, img, PANO)
    assert len(det) >= 12
    Tp, _, rms = board_pose(SPEC, det)
    assert rms < 0.05
    assert relative_angle_deg(Tp[:3, :3], T[:3, :3]) < 0.2 and np.linalg.norm(Tp[:3, 3] - T[:3, 3]) < 0.005


def test_board_calibration_meets_target():
    """Kinect colour + 360 images of three board poses: <= 0.05 deg and <= 3 mm (Kinect depth -> 360)."""
    T_pano_color = invert_pose(T_COLOR_PANO)
    color_dets, pano_dets = [], []
    for T in POSES:
        color_dets.append(detect_pinhole(SPEC, render_board_pinhole(SPEC, COLOR, T), COLOR))
        pano_dets.append(detect_equirect(SPEC, render_board_equirect(SPEC, PANO, T_pano_color @ T), PANO))
    color_dets.append(None)  # a frame where the Kinect missed the board is skipped
    pano_dets.append(pano_dets[0])
    cal = calibrate_board_sequence(SPEC, color_dets, pano_dets, T_DEPTH_COLOR)
    truth = T_DEPTH_COLOR @ T_COLOR_PANO
    rot = relative_angle_deg(cal.T_depth_pano[:3, :3], truth[:3, :3])
    trans_mm = np.linalg.norm(cal.T_depth_pano[:3, 3] - truth[:3, 3]) * 1e3
    assert rot <= 0.05, rot
    assert trans_mm <= 3.0, trans_mm
    assert cal.frames_used == [0, 1, 2]
    assert cal.kinect_rms_deg < 0.05 and cal.pano_rms_deg < 0.05


def test_board_calibration_refuses_without_shared_views():
    empty = BoardDetection(np.zeros(0, dtype=np.int64), np.zeros((0, 3)))
    with pytest.raises(UserError, match="in 0 frames"):
        calibrate_board_sequence(SPEC, [empty, None], [None, empty], T_DEPTH_COLOR)
    with pytest.raises(UserError, match="only 0 board corners"):
        board_pose(SPEC, empty)
    blank = np.full((PANO.height // 4, PANO.width // 4), 128, np.uint8)
    assert len(detect_equirect(SPEC, blank, EquirectCamera(PANO.width // 4, PANO.height // 4))) == 0


def test_board_pose_keeps_every_corner_of_a_clean_detection():
    """Boards 0.7-1.0 m around the 360 camera with 0.03 deg bearing noise (what equirect detection
    gives): every corner is an inlier. OpenCV's RANSAC alone turns some of these sets down."""
    from omnimocap.calibration.board import BoardDetection, board_pose
    from omnimocap.geometry.transforms import look_at, make_pose, relative_angle_deg, transform_points

    spec = BoardSpec()
    X = spec.corners()
    rng = np.random.default_rng(0)
    for _ in range(60):
        d = rng.normal(size=3)
        d[1] *= 0.3
        d /= np.linalg.norm(d)
        R = look_at(d) @ cv2.Rodrigues(rng.normal(scale=0.3, size=3))[0]
        T = make_pose(R, d * rng.uniform(0.7, 1.0) - R @ np.array([0.28, 0.2, 0.0]))
        p = transform_points(T, X)
        u = p / np.linalg.norm(p, axis=-1, keepdims=True) + rng.normal(scale=np.radians(0.03), size=p.shape)
        u /= np.linalg.norm(u, axis=-1, keepdims=True)
        T_est, mask, rms = board_pose(spec, BoardDetection(np.arange(len(X)), u))
        assert mask.all() and rms < 0.06
        assert relative_angle_deg(T_est[:3, :3], T[:3, :3]) < 1.0


def _two_lens_sequence(optics, noise_deg=0.02, seed=0):
    """Board detections of a stitched two-lens 360 camera (seen from each lens's centre) and of a
    colour camera 1.5 m away, for boards 0.7-1.0 m from the 360 camera on both sides of its seam."""
    from omnimocap.calibration.board import BoardDetection
    from omnimocap.geometry.transforms import look_at, make_pose, transform_points

    spec = BoardSpec()
    X = spec.corners()
    rng = np.random.default_rng(seed)
    T_color_pano = make_pose(cv2.Rodrigues(np.array([0.05, 2.6, -0.03]))[0], np.array([0.4, 0.1, 1.5]))
    colour, pano, truth = [], [], []
    for lon in (-125.0, -100.0, -60.0, 45.0, 75.0, 110.0):
        d = np.array([np.sin(np.radians(lon)), rng.uniform(-0.2, 0.2), np.cos(np.radians(lon))])
        d /= np.linalg.norm(d)
        R = look_at(d) @ cv2.Rodrigues(rng.normal(scale=0.2, size=3))[0]
        T_pano_board = make_pose(R, d * rng.uniform(0.7, 1.0) - R @ np.array([0.28, 0.2, 0.0]))

        def noisy(u):
            u = u / np.linalg.norm(u, axis=-1, keepdims=True) + rng.normal(scale=np.radians(noise_deg), size=u.shape)
            return u / np.linalg.norm(u, axis=-1, keepdims=True)

        apparent, _, seen = optics.apparent(transform_points(T_pano_board, X))
        ids = np.flatnonzero(seen)
        pano.append(BoardDetection(ids, noisy(apparent[ids])))
        colour.append(BoardDetection(np.arange(len(X)), noisy(transform_points(T_color_pano @ T_pano_board, X))))
        truth.append(T_pano_board)
    return spec, colour, pano, T_color_pano


def test_board_solve_sees_each_lens_from_its_own_centre_and_estimates_the_baseline():
    from omnimocap.calibration.board import seen_by_both_lenses
    from omnimocap.geometry.pano_optics import PanoOptics
    from omnimocap.geometry.transforms import relative_angle_deg

    real = PanoOptics(baseline_m=0.03)
    spec, colour, pano, T_color_pano = _two_lens_sequence(real)
    assert seen_by_both_lenses(pano)

    def errors(cal):
        return (relative_angle_deg(cal.T_color_pano[:3, :3], T_color_pano[:3, :3]),
                np.linalg.norm(cal.T_color_pano[:3, 3] - T_color_pano[:3, 3]) * 1e3)

    single = errors(calibrate_board_sequence(spec, colour, pano, np.eye(4)))
    known = errors(calibrate_board_sequence(spec, colour, pano, np.eye(4), optics=real))
    estimated = calibrate_board_sequence(spec, colour, pano, np.eye(4), optics=PanoOptics(), estimate_baseline=True)
    assert estimated.baseline_estimated
    assert estimated.optics.baseline_m == pytest.approx(0.03, abs=0.002)
    assert known[0] < 0.03 and known[1] < 1.0
    assert errors(estimated)[0] < 0.03 and errors(estimated)[1] < 1.5
    assert single[1] > 3 * known[1] + 2.0, (single, known)  # a single viewpoint misplaces the camera


def test_board_baseline_is_kept_when_one_lens_saw_the_board():
    from omnimocap.calibration.board import seen_by_both_lenses
    from omnimocap.geometry.pano_optics import PanoOptics

    spec, colour, pano, _ = _two_lens_sequence(PanoOptics(baseline_m=0.03))
    front = [i for i, d in enumerate(pano) if np.all(d.bearings[:, 2] > 0)]
    assert front and not seen_by_both_lenses([pano[i] for i in front])
    cal = calibrate_board_sequence(spec, [colour[i] for i in front], [pano[i] for i in front], np.eye(4),
                                   optics=PanoOptics(baseline_m=0.025), estimate_baseline=True)
    assert not cal.baseline_estimated and cal.optics.baseline_m == 0.025


def test_board_baseline_of_a_single_viewpoint_camera_is_never_negative():
    from omnimocap.geometry.pano_optics import PanoOptics
    from omnimocap.geometry.transforms import relative_angle_deg

    for seed in range(4):
        spec, colour, pano, T_color_pano = _two_lens_sequence(PanoOptics(), seed=seed)
        cal = calibrate_board_sequence(spec, colour, pano, np.eye(4), optics=PanoOptics(), estimate_baseline=True)
        assert 0.0 <= cal.optics.baseline_m < 0.003
        assert relative_angle_deg(cal.T_color_pano[:3, :3], T_color_pano[:3, :3]) < 0.05
