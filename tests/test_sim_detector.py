"""The simulated detector's body keypoints (COCO-17 over the panorama's views) against the truth."""

from __future__ import annotations

import numpy as np
import pytest

from omnimocap.calibration.observations import body_bearings_from_detections
from omnimocap.calibration.pano_hands import search_views
from omnimocap.hands.sim_pose import SimPoseDetector
from omnimocap.sim.simulate import SimConfig, simulate_session
from omnimocap.data.skeletons import COCO_FLIP, COCO_INDEX


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("det") / "s"
    simulate_session(root, SimConfig(seconds=6.0, people=2, kinects=1, seed=4, pano_width=64, kinect_video=False,
                                     realism="ideal"))
    return root


def _angle_deg(a, b):
    return np.degrees(np.arccos(np.clip(np.sum(a * b, axis=-1), -1.0, 1.0)))


def test_keypoint_bearings_follow_the_truth(session):
    det = SimPoseDetector(session, seed=1)
    views = search_views()
    errors, swapped_err, counts = [], [], []
    for f in range(0, len(det.frame_times), 6):
        kp, facing, hidden = det.true_keypoints(f)
        truth = (kp - det._centre) @ det._R_pano_world.T
        truth /= np.linalg.norm(truth, axis=-1, keepdims=True)
        found = body_bearings_from_detections(f, views, det.detect_poses(f, None, views))
        fault = det.faults(f, facing)
        counts.append(len(found))
        for row in found.bearing:
            # match the row to a person by its confident keypoints
            ok = np.all(np.isfinite(row), axis=-1)
            p = int(np.argmin([np.nanmedian(_angle_deg(row[ok], truth[q][ok])) if not fault.swapped[q]
                               else np.nanmedian(_angle_deg(row[ok], truth[q][list(COCO_FLIP)][ok]))
                               for q in range(len(truth))]))
            target = truth[p][list(COCO_FLIP)] if fault.swapped[p] else truth[p]
            e = _angle_deg(row[ok], target[ok])
            (swapped_err if fault.swapped[p] else errors).append(e)
    errors = np.concatenate(errors)
    # Noise of 1-4 cm at 0.5-2.5 m plus the definition offsets: about a degree, a few at worst.
    assert 0.3 < np.median(errors) < 2.5 and np.percentile(errors, 99) < 10.0
    # Every frame finds both people once (no duplicates from overlapping views) unless one is missed.
    assert max(counts) == 2 and np.mean(np.array(counts) == 2) > 0.85


def test_misses_and_swaps(session):
    det = SimPoseDetector(session, seed=1)
    face = [COCO_INDEX[n] for n in ("nose", "left_eye", "right_eye")]
    away_face, swaps = [], {True: [], False: []}
    for f in range(len(det.frame_times)):
        kp, facing, hidden = det.true_keypoints(f)
        _, conf, reported = det.observed_keypoints(f)
        for p in range(det.num_people):
            if not facing[p]:
                away_face.append(conf[p, face].max())
        fault = det.faults(f, np.array([True, False]))
        swaps[True].append(fault.swapped[0])
        swaps[False].append(fault.swapped[1])
    assert away_face and max(away_face) == det.missed_conf  # a face turned away is never found
    assert np.mean(swaps[False]) > 3 * np.mean(swaps[True]) > 0  # people seen from behind are mirrored more
    # Faults are drawn per frame: the same frame gives the same answer.
    a, b = det.observed_keypoints(10), det.observed_keypoints(10)
    np.testing.assert_array_equal(a[0], b[0])
