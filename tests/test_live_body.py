"""The live whole body (``fusion.live.body``): the shape held from the first seconds, the pose of
each newest Kinect frame, the hands set on the wrists and fingers as ``process`` sets them, the mesh
skinned from a model file."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from omnimocap.data.skeletons import SMPLX_HAND_START, SMPLX_WRIST
from omnimocap.fusion.body_fit import BodyFitConfig, BodyFitInit, fit_body
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


@pytest.fixture(scope="module")
def held_shape(motion):
    """The fit's settings, and the shape and joint-definition offsets fitted on the first 45 frames,
    as the live body holds them."""
    skeleton, _, _, kinect, confidence = motion
    config = BodyFitConfig()
    shape = fit_body(kinect[:45], confidence[:45], skeleton, config)
    return config, shape.betas, np.array(list(shape.joint_offsets.values()))


def test_fit_without_init_is_the_same_before_and_after_a_warm_started_one(motion, held_shape):
    skeleton, _, _, kinect, confidence = motion
    config, betas, offsets = held_shape
    cold = fit_body(kinect[50:51], confidence[50:51], skeleton, config, betas=betas, joint_offsets=offsets)
    start = fit_body(kinect[49:50], confidence[49:50], skeleton, config, betas=betas, joint_offsets=offsets)
    warm = fit_body(kinect[50:51], confidence[50:51], skeleton, replace(config, iterations=0, offset_iterations=2),
                    betas=betas, joint_offsets=offsets, init=BodyFitInit(start.local_rotmats, start.transl))
    again = fit_body(kinect[50:51], confidence[50:51], skeleton, config, betas=betas, joint_offsets=offsets)
    for name in ("local_rotmats", "transl", "joints", "residual_mm"):
        np.testing.assert_array_equal(getattr(again, name), getattr(cold, name))  # bitwise: no trace of init
    assert not np.array_equal(warm.local_rotmats, cold.local_rotmats)  # a different path to the answer


def test_init_is_where_the_steps_start(motion, held_shape):
    """With no step to take, the fit is the initial pose itself (the body's 22 joints that move a
    Kinect joint; the others stay at rest)."""
    skeleton, _, _, kinect, confidence = motion
    config, betas, _ = held_shape
    rng = np.random.default_rng(4)
    local = np.broadcast_to(np.eye(3), (1, 55, 3, 3)).copy()
    local[0, 1:22] = axis_angle_to_matrix(rng.normal(0.0, 0.2, (21, 3)))
    transl = np.array([[0.1, 0.9, 2.0]])
    still = replace(config, iterations=0, joint_offsets=False)
    fit = fit_body(kinect[:1], confidence[:1], skeleton, still, betas=betas, init=BodyFitInit(local, transl))
    moving = [j for j in range(22) if not np.allclose(fit.local_rotmats[0, j], np.eye(3))]
    np.testing.assert_allclose(fit.local_rotmats[0, moving], local[0, moving], atol=1e-12)
    np.testing.assert_allclose(fit.transl, transl, atol=1e-12)
    assert len(moving) >= 15


def test_warm_started_frames_reach_the_cold_fit(motion, held_shape):
    """Frame by frame, each started from the previous frame's fit with 2 steps (the live body's
    warm start), the poses stay within 1.5 mm (joints) of the fits from the analytic
    initialisation with 6 + 3 steps: measured 0.9 mm at most on these 15 frames."""
    skeleton, _, _, kinect, confidence = motion
    config, betas, offsets = held_shape
    warm_config = replace(config, iterations=0, offset_iterations=2)
    previous = fit_body(kinect[44:45], confidence[44:45], skeleton, config, betas=betas, joint_offsets=offsets)
    largest = 0.0
    for k in range(45, 60):
        cold = fit_body(kinect[k:k + 1], confidence[k:k + 1], skeleton, config, betas=betas, joint_offsets=offsets)
        previous = fit_body(kinect[k:k + 1], confidence[k:k + 1], skeleton, warm_config, betas=betas,
                            joint_offsets=offsets, init=BodyFitInit(previous.local_rotmats, previous.transl))
        largest = max(largest, np.linalg.norm(previous.joints[0, :22] - cold.joints[0, :22], axis=-1).max())
    assert largest < 0.0015, f"{1000 * largest:.2f} mm"


def test_live_body_starts_each_frame_from_the_last_unless_too_old(motion, tmp_path, monkeypatch):
    import omnimocap.fusion.live.body as live_body

    _, _, _, kinect, confidence = motion
    inits = []

    def counting_fit(*args, init=None, **kwargs):
        inits.append(init is not None)
        return fit_body(*args, init=init, **kwargs)

    monkeypatch.setattr(live_body, "fit_body", counting_fit)
    body = LiveBody(ProcessConfig(models=str(tmp_path)), shape_s=1.0, warm_iterations=2, warm_max_gap_s=0.2)
    for k in (40, 41, 42, 50, 51):  # 50 follows 42 by 0.27 s: too old a start
        body.update(tracks(kinect[:k], confidence[:k]), {})
    # the shape fit, then the pose of every frame: cold, warm, warm, cold after the gap, warm
    assert inits == [False, False, True, True, False, True]
    cold = LiveBody(ProcessConfig(models=str(tmp_path)), shape_s=1.0, warm_iterations=0)
    inits.clear()
    for k in (40, 41):
        cold.update(tracks(kinect[:k], confidence[:k]), {})
    assert inits == [False, False, False]
