"""A synthetic SMPL-X body model in the official format (``SMPLX_NEUTRAL.npz``), and scripted
body motion, for tests and simulation.

It is not the licensed model: the geometry is a set of tubes around the bones (limbs, trunk,
head), built so that the regressed rest joints reproduce this project's built-in skeleton
(:mod:`omnimocap.fusion.body_model`): the official npz layout with 10475 vertices, 10 shape + 10
expression directions, zero pose correctives and the landmark arrays smplx needs. Its hands are
the synthetic MANO of :mod:`omnimocap.hands.synthetic_mano`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from omnimocap.data.skeletons import (
    KINECT_BODY_FOR_FIT, SMPLX_NUM_JOINTS, SMPLX_PARENTS, kinect_from_smplx_matrix,
)
from omnimocap.fusion.body_model import default_skeleton, forward_kinematics
from omnimocap.geometry.transforms import axis_angle_to_matrix
from omnimocap.hands.synthetic_mano import (
    _UINT32_ROOT, SMPLX_NUM_BETAS, SMPLX_NUM_EXPRESSION, SMPLX_NUM_VERTICES, make_synthetic_mano, mirror_axis_angle_basis, tube_ring,
)


_SMPLX_RING = 8
_SMPLX_LANDMARKS = 51
_SMPLX_CONTOUR = (79, 17)


def make_synthetic_smplx(seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays of a synthetic neutral SMPL-X model in the official npz layout.

    Every joint j has an 8-vertex ring centred on its built-in rest joint, perpendicular to the
    bone from its parent, and the J_regressor row averages that ring, so the regressed joints equal
    ``default_rest_joints()`` and ``J_regressor @ shapedirs`` equals the built-in skeleton's shape
    directions. The bones are tubes of further rings (vertices skinned to the bone's parent joint);
    leftover vertices close the head. Pose correctives are zero."""
    rng = np.random.default_rng(seed)
    skeleton = default_skeleton(SMPLX_NUM_BETAS)
    rest, dirs = skeleton.rest_joints, skeleton.shape_dirs
    # Tube rings per bone: whatever the joint rings leave of the vertex budget, spread evenly.
    budget = SMPLX_NUM_VERTICES - SMPLX_NUM_JOINTS * _SMPLX_RING
    per_bone = budget // (_SMPLX_RING * (SMPLX_NUM_JOINTS - 1))
    verts, shape, weights, faces = [], [], [], []
    ring_start = {}
    for j in range(SMPLX_NUM_JOINTS):
        p = SMPLX_PARENTS[j]
        bone = rest[j] - rest[p] if p >= 0 else np.array([0.0, 1.0, 0.0])
        radius = 0.008 if j >= 25 else 0.05
        stops = [1.0] if p < 0 else list(np.arange(1, per_bone + 1) / (per_bone + 1)) + [1.0]
        first = sum(len(v) for v in verts)
        for f in stops:
            base = rest[p] + f * bone if p >= 0 else rest[j]
            verts.append(tube_ring(base, bone, (radius, radius), _SMPLX_RING))
            d = (1 - f) * dirs[p] + f * dirs[j] if p >= 0 else dirs[j]
            shape.append(np.broadcast_to(d, (_SMPLX_RING, 3, SMPLX_NUM_BETAS)))
            weights.append(np.broadcast_to(np.eye(SMPLX_NUM_JOINTS)[max(p, 0) if f < 1 else j], (_SMPLX_RING, SMPLX_NUM_JOINTS)))
        ring_start[j] = first + (len(stops) - 1) * _SMPLX_RING
        if p >= 0:
            chain = [ring_start[p]] + [first + k * _SMPLX_RING for k in range(len(stops))]
            for a, b in zip(chain[:-1], chain[1:]):
                for i in range(_SMPLX_RING):
                    k = (i + 1) % _SMPLX_RING
                    faces += [(a + i, b + i, b + k), (a + i, b + k, a + k)]
    head = 15  # SMPL-X head joint
    rest_count = SMPLX_NUM_VERTICES - sum(len(v) for v in verts)
    u = rng.normal(size=(rest_count, 3))
    verts.append(rest[head] + np.array([0.0, 0.08, 0.02]) + 0.1 * u / np.linalg.norm(u, axis=1, keepdims=True))
    shape.append(np.broadcast_to(dirs[head], (rest_count, 3, SMPLX_NUM_BETAS)))
    weights.append(np.broadcast_to(np.eye(SMPLX_NUM_JOINTS)[head], (rest_count, SMPLX_NUM_JOINTS)))
    v = np.concatenate(verts)
    regressor = np.zeros((SMPLX_NUM_JOINTS, SMPLX_NUM_VERTICES))
    for j, start in ring_start.items():
        regressor[j, start:start + _SMPLX_RING] = 1.0 / _SMPLX_RING
    shapedirs = np.zeros((SMPLX_NUM_VERTICES, 3, SMPLX_NUM_BETAS + SMPLX_NUM_EXPRESSION))
    shapedirs[:, :, :SMPLX_NUM_BETAS] = np.concatenate(shape)
    f = np.asarray(faces, dtype=np.int64)
    mano = make_synthetic_mano("right", seed)
    bary = rng.random((_SMPLX_LANDMARKS, 3))
    contour_bary = rng.random(_SMPLX_CONTOUR + (3,))
    return {
        "v_template": v.astype(np.float32),
        "shapedirs": shapedirs.astype(np.float32),
        "posedirs": np.zeros((SMPLX_NUM_VERTICES, 3, 9 * (SMPLX_NUM_JOINTS - 1)), dtype=np.float32),
        "J_regressor": regressor.astype(np.float32),
        "kintree_table": np.array([[_UINT32_ROOT] + list(SMPLX_PARENTS[1:]), list(range(SMPLX_NUM_JOINTS))], dtype=np.int64),
        "weights": np.concatenate(weights).astype(np.float32),
        "f": f.astype(np.int32),
        "hands_componentsl": mirror_axis_angle_basis(mano["hands_components"]).astype(np.float32),
        "hands_componentsr": mano["hands_components"].astype(np.float32),
        "hands_meanl": mirror_axis_angle_basis(mano["hands_mean"]).astype(np.float32),
        "hands_meanr": mano["hands_mean"].astype(np.float32),
        "lmk_faces_idx": rng.integers(0, len(f), _SMPLX_LANDMARKS).astype(np.int64),
        "lmk_bary_coords": (bary / bary.sum(axis=1, keepdims=True)).astype(np.float32),
        "dynamic_lmk_faces_idx": rng.integers(0, len(f), _SMPLX_CONTOUR).astype(np.int64),
        "dynamic_lmk_bary_coords": (contour_bary / contour_bary.sum(axis=-1, keepdims=True)).astype(np.float32),
    }


def write_synthetic_smplx(out_dir: str | Path, gender: str = "neutral", seed: int = 0) -> Path:
    """Write ``SMPLX_<GENDER>.npz`` (compressed) into ``out_dir`` and return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"SMPLX_{gender.upper()}.npz"
    np.savez_compressed(path, **make_synthetic_smplx(seed))
    return path


def synthetic_body_motion(F: int, seed: int = 0, fps: float = 30.0):
    """F frames of smooth random body motion on the built-in skeleton, for tests and benchmarks:
    every body joint swinging up to ~0.5 rad (knees and elbows ~1 rad), a turning and walking root.
    Returns (skeleton, betas, SMPL-X joints (F,55,3), noise-free Kinect joints (F,32,3) through the
    blend matrix with NaN for joints it does not model, k4abt confidence (F,32): MEDIUM where modelled)."""
    rng = np.random.default_rng(seed)
    skeleton = default_skeleton()
    betas = np.zeros(10)
    betas[:3] = rng.normal(0.0, 1.0, 3)
    t = np.arange(F) / fps
    amp = np.zeros((55, 3))
    amp[1:22] = rng.uniform(-0.5, 0.5, (21, 3))
    amp[[4, 5, 18, 19]] *= 2.0
    freq = rng.uniform(0.2, 1.0, (55, 3))
    phase = rng.uniform(0.0, 2 * np.pi, (55, 3))
    aa = amp * np.sin(2 * np.pi * freq * t[:, None, None] + phase)
    aa[:, 0] = np.array([0.0, 1.0, 0.0]) * (rng.uniform(-3, 3) + 0.5 * t)[:, None]
    local = axis_angle_to_matrix(aa)
    transl = np.stack([0.3 * np.sin(t), 0.9 + 0.02 * np.sin(3 * t), 2.0 + 0.2 * t], axis=-1)
    joints, _ = forward_kinematics(skeleton, local, betas, transl)
    kinect = np.full((F, 32, 3), np.nan)
    kinect[:, list(KINECT_BODY_FOR_FIT)] = np.einsum("mk,fkc->fmc", kinect_from_smplx_matrix(), joints)
    confidence = np.zeros((F, 32), dtype=int)
    confidence[:, list(KINECT_BODY_FOR_FIT)] = 2
    return skeleton, betas, joints, kinect, confidence
