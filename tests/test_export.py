"""Exports: AMASS-style SMPL-X npz (checked with smplx on the synthetic model), z-up, MANO npz,
glTF, rerun, and the `omnimocap export` verb."""

from __future__ import annotations

import json

import numpy as np
import pytest

from omnimocap.calibration.transforms import axis_angle_to_matrix
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
    from omnimocap.fusion.synthetic_models import write_synthetic_smplx

    d = tmp_path_factory.mktemp("models")
    write_synthetic_smplx(d)
    return d


def test_amass_keys_shapes_and_round_trip(tmp_path):
    local, transl, betas = _motion(5)
    path = write_amass_npz(tmp_path / "smplx.npz", local, transl, betas, 30.0, extra={"t_session": np.arange(5) / 30})
    with np.load(path) as data:
        assert data["poses"].shape == (5, 165) and data["trans"].shape == (5, 3) and data["betas"].shape == (10,)
        assert str(data["surface_model_type"]) == "smplx" and str(data["gender"]) == "neutral"
        assert float(data["mocap_frame_rate"]) == 30.0 and str(data["up_axis"]) == "y"
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
    path = write_amass_npz(tmp_path / "smplx.npz", local, transl, betas, 30.0)
    joints = _smplx_joints(smplx_dir, read_amass_npz(path))
    ours, _ = forward_kinematics(default_skeleton(10), local, betas, transl)
    assert np.abs(joints - ours).max() < 1e-4


def test_z_up_file_gives_the_rotated_joints(tmp_path, smplx_dir):
    local, transl, betas = _motion(3, seed=2)
    y_up = read_amass_npz(write_amass_npz(tmp_path / "y.npz", local, transl, betas, 30.0))
    z_up = read_amass_npz(write_amass_npz(tmp_path / "z.npz", local, transl, betas, 30.0, z_up=True))
    assert z_up["up_axis"] == "z"
    j_y = _smplx_joints(smplx_dir, y_up)
    j_z = _smplx_joints(smplx_dir, z_up)
    np.testing.assert_allclose(j_z, j_y @ R_ZUP.T, atol=1e-4)
    # The world's up (y) is z in the file.
    np.testing.assert_allclose(R_ZUP @ np.array([0.0, 1.0, 0.0]), [0.0, 0.0, 1.0])


def test_mano_npz(tmp_path):
    rng = np.random.default_rng(3)
    F = 4
    R = axis_angle_to_matrix(rng.normal(size=(F, 3)))
    pose = axis_angle_to_matrix(rng.normal(0, 0.3, (F, 15, 3)))
    path = write_mano_npz(tmp_path / "mano_left.npz", "left", R, pose, np.zeros(10), rng.normal(size=(F, 3)),
                          np.array([True, False, True, True]), view_camera_params={"fx": np.ones(F)})
    with np.load(path) as data:
        assert str(data["side"]) == "left" and not bool(data["is_rhand"])
        assert data["global_orient"].shape == (F, 3) and data["hand_pose"].shape == (F, 45)
        np.testing.assert_allclose(axis_angle_to_matrix(data["hand_pose"].reshape(F, 15, 3)), pose, atol=1e-9)
        np.testing.assert_array_equal(data["valid"], [True, False, True, True])
        assert data["view_fx"].shape == (F,)
    with pytest.raises(ValueError):
        write_mano_npz(tmp_path / "x.npz", "middle", R, pose, np.zeros(10), np.zeros((F, 3)), np.ones(F, bool))


def test_gltf_has_skin_and_full_animation(tmp_path):
    pygltflib = pytest.importorskip("pygltflib")
    from omnimocap.fusion.synthetic_models import make_synthetic_smplx

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


def _results(tmp_path, P: int = 1, F: int = 4):
    rng = np.random.default_rng(5)
    local = axis_angle_to_matrix(rng.normal(0, 0.2, (P, F, 55, 3)))
    np.savez(tmp_path / "fused.npz", t_session=np.arange(F) / 30.0, person_ids=np.arange(P) + 7,
             smplx_local_rotmats=local, smplx_transl=rng.normal(size=(P, F, 3)), smplx_betas=np.zeros((P, 10)),
             hand_R_world=local[:, :, 20:22], hand_pose=np.broadcast_to(local[:, :, None, 25:40], (P, F, 2, 15, 3, 3)),
             hand_wrist_world=rng.normal(size=(P, F, 2, 3)), hand_valid=np.ones((P, F, 2), bool))
    (tmp_path / "report.json").write_text(json.dumps({"fps": 30.0}))
    return local


def test_export_verb_amass_and_mano(tmp_path, capsys):
    from omnimocap.apps.cli import main

    local = _results(tmp_path, P=2)
    assert main(["export", str(tmp_path), "--format", "amass", "--z-up"]) == 0
    assert (tmp_path / "smplx_zup.npz").is_file() and (tmp_path / "smplx_person1_zup.npz").is_file()
    data = read_amass_npz(tmp_path / "smplx_person1_zup.npz")
    assert data["up_axis"] == "z" and int(data["person_id"]) == 8
    np.testing.assert_allclose(data["local_rotmats"][:, 1:], local[1, :, 1:], atol=1e-9)
    assert main(["export", str(tmp_path), "--format", "mano"]) == 0
    assert (tmp_path / "mano_person0_left.npz").is_file() and (tmp_path / "mano_person1_right.npz").is_file()


def test_export_verb_errors_name_the_missing_file(tmp_path, capsys, monkeypatch):
    from omnimocap.apps.cli import main

    assert main(["export", str(tmp_path), "--format", "amass"]) == 2
    assert "fused.npz" in capsys.readouterr().err
    _results(tmp_path)
    monkeypatch.setenv("OMNIMOCAP_MODELS", str(tmp_path / "models"))
    assert main(["export", str(tmp_path), "--format", "gltf"]) == 2
    err = capsys.readouterr().err
    assert "SMPLX_NEUTRAL.npz" in err and "OMNIMOCAP_MODELS" in err
    assert not list(tmp_path.glob("*.glb"))


def test_export_verb_gltf_with_model(tmp_path, smplx_dir):
    from omnimocap.apps.cli import main

    _results(tmp_path)
    assert main(["export", str(tmp_path), "--format", "gltf", "--smplx-model", str(smplx_dir / "SMPLX_NEUTRAL.npz")]) == 0
    assert (tmp_path / "smplx.glb").stat().st_size > 10000
