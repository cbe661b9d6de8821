"""Camera models: pinhole (with the Kinect's distortion), equirectangular, and the fisheye lenses
of a dual-fisheye 360 camera (:class:`FisheyeLens`, :class:`DualFisheyeCamera`).

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

    def grid_bearings(self, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Unit directions (len(rows), len(cols), 3) of every pixel of the grid ``cols`` x ``rows``
        (1-D pixel coordinates); the same values as :meth:`pixel_to_bearing` of the grid's pixels,
        with the sines and cosines taken once per column and per row."""
        lon = ((np.asarray(cols, dtype=np.float64) + 0.5) / self.width - 0.5) * 2 * np.pi
        lat = (0.5 - (np.asarray(rows, dtype=np.float64) + 0.5) / self.height) * np.pi
        cl, sl = np.cos(lat)[:, None], np.sin(lat)[:, None]
        out = np.empty((lat.size, lon.size, 3))
        out[..., 0] = cl * np.sin(lon)
        out[..., 1] = -sl
        out[..., 2] = cl * np.cos(lon)
        return out

    @property
    def pixels_per_radian(self) -> float:
        return self.width / (2 * np.pi)


def lonlat_to_bearing(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Longitude/latitude (radians, conventions above) -> unit directions (...,3), OpenCV frame."""
    cl = np.cos(lat)
    return np.stack([cl * np.sin(lon), -np.sin(lat), cl * np.cos(lon)], axis=-1)


@dataclass(frozen=True, eq=False)
class _Intrinsics:
    """Focal lengths ``fx``, ``fy`` and principal point ``cx``, ``cy`` in pixels of an image
    ``width`` x ``height`` pixels; the part every camera model here shares."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def normalised(self, px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (...,2) -> the image-plane coordinates ``((u - cx) / fx, (v - cy) / fy)``."""
        px = np.asarray(px, dtype=np.float64)
        return (px[..., 0] - self.cx) / self.fx, (px[..., 1] - self.cy) / self.fy

    def _intrinsics_dict(self) -> dict:
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy, "width": self.width,
                "height": self.height}


@dataclass(frozen=True)
class PinholeCamera(_Intrinsics):
    """A pinhole camera with the OpenCV distortion model (k1, k2, p1, p2, k3, k4, k5, k6), the model
    the Azure Kinect SDK calls Brown-Conrady rational 6KT. Intrinsics in pixels."""

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
        x, y = self.normalised(px)
        if self.distortion and any(self.distortion):
            x, y = _undistort(x, y, self.dist_coeffs)
        d = np.stack([x, y, np.ones_like(x)], axis=-1)
        return d / np.linalg.norm(d, axis=-1, keepdims=True)

    def to_dict(self) -> dict:
        return {**self._intrinsics_dict(), "distortion": list(self.distortion)}

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


@dataclass(frozen=True, eq=False)
class FisheyeLens(_Intrinsics):
    """One lens of a dual-fisheye camera, imaging into its own ``width`` x ``height`` part of the
    frame (pixels as above, relative to that part).

    Lens frame: OpenCV style, z along the lens axis. A direction at angle ``theta`` (radians) from
    the axis lands at radius ``r = f * theta_d`` from (cx, cy), along its azimuth, with
    ``theta_d = theta`` (equidistant, ``k`` empty) or the Kannala-Brandt polynomial
    ``theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)`` (OpenCV's fisheye
    model). Directions more than ``max_theta`` from the axis are not imaged.

    Pose in the camera (the 360 camera's frame, OpenCV axes, metres): ``d_cam = R_cam_lens @ d_lens``
    and the lens's optical centre at ``t_cam_lens``, so a camera-frame point p is seen along
    ``R_cam_lens.T @ (p - t_cam_lens)``.
    """

    k: tuple[float, ...] = ()
    max_theta: float = np.radians(100.0)
    R_cam_lens: np.ndarray = field(default_factory=lambda: np.eye(3))
    t_cam_lens: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def theta_d(self, theta: np.ndarray) -> np.ndarray:
        """Distorted angle (radians) of the angle ``theta`` from the axis."""
        if not self.k:
            return theta
        t2 = theta * theta
        poly = 0.0
        for c in reversed(self.k):
            poly = (poly + c) * t2
        return theta * (1.0 + poly)

    def theta_from_d(self, theta_d: np.ndarray, iterations: int = 30) -> np.ndarray:
        """Invert :meth:`theta_d` (Newton's method from theta = theta_d; the polynomial is monotonic
        over the image circle of a real lens)."""
        if not self.k:
            return theta_d
        theta = np.array(theta_d, dtype=np.float64)
        for _ in range(iterations):
            t2 = theta * theta
            f = self.theta_d(theta) - theta_d
            dpoly = 1.0 + sum((2 * i + 3) * c * t2 ** (i + 1) for i, c in enumerate(self.k))
            theta = theta - f / dpoly
        return theta

    def project(self, d_lens: np.ndarray) -> np.ndarray:
        """Directions or points (...,3) in the lens frame -> pixels (...,2) of this lens's image;
        NaN beyond ``max_theta``."""
        d = np.asarray(d_lens, dtype=np.float64)
        rho = np.hypot(d[..., 0], d[..., 1])
        theta = np.arctan2(rho, d[..., 2])
        r = self.theta_d(theta)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.where(rho > 0, r / np.where(rho > 0, rho, 1.0), 0.0)
        px = np.stack([self.fx * scale * d[..., 0] + self.cx, self.fy * scale * d[..., 1] + self.cy], axis=-1)
        return np.where((theta <= self.max_theta)[..., None], px, np.nan)

    def unproject(self, px: np.ndarray) -> np.ndarray:
        """Pixels (...,2) of this lens's image -> unit directions (...,3) in the lens frame (also
        beyond ``max_theta``: the mapping continues; :meth:`in_circle` tells which pixels are imaged)."""
        x, y = self.normalised(px)
        r = np.hypot(x, y)
        theta = self.theta_from_d(r)
        with np.errstate(invalid="ignore", divide="ignore"):
            s = np.where(r > 0, np.sin(theta) / np.where(r > 0, r, 1.0), 1.0)
        return np.stack([x * s, y * s, np.cos(theta)], axis=-1)

    def in_circle(self, px: np.ndarray) -> np.ndarray:
        """Whether pixels (...,2) lie inside the image circle (angle from the axis <= max_theta)."""
        return np.hypot(*self.normalised(px)) <= self.theta_d(np.asarray(self.max_theta))

    def lens_from_cam(self, p_cam: np.ndarray, points: bool = True) -> np.ndarray:
        """Camera-frame points (or, with ``points=False``, directions) (...,3) -> lens-frame (...,3)."""
        p = np.asarray(p_cam, dtype=np.float64)
        return (p - self.t_cam_lens if points else p) @ self.R_cam_lens

    def to_dict(self) -> dict:
        return {**self._intrinsics_dict(), "k": list(self.k), "max_theta_deg": float(np.degrees(self.max_theta)),
                "R_cam_lens": np.asarray(self.R_cam_lens).tolist(), "t_cam_lens": np.asarray(self.t_cam_lens).tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "FisheyeLens":
        return cls(float(d["fx"]), float(d["fy"]), float(d["cx"]), float(d["cy"]), int(d["width"]), int(d["height"]),
                   tuple(float(v) for v in d.get("k", ())), np.radians(float(d.get("max_theta_deg", 100.0))),
                   np.asarray(d.get("R_cam_lens", np.eye(3)), dtype=np.float64),
                   np.asarray(d.get("t_cam_lens", np.zeros(3)), dtype=np.float64))


# The back lens looks along the camera's -z: a half turn about the camera's y axis.
R_CAM_BACK_LENS = np.diag([-1.0, 1.0, -1.0])


@dataclass(frozen=True, eq=False)
class DualFisheyeCamera:
    """A 360 camera's raw frame: two fisheye images side by side (as an Insta360 X-series delivers
    over USB), lens 0 (front, along the camera's +z) in the left half, lens 1 (back) in the right.
    The camera frame is the 360 camera's (OpenCV axes, the equirect frame above); each lens has its
    own pose in it (:class:`FisheyeLens`)."""

    lenses: tuple[FisheyeLens, FisheyeLens]

    @property
    def width(self) -> int:
        return sum(lens.width for lens in self.lenses)

    @property
    def height(self) -> int:
        return self.lenses[0].height

    def column_offset(self, i: int) -> int:
        """First column of lens ``i``'s part of the frame."""
        return sum(lens.width for lens in self.lenses[:i])

    @classmethod
    def nominal(cls, width: int, fov_deg: float = 200.0, k: tuple[float, ...] = (), baseline_m: float = 0.0,
                R_front: np.ndarray | None = None, R_back: np.ndarray | None = None) -> "DualFisheyeCamera":
        """Two lenses whose ``fov_deg`` image circles just fill their ``width/2`` square halves, back
        to back along z, their centres ``baseline_m`` apart (front at +z/2); ``R_front``/``R_back``
        replace the nominal orientations (for a real unit's small misalignments)."""
        half = width // 2
        radius = half / 2.0
        max_theta = np.radians(fov_deg) / 2.0
        proto = FisheyeLens(1.0, 1.0, 0.0, 0.0, half, half, tuple(k), max_theta)
        f = radius / float(proto.theta_d(np.asarray(max_theta)))
        c = (half - 1) / 2.0
        front = FisheyeLens(f, f, c, c, half, half, tuple(k), max_theta,
                            np.eye(3) if R_front is None else np.asarray(R_front, dtype=np.float64),
                            np.array([0.0, 0.0, baseline_m / 2]))
        back = FisheyeLens(f, f, c, c, half, half, tuple(k), max_theta,
                           R_CAM_BACK_LENS if R_back is None else np.asarray(R_back, dtype=np.float64),
                           np.array([0.0, 0.0, -baseline_m / 2]))
        return cls((front, back))

    def best_lens(self, p_cam: np.ndarray, points: bool = True) -> np.ndarray:
        """Index (...) of the lens that sees each camera-frame point (or direction) nearest its axis."""
        p = np.asarray(p_cam, dtype=np.float64)
        cosines = []
        for lens in self.lenses:
            d = lens.lens_from_cam(p, points)
            cosines.append(d[..., 2] / np.maximum(np.linalg.norm(d, axis=-1), 1e-12))
        return np.argmax(np.stack(cosines, axis=-1), axis=-1)

    def project(self, p_cam: np.ndarray, points: bool = True) -> np.ndarray:
        """Camera-frame points (or directions) (...,3) -> frame pixels (...,2) through the lens that
        sees each nearest its axis (NaN where that lens does not image it)."""
        p = np.asarray(p_cam, dtype=np.float64)
        which = self.best_lens(p, points)
        out = np.full(p.shape[:-1] + (2,), np.nan)
        for i, lens in enumerate(self.lenses):
            px = lens.project(lens.lens_from_cam(p, points)) + [self.column_offset(i), 0.0]
            out = np.where((which == i)[..., None], px, out)
        return out

    def pixel_to_ray(self, px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame pixels (...,2) -> (origins (...,3), unit directions (...,3)) in the camera frame: the
        ray of the lens whose half holds the pixel, from that lens's centre."""
        px = np.asarray(px, dtype=np.float64)
        origins = np.zeros(px.shape[:-1] + (3,))
        dirs = np.zeros(px.shape[:-1] + (3,))
        for i, lens in enumerate(self.lenses):
            x0 = self.column_offset(i)
            mine = (px[..., 0] >= x0 - 0.5) & (px[..., 0] < x0 + lens.width - 0.5)
            d = lens.unproject(px - [x0, 0.0]) @ np.asarray(lens.R_cam_lens).T
            dirs = np.where(mine[..., None], d, dirs)
            origins = np.where(mine[..., None], lens.t_cam_lens, origins)
        return origins, dirs

    def to_dict(self) -> dict:
        return {"lenses": [lens.to_dict() for lens in self.lenses]}

    @classmethod
    def from_dict(cls, d: dict) -> "DualFisheyeCamera":
        front, back = (FisheyeLens.from_dict(x) for x in d["lenses"])
        return cls((front, back))
