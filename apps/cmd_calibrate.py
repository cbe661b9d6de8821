"""``omnimocap calibrate SESSION_DIR [--method markerless|board]`` and ``omnimocap sync SESSION_DIR``.

Both write the session's ``rig.json`` atomically: the method, the inputs used and the residuals.
A simulated session's ground truth lives in ``truth/rig.json`` and is never written; the session's
own ``rig.json`` (which starts as a copy of the truth) is replaced by the estimate, and the command
says so.
"""

from __future__ import annotations

import argparse
import json
import sys

from omnimocap.calibration.markerless import calibrate_markerless
from omnimocap.calibration.observations import (
    TRACKS_PER_PERSON, KinectTracks, kinect_wrist_tracks, pano_observations,
)
from omnimocap.calibration.rig import Rig
from omnimocap.calibration.timesync import coarse_time_map, fine_time_map, rate_std_ppm
from omnimocap.calibration.transforms import transform_points
from omnimocap.capture.session import Session
from omnimocap.errors import InputError, UserError


def register(subparsers) -> None:
    p = subparsers.add_parser("calibrate", help="solve the 360 camera's pose (and time map) in the rig",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("session", metavar="SESSION_DIR")
    p.add_argument("--method", choices=("markerless", "board"), default="markerless")
    p.add_argument("--noise-deg", type=float, default=0.2,
                   help="angular noise of the simulated observer (simulated sessions only; default 0.2)")
    p.set_defaults(func=run_calibrate)
    s = subparsers.add_parser("sync", help="estimate the 360 camera's time map (offset and rate) from motion")
    s.add_argument("session", metavar="SESSION_DIR")
    s.add_argument("--noise-deg", type=float, default=0.2,
                   help="angular noise of the simulated observer (simulated sessions only; default 0.2)")
    s.set_defaults(func=run_sync)


def _load_rig(session: Session) -> Rig:
    if not session.rig_path.is_file():
        raise InputError("the session has no rig.json with the Kinects' poses and time maps", path=session.rig_path,
                         fix="create it from the reference Kinect's world frame first")
    return Rig.load(session.rig_path)


def _reference(session: Session, rig: Rig) -> str:
    kinects = session.kinects()
    if not kinects:
        raise InputError("the session has no Kinect", path=session.root / "session.json")
    serial = kinects[0].serial
    rig.pose(f"kinect_{serial}")
    return serial


def _write(session: Session, rig: Rig, previous: Rig) -> None:
    rig.save(session.rig_path)
    if previous.is_truth:
        print(f"{session.rig_path}: replaced the copy of the simulated truth (the truth stays in truth/rig.json)",
              file=sys.stderr)


def _observer_inputs(obs) -> dict:
    if obs.simulated_observer:
        return {"pano_observer": "simulated (true wrists through the true pano pose, "
                                 f"{obs.noise_deg} deg noise)", "simulated_observer": True}
    return {"pano_observer": "hand detections", "simulated_observer": False}


def run_calibrate(args) -> int:
    print(json.dumps(calibrate_session(args.session, args.method, args.noise_deg)))
    return 0


def calibrate_session(session_dir, method: str = "markerless", noise_deg: float = 0.2) -> dict:
    """Solve the 360 camera's pose and time map and write the session's rig.json; returns the
    residuals."""
    session = Session.open(session_dir)
    if method == "board":
        raise UserError("board calibration from session recordings is not wired to the CLI in this version",
                        path=session.root, fix="use --method markerless, or calibrate.board from Python")
    previous = _load_rig(session)
    serial = _reference(session, previous)
    obs = pano_observations(session, noise_deg=noise_deg)
    coarse = coarse_time_map(obs.t_pano, obs.t_host)
    tracks: KinectTracks = kinect_wrist_tracks(session, serial, previous, obs.bearings.shape[1] // TRACKS_PER_PERSON)
    res = calibrate_markerless(obs.t_pano, obs.bearings, tracks.t_session, tracks.points, init_time=coarse,
                               rate_prior_std_ppm=rate_std_ppm(obs.t_pano, coarse))
    rig = Rig(dict(previous.T_world_sensor), dict(previous.time_maps), method="markerless", is_truth=False)
    rig.T_world_sensor["pano"] = previous.pose(f"kinect_{serial}") @ res.T_kinect_pano
    rig.time_maps["pano"] = res.time_map
    rig.residuals = {"pano": res.to_json()}
    rig.inputs = {"reference_kinect": serial, "pano_frames": int(len(obs.t_pano)),
                  "kinect_poses_from": "simulated truth" if previous.is_truth else previous.method,
                  **_observer_inputs(obs)}
    _write(session, rig, previous)
    return {"method": "markerless", **rig.residuals["pano"]}


def run_sync(args) -> int:
    print(json.dumps(sync_session(args.session, args.noise_deg)))
    return 0


def sync_session(session_dir, noise_deg: float = 0.2) -> dict:
    """Estimate the 360 camera's time map from motion with the rig's current pose; writes rig.json
    and returns the time map and residuals."""
    session = Session.open(session_dir)
    previous = _load_rig(session)
    serial = _reference(session, previous)
    T_world_pano = previous.pose("pano")
    obs = pano_observations(session, noise_deg=noise_deg)
    coarse = coarse_time_map(obs.t_pano, obs.t_host)
    tracks = kinect_wrist_tracks(session, serial, previous, obs.bearings.shape[1] // TRACKS_PER_PERSON)
    traj = transform_points(previous.pose(f"kinect_{serial}"), tracks.points)
    res = fine_time_map(obs.t_pano, obs.bearings, tracks.t_session, traj, T_world_pano, coarse,
                        rate_prior_std_ppm=rate_std_ppm(obs.t_pano, coarse))
    rig = Rig(dict(previous.T_world_sensor), dict(previous.time_maps),
              method=previous.method if not previous.is_truth else "sync", is_truth=False,
              residuals={**previous.residuals, "pano_sync": res.to_json()},
              inputs={**previous.inputs, "sync_reference_kinect": serial, **_observer_inputs(obs)})
    rig.time_maps["pano"] = res.time_map
    _write(session, rig, previous)
    return {"a": res.time_map.a, "b": res.time_map.b, **res.to_json()}
