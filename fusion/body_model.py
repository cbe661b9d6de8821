"""SMPL-X skeleton: rest joints as a function of shape, and forward kinematics on joints only.

Model frame (SMPL-X's canonical frame): metres, y up, the body faces +z, the person's left is +x.
In the rest pose (T-pose) the arms lie along +-x and the fingers continue along +-x.

Rotations are *local* 3x3 matrices per joint in SMPL-X order (``data.skeletons.SMPLX_JOINTS``),
applied in the canonical frame (SMPL convention): a joint's global rotation is the product of the
local rotations from the root down to it, and

    joint_i = global_R[parent] @ (rest_i - rest_parent) + joint_parent.

The root (pelvis) sits at ``rest_0 + transl`` rotated about itself: joint_0 = rest_0 + transl.

Where the real SMPL-X file is present, rest joints come from its J_regressor; otherwise from the
built-in table below (a neutral adult, about 1.70 m), which the synthetic model files reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnimocap.data.skeletons import LEFT_HAND_REST_FROM_WRIST, SMPLX_NUM_JOINTS, SMPLX_PARENTS

_BODY_REST = np.array([
    [0.000, 0.000, 0.000],    # pelvis
    [0.060, -0.090, -0.005],  # left_hip
    [-0.060, -0.090, -0.005],  # right_hip
    [0.000, 0.110, -0.015],   # spine1
    [0.105, -0.470, 0.000],   # left_knee
    [-0.105, -0.470, 0.000],  # right_knee
    [0.000, 0.245, 0.010],    # spine2
    [0.090, -0.870, -0.040],  # left_ankle
    [-0.090, -0.870, -0.040],  # right_ankle
    [0.000, 0.300, 0.020],    # spine3
    [0.115, -0.930, 0.080],   # left_foot
    [-0.115, -0.930, 0.080],  # right_foot
    [0.000, 0.510, -0.010],   # neck
    [0.075, 0.415, 0.000],    # left_collar
    [-0.075, 0.415, 0.000],   # right_collar
    [0.000, 0.650, 0.040],    # head
    [0.170, 0.440, -0.010],   # left_shoulder
    [-0.170, 0.440, -0.010],  # right_shoulder
    [0.430, 0.420, -0.030],   # left_elbow
    [-0.430, 0.420, -0.030],  # right_elbow
    [0.680, 0.430, -0.020],   # left_wrist
    [-0.680, 0.430, -0.020],  # right_wrist
    [0.000, 0.620, 0.050],    # jaw
    [0.032, 0.700, 0.090],    # left_eye
    [-0.032, 0.700, 0.090],   # right_eye
])



def default_rest_joints() -> np.ndarray:
    """(55, 3) built-in SMPL-X rest joints, model frame, metres (see the module docstring)."""
    joints = np.zeros((SMPLX_NUM_JOINTS, 3))
    joints[:25] = _BODY_REST
    left = LEFT_HAND_REST_FROM_WRIST
    joints[25:40] = _BODY_REST[20] + left
    joints[40:55] = _BODY_REST[21] + left * np.array([-1.0, 1.0, 1.0])
    return joints


@dataclass
class Skeleton:
    """Rest joints ``J(betas) = rest_joints + shape_dirs @ betas`` and the kinematic tree."""

    rest_joints: np.ndarray  # (55, 3)
    shape_dirs: np.ndarray  # (55, 3, B)
    parents: tuple[int, ...] = SMPLX_PARENTS

    @property
    def num_betas(self) -> int:
        return self.shape_dirs.shape[-1]

    def joints_at_rest(self, betas: np.ndarray | None = None) -> np.ndarray:
        """(..., 55, 3) rest joints for shape coefficients (..., B) (zeros when None)."""
        if betas is None:
            return self.rest_joints.copy()
        betas = np.asarray(betas, dtype=np.float64)[..., : self.num_betas]
        return self.rest_joints + np.einsum("jcb,...b->...jc", self.shape_dirs[..., : betas.shape[-1]], betas)


def default_skeleton(num_betas: int = 10) -> Skeleton:
    """The built-in skeleton. Its shape space: beta 0 scales the whole body (about 6% per unit,
    like SMPL-X's first component), beta 1 lengthens limbs relative to the trunk, beta 2 widens
    the shoulders and hips; the rest are zero."""
    rest = default_rest_joints()
    dirs = np.zeros((SMPLX_NUM_JOINTS, 3, num_betas))
    dirs[:, :, 0] = 0.06 * rest
    limb = np.array([i for i in range(SMPLX_NUM_JOINTS) if i not in (0, 3, 6, 9, 12, 15, 22, 23, 24)])
    for j in limb:
        p = SMPLX_PARENTS[j]
        dirs[j, :, 1] = dirs[p, :, 1] + 0.04 * (rest[j] - rest[p]) * (j not in (1, 2, 13, 14))
    wide = np.zeros(SMPLX_NUM_JOINTS)
    wide[[1, 2, 13, 14]] = 1.0
    for j in range(1, SMPLX_NUM_JOINTS):
        p = SMPLX_PARENTS[j]
        dirs[j, 0, 2] = dirs[p, 0, 2] + 0.02 * np.sign(rest[j, 0]) * wide[j]
    return Skeleton(rest, dirs[:, :, :num_betas])


def skeleton_from_smplx_file(model: dict[str, np.ndarray], num_betas: int = 10) -> Skeleton:
    """Skeleton from a loaded SMPL-X model dict (keys J_regressor, v_template, shapedirs)."""
    J_regressor = np.asarray(model["J_regressor"], dtype=np.float64)
    rest = J_regressor @ np.asarray(model["v_template"], dtype=np.float64)
    shapedirs = np.asarray(model["shapedirs"], dtype=np.float64)[:, :, :num_betas]
    dirs = np.einsum("jv,vcb->jcb", J_regressor, shapedirs)
    return Skeleton(rest, dirs)


def load_skeleton(smplx_path: str | Path | None = None, num_betas: int = 10) -> Skeleton:
    """The SMPL-X file's skeleton when a path is given, else the built-in one."""
    if smplx_path is None:
        return default_skeleton(num_betas)
    from omnimocap.hands.model_files import load_smplx

    return skeleton_from_smplx_file(load_smplx(smplx_path), num_betas)


def forward_kinematics(
    skeleton: Skeleton,
    local_rotmats: np.ndarray,
    betas: np.ndarray | None = None,
    transl: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Joints-only SMPL-X forward kinematics (numpy).

    Args:
        local_rotmats: (..., 55, 3, 3) local rotations (root first = global orientation).
        betas: (..., B) or (B,) shape coefficients, or None.
        transl: (..., 3) translation, or None.
    Returns:
        joints (..., 55, 3) in the model frame plus ``transl``, and global rotations (..., 55, 3, 3).
    """
    local_rotmats = np.asarray(local_rotmats, dtype=np.float64)
    lead = local_rotmats.shape[:-3]
    rest = np.broadcast_to(skeleton.joints_at_rest(betas), lead + (SMPLX_NUM_JOINTS, 3))
    glob = np.empty_like(local_rotmats)
    joints = np.empty(lead + (SMPLX_NUM_JOINTS, 3))
    glob[..., 0, :, :] = local_rotmats[..., 0, :, :]
    joints[..., 0, :] = rest[..., 0, :]
    for j in range(1, SMPLX_NUM_JOINTS):
        p = skeleton.parents[j]
        glob[..., j, :, :] = glob[..., p, :, :] @ local_rotmats[..., j, :, :]
        bone = rest[..., j, :] - rest[..., p, :]
        joints[..., j, :] = joints[..., p, :] + np.einsum("...ij,...j->...i", glob[..., p, :, :], bone)
    if transl is not None:
        joints = joints + np.asarray(transl, dtype=np.float64)[..., None, :]
    return joints, glob


def forward_kinematics_torch(rest_joints, local_rotmats, transl=None, parents: tuple[int, ...] = SMPLX_PARENTS):
    """Torch version of :func:`forward_kinematics` for batched fitting.

    Args:
        rest_joints: (..., J, 3) tensor (already shaped by betas).
        local_rotmats: (..., J, 3, 3) tensor.
        transl: (..., 3) tensor or None.
    Returns: joints (..., J, 3), global rotations (..., J, 3, 3).
    """
    import torch

    num = local_rotmats.shape[-3]
    rest_joints = rest_joints.expand(local_rotmats.shape[:-3] + rest_joints.shape[-2:])
    glob = [local_rotmats[..., 0, :, :]]
    joints = [rest_joints[..., 0, :]]
    for j in range(1, num):
        p = parents[j]
        glob.append(glob[p] @ local_rotmats[..., j, :, :])
        bone = rest_joints[..., j, :] - rest_joints[..., p, :]
        joints.append(joints[p] + (glob[p] @ bone.unsqueeze(-1)).squeeze(-1))
    joints_t = torch.stack(joints, dim=-2)
    if transl is not None:
        joints_t = joints_t + transl.unsqueeze(-2)
    return joints_t, torch.stack(glob, dim=-3)


# --- which body model a fit used ---------------------------------------------------------------------

BUILT_IN = "built-in"
"""Name recorded for the built-in skeleton (no model file); glTF/FBX use the synthetic mesh for it."""


def smplx_file_in(models_dir: str | Path, gender: str = "neutral") -> Path | None:
    """``<models>/smplx/SMPLX_<GENDER>.npz`` (or ``.pkl``) when the models folder has it, else None."""
    folder = Path(models_dir) / "smplx"
    for suffix in (".npz", ".pkl"):
        candidate = folder / f"SMPLX_{gender.upper()}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def body_model_record(smplx_path: str | Path | None) -> dict[str, str]:
    """What every output stores about the body model: ``body_model`` (the file's name, or
    ``built-in``), ``body_model_sha256`` (of the file's bytes; of the built-in skeleton's tables for
    the built-in one) and ``body_model_path`` (where the fit found it; empty for the built-in)."""
    if smplx_path is None:
        import hashlib

        skeleton = default_skeleton(10)
        digest = hashlib.sha256(skeleton.rest_joints.tobytes() + skeleton.shape_dirs.tobytes()).hexdigest()
        return {"body_model": BUILT_IN, "body_model_sha256": digest, "body_model_path": ""}
    path = Path(smplx_path).resolve()
    return {"body_model": path.name, "body_model_sha256": sha256_of(path), "body_model_path": str(path)}


def resolve_smplx_model(explicit: str | Path | None, models_dir: str | Path | None,
                        gender: str = "neutral") -> Path | None:
    """The SMPL-X file a fit uses: ``explicit`` (a file, or a folder holding ``SMPLX_<GENDER>``),
    else the models folder's (``models_dir``, default ``$OMNIMOCAP_MODELS`` or
    ``~/.cache/omnimocap/models``), else None for the built-in skeleton."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_dir():
            return path
        for suffix in (".npz", ".pkl"):
            if (path / f"SMPLX_{gender.upper()}{suffix}").is_file():
                return path / f"SMPLX_{gender.upper()}{suffix}"
        return smplx_file_in(path, gender) or path / f"SMPLX_{gender.upper()}.npz"
    if models_dir is None:
        from omnimocap.hands.model_store import default_models_dir

        models_dir = default_models_dir()
    return smplx_file_in(Path(models_dir).expanduser(), gender)
