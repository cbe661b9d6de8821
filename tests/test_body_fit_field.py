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
