"""The 360 camera's rolling-shutter readout from a moving ChArUco board (calibration/board_readout.py),
on corners made exactly from a known board path: the colour camera sees each frame at one instant,
the 360 camera each corner at its own row's time."""

from __future__ import annotations

import numpy as np
import pytest

from omnimocap.calibration.board import BoardDetection, BoardSpec
from omnimocap.calibration.board_readout import BoardTrack, estimate_readout, with_readout
from omnimocap.geometry.pano_optics import PanoOptics
from omnimocap.geometry.transforms import axis_angle_to_matrix, look_at, make_pose, transform_points

SPEC = BoardSpec()
FPS = 30.0
# T_pano_color: the 360 camera 0.6 m to the colour camera's side, turned so that the board is beside its lens axis.
T_PANO_COLOR = make_pose(axis_angle_to_matrix(np.array([0.0, 0.9, 0.0])), np.array([0.6, 0.0, 0.2]))


def board_at(t: float) -> np.ndarray:
    """``T_color_board`` of a board carried up and down and sideways in front of the colour camera,
    facing it (about 1 m/s at its fastest)."""
    centre = np.array([0.25 * np.sin(2.1 * t), 0.3 * np.sin(3.3 * t + 0.4), 1.4 + 0.1 * np.cos(1.7 * t)])
    R = look_at(centre) @ axis_angle_to_matrix(np.array([0.0, 0.0, 0.3 * np.sin(1.3 * t)]))
    size = np.array([SPEC.squares_x, SPEC.squares_y, 0.0]) * SPEC.square_m
    return make_pose(R, centre - R @ (0.5 * size))


def colour_detections(times: np.ndarray) -> list[BoardDetection]:
    X = SPEC.corners()
    ids = np.arange(len(X))
    out = []
    for t in times:
        p = transform_points(board_at(t), X)
        out.append(BoardDetection(ids, p / np.linalg.norm(p, axis=-1, keepdims=True)))
    return out


def pano_detections(times: np.ndarray, optics: PanoOptics) -> list[BoardDetection]:
    """Each corner where the stitched frame shows it when its lens's row is exposed (the fixed point
    of its row time, three steps)."""
    X = SPEC.corners()
    out = []
    for t in times:
        offset = np.zeros(len(X))
        for _ in range(3):
            p = np.stack([transform_points(T_PANO_COLOR @ board_at(t + o), X[i:i + 1])[0] for i, o in enumerate(offset)])
            apparent, _, _ = optics.apparent(p)
            offset = optics.time_offset_s(apparent)
        out.append(BoardDetection(np.arange(len(X)), apparent / np.linalg.norm(apparent, axis=-1, keepdims=True)))
    return out


@pytest.mark.parametrize("readout_s", [0.025, 0.0])
def test_readout_is_recovered_from_a_moving_board(readout_s):
    true = PanoOptics(baseline_m=0.03, readout_s=readout_s, exposure_s=0.01)
    t_colour = np.arange(0.0, 2.0, 1.0 / FPS)
    track = BoardTrack(SPEC, t_colour, colour_detections(t_colour))
    t_pano = np.arange(0.2, 1.8, 1.0 / FPS) + 0.0123  # the 360 camera's own frame times
    assert np.nanmax(track.prediction_error(t_pano, SPEC.corners())) < 2e-3  # a path the frame rate follows
    dets = pano_detections(t_pano, true)
    # the rig's readout is wrong (15 ms) and its clock 4 ms off: both are solved
    est = estimate_readout(SPEC, track, T_PANO_COLOR, PanoOptics(0.03, 0.015, 0.01), t_pano - 0.004, dets)
    assert est is not None and est.frames == len(t_pano)
    assert est.readout_s == pytest.approx(readout_s, abs=0.5e-3)
    assert est.offset_s == pytest.approx(0.004, abs=0.5e-3)
    assert est.readout_std_s < 0.5e-3 and est.rms_deg < est.rms_deg_at_rig
    assert with_readout(PanoOptics(0.03, 0.015, 0.01), est, 2e-3).readout_s == est.readout_s


def test_still_board_or_too_few_frames_give_no_estimate():
    t_colour = np.arange(0.0, 1.0, 1.0 / FPS)
    track = BoardTrack(SPEC, t_colour, colour_detections(t_colour))
    optics = PanoOptics(0.03, 0.025, 0.01)
    t_pano = np.array([0.3, 0.5, 0.7])
    assert estimate_readout(SPEC, track, T_PANO_COLOR, optics, t_pano,
                            pano_detections(t_pano, optics)) is None
    # frames outside the colour camera's track cannot be placed
    late = np.arange(2.0, 2.5, 1.0 / FPS)
    assert estimate_readout(SPEC, track, T_PANO_COLOR, optics, late, pano_detections(late, optics)) is None
    rig = PanoOptics(0.03, 0.025, 0.01)
    assert with_readout(rig, None, 2e-3) is rig


def test_a_board_swung_faster_than_the_frame_rate_is_not_trusted():
    """A board that jumps 0.3 m within two colour frames: the track left without either bracketing
    detection misses by centimetres there, and by nothing where the board holds still."""
    t_colour = np.arange(0.0, 1.0, 1.0 / FPS)
    X = SPEC.corners()
    shift = make_pose(np.eye(3), np.array([0.3, 0.0, 0.0]))
    poses = [board_at(0.0) if t < 0.5 else shift @ board_at(0.0) for t in t_colour]
    dets = []
    for T in poses:
        p = transform_points(T, X)
        dets.append(BoardDetection(np.arange(len(X)), p / np.linalg.norm(p, axis=-1, keepdims=True)))
    track = BoardTrack(SPEC, t_colour, dets)
    miss = track.prediction_error(np.array([0.2, 0.5, 0.8]), X)
    assert miss[0] < 1e-3 and miss[2] < 1e-3 and miss[1] > 0.02
