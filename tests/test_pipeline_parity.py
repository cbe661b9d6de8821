"""Live and offline give the same hand for the same frame: the panorama frames of one simulated
session go through ``process``'s hand stage (``fusion.pipeline.observe_window``) and through the
live controller's step (``fusion.live``), and the lifted hands agree joint by joint, with the same
person and side.

Where live must differ (``fusion.live.preview``), the session is chosen so that it does not matter:
- live sees the Kinect frames that have arrived: every panorama frame is stepped after the Kinect
  frames up to two past its time (the cubic interpolation's neighbours), so both interpolate;
- live measures the Kinect joints' noise over its history, process over the session: the joints
  are exact (``kinect_noise_mm=0``), so both fall back to the same floors;
- the anchor smoother has no future live: with ``smoothing`` on, the hands agree to 10 um
  (measured: about 1 um); with it off, to 1e-6 m (the depth cue's rendering; 3e-8 m measured);
- one Kinect: process fuses the skeletons of all Kinects per person, live reads the reference one.
"""

from __future__ import annotations


import numpy as np
import pytest

from omnimocap.capture.rig import Rig
from omnimocap.capture.session import Session
from omnimocap.data.skeletons import SIDES
from omnimocap.fusion.frame_stage import smooth_anchors
from omnimocap.fusion.live.state import HAND_SEEN
from omnimocap.fusion.pipeline import ProcessConfig, load_inputs, observe_window
from tests.tools.replay import step_live


@pytest.fixture(scope="module")
def sim_session(tmp_path_factory):
    from omnimocap.sim.simulate import SimConfig, simulate_session

    root = tmp_path_factory.mktemp("parity") / "session"
    simulate_session(root, SimConfig(seconds=1.5, people=1, kinects=1, seed=3, pano_width=640,
                                                 realism="ideal", kinect_noise_mm=0.0))
    return root


def offline_hands(session_dir, config: ProcessConfig) -> dict:
    """(panorama frame index, person id, side) -> lifted hand joints (21, 3), world, from
    ``process``'s stage call; and the number of hands the depth cue measured."""
    session = Session.open(session_dir)
    rig = Rig.load(session.rig_path)
    inputs = load_inputs(session, rig, config)
    anchors = smooth_anchors(inputs.people, inputs.anchor_noise_std, config)
    observed = observe_window(session, rig, inputs, config, anchors, 0, len(inputs.t_pano_session))
    hands = {}
    for p, k, s in zip(*np.nonzero(observed.valid)):
        hands[(int(k), inputs.people.person_ids[p], SIDES[s])] = observed.joints[p, k, s]
    return hands, len(observed.depth_shifts)


def live_hands(session_dir, config: ProcessConfig) -> dict:
    """The same keys from the live controller, stepped once per panorama frame."""
    hands, depth_used = {}, 0
    for frame, state, controller in step_live(session_dir, config, lead=2):
        for key, status in state.world.hand_status.items():
            if status == HAND_SEEN:
                hands[(frame.index, *key)] = state.world.person_hands[key]
        depth_used += sum(v.depth_shift_m is not None for v in controller.preview_result.views)
    return hands, depth_used


@pytest.mark.parametrize("smoothing, atol_m", [(False, 1e-6), (True, 1e-5)])
def test_live_step_gives_process_hands(sim_session, smoothing, atol_m):
    config = ProcessConfig(hands="sim", view_size=96, smoothing=smoothing)
    offline, offline_depth = offline_hands(sim_session, config)
    live, live_depth = live_hands(sim_session, config)
    # the same (frame, person, side) keys: a hand in the same frames, for the same person and side
    assert set(offline) == set(live) and len(offline) >= 40
    assert offline_depth > 0 and live_depth == offline_depth  # the depth cue measured the same hands
    worst = max(float(np.max(np.abs(offline[k] - live[k]))) for k in offline)
    assert worst <= atol_m, f"largest joint difference {worst * 1000:.4f} mm"
