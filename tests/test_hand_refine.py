"""The repairs of hand observations whose errors are correlated over time (fusion/hand_refine.py):
the hand placed across its ray by all its 2D keypoints, its size held to its track's median, and
observations of another hand or of a false one rejected by their consistency with the Kinect."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from omnimocap.fusion.frame_stage import HandStage
from omnimocap.fusion.hand_refine import (
    HandRefineConfig, HandSizeTrack, OffsetGate, hand_size, nearer_other_hand, place_on_keypoints, rescale_keypoints,
)
from omnimocap.fusion.lifting import lift_observation
from omnimocap.fusion.pipeline import ProcessConfig
from omnimocap.geometry.cameras import EquirectCamera
from omnimocap.geometry.pano_optics import PanoOptics
from omnimocap.geometry.transforms import axis_angle_to_matrix
from omnimocap.geometry.views import plan_view, project_to_view
from omnimocap.hands.estimator import HandObservation, ViewRequest

FRAMES = 60
CORR_FRAMES = 6  # the errors' correlation time, frames (0.2 s at 30 fps)


def true_hand(wrist: np.ndarray) -> np.ndarray:
    """A spread hand (21, 3), metres, pano frame: five fingers of four joints fanned from the wrist
    in the plane across the viewing direction."""
    joints = [wrist]
    forward = -wrist / np.linalg.norm(wrist)
    up = np.array([0.0, 1.0, 0.0])
    across = np.cross(forward, up)
    for f, angle in enumerate(np.radians([-50, -20, 0, 20, 40])):
        d = np.cos(angle) * up + np.sin(angle) * across
        for j in range(4):
            joints.append(wrist + (0.03 + 0.025 * j) * d + 0.01 * f * forward)
    return np.array(joints)


def correlated(rng: np.random.Generator, shape: tuple[int, ...], frames: int = FRAMES) -> np.ndarray:
    """Unit-variance errors (frames, *shape) correlated over CORR_FRAMES: knots every CORR_FRAMES
    frames, linearly interpolated (normalised per frame)."""
    knots = rng.normal(size=(frames // CORR_FRAMES + 2,) + shape)
    x = np.arange(frames) / CORR_FRAMES
    k = np.floor(x).astype(int)
    u = (x - k).reshape((-1,) + (1,) * len(shape))
    return ((1 - u) * knots[k] + u * knots[k + 1]) / np.sqrt((1 - u) ** 2 + u ** 2)


def observe(joints: np.ndarray, kp_error_px: np.ndarray | None = None, R_error: np.ndarray | None = None,
            scale: float = 1.0):
    """A view of the hand ``joints`` (pano = world frame) and what a hand network reports of it:
    exact 2D keypoints plus ``kp_error_px`` (21, 2), wrist-relative 3D keypoints turned by
    ``R_error`` about the wrist (view frame) and scaled by ``scale``."""
    view = plan_view(joints, size=256, margin=1.5, center_pano=joints.mean(axis=0))
    request = ViewRequest(0, 0.0, 0, "right", view.R_pano_view, view.camera, view.R_pano_view.T @ joints[0],
                          np.zeros(4))
    kp2d = project_to_view(view, joints)
    lo, hi = kp2d.min(axis=0), kp2d.max(axis=0)
    side = 2.0 * float(np.max(hi - lo))
    centre = 0.5 * (lo + hi)
    if kp_error_px is not None:
        kp2d = kp2d + kp_error_px
    rel_view = (joints - joints[0]) @ view.R_pano_view
    if R_error is not None:
        rel_view = rel_view @ R_error.T
    obs = HandObservation(True, np.eye(3), np.broadcast_to(np.eye(3), (15, 3, 3)).copy(), np.zeros(10),
                          scale * rel_view + np.array([0.0, 0.0, 0.1]), kp2d,
                          np.r_[centre - side / 2, centre + side / 2], np.zeros(3), np.zeros(3))
    return request, obs, side


def mean_error_mm(joints: np.ndarray, truth: np.ndarray) -> float:
    return 1000.0 * float(np.mean(np.linalg.norm(joints - truth, axis=-1)))


def test_exact_keypoints_leave_an_exact_lift_as_it_is():
    truth = true_hand(np.array([0.3, -0.1, 0.9]))
    request, obs, _ = observe(truth)
    lifted = lift_observation(obs, request, np.eye(4), truth[0])
    placed = place_on_keypoints(lifted, obs, request, np.eye(4), kinect_wrist_world=truth[0])
    assert mean_error_mm(lifted.joints, truth) < 1e-6
    assert mean_error_mm(placed.joints, truth) < 1e-6
    assert abs(placed.depth - lifted.depth) < 1e-9 and placed.lateral_offset < 1e-9


def test_keypoint_errors_correlated_over_six_frames_are_averaged_across_the_hand():
    """2D keypoint errors of 3 % of the box side per axis, correlated over 6 frames: the wrist
    keypoint alone carries its error into the whole hand; the 21 keypoints together much less."""
    rng = np.random.default_rng(7)
    errors = correlated(rng, (21, 2))
    wrist_only, placed = [], []
    for f in range(FRAMES):
        truth = true_hand(np.array([0.3 + 0.004 * f, -0.1, 0.9]))
        _, _, side = observe(truth)
        request, obs, _ = observe(truth, kp_error_px=0.03 * side * errors[f])
        lifted = lift_observation(obs, request, np.eye(4), truth[0])
        wrist_only.append(mean_error_mm(lifted.joints, truth))
        placed.append(mean_error_mm(place_on_keypoints(lifted, obs, request, np.eye(4)).joints, truth))
    assert np.mean(wrist_only) > 4.0
    assert np.mean(placed) < 0.5 * np.mean(wrist_only)


def test_a_turned_hand_turns_about_where_the_image_shows_it():
    """An 8 degree orientation error of the 3D hand, correlated over 6 frames, with its 2D keypoints
    where the image shows the hand: placed by all of them, the hand's joints err less than when it
    turns about its wrist keypoint (only the error's part across the viewing ray can be undone)."""
    rng = np.random.default_rng(3)
    axes = correlated(rng, (3,))
    wrist_only, placed = [], []
    for f in range(FRAMES):
        truth = true_hand(np.array([-0.2, 0.1 + 0.003 * f, 0.8]))
        R_error = axis_angle_to_matrix(np.radians(8.0) / np.sqrt(3.0) * axes[f])
        request, obs, _ = observe(truth, R_error=R_error)
        lifted = lift_observation(obs, request, np.eye(4), truth[0])
        wrist_only.append(mean_error_mm(lifted.joints, truth))
        placed.append(mean_error_mm(place_on_keypoints(lifted, obs, request, np.eye(4)).joints, truth))
    assert np.mean(placed) < 0.9 * np.mean(wrist_only)


def test_one_wild_keypoint_barely_moves_the_hand():
    truth = true_hand(np.array([0.3, -0.1, 0.9]))
    _, _, side = observe(truth)
    error = np.zeros((21, 2))
    error[8] = [0.5 * side, 0.0]
    request, obs, _ = observe(truth, kp_error_px=error)
    lifted = lift_observation(obs, request, np.eye(4), truth[0])
    placed = place_on_keypoints(lifted, obs, request, np.eye(4))
    assert mean_error_mm(placed.joints, truth) < 2.0


def test_keypoints_near_the_seam_are_placed_from_their_lens():
    """A hand 0.5 m away just in front of the seam, seen through the front lens: placed from the
    lens's centre, exact keypoints keep it where it is; from the camera's origin it would move."""
    optics = PanoOptics(baseline_m=0.03)
    truth = true_hand(0.5 * np.array([np.cos(np.radians(8.0)), 0.0, np.sin(np.radians(8.0))]))
    apparent = optics.apparent(truth)[0]
    view = plan_view(apparent, size=256, margin=1.5, center_pano=apparent.mean(axis=0))
    request = ViewRequest(0, 0.0, 0, "right", view.R_pano_view, view.camera, view.R_pano_view.T @ apparent[0],
                          np.zeros(4))
    kp2d = project_to_view(view, apparent)
    obs = HandObservation(True, np.eye(3), np.broadcast_to(np.eye(3), (15, 3, 3)).copy(), np.zeros(10),
                          (truth - truth[0]) @ view.R_pano_view, kp2d, np.r_[kp2d.min(0), kp2d.max(0)],
                          np.zeros(3), np.zeros(3))
    lifted = lift_observation(obs, request, np.eye(4), truth[0], optics=optics)
    assert mean_error_mm(place_on_keypoints(lifted, obs, request, np.eye(4), optics).joints, truth) < 0.5
    assert mean_error_mm(place_on_keypoints(lifted, obs, request, np.eye(4)).joints, truth) > 2.0


def test_a_size_error_correlated_over_six_frames_is_held_to_the_tracks_median():
    rng = np.random.default_rng(11)
    frames = 10 * FRAMES  # 100 independent stretches
    scale = np.exp(0.05 * correlated(rng, (), frames))
    truth = true_hand(np.array([0.3, -0.1, 0.9]))
    true_size = hand_size(truth)
    track = HandSizeTrack(window=300, min_samples=5)
    observed, held = [], []
    for f in range(frames):
        _, obs, _ = observe(truth, scale=float(scale[f]))
        fixed = rescale_keypoints(obs, track.update((0, 1), hand_size(obs.keypoints_3d)))
        observed.append(abs(hand_size(obs.keypoints_3d) / true_size - 1.0))
        held.append(abs(hand_size(fixed.keypoints_3d) / true_size - 1.0))
        # the wrist keypoint stays where it was
        assert np.allclose(fixed.keypoints_3d[0], obs.keypoints_3d[0])
    assert np.mean(observed[FRAMES:]) > 0.02
    assert np.mean(held[FRAMES:]) < 0.5 * np.mean(observed[FRAMES:])


def test_size_track_waits_for_enough_observations_and_keeps_sides_apart():
    track = HandSizeTrack(window=3, min_samples=2)
    assert track.update((0, 0), 1.0) is None
    assert track.update((0, 1), 5.0) is None
    assert track.update((0, 0), 3.0) == 2.0
    assert track.update((0, 0), 3.0) == 3.0
    assert track.update((0, 0), 3.0) == 3.0  # the first one has left the window
    assert track.update((0, 0), float("nan")) is None


def test_repairs_are_config_switches_of_the_process():
    cfg = ProcessConfig(hands="sim")
    assert cfg.hand_refine.keypoint_position and cfg.hand_refine.track_size
    truth = true_hand(np.array([0.3, -0.1, 0.9]))
    _, _, side = observe(truth)
    request, obs, _ = observe(truth, kp_error_px=np.full((21, 2), 0.0) + np.r_[0.05 * side, 0.0], scale=1.1)
    kinect = {"wrist": truth[0]}
    off = replace(cfg, hand_refine=HandRefineConfig(keypoint_position=False, track_size=False))
    stage_off = HandStage(off, None, np.eye(4), EquirectCamera(1920, 960))
    plain = lift_observation(obs, request, np.eye(4), truth[0], kinect, {"wrist": 1.0}, PanoOptics.ideal())
    lifted_off = stage_off._lift(obs, request, (0, 1), truth[0], kinect, {"wrist": 1.0}, PanoOptics.ideal())
    assert np.array_equal(lifted_off.joints, plain.joints)
    stage_on = HandStage(cfg, None, np.eye(4), EquirectCamera(1920, 960))
    lifted_on = stage_on._lift(obs, request, (0, 1), truth[0], kinect, {"wrist": 1.0}, PanoOptics.ideal())
    assert not np.allclose(lifted_on.joints, plain.joints)


def test_a_hand_nearer_another_predicted_hand_is_another_hands_box():
    predicted = np.array([[[0.0, 1.0, 1.0], [0.3, 1.0, 1.0]], [[1.0, 1.0, 1.0], [np.nan] * 3]])
    assert not nearer_other_hand(np.array([0.05, 1.0, 1.0]), predicted, 0, 0)
    assert nearer_other_hand(np.array([0.25, 1.0, 1.0]), predicted, 0, 0)  # the same person's right hand
    assert nearer_other_hand(np.array([0.9, 1.0, 1.0]), predicted, 0, 1)  # another person's hand
    assert not nearer_other_hand(np.array([0.9, 1.0, 1.0]), predicted, 1, 1)  # no prediction of its own


def test_the_running_gate_follows_the_kinects_accuracy():
    gate = OffsetGate(window=100, min_samples=10, scale=3.0, floor_m=0.05)
    rng = np.random.default_rng(5)
    for offset in np.abs(rng.normal(scale=0.03, size=10)):
        assert not gate.reject((0, 0), float(offset))  # open until 10 are known
    assert gate.reject((0, 0), 0.12)  # a false hand a view's third away
    assert not gate.reject((0, 0), 0.045)
    assert not gate.reject((0, 1), 0.12)  # each side its own gate
    exact = OffsetGate(window=100, min_samples=10, scale=3.0, floor_m=0.05)
    for _ in range(20):
        assert not exact.reject((0, 0), 0.0)
    assert not exact.reject((0, 0), 0.049) and exact.reject((0, 0), 0.051)  # never tighter than the floor


def test_stage_rejects_the_box_of_the_other_hand():
    truth = true_hand(np.array([0.3, -0.1, 0.9]))
    request, obs, _ = observe(truth)
    cfg = ProcessConfig(hands="sim")
    # (P=1, M=1, 2, 3): the left hand predicted 9 cm from the observed hand, the right 2 cm
    pred = {"wrist": np.array([[[truth[0] + [0.0, -0.09, 0.0], truth[0] + [0.02, 0.0, 0.0]]]])}
    stage = HandStage(cfg, None, np.eye(4), EquirectCamera(1920, 960))
    lifted = lift_observation(obs, request, np.eye(4), truth[0])
    assert not stage._inconsistent(lifted, pred, (0, 1), 0)
    assert stage._inconsistent(lifted, pred, (0, 0), 0)  # the left hand's view showed the right hand
    off = HandStage(replace(cfg, hand_refine=HandRefineConfig(nearest_hand=False)), None, np.eye(4),
                    EquirectCamera(1920, 960))
    assert not off._inconsistent(lifted, pred, (0, 0), 0)


def test_hands_held_together_are_kept_within_the_margin():
    """Both wrists predicted 3 cm apart and each a few centimetres off: the observed left hand lies
    2 cm nearer the right prediction than its own; within the margin it is kept, beyond it not."""
    predicted = np.array([[[0.0, 1.0, 1.0], [0.03, 1.0, 1.0]]])
    wrist = np.array([0.035, 1.0, 1.0])  # 3.5 cm from its own prediction, 0.5 cm from the other
    assert nearer_other_hand(wrist, predicted, 0, 0)
    assert not nearer_other_hand(wrist, predicted, 0, 0, margin_m=0.04)
    # hands held apart: a view that shows the other hand is still turned away
    apart = np.array([[[0.0, 1.0, 1.0], [0.10, 1.0, 1.0]]])
    assert nearer_other_hand(np.array([0.10, 1.0, 1.0]), apart, 0, 0, margin_m=0.04)  # on the other hand
