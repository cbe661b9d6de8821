"""Each Kinect's own joint-definition bias (constant in the joint's reported orientation) is measured
against the reference Kinect's and removed before fusion, so a fused joint does not step where one
Kinect loses the person (``ObserverConfig.align_kinect_joints``); what remains of their difference
where it is slow is carried across such losses too (``MotionSyncConfig.hold_kinect_differences``)."""

from __future__ import annotations

import numpy as np

from omnimocap.calibration.observations import definition_difference, slow_difference


def turning_joint(seed: int, frames: int = 600):
    """A joint walking a circle and turning with it (N,1,3) and its orientation (N,1,3,3), the true
    position as the reference Kinect reports it and another Kinect's, whose own bias is ``d`` in the
    joint's frame (metres), both with 3 mm of noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / 30.0
    yaw = 0.8 * t
    c, s = np.cos(yaw), np.sin(yaw)
    R = np.zeros((frames, 3, 3))
    R[:, 0, 0], R[:, 0, 2], R[:, 1, 1], R[:, 2, 0], R[:, 2, 2] = c, s, 1.0, -s, c
    x = np.stack([np.sin(yaw), 0.1 * np.sin(2 * t), 2.5 + np.cos(yaw)], -1)
    d = rng.normal(0.0, 0.012, 3)
    p_ref = x + rng.normal(0.0, 0.003, x.shape)
    p_other = x + R @ d + rng.normal(0.0, 0.003, x.shape)
    return p_ref[:, None], R[:, None], p_other[:, None], d


def test_the_other_kinects_own_bias_is_measured_in_the_joints_frame():
    for seed in range(3):
        p_ref, R, p_other, d = turning_joint(seed)
        est = definition_difference(p_ref, R, p_other, R, np.ones((len(p_ref), 1), bool))
        assert np.linalg.norm(est[0] - d) < 0.001, (est, d)
        # a world-frame offset would not do: the bias turns with the joint
        assert np.linalg.norm(np.median(p_other - p_ref, axis=0)[0] - d) > 0.003 or np.linalg.norm(d) < 0.005


def test_the_fused_joint_no_longer_steps_where_a_kinect_loses_it():
    p_ref, R, p_other, d = turning_joint(4)
    both = np.ones((len(p_ref), 1), bool)
    both[300:] = False  # the other Kinect loses the person half way
    est = definition_difference(p_ref, R, p_other, R, both)
    def step(p_o):
        fused = np.where(both[:, :, None], 0.5 * (p_ref + p_o), p_ref)
        return np.linalg.norm(np.mean(fused[290:300, 0] - p_ref[290:300, 0], axis=0)
                              - np.mean(fused[300:310, 0] - p_ref[300:310, 0], axis=0))
    raw = step(p_other)
    aligned = step(p_other - np.einsum("nkij,kj->nki", R, est))
    assert raw > 0.25 * np.linalg.norm(d) and aligned < 0.25 * raw, (raw, aligned, d)


def test_too_few_common_frames_leave_the_joint_as_reported():
    p_ref, R, p_other, _ = turning_joint(5)
    both = np.zeros((len(p_ref), 1), bool)
    both[:10] = True
    assert np.all(definition_difference(p_ref, R, p_other, R, both) == 0.0)


def test_the_slow_difference_is_averaged_where_both_see_and_carried_where_one_does():
    t = np.arange(300) / 30.0
    p_ref = np.zeros((300, 2, 3))
    drift = 0.01 * t  # the other Kinect's difference grows by 10 mm a second
    p_other = p_ref + np.stack([drift, 0 * t, 0 * t], -1)[:, None]
    both = np.ones((300, 2), bool)
    both[100:160, 0] = False  # two seconds where only one Kinect sees joint 0
    both[:, 1] = False  # joint 1 is never seen by both
    d = slow_difference(t, p_ref, p_other, both, 0.5)
    # a centred window's mean of a linear drift is the drift itself, away from the gap and the ends
    np.testing.assert_allclose(d[20:80, 0, 0], drift[20:80], atol=1e-9)
    np.testing.assert_allclose(d[180:280, 0, 0], drift[180:280], atol=1e-9)
    # in the gap: the one-sided mean within half a window of its edges, a straight line between
    inside = d[100:160, 0, 0]
    assert np.all(np.diff(inside) > 0) and d[99, 0, 0] <= inside[0] and inside[-1] <= d[160, 0, 0]
    np.testing.assert_allclose(d[100, 0, 0], drift[85:100].mean(), atol=1e-9)
    middle = d[115:145, 0, 0]
    np.testing.assert_allclose(np.diff(middle), np.diff(middle).mean(), atol=1e-12)
    assert np.all(d[:, 1] == 0.0)


def walking_hands(seed: int, pose_error_deg: float = 0.5, noise_m: float = 0.005):
    """Two people waving their hands while walking sideways (0.75 m/s, 3 m back and forth) for 30 s,
    seen by the panorama (bearings) and by two Kinects: the reference, which loses each hand for 1 s
    twelve times, and another whose pose is ``pose_error_deg`` off about its own centre, so that its
    points differ from the reference's by 20-50 mm that change as the people walk; ``noise_m`` of noise
    each (metres per axis). Returns what the sync takes and the true points (N,4,3)."""
    from omnimocap.geometry.transforms import axis_angle_to_matrix
    from test_timesync import TRUE_A, TRUE_B, hand_motion, observe, pano_pose

    rng = np.random.default_rng(seed)
    t_pano = np.arange(0.5, 30.5, 1 / 30)
    t_kinect = np.arange(TRUE_B, TRUE_B + 31.0, 1 / 30) + 0.004

    def motion(t):
        phase = (t * 0.75 / 3.0) % 2.0
        walk = np.stack([3.0 * np.minimum(phase, 2.0 - phase) - 1.5, 0 * t, 0 * t], -1)[:, None]
        return hand_motion(t, seed) + walk

    T = pano_pose()
    bearings = observe(T, motion(TRUE_A * t_pano + TRUE_B), 0.2, rng)
    t_host = TRUE_A * t_pano + TRUE_B + 0.040 + rng.exponential(0.005, len(t_pano))
    x = motion(t_kinect)
    R = axis_angle_to_matrix(np.radians([0.0, pose_error_deg, 0.0]))
    centre = np.array([0.0, 0.8, 4.0])
    p_ref = x + rng.normal(0.0, noise_m, x.shape)
    p_other = (x - centre) @ R.T + centre + rng.normal(0.0, noise_m, x.shape)
    seen = np.ones(x.shape[:2], bool)
    for k in range(x.shape[1]):
        for s in rng.choice(len(t_kinect) - 40, 12, replace=False):
            seen[s:s + 30, k] = False
    return t_kinect, p_ref, p_other, seen, t_pano, bearings, t_host, T, x


def fused(t, p_ref, p_other, seen, hold: bool):
    """Equal-weight fusion of two Kinects' points (N,K,3) as ``kinect_wrist_tracks`` does it: the
    other Kinect alone where the reference does not see the point (``seen`` (N,K) False); with ``hold``
    the other's points first lose their slow difference from the reference's."""
    if hold:
        p_other = p_other - slow_difference(t, p_ref, p_other, seen, 0.5)
    return np.where(seen[..., None], 0.5 * (p_ref + p_other), p_other)


def test_the_fused_point_passes_from_two_kinects_to_one_without_a_step():
    t, p_ref, p_other, seen, *_, x = walking_hands(1, noise_m=0.001)
    x_err = {hold: fused(t, p_ref, p_other, seen, hold) - x for hold in (False, True)}
    starts = np.flatnonzero(seen[:-1, 0] & ~seen[1:, 0]) + 1
    starts = starts[(starts > 10) & (starts < len(t) - 10)]

    def steps(err):
        return [np.linalg.norm(err[s:s + 10, 0].mean(0) - err[s - 10:s, 0].mean(0)) for s in starts]

    assert np.median(steps(x_err[False])) > 0.007  # half the Kinects' difference
    assert np.median(steps(x_err[True])) < 0.3 * np.median(steps(x_err[False]))


def test_carrying_the_kinects_difference_keeps_a_walk_from_pulling_the_clock():
    """While only the other Kinect sees a walking person, its few centimetres of difference from the
    reference lie along the walk and read as a time shift; carried from the reference, they do not."""
    from omnimocap.calibration.coarse_sync import coarse_time_map, rate_std_ppm
    from omnimocap.calibration.timesync import fine_time_map
    from test_timesync import TRUE_A, TRUE_B

    errors = {False: [], True: []}
    for seed in range(4):
        t, p_ref, p_other, seen, t_pano, bearings, t_host, T, _ = walking_hands(seed)
        init = coarse_time_map(t_pano, t_host)
        mid = float(np.median(t_pano))
        for hold in (False, True):
            res = fine_time_map(t_pano, bearings, t, fused(t, p_ref, p_other, seen, hold), T, init,
                                rate_prior_std_ppm=rate_std_ppm(t_pano, init))
            errors[hold].append(abs(res.time_map.to_session(mid) - (TRUE_A * mid + TRUE_B)) * 1e3)
    assert sum(errors[False]) > 0.8, errors  # the case matters
    assert sum(errors[True]) < 0.5 * sum(errors[False]), errors
