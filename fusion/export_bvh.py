"""BVH motion files: the SMPL-X skeleton with fingers (55 joints), offsets from the fitted shape.

Conventions, chosen so that Blender's and MotionBuilder's BVH readers take the file unchanged:
- y up, the body faces +z (our world frame; Blender's importer maps it to its z-up world);
- lengths in centimetres by default (MotionBuilder's unit; import into Blender with scale 0.01);
- rotation channels ``Zrotation Xrotation Yrotation`` in degrees, i.e. the local rotation is
  ``Rz @ Rx @ Ry`` (intrinsic ZXY, the CMU order), applied in the rest frame like SMPL-X's local
  rotations, so ``joint = parent_global_R @ OFFSET + parent_joint``;
- the root carries ``Xposition Yposition Zposition``, the pelvis's absolute position
  (``J_0(betas) + transl``); its OFFSET is the rest pelvis ``J_0(betas)``;
- joints without children end in an ``End Site`` half their bone's length further along the bone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from omnimocap.data.skeletons import SMPLX_JOINTS, SMPLX_PARENTS

BVH_ROTATION_ORDER = "ZXY"


def rotmats_to_bvh_euler(R: np.ndarray) -> np.ndarray:
    """(F, J, 3, 3) local rotations -> (F, J, 3) degrees (z, x, y) with ``R = Rz Rx Ry``,
    unwrapped over frames so that no channel jumps by 360 degrees."""
    from scipy.spatial.transform import Rotation

    R = np.asarray(R, dtype=np.float64)
    F, J = R.shape[:2]
    zxy = Rotation.from_matrix(R.reshape(-1, 3, 3)).as_euler(BVH_ROTATION_ORDER, degrees=False).reshape(F, J, 3)
    return np.degrees(np.unwrap(zxy, axis=0))


def write_bvh(
    path: str | Path,
    rest_joints: np.ndarray,
    local_rotmats: np.ndarray,
    transl: np.ndarray,
    fps: float,
    unit_scale: float = 100.0,
    parents: tuple[int, ...] = SMPLX_PARENTS,
    names: tuple[str, ...] | list[str] = SMPLX_JOINTS,
) -> Path:
    """Write one person's motion as BVH (see the module docstring for the conventions).

    Args:
        rest_joints: (J, 3) rest joints of the fitted shape ``J(betas)``, model frame, metres.
        local_rotmats: (F, J, 3, 3) local rotations (root first = global orientation), our world.
        transl: (F, 3) SMPL-X translation, metres.
        fps: frames per second of the uniform frames (``Frame Time`` = 1 / fps).
        unit_scale: file units per metre (100: centimetres).
    """
    rest = np.asarray(rest_joints, dtype=np.float64)
    R = np.asarray(local_rotmats, dtype=np.float64)
    trans = np.asarray(transl, dtype=np.float64)
    F, J = R.shape[:2]
    if rest.shape != (J, 3) or trans.shape != (F, 3) or len(parents) != J:
        raise ValueError(f"rest_joints (J, 3), local_rotmats (F, J, 3, 3) and transl (F, 3) disagree: "
                         f"{rest.shape}, {R.shape}, {trans.shape}")
    if not (np.all(np.isfinite(R)) and np.all(np.isfinite(trans))):
        raise ValueError("the motion has non-finite values")
    children: list[list[int]] = [[] for _ in range(J)]
    for j in range(1, J):
        children[parents[j]].append(j)
    lines: list[str] = []

    def fmt(v) -> str:
        return " ".join(f"{x:.6f}" for x in v)

    def emit(j: int, depth: int) -> None:
        pad = "\t" * depth
        if j == 0:
            lines.append(f"ROOT {names[j]}")
            offset = rest[0]
            channels = "CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation"
        else:
            lines.append(f"{pad}JOINT {names[j]}")
            offset = rest[j] - rest[parents[j]]
            channels = "CHANNELS 3 Zrotation Xrotation Yrotation"
        lines.append(f"{pad}{{")
        lines.append(f"{pad}\tOFFSET {fmt(offset * unit_scale)}")
        lines.append(f"{pad}\t{channels}")
        for c in children[j]:
            emit(c, depth + 1)
        if not children[j]:
            bone = rest[j] - rest[parents[j]] if j else np.array([0.0, 0.1, 0.0])
            tip = 0.5 * bone if np.linalg.norm(bone) > 1e-4 else np.array([0.0, 0.01, 0.0])
            lines.append(f"{pad}\tEnd Site")
            lines.append(f"{pad}\t{{")
            lines.append(f"{pad}\t\tOFFSET {fmt(tip * unit_scale)}")
            lines.append(f"{pad}\t}}")
        lines.append(f"{pad}}}")

    lines.append("HIERARCHY")
    emit(0, 0)
    euler = rotmats_to_bvh_euler(R)
    order = []  # channel order of the MOTION rows: depth-first like the hierarchy

    def walk(j: int) -> None:
        order.append(j)
        for c in children[j]:
            walk(c)

    walk(0)
    root_pos = (rest[0] + trans) * unit_scale
    lines += ["MOTION", f"Frames: {F}", f"Frame Time: {1.0 / float(fps):.10f}"]
    for f in range(F):
        row = [fmt(root_pos[f])] + [fmt(euler[f, j]) for j in order]
        lines.append(" ".join(row))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


def read_bvh(path: str | Path) -> dict:
    """Read a BVH file written by :func:`write_bvh` (or any with Z/X/Y rotation channels):
    ``names``, ``parents``, ``offsets`` (J, 3), ``fps``, ``motion`` (F, channels)."""
    text = Path(path).read_text().split()
    names, parents, offsets, stack = [], [], [], []
    i = 0
    while text[i] != "MOTION":
        tok = text[i]
        if tok in ("ROOT", "JOINT"):
            names.append(text[i + 1])
            parents.append(stack[-1] if stack else -1)
            i += 2
        elif tok == "End":
            i += 2
            depth = 0
            while True:
                depth += text[i] == "{"
                depth -= text[i] == "}"
                i += 1
                if depth == 0:
                    break
        elif tok == "{":
            stack.append(len(names) - 1)
            i += 1
        elif tok == "}":
            stack.pop()
            i += 1
        elif tok == "OFFSET":
            offsets.append([float(x) for x in text[i + 1:i + 4]])
            i += 4
        elif tok == "CHANNELS":
            i += 2 + int(text[i + 1])
        else:
            i += 1
    frames = int(text[i + 2])
    frame_time = float(text[i + 5])
    motion = np.array(text[i + 6:], dtype=np.float64).reshape(frames, -1)
    return {"names": names, "parents": parents, "offsets": np.array(offsets), "fps": 1.0 / frame_time,
            "motion": motion, "num_joints": len(names)}
