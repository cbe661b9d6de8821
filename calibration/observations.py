"""What the calibration and sync solvers observe in a session: the Kinects' trajectories of the
wrists and the head, and their bearings in the panorama, as arrays on their own clocks.

Tracks are indexed the same way on both sides: track ``3 * p + s`` is person ``p``'s wrist on side
``s`` (0 left, 1 right) and track ``3 * p + 2`` their head, person ``p`` being k4abt body id ``p``.
The head spreads the observations over more of the space than the hands alone, which is what
constrains the pose.

The panorama side has two sources:

* the **simulated observer** (``simulated_observer=True`` in what it returns): for simulated sessions
  only. It reads ``truth/motion.npz`` and projects the true wrist of every visible hand (and the
  head, taken as always visible) through the
  TRUE panorama pose (``truth/rig.json``) at the true frame times, adds isotropic angular noise
  (``noise_deg``, default 0.2 deg per axis), and stamps the frames with the camera-clock times of
  ``pano_frames.csv``. It is an instrument for measuring the solvers, not a detector: the
  simulator's body ids equal its person indices, so the association is given too.
* real hand detections over the panorama (WiLoR's detector), which need an association of the
  detected hands with Kinect bodies; sessions that would need it raise a UserError saying so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omnimocap.calibration.rig import Rig
from omnimocap.calibration.transforms import invert_pose, transform_points
from omnimocap.capture.bodies import read_bodies
from omnimocap.capture.pano import read_pano_timestamps
from omnimocap.capture.session import Session
from omnimocap.data.skeletons import KINECT_INDEX, KINECT_WRIST, SIDES, SMPLX_INDEX
from omnimocap.errors import InputError, UserError

MOTION_FILE = "motion.npz"
# Kinect joints tracked per person, in track order (see the module docstring).
TRACKED_KINECT_JOINTS = (KINECT_WRIST["left"], KINECT_WRIST["right"], KINECT_INDEX["HEAD"])
TRACKS_PER_PERSON = len(TRACKED_KINECT_JOINTS)


@dataclass
class PanoObservations:
    """Bearings (F,K,3) of K wrist tracks in the panorama frame (NaN where unseen) at camera-clock
    frame times ``t_pano`` (F,) with host arrival times ``t_host`` (F,) on the session clock."""

    t_pano: np.ndarray
    t_host: np.ndarray
    bearings: np.ndarray
    simulated_observer: bool
    noise_deg: float | None = None


@dataclass
class KinectTracks:
    """Wrist trajectories (N,K,3) of one Kinect in its depth frame (metres, NaN where untracked) at
    session-clock times ``t_session`` (N,) (device times mapped by the rig's time map)."""

    serial: str
    t_session: np.ndarray
    points: np.ndarray


def kinect_wrist_tracks(session: Session, serial: str, rig: Rig, num_people: int | None = None) -> KinectTracks:
    """Read ``bodies_<serial>.json`` and map its times onto the session clock with ``rig``."""
    entry = next((d for d in session.kinects() if d.serial == serial), None)
    if entry is None or not entry.bodies:
        raise InputError(f"the session has no body tracking for Kinect {serial}", path=session.root,
                         fix="run `omnimocap track` on the session first")
    rec = read_bodies(session.path(entry.bodies))
    people = num_people if num_people is not None else (max(rec.bodies) + 1 if rec.bodies else 0)
    pts = np.full((len(rec), TRACKS_PER_PERSON * people, 3), np.nan)
    for body_id, track in rec.bodies.items():
        if 0 <= body_id < people:
            for k, joint in enumerate(TRACKED_KINECT_JOINTS):
                pts[:, TRACKS_PER_PERSON * body_id + k] = track.positions[:, joint]
    t = rig.time_map(f"kinect_{serial}").to_session(rec.timestamps)
    return KinectTracks(serial, t, pts)


def simulated_pano_observations(session: Session, noise_deg: float = 0.2, seed: int = 0) -> PanoObservations:
    """The simulated observer (see the module docstring). Needs ``truth/``."""
    truth_dir = session.truth_dir
    if not (truth_dir / MOTION_FILE).is_file():
        raise InputError("not a simulated session (truth/motion.npz missing); the simulated observer needs it",
                         path=truth_dir)
    truth_rig = Rig.load(truth_dir / "rig.json")
    with np.load(truth_dir / MOTION_FILE) as m:
        t_truth = m["t_session"]
        wrists = m["hand_joints"][:, :, :, 0]  # (P,N,2,3) world
        heads = m["smplx_joints"][:, :, SMPLX_INDEX["head"]]  # (P,N,3) world
        visible = m["hand_visible"]  # (P,N,2)
        t_frames = m["pano_frame_t_session"]
    stamps = read_pano_timestamps(session.path(session.pano().timestamps or "pano_frames.csv"))
    F = min(len(t_frames), len(stamps.t_pano))
    t_frames = t_frames[:F]
    P = wrists.shape[0]
    K = TRACKS_PER_PERSON
    pts = np.empty((F, K * P, 3))
    vis = np.ones((F, K * P), dtype=bool)
    nearest = np.clip(np.searchsorted(t_truth, t_frames), 1, len(t_truth) - 1)
    nearest -= (t_frames - t_truth[nearest - 1]) < (t_truth[nearest] - t_frames)
    for p in range(P):
        for s in range(2):
            for axis in range(3):
                pts[:, K * p + s, axis] = np.interp(t_frames, t_truth, wrists[p, :, s, axis])
            vis[:, K * p + s] = visible[p, nearest, s]
        for axis in range(3):
            pts[:, K * p + 2, axis] = np.interp(t_frames, t_truth, heads[p, :, axis])
    d = transform_points(invert_pose(truth_rig.pose("pano")), pts)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    rng = np.random.default_rng(seed)
    d = d + rng.normal(0.0, np.radians(noise_deg), d.shape)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    d[~vis] = np.nan
    return PanoObservations(stamps.t_pano[:F], stamps.t_host[:F], d, True, noise_deg)


def pano_observations(session: Session, noise_deg: float = 0.2, seed: int = 0) -> PanoObservations:
    """The panorama's wrist bearings: the simulated observer for simulated sessions; real sessions
    need hand detections associated with Kinect bodies, which this version does not provide."""
    if session.manifest.simulated:
        return simulated_pano_observations(session, noise_deg, seed)
    raise UserError("wrist bearings from real panorama frames (WiLoR hand detections associated with Kinect "
                    "bodies) are not available in this version", path=session.root,
                    fix="calibrate with --method board, or give the rig by other means")
