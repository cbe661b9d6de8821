"""Exports people consume: AMASS SMPL-X npz, per-hand MANO npz, skinned glTF 2.0, rerun .rrd
(BVH: ``fusion.export_bvh``; FBX through Blender: ``fusion.export_blender``).

Our world frame is SMPL-X's model frame: y up, metres, floor y = 0, so SMPL-X joints are
``forward_kinematics(local_rotmats, betas) + trans``. Conversions happen here, at the edge:

- Axis-angle (radians) appears only in the files.
- AMASS files are z up by default: ``z_up=True`` rotates the whole motion by +90 deg about x (``R_ZUP``: y -> z, z -> -y), which turns
  our y-up world into AMASS's z-up one (floor = the XY plane). It is the inverse of the -90 deg about
  X that the Meshcapade Blender add-on applies to AMASS files. SMPL-X turns the root about the rest
  pelvis joint ``J0(betas)``, not the origin, so ``trans`` becomes ``R_ZUP (J0 + trans) - J0``.
- Hand poses use the flat-hand convention (absolute MANO finger rotations, no hand mean added), the
  convention the Blender add-on applies as raw bone rotations; the files say so in
  ``hand_pose_convention``.
- glTF is y up with +z forward like our world, so the glTF scene needs no conversion.
- Frame rates in files are whole numbers on a uniform grid (:func:`resample_motion`); the fused
  frames follow the Kinect's clock (e.g. 29.999 Hz with jitter).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnimocap.geometry.quaternions import continuous_signs, matrix_to_quat_wxyz, wxyz_to_xyzw
from omnimocap.geometry.resample import mask_runs
from omnimocap.geometry.transforms import axis_angle_to_matrix, matrix_to_axis_angle
from omnimocap.data.skeletons import SMPLX_JOINTS, SMPLX_NUM_JOINTS, SMPLX_PARENTS
from omnimocap.errors import InputError, UserError
from omnimocap.fusion.body_model import Skeleton, default_skeleton

HAND_POSE_CONVENTION = "flat (absolute MANO rotations, no hand mean)"
R_ZUP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # +90 deg about x


def _atomic_savez(path: Path, arrays: dict) -> None:
    """np.savez to a temporary name, then rename: never a half-written file under ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


AMASS_RATE = 30.0
"""Default frame rate of the AMASS files, Hz: the SMPL-X Blender add-on's default target rate."""


def check_rate(rate: float) -> float:
    """A whole, positive frame rate in Hz (the SMPL-X Blender add-on reads ``int(rate)``)."""
    rate = float(rate)
    if not np.isfinite(rate) or rate <= 0 or rate != round(rate):
        raise ValueError(f"the frame rate must be a whole number of frames per second, got {rate}")
    return rate


def uniform_grid(t_session: np.ndarray, rate: float) -> np.ndarray:
    """Times ``t_session[0] + k / rate`` covering ``t_session`` (seconds), never past its end."""
    t = np.asarray(t_session, dtype=np.float64)
    n = int(np.floor((t[-1] - t[0]) * rate + 1e-6)) + 1
    return t[0] + np.arange(n) / rate


def resample_motion(t_session: np.ndarray, local_rotmats: np.ndarray, transl: np.ndarray,
                    rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The motion on the uniform grid :func:`uniform_grid` (``rate`` Hz): rotations (F, J, 3, 3)
    slerped, translations (F, 3) metres by cubic Hermite, between the frames at ``t_session``
    (seconds, increasing). Returns (t_grid, local_rotmats, transl)."""
    from omnimocap.geometry.resample import interpolate_positions, interpolate_rotations

    t = np.asarray(t_session, dtype=np.float64)
    R = np.asarray(local_rotmats, dtype=np.float64)
    trans = np.asarray(transl, dtype=np.float64)
    if len(t) != len(R) or len(t) != len(trans):
        raise ValueError(f"t_session ({len(t)}), local_rotmats ({len(R)}) and transl ({len(trans)}) differ in frames")
    if len(t) == 1:
        return t.copy(), R.copy(), trans.copy()
    if np.any(np.diff(t) <= 0):
        raise ValueError("t_session must increase strictly")
    grid = uniform_grid(t, rate)
    R_out, ok = interpolate_rotations(t, R, np.ones(len(t), bool), grid, max_gap=np.inf)
    trans_out = interpolate_positions(t, trans, grid, max_gap=np.inf)
    assert ok.all() and np.isfinite(trans_out).all(), "a grid inside the frame times is always served"
    return grid, R_out, trans_out


def unseen_runs(seen: np.ndarray, t: np.ndarray) -> list[tuple[float, float]]:
    """The runs of ``False`` in ``seen`` (F,) as (first, last) frame times ``t`` (F,), seconds."""
    return [(float(t[a]), float(t[b])) for a, b in mask_runs(~np.asarray(seen, dtype=bool))]


def resample_valid(t_session: np.ndarray, valid: np.ndarray, t_grid: np.ndarray) -> np.ndarray:
    """(G,) bool: a time of ``t_grid`` is valid where every frame of ``t_session`` (increasing) that
    :func:`resample_motion` interpolates it from is (the frame itself where they coincide)."""
    t = np.asarray(t_session, dtype=np.float64)
    v = np.asarray(valid, dtype=bool)
    g = np.asarray(t_grid, dtype=np.float64)
    lo = np.clip(np.searchsorted(t, g, side="right") - 1, 0, len(t) - 1)
    hi = np.minimum(lo + 1, len(t) - 1)
    on_frame = np.isclose(g, t[lo], rtol=0.0, atol=1e-9)
    return v[lo] & (v[hi] | on_frame)


def write_amass_npz(
    path: str | Path,
    local_rotmats: np.ndarray,
    transl: np.ndarray,
    betas: np.ndarray,
    t_session: np.ndarray,
    *,
    rate: float = AMASS_RATE,
    gender: str = "neutral",
    z_up: bool = True,
    extra: dict | None = None,
    skeleton: Skeleton | None = None,
    valid: np.ndarray | None = None,
) -> Path:
    """Write an AMASS-style SMPL-X npz, the way AMASS's own SMPL-X files are: z up, a whole-number
    frame rate on a uniform time grid.

    Args:
        local_rotmats: (F, 55, 3, 3) local rotations, SMPL-X order, our world (y up).
        transl: (F, 3) SMPL-X translation, metres.
        betas: (B,) shape coefficients.
        t_session: (F,) times of the frames, seconds (any spacing, increasing); the motion is
            resampled onto ``t_session[0] + k / rate`` (stored as ``t_session``).
        rate: the file's frame rate, a whole number of Hz, stored as ``mocap_frame_rate`` and
            ``mocap_framerate`` (both spellings are read by different tools).
        z_up: rotate into AMASS's z-up world (see the module docstring); False keeps our y-up one.
        extra: more keys to store (e.g. ``person_id``); they must not clash with the standard ones.
        skeleton: the skeleton the motion was made with; only its rest pelvis ``J0(betas)`` is used,
            for the z-up ``trans`` correction (default: the built-in skeleton).
        valid: (F,) bool, the frames whose body was seen (omnimocap's ``body_valid``); stored as
            ``valid`` on the file's grid, True where every frame it is interpolated from is.
    Keys: ``poses`` (F', 165) axis-angle (global 3, body 63, jaw 3, eyes 6, left hand 45, right hand
    45), ``trans``, ``betas``, ``num_betas``, ``gender``, ``mocap_frame_rate``, ``mocap_framerate``,
    ``mocap_time_length`` (F' / rate, seconds), ``t_session``, ``surface_model_type`` = 'smplx',
    ``up_axis`` ('z' or 'y'), ``hand_pose_convention``, and the per-frame SMPL-X parameters
    ``root_orient`` (3), ``pose_body`` (63), ``pose_jaw`` (3), ``pose_eye`` (6), ``pose_hand`` (90 =
    left 45 + right 45), and ``valid`` (F') with ``valid`` given.
    """
    rate = check_rate(rate)
    R = np.asarray(local_rotmats, dtype=np.float64)
    trans = np.asarray(transl, dtype=np.float64)
    betas = np.asarray(betas, dtype=np.float64).reshape(-1)
    F = len(R)
    if R.shape != (F, SMPLX_NUM_JOINTS, 3, 3) or trans.shape != (F, 3) or F == 0:
        raise ValueError(f"local_rotmats must be (F, 55, 3, 3) and transl (F, 3), F > 0, got {R.shape} and {trans.shape}")
    if valid is not None and np.shape(valid) != (F,):
        raise ValueError(f"valid must be ({F},), got {np.shape(valid)}")
    t_grid, R, trans = resample_motion(t_session, R, trans, rate)
    grid_valid = None if valid is None else resample_valid(t_session, valid, t_grid)
    F = len(R)
    if z_up:
        skeleton = skeleton or default_skeleton(max(len(betas), 1))
        j0 = skeleton.joints_at_rest(betas[: skeleton.num_betas])[0]
        R = R.copy()
        R[:, 0] = R_ZUP @ R[:, 0]
        trans = (R_ZUP @ (j0 + trans).T).T - j0
    poses = matrix_to_axis_angle(R).reshape(F, SMPLX_NUM_JOINTS * 3)
    arrays = {
        "poses": poses,
        "trans": trans,
        "betas": betas,
        "num_betas": np.int64(len(betas)),
        "gender": np.str_(gender),
        "mocap_frame_rate": np.float64(rate),
        "mocap_framerate": np.float64(rate),
        "mocap_time_length": np.float64(F / rate),
        "t_session": t_grid,
        "surface_model_type": np.str_("smplx"),
        "up_axis": np.str_("z" if z_up else "y"),
        "hand_pose_convention": np.str_(HAND_POSE_CONVENTION),
        "root_orient": poses[:, :3],
        "pose_body": poses[:, 3:66],
        "pose_jaw": poses[:, 66:69],
        "pose_eye": poses[:, 69:75],
        "pose_hand": poses[:, 75:165],
    }
    if grid_valid is not None:
        arrays["valid"] = grid_valid
    for key, value in (extra or {}).items():
        if key in arrays:
            raise ValueError(f"extra key {key!r} clashes with a standard AMASS key")
        arrays[key] = np.str_(value) if isinstance(value, str) else value
    _atomic_savez(Path(path), arrays)
    return Path(path)


def read_amass_npz(path: str | Path) -> dict:
    """Read an AMASS-style SMPL-X npz: the file's arrays plus ``local_rotmats`` (F, 55, 3, 3),
    ``transl`` (F, 3) and ``fps`` (float), as stored (``up_axis`` says which world)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path=path, fix="give the path of an AMASS-style .npz")
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"not a readable npz ({exc})", path=path) from exc
    if "poses" not in out or "trans" not in out:
        raise InputError("missing 'poses' or 'trans': not an AMASS-style file", path=path)
    poses = np.asarray(out["poses"], dtype=np.float64)
    out["local_rotmats"] = axis_angle_to_matrix(poses.reshape(len(poses), -1, 3))
    out["transl"] = np.asarray(out["trans"], dtype=np.float64)
    for key in ("mocap_frame_rate", "mocap_framerate", "fps"):
        if key in out:
            out["fps"] = float(out[key])
            break
    for key in ("gender", "surface_model_type", "up_axis", "hand_pose_convention"):
        if key in out:
            out[key] = str(out[key])
    return out


def _hold_nearest_valid(x: np.ndarray, valid: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """``x`` (F, ...) with every invalid frame replaced by the nearest valid one (``fill`` when no
    frame is valid), so a reader that ignores ``valid`` sees a hand that holds still, never NaN."""
    out = np.array(x, dtype=np.float64)
    good = np.flatnonzero(valid)
    if len(good) == 0:
        out[:] = fill
        return out
    bad = np.flatnonzero(~valid)
    if len(bad):
        pos = np.searchsorted(good, bad)
        left = good[np.clip(pos - 1, 0, len(good) - 1)]
        right = good[np.clip(pos, 0, len(good) - 1)]
        out[bad] = out[np.where(np.abs(bad - left) <= np.abs(right - bad), left, right)]
    return out


def write_mano_npz(
    path: str | Path,
    side: str,
    R_world: np.ndarray,
    hand_pose: np.ndarray,
    betas: np.ndarray,
    wrist_world: np.ndarray,
    valid: np.ndarray,
    rest_wrist: np.ndarray,
    view_camera_params: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write one hand's MANO sequence, loadable as ``smplx.MANO(..., is_rhand=side == "right")``
    with ``global_orient``, ``hand_pose``, ``betas`` and ``transl`` from the file.

    Args:
        side: "left" or "right"; left hands are proper left-hand MANO parameters (for a MANO left
            model), i.e. ``M R M`` of the mirrored right hand, ``M = diag(-1, 1, 1)``.
        R_world: (F, 3, 3) hand root rotation in the world (y up).
        hand_pose: (F, 15, 3, 3) finger rotations, flat-hand convention.
        betas: (10,) MANO shape.
        wrist_world: (F, 3) wrist (MANO joint 0) in the world, metres.
        valid: (F,) bool, frames where the hand was observed. Other frames hold the nearest valid
            frame's values (identity rotations and the origin when none is valid): every array is finite.
        rest_wrist: (3,) the ``side`` MANO model's rest wrist ``J0(betas)``, metres; a MANO layer
            turns the hand about it, so ``transl = wrist_world - rest_wrist``.
        view_camera_params: optional arrays about the views the hand was seen in; stored with a
            ``view_`` prefix.
        extra: more keys (e.g. the MANO model's name and SHA-256).
    Keys: ``side``, ``is_rhand``, ``global_orient`` (F, 3) and ``hand_pose`` (F, 45) axis-angle,
    ``global_orient_rotmat``, ``hand_pose_rotmat``, ``betas``, ``transl``, ``wrist_world``, ``valid``,
    ``hand_pose_convention``, ``up_axis`` = 'y'.
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    valid = np.asarray(valid, dtype=bool)
    R_world = np.asarray(R_world, dtype=np.float64)
    valid = valid & np.all(np.isfinite(R_world), axis=(-1, -2)) & np.all(np.isfinite(wrist_world), axis=-1)
    R_world = _hold_nearest_valid(R_world, valid, np.eye(3))
    hand_pose = _hold_nearest_valid(hand_pose, valid, np.eye(3))
    hand_pose[~np.all(np.isfinite(hand_pose), axis=(-1, -2))] = np.eye(3)
    wrist = _hold_nearest_valid(wrist_world, valid, np.zeros(3))
    betas = np.nan_to_num(np.asarray(betas, dtype=np.float64))
    F = len(R_world)
    arrays = {
        "side": np.str_(side),
        "is_rhand": np.bool_(side == "right"),
        "global_orient": matrix_to_axis_angle(R_world),
        "hand_pose": matrix_to_axis_angle(hand_pose).reshape(F, 45),
        "global_orient_rotmat": R_world,
        "hand_pose_rotmat": hand_pose,
        "betas": betas,
        "transl": wrist - np.asarray(rest_wrist, dtype=np.float64),
        "wrist_world": wrist,
        "valid": valid,
        "hand_pose_convention": np.str_(HAND_POSE_CONVENTION),
        "up_axis": np.str_("y"),
    }
    for key, value in (view_camera_params or {}).items():
        arrays[f"view_{key}"] = np.asarray(value)
    for key, value in (extra or {}).items():
        arrays[key] = np.str_(value) if isinstance(value, str) else value
    _atomic_savez(Path(path), arrays)
    return Path(path)


# --- glTF ------------------------------------------------------------------------------------------


def _aligned_quats_xyzw(R: np.ndarray) -> np.ndarray:
    """(F, J, 3, 3) -> (F, J, 4) xyzw quaternions, signs chosen continuous over frames so that
    interpolation between keyframes takes the short way."""
    return wxyz_to_xyzw(continuous_signs(matrix_to_quat_wxyz(R)))


@dataclass
class _ShapedSkin:
    """A SMPL-X body shaped by ``betas``, ready for glTF: vertices and joints (metres, model
    frame), parents (-1 for the root), the 4 largest skinning weights per vertex and the faces."""

    verts: np.ndarray  # (V, 3)
    joints: np.ndarray  # (J, 3)
    parents: np.ndarray  # (J,)
    influences: np.ndarray  # (V, 4) joint indices
    weights: np.ndarray  # (V, 4), rows sum to 1
    faces: np.ndarray  # (T, 3) uint32

    @classmethod
    def of(cls, model_dict: dict, betas: np.ndarray) -> "_ShapedSkin":
        betas = np.asarray(betas, dtype=np.float64).reshape(-1)
        shapedirs = np.asarray(model_dict["shapedirs"], dtype=np.float64)
        nb = min(len(betas), shapedirs.shape[-1])
        verts = np.asarray(model_dict["v_template"], dtype=np.float64) + shapedirs[:, :, :nb] @ betas[:nb]
        J = np.asarray(model_dict["J_regressor"], dtype=np.float64) @ verts
        parents = np.asarray(model_dict["kintree_table"], dtype=np.int64)[0].copy()
        parents[0] = -1
        weights = np.asarray(model_dict["weights"], dtype=np.float64)
        top = np.argsort(-weights, axis=1)[:, :4]
        top_w = np.take_along_axis(weights, top, axis=1)
        top_w = top_w / np.maximum(top_w.sum(1, keepdims=True), 1e-12)
        top[top_w == 0] = 0  # glTF: an unused influence names joint 0 with weight 0
        return cls(verts, J, parents, top, top_w, np.asarray(model_dict["f"], dtype=np.uint32))


class _GltfBuffers:
    """The binary buffer of a glTF file, its buffer views and accessors, filled array by array."""

    def __init__(self):
        self.blob = bytearray()
        self.views: list = []
        self.accessors: list = []

    def add(self, data: np.ndarray, component: int, kind: str, target: int | None = None, minmax: bool = False) -> int:
        """Append ``data`` (one row per element) 4-byte aligned; returns its accessor's index."""
        import pygltflib as g

        while len(self.blob) % 4:
            self.blob.append(0)
        raw = np.ascontiguousarray(data).tobytes()
        self.views.append(g.BufferView(buffer=0, byteOffset=len(self.blob), byteLength=len(raw), target=target))
        self.blob.extend(raw)
        count = data.shape[0]
        acc = g.Accessor(bufferView=len(self.views) - 1, componentType=component, count=count, type=kind)
        if minmax:
            flat = data.reshape(count, -1)
            acc.min = flat.min(0).astype(float).tolist()
            acc.max = flat.max(0).astype(float).tolist()
        self.accessors.append(acc)
        return len(self.accessors) - 1


_JOINT_NODE0 = 1  # node 0 is the mesh, the joints follow in joint order


def _add_skin(buffers: _GltfBuffers, skin: _ShapedSkin):
    """The mesh's accessors and the skin (inverse bind matrices: translations by ``-J_j``)."""
    import pygltflib as g

    pos = buffers.add(skin.verts.astype(np.float32), g.FLOAT, g.VEC3, g.ARRAY_BUFFER, minmax=True)
    jnt = buffers.add(skin.influences.astype(np.uint16), g.UNSIGNED_SHORT, g.VEC4, g.ARRAY_BUFFER)
    wgt = buffers.add(skin.weights.astype(np.float32), g.FLOAT, g.VEC4, g.ARRAY_BUFFER)
    idx = buffers.add(skin.faces.reshape(-1), g.UNSIGNED_INT, g.SCALAR, g.ELEMENT_ARRAY_BUFFER, minmax=True)
    num_joints = len(skin.joints)
    ibm = np.tile(np.eye(4, dtype=np.float32), (num_joints, 1, 1))
    ibm[:, :3, 3] = -skin.joints
    ibm_acc = buffers.add(np.transpose(ibm, (0, 2, 1)).reshape(num_joints, 16), g.FLOAT, g.MAT4)  # column-major
    mesh = g.Mesh(name="smplx", primitives=[g.Primitive(
        attributes=g.Attributes(POSITION=pos, JOINTS_0=jnt, WEIGHTS_0=wgt), indices=idx)])
    return mesh, g.Skin(name="smplx", inverseBindMatrices=ibm_acc, skeleton=_JOINT_NODE0,
                        joints=[_JOINT_NODE0 + j for j in range(num_joints)])


def _add_animation(buffers: _GltfBuffers, skin: _ShapedSkin, R: np.ndarray, transl: np.ndarray, fps: float):
    """One rotation channel per joint (xyzw) and the root's translation ``J_0 + transl``, a
    keyframe per frame at ``i / fps`` seconds."""
    import pygltflib as g

    times = (np.arange(len(R)) / float(fps)).astype(np.float32)
    t_acc = buffers.add(times, g.FLOAT, g.SCALAR, minmax=True)
    quats = _aligned_quats_xyzw(R).astype(np.float32)
    samplers, channels = [], []
    for j in range(len(skin.joints)):
        out = buffers.add(quats[:, j], g.FLOAT, g.VEC4)
        samplers.append(g.AnimationSampler(input=t_acc, output=out, interpolation="LINEAR"))
        channels.append(g.AnimationChannel(sampler=len(samplers) - 1,
                                           target=g.AnimationChannelTarget(node=_JOINT_NODE0 + j, path="rotation")))
    root_t = (skin.joints[0] + np.asarray(transl, dtype=np.float64)).astype(np.float32)
    out = buffers.add(root_t, g.FLOAT, g.VEC3)
    samplers.append(g.AnimationSampler(input=t_acc, output=out, interpolation="LINEAR"))
    channels.append(g.AnimationChannel(sampler=len(samplers) - 1,
                                       target=g.AnimationChannelTarget(node=_JOINT_NODE0, path="translation")))
    return g.Animation(name="motion", samplers=samplers, channels=channels,
                       extras={"fps": float(fps), "frames": len(R)})


def _nodes(skin: _ShapedSkin) -> list:
    """The mesh node, then one node per joint carrying its rest offset ``J_j - J_parent``."""
    import pygltflib as g

    num_joints = len(skin.joints)
    J, parents = skin.joints, skin.parents
    names = SMPLX_JOINTS if num_joints == SMPLX_NUM_JOINTS else [f"joint_{j}" for j in range(num_joints)]
    nodes = [g.Node(name="smplx_mesh", mesh=0, skin=0)]
    for j in range(num_joints):
        offset = J[j] if parents[j] < 0 else J[j] - J[parents[j]]
        kids = [_JOINT_NODE0 + c for c in range(num_joints) if parents[c] == j]
        nodes.append(g.Node(name=names[j], translation=offset.astype(float).tolist(), children=kids or None))
    return nodes


def write_gltf(
    path: str | Path,
    model_dict: dict,
    local_rotmats: np.ndarray,
    transl: np.ndarray,
    betas: np.ndarray,
    fps: float,
    extras: dict | None = None,
) -> Path:
    """Write the skinned SMPL-X mesh of one person with one animation as glTF 2.0 (``.glb`` binary, else ``.gltf``
    with embedded buffers).

    The mesh is the shaped template (``v_template + shapedirs @ betas``; no pose blend shapes), skinned
    with 55 joints (linear blend skinning, the 4 largest weights per vertex, renormalised). Joint
    nodes carry rest offsets ``J_j - J_parent`` (``J = J_regressor @ shaped vertices``); inverse bind
    matrices are translations by ``-J_j``. The animation has a rotation channel per joint (xyzw) and
    the root's translation ``J_0 + transl``, one keyframe per frame at ``i / fps`` seconds.

    Args:
        model_dict: SMPL-X arrays v_template (V, 3), f (T, 3), weights (V, 55), J_regressor (55, V),
            kintree_table (2, 55), shapedirs (V, 3, S).
        local_rotmats: (F, 55, 3, 3); transl: (F, 3); betas: (B,).
        fps: frames per second of the uniform frames, recorded as ``extras.fps`` of the asset and
            of the animation (glTF itself keeps only times).
        extras: more JSON values for the asset's ``extras`` (e.g. the body model's name and SHA-256).
    """
    import pygltflib as g

    R = np.asarray(local_rotmats, dtype=np.float64)
    skin = _ShapedSkin.of(model_dict, betas)
    buffers = _GltfBuffers()
    mesh, gltf_skin = _add_skin(buffers, skin)
    animation = _add_animation(buffers, skin, R, transl, fps)
    gltf = g.GLTF2(
        asset=g.Asset(generator="omnimocap", version="2.0", extras={"fps": float(fps), "frames": len(R), **(extras or {})}),
        scene=0, scenes=[g.Scene(nodes=[0, _JOINT_NODE0])], nodes=_nodes(skin), meshes=[mesh], skins=[gltf_skin],
        animations=[animation], accessors=buffers.accessors, bufferViews=buffers.views,
        buffers=[g.Buffer(byteLength=len(buffers.blob))],
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    gltf.set_binary_blob(bytes(buffers.blob))
    if path.suffix.lower() == ".glb":
        gltf.save_binary(str(tmp))
    else:
        gltf.convert_buffers(g.BufferFormat.DATAURI)
        gltf.save_json(str(tmp))
    tmp.replace(path)
    return path


# --- rerun -----------------------------------------------------------------------------------------


def write_rrd(
    path: str | Path,
    t_session: np.ndarray,
    body_joints: dict,
    hand_joints: dict | None = None,
    images: dict | None = None,
) -> Path:
    """Write a rerun recording (.rrd) on the ``session`` timeline (seconds).

    Args:
        t_session: (F,) frame times, seconds.
        body_joints: {person id: (F, 55, 3) SMPL-X joints, world, metres}, drawn as skeletons.
        hand_joints: {(person id, side): (F, 21, 3) hand joints (OpenPose order), NaN where absent}.
        images: {entity name: (times (N,), list of N HxWx3 uint8 RGB images)}.
    Raises:
        UserError: when rerun-sdk is not installed.
    """
    try:
        import rerun as rr
    except ImportError as exc:
        raise UserError("the .rrd export needs the rerun module", fix="pip install rerun-sdk") from exc
    from omnimocap.data.skeletons import HAND21_FROM_MANO, MANO_PARENTS

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    rec = rr.RecordingStream("omnimocap")
    rec.save(str(tmp))
    rec.log("world", rr.ViewCoordinates.RIGHT_HAND_Y_UP, static=True)
    body_bones = [(SMPLX_PARENTS[j], j) for j in range(1, SMPLX_NUM_JOINTS)]
    # Hand bones in the 21-joint order: MANO tree, fingertips on the last joint of each finger.
    index_of = {m: i for i, m in enumerate(HAND21_FROM_MANO)}
    hand_bones = [(index_of[MANO_PARENTS[m]], index_of[m]) for m in range(1, 16)]
    hand_bones += [(index_of[m], index_of[16 + k]) for k, m in enumerate((15, 3, 6, 12, 9))]
    t_session = np.asarray(t_session, dtype=np.float64)
    for f, t in enumerate(t_session):
        rec.set_time("session", duration=float(t))
        for pid, joints in body_joints.items():
            _log_skeleton(rr, rec, f"world/person_{pid}/body", joints[f], body_bones)
        for (pid, side), joints in (hand_joints or {}).items():
            _log_skeleton(rr, rec, f"world/person_{pid}/hand_{side}", joints[f], hand_bones)
    for name, (times, frames) in (images or {}).items():
        for t, image in zip(times, frames):
            rec.set_time("session", duration=float(t))
            rec.log(name, rr.Image(image))
    rec.flush()
    del rec
    tmp.replace(path)
    return path


def _log_skeleton(rr, rec, entity: str, joints: np.ndarray, bones: list) -> None:
    if not np.all(np.isfinite(joints)):
        rec.log(entity, rr.Clear(recursive=True))
        return
    rec.log(f"{entity}/joints", rr.Points3D(joints, radii=0.01))
    rec.log(f"{entity}/bones", rr.LineStrips3D([joints[[a, b]] for a, b in bones]))
