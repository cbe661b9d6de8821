"""The simulated rig: a complete session folder with ground truth.

``simulate_session(out_dir, SimConfig(...))`` writes what a real capture writes (``session.json``,
``bodies_<serial>.json`` per Kinect in the k4abt JSON format, ``kinect_<serial>.mkv`` per Kinect
(colour, depth, IR and IMU with the factory calibration attached; see sim/kinect.py), ``pano.mkv``
+ ``pano_frames.csv``) plus ``truth/`` through capture/truth.py (the true rig, the people's motion,
the Kinects' colour cameras and, with a board sequence, the board's poses) and, until a calibration
replaces it, a copy of the true rig as the session's ``rig.json``.

Sensors (world frame: y up, metres, floor y = 0):
- the 360 camera about 1.0-1.2 m high, roughly level (small random tilt), OpenCV axes, facing the
  people; its own clock ``t_pano = (t_session - b) / a`` with a rate error of a few hundred ppm;
  frames at a nominal 30 fps on that clock with ~1 ms capture jitter (stamped exactly); host
  arrival times carry 60-100 ms latency and ~5 ms jitter. Its optics (``pano_*`` fields, defaults
  per realism level in :data:`PANO_DEFAULTS`): in ``ideal`` one viewpoint and a global shutter at
  1920 px, constant-quality H.264; in ``field`` two lenses 30 mm apart, a 25 ms rolling shutter and
  a 1/100 s exposure at 3840 px (sim/pano_camera.py), at a camera's bitrate. ``truth/realism.json``
  states them under ``camera`` with the rule that gives each pixel's capture time.
- K Kinects (the first is the master) 2-3 m from the people, 1.0-1.5 m high, their depth cameras
  (whose pose is ``T_world_kinect``) tilted ~6 deg down. Wired sync: every device captures at the
  master's frame times plus 160 us per device; each stamps on its own device clock (offset 0.5-1 s
  at the session start, small rate error). ``SimConfig.kinect_model`` picks the device model of
  capture/kinect_models.py: ``femto-bolt`` narrows the colour camera to 80 x 51 deg, gives Orbbec
  serials and firmware tags, adds an epoch-like offset to the device clocks and writes a start
  offset of minutes into each recording, as Orbbec's K4A wrapper does.

Body tracking is modelled from the truth (sim/body_tracking.py) with temporally correlated noise
(``kinect_noise_mm``); ``SimConfig.realism`` then decides what else a Kinect reports (sim/k4abt.py):
``"ideal"``: ~1% dropped bodies and k4abt ``body_id`` p for person p, nothing more; ``"field"``
(the default): k4abt's errors (joint-definition bias, noisier wrists and hands, front/back
confusion, new and swapped body ids, drop-outs). ``truth/realism.json`` records the level, the
scene's geometry per Kinect (facing away, hidden joints, crossings) and what was injected.

Board sequence (``SimConfig.board``, sim/board.py): during the first ~4 s a ChArUco board floats
beside the 360 camera, held still in several poses and then carried away; it is drawn over the people (it is held in front of them) in the panorama and
in every Kinect that sees it.

Flashes (``SimConfig.flashes``): at each given session time a light comes on for
``FLASH_HOLD_S`` (sim/render.py) and brightens the whole scene. Every panorama frame and every
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
from omnimocap.capture.bodies import BodyRecording, write_bodies
from omnimocap.capture.kinect_mkv_writer import KinectMkvWriter
from omnimocap.capture.kinect_models import DeviceClock, KinectModel, device_clock, kinect_model, scale_color_camera
from omnimocap.capture.dual_fisheye import LENSES_FILE, save_dual_fisheye
from omnimocap.capture.pano import PanoWriter
from omnimocap.capture.rig import Rig, TimeMap
from omnimocap.capture.session import PANO_FRAMES, PANO_VIDEO, DeviceEntry, Session, bodies_name, kinect_name, kinect_recording_name
from omnimocap.capture.truth import KINECT_FRAME_TIMES, Truth
from omnimocap.data.skeletons import SIDES, SMPLX_INDEX
from omnimocap.fusion.body_model import Skeleton, load_skeleton
from omnimocap.geometry.transforms import axis_angle_to_matrix, invert_pose, look_at, make_pose
from omnimocap.hands.mano import ManoModel
from omnimocap.hands.sim_field import FieldObserver, observer_record
from omnimocap.hands.synthetic_mano import make_synthetic_mano
from omnimocap.sim.board import BoardSequence, make_board_sequence
from omnimocap.sim.body_tracking import kinect_tracks
from omnimocap.sim.k4abt import REALISM_LEVELS, draw_shared_bias, realism_record
from omnimocap.sim.kinect import IMU_RATE_HZ, KinectRenderer, SimKinect, make_sim_kinect, open_sim_recording
from omnimocap.sim.motion import PeopleSample, PersonMotion, make_people, sample_people
from omnimocap.geometry.pano_optics import PanoOptics
from omnimocap.geometry.cameras import DualFisheyeCamera
from omnimocap.sim.fisheye import DualFisheyeRenderer
from omnimocap.sim.pano_camera import FieldPanoRenderer, PeopleOverShutter, shutter_offsets
from omnimocap.sim.render import FLASH_GAIN, FLASH_HOLD_S, FLASH_OFFSET, PanoRenderer, apply_flash, flash_fraction

FPS = 30.0
TRUTH_RATE_HZ = 240.0
SUBORDINATE_DELAY_S = 160e-6
# The subordinates' last frame lags the master's by up to 160 us per device; keep it in the session.
K_DELAY_ROOM = 0.01
# Frames start this long after the session starts and end this long before it ends (seconds).
FRAME_MARGIN_S = 0.02
HAND_VISIBLE_RANGE_M = (0.3, 2.5)
TORSO_RADIUS_M = 0.14
PANO_SERIAL = "sim360"
RENDER_CHUNK = 15  # frames sampled (with hand meshes) at once
# Each realism level's 360 camera: equirect width (pixels), lens baseline (mm), readout (ms), exposure (ms).
PANO_DEFAULTS = {"ideal": {"pano_width": 1920, "pano_baseline_mm": 0.0, "pano_readout_ms": 0.0, "pano_exposure_ms": 0.0},
                 "field": {"pano_width": 3840, "pano_baseline_mm": 30.0, "pano_readout_ms": 25.0, "pano_exposure_ms": 10.0}}
# A camera's 4K H.264 stream: 56 Mbit/s at 3840x1920, 30 fps (RICOH THETA V and Z1 4K video); other
# sizes get the same bits per pixel. Ideal-optics sessions keep the constant-quality stream.
PANO_BITRATE_4K = 56_000_000
# The 360 stream's formats: a stitched equirectangular panorama, or the raw frames of a dual-fisheye camera.
DUAL_FISHEYE = "dual-fisheye"
PANO_FORMATS = ("equirect", DUAL_FISHEYE)


@dataclass
class SimConfig:
    """What to simulate. Units: seconds, metres, pixels, millimetres where named."""

    seconds: float = 8.0
    """Session length, seconds."""
    people: int = 2
    """Number of people, 1 to 3."""
    kinects: int = 2
    """Number of Kinects, at least 1 (the first is the wired-sync master)."""
    seed: int = 0
    """Random seed of the scene, the rig and every error drawn."""
    pano_width: int | None = None
    """Equirectangular width, pixels (height = width / 2); default: the realism level's, 1920 in ideal,
    3840 in field (a RICOH THETA Z1's or V's 4K stream)."""
    pano_baseline_mm: float | None = None
    """Distance between the 360 camera's two lens centres, millimetres; default: the realism level's,
    0 in ideal (one viewpoint), 30 in field."""
    pano_readout_ms: float | None = None
    """Rolling-shutter readout of each 360 lens's sensor, first row to last, milliseconds; default: the
    realism level's, 0 in ideal (global shutter), 25 in field."""
    pano_exposure_ms: float | None = None
    """Exposure of each row of the 360 camera, milliseconds (motion blur); default: the realism
    level's, 0 in ideal (none), 10 in field (1/100 s)."""
    kinect_noise_mm: float = 15.0
    """Body tracking joint noise, millimetres; 0 gives exact joints and no drop-outs."""
    smplx_path: Path | None = None
    """Drive the motion on this SMPL-X file's skeleton (default: the built-in skeleton)."""
    mano_path: Path | None = None
    """MANO_RIGHT.pkl (or its folder) of the hands (default: the synthetic MANO)."""
    kinect_video: bool = True
    """Write kinect_<serial>.mkv (colour, depth, IR) per Kinect, not only the body tracking JSON."""
    board: bool = False
    """A ChArUco board held still in several poses and then carried away during the first ~4 s, for
    calibrate --method board."""
    flashes: tuple[float, ...] = ()
    """Session times (seconds) at which a light comes on for about half a second (FLASH_HOLD_S), for
    sync --flash."""
    kinect_model: str = "azure"
    """The Kinects' device model: azure (Azure Kinect DK) or femto-bolt (Orbbec Femto Bolt through
    Orbbec's K4A wrapper: 80x51 deg colour, epoch-like device times, start offsets of minutes)."""
    realism: str = "field"
    """field: the Kinects make k4abt's errors (joint-definition bias, noisy hands, mirrored bodies, new
    and swapped ids, drop-outs; sim/k4abt.py); ideal: none of them."""
    overwrite: bool = False
    """Replace the contents of a non-empty output folder."""
    pano_yaw_deg: float = 0.0
    """The 360 camera turned about the world's vertical (y) by this angle, degrees, after it is drawn
    (90: the people stand beside it, across its seam); nothing else in the scene changes."""
    pano_format: str = "equirect"
    """The 360 stream: equirect (the camera's stitched equirectangular panorama) or dual-fisheye (its
    raw frames, two equidistant 200 deg fisheye images side by side, pano_width x pano_width/2, with
    the lens model in pano_lenses.json; a global shutter without blur, so readout and exposure are 0)."""


@dataclass
class _Scene:
    """What the simulation drew: the people on ``skeleton`` with hands of ``mano``, the true ``rig``
    (sensors ``pano`` and ``kinect_<serial>``), the 360 camera's centre (world, metres), the Kinects'
    serials, device clocks and model."""

    people: list[PersonMotion]
    skeleton: Skeleton
    mano: ManoModel
    rig: Rig
    pano_centre: np.ndarray
    serials: list[str]
    clocks: list[DeviceClock]
    model: KinectModel

    @property
    def hand_faces(self) -> dict[str, np.ndarray]:
        return {s: self.mano.faces_side(s) for s in SIDES}


@dataclass
class _FrameTimes:
    """Every frame's stamps: the 360 camera's on its clock ``t_pano`` (F,), their true session times
    and host arrival times (F,); each Kinect's device times in microseconds and true session times."""

    t_pano: np.ndarray
    pano_t_session: np.ndarray
    t_host: np.ndarray
    kinect_us: dict[str, np.ndarray]
    kinect_t_session: dict[str, np.ndarray]


class _Progress:
    """Counts rendered frames and reports ``(done, total)`` to an optional callback."""

    def __init__(self, total: int, callback: Callable[[int, int], None] | None):
        self.total, self.done, self.callback = total, 0, callback

    def advance(self) -> None:
        self.done += 1
        if self.callback is not None:
            self.callback(self.done, self.total)


def simulate_session(out_dir: str | Path, config: SimConfig = SimConfig(),
                     progress: Callable[[int, int], None] | None = None) -> Session:
    """Write a simulated session to ``out_dir`` and return it (status complete).

    ``progress(done, total)`` is called after each rendered frame (panorama and Kinect colour)."""
    flashes = _checked_flashes(config)
    rng = np.random.default_rng(config.seed)
    session = Session.create(out_dir, simulated=True, overwrite=config.overwrite)
    skeleton = load_skeleton(config.smplx_path)
    mano = ManoModel.load(config.mano_path) if config.mano_path else ManoModel.from_dict(make_synthetic_mano("right"))
    scene = _draw_scene(config, rng, skeleton, mano)
    frames = _frame_times(config, rng, scene)
    truth = Truth(session.root)
    truth.write_motion(_truth_motion(config, scene, frames))
    truth.write_rig(scene.rig)
    scene.rig.save(session.rig_path)
    # The IMUs draw from their own generators so the rest of the simulation stays as it was without them.
    imu_rngs = [np.random.default_rng([config.seed, k, 0x1A]) for k in range(config.kinects)]
    kinects = _make_kinects(scene, rng, imu_rngs)
    truth.write_kinects(_kinects_record(kinects))
    board = make_board_sequence(rng, scene.pano_centre, kinects) if config.board else None
    if board is not None:
        truth.write_board(board.to_json())
    if flashes:
        truth.write_flashes(_flashes_record(flashes, scene))
    n_kinect_frames = sum(len(frames.kinect_us[s]) for s in scene.serials) if config.kinect_video else 0
    counter = _Progress(len(frames.t_pano) + n_kinect_frames, progress)
    records = _write_body_tracking(session, config, scene, frames, kinects, rng, imu_rngs, board, flashes, counter)
    camera = camera_record(pano_optics(config))
    if config.pano_format == DUAL_FISHEYE:
        camera.update(format=DUAL_FISHEYE, lenses=LENSES_FILE, shutter="global, no blur: readout_s and exposure_s are 0")
    truth.write_realism({**realism_record(config.realism, records), "camera": camera,
                         "observer": observer_record(config.realism, seamless_observer(config))})
    _write_pano(session, config, scene, frames, board, flashes, counter)
    session.mark_complete()
    return session


def _checked_flashes(config: SimConfig) -> tuple[float, ...]:
    """The flash times, sorted, after checking the whole config (ValueError with what is wrong)."""
    if config.kinects < 1:
        raise ValueError("the simulation needs at least one Kinect")
    if config.seconds <= 0.2:
        raise ValueError("the simulated session must last more than 0.2 s")
    flashes = tuple(sorted(float(t) for t in config.flashes))
    if flashes and (flashes[0] < 0 or flashes[-1] > config.seconds):
        raise ValueError(f"flash times {flashes} must lie within the session, 0 to {config.seconds} s")
    if config.realism not in REALISM_LEVELS:
        raise ValueError(f"realism must be one of {REALISM_LEVELS}, got {config.realism!r}")
    for name in PANO_DEFAULTS[config.realism]:
        if getattr(config, name) is not None and not getattr(config, name) >= 0:
            raise ValueError(f"{name} must be a non-negative number, got {getattr(config, name)!r}")
    if config.pano_format not in PANO_FORMATS:
        raise ValueError(f"pano_format must be one of {PANO_FORMATS}, got {config.pano_format!r}")
    if config.pano_format == DUAL_FISHEYE and (pano_setting(config, "pano_readout_ms") or
                                               pano_setting(config, "pano_exposure_ms")):
        raise ValueError("raw dual-fisheye frames are simulated with a global shutter and no blur: "
                         "pano_readout_ms and pano_exposure_ms must be 0")
    if np.any(np.diff(flashes) < FLASH_HOLD_S):
        raise ValueError(f"flashes {flashes} overlap: they must be at least {FLASH_HOLD_S} s apart")
    return flashes


def pano_setting(config: SimConfig, name: str) -> float:
    """The 360 camera's setting ``name`` (a ``pano_*`` field of :class:`SimConfig`): the config's
    value, or where it is None the realism level's (:data:`PANO_DEFAULTS`)."""
    value = getattr(config, name)
    if value is None and config.pano_format == DUAL_FISHEYE and name in ("pano_readout_ms", "pano_exposure_ms"):
        return 0.0
    return PANO_DEFAULTS[config.realism][name] if value is None else value


def pano_optics(config: SimConfig) -> PanoOptics:
    """The optics of the simulated 360 camera (baseline, readout, exposure in SI units)."""
    return PanoOptics(baseline_m=pano_setting(config, "pano_baseline_mm") / 1000.0,
                      readout_s=pano_setting(config, "pano_readout_ms") / 1000.0,
                      exposure_s=pano_setting(config, "pano_exposure_ms") / 1000.0)


def camera_record(optics: PanoOptics) -> dict:
    """``truth/realism.json``'s ``camera`` record: the optics injected and the rule of pixel times."""
    return {**optics.to_dict(),
            "note": "geometry/pano_optics.py PanoOptics: lens centres at (0, 0, +-baseline_m/2) in the 360 camera's frame, "
                    "stitched at infinity, seam z = 0, blended within blend_deg of it; pixel (column, row) of a frame "
                    "was captured at the frame's pano_frame_t_session + PanoOptics.time_offset_s of the pixel's "
                    "direction (readout_s * (row_fraction - 0.5)), exposed for exposure_s centred on that time "
                    "(capture/truth.py pano_pixel_times)"}


def _small_rotation(rng: np.random.Generator, deg: float) -> np.ndarray:
    return axis_angle_to_matrix(np.radians(deg) * rng.normal(size=3) / np.sqrt(3))


def _draw_scene(config: SimConfig, rng: np.random.Generator, skeleton: Skeleton, mano: ManoModel) -> _Scene:
    """The 360 camera, the people, the Kinects and every sensor's clock (see the module docstring),
    drawn from ``rng`` in a fixed order (a seed gives the same scene)."""
    pano_centre = np.array([rng.uniform(-0.1, 0.1), rng.uniform(1.0, 1.2), rng.uniform(-0.1, 0.1)])
    R_world_pano = _small_rotation(rng, 2.0) @ look_at(np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0]))
    if config.pano_yaw_deg:
        R_world_pano = axis_angle_to_matrix(np.radians(config.pano_yaw_deg) * np.array([0.0, 1.0, 0.0])) @ R_world_pano
    people = make_people(config.people, rng, pano_centre, skeleton)
    crowd = np.mean([p.home for p in people], axis=0)
    rig = Rig(method="truth", is_truth=True, pano_optics=pano_optics(config))
    rig.T_world_sensor["pano"] = make_pose(R_world_pano, pano_centre)
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
        rig.T_world_sensor[kinect_name(serial)] = make_pose(R_depth, position)
        a_k = 1.0 + rng.uniform(-60e-6, 60e-6)
        rig.time_maps[kinect_name(serial)] = TimeMap(a_k, -a_k * (rng.uniform(0.5, 1.0) + clocks[k].epoch_s))
    return _Scene(people, skeleton, mano, rig, pano_centre, serials, clocks, model)


def _frame_times(config: SimConfig, rng: np.random.Generator, scene: _Scene) -> _FrameTimes:
    """The 360 camera's frames at 30 fps on its clock with capture jitter and host latency; the
    Kinects' at the master's frame times plus :data:`SUBORDINATE_DELAY_S` per device, each stamped
    on its device clock."""
    rig, serials = scene.rig, scene.serials
    margin = FRAME_MARGIN_S
    pano_map = rig.time_maps["pano"]
    n_pano = int(np.floor((config.seconds - 2 * margin) * FPS)) + 1
    jitter = np.clip(rng.normal(scale=1e-3, size=n_pano), -3e-3, 3e-3)
    t_pano = np.round((pano_map.to_sensor(margin) + np.arange(n_pano) / FPS + jitter) * 1e6) / 1e6
    pano_t_session = pano_map.to_session(t_pano)
    latency = rng.uniform(0.06, 0.1)
    t_host = pano_t_session + latency + rng.normal(scale=5e-3, size=n_pano)

    master_map = rig.time_maps[kinect_name(serials[0])]
    n_kinect = int(np.floor((config.seconds - 2 * margin - K_DELAY_ROOM) * FPS)) + 1
    first = master_map.to_sensor(margin)
    kinect_us, kinect_t_session = {}, {}
    master_us = np.round((first + np.arange(n_kinect) / FPS) * 1e6)
    master_t = master_map.to_session(master_us / 1e6)
    for k, serial in enumerate(serials):
        tm = rig.time_maps[kinect_name(serial)]
        us = master_us if k == 0 else np.round(tm.to_sensor(master_t + k * SUBORDINATE_DELAY_S) * 1e6)
        kinect_us[serial] = us.astype(np.int64)
        kinect_t_session[serial] = tm.to_session(us / 1e6)
    return _FrameTimes(t_pano, pano_t_session, t_host, kinect_us, kinect_t_session)


def _sample_in_chunks(people, skeleton, mano, t: np.ndarray, chunk: int = 480) -> PeopleSample:
    parts = [sample_people(people, skeleton, mano, t[i:i + chunk]) for i in range(0, len(t), chunk)]
    return PeopleSample(**{k: (None if k == "hand_vertices" else np.concatenate([getattr(p, k) for p in parts], axis=1))
                           for k in PeopleSample.__dataclass_fields__})


def _truth_motion(config: SimConfig, scene: _Scene, frames: _FrameTimes) -> dict[str, np.ndarray]:
    """The arrays of ``truth/motion.npz`` (capture/truth.py): the people sampled at
    :data:`TRUTH_RATE_HZ` over the session, and every frame's true session time."""
    people, mano = scene.people, scene.mano
    t_truth = np.arange(int(np.ceil(config.seconds * TRUTH_RATE_HZ)) + 1) / TRUTH_RATE_HZ
    truth = _sample_in_chunks(people, scene.skeleton, mano, t_truth)
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
        "hand_visible": hand_visibility(truth, scene.pano_centre),
        "pano_frame_t_session": frames.pano_t_session,
    }
    for serial in scene.serials:
        motion[KINECT_FRAME_TIMES.format(serial=serial)] = frames.kinect_t_session[serial]
    return motion


def _make_kinects(scene: _Scene, rng: np.random.Generator, imu_rngs: list[np.random.Generator]) -> list[SimKinect]:
    """Each Kinect's device (cameras from ``rng``, IMU mounting from its ``imu_rngs``), its colour
    camera as the Kinect model has it."""
    kinects = [make_sim_kinect(serial, scene.rig.T_world_sensor[kinect_name(serial)], rng, imu_rngs[k])
               for k, serial in enumerate(scene.serials)]
    return [replace(k, color=scale_color_camera(k.color, scene.model)) for k in kinects]


def _kinects_record(kinects: list[SimKinect]) -> dict:
    """``truth/kinects.json``: each Kinect's true colour camera and extrinsics."""
    return {"note": "T_world_color = T_world_depth (rig.json kinect_<serial>) @ inv(T_color_depth) (the calibration "
                    "attachment of kinect_<serial>.mkv); metres, OpenCV camera axes",
            "kinects": [k.to_json() for k in kinects]}


def _flashes_record(flashes: tuple[float, ...], scene: _Scene) -> dict:
    """``truth/flashes.json``: the light's session times and their times on every sensor's clock."""
    rig = scene.rig
    return {
        "t_session": list(flashes), "hold_s": FLASH_HOLD_S, "gain": FLASH_GAIN, "offset": FLASH_OFFSET,
        "t_pano": [float(rig.time_maps["pano"].to_sensor(t)) for t in flashes],
        "t_kinect_device": {sn: [float(rig.time_maps[kinect_name(sn)].to_sensor(t)) for t in flashes]
                            for sn in scene.serials},
        "note": "a light on from each t_session for hold_s seconds maps every colour value v to "
                "min(255, v * gain + offset) in the panorama and in the Kinects' colour images; each frame is "
                "exposed for one frame period of its own clock, centred on its timestamp"}


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


def _write_body_tracking(session: Session, config: SimConfig, scene: _Scene, frames: _FrameTimes,
                         kinects: list[SimKinect], rng: np.random.Generator, imu_rngs: list[np.random.Generator],
                         board: BoardSequence | None, flashes: tuple[float, ...], counter: _Progress) -> dict[str, dict]:
    """Every Kinect's ``bodies_<serial>.json`` and, with ``kinect_video``, its recording, each added
    to the manifest; returns each Kinect's record for ``truth/realism.json``."""
    # k4abt's errors draw from their own generators: a seed gives the same scene, rig and ordinary
    # noise at both realism levels.
    shared_bias = draw_shared_bias(np.random.default_rng([config.seed, 0x4AB7]), len(scene.people))
    records = {}
    for k, serial in enumerate(scene.serials):
        name = kinect_name(serial)
        us, t_session = frames.kinect_us[serial], frames.kinect_t_session[serial]
        sample = _sample_in_chunks(scene.people, scene.skeleton, scene.mano, t_session)
        tracks, records[serial] = kinect_tracks(
            sample, scene.rig.T_world_sensor[name], config.kinect_noise_mm, rng, config.realism, shared_bias,
            np.random.default_rng([config.seed, k, 0x4AB7]))
        bodies_file = bodies_name(serial)
        write_bodies(session.path(bodies_file), BodyRecording(
            timestamps=us / 1e6, frame_ids=np.arange(len(us)), bodies=tracks, source_file=kinect_recording_name(serial)))
        role = ("master" if k == 0 else "subordinate") if config.kinects > 1 else "standalone"
        recording = None
        if config.kinect_video:
            recording = kinect_recording_name(serial)
            clock = scene.clocks[k]
            _write_kinect_recording(session.path(recording), kinects[k], role, us / 1e6, t_session, scene.people,
                                    scene.skeleton, scene.mano, scene.hand_faces, board, counter.advance,
                                    imu_rngs[k], flashes, scene.rig.time_maps[name].a / FPS,
                                    lambda path, kinect, mode: open_sim_recording(path, kinect, mode, scene.model, clock))
        session.add_device(DeviceEntry(kind="kinect", serial=serial, role=role, fps=FPS, recording=recording,
                                       bodies=bodies_file, status="complete"))
    return records


def _write_pano(session: Session, config: SimConfig, scene: _Scene, frames: _FrameTimes,
                board: BoardSequence | None, flashes: tuple[float, ...], counter: _Progress) -> None:
    """Render the 360 stream (``pano.mkv`` + ``pano_frames.csv``) and add it to the manifest: with
    ideal optics one viewpoint and a global shutter (sim/render.py ``PanoRenderer``), otherwise two
    lenses, a rolling shutter and motion blur (sim/pano_camera.py) and a camera's bitrate."""
    if config.pano_format == DUAL_FISHEYE:
        _write_dual_fisheye(session, config, scene, frames, board, flashes, counter)
        return
    width = int(pano_setting(config, "pano_width")) // 2 * 2
    height = width // 2
    pano_entry = session.add_device(DeviceEntry(kind="pano", serial=PANO_SERIAL, role="camera", fps=FPS,
                                                recording=PANO_VIDEO, timestamps=PANO_FRAMES, width=width, height=height))
    optics = pano_optics(config)
    ideal = optics.is_ideal and optics.exposure_s == 0.0
    bitrate = None if ideal else int(round(PANO_BITRATE_4K * width * height / (3840 * 1920)))
    writer = PanoWriter(session.path(PANO_VIDEO), session.path(PANO_FRAMES), width, height, fps=FPS, bitrate=bitrate)
    render = _ideal_pano_frames if ideal else _field_pano_frames
    try:
        for i, img in render(width, optics, scene, frames, board, flashes):
            writer.write(img, float(frames.t_pano[i]), float(frames.t_host[i]))
            counter.advance()
    finally:
        writer.close()
    pano_entry.status = "complete"


def _ideal_pano_frames(width: int, optics: PanoOptics, scene: _Scene, frames: _FrameTimes,
                       board: BoardSequence | None, flashes: tuple[float, ...]):
    """(index, frame) of every panorama frame from one viewpoint with a global shutter, each frame
    lit by the flashes over one frame period."""
    T_world_pano = scene.rig.T_world_sensor["pano"]
    renderer = PanoRenderer(width, T_world_pano, scene.hand_faces)
    T_pano_world = invert_pose(T_world_pano)
    exposure_s = scene.rig.time_maps["pano"].a / FPS
    t_session = frames.pano_t_session
    for start in range(0, len(t_session), RENDER_CHUNK):
        ids = np.arange(start, min(len(t_session), start + RENDER_CHUNK))
        sample = sample_people(scene.people, scene.skeleton, scene.mano, t_session[ids], with_vertices=True)
        for j, i in enumerate(ids):
            img = renderer.render(sample.joints[:, j], sample.global_R[:, j], sample.hand_vertices[:, j])
            T_world_board = board.pose_at(float(t_session[i])) if board is not None else None
            if T_world_board is not None:
                draw_board(img, board.spec, renderer.camera, T_pano_world @ T_world_board)
            if flashes:
                apply_flash(img, flash_fraction(float(t_session[i]), exposure_s, flashes))
            yield i, img


def _field_pano_frames(width: int, optics: PanoOptics, scene: _Scene, frames: _FrameTimes,
                       board: BoardSequence | None, flashes: tuple[float, ...]):
    """(index, frame) of every panorama frame as the two-lens, rolling-shutter camera ``optics``
    takes it: the people sampled at :func:`~omnimocap.sim.pano_camera.shutter_offsets` around each
    frame's true session time."""
    renderer = FieldPanoRenderer(width, scene.rig.T_world_sensor["pano"], scene.hand_faces, optics)
    offsets = shutter_offsets(optics)
    t_session = frames.pano_t_session
    for start in range(0, len(t_session), RENDER_CHUNK):
        ids = np.arange(start, min(len(t_session), start + RENDER_CHUNK))
        t = (t_session[ids][:, None] + offsets[None, :]).ravel()
        sample = sample_people(scene.people, scene.skeleton, scene.mano, t, with_vertices=True)
        P, S = len(scene.people), len(offsets)
        joints = sample.joints.reshape(P, len(ids), S, *sample.joints.shape[2:])
        verts = sample.hand_vertices.reshape(P, len(ids), S, *sample.hand_vertices.shape[2:])
        glob = sample.global_R.reshape(P, len(ids), S, *sample.global_R.shape[2:])
        for j, i in enumerate(ids):
            people = PeopleOverShutter(offsets, np.moveaxis(joints[:, j], 1, 0), np.moveaxis(verts[:, j], 1, 0),
                                       glob[:, j, S // 2])
            yield i, renderer.render(people, float(t_session[i]), board, flashes)


def seamless_observer(config: SimConfig) -> FieldObserver | None:
    """The field observers of a raw dual-fisheye session: a view is cut from one lens, so there is
    no blend band nor blind strip and no seam misses (None, the default observers, otherwise)."""
    if config.pano_format != DUAL_FISHEYE:
        return None
    default = FieldObserver()
    return FieldObserver(*(replace(m, miss=replace(m.miss, seam=0.0))
                           for m in (default.hands, default.hand_detector, default.pose_detector)))


def _write_dual_fisheye(session: Session, config: SimConfig, scene: _Scene, frames: _FrameTimes,
                        board: BoardSequence | None, flashes: tuple[float, ...], counter: _Progress) -> None:
    """Render the 360 stream as the camera's raw dual-fisheye frames (sim/fisheye.py, each lens from
    its own centre, ``pano_baseline_mm`` apart; a global shutter), encode them like the stitched
    stream (``pano.mkv`` + ``pano_frames.csv``) and store the lens model (``pano_lenses.json``) the
    manifest's 360 entry names."""
    optics = pano_optics(config)
    camera = DualFisheyeCamera.nominal(int(pano_setting(config, "pano_width")) // 4 * 4, baseline_m=optics.baseline_m)
    save_dual_fisheye(camera, session.path(LENSES_FILE))
    width, height = camera.width, camera.height
    pano_entry = session.add_device(DeviceEntry(kind="pano", serial=PANO_SERIAL, role="camera", fps=FPS,
                                                recording=PANO_VIDEO, timestamps=PANO_FRAMES, width=width,
                                                height=height, lenses=LENSES_FILE))
    ideal = optics.is_ideal and optics.exposure_s == 0.0
    bitrate = None if ideal else int(round(PANO_BITRATE_4K * width * height / (3840 * 1920)))
    writer = PanoWriter(session.path(PANO_VIDEO), session.path(PANO_FRAMES), width, height, fps=FPS, bitrate=bitrate)
    renderer = DualFisheyeRenderer(camera, scene.rig.T_world_sensor["pano"], scene.hand_faces)
    exposure_s = scene.rig.time_maps["pano"].a / FPS
    t_session = frames.pano_t_session
    try:
        for start in range(0, len(t_session), RENDER_CHUNK):
            ids = np.arange(start, min(len(t_session), start + RENDER_CHUNK))
            sample = sample_people(scene.people, scene.skeleton, scene.mano, t_session[ids], with_vertices=True)
            for j, i in enumerate(ids):
                T_world_board = board.pose_at(float(t_session[i])) if board is not None else None
                img = renderer.render(sample.joints[:, j], sample.global_R[:, j], sample.hand_vertices[:, j],
                                      None if T_world_board is None else (board.spec, T_world_board),
                                      flash_fraction(float(t_session[i]), exposure_s, flashes) if flashes else 0.0)
                writer.write(img, float(frames.t_pano[i]), float(frames.t_host[i]))
                counter.advance()
    finally:
        writer.close()
    pano_entry.status = "complete"


def _write_kinect_recording(path: Path, kinect: SimKinect, role: str, t_device: np.ndarray, t_session: np.ndarray,
                            people, skeleton, mano: ManoModel, hand_faces: dict[str, np.ndarray],
                            board: BoardSequence | None, advance: Callable[[], None],
                            imu_rng: np.random.Generator, flashes: tuple[float, ...],
                            exposure_s: float, open_writer: Callable[[Path, SimKinect, str], KinectMkvWriter]) -> None:
    """Render and write one Kinect's recording: a capture at each device time ``t_device`` (seconds),
    the scene at the matching ``t_session``, and the IMU samples from the first capture to the last
    (noise from ``imu_rng``), each written after the capture that precedes it. The colour images
    show the ``flashes`` (session seconds) lit for the fraction of their exposure of ``exposure_s``
    session seconds, centred on ``t_session``. ``open_writer(path, kinect, wired_sync_mode)`` opens
    the recording."""
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
