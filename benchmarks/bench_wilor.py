"""WiLoR throughput: the batched path (windowed crops, one network call per image) against a
per-hand loop in the manner of the original demo (whole-image blur and mirror, one call per hand).

CPU: the tiny parity checkpoint of ../shared/fixtures/wilor_parity on its demo photo (upscaled 2x,
eight hands, three of them large enough to be blurred). CUDA (when present): full-size random
weights (ViT-H, 1280 x 32), float32 and float16 autocast, batch 1 / 8 / 32, network only.
Writes benchmarks/results/wilor.json.

    python benchmarks/bench_wilor.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from omnimocap.hands.wilor import load_wilor, postprocess, reconstruct
from omnimocap.hands.wilor.crop import _affine, crop_boxes, normalize_crops
from omnimocap.hands.wilor.model import ManoLayer, WilorDims, WilorModel

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OMNIMOCAP_SHARED", REPO.parent / "shared"))


def per_hand_loop(model, image, boxes, is_right):
    """The original demo's structure: per hand, blur the whole image when needed, mirror the whole
    image for left hands, warp, normalise, run the network on one crop."""
    hands = []
    h, w = image.shape[:2]
    for box in crop_boxes(boxes, is_right, 2.0, model.bbox_shape):
        img = image
        if box.blur_sigma > 0:
            img = gaussian_filter(image.astype(np.float64), (box.blur_sigma, box.blur_sigma, 0), mode="nearest", truncate=4.0)
        cx = box.center[0]
        if not box.is_right:
            img = np.ascontiguousarray(img[:, ::-1])
            cx = np.float32(w - cx - 1)
        patch = cv2.warpAffine(img, _affine(cx, box.center[1], box.size, 256), (256, 256), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        x = torch.from_numpy(normalize_crops(patch[None, :, :, ::-1].astype(np.float32), model.image_mean, model.image_std))
        with torch.inference_mode():
            out = model(x)
        hands += postprocess(model, out, [box], (w, h))
    return hands


def timed(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cpu_bench(repeats):
    folder = SHARED / "fixtures" / "wilor_parity"
    model = load_wilor(folder / "wilor_tiny.ckpt", folder / "model_config.yaml")
    photo = np.load(folder / "pipeline_inputs.npz")["image_0"]
    image = cv2.resize(photo, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    base = np.array([[265, 160, 395, 280], [50, 215, 140, 345], [10, 150, 290, 360], [300, 40, 420, 150]], np.float32)
    boxes = np.concatenate([base * 2, base * 2 + np.float32([40, 10, 40, 10])])
    is_right = np.array([1, 0, 0, 1, 1, 0, 1, 0], np.float32)
    n = len(boxes)
    blurred = sum(b.blur_sigma > 0 for b in crop_boxes(boxes, is_right))
    t_batched = timed(lambda: reconstruct(model, image, boxes, is_right), repeats)
    t_loop = timed(lambda: per_hand_loop(model, image, boxes, is_right), repeats)
    a = reconstruct(model, image, boxes, is_right)
    b = per_hand_loop(model, image, boxes, is_right)
    max_diff = max(float(np.abs(x.vertices - y.vertices).max()) for x, y in zip(a, b))
    return {
        "model": "tiny parity checkpoint (E=160, depth 2)", "image_wh": [image.shape[1], image.shape[0]],
        "hands": n, "blurred_hands": int(blurred), "threads": torch.get_num_threads(),
        "batched_crops_per_s": n / t_batched, "per_hand_loop_crops_per_s": n / t_loop,
        "speedup": t_loop / t_batched, "max_vertex_diff_m": max_diff,
    }


def cuda_bench(repeats):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rng = np.random.default_rng(0)
    w = rng.random((778, 16))
    mano = ManoLayer.from_arrays({
        "v_template": rng.normal(size=(778, 3)) * 0.05, "shapedirs": rng.normal(size=(778, 3, 10)) * 1e-3,
        "posedirs": rng.normal(size=(135, 2334)) * 1e-3, "J_regressor": rng.random((16, 778)) / 778,
        "lbs_weights": w / w.sum(1, keepdims=True), "parents": np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]),
    })
    dims = WilorDims(1280, 32, 16, 16, 192, 16, 10, (1, 2), 256)
    model = WilorModel(dims, mano).eval().cuda()
    with torch.no_grad():
        model.backbone.init_cam.fill_(1.0)
    rows = []
    for precision in ("fp32", "fp16"):
        for batch in (1, 8, 32):
            x = torch.randn(batch, 3, 256, 256, device="cuda")

            def run():
                with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=precision == "fp16"):
                    model(x)
                torch.cuda.synchronize()

            rows.append({"precision": precision, "batch": batch, "crops_per_s": batch / timed(run, repeats)})
    return {"model": "full size, random weights (E=1280, depth 32)", "gpu": torch.cuda.get_device_name(), "runs": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "wilor.json"))
    args = parser.parse_args()
    result = {"device_cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
              "cpu": cpu_bench(args.repeats)}
    if torch.cuda.is_available():
        result["cuda"] = cuda_bench(args.repeats)
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
