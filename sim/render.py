"""Rendering of the simulated scene (headless, CPU, numpy + OpenCV) for the 360 camera and for
the Kinects' colour and depth cameras.

Camera frames and mappings are those of geometry/cameras.py (OpenCV axes; the equirect mapping
lon = atan2(x, z), lat = atan2(-y, hypot(x, z)); pinhole cameras with their lens distortion). The
scene: a room (checkered floor at y = 0, coloured walls), people as capsules along their SMPL-X
bones plus a head, and their posed MANO hand meshes in skin colour with simple shading; a light
switched on for a moment (a flash: :func:`flash_fraction`, :func:`apply_flash`) brightens it all.
One rasteriser serves every camera through a :data:`Projection`; visibility is the painter's algorithm:
every primitive (capsule piece, head, hand triangle) is drawn far to near by its distance from the
camera. Primitives wider than half the image are skipped: in a panorama they straddle the seam
(longitude +-180 deg, behind the camera, far from the people), in a pinhole image they would be
nearer than any person stands to a Kinect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from omnimocap.geometry.cameras import EquirectCamera, PinholeCamera
from omnimocap.geometry.transforms import invert_pose, transform_points
from omnimocap.data.skeletons import SMPLX_INDEX

SKIN_BGR = np.array([128.0, 165.0, 222.0])
_SUBPIXEL_BITS = 2
# Bones drawn as capsules: (joint, joint, radius in metres, part) with part 0 shirt, 1 trousers, 2 skin.
_J = SMPLX_INDEX
_CAPSULES = (
    (_J["pelvis"], _J["spine2"], 0.135, 0), (_J["spine2"], _J["spine3"], 0.14, 0), (_J["spine3"], _J["neck"], 0.12, 0),
    (_J["left_collar"], _J["left_shoulder"], 0.07, 0), (_J["right_collar"], _J["right_shoulder"], 0.07, 0),
    (_J["left_shoulder"], _J["left_elbow"], 0.05, 0), (_J["right_shoulder"], _J["right_elbow"], 0.05, 0),
    (_J["left_elbow"], _J["left_wrist"], 0.038, 2), (_J["right_elbow"], _J["right_wrist"], 0.038, 2),
    (_J["pelvis"], _J["left_hip"], 0.10, 1), (_J["pelvis"], _J["right_hip"], 0.10, 1),
    (_J["left_hip"], _J["left_knee"], 0.075, 1), (_J["right_hip"], _J["right_knee"], 0.075, 1),
    (_J["left_knee"], _J["left_ankle"], 0.055, 1), (_J["right_knee"], _J["right_ankle"], 0.055, 1),
    (_J["left_ankle"], _J["left_foot"], 0.045, 1), (_J["right_ankle"], _J["right_foot"], 0.045, 1),
    (_J["neck"], _J["head"], 0.05, 2),
)
_PIECES = 4  # capsules are cut into pieces so they follow the equirect curvature
_SHIRTS = ((170, 90, 40), (60, 140, 50), (150, 60, 120))  # BGR: blue, green, purple (never skin-like)
_TROUSERS = (60, 55, 50)
HEAD_RADIUS = 0.1
HEAD_OFFSET = np.array([0.0, 0.07, 0.02])  # head centre from the SMPL-X head joint, head frame
# Latitude stretch of a panorama's ellipses is capped (near the poles it would grow without bound).
_MAX_LAT_STRETCH = 5.0
# A flash: a light that stays on for FLASH_HOLD_S seconds and maps every channel value v of the
# scene to min(255, v * FLASH_GAIN + FLASH_OFFSET).
FLASH_HOLD_S = 0.5
FLASH_GAIN = 1.5
FLASH_OFFSET = 30.0

# World points (...,3) -> pixels (...,2) (NaN where the camera cannot image the point), distances
# (...,) in metres (Euclidean for a panorama, along the optical axis for a pinhole camera) and pixels
# per radian (...,2) along the columns and rows at those pixels.
Projection = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class RoomSpec:
    """The room around the rig: half sizes in x and z (metres, centred on the world origin) and
    the wall height."""

    half_x: float = 4.0
    half_z: float = 4.0
    height: float = 3.0


def equirect_projection(camera: EquirectCamera, T_world_cam: np.ndarray) -> Projection:
    """The :data:`Projection` of a 360 camera at ``T_world_cam``."""
    R_cam_world, centre = T_world_cam[:3, :3].T, T_world_cam[:3, 3]
    ppr = camera.pixels_per_radian

    def project(p_world: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rel = p_world - centre
        px = camera.bearing_to_pixel(rel @ R_cam_world.T)
        lat_stretch = 1.0 / np.maximum(1.0 / _MAX_LAT_STRETCH, np.cos((0.5 - (px[..., 1] + 0.5) / camera.height) * np.pi))
        scale = np.stack([ppr * lat_stretch, np.full_like(lat_stretch, ppr)], axis=-1)
        return px, np.linalg.norm(rel, axis=-1), scale

    return project


def pinhole_projection(camera: PinholeCamera, T_world_cam: np.ndarray, near_m: float = 0.1) -> Projection:
    """The :data:`Projection` of a pinhole camera (distortion included) at ``T_world_cam``; points
    nearer than ``near_m`` along the optical axis are not imaged."""
    T_cam_world = invert_pose(np.asarray(T_world_cam, dtype=np.float64))

    def project(p_world: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = transform_points(T_cam_world, p_world)
        z = p[..., 2]
        in_front = z > near_m
        px = camera.project(np.where(in_front[..., None], p, [0.0, 0.0, 1.0]))
        px = np.where(in_front[..., None], px, np.nan)
        scale = np.broadcast_to(np.array([camera.fx, camera.fy]), px.shape)
        return px, z, scale

    return project


def camera_rays(camera: EquirectCamera | PinholeCamera) -> np.ndarray:
    """(H, W, 3) unit directions of every pixel centre in the camera frame."""
    rows, cols = np.mgrid[0:camera.height, 0:camera.width]
    px = np.stack([cols, rows], axis=-1).astype(np.float64)
    return camera.pixel_to_bearing(px) if isinstance(camera, EquirectCamera) else camera.unproject(px)


def room_hits(rays_cam: np.ndarray, T_world_cam: np.ndarray, room: RoomSpec = RoomSpec()) -> tuple[np.ndarray, np.ndarray]:
    """Where camera-frame rays (...,3, unit) first meet the room: the surface (...) (0 floor, 1
    ceiling, 2 x wall, 3 z wall) and the distance (...) in metres."""
    d = rays_cam @ T_world_cam[:3, :3].T
    c = T_world_cam[:3, 3]
    big = np.full(d.shape[:-1], np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(d[..., 1] < 0, -c[1] / d[..., 1], big)
        t_ceil = np.where(d[..., 1] > 0, (room.height - c[1]) / d[..., 1], big)
        t_x = np.where(d[..., 0] != 0, (np.sign(d[..., 0]) * room.half_x - c[0]) / d[..., 0], big)
        t_z = np.where(d[..., 2] != 0, (np.sign(d[..., 2]) * room.half_z - c[2]) / d[..., 2], big)
    ts = np.stack([t_floor, t_ceil, t_x, t_z], axis=-1)
    which = np.argmin(ts, axis=-1)
    return which, np.take_along_axis(ts, which[..., None], axis=-1)[..., 0]


def render_background(camera: EquirectCamera | PinholeCamera, T_world_cam: np.ndarray, room: RoomSpec = RoomSpec(),
                      rays: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) BGR uint8 image of the empty room seen from a camera at ``T_world_cam``; with
    ``rays`` (...,3) (unit, camera frame) the colours (...,3) along those rays instead."""
    rays = camera_rays(camera) if rays is None else rays
    which, t = room_hits(rays, T_world_cam, room)
    d = rays @ T_world_cam[:3, :3].T
    p = T_world_cam[:3, 3] + t[..., None] * d
    img = np.empty(d.shape[:-1] + (3,))
    checker = (np.floor(p[..., 0] / 0.5) + np.floor(p[..., 2] / 0.5)) % 2
    floor = np.where(checker[..., None] > 0, [150.0, 150.0, 145.0], [95.0, 95.0, 92.0])
    wall_x = np.where(d[..., 0:1] > 0, [205.0, 190.0, 170.0], [175.0, 200.0, 180.0])  # light blue / green
    wall_z = np.where(d[..., 2:3] > 0, [200.0, 180.0, 195.0], [190.0, 195.0, 200.0])  # lavender / grey
    shade = (0.75 + 0.25 * np.clip(p[..., 1:2] / room.height, 0, 1))
    img[:] = np.where((which == 0)[..., None], floor, 0)
    img += np.where((which == 1)[..., None], [235.0, 235.0, 235.0], 0)
    img += np.where((which == 2)[..., None], wall_x * shade, 0)
    img += np.where((which == 3)[..., None], wall_z * shade, 0)
    fade = np.exp(-np.maximum(t - 2.0, 0) / 12.0)[..., None]  # distance haze
    return np.clip(img * fade + 120.0 * (1 - fade), 0, 255).astype(np.uint8)


def rasterise_people(img: np.ndarray, project: Projection, centre: np.ndarray, hand_faces: dict[str, np.ndarray],
                     joints: np.ndarray, global_R: np.ndarray, hand_vertices: np.ndarray, *,
                     depth_mm: bool = False, wrap_width: int | None = None) -> np.ndarray:
    """Draw the people into ``img`` (in place, returned) far to near.

    Args:
        img: (H, W, 3) BGR uint8, or with ``depth_mm`` a (H, W) float32 image that receives each
            primitive's distance (as the projection measures it) in millimetres instead of a colour.
        project: the camera's :data:`Projection`; ``centre`` (3,) its centre, world (for back-face
            culling of the hand meshes).
        hand_faces: outward-wound triangles of the left and right hand meshes.
        joints: (P, 55, 3) SMPL-X joints, world.
        global_R: (P, 55, 3, 3) global joint rotations (the head's orients the head sphere).
        hand_vertices: (P, 2, 778, 3) posed MANO meshes (left, right), world.
        wrap_width: the width of the whole image the projection maps to, when ``img`` is a window
            of it (primitives wider than half of it are skipped); default ``img``'s width.
    """
    depths, draws = [], []
    W = img.shape[1] if wrap_width is None else wrap_width
    scale = float(1 << _SUBPIXEL_BITS)

    def colour(c, d: float):
        return (float(d * 1000.0),) if depth_mm else c

    for p in range(len(joints)):
        shirt = _SHIRTS[p % len(_SHIRTS)]
        colours = (shirt, _TROUSERS, tuple(int(v) for v in SKIN_BGR))
        a = joints[p, [c[0] for c in _CAPSULES]]
        b = joints[p, [c[1] for c in _CAPSULES]]
        f = (np.arange(_PIECES + 1) / _PIECES)[None, :, None]
        pts = a[:, None] + f * (b - a)[:, None]  # (bones, pieces+1, 3)
        px, dist, ppr = project(pts)
        mid_dist = 0.5 * (dist[:, 1:] + dist[:, :-1])
        for i, (_, _, radius, part) in enumerate(_CAPSULES):
            for k in range(_PIECES):
                p0, p1 = px[i, k], px[i, k + 1]
                if not (np.isfinite(p0).all() and np.isfinite(p1).all()) or abs(p0[0] - p1[0]) > W / 2:
                    continue
                r_px = max(1, int(round(radius / mid_dist[i, k] * ppr[i, k, 1])))
                shade = 1.1 - 0.15 * mid_dist[i, k]  # nearer parts brighter
                depths.append(mid_dist[i, k])
                draws.append(("capsule", p0, p1, r_px,
                              colour(tuple(int(min(255, c * shade)) for c in colours[part]), mid_dist[i, k])))
        head = joints[p, _J["head"]] + global_R[p, _J["head"]] @ HEAD_OFFSET
        hpx, hdist, hppr = project(head)
        if np.isfinite(hpx).all():
            depths.append(hdist)
            draws.append(("head", hpx, HEAD_RADIUS / hdist * hppr, None,
                          colour(tuple(int(0.8 * c) for c in colours[2]), hdist)))

        for s, side in enumerate(("left", "right")):
            verts = hand_vertices[p, s]
            tri = verts[hand_faces[side]]
            normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
            centroid = tri.mean(axis=1)
            view = centroid - centre
            front = np.einsum("ij,ij->i", normal, view) < 0
            vpx, vdist, _ = project(verts)
            tpx = vpx[hand_faces[side]]
            span = tpx[:, :, 0].max(axis=1) - tpx[:, :, 0].min(axis=1)
            keep = front & (span < W / 2) & np.isfinite(tpx).all(axis=(1, 2))
            dist = vdist[hand_faces[side]][keep].mean(axis=1)
            if depth_mm:
                cols = [(float(d * 1000.0),) for d in dist]
            else:
                n_unit = normal[keep] / np.maximum(np.linalg.norm(normal[keep], axis=1, keepdims=True), 1e-12)
                v_unit = view[keep] / np.linalg.norm(view[keep], axis=1, keepdims=True)
                light = 0.35 + 0.5 * np.abs(np.einsum("ij,ij->i", n_unit, v_unit)) + 0.15 * np.clip(n_unit[:, 1], 0, 1)
                cols = np.clip(SKIN_BGR * light[:, None], 0, 255).astype(int).tolist()
            polys = np.round(tpx[keep] * scale).astype(np.int32)
            for poly, col, d in zip(polys, cols, dist):
                depths.append(d)
                draws.append(("tri", poly, None, None, col))

    for i in np.argsort(-np.asarray(depths), kind="stable"):
        kind, a, b, r, col = draws[i]
        if kind == "tri":
            cv2.fillConvexPoly(img, a, col, cv2.LINE_8, _SUBPIXEL_BITS)
        elif kind == "capsule":
            p0 = (int(round(a[0] * scale)), int(round(a[1] * scale)))
            p1 = (int(round(b[0] * scale)), int(round(b[1] * scale)))
            cv2.line(img, p0, p1, col, 2 * r, cv2.LINE_8, _SUBPIXEL_BITS)
        else:
            centre_px = (int(round(a[0] * scale)), int(round(a[1] * scale)))
            axes = (int(round(b[0] * scale)), int(round(b[1] * scale)))
            # anti-aliased edges would blend distances in a depth image
            cv2.ellipse(img, centre_px, axes, 0, 0, 360, col, -1, cv2.LINE_8 if depth_mm else cv2.LINE_AA, _SUBPIXEL_BITS)
    return img


class PanoRenderer:
    """Renders frames of the simulated scene for one fixed 360 camera pose ``T_world_pano``."""

    def __init__(self, width: int, T_world_pano: np.ndarray, hand_faces: dict[str, np.ndarray], room: RoomSpec = RoomSpec()):
        """``hand_faces``: outward-wound triangles of the left and right hand meshes."""
        self.camera = EquirectCamera(width, width // 2)
        self.T_world_pano = np.asarray(T_world_pano, dtype=np.float64)
        self.centre = self.T_world_pano[:3, 3]
        self.hand_faces = hand_faces
        self.project = equirect_projection(self.camera, self.T_world_pano)
        self.background = render_background(self.camera, self.T_world_pano, room)

    def render(self, joints: np.ndarray, global_R: np.ndarray, hand_vertices: np.ndarray) -> np.ndarray:
        """One frame (H, W, 3) BGR uint8; arguments as in :func:`rasterise_people`."""
        return rasterise_people(self.background.copy(), self.project, self.centre, self.hand_faces,
                                joints, global_R, hand_vertices)


def flash_fraction(t_mid: float, exposure_s: float, flashes: tuple[float, ...] | list[float],
                   hold_s: float = FLASH_HOLD_S) -> float:
    """Fraction of the exposure window ``[t_mid - exposure_s/2, t_mid + exposure_s/2]`` during which a
    light is on, for lights switched on at each of ``flashes`` and off ``hold_s`` later (all session
    seconds; the flashes must not overlap)."""
    lo, hi = t_mid - 0.5 * exposure_s, t_mid + 0.5 * exposure_s
    lit = sum(max(0.0, min(hi, t + hold_s) - max(lo, t)) for t in flashes)
    return min(1.0, lit / exposure_s)


def apply_flash(img: np.ndarray, fraction: float) -> np.ndarray:
    """Brighten a BGR uint8 image (in place, returned) as an exposure lit for ``fraction`` (0-1) of its
    time sees it: a blend of the dark image and the lit one, min(255, v * FLASH_GAIN + FLASH_OFFSET)."""
    if fraction <= 0.0:
        return img
    dark = img.astype(np.float32)
    lit = np.minimum(255.0, dark * FLASH_GAIN + FLASH_OFFSET)
    img[:] = np.clip(np.rint(dark + fraction * (lit - dark)), 0, 255).astype(np.uint8)
    return img
