"""The markerless calibration's refinement on body keypoints alone (``ObserverConfig.pose_from_body``):
hand detections whose box centre is not the Kinect's hand centre pull the pose's position where the
hands pass close to the 360 camera; the body keypoints, seen from metres away, do not."""

from __future__ import annotations

import numpy as np
import pytest

from omnimocap.calibration.markerless import calibrate_markerless
from omnimocap.calibration.pano_bodies import JointObservations
from omnimocap.calibration.session import _body_keypoints_alone
from omnimocap.capture.rig import TimeMap
from omnimocap.geometry.transforms import axis_angle_to_matrix, make_pose, transform_points

T_KINECT_PANO = make_pose(axis_angle_to_matrix(np.array([0.05, 0.4, -0.03])), np.array([0.3, -0.1, 0.2]))


def scene(seed: int, seconds: float = 20.0):
    """Six body points walking 2-3.5 m around the camera (Kinect noise 10 mm, bearings 0.6 deg) and two
    hands that reach within 0.4-1.2 m of it, whose Kinect points are 20 mm (per axis) off the points the
    detector sees, constant in the hand's own frame (a centre defined differently on the two sides)."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, seconds, 1 / 30)
    pts = []
    for k in range(6):
        az = 0.35 * t + k * 1.05 + 0.3 * np.sin(0.4 * t + k)
        r = 2.7 + 0.7 * np.sin(0.23 * t + 2 * k)
        pts.append(np.stack([r * np.sin(az), 0.5 - 0.25 * k + 0.1 * np.sin(1.3 * t + k), r * np.cos(az)], -1))
    for k in range(2):
        az = 0.5 * t + 3 * k
        r = 0.8 + 0.4 * np.sin(0.9 * t + 1.7 * k)
        pts.append(np.stack([r * np.sin(az), 0.2 * np.sin(0.7 * t + k), r * np.cos(az)], -1))
    seen_pano = np.stack(pts[6:] + pts[:6], axis=1)  # (n,8,3), panorama frame: the hands first
    kinect = transform_points(T_KINECT_PANO, seen_pano) + rng.normal(0.0, 0.01, seen_pano.shape)
    for h in range(2):  # the hands' definition offset turns with the hand (here: with its azimuth)
        az = np.arctan2(seen_pano[:, h, 0], seen_pano[:, h, 2])
        offset = rng.normal(0.0, 0.02, 3)
        c, s = np.cos(az), np.sin(az)
        local = np.stack([c * offset[0] + s * offset[2], np.full_like(c, offset[1]),
                          -s * offset[0] + c * offset[2]], -1)
        kinect[:, h] += local @ T_KINECT_PANO[:3, :3].T
    t_pano = t[15:-15] - 0.0123
    seen = np.stack([np.interp(t_pano + 0.0123, t, seen_pano[:, k, a]) for k in range(8) for a in range(3)],
                    -1).reshape(len(t_pano), 8, 3)
    bearings = seen / np.linalg.norm(seen, axis=-1, keepdims=True) + rng.normal(0.0, np.radians(0.6), seen.shape)
    bearings /= np.linalg.norm(bearings, axis=-1, keepdims=True)
    sigma = np.ones((len(t), 8))
    sigma[:, :2] = 0.5  # the hand centre: a mean of four Kinect joints
    return JointObservations(bearings, kinect, sigma, None, None), t, t_pano


def position_error_mm(joint: JointObservations, t: np.ndarray, t_pano: np.ndarray) -> float:
    start = T_KINECT_PANO @ make_pose(axis_angle_to_matrix(np.array([0.005, -0.004, 0.003])),
                                      np.array([0.02, -0.01, 0.02]))
    res = calibrate_markerless(t_pano, joint.bearings, t, joint.points, traj_sigma=joint.sigma,
                               init_time=TimeMap(1.0, 0.0123), init_T_kinect_pano=start, search_s=0.05, noise_deg=1.0,
                               noise_ar_order=0)
    return float(np.linalg.norm(res.T_kinect_pano[:3, 3] - T_KINECT_PANO[:3, 3]) * 1e3)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_close_hands_with_a_centimetre_definition_offset_no_longer_pull_the_position(seed):
    joint, t, t_pano = scene(seed)
    body = _body_keypoints_alone(joint, 2, min_frames=90)
    assert np.all(np.isnan(body.bearings[:, :2])) and np.array_equal(body.bearings[:, 2:], joint.bearings[:, 2:],
                                                                      equal_nan=True)
    with_hands, alone = position_error_mm(joint, t, t_pano), position_error_mm(body, t, t_pano)
    assert alone < 0.7 * with_hands, (alone, with_hands)


def test_too_few_body_frames_keep_the_hands():
    joint, _, _ = scene(1)
    bearings = joint.bearings.copy()
    bearings[60:, 2:] = np.nan  # the pose model saw the people in 60 frames only
    sparse = JointObservations(bearings, joint.points, joint.sigma, None, None)
    assert _body_keypoints_alone(sparse, 2, min_frames=90) is sparse
    assert np.all(np.isnan(_body_keypoints_alone(sparse, 2, min_frames=30).bearings[:, :2]))
