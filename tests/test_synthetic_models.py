"""Synthetic model files: official formats, loadable by smplx, geometry tied to the built-in skeleton."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse

from omnimocap.data.skeletons import MANO_TIP_VERTICES
from omnimocap.data.skeletons import LEFT_HAND_REST_FROM_WRIST
from omnimocap.hands.synthetic_mano import make_synthetic_mano, mano_rest_joints_right, write_synthetic_mano

OFFICIAL_SHAPES = {
    "v_template": (778, 3), "shapedirs": (778, 3, 10), "posedirs": (778, 3, 135), "J_regressor": (16, 778),
    "kintree_table": (2, 16), "weights": (778, 16), "f": (1538, 3), "hands_components": (45, 45), "hands_mean": (45,),
}


def test_mano_file_layout(tmp_path):
    paths = write_synthetic_mano(tmp_path)
    assert sorted(p.name for p in paths.values()) == ["MANO_LEFT.pkl", "MANO_RIGHT.pkl"]
    with open(paths["right"], "rb") as fh:
        d = pickle.load(fh)
    assert {k: tuple(np.shape(v)) for k, v in d.items()} == OFFICIAL_SHAPES
    assert isinstance(d["J_regressor"], scipy.sparse.csc_matrix)
    assert d["kintree_table"][0, 0] == 4294967295
    assert list(d["kintree_table"][0, 1:]) == [0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]
    np.testing.assert_allclose(d["weights"].sum(axis=1), 1.0)
    assert d["f"].min() == 0 and d["f"].max() == 777


def test_mano_rest_joints_match_builtin_skeleton():
    d = make_synthetic_mano("right")
    joints = d["J_regressor"].toarray() @ d["v_template"]
    np.testing.assert_allclose(joints, mano_rest_joints_right(), atol=1e-12)
    np.testing.assert_allclose(joints[1:] - joints[0], LEFT_HAND_REST_FROM_WRIST * [-1.0, 1.0, 1.0], atol=1e-12)


def test_mano_tips_at_fingertips():
    d = make_synthetic_mano("right")
    v, joints = d["v_template"], mano_rest_joints_right()
    # Tip vertices (thumb, index, middle, ring, pinky) continue their finger beyond its last joint.
    last_two = {744: (14, 15), 320: (2, 3), 443: (5, 6), 554: (11, 12), 671: (8, 9)}
    for vid in MANO_TIP_VERTICES:
        j2, j3 = last_two[vid]
        bone = joints[j3] - joints[j2]
        beyond = v[vid] - joints[j3]
        cos = beyond @ bone / np.linalg.norm(beyond) / np.linalg.norm(bone)
        assert cos > 0.999 and 0.015 < np.linalg.norm(beyond) < 0.03, vid
        # and it is the extreme vertex of its finger's end along the bone direction
        near = np.linalg.norm(v - joints[j3], axis=1) < 0.03
        assert v[vid] @ bone >= (v[near] @ bone).max() - 1e-9, vid


def test_left_is_mirror_of_right():
    right, left = make_synthetic_mano("right"), make_synthetic_mano("left")
    m = np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(left["v_template"], right["v_template"] * m)
    np.testing.assert_allclose(left["shapedirs"], right["shapedirs"] * m[None, :, None])
    np.testing.assert_array_equal(left["f"], right["f"][:, ::-1])
    np.testing.assert_allclose(left["hands_mean"], right["hands_mean"] * np.tile([1.0, -1.0, -1.0], 15))


def test_mano_surface_faces_outward():
    d = make_synthetic_mano("right")
    tri = d["v_template"][d["f"].astype(int)]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert np.all(np.linalg.norm(normal, axis=1) > 0)
    # Signed volume of a closed, outward-wound surface is positive (the webbing adds a few open faces).
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    assert 5e-5 < volume < 5e-4  # a hand is a few hundred millilitres


def test_smplx_loads_mano_files(tmp_path):
    torch = pytest.importorskip("torch")
    smplx = pytest.importorskip("smplx")
    write_synthetic_mano(tmp_path)
    for is_rhand in (True, False):
        layer = smplx.MANO(model_path=str(tmp_path), is_rhand=is_rhand, use_pca=False, flat_hand_mean=True)
        with torch.no_grad():
            out = layer()
        expected = mano_rest_joints_right() * ([1.0, 1.0, 1.0] if is_rhand else [-1.0, 1.0, 1.0])
        np.testing.assert_allclose(out.joints[0].numpy(), expected, atol=1e-6)


def test_smplx_file_reproduces_builtin_skeleton(tmp_path):
    from omnimocap.fusion.body_model import default_skeleton, load_skeleton
    from omnimocap.sim.synthetic_models import write_synthetic_smplx

    path = write_synthetic_smplx(tmp_path)
    assert path.name == "SMPLX_NEUTRAL.npz"
    with np.load(path) as d:
        assert d["v_template"].shape == (10475, 3) and d["shapedirs"].shape == (10475, 3, 20)
        assert d["posedirs"].shape == (10475, 3, 486) and d["J_regressor"].shape == (55, 10475)
        assert d["f"].max() < 10475 and d["lmk_faces_idx"].max() < len(d["f"])
    builtin = default_skeleton(10)
    from_file = load_skeleton(path, 10)
    np.testing.assert_allclose(from_file.rest_joints, builtin.rest_joints, atol=1e-6)
    np.testing.assert_allclose(from_file.shape_dirs, builtin.shape_dirs, atol=1e-6)


def test_smplx_loads_and_agrees_with_forward_kinematics(tmp_path):
    torch = pytest.importorskip("torch")
    smplx = pytest.importorskip("smplx")
    from omnimocap.geometry.transforms import axis_angle_to_matrix
    from omnimocap.fusion.body_model import default_skeleton, forward_kinematics
    from omnimocap.sim.synthetic_models import write_synthetic_smplx

    write_synthetic_smplx(tmp_path)
    model = smplx.SMPLX(model_path=str(tmp_path), gender="neutral", use_pca=False, flat_hand_mean=True, num_betas=10)
    rng = np.random.default_rng(0)
    aa = rng.normal(scale=0.3, size=(3, 55, 3))
    betas = rng.normal(size=(3, 10))
    transl = rng.normal(size=(3, 3))

    def T(x):
        return torch.tensor(np.ascontiguousarray(x), dtype=torch.float32)

    with torch.no_grad():
        out = model(global_orient=T(aa[:, 0]), body_pose=T(aa[:, 1:22].reshape(3, -1)), jaw_pose=T(aa[:, 22]),
                    leye_pose=T(aa[:, 23]), reye_pose=T(aa[:, 24]), left_hand_pose=T(aa[:, 25:40].reshape(3, -1)),
                    right_hand_pose=T(aa[:, 40:55].reshape(3, -1)), betas=T(betas), transl=T(transl),
                    expression=torch.zeros(3, 10))
    joints, _ = forward_kinematics(default_skeleton(10), axis_angle_to_matrix(aa), betas, transl)
    assert np.abs(out.joints[:, :55].numpy() - joints).max() < 1e-5
