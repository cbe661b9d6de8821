"""The simulated hand observer returns WiLoR's contract for the true hands of a simulated session."""

from __future__ import annotations

import numpy as np
import pytest

from omnimocap.geometry.cameras import PinholeCamera
from omnimocap.capture.truth import Truth
from omnimocap.geometry.transforms import look_at, relative_angle_deg
from omnimocap.sim.simulate import SimConfig, simulate_session
from omnimocap.geometry.resample import interpolate_positions
from omnimocap.hands.synthetic_mano import make_synthetic_mano
from omnimocap.hands.estimator import ViewRequest
from omnimocap.hands.mano import ManoModel
from omnimocap.hands.sim_backend import WILOR_CROP, WILOR_FOCAL, SimHandObserver

SIZE = 256


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("simb") / "session"
    simulate_session(root, SimConfig(seconds=1.0, people=1, kinects=1, seed=5, pano_width=256, kinect_noise_mm=0.0,
                                     realism="ideal"))
    return root, Truth(root).motion(), Truth(root).rig().pose("pano")


def _requests(truth, T_world_pano, frames, side):
    """Views looking at the true wrist (as a planner would), slightly off-centre."""
    s = ("left", "right").index(side)
    out = []
    for i in frames:
        t = truth["pano_frame_t_session"][i]
        wrist = interpolate_positions(truth["t_session"], truth["hand_joints"][0, :, s, 0], np.array([t]))[0]
        d_pano = T_world_pano[:3, :3].T @ (wrist - T_world_pano[:3, 3]) + np.array([0.03, -0.02, 0.0])
        R_pano_view = look_at(d_pano, np.array([0.0, -1.0, 0.0]))
        camera = PinholeCamera(300.0, 300.0, (SIZE - 1) / 2, (SIZE - 1) / 2, SIZE, SIZE)
        out.append(ViewRequest(frame_index=i, t_session=float(t), person_id=0, side=side, R_pano_view=R_pano_view,
                               camera=camera, predicted_wrist_view=R_pano_view.T @ d_pano,
                               predicted_box_xyxy=np.zeros(4)))
    return out


def _visible_frames(truth, side):
    s = ("left", "right").index(side)
    k = np.searchsorted(truth["t_session"], truth["pano_frame_t_session"])
    return [i for i in range(len(k)) if truth["hand_visible"][0, k[i], s]][:6]


@pytest.mark.parametrize("side", ["left", "right"])
def test_noise_free_observation_is_the_truth(sim, side):
    root, truth, T_world_pano = sim
    frames = _visible_frames(truth, side)
    assert frames
    observer = SimHandObserver(root)
    assert observer.name == "sim"
    s = ("left", "right").index(side)
    mano = ManoModel.from_dict(make_synthetic_mano("right"))
    for req, obs in zip(_requests(truth, T_world_pano, frames, side), observer.estimate(_requests(truth, T_world_pano, frames, side))):
        assert obs is not None and obs.is_right == (side == "right")
        t = truth["pano_frame_t_session"][req.frame_index]
        joints = interpolate_positions(truth["t_session"], truth["hand_joints"][0, :, s], np.array([t]))[0]
        R_view_world = req.R_pano_view.T @ T_world_pano[:3, :3].T
        view = (joints - T_world_pano[:3, 3]) @ R_view_world.T
        np.testing.assert_allclose(obs.keypoints_2d, req.camera.project(view), atol=1e-6)
        # The wrist keypoint's bearing, lifted through the true rig, passes through the true wrist.
        bearing_world = T_world_pano[:3, :3] @ req.R_pano_view @ req.camera.unproject(obs.keypoints_2d[0])
        rel = joints[0] - T_world_pano[:3, 3]
        miss = np.linalg.norm(rel - (rel @ bearing_world) * bearing_world)
        assert miss < 1e-6
        # Parameters and keypoints agree through MANO under the mirror convention (left hands are
        # proper left-hand parameters): forward_side reproduces keypoints_3d.
        _, kp = mano.forward_side(side, obs.global_orient, obs.hand_pose, obs.betas)
        assert np.abs(kp - obs.keypoints_3d).max() < 2e-3
        np.testing.assert_allclose(obs.keypoints_3d[0], mano.root_joint(side, obs.betas), atol=1e-9)
        # WiLoR's crop-to-full conversion of cam_crop for box_xyxy gives cam_t_view.
        sc, tx, ty = obs.cam_crop
        tx *= 1.0 if obs.is_right else -1.0
        box_side = obs.box_xyxy[2] - obs.box_xyxy[0]
        cx, cy = 0.5 * (obs.box_xyxy[:2] + obs.box_xyxy[2:])
        bs = box_side * sc
        f = WILOR_FOCAL / WILOR_CROP * SIZE
        np.testing.assert_allclose(obs.cam_t_view, [2 * (cx - SIZE / 2) / bs + tx, 2 * (cy - SIZE / 2) / bs + ty, 2 * f / bs], rtol=1e-9)
        assert np.all((obs.keypoints_2d >= obs.box_xyxy[:2]) & (obs.keypoints_2d <= obs.box_xyxy[2:]))


def test_left_hand_parameters_are_mirrored_right_hand_ones(sim):
    root, truth, T_world_pano = sim
    frames = _visible_frames(truth, "left")
    obs = SimHandObserver(root).estimate(_requests(truth, T_world_pano, frames[:1], "left"))[0]
    mano = ManoModel.from_dict(make_synthetic_mano("right"))
    M = np.diag([-1.0, 1.0, 1.0])
    # The right hand whose mirror image this left hand is has parameters M R M and geometry M x.
    _, right_kp = mano.forward(M @ obs.global_orient @ M, M @ obs.hand_pose @ M, obs.betas)
    np.testing.assert_allclose(right_kp @ M, mano.forward_side("left", obs.global_orient, obs.hand_pose, obs.betas)[1], atol=1e-12)
    assert np.abs(right_kp @ M - obs.keypoints_3d).max() < 2e-3
    # Reading the left parameters as a right hand would give a different geometry.
    _, wrong = mano.forward(obs.global_orient, obs.hand_pose, obs.betas)
    assert np.abs(wrong - obs.keypoints_3d).max() > 0.02


def test_noise_and_dropout(sim):
    root, truth, T_world_pano = sim
    frames = _visible_frames(truth, "right")
    reqs = _requests(truth, T_world_pano, frames, "right")
    clean = SimHandObserver(root).estimate(reqs)
    noisy = SimHandObserver(root, noise_mm=5.0, noise_deg=3.0, seed=1).estimate(reqs)
    err = np.concatenate([(n.keypoints_3d - c.keypoints_3d).ravel() for n, c in zip(noisy, clean)])
    assert 2.5e-3 < err.std() < 8e-3
    angles = np.concatenate([relative_angle_deg(n.hand_pose, c.hand_pose) for n, c in zip(noisy, clean)])
    assert 1.0 < angles.mean() < 6.0
    assert SimHandObserver(root, dropout=1.0).estimate(reqs) == [None] * len(reqs)
    # a request is for the person whose wrist is near its predicted wrist, whatever its id
    assert SimHandObserver(root).estimate([ViewRequest(**{**reqs[0].__dict__, "person_id": 7})]) != [None]
    far = reqs[0].predicted_wrist_view + np.array([0.5, 0.0, 0.0])
    assert SimHandObserver(root).estimate([ViewRequest(**{**reqs[0].__dict__, "predicted_wrist_view": far})]) == [None]
    # A view pointing away from the hand sees nothing.
    away = ViewRequest(**{**reqs[0].__dict__, "R_pano_view": reqs[0].R_pano_view @ np.diag([-1.0, 1.0, -1.0])})
    assert SimHandObserver(root).estimate([away]) == [None]
