"""A mirrored photo of a right hand, reconstructed as a left hand, is the mirror of the right hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnimocap.hands.wilor import load_wilor, reconstruct

M = np.diag([-1.0, 1.0, 1.0])


@pytest.fixture
def model(shared):
    folder = shared("fixtures", "wilor_parity")
    torch.set_num_threads(1)
    return load_wilor(folder / "wilor_tiny.ckpt", folder / "model_config.yaml")


@pytest.mark.parametrize("box", [[265, 160, 395, 280], [10, 150, 290, 360]])  # unblurred, blurred
def test_mirrored_image_gives_mirrored_hand(model, shared, box):
    image = np.load(shared("fixtures", "wilor_parity", "pipeline_inputs.npz"))["image_0"]
    w = image.shape[1]
    box = np.array([box], dtype=np.float32)
    # Pixel centres: column j of the mirrored image is column w-1-j of the original.
    mirrored_box = np.array([[w - 1 - box[0, 2], box[0, 1], w - 1 - box[0, 0], box[0, 3]]], dtype=np.float32)
    (right,) = reconstruct(model, image, box, np.array([1.0]))
    (left,) = reconstruct(model, np.ascontiguousarray(image[:, ::-1]), mirrored_box, np.array([0.0]))

    assert right.is_right and not left.is_right
    np.testing.assert_allclose(left.global_orient, M @ right.global_orient @ M, atol=1e-6)
    np.testing.assert_allclose(left.hand_pose, M @ right.hand_pose @ M, atol=1e-6)
    np.testing.assert_allclose(left.betas, right.betas, atol=1e-6)
    np.testing.assert_allclose(left.keypoints_3d, right.keypoints_3d @ M, atol=1e-6)
    np.testing.assert_allclose(left.vertices, right.vertices @ M, atol=1e-6)
    # Full-image camera: y and depth equal; x mirrored about the principal point W/2, which sits half
    # a pixel right of the pixel-centre mirror axis (W-1)/2.
    bs = left.box_size * left.cam_crop[0]
    np.testing.assert_allclose(left.cam_t_full[1:], right.cam_t_full[1:], rtol=1e-6)
    np.testing.assert_allclose(left.cam_t_full[0], -right.cam_t_full[0] - 2.0 / bs, atol=1e-6)
    np.testing.assert_allclose(left.keypoints_2d_full[:, 0], w - 1 - right.keypoints_2d_full[:, 0], atol=0.05)
    np.testing.assert_allclose(left.keypoints_2d_full[:, 1], right.keypoints_2d_full[:, 1], atol=1e-3)
    # Left-hand rotations are proper rotations, not reflections.
    assert np.allclose(np.linalg.det(left.hand_pose), 1.0)
