"""WiLoR's hand detector and its association with the skeleton-predicted hand.

The detector is the authors' ultralytics YOLOv8 pose model (``detector.pt``): class 0 = left hand,
1 = right hand; only boxes, classes and confidences are used. Boxes are pixels (x0, y0, x1, y1) of
the image they were found in.

Defaults follow the official WiLoR ``demo.py`` (github.com/rolpotamias/WiLoR), which calls
``detector(img, conf=0.3, verbose=False)`` once per image: confidence 0.3, and the NMS IoU left at
ultralytics' default 0.7 (the 0.5 seen elsewhere is the Gradio demo's ``app.py``). Each call
letterboxes its image on its own (scaled to the checkpoint's training size, 640 by default, on
the long side, the short side padded to a multiple of the stride); :meth:`HandDetector.detect` batches only images of one size, for which one batched call
letterboxes exactly as per-image calls do.

Loading never unpickles arbitrary objects. ultralytics' ``YOLO(path)`` runs ``torch.load`` with
weights-only loading switched off, so a crafted file would run its code. :func:`load_detector_checkpoint`
first lists the pickle's globals by scanning its opcodes (nothing is imported or run), refuses the
file unless every global is one of :data:`DETECTOR_GLOBALS` (the torch and ultralytics module
classes of a YOLOv8-pose checkpoint), then reads it with torch's weights-only unpickler with exactly
those classes allowed. Modules of allowed classes are rebuilt from their pickled attributes only
(``object.__new__`` plus ``nn.Module.__setstate__``): a pickled call of an allowed class with
constructor arguments is refused, so no ``__init__`` runs with arguments of the file's choosing.
"""

from __future__ import annotations

import importlib
import io
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from omnimocap.errors import ModelFilesMissing
from omnimocap.hands.estimator import Detections  # noqa: F401  (the detector's result type)
from omnimocap.hands.model_files import RestrictedUnpicklingError

DETECTOR_CONF = 0.3  # official demo.py
DETECTOR_IOU = 0.7  # ultralytics' default NMS IoU: demo.py passes none
GATE_IOU = 0.1  # a detection overlapping the predicted box at least this much is a candidate ...
GATE_CENTER = 0.5  # ... as is one whose centre is within this fraction of the predicted box's diagonal

# Every class a YOLOv8-pose checkpoint (``model`` / ``ema`` entries, as ultralytics saves them)
# pickles besides tensors and plain containers; torch's own rebuild functions are allowed by
# weights-only loading itself.
DETECTOR_GLOBALS = (
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
_FIX = "use the official detector.pt (omnimocap models download)"


def _instance_name(name: str) -> str:
    """The allow-list key under which a class's instances are accepted (BUILD); it is no module path,
    and the global scan refuses any name outside DETECTOR_GLOBALS, so no pickle can name it."""
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

    return type(cls.__name__, (), {"__new__": __new__, "__module__": __name__})


def _allowed_classes() -> list[tuple[Any, str]]:
    """The weights-only allow-list for DETECTOR_GLOBALS, from the installed torch / ultralytics
    (never from the file): each name resolves to a no-argument factory, and the real class is
    allowed only as the type of an instance receiving its pickled attributes."""
    import torch

    out: list[tuple[Any, str]] = []
    for name in DETECTOR_GLOBALS:
        module, _, qualname = name.rpartition(".")
        cls = getattr(importlib.import_module(module), qualname, None)
        if isinstance(cls, type) and issubclass(cls, torch.nn.Module):
            out += [(_without_arguments(cls, name), name), (cls, _instance_name(name))]
    return out


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise ModelFilesMissing("the hand detector's weights are missing", path=path,
                                fix="run `omnimocap models download`")
    data = path.read_bytes()
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise ModelFilesMissing("not a torch model archive", path=path, fix="download it again")
    return data


def detector_globals(path: str | Path, data: bytes | None = None) -> list[str]:
    """Names of the globals (besides torch's own allowed ones) the checkpoint's pickle refers to,
    found by scanning its opcodes; nothing is imported or run. ``data``: the file's bytes when
    already read. Raises ModelFilesMissing when the file is not a torch zip archive."""
    import torch

    path = Path(path)
    data = _read(path) if data is None else data
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data)))
    except (RuntimeError, ValueError, OSError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
        raise ModelFilesMissing(f"not a readable torch model archive ({exc})", path=path,
                                fix="download it again") from exc


def load_detector_checkpoint(path: str | Path) -> dict[str, Any]:
    """The detector checkpoint's top-level dict, read weights-only on the CPU with the YOLOv8-pose
    module classes allowed; ``"model"`` is the network (float32, eval mode). Raises
    RestrictedUnpicklingError naming the globals of a file that needs anything else, and
    ModelFilesMissing for a file that is not a detector checkpoint."""
    import torch

    path = Path(path)
    data = _read(path)  # scanned and loaded from the same bytes
    refused = [g for g in detector_globals(path, data) if g not in DETECTOR_GLOBALS]
    if refused:
        raise RestrictedUnpicklingError(
            f"refused to unpickle global {', '.join(refused)}: a hand detector may only hold the YOLOv8-pose "
            "module classes and tensors, never objects that could run code", path=path, fix=_FIX)
    try:
        with torch.serialization.safe_globals(_allowed_classes()):
            ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # the scan passed, the unpickler refused (e.g. a constructor call)
        reason = next((line.strip() for line in str(exc).splitlines() if "global" in line.lower()
                       or "reduce" in line.lower()), type(exc).__name__)
        raise RestrictedUnpicklingError(f"refused to unpickle: {reason}", path=path, fix=_FIX) from exc
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError) as exc:
        raise ModelFilesMissing(f"not a readable detector checkpoint ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''})", path=path,
                                fix="download it again") from exc
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    pose_model = importlib.import_module("ultralytics.nn.tasks").PoseModel
    if not isinstance(model, pose_model):
        raise ModelFilesMissing("no YOLOv8-pose model under 'model' or 'ema' in the detector checkpoint",
                                path=path, fix=_FIX)
    nc = len(getattr(model, "names", {}) or {})
    if nc != 2:
        raise ModelFilesMissing(f"the detector has {nc} classes, a hand detector has 2 (left, right)", path=path,
                                fix=_FIX)
    model = model.float().eval()
    for m in model.modules():  # what ultralytics' own loader adjusts after loading
        if hasattr(m, "inplace"):
            m.inplace = True
        elif isinstance(m, torch.nn.Upsample) and not hasattr(m, "recompute_scale_factor"):
            m.recompute_scale_factor = None
    ckpt["model"] = model
    return ckpt


def _train_imgsz(ckpt: dict[str, Any]) -> int | list[int]:
    """The inference size ultralytics takes from a checkpoint: ``train_args["imgsz"]`` (640 if absent)."""
    args = ckpt.get("train_args")
    value = args.get("imgsz", 640) if isinstance(args, dict) else 640
    if isinstance(value, int) and 32 <= value <= 4096:
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and 32 <= v <= 4096 for v in value):
        return list(value)
    return 640


class HandDetector:
    """The WiLoR YOLO hand detector (loaded safely, see the module docstring), run through
    ultralytics' pose predictor with the official demo's settings."""

    def __init__(self, weights: str | Path, device: str = "cpu", conf: float = DETECTOR_CONF, iou: float = DETECTOR_IOU):
        self.weights = Path(weights)
        ckpt = load_detector_checkpoint(self.weights)
        self.model = ckpt["model"]
        self.imgsz = _train_imgsz(ckpt)
        self.device = device
        self.conf = conf
        self.iou = iou
        self._predictor = None

    def _predict(self, images: list[np.ndarray]) -> list:
        import torch

        threads = torch.get_num_threads()  # ultralytics' CPU device selection sets it to cores - 1 process-wide
        try:
            return self._predict_unguarded(images)
        finally:
            torch.set_num_threads(threads)

    def _predict_unguarded(self, images: list[np.ndarray]) -> list:
        if self._predictor is None:
            from ultralytics.models.yolo.pose import PosePredictor

            # What YOLO(path).predict(img, conf=..., verbose=False) runs: rect letterboxing, the checkpoint's imgsz.
            self._predictor = PosePredictor(overrides={
                "task": "pose", "mode": "predict", "imgsz": self.imgsz, "conf": self.conf, "iou": self.iou,
                "batch": 1, "rect": True, "save": False, "verbose": False, "device": self.device})
            self._predictor.setup_model(self.model, verbose=False)
        return self._predictor(source=images, model=self.model)

    def detect(self, images_bgr: Sequence[np.ndarray]) -> list[Detections]:
        """Detections for each BGR uint8 image: one batched call per image size, which letterboxes
        each image as the official demo's per-image call does."""
        out: list[Detections | None] = [None] * len(images_bgr)
        groups: dict[tuple, list[int]] = {}
        for i, img in enumerate(images_bgr):
            groups.setdefault(tuple(np.shape(img)), []).append(i)
        for idx in groups.values():
            for i, r in zip(idx, self._predict([images_bgr[i] for i in idx])):
                b = r.boxes
                out[i] = Detections(
                    boxes_xyxy=b.xyxy.detach().cpu().numpy().astype(np.float64),
                    is_right=b.cls.detach().cpu().numpy().astype(int) == 1,
                    confidence=b.conf.detach().cpu().numpy().astype(np.float64),
                )
        return out  # type: ignore[return-value]


@dataclass
class Association:
    """The box a hand is reconstructed from, and why."""

    box_xyxy: np.ndarray  # (4,) pixels
    is_right: bool  # the skeleton's side: it knows which arm the view follows
    confidence: float  # detector confidence, 0 when the predicted box is used
    detected: bool
    notes: list[str] = field(default_factory=list)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) against boxes (n, 4)."""
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[0], b[:, 0])
    y0 = np.maximum(a[1], b[:, 1])
    x1 = np.minimum(a[2], b[:, 2])
    y1 = np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: np.clip(r[..., 2] - r[..., 0], 0, None) * np.clip(r[..., 3] - r[..., 1], 0, None)
    union = area(np.asarray(a, dtype=np.float64)) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def associate(dets: Detections, predicted_box: np.ndarray, side: str) -> Association:
    """Choose the detection that belongs to the skeleton-predicted hand.

    Candidates overlap the predicted box (IoU >= GATE_IOU) or have their centre within GATE_CENTER
    of its diagonal. Among them a detection of the predicted side wins over one of the other side,
    then higher IoU, then the nearer centre. With no candidate the predicted box is used.

    Handedness: the skeleton's side always wins. When the chosen detection's class disagrees (no
    candidate of the skeleton's side), its box is still used, as evidence of where the hand is, but
    the hand is reconstructed as the skeleton's side (mirrored when left) and labelled so, with a
    note. Why: the view is centred on that side's wrist, which the body tracker follows along the
    whole arm, while the detector judges a small crop, where the back of one hand looks like the
    palm of the other; choosing the detector's side would mirror the crop and return the other
    hand's pose (about 180 degrees off) for this wrist. Consequently the wilor backend never hands
    the pipeline a label that disagrees with the request's side."""
    pred = np.asarray(predicted_box, dtype=np.float64)
    want_right = side == "right"
    if len(dets.boxes_xyxy):
        iou = box_iou(pred, dets.boxes_xyxy)
        diag = float(np.hypot(pred[2] - pred[0], pred[3] - pred[1])) or 1.0
        centers = (dets.boxes_xyxy[:, :2] + dets.boxes_xyxy[:, 2:]) / 2
        dist = np.linalg.norm(centers - (pred[:2] + pred[2:]) / 2, axis=1) / diag
        ok = (iou >= GATE_IOU) | (dist <= GATE_CENTER)
        if ok.any():
            same = dets.is_right == want_right
            order = np.lexsort((dist, -iou, ~same))  # last key is the primary one
            best = int(next(i for i in order if ok[i]))
            notes = []
            if not same[best]:
                found = "right" if dets.is_right[best] else "left"
                notes.append(f"detector classified the hand as {found}, skeleton says {side}: skeleton side used")
            return Association(dets.boxes_xyxy[best].copy(), want_right, float(dets.confidence[best]), True, notes)
    note = "detector found no hand near the predicted one: predicted box used"
    return Association(pred.copy(), want_right, 0.0, False, [note])
