"""The two-lens, rolling-shutter optics of a stitched 360 camera (geometry/pano_optics.py)."""

import numpy as np
import pytest

from omnimocap.geometry.pano_optics import BACK, FRONT, PanoOptics, capture_times

REAL = PanoOptics(baseline_m=0.03, readout_s=0.025, exposure_s=0.01)


def test_ideal_camera_is_the_plain_equirect_geometry():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(50, 3))
    ideal = PanoOptics.ideal()
    apparent, _, seen = ideal.apparent(p)
    np.testing.assert_array_equal(apparent, p)
    assert seen.all()
    np.testing.assert_array_equal(ideal.time_offset_s(p), 0.0)
    origins, dirs = ideal.rays(p)
    np.testing.assert_array_equal(origins, 0.0)
    np.testing.assert_allclose(dirs, p / np.linalg.norm(p, axis=-1, keepdims=True))
    assert ideal.is_ideal and not REAL.is_ideal


def test_a_near_point_on_the_seam_is_displaced_by_the_half_baseline_parallax():
    # 0.5 m to the camera's right, 2 cm in front of the seam's plane: the front lens shows it.
    p = np.array([0.5, 0.0, 0.02])
    apparent, lens, seen = REAL.apparent(p)
    assert lens == FRONT and seen
    true_deg = np.degrees(np.arctan2(p[2], p[0]))
    shown_deg = np.degrees(np.arctan2(apparent[2], apparent[0]))
    assert shown_deg == pytest.approx(np.degrees(np.arctan2(0.02 - 0.015, 0.5)), abs=1e-9)
    assert true_deg - shown_deg == pytest.approx(1.71, abs=0.03)
    # The ray of the shown direction, from the lens that shows it, passes through the point.
    origin, d = REAL.rays(apparent)
    along = origin + np.dot(p - origin, d) * d
    np.testing.assert_allclose(along, p, atol=1e-12)


def test_the_blind_strip_and_the_back_lens():
    _, lens, seen = REAL.apparent(np.array([[0.5, 0.0, 0.01], [0.5, 0.0, -0.01], [0.5, 0.0, -0.2]]))
    assert list(seen) == [False, False, True]
    assert lens[2] == BACK


def test_rows_run_top_to_bottom_on_both_lenses():
    up, axis, down = np.array([0.0, -1.0, 0.2]), np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.2])
    t = REAL.time_offset_s(np.stack([up, axis, down]))
    assert t[0] < 0 < t[2] and t[1] == pytest.approx(0.0)
    # The back lens: same rows for the mirrored direction.
    np.testing.assert_allclose(REAL.time_offset_s(np.stack([up, down]) * [1, 1, -1]), t[[0, 2]])
    # Straight up lies on the seam, 90 deg from either axis: 90/100 of the half readout (fov 200 deg).
    assert REAL.time_offset_s(np.array([0.0, -1.0, 0.0])) == pytest.approx(-0.9 * REAL.readout_s / 2, rel=1e-9)


def test_capture_times_follow_a_moving_point_to_its_row():
    # A hand 0.6 m in front moving down at 2 m/s: later rows see it later, and the fixed point holds.
    def points_at(t):
        t = np.asarray(t, dtype=np.float64)
        return np.stack(np.broadcast_arrays(0.0 * t, -0.3 + 2.0 * t, 0.6 + 0.0 * t), axis=-1)

    t, p = capture_times(REAL, 0.0, points_at, iterations=4)
    expected = REAL.time_offset_s(REAL.apparent(p)[0])
    assert float(t) == pytest.approx(float(expected), abs=1e-7)
    assert float(t) < 0  # above the axis: exposed before the middle row


def test_record_round_trip():
    assert PanoOptics.from_dict(REAL.to_dict()) == REAL
    assert PanoOptics.from_dict(None) == PanoOptics.ideal()
    assert PanoOptics.from_dict({"baseline_m": 0.02, "unknown": 1}) == PanoOptics(baseline_m=0.02)


def test_truth_reads_the_camera_record(tmp_path):
    from omnimocap.capture.truth import Truth

    truth = Truth(tmp_path)
    assert truth.pano_optics() == PanoOptics.ideal()
    truth.write_realism({"realism": "field", "camera": REAL.to_dict()})
    assert truth.pano_optics() == REAL
    truth.write_realism({"realism": "ideal"})
    assert truth.pano_optics() == PanoOptics.ideal()
