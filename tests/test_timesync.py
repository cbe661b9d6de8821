"""Time synchronization on synthetic motion with known clocks, poses and noise."""

from __future__ import annotations

import numpy as np
import pytest

from omnimocap.capture.rig import TimeMap
from omnimocap.calibration.coarse_sync import coarse_time_map, rate_std_ppm
from omnimocap.calibration.flash_sync import align_flash_events, flash_events
from omnimocap.calibration.timesync import fine_time_map
from omnimocap.calibration.track_splines import TrackSplines
from omnimocap.geometry.transforms import (
    axis_angle_to_matrix, invert_pose, make_pose, relative_angle_deg, transform_points,
)
from omnimocap.errors import UserError

TRUE_A = 1.0 + 300e-6  # the camera clock runs 300 ppm slow against the session clock
TRUE_B = 12.345


def hand_motion(t: np.ndarray, seed: int = 0, people: int = 2) -> np.ndarray:
    """World positions (N, 2*people, 3) of wrists waving around people who stand ~2 m from the
    origin (y up): a sum of sinusoids of 0.3-1.3 Hz, amplitude ~0.25 m per axis."""
    rng = np.random.default_rng(seed)
    out = []
    for p in range(people):
        az = 2 * np.pi * p / people + 0.4
        centre = np.array([2.0 * np.sin(az), 1.1, 2.0 * np.cos(az)])
        for side in (-1, 1):
            pos = np.tile(centre + [0.25 * side * np.cos(az), 0.0, -0.25 * side * np.sin(az)], (len(t), 1))
            for axis in range(3):
                for _ in range(3):
                    f = rng.uniform(0.3, 1.3)
                    pos[:, axis] += rng.uniform(0.05, 0.12) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
            out.append(pos)
    return np.stack(out, axis=1)


def pano_pose() -> np.ndarray:
    return make_pose(axis_angle_to_matrix(np.array([0.05, 0.8, -0.03])), np.array([0.1, 1.2, -0.2]))


def observe(T_world_pano: np.ndarray, points_world: np.ndarray, noise_deg: float, rng) -> np.ndarray:
    p = transform_points(invert_pose(T_world_pano), points_world)
    d = p / np.linalg.norm(p, axis=-1, keepdims=True)
    d = d + rng.normal(0.0, np.radians(noise_deg), d.shape)
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def scene(seconds: float = 60.0, kinect_noise_m: float = 0.015, pano_noise_deg: float = 0.2, seed: int = 1,
          still: bool = False):
    rng = np.random.default_rng(seed)
    t_pano = np.arange(0.5, 0.5 + seconds, 1 / 30)  # pano frames, camera clock
    t_kinect = np.arange(TRUE_B, TRUE_B + seconds + 1.0, 1 / 30) + 0.004  # Kinect frames, session clock
    t_true = TRUE_A * t_pano + TRUE_B
    motion = (lambda t: np.broadcast_to(hand_motion(np.zeros(1), seed)[0], (len(t), 4, 3))) if still else \
        (lambda t: hand_motion(t, seed))
    traj = motion(t_kinect) + rng.normal(0.0, kinect_noise_m, (len(t_kinect), 4, 3))
    T = pano_pose()
    bearings = observe(T, motion(t_true), pano_noise_deg, rng)
    bearings[rng.random(bearings.shape[:2]) < 0.1] = np.nan  # missed detections
    t_host = t_true + 0.040 + rng.exponential(0.005, len(t_true))  # latency + jitter
    return t_kinect, traj, t_pano, bearings, t_host, T


def test_coarse_map_gets_rate_and_latency_biased_offset():
    rng = np.random.default_rng(0)
    t = np.arange(0.0, 60.0, 1 / 30)
    host = TRUE_A * t + TRUE_B + 0.040 + rng.exponential(0.004, len(t))
    host[::97] += 0.3  # stalled transfers
    host[5] = np.nan
    tm = coarse_time_map(t, host)
    assert abs(tm.a - TRUE_A) * 1e6 < 30
    assert 0.035 < tm.b - TRUE_B < 0.050  # offset keeps the latency
    assert tm.residual_rms_ms < 10


def test_coarse_map_needs_two_arrivals():
    with pytest.raises(UserError, match="fewer than two frames"):
        coarse_time_map(np.array([0.0, 1.0]), np.array([np.nan, 3.0]))


def test_fine_map_meets_accuracy_target():
    """60 s, 300 ppm rate error, 15 mm Kinect noise, 0.2 deg bearing noise: offset <= 1 ms, rate <= 10 ppm."""
    t_kinect, traj, t_pano, bearings, t_host, T = scene()
    init = coarse_time_map(t_pano, t_host)
    assert abs(init.b - TRUE_B) > 0.03  # the coarse map is far off, so the fine step is what is tested
    res = fine_time_map(t_pano, bearings, t_kinect, traj, T, init, rate_prior_std_ppm=rate_std_ppm(t_pano, init))
    tm = res.time_map
    mapped_err = np.abs(tm.to_session(t_pano) - (TRUE_A * t_pano + TRUE_B))
    assert abs(tm.b - TRUE_B) * 1e3 <= 1.0
    assert mapped_err.max() * 1e3 <= 1.0
    assert abs(tm.a - TRUE_A) * 1e6 <= 10.0
    assert res.residual_rms_deg < 1.0
    assert res.n_inliers > 0.9 * res.n_observations
    # the reported uncertainties are honest: the errors lie within three of them
    assert abs(tm.to_session(30.0) - (TRUE_A * 30.0 + TRUE_B)) * 1e3 < 3 * res.offset_std_ms
    assert abs(tm.a - TRUE_A) * 1e6 < 3 * res.rate_std_ppm < 30.0


def test_fine_map_uncertainty_grows_without_rate_prior():
    t_kinect, traj, t_pano, bearings, t_host, T = scene(seconds=30.0, seed=2)
    init = coarse_time_map(t_pano, t_host)
    free = fine_time_map(t_pano, bearings, t_kinect, traj, T, init)
    tied = fine_time_map(t_pano, bearings, t_kinect, traj, T, init, rate_prior_std_ppm=rate_std_ppm(t_pano, init))
    assert tied.rate_std_ppm < free.rate_std_ppm
    assert abs(free.time_map.to_session(15.0) - (TRUE_A * 15.0 + TRUE_B)) < 3 * free.offset_std_ms * 1e-3


def test_fine_map_from_identity_start_within_search_window():
    t_kinect, traj, t_pano, bearings, _, T = scene(seconds=40.0, seed=3)
    init = TimeMap(1.0, TRUE_B + 0.2)  # nominal rate, offset 200 ms off
    res = fine_time_map(t_pano, bearings, t_kinect, traj, T, init, search_s=0.3)
    assert abs(res.time_map.to_session(15.0) - (TRUE_A * 15.0 + TRUE_B)) < 2e-3


def test_fine_map_refines_extrinsics_jointly():
    t_kinect, traj, t_pano, bearings, t_host, T = scene(seed=4)
    T_wrong = T @ make_pose(axis_angle_to_matrix(np.radians([0.5, -0.4, 0.3])), np.array([0.02, -0.015, 0.01]))
    res = fine_time_map(t_pano, bearings, t_kinect, traj, T_wrong, coarse_time_map(t_pano, t_host),
                        refine_extrinsics=True)
    assert relative_angle_deg(res.T_ref_pano[:3, :3], T[:3, :3]) < 0.1
    assert np.linalg.norm(res.T_ref_pano[:3, 3] - T[:3, 3]) < 0.01
    assert abs(res.time_map.b - TRUE_B) < 2e-3
    assert res.rotation_std_deg is not None and res.rotation_std_deg < 0.1


def test_fine_map_rejects_missing_or_still_inputs():
    t_kinect, traj, t_pano, bearings, t_host, T = scene(seconds=20.0)
    init = coarse_time_map(t_pano, t_host)
    with pytest.raises(UserError, match="no hand bearings"):
        fine_time_map(t_pano, np.full_like(bearings, np.nan), t_kinect, traj, T, init)
    with pytest.raises(UserError, match="fall within"):
        fine_time_map(t_pano[:20], bearings[:20], t_kinect, traj, T, init)
    t_kinect, traj, t_pano, bearings, t_host, T = scene(seconds=20.0, still=True)
    with pytest.raises(UserError, match="barely move"):
        fine_time_map(t_pano, bearings, t_kinect, traj, T, coarse_time_map(t_pano, t_host))


def test_track_splines_split_at_gaps_and_interpolate_cubically():
    t = np.arange(0.0, 2.0, 0.05)
    p = np.stack([t ** 3, np.sin(t), np.ones_like(t)], axis=-1)[:, None]
    p[20] = np.nan
    s = TrackSplines(t, p)
    assert len(s.splines) == 2
    q = np.array([0.33, 1.52])
    seg = s.locate(np.zeros(2, dtype=int), q)
    assert np.all(seg >= 0) and seg[0] != seg[1]
    np.testing.assert_allclose(s.evaluate(seg, q)[:, 0], q ** 3, atol=2e-4)
    assert s.locate(np.zeros(1, dtype=int), np.array([1.0]))[0] == -1  # inside the gap


def test_flash_events_subframe_and_alignment():
    T = 1 / 30
    def stream(t_frames, flashes):
        # exposure = frame period: the brightness integrates the step over one period
        y = np.full(len(t_frames), 20.0)
        for tf in flashes:
            frac = np.clip((t_frames + T / 2 - tf) / T, 0.0, 1.0)
            y += 150.0 * frac * (t_frames < tf + 0.6)
        return y
    flashes_session = np.array([3.1234, 17.777])
    A, B = TRUE_A, 0.3  # t_session = A t_pano + B
    t_pano = np.arange(0.0, 25.0, T)
    flashes_pano = (flashes_session - B) / A
    ev_pano = flash_events(t_pano, stream(t_pano, flashes_pano))
    np.testing.assert_allclose(ev_pano, flashes_pano, atol=1e-6)
    tm = align_flash_events(ev_pano, flashes_session)
    assert abs(tm.a - A) < 1e-9 and abs(tm.b - B) < 1e-8
    with pytest.raises(UserError, match="no flash"):
        align_flash_events(ev_pano, flashes_session + 5.0)


def test_fine_map_follows_drift_that_the_start_map_lacks():
    """Over 4 minutes a 1500 ppm error in the starting rate moves the offset by 0.36 s end to end,
    more than the offset scan covers in one go; per-window scans recover it."""
    t_kinect, traj, t_pano, bearings, _, T = scene(seconds=240.0, seed=5, kinect_noise_m=0.005)
    init = TimeMap(TRUE_A - 1500e-6, TRUE_B + 0.1)
    res = fine_time_map(t_pano, bearings, t_kinect, traj, T, init, search_s=0.3, window_s=60.0)
    err = res.time_map.to_session(t_pano) - (TRUE_A * t_pano + TRUE_B)
    assert np.abs(err).max() < 2e-3


def _ar1_noise(rng, shape: tuple[int, ...], rho: float) -> np.ndarray:
    """Unit-variance noise, correlated from one sample to the next by ``rho`` (a first-order
    autoregression along the first axis), like a body tracker's slowly drifting joints."""
    out = np.empty(shape)
    out[0] = rng.normal(size=shape[1:])
    drive = rng.normal(size=shape)
    for n in range(1, shape[0]):
        out[n] = rho * out[n - 1] + np.sqrt(1 - rho ** 2) * drive[n]
    return out


def one_person_scene(seed: int, noise: str, seconds: float = 30.0):
    """One person's two wrists, 30 s. ``noise`` "blocks": white Kinect noise 8 mm per axis in every
    other second and six times that in between, with the matching relative sigma (N,K);
    "slow": 12 mm noise correlated over ~10 frames (rho 0.9), sigma None."""
    rng = np.random.default_rng(seed)
    t_pano = np.arange(0.5, 0.5 + seconds, 1 / 30)
    t_kinect = np.arange(TRUE_B, TRUE_B + seconds + 1.0, 1 / 30) + 0.004
    clean = hand_motion(t_kinect, seed, people=1)
    if noise == "blocks":
        noisy_second = (np.floor(t_kinect - TRUE_B) % 2 == 1)[:, None]
        sigma = np.where(noisy_second, 6.0, 1.0) * np.ones((1, clean.shape[1]))
        traj = clean + 0.008 * sigma[..., None] * rng.normal(size=clean.shape)
    else:
        sigma = None
        traj = clean + 0.012 * _ar1_noise(rng, clean.shape, 0.9)
    T = pano_pose()
    bearings = observe(T, hand_motion(TRUE_A * t_pano + TRUE_B, seed, people=1), 0.2, rng)
    return t_pano, bearings, t_kinect, traj, sigma, T


def _offset_error_ms(res, t_pano: np.ndarray) -> float:
    t = float(np.median(t_pano))
    return abs(res.time_map.to_session(t) - (TRUE_A * t + TRUE_B)) * 1e3


def test_track_splines_relative_noise_is_the_smoothed_rms_and_inf_is_missing():
    t = np.arange(0.0, 4.0, 1 / 30)
    p = np.stack([np.sin(t), np.cos(t), t], axis=-1)[:, None]
    sigma = np.where(t < 2.0, 1.0, 3.0)[:, None]
    sigma[10] = np.inf  # untracked: splits the track like a missing point
    s = TrackSplines(t, p, sigma=sigma, smooth_hz=3.0)
    assert len(s.splines) == 2
    q = np.array([1.0, 1.95, 2.05, 3.5])
    seg = s.locate(np.zeros(len(q), dtype=int), q)
    rel = s.relative_noise(seg, q)
    np.testing.assert_allclose(rel[[0, 3]], [1.0, 3.0], atol=0.02)  # far from the step: the samples' own
    # next to the step the low-pass mixes both sides' variances
    assert 1.1 < rel[1] < rel[2] < 2.9
    plain = TrackSplines(t, p, smooth_hz=3.0)
    np.testing.assert_allclose(plain.relative_noise(plain.locate(np.zeros(1, dtype=int), q[:1]), q[:1]), 1.0)


def test_fine_map_weighs_noisy_trajectory_samples_down():
    """Every other second of the trajectories is six times noisier; with their sigma the fit trusts
    the clean seconds and the offset error falls well below the unweighted fit's."""
    plain, weighted = [], []
    for seed in range(4):
        t_pano, bearings, t_kinect, traj, sigma, T = one_person_scene(seed, "blocks")
        init = TimeMap(TRUE_A, TRUE_B + 0.01)
        a = fine_time_map(t_pano, bearings, t_kinect, traj, T, init, search_s=0.05)
        b = fine_time_map(t_pano, bearings, t_kinect, traj, T, init, search_s=0.05, traj_sigma=sigma)
        plain.append(_offset_error_ms(a, t_pano))
        weighted.append(_offset_error_ms(b, t_pano))
        assert b.offset_std_ms < 0.7 * a.offset_std_ms
        assert weighted[-1] <= 3 * b.offset_std_ms
    assert np.mean(weighted) < 0.5 * np.mean(plain)


def test_fine_map_whitens_slowly_drifting_trajectory_noise():
    """Trajectory noise correlated over ~10 frames: ordinary least squares is not wrong on average but
    its inflated uncertainty is loose; the whitened fit is as accurate and reports an uncertainty
    about half as large that still covers its errors."""
    plain, white = [], []
    for seed in range(3):
        t_pano, bearings, t_kinect, traj, _, T = one_person_scene(seed, "slow")
        init = TimeMap(TRUE_A, TRUE_B + 0.01)
        a = fine_time_map(t_pano, bearings, t_kinect, traj, T, init, search_s=0.05, noise_ar_order=0)
        b = fine_time_map(t_pano, bearings, t_kinect, traj, T, init, search_s=0.05)
        plain.append(_offset_error_ms(a, t_pano))
        white.append(_offset_error_ms(b, t_pano))
        assert b.offset_std_ms < 0.7 * a.offset_std_ms
        assert white[-1] <= 3 * b.offset_std_ms
    assert np.mean(white) < 1.3 * np.mean(plain)


def test_body_frame_offsets_keep_keypoint_definition_from_becoming_a_clock_error():
    from omnimocap.calibration.timesync import body_frames

    rng = np.random.default_rng(11)
    t = np.arange(0.0, 20.0, 1 / 30)
    yaw = 0.9 * t + 0.4 * np.sin(0.5 * t)  # a person turning round and round, 2 m in front
    centre = np.stack([0.3 * np.sin(0.2 * t), 0.1 * np.sin(0.3 * t), 2.0 + 0.2 * np.cos(0.25 * t)], -1)
    c, s = np.cos(yaw), np.sin(yaw)
    R = np.zeros((len(t), 3, 3))
    R[:, 0, 0], R[:, 0, 2], R[:, 1, 1], R[:, 2, 0], R[:, 2, 2] = c, s, 1.0, -s, c
    local = np.array([[0.2, 0.0, 0.0], [-0.2, 0.0, 0.0], [0.0, 0.3, 0.05], [0.15, -0.4, 0.0], [-0.15, -0.4, 0.0]])
    joints = centre[:, None] + np.einsum("nij,kj->nki", R, local)  # Kinect joints (the truth)
    # the detector's keypoints sit 2 cm off, sideways in the body frame: along the turning motion
    bias = np.array([[0.0, 0.0, 0.02], [0.0, 0.0, -0.02], [0.02, 0.0, 0.0], [0.0, 0.0, 0.02], [0.0, 0.0, -0.02]])
    keypoints = joints + np.einsum("nij,kj->nki", R, bias)
    true = TimeMap(1.0, 0.0)
    t_pano = np.arange(0.5, 19.5, 1 / 30) + 0.0123
    seen = np.stack([np.interp(true.to_session(t_pano), t, keypoints[:, k, a]) for k in range(5) for a in range(3)],
                    -1).reshape(len(t_pano), 5, 3)
    bearings = seen / np.linalg.norm(seen, axis=-1, keepdims=True)
    bearings += rng.normal(0.0, np.radians(0.1), bearings.shape)
    bearings /= np.linalg.norm(bearings, axis=-1, keepdims=True)
    frames = body_frames(joints[:, 0], joints[:, 1], 0.5 * (joints[:, 0] + joints[:, 1]), joints[:, 2])
    np.testing.assert_allclose(frames[:, :, 0], R[:, :, 0], atol=1e-9)
    start = TimeMap(1.0, 0.03)
    common = dict(noise_deg=0.1, noise_ar_order=0, point_noise_m=0.0, search_s=0.1)
    plain = fine_time_map(t_pano, bearings, t, joints, np.eye(4), start, **common)
    modelled = fine_time_map(t_pano, bearings, t, joints, np.eye(4), start, **common,
                             body_frames=(t, np.repeat(frames[:, None], 5, axis=1)), offset_tracks=np.ones(5, bool))
    err_plain = abs(plain.time_map.b - true.b) * 1e3
    err_modelled = abs(modelled.time_map.b - true.b) * 1e3
    assert err_plain > 5.0, err_plain  # the offsets pass for a clock error
    assert err_modelled < 1.0, err_modelled
    np.testing.assert_allclose(modelled.offsets_mm, bias * 1e3, atol=5.0)


def _near_scene(optics, seconds: float = 30.0, seed: int = 5):
    """Wrists 0.6-1.0 m from a two-lens, rolling-shutter 360 camera, on both sides of its seam and
    below its horizon (the camera at chest height), seen where and when its stitched frames show them."""
    from omnimocap.geometry.pano_optics import capture_times

    rng = np.random.default_rng(seed)
    T = pano_pose()
    centre = T[:3, 3]

    def motion(t):
        m = hand_motion(np.asarray(t, dtype=np.float64).ravel(), seed)
        m = centre + 0.4 * (m - centre) + np.array([[0.0, -0.3, 0.0], [0.0, -0.35, 0.0], [0.0, -0.25, 0.0], [0.0, -0.3, 0.0]])
        return m

    t_pano = np.arange(0.5, 0.5 + seconds, 1 / 30)
    t_true = TRUE_A * t_pano + TRUE_B
    t_kinect = np.arange(TRUE_B, TRUE_B + seconds + 1.0, 1 / 30) + 0.004
    traj = motion(t_kinect) + rng.normal(0.0, 0.005, (len(t_kinect), 4, 3))
    T_pano_world = invert_pose(T)
    bearings = np.empty((len(t_pano), 4, 3))
    for k in range(4):
        def points_at(t, k=k):
            t = np.atleast_1d(t)
            return transform_points(T_pano_world, motion(t)[:, k] if t.size > 1 else motion(t)[0, k])
        _, p = capture_times(optics, t_true, lambda t: np.stack([points_at(ti) for ti in np.ravel(t)])
                             if np.ndim(t) else points_at(t))
        apparent, _, _ = optics.apparent(p)
        bearings[:, k] = apparent / np.linalg.norm(apparent, axis=-1, keepdims=True)
    bearings = bearings + rng.normal(0.0, np.radians(0.05), bearings.shape)
    return t_kinect, traj, t_pano, bearings / np.linalg.norm(bearings, axis=-1, keepdims=True), T


def test_fine_map_models_the_lenses_and_the_rolling_shutter():
    from omnimocap.geometry.pano_optics import PanoOptics

    optics = PanoOptics(baseline_m=0.03, readout_s=0.025)
    t_kinect, traj, t_pano, bearings, T = _near_scene(optics)
    init = TimeMap(TRUE_A, TRUE_B + 0.01)

    def errors(res):
        return (abs(res.time_map.to_session(15.0) - (TRUE_A * 15.0 + TRUE_B)) * 1e3,
                np.linalg.norm(res.T_ref_pano[:3, 3] - T[:3, 3]) * 1e3)

    modelled = errors(fine_time_map(t_pano, bearings, t_kinect, traj, T, init, refine_extrinsics=True, optics=optics))
    single = errors(fine_time_map(t_pano, bearings, t_kinect, traj, T, init, refine_extrinsics=True))
    print("modelled (ms, mm)", modelled, "single viewpoint, global shutter", single)
    assert modelled[0] < 0.5 and modelled[1] < 2.0
    assert single[0] > modelled[0] + 1.0 and single[1] > 5 * modelled[1]
