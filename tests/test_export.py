"""Exports: AMASS-style SMPL-X npz (checked with smplx on the synthetic model), z-up, MANO npz,
glTF, rerun, and the `omnimocap export` verb."""

from __future__ import annotations

import json

import numpy as np
import pytest

from omnimocap.geometry.transforms import axis_angle_to_matrix
from omnimocap.data.skeletons import HAND21_FROM_MANO
from omnimocap.fusion.body_model import default_skeleton, forward_kinematics
from omnimocap.fusion.export import (
    HAND_POSE_CONVENTION,
    R_ZUP,
    read_amass_npz,
    write_amass_npz,
    write_gltf,
    write_mano_npz,
    write_rrd,
)


def _motion(F: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    local = axis_angle_to_matrix(rng.normal(0.0, 0.3, (F, 55, 3)))
    transl = rng.normal(0.0, 0.5, (F, 3)) + np.array([0.0, 0.9, 0.0])
    betas = rng.normal(0.0, 1.0, 10)
    return local, transl, betas


def _smplx_joints(model_dir, data: dict) -> np.ndarray:
    torch = pytest.importorskip("torch")
    smplx = pytest.importorskip("smplx")
    model = smplx.SMPLX(model_path=str(model_dir), gender="neutral", use_pca=False, flat_hand_mean=True, num_betas=10)
    F = len(data["poses"])

    def T(x):
        return torch.tensor(np.ascontiguousarray(x), dtype=torch.float32)

    with torch.no_grad():
        out = model(global_orient=T(data["root_orient"]), body_pose=T(data["pose_body"]), jaw_pose=T(data["pose_jaw"]),
                    leye_pose=T(data["pose_eye"][:, :3]), reye_pose=T(data["pose_eye"][:, 3:]),
                    left_hand_pose=T(data["pose_hand"][:, :45]), right_hand_pose=T(data["pose_hand"][:, 45:]),
                    betas=T(np.broadcast_to(data["betas"], (F, 10))), transl=T(data["trans"]),
                    expression=torch.zeros(F, 10))
    return out.joints[:, :55].numpy().astype(np.float64)


@pytest.fixture(scope="module")
def smplx_dir(tmp_path_factory):
    from omnimocap.sim.synthetic_models import write_synthetic_smplx

    d = tmp_path_factory.mktemp("models")
    write_synthetic_smplx(d)
    return d


def test_amass_keys_shapes_and_round_trip(tmp_path):
    local, transl, betas = _motion(5)
    path = write_amass_npz(tmp_path / "smplx.npz", local, transl, betas, np.arange(5) / 30, z_up=False)
    with np.load(path) as data:
        assert data["poses"].shape == (5, 165) and data["trans"].shape == (5, 3) and data["betas"].shape == (10,)
        assert str(data["surface_model_type"]) == "smplx" and str(data["gender"]) == "neutral"
        assert float(data["mocap_frame_rate"]) == 30.0 and float(data["mocap_framerate"]) == 30.0
        assert float(data["mocap_time_length"]) == 5 / 30 and str(data["up_axis"]) == "y"
        assert str(data["hand_pose_convention"]) == HAND_POSE_CONVENTION
        for key, width in (("root_orient", 3), ("pose_body", 63), ("pose_jaw", 3), ("pose_eye", 6), ("pose_hand", 90)):
            assert data[key].shape == (5, width)
        np.testing.assert_array_equal(data["pose_hand"], data["poses"][:, 75:])
    back = read_amass_npz(path)
    np.testing.assert_allclose(back["local_rotmats"], local, atol=1e-9)
    np.testing.assert_allclose(back["transl"], transl)
    assert back["fps"] == 30.0 and back["t_session"].shape == (5,)
    assert not list(tmp_path.glob("*.partial*"))


def test_smplx_reproduces_our_joints_from_the_npz(tmp_path, smplx_dir):
    local, transl, betas = _motion(3, seed=1)
    path = write_amass_npz(tmp_path / "smplx.npz", local, transl, betas, np.arange(3) / 30, z_up=False)
    joints = _smplx_joints(smplx_dir, read_amass_npz(path))
    ours, _ = forward_kinematics(default_skeleton(10), local, betas, transl)
    assert np.abs(joints - ours).max() < 1e-4


def test_z_up_file_gives_the_rotated_joints(tmp_path, smplx_dir):
    local, transl, betas = _motion(3, seed=2)
    t = np.arange(3) / 30
    y_up = read_amass_npz(write_amass_npz(tmp_path / "y.npz", local, transl, betas, t, z_up=False))
    z_up = read_amass_npz(write_amass_npz(tmp_path / "z.npz", local, transl, betas, t))
    assert z_up["up_axis"] == "z"
    j_y = _smplx_joints(smplx_dir, y_up)
    j_z = _smplx_joints(smplx_dir, z_up)
    np.testing.assert_allclose(j_z, j_y @ R_ZUP.T, atol=1e-4)
    # The world's up (y) is z in the file.
    np.testing.assert_allclose(R_ZUP @ np.array([0.0, 1.0, 0.0]), [0.0, 0.0, 1.0])


def test_amass_resamples_to_a_whole_rate_and_keeps_the_motion(tmp_path):
    # A Kinect-like clock (29.999 Hz with jitter): the file is on an exact 30 Hz grid.
    rng = np.random.default_rng(8)
    F = 40
    t = 5.0 + np.arange(F) / 29.999 + rng.uniform(-2e-4, 2e-4, F)
    angle = np.linspace(0.0, 0.6, F)
    local = np.broadcast_to(np.eye(3), (F, 55, 3, 3)).copy()
    local[:, 18] = axis_angle_to_matrix(np.stack([np.zeros(F), np.zeros(F), angle], -1))
    transl = np.stack([np.linspace(0, 1, F), np.full(F, 0.9), np.zeros(F)], -1)
    data = read_amass_npz(write_amass_npz(tmp_path / "a.npz", local, transl, np.zeros(10), t, rate=30, z_up=False))
    n = len(data["poses"])
    np.testing.assert_allclose(np.diff(data["t_session"]), 1 / 30, atol=1e-12)
    assert data["t_session"][0] == t[0] and data["t_session"][-1] <= t[-1] and n == int((t[-1] - t[0]) * 30) + 1
    assert float(data["mocap_time_length"]) == n / 30
    # Linear motion stays linear on the new grid.
    expected_x = np.interp(data["t_session"], t, transl[:, 0])
    np.testing.assert_allclose(data["transl"][:, 0], expected_x, atol=1e-3)
    with pytest.raises(ValueError, match="whole number"):
        write_amass_npz(tmp_path / "b.npz", local, transl, np.zeros(10), t, rate=29.97)


def test_blender_addon_reading_logic_accepts_the_file(tmp_path, smplx_dir):
    """The SMPL-X Blender add-on's AMASS import: it takes ``int(mocap_frame_rate)``, refuses a file
    slower than its target rate (30 by default), keeps every (rate // target)-th frame, and treats the
    file as z-up (it turns the root -90 deg about x into Blender's own frame)."""
    local, transl, betas = _motion(6, seed=9)
    t = np.arange(6) / 29.999
    path = write_amass_npz(tmp_path / "smplx.npz", local, transl, betas, t)
    with np.load(path) as data:
        rate = int(data["mocap_frame_rate"])
        assert rate >= 30 and rate // 30 == 1
        assert str(data["up_axis"]) == "z" and data["poses"].shape[1] == 165
    # z-up: the file's joints are ours turned +90 deg about x (y -> z); the floor is the XY plane.
    joints_file = _smplx_joints(smplx_dir, read_amass_npz(path))
    y_up = read_amass_npz(write_amass_npz(tmp_path / "y.npz", local, transl, betas, t, z_up=False))
    np.testing.assert_allclose(joints_file, _smplx_joints(smplx_dir, y_up) @ R_ZUP.T, atol=1e-4)
    assert np.ptp(joints_file[..., 2]) > np.ptp(joints_file[..., 1]) * 0.5


def test_aitviewer_from_amass_keys(tmp_path):
    """What aitviewer's ``SMPLSequence.from_amass(path, smpl_layer=SMPLLayer(model_type="smplx"))`` reads
    with no other option: ``gender`` (``.item()``), ``poses`` (F, >= 156), ``trans``, ``betas`` (1-D),
    ``mocap_framerate`` (printed) and, by default, z up."""
    local, transl, betas = _motion(4, seed=10)
    path = write_amass_npz(tmp_path / "smplx.npz", local, transl, betas, np.arange(4) / 30)
    with np.load(path) as data:
        assert data["gender"].item() == "neutral"
        assert float(data["mocap_framerate"]) == 30.0
        assert data["poses"].shape == (4, 165) and data["poses"].shape[1] >= 3 + 21 * 3 + 2 * 15 * 3
        assert data["trans"].shape == (4, 3) and data["betas"].ndim == 1
        assert str(data["up_axis"]) == "z"


def test_mano_npz_transl_reproduces_the_hand_in_smplx(tmp_path):
    pytest.importorskip("smplx")
    from tests.tools.mano import smplx_mano_joints
    from omnimocap.hands.synthetic_mano import make_synthetic_mano, write_synthetic_mano
    from omnimocap.hands.mano import ManoModel

    write_synthetic_mano(tmp_path)
    model = ManoModel.from_dict(make_synthetic_mano("right"))
    rng = np.random.default_rng(3)
    F = 5
    betas = rng.normal(0, 0.5, 10)
    for side in ("left", "right"):
        R = axis_angle_to_matrix(rng.normal(size=(F, 3)))
        pose = axis_angle_to_matrix(rng.normal(0, 0.3, (F, 15, 3)))
        _, joints = model.forward_side(side, R, pose, betas, with_vertices=False)
        offset = rng.normal(0, 0.5, (F, 3))
        joints = joints + offset[:, None]  # the fused hand: MANO joints placed in the world
        valid = np.array([True, False, True, True, False])
        wrist = joints[:, 0].copy()
        wrist[~valid] = np.nan
        path = write_mano_npz(tmp_path / f"mano_{side}.npz", side, R, pose, betas, wrist, valid,
                              model.root_joint(side, betas), view_camera_params={"fx": np.ones(F)})
        with np.load(path) as data:
            assert all(np.all(np.isfinite(data[k])) for k in data.files if data[k].dtype.kind == "f")
            np.testing.assert_array_equal(data["valid"], valid)
            assert data["view_fx"].shape == (F,)
            ours16 = smplx_mano_joints(tmp_path, side, data)[valid]
            # smplx's 16 MANO joints: our OpenPose-ordered joints without the 5 tips.
            order = [list(HAND21_FROM_MANO).index(m) for m in range(16)]
            np.testing.assert_allclose(ours16, joints[valid][:, order], atol=1e-4)
    with pytest.raises(ValueError):
        write_mano_npz(tmp_path / "x.npz", "middle", R, pose, np.zeros(10), np.zeros((F, 3)), np.ones(F, bool), np.zeros(3))


def test_gltf_has_skin_and_full_animation(tmp_path):
    pygltflib = pytest.importorskip("pygltflib")
    from omnimocap.sim.synthetic_models import make_synthetic_smplx

    model = make_synthetic_smplx()
    local, transl, betas = _motion(7, seed=4)
    path = write_gltf(tmp_path / "smplx.glb", model, local, transl, betas, 30.0)
    gltf = pygltflib.GLTF2().load(str(path))
    assert len(gltf.skins) == 1 and len(gltf.skins[0].joints) == 55
    ibm = gltf.accessors[gltf.skins[0].inverseBindMatrices]
    assert ibm.count == 55 and ibm.type == "MAT4"
    prim = gltf.meshes[0].primitives[0]
    assert prim.attributes.JOINTS_0 is not None and prim.attributes.WEIGHTS_0 is not None
    assert gltf.accessors[prim.attributes.POSITION].count == len(model["v_template"])
    anim = gltf.animations[0]
    assert {gltf.accessors[s.input].count for s in anim.samplers} == {7}
    paths = [c.target.path for c in anim.channels]
    assert paths.count("rotation") == 55 and paths.count("translation") == 1
    # Root translation keyframes: rest pelvis + transl.
    blob = gltf.binary_blob()
    t_sampler = anim.samplers[[c.sampler for c in anim.channels if c.target.path == "translation"][0]]
    acc = gltf.accessors[t_sampler.output]
    view = gltf.bufferViews[acc.bufferView]
    root = np.frombuffer(blob[view.byteOffset: view.byteOffset + view.byteLength], dtype=np.float32).reshape(7, 3)
    rest = default_skeleton(10).joints_at_rest(betas)[0]
    np.testing.assert_allclose(root, rest + transl, atol=1e-5)


def test_rrd_writes_a_recording(tmp_path):
    pytest.importorskip("rerun")
    local, transl, betas = _motion(3)
    joints, _ = forward_kinematics(default_skeleton(10), local, betas, transl)
    hand = np.zeros((3, 21, 3))
    hand[1] = np.nan
    path = write_rrd(tmp_path / "x.rrd", np.arange(3) / 30.0, {0: joints}, {(0, "left"): hand})
    assert path.is_file() and path.stat().st_size > 1000


def _results(tmp_path, P: int = 1, F: int = 4, model_path=None):
    from omnimocap.fusion.body_model import body_model_record

    rng = np.random.default_rng(5)
    local = axis_angle_to_matrix(rng.normal(0, 0.2, (P, F, 55, 3)))
    np.savez(tmp_path / "fused.npz", t_session=np.arange(F) / 30.0, person_ids=np.arange(P) + 7,
             smplx_local_rotmats=local, smplx_transl=rng.normal(size=(P, F, 3)), smplx_betas=np.zeros((P, 10)),
             hand_R_world=local[:, :, 20:22], hand_pose=np.broadcast_to(local[:, :, None, 25:40], (P, F, 2, 15, 3, 3)),
             hand_wrist_world=rng.normal(size=(P, F, 2, 3)), hand_valid=np.ones((P, F, 2), bool),
             **body_model_record(model_path))
    (tmp_path / "report.json").write_text(json.dumps({"fps": 30.0}))
    return local


def test_export_verb_amass_and_mano(tmp_path, capsys, monkeypatch):
    from omnimocap.apps.cli import main

    monkeypatch.setenv("OMNIMOCAP_MODELS", str(tmp_path / "models"))
    local = _results(tmp_path, P=2)
    assert main(["export", str(tmp_path), "--format", "amass", "--y-up"]) == 0
    assert (tmp_path / "smplx_yup.npz").is_file() and (tmp_path / "smplx_person1_yup.npz").is_file()
    data = read_amass_npz(tmp_path / "smplx_person1_yup.npz")
    assert data["up_axis"] == "y" and int(data["person_id"]) == 8 and str(data["body_model"]) == "built-in"
    np.testing.assert_allclose(data["local_rotmats"][:, 1:], local[1, :, 1:], atol=1e-9)
    assert main(["export", str(tmp_path), "--format", "amass"]) == 0
    assert read_amass_npz(tmp_path / "smplx.npz")["up_axis"] == "z"
    assert main(["export", str(tmp_path), "--format", "mano"]) == 0
    assert (tmp_path / "mano_person0_left.npz").is_file() and (tmp_path / "mano_person1_right.npz").is_file()
    with np.load(tmp_path / "mano_person1_right.npz") as mano:
        assert mano["transl"].shape == (4, 3) and str(mano["body_model"]) == "built-in"


def test_export_verb_errors_are_one_line(tmp_path, capsys, monkeypatch):
    from tests.tools.cli import one_line_error

    assert "fused.npz" in one_line_error(capsys, ["export", str(tmp_path), "--format", "amass"])
    _results(tmp_path)
    assert "whole number" in one_line_error(capsys, ["export", str(tmp_path), "--format", "amass", "--fps", "29.97"])
    raw = (tmp_path / "fused.npz").read_bytes()
    (tmp_path / "fused.npz").write_bytes(raw[: len(raw) // 2])
    assert "truncated" in one_line_error(capsys, ["export", str(tmp_path), "--format", "amass"])
    _results(tmp_path)
    with np.load(tmp_path / "fused.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["smplx_local_rotmats"] = np.full_like(arrays["smplx_local_rotmats"], np.nan)
    arrays["smplx_transl"] = np.full_like(arrays["smplx_transl"], np.nan)
    np.savez(tmp_path / "fused.npz", **arrays)
    assert "non-finite" in one_line_error(capsys, ["export", str(tmp_path), "--format", "bvh"])


def test_export_into_a_read_only_folder_is_one_line(tmp_path, capsys, monkeypatch):
    import errno
    import os

    from tests.tools.cli import one_line_error

    _results(tmp_path)
    if os.geteuid() == 0:  # root writes anywhere: the folder refuses through the file system call
        def refuse(file, *args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))

        monkeypatch.setattr(np, "savez", refuse)
    else:
        tmp_path.chmod(0o555)
    try:
        line = one_line_error(capsys, ["export", str(tmp_path), "--format", "amass"])
        assert "Permission denied" in line and "writable" in line
    finally:
        tmp_path.chmod(0o755)


def test_export_refuses_another_model_file(tmp_path, capsys, smplx_dir):
    from omnimocap.apps.cli import main
    from omnimocap.sim.synthetic_models import write_synthetic_smplx
    from tests.tools.cli import one_line_error

    fit_model = smplx_dir / "SMPLX_NEUTRAL.npz"
    _results(tmp_path, model_path=fit_model)
    other = write_synthetic_smplx(tmp_path / "other", seed=1)
    line = one_line_error(capsys, ["export", str(tmp_path), "--format", "gltf", "--smplx-model", str(other)])
    assert "not the model file the fit used" in line and "SMPLX_NEUTRAL.npz" in line
    assert not list(tmp_path.glob("*.glb"))
    # Found again without --smplx-model: where the fit found it.
    assert main(["export", str(tmp_path), "--format", "gltf", "--models", str(tmp_path / "none")]) == 0
    assert (tmp_path / "smplx.glb").stat().st_size > 10000
    # A built-in fit refuses any model file.
    _results(tmp_path)
    assert "built-in" in one_line_error(capsys, ["export", str(tmp_path), "--format", "gltf", "--smplx-model", str(fit_model)])


def test_export_verb_bvh_matches_our_kinematics(tmp_path, capsys):
    from omnimocap.apps.cli import main
    from omnimocap.fusion.export_bvh import read_bvh

    local = _results(tmp_path, F=6)
    assert main(["export", str(tmp_path), "--format", "bvh"]) == 0
    bvh = read_bvh(tmp_path / "smplx.bvh")
    assert bvh["num_joints"] == 55 and bvh["motion"].shape == (6, 3 + 55 * 3) and abs(bvh["fps"] - 30.0) < 1e-6
    assert "left_index3" in bvh["names"] and "right_thumb3" in bvh["names"]
    # Rotation channels Z X Y (degrees) rebuild our local rotations.
    from scipy.spatial.transform import Rotation

    zxy = bvh["motion"][:, 3:].reshape(6, 55, 3)
    order = bvh["names"]
    from omnimocap.data.skeletons import SMPLX_JOINTS

    R = Rotation.from_euler("ZXY", zxy.reshape(-1, 3), degrees=True).as_matrix().reshape(6, 55, 3, 3)
    R_ours = R[:, [order.index(n) for n in SMPLX_JOINTS]]
    np.testing.assert_allclose(R_ours, local[0], atol=1e-6)
