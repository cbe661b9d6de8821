"""Chumpy-free, code-free loading of MANO / SMPL-X model files."""

from __future__ import annotations

import os
import pickle
import sys

import numpy as np
import pytest

from tests.tools.fake_modules import fake_modules
import scipy.sparse

from omnimocap.errors import ModelFilesMissing
from omnimocap.hands.model_files import RestrictedUnpicklingError, load_mano, load_smplx, mano_layer_arrays, restricted_loads

RNG = np.random.default_rng(3)


def _fake_chumpy_classes():
    """Classes named like chumpy's, pickled the way chumpy pickles (instance dict as state)."""

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x)
            self._dirty_vars = set()

    class Select:
        def __init__(self, a, idxs, preferred_shape):
            self.a, self.idxs, self.preferred_shape = a, np.asarray(idxs), preferred_shape

    class add:
        def __init__(self, a, b):
            self.a, self.b = a, b

    return {"chumpy.ch": [Ch], "chumpy.reordering": [Select], "chumpy.ch_ops": [add]}


def _pickle_with_fake_chumpy(build, protocol=2) -> bytes:
    """Pickle ``build(classes)`` while fake ``chumpy`` modules exist; they are removed afterwards,
    so the reader below never has chumpy to import."""
    classes = _fake_chumpy_classes()
    with fake_modules(classes):
        return pickle.dumps(build({cls.__name__: cls for members in classes.values() for cls in members}),
                            protocol=protocol)


def _mano_arrays(v=778, j=16):
    kintree = np.array([[2**32 - 1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14], np.arange(16)], dtype=np.int64)
    weights = RNG.random((v, j))
    return {
        "v_template": RNG.normal(size=(v, 3)) * 0.05,
        "shapedirs": RNG.normal(size=(v, 3, 10)) * 1e-3,
        "posedirs": RNG.normal(size=(v, 3, 9 * (j - 1))) * 1e-3,
        "J_regressor": RNG.random((j, v)) * (RNG.random((j, v)) < 0.03),
        "kintree_table": kintree,
        "weights": weights / weights.sum(1, keepdims=True),
        "f": RNG.integers(0, v, size=(1538, 3)),
        "hands_components": RNG.normal(size=(45, 45)),
        "hands_mean": RNG.normal(size=45),
    }


def _official_like(arrays, cls):
    """MANO pkl as distributed: chumpy arrays, a sparse J_regressor, derived chumpy nodes."""
    d = dict(arrays)
    d["v_template"] = cls["Ch"](arrays["v_template"])
    d["shapedirs"] = cls["Ch"](arrays["shapedirs"])
    d["weights"] = cls["add"](cls["Ch"](arrays["weights"] - 1.0), cls["Ch"](np.ones_like(arrays["weights"])))
    d["hands_mean"] = cls["Select"](cls["Ch"](arrays["hands_mean"][::-1].copy()), np.arange(45)[::-1], (45,))
    d["J_regressor"] = scipy.sparse.csc_matrix(arrays["J_regressor"])
    return d


@pytest.mark.parametrize("protocol", [0, 2])
def test_chumpy_and_sparse_become_numpy(tmp_path, protocol):
    arrays = _mano_arrays()
    data = _pickle_with_fake_chumpy(lambda cls: _official_like(arrays, cls), protocol)
    assert b"chumpy.ch" in data and b"csc_matrix" in data
    assert "chumpy" not in sys.modules
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(data)
    mano = load_mano(tmp_path, side="right")
    for key in ("v_template", "shapedirs", "weights", "hands_mean", "J_regressor", "posedirs", "f"):
        assert type(mano[key]) is np.ndarray, key
        np.testing.assert_allclose(mano[key], arrays[key], atol=1e-12, err_msg=key)
    assert "chumpy" not in sys.modules


def test_csr_matrix_rebuilt():
    dense = RNG.random((5, 7)) * (RNG.random((5, 7)) < 0.4)
    out = restricted_loads(pickle.dumps({"m": scipy.sparse.csr_matrix(dense)}))
    np.testing.assert_array_equal(out["m"], dense)


class _Smuggler:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("func", [os.system, eval, getattr(__import__("subprocess"), "getoutput")])
def test_code_execution_is_refused(tmp_path, func):
    marker = tmp_path / "ran"
    payload = f"open({str(marker)!r}, 'w')" if func is eval else f"touch {marker}"
    arrays = _mano_arrays()
    arrays["v_template"] = _Smuggler(func, payload)
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(pickle.dumps(arrays, protocol=2))
    with pytest.raises(RestrictedUnpicklingError, match="refusing to load global"):
        load_mano(tmp_path)
    assert not marker.exists()


def test_unknown_class_refused():
    class Thing:
        pass

    Thing.__module__, Thing.__qualname__ = __name__, "Thing"
    globals()["Thing"] = Thing
    try:
        data = pickle.dumps({"a": Thing()})
    finally:
        del globals()["Thing"]
    with pytest.raises(RestrictedUnpicklingError, match="Thing"):
        restricted_loads(data)


def test_validation_names_key_and_shape(tmp_path):
    arrays = _mano_arrays()
    arrays["posedirs"] = arrays["posedirs"][:, :, :100]
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(pickle.dumps(arrays))
    with pytest.raises(ModelFilesMissing, match="posedirs has shape"):
        load_mano(tmp_path)
    del arrays["weights"]
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(pickle.dumps(arrays))
    with pytest.raises(ModelFilesMissing, match="missing keys \\['weights'\\]"):
        load_mano(tmp_path)
    with pytest.raises(ModelFilesMissing, match="not found"):
        load_mano(tmp_path / "nowhere")


def test_left_shapedirs_fix_detected_against_right(tmp_path):
    right = _mano_arrays()
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(pickle.dumps(right))
    buggy = dict(right)  # left model whose shapedirs x components were not mirrored
    (tmp_path / "MANO_LEFT.pkl").write_bytes(pickle.dumps(buggy))
    fixed = load_mano(tmp_path, side="left")
    np.testing.assert_array_equal(fixed["shapedirs"][:, 0], -right["shapedirs"][:, 0])
    np.testing.assert_array_equal(fixed["shapedirs"][:, 1:], right["shapedirs"][:, 1:])

    good = dict(right)
    good["shapedirs"] = right["shapedirs"] * np.array([-1.0, 1.0, 1.0])[None, :, None]
    (tmp_path / "MANO_LEFT.pkl").write_bytes(pickle.dumps(good))
    np.testing.assert_array_equal(load_mano(tmp_path, side="left")["shapedirs"], good["shapedirs"])
    assert np.array_equal(load_mano(tmp_path, side="left", fix_left_shapedirs=True)["shapedirs"][:, 0], right["shapedirs"][:, 0])


def test_layer_arrays_layout(shared):
    mano = load_mano(shared("fixtures", "wilor_parity", "mano"))
    layer = mano_layer_arrays(mano)
    assert layer["posedirs"].shape == (135, 778 * 3)
    assert layer["parents"][0] == -1 and list(layer["parents"][1:4]) == [0, 1, 2]
    # posedirs row p, column 3 v + c is the pickle's posedirs[v, c, p].
    np.testing.assert_array_equal(layer["posedirs"][7, 3 * 5 + 2], mano["posedirs"][5, 2, 7])


def test_smplx_npz_with_object_entries(tmp_path):
    v, j = 40, 55
    weights = RNG.random((v, j))
    arrays = {
        "v_template": RNG.normal(size=(v, 3)), "shapedirs": RNG.normal(size=(v, 3, 20)),
        "posedirs": RNG.normal(size=(v, 3, 9 * (j - 1))), "J_regressor": RNG.random((j, v)),
        "kintree_table": np.stack([np.r_[-1, np.zeros(j - 1)], np.arange(j)]).astype(np.int64),
        "weights": weights, "f": RNG.integers(0, v, (60, 3)),
        "hands_componentsl": np.eye(45), "hands_componentsr": np.eye(45),
        "hands_meanl": np.zeros(45), "hands_meanr": np.zeros(45),
        "joint2num": np.array({"pelvis": 0, "head": 15}, dtype=object),
    }
    np.savez(tmp_path / "SMPLX_NEUTRAL.npz", **arrays)
    model = load_smplx(tmp_path, gender="neutral")
    np.testing.assert_array_equal(model["posedirs"], arrays["posedirs"])
    assert model["joint2num"].item() == {"pelvis": 0, "head": 15}
    with pytest.raises(ModelFilesMissing, match="J_regressor has shape"):
        bad = dict(arrays, J_regressor=np.zeros((54, v)))
        np.savez(tmp_path / "SMPLX_MALE.npz", **bad)
        load_smplx(tmp_path, gender="male")
