"""Left/right labels of a person every Kinect mirrors at once (capture/people.py ``resolve_mirrors``)."""

from __future__ import annotations

import numpy as np

from omnimocap.capture.people import PeopleConfig, resolve_mirrors
from omnimocap.capture.skeleton_fusion import LEFT_RIGHT, facing_cosine
from tests.test_identity import T, turning


# Two Kinects behind a person who faces +z (away from both).
SENSORS = [np.array([0.0, 1.0, -3.5]), np.array([2.5, 1.0, -3.0])]


def mirrored_views(frames: int, seed: int, kinects: list[tuple[list[tuple[int, int]], tuple[int, int]]]):
    """The person's true joints (frames, J, 3) and, per Kinect given as (mirrored runs [a, b), gap
    [a, b)), its joints with 1 cm noise, left/right exchanged over the runs and missing in the gap,
    and the frames it exchanged."""
    t = T[:frames]
    truth = turning(t, (0.0, 0.0, 0.0), spin_s=1e9)  # faces +z
    rng = np.random.default_rng(seed)
    seen, exchanged = [], []
    for runs, gap in kinects:
        joints = truth + rng.normal(0.0, 0.01, truth.shape)
        mask = np.zeros(len(t), dtype=bool)
        for a, b in runs:
            mask[a:b] = True
        joints = np.where(mask[:, None, None], joints[:, LEFT_RIGHT], joints)
        joints[gap[0]:gap[1]] = np.nan
        seen.append(joints)
        exchanged.append(mask)
    return truth, seen, exchanged


def check_found(seen, found, exchanged) -> None:
    for joints, mask, truth_mask in zip(seen, found, exchanged):
        present = np.isfinite(joints).all(axis=(-1, -2))
        assert np.all(mask[present] == truth_mask[present])


def test_a_run_both_kinects_mirror_after_a_gap_is_repaired():
    # A person facing away from both Kinects (both behind), each mirroring it on and off; after a
    # gap both pick it up mirrored for about a second, so their agreement says nothing and only the
    # run's end (the labels jump back) tells. With the former per-frame cost of an exchange (0.2)
    # the run stayed unrepaired (about three quarters of the frames right).
    truth, seen, exchanged = mirrored_views(150, 3, [([(0, 60), (75, 110)], (60, 75)), ([(80, 110)], (60, 80))])
    conf = [np.where(np.isfinite(j).all(axis=-1), 2, 0) for j in seen]
    fixed, _, found = resolve_mirrors(seen, conf, SENSORS)
    check_found(seen, found, exchanged)
    for joints in fixed:
        present = np.isfinite(joints).all(axis=(-1, -2))
        assert np.nanmean(np.linalg.norm(joints[present] - truth[present], axis=-1)) < 0.03


def test_a_run_that_lasts_to_the_end_is_repaired():
    # Facing away from both Kinects, the person is mirrored by Kinect A from 40 frames before the end
    # of the recording; Kinect B, in a drop-out when the run begins, comes back mirrored as well. Only
    # the run's start in A tells (no end, no disagreement): at 0.1 per exchanged frame the run's
    # cost outweighed that start and the last second stayed mirrored.
    _, seen, exchanged = mirrored_views(300, 4, [([(260, 300)], (0, 0)), ([(260, 300)], (250, 275))])
    conf = [np.where(np.isfinite(j).all(axis=-1), 2, 0) for j in seen]
    _, _, found = resolve_mirrors(seen, conf, SENSORS)
    check_found(seen, found, exchanged)


# Two Kinects in front of a person who faces +z (towards both).
FRONT = [np.array([0.0, 1.0, 3.5]), np.array([2.5, 1.0, 3.0])]


def front_views(frames: int, seed: int, kinects: list[tuple[list[tuple[int, int]], list[tuple[int, int]]]]):
    """Like :func:`mirrored_views` for a person facing the Kinects, each Kinect given as (exchanged
    runs, gaps)."""
    truth = turning(T[:frames], (0.0, 0.0, 0.0), spin_s=1e9)
    rng = np.random.default_rng(seed)
    seen, exchanged = [], []
    for runs, gaps in kinects:
        joints = truth + rng.normal(0.0, 0.01, truth.shape)
        mask = np.zeros(frames, dtype=bool)
        for a, b in runs:
            mask[a:b] = True
        joints = np.where(mask[:, None, None], joints[:, LEFT_RIGHT], joints)
        for a, b in gaps:
            joints[a:b] = np.nan
        seen.append(joints)
        exchanged.append(mask)
    return truth, seen, exchanged


def test_a_few_exchanged_frames_that_face_away_do_not_turn_over_a_stretch():
    # The person faces both Kinects, labels right, and each Kinect loses them for a moment on either
    # side of two seconds; within those, Kinect B reports three frames with the labels exchanged,
    # which makes its report face away. Turning the whole stretch over on both Kinects explains
    # those three frames as well as the truth does, at the cost of the prior and the drop-outs'
    # continuity only; with an unbounded facing cost it was the cheaper explanation.
    _, seen, exchanged = front_views(200, 5, [([], [(40, 50), (112, 135)]), ([(80, 83)], [(45, 52), (118, 140)])])
    conf = [np.where(np.isfinite(j).all(axis=-1), 2, 0) for j in seen]
    _, _, found = resolve_mirrors(seen, conf, FRONT)
    check_found(seen, found, exchanged)
    _, _, unbounded = resolve_mirrors(seen, conf, FRONT, PeopleConfig(mirror_bounded_facing=False))
    assert unbounded[0][60:100].all()  # the failure this guards against


def test_a_run_between_two_drop_outs_is_repaired_across_them():
    # One Kinect behind the person: it loses them for 0.2-0.4 s, picks them up mirrored for 40
    # frames and loses them again. The run's start and end both fall in drop-outs, so only the
    # labels' continuity across them tells; without it the run stayed unrepaired.
    for gap in (6, 9, 12):
        _, seen, exchanged = mirrored_views(200, gap, [([(60, 100)], (60 - gap, 60))])
        seen[0][100:100 + gap] = np.nan
        conf = [np.where(np.isfinite(j).all(axis=-1), 2, 0) for j in seen]
        _, _, found = resolve_mirrors(seen, conf, SENSORS[:1])
        check_found(seen, found, exchanged)
        _, _, free = resolve_mirrors(seen, conf, SENSORS[:1], PeopleConfig(mirror_bridge_gaps=False))
        assert not free[0][60:100].any()  # the failure this guards against


def test_a_run_through_which_the_person_turns_to_face_the_kinect_is_repaired():
    # One Kinect behind a person who turns round (a full turn in 3.6 s): mirrored from the moment they
    # face away for 27 frames, through which they turn until they face the Kinect side-on, then
    # seen a second with the labels right. The run's last frames, exchanged, face away; on the
    # agreement's scale the continuity of the run's two ends cost less than those frames, and the
    # decision kept the run and exchanged the second after it instead.
    truth = turning(T[:300], (0.0, 0.0, 0.0), spin_s=3.6)
    cos = facing_cosine(truth, SENSORS[0])
    a = int(np.flatnonzero(cos < -0.9)[0]) + 5
    rng = np.random.default_rng(6)
    joints = truth + rng.normal(0.0, 0.01, truth.shape)
    mask = np.zeros(len(truth), dtype=bool)
    mask[a:a + 27] = True
    joints = np.where(mask[:, None, None], joints[:, LEFT_RIGHT], joints)
    joints[a + 58:] = np.nan
    conf = [np.where(np.isfinite(joints).all(axis=-1), 2, 0)]
    _, _, found = resolve_mirrors([joints], conf, SENSORS[:1])
    check_found([joints], found, [mask])
    _, _, coarse = resolve_mirrors([joints], conf, SENSORS[:1], PeopleConfig(mirror_jump_sigma_m=0.03))
    assert not coarse[0][a:a + 27].any() and coarse[0][a + 27:a + 58].all()  # the failure this guards against
