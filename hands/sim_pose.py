"""The simulated detector's body keypoints: what a COCO-17 pose model (such as ultralytics'
YOLO-pose) would report on the panorama's perspective views of a simulated session, from its
``truth/`` (read through capture/truth.py), without looking at the images.

Keypoints in the world (metres) per person: shoulders, elbows, wrists, hips, knees, ankles and eyes
are the true SMPL-X joints (``data/skeletons.py`` ``COCO_FROM_SMPLX``); the nose and the ears are
points on the head (in a head frame built from the eyes and the neck-head line: x to the person's
left, y up, z forward) at :data:`FACE_OFFSETS_M`. A pose model's keypoints are not those points:

- *definition offset*: a constant offset per person and keypoint, RMS per axis ``definition_m``,
  in the person's heading frame (pelvis rotation), as annotators place keypoints on the surface;
- *noise*: isotropic per-frame noise, standard deviation per axis :data:`KEYPOINT_NOISE_M` (metres,
  so the angle falls with distance; hips worst, face best), times ``hidden_gain`` for keypoints the
  person's own body or another person's torso hides from the 360 camera;
- *confidence*: ``visible_conf`` for a keypoint in sight, ``hidden_conf`` for a hidden one (the
  model guesses it), ``missed_conf`` for a missed one (probability ``miss`` each; the face keypoints
  are missed whenever the person faces away from the camera, the ears too when turned fully away);
- *people*: missed whole with probability ``person_miss`` per frame; left and right exchanged
  (every keypoint relabelled through ``COCO_FLIP``) with probability ``swap_facing`` while the person
  faces the camera and ``swap_away`` while facing away (pose models often mirror people seen from
  behind).

The faults are drawn once per pano frame (from ``seed`` and the frame index), so every view of a
frame agrees. A view reports a person whose box (the in-view keypoints' bounds padded by ``pad``)
holds at least ``min_keypoints`` confident keypoints; keypoints behind the view camera are NaN.

Optics: each person is captured when the row of their pelvis was exposed (one time for the whole
person, :meth:`SimPoseDetector.capture_times`), and each keypoint is where the stitched frame shows
it (``PanoOptics.apparent``), from the session's true optics (``Truth.pano_optics``). On a field
session (``truth/realism.json`` ``"observer"``) people are also missed by box size, blur and seam,
and false people appear (hands/sim_field.py ``pose_detector``); the faults above are the
ideal-level ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from omnimocap.hands.estimator import PoseDetections
from omnimocap.hands.sim_field import box_size_px, field_observer, image_speed_px_s, native_width
from omnimocap.capture.truth import KINECT_FACE_OFFSETS_M, REALISM_FILE, open_truth
from omnimocap.data.skeletons import COCO_FLIP, COCO_FROM_SMPLX, COCO_INDEX, COCO_KEYPOINTS, SMPLX_INDEX
from omnimocap.geometry.pano_optics import capture_times
from omnimocap.geometry.resample import interpolate_positions
from omnimocap.geometry.views import WristView

# The same head points as the simulated k4abt's nose and ears.
FACE_OFFSETS_M = {"nose": KINECT_FACE_OFFSETS_M["NOSE"], "left_ear": KINECT_FACE_OFFSETS_M["EAR_LEFT"],
                  "right_ear": KINECT_FACE_OFFSETS_M["EAR_RIGHT"]}
_NOISE = {"nose": 0.01, "eye": 0.01, "ear": 0.015, "shoulder": 0.025, "elbow": 0.02, "wrist": 0.02,
          "hip": 0.04, "knee": 0.025, "ankle": 0.025}
KEYPOINT_NOISE_M = np.array([next(v for k, v in _NOISE.items() if k in name) for name in COCO_KEYPOINTS])
_FACE = [COCO_INDEX[n] for n in ("nose", "left_eye", "right_eye")]
_EARS = [COCO_INDEX[n] for n in ("left_ear", "right_ear")]
TORSO_RADIUS_M = 0.15


@dataclass
class PoseFaults:
    """One frame's draws: ``person_missed`` (P,), ``swapped`` (P,), ``missed`` (P,17) bool and the
    keypoints' ``noise`` (P,17,3) metres (world axes)."""

    person_missed: np.ndarray
    swapped: np.ndarray
    missed: np.ndarray
    noise: np.ndarray


class SimPoseDetector:
    """Body keypoints of a simulated session's people on panorama views (see the module docstring)."""

    needs_images = False

    def __init__(self, session_dir: str | Path, definition_m: float = 0.02, miss: float = 0.05,
                 person_miss: float = 0.03, swap_facing: float = 0.02, swap_away: float = 0.2,
                 hidden_gain: float = 2.5, visible_conf: float = 0.9, hidden_conf: float = 0.55,
                 missed_conf: float = 0.1, pad: float = 0.1, min_keypoints: int = 5, seed: int = 0):
        truth = open_truth(session_dir, fix="the simulated detector needs a simulated session")
        d = truth.motion(("t_session", "smplx_joints", "smplx_local_rotmats", "pano_frame_t_session"))
        self._t = d["t_session"]
        self._joints = d["smplx_joints"].astype(np.float64)  # (P,N,55,3)
        self._pelvis_R = d["smplx_local_rotmats"][:, :, 0].astype(np.float64)  # (P,N,3,3) world
        self.frame_times = d["pano_frame_t_session"]
        T_world_pano = truth.rig().pose("pano")
        self._R_pano_world = T_world_pano[:3, :3].T
        self._centre = T_world_pano[:3, 3]
        self.definition_m, self.miss, self.person_miss = definition_m, miss, person_miss
        self.swap_facing, self.swap_away, self.hidden_gain = swap_facing, swap_away, hidden_gain
        self.visible_conf, self.hidden_conf, self.missed_conf = visible_conf, hidden_conf, missed_conf
        self.pad, self.min_keypoints, self.seed = pad, min_keypoints, seed
        self.optics = truth.pano_optics()
        realism = truth.realism() if (truth.dir / REALISM_FILE).is_file() else None
        field = field_observer(realism)
        self.field = field.pose_detector if field is not None else None
        self.width_px = native_width(session_dir) if self.field is not None else 0.0
        P = self._joints.shape[0]
        self._definition = definition_m * np.random.default_rng([seed, 0xC0C0]).normal(size=(P, len(COCO_KEYPOINTS), 3))

    @property
    def num_people(self) -> int:
        return int(self._joints.shape[0])

    def pelvis_pano(self, person: int, t_session) -> np.ndarray:
        """The true pelvis (...,3) of ``person`` in the panorama frame at session times ``t_session``
        (a scalar or an array, seconds)."""
        t = np.atleast_1d(np.asarray(t_session, dtype=np.float64))
        i0, i1 = int(np.searchsorted(self._t, t.min())), int(np.searchsorted(self._t, t.max()))
        win = slice(max(0, i0 - 3), min(len(self._t), i1 + 3))
        pelvis = interpolate_positions(self._t[win], self._joints[person, win, SMPLX_INDEX["pelvis"]], t.ravel())
        return ((pelvis - self._centre) @ self._R_pano_world.T).reshape(np.shape(t_session) + (3,))

    def capture_times(self, frame_index: int) -> np.ndarray:
        """The session time (P,) (seconds) at which pano frame ``frame_index`` captured each person:
        when the row of their pelvis was exposed (one time for the whole person)."""
        t_frame = float(self.frame_times[frame_index])
        out = np.full(self.num_people, t_frame)
        for p in range(self.num_people):
            t, _ = capture_times(self.optics, t_frame, lambda t: self.pelvis_pano(p, t))
            out[p] = float(t) if np.isfinite(t) else t_frame
        return out

    def true_keypoints(self, frame_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """At pano frame ``frame_index``'s true time: the keypoints (P,17,3) world (with the
        definition offsets, without noise), whether each person faces the 360 camera (P,) (angle
        between the pelvis's forward and the camera under 90 deg), and which keypoints are hidden
        (P,17) by the person's own body (behind the torso's plane, seen from the camera) or by
        another person's torso."""
        P = self.num_people
        if self.optics.readout_s == 0.0:
            t = np.array([self.frame_times[frame_index]])
            J = interpolate_positions(self._t, self._joints.transpose(1, 0, 2, 3), t)[0]  # (P,55,3)
            k = int(np.clip(np.searchsorted(self._t, t[0]), 0, len(self._t) - 1))
            R_pelvis = self._pelvis_R[:, k]
        else:
            t = self.capture_times(frame_index)
            J = interpolate_positions(self._t, self._joints.transpose(1, 0, 2, 3), t)[np.arange(P), np.arange(P)]
            k = np.clip(np.searchsorted(self._t, t), 0, len(self._t) - 1)
            R_pelvis = self._pelvis_R[np.arange(P), k]
        kp = np.empty((P, len(COCO_KEYPOINTS), 3))
        for name, smplx in COCO_FROM_SMPLX.items():
            kp[:, COCO_INDEX[name]] = J[:, SMPLX_INDEX[smplx]]
        head, neck = J[:, SMPLX_INDEX["head"]], J[:, SMPLX_INDEX["neck"]]
        x = J[:, SMPLX_INDEX["left_eye_smplhf"]] - J[:, SMPLX_INDEX["right_eye_smplhf"]]
        x /= np.linalg.norm(x, axis=-1, keepdims=True)
        y = head - neck
        y -= np.sum(y * x, axis=-1, keepdims=True) * x
        y /= np.linalg.norm(y, axis=-1, keepdims=True)
        R_head = np.stack([x, y, np.cross(x, y)], axis=-1)
        for name, offset in FACE_OFFSETS_M.items():
            kp[:, COCO_INDEX[name]] = head + R_head @ np.asarray(offset)
        kp += np.einsum("pij,pkj->pki", R_pelvis, self._definition)
        pelvis = J[:, SMPLX_INDEX["pelvis"]]
        to_cam = self._centre - pelvis
        forward = R_pelvis[:, :, 2]
        facing = np.sum(forward[:, [0, 2]] * to_cam[:, [0, 2]], axis=-1) > 0
        towards = to_cam / np.linalg.norm(to_cam, axis=-1, keepdims=True)
        hidden = np.sum((kp - pelvis[:, None]) * towards[:, None], axis=-1) < -0.06
        f = np.linspace(0.05, 0.95, 24)[:, None, None, None]
        ray = self._centre + f * (kp[None] - self._centre)  # (S,P,17,3)
        for q in range(P):
            a, b = pelvis[q], neck[q]
            ab = b - a
            s = np.clip(np.sum((ray - a) * ab, axis=-1) / (ab @ ab), 0.0, 1.0)
            d = np.linalg.norm(ray - (a + s[..., None] * ab), axis=-1)
            behind = np.any(d < TORSO_RADIUS_M, axis=0)
            behind[q] = False
            hidden |= behind
        return kp, facing, hidden

    def faults(self, frame_index: int, facing: np.ndarray) -> PoseFaults:
        """The frame's draws (see :class:`PoseFaults`) for people facing the camera or not (P,)."""
        rng = np.random.default_rng([self.seed, frame_index, 0xB0D])
        P, K = self.num_people, len(COCO_KEYPOINTS)
        u = rng.random((P, 2))
        missed = rng.random((P, K)) < self.miss
        noise = rng.normal(size=(P, K, 3)) * KEYPOINT_NOISE_M[None, :, None]
        return PoseFaults(u[:, 0] < self.person_miss, u[:, 1] < np.where(facing, self.swap_facing, self.swap_away),
                          missed, noise)

    def observed_keypoints(self, frame_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Keypoints (P,17,3) as the model reports them (panorama frame, metres, labels possibly
        exchanged), their confidences (P,17), and which people are reported (P,)."""
        kp, facing, hidden = self.true_keypoints(frame_index)
        fault = self.faults(frame_index, facing)
        kp = kp + fault.noise * np.where(hidden, self.hidden_gain, 1.0)[..., None]
        conf = np.where(hidden, self.hidden_conf, self.visible_conf)
        missed = fault.missed.copy()
        missed[~facing] |= np.isin(np.arange(len(COCO_KEYPOINTS)), _FACE)
        away = ~facing & np.all(hidden[:, _EARS], axis=-1)
        missed[away] |= np.isin(np.arange(len(COCO_KEYPOINTS)), _EARS)
        conf = np.where(missed, self.missed_conf, conf)
        swap = fault.swapped
        kp[swap] = kp[swap][:, list(COCO_FLIP)]
        conf[swap] = conf[swap][:, list(COCO_FLIP)]
        kp_pano = (kp - self._centre) @ self._R_pano_world.T
        if self.optics.baseline_m > 0.0:
            kp_pano, _, _ = self.optics.apparent(kp_pano)
        reported = ~fault.person_missed
        if self.field is not None:
            kp_pano, conf, reported = self._field_faults(frame_index, kp_pano, conf, reported)
        return kp_pano, conf, reported

    def _field_faults(self, frame_index: int, kp_pano: np.ndarray, conf: np.ndarray,
                      reported: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The field faults (hands/sim_field.py ``pose_detector``) on a frame's keypoints (P,17,3)
        (pano frame, as the stitched frame shows them), confidences (P,17) and reported people (P,):
        people missed by box size, blur and seam, and with probability ``false_rate`` a false
        person (a real person's keypoints turned to another bearing about the camera's vertical)
        appended."""
        model = self.field
        P = self.num_people
        draws = np.random.default_rng([self.seed, frame_index, 0xF1E1D]).random(P + 3)
        t_capture = self.capture_times(frame_index)
        reported = reported.copy()
        for p in range(P):
            box_px = float(box_size_px(kp_pano[p], self.width_px))
            blur_px = 0.0
            if self.optics.exposure_s > 0:
                dt = 1.0 / 240.0
                w = self.pelvis_pano(p, np.array([t_capture[p] - dt / 2, t_capture[p] + dt / 2]))
                blur_px = float(image_speed_px_s(w[0], w[1], dt, self.width_px)) * self.optics.exposure_s
            pelvis = self.pelvis_pano(p, t_capture[p])
            _, _, shown = self.optics.apparent(pelvis)
            on_seam = bool(self.optics.in_blend(pelvis) or not shown)
            reported[p] &= not draws[p] < model.miss.probability(box_px, blur_px, on_seam)
        if draws[P] < model.false_rate:
            source = int(draws[P + 1] * P)
            angle = np.radians(60.0 + 240.0 * draws[P + 2])
            c, s = np.cos(angle), np.sin(angle)
            R_y = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
            kp_pano = np.concatenate([kp_pano, (kp_pano[source] @ R_y.T)[None]])
            conf = np.concatenate([conf, conf[source][None]])
            reported = np.append(reported, True)
        return kp_pano, conf, reported

    def detect_poses(self, frame_index: int, pano_bgr, views: Sequence[WristView]) -> list[PoseDetections]:
        """One :class:`PoseDetections` per view of pano frame ``frame_index`` (``pano_bgr`` unused)."""
        if not 0 <= frame_index < len(self.frame_times):
            return [PoseDetections.empty() for _ in views]
        kp_pano, conf, reported = self.observed_keypoints(frame_index)
        out = []
        for view in views:
            size = view.size
            boxes, scores, kps, kconf = [], [], [], []
            for p in np.flatnonzero(reported):
                d_view = kp_pano[p] @ view.R_pano_view
                front = d_view[:, 2] > 0.05
                px = np.full((len(d_view), 2), np.nan)
                px[front] = view.camera.project(d_view[front])
                inside = front & np.all((px >= 0) & (px <= size - 1), axis=-1)
                c = np.where(inside, conf[p], 0.0)
                if np.sum(c >= 0.5) < self.min_keypoints:
                    continue
                lo, hi = px[inside].min(axis=0), px[inside].max(axis=0)
                lo, hi = np.clip(lo - self.pad * (hi - lo), 0, size - 1), np.clip(hi + self.pad * (hi - lo), 0, size - 1)
                boxes.append(np.r_[lo, hi])
                scores.append(float(np.mean(c[c > 0])))
                kps.append(px)
                kconf.append(c)
            n = len(boxes)
            out.append(PoseDetections(np.array(boxes).reshape(n, 4), np.array(scores).reshape(n),
                                      np.array(kps).reshape(n, len(COCO_KEYPOINTS), 2),
                                      np.array(kconf).reshape(n, len(COCO_KEYPOINTS))))
        return out
