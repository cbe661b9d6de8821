"""The live whole-body pose streamed out: VMC (OSC over UDP) for VTuber tools and Unity/Unreal
plug-ins, and rerun for inspection.

The pose of a person is its live SMPL-X body (``fusion.live.body``) once its shape is fitted, else
the body of the live session's reference Kinect, as 32 k4abt joints either way (world frame, metres,
y up, right-handed; the fitted body's through :func:`kinect_joints_of_smplx`), with that person's
fused hands (21 keypoints each) when the hand preview has them. :func:`unity_bones` turns it into
Unity humanoid bones.

VMC (https://protocol.vmc.info, "Performer to Marionette"): each frame is one OSC bundle of
``/VMC/Ext/Root/Pos "root" px py pz qx qy qz qw``, one ``/VMC/Ext/Bone/Pos <name> px py pz qx qy
qz qw`` per bone (Unity ``HumanBodyBones`` names, parents before children), ``/VMC/Ext/T <time>``
(the frame's session time, seconds) and ``/VMC/Ext/OK 1``. Positions and rotations are *local*
(relative to the parent bone), in Unity's frame: left-handed, y up, metres.

Conversion from our world (right-handed, y up) to Unity: ``p_unity = (x, y, -z)``; a rotation
matrix ``R`` becomes ``S R S`` with ``S = diag(1, 1, -1)``, i.e. a quaternion ``(qx, qy, qz, qw)``
becomes ``(-qx, -qy, qz, qw)``. The bones are solved directly in Unity's frame after the position
flip, which is the same thing.

Bone rotations are the rotations that carry the Unity T-pose (the avatar faces +z, its left arm
along -x, right arm along +x, spine up, legs down, feet forward along +z) onto the tracked joints:
the Hips from the pelvis frame (up: pelvis to navel, right: left hip to right hip), every other
bone as the smallest rotation turning its parent's rotated rest direction onto the tracked
direction to its child joint (twist about the bone is inherited from the parent: joint positions
do not carry it). Bones without a child joint (Head, Toes) keep their parent's rotation. The Root
is the world origin (identity), so the Hips' local pose is its world pose.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from omnimocap.data.skeletons import (
    HAND21_INDEX, KINECT_BODY_FOR_FIT, KINECT_INDEX, KINECT_JOINTS, KINECT_PARENTS, SIDES, SMPLX_INDEX,
    SMPLX_PARENTS, kinect_from_smplx_matrix,
)
from omnimocap.geometry.quaternions import matrix_to_quat_xyzw
from omnimocap.geometry.transforms import rotation_between

UNITY_FROM_WORLD = np.diag([1.0, 1.0, -1.0])
DEFAULT_VMC_PORT = 39539  # the VMC protocol's usual Marionette port

_UP, _DOWN, _FWD = (0.0, 1.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0)
_LEFT, _RIGHT = (-1.0, 0.0, 0.0), (1.0, 0.0, 0.0)

# (Unity bone, its Kinect joint, parent bone, child joint its rest direction points to, rest
# direction in Unity's frame); parents come first.
BODY_BONES: tuple[tuple[str, str, str | None, str | None, tuple[float, float, float]], ...] = (
    ("Hips", "PELVIS", None, "SPINE_NAVEL", _UP),
    ("Spine", "SPINE_NAVEL", "Hips", "SPINE_CHEST", _UP),
    ("Chest", "SPINE_CHEST", "Spine", "NECK", _UP),
    ("Neck", "NECK", "Chest", "HEAD", _UP),
    ("Head", "HEAD", "Neck", None, _UP),
    ("LeftShoulder", "CLAVICLE_LEFT", "Chest", "SHOULDER_LEFT", _LEFT),
    ("LeftUpperArm", "SHOULDER_LEFT", "LeftShoulder", "ELBOW_LEFT", _LEFT),
    ("LeftLowerArm", "ELBOW_LEFT", "LeftUpperArm", "WRIST_LEFT", _LEFT),
    ("LeftHand", "WRIST_LEFT", "LeftLowerArm", "HAND_LEFT", _LEFT),
    ("RightShoulder", "CLAVICLE_RIGHT", "Chest", "SHOULDER_RIGHT", _RIGHT),
    ("RightUpperArm", "SHOULDER_RIGHT", "RightShoulder", "ELBOW_RIGHT", _RIGHT),
    ("RightLowerArm", "ELBOW_RIGHT", "RightUpperArm", "WRIST_RIGHT", _RIGHT),
    ("RightHand", "WRIST_RIGHT", "RightLowerArm", "HAND_RIGHT", _RIGHT),
    ("LeftUpperLeg", "HIP_LEFT", "Hips", "KNEE_LEFT", _DOWN),
    ("LeftLowerLeg", "KNEE_LEFT", "LeftUpperLeg", "ANKLE_LEFT", _DOWN),
    ("LeftFoot", "ANKLE_LEFT", "LeftLowerLeg", "FOOT_LEFT", _FWD),
    ("LeftToes", "FOOT_LEFT", "LeftFoot", None, _FWD),
    ("RightUpperLeg", "HIP_RIGHT", "Hips", "KNEE_RIGHT", _DOWN),
    ("RightLowerLeg", "KNEE_RIGHT", "RightUpperLeg", "ANKLE_RIGHT", _DOWN),
    ("RightFoot", "ANKLE_RIGHT", "RightLowerLeg", "FOOT_RIGHT", _FWD),
    ("RightToes", "FOOT_RIGHT", "RightFoot", None, _FWD),
)
# Unity finger -> the hand keypoint names of its three bones and tip.
FINGERS = {"Thumb": "thumb", "Index": "index", "Middle": "middle", "Ring": "ring", "Little": "pinky"}
_SEGMENTS = ("Proximal", "Intermediate", "Distal")


@dataclass(frozen=True)
class Bone:
    """One Unity humanoid bone: ``position`` and ``rotation`` (quaternion x, y, z, w) local to its
    parent (the Root for Hips), ``world_position`` / ``world_rotation`` (3x3) in Unity's frame."""

    name: str
    parent: str | None
    position: np.ndarray
    rotation: np.ndarray
    world_position: np.ndarray
    world_rotation: np.ndarray


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def unity_bones(body_world: np.ndarray, hands_world: dict[str, np.ndarray] | None = None) -> list[Bone]:
    """The Unity humanoid bones of one person: ``body_world`` the 32 k4abt joints (world frame,
    metres), ``hands_world`` side -> 21 hand keypoints (world frame) whose fingers are added to that
    side's Hand. Bones whose joint (or, for the body, any joint) is not finite are left out; an
    empty list means the body is incomplete."""
    p = np.asarray(body_world, float) @ UNITY_FROM_WORLD
    if not np.all(np.isfinite(p[[KINECT_INDEX[b[1]] for b in BODY_BONES]])):
        return []
    world_R: dict[str, np.ndarray] = {}
    world_p: dict[str, np.ndarray] = {}
    bones: list[Bone] = []

    def add(name: str, parent: str | None, pos: np.ndarray, R: np.ndarray) -> None:
        if parent is None:
            local_p, local_R = pos, R
        else:
            Rp = world_R[parent]
            local_p, local_R = Rp.T @ (pos - world_p[parent]), Rp.T @ R
        world_R[name], world_p[name] = R, pos
        bones.append(Bone(name, parent, local_p, matrix_to_quat_xyzw(local_R), pos, R))

    def aim(parent: str, rest: tuple[float, float, float], direction: np.ndarray) -> np.ndarray:
        Rp = world_R[parent]
        return rotation_between(_unit(Rp @ np.array(rest)), _unit(direction)) @ Rp

    for name, joint, parent, child, rest in BODY_BONES:
        pos = p[KINECT_INDEX[joint]]
        if parent is None:
            up = _unit(p[KINECT_INDEX[child]] - pos)
            right = p[KINECT_INDEX["HIP_RIGHT"]] - p[KINECT_INDEX["HIP_LEFT"]]
            right = _unit(right - np.dot(right, up) * up)
            R = np.stack([right, up, np.cross(right, up)], axis=1)
        elif child is None:
            R = world_R[parent]
        else:
            R = aim(parent, rest, p[KINECT_INDEX[child]] - pos)
        add(name, parent, pos, R)
    for side, hand in (hands_world or {}).items():
        h = np.asarray(hand, float) @ UNITY_FROM_WORLD
        prefix = side.capitalize()
        rest = _LEFT if side == "left" else _RIGHT
        for finger, key in FINGERS.items():
            names = [f"{key}{k}" for k in (1, 2, 3)] + [f"{key}_tip"]
            pts = h[[HAND21_INDEX[n] for n in names]]
            if not np.all(np.isfinite(pts)):
                continue
            parent = f"{prefix}Hand"
            for k, segment in enumerate(_SEGMENTS):
                name = f"{prefix}{finger}{segment}"
                add(name, parent, pts[k], aim(parent, rest, pts[k + 1] - pts[k]))
                parent = name
    return bones


_KINECT_FROM_SMPLX = kinect_from_smplx_matrix()
# k4abt's HAND joint sits at the base of the middle finger.
_HAND_FROM_SMPLX = {f"HAND_{side.upper()}": SMPLX_INDEX[f"{side}_middle1"] for side in SIDES}


def kinect_joints_of_smplx(smplx_joints: np.ndarray) -> np.ndarray:
    """The 32 k4abt joints (32,3) of SMPL-X joints (55,3), same frame and units: the joints the
    body fit models (``data.skeletons.KINECT_FROM_SMPLX``) and each HAND at the middle finger's
    base; NaN for the others (face, hand tips, thumbs)."""
    out = np.full((len(KINECT_JOINTS), 3), np.nan)
    out[list(KINECT_BODY_FOR_FIT)] = _KINECT_FROM_SMPLX @ np.asarray(smplx_joints, float)
    for name, j in _HAND_FROM_SMPLX.items():
        out[KINECT_INDEX[name]] = smplx_joints[j]
    return out


def person_pose(state, person_id: int | None = None) -> tuple[int, np.ndarray, dict[str, np.ndarray]] | None:
    """(person id, body (32,3), side -> hand (21,3)) of one person in a
    :class:`~omnimocap.fusion.live.state.LiveState`'s world (the lowest id when ``person_id`` is None), or
    None when that person is not tracked. The body is the fitted SMPL-X body's where there is one,
    else the reference Kinect's skeleton."""
    bodies = state.world.bodies
    if not bodies:
        return None
    pid = min(bodies) if person_id is None else person_id
    if pid not in bodies:
        return None
    hands = {side: state.world.person_hands[(pid, side)] for side in SIDES if (pid, side) in state.world.person_hands}
    fitted = state.world.fitted.get(pid)
    return pid, bodies[pid] if fitted is None else kinect_joints_of_smplx(fitted.joints), hands


# --- OSC encoding (OSC 1.0: big-endian, strings NUL-padded to 4 bytes) ------------------------------
def _osc_string(s: str) -> bytes:
    b = s.encode("utf-8") + b"\0"
    return b + b"\0" * (-len(b) % 4)


def osc_message(address: str, *args: str | float | int) -> bytes:
    """One OSC message; ``str`` arguments are sent as ``s``, ``int`` as ``i``, ``float`` as ``f``."""
    tags, payload = ",", b""
    for a in args:
        if isinstance(a, str):
            tags, payload = tags + "s", payload + _osc_string(a)
        elif isinstance(a, (int, np.integer)) and not isinstance(a, bool):
            tags, payload = tags + "i", payload + struct.pack(">i", int(a))
        else:
            tags, payload = tags + "f", payload + struct.pack(">f", float(a))
    return _osc_string(address) + _osc_string(tags) + payload


def osc_bundle(messages: Iterable[bytes]) -> bytes:
    """An OSC bundle with the "immediately" time tag."""
    out = _osc_string("#bundle") + struct.pack(">Q", 1)
    for m in messages:
        out += struct.pack(">i", len(m)) + m
    return out


def vmc_frame(bones: list[Bone], t_session: float) -> bytes:
    """One frame of the VMC protocol as an OSC bundle (see the module docstring)."""
    msgs = [osc_message("/VMC/Ext/Root/Pos", "root", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)]
    for b in bones:
        msgs.append(osc_message("/VMC/Ext/Bone/Pos", b.name, *map(float, b.position), *map(float, b.rotation)))
    msgs.append(osc_message("/VMC/Ext/T", float(t_session)))
    msgs.append(osc_message("/VMC/Ext/OK", 1))
    return osc_bundle(msgs)


def parse_host_port(text: str, default_port: int = DEFAULT_VMC_PORT) -> tuple[str, int]:
    """``HOST:PORT``, ``HOST`` or ``:PORT`` (host 127.0.0.1) -> (host, port). Raises ValueError."""
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    host = host or "127.0.0.1"
    try:
        number = int(port) if port else default_port
    except ValueError:
        raise ValueError(f"'{text}' is not HOST:PORT (the port must be a number)") from None
    if not 0 < number < 65536:
        raise ValueError(f"'{text}': port {number} is not in 1-65535")
    return host, number


class VmcSender:
    """Sends each new live snapshot's pose of one person as a VMC frame over UDP. Call it with every
    :class:`~omnimocap.fusion.live.state.LiveState`; a snapshot without a new Kinect or panorama frame, or
    without the person, sends nothing. ``sent`` counts the frames sent."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_VMC_PORT, person_id: int | None = None):
        self.address = (host, port)
        self.person_id = person_id
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sent = 0
        self._last_key = None

    def __call__(self, state) -> None:
        key = state.world.frame_key
        if key == self._last_key:
            return
        self._last_key = key
        pose = person_pose(state, self.person_id)
        if pose is None:
            return
        bones = unity_bones(pose[1], pose[2])
        if not bones:
            return
        self.sock.sendto(vmc_frame(bones, state.world.t_session), self.address)
        self.sent += 1

    def close(self) -> None:
        self.sock.close()


class RerunSink:
    """Logs each new live snapshot's people to a rerun recording: ``world/person_<id>/body`` (the
    k4abt joints as points, ``.../bones`` as line segments), ``world/person_<id>/smplx`` (the fitted
    SMPL-X joints and bones, once fitted) and ``world/person_<id>/<side>_hand``
    (21 keypoints and finger segments; cleared when the hand is lost), world frame (right-handed,
    y up, metres), on the ``session`` timeline (seconds). ``target``: ``spawn`` (start a viewer), a ``rerun+http://``
    URL (connect to a running viewer) or a file path ending in ``.rrd`` (save)."""

    def __init__(self, target: str = "spawn"):
        import rerun as rr

        self.rr = rr
        self.rec = rr.RecordingStream("omnimocap_live")
        if target == "spawn":
            self.rec.spawn()
        elif target.startswith(("rerun://", "rerun+http://", "rerun+https://")):
            self.rec.connect_grpc(target)
        else:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            self.rec.save(target)
        self.rec.log("world", rr.ViewCoordinates.RIGHT_HAND_Y_UP, static=True)
        self.logged = 0
        self._last_key = None
        self._hands_shown: set[str] = set()
        self._body_pairs = np.array([(p, c) for c, p in enumerate(KINECT_PARENTS) if p >= 0])
        self._smplx_pairs = np.array([(p, c) for c, p in enumerate(SMPLX_PARENTS) if p >= 0])
        self._hand_pairs = np.array([(0 if n.endswith("1") else i - 1, i) for n, i in HAND21_INDEX.items() if i > 0])

    def __call__(self, state) -> None:
        key = state.world.frame_key
        if key == self._last_key:
            return
        self._last_key = key
        rr, rec = self.rr, self.rec
        rec.set_time("session", duration=float(state.world.t_session))
        for pid, body in state.world.bodies.items():
            rec.log(f"world/person_{pid}/body", rr.Points3D(body, radii=0.02))
            rec.log(f"world/person_{pid}/body/bones", rr.LineStrips3D(body[self._body_pairs], radii=0.01))
        for pid, fitted in state.world.fitted.items():
            rec.log(f"world/person_{pid}/smplx", rr.Points3D(fitted.joints, radii=0.015))
            rec.log(f"world/person_{pid}/smplx/bones", rr.LineStrips3D(fitted.joints[self._smplx_pairs], radii=0.008))
        shown = set()
        for (pid, side), hand in state.world.person_hands.items():
            shown.add(f"world/person_{pid}/{side}_hand")
            rec.log(f"world/person_{pid}/{side}_hand", rr.Points3D(hand, radii=0.005))
            rec.log(f"world/person_{pid}/{side}_hand/bones", rr.LineStrips3D(hand[self._hand_pairs], radii=0.003))
        for path in self._hands_shown - shown:  # a lost hand disappears from the view
            rec.log(path, rr.Clear(recursive=True))
        self._hands_shown = shown
        self.logged += 1

    def close(self) -> None:
        if self.rec is not None:
            self.rec.flush()
            self.rec.disconnect()
            self.rec = None
