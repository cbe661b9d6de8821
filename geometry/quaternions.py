"""Unit quaternions: the one place their order, sign and algebra are written.

Order: ``(w, x, y, z)`` (scalar first, as the Azure Kinect SDK stores joint orientations) unless a
name says ``xyzw`` (scipy, glTF and Unity order). A quaternion ``q`` and ``-q`` are the same
rotation; functions that return one pick ``w >= 0`` unless they say otherwise. The rotation a
quaternion stands for maps vectors of the rotated frame into the reference frame, as the matching
3x3 matrix ``R`` does (``v_ref = R @ v_rot``). Angles and rotation vectors are in radians.
Conversions to and from matrices go through scipy's ``Rotation``; the algebra (product, log, exp)
is written here in numpy so that it broadcasts over any leading shape.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

IDENTITY_WXYZ = np.array([1.0, 0.0, 0.0, 0.0])


def wxyz_to_xyzw(q: np.ndarray) -> np.ndarray:
    """Quaternions (...,4) from (w, x, y, z) to (x, y, z, w) order."""
    q = np.asarray(q, dtype=np.float64)
    return np.concatenate([q[..., 1:], q[..., :1]], axis=-1)


def xyzw_to_wxyz(q: np.ndarray) -> np.ndarray:
    """Quaternions (...,4) from (x, y, z, w) to (w, x, y, z) order."""
    q = np.asarray(q, dtype=np.float64)
    return np.concatenate([q[..., 3:], q[..., :3]], axis=-1)


def quat_wxyz_to_matrix(q: np.ndarray) -> np.ndarray:
    """Quaternions (...,4) in (w, x, y, z) order (normalised here) to rotation matrices (...,3,3)."""
    q = np.asarray(q, dtype=np.float64)
    shape = q.shape[:-1]
    return Rotation.from_quat(wxyz_to_xyzw(q).reshape(-1, 4)).as_matrix().reshape(shape + (3, 3))


def matrix_to_quat_wxyz(R: np.ndarray) -> np.ndarray:
    """Rotation matrices (...,3,3) to unit quaternions (...,4) in (w, x, y, z) order, w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    shape = R.shape[:-2]
    q = xyzw_to_wxyz(Rotation.from_matrix(R.reshape(-1, 3, 3)).as_quat().reshape(shape + (4,)))
    return np.where(q[..., :1] < 0, -q, q)


def matrix_to_quat_xyzw(R: np.ndarray) -> np.ndarray:
    """Rotation matrices (...,3,3) to unit quaternions (...,4) in (x, y, z, w) order, w >= 0."""
    return wxyz_to_xyzw(matrix_to_quat_wxyz(R))


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` of quaternions (...,4), (w, x, y, z); the rotation ``b`` then
    ``a``, as the matrix product ``R_a @ R_b``. Broadcasts."""
    aw, ax, ay, az = np.moveaxis(np.asarray(a, dtype=np.float64), -1, 0)
    bw, bx, by, bz = np.moveaxis(np.asarray(b, dtype=np.float64), -1, 0)
    return np.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], axis=-1)


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    """Conjugate (...,4), (w, x, y, z): the inverse rotation of a unit quaternion."""
    return np.asarray(q, dtype=np.float64) * np.array([1.0, -1.0, -1.0, -1.0])


def quat_log(q: np.ndarray) -> np.ndarray:
    """Unit quaternions (...,4), (w, x, y, z), to rotation vectors (...,3), radians; the rotation
    angle is taken in [0, pi] (``q`` and ``-q`` give the same vector)."""
    q = np.asarray(q, dtype=np.float64)
    q = np.where(q[..., :1] < 0, -q, q)
    s = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(s, q[..., :1])
    return q[..., 1:] * np.where(s > 1e-12, angle / np.maximum(s, 1e-12), 2.0)


def quat_exp(v: np.ndarray) -> np.ndarray:
    """Rotation vectors (...,3), radians, to unit quaternions (...,4), (w, x, y, z)."""
    v = np.asarray(v, dtype=np.float64)
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    half = 0.5 * angle
    scale = np.where(angle > 1e-12, np.sin(half) / np.maximum(angle, 1e-12), 0.5)
    return np.concatenate([np.cos(half), v * scale], axis=-1)


def continuous_signs(q: np.ndarray) -> np.ndarray:
    """Quaternions (F,...,4) (either order) with their signs flipped so that each frame lies on the
    hemisphere of the last present frame before it (a non-negative dot product): interpolating or
    smoothing between neighbouring frames then takes the short way. The first frame keeps its
    sign, as does a frame orthogonal to its reference; NaN frames stay NaN and the reference is
    carried over them."""
    q = np.array(q, dtype=np.float64, copy=True)
    if len(q) == 0:
        return q
    ref = q[0]
    for t in range(1, len(q)):
        flip = np.nansum(q[t] * ref, axis=-1) < 0
        q[t] = np.where(flip[..., None], -q[t], q[t])
        ref = np.where(np.isfinite(q[t]), q[t], ref)
    return q
