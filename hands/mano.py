"""MANO forward (numpy): vertices and the 21 hand keypoints from rotation matrices.

One right-hand model; left hands by the mirror convention (see hands/estimator.py): with
``M = diag(-1, 1, 1)``, a left hand's parameters are ``M R M`` of the right hand whose mirror image
it is, and its geometry is ``M`` times that right hand's geometry.

Frames: the MANO model frame, metres, no translation. Like smplx's MANO layer, the root rotation
turns the hand about its rest root joint ``J0(betas)``, so the posed wrist stays at ``J0(betas)``.
Finger rotations are the flat-hand convention (absolute; no hand mean added).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnimocap.geometry.transforms import MIRROR, mirror_rotation
from omnimocap.data.skeletons import HAND21_FROM_MANO, MANO_PARENTS, MANO_TIP_VERTICES

_TIPS = np.asarray(MANO_TIP_VERTICES)
_HAND21 = np.asarray(HAND21_FROM_MANO)


@dataclass
class ManoModel:
    """Arrays of a right-hand MANO model, float64: v_template (778, 3), shapedirs (778, 3, B),
    posedirs (778, 3, 135), J_regressor (16, 778), weights (778, 16), faces (F, 3)."""

    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    faces: np.ndarray
    parents: tuple[int, ...] = MANO_PARENTS

    @classmethod
    def from_dict(cls, d: dict) -> "ManoModel":
        """From a dict with the official MANO keys (``J_regressor`` dense or scipy sparse)."""
        reg = d["J_regressor"]
        reg = reg.toarray() if hasattr(reg, "toarray") else np.asarray(reg)
        return cls(
            v_template=np.asarray(d["v_template"], dtype=np.float64),
            shapedirs=np.asarray(d["shapedirs"], dtype=np.float64),
            posedirs=np.asarray(d["posedirs"], dtype=np.float64),
            J_regressor=np.asarray(reg, dtype=np.float64),
            weights=np.asarray(d["weights"], dtype=np.float64),
            faces=np.asarray(d["f"], dtype=np.int64),
        )

    @classmethod
    def load(cls, path_or_dir: str | Path) -> "ManoModel":
        """The right-hand model from ``MANO_RIGHT.pkl`` (a file or the folder holding it)."""
        from omnimocap.hands.model_files import load_mano

        return cls.from_dict(load_mano(path_or_dir, side="right"))

    def rest_joints(self, betas: np.ndarray | None = None) -> np.ndarray:
        """(..., 16, 3) rest joints of the right hand for shape coefficients (..., B)."""
        return np.einsum("jv,...vc->...jc", self.J_regressor, self._shaped(betas))

    def root_joint(self, side: str, betas: np.ndarray | None = None) -> np.ndarray:
        """(..., 3) rest (and posed) root joint J0 of a ``side`` hand in its MANO frame."""
        j0 = self.rest_joints(betas)[..., 0, :]
        return j0 @ MIRROR if side == "left" else j0

    def _shaped(self, betas: np.ndarray | None) -> np.ndarray:
        if betas is None:
            return self.v_template
        betas = np.asarray(betas, dtype=np.float64)
        nb = min(betas.shape[-1], self.shapedirs.shape[-1])
        return self.v_template + np.einsum("vcb,...b->...vc", self.shapedirs[..., :nb], betas[..., :nb])

    def forward(self, global_orient: np.ndarray, hand_pose: np.ndarray, betas: np.ndarray | None = None,
                with_vertices: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
        """Right-hand MANO.

        Args:
            global_orient: (..., 3, 3) root rotation.
            hand_pose: (..., 15, 3, 3) rotations of joints 1..15 relative to their parents.
            betas: (..., B) or None.
            with_vertices: False skins only the five fingertip vertices (cheaper) and returns None
                for the vertices.
        Returns:
            vertices (..., 778, 3) or None, and joints21 (..., 21, 3) in OpenPose order, MANO frame.
        """
        global_orient = np.asarray(global_orient, dtype=np.float64)
        hand_pose = np.asarray(hand_pose, dtype=np.float64)
        lead = np.broadcast_shapes(global_orient.shape[:-2], hand_pose.shape[:-3])
        rot = np.concatenate([np.broadcast_to(global_orient, lead + (3, 3))[..., None, :, :],
                              np.broadcast_to(hand_pose, lead + (15, 3, 3))], axis=-3)
        shaped = np.broadcast_to(self._shaped(betas), lead + self.v_template.shape)
        rest = np.einsum("jv,...vc->...jc", self.J_regressor, shaped)
        ids = slice(None) if with_vertices else _TIPS
        pose_feature = (rot[..., 1:, :, :] - np.eye(3)).reshape(lead + (135,))
        posed = shaped[..., ids, :] + np.einsum("vcp,...p->...vc", self.posedirs[ids], pose_feature)

        # Rigid transform per joint: rotate about the rest joint, chained down the tree.
        glob = np.empty(lead + (16, 3, 3))
        joints = np.empty(lead + (16, 3))
        glob[..., 0, :, :] = rot[..., 0, :, :]
        joints[..., 0, :] = rest[..., 0, :]
        for j in range(1, 16):
            p = self.parents[j]
            glob[..., j, :, :] = glob[..., p, :, :] @ rot[..., j, :, :]
            joints[..., j, :] = joints[..., p, :] + np.einsum("...ij,...j->...i", glob[..., p, :, :],
                                                              rest[..., j, :] - rest[..., p, :])
        offset = joints - np.einsum("...jik,...jk->...ji", glob, rest)
        w = self.weights[ids]
        R_v = np.einsum("vj,...jik->...vik", w, glob)
        t_v = np.einsum("vj,...ji->...vi", w, offset)
        verts = np.einsum("...vik,...vk->...vi", R_v, posed) + t_v
        tips = verts if not with_vertices else verts[..., _TIPS, :]
        joints21 = np.concatenate([joints, tips], axis=-2)[..., _HAND21, :]
        return (verts if with_vertices else None), joints21

    def forward_side(self, side: str, global_orient: np.ndarray, hand_pose: np.ndarray,
                     betas: np.ndarray | None = None, with_vertices: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
        """MANO for a ``side`` hand; left-hand parameters follow the mirror convention and the
        returned geometry is the true left-hand geometry (x negated of the mirrored right hand)."""
        if side == "right":
            return self.forward(global_orient, hand_pose, betas, with_vertices)
        if side != "left":
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        verts, joints21 = self.forward(mirror_rotation(np.asarray(global_orient)),
                                       mirror_rotation(np.asarray(hand_pose)), betas, with_vertices)
        return (None if verts is None else verts @ MIRROR), joints21 @ MIRROR

    def faces_side(self, side: str) -> np.ndarray:
        """Triangles with outward winding for a ``side`` hand (mirroring reverses the winding)."""
        return self.faces[:, ::-1] if side == "left" else self.faces
