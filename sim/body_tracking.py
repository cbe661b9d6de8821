"""Body tracking of the simulated people as one Kinect's k4abt reports it.

The 32 k4abt joints are modelled from the true joints (capture/truth.py
``kinect_joints_from_truth``: SMPL-X blends, the MANO hands' middle-finger MCP, middle fingertip and
thumb tip, the head's eyes, nose and ears), with the SMPL-X segment rotations as their orientations,
expressed in the Kinect's depth frame. Confidence: NONE outside the depth camera's view
(:data:`KINECT_DEPTH_CAMERA`), LOW for joints on the far side of the body, beyond 3.5 m or hidden
behind another person (sim/k4abt.py ``kinect_geometry``), MEDIUM otherwise. Noise: per axis
``noise_mm`` split evenly between white noise and a slow first-order autoregressive part, 2.5 times
larger for LOW joints. The realism level then decides the rest (sim/k4abt.py): ``ideal`` drops about
1% of the bodies and reports person p as body id p; ``field`` injects k4abt's errors.
Metres, seconds; world frame y up.
"""

from __future__ import annotations

import numpy as np

from omnimocap.capture.bodies import BodyTrack
from omnimocap.capture.truth import kinect_joints_from_truth
from omnimocap.data.skeletons import (
    KINECT_CONFIDENCE_LOW, KINECT_CONFIDENCE_MEDIUM, KINECT_CONFIDENCE_NONE, KINECT_FROM_SMPLX,
    KINECT_HAND_JOINT_TO_HAND21, KINECT_INDEX, KINECT_JOINTS, SIDES, SMPLX_INDEX,
)
from omnimocap.geometry.cameras import PinholeCamera
from omnimocap.geometry.quaternions import matrix_to_quat_wxyz
from omnimocap.geometry.transforms import invert_pose, transform_points
from omnimocap.sim.k4abt import apply_k4abt_errors, geometry_record, ideal_tracks, kinect_geometry
from omnimocap.sim.motion import PeopleSample

# Nominal NFOV unbinned depth camera (640x576, about 75 x 65 deg) for the field-of-view test.
KINECT_DEPTH_CAMERA = PinholeCamera(504.0, 504.0, 319.5, 287.5, 640, 576)


def kinect_joints_world(sample: PeopleSample) -> tuple[np.ndarray, np.ndarray]:
    """The 32 k4abt joints modelled from the truth: positions (P, N, 32, 3) world, and the world
    rotations (P, N, 32, 3, 3) reported as their orientations (the SMPL-X segment of each body joint,
    the hand's for the hand joints, the head's for the face)."""
    P, N = sample.joints.shape[:2]
    R_head = sample.global_R[:, :, SMPLX_INDEX["head"]]
    pos = kinect_joints_from_truth(sample.joints, sample.hand_joints, R_head)
    rot = np.zeros((P, N, len(KINECT_JOINTS), 3, 3))
    rows = [KINECT_INDEX[name] for name in KINECT_FROM_SMPLX]
    rot[:, :, rows] = sample.global_R[:, :, [SMPLX_INDEX[blend[0][0]] for blend in KINECT_FROM_SMPLX.values()]]
    for s, side in enumerate(SIDES):
        for name in (joint.upper() for joint in KINECT_HAND_JOINT_TO_HAND21 if joint != "wrist"):
            rot[:, :, KINECT_INDEX[f"{name}_{side.upper()}"]] = sample.hand_global_R[:, :, s]
    for name in ("NOSE", "EYE_LEFT", "EAR_LEFT", "EYE_RIGHT", "EAR_RIGHT"):
        rot[:, :, KINECT_INDEX[name]] = R_head
    return pos, rot


def kinect_tracks(sample: PeopleSample, T_world_kinect: np.ndarray, noise_mm: float,
                   rng: np.random.Generator, realism: str = "field", shared_bias: np.ndarray | None = None,
                   error_rng: np.random.Generator | None = None) -> tuple[dict[int, BodyTrack], dict]:
    """k4abt-like tracks of every person seen by one Kinect (positions in its depth frame) and the
    Kinect's record for ``truth/realism.json`` (geometry; with ``realism`` "field" also the injected
    k4abt errors of sim/k4abt.py, drawn from ``error_rng`` with the persons' ``shared_bias``)."""
    pos_w, rot_w = kinect_joints_world(sample)
    geometry = kinect_geometry(pos_w, sample.global_R[:, :, SMPLX_INDEX["pelvis"]], T_world_kinect[:3, 3])
    T_kinect_world = invert_pose(T_world_kinect)
    pos = transform_points(T_kinect_world, pos_w)
    rot = np.einsum("ij,pnkjl->pnkil", T_kinect_world[:3, :3], rot_w)
    P, N, J = pos.shape[:3]
    pixels = KINECT_DEPTH_CAMERA.project(pos)
    in_view = ((pos[..., 2] > 0.5) & (pixels[..., 0] >= 0) & (pixels[..., 0] < KINECT_DEPTH_CAMERA.width)
               & (pixels[..., 1] >= 0) & (pixels[..., 1] < KINECT_DEPTH_CAMERA.height))
    # Joints on the far side of the body (seen from the Kinect), far away or behind another person
    # are predicted, not seen.
    pelvis = pos[:, :, KINECT_INDEX["PELVIS"]][:, :, None]
    towards = -pelvis / np.linalg.norm(pelvis, axis=-1, keepdims=True)
    hidden = (np.sum((pos - pelvis) * towards, axis=-1) < -0.06) | (pos[..., 2] > 3.5) | geometry.hidden
    conf = np.where(hidden, KINECT_CONFIDENCE_LOW, KINECT_CONFIDENCE_MEDIUM)
    conf = np.where(in_view, conf, KINECT_CONFIDENCE_NONE)
    field = realism == "field"
    if noise_mm > 0:
        rho = 0.9  # frame-to-frame correlation of the slow half of the noise
        white = rng.normal(size=(P, N, J, 3))
        slow = np.empty_like(white)
        slow[:, 0] = rng.normal(size=(P, J, 3))
        drive = rng.normal(size=(P, N, J, 3))
        for n in range(1, N):
            slow[:, n] = rho * slow[:, n - 1] + np.sqrt(1 - rho**2) * drive[:, n]
        gain = np.where(conf == KINECT_CONFIDENCE_MEDIUM, 1.0, 2.5)[..., None]
        pos = pos + noise_mm / 1000.0 * gain * np.sqrt(0.5) * (white + slow)
        dropped = rng.random((P, N)) < 0.01
        if not field:  # the field level has its own drop-outs (sim/k4abt.py)
            pos[dropped] = np.nan
    quats = matrix_to_quat_wxyz(rot)
    quats[~np.isfinite(pos).all(axis=-1)] = np.nan
    conf = np.where(np.isfinite(pos).all(axis=-1), conf, KINECT_CONFIDENCE_NONE)
    record = {"people": P, "frames": N, "geometry": geometry_record(geometry)}
    if not field:
        return ideal_tracks(pos, quats, conf), record
    tracks, errors = apply_k4abt_errors(pos, quats, conf, rot, geometry, shared_bias, error_rng)
    record.update(errors)
    return tracks, record

