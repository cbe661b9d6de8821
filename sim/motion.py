"""Motion of the simulated people: smooth functions of session time.

Each person is driven on the SMPL-X kinematic tree: local joint rotations (55, 3x3, SMPL-X order,
canonical frame; see fusion/body_model.py) and a root translation, closed-form in time (sums of
sinusoids and smooth steps, twice continuously differentiable), so the truth can be sampled at any
time. The scene is as busy as a real capture: each person walks back and forth along a lane in
front of the 360 camera (lanes at different distances, neighbours in opposite phase, so people
cross and hide one another from the Kinects behind the camera), turns fully around every
:data:`TURN_PERIOD_S` or so (a half turn away, a dwell with the back to the camera, the second half
turn, a dwell facing it), bends forward now and then, and gestures so that the hands come in
front of the body and towards the camera (as close as about 0.4 m to it on the nearest lane);
the hands open, close, point and pinch (absolute finger rotations per MANO joint, flat-hand
convention; left hands are proper left-hand parameters, the mirror of the right-hand ones).

World frame: y up, metres, floor at y = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omnimocap.geometry.transforms import axis_angle_to_matrix, mirror_axis_angle, rotation_between
from omnimocap.data.skeletons import SIDES, SMPLX_HAND_START, SMPLX_INDEX, SMPLX_NUM_JOINTS, SMPLX_WRIST
from omnimocap.data.skeletons import LEFT_HAND_REST_FROM_WRIST
from omnimocap.fusion.body_model import Skeleton, forward_kinematics
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


def _smooth_step(x: np.ndarray) -> np.ndarray:
    """0 for x <= 0, 1 for x >= 1, the quintic smoothstep between (twice continuously differentiable)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * x * (10.0 - 15.0 * x + 6.0 * x * x)


# One full turn per period: a half turn away from the face target, a dwell with the back to it, the
# second half turn and a dwell facing it, as fractions of the period.
TURN_PERIOD_S = (9.0, 13.0)
_TURN_AWAY = (0.0, 0.16)
_TURN_BACK = (0.36, 0.52)
# Lanes: horizontal distance of each walking line from the 360 camera, by number of people (metres).
_LANES_M = {1: (0.87,), 2: (0.87, 1.6), 3: (0.87, 1.35, 1.85)}
WALK_AMPLITUDE_M = (0.75, 0.95)


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
    params: np.ndarray  # (40,) random phases and rates in [0, 1)
    pelvis_height: float
    walk_phase: float = 0.0  # radians; neighbouring lanes walk in opposite phase, so they cross

    def _p(self, i: int, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(self.params[i])

    def transl_root(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pelvis world position (N,3) and heading angle about +y (N,) at times t (seconds)."""
        t = np.asarray(t, dtype=np.float64)
        two_pi = 2 * np.pi
        # Walk along the lane (x about the home spot, a little in z); the heading faces the target,
        # sways, and turns fully around once per period.
        walk_freq = self._p(33, 0.9, 1.1) / self._p(32, 10.0, 14.0)
        amplitude = self._p(34, *WALK_AMPLITUDE_M)
        dx = amplitude * np.sin(two_pi * walk_freq * t + self.walk_phase)
        dz = 0.10 * np.sin(two_pi * self._p(2, 0.04, 0.08) * t + two_pi * self._p(3, 0, 1))
        step = two_pi * self._p(4, 0.7, 0.9)
        bob = 0.012 * np.cos(2 * step * t)
        pos = np.stack([self.home[0] + dx, self.pelvis_height + bob, self.home[2] + dz], axis=-1)
        to_target = self.face_target - pos
        facing = np.arctan2(to_target[:, 0], to_target[:, 2])
        sway = np.radians(20.0) * np.sin(two_pi * self._p(5, 0.06, 0.12) * t + two_pi * self._p(6, 0, 1))
        return pos, facing + sway + self.turn_angle(t)

    def turn_angle(self, t: np.ndarray) -> np.ndarray:
        """(N,) accumulated turning about +y (radians, sign per person) at times t: pi for each half turn."""
        u = np.asarray(t, dtype=np.float64) / self._p(35, *TURN_PERIOD_S) + self._p(36, 0.0, 1.0)
        whole = np.floor(u)
        frac = u - whole
        half = (_smooth_step((frac - _TURN_AWAY[0]) / (_TURN_AWAY[1] - _TURN_AWAY[0]))
                + _smooth_step((frac - _TURN_BACK[0]) / (_TURN_BACK[1] - _TURN_BACK[0])))
        sign = 1.0 if self.params[37] < 0.5 else -1.0
        return sign * np.pi * (2.0 * whole + half)

    def bend(self, t: np.ndarray) -> np.ndarray:
        """(N,) forward bend level in [0, 1] at times t: mostly upright, now and then bent over."""
        c = np.cos(2 * np.pi * self._p(38, 0.05, 0.09) * np.asarray(t, dtype=np.float64) + 2 * np.pi * self._p(39, 0, 1))
        return _smooth_step((c - 0.5) / 0.4)

    def local_rotmats(self, t: np.ndarray) -> np.ndarray:
        """(N, 55, 3, 3) local rotations (SMPL-X order, canonical frame) at times t (seconds)."""
        t = np.asarray(t, dtype=np.float64)
        n = len(t)
        two_pi = 2 * np.pi
        aa = np.zeros((n, SMPLX_NUM_JOINTS, 3))
        idx = SMPLX_INDEX
        pos, heading = self.transl_root(t)
        # Passing close in front of the face target (the 360 camera), people reach towards it.
        near = _smooth_step((1.25 - np.linalg.norm((self.face_target - pos)[:, [0, 2]], axis=-1)) / 0.3)
        step = two_pi * self._p(4, 0.7, 0.9) * t
        walk = 0.6 + 0.4 * np.sin(two_pi * 0.07 * t + two_pi * self._p(7, 0, 1))  # stride level

        # Bending over: the pelvis tips forward (the hips give it back to the legs) and the spine curls.
        bend = self.bend(t)
        lean = np.radians(2.0) * np.sin(step * 0.5) + np.radians(30.0) * bend
        root = _rot_y(heading) @ axis_angle_to_matrix(lean[:, None] * _X)
        for name, amp, curl in (("spine1", 3.0, 12.0), ("spine2", 3.0, 10.0), ("spine3", 2.0, 6.0)):
            aa[:, idx[name]] = np.radians(amp) * np.stack([
                np.sin(two_pi * 0.2 * t + self._p(8, 0, 6)), np.sin(two_pi * 0.13 * t + self._p(9, 0, 6)),
                0.5 * np.sin(step)], axis=-1)
            aa[:, idx[name], 0] += np.radians(curl) * bend
        aa[:, idx["neck"], 1] = np.radians(10.0) * np.sin(two_pi * self._p(10, 0.1, 0.2) * t + self._p(11, 0, 6))
        aa[:, idx["head"], 0] = np.radians(8.0) * np.sin(two_pi * self._p(12, 0.1, 0.25) * t + self._p(13, 0, 6))
        aa[:, idx["head"], 1] = np.radians(15.0) * np.sin(two_pi * self._p(14, 0.08, 0.15) * t)

        # Legs: a slow walking gait (hip flexion about x, knee bend, ankle), opposite phases.
        for side, sign in (("left", 1.0), ("right", -1.0)):
            swing = sign * np.sin(step) * walk
            aa[:, idx[f"{side}_hip"], 0] = -np.radians(18.0) * swing - np.radians(30.0) * bend
            aa[:, idx[f"{side}_knee"], 0] = (np.radians(8.0) + np.radians(22.0) * walk * (0.5 + 0.5 * np.sin(step * sign + 1.2))
                                             + np.radians(10.0) * bend)
            aa[:, idx[f"{side}_ankle"], 0] = np.radians(6.0) * swing

        rot = axis_angle_to_matrix(aa)
        rot[:, 0] = root
        # Arms: direction of the upper arm blends from hanging to reaching forward (gesture level g),
        # the elbow bends with it, the wrist turns.
        for s, side in enumerate(SIDES):
            sx = 1.0 if side == "left" else -1.0
            g = _smooth_step_wave(t, self._p(15 + s, 0.12, 0.22), two_pi * self._p(17 + s, 0, 1))
            g = g + (1.0 - g) * near
            hang = np.array([0.28 * sx, -0.95, 0.12])
            reach = np.array([0.25 * sx, -0.25, 0.93])
            d = (1 - g)[:, None] * hang + g[:, None] * reach
            d /= np.linalg.norm(d, axis=-1, keepdims=True)
            rot[:, idx[f"{side}_shoulder"]] = rotation_between(np.array([sx, 0.0, 0.0]), d)
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
    """``count`` people (1-3) in front of the 360 camera (towards world +z), each walking along a
    lane (``_LANES_M``: horizontal distance from the camera, the nearest about 0.87 m, so hands
    reaching towards it come within about 0.4 m), up to about 0.95 m either side of the camera's
    line of sight, neighbouring lanes in opposite phase."""
    if not 1 <= count <= 3:
        raise ValueError(f"the simulation supports 1 to 3 people, got {count}")
    people = []
    base_phase = rng.uniform(0.0, 2 * np.pi)
    for p, lane in enumerate(_LANES_M[count]):
        betas = np.zeros(10)
        betas[:3] = rng.uniform(-1.2, 1.2, size=3)
        betas[3:] = rng.normal(scale=0.3, size=7)
        home = camera_position + np.array([rng.uniform(-0.1, 0.1), 0.0, lane + rng.uniform(-0.05, 0.05)])
        rest = skeleton.joints_at_rest(betas)
        # Feet on the floor: the foot joints sit a few centimetres above the sole.
        pelvis_height = float(rest[0, 1] - rest[[10, 11], 1].mean() + 0.04)
        hand = np.zeros(10)
        hand[0] = 0.8 * betas[0] + rng.normal(scale=0.2)
        hand[1:3] = rng.normal(scale=0.5, size=2)
        people.append(PersonMotion(betas=betas, hand_betas=np.stack([hand, hand]), home=home,
                                   face_target=camera_position.copy(), params=rng.random(40),
                                   pelvis_height=pelvis_height,
                                   walk_phase=float(base_phase + np.pi * p + rng.uniform(-0.3, 0.3))))
    return people
