"""The hand stage models the 360 camera it has (``fusion.frame_stage``, ``fusion.lifting``): rays from
the lens that saw the hand, each view at the time its rows were exposed, views off the seam's blend
band and no more magnified than the panorama's resolution allows.

The observations are synthetic: a hand moving in a straight line, seen through ``PanoOptics`` as the
stitched frame shows it (``PanoOptics.apparent``, ``capture_times``), with exact Kinect joints, so
every error left is the pipeline's model of the camera. 360 camera at the world origin, axes as the
world's.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from omnimocap.data.skeletons import KINECT_ELBOW, KINECT_HAND, KINECT_HANDTIP, KINECT_THUMB, KINECT_WRIST, SIDES
from omnimocap.fusion.frame_stage import (
    MAX_UPSAMPLING, HandStage, PanoModelConfig, off_seam_centre, plan_hand_views, predicted_hands,
)
from omnimocap.fusion.lifting import lift_observation
from omnimocap.fusion.pipeline import PeopleTracks, ProcessConfig
from omnimocap.geometry.cameras import EquirectCamera
from omnimocap.geometry.pano_optics import PanoOptics, capture_times
from omnimocap.geometry.views import plan_view, project_to_view
from omnimocap.hands.estimator import HandObservation, ViewRequest

FIELD = PanoOptics(baseline_m=0.03, readout_s=0.025, exposure_s=0.01)
PANO = EquirectCamera(3840, 1920)
# Hand joints about the wrist (world, metres), a flat hand pointing along +x.
HAND_OFFSETS = {"elbow": [-0.25, 0.0, 0.0], "wrist": [0.0, 0.0, 0.0], "hand": [0.08, 0.0, 0.0],
                "handtip": [0.16, 0.0, 0.0], "thumb": [0.06, 0.0, 0.04]}
KINECT_IDS = {"elbow": KINECT_ELBOW, "wrist": KINECT_WRIST, "hand": KINECT_HAND, "handtip": KINECT_HANDTIP,
              "thumb": KINECT_THUMB}


def moving_person(wrist_at_0: np.ndarray, velocity: np.ndarray, fps: float = 30.0, seconds: float = 1.0) -> PeopleTracks:
    """One person whose right hand moves at ``velocity`` (m/s) through ``wrist_at_0`` at t = 0, its
    left hand 1 m below; exact Kinect joints at ``fps`` from -seconds/2."""
    t = np.arange(-seconds / 2, seconds / 2 + 1e-9, 1.0 / fps)
    joints = np.full((1, len(t), 32, 3), np.nan)
    for side, shift in (("right", 0.0), ("left", -1.0)):
        for name, offset in HAND_OFFSETS.items():
            joints[0, :, KINECT_IDS[name][side]] = (wrist_at_0 + np.array(offset) + [0.0, shift, 0.0]
                                                    + t[:, None] * velocity)
    return PeopleTracks(t, [0], joints, np.full((1, len(t), 32), 2))


def true_wrist(people: PeopleTracks, t) -> np.ndarray:
    """The right wrist at session times ``t`` (...), world (= 360 camera frame)."""
    w = people.joints[0, :, KINECT_WRIST["right"]]
    velocity = (w[1] - w[0]) / (people.t_session[1] - people.t_session[0])
    return w[0] + (np.asarray(t, dtype=np.float64)[..., None] - people.t_session[0]) * velocity


class OpticsObserver:
    """Sees the right wrist as the stitched frame of ``optics`` shows it: at the time its row was
    exposed, along its direction from the lens on its side; nothing for the left hand."""

    needs_images = False

    def __init__(self, people: PeopleTracks, optics: PanoOptics):
        self.people, self.optics = people, optics
        self.captured: list[tuple[float, np.ndarray]] = []

    def estimate(self, requests: list[ViewRequest]) -> list[HandObservation | None]:
        return [self.observe(r) if r.side == "right" else None for r in requests]

    def observe(self, request: ViewRequest) -> HandObservation:
        t, wrist = capture_times(self.optics, request.t_session, lambda tt: true_wrist(self.people, tt))
        self.captured.append((float(t), wrist))
        apparent, _, _ = self.optics.apparent(wrist)
        kp2d = np.repeat(project_to_view(request_view(request), apparent)[None], 21, axis=0)
        return HandObservation(True, np.eye(3), np.broadcast_to(np.eye(3), (15, 3, 3)).copy(), np.zeros(10),
                               np.zeros((21, 3)), kp2d, np.zeros(4), np.zeros(3), np.zeros(3))


def request_view(request: ViewRequest):
    from omnimocap.geometry.views import WristView

    return WristView(request.R_pano_view, request.camera)


def wrist_only(**camera_model) -> ProcessConfig:
    """The depth along the ray from the Kinect wrist alone (the synthetic hand has no finger offsets)."""
    return ProcessConfig(hands="sim", depth_weights={"wrist": 1.0}, camera_model=PanoModelConfig(**camera_model))


def run_stage(people: PeopleTracks, config: ProcessConfig, t_frame: float = 0.0, optics: PanoOptics = FIELD):
    observer = OpticsObserver(people, optics)
    stage = HandStage(config, observer, np.eye(4), PANO, optics=optics)
    t_pano = np.array([t_frame])
    views = stage.run(predicted_hands(people, t_pano), t_pano, [0], people.person_ids, 0, np.array([0.002]), None,
                      anchors=people)
    right = [v for v in views if SIDES[v.planned.side] == "right"]
    assert len(right) == 1 and right[0].lifted is not None
    return right[0], observer


def test_lifting_from_the_lens_that_saw_the_hand():
    # a wrist 0.5 m away, 2 degrees in front of the seam: the front lens (0.015 m ahead) shows it
    optics = PanoOptics(baseline_m=0.03)
    wrist = 0.5 * np.array([np.cos(np.radians(2.0)), 0.0, np.sin(np.radians(2.0))])
    apparent, lens, seen = optics.apparent(wrist)
    assert lens == 0 and seen
    view = plan_view(apparent[None] + 0.05 * np.vstack([np.eye(3), -np.eye(3)]), size=256, center_pano=apparent)
    request = ViewRequest(0, 0.0, 0, "right", view.R_pano_view, view.camera, view.R_pano_view.T @ apparent,
                          np.zeros(4))
    kp2d = np.repeat(project_to_view(view, apparent)[None], 21, axis=0)
    obs = HandObservation(True, np.eye(3), np.broadcast_to(np.eye(3), (15, 3, 3)).copy(), np.zeros(10),
                          np.zeros((21, 3)), kp2d, np.zeros(4), np.zeros(3), np.zeros(3))
    with_lens = lift_observation(obs, request, np.eye(4), wrist, optics=optics)
    without = lift_observation(obs, request, np.eye(4), wrist)
    assert np.linalg.norm(with_lens.wrist - wrist) < 0.002
    assert np.linalg.norm(without.wrist - wrist) > 0.010
    # the ideal camera's lifting is the one without optics, bit for bit
    ideal = lift_observation(obs, request, np.eye(4), wrist, optics=PanoOptics.ideal())
    assert np.array_equal(ideal.wrist, without.wrist) and np.array_equal(ideal.joints, without.joints)


@pytest.mark.parametrize("lens_origin", [True, False])
def test_stage_lifts_a_hand_near_the_seam_from_its_lens(lens_origin):
    # 0.5 m away, 3 degrees behind the seam (outside the blend band), still: only the lens matters
    wrist = 0.5 * np.array([np.cos(np.radians(3.0)), 0.1, -np.sin(np.radians(3.0))])
    people = moving_person(wrist, np.zeros(3))
    view, _ = run_stage(people, wrist_only(lens_origin=lens_origin))
    error = np.linalg.norm(view.lifted.wrist - wrist)
    assert (error < 0.002) if lens_origin else (error > 0.010), f"{error * 1000:.1f} mm"


@pytest.mark.parametrize("row_time", [True, False])
def test_a_fast_hand_on_a_high_row_is_lifted_at_its_row_time(row_time):
    # high in the front lens's image (its rows exposed ~9 ms before the frame's timestamp), 2 m/s
    wrist = 0.6 * np.array([0.1, -0.9, 0.3]) / np.linalg.norm([0.1, -0.9, 0.3])
    people = moving_person(wrist, np.array([2.0, 0.0, 0.0]))
    view, observer = run_stage(people, wrist_only(row_time=row_time))
    t_true, wrist_true = observer.captured[0]
    assert t_true < -0.008  # the scene: the hand's rows were exposed well before the frame's timestamp
    # the hand is placed where it was and said to be there when it was; the view's time is its
    # centre's row's, ~0.25 ms from the wrist's own here (0.5 mm at 2 m/s)
    error = np.linalg.norm(view.lifted.wrist - true_wrist(people, view.t_capture))
    if row_time:
        assert abs(view.t_capture - t_true) < 5e-4 and error < 0.002, f"{error * 1000:.1f} mm"
    else:
        assert view.t_capture == 0.0 and error > 0.010, f"{error * 1000:.1f} mm"


def test_ideal_optics_plan_and_lift_as_the_single_viewpoint_camera():
    wrist = 0.5 * np.array([np.cos(np.radians(1.0)), 0.2, np.sin(np.radians(1.0))])
    people = moving_person(wrist, np.array([1.5, 0.0, 0.5]))
    modelled, _ = run_stage(people, wrist_only(), optics=PanoOptics.ideal())
    plain, _ = run_stage(people, wrist_only(lens_origin=False, row_time=False, seam_views=False),
                         optics=PanoOptics.ideal())
    assert modelled.t_capture == plain.t_capture == 0.0
    assert np.array_equal(modelled.planned.view.R_pano_view, plain.planned.view.R_pano_view)
    assert np.array_equal(modelled.lifted.joints, plain.lifted.joints)


def seam_plan(seam_views: bool, wrist: np.ndarray):
    people = moving_person(wrist, np.zeros(3))
    config = ProcessConfig(hands="sim", camera_model=PanoModelConfig(seam_views=seam_views))
    planned = plan_hand_views(predicted_hands(people, np.array([0.0])), np.eye(4), [0], config, FIELD, PANO.width)
    return [pv for pv in planned if SIDES[pv.side] == "right"][0], people


@pytest.mark.parametrize("seam_views", [True, False])
def test_views_centred_off_the_seam_on_the_hands_side(seam_views):
    # the hand's centre (0.096 m along x and 0.0048 m along z from the wrist) shown by the front lens
    # 0.5 degrees in front of the seam, inside the 2-degree blend band, 0.6 m away
    wrist = np.array([0.5, 0.0, 0.0154])
    pv, people = seam_plan(seam_views, wrist)
    axis = pv.view.R_pano_view[:, 2]
    assert FIELD.lens_of(axis) == 0
    if seam_views:
        assert FIELD.seam_angle_deg(axis) >= FIELD.blend_deg - 1e-9
        # the whole hand stays inside the view
        hand = np.array([people.joints[0, 15, KINECT_IDS[n]["right"]] for n in ("wrist", "hand", "handtip", "thumb")])
        px = project_to_view(pv.view, FIELD.apparent(hand)[0])
        assert np.all((px >= 0) & (px <= pv.view.size - 1))
    else:
        assert FIELD.in_blend(axis)


def test_off_seam_centre_keeps_distance_and_longitude():
    c = np.array([[0.4, 0.1, 0.005], [0.3, -0.2, -0.004], [0.2, 0.0, 0.3]])
    moved = off_seam_centre(c, FIELD)
    assert np.allclose(np.linalg.norm(moved, axis=-1), np.linalg.norm(c, axis=-1))
    assert np.allclose(FIELD.seam_angle_deg(moved[:2]), FIELD.blend_deg)
    assert np.array_equal(np.sign(moved[:2, 2]), np.sign(c[:2, 2]))
    assert np.allclose(np.arctan2(moved[:2, 1], moved[:2, 0]), np.arctan2(c[:2, 1], c[:2, 0]))
    assert np.array_equal(moved[2], c[2])


@pytest.mark.parametrize("native_resolution", [True, False])
def test_a_small_hand_is_seen_wider_not_upsampled(native_resolution):
    # a hand 3 m away: 0.13 m around it is under 3 degrees; the narrowest view (10 degrees) of it in
    # 256 pixels would magnify the 3840-pixel panorama 2.4 times
    people = moving_person(np.array([0.3, 0.0, 3.0]), np.zeros(3))
    config = ProcessConfig(hands="sim", camera_model=PanoModelConfig(native_resolution=native_resolution))
    planned = plan_hand_views(predicted_hands(people, np.array([0.0])), np.eye(4), [0], config, FIELD, PANO.width)
    native_px_per_rad = PANO.width / (2 * np.pi)
    fx = max(pv.view.camera.fx for pv in planned)
    if native_resolution:
        assert fx <= MAX_UPSAMPLING * native_px_per_rad * (1 + 1e-9)
    else:
        assert fx > 1.15 * MAX_UPSAMPLING * native_px_per_rad


def test_close_hands_keep_their_fitted_views():
    # 0.5 m away the hand's own extent already asks for a wide view: the cap changes nothing
    people = moving_person(np.array([0.1, 0.0, 0.5]), np.zeros(3))
    pred = predicted_hands(people, np.array([0.0]))
    on = plan_hand_views(pred, np.eye(4), [0], replace(ProcessConfig(), camera_model=PanoModelConfig()), FIELD,
                         PANO.width)
    off = plan_hand_views(pred, np.eye(4), [0], ProcessConfig(camera_model=PanoModelConfig(native_resolution=False)),
                          FIELD, PANO.width)
    assert [pv.view.camera.fx for pv in on] == [pv.view.camera.fx for pv in off]


@pytest.mark.parametrize("at_capture", [True, False])
def test_hands_are_resampled_from_the_times_they_were_captured(at_capture):
    from omnimocap.fusion.pipeline import WindowObservations, _hands_at_output_times

    # a hand moving at 2 m/s, seen 8 ms before each frame's timestamp (a high row)
    t_pano = np.arange(0.0, 1.0, 1.0 / 30.0)
    velocity = np.array([2.0, 0.0, 0.0])
    observed = WindowObservations.empty(1, len(t_pano), 0, t_pano)
    t_seen = t_pano - 0.008
    observed.valid[0, :, 1] = True
    observed.joints[0, :, 1] = (t_seen[:, None, None] * velocity) + np.zeros((21, 3))
    if at_capture:
        observed.t_capture[0, :, 1] = t_seen
    t_out = np.arange(0.1, 0.9, 1.0 / 30.0) + 0.004
    hands = _hands_at_output_times(observed, t_pano, t_out, ProcessConfig(smoothing=False))
    error = np.abs(hands.joints[0, :, 1, 0, 0] - 2.0 * t_out).max()
    assert hands.valid[0, :, 1].all()
    assert (error < 1e-6) if at_capture else (error > 0.015), f"{error * 1000:.2f} mm"


@pytest.mark.parametrize("missed, bridged", [(2, True), (3, False)])
def test_gaps_are_bridged_as_by_frame_times_whichever_rows_the_hand_was_on(missed, bridged):
    from omnimocap.fusion.pipeline import WindowObservations, _hands_at_output_times

    # ``missed`` frames missed; the hand seen on a high row before the gap and on a low one after
    # it: 10 ms further apart in capture times than in frame times (2 missed: 100 ms of frame time,
    # as long as max_hand_gap_s allows; 3: 133 ms, longer in frame times whatever the rows)
    t_pano = np.arange(0.0, 1.0, 1.0 / 30.0)
    observed = WindowObservations.empty(1, len(t_pano), 0, t_pano)
    observed.valid[0, :, 1] = True
    observed.valid[0, 10:10 + missed, 1] = False
    observed.t_capture[0, :, 1] = t_pano + np.where(np.arange(len(t_pano)) < 10, -0.005, 0.005)
    observed.joints[0, :, 1] = observed.t_capture[0, :, 1][:, None, None] * np.array([1.0, 0.0, 0.0])
    config = ProcessConfig(smoothing=False, max_hand_gap_s=0.1 + 1e-9)
    t_out = np.array([t_pano[10] + 0.01])
    hands = _hands_at_output_times(observed, t_pano, t_out, config)
    assert hands.valid[0, 0, 1] == bridged
    if bridged:
        assert abs(hands.joints[0, 0, 1, 0, 0] - t_out[0]) < 1e-3


def test_a_track_ends_at_its_last_frame_not_at_its_last_capture():
    from omnimocap.fusion.pipeline import WindowObservations, _hands_at_output_times

    # the hand was last seen 8 ms before its last frame's timestamp; an output time between the two
    # is served (as it is when the hand was on the middle row), one past the last frame is not
    t_pano = np.arange(0.0, 1.0, 1.0 / 30.0)
    observed = WindowObservations.empty(1, len(t_pano), 0, t_pano)
    observed.valid[0, :, 1] = True
    observed.t_capture[0, :, 1] = t_pano - 0.008
    observed.joints[0, :, 1] = observed.t_capture[0, :, 1][:, None, None] * np.array([1.0, 0.0, 0.0])
    t_out = np.array([t_pano[-1] - 0.004, t_pano[-1] + 0.004])
    hands = _hands_at_output_times(observed, t_pano, t_out, ProcessConfig(smoothing=False))
    assert hands.valid[0, :, 1].tolist() == [True, False]
    assert abs(hands.joints[0, 0, 1, 0, 0] - t_out[0]) < 1e-6
