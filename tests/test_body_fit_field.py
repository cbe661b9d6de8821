"""The body fit's repairs for k4abt's field errors, each on a small synthetic case where it matters."""

from __future__ import annotations

import numpy as np

from omnimocap.data.skeletons import KINECT_INDEX, KINECT_JOINTS
from omnimocap.fusion.body_fit import BodyFitConfig, fit_body, mirrored_frames
from omnimocap.sim.synthetic_models import synthetic_body_motion

BODY = slice(0, 22)


def _error_mm(fit, joints) -> np.ndarray:
    return np.linalg.norm(fit.joints[:, BODY] - joints[:, BODY], axis=-1) * 1000.0


def _exchanged(kinect: np.ndarray, frames: slice) -> np.ndarray:
    """k4abt's front/back confusion: every LEFT/RIGHT pair exchanged on ``frames``."""
    out = kinect.copy()
    for name in KINECT_JOINTS:
        if name.endswith("_LEFT"):
            a, b = KINECT_INDEX[name], KINECT_INDEX[name[:-5] + "_RIGHT"]
            out[frames, a], out[frames, b] = kinect[frames, b], kinect[frames, a]
    return out


def test_mirror_guard_turns_a_mirrored_run_back():
    skeleton, _, joints, kinect, confidence = synthetic_body_motion(150, seed=4)
    rng = np.random.default_rng(5)
    noisy = kinect + rng.normal(0.0, 0.005, kinect.shape)
    mirrored = _exchanged(noisy, slice(60, 95))
    found = mirrored_frames(mirrored, confidence, BodyFitConfig())
    expected = np.zeros(150, dtype=bool)
    expected[60:95] = True
    np.testing.assert_array_equal(found, expected)
    # nothing is found where nothing is mirrored
    assert not mirrored_frames(noisy, confidence, BodyFitConfig()).any()
    guarded = fit_body(mirrored, confidence, skeleton)
    plain = fit_body(mirrored, confidence, skeleton, BodyFitConfig(mirror_guard=False))
    clean = fit_body(noisy, confidence, skeleton)
    e_guard, e_plain = _error_mm(guarded, joints)[60:95].mean(), _error_mm(plain, joints)[60:95].mean()
    assert e_plain > 50.0, e_plain  # the fitted body turned around
    assert e_guard < _error_mm(clean, joints)[60:95].mean() + 1.0, (e_guard, e_plain)


def test_mirror_guard_at_the_end_and_after_a_bridged_drop_out():
    """A run reaching the last frame, entered through predicted (LOW confidence) frames that turn
    smoothly from one labelling to the other, as a drop-out bridged across a confusion does."""
    skeleton, _, joints, kinect, confidence = synthetic_body_motion(120, seed=6)
    mirrored = _exchanged(kinect, slice(100, 120))
    conf = confidence.copy()
    bridge = np.arange(92, 100)
    s = ((bridge - 91) / 9.0)[:, None, None]
    mirrored[bridge] = (1 - s) * kinect[bridge] + s * _exchanged(kinect, slice(None))[bridge]
    conf[bridge] = 1
    found = mirrored_frames(mirrored, conf, BodyFitConfig())
    assert found[100:].all() and not found[:92].any(), np.flatnonzero(found)


def _correlated_noise(rng: np.random.Generator, shape: tuple, std_m: float, frames: float = 3.0) -> np.ndarray:
    """Noise correlated over about ``frames`` frames (a first-order autoregression), ``std_m`` per axis."""
    a = np.exp(-1.0 / frames)
    out = np.zeros(shape)
    out[0] = rng.normal(0.0, std_m, shape[1:])
    for f in range(1, shape[0]):
        out[f] = a * out[f - 1] + rng.normal(0.0, std_m * np.sqrt(1 - a * a), shape[1:])
    return out


def test_body_targets_smooth_each_joint_with_its_own_noise():
    """k4abt's ankles and feet are far noisier than its trunk; smoothing every joint with the
    person's one noise level leaves them noisy, and the fitted legs with them."""
    from omnimocap.fusion.frame_stage import smooth_anchors
    from omnimocap.fusion.pipeline import PeopleTracks, ProcessConfig, body_targets

    skeleton, _, joints, kinect, confidence = synthetic_body_motion(240, seed=11)
    rng = np.random.default_rng(12)
    std = np.full(32, 0.004)
    legs = [KINECT_INDEX[f"{j}_{s}"] for j in ("KNEE", "ANKLE", "FOOT") for s in ("LEFT", "RIGHT")]
    std[legs] = 0.02
    noisy = kinect + _correlated_noise(rng, kinect.shape, 1.0) * std[None, :, None]
    people = PeopleTracks(np.arange(240) / 30.0, [0], noisy[None], confidence[None])
    config = ProcessConfig()
    from omnimocap.fusion.filtering import estimate_noise_std

    per_person = smooth_anchors(people, np.array([estimate_noise_std(noisy)]), config).joints[0]
    per_joint = body_targets(people, config)[0]
    err = {k: np.nanmean(np.linalg.norm(x[:, legs] - kinect[:, legs], axis=-1)) * 1000
           for k, x in (("raw", noisy), ("person", per_person), ("joint", per_joint))}
    assert err["joint"] < 0.9 * err["person"], err
    fit_person = fit_body(per_person, confidence, skeleton)
    fit_joint = fit_body(per_joint, confidence, skeleton)
    leg_joints = list(range(1, 12))
    e_person = _error_mm(fit_person, joints)[:, leg_joints].mean()
    e_joint = _error_mm(fit_joint, joints)[:, leg_joints].mean()
    assert e_joint < e_person - 1.0, (e_joint, e_person)
