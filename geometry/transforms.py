"""Rotations and rigid transforms (numpy, float64).

Conventions: rotations are 3x3 matrices inside the program; axis-angle vectors only at exports;
quaternions are (w, x, y, z), written once in :mod:`omnimocap.geometry.quaternions` (imported here for
the callers that convert at the Kinect boundary). A pose ``T_a_b`` is a 4x4
matrix that maps points in frame b to frame a: ``p_a = T_a_b @ p_b``. Left hands are mirrors of
right hands through ``MIRROR = diag(-1, 1, 1)``.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

MIRROR = np.diag([-1.0, 1.0, 1.0])


def make_pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """4x4 pose from rotation (...,3,3) and translation (...,3)."""
    R = np.asarray(R, dtype=np.float64)
    T = np.zeros(R.shape[:-2] + (4, 4))
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def invert_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 pose (batched)."""
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    Rt = np.swapaxes(R, -1, -2)
    return make_pose(Rt, -np.einsum("...ij,...j->...i", Rt, t))


def pose_from_vector(x: np.ndarray) -> np.ndarray:
    """4x4 pose from a 6-vector (axis-angle (3,) in radians, then translation (3,)), the
    parameters of a pose in a least-squares fit."""
    x = np.asarray(x, dtype=np.float64)
    return make_pose(axis_angle_to_matrix(x[:3]), x[3:6])


def pose_to_vector(T: np.ndarray) -> np.ndarray:
    """The 6-vector (axis-angle in radians, translation) of a 4x4 pose: :func:`pose_from_vector`'s
    inverse, the angle in [0, pi]."""
    return np.concatenate([matrix_to_axis_angle(T[:3, :3]), T[:3, 3]])


def transform_points(T: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Apply a 4x4 pose to points (...,3); T broadcasts against the leading dimensions of p."""
    T = np.asarray(T, dtype=np.float64)
    return np.einsum("...ij,...j->...i", T[..., :3, :3], p) + T[..., :3, 3]


def axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    """Axis-angle (...,3), radians, to rotation matrices (...,3,3)."""
    aa = np.asarray(aa, dtype=np.float64)
    shape = aa.shape[:-1]
    return Rotation.from_rotvec(aa.reshape(-1, 3)).as_matrix().reshape(shape + (3, 3))


def matrix_to_axis_angle(R: np.ndarray) -> np.ndarray:
    """Rotation matrices (...,3,3) to axis-angle (...,3), radians, angle in [0, pi]."""
    R = np.asarray(R, dtype=np.float64)
    shape = R.shape[:-2]
    return Rotation.from_matrix(R.reshape(-1, 3, 3)).as_rotvec().reshape(shape + (3,))


def rotation_angle(R: np.ndarray) -> np.ndarray:
    """Rotation angle (radians) of matrices (...,3,3)."""
    cos = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.arccos(np.clip(cos, -1.0, 1.0))


def relative_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> np.ndarray:
    """Angle in degrees of R_a^T R_b, batched."""
    return np.degrees(rotation_angle(np.swapaxes(R_a, -1, -2) @ R_b))


def mirror_rotation(R: np.ndarray) -> np.ndarray:
    """Mirror a rotation through the x = 0 plane: M R M. In axis-angle: (x, y, z) -> (x, -y, -z)."""
    return MIRROR @ R @ MIRROR


def mirror_axis_angle(aa: np.ndarray) -> np.ndarray:
    """Mirror axis-angle vectors (...,3) through the x = 0 plane: (x, y, z) -> (x, -y, -z)."""
    aa = np.array(aa, dtype=np.float64, copy=True)
    aa[..., 1:] *= -1.0
    return aa


def look_at(forward: np.ndarray, up_hint: np.ndarray = np.array([0.0, -1.0, 0.0])) -> np.ndarray:
    """Rotation R_parent_cam of an OpenCV camera (x right, y down, z forward) looking along
    ``forward`` (given in the parent frame). ``up_hint`` is the parent-frame direction that should
    appear up in the image (the camera's -y); default is parent -y, the OpenCV 'up'. Batched."""
    z = np.asarray(forward, dtype=np.float64)
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    up = np.broadcast_to(np.asarray(up_hint, dtype=np.float64), z.shape)
    x = np.cross(-up, z)
    bad = np.linalg.norm(x, axis=-1) < 1e-8
    if np.any(bad):
        alt = np.broadcast_to(np.array([0.0, 0.0, 1.0]), z.shape)
        x = np.where(bad[..., None], np.cross(alt, z), x)
    x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=-1)


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotations (...,3,3) turning unit vectors ``a`` (...,3) onto unit vectors ``b``
    (...,3) (they broadcast): ``R @ a = b``, about the axis ``a x b``. Opposite vectors get half a
    turn about an axis perpendicular to ``a`` (the choice is arbitrary there)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = np.broadcast_arrays(a, b)
    v = np.cross(a, b)
    c = np.sum(a * b, axis=-1)[..., None, None]
    K = np.zeros(v.shape + (3,))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    K = K - np.swapaxes(K, -1, -2)
    opposite = c[..., 0, 0] < -1.0 + 1e-9
    R = np.eye(3) + K + K @ K / np.where(opposite[..., None, None], 1.0, 1.0 + c)
    if np.any(opposite):
        other = np.where((np.abs(a[..., :1]) < 0.9), [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
        axis = np.cross(a, other)
        axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
        half_turn = 2.0 * axis[..., :, None] * axis[..., None, :] - np.eye(3)
        R = np.where(opposite[..., None, None], half_turn, R)
    return R


def average_rotations(R: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Chordal L2 mean of rotations (N,3,3) -> (3,3)."""
    w = np.ones(len(R)) if weights is None else np.asarray(weights, dtype=np.float64)
    M = np.einsum("n,nij->ij", w, R)
    U, _, Vt = np.linalg.svd(M)
    D = np.diag([1.0, 1.0, np.linalg.det(U @ Vt)])
    return U @ D @ Vt


def average_poses(T: np.ndarray) -> np.ndarray:
    """Mean of poses (N,4,4): the chordal L2 mean of their rotations (:func:`average_rotations`) and
    the mean of their translations."""
    T = np.asarray(T, dtype=np.float64)
    return make_pose(average_rotations(T[:, :3, :3]), np.mean(T[:, :3, 3], axis=0))


def rigid_align(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares R, t with dst ~ R src + t (Kabsch), points (N,3)."""
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mu_s = w @ src
    mu_d = w @ dst
    H = (src - mu_s).T @ ((dst - mu_d) * w[:, None])
    U, _, Vt = np.linalg.svd(H)
    D = np.diag([1.0, 1.0, np.linalg.det(Vt.T @ U.T)])
    R = Vt.T @ D @ U.T
    return R, mu_d - R @ mu_s
