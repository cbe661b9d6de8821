"""Each Kinect's own joint-definition bias (constant in the joint's reported orientation) is measured
against the reference Kinect's and removed before fusion, so a fused joint does not step where one
Kinect loses the person (``ObserverConfig.align_kinect_joints``)."""

from __future__ import annotations

import numpy as np

from omnimocap.calibration.observations import definition_difference


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
