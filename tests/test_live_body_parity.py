"""Live and offline give the same body within the causal filter's lag: one simulated session (3 s,
one person, one Kinect, ``ideal`` realism) goes through ``process``'s stages
(``fusion.pipeline.process_window``: smoothing, body fit, hands) and through the live controller
stepped once per panorama frame, and the live body of each Kinect frame is compared with
``process``'s body of the same frame, as Kinect joints (``kinect_from_smplx_matrix`` of the SMPL-X
joints), after the live shape is held (``LiveConfig.body_shape_s``, 1.5 s).

What differs: live holds the shape fitted on the first 1.5 s (process: the whole session), smooths
the Kinect joints with the forward Kalman filter alone (process: forwards and backwards), fits
each newest frame without the temporal term between neighbours and starts it from the previous
frame's fit with 2 steps (process: the analytic initialisation and 6 + 3 steps). Measured with the
warm start (without it, every frame started as process starts: 1.01 mm; 10.7 mm median and 31.3 mm
90th percentile with noise):

- exact Kinect joints (``kinect_noise_mm=0``): live and process agree to 1.01 mm at most (the shape
  and offsets from 1.5 s instead of 3 s under the fit's shape and trunk priors); tolerance 1.5 mm.
  Here the Kinect joints themselves are process's body to 0.5 mm, so this case checks the stages
  are the same, and the noisy one that the live body is fitted;
- 15 mm Kinect noise: median difference 10.6 mm, 90th percentile 30.7 mm. Comparing live frame k
  with process's frame k - 1, k - 2, k - 3 gave 18.5, 27.7, 36.6 mm: the filter's lag is under a
  frame, and what is left is the noise the causal filter cannot remove without the future.
  Tolerances 18 mm (median) and 40 mm (90th percentile). The raw Kinect joints are further from
  process's body (median 22.0 mm, 90th percentile 52.9 mm): a live body that was the Kinect
  skeleton as it came would fail.
"""

from __future__ import annotations

import numpy as np

from omnimocap.capture.rig import Rig
from omnimocap.capture.session import Session
from omnimocap.data.skeletons import KINECT_BODY_FOR_FIT, kinect_from_smplx_matrix
from omnimocap.fusion.body_model import forward_kinematics, load_skeleton
from omnimocap.fusion.pipeline import ProcessConfig, load_inputs, process_window
from tests.tools.replay import step_live

W = kinect_from_smplx_matrix()


def simulated(tmp_path_factory, noise_mm: float):
    from omnimocap.sim.simulate import SimConfig, simulate_session

    root = tmp_path_factory.mktemp("body_parity") / "session"
    simulate_session(root, SimConfig(seconds=3.0, people=1, kinects=1, seed=3, pano_width=640, realism="ideal",
                                     kinect_noise_mm=noise_mm))
    return root


def offline_bodies(session_dir, config: ProcessConfig):
    """``process``'s people (raw Kinect joints) and its fitted SMPL-X joints (P, F, 55, 3)."""
    session = Session.open(session_dir)
    rig = Rig.load(session.rig_path)
    inputs = load_inputs(session, rig, config)
    people = inputs.people
    result = process_window(session, rig, inputs, config, 0, len(people.t_session), preview=False)
    skeleton = load_skeleton(inputs.smplx_path)
    joints = np.stack([forward_kinematics(skeleton, result.local[p], result.betas[p], result.transl[p])[0]
                       for p in range(len(people.person_ids))])
    return people, joints


def live_bodies(session_dir, config: ProcessConfig) -> dict:
    """(person id, session time) -> the live SMPL-X joints (55, 3), stepping the controller once per
    panorama frame after the Kinect frames up to its time."""
    bodies = {}
    for _, state, _ in step_live(session_dir, config):
        for pid, body in state.world.fitted.items():
            bodies[(pid, body.t_session)] = body.joints
    return bodies


def differences(tmp_path_factory, noise_mm: float):
    """Per live body and Kinect joint of the fit: distance (m) from process's body of the same frame,
    of the live body and of the raw Kinect joint."""
    session = simulated(tmp_path_factory, noise_mm)
    config = ProcessConfig(hands="sim", view_size=96)
    people, offline = offline_bodies(session, config)
    live = live_bodies(session, config)
    assert len(live) >= 30  # every frame after the first 1.5 s
    live_d, raw_d = [], []
    for (pid, t), joints in live.items():
        p, k = people.person_ids.index(pid), int(np.argmin(np.abs(people.t_session - t)))
        assert abs(people.t_session[k] - t) < 1e-6  # the live body is at a Kinect frame's time
        process_rows = W @ offline[p, k]
        live_d.append(np.linalg.norm(W @ joints - process_rows, axis=-1))
        raw_d.append(np.linalg.norm(people.joints[p, k, list(KINECT_BODY_FOR_FIT)] - process_rows, axis=-1))
    return np.concatenate(live_d), np.concatenate(raw_d)


def test_live_body_is_process_body_on_exact_joints(tmp_path_factory):
    live, _ = differences(tmp_path_factory, 0.0)
    assert live.max() <= 0.0015, f"largest difference {1000 * live.max():.2f} mm"


def test_live_body_is_process_body_within_the_filter_lag(tmp_path_factory):
    live, raw = differences(tmp_path_factory, 15.0)
    median, p90 = np.median(live), np.percentile(live, 90)
    assert median <= 0.018 and p90 <= 0.040, f"median {1000 * median:.1f} mm, p90 {1000 * p90:.1f} mm"
    # the tolerance tells the fitted body from the Kinect skeleton as it came
    assert np.nanmedian(raw) > 0.018 and np.nanpercentile(raw, 90) > 0.040
