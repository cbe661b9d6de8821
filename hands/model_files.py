"""Loading the official MANO and SMPL-X model files without chumpy and without running pickled code.

The official ``MANO_*.pkl`` / ``SMPLX_*.pkl`` files are Python-2 pickles that hold chumpy arrays and
a scipy sparse ``J_regressor``. They are read with :class:`RestrictedUnpickler`, which resolves only
a fixed set of globals: chumpy array classes and scipy sparse matrices become inert stand-ins that
are turned into plain numpy arrays afterwards, numpy's array/dtype reconstruction is allowed, and
every other global (``os.system``, ``builtins.eval``, any other class) is refused with
:class:`RestrictedUnpicklingError`. ``.npz`` variants are read with ``allow_pickle=False``; their
few object entries (SMPL-X's ``joint2num``/``part2num`` dicts) go through the same unpickler.

Arrays come back with the keys of the file. Units: metres. MANO: 778 vertices, 16 joints;
SMPL-X: 10475 vertices, 55 joints.
"""

from __future__ import annotations

import io
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from omnimocap.errors import ModelFilesMissing

MANO_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights", "f")
SMPLX_KEYS = MANO_KEYS + ("hands_componentsl", "hands_componentsr", "hands_meanl", "hands_meanr")
MANO_NUM_JOINTS = 16
SMPLX_NUM_JOINTS = 55
SMPLX_GENDERS = ("neutral", "male", "female")


class RestrictedUnpicklingError(ModelFilesMissing, pickle.UnpicklingError):
    """A model file holds a pickled object that may not be loaded (it could run code)."""


# --- inert stand-ins -------------------------------------------------------------------------------


class _Pickled:
    """A pickled object of an allowed class: keeps its name, constructor args and state, runs nothing."""

    def __init__(self, name: str, args: tuple = ()):
        self.name = name
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _stand_in(name: str) -> type:
    """What ``find_class`` returns for an allowed class: a class whose construction (REDUCE or
    NEWOBJ) yields a :class:`_Pickled`; nothing of the original class is imported."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Pickled:
        return _Pickled(name, args)

    return type(name.rsplit(".", 1)[1], (), {"__new__": __new__, "stand_in_for": name})


def _reconstructor_safe(cls: Any, base: Any, state: Any) -> _Pickled:
    """Python 2 style ``copy_reg._reconstructor(cls, object, None)`` for allowed classes only."""
    if not hasattr(cls, "stand_in_for") or base is not object:
        raise RestrictedUnpicklingError(f"copy_reg._reconstructor({cls!r}, {base!r}) is not allowed")
    return cls()


def _codecs_encode_safe(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes; only latin-1 is accepted."""
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise RestrictedUnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


# Builtins that only build data (older pickles reduce sets and slices through them).
_INERT_BUILTINS = {"object": object, "set": set, "frozenset": frozenset, "slice": slice, "complex": complex}
_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray", "numpy")
_SPARSE_FORMATS = {"csc_matrix": "csc", "csr_matrix": "csr", "csc_array": "csc", "csr_array": "csr"}


def _is_chumpy(module: str) -> bool:
    return module == "chumpy" or module.startswith("chumpy.")


def _is_scipy_sparse(module: str, name: str) -> bool:
    return module.startswith("scipy.sparse") and name in _SPARSE_FORMATS


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for model files: allows numpy arrays/dtypes/scalars, chumpy arrays and scipy sparse
    matrices (as inert stand-ins), and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if module in _NUMPY_MODULES and name in ("_reconstruct", "scalar"):
            return getattr(np._core.multiarray, name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module.startswith("numpy") and name.endswith("DType") and name[:1].isupper():
            return getattr(np.dtypes, name)  # numpy >= 1.25 pickles dtypes by their DType class
        if module in ("copyreg", "copy_reg") and name == "_reconstructor":
            return _reconstructor_safe
        if module in ("builtins", "__builtin__") and name in _INERT_BUILTINS:
            return _INERT_BUILTINS[name]
        if module == "_codecs" and name == "encode":
            return _codecs_encode_safe
        if _is_chumpy(module) or _is_scipy_sparse(module, name):
            return _stand_in(f"{module}.{name}")
        raise RestrictedUnpicklingError(
            f"refusing to load global {module}.{name}: model files may only contain numpy arrays, "
            "chumpy arrays and scipy sparse matrices"
        )


# --- converting stand-ins to numpy -----------------------------------------------------------------


def _state_dict(obj: _Pickled) -> dict:
    state = obj.state
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
        state = state[0]  # (dict state, slot state)
    if not isinstance(state, dict):
        raise RestrictedUnpicklingError(f"{obj.name}: unexpected pickled state of type {type(state).__name__}")
    return state


def _sparse_to_dense(obj: _Pickled) -> np.ndarray:
    state = _state_dict(obj)
    shape = tuple(int(v) for v in state.get("_shape", state.get("shape", ())))
    data = np.asarray(_to_numpy(state["data"]))
    indices = np.asarray(_to_numpy(state["indices"]), dtype=np.int64)
    indptr = np.asarray(_to_numpy(state["indptr"]), dtype=np.int64)
    fmt = _SPARSE_FORMATS[obj.name.rsplit(".", 1)[1]]
    out = np.zeros(shape, dtype=data.dtype)
    major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    if fmt == "csr":
        np.add.at(out, (major, indices), data)
    else:
        np.add.at(out, (indices, major), data)
    return out


def _chumpy_to_numpy(obj: _Pickled) -> np.ndarray:
    """The value of a pickled chumpy expression. Plain ``Ch`` arrays keep it under ``x``; the
    common derived nodes (elementwise arithmetic, Select, Reshape, transpose) are evaluated."""
    state = _state_dict(obj)
    kind = obj.name.rsplit(".", 1)[1]
    if "x" in state:
        return np.asarray(_to_numpy(state["x"]))
    a = np.asarray(_to_numpy(state["a"])) if "a" in state else None
    b = np.asarray(_to_numpy(state["b"])) if "b" in state else None
    ops = {"add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide, "power": np.power}
    if kind in ops and a is not None and b is not None:
        return ops[kind](a, b)
    if kind == "Select" and a is not None:
        out = a.ravel()[np.asarray(_to_numpy(state["idxs"]), dtype=np.int64)]
        shape = state.get("preferred_shape")
        return out.reshape(shape) if shape is not None else out
    if kind == "Reshape" and a is not None:
        return a.reshape(state["newshape"])
    if kind == "transpose" and a is not None:
        return np.transpose(a, state.get("axes"))
    raise RestrictedUnpicklingError(f"unsupported chumpy node {obj.name} (state keys {sorted(state)})")


def _to_numpy(obj: Any) -> Any:
    """Replace stand-ins inside a loaded structure by numpy arrays (recursively)."""
    if isinstance(obj, _Pickled):
        if _is_chumpy(obj.name.rsplit(".", 1)[0]):
            return _chumpy_to_numpy(obj)
        return _sparse_to_dense(obj)
    if isinstance(obj, dict):
        return {k: _to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_numpy(v) for v in obj)
    return obj


def restricted_loads(data: bytes) -> Any:
    """Unpickle bytes with :class:`RestrictedUnpickler` (Python 2 strings as latin-1) and turn
    chumpy / sparse stand-ins into numpy arrays."""
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except RestrictedUnpicklingError:
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, KeyError) as exc:
        raise RestrictedUnpicklingError(f"not a readable model pickle: {exc}") from exc
    return _to_numpy(obj)


# --- files -----------------------------------------------------------------------------------------


def _load_npz(path: Path) -> dict[str, Any]:
    """An .npz without ``allow_pickle``: object entries are read through the restricted unpickler."""
    out: dict[str, Any] = {}
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            if not member.endswith(".npy"):
                continue
            with zf.open(member) as fh:
                raw = fh.read()
            key = member[: -len(".npy")]
            stream = io.BytesIO(raw)
            version = np.lib.format.read_magic(stream)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            _, _, dtype = read_header(stream)
            if dtype.hasobject:
                out[key] = restricted_loads(stream.read())
            else:
                out[key] = np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    return out


def _read_model_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelFilesMissing("model file not found", path=path, fix="run `omnimocap models status` for where it belongs")
    try:
        if path.suffix == ".npz":
            data = _load_npz(path)
        else:
            data = restricted_loads(path.read_bytes())
    except RestrictedUnpicklingError as exc:
        raise RestrictedUnpicklingError(exc.problem, path=path, fix="use the official file from the model's website") from exc
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError) as exc:
        raise ModelFilesMissing(f"cannot read the model file: {exc}", path=path, fix="download it again") from exc
    if not isinstance(data, dict):
        raise ModelFilesMissing(f"expected a dict of arrays, found {type(data).__name__}", path=path)
    return data


def _validate(data: dict[str, Any], keys: tuple[str, ...], num_joints: int, path: Path) -> dict[str, Any]:
    missing = [k for k in keys if k not in data]
    if missing:
        raise ModelFilesMissing(f"missing keys {missing}", path=path, fix="this is not an official model file")
    out = dict(data)
    for key in keys:
        out[key] = np.asarray(data[key])
    v = out["v_template"].shape[0]
    expect = {
        "v_template": (v, 3),
        "J_regressor": (num_joints, v),
        "kintree_table": (2, num_joints),
        "weights": (v, num_joints),
    }
    for key, shape in expect.items():
        if out[key].shape != shape:
            raise ModelFilesMissing(f"{key} has shape {out[key].shape}, expected {shape}", path=path)
    sd, pd, f = out["shapedirs"].shape, out["posedirs"].shape, out["f"].shape
    if len(sd) != 3 or sd[:2] != (v, 3):
        raise ModelFilesMissing(f"shapedirs has shape {sd}, expected ({v}, 3, n)", path=path)
    if pd != (v, 3, 9 * (num_joints - 1)):
        raise ModelFilesMissing(f"posedirs has shape {pd}, expected {(v, 3, 9 * (num_joints - 1))}", path=path)
    if len(f) != 2 or f[1] != 3 or (f[0] and (out["f"].min() < 0 or out["f"].max() >= v)):
        raise ModelFilesMissing(f"f (faces) has shape {f} or indices outside 0..{v - 1}", path=path)
    return out


def _mano_path(path_or_dir: str | Path, side: str) -> Path:
    path = Path(path_or_dir)
    if path.is_dir():
        for name in (f"MANO_{side.upper()}.pkl", f"MANO_{side.upper()}.npz"):
            if (path / name).is_file():
                return path / name
        return path / f"MANO_{side.upper()}.pkl"
    return path


def _left_shapedirs_buggy(left: dict[str, np.ndarray], path: Path) -> bool:
    """The official MANO_LEFT shapedirs carry the right hand's x sign. With MANO_RIGHT beside the
    file the test is direct: the x components equal the right model's instead of their negation.
    Without it the file is taken to be the official one and the fix applies."""
    right_path = _mano_path(path.parent, "right")
    if not right_path.is_file() or right_path == path:
        return True
    right = _read_model_file(right_path)
    rx = np.asarray(right["shapedirs"])[:, 0, :]
    lx = left["shapedirs"][:, 0, :]
    if rx.shape != lx.shape:
        return True
    return float(np.abs(lx - rx).sum()) < float(np.abs(lx + rx).sum())


def load_mano(path_or_dir: str | Path, side: str = "right", fix_left_shapedirs: bool | None = None) -> dict[str, np.ndarray]:
    """MANO model arrays (pkl keys: v_template (778, 3), shapedirs (778, 3, 10), posedirs
    (778, 3, 135), J_regressor (16, 778) dense, kintree_table (2, 16), weights (778, 16), f, and
    hands_components / hands_mean when present) from a file or a folder holding
    ``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl`` (or ``.npz``).

    For ``side="left"`` the known shapedirs sign bug is fixed (``shapedirs[:, 0, :] *= -1``) when
    detected (see :func:`_left_shapedirs_buggy`); ``fix_left_shapedirs`` forces the choice."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    path = _mano_path(path_or_dir, side)
    data = _validate(_read_model_file(path), MANO_KEYS, MANO_NUM_JOINTS, path)
    if side == "left":
        fix = _left_shapedirs_buggy(data, path) if fix_left_shapedirs is None else fix_left_shapedirs
        if fix:
            data["shapedirs"] = data["shapedirs"].copy()
            data["shapedirs"][:, 0, :] *= -1
    return data


def load_smplx(path: str | Path, gender: str = "neutral") -> dict[str, Any]:
    """SMPL-X model arrays (v_template (10475, 3), shapedirs (10475, 3, 400), posedirs
    (10475, 3, 486), J_regressor (55, 10475) dense, kintree_table, weights, f, hand PCA bases and
    means, landmark arrays) from a file or a folder holding ``SMPLX_<GENDER>.npz`` (or ``.pkl``)."""
    if gender not in SMPLX_GENDERS:
        raise ValueError(f"gender must be one of {SMPLX_GENDERS}, got {gender!r}")
    p = Path(path)
    if p.is_dir():
        candidates = [p / f"SMPLX_{gender.upper()}.npz", p / f"SMPLX_{gender.upper()}.pkl"]
        p = next((c for c in candidates if c.is_file()), candidates[0])
    return _validate(_read_model_file(p), SMPLX_KEYS, SMPLX_NUM_JOINTS, p)


def mano_layer_arrays(mano: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """MANO file arrays in the layout of a MANO layer's buffers: posedirs (135, 778*3), parents
    (16,) with -1 for the root, lbs_weights; float32 like the file."""
    posedirs = mano["posedirs"]
    parents = np.asarray(mano["kintree_table"][0], dtype=np.int64).copy()
    parents[0] = -1
    return {
        "v_template": np.asarray(mano["v_template"], dtype=np.float32),
        "shapedirs": np.asarray(mano["shapedirs"], dtype=np.float32),
        "posedirs": np.asarray(posedirs.reshape(-1, posedirs.shape[-1]).T, dtype=np.float32),
        "J_regressor": np.asarray(mano["J_regressor"], dtype=np.float32),
        "lbs_weights": np.asarray(mano["weights"], dtype=np.float32),
        "parents": parents,
    }
