"""A synthetic MANO hand model in the official format, for tests, simulation and as the hand surface
of backends that return no vertices.

They are not the licensed models: the geometry is a set of tubes around the bones (fingers, palm
slab; limbs, trunk, head), built so that the regressed rest joints reproduce this project's
built-in skeleton (:mod:`omnimocap.fusion.body_model`). A hand pose copied between the synthetic
MANO and the built-in SMPL-X skeleton therefore means the same thing.

MANO (``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl``): a pickled dict of numpy arrays (protocol 4) with the
official keys and shapes; ``J_regressor`` is a ``scipy.sparse.csc_matrix`` like the official files.
Right-hand frame: metres, fingers along -x, palm facing -y, thumb towards +z; the rest joints
relative to the wrist are ``LEFT_HAND_REST_FROM_WRIST`` with x negated. The left model is the exact
mirror (x negated, faces reversed, pose and shape bases mirrored), i.e. a left hand's parameters
are ``M R M`` of the right hand it mirrors (M = diag(-1, 1, 1)). Unlike the official MANO_LEFT,
its ``shapedirs`` carry no sign bug.

SMPL-X (``SMPLX_NEUTRAL.npz``): the official npz layout with 10475 vertices, 10 shape + 10
expression directions, zero pose correctives and the landmark arrays smplx needs.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import scipy.sparse

from omnimocap.data.skeletons import LEFT_HAND_REST_FROM_WRIST, MANO_PARENTS, MANO_TIP_VERTICES
from omnimocap.geometry.transforms import MIRROR

MANO_NUM_VERTICES = 778
MANO_NUM_FACES = 1538
MANO_NUM_BETAS = 10
SMPLX_NUM_VERTICES = 10475
SMPLX_NUM_BETAS = 10
SMPLX_NUM_EXPRESSION = 10
_UINT32_ROOT = 4294967295  # the root's parent as stored in the official kintree tables

# Right-hand MANO rest wrist (the model origin sits close to it, as in the official file).
MANO_RIGHT_WRIST_REST = np.array([0.004, 0.006, -0.003])
_FINGER_RING = 8  # vertices per finger ring
_FINGER_RINGS_PER_BONE = 4
_PALM_RING = 22
_PALM_RINGS = 13
# MANO finger order (joints 1..15): index, middle, pinky, ring, thumb; tips in MANO_TIP_VERTICES
# are thumb, index, middle, ring, pinky.
_TIP_OF_FINGER = {0: MANO_TIP_VERTICES[1], 1: MANO_TIP_VERTICES[2], 2: MANO_TIP_VERTICES[4],
                  3: MANO_TIP_VERTICES[3], 4: MANO_TIP_VERTICES[0]}
_FINGER_RADIUS = (0.0095, 0.0100, 0.0080, 0.0090, 0.0115)  # index, middle, pinky, ring, thumb
_TIP_LENGTH = (0.022, 0.024, 0.019, 0.022, 0.024)


def mano_rest_joints_right() -> np.ndarray:
    """(16, 3) rest joints of the synthetic right MANO model (MANO joint order), metres."""
    return np.vstack([MANO_RIGHT_WRIST_REST, MANO_RIGHT_WRIST_REST + LEFT_HAND_REST_FROM_WRIST * np.array([-1.0, 1.0, 1.0])])


def _frame_for(direction: np.ndarray, up: np.ndarray = np.array([0.0, 1.0, 0.0])) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors spanning the plane perpendicular to ``direction``."""
    d = direction / np.linalg.norm(direction)
    u = np.cross(d, up)
    if np.linalg.norm(u) < 1e-6:
        u = np.cross(d, np.array([0.0, 0.0, 1.0]))
    u /= np.linalg.norm(u)
    return u, np.cross(u, d)


def tube_ring(centre: np.ndarray, direction: np.ndarray, radii: tuple[float, float], n: int) -> np.ndarray:
    """n points on an ellipse around ``centre`` perpendicular to ``direction``; their mean is the
    centre exactly (symmetric sampling)."""
    u, w = _frame_for(direction)
    ang = 2 * np.pi * np.arange(n) / n
    return centre + radii[0] * np.cos(ang)[:, None] * u + radii[1] * np.sin(ang)[:, None] * w


def _tube_faces(first: int, rings: int, n: int, start_cap: int | None, end_cap: int | None) -> list[tuple[int, int, int]]:
    """Triangles of a tube of ``rings`` rings of ``n`` vertices starting at index ``first``, closed
    by fans to the optional cap vertices. Outward winding for rings ordered along the tube axis
    with counter-clockwise sampling about it."""
    faces = []
    for r in range(rings - 1):
        a, b = first + r * n, first + (r + 1) * n
        for i in range(n):
            j = (i + 1) % n
            faces.append((a + i, b + i, b + j))
            faces.append((a + i, b + j, a + j))
    if start_cap is not None:
        faces += [(start_cap, first + (i + 1) % n, first + i) for i in range(n)]
    if end_cap is not None:
        last = first + (rings - 1) * n
        faces += [(end_cap, last + i, last + (i + 1) % n) for i in range(n)]
    return faces


def _orient_outward(verts: np.ndarray, faces: np.ndarray, axis_points: np.ndarray) -> np.ndarray:
    """Flip triangles whose normal points towards the tube axis (``axis_points`` per vertex: the
    centre of the ring it was sampled around)."""
    tri = verts[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    out = tri.mean(axis=1) - axis_points[faces].mean(axis=1)
    flip = np.einsum("ij,ij->i", n, out) < 0
    faces = faces.copy()
    faces[flip] = faces[flip][:, ::-1]
    return faces


def _one_hot(*pairs: tuple[int, float]) -> np.ndarray:
    w = np.zeros(16)
    for j, v in pairs:
        w[j] += v
    return w


def _build_right_hand() -> dict:
    """Right-hand geometry before vertex reordering: vertices, faces, per-vertex axis points,
    skinning weights, regressor vertex ids per joint and the tip vertex of each finger."""
    joints = mano_rest_joints_right()
    verts: list[np.ndarray] = []
    axis_points: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    faces: list[tuple[int, int, int]] = []
    regress: dict[int, np.ndarray] = {}
    tips: dict[int, int] = {}

    def add(points: np.ndarray, axis_point: np.ndarray, w: np.ndarray) -> int:
        start = sum(len(p) for p in verts)
        verts.append(points)
        axis_points.append(np.broadcast_to(axis_point, points.shape))
        weights.append(np.broadcast_to(w, (len(points), 16)))
        return start

    # Palm slab: elliptic rings from the wrist to the knuckle line, wide across the hand (z).
    wrist = joints[0]
    mcp_ids = [1, 4, 7, 10]
    knuckles = joints[mcp_ids].mean(axis=0)
    axis = knuckles - wrist
    palm_first = sum(len(p) for p in verts)
    for r in range(_PALM_RINGS):
        f = r / (_PALM_RINGS - 1)
        spread = min(1.0, 2 * f)
        centre = wrist + 1.02 * f * axis + np.array([0.0, 0.0, -0.006 * spread])
        ring = tube_ring(centre, axis, (0.014, 0.032 + 0.016 * spread), _PALM_RING)
        # Near the knuckles the palm follows the closest finger's MCP joint as it bends.
        blend = 0.5 * max(0.0, f - 0.7) / 0.3
        near = np.argmin(np.linalg.norm(ring[:, None, :] - joints[mcp_ids][None], axis=-1), axis=1)
        w = np.stack([_one_hot((0, 1.0 - blend), (mcp_ids[k], blend)) for k in near])
        add(ring, centre, w)
    regress[0] = np.arange(palm_first, palm_first + _PALM_RING)
    caps = np.stack([wrist - 0.004 * axis / np.linalg.norm(axis), wrist + 1.03 * axis])
    palm_caps = add(caps, wrist + 0.5 * axis, _one_hot((0, 1.0)))
    faces += _tube_faces(palm_first, _PALM_RINGS, _PALM_RING, palm_caps, palm_caps + 1)

    # Fingers: tubes through joints 1-2-3 to the tip, a ring exactly at each joint.
    for finger in range(5):
        chain = (1 + 3 * finger, 2 + 3 * finger, 3 + 3 * finger)
        pts = joints[list(chain)]
        last = pts[2] - pts[1]
        tip = pts[2] + _TIP_LENGTH[finger] * last / np.linalg.norm(last)
        path = np.vstack([pts, tip])
        radius = _FINGER_RADIUS[finger]
        first = sum(len(p) for p in verts)
        for bone, joint in enumerate(chain):
            a, b = path[bone], path[bone + 1]
            for k in range(_FINGER_RINGS_PER_BONE):
                f = k / _FINGER_RINGS_PER_BONE
                r = radius * (1.0 - 0.25 * (bone + f) / 3.0)
                if bone == 2:
                    r *= np.sqrt(max(0.15, 1.0 - (0.95 * f) ** 2))  # rounded fingertip
                centre = a + f * (b - a)
                w = _one_hot((MANO_PARENTS[joint], 0.5), (joint, 0.5)) if k == 0 else _one_hot((joint, 1.0))
                start = add(tube_ring(centre, b - a, (r, 0.9 * r), _FINGER_RING), centre, w)
                if k == 0:
                    regress[joint] = np.arange(start, start + _FINGER_RING)
        base_dir = (path[1] - path[0]) / np.linalg.norm(path[1] - path[0])
        base = add((path[0] - 0.6 * radius * base_dir)[None], path[0] + 0.01 * base_dir,
                   _one_hot((MANO_PARENTS[chain[0]], 0.5), (chain[0], 0.5)))
        tips[finger] = add(tip[None], tip - 0.01 * base_dir, _one_hot((chain[2], 1.0)))
        faces += _tube_faces(first, 3 * _FINGER_RINGS_PER_BONE, _FINGER_RING, base, tips[finger])
    return {"v": np.concatenate(verts), "f": np.asarray(faces, dtype=np.int64),
            "axis_points": np.concatenate(axis_points), "weights": np.concatenate(weights),
            "regress": regress, "tips": tips}


def _webbing(v: np.ndarray, f: np.ndarray, tips: dict[int, int], n_faces: int) -> np.ndarray:
    """Skin webbing between neighbouring fingers (quads between the facing sides of their base
    rings); it also brings the face count to the official 1538."""
    ring_start = {}
    for finger in range(5):
        ring_start[finger] = tips[finger] - 2 - 3 * _FINGER_RINGS_PER_BONE * _FINGER_RING
    webs = []
    for a, b in ((0, 1), (1, 3), (3, 2), (0, 4)):  # index-middle, middle-ring, ring-pinky, index-thumb
        for r in range(2):
            ra = ring_start[a] + r * _FINGER_RING + np.arange(_FINGER_RING)
            rb = ring_start[b] + r * _FINGER_RING + np.arange(_FINGER_RING)
            ra2, rb2 = ra + _FINGER_RING, rb + _FINGER_RING
            ia = np.argmin(np.linalg.norm(v[ra] - v[rb].mean(0), axis=1))
            ib = np.argmin(np.linalg.norm(v[rb] - v[ra].mean(0), axis=1))
            webs.append((ra[ia], rb[ib], rb2[ib]))
            webs.append((ra[ia], rb2[ib], ra2[ia]))
    need = n_faces - len(f)
    if need < 0 or need > len(webs):
        raise AssertionError(f"synthetic MANO face budget off by {need}")
    return np.vstack([f, np.asarray(webs[:need], dtype=np.int64)])


def _reorder_for_tips(n: int, tips: dict[int, int]) -> np.ndarray:
    """Permutation ``new_from_old`` placing each fingertip vertex at its official index."""
    targets = {old: _TIP_OF_FINGER[finger] for finger, old in tips.items()}
    others = iter(i for i in range(n) if i not in targets)
    old_at_new = np.empty(n, dtype=np.int64)
    taken = set(targets.values())
    for new in range(n):
        old_at_new[new] = next(k for k, t in targets.items() if t == new) if new in taken else next(others)
    new_from_old = np.empty(n, dtype=np.int64)
    new_from_old[old_at_new] = np.arange(n)
    return new_from_old


def _mirror_pose_basis(posedirs: np.ndarray) -> np.ndarray:
    """Pose correctives of the mirrored model: features (R - I) of M R M flip sign where exactly one
    matrix index is x, and the vertex offsets flip x."""
    s = np.array([-1.0, 1.0, 1.0])
    feat_sign = np.tile((s[:, None] * s[None, :]).ravel(), posedirs.shape[-1] // 9)
    return posedirs * s[None, :, None] * feat_sign[None, None, :]


def mirror_axis_angle_basis(aa: np.ndarray) -> np.ndarray:
    """Axis-angle vectors flattened per joint (..., 3k) mirrored: (x, y, z) -> (x, -y, -z)."""
    sign = np.tile(np.array([1.0, -1.0, -1.0]), aa.shape[-1] // 3)
    return aa * sign


def make_synthetic_mano(side: str = "right", seed: int = 0) -> dict:
    """Arrays of a synthetic MANO model in the official layout (see the module docstring).

    ``seed`` drives the small random parts (higher shape directions, pose correctives, PCA basis and
    hand mean); the right and left models made with the same seed are exact mirrors."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    rng = np.random.default_rng(seed)
    hand = _build_right_hand()
    v, f, tips = hand["v"], hand["f"], hand["tips"]
    if len(v) != MANO_NUM_VERTICES:
        raise AssertionError(f"synthetic MANO has {len(v)} vertices, expected {MANO_NUM_VERTICES}")
    f = _orient_outward(v, f, hand["axis_points"])
    f = _webbing(v, f, tips, MANO_NUM_FACES)
    new_from_old = _reorder_for_tips(len(v), tips)
    v_new = np.empty_like(v)
    v_new[new_from_old] = v
    w_new = np.empty_like(hand["weights"])
    w_new[new_from_old] = hand["weights"]
    f_new = new_from_old[f]

    joints = mano_rest_joints_right()
    regressor = np.zeros((16, MANO_NUM_VERTICES))
    for j, ids in hand["regress"].items():
        regressor[j, new_from_old[ids]] = 1.0 / len(ids)

    wrist = joints[0]
    shapedirs = np.zeros((MANO_NUM_VERTICES, 3, MANO_NUM_BETAS))
    rel = v_new - wrist
    shapedirs[:, :, 0] = 0.05 * rel  # overall size
    shapedirs[:, 0, 1] = 0.06 * rel[:, 0]  # finger/palm length (along -x)
    shapedirs[:, 2, 2] = 0.06 * rel[:, 2]  # palm width
    # Smooth low-amplitude deformations for the remaining directions (millimetres per unit).
    freq = rng.normal(size=(MANO_NUM_BETAS - 3, 3, 3)) * 20.0
    amp = rng.normal(size=(MANO_NUM_BETAS - 3, 3)) * 0.0015
    for b in range(3, MANO_NUM_BETAS):
        shapedirs[:, :, b] = amp[b - 3] * np.sin(rel @ freq[b - 3])
    posedirs = rng.normal(size=(MANO_NUM_VERTICES, 3, 135)) * 0.0004
    posedirs *= np.exp(-np.linalg.norm(rel, axis=1) / 0.08)[:, None, None]
    components = np.linalg.qr(rng.normal(size=(45, 45)))[0].T
    hands_mean = rng.normal(size=45) * 0.15

    model = {
        "v_template": v_new,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": regressor,
        "kintree_table": np.array([[_UINT32_ROOT] + list(MANO_PARENTS[1:]), list(range(16))], dtype=np.int64),
        "weights": w_new / w_new.sum(axis=1, keepdims=True),
        "f": f_new,
        "hands_components": components,
        "hands_mean": hands_mean,
    }
    if side == "left":
        model["v_template"] = model["v_template"] @ MIRROR
        model["shapedirs"] = model["shapedirs"] * np.array([-1.0, 1.0, 1.0])[None, :, None]
        model["posedirs"] = _mirror_pose_basis(model["posedirs"])
        model["f"] = model["f"][:, ::-1]
        model["hands_components"] = mirror_axis_angle_basis(model["hands_components"])
        model["hands_mean"] = mirror_axis_angle_basis(model["hands_mean"])
    out = {k: np.ascontiguousarray(val) for k, val in model.items()}
    out["J_regressor"] = scipy.sparse.csc_matrix(out["J_regressor"])
    out["kintree_table"] = out["kintree_table"].astype(np.int64)
    out["f"] = out["f"].astype(np.uint32)
    return out


def write_synthetic_mano(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write ``MANO_RIGHT.pkl`` and ``MANO_LEFT.pkl`` into ``out_dir``; returns {side: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for side in ("right", "left"):
        path = out_dir / f"MANO_{side.upper()}.pkl"
        with open(path, "wb") as fh:
            pickle.dump(make_synthetic_mano(side, seed), fh, protocol=4)
        paths[side] = path
    return paths
