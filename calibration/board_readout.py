"""The 360 camera's rolling-shutter readout from the ChArUco board while it moves.

A still board cannot show the readout: every row sees the same board. While the board is carried
from one pose to the next, each 360 row sees it at its own time, ``t_frame + readout *
(row_fraction - 0.5)`` (:meth:`~omnimocap.geometry.pano_optics.PanoOptics.row_fraction`), and the
reference Kinect's colour camera follows the board frame by frame. With the 360 camera already
placed from the still poses (calibration/board.py), the board's pose at any moment between two
colour frames is interpolated (cubic splines of its rotation and translation: a board carried by
hand accelerates hard enough between frames for a linear interpolation to miss by centimetres), and the
readout is the value that brings every moving-board corner seen by the 360 camera onto the board
at its row's time. A small clock offset is solved with it, since the time map the board method
starts from (the rig's, or the host arrival times) can be a few milliseconds off; it is not kept.

The colour camera's own frames are taken as instants at their timestamps. Poses ``T_a_b`` map
frame-b points into frame a (metres); times are session seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import least_squares
from scipy.interpolate import CubicSpline
from scipy.spatial.transform import Rotation, RotationSpline

from omnimocap.calibration.board import BoardDetection, BoardSpec, board_pose
from omnimocap.errors import UserError
from omnimocap.geometry.pano_optics import PanoOptics
from omnimocap.geometry.transforms import transform_points

# A colour frame gap wider than this many frame periods is not bridged by interpolation.
MAX_GAP_PERIODS = 1.5
# Readouts are searched within this range, seconds (no 360 camera reads its rows slower).
MAX_READOUT_S = 0.1
# The clock offset is searched within this range, seconds, before it is refined.
OFFSET_SEARCH_S = 0.03


@dataclass
class ReadoutEstimate:
    """The readout (seconds) and its 1-sigma (seconds), the clock offset solved with it (seconds),
    the moving-board frames and corners used, and the corners' RMS angle (degrees) at the
    estimate and at the rig's readout."""

    readout_s: float
    readout_std_s: float
    offset_s: float
    frames: int
    corners: int
    rms_deg: float
    rms_deg_at_rig: float

    def to_json(self) -> dict:
        return {"readout_ms": self.readout_s * 1e3, "readout_std_ms": self.readout_std_s * 1e3,
                "clock_offset_ms": self.offset_s * 1e3, "frames": self.frames, "corners": self.corners,
                "rms_deg": self.rms_deg, "rms_deg_at_rig_readout": self.rms_deg_at_rig}


class BoardTrack:
    """The board's pose in the colour camera over time, from the colour frames' detections."""

    def __init__(self, spec: BoardSpec, times: np.ndarray, detections: list[BoardDetection | None],
                 min_corners: int = 6):
        t, poses = [], []
        for tk, det in zip(times, detections):
            if det is None or len(det) < min_corners:
                continue
            try:
                T, _, _ = board_pose(spec, det)
            except UserError:
                continue
            t.append(float(tk))
            poses.append(T)
        self.t = np.asarray(t)
        self.poses = np.asarray(poses).reshape(-1, 4, 4)
        d = np.diff(np.asarray(times, dtype=np.float64))
        self.period = float(np.median(d)) if len(d) else 0.0
        self._trans = self._rot = None
        if len(self.t) >= 2:
            self._trans = CubicSpline(self.t, self.poses[:, :3, 3], axis=0)
            self._rot = RotationSpline(self.t, Rotation.from_matrix(self.poses[:, :3, :3]))

    def prediction_error(self, t: np.ndarray, X: np.ndarray) -> np.ndarray:
        """How far (metres, the worst of the board points ``X``) the track misses each of the two
        detections bracketing each time ``t`` when that detection is left out of its splines: large
        where the board accelerates too hard for the frame rate, so that even the interpolation
        with every detection is not to be trusted there. NaN where there is no bracket."""
        a, b, ok = self._bracket(np.asarray(t, dtype=np.float64))
        out = np.full(len(a), np.nan)
        if not ok.any():
            return out
        miss = np.full(len(self.t), np.inf)
        for k in np.unique(np.r_[a[ok], b[ok]]):
            if 0 < k < len(self.t) - 1:
                keep = np.arange(len(self.t)) != k
                trans = CubicSpline(self.t[keep], self.poses[keep, :3, 3], axis=0)(self.t[k])
                rot = RotationSpline(self.t[keep], Rotation.from_matrix(self.poses[keep, :3, :3]))(self.t[k]).as_matrix()
                miss[k] = np.max(np.linalg.norm(X @ rot.T + trans - transform_points(self.poses[k], X), axis=-1))
        out[ok] = np.maximum(miss[a[ok]], miss[b[ok]])
        return out

    def speed(self, t: np.ndarray) -> np.ndarray:
        """The board centre's speed (m/s) around times ``t`` (NaN where it cannot be interpolated)."""
        a, b, ok = self._bracket(np.asarray(t, dtype=np.float64))
        v = np.full(len(a), np.nan)
        v[ok] = (np.linalg.norm(self.poses[b[ok], :3, 3] - self.poses[a[ok], :3, 3], axis=-1)
                 / (self.t[b[ok]] - self.t[a[ok]]))
        return v

    def _bracket(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Indices of the detections just before and after each time, and whether both exist close enough."""
        b = np.clip(np.searchsorted(self.t, t, side="right"), 1, max(len(self.t) - 1, 1))
        a = b - 1
        ok = np.zeros(len(t), dtype=bool)
        if len(self.t) >= 2:
            ok = ((self.t[a] <= t) & (t <= self.t[b]) & (self.t[b] - self.t[a] <= MAX_GAP_PERIODS * self.period))
        return a, b, ok

    def points_at(self, t: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Board points ``X`` (n,3) in the colour camera at times ``t`` (n,), each at its own time,
        and which of them lie between two detections close enough to be interpolated."""
        _, _, ok = self._bracket(t)
        if self._trans is None:
            return np.full(X.shape, np.nan), ok
        tc = np.clip(t, self.t[0], self.t[-1])
        return np.einsum("nij,nj->ni", self._rot(tc).as_matrix(), X) + self._trans(tc), ok


def estimate_readout(spec: BoardSpec, track: BoardTrack, T_pano_color: np.ndarray, optics: PanoOptics,
                     pano_times: np.ndarray, pano_detections: list[BoardDetection | None],
                     min_frames: int = 4) -> ReadoutEstimate | None:
    """The readout from the board corners ``pano_detections`` seen in 360 frames at session times
    ``pano_times`` while the board moves, given the colour camera's board ``track`` and the 360
    camera's pose ``T_pano_color`` (with ``optics``' lens centres); None with fewer than
    ``min_frames`` usable frames."""
    corners = spec.corners()
    X, f, t, frame = [], [], [], []
    for k, (tj, det) in enumerate(zip(pano_times, pano_detections)):
        if det is None or len(det) < 6:
            continue
        X.append(corners[det.ids])
        f.append(det.bearings / np.linalg.norm(det.bearings, axis=-1, keepdims=True))
        t.append(np.full(len(det), float(tj)))
        frame.append(np.full(len(det), k))
    if len({int(x[0]) for x in frame}) < min_frames:
        return None
    X, f, t, frame = (np.concatenate(v) for v in (X, f, t, frame))
    row = optics.row_fraction(f) - 0.5

    def residuals(x: np.ndarray) -> np.ndarray:
        readout, offset = x
        p_color, ok = track.points_at(t + offset + readout * row, X)
        p, _, _ = optics.apparent(transform_points(T_pano_color, p_color))
        r = p / np.linalg.norm(p, axis=-1, keepdims=True) - f
        r[~ok] = 0.0
        return r.ravel()

    offsets = np.linspace(-OFFSET_SEARCH_S, OFFSET_SEARCH_S, 61)
    costs = [np.sum(residuals(np.array([optics.readout_s, o])) ** 2) for o in offsets]
    x0 = np.array([optics.readout_s, offsets[int(np.argmin(costs))]])
    fit = least_squares(residuals, x0, bounds=([0.0, -2 * OFFSET_SEARCH_S], [MAX_READOUT_S, 2 * OFFSET_SEARCH_S]),
                        loss="soft_l1", f_scale=np.radians(0.1), x_scale=[1e-3, 1e-3], diff_step=1e-4)
    _, ok = track.points_at(t + fit.x[1] + fit.x[0] * row, X)
    used_frames = len(np.unique(frame[ok]))
    if used_frames < min_frames:
        return None
    r = fit.fun.reshape(-1, 3)[ok]
    J = fit.jac.reshape(-1, 3, 2)[ok].reshape(-1, 2)
    dof = max(r.size - 2, 1)
    sigma2 = float(np.sum(r ** 2)) / dof
    try:
        cov = np.linalg.inv(J.T @ J) * sigma2
        std = float(np.sqrt(max(cov[0, 0], 0.0)))
    except np.linalg.LinAlgError:
        std = float("inf")
    at_rig = residuals(np.array([optics.readout_s, fit.x[1]])).reshape(-1, 3)[ok]
    return ReadoutEstimate(float(fit.x[0]), std, float(fit.x[1]), used_frames, int(ok.sum()),
                           _rms_deg(r), _rms_deg(at_rig))


def _rms_deg(chord: np.ndarray) -> float:
    """RMS angle (degrees) of unit-vector differences (n,3)."""
    n = np.linalg.norm(chord, axis=-1)
    return float(np.degrees(np.sqrt(np.mean((2.0 * np.arcsin(np.clip(n / 2.0, 0.0, 1.0))) ** 2)))) if len(n) else 0.0


def with_readout(optics: PanoOptics, estimate: ReadoutEstimate | None, max_std_s: float) -> PanoOptics:
    """``optics`` with the estimated readout when there is one within ``max_std_s`` (1-sigma), else as it is."""
    if estimate is None or not estimate.readout_std_s <= max_std_s:
        return optics
    return replace(optics, readout_s=estimate.readout_s)
