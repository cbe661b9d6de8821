"""``sync`` on a session: the 360 camera's time map ``t_session = a * t_pano + b`` with the rig's
current poses, from motion or from flashes, written into the session's ``rig.json`` with the
configuration used.

From motion (calibration/timesync.py): the panorama's bearings of the people's hands and, with a
pose model, body keypoints (simulated observer or detectors, calibration/pano_observer.py) against
the reference (first) Kinect's tracks of the same points. From flashes: calibration/flash_session.py. Times in seconds.
"""

from __future__ import annotations

import numpy as np

from omnimocap.calibration.coarse_sync import coarse_time_map, rate_std_ppm, with_rate
from omnimocap.calibration.config import ObserverConfig, SyncConfig
from omnimocap.calibration.flash_session import flash_time_map
from omnimocap.calibration.observations import TRACKS_PER_PERSON, kinect_wrist_tracks, pano_observations
from omnimocap.calibration.pano_hands import DETECTION_NOISE_AR_ORDER, DETECTION_NOISE_DEG, ViewDetector, detect_hands
from omnimocap.calibration.pano_bodies import PoseDetector, detect_bodies, with_bodies
from omnimocap.calibration.pano_observer import (
    detection_inputs, observer_inputs, observer_kind, open_pose_detector, open_view_detector,
)
from omnimocap.calibration.session_rig import load_rig, reference_serial, write_rig
from omnimocap.calibration.timesync import SyncResult, fine_time_map
from omnimocap.capture.rig import Rig
from omnimocap.capture.session import Session, kinect_name
from omnimocap.geometry.transforms import invert_pose, transform_points


def sync_session(session_dir, config: SyncConfig | None = None, *, view_detector: ViewDetector | None = None,
                 pose_detector: PoseDetector | None = None, progress: bool = False) -> dict:
    """Estimate the 360 camera's time map as ``config`` (default :class:`SyncConfig`) says, write
    the session's rig.json (the pano time map, the residuals under ``residuals.pano_sync``, the
    configuration under ``configs.sync``) and return the time map and residuals; with
    ``config.flash`` also the events and ``warnings`` (lines for the user). ``view_detector``
    replaces the hand detector that ``config.observer`` would open (detector observers only);
    ``pose_detector`` is the body keypoint model of the ``detector`` observer (None: hands only; the
    simulated detector brings its own)."""
    config = config or SyncConfig()
    session = Session.open(session_dir)
    session.require_stitched_pano("sync")
    previous = load_rig(session)
    serial = reference_serial(session, previous)
    if config.flash:
        time_map, residuals, inputs, result = flash_time_map(session, previous, config.flashes, progress)
    else:
        res, inputs = _motion_sync(session, previous, serial, config, view_detector, pose_detector, progress)
        time_map, residuals, result = res.time_map, res.to_json(), res.to_json()
    method = "flash" if config.flash else "sync"
    rig = Rig(dict(previous.T_world_sensor), dict(previous.time_maps),
              method=previous.method if not previous.is_truth else method, is_truth=False,
              residuals={**previous.residuals, "pano_sync": residuals},
              inputs={**previous.inputs, **({"sync_method": "flash"} if config.flash else {}),
                      "sync_reference_kinect": serial, **inputs},
              configs={**previous.configs, "sync": config.to_json()}, pano_optics=previous.pano_optics)
    rig.time_maps["pano"] = time_map
    write_rig(session, rig, previous)
    return {"a": time_map.a, "b": time_map.b, **result}


def offset_priors_m(num_hand_tracks: int, num_tracks: int, observer: ObserverConfig) -> np.ndarray:
    """(K,) the prior of each track's offset, metres per axis: ``observer.hand_offset_prior_mm`` for the
    ``num_hand_tracks`` hand tracks (first), ``observer.body_offset_prior_mm`` for the body keypoints' tracks."""
    return np.r_[np.full(num_hand_tracks, observer.hand_offset_prior_mm),
                 np.full(num_tracks - num_hand_tracks, observer.body_offset_prior_mm)] * 1e-3


def _motion_sync(session: Session, previous: Rig, serial: str, config: SyncConfig, view_detector: ViewDetector | None,
                 pose_detector: PoseDetector | None, progress: bool) -> tuple[SyncResult, dict]:
    """The time map from motion with ``previous``'s poses, and the rig.json inputs."""
    T_world_kinect = previous.pose(kinect_name(serial))
    T_world_pano = previous.pose("pano")
    kind = observer_kind(session, config.observer.observer)
    if kind == "simulated":
        obs = pano_observations(session, noise_deg=config.observer.noise_deg)
        coarse = coarse_time_map(obs.t_pano, obs.t_host)
        tracks = kinect_wrist_tracks(session, serial, previous, obs.bearings.shape[1] // TRACKS_PER_PERSON,
                                 align_definitions=config.observer.align_kinect_joints,
                                 difference_window_s=config.motion.fused_difference_window_s())
        traj = transform_points(T_world_kinect, tracks.points)
        res = fine_time_map(obs.t_pano, obs.bearings, tracks.t_session, traj, T_world_pano, coarse,
                            traj_sigma=tracks.sigma, search_s=config.motion.search_s,
                            rate_prior_std_ppm=rate_std_ppm(obs.t_pano, coarse), robust=config.robust,
                            optics=previous.pano_optics)
        return res, observer_inputs(obs)
    det = view_detector or open_view_detector(session, kind, config.observer.detector, config.observer.device)
    poser = open_pose_detector(session, kind, pose_detector, config.observer.pose_model,
                                   config.observer.device) if config.observer.body_keypoints else None
    T_kinect_pano = invert_pose(T_world_kinect) @ T_world_pano
    tracks = kinect_wrist_tracks(session, serial, previous, align_definitions=config.observer.align_kinect_joints,
                                 difference_window_s=config.motion.fused_difference_window_s())
    detected = detect_hands(session, tracks, det, T_kinect_pano=T_kinect_pano, stride=config.observer.stride,
                            progress=progress)
    coarse = coarse_time_map(detected.t_pano, detected.t_host)
    bodies = None if poser is None else detect_bodies(session, tracks, poser, detected.t_pano, T_kinect_pano, coarse,
                                                      config.observer.stride, progress)
    tm, search = coarse, config.motion.search_s
    for _ in range(config.observer.association_rounds):
        gate = config.motion.first_gate_deg if tm is coarse else config.motion.gate_deg
        obs = detected.observations(T_kinect_pano, tm, gate_deg=gate)
        cand = detected.candidates
        joint = with_bodies(obs.bearings, cand.points, cand.sigma, bodies, T_kinect_pano, tm,
                            config.observer.body_gate_deg * gate / config.motion.gate_deg,
                            config.observer.body_segment_offsets, config.observer.hand_offsets,
                            face=config.motion.face_keypoints)
        res = fine_time_map(obs.t_pano, joint.bearings, cand.t_session, joint.points,
                            T_kinect_pano, with_rate(tm, coarse, float(np.median(obs.t_pano))),
                            traj_sigma=joint.sigma, noise_ar_order=DETECTION_NOISE_AR_ORDER,
                            search_s=search, noise_deg=DETECTION_NOISE_DEG,
                            rate_prior_std_ppm=rate_std_ppm(detected.t_pano, coarse), robust=config.robust,
                            body_frames=joint.body_frames, offset_tracks=joint.offset_tracks,
                            offset_prior_m=offset_priors_m(obs.bearings.shape[1], joint.bearings.shape[1],
                                                           config.observer),
                            optics=previous.pano_optics)
        tm, search = res.time_map, config.observer.refit_search_s
    return res, detection_inputs(detected, det, bodies, poser)
