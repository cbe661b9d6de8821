"""WiLoR re-implementation against reference outputs of the original code (../shared fixtures).

Thresholds are those of the fixture README: float32 runs against the float64 reference within a
few times the original code's own float32 error, float64 runs at round-off level."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from omnimocap.hands.wilor import load_wilor, prepare_batch, reconstruct

FP32_TOL = {
    "pred_vertices": 5e-6, "pred_keypoints_3d": 5e-6, "pred_cam": 5e-6, "pred_keypoints_2d": 5e-6,
    "global_orient": 2e-5, "hand_pose": 2e-5, "betas": 2e-5, "pred_cam_t": 2e-5, "focal_length": 0.0,
}
# pipeline field -> (expected key, float32 tolerance)
PIPELINE = {
    "vertices": ("vertices", 5e-6), "keypoints_3d": ("keypoints_3d", 5e-6),
    "cam_crop": ("pred_cam_crop", 5e-6), "keypoints_2d_crop": ("keypoints_2d_crop", 5e-6),
    "cam_t_full": ("cam_t_full", 2e-5), "keypoints_2d_full": ("keypoints_2d_full", 5e-3),
    "box_center": ("box_center", 0.0), "box_size": ("box_size", 0.0), "blur_sigma": ("blur_sigma", 1e-7),
}


@lru_cache(maxsize=1)
def _load(folder: Path):
    torch.set_num_threads(1)
    return load_wilor(folder / "wilor_tiny.ckpt", folder / "model_config.yaml", mano_dir=folder / "mano",
                      mean_params=folder / "mano_mean_params.npz")


@pytest.fixture
def fixture_dir(shared):
    return shared("fixtures", "wilor_parity")


@pytest.fixture
def model(fixture_dir):
    return _load(fixture_dir).float()


def _run(model, x):
    with torch.inference_mode():
        return {k: v.double().numpy() for k, v in model(x).items()}


def test_model_outputs_float32(model, fixture_dir):
    x = torch.from_numpy(np.load(fixture_dir / "inputs.npz")["img"])
    expected = np.load(fixture_dir / "expected.npz")
    out = _run(model, x)
    assert set(expected.files) <= set(out)
    for key in expected.files:
        assert out[key].shape == expected[key].shape, key
        err = np.abs(out[key] - expected[key]).max()
        assert err <= FP32_TOL[key], f"{key}: max abs error {err:.3g} > {FP32_TOL[key]}"


def test_model_outputs_float64(model, fixture_dir):
    x = torch.from_numpy(np.load(fixture_dir / "inputs.npz")["img"]).double()
    expected = np.load(fixture_dir / "expected.npz")
    out = _run(model.double(), x)
    model.float()
    for key in expected.files:
        err = np.abs(out[key] - expected[key]).max()
        assert err <= 1e-8, f"{key}: max abs error {err:.3g}"


def test_checkpoint_mano_buffers_equal_mano_file(model, fixture_dir):
    from_ckpt = load_wilor(fixture_dir / "wilor_tiny.ckpt", fixture_dir / "model_config.yaml")
    x = torch.from_numpy(np.load(fixture_dir / "inputs.npz")["img"][:1])
    a, b = _run(model, x), _run(from_ckpt, x)
    assert np.array_equal(a["pred_vertices"], b["pred_vertices"])
    assert from_ckpt.faces.shape == (1538, 3)


def _pipeline(model, fixture_dir):
    inputs = np.load(fixture_dir / "pipeline_inputs.npz")
    hands, crops = [], []
    for g in range(int(inputs["num_images"])):
        args = (inputs[f"image_{g}"], inputs[f"boxes_{g}"], inputs[f"is_right_{g}"], float(inputs["rescale_factor"]))
        crops.append(prepare_batch(model, *args)[0].float().numpy())
        hands += reconstruct(model, *args)
    return np.concatenate(crops), hands


def test_pipeline_crops(model, fixture_dir):
    crops, hands = _pipeline(model, fixture_dir)
    expected = np.load(fixture_dir / "pipeline_expected.npz")
    blurred = expected["blur_sigma"] > 0
    assert blurred.any() and (~blurred).any()  # the set exercises both crop paths
    err = np.abs(crops - expected["img"]).reshape(len(crops), -1).max(axis=1)
    assert np.all(err <= 1e-5), err  # float32 round-off of the normalisation
    assert [h.blur_sigma > 0 for h in hands] == list(blurred)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pipeline_outputs(model, fixture_dir, dtype):
    m = model.double() if dtype == "float64" else model
    try:
        _, hands = _pipeline(m, fixture_dir)
    finally:
        model.float()
    expected = np.load(fixture_dir / "pipeline_expected.npz")
    assert [h.is_right for h in hands] == [bool(v) for v in expected["is_right"]]
    for field, (key, tol32) in PIPELINE.items():
        got = np.stack([np.asarray(getattr(h, field), dtype=np.float64) for h in hands])
        tol = tol32 if dtype == "float32" else (1e-6 if field == "keypoints_2d_full" else max(1e-8, min(tol32, 1e-7)))
        err = np.abs(got - expected[key]).max()
        assert err <= tol, f"{field}: max abs error {err:.3g} > {tol}"
    focal = np.array([h.focal_full for h in hands])
    assert np.allclose(focal, expected["scaled_focal_length"], rtol=0, atol=1e-9)
    # The demo's own 2D output: projected vertices.
    from omnimocap.hands.wilor import project_full

    wh = expected["img_size"][0].astype(int)
    v2d = np.stack([project_full(h.vertices, h.cam_t_full, h.focal_full, tuple(wh)) for h in hands])
    assert np.abs(v2d - expected["vertices_2d_full"]).max() <= (5e-3 if dtype == "float32" else 1e-6)


def test_left_hand_rotations_are_mirrored_model_output(model, fixture_dir):
    inputs = np.load(fixture_dir / "pipeline_inputs.npz")
    image, boxes, right = inputs["image_0"], inputs["boxes_0"], inputs["is_right_0"]
    x, _ = prepare_batch(model, image, boxes, right)
    raw = _run(model, x)
    hands = reconstruct(model, image, boxes, right)
    M = np.diag([-1.0, 1.0, 1.0])
    for i, h in enumerate(hands):
        go, hp = raw["global_orient"][i, 0], raw["hand_pose"][i]
        if h.is_right:
            assert np.allclose(h.global_orient, go, atol=1e-12)
        else:
            assert np.allclose(h.global_orient, M @ go @ M, atol=1e-12)
            assert np.allclose(h.hand_pose, M @ hp @ M, atol=1e-12)
            assert not np.allclose(h.global_orient, go, atol=1e-3)
