"""The live whole body (``fusion.live.body``): the shape held from the first seconds, the pose of
each newest Kinect frame, the hands set on the wrists and fingers as ``process`` sets them, the mesh
skinned from a model file."""

from __future__ import annotations

import numpy as np
import pytest

from omnimocap.data.skeletons import SMPLX_HAND_START, SMPLX_WRIST
from omnimocap.fusion.body_model import forward_kinematics
from omnimocap.fusion.lifting import LiftedHand
from omnimocap.fusion.live.body import BodyMesh, LiveBody
from omnimocap.fusion.pipeline import PeopleTracks, ProcessConfig
from omnimocap.geometry.transforms import axis_angle_to_matrix
from omnimocap.sim.synthetic_models import make_synthetic_smplx, synthetic_body_motion, write_synthetic_smplx

FPS = 30.0


@pytest.fixture(scope="module")
def motion():
    """60 frames of scripted motion: skeleton, betas, SMPL-X joints (F,55,3), Kinect joints, confidence."""
    return synthetic_body_motion(60, seed=2)


def tracks(kinect, confidence, person_id=1) -> PeopleTracks:
    return PeopleTracks(np.arange(len(kinect)) / FPS, [person_id], kinect[None], confidence[None])


def a_hand(rng) -> LiftedHand:
    R = axis_angle_to_matrix(rng.normal(0.0, 0.3, 3))
    pose = axis_angle_to_matrix(rng.normal(0.0, 0.2, (15, 3)))
    return LiftedHand(np.zeros(3), np.zeros((21, 3)), R, pose, np.zeros(10), 0.0, 1.0, np.array([0.0, 0.0, 1.0]), 1.0)


def test_no_body_before_the_shape_then_the_newest_frame_with_a_held_shape(motion, tmp_path):
    skeleton, betas, joints, kinect, confidence = motion
    body = LiveBody(ProcessConfig(models=str(tmp_path)), shape_s=1.5)  # no model file: the built-in skeleton
    assert body.mesh is None and body.faces is None
    assert body.update(tracks(kinect[:40], confidence[:40]), {}) == {}  # 1.3 s tracked: no shape yet
    first = body.update(tracks(kinect[:50], confidence[:50]), {})[1]
    later = body.update(tracks(kinect[10:60], confidence[10:60]), {})[1]
    np.testing.assert_array_equal(later.betas, first.betas)  # held, not refitted
    assert later.t_session == pytest.approx(59 / FPS - 10 / FPS)
    # the newest frame's pose: the fit reaches the scripted body's joints (noise-free Kinect joints)
    assert np.max(np.linalg.norm(later.joints[:22] - joints[59, :22], axis=-1)) < 0.03
    assert np.max(np.linalg.norm(first.joints[:22] - joints[49, :22], axis=-1)) < 0.03
    assert later.vertices is None
    # a person no longer tracked is forgotten: back again, it waits for a new shape
    assert body.update(tracks(kinect[50:60], confidence[50:60], person_id=2), {}) == {}
    assert body.update(tracks(kinect[:50], confidence[:50]), {}) != {}


def test_hands_set_wrists_and_fingers_and_fingers_are_held(motion, tmp_path):
    _, _, _, kinect, confidence = motion
    body = LiveBody(ProcessConfig(models=str(tmp_path)), shape_s=1.0)
    people = tracks(kinect[:40], confidence[:40])
    hand = a_hand(np.random.default_rng(0))
    fitted = body.update(people, {(1, "left"): hand})[1]
    assert fitted.hand_status == {"left": "observed", "right": "kinect"}
    start = SMPLX_HAND_START["left"]
    np.testing.assert_allclose(fitted.local_rotmats[start:start + 15], hand.hand_pose, atol=1e-12)
    _, glob = forward_kinematics(body.skeleton, fitted.local_rotmats, fitted.betas)
    # the wrist takes the hand's world rotation (within the wrist's limits, which this one is)
    np.testing.assert_allclose(glob[SMPLX_WRIST["left"]], hand.R_world, atol=1e-9)
    right = SMPLX_HAND_START["right"]
    np.testing.assert_allclose(fitted.local_rotmats[right:right + 15], np.broadcast_to(np.eye(3), (15, 3, 3)))
    # the hand is gone: its fingers stay, the wrist is the body's again
    gone = body.update(people, {})[1]
    assert gone.hand_status == {"left": "held", "right": "kinect"}
    np.testing.assert_allclose(gone.local_rotmats[start:start + 15], hand.hand_pose, atol=1e-12)
    assert not np.allclose(gone.local_rotmats[SMPLX_WRIST["left"]], fitted.local_rotmats[SMPLX_WRIST["left"]])


def test_mesh_from_the_models_folder_is_skinned_to_the_fitted_joints(motion, tmp_path):
    _, _, _, kinect, confidence = motion
    write_synthetic_smplx(tmp_path / "smplx")
    body = LiveBody(ProcessConfig(models=str(tmp_path)), shape_s=1.0)
    assert body.smplx_path == tmp_path / "smplx" / "SMPLX_NEUTRAL.npz"
    fitted = body.update(tracks(kinect[:40], confidence[:40]), {(1, "right"): a_hand(np.random.default_rng(1))})[1]
    model = make_synthetic_smplx()
    assert fitted.vertices.shape == model["v_template"].shape and body.faces.shape == model["f"].shape
    # the synthetic regressor averages a ring skinned to its joint: the posed mesh regresses the joints
    regressed = np.asarray(model["J_regressor"], np.float64) @ fitted.vertices
    np.testing.assert_allclose(regressed, fitted.joints, atol=1e-5)


def test_skinning_at_rest_is_the_shaped_template():
    model = make_synthetic_smplx()
    mesh = BodyMesh(model)
    betas = np.linspace(-1.0, 1.0, 10)
    verts, joints = mesh.shaped(betas)
    R = np.broadcast_to(np.eye(3), (55, 3, 3))
    np.testing.assert_allclose(mesh.skin(verts, joints, R, joints), verts, atol=1e-12)
    shift = np.array([0.1, 0.2, 0.3])
    turned = axis_angle_to_matrix(np.array([0.0, 0.5, 0.0]))
    moved = mesh.skin(verts, joints, np.broadcast_to(turned, (55, 3, 3)), joints @ turned.T + shift)
    np.testing.assert_allclose(moved, verts @ turned.T + shift, atol=1e-9)  # one rigid motion of every joint


def test_live_body_needs_enough_joints_in_the_newest_frame(motion, tmp_path):
    _, _, _, kinect, confidence = motion
    body = LiveBody(ProcessConfig(models=str(tmp_path)), shape_s=1.0)
    unsure = np.where(confidence > 0, 0, confidence)  # tracked, but every joint of confidence NONE
    assert body.update(tracks(kinect[:40], unsure[:40]), {}) == {}  # no shape from such joints
    people = tracks(kinect[:40].copy(), confidence[:40])
    assert 1 in body.update(people, {})
    people.joints[0, -1] = np.nan  # the person is missing from the newest frame
    assert body.update(people, {}) == {}
