"""The Kinect depth map as a second cue to a lifted hand's depth along its 360 viewing ray.

A hand lifted by :mod:`omnimocap.fusion.lifting` sits on the 360 camera's viewing ray at the depth
that fits the Kinect's hand joints. Those joints are noisy (a centimetre or more); the Kinect's depth
map measures the hand's *surface* to a few millimetres. The cue compares the two surfaces:

1. the candidate hand's MANO mesh (the backend's vertices, or the MANO model posed with the
   observation's parameters) is placed at the lifted wrist, moved by the Kinect-predicted hand
   motion between the panorama frame and the nearest depth frame, and rendered into the Kinect depth
   camera as a z-buffer of its front faces: the *predicted visible surface*, i.e. the MANO points
   nearest the Kinect, which lie 1-2 cm in front of the joint centres;
2. per pixel the measured depth minus the predicted one; pixels without a measurement (0), or whose
   difference exceeds a gate (background behind the hand, an arm or the other hand in front of it)
   are rejected; the median of the rest, refined once around itself, is the residual along the
   depth camera's optical axis;
3. a move of the hand by ``s`` along its viewing ray ``r`` changes every surface depth by
   ``s * (R_depth_world r)_z``, so the residual becomes a shift along the ray, with variance
   ``std^2 / (R_depth_world r)_z^2`` (a ray across the Kinect's line of sight carries little depth).

Depth images are uint16 millimetres along the depth camera's optical axis (OpenCV axes, the body
tracking frame, the rig's ``kinect_<serial>`` pose), 0 where nothing was measured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from omnimocap.geometry.cameras import PinholeCamera
from omnimocap.capture.rig import Rig
from omnimocap.geometry.transforms import invert_pose, transform_points
from omnimocap.capture.session import Session
from omnimocap.errors import InputError
from omnimocap.hands.estimator import HandObservation
from omnimocap.hands.mano import ManoModel

_SUBPIXEL_BITS = 2
# Below this |cos| between the viewing ray and the depth camera's axis a depth map says too little
# about the depth along the ray to be worth the rendering.
_MIN_AXIS_COS = 0.25


class DepthFrames:
    """The depth images of one Kinect on the session clock, read from its recording as they are
    asked for: requests that move forward in time (the pipeline's order) stream through the file
    once, holding a few frames, so long recordings never sit in memory whole."""

    def __init__(self, sensor: str, camera: PinholeCamera, T_depth_world: np.ndarray, t_session: np.ndarray,
                 read: Callable[[], Iterator[np.ndarray]], keep: int = 8):
        """``t_session`` (N,): seconds, increasing, of the images ``read()`` yields (uint16 (H, W) mm)
        in that order; ``keep``: how many recent images stay at hand."""
        self.sensor = sensor
        self.camera = camera  # depth camera in the recording's depth mode, pixels
        self.T_depth_world = T_depth_world  # (4, 4)
        self.t_session = t_session
        self.frame_period_s = float(np.median(np.diff(t_session))) if len(t_session) > 1 else 1.0 / 30.0
        self._read = read
        self._keep = keep
        self._images: Iterator[np.ndarray] | None = None
        self._next = 0  # index of the image the stream yields next
        self._cache: dict[int, np.ndarray] = {}

    def nearest(self, t: float) -> int:
        """Index of the depth frame nearest in time to ``t`` (session seconds)."""
        i = int(np.clip(np.searchsorted(self.t_session, t), 1, len(self.t_session) - 1)) if len(self.t_session) > 1 else 0
        if i > 0 and abs(self.t_session[i - 1] - t) <= abs(self.t_session[i] - t):
            i -= 1
        return i

    def image(self, i: int) -> np.ndarray | None:
        """Depth image ``i`` (uint16 (H, W) mm), None when the recording ends before it."""
        if i in self._cache:
            return self._cache[i]
        if self._images is None or i < self._next:
            self._images, self._next, self._cache = self._read(), 0, {}
        for img in self._images:
            self._cache[self._next] = img
            self._cache.pop(self._next - self._keep, None)
            self._next += 1
            if self._next > i:
                return img
        return None


def load_depth_frames(session: Session, rig: Rig) -> tuple[list[DepthFrames], list[str]]:
    """Depth streams of every Kinect whose recording has a depth track, and notes on those that
    could not be used. Sessions without recordings give no streams and no notes."""
    from omnimocap.capture.kinect_mkv import KinectRecording

    frames, notes = [], []
    for entry in session.kinects():
        if not entry.recording or not session.path(entry.recording).is_file():
            continue
        if entry.name not in rig.T_world_sensor or entry.name not in rig.time_maps:
            continue
        try:
            rec = KinectRecording(session.path(entry.recording))
            if "DEPTH" not in rec.tracks:
                continue
            camera = rec.calibration.depth
            t_device = np.array([c.depth_timestamp for c in rec.captures(decode_color=False) if c.depth is not None])
        except InputError as exc:
            notes.append(f"depth cue: {entry.recording} not used ({exc})")
            continue
        if len(t_device) < 2 or np.any(np.diff(t_device) <= 0):
            continue

        def read(rec=rec) -> Iterator[np.ndarray]:
            return (c.depth for c in rec.captures(decode_color=False) if c.depth is not None)

        t_session = np.asarray(rig.time_map(entry.name).to_session(t_device), dtype=np.float64)
        frames.append(DepthFrames(entry.name, camera, invert_pose(rig.pose(entry.name)), t_session, read))
    return frames, notes


class HandSurface:
    """MANO meshes of observed hands, relative to their wrist, in the view camera's orientation."""

    def __init__(self, mano: ManoModel):
        """``mano``: the model posed for backends that return no vertices (the one the hands were
        generated with: the built-in synthetic MANO for simulated sessions, unless they used another)."""
        self.mano = mano
        self._faces = {side: mano.faces_side(side) for side in ("left", "right")}

    def mesh(self, obs: HandObservation) -> tuple[np.ndarray, np.ndarray]:
        """Vertices (778, 3) minus the wrist keypoint, metres, view orientation; faces (F, 3)."""
        side = "right" if obs.is_right else "left"
        if obs.vertices is not None:
            return obs.vertices - obs.keypoints_3d[0], self._faces[side]
        verts, joints21 = self.mano.forward_side(side, obs.global_orient, obs.hand_pose, obs.betas)
        return verts - joints21[0], self._faces[side]


def render_surface_depth(camera: PinholeCamera, T_cam_world: np.ndarray, vertices_world: np.ndarray,
                         faces: np.ndarray) -> tuple[np.ndarray, int, int] | None:
    """Z-buffer (metres along the optical axis, NaN off the mesh) of the mesh's front faces in a
    window of ``camera``'s image; returns it with the window's top-left pixel (x0, y0), or None when
    the mesh is not wholly in front of the camera or misses the image. Each face carries the mean
    depth of its corners."""
    p = transform_points(T_cam_world, vertices_world)
    if np.any(p[:, 2] <= 0.1):
        return None
    px = camera.project(p)
    lo = np.maximum(np.floor(px.min(0)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(px.max(0)).astype(int) + 2, [camera.width, camera.height])
    if np.any(hi <= lo):
        return None
    tri = p[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    front = np.einsum("ij,ij->i", normal, tri.mean(axis=1)) < 0  # facing the camera at the origin
    z = tri[front, :, 2].mean(axis=1)
    polys = np.round((px[faces[front]] - lo) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    zbuf = np.full((hi[1] - lo[1], hi[0] - lo[0]), np.nan, dtype=np.float32)
    for i in np.argsort(-z, kind="stable"):  # far to near: the nearest face stays
        cv2.fillConvexPoly(zbuf, polys[i], float(z[i]), cv2.LINE_8, _SUBPIXEL_BITS)
    return zbuf, int(lo[0]), int(lo[1])


def surface_residual(depth_mm: np.ndarray, camera: PinholeCamera, T_cam_world: np.ndarray,
                     vertices_world: np.ndarray, faces: np.ndarray, gate_m: float, min_pixels: int,
                     min_fraction: float = 0.3) -> tuple[float, int] | None:
    """Measured minus predicted surface depth (metres, along the optical axis) of a hand mesh and the
    number of pixels it rests on; None when too few of the mesh's pixels hold a measurement within
    ``gate_m`` of the prediction (hand hidden, out of range or far from where it is predicted)."""
    rendered = render_surface_depth(camera, T_cam_world, vertices_world, faces)
    if rendered is None:
        return None
    zbuf, x0, y0 = rendered
    h, w = zbuf.shape
    measured = depth_mm[y0:y0 + h, x0:x0 + w].astype(np.float64) / 1000.0
    on_mesh = np.isfinite(zbuf)
    ok = on_mesh & (measured > 0)
    diff = (measured - zbuf)[ok]
    diff = diff[np.abs(diff) < gate_m]
    if len(diff) < max(min_pixels, min_fraction * on_mesh.sum()):
        return None
    # a second, tighter pass drops the surfaces just inside the gate (the forearm at the wrist)
    med = float(np.median(diff))
    near = diff[np.abs(diff - med) < 0.25 * gate_m]
    return (float(np.median(near)) if len(near) >= min_pixels else med), len(diff)


@dataclass
class DepthCueConfig:
    """Parameters of the depth cue (metres, seconds)."""

    std_m: float = 0.004
    """Standard deviation of the surface residual along a depth camera's axis (sensor noise plus the
    mesh's shape error)."""
    gate_m: float = 0.06
    """Pixels whose measured depth differs from the predicted surface by more are not the hand."""
    min_pixels: int = 12
    """Fewest hand pixels a residual rests on."""
    max_dt_s: float = 0.04
    """A depth frame further in time from the panorama frame than this is not used."""
    arm_anchor: bool = False
    """On: the depth the cue refines comes from the Kinect wrist alone, and the hand's predicted
    centre from the wrist and the forearm (elbow to wrist); off (default): from the blend of k4abt's
    wrist, HAND, HANDTIP and THUMB joints (``ProcessConfig.depth_weights``). With the Kinect depth
    maps the cue decides the depth and the anchor matters little; the blend is still the better of
    the two on simulated 30 s two-person sessions with the true rig (hand joints with the 5 mm /
    3 deg / 10 % observer: 7.72 vs 7.92 mm with the simulator's k4abt errors, 9.02 vs 9.10 mm with
    the independent error model of benchmarks/k4abt_independent.py, 6.64 vs 7.17 mm in ``ideal``;
    noise-free ``ideal`` 1.14 vs 2.08 mm; without depth maps 16.6 vs 16.7 mm): the forearm's
    direction misses the hand's centre by more than the noisy hand joints do."""
    wrist_floor_m: float = 0.008
    """With ``arm_anchor``: lowest standard deviation assumed for the wrist's depth (metres): the
    Kinect wrist's definition offset and slow noise, which its frame-to-frame noise does not show."""


def depth_shift(frames: list[DepthFrames], t: float, vertices_world: np.ndarray, faces: np.ndarray,
                ray_world: np.ndarray, motion_per_s: np.ndarray, cfg: DepthCueConfig) -> tuple[float, float] | None:
    """Shift (metres) along the unit ``ray_world`` that moves the candidate hand mesh
    ``vertices_world`` (at session time ``t``) onto the Kinect-measured surface, and its variance
    (m^2), fused over the Kinects by inverse variance; None when no Kinect measures it.

    ``motion_per_s`` (3,): the hand's predicted velocity (world, m/s), which carries the candidate to
    the time of each Kinect's nearest depth frame; NaN allows only depth frames within 5 ms.
    """
    num = den = 0.0
    for f in frames:
        i = f.nearest(t)
        dt = float(f.t_session[i] - t)
        if abs(dt) > min(cfg.max_dt_s, f.frame_period_s):
            continue
        if np.all(np.isfinite(motion_per_s)):
            moved = vertices_world + dt * motion_per_s
        elif abs(dt) <= 0.005:
            moved = vertices_world
        else:
            continue
        c = float(f.T_depth_world[2, :3] @ ray_world)
        depth_mm = f.image(i) if abs(c) >= _MIN_AXIS_COS else None
        if depth_mm is None:
            continue
        res = surface_residual(depth_mm, f.camera, f.T_depth_world, moved, faces, cfg.gate_m, cfg.min_pixels)
        if res is None:
            continue
        var = (cfg.std_m / c) ** 2
        num += res[0] / c / var
        den += 1.0 / var
    if den == 0.0:
        return None
    return num / den, 1.0 / den
