"""The simulated 360 camera as a consumer camera makes it (``--realism field``): two lenses, a rolling
shutter and motion blur, in the conventions of :mod:`omnimocap.geometry.pano_optics`.

Frames: the 360 camera's (OpenCV axes, the equirect mapping of geometry/cameras.py), world frame
y up, metres; times in session seconds relative to the frame's true session time.

- Two lenses: each lens renders the room, the people and the board from its own optical centre
  ``PanoOptics.centre(k)`` into a full equirect canvas (an equirect camera at the lens centre with
  the 360 camera's axes: a point ``p`` lands along ``p - c_k``, which is what a lens sees once its
  image is stitched at infinity), up to its field of view ``fov_deg / 2`` from its axis. The
  stitched frame takes each direction from the lens whose half holds it (``d_z >= 0``: front) and,
  within ``blend_deg`` of the seam, cross-fades the two linearly in the signed seam angle (half and
  half on the seam). Rendering each lens straight into the equirect grid is the fisheye render
  followed by its stitch remap without the remap's resampling.
- Rolling shutter: the people are sampled at :data:`SHUTTER_SAMPLES` times spanning the readout
  and the exposure; every joint and hand vertex is drawn where it was when its lens's row was
  exposed (``PanoOptics.time_offset_s`` of its direction from that lens, by the fixed point of
  ``capture_times``), its position interpolated linearly between the samples. The board is drawn at
  :data:`BOARD_TIME_SAMPLES` times across the rows it spans, each pixel keeping the drawing nearest
  its own row's time.
- Motion blur: the mean of :data:`BLUR_SAMPLES` renders at the midpoints of equal slices of each
  row's exposure (a box shutter), over the same background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from omnimocap.calibration.board import draw_board
from omnimocap.geometry.cameras import EquirectCamera
from omnimocap.geometry.pano_optics import BACK, FRONT, PanoOptics
from omnimocap.geometry.transforms import invert_pose, make_pose, transform_points
from omnimocap.sim.render import (
    FLASH_GAIN, FLASH_HOLD_S, FLASH_OFFSET, Projection, RoomSpec, camera_rays, equirect_projection, rasterise_people,
    render_background,
)

if TYPE_CHECKING:
    from omnimocap.sim.board import BoardSequence

# Times at which the people are sampled across the readout and exposure of a frame. Three keep a
# hand's path within a millimetre of its true one over 35 ms (it curves little in that time).
SHUTTER_SAMPLES = 3
# Sub-exposures averaged into a frame: the blur of a hand at 2 m/s over 10 ms (2 cm) is drawn as
# 3 copies 6.7 mm apart (4 px at 1 m at 3840 px), which overlap into one smear for a hand or a
# finger; every copy costs a rasterisation of the people (benchmarks/bench_sim_camera.py).
BLUR_SAMPLES = 3
# Times across the rows a moving board spans at which it is drawn (each pixel keeps the nearest).
BOARD_TIME_SAMPLES = 5
LENSES = (FRONT, BACK)
# How far from a joint or hand vertex the people's drawing reaches, metres (the widest capsule is
# 0.14 m, the head sphere 0.1 m around a centre 0.073 m from its joint).
REACH_M = 0.25


def shutter_offsets(optics: PanoOptics, samples: int = SHUTTER_SAMPLES) -> np.ndarray:
    """(S,) times relative to a frame's timestamp, seconds, spanning every moment some row of the
    frame is exposed (one time, 0, for a global shutter without blur)."""
    half = 0.5 * (optics.readout_s + optics.exposure_s)
    return np.linspace(-half, half, samples) if half > 0 else np.zeros(1)


def exposure_offsets(optics: PanoOptics, samples: int = BLUR_SAMPLES) -> np.ndarray:
    """(K,) times relative to a row's time, seconds: the midpoints of ``samples`` equal slices of
    the exposure (one time, 0, without blur)."""
    if optics.exposure_s <= 0:
        return np.zeros(1)
    return optics.exposure_s * ((np.arange(samples) + 0.5) / samples - 0.5)


def interpolate(offsets_s: np.ndarray, values: np.ndarray, query_s: np.ndarray) -> np.ndarray:
    """Values (...,3) at times ``query_s`` (...), piecewise linear through ``values`` (S,...,3) at the
    ascending ``offsets_s`` (S,) (linear beyond the ends); one sample is constant."""
    if len(offsets_s) == 1:
        return np.broadcast_to(values[0], np.shape(query_s) + values.shape[-1:]).copy()
    i = np.clip(np.searchsorted(offsets_s, query_s) - 1, 0, len(offsets_s) - 2)
    w = ((query_s - offsets_s[i]) / (offsets_s[i + 1] - offsets_s[i]))[..., None]
    idx = np.indices(np.shape(query_s))
    lo = values[(i, *idx)]
    hi = values[(i + 1, *idx)]
    return lo + w * (hi - lo)


@dataclass
class PeopleOverShutter:
    """The people of one frame at times ``offsets_s`` (S,) around its timestamp (seconds). World
    frame, metres: ``joints`` (S,P,55,3) SMPL-X joints, ``hand_vertices`` (S,P,2,778,3) posed MANO
    meshes (left, right), ``global_R`` (P,55,3,3) the joints' rotations at the frame's timestamp
    (they orient the head sphere)."""

    offsets_s: np.ndarray
    joints: np.ndarray
    hand_vertices: np.ndarray
    global_R: np.ndarray


class FieldPanoRenderer:
    """Renders stitched equirect frames (BGR uint8) of the simulated scene for a 360 camera at
    ``T_world_pano`` (4x4, metres) with the optics ``optics`` (see the module docstring).

    Only the window of the frame the people can reach (their joints' and hand vertices' pixels,
    grown by :data:`REACH_M` around each) is drawn per sub-exposure; the rest of the frame is the
    stitched empty room, which does not change. A board in the frame, or people across the
    panorama's left and right edges, make the window the whole frame."""

    def __init__(self, width: int, T_world_pano: np.ndarray, hand_faces: dict[str, np.ndarray], optics: PanoOptics,
                 room: RoomSpec = RoomSpec(), blur_samples: int = BLUR_SAMPLES):
        self.camera = EquirectCamera(width, width // 2)
        self.optics = optics
        self.hand_faces = hand_faces
        self.T_world_pano = np.asarray(T_world_pano, dtype=np.float64)
        self.exposure_offsets = exposure_offsets(optics, blur_samples)
        self.T_world_lens = [self.T_world_pano @ make_pose(np.eye(3), optics.centre(k)) for k in LENSES]
        self.projections = [_lens_projection(self.camera, T, k, optics.fov_deg) for k, T in zip(LENSES, self.T_world_lens)]
        rays = camera_rays(self.camera)
        self.pixel_offsets_s = optics.time_offset_s(rays).astype(np.float32)
        w_front = front_weight(optics, rays)
        front_cols = np.flatnonzero(rays[self.camera.height // 2, :, 2] >= 0.0)
        self._front = (int(front_cols[0]), int(front_cols[-1]) + 1)
        band = (w_front > 0.0) & (w_front < 1.0)
        self._band = np.nonzero(band)
        self._band_w = w_front[band][:, None].astype(np.float32)
        # Each lens's room where the stitched frame shows it (its half and the band), then stitched.
        self._band_background = []
        background = np.empty(rays.shape[:2] + (3,), np.uint8)
        for T, shown in ((self.T_world_lens[FRONT], w_front > 0.0), (self.T_world_lens[BACK], w_front < 1.0)):
            background[shown] = render_background(self.camera, T, room, rays[shown])
            self._band_background.append(background[self._band].copy())
        self.background = background
        self._blend_band(self.background, self._band, self._band_background)

    def _blend_band(self, out: np.ndarray, band: tuple[np.ndarray, np.ndarray], lens_values: list[np.ndarray],
                    weights: np.ndarray | None = None) -> None:
        """Write into ``out`` at the pixels ``band`` the cross-fade of the two lenses' values there."""
        w = self._band_w if weights is None else weights
        front, back = lens_values[FRONT], lens_values[BACK]
        out[band] = np.rint(back + w * (front.astype(np.float32) - back)).astype(np.uint8)

    def row_offsets(self, points_world: np.ndarray, lens: int) -> np.ndarray:
        """Capture times (...) relative to the frame's timestamp, seconds, of world points (...,3) on
        ``lens``'s sensor (the row of their direction from that lens's centre)."""
        T = self.T_world_lens[lens]
        d_cam = (points_world - T[:3, 3]) @ T[:3, :3]
        return self.optics.time_offset_s(d_cam)

    def _captured(self, offsets_s: np.ndarray, points: np.ndarray, lens: int) -> np.ndarray:
        """(N,) capture times relative to the frame's timestamp of the points (S,N,3) sampled at
        ``offsets_s`` on ``lens``'s sensor: ``capture_times``' fixed point, two steps."""
        q = np.zeros(points.shape[1:-1])
        if self.optics.readout_s == 0.0:
            return q
        for _ in range(2):
            q = self.row_offsets(interpolate(offsets_s, points, q), lens)
        return q

    def _window(self, positions: list[np.ndarray], full: bool) -> tuple[int, int, int, int]:
        """(r0, r1, c0, c1) of the frame's window that the points (...,3) of ``positions`` (world)
        can reach; the whole frame when ``full`` or when they cross the panorama's edges."""
        H, W = self.camera.height, self.camera.width
        if full:
            return 0, H, 0, W
        lo, hi = np.array([np.inf, np.inf]), np.array([-np.inf, -np.inf])
        for k, pts in positions:
            px, dist, scale = self.projections[k](pts)
            ok = np.isfinite(px).all(axis=-1)
            if not ok.any():
                continue
            reach = REACH_M / np.maximum(dist[ok], 1e-3)[:, None] * scale[ok] + 2.0
            lo = np.minimum(lo, (px[ok] - reach).min(axis=0))
            hi = np.maximum(hi, (px[ok] + reach).max(axis=0))
        if not np.isfinite(lo).all():
            return 0, 0, 0, 0
        if hi[0] - lo[0] >= W / 2:
            return 0, H, 0, W
        c0, r0 = np.clip(np.floor(lo).astype(int), 0, None)
        c1, r1 = np.minimum(np.ceil(hi).astype(int) + 1, (W, H))
        return int(r0), int(r1), int(c0), int(c1)

    def render(self, people: PeopleOverShutter, t_frame: float = 0.0, board: "BoardSequence | None" = None,
               flashes: tuple[float, ...] = ()) -> np.ndarray:
        """One stitched frame (H, W, 3) BGR uint8 of the frame whose true session time is
        ``t_frame`` (seconds; it places the board and the ``flashes``, session seconds)."""
        S, P = people.joints.shape[:2]
        points = np.concatenate([people.joints.reshape(S, -1, 3), people.hand_vertices.reshape(S, -1, 3)], axis=1)
        n_joints = P * people.joints.shape[2]
        captured = [self._captured(people.offsets_s, points, k) for k in LENSES]
        at = {(j, k): interpolate(people.offsets_s, points, captured[k] + e)
              for j, e in enumerate(self.exposure_offsets) for k in LENSES}
        board_poses = self._board_poses(board, t_frame)
        r0, r1, c0, c1 = self._window([(k, pts) for (j, k), pts in at.items()], bool(board_poses))
        frame = self.background.copy()
        if r1 > r0 and c1 > c0:
            frame[r0:r1, c0:c1] = self._render_window(people, at, n_joints, board, board_poses, (r0, r1, c0, c1))
        if flashes:
            self._apply_flashes(frame, t_frame, flashes)
        return frame

    def _render_window(self, people: PeopleOverShutter, at: dict, n_joints: int, board, board_poses,
                       window: tuple[int, int, int, int]) -> np.ndarray:
        """The window (r0:r1, c0:c1) of the stitched frame with the people (and the board), the mean
        over the sub-exposures."""
        r0, r1, c0, c1 = window
        inside = (self._band[0] >= r0) & (self._band[0] < r1) & (self._band[1] >= c0) & (self._band[1] < c1)
        band = (self._band[0][inside] - r0, self._band[1][inside] - c0)
        band_w = self._band_w[inside]
        f0, f1 = np.clip(np.array(self._front) - c0, 0, c1 - c0)
        shift = np.array([c0, r0], dtype=np.float64)
        # A lens whose part of the frame (its half and the band) misses the window is not drawn.
        shows = {FRONT: f1 > f0 or band_w.size > 0, BACK: f0 > 0 or f1 < c1 - c0 or band_w.size > 0}
        total = None
        for j, e in enumerate(self.exposure_offsets):
            canvases = {}
            for k in LENSES:
                if not shows[k]:
                    continue
                img = self.background[r0:r1, c0:c1].copy()
                img[band] = self._band_background[k][inside]
                pts = at[(j, k)]
                joints = pts[:n_joints].reshape(people.joints.shape[1:])
                verts = pts[n_joints:].reshape(people.hand_vertices.shape[1:])
                project = self.projections[k]

                def shifted(p, project=project):
                    px, dist, scale = project(p)
                    return px - shift, dist, scale

                rasterise_people(img, shifted, self.T_world_lens[k][:3, 3], self.hand_faces, joints, people.global_R,
                                 verts, wrap_width=self.camera.width)
                if board_poses:  # the window is the whole frame
                    self._draw_board_rows(img, board.spec, board_poses[k], k, e)
                canvases[k] = img
            out = canvases[BACK] if shows[BACK] else canvases[FRONT]
            if shows[BACK] and shows[FRONT]:
                lens_band = [canvases[k][band] for k in LENSES]
                out[:, f0:f1] = canvases[FRONT][:, f0:f1]
                self._blend_band(out, band, lens_band, band_w)
            total = out.astype(np.uint16) if total is None else total + out
        n = len(self.exposure_offsets)
        return total.astype(np.uint8) if n == 1 else ((total + n // 2) // n).astype(np.uint8)

    def _board_poses(self, board: "BoardSequence | None", t_frame: float):
        """Per lens, the board's pose ``T_world_board`` (or None) at a time relative to the frame's
        timestamp, and the span of its corners' row times on that lens; empty without a board."""
        T_world_board = board.pose_at(t_frame) if board is not None else None
        if T_world_board is None:
            return []
        corners = transform_points(T_world_board, board.spec.corners())
        spans = [self.row_offsets(corners, k) for k in LENSES]
        return [(lambda off: board.pose_at(t_frame + off), (float(r.min()), float(r.max()))) for r in spans]

    def _draw_board_rows(self, img: np.ndarray, spec, board_pose, lens: int, e: float) -> None:
        """Draw the board into the stitched frame ``img`` (the whole frame) as ``lens`` sees it in
        the sub-exposure at ``e``, each pixel showing it at its own row's time: the board is drawn at
        :data:`BOARD_TIME_SAMPLES` times across its rows' span and each pixel keeps the drawing
        nearest its row's time."""
        pose_at, (lo, hi) = board_pose
        T_lens_world = invert_pose(self.T_world_lens[lens])
        if not self._lens_shows_board(spec, pose_at(lo + e), pose_at(hi + e), lens):
            return
        first, last = pose_at(lo + e), pose_at(hi + e)
        moves = first is None or last is None or not np.allclose(first, last, rtol=0.0, atol=1e-9)
        r0, r1, c0, c1 = self._board_box(spec, pose_at(e), lens)
        # A board that fills most of the frame (carried past the camera) is drawn once: its rows'
        # times would cost a full-frame drawing each.
        small = (r1 - r0) * (c1 - c0) <= 0.25 * self.camera.width * self.camera.height
        times = np.linspace(lo, hi, BOARD_TIME_SAMPLES) if moves and small and hi - lo > 1e-6 else np.array([lo])
        drawn = []
        for off in times:
            T_world_board = pose_at(off + e)
            if T_world_board is not None:
                drawn.append((off, draw_board(img.copy() if len(times) > 1 else img, spec, self.camera,
                                              T_lens_world @ T_world_board)))
        if len(times) == 1 or not drawn:
            return
        offs = np.array([d[0] for d in drawn])
        nearest = np.argmin(np.abs(self.pixel_offsets_s[r0:r1, c0:c1, None] - offs), axis=-1)
        window = img[r0:r1, c0:c1]
        for m, (_, canvas) in enumerate(drawn):
            keep = nearest == m
            window[keep] = canvas[r0:r1, c0:c1][keep]

    def _lens_shows_board(self, spec, first: np.ndarray | None, last: np.ndarray | None, lens: int) -> bool:
        """Whether any corner of the board (at either pose) lies in ``lens``'s part of the stitched
        frame (its half or the blend band): a lens facing away from the board draws nothing the
        stitched frame keeps."""
        T_pano_world = invert_pose(self.T_world_pano)
        for T_world_board in (first, last):
            if T_world_board is None:
                continue
            d = transform_points(T_pano_world @ T_world_board, spec.corners())
            w = front_weight(self.optics, d)
            if np.any(w > 0.0) if lens == FRONT else np.any(w < 1.0):
                return True
        return False

    def _board_box(self, spec, T_world_board: np.ndarray | None, lens: int) -> tuple[int, int, int, int]:
        """(r0, r1, c0, c1) of the frame around the board's corners as ``lens`` shows them, with a
        margin for its motion within the frame; the whole width when it crosses the frame's edges."""
        H, W = self.camera.height, self.camera.width
        if T_world_board is None:
            return 0, H, 0, W
        corners = transform_points(T_world_board, spec.corners())
        px = self.camera.bearing_to_pixel(transform_points(invert_pose(self.T_world_lens[lens]), corners))
        lo, hi = px.min(axis=0), px.max(axis=0)
        grow = 0.5 * (hi - lo) + 16.0
        r0, r1 = int(max(lo[1] - grow[1], 0)), int(min(hi[1] + grow[1] + 1, H))
        if hi[0] - lo[0] >= W / 2:
            return r0, r1, 0, W
        c0, c1 = int(max(lo[0] - grow[0], 0)), int(min(hi[0] + grow[0] + 1, W))
        return r0, r1, c0, c1

    def _apply_flashes(self, img: np.ndarray, t_frame: float, flashes: tuple[float, ...]) -> None:
        """Brighten ``img`` in place as sim/render.py's ``apply_flash`` does, each pixel by the lit
        fraction of its own exposure (centred on its row's time)."""
        lo_frame = t_frame + float(self.pixel_offsets_s.min()) - 0.5 * self.optics.exposure_s
        hi_frame = t_frame + float(self.pixel_offsets_s.max()) + 0.5 * self.optics.exposure_s
        if not any(f <= hi_frame and f + FLASH_HOLD_S >= lo_frame for f in flashes):
            return
        fraction = flash_fraction_map(t_frame + self.pixel_offsets_s, self.optics.exposure_s, flashes)
        if not fraction.any():
            return
        dark = img.astype(np.float32)
        lit = np.minimum(255.0, dark * FLASH_GAIN + FLASH_OFFSET)
        img[:] = np.clip(np.rint(dark + fraction[..., None] * (lit - dark)), 0, 255).astype(np.uint8)


def flash_fraction_map(t_mid: np.ndarray, exposure_s: float, flashes: tuple[float, ...],
                       hold_s: float = FLASH_HOLD_S) -> np.ndarray:
    """Fraction (...) float32 of each exposure ``[t_mid - exposure_s/2, t_mid + exposure_s/2]``
    (session seconds) lit by the lights switched on at ``flashes`` for ``hold_s``; with no exposure,
    whether the light is on at ``t_mid``."""
    t_mid = np.asarray(t_mid, dtype=np.float64)
    out = np.zeros(t_mid.shape)
    for f in flashes:
        if exposure_s > 0:
            lo, hi = t_mid - 0.5 * exposure_s, t_mid + 0.5 * exposure_s
            out += np.clip(np.minimum(hi, f + hold_s) - np.maximum(lo, f), 0.0, None) / exposure_s
        else:
            out += (t_mid >= f) & (t_mid < f + hold_s)
    return np.minimum(out, 1.0).astype(np.float32)


def front_weight(optics: PanoOptics, dirs_cam: np.ndarray) -> np.ndarray:
    """(...) weight of the front lens in the stitched frame at camera-frame directions (...,3): 1 in
    its half beyond the blend band, 0 in the back lens's, linear in the signed angle from the seam
    within ``blend_deg`` of it (0.5 on the seam); a step at ``d_z = 0`` without a band."""
    d = np.asarray(dirs_cam, dtype=np.float64)
    if optics.blend_deg <= 0:
        return (d[..., 2] >= 0.0).astype(np.float64)
    signed = np.degrees(np.arcsin(np.clip(d[..., 2] / np.linalg.norm(d, axis=-1), -1.0, 1.0)))
    return np.clip(0.5 + signed / (2.0 * optics.blend_deg), 0.0, 1.0)


def _lens_projection(camera: EquirectCamera, T_world_lens: np.ndarray, lens: int, fov_deg: float) -> Projection:
    """The :data:`~omnimocap.sim.render.Projection` into the stitched equirect grid of what lens
    ``lens`` at ``T_world_lens`` sees (NaN beyond its ``fov_deg / 2`` from its axis)."""
    project_all = equirect_projection(camera, T_world_lens)
    axis = T_world_lens[:3, 2] * (1.0 if lens == FRONT else -1.0)
    centre = T_world_lens[:3, 3]
    cos_max = np.cos(np.radians(0.5 * fov_deg))

    def project(p_world: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        px, dist, scale = project_all(p_world)
        seen = (p_world - centre) @ axis >= cos_max * dist
        return np.where(seen[..., None], px, np.nan), dist, scale

    return project
