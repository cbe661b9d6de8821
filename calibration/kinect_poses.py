"""The Kinects' poses and the world frame of a session, before the 360 camera is placed.

The reference (first) Kinect's up comes from its accelerometer (the device must stand still), its
height from the floor plane fitted to a few of its depth frames (y = 0 on the floor); the world's
forward (+z) is the reference depth camera's optical axis projected on the floor and its origin the
floor point straight below that camera (see calibration/world_frame.py). Every other Kinect follows
from the skeletons it shares with the reference (its tilt from its own accelerometer where it has
one). Or the rig's poses are kept, and the inputs say so.

Poses ``T_world_kinect`` map a Kinect's depth-camera points (metres) into the world frame.
"""

from __future__ import annotations

import numpy as np

from omnimocap.calibration.config import KinectPosesConfig
from omnimocap.calibration.world_frame import (
    align_kinect_skeletons, points_from_depth, reference_world_pose, up_from_accelerometer,
)
from omnimocap.capture.bodies import read_bodies
from omnimocap.capture.kinect_mkv import KinectRecording
from omnimocap.capture.rig import Rig
from omnimocap.capture.session import MANIFEST, Session, kinect_name
from omnimocap.capture.skeleton_fusion import BodyTrack, resample_track
from omnimocap.errors import InputError, UserError

WORLD_CONVENTION = ("y up (reference Kinect's accelerometer), y = 0 on the floor (plane fitted to its depth frames), "
                    "+z = its depth camera's optical axis projected on the floor, origin on the floor below that camera")


def kinect_poses(session: Session, previous: Rig, serial: str, config: KinectPosesConfig | None = None) -> Rig:
    """A rig with the Kinects' poses (``T_world_kinect``, metres), residuals and inputs, estimated
    (``config.kinects`` "estimate", the default when the reference recording has IMU samples) or kept
    from ``previous`` ("rig"), and ``previous``'s other poses and time maps."""
    config = config or KinectPosesConfig()
    entry = session.kinects()[0]
    recording = KinectRecording(session.path(entry.recording)) if entry.recording else None
    imu = recording.imu() if recording is not None else None
    has_imu = imu is not None and len(imu) > 0
    mode = config.kinects
    if mode is None:
        mode = "estimate" if has_imu else "rig"
    if mode not in ("estimate", "rig"):
        raise ValueError(f"unknown Kinect pose mode {mode!r}; 'estimate' or 'rig'")
    kept_from = "simulated truth" if previous.is_truth else previous.method
    if mode == "rig":
        reason = "" if has_imu else " (the reference Kinect has no recording with IMU samples)"
        return Rig(dict(previous.T_world_sensor), dict(previous.time_maps), pano_optics=previous.pano_optics,
                   inputs={"kinect_poses_from": f"rig: {kept_from}{reason}"})
    if not has_imu:
        path = session.path(entry.recording) if entry.recording else session.root / MANIFEST
        raise InputError(f"the reference Kinect {serial} has no recording with IMU samples; gravity is unknown",
                         path=path, fix="record with the IMU on, or use --kinects rig")
    cal = recording.calibration
    if cal.R_depth_accel is None:
        raise InputError("the recording's calibration lists no accelerometer", path=recording.path,
                         fix="use the calibration.json the device wrote, or --kinects rig")
    T_world_ref, ref_info = reference_world_pose(imu.acc, cal.R_depth_accel, _floor_points(recording, cal.depth, config))
    poses = dict(previous.T_world_sensor)
    poses[kinect_name(serial)] = T_world_ref
    residuals = {serial: ref_info}
    others = session.kinects()[1:]
    if others:
        for k in (entry, *others):
            if not k.bodies:
                raise InputError(f"Kinect {k.serial} has no body tracking to place the Kinects from shared skeletons",
                                 path=session.root / MANIFEST,
                                 fix="run body tracking on its recording, or use --kinects rig")
        ref_rec = read_bodies(session.path(entry.bodies))
        t_ref = previous.time_map(kinect_name(serial)).to_session(ref_rec.timestamps)
        ref_bodies = [(b.positions, b.confidences) for b in ref_rec.bodies.values()]
    for other in others:
        rec = read_bodies(session.path(other.bodies))
        t = previous.time_map(other.name).to_session(rec.timestamps)
        bodies = [resample_track(BodyTrack(other.name, body_id, t, b.positions, b.confidences, np.zeros(3)), t_ref)
                  for body_id, b in rec.bodies.items()]
        try:
            poses[other.name], residuals[other.serial] = align_kinect_skeletons(ref_bodies, bodies, T_world_ref,
                                                                                _accelerometer_up(session, other))
        except UserError as exc:
            raise UserError(f"Kinect {other.serial}: {exc.problem}", path=session.path(other.bodies),
                            fix=exc.fix) from None
    return Rig(poses, dict(previous.time_maps), pano_optics=previous.pano_optics, residuals={"kinects": residuals}, inputs={
        "kinect_poses_from": "estimated: the reference from its IMU gravity and floor, the others from shared "
                             "skeletons (their tilt from their own IMU where they have one)",
        "world_frame": WORLD_CONVENTION, "accelerometer_from": entry.recording,
        "floor_frames": config.floor_frames, "skeletons_from": [k.bodies for k in (entry, *others)] if others else []})


def _accelerometer_up(session: Session, entry) -> np.ndarray | None:
    """Up (unit, depth frame) from a Kinect's accelerometer, or None without a recording with IMU
    samples and an accelerometer calibration, or when the device moved (its tilt then comes from the
    skeletons alone, and its residuals carry no ``tilt_correction_deg``)."""
    if not entry.recording:
        return None
    recording = KinectRecording(session.path(entry.recording))
    imu, R_depth_accel = recording.imu(), recording.calibration.R_depth_accel
    if len(imu) == 0 or R_depth_accel is None:
        return None
    try:
        return up_from_accelerometer(imu.acc, R_depth_accel)
    except UserError:
        return None


def _floor_points(recording: KinectRecording, depth_camera, config: KinectPosesConfig) -> np.ndarray:
    """Depth points (N,3, metres, depth frame) of ``config.floor_frames`` frames spread over the
    recording (the people cover a different part of the floor in each)."""
    frames, step, n = [], 1, 0
    for capture in recording.captures(decode_color=False):
        if capture.depth is None:
            continue
        if n % step == 0:
            frames.append(capture.depth)
            # thin to every other kept frame so that a long recording never holds more than a few
            if len(frames) > 2 * config.floor_frames:
                frames, step = frames[::2], step * 2
        n += 1
    if not frames:
        raise InputError("the reference Kinect's recording has no depth frames to find the floor in",
                         path=recording.path, fix="record with depth on, or use --kinects rig")
    pick = np.unique(np.linspace(0, len(frames) - 1, config.floor_frames).round().astype(int))
    return np.concatenate([points_from_depth(frames[i], depth_camera, stride=config.floor_stride_px) for i in pick])
