"""Tracks whose Kinect joint carries a larger, slowly drifting error than the others (k4abt's hands
and wrists) are trusted less once a first fit has shown it (``RobustConfig.weigh_tracks``)."""

from __future__ import annotations

import numpy as np

from omnimocap.calibration.config import RobustConfig
from omnimocap.calibration.timesync import fine_time_map
from omnimocap.capture.rig import TimeMap

TRUE_OFFSET_S = 0.0123


def swinging_points(seed: int, seconds: float = 20.0):
    """Five points swinging 2 m in front of the camera; the Kinect's track of the last one drifts
    by 60 mm (RMS per axis, correlated over about 10 frames), the others have 5 mm of white noise;
    bearings with 0.2 deg of noise. Returns what fine_time_map takes and the true offset."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, seconds, 1 / 30)
    phase = rng.uniform(0, 2 * np.pi, (5, 3))
    freq = rng.uniform(0.4, 1.2, (5, 3))
    base = np.array([[-0.6, 0.0, 2.0], [0.6, 0.1, 2.2], [0.0, -0.4, 1.8], [0.3, 0.4, 2.5], [-0.3, 0.2, 1.9]])
    points = base[None] + 0.3 * np.sin(freq[None] * 2 * np.pi * t[:, None, None] + phase[None])
    kinect = points + rng.normal(0.0, 0.005, points.shape)
    kernel = np.exp(-0.5 * (np.arange(-30, 31) / 10.0) ** 2)
    kernel /= np.sqrt(np.sum(kernel ** 2))
    drift = np.stack([np.convolve(rng.normal(0.0, 0.06, len(t) + 60), kernel, mode="valid") for _ in range(3)], -1)
    kinect[:, 4] += drift
    t_pano = np.arange(0.5, seconds - 0.5, 1 / 30)
    seen = np.stack([np.interp(t_pano + TRUE_OFFSET_S, t, points[:, k, a]) for k in range(5) for a in range(3)],
                    -1).reshape(len(t_pano), 5, 3)
    bearings = seen / np.linalg.norm(seen, axis=-1, keepdims=True)
    bearings += rng.normal(0.0, np.radians(0.2), bearings.shape)
    bearings /= np.linalg.norm(bearings, axis=-1, keepdims=True)
    return t_pano, bearings, t, kinect


def clock_error_ms(scene, robust: RobustConfig):
    t_pano, bearings, t, kinect = scene
    res = fine_time_map(t_pano, bearings, t, kinect, np.eye(4), TimeMap(1.0, 0.0), noise_deg=0.2, search_s=0.05,
                        rate_prior_std_ppm=20.0, robust=robust)
    return abs(res.time_map.to_session(10.0) - (10.0 + TRUE_OFFSET_S)) * 1e3, res


def test_the_drifting_track_alone_loses_weight():
    _, res = clock_error_ms(swinging_points(1), RobustConfig())
    assert res.track_weights is not None
    assert res.track_weights[4] < 0.6, res.track_weights
    assert np.all(res.track_weights[:4] > 0.9), res.track_weights


def test_weighing_tracks_brings_the_clock_closer():
    on, off = [], []
    for seed in range(4):
        scene = swinging_points(seed)
        on.append(clock_error_ms(scene, RobustConfig())[0])
        off.append(clock_error_ms(scene, RobustConfig(weigh_tracks=False))[0])
    assert np.mean(on) < 0.7 * np.mean(off), (on, off)


def test_switched_off_every_track_keeps_its_weight():
    _, res = clock_error_ms(swinging_points(1), RobustConfig(weigh_tracks=False))
    assert np.all(res.track_weights == 1.0)
