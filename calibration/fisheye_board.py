"""The two lenses of a dual-fisheye 360 camera calibrated from the ChArUco board
(:class:`~omnimocap.calibration.board.BoardSpec`) shown to it in raw frames.

- Corners are detected in each lens's half of the raw frame (no model needed).
- Start: equidistant lenses that fill their halves at the nominal field of view; each frame's
  board pose per lens from its corners' bearings (:func:`~omnimocap.calibration.board.board_pose`);
  the back lens's pose relative to the front one from the frames in which both lenses see the
  board (held across the seam: in several directions around it and at two distances, or the back
  lens's offset along the axis trades for a turn of it; sim/fisheye.py ``board_poses``). A frame
  whose corners give no consistent start pose for a lens is left out for that lens.
- Then one robust least-squares fit of the corners' pixels over both lenses' intrinsics (the
  Kannala-Brandt model of :class:`~omnimocap.geometry.cameras.FisheyeLens`), the back lens's
  pose relative to the front one and the board pose of every frame, so boards far off the axis
  (where a per-view homography start fails) count as much as the others.
- The camera frame is then the front lens's orientation with its origin midway between the two
  optical centres (so ``t_cam_front = -t_cam_back``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import least_squares

from omnimocap.calibration.board import BoardDetection, BoardSpec, board_pose
from omnimocap.geometry.cameras import DualFisheyeCamera, FisheyeLens
from omnimocap.geometry.transforms import (
    average_poses, invert_pose, pose_from_vector, pose_to_vector, transform_points,
)
from omnimocap.errors import UserError


@dataclass
class DualFisheyeCalibration:
    """The calibrated camera, each lens's reprojection RMS (pixels), the frames each lens's
    intrinsics used and the frames whose board both lenses saw."""

    camera: DualFisheyeCamera
    rms_px: tuple[float, float]
    frames_per_lens: tuple[list[int], list[int]]
    frames_both: list[int]


def detect_halves(spec: BoardSpec, frame: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """ChArUco corners in the left and right halves of a raw frame: per half (ids (n,), pixels
    (n,2) in that half's own coordinates)."""
    gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    detector = cv2.aruco.CharucoDetector(spec.board())
    half = gray.shape[1] // 2
    out = []
    for part in (gray[:, :half], gray[:, half:]):
        corners, ids, _, _ = detector.detectBoard(np.ascontiguousarray(part))
        if ids is None or len(ids) == 0:
            out.append((np.zeros(0, np.int64), np.zeros((0, 2))))
        else:
            out.append((ids.ravel().astype(np.int64), corners.reshape(-1, 2).astype(np.float64)))
    return out


def _lens(x: np.ndarray, size: tuple[int, int], max_theta: float) -> FisheyeLens:
    """A lens from its parameters (fx, fy, cx, cy, k1..k4)."""
    return FisheyeLens(float(x[0]), float(x[1]), float(x[2]), float(x[3]), size[0], size[1],
                       tuple(float(v) for v in x[4:8]), max_theta)


def calibrate_dual_fisheye(spec: BoardSpec, frames: list[np.ndarray], *, fov_deg: float = 200.0,
                           min_corners: int = 6) -> DualFisheyeCalibration:
    """Calibrate both lenses from raw side-by-side frames showing the board (see the module
    docstring). ``fov_deg``: the lenses' nominal field of view (the start of the focal length, and
    the image circle kept). Raises :class:`UserError` (one line) when a lens sees the board in
    fewer than 3 frames or no frame shows it to both lenses."""
    detections = [detect_halves(spec, f) for f in frames]
    h, w = frames[0].shape[:2]
    size = (w // 2, h)
    max_theta = np.radians(fov_deg / 2)
    seen = [[len(d[i][0]) >= min_corners for d in detections] for i in (0, 1)]
    # Start: equidistant lenses filling their halves, board poses from the corners' bearings; a
    # frame whose corners give no consistent pose (a few corners on a line, at the circle's edge) is
    # left out for that lens.
    f0 = min(size) / 2 / max_theta
    x_lens = [np.array([f0, f0, (size[0] - 1) / 2, (size[1] - 1) / 2, 0, 0, 0, 0], dtype=np.float64) for _ in (0, 1)]
    start = [_lens(x, size, np.pi) for x in x_lens]
    T_lens_board: list[dict[int, np.ndarray]] = [{}, {}]
    for i in (0, 1):
        for k in range(len(frames)):
            if seen[i][k]:
                try:
                    T_lens_board[i][k] = board_pose(spec, BoardDetection(*_bearings(start[i], detections[k][i])))[0]
                except UserError:
                    seen[i][k] = False
    for i, name in enumerate(("front (left)", "back (right)")):
        if sum(seen[i]) < 3:
            raise UserError(f"the {name} lens sees the board in {sum(seen[i])} frames, need 3",
                            fix="show the board to each lens in several poses, at several angles from its axis")
    both = [k for k in range(len(frames)) if seen[0][k] and seen[1][k]]
    if not both:
        raise UserError("no frame shows the board to both lenses, so their relative pose is unknown",
                        fix="hold the board across the seam, beside the camera, where both lenses see it")
    T_front_back = average_poses(np.stack([T_lens_board[0][k] @ invert_pose(T_lens_board[1][k]) for k in both]))
    frames_used = [k for k in range(len(frames)) if seen[0][k] or seen[1][k]]
    T_front_board = {k: T_lens_board[0][k] if seen[0][k] else T_front_back @ T_lens_board[1][k] for k in frames_used}
    x0 = np.concatenate([x_lens[0], x_lens[1], pose_to_vector(T_front_back)]
                        + [pose_to_vector(T_front_board[k]) for k in frames_used])
    corners = spec.corners()
    obs = [(i, j, detections[k][i][0], detections[k][i][1]) for j, k in enumerate(frames_used) for i in (0, 1)
           if seen[i][k]]

    def residuals(x: np.ndarray) -> np.ndarray:
        lenses = [_lens(x[0:8], size, np.pi), _lens(x[8:16], size, np.pi)]
        T_back_front = invert_pose(pose_from_vector(x[16:22]))
        out = []
        for i, j, ids, px in obs:
            T = pose_from_vector(x[22 + 6 * j:28 + 6 * j])
            if i == 1:
                T = T_back_front @ T
            out.append((lenses[i].project(transform_points(T, corners[ids])) - px).ravel())
        return np.concatenate(out)

    fit = least_squares(residuals, x0, x_scale="jac", loss="soft_l1", f_scale=1.0)
    r = fit.fun.reshape(-1, 2)
    counts = np.cumsum([0] + [len(o[2]) for o in obs])
    rms = [float(np.sqrt(np.mean(np.concatenate([np.sum(r[counts[n]:counts[n + 1]] ** 2, axis=1)
                                                  for n, o in enumerate(obs) if o[0] == i])))) for i in (0, 1)]
    T_front_back = pose_from_vector(fit.x[16:22])
    half_baseline = T_front_back[:3, 3] / 2
    lenses = [_lens(fit.x[0:8], size, max_theta), _lens(fit.x[8:16], size, max_theta)]
    front = FisheyeLens(**{**_fields(lenses[0]), "R_cam_lens": np.eye(3), "t_cam_lens": -half_baseline})
    back = FisheyeLens(**{**_fields(lenses[1]), "R_cam_lens": T_front_back[:3, :3], "t_cam_lens": half_baseline})
    per_lens = ([k for k in frames_used if seen[0][k]], [k for k in frames_used if seen[1][k]])
    return DualFisheyeCalibration(DualFisheyeCamera((front, back)), (rms[0], rms[1]), per_lens, both)


def _bearings(lens: FisheyeLens, detection: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ids, px = detection
    return ids, lens.unproject(px)


def _fields(lens: FisheyeLens) -> dict:
    return {"fx": lens.fx, "fy": lens.fy, "cx": lens.cx, "cy": lens.cy, "width": lens.width, "height": lens.height,
            "k": lens.k, "max_theta": lens.max_theta}
