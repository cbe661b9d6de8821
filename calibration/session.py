"""``calibrate`` on a session: the world frame and the Kinects' poses, then the 360 camera's pose and
clock, written into the session's ``rig.json`` with the configuration used.

The Kinects first (calibration/kinect_poses.py: estimated from the reference Kinect's IMU and floor
and the shared skeletons, or kept from the rig), then the 360 camera relative to the reference
(first) Kinect: from a ChArUco board (calibration/board_session.py), or markerless from people
moving in view (calibration/markerless.py), the panorama's side seen by the simulated observer or
by a hand detector, with a pose model's body keypoints after the search (calibration/pano_observer.py,
calibration/pano_bodies.py). On a raw dual-fisheye 360 stream the observer's views are cut from
one lens each and its bearings are solved from that lens's centre (calibration/pano_observer.py);
the rig then holds the lens model's baseline in its ``pano_optics``, which ``sync`` reads; the board
method reads stitched frames only and refuses a raw stream in one line. ``refine`` starts the
markerless solve from the rig's current 360 pose and clock instead of searching from nothing.

Poses ``T_a_b`` map frame-b points into frame a (metres); times in seconds.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from omnimocap.calibration.board_session import calibrate_board
from omnimocap.calibration.coarse_sync import coarse_time_map, rate_std_ppm, with_rate
from omnimocap.calibration.config import CalibrateConfig
from omnimocap.calibration.kinect_poses import kinect_poses
from omnimocap.calibration.markerless import MarkerlessResult, calibrate_markerless, height_from_tracks
from omnimocap.calibration.observations import TRACKS_PER_PERSON, kinect_wrist_tracks, pano_observations
from omnimocap.calibration.pano_hands import (
    DETECTION_MAX_ROTATION_STD_DEG, DETECTION_MAX_TRANSLATION_STD_MM, DETECTION_NOISE_AR_ORDER, DETECTION_NOISE_DEG,
    ViewDetector, detect_hands,
)
from omnimocap.calibration.pano_bodies import JointObservations, PoseDetector, detect_bodies, with_bodies
from omnimocap.calibration.pano_observer import (
    detection_inputs, observer_inputs, observer_kind, open_pose_detector, open_view_detector, raw_camera,
    raw_pano_optics,
)
from omnimocap.calibration.session_rig import load_rig, reference_serial, write_rig
from omnimocap.calibration.sync import offset_priors_m
from omnimocap.capture.rig import Rig, TimeMap
from omnimocap.capture.session import Session, kinect_name
from omnimocap.errors import InputError, UserError
from omnimocap.geometry.pano_optics import PanoOptics
from omnimocap.geometry.transforms import invert_pose


def calibrate_session(session_dir, config: CalibrateConfig | None = None, *, view_detector: ViewDetector | None = None,
                      pose_detector: PoseDetector | None = None, progress: bool = False) -> dict:
    """Solve the Kinects' poses and the world frame, then the 360 camera's pose and time map, as
    ``config`` (default :class:`CalibrateConfig`) says, and write the session's rig.json with the
    configuration under ``configs.calibrate``; returns the 360 camera's residuals. ``view_detector``
    replaces the hand detector that ``config.observer`` would open (detector observers only);
    ``pose_detector`` is the body keypoint model of the ``detector`` observer (None: hands only; the
    simulated detector brings its own)."""
    config = config or CalibrateConfig()
    if config.method not in ("markerless", "board"):
        raise ValueError(f"unknown calibration method {config.method!r}; 'markerless' or 'board'")
    session = Session.open(session_dir)
    if config.method == "board":
        session.require_stitched_pano("calibrate --method board")
    previous = load_rig(session)
    serial = reference_serial(session, previous)
    markerless = config.method == "markerless"
    kind = observer_kind(session, config.observer.observer) if markerless else None
    start = _previous_calibration(session, previous, serial) if config.refine and markerless else None
    kinect_rig = kinect_poses(session, previous, serial, config.kinect_poses)
    if markerless:
        rig, result = _calibrate_markerless(session, previous, kinect_rig, serial, kind, start, config,
                                            view_detector, pose_detector, progress)
    else:
        rig, result = calibrate_board(session, previous, kinect_rig, config.board)
    rig.configs = {"calibrate": config.to_json()}
    write_rig(session, rig, previous)
    return result


def _calibrate_markerless(session: Session, previous: Rig, kinect_rig: Rig, serial: str, kind: str,
                          start: tuple[np.ndarray, TimeMap] | None, config: CalibrateConfig,
                          view_detector: ViewDetector | None, pose_detector: PoseDetector | None,
                          progress: bool) -> tuple[Rig, dict]:
    """The rig with the 360 camera placed markerless on ``kinect_rig``'s reference Kinect, and the
    verb's summary."""
    camera = raw_camera(session)
    optics = kinect_rig.pano_optics if camera is None else raw_pano_optics(camera, kinect_rig.pano_optics)
    if kind == "simulated":
        res, n_frames, inputs = _from_simulated_observer(session, kinect_rig, serial, start, config, optics)
    else:
        det = view_detector or open_view_detector(session, kind, config.observer.detector, config.observer.device)
        poser = open_pose_detector(session, kind, pose_detector, config.observer.pose_model,
                                   config.observer.device) if config.observer.body_keypoints else None
        res, n_frames, inputs = _from_detected_hands(session, kinect_rig, serial, start, config, det, poser, optics,
                                                     progress)
    rig = Rig(dict(kinect_rig.T_world_sensor), dict(previous.time_maps), method="markerless", is_truth=False,
              pano_optics=previous.pano_optics if camera is None else optics)
    rig.T_world_sensor["pano"] = kinect_rig.pose(kinect_name(serial)) @ res.T_kinect_pano
    rig.time_maps["pano"] = res.time_map
    rig.residuals = {**kinect_rig.residuals, "pano": res.to_json()}
    rig.inputs = {"reference_kinect": serial, "pano_frames": n_frames, **kinect_rig.inputs, **inputs,
                  "started_from": f"rig: {previous.method}" if start is not None else "nothing"}
    return rig, {"method": "markerless", **rig.residuals["pano"]}


def _from_simulated_observer(session: Session, kinect_rig: Rig, serial: str, start: tuple[np.ndarray, TimeMap] | None,
                             config: CalibrateConfig, optics: PanoOptics) -> tuple[MarkerlessResult, int, dict]:
    """Markerless calibration on the simulated observer's bearings seen through ``optics``: the
    result, the panorama frames used and the rig.json inputs."""
    obs = pano_observations(session, noise_deg=config.observer.noise_deg)
    coarse = coarse_time_map(obs.t_pano, obs.t_host)
    tracks = kinect_wrist_tracks(session, serial, kinect_rig, obs.bearings.shape[1] // TRACKS_PER_PERSON,
                                 align_definitions=config.observer.align_kinect_joints)
    init_T, init_time, search = None, coarse, config.markerless.search_s
    if start is not None:
        init_T = start[0]
        init_time = with_rate(start[1], coarse, float(np.median(obs.t_pano)))
        search = config.markerless.refine_search_s
    res = calibrate_markerless(obs.t_pano, obs.bearings, tracks.t_session, tracks.points, traj_sigma=tracks.sigma,
                               init_time=init_time, init_T_kinect_pano=init_T, search_s=search,
                               rate_prior_std_ppm=rate_std_ppm(obs.t_pano, coarse), limits=config.markerless,
                               robust=config.robust, optics=optics)
    return res, int(len(obs.t_pano)), observer_inputs(obs)


def _from_detected_hands(session: Session, kinect_rig: Rig, serial: str, start: tuple[np.ndarray, TimeMap] | None,
                         config: CalibrateConfig, det: ViewDetector, poser: PoseDetector | None, optics: PanoOptics,
                         progress: bool) -> tuple[MarkerlessResult, int, dict]:
    """Markerless calibration on hand detections (and body keypoints of ``poser``, None: hands
    only) seen through ``optics``: searched from nothing on the hands (or started from ``start``), then association and
    solve alternating ``config.observer.association_rounds`` times. Returns the result, the
    panorama frames of the last solve and the rig.json inputs."""
    tracks = kinect_wrist_tracks(session, serial, kinect_rig,
                                 align_definitions=config.observer.align_kinect_joints)
    detected = detect_hands(session, tracks, det,
                            stride=config.observer.stride, search_frames=config.markerless.search_frames,
                            progress=progress, T_kinect_pano=None if start is None else start[0],
                            init_time=None if start is None else start[1])
    coarse = coarse_time_map(detected.t_pano, detected.t_host)
    prior = rate_std_ppm(detected.t_pano, coarse)
    T, tm = detected.T_kinect_pano, detected.time_map
    bodies = None if poser is None else detect_bodies(session, tracks, poser, detected.t_pano, T, tm,
                                                      config.observer.stride, progress)
    search = config.markerless.detected_search_s if start is None else config.markerless.refine_search_s
    up = kinect_rig.pose(kinect_name(serial))[:3, :3].T @ np.array([0.0, 1.0, 0.0])  # the world's up, Kinect frame
    for _ in range(config.observer.association_rounds):
        obs = detected.observations(T, tm)
        cand = detected.candidates
        joint = with_bodies(obs.bearings, cand.points, cand.sigma, bodies, T, tm, config.observer.body_gate_deg,
                            config.observer.body_segment_offsets, config.observer.hand_offsets,
                            face=config.markerless.face_keypoints)
        hands_in = joint
        if bodies is not None and config.markerless.pose_from_body:
            joint = _body_keypoints_alone(joint, obs.bearings.shape[1], config.markerless.min_frames)
        res = calibrate_markerless(obs.t_pano, joint.bearings, cand.t_session, joint.points, traj_sigma=joint.sigma,
                                   init_time=with_rate(tm, coarse, float(np.median(obs.t_pano))),
                                   init_T_kinect_pano=T, search_s=search, noise_deg=DETECTION_NOISE_DEG,
                                   rate_prior_std_ppm=prior,
                                   max_rotation_std_deg=DETECTION_MAX_ROTATION_STD_DEG,
                                   max_translation_std_mm=DETECTION_MAX_TRANSLATION_STD_MM,
                                   noise_ar_order=DETECTION_NOISE_AR_ORDER, limits=config.markerless,
                                   robust=config.robust, optics=optics, body_frames=joint.body_frames,
                                   offset_tracks=joint.offset_tracks,
                                   offset_prior_m=offset_priors_m(obs.bearings.shape[1], joint.bearings.shape[1],
                                                                  config.observer))
        if joint is not hands_in and config.markerless.height_from_hands:
            res = height_from_tracks(res, obs.t_pano, obs.bearings, cand.t_session, cand.points, up,
                                     traj_sigma=cand.sigma, height_std_mm=_body_height_std_mm(joint, obs.bearings.shape[1],
                                                                                              config),
                                     track_offset_mm=config.observer.hand_offset_prior_mm,
                                     noise_deg=DETECTION_NOISE_DEG,
                                     min_observations=config.markerless.min_observations, robust=config.robust,
                                     optics=optics)
        T, tm, search = res.T_kinect_pano, res.time_map, config.observer.refit_search_s
    return res, int(len(obs.t_pano)), detection_inputs(detected, det, bodies, poser)


def _body_keypoints_alone(joint: JointObservations, hand_tracks: int, min_frames: int) -> JointObservations:
    """``joint`` with the bearings of its first ``hand_tracks`` tracks (the hands) left out, where the
    body keypoints are seen in at least ``min_frames`` panorama frames (else ``joint`` as it is)."""
    body = np.any(np.all(np.isfinite(joint.bearings[:, hand_tracks:]), axis=-1), axis=1)
    if body.sum() < min_frames:
        return joint
    bearings = joint.bearings.copy()
    bearings[:, :hand_tracks] = np.nan
    return dataclasses.replace(joint, bearings=bearings)


def _body_height_std_mm(joint: JointObservations, hand_tracks: int, config: CalibrateConfig,
                        min_track_observations: int = 30) -> float:
    """1-sigma (mm) of the 360 camera's height as the body keypoints alone leave it: their offsets' prior
    (``config.observer.body_offset_prior_mm``) over the square root of the number of keypoint tracks seen in
    at least ``min_track_observations`` panorama frames (see ``markerless.height_from_tracks``)."""
    seen = np.sum(np.all(np.isfinite(joint.bearings[:, hand_tracks:]), axis=-1), axis=0)
    return config.observer.body_offset_prior_mm / np.sqrt(max(int(np.sum(seen >= min_track_observations)), 1))


def _previous_calibration(session: Session, previous: Rig, serial: str) -> tuple[np.ndarray, TimeMap]:
    """The rig's 360 pose relative to the reference Kinect (``T_kinect_pano``) and its 360 time
    map, to refine from."""
    if previous.is_truth:
        raise UserError("--refine needs a previous calibration, and rig.json holds the simulated truth",
                        path=session.rig_path, fix="calibrate without --refine first")
    if "pano" not in previous.T_world_sensor or "pano" not in previous.time_maps:
        raise InputError("--refine needs the 360 camera's pose and time map in rig.json", path=session.rig_path,
                         fix="calibrate without --refine first")
    return invert_pose(previous.pose(kinect_name(serial))) @ previous.pose("pano"), previous.time_map("pano")

