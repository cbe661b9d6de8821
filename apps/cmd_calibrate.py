"""``omnimocap calibrate SESSION_DIR [--method markerless|board] [--kinects estimate|rig]`` and
``omnimocap sync SESSION_DIR [--flash]``.

Both write the session's ``rig.json`` atomically: the method, the inputs used and the residuals.

``--kinects estimate`` (the default when the reference (first) Kinect's recording has IMU samples)
first solves every Kinect's pose and the world frame: the reference Kinect's up from its
accelerometer (the device must stand still), its height from the floor plane fitted to a few of its
depth frames (y = 0 on the floor); the world's forward (+z) is the reference depth camera's optical
axis projected on the floor and its origin the floor point straight below that camera (see
calibration/world_frame.py). Every other Kinect follows from the skeletons it shares with the
reference. ``--kinects rig`` (the default without IMU samples) keeps the rig's Kinect poses and says
so in ``inputs``. The 360 camera is then solved relative to the reference Kinect.

``--method board`` reads the reference (first) Kinect's colour frames from its recording, finds the
runs of frames where a ChArUco board (``BoardSpec()``: 7 x 5 squares of 80 mm, 60 mm DICT_5X5_100
markers) holds still, detects the board in the 360 frame nearest the middle of each run (matched
through the rig's time maps), solves the board poses and the 360 camera jointly, and composes the
result with the Kinect's factory colour-to-depth extrinsics into the 360 camera's world pose.
When the Kinects' poses are estimated, every other Kinect whose colour camera saw the board in at least
BOARD_MIN_KINECT_POSES of those still runs is placed from it (its colour frame nearest each run's middle,
solved jointly with the reference's and composed with both devices' colour-to-depth extrinsics); the
poses used go to ``inputs.kinect_poses_from_board`` and the residuals, with the skeleton-based estimate
it replaced, to ``residuals.kinects``. A Kinect that never saw the board keeps its skeleton-based pose.
The panorama's side of ``--method markerless`` and of ``sync`` (``--observer``): ``simulated`` (the
simulated observer's joint bearings; simulated sessions only, the default there), ``detector``
(WiLoR's hand detector over the 360 frames: search views from nothing, then views around the
Kinect hands; the default for recorded sessions, needs ``detector.pt``), or ``simulated-detector``
(simulated detector boxes in those same views; simulated sessions only). See
calibration/pano_hands.py.
``sync --flash`` times the 360 camera by flashes instead of motion: a light switched on (a flash, a
lamp) that both the 360 camera and the reference Kinect's colour camera see. Every frame's mean
brightness is read, the rising steps are located to a fraction of a frame in each stream
(``flash_events`` of calibration/timesync.py), the Kinect's on the session clock through the rig's
time map of that Kinect, and paired under the host-arrival map of ``pano_frames.csv``: one flash fixes
the offset (the rate stays that of the host arrival times), two or more at least a second apart fit
rate and offset.
A simulated session's ground truth lives in ``truth/rig.json`` and is never written; the session's
own ``rig.json`` (which starts as a copy of the truth) is replaced by the estimate, and the command
says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from omnimocap.capture.session import Session
from omnimocap.errors import InputError, ModelFilesMissing, UserError


def register(subparsers) -> None:
    p = subparsers.add_parser("calibrate", help="solve the 360 camera's pose (and time map) in the rig",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("session", metavar="SESSION_DIR")
    p.add_argument("--method", choices=("markerless", "board"), default="markerless")
    p.add_argument("--kinects", choices=("estimate", "rig"), default=None,
                   help="estimate the Kinects' poses and the world frame (default when the reference Kinect "
                        "recorded its IMU) or keep the rig's (default otherwise)")
    _observer_arguments(p)
    p.add_argument("--search-frames", type=int, default=150,
                   help="360 frames searched whole for hands when calibrating from nothing (default 150)")
    p.add_argument("--refine", action="store_true",
                   help="markerless: start from the rig's current 360 pose and clock (a previous calibration) "
                        "instead of searching from nothing")
    p.set_defaults(func=run_calibrate)
    s = subparsers.add_parser("sync", help="estimate the 360 camera's time map (offset and rate) from motion or "
                                           "flashes",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("session", metavar="SESSION_DIR")
    s.add_argument("--flash", action="store_true",
                   help="from flashes (a light switched on) seen by the 360 camera and the reference Kinect's "
                        "colour camera instead of from motion")
    _observer_arguments(s)
    s.set_defaults(func=run_sync)


OBSERVERS = ("auto", "simulated", "detector", "simulated-detector")


def _observer_arguments(p) -> None:
    p.add_argument("--observer", choices=OBSERVERS, default="auto",
                   help="what sees the people in the panorama: the simulated observer (default for simulated sessions), "
                        "WiLoR's hand detector (default otherwise) or the simulated detector")
    p.add_argument("--noise-deg", type=float, default=0.2,
                   help="angular noise of the simulated observer (simulated sessions only; default 0.2)")
    p.add_argument("--detector", metavar="PATH", default=None,
                   help="the hand detector's weights (default: <models>/wilor/detector.pt)")
    p.add_argument("--device", default="cpu", help="torch device of the detector (cpu, cuda)")
    p.add_argument("--stride", type=int, default=1, help="detect hands in every N-th 360 frame (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _detector_options(args) -> dict:
    if args.stride < 1:
        raise UserError(f"--stride {args.stride} is not a frame step", fix="give 1 (every 360 frame) or more")
    return {"observer": args.observer, "detector": args.detector, "device": args.device, "stride": args.stride,
            "progress": not args.quiet}


def _observer_kind(session: Session, observer: str) -> str:
    if observer == "auto":
        return "simulated" if session.manifest.simulated else "detector"
    if observer.startswith("simulated") and not session.manifest.simulated:
        raise UserError(f"--observer {observer} needs a simulated session (with truth/)", path=session.root,
                        fix="use --observer detector on recorded sessions")
    return observer


def view_detector(session: Session, kind: str, detector: str | None = None, device: str = "cpu") -> ViewDetector:
    """The panorama's hand detector for ``kind`` "detector" (WiLoR's ``detector.pt``) or
    "simulated-detector"."""
    from omnimocap.geometry.cameras import EquirectCamera
    from omnimocap.calibration.pano_hands import ImageViewDetector
    from omnimocap.capture.pano import PanoReader

    if kind == "simulated-detector":
        from omnimocap.hands.sim_backend import SimViewDetector

        return SimViewDetector(session.root)
    from omnimocap.hands.model_store import default_models_dir, missing_message
    from omnimocap.hands.wilor.detector import HandDetector

    if detector is None:
        models = default_models_dir()
        msg = missing_message(models, ("wilor/detector.pt",))
        if msg:
            raise ModelFilesMissing(msg + " (or pass --detector PATH, or calibrate with --method board)")
        path = models / "wilor/detector.pt"
    else:
        path = Path(detector).expanduser()
        if not path.is_file():
            raise ModelFilesMissing("the hand detector's weights are missing", path=path,
                                    fix="run `omnimocap models download`, or give the right --detector PATH")
    entry = session.pano()
    if not entry.recording:
        raise InputError("the session has no 360 video to detect hands in", path=session.root / "session.json")
    reader = PanoReader(session.path(entry.recording), session.path(entry.timestamps or "pano_frames.csv"))
    return ImageViewDetector(HandDetector(path, device=device), EquirectCamera(reader.width, reader.height))


def _load_rig(session: Session) -> Rig:
    from omnimocap.capture.rig import Rig

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


def _detection_inputs(detected: DetectedHands, detector: ViewDetector) -> dict:
    weights = getattr(getattr(detector, "detector", None), "weights", None)
    name = str(weights) if weights is not None else type(detector).__name__
    return {"pano_observer": f"hand detections ({name}) against the Kinect hand centres",
            "simulated_observer": False, "detections": detected.info}


# Detections are associated with the Kinect hands under the current pose and clock, so association
# and solve alternate: the first solve starts from the search's pose, the second from the first's.
ASSOCIATION_ROUNDS = 2


def _with_rate(time_map: TimeMap, rate_of: TimeMap, t: float) -> TimeMap:
    """``time_map``'s session time at ``t`` with ``rate_of``'s rate (the rate prior's centre)."""
    from omnimocap.capture.rig import TimeMap

    return TimeMap(rate_of.a, float(time_map.to_session(t) - rate_of.a * t))


def run_calibrate(args) -> int:
    print(json.dumps(calibrate_session(args.session, args.method, args.noise_deg, kinects=args.kinects,
                                       search_frames=args.search_frames, refine=args.refine,
                                       **_detector_options(args))))
    return 0


def calibrate_session(session_dir, method: str = "markerless", noise_deg: float = 0.2,
                      kinects: str | None = None, observer: str = "auto", detector: str | None = None,
                      device: str = "cpu", stride: int = 1, search_frames: int = 150, refine: bool = False,
                      progress: bool = False) -> dict:
    """Solve the Kinects' poses and the world frame (``kinects="estimate"``; by default when the
    reference Kinect recorded its IMU, else ``"rig"``: keep the rig's), then the 360 camera's pose
    and time map, and write the session's rig.json; returns the 360 camera's residuals.
    ``observer`` (see the module docstring) chooses the panorama's side of the markerless method;
    ``refine`` starts it from the rig's current 360 pose (relative to the reference Kinect) and
    clock instead of searching from nothing."""
    from omnimocap.calibration.markerless import calibrate_markerless
    from omnimocap.calibration.observations import (
        KinectTracks, TRACKS_PER_PERSON, kinect_wrist_tracks, pano_observations,
    )
    from omnimocap.calibration.pano_hands import (
        DETECTION_MAX_ROTATION_STD_DEG, DETECTION_MAX_TRANSLATION_STD_MM, DETECTION_NOISE_AR_ORDER, DETECTION_NOISE_DEG,
        detect_hands,
    )
    from omnimocap.capture.rig import Rig
    from omnimocap.calibration.timesync import coarse_time_map, rate_std_ppm

    session = Session.open(session_dir)
    previous = _load_rig(session)
    serial = _reference(session, previous)
    kind = _observer_kind(session, observer) if method == "markerless" else None
    start = _previous_calibration(session, previous, serial) if refine and method == "markerless" else None
    kinect_rig = kinect_poses(session, previous, serial, kinects)
    if method == "board":
        return _calibrate_board(session, previous, kinect_rig)
    if kind == "simulated":
        obs = pano_observations(session, noise_deg=noise_deg)
        coarse = coarse_time_map(obs.t_pano, obs.t_host)
        tracks: KinectTracks = kinect_wrist_tracks(session, serial, kinect_rig,
                                                   obs.bearings.shape[1] // TRACKS_PER_PERSON)
        init_T, init_time, search = None, coarse, 0.5
        if start is not None:
            init_T, init_time, search = start[0], _with_rate(start[1], coarse, float(np.median(obs.t_pano))), 0.1
        res = calibrate_markerless(obs.t_pano, obs.bearings, tracks.t_session, tracks.points, traj_sigma=tracks.sigma,
                                   init_time=init_time,
                                   init_T_kinect_pano=init_T, search_s=search,
                                   rate_prior_std_ppm=rate_std_ppm(obs.t_pano, coarse))
        observer_inputs = _observer_inputs(obs)
    else:
        det = view_detector(session, kind, detector, device)
        detected = detect_hands(session, kinect_wrist_tracks(session, serial, kinect_rig), det, stride=stride,
                                search_frames=search_frames, progress=progress,
                                T_kinect_pano=None if start is None else start[0],
                                init_time=None if start is None else start[1])
        coarse = coarse_time_map(detected.t_pano, detected.t_host)
        prior = rate_std_ppm(detected.t_pano, coarse)
        T, tm, search = detected.T_kinect_pano, detected.time_map, 0.25 if start is None else 0.1
        for _ in range(ASSOCIATION_ROUNDS):
            obs = detected.observations(T, tm)
            t_mid = float(np.median(obs.t_pano))
            res = calibrate_markerless(obs.t_pano, obs.bearings, detected.candidates.t_session,
                                       detected.candidates.points, traj_sigma=detected.candidates.sigma,
                                       init_time=_with_rate(tm, coarse, t_mid),
                                       init_T_kinect_pano=T, search_s=search, noise_deg=DETECTION_NOISE_DEG,
                                       rate_prior_std_ppm=prior,
                                       max_rotation_std_deg=DETECTION_MAX_ROTATION_STD_DEG,
                                       max_translation_std_mm=DETECTION_MAX_TRANSLATION_STD_MM,
                                       noise_ar_order=DETECTION_NOISE_AR_ORDER)
            T, tm, search = res.T_kinect_pano, res.time_map, 0.05
        observer_inputs = _detection_inputs(detected, det)
    rig = Rig(dict(kinect_rig.T_world_sensor), dict(previous.time_maps), method="markerless", is_truth=False)
    rig.T_world_sensor["pano"] = kinect_rig.pose(f"kinect_{serial}") @ res.T_kinect_pano
    rig.time_maps["pano"] = res.time_map
    rig.residuals = {**kinect_rig.residuals, "pano": res.to_json()}
    rig.inputs = {"reference_kinect": serial, "pano_frames": int(len(obs.t_pano)), **kinect_rig.inputs,
                  **observer_inputs, "started_from": f"rig: {previous.method}" if start is not None else "nothing"}
    _write(session, rig, previous)
    return {"method": "markerless", **rig.residuals["pano"]}


def _previous_calibration(session: Session, previous: Rig, serial: str) -> tuple[np.ndarray, TimeMap]:
    """The rig's 360 pose relative to the reference Kinect and its 360 time map, to refine from."""
    from omnimocap.geometry.transforms import invert_pose

    if previous.is_truth:
        raise UserError("--refine needs a previous calibration, and rig.json holds the simulated truth",
                        path=session.rig_path, fix="calibrate without --refine first")
    if "pano" not in previous.T_world_sensor or "pano" not in previous.time_maps:
        raise InputError("--refine needs the 360 camera's pose and time map in rig.json", path=session.rig_path,
                         fix="calibrate without --refine first")
    return invert_pose(previous.pose(f"kinect_{serial}")) @ previous.pose("pano"), previous.time_map("pano")


# Depth frames of the reference Kinect (spread over the recording) whose points the floor is fitted to.
FLOOR_FRAMES = 6
FLOOR_STRIDE_PX = 2
WORLD_CONVENTION = ("y up (reference Kinect's accelerometer), y = 0 on the floor (plane fitted to its depth frames), "
                    "+z = its depth camera's optical axis projected on the floor, origin on the floor below that camera")


def kinect_poses(session: Session, previous: Rig, serial: str, mode: str | None = None) -> Rig:
    """A rig with the Kinects' poses, residuals and inputs, estimated (``mode`` "estimate", the
    default when the reference recording has IMU samples) or kept from ``previous`` ("rig"), and
    ``previous``'s other poses and time maps."""
    from omnimocap.capture.rig import Rig
    from omnimocap.calibration.world_frame import align_kinect_skeletons, reference_world_pose
    from omnimocap.capture.bodies import read_bodies
    from omnimocap.capture.kinect_mkv import KinectRecording
    from omnimocap.capture.skeleton_fusion import BodyTrack, resample_track

    entry = session.kinects()[0]
    recording = KinectRecording(session.path(entry.recording)) if entry.recording else None
    imu = recording.imu() if recording is not None else None
    has_imu = imu is not None and len(imu) > 0
    if mode is None:
        mode = "estimate" if has_imu else "rig"
    if mode not in ("estimate", "rig"):
        raise ValueError(f"unknown Kinect pose mode {mode!r}; 'estimate' or 'rig'")
    kept_from = "simulated truth" if previous.is_truth else previous.method
    if mode == "rig":
        reason = "" if has_imu else " (the reference Kinect has no recording with IMU samples)"
        return Rig(dict(previous.T_world_sensor), dict(previous.time_maps),
                   inputs={"kinect_poses_from": f"rig: {kept_from}{reason}"})
    if not has_imu:
        path = session.path(entry.recording) if entry.recording else session.root / "session.json"
        raise InputError(f"the reference Kinect {serial} has no recording with IMU samples; gravity is unknown",
                         path=path, fix="record with the IMU on, or use --kinects rig")
    cal = recording.calibration
    if cal.R_depth_accel is None:
        raise InputError("the recording's calibration lists no accelerometer", path=recording.path,
                         fix="use the calibration.json the device wrote, or --kinects rig")
    T_world_ref, ref_info = reference_world_pose(imu.acc, cal.R_depth_accel, _floor_points(recording, cal.depth))
    poses = dict(previous.T_world_sensor)
    poses[f"kinect_{serial}"] = T_world_ref
    residuals = {serial: ref_info}
    others = session.kinects()[1:]
    if others:
        for k in (entry, *others):
            if not k.bodies:
                raise InputError(f"Kinect {k.serial} has no body tracking to place the Kinects from shared skeletons",
                                 path=session.root / "session.json",
                                 fix="run body tracking on its recording, or use --kinects rig")
        ref_rec = read_bodies(session.path(entry.bodies))
        t_ref = previous.time_map(f"kinect_{serial}").to_session(ref_rec.timestamps)
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
    return Rig(poses, dict(previous.time_maps), residuals={"kinects": residuals}, inputs={
        "kinect_poses_from": "estimated: the reference from its IMU gravity and floor, the others from shared "
                             "skeletons (their tilt from their own IMU where they have one)",
        "world_frame": WORLD_CONVENTION, "accelerometer_from": entry.recording,
        "floor_frames": FLOOR_FRAMES, "skeletons_from": [k.bodies for k in (entry, *others)] if others else []})


def _accelerometer_up(session: Session, entry) -> np.ndarray | None:
    """Up (unit, depth frame) from a Kinect's accelerometer, or None without a recording with IMU
    samples and an accelerometer calibration, or when the device moved (its tilt then comes from the
    skeletons alone, and its residuals carry no ``tilt_correction_deg``)."""
    from omnimocap.calibration.world_frame import up_from_accelerometer
    from omnimocap.capture.kinect_mkv import KinectRecording

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


def _floor_points(recording: KinectRecording, depth_camera) -> np.ndarray:
    """Depth points (N,3, metres, depth frame) of FLOOR_FRAMES frames spread over the recording (the
    people cover a different part of the floor in each)."""
    from omnimocap.calibration.world_frame import points_from_depth

    frames, step, n = [], 1, 0
    for capture in recording.captures(decode_color=False):
        if capture.depth is None:
            continue
        if n % step == 0:
            frames.append(capture.depth)
            # thin to every other kept frame so that a long recording never holds more than a few
            if len(frames) > 2 * FLOOR_FRAMES:
                frames, step = frames[::2], step * 2
        n += 1
    if not frames:
        raise InputError("the reference Kinect's recording has no depth frames to find the floor in",
                         path=recording.path, fix="record with depth on, or use --kinects rig")
    pick = np.unique(np.linspace(0, len(frames) - 1, FLOOR_FRAMES).round().astype(int))
    return np.concatenate([points_from_depth(frames[i], depth_camera, stride=FLOOR_STRIDE_PX) for i in pick])


# A board counts as still between two colour frames when no common corner moved more than this.
BOARD_STILL_DEG = 0.05
# Frames of a still run (>= 0.2 s at 30 fps) before its middle frame is used.
BOARD_MIN_STILL_FRAMES = 6
BOARD_MIN_CORNERS = 6
# Poses a non-reference Kinect must share with the reference before the board places it.
BOARD_MIN_KINECT_POSES = 2


def _still_runs(times: np.ndarray, dets: list[BoardDetection | None]) -> list[tuple[int, int]]:
    """[first, last] capture indices of runs where the board was detected and did not move."""
    runs, start = [], None
    for i in range(len(dets)):
        still = False
        if i > 0 and dets[i] is not None and dets[i - 1] is not None:
            common, a, b = np.intersect1d(dets[i - 1].ids, dets[i].ids, return_indices=True)
            if len(common) >= BOARD_MIN_CORNERS:
                cos = np.sum(dets[i - 1].bearings[a] * dets[i].bearings[b], axis=-1)
                still = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).max() < BOARD_STILL_DEG
        if still:
            start = i - 1 if start is None else start
        else:
            if start is not None:
                runs.append((start, i - 1))
            start = None
    if start is not None:
        runs.append((start, len(dets) - 1))
    return [(a, b) for a, b in runs if b - a + 1 >= BOARD_MIN_STILL_FRAMES]


def _calibrate_board(session: Session, previous: Rig, kinect_rig: Rig, spec: BoardSpec | None = None) -> dict:
    from omnimocap.calibration.board import BoardSpec, calibrate_board_sequence, detect_equirect, detect_pinhole
    from omnimocap.geometry.cameras import EquirectCamera
    from omnimocap.capture.rig import Rig
    from omnimocap.calibration.timesync import coarse_time_map
    from omnimocap.capture.kinect_mkv import KinectRecording
    from omnimocap.capture.pano import PanoReader, read_pano_timestamps

    spec = BoardSpec() if spec is None else spec
    serial = _reference(session, previous)
    entry = session.kinects()[0]
    if entry.recording is None:
        raise InputError(f"the reference Kinect {serial} has no recording to find the board in",
                         path=session.root / "session.json", fix="record the Kinects' video, or use --method markerless")
    recording = KinectRecording(session.path(entry.recording))
    if recording.color_mode is None:
        raise InputError("the recording has no colour track", path=recording.path,
                         fix="record with colour on, or use --method markerless")
    kinect_cal = recording.calibration
    times, dets = [], []
    for capture in recording.captures():
        if capture.color is None:
            continue
        det = detect_pinhole(spec, capture.color, kinect_cal.color)
        times.append(capture.color_timestamp)
        dets.append(det if len(det) >= BOARD_MIN_CORNERS else None)
    board_name = (f"ChArUco board ({spec.squares_x}x{spec.squares_y} squares of {spec.square_m * 1e3:.0f} mm, "
                  f"{spec.marker_m * 1e3:.0f} mm markers)")
    if not any(d is not None for d in dets):
        raise UserError(f"the {board_name} is never seen in the colour frames", path=recording.path,
                        fix="record it held still in several poses where the Kinect and the 360 camera both see it, "
                            "or use --method markerless")
    runs = _still_runs(np.asarray(times), dets)
    if not runs:
        raise UserError(f"the {board_name} never holds still for {BOARD_MIN_STILL_FRAMES} frames", path=recording.path,
                        fix="hold it still for about half a second in each pose")

    pano = session.pano()
    stamps = read_pano_timestamps(session.path(pano.timestamps))
    pano_map = previous.time_maps.get("pano") or coarse_time_map(stamps.t_pano, stamps.t_host)
    t_pano_session = pano_map.to_session(stamps.t_pano)
    kinect_map = previous.time_map(f"kinect_{serial}")
    pairs = []  # (colour capture index, pano frame index)
    for a, b in runs:
        mid = (a + b) // 2
        t_mid = kinect_map.to_session(times[mid])
        j = int(np.argmin(np.abs(t_pano_session - t_mid)))
        # the pano frame must lie inside the still run, a frame away from its ends
        if kinect_map.to_session(times[a + 1]) <= t_pano_session[j] <= kinect_map.to_session(times[b - 1]):
            pairs.append((mid, j))
    reader = PanoReader(session.path(pano.recording), session.path(pano.timestamps))
    camera = EquirectCamera(reader.width, reader.height)
    wanted = {j: None for _, j in pairs}
    if wanted:
        for j, frame in reader.frames(min(wanted), max(wanted) + 1):
            if j in wanted:
                wanted[j] = detect_equirect(spec, frame, camera)
    cal = calibrate_board_sequence(spec, [dets[i] for i, _ in pairs], [wanted[j] for _, j in pairs],
                                   kinect_cal.T_depth_color)
    used = [pairs[k] for k in cal.frames_used]
    rig = Rig(dict(kinect_rig.T_world_sensor), dict(previous.time_maps), method="board", is_truth=False)
    rig.T_world_sensor["pano"] = kinect_rig.pose(f"kinect_{serial}") @ cal.T_depth_pano
    rig.time_maps["pano"] = pano_map
    rig.residuals = {**kinect_rig.residuals, "pano": cal.to_json()}
    kinects_from_board = {}
    if "kinects" in kinect_rig.residuals:  # the Kinects' poses are estimated, not kept from the rig
        kinects_from_board = _board_kinects(session, rig, previous, spec, times, dets, runs, kinect_cal.T_depth_color)
    rig.inputs = {"reference_kinect": serial, "recording": entry.recording,
                  "board": {"squares_x": spec.squares_x, "squares_y": spec.squares_y, "square_m": spec.square_m,
                            "marker_m": spec.marker_m, "dictionary": int(spec.dictionary)},
                  "still_runs": len(runs),
                  "poses_used": [{"color_frame": int(i), "t_color_device": float(times[i]), "pano_frame": int(j),
                                  "t_pano": float(stamps.t_pano[j])} for i, j in used],
                  "pano_time_map_from": "rig" if "pano" in previous.time_maps else "host arrival times",
                  **kinect_rig.inputs}
    if kinects_from_board:
        rig.inputs["kinect_poses_from_board"] = kinects_from_board
    _write(session, rig, previous)
    return {"method": "board", "poses_used": len(used), "kinect_rms_deg": cal.kinect_rms_deg,
            "pano_rms_deg": cal.pano_rms_deg}


def _board_kinects(session: Session, rig: Rig, previous: Rig, spec: BoardSpec, ref_times: list[float],
                   ref_dets: list[BoardDetection | None], runs: list[tuple[int, int]],
                   T_depth_color_ref: np.ndarray) -> dict:
    """Place every non-reference Kinect whose colour camera saw the board in the reference's still
    runs: the colour capture nearest (in session time) to each run's middle, solved jointly with the
    reference's detection for the colour-to-colour pose and composed with both devices' factory
    colour-to-depth extrinsics. Updates ``rig``'s poses and ``residuals["kinects"]`` in place (a
    Kinect that never saw the board keeps its skeleton-based pose) and returns, per serial, the
    poses used or why the board was not used."""
    from omnimocap.calibration.board import calibrate_board_sequence, detect_pinhole
    from omnimocap.geometry.transforms import invert_pose, relative_angle_deg
    from omnimocap.capture.kinect_mkv import KinectRecording

    entry = session.kinects()[0]
    ref_name = f"kinect_{entry.serial}"
    T_world_ref = rig.pose(ref_name)
    t_mid = np.array([previous.time_map(ref_name).to_session(ref_times[(a + b) // 2]) for a, b in runs])
    used = {}
    for other in session.kinects()[1:]:
        if not other.recording:
            used[other.serial] = "skeletons: no recording"
            continue
        recording = KinectRecording(session.path(other.recording))
        if recording.color_mode is None:
            used[other.serial] = "skeletons: no colour track"
            continue
        cal = recording.calibration
        other_map = previous.time_map(other.name)
        captures = [(other_map.to_session(c.color_timestamp), c.color) for c in recording.captures()
                    if c.color is not None]
        t_other = np.array([t for t, _ in captures])
        nearest = [int(np.argmin(np.abs(t_other - t))) for t in t_mid]
        other_dets = [detect_pinhole(spec, captures[j][1], cal.color) for j in nearest]
        try:
            res = calibrate_board_sequence(spec, [ref_dets[(a + b) // 2] for a, b in runs], other_dets,
                                           T_depth_color_ref, min_frames=BOARD_MIN_KINECT_POSES,
                                           cameras=("the reference Kinect's colour camera",
                                                    f"Kinect {other.serial}'s colour camera"))
        except UserError as exc:
            used[other.serial] = f"skeletons: {exc.problem}"
            continue
        T_ref_other = res.T_depth_pano @ invert_pose(cal.T_depth_color)
        skeleton_pose = rig.pose(other.name)
        rig.T_world_sensor[other.name] = T_world_ref @ T_ref_other
        rig.residuals["kinects"][other.serial] = {
            "method": "board", "reference_rms_deg": res.kinect_rms_deg, "other_rms_deg": res.pano_rms_deg,
            "poses_used": len(res.frames_used),
            "skeleton_rotation_difference_deg": float(relative_angle_deg(skeleton_pose[:3, :3],
                                                                         rig.pose(other.name)[:3, :3])),
            "skeleton_translation_difference_mm": float(np.linalg.norm(skeleton_pose[:3, 3]
                                                                       - rig.pose(other.name)[:3, 3]) * 1e3),
            "skeletons": rig.residuals["kinects"].get(other.serial)}
        used[other.serial] = [{"reference_color_frame": int((runs[k][0] + runs[k][1]) // 2),
                               "color_frame": int(nearest[k]), "t_session": float(t_mid[k])}
                              for k in res.frames_used]
    return used


def run_sync(args) -> int:
    if args.flash:
        result = flash_sync_session(args.session, progress=not args.quiet)
        for warning in result["warnings"]:
            print(f"omnimocap sync: warning: {warning}", file=sys.stderr)
        print(json.dumps(result))
    else:
        print(json.dumps(sync_session(args.session, args.noise_deg, **_detector_options(args))))
    return 0


# A flash is a brightness step of at least this many grey levels (of 255) in the mean of a frame:
# people moving about change the mean by a fraction of a level, a light switched on by tens.
FLASH_MIN_STEP = 5.0
# Most that the host-arrival map may be off (latency, jitter) when a 360 flash is paired with a Kinect one.
FLASH_TOLERANCE_S = 0.5


def _brightness_events(times: np.ndarray, brightness: np.ndarray) -> np.ndarray:
    from omnimocap.calibration.timesync import flash_events

    y = np.asarray(brightness, dtype=np.float64)
    if len(y) == 0:
        return np.zeros(0)
    step = max(FLASH_MIN_STEP, 0.5 * float(np.percentile(y, 99) - np.percentile(y, 1)))
    return flash_events(np.asarray(times, dtype=np.float64), y, min_step=step)


def flash_sync_session(session_dir, progress: bool = False) -> dict:
    """Estimate the 360 camera's time map from flashes seen by it and by the reference (first)
    Kinect's colour camera (see the module docstring); writes rig.json (the pano time map, with the
    events used under ``inputs.flash_events`` and ``residuals.pano_sync``) and returns the time map,
    its residual and the events. Raises :class:`UserError` (rig.json untouched) without a reference
    Kinect recording with colour, without a flash in either video, or without a pair of them within
    FLASH_TOLERANCE_S under the host-arrival map."""
    from omnimocap.capture.rig import Rig
    from omnimocap.calibration.timesync import (
        FLASH_MIN_RATE_SPAN_S, align_flash_events, coarse_time_map, frame_brightness, pair_flash_events,
    )
    from omnimocap.capture.kinect_mkv import KinectRecording
    from omnimocap.capture.pano import PanoReader

    from tqdm import tqdm

    session = Session.open(session_dir)
    previous = _load_rig(session)
    serial = _reference(session, previous)
    entry = session.kinects()[0]
    if not entry.recording:
        raise InputError(f"the reference Kinect {serial} has no recording to find the flashes in",
                         path=session.root / "session.json",
                         fix="record the Kinects' colour video, or sync without --flash")
    recording = KinectRecording(session.path(entry.recording))
    if recording.color_mode is None:
        raise InputError("the recording has no colour track to find the flashes in", path=recording.path,
                         fix="record with colour on, or sync without --flash")
    pano = session.pano()
    reader = PanoReader(session.path(pano.recording), session.path(pano.timestamps or "pano_frames.csv"))
    stamps = reader.timestamps
    coarse = coarse_time_map(stamps.t_pano, stamps.t_host)
    if not coarse.a > 0:
        raise InputError(f"the host arrival times run backwards against the 360 camera's clock (rate {coarse.a:.4f})",
                         path=session.path(pano.timestamps or "pano_frames.csv"),
                         fix="the t_host column is damaged; restore the file the recorder wrote")

    pano_index, pano_y = [], []
    with tqdm(total=len(reader), desc="flash: 360 frames", unit="frame", disable=not progress, file=sys.stderr) as bar:
        for i, frame in reader.frames():
            pano_index.append(i)
            pano_y.append(frame_brightness(frame))
            bar.update()
    kinect_map = previous.time_map(f"kinect_{serial}")
    kinect_t, kinect_y = [], []
    with tqdm(desc="flash: Kinect colour frames", unit="frame", disable=not progress, file=sys.stderr) as bar:
        for capture in recording.captures():
            if capture.color is not None:
                kinect_t.append(kinect_map.to_session(capture.color_timestamp))
                kinect_y.append(frame_brightness(capture.color))
            bar.update()

    warnings = []
    if len(pano_index) < len(reader):
        warnings.append(f"{reader.video_path}: only {len(pano_index)} of the {len(reader)} frames listed in "
                        f"{pano.timestamps or 'pano_frames.csv'} decode (the video is cut off); flashes after "
                        f"{stamps.t_pano[pano_index[-1]] if pano_index else stamps.t_pano[0]:.2f} s (360 clock) are not seen")
    if recording.truncated:
        warnings.append(f"{recording.path}: the recording is cut off ({'; '.join(recording.problems)}); "
                        f"flashes after its last colour frame at {max(kinect_t, default=float('nan')):.2f} s "
                        "(session clock) are not seen")
    pano_events = _brightness_events(stamps.t_pano[pano_index], pano_y)
    how = (f"no flash (a rise in mean brightness of at least {FLASH_MIN_STEP:g} grey levels, held for "
           "a few frames) was found")
    fix = ("switch a light on in view of the 360 camera and the reference Kinect while recording, "
           "or sync without --flash")
    if not len(pano_events):
        raise UserError(f"{how} in the 360 video", path=reader.video_path, fix=fix)
    if not kinect_y:
        raise InputError("the recording has no colour frames to find the flashes in", path=recording.path, fix=fix)
    kinect_events = _brightness_events(kinect_t, kinect_y)
    if not len(kinect_events):
        raise UserError(f"{how} in the reference Kinect's colour video", path=recording.path, fix=fix)
    pairs = pair_flash_events(pano_events, kinect_events, coarse, FLASH_TOLERANCE_S)
    if not len(pairs):
        raise UserError(f"none of the {len(pano_events)} flash(es) of the 360 video lies within "
                        f"{FLASH_TOLERANCE_S:g} s of one of the {len(kinect_events)} of the Kinect video under the "
                        "host arrival times",
                        path=session.path(pano.timestamps or "pano_frames.csv"),
                        fix="check that both cameras saw the same flashes and that the host arrival times are right")
    time_map = align_flash_events(pano_events, kinect_events, coarse, FLASH_TOLERANCE_S)
    rate_from = "flashes" if np.ptp(pairs[:, 0]) >= FLASH_MIN_RATE_SPAN_S else "host arrival times"
    events = [{"t_pano": float(tp), "t_session": float(ts)} for tp, ts in pairs]
    result = {"method": "flash", "residual_rms_ms": time_map.residual_rms_ms, "rate_from": rate_from,
              "events_used": len(pairs), "pano_events": len(pano_events), "kinect_events": len(kinect_events),
              "warnings": warnings}
    rig = Rig(dict(previous.T_world_sensor), dict(previous.time_maps),
              method=previous.method if not previous.is_truth else "flash", is_truth=False,
              residuals={**previous.residuals, "pano_sync": result},
              inputs={**previous.inputs, "sync_method": "flash", "sync_reference_kinect": serial,
                      "flash_recording": entry.recording, "flash_events": events})
    rig.time_maps["pano"] = time_map
    _write(session, rig, previous)
    return {"a": time_map.a, "b": time_map.b, **result, "events": events}


def sync_session(session_dir, noise_deg: float = 0.2, observer: str = "auto", detector: str | None = None,
                 device: str = "cpu", stride: int = 1, progress: bool = False) -> dict:
    """Estimate the 360 camera's time map from motion with the rig's current pose; writes rig.json
    and returns the time map and residuals."""
    from omnimocap.calibration.observations import TRACKS_PER_PERSON, kinect_wrist_tracks, pano_observations
    from omnimocap.calibration.pano_hands import DETECTION_NOISE_AR_ORDER, DETECTION_NOISE_DEG, detect_hands
    from omnimocap.capture.rig import Rig
    from omnimocap.calibration.timesync import coarse_time_map, fine_time_map, rate_std_ppm
    from omnimocap.geometry.transforms import invert_pose, transform_points

    session = Session.open(session_dir)
    previous = _load_rig(session)
    serial = _reference(session, previous)
    kind = _observer_kind(session, observer)
    T_world_kinect = previous.pose(f"kinect_{serial}")
    T_world_pano = previous.pose("pano")
    if kind == "simulated":
        obs = pano_observations(session, noise_deg=noise_deg)
        coarse = coarse_time_map(obs.t_pano, obs.t_host)
        tracks = kinect_wrist_tracks(session, serial, previous, obs.bearings.shape[1] // TRACKS_PER_PERSON)
        traj = transform_points(T_world_kinect, tracks.points)
        res = fine_time_map(obs.t_pano, obs.bearings, tracks.t_session, traj, T_world_pano, coarse,
                            traj_sigma=tracks.sigma, rate_prior_std_ppm=rate_std_ppm(obs.t_pano, coarse))
        observer_inputs = _observer_inputs(obs)
    else:
        det = view_detector(session, kind, detector, device)
        T_kinect_pano = invert_pose(T_world_kinect) @ T_world_pano
        detected = detect_hands(session, kinect_wrist_tracks(session, serial, previous), det,
                                T_kinect_pano=T_kinect_pano, stride=stride, progress=progress)
        coarse = coarse_time_map(detected.t_pano, detected.t_host)
        tm, search = coarse, 0.25
        for _ in range(ASSOCIATION_ROUNDS):
            obs = detected.observations(T_kinect_pano, tm, gate_deg=8.0 if tm is coarse else 6.0)
            res = fine_time_map(obs.t_pano, obs.bearings, detected.candidates.t_session, detected.candidates.points,
                                T_kinect_pano, _with_rate(tm, coarse, float(np.median(obs.t_pano))),
                                traj_sigma=detected.candidates.sigma, noise_ar_order=DETECTION_NOISE_AR_ORDER,
                                search_s=search, noise_deg=DETECTION_NOISE_DEG,
                                rate_prior_std_ppm=rate_std_ppm(detected.t_pano, coarse))
            tm, search = res.time_map, 0.05
        observer_inputs = _detection_inputs(detected, det)
    rig = Rig(dict(previous.T_world_sensor), dict(previous.time_maps),
              method=previous.method if not previous.is_truth else "sync", is_truth=False,
              residuals={**previous.residuals, "pano_sync": res.to_json()},
              inputs={**previous.inputs, "sync_reference_kinect": serial, **observer_inputs})
    rig.time_maps["pano"] = res.time_map
    _write(session, rig, previous)
    return {"a": res.time_map.a, "b": res.time_map.b, **res.to_json()}
