"""Motion of the simulated people: smooth (infinitely differentiable) functions of session time.

Each person is driven on the SMPL-X kinematic tree: local joint rotations (55, 3x3, SMPL-X order,
canonical frame; see fusion/body_model.py) and a root translation, both closed-form sums of
sinusoids, so the truth can be sampled at any time. People walk slowly about a home spot, turn
towards and away from the 360 camera, gesture so that their hands come in front of the body and
towards the camera, and their hands open, close, point and pinch (absolute finger rotations per
MANO joint, flat-hand convention; left hands are proper left-hand parameters, the mirror of the
right-hand ones).

World frame: y up, metres, floor at y = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omnimocap.calibration.transforms import axis_angle_to_matrix, mirror_axis_angle
from omnimocap.data.skeletons import SIDES, SMPLX_HAND_START, SMPLX_INDEX, SMPLX_NUM_JOINTS, SMPLX_WRIST
from omnimocap.fusion.body_model import LEFT_HAND_REST_FROM_WRIST, Skeleton, forward_kinematics
from omnimocap.hands.mano import ManoModel

_X, _Y, _Z = np.eye(3)
# Finger-curl templates: flexion angles (radians) of MANO joints 1..15 (index, middle, pinky,
# ring, thumb; 3 joints each).
_OPEN = np.array([0.10, 0.08, 0.05, 0.08, 0.06, 0.05, 0.12, 0.08, 0.05, 0.10, 0.07, 0.05, 0.10, 0.05, 0.05])
_FIST = np.array([1.35, 1.45, 0.90, 1.40, 1.50, 0.95, 1.30, 1.40, 0.90, 1.35, 1.45, 0.90, 0.55, 0.45, 0.60])
_POINT = np.array([0.05, 0.05, 0.03, 1.40, 1.50, 0.95, 1.30, 1.40, 0.90, 1.35, 1.45, 0.90, 0.60, 0.50, 0.55])
_PINCH = np.array([0.70, 0.75, 0.45, 0.30, 0.30, 0.20, 0.35, 0.30, 0.20, 0.30, 0.30, 0.20, 0.75, 0.35, 0.55])
_TEMPLATES = np.stack([_OPEN, _FIST, _POINT, _PINCH])


def _right_flex_axes() -> np.ndarray:
    """(15, 3) flexion axes of the right hand's finger joints in the MANO/SMPL-X hand frame: a
    positive rotation about the axis bends the bone towards the palm (-y in the rest pose)."""
    rest = LEFT_HAND_REST_FROM_WRIST * np.array([-1.0, 1.0, 1.0])
    axes = np.empty((15, 3))
    for finger in range(5):
        chain = rest[3 * finger: 3 * finger + 3]
        for k in range(3):
            d = chain[k + 1] - chain[k] if k < 2 else chain[2] - chain[1]
            a = np.cross(d, -_Y)
            axes[3 * finger + k] = a / np.linalg.norm(a)
    return axes


_RIGHT_FLEX_AXES = _right_flex_axes()


def _rot_y(angle: np.ndarray) -> np.ndarray:
    return axis_angle_to_matrix(np.asarray(angle)[..., None] * _Y)


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,3,3) smallest rotations taking unit vector a (3,) to unit vectors b (N,3); b never
    approaches -a here, so the result is smooth in b."""
    axis = np.cross(a, b)
    s = np.linalg.norm(axis, axis=-1)
    c = b @ a
    angle = np.arctan2(s, c)
    safe = np.where(s[:, None] > 1e-12, axis / np.maximum(s, 1e-12)[:, None], 0.0)
    return axis_angle_to_matrix(safe * angle[:, None])


def _smooth_step_wave(t: np.ndarray, freq: float, phase: float) -> np.ndarray:
    """Smooth values in [0, 1] that dwell near 0 and 1 (a squashed cosine)."""
    c = np.cos(2 * np.pi * freq * t + phase)
    return 0.5 - 0.5 * np.tanh(2.5 * c) / np.tanh(2.5)


@dataclass
class PersonMotion:
    """One simulated person. ``home`` (3,) is the pelvis's mean floor position (y ignored),
    ``face_target`` (3,) the point the person mostly faces (the 360 camera)."""

    betas: np.ndarray  # (10,)
    hand_betas: np.ndarray  # (2, 10) left, right
    home: np.ndarray
    face_target: np.ndarray
    params: np.ndarray  # (32,) random phases and rates in [0, 1)
    pelvis_height: float

    def _p(self, i: int, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(self.params[i])

    def transl_root(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pelvis world position (N,3) and heading angle about +y (N,) at times t (seconds)."""
        t = np.asarray(t, dtype=np.float64)
        two_pi = 2 * np.pi
        dx = 0.22 * np.sin(two_pi * self._p(0, 0.05, 0.09) * t + two_pi * self._p(1, 0, 1))
        dz = 0.15 * np.sin(two_pi * self._p(2, 0.04, 0.08) * t + two_pi * self._p(3, 0, 1))
        step = two_pi * self._p(4, 0.7, 0.9)
        bob = 0.012 * np.cos(2 * step * t)
        pos = np.stack([self.home[0] + dx, self.pelvis_height + bob, self.home[2] + dz], axis=-1)
        to_target = self.face_target - pos
        facing = np.arctan2(to_target[:, 0], to_target[:, 2])
        turn = np.radians(28.0) * np.sin(two_pi * self._p(5, 0.06, 0.12) * t + two_pi * self._p(6, 0, 1))
        return pos, facing + turn

    def local_rotmats(self, t: np.ndarray) -> np.ndarray:
        """(N, 55, 3, 3) local rotations (SMPL-X order, canonical frame) at times t (seconds)."""
        t = np.asarray(t, dtype=np.float64)
        n = len(t)
        two_pi = 2 * np.pi
        aa = np.zeros((n, SMPLX_NUM_JOINTS, 3))
        idx = SMPLX_INDEX
        _, heading = self.transl_root(t)
        step = two_pi * self._p(4, 0.7, 0.9) * t
        walk = 0.6 + 0.4 * np.sin(two_pi * 0.07 * t + two_pi * self._p(7, 0, 1))  # stride level

        lean = np.radians(2.0) * np.sin(step * 0.5)
        root = _rot_y(heading) @ axis_angle_to_matrix(lean[:, None] * _X)
        for name, amp in (("spine1", 3.0), ("spine2", 3.0), ("spine3", 2.0)):
            aa[:, idx[name]] = np.radians(amp) * np.stack([
                np.sin(two_pi * 0.2 * t + self._p(8, 0, 6)), np.sin(two_pi * 0.13 * t + self._p(9, 0, 6)),
                0.5 * np.sin(step)], axis=-1)
        aa[:, idx["neck"], 1] = np.radians(10.0) * np.sin(two_pi * self._p(10, 0.1, 0.2) * t + self._p(11, 0, 6))
        aa[:, idx["head"], 0] = np.radians(8.0) * np.sin(two_pi * self._p(12, 0.1, 0.25) * t + self._p(13, 0, 6))
        aa[:, idx["head"], 1] = np.radians(15.0) * np.sin(two_pi * self._p(14, 0.08, 0.15) * t)

        # Legs: a slow walking gait (hip flexion about x, knee bend, ankle), opposite phases.
        for side, sign in (("left", 1.0), ("right", -1.0)):
            swing = sign * np.sin(step) * walk
            aa[:, idx[f"{side}_hip"], 0] = -np.radians(18.0) * swing
            aa[:, idx[f"{side}_knee"], 0] = np.radians(8.0) + np.radians(22.0) * walk * (0.5 + 0.5 * np.sin(step * sign + 1.2))
            aa[:, idx[f"{side}_ankle"], 0] = np.radians(6.0) * swing

        rot = axis_angle_to_matrix(aa)
        rot[:, 0] = root
        # Arms: direction of the upper arm blends from hanging to reaching forward (gesture level g),
        # the elbow bends with it, the wrist turns.
        for s, side in enumerate(SIDES):
            sx = 1.0 if side == "left" else -1.0
            g = _smooth_step_wave(t, self._p(15 + s, 0.12, 0.22), two_pi * self._p(17 + s, 0, 1))
            hang = np.array([0.28 * sx, -0.95, 0.12])
            reach = np.array([0.25 * sx, -0.25, 0.93])
            d = (1 - g)[:, None] * hang + g[:, None] * reach
            d /= np.linalg.norm(d, axis=-1, keepdims=True)
            rot[:, idx[f"{side}_shoulder"]] = _rotation_between(np.array([sx, 0.0, 0.0]), d)
            bend = np.radians(15.0) + np.radians(45.0) * g + np.radians(10.0) * np.sin(two_pi * 0.3 * t + s)
            rot[:, idx[f"{side}_elbow"]] = _rot_y(-sx * bend)
            wrist = np.stack([np.radians(35.0) * np.sin(two_pi * self._p(19 + s, 0.15, 0.3) * t + s),
                              np.radians(15.0) * np.sin(two_pi * 0.21 * t + 2 * s),
                              np.radians(20.0) * np.sin(two_pi * self._p(21 + s, 0.1, 0.25) * t + 1 + s)], axis=-1)
            rot[:, SMPLX_WRIST[side]] = axis_angle_to_matrix(wrist * np.array([1.0, sx, sx]))
            rot[:, SMPLX_HAND_START[side]: SMPLX_HAND_START[side] + 15] = self.hand_pose(side, t)
        return rot

    def hand_pose(self, side: str, t: np.ndarray) -> np.ndarray:
        """(N, 15, 3, 3) finger rotations (MANO joints 1..15) of the ``side`` hand at times t:
        a smooth blend of open, fist, point and pinch; left = mirror of the right-hand pose."""
        t = np.asarray(t, dtype=np.float64)
        s = SIDES.index(side)
        two_pi = 2 * np.pi
        logits = np.stack([2.2 * np.cos(two_pi * self._p(23 + k, 0.08, 0.2) * t + two_pi * self._p(27 + k, 0, 1) + 1.7 * s)
                           for k in range(4)], axis=-1)
        w = np.exp(logits)
        w /= w.sum(axis=-1, keepdims=True)
        angles = w @ _TEMPLATES
        angles = angles + 0.08 * np.sin(two_pi * 0.5 * t + s)[:, None]  # a little fidgeting
        aa = angles[..., None] * _RIGHT_FLEX_AXES
        if side == "left":
            aa = mirror_axis_angle(aa)
        return axis_angle_to_matrix(aa)

    def transl(self, t: np.ndarray, skeleton: Skeleton) -> np.ndarray:
        """(N,3) SMPL-X translation putting the pelvis at its world position."""
        pos, _ = self.transl_root(t)
        return pos - skeleton.joints_at_rest(self.betas)[0]


@dataclass
class PeopleSample:
    """All people sampled at N times (P people). World frame, metres."""

    local_rotmats: np.ndarray  # (P, N, 55, 3, 3)
    transl: np.ndarray  # (P, N, 3)
    joints: np.ndarray  # (P, N, 55, 3)
    global_R: np.ndarray  # (P, N, 55, 3, 3)
    hand_global_R: np.ndarray  # (P, N, 2, 3, 3) left, right (left: proper left-hand params)
    hand_pose: np.ndarray  # (P, N, 2, 15, 3, 3)
    hand_joints: np.ndarray  # (P, N, 2, 21, 3) OpenPose order, from the MANO meshes
    hand_vertices: np.ndarray | None  # (P, N, 2, 778, 3) when asked for


def sample_people(people: list[PersonMotion], skeleton: Skeleton, mano: ManoModel, t: np.ndarray,
                  with_vertices: bool = False) -> PeopleSample:
    """Evaluate every person at times ``t`` (N,): body FK and both MANO hands placed at the
    SMPL-X wrists (the MANO root joint coincides with the wrist joint)."""
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    out: dict[str, list] = {k: [] for k in PeopleSample.__dataclass_fields__}
    for person in people:
        rot = person.local_rotmats(t)
        transl = person.transl(t, skeleton)
        joints, glob = forward_kinematics(skeleton, rot, person.betas, transl)
        hand_R, hand_pose, hand_j, hand_v = [], [], [], []
        for s, side in enumerate(SIDES):
            R = glob[:, SMPLX_WRIST[side]]
            pose = rot[:, SMPLX_HAND_START[side]: SMPLX_HAND_START[side] + 15]
            verts, j21 = mano.forward_side(side, R, pose, person.hand_betas[s], with_vertices=with_vertices)
            shift = joints[:, SMPLX_WRIST[side]] - j21[:, 0]
            hand_R.append(R)
            hand_pose.append(pose)
            hand_j.append(j21 + shift[:, None])
            if with_vertices:
                hand_v.append(verts + shift[:, None])
        out["local_rotmats"].append(rot)
        out["transl"].append(transl)
        out["joints"].append(joints)
        out["global_R"].append(glob)
        out["hand_global_R"].append(np.stack(hand_R, axis=1))
        out["hand_pose"].append(np.stack(hand_pose, axis=1))
        out["hand_joints"].append(np.stack(hand_j, axis=1))
        out["hand_vertices"].append(np.stack(hand_v, axis=1) if with_vertices else None)
    arrays = {k: (np.stack(v) if k != "hand_vertices" or with_vertices else None) for k, v in out.items()}
    return PeopleSample(**arrays)


def make_people(count: int, rng: np.random.Generator, camera_position: np.ndarray, skeleton: Skeleton) -> list[PersonMotion]:
    """``count`` people (1-3) in front of the 360 camera (towards world +z), their pelvises about
    1.0-1.3 m from it horizontally, so gesturing hands come within about 0.6-1.5 m of it."""
    if not 1 <= count <= 3:
        raise ValueError(f"the simulation supports 1 to 3 people, got {count}")
    spread = np.radians(55.0)
    azimuths = np.linspace(-spread, spread, count) if count > 1 else np.zeros(1)
    people = []
    for p, az in enumerate(azimuths):
        betas = np.zeros(10)
        betas[:3] = rng.uniform(-1.2, 1.2, size=3)
        betas[3:] = rng.normal(scale=0.3, size=7)
        radius = rng.uniform(1.0, 1.3)
        az = az + rng.uniform(-0.1, 0.1)
        home = camera_position + radius * np.array([np.sin(az), 0.0, np.cos(az)])
        rest = skeleton.joints_at_rest(betas)
        # Feet on the floor: the foot joints sit a few centimetres above the sole.
        pelvis_height = float(rest[0, 1] - rest[[10, 11], 1].mean() + 0.04)
        hand = np.zeros(10)
        hand[0] = 0.8 * betas[0] + rng.normal(scale=0.2)
        hand[1:3] = rng.normal(scale=0.5, size=2)
        people.append(PersonMotion(betas=betas, hand_betas=np.stack([hand, hand]), home=home,
                                   face_target=camera_position.copy(), params=rng.random(32),
                                   pelvis_height=pelvis_height))
    return people
