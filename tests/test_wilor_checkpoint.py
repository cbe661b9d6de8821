"""Official-format WiLoR checkpoints load weights-only; pickled configs become inert data and
anything that could run code is refused."""

from __future__ import annotations

import pickle
import sys
import warnings

import numpy as np
import pytest

from tests.tools.fake_modules import fake_modules
import torch

from omnimocap.data.skeletons import MANO_PARENTS
from omnimocap.errors import ModelFilesMissing
from omnimocap.hands.model_files import RestrictedUnpicklingError
from omnimocap.hands.wilor import load_wilor
from omnimocap.hands.wilor.checkpoint import load_checkpoint_file
from omnimocap.hands.wilor.model import ManoLayer, WilorDims, WilorModel


def _random_model(embed_dim=240, depth=1) -> WilorModel:
    """A randomly initialised network of non-default width/depth with a random MANO layer."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    w = rng.random((778, 16))
    mano = ManoLayer.from_arrays({
        "v_template": rng.normal(size=(778, 3)) * 0.05, "shapedirs": rng.normal(size=(778, 3, 10)) * 1e-3,
        "posedirs": rng.normal(size=(135, 778 * 3)) * 1e-3, "J_regressor": rng.random((16, 778)) / 778,
        "lbs_weights": w / w.sum(1, keepdims=True), "parents": np.array(MANO_PARENTS),
    })
    dims = WilorDims(embed_dim=embed_dim, depth=depth, num_heads=embed_dim // 80, patch_size=16, num_patches=192,
                     num_joints=16, num_betas=10, refine_branches=(1, 2), image_size=256)
    model = WilorModel(dims, mano).eval()
    with torch.no_grad():
        model.backbone.pos_embed.normal_(std=0.2)
        model.backbone.init_cam.copy_(torch.tensor([[4.0, 0.0, 0.0]]))
        model.backbone.init_hand_pose.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0] * 16)[None])
    return model


class _Payload:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def _save_with_fake_cfgnode(path, model, extra=None):
    """torch.save a Lightning-style checkpoint whose hyper_parameters hold an object of a class
    named yacs.config.CfgNode (a dict subclass with attributes, as yacs has). The module exists only
    while saving."""
    class CfgNode(dict):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.__dict__["__immutable__"] = True

    with fake_modules({"yacs.config": [CfgNode]}):
        cfg = CfgNode(MODEL=CfgNode(IMAGE_SIZE=256, IMAGE_MEAN=[0.485, 0.456, 0.406]), EXTRA=CfgNode(FOCAL_LENGTH=5000))
        sd = {k: v.clone() for k, v in model.state_dict().items()}
        sd["discriminator.D_conv1.weight"] = torch.zeros(3)
        ckpt = {"state_dict": sd, "pytorch-lightning_version": "2.6.0", "hyper_parameters": {"cfg": cfg},
                "optimizer_states": [], "epoch": 3}
        ckpt.update(extra or {})
        torch.save(ckpt, path)


def test_plain_weights_only_refuses_cfgnode_but_loader_reads_it(tmp_path):
    model = _random_model()
    path = tmp_path / "wilor_final.ckpt"
    _save_with_fake_cfgnode(path, model)
    with pytest.raises(pickle.UnpicklingError, match="yacs.config.CfgNode"):
        torch.load(path, weights_only=True)
    ckpt = load_checkpoint_file(path)
    cfg = ckpt["hyper_parameters"]["cfg"]
    assert type(cfg) is dict and type(cfg["MODEL"]) is dict
    assert cfg["MODEL"]["IMAGE_MEAN"] == [0.485, 0.456, 0.406] and cfg["EXTRA"]["FOCAL_LENGTH"] == 5000
    assert "yacs" not in sys.modules and "yacs.config" not in sys.modules


def test_loaded_model_reproduces_saved_one_with_other_dims(tmp_path):
    model = _random_model(embed_dim=240, depth=1)
    path = tmp_path / "wilor_final.ckpt"
    _save_with_fake_cfgnode(path, model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # discriminator.* is ignored silently
        loaded = load_wilor(path)
    assert loaded.dims.embed_dim == 240 and loaded.dims.num_heads == 3 and loaded.dims.depth == 1
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = model(x), loaded(x)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)


def test_code_in_checkpoint_is_refused(tmp_path):
    import os

    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    _save_with_fake_cfgnode(path, _random_model(), extra={"callbacks": _Payload(os.system, f"touch {marker}")})
    with pytest.raises(RestrictedUnpicklingError, match="system"):
        load_checkpoint_file(path)
    with pytest.raises(RestrictedUnpicklingError):
        load_wilor(path)
    assert not marker.exists()


def test_missing_and_unknown_keys_are_named(tmp_path):
    model = _random_model()
    sd = model.state_dict()
    sd["refine_net.extra_head.weight"] = torch.zeros(2)
    path = tmp_path / "extra.ckpt"
    torch.save({"state_dict": sd}, path)
    with pytest.warns(UserWarning, match="refine_net.extra_head.weight"):
        load_wilor(path)
    del sd["backbone.last_norm.weight"]
    torch.save({"state_dict": sd}, path)
    with pytest.raises(ModelFilesMissing, match="backbone.last_norm.weight"):
        load_wilor(path)
    with pytest.raises(ModelFilesMissing, match="not found"):
        load_wilor(tmp_path / "absent.ckpt")
