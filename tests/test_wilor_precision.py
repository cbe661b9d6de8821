"""Autocast runs the network in bfloat16 (float16 on CUDA) while MANO and the cameras stay float32."""

from __future__ import annotations

import pytest
import torch

from omnimocap.hands.wilor import network_autocast
from tests.test_wilor_handedness_choice import tiny_model


def test_bf16_autocast_keeps_mano_and_cameras_in_float32():
    model = tiny_model()
    x = torch.randn(3, 3, 256, 256)
    with torch.inference_mode():
        ref = model(x)
        with network_autocast("bf16", "cpu"):
            low = model(x)
        rotmats = torch.cat([low["global_orient"], low["hand_pose"]], dim=1)
        verts, kps = model.mano(rotmats, low["betas"])  # float32, no autocast
    assert all(v.dtype == torch.float32 for v in low.values())
    torch.testing.assert_close(low["pred_vertices"], verts, rtol=0, atol=1e-6)
    torch.testing.assert_close(low["pred_keypoints_3d"], kps, rtol=0, atol=1e-6)
    diff = (low["pred_vertices"] - ref["pred_vertices"]).abs().max()
    assert 0 < diff < 0.01  # bfloat16 changes the result, within a centimetre on this random network


def test_precisions_are_checked():
    assert isinstance(network_autocast("bf16", "cpu"), torch.autocast)
    with pytest.raises(ValueError, match="fp16 on CUDA only"):
        network_autocast("fp16", "cpu")
    with pytest.raises(ValueError):
        network_autocast("int8", "cpu")
