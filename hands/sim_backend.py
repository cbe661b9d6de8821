"""The simulated hand observer (``--hands sim``): ground-truth hands of a simulated session,
expressed per view exactly as WiLoR reports them (see hands/estimator.py), with optional noise.

It is an instrument for measuring the geometry (sync, calibration, views, lifting, fitting,
export) without any network, not a reconstruction. For each :class:`ViewRequest` it takes the true
hand of (person, side) at the *true* session time of pano frame ``frame_index`` (the 240 Hz truth
resampled: positions by cubic Hermite, rotations by slerp) and expresses it in the view camera
through the *true* pano pose and the request's ``R_pano_view``:

- ``global_orient = R_view_world @ R_world_hand``; ``hand_pose`` and ``betas`` as simulated;
  left hands are proper left-hand parameters (mirror convention).
- ``keypoints_3d = R_view_world @ (joints_world - wrist_world) + J0(betas)``: WiLoR's
  ``pred_keypoints_3d``, relative to the MANO origin, J0 the rest root joint of that side's MANO.
- ``keypoints_2d``: the true joints projected with the view intrinsics.
- ``box_xyxy``: a square of twice the keypoints' larger extent about their box centre (WiLoR's
  demo crop: rescale factor 2 around the detection).
- ``cam_t_view``: WiLoR's full-image translation (focal ``f = 5000/256 * S`` for an S-pixel view,
  principal point at the image centre) for which the MANO origin lands on its true pixel with its
  true apparent scale: ``tz = Z f / f_view`` with Z the origin's true depth, ``Tx = (u - S/2) tz / f``
  (same for y). ``cam_crop = (s, tx, ty)`` inverts WiLoR's crop-to-full conversion for
  ``box_xyxy`` (side b, centre c): ``s = 2 f / (b tz)``, ``tx = ±(Tx - 2 (c_x - S/2) / (b s))``
  (sign - for left hands, whose crops WiLoR mirrors), ``ty = Ty - 2 (c_y - S/2) / (b s)``.

Noise: ``noise_mm`` is a Gaussian standard deviation per axis on every 3D joint (and so on the 2D
keypoints), ``noise_deg`` the RMS angle of a random rotation applied to ``global_orient`` and to
every finger rotation, ``dropout`` the probability of returning None. None is also returned when
the true hand is not visible from the 360 camera (``truth/motion.npz`` ``hand_visible``), when its
wrist is behind the view camera or outside the view image, and when no true person's wrist of the
requested side lies within ``MATCH_RADIUS_M`` of the request's predicted wrist: the person is the
one whose wrist is nearest (body-tracking ids are not the simulation's person indices).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from omnimocap.geometry.transforms import axis_angle_to_matrix
from omnimocap.capture.truth import open_truth
from omnimocap.data.skeletons import SIDES
from omnimocap.geometry.resample import interpolate_positions, interpolate_rotations
from omnimocap.hands.estimator import Detections, HandObservation, ViewRequest

WILOR_FOCAL = 5000.0
WILOR_CROP = 256.0
BOX_RESCALE = 2.0


# A request is for the true person whose wrist lies this close to its predicted wrist (metres).
MATCH_RADIUS_M = 0.3


class SimHandObserver:
    """HandEstimator backend ``sim`` over a simulated session's ``truth/`` (capture/truth.py)."""

    name = "sim"
    needs_images = False

    def __init__(self, session_dir: str | Path, noise_mm: float = 0.0, noise_deg: float = 0.0,
                 dropout: float = 0.0, seed: int = 0):
        truth = open_truth(session_dir, fix="use --hands wilor, or simulate a session with `omnimocap simulate`")
        # kept as stored (the 240 Hz hand poses are float32): each request converts only the few
        # samples it interpolates from, so a long session's truth is not held twice
        d = truth.motion(("t_session", "hand_global_R", "hand_pose", "hand_betas", "hand_joints", "hand_visible",
                          "hand_root_rest", "pano_frame_t_session"))
        self._t = d["t_session"]
        self._R_hand = d["hand_global_R"]
        self._pose = d["hand_pose"]
        self._betas = d["hand_betas"].astype(np.float64)
        self._joints = d["hand_joints"]
        self._visible = d["hand_visible"]
        self._root = d["hand_root_rest"].astype(np.float64)
        self._frame_t = d["pano_frame_t_session"]
        T_world_pano = truth.rig().pose("pano")
        self._R_pano_world = T_world_pano[:3, :3].T
        self._pano_centre = T_world_pano[:3, 3]
        self.noise_mm = float(noise_mm)
        self.noise_deg = float(noise_deg)
        self.dropout = float(dropout)
        self._rng = np.random.default_rng(seed)

    @property
    def num_people(self) -> int:
        return int(self._joints.shape[0])

    @property
    def frame_times(self) -> np.ndarray:
        """True session time (F,) of every pano frame."""
        return self._frame_t

    def to_pano(self, points_world: np.ndarray) -> np.ndarray:
        """World points (...,3) in the true panorama camera frame."""
        return (points_world - self._pano_centre) @ self._R_pano_world.T

    def true_hand(self, person: int, side: str, t_session: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """The true hand at a session time: world rotation (3,3), finger rotations (15,3,3),
        world joints (21,3) and whether it is visible from the 360 camera."""
        s = SIDES.index(side)
        t = np.array([t_session])
        i = int(np.searchsorted(self._t, t_session))
        # The interpolants use at most two truth samples either side of t: resample from those
        # alone, so a request costs the same whatever the session's length (same result as the
        # whole track, ends included, since a window that reaches an end is cut there too).
        win = slice(max(0, i - 3), min(len(self._t), i + 3))
        t_win = self._t[win]
        joints = interpolate_positions(t_win, self._joints[person, win, s], t)[0]
        rots = np.concatenate([self._R_hand[person, win, s, None].astype(np.float64),
                               self._pose[person, win, s].astype(np.float64)], axis=1)
        R, ok = interpolate_rotations(t_win, rots, np.ones(len(t_win), dtype=bool), t)
        k = int(np.clip(i, 0, len(self._t) - 1))
        visible = bool(ok[0] and np.all(np.isfinite(joints)) and self._visible[person, k, s])
        return R[0, 0], R[0, 1:], joints, visible

    def _rotation_noise(self, n: int) -> np.ndarray:
        sigma = np.radians(self.noise_deg) / np.sqrt(3.0)
        return axis_angle_to_matrix(self._rng.normal(scale=sigma, size=(n, 3)))

    def _person_at(self, request: ViewRequest) -> int:
        """The true person whose wrist of the requested side lies nearest the request's predicted
        wrist (in the panorama frame), within :data:`MATCH_RADIUS_M`; -1 if none. The pipeline's
        person ids are body-tracking ids, not the simulation's person indices."""
        if request.predicted_wrist_view is None:
            return int(request.person_id)
        predicted = np.asarray(request.R_pano_view, dtype=np.float64) @ np.asarray(request.predicted_wrist_view)
        s = SIDES.index(request.side)
        k = int(np.clip(np.searchsorted(self._t, float(self._frame_t[request.frame_index])), 0, len(self._t) - 1))
        wrists = self.to_pano(self._joints[:, k, s, 0])
        d = np.linalg.norm(wrists - predicted, axis=-1)
        best = int(np.nanargmin(d)) if np.isfinite(d).any() else -1
        return best if best >= 0 and d[best] <= MATCH_RADIUS_M else -1

    def observe(self, request: ViewRequest) -> HandObservation | None:
        if not 0 <= request.frame_index < len(self._frame_t):
            return None
        person = self._person_at(request)
        if not 0 <= person < self._joints.shape[0]:
            return None
        if self.dropout > 0 and self._rng.random() < self.dropout:
            return None
        R_world_hand, pose, joints, visible = self.true_hand(person, request.side, float(self._frame_t[request.frame_index]))
        if not visible:
            return None
        s = SIDES.index(request.side)
        R_view_world = np.asarray(request.R_pano_view, dtype=np.float64).T @ self._R_pano_world
        if self.noise_mm > 0:
            joints = joints + self._rng.normal(scale=self.noise_mm / 1000.0, size=joints.shape)
        if self.noise_deg > 0:
            noise = self._rotation_noise(16)
            R_world_hand = R_world_hand @ noise[0]
            pose = pose @ noise[1:]
        joints_view = (joints - self._pano_centre) @ R_view_world.T
        cam = request.camera
        size = float(cam.width)
        if joints_view[0, 2] <= 0.05:
            return None
        kp2d = cam.project(joints_view)
        if not (0 <= kp2d[0, 0] < cam.width and 0 <= kp2d[0, 1] < cam.height):
            return None
        root = self._root[person, s]
        keypoints_3d = (joints - joints[0]) @ R_view_world.T + root
        lo, hi = kp2d.min(axis=0), kp2d.max(axis=0)
        centre = 0.5 * (lo + hi)
        side_px = BOX_RESCALE * float(np.max(hi - lo))
        box = np.concatenate([centre - side_px / 2, centre + side_px / 2])
        # WiLoR's full-image camera for this view: the MANO origin on its true pixel and scale.
        origin_view = joints_view[0] - root
        f = WILOR_FOCAL / WILOR_CROP * size
        f_view = 0.5 * (cam.fx + cam.fy)
        origin_px = cam.project(origin_view)
        tz = origin_view[2] * f / f_view
        T = np.array([(origin_px[0] - size / 2) * tz / f, (origin_px[1] - size / 2) * tz / f, tz])
        scale = 2 * f / (side_px * tz)
        bs = side_px * scale
        sign = 1.0 if request.side == "right" else -1.0
        cam_crop = np.array([scale, sign * (T[0] - 2 * (centre[0] - size / 2) / bs), T[1] - 2 * (centre[1] - size / 2) / bs])
        return HandObservation(
            is_right=request.side == "right",
            global_orient=R_view_world @ R_world_hand,
            hand_pose=pose,
            betas=self._betas[person, s].copy(),
            keypoints_3d=keypoints_3d,
            keypoints_2d=kp2d,
            box_xyxy=box,
            cam_crop=cam_crop,
            cam_t_view=T,
            confidence=1.0,
            notes=["simulated observer: ground truth"],
        )

    def estimate(self, requests: Sequence[ViewRequest]) -> list[HandObservation | None]:
        return [self.observe(r) for r in requests]


class SimViewDetector:
    """A simulated hand *detector* for the panorama's calibration views (see
    ``calibration/pano_hands.py``): the boxes a detector would find in each view, from a simulated
    session's ``truth/``, so that the detection path (views, box centres to bearings, merging,
    association, solving) runs without network weights. It never looks at the images.

    A hand visible from the 360 camera (``hand_visible``) gives, in every view that holds the centre
    of its box, the box of its 21 true joints padded by ``pad`` of its size on each side (clipped to
    the image; dropped when less than half of it is inside), with the detector's faults drawn once
    per frame and hand so that all views of a frame agree: the box centre moves by ``noise_deg``
    (standard deviation per image axis, as an angle), the side is swapped with probability
    ``swap``, the hand is missed with probability ``miss``; each view also reports a false hand
    anywhere in it with probability ``false_rate``.
    """

    needs_images = False

    def __init__(self, session_dir: str | Path, noise_deg: float = 0.5, swap: float = 0.05, miss: float = 0.1,
                 false_rate: float = 0.02, pad: float = 0.15, seed: int = 0):
        self._truth = SimHandObserver(session_dir)
        self.noise_deg, self.swap, self.miss, self.false_rate, self.pad = noise_deg, swap, miss, false_rate, pad
        self.seed = seed

    def _hands(self, frame_index: int) -> list[tuple[np.ndarray, bool, np.ndarray]]:
        """(joints in the pano frame (21,3), detected side is_right, centre noise (2,) radians) of
        the hands the detector finds in this frame."""
        truth = self._truth
        rng = np.random.default_rng([self.seed, frame_index])
        people = truth.num_people
        draws = rng.random((people, len(SIDES), 2))
        noise = rng.normal(scale=np.radians(self.noise_deg), size=(people, len(SIDES), 2))
        out = []
        if not 0 <= frame_index < len(truth.frame_times):
            return out
        for p in range(people):
            for s, side in enumerate(SIDES):
                _, _, joints, visible = truth.true_hand(p, side, float(truth.frame_times[frame_index]))
                if not visible or draws[p, s, 0] < self.miss:
                    continue
                is_right = (side == "right") != (draws[p, s, 1] < self.swap)
                out.append((truth.to_pano(joints), is_right, noise[p, s]))
        return out

    def detect_views(self, frame_index: int, pano_bgr, views) -> list[Detections]:
        hands = self._hands(frame_index)
        rng = np.random.default_rng([self.seed, frame_index, 1])
        out = []
        for view in views:
            size = view.size
            boxes, right = [], []
            for joints, is_right, noise in hands:
                d_view = joints @ view.R_pano_view
                if np.any(d_view[:, 2] <= 0.05):
                    continue
                kp = view.camera.project(d_view)
                lo, hi = kp.min(axis=0), kp.max(axis=0)
                lo, hi = lo - self.pad * (hi - lo), hi + self.pad * (hi - lo)
                shift = noise * np.array([view.camera.fx, view.camera.fy])
                lo, hi = lo + shift, hi + shift
                c = 0.5 * (lo + hi)
                if not (0 <= c[0] < size and 0 <= c[1] < size):
                    continue
                clo, chi = np.clip(lo, 0, size - 1), np.clip(hi, 0, size - 1)
                if np.prod(chi - clo) < 0.5 * np.prod(hi - lo):
                    continue
                boxes.append(np.r_[clo, chi])
                right.append(is_right)
            if rng.random() < self.false_rate:
                w = rng.uniform(0.05, 0.15) * size
                x0, y0 = rng.uniform(0, size - w, size=2)
                boxes.append(np.array([x0, y0, x0 + w, y0 + w]))
                right.append(bool(rng.random() < 0.5))
            n = len(boxes)
            out.append(Detections(np.array(boxes).reshape(n, 4), np.array(right, dtype=bool), np.full(n, 0.9)))
        return out
