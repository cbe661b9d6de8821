"""MANO forward (hands/mano.py) against smplx's MANO on the synthetic model files."""

from __future__ import annotations

import numpy as np
import pytest

from omnimocap.geometry.transforms import MIRROR, axis_angle_to_matrix, mirror_axis_angle, mirror_rotation
from omnimocap.data.skeletons import HAND21_FROM_MANO, MANO_TIP_VERTICES
from omnimocap.hands.synthetic_mano import make_synthetic_mano, write_synthetic_mano
from omnimocap.hands.mano import ManoModel


@pytest.fixture(scope="module")
def mano_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("mano")
    write_synthetic_mano(path)
    return path


def _smplx_forward(mano_dir, is_rhand, aa, betas):
    torch = pytest.importorskip("torch")
    smplx = pytest.importorskip("smplx")
    layer = smplx.MANO(model_path=str(mano_dir), is_rhand=is_rhand, use_pca=False, flat_hand_mean=True)
    with torch.no_grad():
        out = layer(global_orient=torch.tensor(aa[:, 0], dtype=torch.float32),
                    hand_pose=torch.tensor(aa[:, 1:].reshape(len(aa), 45), dtype=torch.float32),
                    betas=torch.tensor(betas, dtype=torch.float32))
    verts = out.vertices.numpy().astype(np.float64)
    joints = np.concatenate([out.joints.numpy(), verts[:, list(MANO_TIP_VERTICES)]], axis=1)
    return verts, joints[:, list(HAND21_FROM_MANO)]


def test_forward_matches_smplx_right(mano_dir):
    rng = np.random.default_rng(3)
    aa = rng.normal(scale=0.5, size=(5, 16, 3))
    betas = rng.normal(size=(5, 10))
    ref_v, ref_j = _smplx_forward(mano_dir, True, aa, betas)
    model = ManoModel.from_dict(make_synthetic_mano("right"))
    R = axis_angle_to_matrix(aa)
    verts, joints = model.forward(R[:, 0], R[:, 1:], betas)
    assert np.abs(verts - ref_v).max() < 1e-5
    assert np.abs(joints - ref_j).max() < 1e-5
    _, joints_only = model.forward(R[:, 0], R[:, 1:], betas, with_vertices=False)
    np.testing.assert_allclose(joints_only, joints, atol=1e-12)
    # The root turns about the rest root joint: the posed wrist stays at J0(betas).
    np.testing.assert_allclose(joints[:, 0], model.rest_joints(betas)[:, 0], atol=1e-12)


def test_left_hand_mirror_convention(mano_dir):
    rng = np.random.default_rng(4)
    aa_right = rng.normal(scale=0.5, size=(3, 16, 3))
    betas = rng.normal(size=(3, 10))
    model = ManoModel.from_dict(make_synthetic_mano("right"))
    R_right = axis_angle_to_matrix(aa_right)
    v_right, j_right = model.forward(R_right[:, 0], R_right[:, 1:], betas)
    R_left = mirror_rotation(R_right)
    v_left, j_left = model.forward_side("left", R_left[:, 0], R_left[:, 1:], betas)
    # Geometry of the left hand = M times the right hand it mirrors.
    np.testing.assert_allclose(v_left, v_right @ MIRROR, atol=1e-12)
    np.testing.assert_allclose(j_left, j_right @ MIRROR, atol=1e-12)
    # And it is what smplx computes from the left model file with the same left-hand parameters.
    ref_v, ref_j = _smplx_forward(mano_dir, False, mirror_axis_angle(aa_right), betas)
    assert np.abs(v_left - ref_v).max() < 1e-5
    assert np.abs(j_left - ref_j).max() < 1e-5
    np.testing.assert_allclose(model.root_joint("left", betas), j_left[:, 0], atol=1e-12)


def test_load_from_file_equals_dict(mano_dir):
    pytest.importorskip("omnimocap.hands.model_files")
    loaded = ManoModel.load(mano_dir)
    direct = ManoModel.from_dict(make_synthetic_mano("right"))
    R = axis_angle_to_matrix(np.random.default_rng(5).normal(scale=0.4, size=(16, 3)))
    np.testing.assert_allclose(loaded.forward(R[0], R[1:])[1], direct.forward(R[0], R[1:])[1], atol=1e-6)
