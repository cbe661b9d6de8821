"""Reading an ultralytics YOLO checkpoint (the hand detector's ``detector.pt``, the body keypoint
model's ``yolo11n-pose.pt``) without unpickling arbitrary objects.

ultralytics' ``YOLO(path)`` runs ``torch.load`` with weights-only loading switched off, so a crafted
file would run its code. :func:`load_yolo_checkpoint` first lists the pickle's globals by scanning
its opcodes (nothing is imported or run) and refuses the file unless every global is on the caller's
allow-list; then it reads the file with torch's weights-only unpickler with exactly those globals
allowed. Modules of allowed classes are rebuilt from their pickled attributes only
(``object.__new__`` plus ``nn.Module.__setstate__``): a pickled call of an allowed class with
constructor arguments is refused, so no ``__init__`` runs with arguments of the file's choosing.

Checkpoints written by earlier ultralytics versions (the official releases among them) also pickle
a little plain data, allowed here in a form that cannot reach code (:data:`LEGACY_DATA_GLOBALS`,
the data globals ultralytics' own restricted loader lists for its official checkpoints): the head's
``Detect.forward`` (as ``getattr(Detect, "forward")``; only ``forward`` / ``forward_fuse`` of an
allowed module class resolve), numpy scalars of numeric dtypes in the training metrics, the
settings namespace (built empty, then given its pickled attributes) and file paths (built from
strings only; building a path touches no file).
"""

from __future__ import annotations

import importlib
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, Sequence

from omnimocap.errors import ModelFilesMissing
from omnimocap.hands.model_files import RestrictedUnpicklingError

# The classes of a YOLOv8-pose network besides tensors and plain containers; torch's own rebuild
# functions are allowed by weights-only loading itself.
YOLOV8_POSE_GLOBALS = (
    "ultralytics.nn.tasks.PoseModel",
    "ultralytics.nn.modules.conv.Conv",
    "ultralytics.nn.modules.conv.Concat",
    "ultralytics.nn.modules.block.C2f",
    "ultralytics.nn.modules.block.Bottleneck",
    "ultralytics.nn.modules.block.SPPF",
    "ultralytics.nn.modules.block.DFL",
    "ultralytics.nn.modules.head.Pose",
    "torch.nn.modules.conv.Conv2d",
    "torch.nn.modules.batchnorm.BatchNorm2d",
    "torch.nn.modules.activation.SiLU",
    "torch.nn.modules.pooling.MaxPool2d",
    "torch.nn.modules.upsampling.Upsample",
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.container.ModuleList",
)
# What a YOLO11-pose network adds (C3k2 / C2PSA blocks, the depthwise classification head).
YOLO11_POSE_GLOBALS = (
    "ultralytics.nn.modules.block.C3k2",
    "ultralytics.nn.modules.block.C3k",
    "ultralytics.nn.modules.block.C2PSA",
    "ultralytics.nn.modules.block.PSABlock",
    "ultralytics.nn.modules.block.Attention",
    "ultralytics.nn.modules.conv.DWConv",
    "torch.nn.modules.linear.Identity",
)
# Plain data in checkpoints of earlier ultralytics versions (see the module docstring).
LEGACY_DATA_GLOBALS = (
    "builtins.getattr",
    "ultralytics.nn.modules.head.Detect",
    "numpy.dtype",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "ultralytics.utils.IterableSimpleNamespace",
    "ultralytics.yolo.utils.IterableSimpleNamespace",
    "pathlib.PosixPath",
    "pathlib.WindowsPath",
    "pathlib._local.PosixPath",
    "pathlib._local.WindowsPath",
)
_METHODS = ("forward", "forward_fuse")
_NUMERIC_DTYPES = "?bBhHiIlLqQefdgFDG"


def _instance_name(name: str) -> str:
    """The allow-list key under which a class's instances are accepted (BUILD); it is no module path,
    and the global scan refuses any name outside the allow-list, so no pickle can name it."""
    return f"<instance of {name}>"


def _without_arguments(cls: type, name: str) -> type:
    """What a pickled reference to ``cls`` resolves to: calling it (REDUCE) or its ``__new__``
    (NEWOBJ) yields a bare ``cls`` instance, and any constructor argument is refused, so no
    ``__init__`` of the file's choosing runs (ultralytics pickles modules as NEWOBJ with no
    arguments plus their attribute state)."""

    def __new__(factory: type, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            raise pickle.UnpicklingError(f"global {name} called with constructor arguments")
        return object.__new__(cls)

    return type(cls.__name__, (), {"__new__": __new__, "__module__": __name__, "module_class": cls})


def _module_method(owner: Any, name: str) -> Any:
    """``getattr`` as old checkpoints pickle ``Detect.forward``: only ``forward`` / ``forward_fuse``
    of an allowed module class (a plain function; calling it is not unpickling's business)."""
    cls = owner.__dict__.get("module_class") if isinstance(owner, type) else None
    if cls is None or name not in _METHODS:
        what = owner.__name__ if isinstance(owner, type) else type(owner).__name__
        raise pickle.UnpicklingError(f"global builtins.getattr called for {what}.{name}: only forward methods "
                                     "of the allowed module classes may be named")
    return getattr(cls, name)


def _numpy_dtype(spec: Any, align: bool = False, copy: bool = False) -> Any:
    """``numpy.dtype`` as pickled (``dtype('f8', False, True)``), numeric types only."""
    import numpy as np

    if not isinstance(spec, str) or spec.lstrip("<>=|") not in [np.dtype(c).str[1:] for c in _NUMERIC_DTYPES]:
        raise pickle.UnpicklingError(f"global numpy.dtype called for {spec!r}: only numeric dtypes are allowed")
    return np.dtype(spec, align, copy)


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    """A numpy scalar of a numeric dtype from its bytes (what a pickled ``np.float64`` is)."""
    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise pickle.UnpicklingError("global numpy scalar called with a non-numeric dtype")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _namespace(*args: Any, **kwargs: Any) -> Any:
    """An empty ultralytics settings namespace (its attributes come from the pickle's state)."""
    from ultralytics.utils import IterableSimpleNamespace

    if args or kwargs:
        raise pickle.UnpicklingError("global IterableSimpleNamespace called with arguments")
    return IterableSimpleNamespace()


def _path(*parts: Any) -> Path:
    """A file path from its pickled parts, strings only; this machine's path type."""
    if not all(isinstance(p, str) for p in parts):
        raise pickle.UnpicklingError("global pathlib path called with parts that are not strings")
    return Path(*parts)


def _allowed(names: Sequence[str]) -> list[tuple[Any, str]]:
    """The weights-only allow-list for ``names``, from the installed torch / ultralytics / numpy
    (never from the file): each module class resolves to a no-argument factory, and the real class
    is allowed only as the type of an instance receiving its pickled attributes."""
    import numpy as np
    import torch

    out: list[tuple[Any, str]] = []
    for name in names:
        if name == "builtins.getattr":
            out.append((_module_method, name))
        elif name == "numpy.dtype":
            out.append((_numpy_dtype, name))
            out += [(type(np.dtype(c)), _instance_name(f"numpy dtype {c}")) for c in _NUMERIC_DTYPES]
        elif name.startswith("numpy.") and name.endswith(".scalar"):
            out.append((_numpy_scalar, name))
        elif name.endswith(".IterableSimpleNamespace"):
            from ultralytics.utils import IterableSimpleNamespace

            out += [(_namespace, name), (IterableSimpleNamespace, _instance_name(name))]
        elif name.startswith("pathlib."):
            out.append((_path, name))
        else:
            module, _, qualname = name.rpartition(".")
            cls = getattr(importlib.import_module(module), qualname, None)
            if isinstance(cls, type) and issubclass(cls, torch.nn.Module):
                out += [(_without_arguments(cls, name), name), (cls, _instance_name(name))]
    return out


def _read(path: Path, what: str, missing_fix: str) -> bytes:
    if not path.is_file():
        raise ModelFilesMissing(f"{what} weights are missing", path=path, fix=missing_fix)
    data = path.read_bytes()
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise ModelFilesMissing("not a torch model archive", path=path, fix="download it again")
    return data


def checkpoint_globals(path: str | Path, data: bytes | None = None, what: str = "the model's",
                       missing_fix: str = "run `omnimocap models download`") -> list[str]:
    """Names of the globals (besides torch's own allowed ones) the checkpoint's pickle refers to,
    found by scanning its opcodes; nothing is imported or run. ``data``: the file's bytes when
    already read. Raises ModelFilesMissing when the file is missing or not a torch zip archive."""
    import torch

    path = Path(path)
    data = _read(path, what, missing_fix) if data is None else data
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data)))
    except (RuntimeError, ValueError, OSError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
        raise ModelFilesMissing(f"not a readable torch model archive ({exc})", path=path,
                                fix="download it again") from exc


def load_yolo_checkpoint(path: str | Path, allowed: Sequence[str], what: str, fix: str,
                         missing_fix: str = "run `omnimocap models download`") -> dict[str, Any]:
    """The checkpoint's top-level dict, read weights-only on the CPU with the globals ``allowed``
    (and :data:`LEGACY_DATA_GLOBALS`); ``"model"`` is its ultralytics ``PoseModel`` (``ema`` when
    present, as ultralytics' loader prefers it), float32, eval mode, adjusted as ultralytics' loader
    adjusts it. ``what`` names the model in messages ("the hand detector's"), ``fix`` is the fix of a
    refused or wrong file, ``missing_fix`` that of a missing one. Raises RestrictedUnpicklingError
    naming the globals of a file that needs anything else, ModelFilesMissing for a file that is
    missing or holds no pose model."""
    import torch

    path = Path(path)
    names = tuple(allowed) + LEGACY_DATA_GLOBALS
    data = _read(path, what, missing_fix)  # scanned and loaded from the same bytes
    refused = [g for g in checkpoint_globals(path, data, what, missing_fix) if g not in names]
    if refused:
        raise RestrictedUnpicklingError(
            f"refused to unpickle global {', '.join(refused)}: {what} file may only hold the YOLO-pose "
            "module classes and tensors, never objects that could run code", path=path, fix=fix)
    try:
        with torch.serialization.safe_globals(_allowed(names)):
            ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # the scan passed, the unpickler refused (e.g. a constructor call)
        reason = next((line.strip() for line in str(exc).splitlines() if "global" in line.lower()
                       or "reduce" in line.lower()), type(exc).__name__)
        raise RestrictedUnpicklingError(f"refused to unpickle: {reason}", path=path, fix=fix) from exc
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError) as exc:
        raise ModelFilesMissing(f"not a readable YOLO checkpoint ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''})", path=path,
                                fix="download it again") from exc
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    pose_model = importlib.import_module("ultralytics.nn.tasks").PoseModel
    if not isinstance(model, pose_model):
        raise ModelFilesMissing(f"no YOLO-pose model under 'model' or 'ema' in {what} checkpoint", path=path, fix=fix)
    model = model.float().eval()
    for m in model.modules():  # what ultralytics' own loader adjusts after loading
        if hasattr(m, "inplace"):
            m.inplace = True
        elif isinstance(m, torch.nn.Upsample) and not hasattr(m, "recompute_scale_factor"):
            m.recompute_scale_factor = None
    ckpt["model"] = model
    return ckpt


def train_imgsz(ckpt: dict[str, Any]) -> int | list[int]:
    """The inference size ultralytics takes from a checkpoint: ``train_args["imgsz"]`` (640 if absent)."""
    args = ckpt.get("train_args")
    value = args.get("imgsz", 640) if isinstance(args, dict) else 640
    if isinstance(value, int) and 32 <= value <= 4096:
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and 32 <= v <= 4096 for v in value):
        return list(value)
    return 640
