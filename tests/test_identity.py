"""People from k4abt bodies with field failures: ids that change and swap, left/right labels
exchanged while facing away, drop-outs (errors injected by tests/tools/k4abt_errors.py)."""

from __future__ import annotations

import numpy as np

from omnimocap.geometry.transforms import axis_angle_to_matrix
from omnimocap.capture.people import PeopleConfig, bridge_gaps, link_tracklets, resolve_mirrors, split_tracklets
from omnimocap.capture.skeleton_fusion import BodyTrack, fuse_people
from tests.tools import k4abt_errors as k4
from tests.test_skeleton_fusion import template
from omnimocap.capture.session import bodies_name, kinect_name

T = np.arange(0.0, 16.0, 1 / 30)
SENSOR_A = np.array([0.0, 1.0, 3.5])
SENSOR_B = np.array([3.0, 1.0, -1.5])


def turning(t: np.ndarray, centre, phase: float = 0.0, spin_s: float = 8.0, walk=(0.0, 0.0)) -> np.ndarray:
    """World joints (F,32,3) of a person turning fully around every ``spin_s`` seconds while walking
    at ``walk`` (m/s in x and z) from ``centre``, arms swinging."""
    body = np.broadcast_to(template(), (len(t), 32, 3)).copy()
    arm = [i for n, i in k4.KINECT_INDEX.items() if n.split("_")[0] in ("ELBOW", "WRIST", "HAND", "HANDTIP", "THUMB")]
    body[:, arm, 2] += 0.1 * np.sin(2 * np.pi * 0.7 * t + phase)[:, None]
    yaw = 2 * np.pi * t / spin_s + phase
    R = axis_angle_to_matrix(np.stack([np.zeros_like(t), yaw, np.zeros_like(t)], -1))
    pos = np.asarray(centre, dtype=float) + np.stack([walk[0] * t, 1.0 + 0 * t, walk[1] * t], -1)
    return np.einsum("nij,nkj->nki", R, body) + pos[:, None]


def track(device: str, body_id: int, joints: np.ndarray, sensor: np.ndarray, present=None) -> BodyTrack:
    j = joints.copy()
    if present is not None:
        j[~present] = np.nan
    conf = np.where(np.isfinite(j).all(axis=-1), 2, 0)
    return BodyTrack(device, body_id, T, j, conf, sensor)


def error_mm(j: np.ndarray, truth: np.ndarray) -> float:
    return 1000.0 * float(np.nanmean(np.linalg.norm(j - truth, axis=-1)))


def test_mirrored_runs_are_repaired_with_one_kinect_and_with_two():
    rng = np.random.default_rng(0)
    truth = turning(T, (0.0, 0.0, 0.0))
    noisy = [truth + rng.normal(0, 0.01, truth.shape) for _ in range(2)]
    seen_a, mask_a = k4.mirror_runs(noisy[0], T, SENSOR_A, rng)
    seen_b, mask_b = k4.mirror_runs(noisy[1], T, SENSOR_B, rng)
    assert mask_a.mean() > 0.1 and mask_b.mean() > 0.1
    conf = np.full(truth.shape[:2], 2)
    # one Kinect: facing and temporal continuity alone
    (ja,), _, (found_a,) = resolve_mirrors([seen_a], [conf], [SENSOR_A])
    assert np.mean(found_a == mask_a) > 0.97
    assert error_mm(ja, truth) < 20.0 < error_mm(seen_a, truth)
    # two Kinects: also their agreement
    (ja, jb), _, (fa, fb) = resolve_mirrors([seen_a, seen_b], [conf, conf], [SENSOR_A, SENSOR_B])
    assert np.mean(fa == mask_a) > 0.97 and np.mean(fb == mask_b) > 0.97
    assert error_mm(jb, truth) < 20.0 < error_mm(seen_b, truth)


def test_mirror_switch_off_keeps_the_exchanged_labels():
    rng = np.random.default_rng(1)
    truth = turning(T, (0.0, 0.0, 0.0), phase=1.0)
    seen, mask = k4.mirror_runs(truth + rng.normal(0, 0.01, truth.shape), T, SENSOR_A, rng)
    tracks = [track("A", 1, seen, SENSOR_A)]
    on, = fuse_people(tracks, T)
    off, = fuse_people(tracks, T, config=PeopleConfig(mirror_repair=False))
    sided = k4.LEFT_RIGHT != np.arange(32)
    assert error_mm(on.joints[mask][:, sided], truth[mask][:, sided]) < 25.0
    assert error_mm(off.joints[mask][:, sided], truth[mask][:, sided]) > 100.0


def test_new_id_after_a_loss_is_the_same_person_and_the_gap_is_bridged():
    rng = np.random.default_rng(2)
    truth = turning(T, (0.0, 0.0, 0.0), spin_s=30.0, walk=(0.3, 0.1))
    noisy = truth + rng.normal(0, 0.01, truth.shape)
    lost = k4.dropouts(1, T, rng, run_s=(0.6, 0.6))
    before = np.cumsum(lost) == 0
    tracks = [track("A", 3, noisy, SENSOR_A, before), track("A", 8, noisy, SENSOR_A, ~before & ~lost)]
    people = fuse_people(tracks, T)
    assert len(people) == 1 and people[0].tracks == [0, 1]
    assert np.isfinite(people[0].joints[lost]).all()
    assert np.all(people[0].confidence[lost] < 0.5)
    assert error_mm(people[0].joints[lost], truth[lost]) < 40.0
    # without re-linking, the two ids stay two people
    assert len(fuse_people(tracks, T, config=PeopleConfig(relink_ids=False, bridge_s=0.0))) == 2


def test_ids_swapped_at_a_crossing_are_untangled():
    rng = np.random.default_rng(3)
    # two people walking past each other along x, 0.5 m apart in depth, crossing at t = 8 s
    p0 = turning(T, (-2.0, 0.0, 0.0), spin_s=1e9, walk=(0.25, 0.0))
    p1 = turning(T, (2.0, 0.0, 0.5), spin_s=1e9, walk=(-0.25, 0.0), phase=0.0)
    truths = [p0, p1]
    swap = T >= 8.0
    a0 = np.where(swap[:, None, None], p1, p0) + rng.normal(0, 0.01, p0.shape)
    a1 = np.where(swap[:, None, None], p0, p1) + rng.normal(0, 0.01, p0.shape)
    tracks = [track("A", 1, a0, SENSOR_A), track("A", 2, a1, SENSOR_A),
              track("B", 5, p0 + rng.normal(0, 0.01, p0.shape), SENSOR_B),
              track("B", 6, p1 + rng.normal(0, 0.01, p0.shape), SENSOR_B)]
    pieces, origin = split_tracklets(tracks)
    assert len(pieces) == 6  # the swap cuts both of Kinect A's ids
    people = fuse_people(tracks, T)
    assert len(people) == 2
    for person in people:
        err = [error_mm(person.joints, tr) for tr in truths]
        assert min(err) < 15.0, err
    # matched by position alone, each fused person mixes both bodies after the crossing
    mixed = fuse_people(tracks, T, config=PeopleConfig(relink_ids=False))
    assert max(min(error_mm(p.joints, tr) for tr in truths) for p in mixed) > 100.0


def test_link_keeps_two_bodies_of_one_kinect_apart():
    rng = np.random.default_rng(4)
    a = turning(T, (0.0, 0.0, 0.0), spin_s=1e9) + rng.normal(0, 0.01, (len(T), 32, 3))
    b = turning(T, (0.3, 0.0, 0.0), spin_s=1e9) + rng.normal(0, 0.01, (len(T), 32, 3))
    pieces, _ = split_tracklets([track("A", 1, a, SENSOR_A), track("A", 2, b, SENSOR_A)])
    assert sorted(map(sorted, link_tracklets(pieces))) == [[0], [1]]


def test_bridge_respects_the_longest_gap():
    t = np.arange(0, 3, 0.1)
    j = np.tile(t[:, None, None], (1, 32, 3))
    conf = np.ones((len(t), 32))
    j[5:8] = np.nan  # 0.4 s between present frames
    j[15:25] = np.nan  # 1.1 s
    out, c, bridged = bridge_gaps(t, j, conf, 0.5)
    assert np.allclose(out[5:8, 0, 0], t[5:8]) and np.all(c[5:8] == 0.3)
    assert np.isnan(out[15:25]).all() and bridged.sum() == 3


class _Entry:
    def __init__(self, serial: str):
        self.serial, self.bodies = serial, bodies_name(serial)


class _Session:
    """What people_recordings reads of a session: its Kinects and their body files."""

    def __init__(self, root, serials):
        self.root, self.serials = root, serials

    def kinects(self):
        return [_Entry(s) for s in self.serials]

    def path(self, name):
        return self.root / name


def test_people_recordings_give_one_id_per_person_with_the_labels_repaired(tmp_path):
    from omnimocap.capture.rig import Rig, TimeMap
    from omnimocap.geometry.transforms import make_pose
    from omnimocap.capture.bodies import BodyRecording, BodyTrack as K4Track, write_bodies
    from omnimocap.capture.people import people_recordings

    rng = np.random.default_rng(5)
    truth = turning(T, (0.0, 0.0, 0.0))
    sensors = {"000000000001": SENSOR_A, "000000000002": SENSOR_B}
    rig = Rig({kinect_name(s): make_pose(np.eye(3), p) for s, p in sensors.items()},
              {kinect_name(s): TimeMap() for s in sensors})
    masks = {}
    lost = k4.dropouts(1, T, rng, run_s=(0.5, 0.5))
    before = np.cumsum(lost) == 0
    for serial, sensor in sensors.items():
        seen, masks[serial] = k4.mirror_runs(truth + rng.normal(0, 0.01, truth.shape), T, sensor, rng)
        local = seen - sensor  # the device frame: the rig's pose is a pure translation
        ori = np.tile([1.0, 0.0, 0.0, 0.0], (len(T), 32, 1))
        conf = np.full((len(T), 32), 2)
        if serial == "000000000002":  # lost for half a second, back with a new id
            parts = {4: before, 9: ~before & ~lost}
        else:
            parts = {1: np.ones(len(T), dtype=bool)}
        bodies = {i: K4Track(np.where(m[:, None, None], local, np.nan), np.where(m[:, None, None], ori, np.nan),
                             np.where(m[:, None], conf, 0)) for i, m in parts.items()}
        write_bodies(tmp_path / bodies_name(serial), BodyRecording(T, np.arange(len(T)), bodies))
    out = people_recordings(_Session(tmp_path, list(sensors)), rig)
    for serial, sensor in sensors.items():
        assert sorted(out[serial].bodies) == [0]
        world = out[serial].bodies[0].positions + sensor
        ok = np.isfinite(world).all(axis=(-1, -2))
        assert ok.sum() > 0.9 * len(T)
        assert error_mm(world[ok], truth[ok]) < 25.0 < error_mm((world + 0)[ok & masks[serial]][:, k4.LEFT_RIGHT],
                                                                truth[ok & masks[serial]])


def test_walking_backwards_is_not_taken_for_mirrored_labels():
    rng = np.random.default_rng(6)
    truth = turning(T, (0.0, 0.0, 0.0), spin_s=1e9, walk=(0.0, -1.0))  # faces +z, walks towards -z
    sensors = [SENSOR_A, np.array([-2.0, 1.0, 3.0])]  # both in front
    seen = [truth + rng.normal(0, 0.01, truth.shape) for _ in sensors]
    conf = np.full(truth.shape[:2], 2)
    _, _, masks = resolve_mirrors(seen, [conf, conf], sensors)
    assert not any(m.any() for m in masks)


def test_a_body_both_kinects_pick_up_again_at_once_stays_one_person():
    # hidden from both Kinects at once, the body comes back to both in the same frame with new ids
    rng = np.random.default_rng(5)
    truth = turning(T, (0.0, 0.0, 0.0), spin_s=30.0, walk=(0.2, 0.1))
    hidden = (T >= 6.0) & (T < 6.5)
    before, after = T < 6.0, T >= 6.5
    tracks = [track(device, body_id, truth + rng.normal(0, 0.01, truth.shape), sensor, part)
              for device, sensor, ids in (("A", SENSOR_A, (1, 4)), ("B", SENSOR_B, (2, 7)))
              for body_id, part in zip(ids, (before, after))]
    people = fuse_people(tracks, T)
    assert len(people) == 1 and people[0].tracks == [0, 1, 2, 3]
    assert error_mm(people[0].joints[after], truth[after]) < 15.0
    assert np.isfinite(people[0].joints[hidden]).all()


def test_a_few_frames_of_a_doubled_body_do_not_become_a_person(tmp_path):
    # Kinect A reports a second body id on the person for 4 frames while its own id goes on: the
    # linking cannot place it (one Kinect never holds two pieces of a person at once), and as a
    # person of its own it would bring hands of its own to the panorama's association.
    from omnimocap.capture.rig import Rig, TimeMap
    from omnimocap.geometry.transforms import make_pose
    from omnimocap.capture.bodies import BodyRecording, BodyTrack as K4Track, write_bodies
    from omnimocap.capture.people import people_recordings

    rng = np.random.default_rng(8)
    truth = turning(T, (0.0, 0.0, 0.0), spin_s=1e9)
    sensors = {"000000000001": SENSOR_A, "000000000002": SENSOR_B}
    rig = Rig({kinect_name(s): make_pose(np.eye(3), p) for s, p in sensors.items()},
              {kinect_name(s): TimeMap() for s in sensors})
    doubled = (T >= 5.0) & (T < 5.0 + 4 / 30 - 1e-9)
    for serial, sensor in sensors.items():
        local = truth + rng.normal(0, 0.01, truth.shape) - sensor  # the rig's pose is a pure translation
        ori = np.tile([1.0, 0.0, 0.0, 0.0], (len(T), 32, 1))
        conf = np.full((len(T), 32), 2)
        parts = {1: np.ones(len(T), dtype=bool)}
        if serial == "000000000001":
            parts[7] = doubled
        bodies = {i: K4Track(np.where(m[:, None, None], local + 0.02 * (i == 7), np.nan),
                             np.where(m[:, None, None], ori, np.nan), np.where(m[:, None], conf, 0))
                  for i, m in parts.items()}
        write_bodies(tmp_path / bodies_name(serial), BodyRecording(T, np.arange(len(T)), bodies))
    session = _Session(tmp_path, list(sensors))
    out = people_recordings(session, rig)
    assert {s: sorted(r.bodies) for s, r in out.items()} == {s: [0] for s in sensors}
    assert np.isfinite(out["000000000001"].bodies[0].positions).all(axis=(-1, -2)).sum() == len(T)
    kept = people_recordings(session, rig, PeopleConfig(drop_fragments=False))
    assert sorted(kept["000000000001"].bodies) == [0, 1]
    assert np.isfinite(kept["000000000001"].bodies[1].positions).all(axis=(-1, -2)).sum() == doubled.sum()
