"""A deterministic stand-in for WiLoR's hand detector and the images it is checked on.

The network is ultralytics' own YOLOv8-pose (``yolov8-pose.yaml``, scale n) with WiLoR's detector
head: 2 classes (0 left, 1 right) and 21 hand keypoints of (x, y, visibility) (the 21 is an
assumption: WiLoR's demo reads only boxes and classes). Its weights are drawn from numpy's PCG64
generator (stable across numpy and torch versions), scaled by 1/sqrt(fan-in); the BatchNorm
statistics are estimated on the fixture images so activations stay near unit scale. With
ultralytics' usual class-bias prior no random-weight box would reach the official confidence 0.3,
so the class logits are spread (last class layer x CLASS_GAIN) and shifted (bias CLASS_BIAS): a few
dozen boxes per 640 x 480 image score above 0.3, with duplicates for NMS to remove, one image gives
none. ``python -m tests.tools.detector_fixture`` rewrites tests/data/wilor_detector_fidelity.npz
with the outputs of ultralytics' own ``YOLO(path)`` predictor, called once per image with
``conf=0.3`` as the official demo.py does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SEED = 2026
CLASS_BIAS = -10.0
CLASS_GAIN = 2.5  # spread of the class logits
FIXTURE = Path(__file__).resolve().parents[1] / "data" / "wilor_detector_fidelity.npz"
IMAGE_SHAPES = ((480, 640), (480, 640), (360, 270), (300, 500))  # (H, W); two of one size: batched together


def fixture_images() -> list[np.ndarray]:
    """BGR uint8 images of different sizes: smooth backgrounds with skin-coloured blobs and bars."""
    import cv2

    rng = np.random.default_rng(SEED)
    images = []
    for h, w in IMAGE_SHAPES:
        yy, xx = np.mgrid[0:h, 0:w]
        base = (60 + 80 * np.sin(xx / rng.uniform(30, 90)) * np.cos(yy / rng.uniform(30, 90)))[..., None]
        img = np.clip(base + rng.uniform(0, 80, 3), 0, 255).astype(np.uint8)
        for _ in range(6):
            centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
            axes = (int(rng.uniform(15, 70)), int(rng.uniform(15, 70)))
            colour = tuple(int(c) for c in rng.uniform([60, 90, 150], [120, 160, 240]))
            cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
            x0, y0 = int(rng.uniform(0, w)), int(rng.uniform(0, h))
            cv2.rectangle(img, (x0, y0), (x0 + int(rng.uniform(5, 40)), y0 + int(rng.uniform(20, 90))), colour, -1)
        images.append(img)
    return images


def build_detector(path: Path) -> Path:
    """Write the deterministic detector as ultralytics saves a model (fp16 ``model`` entry)."""
    import cv2
    import torch
    import yaml
    from ultralytics import YOLO
    from ultralytics.utils import ROOT

    cfg = yaml.safe_load((ROOT / "cfg" / "models" / "v8" / "yolov8-pose.yaml").read_text())
    cfg.update(nc=2, kpt_shape=[21, 3])
    cfg_path = Path(path).with_name("yolov8n-pose-hands.yaml")  # scale n, from the name as ultralytics reads it
    cfg_path.write_text(yaml.safe_dump(cfg))
    yolo = YOLO(str(cfg_path), task="pose")
    model = yolo.model
    rng = np.random.default_rng(SEED)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith(("running_var", "running_mean")):
                continue  # estimated below
            elif name.endswith("bias"):
                value = rng.normal(0.0, 0.1, t.shape)
            elif t.ndim == 1:  # BatchNorm scale
                value = rng.uniform(0.8, 1.2, t.shape)
            elif name.endswith("dfl.conv.weight"):
                continue  # the fixed DFL projection 0..15
            else:
                value = rng.normal(0.0, 1.0, t.shape) / np.sqrt(np.prod(t.shape[1:]))
            t.copy_(torch.from_numpy(value))
        # BatchNorm statistics from the fixture images, so activations neither fade nor blow up.
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # cumulative average
        model.train()
        for img in fixture_images():
            x = torch.from_numpy(np.ascontiguousarray(cv2.resize(img, (640, 640))[..., ::-1])).permute(2, 0, 1)
            model(x[None].float() / 255)
        model.eval()
        head = model.model[-1]
        for branch in head.cv3:
            branch[-1].weight.mul_(CLASS_GAIN)
            branch[-1].bias.fill_(CLASS_BIAS)
    model.names = {0: "left", 1: "right"}
    yolo.save(path)
    cfg_path.unlink()
    return Path(path)


def ultralytics_detections(path: Path, images: list[np.ndarray], conf: float = 0.3) -> list[dict[str, np.ndarray]]:
    """Boxes (n, 4) pixels, scores (n,) and classes (n,) from ultralytics' ``YOLO(path)`` called once
    per image, as the official demo does."""
    from ultralytics import YOLO

    yolo = YOLO(str(path), task="pose")
    out = []
    for img in images:
        r = yolo(img, conf=conf, verbose=False)[0]
        out.append({"boxes": r.boxes.xyxy.numpy().astype(np.float64), "scores": r.boxes.conf.numpy().astype(np.float64),
                    "classes": r.boxes.cls.numpy().astype(np.int64)})
    return out


def main() -> None:
    import tempfile

    import ultralytics

    with tempfile.TemporaryDirectory() as tmp:
        path = build_detector(Path(tmp) / "detector.pt")
        images = fixture_images()
        dets = ultralytics_detections(path, images)
        loose = ultralytics_detections(path, images, conf=0.25)
    arrays = {"ultralytics_version": np.array(ultralytics.__version__)}
    for i, d in enumerate(dets):
        arrays.update({f"boxes_{i}": d["boxes"], f"scores_{i}": d["scores"], f"classes_{i}": d["classes"]})
        print(f"image {i} {IMAGE_SHAPES[i]}: {len(d['scores'])} boxes, classes {np.bincount(d['classes'], minlength=2)}, "
              f"scores {d['scores'].min() if len(d['scores']) else None}..{d['scores'].max() if len(d['scores']) else None}, "
              f"{len(loose[i]['scores'])} at conf 0.25")
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(FIXTURE, **arrays)


if __name__ == "__main__":
    main()
