"""The simulated observers as a real 360 camera and real detectors see the hands (hands/sim_field.py):
the stitched two-lens optics with a rolling shutter, and the field failure classes, each measured
over many deterministic draws."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from omnimocap.calibration.pano_hands import search_views
from omnimocap.capture.truth import Truth, linked_copy_with_realism
from omnimocap.fusion.evaluate import hand_errors
from omnimocap.geometry.cameras import PinholeCamera
from omnimocap.geometry.pano_optics import PanoOptics
from omnimocap.geometry.resample import interpolate_positions
from omnimocap.geometry.transforms import look_at, relative_angle_deg
from omnimocap.hands.estimator import ViewRequest
from omnimocap.hands.mano import ManoModel
from omnimocap.hands.sim_backend import SimHandObserver, SimViewDetector
from omnimocap.hands.sim_field import (
    FieldHandModel, FieldObserver, MissModel, SmoothNoise, box_size_px, field_observer, observer_record,
)
from omnimocap.hands.sim_pose import SimPoseDetector
from omnimocap.hands.synthetic_mano import make_synthetic_mano
from omnimocap.sim.simulate import SimConfig, simulate_session

SIZE = 256
CAMERA = {"baseline_m": 0.03, "readout_s": 0.025, "exposure_s": 0.01}
NO_MISS = MissModel(size_half_px=-1e3, size_width_px=1.0, blur_half=1e3, blur_width=1.0, seam=0.0, floor=0.0)
QUIET = FieldHandModel(miss=NO_MISS, flip=0.0, other_hand=0.0, false_hand=0.0, orient_deg=0.0, finger_deg=0.0,
                       joint_mm=0.0, keypoint_frac=0.0, scale=0.0)


@pytest.fixture(scope="module")
def field_session(tmp_path_factory):
    root = tmp_path_factory.mktemp("field_obs") / "s"
    simulate_session(root, SimConfig(seconds=2.0, people=2, kinects=1, seed=7, pano_width=960, kinect_video=False))
    return root


@pytest.fixture
def variant(field_session, tmp_path):
    """``variant(camera, observer)``: a copy of the field session (files hard-linked) whose
    truth/realism.json carries these ``camera`` and ``observer`` records (absent when None)."""
    count = [0]

    def make(camera=None, observer=None):
        count[0] += 1
        dest = linked_copy_with_realism(field_session, tmp_path / f"v{count[0]}", camera=camera, observer=observer)
        return dest

    return make


def _hands(**kw) -> dict:
    return observer_record("field", FieldObserver(hands=dataclasses.replace(QUIET, **kw)))


def _requests(root, step: int = 1) -> list[ViewRequest]:
    """A view looking at every visible true wrist (as a planner would) of every frame."""
    truth = Truth(root).motion()
    T = Truth(root).rig().pose("pano")
    camera = PinholeCamera(300.0, 300.0, (SIZE - 1) / 2, (SIZE - 1) / 2, SIZE, SIZE)
    k = np.searchsorted(truth["t_session"], truth["pano_frame_t_session"])
    out = []
    for i in range(0, len(k), step):
        t = truth["pano_frame_t_session"][i]
        for p in range(truth["hand_joints"].shape[0]):
            for s, side in enumerate(("left", "right")):
                if not truth["hand_visible"][p, k[i], s]:
                    continue
                wrist = interpolate_positions(truth["t_session"], truth["hand_joints"][p, :, s, 0], np.array([t]))[0]
                d = T[:3, :3].T @ (wrist - T[:3, 3])
                R = look_at(d, np.array([0.0, -1.0, 0.0]))
                out.append(ViewRequest(i, float(t), p, side, R, camera, R.T @ d, np.zeros(4)))
    return out


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return a.is_right == b.is_right and all(np.array_equal(getattr(a, k), getattr(b, k)) for k in (
        "global_orient", "hand_pose", "betas", "keypoints_3d", "keypoints_2d", "box_xyxy", "cam_crop", "cam_t_view"))


# --- the failure models themselves --------------------------------------------------------------

def test_misses_rise_as_the_box_shrinks_with_blur_and_on_the_seam():
    m = MissModel()
    assert m.probability(24.0, 0.0, False) >= 0.5
    assert m.probability(60.0, 0.0, False) <= 0.03
    assert m.probability(80.0, 60.0, False) > 0.5 > m.probability(80.0, 10.0, False)
    assert m.probability(80.0, 0.0, True) >= m.seam
    assert np.all(np.diff(m.probability(np.linspace(5, 100, 50), 0.0, False)) < 0)


def test_smooth_noise_is_a_deterministic_unit_variance_track_correlated_over_its_spacing():
    t = np.arange(0.0, 60.0, 1 / 30)
    track = SmoothNoise(3, 2, 0.2)
    a = np.array([track((0, 1), x) for x in t])
    # the same values from a fresh generator asked in reverse order (another worker, another chunk)
    b = np.array([SmoothNoise(3, 2, 0.2)((0, 1), x) for x in t[::-1]])[::-1]
    assert np.array_equal(a, b)
    assert 0.85 < a.std() < 1.15
    lag = lambda n: np.corrcoef(a[:-n, 0], a[n:, 0])[0, 1]  # noqa: E731
    assert lag(1) > 0.9 and lag(30) < 0.3
    other = np.array([track((1, 1), x) for x in t])
    assert abs(np.corrcoef(a[:, 0], other[:, 0])[0, 1]) < 0.2


def test_box_size_is_the_angular_diameter_at_native_resolution():
    # two points 0.1 m apart, 1 m away: 0.1 rad, 3840 / 2 pi px per rad
    pts = np.array([[-0.05, 0.0, 1.0], [0.05, 0.0, 1.0]])
    assert box_size_px(pts, 3840) == pytest.approx(2 * np.arctan(0.05) * 3840 / (2 * np.pi), rel=1e-9)


def test_the_observer_record_round_trips_and_ideal_sessions_have_none():
    record = observer_record("field")
    assert field_observer({"observer": json.loads(json.dumps(record))}) == FieldObserver()
    assert field_observer({"observer": observer_record("ideal")}) is None
    assert field_observer(None) is None and field_observer({}) is None


def test_the_simulator_writes_the_field_observer_record(field_session):
    record = Truth(field_session).realism()["observer"]
    assert record["level"] == "field" and field_observer({"observer": record}) == FieldObserver()


# --- optics -------------------------------------------------------------------------------------

def test_ideal_optics_leave_every_observer_bitwise_as_it_was(variant):
    plain = variant(None, None)
    ideal = variant(PanoOptics.ideal().to_dict(), None)
    reqs = _requests(plain, step=4)
    a, b = SimHandObserver(plain).estimate(reqs), SimHandObserver(ideal).estimate(reqs)
    assert sum(x is not None for x in a) > 20 and all(_same(x, y) for x, y in zip(a, b))
    # and the ideal observation is exactly the true hand at the frame's time through the true pose
    truth = Truth(plain).motion()
    T = Truth(plain).rig().pose("pano")
    for req, obs in zip(reqs, a):
        if obs is None:
            continue
        s = ("left", "right").index(req.side)
        joints = interpolate_positions(truth["t_session"], truth["hand_joints"][req.person_id, :, s], np.array([req.t_session]))[0]
        R_view_world = req.R_pano_view.T @ T[:3, :3].T
        np.testing.assert_allclose(obs.keypoints_2d, req.camera.project((joints - T[:3, 3]) @ R_view_world.T), atol=1e-9)
    views = search_views()
    for f in range(0, 60, 7):
        for x, y in zip(SimViewDetector(plain).detect_views(f, None, views), SimViewDetector(ideal).detect_views(f, None, views)):
            assert np.array_equal(x.boxes_xyxy, y.boxes_xyxy) and np.array_equal(x.is_right, y.is_right)
        for x, y in zip(SimPoseDetector(plain).detect_poses(f, None, views), SimPoseDetector(ideal).detect_poses(f, None, views)):
            assert np.array_equal(x.keypoints, y.keypoints, equal_nan=True)


def test_the_hand_is_seen_from_its_lens_when_its_row_was_exposed(variant):
    real = variant(CAMERA, None)
    plain = variant(None, None)
    reqs = _requests(plain, step=3)
    observer = SimHandObserver(real)
    optics = PanoOptics.from_dict(CAMERA)
    assert observer.optics == optics
    shifted, delays = [], []
    for req, obs, ref in zip(reqs, observer.estimate(reqs), SimHandObserver(plain).estimate(reqs)):
        if obs is None or ref is None:
            continue
        person = req.person_id
        t = observer.capture_time(person, req.side, req.frame_index)
        delays.append(abs(t - req.t_session))
        _, _, joints, _ = observer.true_hand(person, req.side, t)
        apparent, _, _ = optics.apparent(observer.to_pano(joints))
        expected = req.camera.project(apparent @ req.R_pano_view)
        np.testing.assert_allclose(obs.keypoints_2d, expected, atol=1e-6)
        shifted.append(np.abs(obs.keypoints_2d - ref.keypoints_2d).max())
        # the capture time is the wrist's row's time
        wrist, _, _ = optics.apparent(observer.wrist_pano(person, req.side, t))
        assert t - req.t_session == pytest.approx(float(optics.time_offset_s(wrist)), abs=1e-4)
    assert len(delays) > 20 and max(delays) > 0.003 and max(shifted) > 0.5


# --- the field hand observer --------------------------------------------------------------------

def _across_seeds(root, reqs, seeds=range(8)):
    """(request, observation) of every request for observers of several seeds."""
    out = []
    for seed in seeds:
        observer = SimHandObserver(root, seed=seed)
        out += list(zip(reqs, observer.estimate(reqs)))
    return out


def test_misses_follow_the_box_at_native_resolution(variant, monkeypatch):
    root = variant(None, _hands(miss=MissModel(floor=0.0, seam=0.0)))
    reqs = _requests(root, step=2)
    observer = SimHandObserver(root)
    small, large = [], []
    for width, bucket in ((300.0, small), (6000.0, large)):
        monkeypatch.setattr(observer, "width_px", width)
        for seed in range(4):
            observer.seed = seed
            for req in reqs:
                _, _, joints, _ = observer.true_hand(req.person_id, req.side, req.t_session)
                box, _, _ = observer.detectability(req.person_id, req.side, req.t_session, joints)
                bucket.append((box, observer.observe(req) is None))
    small, large = np.array(small), np.array(large)
    assert small[:, 0].max() < 24 and large[:, 0].min() > 60
    assert small[:, 1].mean() >= 0.5 and large[:, 1].mean() <= 0.05


def test_motion_blur_and_the_seam_add_misses(variant):
    big = MissModel(size_half_px=0.0, size_width_px=1.0, floor=0.0, seam=0.0)
    sharp = variant(CAMERA, _hands(miss=big))
    blurred = variant({**CAMERA, "exposure_s": 0.5}, _hands(miss=big))
    seam = variant({**CAMERA, "blend_deg": 90.0}, _hands(miss=dataclasses.replace(big, seam=0.3)))
    reqs = _requests(sharp, step=2)

    def missed(root):
        return np.mean([o is None for _, o in _across_seeds(root, reqs, range(4))])

    assert missed(sharp) < 0.02
    assert missed(blurred) > missed(sharp) + 0.1
    assert 0.2 < missed(seam) < 0.4


def test_handedness_flips_at_their_rate(variant):
    root = variant(None, _hands(flip=0.03))
    pairs = _across_seeds(root, _requests(root), range(10))
    flipped = np.mean([o.is_right != (r.side == "right") for r, o in pairs if o is not None])
    assert 0.015 < flipped < 0.05
    quiet = variant(None, _hands())
    assert not any(o.is_right != (r.side == "right") for r, o in _across_seeds(quiet, _requests(quiet), range(2)) if o)


def _off_target(req, obs) -> bool:
    """Whether the observation's wrist lies away from the requested hand's wrist (more than a
    third of its box side)."""
    target = req.camera.project(req.predicted_wrist_view[None])[0]
    side = obs.box_xyxy[2] - obs.box_xyxy[0]
    return bool(np.linalg.norm(obs.keypoints_2d[0] - target) > side / 3)


def test_false_hands_appear_in_their_share_of_views(variant):
    root = variant(None, _hands(false_hand=0.02))
    pairs = [(r, o) for r, o in _across_seeds(root, _requests(root), range(10)) if o is not None]
    share = np.mean([_off_target(r, o) for r, o in pairs])
    assert 0.01 < share < 0.035
    quiet = variant(None, _hands())
    assert not any(_off_target(r, o) for r, o in _across_seeds(quiet, _requests(quiet), range(2)) if o)


def test_close_hands_lend_their_boxes(variant):
    # every other hand counts as close: the share of boxes taken from another hand is the rate
    root = variant(None, _hands(other_hand=0.3, close_ratio=1e3))
    pairs = [(r, o) for r, o in _across_seeds(root, _requests(root), range(4)) if o is not None]
    share = np.mean([_off_target(r, o) for r, o in pairs])
    # a box is taken only from a visible hand in front of the view: below the rate, never above
    assert 0.1 < share < 0.3
    none = variant(None, _hands(other_hand=0.0, close_ratio=1e3))
    assert not any(_off_target(r, o) for r, o in _across_seeds(none, _requests(none), range(2)) if o)
    # at the default closeness only hands near each other in the view are taken
    near = variant(None, _hands(other_hand=0.3))
    pairs = [(r, o) for r, o in _across_seeds(near, _requests(near), range(4)) if o is not None]
    assert np.mean([_off_target(r, o) for r, o in pairs]) < share


def test_errors_are_smooth_deterministic_and_of_the_field_size(variant):
    model = FieldHandModel(miss=NO_MISS, flip=0.0, other_hand=0.0, false_hand=0.0)
    root = variant(None, observer_record("field", FieldObserver(hands=model)))
    plain = variant(None, None)
    reqs = _requests(root)
    truth = SimHandObserver(plain).estimate(reqs)
    mano = ManoModel.from_dict(make_synthetic_mano("right"))
    orient, kp, scale, series, pa_joints, pa_fingers = [], [], [], {}, [], []
    for seed in range(4):
        observer = SimHandObserver(root, seed=seed)
        obs = observer.estimate(reqs)
        if seed == 0:
            # the same answers from a fresh observer asked in reverse order (another worker, another chunk)
            again = SimHandObserver(root, seed=seed).estimate(reqs[::-1])[::-1]
            assert all(_same(a, b) for a, b in zip(obs, again))
        for r, o, t in zip(reqs, obs, truth):
            if o is None or t is None:
                continue
            orient.append(relative_angle_deg(o.global_orient, t.global_orient))
            side = t.box_xyxy[2] - t.box_xyxy[0]
            kp.append((o.keypoints_2d - t.keypoints_2d) / side)
            scale.append(np.linalg.norm(o.cam_t_view) / np.linalg.norm(t.cam_t_view))
            pa_joints.append(_pa_mpjpe(o.keypoints_3d, t.keypoints_3d))
            fingers = [mano.forward_side(r.side, np.eye(3), x.hand_pose, t.betas)[1] for x in (o, t)]
            pa_fingers.append(_pa_mpjpe(*fingers))
            series.setdefault((seed, r.person_id, r.side), []).append((r.frame_index, orient[-1]))
    orient = np.array(orient)
    assert 5.0 < np.sqrt(np.mean(orient ** 2)) < 11.0
    assert 0.02 < np.sqrt(np.mean(np.concatenate(kp) ** 2)) < 0.04
    assert 0.03 < np.std(np.log(scale)) < 0.07
    # WiLoR's finger error: about 7 mm PA-MPJPE, in its keypoints and in its MANO parameters
    assert 5.0 < 1e3 * np.mean(pa_joints) < 9.0 and 5.0 < 1e3 * np.mean(pa_fingers) < 9.0
    # consecutive frames (33 ms) share most of their error: correlated over ~0.2 s, not per call
    steps = [abs(b[1] - a[1]) for s in series.values() for a, b in zip(s, s[1:]) if b[0] == a[0] + 1]
    assert np.median(steps) < 0.3 * np.sqrt(np.mean(orient ** 2))
    # a hand reported larger is placed further: its size and its depth share the factor
    sized = variant(None, observer_record("field", FieldObserver(hands=dataclasses.replace(model, joint_mm=0.0))))
    for o, t in zip(SimHandObserver(sized).estimate(reqs), truth):
        if o is not None and t is not None:
            size = np.linalg.norm(o.keypoints_3d - o.keypoints_3d[0], axis=-1).sum() / \
                np.linalg.norm(t.keypoints_3d - t.keypoints_3d[0], axis=-1).sum()
            assert size == pytest.approx(np.linalg.norm(o.cam_t_view) / np.linalg.norm(t.cam_t_view), rel=1e-9)


def _pa_mpjpe(a: np.ndarray, b: np.ndarray) -> float:
    """Mean joint distance (metres) of ``a`` (J,3) to ``b`` after the best similarity transform."""
    a0, b0 = a - a.mean(axis=0), b - b.mean(axis=0)
    U, S, Vt = np.linalg.svd(b0.T @ a0)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    scale = np.sum(S * np.diag(D)) / np.sum(a0 ** 2)
    return float(np.linalg.norm(scale * a0 @ (U @ D @ Vt).T - b0, axis=-1).mean())


def test_explicit_noise_flags_replace_the_field_observer(variant):
    root = variant(None, observer_record("field"))
    assert SimHandObserver(root).field is not None
    flagged = SimHandObserver(root, noise_mm=5.0, seed=1)
    assert flagged.field is None
    plain = variant(None, None)
    reqs = _requests(root, step=4)
    assert all(_same(a, b) for a, b in zip(flagged.estimate(reqs), SimHandObserver(plain, noise_mm=5.0, seed=1).estimate(reqs)))


# --- the detectors on field sessions ------------------------------------------------------------

def test_the_hand_detector_misses_small_hands_and_takes_close_hands_boxes(variant, monkeypatch):
    views = search_views()
    plain = variant(None, None)
    record = observer_record("field", FieldObserver(hand_detector=dataclasses.replace(
        FieldObserver().hand_detector, miss=MissModel(floor=0.0, seam=0.0), other_hand=0.0)))
    field = variant(None, record)

    def count(root, width=None, frames=range(0, 60, 3)):
        det = SimViewDetector(root, miss=0.0, swap=0.0, false_rate=0.0)
        if width is not None:
            monkeypatch.setattr(det._truth, "width_px", width)
        return sum(len(det._hands(f)) for f in frames)

    base = count(plain)
    assert base > 40
    assert count(field, 300.0) < 0.5 * base
    assert count(field, 6000.0) > 0.95 * base
    # boxes drawn on another hand: with every hand close, about the rate's share moves
    lend = observer_record("field", FieldObserver(hand_detector=dataclasses.replace(
        FieldObserver().hand_detector, miss=NO_MISS, other_hand=0.3, close_ratio=1e3)))
    lent = SimViewDetector(variant(None, lend), miss=0.0, swap=0.0, false_rate=0.0)
    own = SimViewDetector(plain, miss=0.0, swap=0.0, false_rate=0.0)
    moved = []
    for f in range(0, 60):
        for (a, _, _), (b, _, _) in zip(lent._hands(f), own._hands(f)):
            moved.append(not np.array_equal(a, b))
    assert 0.2 < np.mean(moved) < 0.4


def test_the_pose_detector_misses_small_people_and_reports_false_ones(variant, monkeypatch):
    plain = variant(None, None)
    record = observer_record("field", FieldObserver(pose_detector=dataclasses.replace(
        FieldObserver().pose_detector, false_rate=0.0)))
    field = variant(None, record)
    frames = range(len(SimPoseDetector(plain).frame_times))

    def reported(root, width=None, **kw):
        det = SimPoseDetector(root, person_miss=0.0, **kw)
        if width is not None:
            monkeypatch.setattr(det, "width_px", width)
        return np.array([det.observed_keypoints(f)[2].sum() for f in frames])

    base = reported(plain)
    assert reported(field, 60.0).sum() < 0.5 * base.sum()
    assert reported(field, 6000.0).sum() == base.sum()
    false = observer_record("field", FieldObserver(pose_detector=dataclasses.replace(
        FieldObserver().pose_detector, miss=NO_MISS, false_rate=0.2)))
    false_root = variant(None, false)
    extra = np.concatenate([reported(false_root, seed=seed) - reported(plain, seed=seed) for seed in range(5)])
    assert set(np.unique(extra)) <= {0, 1} and 0.12 < extra.mean() < 0.28


def test_the_pose_detector_sees_people_through_the_optics(variant):
    real, plain = variant(CAMERA, None), variant(None, None)
    a, b = SimPoseDetector(real), SimPoseDetector(plain)
    f = 30
    t = a.capture_times(f)
    assert np.all(np.abs(t - a.frame_times[f]) <= 0.0125 + 1e-9) and np.any(t != a.frame_times[f])
    ka, _, _ = a.observed_keypoints(f)
    kb, _, _ = b.observed_keypoints(f)
    assert 1e-3 < np.nanmax(np.linalg.norm(ka - kb, axis=-1)) < 0.2


# --- evaluation ---------------------------------------------------------------------------------

def test_coverage_at_24px_counts_only_hands_the_camera_sees_large_enough():
    # one person, two hands: the left 0.5 m from the camera, the right 20 m away
    hand = np.zeros((21, 3))
    hand[1:, 0] = np.linspace(-0.09, 0.09, 20)
    t = np.arange(0.0, 1.0, 1 / 30)
    joints = np.stack([np.broadcast_to(hand + [0, 0, 0.5], (len(t), 21, 3)),
                       np.broadcast_to(hand + [0, 0, 20.0], (len(t), 21, 3))], axis=1)[None]
    truth = {"t_session": t, "hand_joints": joints, "hand_visible": np.ones((1, len(t), 2), dtype=bool)}
    valid = np.zeros((1, len(t), 2), dtype=bool)
    valid[0, :, 0] = True
    fused = {"t_session": t, "hand_valid": valid, "hand_joints_world": joints.copy(),
             "kinect_wrist_world": joints[:, :, :, 0].copy()}
    m = hand_errors(fused, truth, {0: 0}, 30.0, np.eye(4), 1920)
    assert m["hands.coverage"] == pytest.approx(0.5) and m["hands.coverage_24px"] == pytest.approx(1.0)
    assert hand_errors(fused, truth, {0: 0}, 30.0)["hands.coverage_24px"] is None
