"""The one hand centre from the Kinect's arm and hand joints."""

import numpy as np
import pytest

from omnimocap.hands.centre import (
    HAND_CENTRE_BLEND, HAND_CENTRE_REACH_M, HAND_JOINT_MEAN, collapsed_hand, hand_centre,
)


def _hand(n: int = 5) -> dict[str, np.ndarray]:
    """An open right hand pointing along +x from the wrist at the origin, n copies (n,3), metres."""
    points = {"elbow": (-0.25, 0.0, 0.0), "wrist": (0.0, 0.0, 0.0), "hand": (0.08, 0.0, 0.0),
              "handtip": (0.17, 0.0, 0.0), "thumb": (0.09, 0.05, 0.0)}
    return {k: np.tile(np.array(v), (n, 1)) for k, v in points.items()}


def test_weights_sum_to_one():
    assert sum(HAND_CENTRE_BLEND.values()) == pytest.approx(1.0)
    assert sum(HAND_JOINT_MEAN.values()) == pytest.approx(1.0)


def test_blend_and_plain_mean():
    j = _hand()
    expected = sum(w * j[name][0] for name, w in HAND_CENTRE_BLEND.items())
    np.testing.assert_allclose(hand_centre(j), np.tile(expected, (5, 1)))
    mean = np.mean([j[n] for n in ("wrist", "hand", "handtip", "thumb")], axis=0)
    np.testing.assert_array_equal(hand_centre(j, weights=HAND_JOINT_MEAN), mean)


def test_from_arm_moves_the_wrist_along_the_forearm():
    j = _hand()
    np.testing.assert_allclose(hand_centre(j, True), np.tile([HAND_CENTRE_REACH_M, 0.0, 0.0], (5, 1)))
    np.testing.assert_allclose(hand_centre(j, True, reach_m=0.1)[0], [0.1, 0.0, 0.0])


def test_missing_joints_fall_back_to_the_wrist_or_stay_missing():
    j = _hand()
    j["thumb"][1] = np.nan
    j["elbow"][2] = np.nan
    blend = hand_centre(j)
    np.testing.assert_array_equal(blend[1], j["wrist"][1])
    assert np.isnan(hand_centre(j, wrist_fallback=False)[1]).all()
    assert np.isfinite(hand_centre(j, wrist_fallback=False)[[0, 2, 3, 4]]).all()
    np.testing.assert_array_equal(hand_centre(j, True)[2], j["wrist"][2])
    assert np.isnan(hand_centre(j, True, wrist_fallback=False)[2]).all()


def test_a_collapsed_tip_and_thumb_extrapolate_from_the_wrist_through_the_hand_joint():
    j = _hand()
    j["handtip"][3] = j["hand"][3] + [0.01, 0.0, 0.0]
    j["thumb"][4] = j["hand"][4]
    mask = collapsed_hand(j, 0.025)
    np.testing.assert_array_equal(mask, [False, False, False, True, True])
    c = hand_centre(j, weights=HAND_JOINT_MEAN, collapse_m=0.025, collapse_gain=1.06)
    np.testing.assert_allclose(c[3:], np.tile([1.06 * 0.08, 0.0, 0.0], (2, 1)))
    np.testing.assert_array_equal(c[:3], hand_centre(j, weights=HAND_JOINT_MEAN)[:3])
    # without the check the collapse pulls the centre towards the wrist
    assert hand_centre(j, weights=HAND_JOINT_MEAN)[3, 0] < c[3, 0] - 0.01


def test_any_leading_shape():
    j = {k: v.reshape(1, 5, 1, 3).repeat(2, axis=2) for k, v in _hand().items()}  # (P, M, side, 3)
    assert hand_centre(j).shape == (1, 5, 2, 3)
    np.testing.assert_allclose(hand_centre(j)[0, :, 1], hand_centre(_hand()))


def test_the_kinect_hand_joints_and_their_hand21_points_are_written_once():
    from omnimocap.data.skeletons import HAND21_INDEX, KINECT_HAND_JOINT_TO_HAND21, KINECT_INDEX
    from omnimocap.hands.centre import HAND_JOINTS

    assert HAND_JOINTS == ("wrist", "hand", "handtip", "thumb") == tuple(KINECT_HAND_JOINT_TO_HAND21)
    for kinect, hand21 in KINECT_HAND_JOINT_TO_HAND21.items():
        assert hand21 in HAND21_INDEX
        assert {f"{kinect.upper()}_LEFT", f"{kinect.upper()}_RIGHT"} <= set(KINECT_INDEX)
