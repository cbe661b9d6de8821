"""Reading the official WiLoR files safely: the Lightning checkpoint, ``model_config.yaml`` and
``mano_mean_params.npz``.

The checkpoint is always read with ``torch.load(..., weights_only=True)``. An official
``wilor_final.ckpt`` also pickles its yacs ``CfgNode`` configuration (and Lightning containers)
under ``hyper_parameters``, which weights-only loading refuses. For those few class names inert
stand-ins are registered with ``torch.serialization.safe_globals``: unpickling one yields a plain
``OrderedDict`` holding the pickled items, and no code of the named class is imported or run. Every
other global stays refused; the refusal becomes a :class:`RestrictedUnpicklingError` naming it.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from omnimocap.errors import ModelFilesMissing
from omnimocap.hands.model_files import RestrictedUnpicklingError

# Classes a Lightning checkpoint of WiLoR may pickle besides tensors; all of them are mappings.
INERT_MAPPING_CLASSES = (
    "yacs.config.CfgNode",
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "lightning.pytorch.utilities.parsing.AttributeDict",
    "lightning_fabric.utilities.data.AttributeDict",
    "lightning.fabric.utilities.data.AttributeDict",
)
IGNORED_PREFIXES = ("discriminator.",)
DEFAULT_BBOX_SHAPE = (192, 256)  # (width, height): the crop aspect the original loader injects


def _inert_mapping(full_name: str) -> type:
    """A stand-in class registered under ``full_name``: constructing it returns an empty
    OrderedDict, which the weights-only unpickler then fills with the pickled items (SETITEMS) and
    whose ``__dict__`` absorbs the pickled attribute state (BUILD)."""
    module, _, qualname = full_name.rpartition(".")

    def __new__(cls, *args: Any, **kwargs: Any) -> OrderedDict:
        return OrderedDict()

    return type(qualname, (), {"__new__": __new__, "__module__": module, "__qualname__": qualname})


_STAND_INS = [_inert_mapping(name) for name in INERT_MAPPING_CLASSES]


def _plain(obj: Any) -> Any:
    """Recursively turn the mappings produced by the stand-ins into plain dicts."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def _refused_globals(path: Path, exc: Exception) -> str:
    """Names of the globals that made weights-only loading fail (found by scanning the pickle's
    opcodes, which runs nothing)."""
    try:
        names = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in INERT_MAPPING_CLASSES]
    except Exception:  # the scan is only for the message; the load has failed either way
        names = []
    if not names:
        names = re.findall(r"GLOBAL (\S+)", str(exc)) or [type(exc).__name__]
    return "global " + ", ".join(names)


def load_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """The checkpoint's top-level dict, read weights-only onto the CPU; ``hyper_parameters`` (when
    present) as plain dicts. Raises ModelFilesMissing / RestrictedUnpicklingError."""
    path = Path(path)
    if not path.is_file():
        raise ModelFilesMissing("WiLoR checkpoint not found", path=path, fix="run `omnimocap models download`")
    mmap = zipfile.is_zipfile(path)  # memory-maps the 2.4 GB official file instead of copying it
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        try:
            with torch.serialization.safe_globals(_STAND_INS):
                ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as exc:
            raise RestrictedUnpicklingError(
                f"refused to unpickle {_refused_globals(path, exc)}: only tensors, plain containers and "
                "configuration mappings are loaded, never objects that could run code",
                path=path,
                fix="use the official wilor_final.ckpt (omnimocap models download)",
            ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise ModelFilesMissing(f"not a readable torch checkpoint: {exc}", path=path, fix="download it again") from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ModelFilesMissing("no 'state_dict' in the checkpoint", path=path, fix="use the official wilor_final.ckpt")
    if "hyper_parameters" in ckpt:
        ckpt["hyper_parameters"] = _plain(ckpt["hyper_parameters"])
    return ckpt


@dataclass
class WilorConfig:
    """The values of ``model_config.yaml`` the model and the crop step use."""

    image_size: int = 256
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    focal_length: float = 5000.0
    bbox_shape: tuple[int, int] = DEFAULT_BBOX_SHAPE
    backbone: dict[str, Any] = field(default_factory=dict)  # optional EMBED_DIM / DEPTH / NUM_HEADS


def load_model_config(path: str | Path) -> WilorConfig:
    """Read ``model_config.yaml`` (plain YAML; ``${...}`` interpolations are left as strings)."""
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ModelFilesMissing(f"cannot read the WiLoR model config: {exc}", path=path,
                                fix="use the model_config.yaml shipped with WiLoR") from exc
    try:
        model = cfg["MODEL"]
        return WilorConfig(
            image_size=int(model["IMAGE_SIZE"]),
            image_mean=tuple(float(v) for v in model["IMAGE_MEAN"]),
            image_std=tuple(float(v) for v in model["IMAGE_STD"]),
            focal_length=float(cfg["EXTRA"]["FOCAL_LENGTH"]),
            bbox_shape=tuple(int(v) for v in model.get("BBOX_SHAPE", DEFAULT_BBOX_SHAPE)),
            backbone=dict(model.get("BACKBONE", {}) or {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFilesMissing(f"missing or invalid entry {exc} in the WiLoR model config", path=path,
                                fix="use the model_config.yaml shipped with WiLoR") from exc


def load_mean_params(path: str | Path) -> dict[str, np.ndarray]:
    """``mano_mean_params.npz``: pose (96,) mean 6D rotations (root first), shape (10,), cam (3,)."""
    path = Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):
        raise ModelFilesMissing("not an .npz archive (corrupt or truncated)", path=path,
                                fix="use mano_mean_params.npz shipped with WiLoR")
    try:
        with np.load(path, allow_pickle=False) as npz:
            out = {k: np.asarray(npz[k], dtype=np.float32).reshape(-1) for k in ("pose", "shape", "cam")}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ModelFilesMissing(f"cannot read the MANO mean parameters: {exc}", path=path,
                                fix="use mano_mean_params.npz shipped with WiLoR") from exc
    if out["pose"].size % 6 or out["cam"].size != 3:
        raise ModelFilesMissing(f"unexpected sizes pose {out['pose'].size}, cam {out['cam'].size}", path=path)
    return out


def split_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Group the checkpoint's tensors by top-level module (backbone, refine_net, mano, other),
    dropping the training-only discriminator."""
    groups: dict[str, dict[str, torch.Tensor]] = {"backbone": {}, "refine_net": {}, "mano": {}, "other": {}}
    for key, value in state_dict.items():
        if key.startswith(IGNORED_PREFIXES):
            continue
        head, _, rest = key.partition(".")
        if head in groups and rest:
            groups[head][rest] = value
        else:
            groups["other"][key] = value
    return groups


def report_key_mismatch(missing: list[str], unexpected: list[str], path: Path | str) -> None:
    """Missing keys are fatal (the model would run with random weights); unexpected ones warn."""
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise ModelFilesMissing(f"checkpoint lacks weights: {shown}", path=path,
                                fix="use the official wilor_final.ckpt")
    if unexpected:
        shown = ", ".join(unexpected[:8]) + (f" and {len(unexpected) - 8} more" if len(unexpected) > 8 else "")
        warnings.warn(f"{path}: ignoring unknown checkpoint entries: {shown}", stacklevel=3)
