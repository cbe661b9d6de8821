"""The simulated ChArUco board sequence: where the board is held during the first seconds.

During the first ~4 s a board (``BoardSpec()`` of calibration/board.py) floats 0.7-1.0 m beside the
360 camera, facing the 360 camera and the Kinects' colour cameras, inside every Kinect's colour
image where it can be, else inside the reference (first) Kinect's. It holds each of
:data:`BOARD_POSES` poses still for :data:`BOARD_HOLD_S`, moving between them in
:data:`BOARD_MOVE_S`; from the last pose it is carried at a steady :data:`SWEEP_SPEED` for
:data:`SWEEP_S` (up, down or sideways, whichever keeps it in the reference Kinect's colour image:
the moving board whose rows the 360 camera reads at their own times, from which board calibration
estimates the rolling shutter's readout), and is then gone. World frame: y up, metres; session
seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omnimocap.calibration.board import BoardSpec
from omnimocap.geometry.transforms import axis_angle_to_matrix, look_at, make_pose, matrix_to_axis_angle
from omnimocap.sim.kinect import SimKinect, board_in_view

BOARD_POSES = 5
BOARD_START_S = 0.1
BOARD_HOLD_S = 0.4
BOARD_MOVE_S = 0.2
BOARD_TRIES = 200  # random poses tried per board pose before settling for fewer Kinects
SWEEP_S = 0.7  # the final carry: seconds, its speed ramps up and down over SWEEP_EASE_S at either end
SWEEP_SPEED = 1.0  # metres per second
SWEEP_EASE_S = 0.1


@dataclass
class BoardSequence:
    """A board that holds ``poses`` (K, 4, 4) ``T_world_board`` still during ``holds`` (K, 2) session
    seconds [start, end], moves between consecutive poses (linearly in position and rotation angle,
    eased) and is gone after the last hold."""

    spec: BoardSpec
    holds: np.ndarray
    poses: np.ndarray
    sweep: np.ndarray | None = None
    """(3,) world velocity (m/s) of the final carry from the last pose (:data:`SWEEP_S` long), or
    None: the board is gone after the last hold."""

    @property
    def end_s(self) -> float:
        """Session time (seconds) after which the board is gone."""
        return float(self.holds[-1, 1]) + (SWEEP_S if self.sweep is not None else 0.0)

    def pose_at(self, t: float) -> np.ndarray | None:
        """``T_world_board`` at session time ``t`` (seconds), None once the board is gone."""
        if t > self.holds[-1, 1]:
            if self.sweep is None or t > self.end_s:
                return None
            T = self.poses[-1].copy()
            T[:3, 3] += sweep_distance(t - self.holds[-1, 1]) * self.sweep
            return T
        k = int(np.searchsorted(self.holds[:, 1], t))
        if t >= self.holds[k, 0] or k == 0:
            return self.poses[k]
        s = (t - self.holds[k - 1, 1]) / (self.holds[k, 0] - self.holds[k - 1, 1])
        s = s * s * (3 - 2 * s)
        T0, T1 = self.poses[k - 1], self.poses[k]
        R = T0[:3, :3] @ axis_angle_to_matrix(s * matrix_to_axis_angle(T0[:3, :3].T @ T1[:3, :3]))
        return make_pose(R, (1 - s) * T0[:3, 3] + s * T1[:3, 3])

    def to_json(self) -> dict:
        spec = self.spec
        return {"board": {"squares_x": spec.squares_x, "squares_y": spec.squares_y, "square_m": spec.square_m,
                          "marker_m": spec.marker_m, "dictionary": int(spec.dictionary)},
                "frame": "board frame of calibration/board.py: origin at the top-left outer corner, x along the "
                         "columns, y down the rows, z into the board; metres",
                "holds_t_session": self.holds.tolist(), "T_world_board": self.poses.tolist(),
                "sweep": None if self.sweep is None else {
                    "t_session": [float(self.holds[-1, 1]), self.end_s], "velocity_m_s": self.sweep.tolist(),
                    "ease_s": SWEEP_EASE_S,
                    "motion": "the last pose translated; speed ramps linearly from 0 over ease_s, holds, and "
                              "ramps back to 0 over the last ease_s"}}


def sweep_distance(tau: float) -> float:
    """Seconds-at-full-speed travelled ``tau`` seconds into the carry (multiply by the velocity):
    the speed ramps linearly up over :data:`SWEEP_EASE_S`, holds, and ramps down at the end."""
    e, T = SWEEP_EASE_S, SWEEP_S
    tau = min(max(tau, 0.0), T)
    if tau < e:
        return tau * tau / (2 * e)
    if tau <= T - e:
        return tau - e / 2
    left = T - tau
    return (T - e) - left * left / (2 * e)


def make_board_sequence(rng: np.random.Generator, pano_centre: np.ndarray, kinects: list[SimKinect],
                        spec: BoardSpec = BoardSpec()) -> BoardSequence:
    """BOARD_POSES board poses 0.7-1.0 m from the 360 camera, 40-125 deg to either side of the
    direction towards the reference ``kinects[0]`` (so it sees the board from about 2 m, not from
    behind the 360 camera), facing the 360 camera and the Kinects' colour cameras (tilted up to
    ~20 deg off that). Each pose lies wholly inside every Kinect's colour image where a pose near the
    360 camera can, else inside the reference's (facing it and the 360 camera only)."""
    color_centres = [k.T_world_color[:3, 3] for k in kinects]
    towards = (color_centres[0] - pano_centre) * np.array([1.0, 0.0, 1.0])
    towards /= np.linalg.norm(towards)
    half = np.array([spec.squares_x * spec.square_m / 2, spec.squares_y * spec.square_m / 2, 0.0])
    poses = []
    for k in range(BOARD_POSES):
        for _ in range(2 * BOARD_TRIES):
            # the first half of the tries wants every Kinect to see the board, the rest only the reference
            seen_by = kinects if _ < BOARD_TRIES else kinects[:1]
            side = 1.0 if (k + _ // 50) % 2 == 0 else -1.0  # alternate sides; switch if one side never fits
            yaw = side * np.radians(rng.uniform(40.0, 125.0))
            u = axis_angle_to_matrix(np.array([0.0, yaw, 0.0])) @ towards
            centre = pano_centre + rng.uniform(0.7, 1.0) * u + np.array([0.0, rng.uniform(-0.2, 0.2), 0.0])
            away = sum((centre - c) / np.linalg.norm(centre - c)
                       for c in (pano_centre, *color_centres[:len(seen_by)]))
            R = look_at(away, np.array([0.0, 1.0, 0.0])) @ axis_angle_to_matrix(
                np.radians(rng.uniform([-20.0, -20.0, -10.0], [20.0, 20.0, 10.0])))
            T = make_pose(R, centre - R @ half)
            if all(board_in_view(kinect, spec, T) for kinect in seen_by):
                break
        else:
            raise ValueError("no board pose near the 360 camera is inside the reference Kinect's colour image")
        poses.append(T)
    starts = BOARD_START_S + np.arange(BOARD_POSES) * (BOARD_HOLD_S + BOARD_MOVE_S)
    return BoardSequence(spec, np.stack([starts, starts + BOARD_HOLD_S], axis=-1), np.stack(poses),
                         _sweep(poses[-1], spec, pano_centre, kinects[0]))


def _sweep(T_last: np.ndarray, spec: BoardSpec, pano_centre: np.ndarray, reference: SimKinect) -> np.ndarray | None:
    """The final carry's velocity: down, up, or along the board's width either way, the first that
    keeps the whole board inside the reference Kinect's colour image and 0.5-1.3 m from the 360
    camera all along; None when none does. Chosen without random draws, so the rest of the
    simulation draws what it drew before."""
    along = T_last[:3, 0] - np.dot(T_last[:3, 0], [0.0, 1.0, 0.0]) * np.array([0.0, 1.0, 0.0])
    along /= max(np.linalg.norm(along), 1e-9)
    centre = T_last[:3, :3] @ np.array([spec.squares_x * spec.square_m / 2, spec.squares_y * spec.square_m / 2, 0.0])
    for direction in (np.array([0.0, -1.0, 0.0]), np.array([0.0, 1.0, 0.0]), along, -along):
        v = SWEEP_SPEED * direction
        ok = True
        for tau in np.linspace(0.0, SWEEP_S, 8):
            T = T_last.copy()
            T[:3, 3] += sweep_distance(tau) * v
            if not board_in_view(reference, spec, T) or not 0.5 <= np.linalg.norm(T[:3, 3] + centre - pano_centre) <= 1.3:
                ok = False
                break
        if ok:
            return v
    return None

