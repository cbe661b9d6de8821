"""The optics of a consumer 360 camera as its stitched equirectangular frames show them: two
back-to-back fisheye lenses, each with its own optical centre, stitched as if both sat at one
point, each lens's sensor read out row by row (a rolling shutter).

Camera frame: the 360 camera's (OpenCV axes; the equirect mapping of geometry/cameras.py,
lon = atan2(x, z), lat = atan2(-y, hypot(x, z))), its origin midway between the two optical
centres. Lens 0 (front) looks along +z with its centre at (0, 0, +b/2); lens 1 (back) along -z with
its centre at (0, 0, -b/2), b = ``baseline_m``.

Stitching: the stitched frame shows a direction ``d`` (unit, camera frame) as lens 0 saw it where
``d_z >= 0`` and as lens 1 saw it otherwise, both as if seen from the origin (stitched at infinity,
what a stitcher without depth does). So a camera-frame point ``p`` appears along ``p - c_k`` for the
lens ``k`` whose half of the sphere holds that direction; the seam is the great circle ``z = 0``
(longitude +-90 deg). Near the seam a point 0.5 m away is displaced by up to ``atan(b/2 / 0.5)``
from where a single-viewpoint camera would show it (1.7 deg for b = 30 mm), in opposite directions
for the two lenses. A point closer than ``b/2`` to the seam's plane falls in neither half (the
stitch's blind strip). Within ``blend_deg`` of the seam a real stitched frame blends both lenses.

Time: each lens's sensor is exposed row by row over ``readout_s`` (top row first). A direction's
row is that of the lens's equidistant image of ``fov_deg``, rows along the lens's image y axis
(the camera's y, down, for both lenses), as the row fraction ``v`` in [0, 1] across the image
circle. The capture time of a direction, relative to the frame's timestamp, is
``readout_s * (v - 0.5)``: the frame's timestamp is the exposure midpoint of the sensor's middle
row (the lens axis). ``exposure_s`` is each row's exposure (motion blur), centred on its time.

:meth:`PanoOptics.ideal` (zero baseline, zero readout) is the single-viewpoint, global-shutter
camera, for which every function below reduces to the plain equirect geometry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

FRONT, BACK = 0, 1


@dataclass(frozen=True)
class PanoOptics:
    """A stitched two-lens 360 camera (see the module docstring for frames and conventions)."""

    baseline_m: float = 0.0
    """Distance between the two lenses' optical centres, metres, along the camera's z axis."""
    readout_s: float = 0.0
    """Time from the first to the last row of each lens's sensor, seconds (0: global shutter)."""
    exposure_s: float = 0.0
    """Exposure of each row, seconds (motion blur; 0: none)."""
    fov_deg: float = 200.0
    """Field of view of each lens's image circle, degrees (sets which row a direction lands on)."""
    blend_deg: float = 2.0
    """Half-width of the band either side of the seam where the stitched frame blends both lenses, degrees."""

    @classmethod
    def ideal(cls) -> "PanoOptics":
        """The single-viewpoint, global-shutter camera."""
        return cls()

    @property
    def is_ideal(self) -> bool:
        return self.baseline_m == 0.0 and self.readout_s == 0.0

    def centre(self, lens: int | np.ndarray) -> np.ndarray:
        """Optical centre(s) (...,3) in the camera frame, metres, of lens index(es) ``lens``."""
        lens = np.asarray(lens)
        z = np.where(lens == FRONT, 0.5 * self.baseline_m, -0.5 * self.baseline_m)
        out = np.zeros(lens.shape + (3,))
        out[..., 2] = z
        return out

    @staticmethod
    def lens_of(dirs_cam: np.ndarray) -> np.ndarray:
        """Index (...) of the lens the stitched frame shows each camera-frame direction (...,3) from."""
        return np.where(np.asarray(dirs_cam, dtype=np.float64)[..., 2] >= 0.0, FRONT, BACK)

    @staticmethod
    def seam_angle_deg(dirs_cam: np.ndarray) -> np.ndarray:
        """Angle (...) in degrees between each camera-frame direction (...,3) and the seam's great circle."""
        d = np.asarray(dirs_cam, dtype=np.float64)
        n = np.maximum(np.linalg.norm(d, axis=-1), 1e-12)
        return np.degrees(np.arcsin(np.clip(np.abs(d[..., 2]) / n, 0.0, 1.0)))

    def in_blend(self, dirs_cam: np.ndarray) -> np.ndarray:
        """Whether each direction (...,3) lies in the band where the stitched frame blends both lenses."""
        return self.seam_angle_deg(dirs_cam) < self.blend_deg

    def row_fraction(self, dirs_cam: np.ndarray) -> np.ndarray:
        """Row (...) of each camera-frame direction (...,3) on its lens's sensor, 0 (top of the image
        circle) to 1 (bottom), 0.5 on the lens axis."""
        d = np.asarray(dirs_cam, dtype=np.float64)
        # Both lenses' image y axes are the camera's y; the angle from the lens's own axis is
        # measured against +z for the front lens and -z for the back one.
        axial = np.abs(d[..., 2])
        rho = np.hypot(d[..., 0], d[..., 1])
        theta = np.arctan2(rho, axial)
        with np.errstate(invalid="ignore", divide="ignore"):
            down = np.where(rho > 1e-12, d[..., 1] / np.where(rho > 1e-12, rho, 1.0), 0.0)
        half_fov = np.radians(0.5 * self.fov_deg)
        return 0.5 + 0.5 * (theta / half_fov) * down

    def time_offset_s(self, dirs_cam: np.ndarray) -> np.ndarray:
        """Capture time (...) of each camera-frame direction (...,3) relative to the frame's timestamp, seconds."""
        if self.readout_s == 0.0:
            return np.zeros(np.asarray(dirs_cam).shape[:-1])
        return self.readout_s * (self.row_fraction(dirs_cam) - 0.5)

    def apparent(self, points_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where the stitched frame shows camera-frame points (...,3), metres.

        Returns ``(apparent, lens, seen)``: ``apparent`` (...,3) is the point as seen from the lens
        that shows it, shifted to the origin (``p - c_k``: its direction is where the stitched frame
        shows it, its norm the distance from that lens); ``lens`` (...) that lens's index; ``seen``
        (...) False for points in the blind strip (closer than ``b/2`` to the seam's plane, shown by
        neither lens; ``apparent`` is then the nearer lens's view)."""
        p = np.asarray(points_cam, dtype=np.float64)
        half = 0.5 * self.baseline_m
        z = p[..., 2]
        front = z - half >= 0.0
        back = z + half < 0.0
        lens = np.where(front, FRONT, np.where(back, BACK, np.where(z >= 0.0, FRONT, BACK)))
        apparent = p - self.centre(lens)
        return apparent, lens, front | back

    def rays(self, dirs_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rays (origins (...,3), unit directions (...,3)) in the camera frame of stitched-frame
        directions (...,3): from the optical centre of the lens that shows each direction."""
        d = np.asarray(dirs_cam, dtype=np.float64)
        d = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-12)
        return self.centre(self.lens_of(d)), d

    def to_dict(self) -> dict:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict | None) -> "PanoOptics":
        """From :meth:`to_dict`'s record; None or an empty record is the ideal camera; unknown keys
        are ignored."""
        if not d:
            return cls.ideal()
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: float(v) for k, v in d.items() if k in names})


def capture_times(optics: PanoOptics, t_frame: float | np.ndarray, points_at, iterations: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The times (...) at which a rolling-shutter frame with timestamp ``t_frame`` (seconds) captured
    moving camera-frame points, and the points (...,3) at those times.

    ``points_at(t)`` gives the camera-frame points (...,3) at times ``t`` (a scalar or an array
    broadcastable to the points' shape without the last axis). A point is captured when the row it
    appears on is exposed, and that row depends on where the point is then: ``iterations``
    fixed-point steps from the frame's timestamp (the map contracts by the point's angular speed
    times the readout, far below 1 for people)."""
    t0 = np.asarray(t_frame, dtype=np.float64)
    t = t0
    p = np.asarray(points_at(t), dtype=np.float64)
    if optics.readout_s == 0.0:
        return np.broadcast_to(t0, p.shape[:-1]).copy(), p
    for _ in range(iterations):
        apparent, _, _ = optics.apparent(p)
        t = t0 + optics.time_offset_s(apparent)
        p = np.asarray(points_at(t), dtype=np.float64)
    return t, p
