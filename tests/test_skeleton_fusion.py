"""Skeleton fusion on synthetic two-Kinect views of known motion."""

from __future__ import annotations

import numpy as np
import pytest

from omnimocap.geometry.transforms import axis_angle_to_matrix, make_pose, relative_angle_deg, transform_points
from omnimocap.data.skeletons import KINECT_INDEX
from omnimocap.errors import UserError
from omnimocap.calibration.world_frame import refine_kinect_extrinsic
from omnimocap.capture.skeleton_fusion import (
    FACE, LEFT_RIGHT, BodyTrack, fuse_people, resample_track,
)

# Body frame: x to the person's left, y up, z forward; pelvis at the origin.
_LEFT = {
    "CLAVICLE": (0.05, 0.55, 0.0), "SHOULDER": (0.18, 0.55, 0.0), "ELBOW": (0.2, 0.3, 0.05),
    "WRIST": (0.22, 0.07, 0.1), "HAND": (0.22, 0.0, 0.12), "HANDTIP": (0.22, -0.07, 0.13),
    "THUMB": (0.18, 0.02, 0.15), "HIP": (0.1, -0.05, 0.0), "KNEE": (0.1, -0.5, 0.03),
    "ANKLE": (0.1, -0.9, 0.0), "FOOT": (0.1, -0.95, 0.12), "EYE": (0.03, 0.78, 0.08), "EAR": (0.07, 0.76, 0.0),
}
_MID = {"PELVIS": (0, 0, 0), "SPINE_NAVEL": (0, 0.2, 0), "SPINE_CHEST": (0, 0.4, 0), "NECK": (0, 0.6, 0),
        "HEAD": (0, 0.75, 0.02), "NOSE": (0, 0.75, 0.1)}
ARM = [KINECT_INDEX[f"{j}_{s}"] for j in ("ELBOW", "WRIST", "HAND", "HANDTIP", "THUMB") for s in ("LEFT", "RIGHT")]


def template() -> np.ndarray:
    out = np.zeros((32, 3))
    for name, i in KINECT_INDEX.items():
        if name in _MID:
            out[i] = _MID[name]
        else:
            base, side = name.rsplit("_", 1)
            x, y, z = _LEFT[base]
            out[i] = (x if side == "LEFT" else -x, y, z)
    return out


def motion(t: np.ndarray, origin, seed: int = 0) -> np.ndarray:
    """World joints (N,32,3) of a person facing +z (yaw sways), walking slowly and waving."""
    rng = np.random.default_rng(seed)
    body = np.broadcast_to(template(), (len(t), 32, 3)).copy()
    for j in ARM:
        for axis in range(3):
            body[:, j, axis] += 0.12 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t + rng.uniform(0, 6))
    R = axis_angle_to_matrix(np.stack([np.zeros_like(t), 0.4 * np.sin(0.5 * t), np.zeros_like(t)], -1))
    pos = np.asarray(origin) + np.stack([0.3 * np.sin(0.3 * t), 1.0 + 0.0 * t, 0.2 * np.cos(0.2 * t)], -1)
    return np.einsum("nij,nkj->nki", R, body) + pos[:, None]


SENSOR_FRONT = np.array([0.0, 1.0, 3.5])
SENSOR_BACK = np.array([0.3, 1.0, -3.0])


def view(truth_fn, t, sensor, noise, rng, behind: bool, device: str, body_id: int) -> BodyTrack:
    j = truth_fn(t) + rng.normal(0.0, noise, (len(t), 32, 3))
    conf = np.full((len(t), 32), 2)
    if behind:  # k4abt assumes the body faces the camera: labels exchanged, face only guessed
        j = j[:, LEFT_RIGHT]
        conf[:, FACE] = 1
    return BodyTrack(device, body_id, t, j, conf, sensor)


def two_views(seed: int = 0, people: int = 1):
    rng = np.random.default_rng(seed)
    ta = np.arange(0.0, 10.0, 1 / 30)
    tb = ta + 0.011
    tracks, truths = [], []
    for p in range(people):
        fn = (lambda t, p=p: motion(t, (1.6 * p, 0.0, 0.4 * p), seed + p))
        truths.append(fn)
        tracks.append(view(fn, ta, SENSOR_FRONT, 0.025, rng, False, "A", p + 1))
        tracks.append(view(fn, tb, SENSOR_BACK, 0.025, rng, True, "B", 7 - p))
    return tracks, truths


def mean_error(j: np.ndarray, truth: np.ndarray) -> float:
    return float(np.nanmean(np.linalg.norm(j - truth, axis=-1)))


def test_fused_error_below_the_better_single_view_and_swap_detected():
    tracks, (truth_fn,) = two_views()
    t = np.arange(0.1, 9.9, 1 / 30)
    truth = truth_fn(t)
    (person,) = fuse_people(tracks, t)
    assert person.tracks == [0, 1]
    single = [mean_error(resample_track(tr, t)[0], truth) for tr in tracks]
    fused = mean_error(person.joints, truth)
    assert single[1] > 0.1  # the back view, as reported, has left and right exchanged
    assert fused < min(single), (fused, single)
    assert person.swapped[1].mean() > 0.95 and not person.swapped[0].any()
    assert np.all(person.confidence[:, KINECT_INDEX["WRIST_LEFT"]] > 0.8)


def test_two_people_are_associated_across_devices():
    tracks, truths = two_views(seed=3, people=2)
    order = [3, 0, 2, 1]
    t = np.arange(0.1, 9.9, 1 / 30)
    people = fuse_people([tracks[i] for i in order], t)
    groups = sorted(tuple(sorted(order[k] for k in p.tracks)) for p in people)
    assert groups == [(0, 1), (2, 3)]
    for p in people:
        k = order[p.tracks[0]]
        truth = truths[k // 2](t)
        front = tracks[k - k % 2]
        assert mean_error(p.joints, truth) < mean_error(resample_track(front, t)[0], truth)


def test_resample_leaves_gaps_and_missing_joints_empty():
    tracks, _ = two_views()
    tr = tracks[0]
    keep = (tr.t < 3.0) | (tr.t > 4.0)
    tr = BodyTrack(tr.device, tr.body_id, tr.t[keep], tr.joints[keep], tr.confidence[keep], tr.sensor_position)
    tr.confidence[:, KINECT_INDEX["FOOT_LEFT"]] = 0
    j, c = resample_track(tr, np.array([2.5, 3.5, 4.5, 20.0]))
    assert np.isfinite(j[0, 0]).all() and np.isnan(j[1]).all() and np.isfinite(j[2, 0]).all() and np.isnan(j[3]).all()
    assert np.isnan(j[0, KINECT_INDEX["FOOT_LEFT"]]).all() and c[0, KINECT_INDEX["FOOT_LEFT"]] == 0


def test_kinect_extrinsic_refined_from_shared_skeletons():
    tracks, (truth_fn,) = two_views(seed=5)
    t = np.arange(0.1, 9.9, 1 / 30)
    ja, ca = resample_track(tracks[0], t)
    jb, cb = resample_track(tracks[1], t)
    error = make_pose(axis_angle_to_matrix(np.radians([1.0, -2.0, 0.5])), np.array([0.03, -0.02, 0.05]))
    dT, stats = refine_kinect_extrinsic(ja, ca, transform_points(error, jb), cb)
    corrected = dT @ error
    assert relative_angle_deg(corrected[:3, :3], np.eye(3)) < 0.2
    assert np.linalg.norm(corrected[:3, 3]) < 0.01
    assert stats["used"] > 1000
    with pytest.raises(UserError, match="confidently seen by both"):
        refine_kinect_extrinsic(ja, ca, jb, np.zeros_like(cb))


def test_body_forward_from_labelled_shoulders_and_hips():
    from omnimocap.capture.skeleton_fusion import body_forward, facing_cosine

    joints = np.full((3, 32, 3), np.nan)
    for name, x in (("SHOULDER_LEFT", 0.2), ("HIP_LEFT", 0.1), ("SHOULDER_RIGHT", -0.2), ("HIP_RIGHT", -0.1)):
        joints[:2, KINECT_INDEX[name]] = (x, 1.2 if name.startswith("SHOULDER") else 0.9, 2.0)
    joints[:2, KINECT_INDEX["PELVIS"]] = (0.0, 0.9, 2.0)
    joints[1, :, 0] *= -1  # left and right exchanged: it faces away
    fwd = body_forward(joints)
    np.testing.assert_allclose(fwd[0], [0.0, 0.0, 1.0])  # left at +x, y up: facing +z
    np.testing.assert_allclose(fwd[1], [0.0, 0.0, -1.0])
    assert np.isnan(fwd[2]).all()
    cos = facing_cosine(joints, np.array([0.0, 0.9, 5.0]))
    np.testing.assert_allclose(cos[:2], [1.0, -1.0])
