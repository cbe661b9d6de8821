"""The motion sync against Kinect tracks that a tracker hands over to another person for a few
seconds: the trajectory is cut at the jumps instead of smoothed across them, and a track's windows
of consistently outlying residuals are dropped."""

from __future__ import annotations

import numpy as np
import pytest

from omnimocap.calibration.bearing_problem import BearingProblem, flatten_observations
from omnimocap.calibration.coarse_sync import coarse_time_map, rate_std_ppm
from omnimocap.calibration.config import RobustConfig
from omnimocap.calibration.timesync import fine_time_map
from omnimocap.calibration.track_splines import TrackSplines
from omnimocap.capture.rig import TimeMap
from test_timesync import TRUE_A, TRUE_B, scene


def handed_over(seed: int):
    """Two people, 30 s; the Kinect's track 0 (person 0's wrist) follows person 1's wrist from 10 to
    13 s, and the panorama's bearings of track 0 follow it (associated by proximity)."""
    t_kinect, traj, t_pano, bearings, t_host, T = scene(seconds=30.0, seed=seed)
    on = (t_kinect - TRUE_B > 10) & (t_kinect - TRUE_B < 13)
    traj[on, 0] = traj[on, 2]
    seen = (t_pano > 10) & (t_pano < 13)
    bearings[seen, 0] = bearings[seen, 2]
    return t_kinect, traj, t_pano, bearings, t_host, T


def offset_error_ms(res, t_pano) -> float:
    t = float(np.median(t_pano))
    return abs(res.time_map.to_session(t) - (TRUE_A * t + TRUE_B)) * 1e3


@pytest.mark.parametrize("seed", [2, 6])
def test_sync_cuts_a_track_at_its_jumps_to_another_person(seed):
    t_kinect, traj, t_pano, bearings, t_host, T = handed_over(seed)
    init = coarse_time_map(t_pano, t_host)
    common = dict(rate_prior_std_ppm=rate_std_ppm(t_pano, init))
    smoothed = fine_time_map(t_pano, bearings, t_kinect, traj, T, init, **common,
                             robust=RobustConfig(split_jumps=False))
    cut = fine_time_map(t_pano, bearings, t_kinect, traj, T, init, **common)
    assert offset_error_ms(smoothed, t_pano) > 0.4  # the smoothed jump pulls the clock
    assert offset_error_ms(cut, t_pano) < 0.25


def test_track_splines_split_where_a_joint_moves_faster_than_a_body_can():
    t = np.arange(0.0, 4.0, 1 / 30)
    p = np.stack([0.2 * np.sin(t), np.zeros_like(t), np.full_like(t, 2.0)], -1)[:, None]
    p[60:90, 0, 0] += 0.8  # handed over to someone 0.8 m away for one second
    whole = TrackSplines(t, p, smooth_hz=3.0)
    split = TrackSplines(t, p, smooth_hz=3.0, max_speed_m_s=7.5)
    assert len(whole.splines) == 1
    assert len(split.splines) == 3
    seg = split.locate(np.zeros(1, dtype=np.int64), np.array([1.0]))
    np.testing.assert_allclose(split.evaluate(seg, np.array([1.0]))[0, 0], 0.2 * np.sin(1.0), atol=0.01)


def test_outlying_runs_drop_a_track_window_of_consistent_errors_only():
    t_kinect, traj, t_pano, bearings, t_host, T = scene(seconds=20.0, seed=7, kinect_noise_m=0.0)
    # 1.5 deg off for 2 s on track 1: a run of errors, each alone within a robust loss's reach
    bad = (t_pano > 8) & (t_pano < 10)
    tilt = np.radians(1.5)
    side = np.cross(bearings[bad, 1], [0.0, 1.0, 0.0])
    side /= np.linalg.norm(side, axis=-1, keepdims=True)
    bearings[bad, 1] = np.cos(tilt) * bearings[bad, 1] + np.sin(tilt) * side
    tp, track, b = flatten_observations(t_pano, bearings)
    truth = TimeMap(TRUE_A, TRUE_B)
    problem = BearingProblem(TrackSplines(t_kinect, traj, smooth_hz=3.0), tp, track, b, truth, T, 0.1)
    x = np.zeros(2)
    cut = problem.outlying_runs(x, 0.5, 4.0)
    wrong = (track == 1) & (tp > 8) & (tp < 10)
    inner = (track == 1) & (tp > 8.5) & (tp < 9.5)  # windows wholly inside the run
    assert cut[inner].all()
    assert not cut[~wrong].any()
    assert cut.sum() <= wrong.sum() + 30  # at most the windows that straddle the run's ends
