"""The simulated rig: a complete session folder with ground truth.

``simulate_session(out_dir, SimConfig(...))`` writes what a real capture writes (``session.json``,
``bodies_<serial>.json`` per Kinect in the k4abt JSON format, ``kinect_<serial>.mkv`` per Kinect
(colour, depth, IR and IMU with the factory calibration attached; see capture/sim_kinect.py), ``pano.mkv``
+ ``pano_frames.csv``) plus ``truth/`` (the true rig, the people's motion, the Kinects' colour
cameras in ``kinects.json`` and, with a board sequence, the board's poses in ``board.json``) and,
until a calibration replaces it, a copy of the true rig as the session's ``rig.json``.

Sensors (world frame: y up, metres, floor y = 0):
- the 360 camera about 1.0-1.2 m high, roughly level (small random tilt), OpenCV axes, facing the
  people; its own clock ``t_pano = (t_session - b) / a`` with a rate error of a few hundred ppm;
  frames at a nominal 30 fps on that clock with ~1 ms capture jitter (stamped exactly); host
  arrival times carry 60-100 ms latency and ~5 ms jitter.
- K Kinects (the first is the master) 2-3 m from the people, 1.0-1.5 m high, their depth cameras
  (whose pose is ``T_world_kinect``) tilted ~6 deg down. Wired sync: every device captures at the
  master's frame times plus 160 us per device; each stamps on its own device clock (offset 0.5-1 s
  at the session start, small rate error). ``SimConfig.kinect_model`` picks the device model of
  capture/kinect_models.py: ``femto-bolt`` narrows the colour camera to 80 x 51 deg, gives Orbbec
  serials and firmware tags, adds an epoch-like offset to the device clocks and writes a start
  offset of minutes into each recording, as Orbbec's K4A wrapper does.

Body tracking is modelled from the true SMPL-X joints (``kinect_from_smplx_matrix``), the MANO
hands (HAND = middle-finger MCP, HANDTIP = middle fingertip, THUMB = thumb tip) and the head (nose,
eyes, ears), with temporally correlated noise (``kinect_noise_mm``), lower confidence for joints
that are self-occluded, far or hidden behind another person, NONE outside the depth camera's view.
``SimConfig.realism`` then decides what else a Kinect reports (capture/sim_k4abt.py):
``"ideal"``: ~1% dropped bodies and k4abt ``body_id`` p for person p, nothing more; ``"field"``
(the default): k4abt's errors (joint-definition bias, noisier wrists and hands, front/back
confusion, new and swapped body ids, drop-outs). ``truth/realism.json`` records the level, the
scene's geometry per Kinect (facing away, hidden joints, crossings) and what was injected.

Board sequence (``SimConfig.board``): during the first ~3 s a ChArUco board (``BoardSpec()`` of
calibration/board.py) floats 0.7-1.0 m beside the 360 camera, facing the 360 camera and the
Kinects' colour cameras, inside every Kinect's colour image where it can be, else inside the reference
(first) Kinect's. It holds each of BOARD_POSES poses still
for BOARD_HOLD_S, moving between them in BOARD_MOVE_S, and is then gone. It is drawn over the people
(it is held in front of them) in the panorama and in every Kinect that sees it.

Flashes (``SimConfig.flashes``): at each given session time a light comes on for
``FLASH_HOLD_S`` (capture/sim_render.py) and brightens the whole scene. Every panorama frame and every
Kinect colour frame is exposed for one frame period of its own clock, centred on its mid-exposure
time (a panorama frame's true session time, a Kinect frame's device timestamp through that device's
true time map), so a frame whose exposure straddles the light's onset or end shows the blend of the
dark and the lit scene by the fraction of its exposure that was lit. The Kinects' depth and IR are
unaffected. The flash times go to ``truth/flashes.json``. Flashes draw no random numbers: with
or without them a seed gives the same truth, body tracking and timestamps, and the same frames
outside the lit exposures (the 360 video's encoder state aside).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from omnimocap.calibration.board import BoardSpec, draw_board
from omnimocap.geometry.cameras import PinholeCamera
from omnimocap.capture.rig import Rig, TimeMap
from omnimocap.geometry.transforms import (
    axis_angle_to_matrix, invert_pose, look_at, make_pose, matrix_to_axis_angle, matrix_to_quat_wxyz, transform_points,
)
from omnimocap.capture.bodies import BodyRecording, BodyTrack, write_bodies
from omnimocap.capture.kinect_models import device_clock, kinect_model, scale_color_camera
from omnimocap.sim.kinect import open_sim_recording
from omnimocap.capture.pano import PanoWriter
from omnimocap.capture.session import PANO_FRAMES, PANO_VIDEO, DeviceEntry, Session, atomic_write_json
from omnimocap.sim.k4abt import (
    REALISM_FILE, REALISM_LEVELS, apply_k4abt_errors, draw_shared_bias, geometry_record, ideal_tracks, kinect_geometry,
    write_realism,
)
from omnimocap.sim.kinect import (
    IMU_RATE_HZ, KinectRenderer, SimKinect, board_in_view, make_sim_kinect, open_recording,
)
from omnimocap.sim.motion import PeopleSample, make_people, sample_people
from omnimocap.sim.render import (
    FLASH_GAIN, FLASH_HOLD_S, FLASH_OFFSET, PanoRenderer, apply_flash, flash_fraction,
)
from omnimocap.data.skeletons import (
    HAND21_INDEX,
    KINECT_CONFIDENCE_LOW,
    KINECT_CONFIDENCE_MEDIUM,
    KINECT_CONFIDENCE_NONE,
    KINECT_FROM_SMPLX,
    KINECT_INDEX,
    KINECT_JOINTS,
    SIDES,
    SMPLX_INDEX,
    kinect_from_smplx_matrix,
)
from omnimocap.fusion.body_model import load_skeleton
from omnimocap.hands.synthetic_mano import make_synthetic_mano
from omnimocap.hands.mano import ManoModel

FPS = 30.0
TRUTH_RATE_HZ = 240.0
SUBORDINATE_DELAY_S = 160e-6
# The subordinates' last frame lags the master's by up to 160 us per device; keep it in the session.
K_DELAY_ROOM = 0.01
HAND_VISIBLE_RANGE_M = (0.3, 2.5)
TORSO_RADIUS_M = 0.14
# Nominal NFOV unbinned depth camera (640x576, about 75 x 65 deg) for the field-of-view test.
KINECT_DEPTH_CAMERA = PinholeCamera(504.0, 504.0, 319.5, 287.5, 640, 576)
PANO_SERIAL = "sim360"
MOTION_FILE = "motion.npz"
KINECTS_FILE = "kinects.json"
BOARD_FILE = "board.json"
FLASHES_FILE = "flashes.json"
BOARD_POSES = 5
BOARD_START_S = 0.1
BOARD_HOLD_S = 0.4
BOARD_MOVE_S = 0.2
BOARD_TRIES = 200  # random poses tried per board pose before settling for fewer Kinects
RENDER_CHUNK = 15  # frames sampled (with hand meshes) at once


@dataclass
class SimConfig:
    """What to simulate. Units: seconds, metres, pixels, millimetres where named."""

    seconds: float = 8.0
    people: int = 2
    kinects: int = 2
    seed: int = 0
    pano_width: int = 1920
    kinect_noise_mm: float = 15.0
    smplx_path: Path | None = None  # drive the motion on this SMPL-X file's skeleton
    mano_path: Path | None = None  # MANO_RIGHT.pkl (or its folder); the synthetic model when None
    kinect_video: bool = True  # write kinect_<serial>.mkv (colour, depth, IR) per Kinect
    board: bool = False  # a ChArUco board sequence in the first ~3 s
    flashes: tuple[float, ...] = ()  # session times (s) at which a light comes on for FLASH_HOLD_S
    kinect_model: str = "azure"  # a model of capture/kinect_models.py: its colour camera, serials, clock and tags
    realism: str = "field"  # "field": k4abt's errors (capture/sim_k4abt.py); "ideal": none of them
    overwrite: bool = False


def kinect_serial(k: int) -> str:
    return f"{k + 1:012d}"


@dataclass
class BoardSequence:
    """A board that holds ``poses`` (K, 4, 4) ``T_world_board`` still during ``holds`` (K, 2) session
    seconds [start, end], moves between consecutive poses (linearly in position and rotation angle,
    eased) and is gone after the last hold."""

    spec: BoardSpec
    holds: np.ndarray
    poses: np.ndarray

    def pose_at(self, t: float) -> np.ndarray | None:
        """``T_world_board`` at session time ``t`` (seconds), None once the board is gone."""
        if t > self.holds[-1, 1]:
            return None
        k = int(np.searchsorted(self.holds[:, 1], t))
        if t >= self.holds[k, 0] or k == 0:
            return self.poses[k]
        s = (t - self.holds[k - 1, 1]) / (self.holds[k, 0] - self.holds[k - 1, 1])
        s = s * s * (3 - 2 * s)
        T0, T1 = self.poses[k - 1], self.poses[k]
        R = T0[:3, :3] @ axis_angle_to_matrix(s * matrix_to_axis_angle(T0[:3, :3].T @ T1[:3, :3]))
        return make_pose(R, (1 - s) * T0[:3, 3] + s * T1[:3, 3])

    def to_json(self) -> dict:
        spec = self.spec
        return {"board": {"squares_x": spec.squares_x, "squares_y": spec.squares_y, "square_m": spec.square_m,
                          "marker_m": spec.marker_m, "dictionary": int(spec.dictionary)},
                "frame": "board frame of calibration/board.py: origin at the top-left outer corner, x along the "
                         "columns, y down the rows, z into the board; metres",
                "holds_t_session": self.holds.tolist(), "T_world_board": self.poses.tolist()}


def make_board_sequence(rng: np.random.Generator, pano_centre: np.ndarray, kinects: list[SimKinect],
                        spec: BoardSpec = BoardSpec()) -> BoardSequence:
    """BOARD_POSES board poses 0.7-1.0 m from the 360 camera, 40-125 deg to either side of the
    direction towards the reference ``kinects[0]`` (so it sees the board from about 2 m, not from
    behind the 360 camera), facing the 360 camera and the Kinects' colour cameras (tilted up to
    ~20 deg off that). Each pose lies wholly inside every Kinect's colour image where a pose near the
    360 camera can, else inside the reference's (facing it and the 360 camera only)."""
    color_centres = [k.T_world_color[:3, 3] for k in kinects]
    towards = (color_centres[0] - pano_centre) * np.array([1.0, 0.0, 1.0])
    towards /= np.linalg.norm(towards)
    half = np.array([spec.squares_x * spec.square_m / 2, spec.squares_y * spec.square_m / 2, 0.0])
    poses = []
    for k in range(BOARD_POSES):
        for _ in range(2 * BOARD_TRIES):
            # the first half of the tries wants every Kinect to see the board, the rest only the reference
            seen_by = kinects if _ < BOARD_TRIES else kinects[:1]
            side = 1.0 if (k + _ // 50) % 2 == 0 else -1.0  # alternate sides; switch if one side never fits
            yaw = side * np.radians(rng.uniform(40.0, 125.0))
            u = axis_angle_to_matrix(np.array([0.0, yaw, 0.0])) @ towards
            centre = pano_centre + rng.uniform(0.7, 1.0) * u + np.array([0.0, rng.uniform(-0.2, 0.2), 0.0])
            away = sum((centre - c) / np.linalg.norm(centre - c)
                       for c in (pano_centre, *color_centres[:len(seen_by)]))
            R = look_at(away, np.array([0.0, 1.0, 0.0])) @ axis_angle_to_matrix(
                np.radians(rng.uniform([-20.0, -20.0, -10.0], [20.0, 20.0, 10.0])))
            T = make_pose(R, centre - R @ half)
            if all(board_in_view(kinect, spec, T) for kinect in seen_by):
                break
        else:
            raise ValueError("no board pose near the 360 camera is inside the reference Kinect's colour image")
        poses.append(T)
    starts = BOARD_START_S + np.arange(BOARD_POSES) * (BOARD_HOLD_S + BOARD_MOVE_S)
    return BoardSequence(spec, np.stack([starts, starts + BOARD_HOLD_S], axis=-1), np.stack(poses))


def _small_rotation(rng: np.random.Generator, deg: float) -> np.ndarray:
    return axis_angle_to_matrix(np.radians(deg) * rng.normal(size=3) / np.sqrt(3))


def hand_visibility(sample: PeopleSample, camera_centre: np.ndarray) -> np.ndarray:
    """(P, N, 2) bool: the hand centre is within HAND_VISIBLE_RANGE_M of the 360 camera and the
    line of sight to it does not pass through anyone's torso (a capsule pelvis-neck of
    TORSO_RADIUS_M: the person's own or another person's in front of the hand)."""
    centre = sample.hand_joints.mean(axis=-2)  # (P, N, 2, 3)
    dist = np.linalg.norm(centre - camera_centre, axis=-1)
    visible = (dist >= HAND_VISIBLE_RANGE_M[0]) & (dist <= HAND_VISIBLE_RANGE_M[1])
    f = np.linspace(0.05, 0.9, 18)[:, None]
    ray = camera_centre + f * (centre[:, :, :, None] - camera_centre)  # (P, N, 2, 18, 3)
    for q in range(sample.joints.shape[0]):
        a = sample.joints[q, :, SMPLX_INDEX["pelvis"]][None, :, None, None]  # (1, N, 1, 1, 3)
        b = sample.joints[q, :, SMPLX_INDEX["neck"]][None, :, None, None]
        ab = b - a
        s = np.clip(np.sum((ray - a) * ab, axis=-1) / np.sum(ab * ab, axis=-1), 0.0, 1.0)
        d = np.linalg.norm(ray - (a + s[..., None] * ab), axis=-1)
        visible &= ~np.any(d < TORSO_RADIUS_M, axis=-1)
    return visible


def kinect_joints_world(sample: PeopleSample) -> tuple[np.ndarray, np.ndarray]:
    """The 32 k4abt joints modelled from the truth: positions (P, N, 32, 3) world, and the world
    rotations (P, N, 32, 3, 3) reported as their orientations."""
    P, N = sample.joints.shape[:2]
    pos = np.zeros((P, N, len(KINECT_JOINTS), 3))
    rot = np.zeros((P, N, len(KINECT_JOINTS), 3, 3))
    rows = [KINECT_INDEX[name] for name in KINECT_FROM_SMPLX]
    pos[:, :, rows] = np.einsum("kj,pnjc->pnkc", kinect_from_smplx_matrix(), sample.joints)
    rot[:, :, rows] = sample.global_R[:, :, [SMPLX_INDEX[blend[0][0]] for blend in KINECT_FROM_SMPLX.values()]]
    for s, side in enumerate(SIDES):
        suffix = side.upper()
        hand = sample.hand_joints[:, :, s]
        pos[:, :, KINECT_INDEX[f"HAND_{suffix}"]] = hand[:, :, HAND21_INDEX["middle1"]]
        pos[:, :, KINECT_INDEX[f"HANDTIP_{suffix}"]] = hand[:, :, HAND21_INDEX["middle_tip"]]
        pos[:, :, KINECT_INDEX[f"THUMB_{suffix}"]] = hand[:, :, HAND21_INDEX["thumb_tip"]]
        for name in ("HAND", "HANDTIP", "THUMB"):
            rot[:, :, KINECT_INDEX[f"{name}_{suffix}"]] = sample.hand_global_R[:, :, s]
    head = sample.joints[:, :, SMPLX_INDEX["head"]]
    R_head = sample.global_R[:, :, SMPLX_INDEX["head"]]
    face = {"NOSE": (0.0, 0.03, 0.11), "EAR_LEFT": (0.075, 0.04, 0.0), "EAR_RIGHT": (-0.075, 0.04, 0.0)}
    for name, offset in face.items():
        pos[:, :, KINECT_INDEX[name]] = head + np.einsum("pnij,j->pni", R_head, np.array(offset))
    pos[:, :, KINECT_INDEX["EYE_LEFT"]] = sample.joints[:, :, SMPLX_INDEX["left_eye_smplhf"]]
    pos[:, :, KINECT_INDEX["EYE_RIGHT"]] = sample.joints[:, :, SMPLX_INDEX["right_eye_smplhf"]]
    for name in ("NOSE", "EYE_LEFT", "EAR_LEFT", "EYE_RIGHT", "EAR_RIGHT"):
        rot[:, :, KINECT_INDEX[name]] = R_head
    return pos, rot


def _kinect_tracks(sample: PeopleSample, T_world_kinect: np.ndarray, noise_mm: float,
                   rng: np.random.Generator, realism: str = "field", shared_bias: np.ndarray | None = None,
                   error_rng: np.random.Generator | None = None) -> tuple[dict[int, BodyTrack], dict]:
    """k4abt-like tracks of every person seen by one Kinect (positions in its depth frame) and the
    Kinect's record for ``truth/realism.json`` (geometry; with ``realism`` "field" also the injected
    k4abt errors of capture/sim_k4abt.py, drawn from ``error_rng`` with the persons' ``shared_bias``)."""
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
        if not field:  # the field level has its own drop-outs (capture/sim_k4abt.py)
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


def _sample_in_chunks(people, skeleton, mano, t: np.ndarray, chunk: int = 480) -> PeopleSample:
    parts = [sample_people(people, skeleton, mano, t[i:i + chunk]) for i in range(0, len(t), chunk)]
    return PeopleSample(**{k: (None if k == "hand_vertices" else np.concatenate([getattr(p, k) for p in parts], axis=1))
                           for k in PeopleSample.__dataclass_fields__})


def simulate_session(out_dir: str | Path, config: SimConfig = SimConfig(),
                     progress: Callable[[int, int], None] | None = None) -> Session:
    """Write a simulated session to ``out_dir`` and return it (status complete).

    ``progress(done, total)`` is called after each rendered pano frame."""
    if config.kinects < 1:
        raise ValueError("the simulation needs at least one Kinect")
    if config.seconds <= 0.2:
        raise ValueError("the simulated session must last more than 0.2 s")
    flashes = tuple(sorted(float(t) for t in config.flashes))
    if flashes and (flashes[0] < 0 or flashes[-1] > config.seconds):
        raise ValueError(f"flash times {flashes} must lie within the session, 0 to {config.seconds} s")
    if config.realism not in REALISM_LEVELS:
        raise ValueError(f"realism must be one of {REALISM_LEVELS}, got {config.realism!r}")
    if np.any(np.diff(flashes) < FLASH_HOLD_S):
        raise ValueError(f"flashes {flashes} overlap: they must be at least {FLASH_HOLD_S} s apart")
    rng = np.random.default_rng(config.seed)
    session = Session.create(out_dir, simulated=True, overwrite=config.overwrite)
    skeleton = load_skeleton(config.smplx_path)
    mano = ManoModel.load(config.mano_path) if config.mano_path else ManoModel.from_dict(make_synthetic_mano("right"))

    # --- sensors ---------------------------------------------------------------------------------
    pano_centre = np.array([rng.uniform(-0.1, 0.1), rng.uniform(1.0, 1.2), rng.uniform(-0.1, 0.1)])
    R_world_pano = _small_rotation(rng, 2.0) @ look_at(np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0]))
    T_world_pano = make_pose(R_world_pano, pano_centre)
    people = make_people(config.people, rng, pano_centre, skeleton)
    crowd = np.mean([p.home for p in people], axis=0)
    rig = Rig(method="truth", is_truth=True)
    rig.T_world_sensor["pano"] = T_world_pano
    sign = rng.choice([-1.0, 1.0])
    a_pano = 1.0 + sign * rng.uniform(200e-6, 400e-6)
    rig.time_maps["pano"] = TimeMap(a_pano, -a_pano * rng.uniform(5.0, 60.0))
    model = kinect_model(config.kinect_model)
    # The device clocks draw from their own generators so the other draws stay as with an Azure Kinect.
    clocks = [device_clock(model, np.random.default_rng([config.seed, k, 0xC1])) for k in range(config.kinects)]
    serials = [model.serial(k) for k in range(config.kinects)]
    xs = np.linspace(-1.3, 1.3, config.kinects) if config.kinects > 1 else np.array([0.7])
    for k, serial in enumerate(serials):
        position = np.array([crowd[0] + xs[k], rng.uniform(1.0, 1.5), crowd[2] - rng.uniform(2.2, 2.8)])
        target = np.array([crowd[0], 0.95, crowd[2]])
        R_device = look_at(target - position, np.array([0.0, 1.0, 0.0])) @ _small_rotation(rng, 1.0)
        R_depth = R_device @ axis_angle_to_matrix(np.radians(-6.0) * np.array([1.0, 0.0, 0.0]))
        rig.T_world_sensor[f"kinect_{serial}"] = make_pose(R_depth, position)
        a_k = 1.0 + rng.uniform(-60e-6, 60e-6)
        rig.time_maps[f"kinect_{serial}"] = TimeMap(a_k, -a_k * (rng.uniform(0.5, 1.0) + clocks[k].epoch_s))

    # --- frame times -----------------------------------------------------------------------------
    margin = 0.02
    pano_map = rig.time_maps["pano"]
    n_pano = int(np.floor((config.seconds - 2 * margin) * FPS)) + 1
    jitter = np.clip(rng.normal(scale=1e-3, size=n_pano), -3e-3, 3e-3)
    t_pano = np.round((pano_map.to_sensor(margin) + np.arange(n_pano) / FPS + jitter) * 1e6) / 1e6
    pano_t_session = pano_map.to_session(t_pano)
    latency = rng.uniform(0.06, 0.1)
    t_host = pano_t_session + latency + rng.normal(scale=5e-3, size=n_pano)

    master_map = rig.time_maps[f"kinect_{serials[0]}"]
    n_kinect = int(np.floor((config.seconds - 2 * margin - K_DELAY_ROOM) * FPS)) + 1
    first = master_map.to_sensor(margin)
    kinect_us, kinect_t_session = {}, {}
    master_us = np.round((first + np.arange(n_kinect) / FPS) * 1e6)
    master_t = master_map.to_session(master_us / 1e6)
    for k, serial in enumerate(serials):
        tm = rig.time_maps[f"kinect_{serial}"]
        us = master_us if k == 0 else np.round(tm.to_sensor(master_t + k * SUBORDINATE_DELAY_S) * 1e6)
        kinect_us[serial] = us.astype(np.int64)
        kinect_t_session[serial] = tm.to_session(us / 1e6)

    # --- truth motion ----------------------------------------------------------------------------
    t_truth = np.arange(int(np.ceil(config.seconds * TRUTH_RATE_HZ)) + 1) / TRUTH_RATE_HZ
    truth = _sample_in_chunks(people, skeleton, mano, t_truth)
    truth_dir = session.truth_dir
    truth_dir.mkdir(exist_ok=True)
    motion = {
        "t_session": t_truth,
        "smplx_local_rotmats": truth.local_rotmats.astype(np.float32),
        "betas": np.stack([p.betas for p in people]),
        "transl": truth.transl,
        "smplx_joints": truth.joints,
        "hand_joints": truth.hand_joints,
        "hand_global_R": truth.hand_global_R,
        "hand_pose": truth.hand_pose.astype(np.float32),
        "hand_betas": np.stack([p.hand_betas for p in people]),
        "hand_root_rest": np.stack([[mano.root_joint(side, p.hand_betas[s]) for s, side in enumerate(SIDES)] for p in people]),
        "hand_visible": hand_visibility(truth, pano_centre),
        "pano_frame_t_session": pano_t_session,
    }
    for serial in serials:
        motion[f"kinect_frame_t_session_{serial}"] = kinect_t_session[serial]
    np.savez_compressed(truth_dir / MOTION_FILE, **motion)
    rig.save(truth_dir / "rig.json")
    rig.save(session.rig_path)

    # The IMUs draw from their own generators so the rest of the simulation stays as it was without them.
    imu_rngs = [np.random.default_rng([config.seed, k, 0x1A]) for k in range(config.kinects)]
    kinects = [make_sim_kinect(serial, rig.T_world_sensor[f"kinect_{serial}"], rng, imu_rngs[k])
               for k, serial in enumerate(serials)]
    kinects = [replace(k, color=scale_color_camera(k.color, model)) for k in kinects]
    atomic_write_json(truth_dir / KINECTS_FILE, {
        "note": "T_world_color = T_world_depth (rig.json kinect_<serial>) @ inv(T_color_depth) (the calibration "
                "attachment of kinect_<serial>.mkv); metres, OpenCV camera axes",
        "kinects": [k.to_json() for k in kinects]})
    board = make_board_sequence(rng, pano_centre, kinects) if config.board else None
    if board is not None:
        atomic_write_json(truth_dir / BOARD_FILE, board.to_json())
    if flashes:
        atomic_write_json(truth_dir / FLASHES_FILE, {
            "t_session": list(flashes), "hold_s": FLASH_HOLD_S, "gain": FLASH_GAIN, "offset": FLASH_OFFSET,
            "t_pano": [float(pano_map.to_sensor(t)) for t in flashes],
            "t_kinect_device": {sn: [float(rig.time_maps[f"kinect_{sn}"].to_sensor(t)) for t in flashes]
                                for sn in serials},
            "note": "a light on from each t_session for hold_s seconds maps every colour value v to "
                    "min(255, v * gain + offset) in the panorama and in the Kinects' colour images; each frame is "
                    "exposed for one frame period of its own clock, centred on its timestamp"})
    hand_faces = {s: mano.faces_side(s) for s in SIDES}
    total = n_pano + (sum(len(kinect_us[s]) for s in serials) if config.kinect_video else 0)
    done = 0

    def advance() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    # --- Kinect body tracking and recordings ---------------------------------------------------
    # k4abt's errors draw from their own generators: a seed gives the same scene, rig and ordinary
    # noise at both realism levels.
    shared_bias = draw_shared_bias(np.random.default_rng([config.seed, 0x4AB7]), len(people))
    realism_record = {}
    for k, serial in enumerate(serials):
        sample = _sample_in_chunks(people, skeleton, mano, kinect_t_session[serial])
        tracks, realism_record[serial] = _kinect_tracks(
            sample, rig.T_world_sensor[f"kinect_{serial}"], config.kinect_noise_mm, rng, config.realism, shared_bias,
            np.random.default_rng([config.seed, k, 0x4AB7]))
        bodies_name = f"bodies_{serial}.json"
        write_bodies(session.path(bodies_name), BodyRecording(
            timestamps=kinect_us[serial] / 1e6, frame_ids=np.arange(len(kinect_us[serial])), bodies=tracks,
            source_file=f"kinect_{serial}.mkv"))
        role = ("master" if k == 0 else "subordinate") if config.kinects > 1 else "standalone"
        recording = None
        if config.kinect_video:
            recording = f"kinect_{serial}.mkv"
            _write_kinect_recording(session.path(recording), kinects[k], role, kinect_us[serial] / 1e6,
                                    kinect_t_session[serial], people, skeleton, mano, hand_faces, board, advance,
                                    imu_rngs[k], flashes, rig.time_maps[f"kinect_{serial}"].a / FPS,
                                    lambda p, kin, mode, k=k: open_sim_recording(p, kin, mode, model, clocks[k]))
        session.add_device(DeviceEntry(kind="kinect", serial=serial, role=role, fps=FPS, recording=recording,
                                       bodies=bodies_name, status="complete"))

    write_realism(truth_dir / REALISM_FILE, config.realism, realism_record)

    # --- the 360 stream --------------------------------------------------------------------------
    width = int(config.pano_width) // 2 * 2
    height = width // 2
    pano_entry = session.add_device(DeviceEntry(kind="pano", serial=PANO_SERIAL, role="camera", fps=FPS,
                                                recording=PANO_VIDEO, timestamps=PANO_FRAMES, width=width, height=height))
    renderer = PanoRenderer(width, T_world_pano, hand_faces)
    T_pano_world = invert_pose(T_world_pano)
    writer = PanoWriter(session.path(PANO_VIDEO), session.path(PANO_FRAMES), width, height, fps=FPS)
    try:
        for start in range(0, n_pano, RENDER_CHUNK):
            ids = np.arange(start, min(n_pano, start + RENDER_CHUNK))
            frames = sample_people(people, skeleton, mano, pano_t_session[ids], with_vertices=True)
            for j, i in enumerate(ids):
                img = renderer.render(frames.joints[:, j], frames.global_R[:, j], frames.hand_vertices[:, j])
                T_world_board = board.pose_at(float(pano_t_session[i])) if board is not None else None
                if T_world_board is not None:
                    draw_board(img, board.spec, renderer.camera, T_pano_world @ T_world_board)
                if flashes:
                    apply_flash(img, flash_fraction(float(pano_t_session[i]), pano_map.a / FPS, flashes))
                writer.write(img, float(t_pano[i]), float(t_host[i]))
                advance()
    finally:
        writer.close()
    pano_entry.status = "complete"
    session.mark_complete()
    return session


def _write_kinect_recording(path: Path, kinect: SimKinect, role: str, t_device: np.ndarray, t_session: np.ndarray,
                            people, skeleton, mano: ManoModel, hand_faces: dict[str, np.ndarray],
                            board: BoardSequence | None, advance: Callable[[], None],
                            imu_rng: np.random.Generator, flashes: tuple[float, ...] = (),
                            exposure_s: float = 1.0 / FPS, open_writer=open_recording) -> None:
    """Render and write one Kinect's recording: a capture at each device time ``t_device`` (seconds),
    the scene at the matching ``t_session``, and the IMU samples from the first capture to the last
    (noise from ``imu_rng``), each written after the capture that precedes it. The colour images
    show the ``flashes`` (session seconds) lit for the fraction of their exposure of ``exposure_s``
    session seconds, centred on ``t_session``."""
    renderer = KinectRenderer(kinect, hand_faces, board=board.spec if board is not None else BoardSpec())
    t_imu = t_device[0] + np.arange(int((t_device[-1] - t_device[0]) * IMU_RATE_HZ) + 1) / IMU_RATE_HZ
    acc, gyro = kinect.imu_samples(t_imu, imu_rng)
    imu_after = np.searchsorted(t_imu, t_device, side="left")  # first IMU sample at or after each capture
    imu_after = np.append(imu_after, len(t_imu))
    with open_writer(path, kinect, role.upper()) as writer:
        for start in range(0, len(t_device), RENDER_CHUNK):
            ids = np.arange(start, min(len(t_device), start + RENDER_CHUNK))
            frames = sample_people(people, skeleton, mano, t_session[ids], with_vertices=True)
            for j, i in enumerate(ids):
                T_world_board = board.pose_at(float(t_session[i])) if board is not None else None
                color, depth, ir = renderer.render(frames.joints[:, j], frames.global_R[:, j], frames.hand_vertices[:, j],
                                                   T_world_board)
                if flashes:
                    apply_flash(color, flash_fraction(float(t_session[i]), exposure_s, flashes))
                writer.write_capture(float(t_device[i]), color=color, depth=depth, ir=ir)
                imu = slice(imu_after[i], imu_after[i + 1])
                if imu.start < imu.stop:
                    writer.write_imu(t_imu[imu], acc[imu], t_imu[imu], gyro[imu])
                advance()
