"""The 360 camera's height from the hands after a solve on body keypoints (``MarkerlessConfig.height_from_hands``):
keypoint offsets solved in a frame that turns only about the vertical leave a height shared by all
keypoints indistinguishable from the camera's height; the hands, which carry no offset, measure it."""

from __future__ import annotations

import numpy as np
import pytest

from omnimocap.calibration.markerless import calibrate_markerless, height_from_tracks
from omnimocap.capture.rig import TimeMap
from omnimocap.geometry.transforms import axis_angle_to_matrix, invert_pose, make_pose, transform_points

# Kinect frame = world frame here (y up); the 360 camera 1.2 m up, turned and tilted a little.
UP = np.array([0.0, 1.0, 0.0])
T_KINECT_PANO = make_pose(axis_angle_to_matrix(np.array([0.04, 0.7, -0.03])), np.array([0.2, 1.2, 0.1]))
SHARED_HEIGHT_M = 0.012  # the keypoints' common vertical definition offset
HANDS = 4


def scene(seed: int = 0, seconds: float = 20.0):
    """Two people walking loops 1.5-3 m around the camera, turning as they go: five keypoints each (the
    detector sees each 12 mm above the Kinect's point, plus an offset of its own of 10 mm per axis in
    the body's frame) and two hands waving in front of them (seen where the Kinect has them). Kinect
    noise 5 mm, bearing noise 0.3 deg, 10 % missed. Returns t, bearings (N,K,3) with the hands first,
    Kinect points (N,K,3), the body frames (N,K,3,3) and which tracks carry an offset."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, seconds, 1 / 30)
    kinect, seen, frames = [], [], []
    hands_k, hands_s = [], []
    for p in range(2):
        w = 2 * np.pi / (9.0 + 3 * p) * (1 if p == 0 else -1)
        r = 2.2 + 0.7 * np.sin(0.3 * t + p)
        centre = np.stack([r * np.sin(w * t + p), np.zeros_like(t), r * np.cos(w * t + p)], -1)
        heading = w * t + p + np.pi / 2 * np.sign(w)  # walking along the loop
        c, s = np.cos(heading), np.sin(heading)
        R = np.zeros((len(t), 3, 3))  # columns: the body's x (left), y (up), z (forward)
        R[:, 0, 0], R[:, 0, 2], R[:, 2, 0], R[:, 2, 2], R[:, 1, 1] = c, s, -s, c, 1.0
        for k, local in enumerate(([0.18, 1.45, 0.0], [-0.18, 1.45, 0.0], [0.1, 0.9, 0.05], [-0.1, 0.5, 0.05],
                                   [0.1, 0.1, 0.0])):
            point = centre + R @ np.asarray(local)
            offset = np.r_[0.0, SHARED_HEIGHT_M, 0.0] + rng.normal(0.0, 0.01, 3)
            kinect.append(point)
            seen.append(point + R @ offset)
            frames.append(R)
        for side in (-1, 1):
            wave = np.stack([0.3 * side + 0.15 * np.sin(2.1 * t + side + p), 1.0 + 0.3 * np.sin(1.3 * t + p + side),
                             0.35 + 0.1 * np.sin(1.7 * t + 2 * p)], -1)
            hand = centre + np.einsum("nij,nj->ni", R, wave)
            hands_k.append(hand)
            hands_s.append(hand)
    kinect = np.stack(hands_k + kinect, axis=1)
    seen = np.stack(hands_s + seen, axis=1)
    frames = np.concatenate([np.broadcast_to(np.eye(3), (len(t), HANDS, 3, 3)), np.stack(frames, axis=1)], axis=1)
    p = transform_points(invert_pose(T_KINECT_PANO), seen)
    f = p / np.linalg.norm(p, axis=-1, keepdims=True) + rng.normal(0.0, np.radians(0.3), p.shape)
    f /= np.linalg.norm(f, axis=-1, keepdims=True)
    f[rng.random(f.shape[:2]) < 0.1] = np.nan
    kinect = kinect + rng.normal(0.0, 0.005, kinect.shape)
    offset_tracks = np.r_[np.zeros(HANDS, dtype=bool), np.ones(kinect.shape[1] - HANDS, dtype=bool)]
    return t, f, kinect, frames, offset_tracks


def height_error_mm(T: np.ndarray) -> float:
    return float((T[:3, 3] - T_KINECT_PANO[:3, 3]) @ UP * 1e3)


@pytest.fixture(scope="module")
def body_solve():
    """The solve on body keypoints alone (the hands left out), from a start 2 cm and 1 deg off."""
    t, f, kinect, frames, offset_tracks = scene()
    body = f.copy()
    body[:, :HANDS] = np.nan
    start = T_KINECT_PANO @ make_pose(axis_angle_to_matrix(np.radians([0.5, -0.8, 0.3])), np.array([0.01, -0.015, 0.01]))
    res = calibrate_markerless(t, body, t, kinect, init_time=TimeMap(), init_T_kinect_pano=start, search_s=0.05,
                               body_frames=(t, frames), offset_tracks=offset_tracks, offset_prior_m=0.015,
                               noise_deg=0.3, noise_ar_order=0)
    return res, (t, f, kinect)


def test_body_keypoints_leave_the_height_at_their_shared_offset(body_solve):
    res, _ = body_solve
    # the shared 12 mm goes into the camera's height, not into the offsets
    assert abs(height_error_mm(res.T_kinect_pano)) > 0.6 * SHARED_HEIGHT_M * 1e3
    horizontal = (res.T_kinect_pano[:3, 3] - T_KINECT_PANO[:3, 3]) * 1e3
    assert np.linalg.norm(horizontal - (horizontal @ UP) * UP) < 3.0


def test_hands_give_the_height_and_keep_the_rest(body_solve):
    res, (t, f, kinect) = body_solve
    out = height_from_tracks(res, t, f[:, :HANDS], t, kinect[:, :HANDS], UP, noise_deg=0.3, track_offset_mm=0.0)
    assert out.height["applied"] and out.height["hands_weight"] == 1.0
    assert abs(height_error_mm(out.T_kinect_pano)) < 2.0
    moved = out.T_kinect_pano[:3, 3] - res.T_kinect_pano[:3, 3]
    assert np.allclose(moved, (moved @ UP) * UP, atol=1e-12)  # along up only
    assert np.array_equal(out.T_kinect_pano[:3, :3], res.T_kinect_pano[:3, :3])
    assert out.sync.T_ref_pano is out.T_kinect_pano or np.array_equal(out.sync.T_ref_pano, out.T_kinect_pano)
    assert out.time_map == res.time_map
    assert "height_from_hands" in out.to_json()


def test_the_two_heights_are_combined_by_their_uncertainties(body_solve):
    res, (t, f, kinect) = body_solve
    whole = height_from_tracks(res, t, f[:, :HANDS], t, kinect[:, :HANDS], UP, noise_deg=0.3, track_offset_mm=8.0)
    even = height_from_tracks(res, t, f[:, :HANDS], t, kinect[:, :HANDS], UP, noise_deg=0.3, track_offset_mm=8.0,
                              height_std_mm=whole.height["hands_std_mm"])
    assert whole.height["hands_std_mm"] == pytest.approx(4.0, abs=0.5)  # 8 mm over four hands, plus the fit's
    assert even.height["hands_weight"] == pytest.approx(0.5)
    assert even.height["shift_mm"] == pytest.approx(0.5 * whole.height["shift_mm"])


def test_too_few_hand_bearings_leave_the_pose(body_solve):
    res, (t, f, kinect) = body_solve
    few = np.full_like(f[:, :HANDS], np.nan)
    few[:40, 0] = f[:40, 0]
    out = height_from_tracks(res, t, few, t, kinect[:, :HANDS], UP, noise_deg=0.3)
    assert not out.height["applied"] and np.array_equal(out.T_kinect_pano, res.T_kinect_pano)


def test_calibrate_on_a_field_session_measures_the_height_from_the_hands(tmp_path):
    """``calibrate --observer simulated-detector`` on a short field session: the rig records the hands'
    height, combined with the keypoints' (a weight strictly between 0 and 1), moving the camera along
    up by that share; switched off, the rig records none."""
    import dataclasses
    import json
    import shutil

    from omnimocap.calibration.config import CalibrateConfig, MarkerlessConfig, ObserverConfig
    from omnimocap.calibration.session import calibrate_session
    from omnimocap.capture.truth import Truth
    from omnimocap.hands.sim_field import observer_record
    from omnimocap.sim.simulate import SimConfig, simulate_session

    on = tmp_path / "on"
    simulate_session(on, SimConfig(seconds=12.0, people=2, kinects=2, seed=3, pano_width=64, kinect_video=False,
                                   realism="field"))
    truth = Truth(on)  # field k4abt errors, ideal observers (at 64 px the field detectors see nobody)
    truth.write_realism({**truth.realism(), "observer": observer_record("ideal")})
    off = tmp_path / "off"
    shutil.copytree(on, off)
    config = CalibrateConfig(observer=ObserverConfig(observer="simulated-detector"))
    calibrate_session(on, config)
    calibrate_session(off, dataclasses.replace(config, markerless=MarkerlessConfig(height_from_hands=False)))
    height = json.loads((on / "rig.json").read_text())["residuals"]["pano"]["height_from_hands"]
    assert height["applied"] and 0.0 < height["hands_weight"] < 1.0
    assert height["shift_mm"] == pytest.approx(height["hands_weight"] * height["hands_shift_mm"])
    assert "height_from_hands" not in json.loads((off / "rig.json").read_text())["residuals"]["pano"]
