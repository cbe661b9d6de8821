"""Camera models.

Every camera frame is OpenCV style: x right, y down, z forward, metres. Pixel coordinates are
(column, row) with the centre of the top-left pixel at (0, 0).

The 360 camera's equirectangular mapping (agrees with py360convert, whose frame is x right, y up,
z forward):

    lon = atan2(x, z)                  (yaw, 0 at the image centre, growing to the right)
    lat = atan2(-y, hypot(x, z))       (pitch, +90 deg at the top row)
    column = (lon / 2pi + 0.5) W - 0.5
    row    = (0.5 - lat / pi) H - 0.5
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class EquirectCamera:
    """An equirectangular panorama of ``width`` x ``height`` pixels (normally width = 2 height)."""

    width: int
    height: int

    def bearing_to_pixel(self, d: np.ndarray) -> np.ndarray:
        """Directions (...,3) in the camera frame (any length) -> pixels (...,2) as (column, row)."""
        d = np.asarray(d, dtype=np.float64)
        lon = np.arctan2(d[..., 0], d[..., 2])
        lat = np.arctan2(-d[..., 1], np.hypot(d[..., 0], d[..., 2]))
        col = (lon / (2 * np.pi) + 0.5) * self.width - 0.5
        row = (0.5 - lat / np.pi) * self.height - 0.5
        return np.stack([col, row], axis=-1)

    def pixel_to_bearing(self, px: np.ndarray) -> np.ndarray:
        """Pixels (...,2) as (column, row) -> unit directions (...,3) in the camera frame."""
        px = np.asarray(px, dtype=np.float64)
        lon = ((px[..., 0] + 0.5) / self.width - 0.5) * 2 * np.pi
        lat = (0.5 - (px[..., 1] + 0.5) / self.height) * np.pi
        return lonlat_to_bearing(lon, lat)

    @property
    def pixels_per_radian(self) -> float:
        return self.width / (2 * np.pi)


def lonlat_to_bearing(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Longitude/latitude (radians, conventions above) -> unit directions (...,3), OpenCV frame."""
    cl = np.cos(lat)
    return np.stack([cl * np.sin(lon), -np.sin(lat), cl * np.cos(lon)], axis=-1)


@dataclass(frozen=True)
class PinholeCamera:
    """A pinhole camera with the OpenCV distortion model (k1, k2, p1, p2, k3, k4, k5, k6), the model
    the Azure Kinect SDK calls Brown-Conrady rational 6KT. Intrinsics in pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion: tuple[float, ...] = field(default_factory=tuple)

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def dist_coeffs(self) -> np.ndarray:
        return np.asarray(self.distortion if self.distortion else np.zeros(5), dtype=np.float64)

    def project(self, p: np.ndarray) -> np.ndarray:
        """Points (...,3) in the camera frame -> pixels (...,2). Distortion applied when present."""
        p = np.asarray(p, dtype=np.float64)
        x = p[..., 0] / p[..., 2]
        y = p[..., 1] / p[..., 2]
        if self.distortion and any(self.distortion):
            x, y = _distort(x, y, self.dist_coeffs)
        return np.stack([self.fx * x + self.cx, self.fy * y + self.cy], axis=-1)

    def unproject(self, px: np.ndarray) -> np.ndarray:
        """Pixels (...,2) -> unit bearings (...,3) in the camera frame (undistorted)."""
        px = np.asarray(px, dtype=np.float64)
        x = (px[..., 0] - self.cx) / self.fx
        y = (px[..., 1] - self.cy) / self.fy
        if self.distortion and any(self.distortion):
            x, y = _undistort(x, y, self.dist_coeffs)
        d = np.stack([x, y, np.ones_like(x)], axis=-1)
        return d / np.linalg.norm(d, axis=-1, keepdims=True)

    def to_dict(self) -> dict:
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy, "width": self.width,
                "height": self.height, "distortion": list(self.distortion)}

    @classmethod
    def from_dict(cls, d: dict) -> "PinholeCamera":
        return cls(float(d["fx"]), float(d["fy"]), float(d["cx"]), float(d["cy"]), int(d["width"]),
                   int(d["height"]), tuple(float(v) for v in d.get("distortion", ())))


def _distort(x: np.ndarray, y: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = np.concatenate([k, np.zeros(max(0, 8 - len(k)))])
    k1, k2, p1, p2, k3, k4, k5, k6 = k[:8]
    r2 = x * x + y * y
    radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return xd, yd


def _undistort(xd: np.ndarray, yd: np.ndarray, k: np.ndarray, iterations: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Invert the distortion by fixed-point iteration (converges for the Kinect's moderate lens)."""
    x, y = xd.copy(), yd.copy()
    for _ in range(iterations):
        xx, yy = _distort(x, y, k)
        x = x + (xd - xx)
        y = y + (yd - yy)
    return x, y
