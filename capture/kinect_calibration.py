"""Azure Kinect factory calibration (the raw ``calibration.json`` a device stores and a recording
attaches) turned into camera models.

The raw file lists cameras under ``CalibrationInformation.Cameras``; each has
``Intrinsics.ModelParameters`` = [cx, cy, fx, fy, k1, k2, k3, k4, k5, k6, codx, cody, p2, p1]
normalized by the sensor's full calibration image (note p2 before p1), and ``Rt`` = rotation
(row-major 3x3) and translation (metres) that map points from the depth camera frame into that
camera's frame: ``p_cam = R p_depth + t``. The depth camera's own ``Rt`` is the identity. The
inertial sensors (``CalibrationInformation.InertialSensors``, one per ``SensorType``: accelerometer
and gyroscope) carry an ``Rt`` of the same meaning: it maps depth-frame coordinates into the sensor's
own axes, in which the recording's IMU samples are stated.

Per operating mode the SDK scales the normalized intrinsics by the mode's calibration image size,
subtracts the mode's crop offset and moves the principal point by -0.5 px so that the centre of the
top-left pixel is (0, 0) (the convention of :mod:`omnimocap.geometry.cameras`). The mode tables
below are the SDK's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnimocap.geometry.cameras import PinholeCamera
from omnimocap.geometry.transforms import invert_pose, make_pose
from omnimocap.errors import InputError


@dataclass(frozen=True)
class SensorMode:
    """How a sensor mode maps the normalized calibration to pixels: scale by ``calibration_size``,
    subtract ``crop_offset``, output ``output_size`` (all (width, height) in pixels)."""

    calibration_size: tuple[int, int]
    crop_offset: tuple[int, int]
    output_size: tuple[int, int]


# Colour resolutions by the name used in K4A_COLOR_MODE tags (after the format, e.g. MJPG_720P).
COLOR_RESOLUTIONS: dict[str, SensorMode] = {
    "720P": SensorMode((1280, 960), (0, 120), (1280, 720)),
    "1080P": SensorMode((1920, 1440), (0, 180), (1920, 1080)),
    "1440P": SensorMode((2560, 1920), (0, 240), (2560, 1440)),
    "1536P": SensorMode((2048, 1536), (0, 0), (2048, 1536)),
    "2160P": SensorMode((3840, 2880), (0, 360), (3840, 2160)),
    "3072P": SensorMode((4096, 3072), (0, 0), (4096, 3072)),
}
# Depth modes by the name used in K4A_DEPTH_MODE tags.
DEPTH_MODES: dict[str, SensorMode] = {
    "NFOV_2X2BINNED": SensorMode((512, 512), (96, 90), (320, 288)),
    "NFOV_UNBINNED": SensorMode((1024, 1024), (192, 180), (640, 576)),
    "WFOV_2X2BINNED": SensorMode((512, 512), (0, 0), (512, 512)),
    "WFOV_UNBINNED": SensorMode((1024, 1024), (0, 0), (1024, 1024)),
    "PASSIVE_IR": SensorMode((1024, 1024), (0, 0), (1024, 1024)),
}

_PURPOSE_DEPTH = "CALIBRATION_CameraPurposeDepth"
_PURPOSE_COLOR = "CALIBRATION_CameraPurposePhotoVideo"
_ACCEL = "CALIBRATION_InertialSensorType_Accelerometer"
_GYRO = "CALIBRATION_InertialSensorType_Gyro"
# Nominal IMU mounting of an Azure Kinect: its axes turned against the depth camera's, which is
# tilted 6 deg down from the housing; the accelerometer sits 51 mm beside the depth camera.
_IMU_TILT = np.radians(6.0)
NOMINAL_R_IMU_DEPTH = np.array([[0.0, np.sin(_IMU_TILT), -np.cos(_IMU_TILT)], [-1.0, 0.0, 0.0],
                                [0.0, np.cos(_IMU_TILT), np.sin(_IMU_TILT)]])
NOMINAL_T_ACCEL_DEPTH = make_pose(NOMINAL_R_IMU_DEPTH, np.array([-0.051, 0.0035, 0.0013]))
NOMINAL_T_GYRO_DEPTH = make_pose(NOMINAL_R_IMU_DEPTH, np.zeros(3))
_FIX = "use the calibration.json attached to an Azure Kinect recording or read from the device"


@dataclass(frozen=True)
class KinectCalibration:
    """Colour and depth camera models of one Azure Kinect in given modes.

    ``T_color_depth`` (4x4, metres) maps points from the depth camera frame (the body-tracking
    frame) into the colour camera frame; both frames are OpenCV style (x right, y down, z forward).
    ``T_accel_depth`` / ``T_gyro_depth`` (4x4, metres) map depth-frame points into the accelerometer's
    / gyroscope's axes (None where the calibration lists no such sensor).
    """

    color: PinholeCamera
    depth: PinholeCamera
    T_color_depth: np.ndarray
    color_resolution: str
    depth_mode: str
    serial: str | None = None
    T_accel_depth: np.ndarray | None = None
    T_gyro_depth: np.ndarray | None = None

    @property
    def T_depth_color(self) -> np.ndarray:
        return invert_pose(self.T_color_depth)

    @property
    def R_depth_accel(self) -> np.ndarray | None:
        """Rotation (3x3) of accelerometer axes into the depth camera frame, or None."""
        return None if self.T_accel_depth is None else self.T_accel_depth[:3, :3].T


def parse_calibration(raw: str | bytes | dict, *, color_resolution: str = "720P",
                      depth_mode: str = "NFOV_UNBINNED", source: str | Path = "calibration.json") -> KinectCalibration:
    """Parse the raw factory calibration into camera models for the given modes.

    ``color_resolution`` is a key of :data:`COLOR_RESOLUTIONS` (e.g. ``"720P"``), ``depth_mode`` a key
    of :data:`DEPTH_MODES` (e.g. ``"NFOV_UNBINNED"``). ``source`` names the file in error messages.
    Raises :class:`InputError` for malformed JSON or missing fields.
    """
    if color_resolution not in COLOR_RESOLUTIONS:
        raise ValueError(f"unknown colour resolution {color_resolution!r}; one of {sorted(COLOR_RESOLUTIONS)}")
    if depth_mode not in DEPTH_MODES:
        raise ValueError(f"unknown depth mode {depth_mode!r}; one of {sorted(DEPTH_MODES)}")
    doc = raw
    if not isinstance(raw, dict):
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"calibration is not valid JSON ({exc})", path=source, fix=_FIX) from None
    try:
        info = doc["CalibrationInformation"]
        cameras = {cam["Purpose"]: cam for cam in info["Cameras"]}
        depth_raw, color_raw = cameras[_PURPOSE_DEPTH], cameras[_PURPOSE_COLOR]
        depth = _camera_for_mode(depth_raw, DEPTH_MODES[depth_mode])
        color = _camera_for_mode(color_raw, COLOR_RESOLUTIONS[color_resolution])
        T_color_depth = _extrinsics(color_raw) @ invert_pose(_extrinsics(depth_raw))
        serial = info.get("Metadata", {}).get("SerialId")
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputError(f"calibration lacks a valid colour/depth camera entry ({type(exc).__name__}: {exc})",
                         path=source, fix=_FIX) from None
    try:
        inertial = {s["SensorType"]: _extrinsics(s) for s in info.get("InertialSensors", [])}
        for name, T in inertial.items():
            if not np.all(np.isfinite(T)) or abs(np.linalg.det(T[:3, :3]) - 1.0) > 1e-3:
                raise ValueError(f"the Rt of {name} is not a finite rotation and translation")
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputError(f"calibration has a malformed inertial sensor entry ({type(exc).__name__}: {exc})",
                         path=source, fix=_FIX) from None
    return KinectCalibration(color, depth, T_color_depth, color_resolution, depth_mode, serial,
                             inertial.get(_ACCEL), inertial.get(_GYRO))


def load_calibration(path: str | Path, **modes: str) -> KinectCalibration:
    """Read a raw calibration file; ``modes`` as in :func:`parse_calibration`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read calibration ({exc.strerror})", path=path, fix=_FIX) from None
    return parse_calibration(raw, source=path, **modes)


def _camera_for_mode(cam: dict, mode: SensorMode) -> PinholeCamera:
    p = [float(v) for v in cam["Intrinsics"]["ModelParameters"]]
    if len(p) < 14 or not np.all(np.isfinite(p)):
        raise ValueError(f"ModelParameters has {len(p)} values, needs 14 finite ones")
    cx, cy, fx, fy, k1, k2, k3, k4, k5, k6, _codx, _cody, p2, p1 = p[:14]
    (sw, sh), (ox, oy), (w, h) = mode.calibration_size, mode.crop_offset, mode.output_size
    return PinholeCamera(fx=fx * sw, fy=fy * sh, cx=cx * sw - ox - 0.5, cy=cy * sh - oy - 0.5, width=w, height=h,
                         distortion=(k1, k2, p1, p2, k3, k4, k5, k6))


def _extrinsics(cam: dict) -> np.ndarray:
    """T_cam_depth of one raw camera entry (metres)."""
    R = np.asarray(cam["Rt"]["Rotation"], dtype=np.float64).reshape(3, 3)
    t = np.asarray(cam["Rt"]["Translation"], dtype=np.float64).reshape(3)
    return make_pose(R, t)


def calibration_json(color: PinholeCamera, depth: PinholeCamera, T_color_depth: np.ndarray, *,
                     color_resolution: str = "720P", depth_mode: str = "NFOV_UNBINNED",
                     serial: str = "000000000000", T_accel_depth: np.ndarray = NOMINAL_T_ACCEL_DEPTH,
                     T_gyro_depth: np.ndarray = NOMINAL_T_GYRO_DEPTH) -> bytes:
    """Raw calibration JSON (the device's format) for cameras given in the given modes: the inverse
    of :func:`parse_calibration`, for simulated devices. Distortion is (k1, k2, p1, p2, k3, k4, k5, k6)
    or empty; ``T_color_depth`` in metres. The inertial sensors (the SDK refuses a calibration
    without them) get the given extrinsics (depth frame to sensor axes, metres; by default the
    nominal mounting) and nominal intrinsics (identity mixing, zero bias)."""
    cameras = []
    for purpose, cam, mode, T, location, sensor_size in (
        (_PURPOSE_DEPTH, depth, DEPTH_MODES[depth_mode], np.eye(4), "CALIBRATION_CameraLocationD0", (1024, 1024)),
        (_PURPOSE_COLOR, color, COLOR_RESOLUTIONS[color_resolution], np.asarray(T_color_depth),
         "CALIBRATION_CameraLocationPV0", (4096, 3072)),
    ):
        (sw, sh), (ox, oy) = mode.calibration_size, mode.crop_offset
        k1, k2, p1, p2, k3, k4, k5, k6 = (tuple(cam.distortion) + (0.0,) * 8)[:8]
        params = [(cam.cx + 0.5 + ox) / sw, (cam.cy + 0.5 + oy) / sh, cam.fx / sw, cam.fy / sh,
                  k1, k2, k3, k4, k5, k6, 0.0, 0.0, p2, p1]
        cameras.append({
            "Intrinsics": {"ModelParameterCount": 14, "ModelParameters": params,
                           "ModelType": "CALIBRATION_LensDistortionModelBrownConrady"},
            "Location": location, "Purpose": purpose,
            "MetricRadius": 1.74 if purpose == _PURPOSE_DEPTH else 0.0,
            "Rt": _rt(T), "SensorWidth": sensor_size[0], "SensorHeight": sensor_size[1],
            "Shutter": "CALIBRATION_ShutterTypeUndefined",
            "ThermalAdjustmentParams": {"Params": [0.0] * 12},
        })
    inertial = [{
        "BiasTemperatureModel": [0.0] * 12, "BiasUncertainty": [1e-4] * 3, "Id": "CALIBRATION_InertialSensorId_LSM6DSM",
        "MixingMatrixTemperatureModel": [float(v) for i in range(9) for v in ((1.0 if i in (0, 4, 8) else 0.0), 0.0, 0.0, 0.0)],
        "ModelTypeMask": mask, "Noise": [noise] * 3 + [0.0] * 3, "Rt": _rt(np.asarray(T)),
        "SecondOrderScaling": [0.0] * 9, "SensorType": sensor_type, "TemperatureBounds": [5.0, 60.0], "TemperatureC": 0.0,
    } for sensor_type, mask, noise, T in ((_GYRO, 16, 0.00095, T_gyro_depth), (_ACCEL, 56, 0.0107, T_accel_depth))]
    doc = {"CalibrationInformation": {"Cameras": cameras, "InertialSensors": inertial,
                                      "Metadata": {"SerialId": serial, "Version": {"Major": 1, "Minor": 2}}}}
    return json.dumps(doc).encode()


def _rt(T: np.ndarray) -> dict:
    return {"Rotation": T[:3, :3].reshape(-1).tolist(), "Translation": T[:3, 3].tolist()}
