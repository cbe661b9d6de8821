"""The 360 camera's clock under k4abt's field errors: body keypoints beside the hands, their
definition offsets solved in the body's frame, and the observer a field session gets."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from omnimocap.calibration.bearing_problem import BearingProblem
from omnimocap.calibration.config import ObserverConfig, SyncConfig
from omnimocap.calibration.observations import BodyKeypointBearings
from omnimocap.calibration.pano_bodies import BODY_KEYPOINTS, BodyCandidates, associate_bodies
from omnimocap.calibration.pano_observer import observer_kind, session_realism
from omnimocap.calibration.sync import sync_session
from omnimocap.calibration.track_splines import TrackSplines
from omnimocap.capture.rig import Rig, TimeMap
from omnimocap.capture.session import Session
from omnimocap.capture.truth import Truth
from omnimocap.hands.sim_field import observer_record
from omnimocap.data.skeletons import COCO_FLIP, COCO_INDEX
from omnimocap.errors import UserError
from omnimocap.fusion.evaluate import sync_calibration_errors
from omnimocap.geometry.transforms import pose_from_vector
from omnimocap.sim.simulate import SimConfig, simulate_session

# A short field session on which the hands alone put the clock 5 ms off (measured: 5.2 ms) and the
# hands with body keypoints 0.3 ms.
SECONDS = 12.0
SEED = 3


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    root = tmp_path_factory.mktemp("field") / "s"
    simulate_session(root, SimConfig(seconds=SECONDS, people=2, kinects=2, seed=SEED, pano_width=64,
                                     kinect_video=False, realism="field"))
    ideal_observers(root)
    return root


def ideal_observers(root) -> None:
    """k4abt's field errors with the observers of an ideal session: at 64 px the field detectors
    would miss every hand and person, and these tests are about the Kinect side."""
    truth = Truth(root)
    truth.write_realism({**truth.realism(), "observer": observer_record("ideal")})


def _offset_error_ms(root) -> float:
    session, truth = Session.open(root), Truth(root)
    kinects = session.kinects()
    errors = sync_calibration_errors(truth.rig(), Rig.load(root / "rig.json"),
                                     truth.motion(("pano_frame_t_session",))["pano_frame_t_session"],
                                     kinects[0].name, [k.name for k in kinects[1:]])
    return errors["sync.offset_error_ms"]


def test_sync_with_body_keypoints_holds_the_clock_under_field_errors(field):
    Truth(field).rig().save(field / "rig.json")
    sync_session(field, SyncConfig(observer=ObserverConfig(observer="simulated-detector")))
    inputs = json.loads((field / "rig.json").read_text())["inputs"]
    assert "body keypoints" in inputs["pano_observer"]
    assert inputs["body_detections"]["association"]["associated"] > 100
    # The hands alone (the sync before body keypoints) miss this by more than twice the tolerance.
    assert _offset_error_ms(field) <= 2.0


def test_field_sessions_get_the_simulated_detector(field, tmp_path):
    session = Session.open(field)
    assert session_realism(session) == "field"
    assert observer_kind(session, "auto") == "simulated-detector"
    with pytest.raises(UserError, match="--observer simulated-detector"):
        observer_kind(session, "simulated")
    # The same session marked ideal, and one written before the realism record existed.
    copy = tmp_path / "copy"
    shutil.copytree(field, copy)
    realism = copy / "truth" / "realism.json"
    realism.write_text(json.dumps({**json.loads(realism.read_text()), "realism": "ideal"}))
    assert observer_kind(Session.open(copy), "auto") == "simulated"
    assert observer_kind(Session.open(copy), "simulated") == "simulated"
    realism.unlink()
    assert session_realism(Session.open(copy)) == "ideal"


def _offset_problem(rng, sets: int = 1) -> tuple[BearingProblem, np.ndarray]:
    t = np.arange(0.0, 6.0, 1 / 30)
    K = 3
    centre = rng.normal(size=(K, 3)) * 0.5 + [0.0, 0.0, 2.0]
    points = centre + 0.3 * np.sin(np.outer(t, [1.3, 2.1, 0.7])[..., None] + rng.normal(size=(K, 3)))
    splines = TrackSplines(t, points)
    t_obs = np.repeat(t[10:-10], K)
    track = np.tile(np.arange(K), len(t) - 20)
    b = rng.normal(size=(len(t_obs), 3))
    b /= np.linalg.norm(b, axis=-1, keepdims=True)
    problem = BearingProblem(splines, t_obs, track, b, TimeMap(), np.eye(4), 0.05)
    angles = rng.normal(size=(len(t), K, sets, 3))
    frames = np.stack([pose_from_vector(np.r_[a, 0, 0, 0])[:3, :3] for a in angles.reshape(-1, 3)])
    frames = frames.reshape(len(t), K, sets, 3, 3)
    problem.set_offsets(t, frames[:, :, 0] if sets == 1 else frames, np.array([True, False, True]), 0.015, 1.0)
    x = np.r_[rng.normal(size=8), rng.normal(size=6 * sets) * 20.0]
    return problem, x


def _fit_residuals(problem, x, prior_weight):
    """The residual vector the fit minimises (bearings, the offsets' prior, the rate's)."""
    r = np.r_[problem.residuals(x), problem.offset_prior * x[8:]]
    return np.r_[r, prior_weight * x[0]] if prior_weight else r


@pytest.mark.parametrize("whitened, sets", [(False, 1), (True, 1), (True, 2)])
def test_jacobian_matches_finite_differences(whitened, sets):
    """Clock and offset columns exact, pose columns by forward differences: every column within a
    small fraction of central differences of the whole residual, weights, whitening and offsets in
    two frames per track included."""
    problem, x = _offset_problem(np.random.default_rng(0), sets)
    problem.weights = np.linspace(0.5, 1.5, len(problem))
    if whitened:
        problem.estimate_whitening(x, 2, np.ones(len(problem), dtype=bool))
        assert len(problem.ar) == 2
    J = problem.jacobian(x, prior_weight=0.7).toarray()
    numeric = np.stack([(_fit_residuals(problem, x + 1e-4 * e, 0.7) - _fit_residuals(problem, x - 1e-4 * e, 0.7))
                        / 2e-4 for e in np.eye(len(x))], axis=1)
    assert J.shape == numeric.shape
    for c in range(len(x)):
        assert np.abs(numeric[:, c]).max() > 1e-6
        np.testing.assert_allclose(J[:, c], numeric[:, c], atol=1e-4 * np.abs(numeric[:, c]).max(), rtol=0)


def _bodies_at(t_session, points_by_person) -> BodyCandidates:
    """Candidates whose keypoints of BODY_KEYPOINTS are ``points_by_person`` (P,B,3), still."""
    P, B = points_by_person.shape[:2]
    N = len(t_session)
    pts = np.broadcast_to(points_by_person.reshape(1, P * B, 3), (N, P * B, 3)).copy()
    return BodyCandidates(t_session, pts, np.ones((N, P * B)), np.broadcast_to(np.eye(3), (N, P * B, 3, 3)),
                          np.zeros((N, P, 17, 3)))


def test_people_are_associated_with_kinect_bodies_and_unmirrored():
    rng = np.random.default_rng(1)
    B = len(BODY_KEYPOINTS)
    people = np.stack([rng.normal(size=(B, 3)) * 0.3 + [1.5, 0.0, 1.0], rng.normal(size=(B, 3)) * 0.3 + [-1.5, 0.0, 1.0]])
    cand = _bodies_at(np.arange(0.0, 1.0, 0.1), people)
    unit = people / np.linalg.norm(people, axis=-1, keepdims=True)
    coco = np.full((2, 17, 3), np.nan)
    for j, (name, _) in enumerate(BODY_KEYPOINTS):
        coco[:, COCO_INDEX[name]] = unit[:, j]
    # detected in the opposite order; the second (Kinect person 0) with left and right exchanged
    detected = np.stack([coco[1], coco[0][list(COCO_FLIP)]])
    bodies = BodyKeypointBearings(np.array([3, 3]), detected, np.ones((2, 17)), np.ones(2))
    out, stats = associate_bodies(bodies, np.arange(0.0, 1.0, 0.1), cand, np.eye(4), TimeMap(), gate_deg=2.0)
    np.testing.assert_allclose(out[3].reshape(2, B, 3), unit, atol=1e-12)
    assert np.isnan(out[[0, 1, 2, 4]]).all()
    assert (stats.associated, stats.flipped) == (2, 1)


def test_the_face_keypoints_meet_the_kinect_face_joints_and_can_be_left_out():
    """A detected person's nose, eyes and ears reach the solvers as the tracks of k4abt's NOSE, EYE and
    EAR joints; with ``face=False`` those tracks observe nothing and the others are unchanged."""
    from omnimocap.calibration.pano_bodies import FACE_KEYPOINTS, DetectedBodies, with_bodies

    assert [BODY_KEYPOINTS[j] for j in FACE_KEYPOINTS] == [
        ("nose", "NOSE"), ("left_eye", "EYE_LEFT"), ("right_eye", "EYE_RIGHT"), ("left_ear", "EAR_LEFT"),
        ("right_ear", "EAR_RIGHT")]
    rng = np.random.default_rng(2)
    B = len(BODY_KEYPOINTS)
    person = rng.normal(size=(1, B, 3)) * 0.3 + [1.5, 0.0, 1.0]
    t = np.arange(0.0, 1.0, 0.1)
    unit = person / np.linalg.norm(person, axis=-1, keepdims=True)
    coco = np.full((1, 17, 3), np.nan)
    for j, (name, _) in enumerate(BODY_KEYPOINTS):
        coco[0, COCO_INDEX[name]] = unit[0, j]
    bodies = DetectedBodies(BodyKeypointBearings(np.array([3]), coco, np.ones((1, 17)), np.ones(1)), t,
                            _bodies_at(t, person))
    H = 2
    hands = (np.full((len(t), H, 3), np.nan), np.zeros((len(t), H, 3)), np.ones((len(t), H)))
    face = [H + j for j in FACE_KEYPOINTS]
    rest = [H + j for j in range(B) if j not in FACE_KEYPOINTS]
    on = with_bodies(*hands, bodies, np.eye(4), TimeMap(), 2.0)
    np.testing.assert_allclose(on.bearings[3, face], unit[0, list(FACE_KEYPOINTS)], atol=1e-12)
    off = with_bodies(*hands, bodies, np.eye(4), TimeMap(), 2.0, face=False)
    assert np.isnan(off.bearings[:, face]).all()
    np.testing.assert_array_equal(off.bearings[:, rest], on.bearings[:, rest])
    assert np.isfinite(off.bearings[3, rest]).all()


def test_body_tracks_carry_the_kinect_segment_frames(field):
    """The Kinect joints' reported orientations reach the body keypoint tracks as rotations in the
    reference Kinect's frame (the reference Kinect's own where it tracks the joint), and the solvers
    get each body track's offset in two frames, its body's and its segment's; switched off, one."""
    from omnimocap.calibration.observations import TRACKED_KINECT_JOINTS, TRACKS_PER_PERSON, kinect_wrist_tracks
    from omnimocap.calibration.pano_bodies import DetectedBodies, with_bodies
    from omnimocap.capture.people import people_recordings
    from omnimocap.data.skeletons import KINECT_INDEX
    from omnimocap.geometry.quaternions import quat_wxyz_to_matrix

    session, rig = Session.open(field), Truth(field).rig()
    serial = session.kinects()[0].serial
    tracks = kinect_wrist_tracks(session, serial, rig, 2)
    R = tracks.rotations
    assert R.shape == tracks.points.shape + (3,)
    known = np.all(np.isfinite(R), axis=(-2, -1))
    tracked = np.all(np.isfinite(tracks.points), axis=-1)
    assert known[tracked].mean() > 0.99
    np.testing.assert_allclose(R[known] @ np.swapaxes(R[known], -1, -2), np.broadcast_to(np.eye(3), R[known].shape),
                               atol=1e-6)
    # the reference Kinect's elbow of person 0, as its body file reports it
    rec = people_recordings(session, rig)[serial]
    col = TRACKED_KINECT_JOINTS.index(KINECT_INDEX["ELBOW_LEFT"])
    q = rec.bodies[0].orientations[:, KINECT_INDEX["ELBOW_LEFT"]]
    own = np.all(np.isfinite(q), axis=-1) & known[:, col]
    assert own.sum() > 100
    np.testing.assert_allclose(R[own, col], quat_wxyz_to_matrix(q[own]), atol=1e-9)
    candidates = BodyCandidates.from_tracks(tracks)
    bodies = DetectedBodies(BodyKeypointBearings(np.zeros(0, dtype=np.int64), np.zeros((0, 17, 3)),
                                                 np.zeros((0, 17)), np.zeros(0)), np.zeros(3), candidates)
    H = 4
    hands = (np.full((3, H, 3), np.nan), np.zeros((len(tracks.t_session), H, 3)), np.ones((len(tracks.t_session), H)))
    both = with_bodies(*hands, bodies, np.eye(4), TimeMap(), 5.0)
    assert both.body_frames[1].shape == (len(tracks.t_session), H + 2 * len(BODY_KEYPOINTS), 2, 3, 3)
    np.testing.assert_array_equal(both.body_frames[1][:, H:, 1], candidates.segment_frames)
    np.testing.assert_array_equal(both.body_frames[1][:, H:, 0], candidates.frames)
    one = with_bodies(*hands, bodies, np.eye(4), TimeMap(), 5.0, segment_offsets=False)
    assert one.body_frames[1].shape == (len(tracks.t_session), H + 2 * len(BODY_KEYPOINTS), 3, 3)
