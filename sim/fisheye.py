"""Raw dual-fisheye frames of the simulated scene (two fisheye images side by side, unstitched, as
an Insta360 X-series camera delivers them over USB), drawn with the rasteriser of
:mod:`omnimocap.sim.render`: each lens renders the room and the people from its own optical
centre through its own lens model (:class:`~omnimocap.geometry.cameras.FisheyeLens`), so the two
halves show the parallax of the real camera; outside the image circles the frame is black.

Also :func:`stitch_equirect`, the stitched path the raw frames are compared against: an
equirectangular panorama whose every direction is read from the lens that sees it nearest its axis,
as if both lenses sat at the camera's centre (what a stitcher without depth does).
"""

from __future__ import annotations

import cv2
import numpy as np

from omnimocap.calibration.board import BoardSpec, draw_board
from omnimocap.geometry.cameras import DualFisheyeCamera, EquirectCamera, FisheyeLens
from omnimocap.geometry.transforms import invert_pose, make_pose, transform_points
from omnimocap.sim.render import Projection, RoomSpec, apply_flash, camera_rays, rasterise_people, render_background


def lens_pose(lens: FisheyeLens, T_world_cam: np.ndarray) -> np.ndarray:
    """``T_world_lens`` (4x4, metres) of a lens of the 360 camera at ``T_world_cam``."""
    return np.asarray(T_world_cam, dtype=np.float64) @ make_pose(np.asarray(lens.R_cam_lens), np.asarray(lens.t_cam_lens))


def fisheye_projection(lens: FisheyeLens, T_world_lens: np.ndarray) -> Projection:
    """The :data:`~omnimocap.sim.render.Projection` of one lens at ``T_world_lens``: pixels in
    the lens's part of the frame (NaN beyond its image circle), Euclidean distances, and pixels per
    radian across the ray (the tangential scale ``r / sin(theta)``, ``f`` on the axis) on both axes."""
    T_lens_world = invert_pose(np.asarray(T_world_lens, dtype=np.float64))

    def project(p_world: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = transform_points(T_lens_world, p_world)
        px = lens.project(p)
        dist = np.linalg.norm(p, axis=-1)
        theta = np.arctan2(np.hypot(p[..., 0], p[..., 1]), p[..., 2])
        r = lens.theta_d(theta)
        with np.errstate(invalid="ignore", divide="ignore"):
            tangential = np.where(theta > 1e-6, r / np.sin(np.maximum(theta, 1e-6)), 1.0)
        scale = np.stack([lens.fx * tangential, lens.fy * tangential], axis=-1)
        return px, dist, scale

    return project


class DualFisheyeRenderer:
    """Renders raw dual-fisheye frames of the simulated scene for a 360 camera at ``T_world_cam``."""

    def __init__(self, camera: DualFisheyeCamera, T_world_cam: np.ndarray, hand_faces: dict[str, np.ndarray],
                 room: RoomSpec = RoomSpec()):
        self.camera = camera
        self.hand_faces = hand_faces
        self.T_world_lens = [lens_pose(lens, T_world_cam) for lens in camera.lenses]
        self.projections = [fisheye_projection(lens, T) for lens, T in zip(camera.lenses, self.T_world_lens)]
        self.masks, self.backgrounds = [], []
        for lens, T in zip(camera.lenses, self.T_world_lens):
            rows, cols = np.mgrid[0:lens.height, 0:lens.width]
            inside = lens.in_circle(np.stack([cols, rows], axis=-1))
            img = render_background(lens, T, room)
            img[~inside] = 0
            self.masks.append(inside)
            self.backgrounds.append(img)

    def render(self, joints: np.ndarray, global_R: np.ndarray, hand_vertices: np.ndarray,
               board: "tuple[BoardSpec, np.ndarray] | None" = None, flash: float = 0.0) -> np.ndarray:
        """One raw frame (H, 2H, 3) BGR uint8; arguments as in
        :func:`~omnimocap.sim.render.rasterise_people` (world frame). ``board``: a ChArUco board
        (its spec and ``T_world_board``, metres) drawn over the people in each lens that sees it;
        ``flash``: the fraction of the exposure a light was on (:func:`~omnimocap.sim.render.apply_flash`)."""
        halves = []
        for lens, bg, project, T, mask in zip(self.camera.lenses, self.backgrounds, self.projections, self.T_world_lens,
                                              self.masks):
            img = rasterise_people(bg.copy(), project, T[:3, 3], self.hand_faces, joints, global_R, hand_vertices)
            if board is not None:
                draw_board(img, board[0], lens, invert_pose(T) @ np.asarray(board[1], dtype=np.float64))
            if flash > 0.0:
                apply_flash(img, flash)
            img[~mask] = 0
            halves.append(img)
        return np.ascontiguousarray(np.concatenate(halves, axis=1))


def stitch_maps(camera: DualFisheyeCamera, pano: EquirectCamera) -> tuple[np.ndarray, np.ndarray]:
    """(map_x, map_y) float32 (H, W) of the stitched panorama: the raw-frame pixel each panorama
    pixel reads, from the lens whose axis is nearest its direction (lens centres ignored)."""
    d = camera_rays(pano)
    px = camera.project(d, points=False)
    px = np.where(np.isfinite(px), px, -1.0)
    return px[..., 0].astype(np.float32), px[..., 1].astype(np.float32)


def stitch_equirect(frame: np.ndarray, camera: DualFisheyeCamera, pano: EquirectCamera,
                    maps: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The stitched equirectangular panorama (pano.height, pano.width[, C]) of a raw frame, bilinear;
    ``maps`` from :func:`stitch_maps` saves recomputing them per frame."""
    map_x, map_y = maps if maps is not None else stitch_maps(camera, pano)
    return cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def board_frame(camera: DualFisheyeCamera, spec: BoardSpec, T_cam_board: np.ndarray, background: int = 128) -> np.ndarray:
    """One raw grayscale frame (H, 2H) uint8 of the ChArUco board at ``T_cam_board`` (the 360
    camera's frame, metres) in front of a uniform ``background``, each lens seeing it from its own
    centre (a calibration recording of the lenses); black outside the image circles."""
    halves = []
    for lens in camera.lenses:
        img = np.full((lens.height, lens.width), background, np.uint8)
        T_lens_board = invert_pose(make_pose(np.asarray(lens.R_cam_lens), np.asarray(lens.t_cam_lens))) @ T_cam_board
        edge = transform_points(T_lens_board, spec.outline())
        if np.any(np.arctan2(np.hypot(edge[:, 0], edge[:, 1]), edge[:, 2]) <= lens.max_theta):
            draw_board(img, spec, lens, T_lens_board, supersample=2)
        rows, cols = np.mgrid[0:lens.height, 0:lens.width]
        img[~lens.in_circle(np.stack([cols, rows], axis=-1))] = 0
        halves.append(img)
    return np.concatenate(halves, axis=1)


# Directions of the boards held across the seam, as angles around it in the camera's x-y plane
# (0: beside the camera on +x, 90: above it; none below, where the tripod stands), degrees, and their
# distances, metres: boards in several directions around the seam and at two distances, so that the
# back lens's offset along the axis is not traded for a turn of it (a turn about y moves boards
# beside the camera as an offset along z does, but not boards above it; a near and a far board
# move by different angles for an offset and by the same for a turn).
SEAM_BOARD_DEG = (0.0, 40.0, 90.0, 140.0, 180.0, 220.0, 320.0, 15.0, 165.0, 200.0, 340.0)
SEAM_BOARD_DISTANCES_M = (0.45, 0.8)


def board_poses(spec: BoardSpec, rng: np.random.Generator, distance_m: float = 0.55) -> list[np.ndarray]:
    """``T_cam_board`` (4x4, metres) of a calibration recording: the board facing the camera
    ``distance_m`` away, tilted at random by up to ~20 deg, in six directions before each lens (on
    its axis and up to ~50 deg off it), then across the seam where both lenses see it (what
    ``calibration/fisheye_board.py`` needs for the lenses' relative pose): in the directions of
    :data:`SEAM_BOARD_DEG` around it, a little in front of or behind its plane, at the distances
    of :data:`SEAM_BOARD_DISTANCES_M` in turn."""
    from omnimocap.geometry.transforms import axis_angle_to_matrix, look_at

    def towards(direction, dist: float, up) -> np.ndarray:
        d = np.asarray(direction, dtype=np.float64)
        d = d / np.linalg.norm(d)
        R = look_at(d, np.asarray(up, dtype=np.float64)) @ axis_angle_to_matrix(rng.normal(scale=0.2, size=3))
        w, h = spec.squares_x * spec.square_m, spec.squares_y * spec.square_m
        return make_pose(R, d * dist - R @ np.array([w / 2, h / 2, 0.0]))

    poses = []
    for sign in (1.0, -1.0):
        for direction in ([0, 0, 1], [0.6, 0.3, 1], [-0.7, -0.2, 1], [0.2, -0.8, 1], [-0.3, 0.7, 1], [1.2, 0, 1]):
            poses.append(towards(np.array(direction, dtype=np.float64) * [1, 1, sign], distance_m, [0.0, 1.0, 0.0]))
    for n, angle in enumerate(np.radians(SEAM_BOARD_DEG)):
        direction = [np.cos(angle), -np.sin(angle), 0.03 * (1 if n % 2 else -1)]
        dist = SEAM_BOARD_DISTANCES_M[n % len(SEAM_BOARD_DISTANCES_M)]
        poses.append(towards(direction, dist, [0.0, 0.0, 1.0]))
    return poses
