"""Body ids that pass between people at crossings, and k4abt's ordinary id changes, linked into
people (capture/people.py ``cut_handovers``, ``link_tracklets``)."""

from __future__ import annotations

import numpy as np

from omnimocap.capture.people import PeopleConfig, _merge_people, _Piece, body_pieces, link_tracklets
from omnimocap.capture.skeleton_fusion import fuse_people
from tests.test_identity import SENSOR_A, SENSOR_B, T, track, turning


def worst_frame_mm(joints: np.ndarray, truth: np.ndarray) -> float:
    """Largest per-frame mean joint error (mm) over the frames where ``joints`` are present."""
    present = np.isfinite(joints).all(axis=-1).any(axis=-1)
    per_frame = np.nanmean(np.linalg.norm(joints[present] - truth[present], axis=-1), axis=-1)
    return 1000.0 * float(np.max(per_frame))


def crossing():
    """Two people walking past each other along x, 0.5 m apart in depth, crossing at t = 10 s."""
    p0 = turning(T, (-2.5, 0.0, 0.0), spin_s=1e9, walk=(0.25, 0.0))
    p1 = turning(T, (2.5, 0.0, 0.5), spin_s=1e9, walk=(-0.25, 0.0))
    return p0, p1


def test_an_id_handed_over_mid_crossing_is_cut_and_the_person_does_not_jump():
    # Kinect B's id 5 follows p0 until the crossing, then slides over 0.3 s onto p1 (which hid p0
    # from it) and stays there: every step is far below the jump that cuts a track, and there is
    # no gap. p1's own id 6 in B is lost as the id moves onto it; p0 comes back to B as id 9.
    rng = np.random.default_rng(11)
    p0, p1 = crossing()
    w = np.clip((T - 9.9) / 0.3, 0.0, 1.0)[:, None, None]
    handed = (1.0 - w) * p0 + w * p1
    noise = [rng.normal(0, 0.01, p0.shape) for _ in range(5)]
    tracks = [track("A", 1, p0 + noise[0], SENSOR_A), track("A", 2, p1 + noise[1], SENSOR_A),
              track("B", 5, handed + noise[2], SENSOR_B),
              track("B", 6, p1 + noise[3], SENSOR_B, T < 9.8),
              track("B", 9, p0 + noise[4], SENSOR_B, T >= 10.6)]
    people = fuse_people(tracks, T)
    assert len(people) == 2
    for person in people:
        worst = min(worst_frame_mm(person.joints, truth) for truth in (p0, p1))
        assert worst < 60.0, worst
    # without the cut, the person B's id 5 was linked to follows both bodies in turn
    kept = fuse_people(tracks, T, config=PeopleConfig(cut_handovers=False))
    assert max(min(worst_frame_mm(p.joints, truth) for truth in (p0, p1)) for p in kept) > 300.0


def test_the_kinect_that_keeps_its_body_is_not_cut():
    # the same hand-over: of the two tracks whose agreement changes, only the one whose path breaks
    # (B's id 5) is cut; Kinect A's tracks stay whole
    rng = np.random.default_rng(12)
    p0, p1 = crossing()
    w = np.clip((T - 9.9) / 0.3, 0.0, 1.0)[:, None, None]
    tracks = [track("A", 1, p0 + rng.normal(0, 0.01, p0.shape), SENSOR_A),
              track("A", 2, p1 + rng.normal(0, 0.01, p0.shape), SENSOR_A),
              track("B", 5, (1.0 - w) * p0 + w * p1 + rng.normal(0, 0.01, p0.shape), SENSOR_B)]
    pieces, origin = body_pieces(tracks, PeopleConfig())
    assert origin == [0, 1, 2, 2]
    b = [_Piece(p) for p in pieces[2:]]
    assert b[0].end < 10.0 and b[1].start > 10.1


def test_ordinary_id_changes_still_link():
    # two people, each Kinect changing their ids the ways k4abt does: a new id after a short loss,
    # a new id with no loss at all, an id used again for the other person after its first owner
    # got another; p1 leaves both views for 2 s and comes back near where it left, with new ids
    rng = np.random.default_rng(13)
    p0 = turning(T, (-1.0, 0.0, 0.0), spin_s=30.0, walk=(0.1, 0.05))
    p1 = turning(T, (1.0, 0.0, 1.0), spin_s=1e9, walk=(-0.05, 0.0))
    # (truth, Kinect, body id, first s, end s)
    layout = [(p0, "A", 1, 0.0, 4.0), (p0, "A", 3, 4.4, 9.0), (p0, "A", 7, 9.0, 16.1),
              (p0, "B", 2, 0.0, 11.0), (p0, "B", 4, 11.2, 16.1),
              (p1, "A", 2, 0.0, 6.0), (p1, "A", 1, 8.0, 12.0), (p1, "A", 5, 12.0, 16.1),
              (p1, "B", 6, 0.0, 6.0), (p1, "B", 8, 8.0, 16.1)]
    seen: dict = {}
    for truth, device, body_id, first, end in layout:
        joints = seen.setdefault((device, body_id), np.full_like(truth, np.nan))
        part = (T >= first) & (T < end)
        joints[part] = truth[part] + rng.normal(0, 0.01, truth[part].shape)
    tracks = [track(device, body_id, joints, SENSOR_A if device == "A" else SENSOR_B)
              for (device, body_id), joints in seen.items()]
    people = fuse_people(tracks, T)
    assert len(people) == 2
    for person in people:
        worst = min(worst_frame_mm(person.joints, truth) for truth in (p0, p1))
        assert worst < 40.0, worst
        assert np.isfinite(person.joints).all(axis=(-1, -2)).mean() > 0.85


def test_two_ids_one_kinect_picks_up_one_after_the_other_are_one_person():
    # a body lost behind another comes back to Kinect A for one frame under id 2 and, 0.07 s later,
    # under id 3: the two pieces start together but never overlap, so they are one body (they were
    # assigned as two bodies, one of them starting a second person)
    rng = np.random.default_rng(14)
    truth = turning(T, (0.0, 0.0, 0.0), spin_s=30.0, walk=(0.4, 0.0))
    noisy = [truth + rng.normal(0, 0.01, truth.shape) for _ in range(4)]
    one = np.abs(T - 6.4) < 1e-6
    tracks = [track("A", 1, noisy[0], SENSOR_A, T < 6.0), track("A", 2, noisy[1], SENSOR_A, one),
              track("A", 3, noisy[2], SENSOR_A, T >= 6.46), track("B", 7, noisy[3], SENSOR_B)]
    pieces, _ = body_pieces(tracks, PeopleConfig())
    assert sorted(map(sorted, link_tracklets(pieces, PeopleConfig(merge_people=False)))) == [[0, 1, 2, 3]]


def test_ids_passed_back_and_forth_on_one_body_are_one_person():
    # while two people cross, Kinect A hands two ids back and forth from frame to frame: the person's
    # id 1 and id 2 alternate for 0.3 s before id 2 keeps it. The two pieces' time spans overlap but
    # no frame holds both, so they are one body; counted by their spans, id 2 started a person of
    # its own that no merge could join to the first (one Kinect "at the same time" in both).
    rng = np.random.default_rng(17)
    truth = turning(T, (0.0, 0.0, 0.0), spin_s=30.0, walk=(0.4, 0.0))
    noisy = [truth + rng.normal(0, 0.01, truth.shape) for _ in range(3)]
    frame = np.arange(len(T))
    swapping = (T >= 6.0) & (T < 6.3)
    one = (T < 6.0) | (swapping & (frame % 2 == 0))
    two = (T >= 6.3) | (swapping & (frame % 2 == 1))
    tracks = [track("A", 1, noisy[0], SENSOR_A, one), track("A", 2, noisy[1], SENSOR_A, two),
              track("B", 7, noisy[2], SENSOR_B)]
    pieces, _ = body_pieces(tracks, PeopleConfig())
    assert len(pieces) == 3
    assert sorted(map(sorted, link_tracklets(pieces))) == [[0, 1, 2]]
    people = fuse_people(tracks, T)
    assert len(people) == 1
    assert worst_frame_mm(people[0].joints, truth) < 40.0
    # two bodies that one Kinect reports in the same frames stay apart however close they are
    apart = [track("A", 1, noisy[0], SENSOR_A, T < 6.3), track("A", 2, noisy[1], SENSOR_A, T >= 6.0),
             track("B", 7, noisy[2], SENSOR_B)]
    pieces, _ = body_pieces(apart, PeopleConfig())
    assert len(link_tracklets(pieces, PeopleConfig(merge_people=False))) == 2


def test_people_that_fit_together_are_merged_and_others_are_not():
    rng = np.random.default_rng(15)
    truth = turning(T, (0.0, 0.0, 0.0), spin_s=30.0, walk=(0.4, 0.0))
    other = turning(T, (0.0, 0.0, 2.0), spin_s=30.0, walk=(0.4, 0.0))
    noisy = truth + rng.normal(0, 0.01, truth.shape)
    pieces = [track("A", 1, noisy, SENSOR_A, T < 5.0),                    # 0: A, 0-5 s
              track("B", 2, noisy, SENSOR_B, (T >= 5.3) & (T < 9.0)),     # 1: B, 5.3-9 s, where 0 went
              track("A", 3, noisy, SENSOR_A, (T >= 3.0) & (T < 8.0)),     # 2: A again while 0 is seen
              track("B", 4, other, SENSOR_B, T >= 9.3),                   # 3: 2 m away from 1's end
              track("A", 5, noisy, SENSOR_A, T >= 12.0)]                  # 4: 3 s after the others end
    info = [_Piece(p) for p in pieces]
    merged = _merge_people(info, [[0], [1], [2], [3], [4]], PeopleConfig())
    groups = sorted(map(sorted, merged))
    assert [0, 1] in groups or [1, 2] in groups
    assert not any(0 in g and 2 in g for g in groups)  # one Kinect, two bodies at once
    assert [3] in groups and [4] in groups
    assert len(_merge_people(info, [[0], [1]], PeopleConfig(merge_max_gap_s=0.1))) == 2


def test_a_piece_joins_the_person_just_lost_not_one_lost_long_ago():
    # a stray body seen for 0.3 s at 5 s, 2 m from the person, is a person of its own; when the
    # person comes back under a new id 0.15 s after its loss, the stray's gate has grown with the
    # 5 s since (walking speed) until the piece fits it about as well as the person's own narrow one
    rng = np.random.default_rng(16)
    truth = turning(T, (0.0, 0.0, 0.0), spin_s=30.0, walk=(0.4, 0.0))
    stray = truth.copy()
    stray[:] = truth[np.searchsorted(T, 10.15)] + np.array([0.0, 0.0, 0.1])
    pieces = [track("A", 1, truth + rng.normal(0, 0.01, truth.shape), SENSOR_A, T < 10.0),
              track("B", 2, stray + rng.normal(0, 0.01, truth.shape), SENSOR_B, (T >= 5.0) & (T < 5.3)),
              track("A", 3, truth + rng.normal(0, 0.01, truth.shape), SENSOR_A, T >= 10.15)]
    assert sorted(map(sorted, link_tracklets(pieces))) == [[0, 2], [1]]
    assert sorted(map(sorted, link_tracklets(pieces, PeopleConfig(link_recent_first=False)))) == [[0], [1, 2]]
