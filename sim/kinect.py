"""Azure Kinect recordings of the simulated scene.

Each simulated Kinect gets a ``kinect_<serial>.mkv`` as the Azure Kinect recorder writes it
(:class:`omnimocap.capture.kinect_mkv_writer.KinectMkvWriter`): MJPG colour in the 720P mode (the
smallest colour mode the device has), depth in the NFOV 2x2 binned mode (320x288, uint16 mm along
the optical axis, 0 where nothing returns within the mode's range) and active IR (uint16, falling
off with the square of the distance), with a ``calibration.json`` attachment in the device's format
(:func:`omnimocap.capture.kinect_calibration.calibration_json`) that holds the true colour and depth
cameras of the simulated device, its true ``T_color_depth`` and its true IMU extrinsics, and an IMU
track: the device stands still, so the accelerometer reads the specific force of gravity (+9.81
m/s^2 along the world's up, in its own axes) and the gyroscope zero, each with white noise and a
small constant bias, at :data:`IMU_RATE_HZ` (a quarter of the device's 1.6 kHz, to keep the files
small).

Geometry of a simulated device: its depth camera is the rig's ``kinect_<serial>`` sensor
(``T_world_depth``); the colour camera sits about 32 mm to its left, turned about 6 deg up (the
depth camera's tilt), with per-device deviations of a few tenths of a degree and a millimetre; the
IMU sits at its nominal mounting (:data:`NOMINAL_T_ACCEL_DEPTH`) within about 0.1 deg / 0.5 mm.
The colour camera's true pose is ``T_world_depth @ inv(T_color_depth)``, derivable from
``truth/rig.json`` and the attachment; the simulation also writes it to ``truth/kinects.json``.

The people are drawn by the rasteriser of :mod:`omnimocap.sim.render` (capsules, heads and
MANO hand meshes); a ChArUco board, when one is in the scene, is drawn over them in the colour
image and replaces their depth where it covers them (it is held in front of the people).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omnimocap.capture.kinect_models import DeviceClock, KinectModel
from omnimocap.calibration.board import BoardSpec, draw_board
from omnimocap.geometry.cameras import PinholeCamera
from omnimocap.geometry.transforms import axis_angle_to_matrix, invert_pose, make_pose, transform_points
from omnimocap.capture.kinect_calibration import (
    DEPTH_MODES, NOMINAL_T_ACCEL_DEPTH, NOMINAL_T_GYRO_DEPTH, calibration_json,
)
from omnimocap.capture.kinect_mkv_writer import KinectMkvWriter
from omnimocap.sim.render import (
    RoomSpec, camera_rays, pinhole_projection, rasterise_people, render_background, room_hits,
)

COLOR_RESOLUTION = "720P"
COLOR_MODE = f"MJPG_{COLOR_RESOLUTION}"
DEPTH_MODE = "NFOV_2X2BINNED"
# Operating range of the NFOV depth modes (metres); outside it the device reports 0.
DEPTH_RANGE_M = (0.5, 3.86)
# Nominal 720P colour camera of an Azure Kinect (pixels; mild Brown-Conrady distortion).
_COLOR_NOMINAL = PinholeCamera(605.0, 605.0, 639.5, 365.5, 1280, 720, (0.08, -0.05, 0.0008, -0.0004, 0.01))
_DEPTH_BINNED_F = 252.0  # NFOV 2x2 binned focal length in pixels (half the unbinned 504)
GRAVITY_MS2 = 9.81
IMU_RATE_HZ = 400.0
# White noise per sample and the scale of the per-device constant bias (m/s^2, rad/s).
ACC_NOISE_MS2, ACC_BIAS_MS2 = 0.01, 0.003
GYRO_NOISE_RADS, GYRO_BIAS_RADS = 0.001, 0.0005


@dataclass(frozen=True)
class SimKinect:
    """One simulated device: ``T_world_depth`` (the rig's pose of the Kinect), its colour and depth
    cameras in :data:`COLOR_MODE` / :data:`DEPTH_MODE`, ``T_color_depth`` and the IMU extrinsics
    ``T_accel_depth`` / ``T_gyro_depth`` (depth frame to sensor axes; metres)."""

    serial: str
    T_world_depth: np.ndarray
    color: PinholeCamera
    depth: PinholeCamera
    T_color_depth: np.ndarray
    T_accel_depth: np.ndarray = field(default_factory=NOMINAL_T_ACCEL_DEPTH.copy)
    T_gyro_depth: np.ndarray = field(default_factory=NOMINAL_T_GYRO_DEPTH.copy)

    @property
    def T_world_color(self) -> np.ndarray:
        return self.T_world_depth @ invert_pose(self.T_color_depth)

    def calibration_json(self) -> bytes:
        return calibration_json(self.color, self.depth, self.T_color_depth, color_resolution=COLOR_RESOLUTION,
                                depth_mode=DEPTH_MODE, serial=self.serial, T_accel_depth=self.T_accel_depth,
                                T_gyro_depth=self.T_gyro_depth)

    def imu_samples(self, t_device: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Accelerometer (N,3) m/s^2 and gyroscope (N,3) rad/s readings of the still device at the
        device times ``t_device`` (N,), each in its sensor's axes; bias and noise drawn from ``rng``."""
        n = len(t_device)
        up_depth = self.T_world_depth[:3, :3].T @ np.array([0.0, 1.0, 0.0])
        acc = self.T_accel_depth[:3, :3] @ (GRAVITY_MS2 * up_depth)
        acc = acc + rng.normal(scale=ACC_BIAS_MS2, size=3) + rng.normal(scale=ACC_NOISE_MS2, size=(n, 3))
        gyro = rng.normal(scale=GYRO_BIAS_RADS, size=3) + rng.normal(scale=GYRO_NOISE_RADS, size=(n, 3))
        return acc, gyro

    def to_json(self) -> dict:
        return {"serial": self.serial, "T_world_color": self.T_world_color.tolist(),
                "T_color_depth": self.T_color_depth.tolist(), "T_accel_depth": self.T_accel_depth.tolist(),
                "T_gyro_depth": self.T_gyro_depth.tolist(), "color": self.color.to_dict(),
                "depth": self.depth.to_dict(), "color_mode": COLOR_MODE, "depth_mode": DEPTH_MODE}


def make_sim_kinect(serial: str, T_world_depth: np.ndarray, rng: np.random.Generator,
                    imu_rng: np.random.Generator | None = None) -> SimKinect:
    """A device at ``T_world_depth`` with factory-like cameras: nominal intrinsics within a pixel
    or two, the colour camera 32 mm left of the depth camera and the depth camera tilted 6 deg down
    from it, each within a few tenths of a degree / a millimetre. The IMU's mounting deviates from
    the nominal one by draws from ``imu_rng`` (a separate generator, so that adding it leaves the
    other draws of ``rng`` unchanged); nominal without it."""
    c = _COLOR_NOMINAL
    color = PinholeCamera(c.fx + rng.normal(scale=2.0), c.fy + rng.normal(scale=2.0), c.cx + rng.normal(scale=1.5),
                          c.cy + rng.normal(scale=1.5), c.width, c.height, c.distortion)
    (w, h) = DEPTH_MODES[DEPTH_MODE].output_size
    f = _DEPTH_BINNED_F + rng.normal(scale=0.5)
    depth = PinholeCamera(f, f, (w - 1) / 2 + rng.normal(scale=0.5), (h - 1) / 2 + rng.normal(scale=0.5), w, h)
    R_depth_color = axis_angle_to_matrix(np.radians([6.0, 0.0, 0.0]) + np.radians(0.2) * rng.normal(size=3))
    t_depth_color = np.array([-0.032, -0.002, 0.004]) + 1e-3 * rng.normal(size=3)
    T_color_depth = invert_pose(make_pose(R_depth_color, t_depth_color))
    imu = {}
    if imu_rng is not None:
        dR = axis_angle_to_matrix(np.radians(0.1) * imu_rng.normal(size=3))
        imu = {"T_accel_depth": make_pose(dR, 5e-4 * imu_rng.normal(size=3)) @ NOMINAL_T_ACCEL_DEPTH,
               "T_gyro_depth": make_pose(dR, np.zeros(3)) @ NOMINAL_T_GYRO_DEPTH}
    return SimKinect(serial, np.asarray(T_world_depth, dtype=np.float64), color, depth, T_color_depth, **imu)


class KinectRenderer:
    """Colour, depth and IR images of the simulated scene for one :class:`SimKinect`."""

    def __init__(self, kinect: SimKinect, hand_faces: dict[str, np.ndarray], room: RoomSpec = RoomSpec(),
                 board: BoardSpec = BoardSpec()):
        """``hand_faces``: outward-wound triangles of the left and right hand meshes; ``board``: the
        ChArUco board drawn when a frame has a board pose."""
        self.kinect = kinect
        self.hand_faces = hand_faces
        self.board = board
        T_world_color = kinect.T_world_color
        self.T_color_world = invert_pose(T_world_color)
        self.T_depth_world = invert_pose(kinect.T_world_depth)
        self.color_centre = T_world_color[:3, 3]
        self.depth_centre = kinect.T_world_depth[:3, 3]
        self.project_color = pinhole_projection(kinect.color, T_world_color)
        self.project_depth = pinhole_projection(kinect.depth, kinect.T_world_depth)
        self.color_background = render_background(kinect.color, T_world_color, room)
        self.depth_rays = camera_rays(kinect.depth)
        _, t = room_hits(self.depth_rays, kinect.T_world_depth, room)
        self.depth_background = (t * self.depth_rays[..., 2] * 1000.0).astype(np.float32)

    def render(self, joints: np.ndarray, global_R: np.ndarray, hand_vertices: np.ndarray,
               T_world_board: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One capture: colour (720, 1280, 3) BGR uint8, depth and IR (288, 320) uint16.

        Args as in :func:`omnimocap.sim.render.rasterise_people`; ``T_world_board`` the
        board's pose (board frame of :mod:`omnimocap.calibration.board`) or None for no board."""
        color = rasterise_people(self.color_background.copy(), self.project_color, self.color_centre, self.hand_faces,
                                 joints, global_R, hand_vertices)
        depth_mm = rasterise_people(self.depth_background.copy(), self.project_depth, self.depth_centre, self.hand_faces,
                                    joints, global_R, hand_vertices, depth_mm=True)
        if T_world_board is not None:
            draw_board(color, self.board, self.kinect.color, self.T_color_world @ T_world_board)
            board_mm = self._board_depth_mm(self.T_depth_world @ T_world_board)
            depth_mm = np.where(np.isfinite(board_mm), board_mm, depth_mm)
        valid = (depth_mm >= DEPTH_RANGE_M[0] * 1000.0) & (depth_mm <= DEPTH_RANGE_M[1] * 1000.0)
        depth = np.where(valid, np.rint(depth_mm), 0).astype(np.uint16)
        # Active IR: the emitter's light falls off with the square of the distance.
        ir = np.where(valid, np.minimum(60000.0, 900.0 / np.square(np.maximum(depth_mm, 1.0) / 1000.0)), 0).astype(np.uint16)
        return color, depth, ir

    def _board_depth_mm(self, T_depth_board: np.ndarray) -> np.ndarray:
        """Depth (H, W) in mm of the board along the depth camera's rays, NaN off the board."""
        R, t = T_depth_board[:3, :3], T_depth_board[:3, 3]
        origin = -R.T @ t
        d = self.depth_rays @ R
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = -origin[2] / d[..., 2]
        x = origin[0] + lam * d[..., 0]
        y = origin[1] + lam * d[..., 1]
        w, h = self.board.squares_x * self.board.square_m, self.board.squares_y * self.board.square_m
        on = (lam > 0) & (x >= 0) & (x <= w) & (y >= 0) & (y <= h)
        return np.where(on, lam * self.depth_rays[..., 2] * 1000.0, np.nan).astype(np.float32)


def board_in_view(kinect: SimKinect, spec: BoardSpec, T_world_board: np.ndarray) -> bool:
    """Whether the whole board lies in front of and inside the colour image of ``kinect``."""
    p = transform_points(invert_pose(kinect.T_world_color) @ T_world_board, spec.outline(4))
    if np.any(p[:, 2] <= 0.1):
        return False
    px = kinect.color.project(p)
    return bool(np.all((px >= 0) & (px <= [kinect.color.width - 1, kinect.color.height - 1])))


def open_sim_recording(path: str | Path, kinect: SimKinect, wired_sync_mode: str, model: KinectModel,
                       clock: DeviceClock) -> KinectMkvWriter:
    """A :class:`~omnimocap.capture.kinect_mkv_writer.KinectMkvWriter` for a simulated device of
    ``model`` (the simulated modes of :mod:`omnimocap.sim.kinect`, 30 fps), with the
    model's firmware tags and the clock's start offset."""
    return KinectMkvWriter(path, kinect.calibration_json(), color_mode=COLOR_MODE, depth_mode=DEPTH_MODE, ir=True,
                           imu=True, fps=30, device_serial=kinect.serial, wired_sync_mode=wired_sync_mode,
                           start_offset_s=clock.start_offset_s, color_firmware=model.color_firmware,
                           depth_firmware=model.depth_firmware)
