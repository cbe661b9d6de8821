"""The rig: every sensor's pose in one world frame and every clock mapped onto the session clock.

World frame: floor-aligned, y up, metres, floor at y = 0 (derived from the reference Kinect's IMU
gravity or the fitted floor). Each sensor has ``T_world_sensor`` (4x4, maps sensor-frame points to
world). Sensor names: ``kinect_<serial>`` (the Kinect *depth* camera frame, in which body tracking
reports joints) and ``pano`` (the 360 camera frame, OpenCV axes; see geometry/cameras.py).

Clocks: ``t_session = a * t_sensor + b`` (seconds) per sensor, with the residuals of the estimate.

Optics: the 360 camera's lenses (baseline, rolling-shutter readout, exposure, seam blend) as
:class:`~omnimocap.geometry.pano_optics.PanoOptics` in the ``pano`` frame, stored under
``pano_optics``; a rig file without that record is the ideal single-viewpoint, global-shutter camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omnimocap.capture.session import atomic_write_json, read_json
from omnimocap.errors import InputError
from omnimocap.geometry.pano_optics import PanoOptics


@dataclass
class TimeMap:
    """``t_session = a * t_sensor + b``; a is 1 + rate error, b the offset, both estimated."""

    a: float = 1.0
    b: float = 0.0
    residual_rms_ms: float | None = None

    def to_session(self, t_sensor):
        return self.a * np.asarray(t_sensor, dtype=np.float64) + self.b

    def to_sensor(self, t_session):
        return (np.asarray(t_session, dtype=np.float64) - self.b) / self.a

    def to_json(self) -> dict:
        return {"a": self.a, "b": self.b, "residual_rms_ms": self.residual_rms_ms}

    def check(self, sensor: str) -> None:
        """Raise ValueError unless ``a`` is finite and positive and ``b`` finite: every clock runs
        forward, so a time map with a stopped or reversed rate comes from damaged timestamps."""
        if not (np.isfinite(self.a) and self.a > 0):
            raise ValueError(f"time map of '{sensor}' has rate a = {self.a:g}, not positive: its clock would "
                             "stand still or run backwards")
        if not np.isfinite(self.b):
            raise ValueError(f"time map of '{sensor}' has offset b = {self.b:g}")

    @classmethod
    def from_json(cls, d: dict) -> "TimeMap":
        return cls(float(d["a"]), float(d["b"]), d.get("residual_rms_ms"))


@dataclass
class Rig:
    """Extrinsics and time maps of all sensors of a session."""

    T_world_sensor: dict[str, np.ndarray] = field(default_factory=dict)
    time_maps: dict[str, TimeMap] = field(default_factory=dict)
    method: str = "unknown"  # truth | board | markerless | ...
    is_truth: bool = False  # True for a simulated session's ground truth used as calibration
    residuals: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    configs: dict = field(default_factory=dict)
    """The configuration each estimating verb ran with, by verb (``calibrate``, ``sync``); empty in
    rig files written before it was recorded."""
    pano_optics: PanoOptics = field(default_factory=PanoOptics.ideal)
    """The 360 camera's optics (lens centres, rolling shutter, seam; ``pano`` frame); ideal in rig
    files written before they were recorded."""

    def pose(self, sensor: str) -> np.ndarray:
        if sensor not in self.T_world_sensor:
            raise InputError(f"rig has no pose for sensor '{sensor}'",
                             fix="run `omnimocap calibrate` on the session")
        return self.T_world_sensor[sensor]

    def time_map(self, sensor: str) -> TimeMap:
        if sensor not in self.time_maps:
            raise InputError(f"rig has no time map for sensor '{sensor}'",
                             fix="run `omnimocap sync` on the session")
        return self.time_maps[sensor]

    def to_json(self) -> dict:
        return {
            "method": self.method,
            "is_truth": self.is_truth,
            "sensors": {k: {"T_world_sensor": np.asarray(v).tolist()} for k, v in self.T_world_sensor.items()},
            "time_maps": {k: v.to_json() for k, v in self.time_maps.items()},
            "residuals": self.residuals,
            "inputs": self.inputs,
            "configs": self.configs,
            "pano_optics": self.pano_optics.to_dict(),
        }

    def save(self, path: str | Path) -> None:
        """Write ``path`` atomically; refuses (:class:`InputError`, nothing written) a time map
        whose rate is not positive."""
        try:
            for name, time_map in self.time_maps.items():
                time_map.check(name)
        except ValueError as exc:
            raise InputError(f"not writing an impossible calibration: {exc}", path=path,
                             fix="the timestamps it was estimated from are damaged (a clock going back); "
                                 "check them and estimate again") from None
        atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "Rig":
        path = Path(path)
        obj = read_json(path, "rig calibration")
        try:
            poses = {}
            for name, s in obj["sensors"].items():
                T = np.asarray(s["T_world_sensor"], dtype=np.float64)
                if T.shape != (4, 4) or not np.all(np.isfinite(T)):
                    raise ValueError(f"T_world_sensor of '{name}' is not a finite 4x4 matrix")
                if abs(np.linalg.det(T[:3, :3]) - 1.0) > 1e-3:
                    raise ValueError(f"T_world_sensor of '{name}' is not a rotation")
                poses[name] = T
            maps = {k: TimeMap.from_json(v) for k, v in obj.get("time_maps", {}).items()}
            for name, time_map in maps.items():
                time_map.check(name)
            optics = PanoOptics.from_dict(obj.get("pano_optics"))
            values = optics.to_dict()
            if not all(np.isfinite(v) for v in values.values()) or min(values.values()) < 0:
                raise ValueError(f"pano_optics {values} has a negative or non-finite value")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"malformed rig calibration ({exc})", path=path,
                             fix="re-run `omnimocap calibrate` and `omnimocap sync`") from None
        return cls(poses, maps, obj.get("method", "unknown"), bool(obj.get("is_truth", False)),
                   obj.get("residuals", {}), obj.get("inputs", {}), obj.get("configs", {}), optics)
