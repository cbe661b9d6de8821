"""WiLoR at full size (ViT-H: 1280 wide, 32 blocks, 16 heads; ~639 M parameters) with random
weights written in the official checkpoint layout to a temporary folder (never kept).

1. Load: the previous loader (model built with random initialisation, then the checkpoint copied
   in) against the current one (built on the meta device, given the memory-mapped tensors), each in
   a fresh process: seconds, peak RSS after loading and after the first crop, identical outputs.
2. Speed: the official demo path as the reference, measured in the same run: one detector call per
   image, ViTDetDataset-style crops (whole-image blur, whole-image mirror for left hands) through a
   DataLoader with batch 16, float32, explicit (non-fused) attention as the official ViT computes
   it; against the project's path: one detector call per image size, windowed crops of all images
   in one batch, bfloat16 autocast on the CPU (float16 on CUDA) with MANO in float32, fused SDPA
   attention. Crops per second and their ratio. Channels-last is measured as a variant.
3. Precision: the project's path in bfloat16 / float16 against itself in float32 on the same crops,
   in millimetres: vertices and 3D keypoints (camera-oriented MANO frame, relative to the root-free
   model output) and the full-image translation.

The detector is the deterministic YOLOv8n-pose test detector (tests/tools/detector_fixture.py); the
hands are reconstructed from fixed boxes so both paths see the same crops. Random weights are scaled
so the predictions stay near the mean hand (heads x0.05), as a trained network's do; precision errors
of a trained network may differ.

    python benchmarks/bench_wilor.py [--device cpu|cuda] [--crops 8] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.ndimage import gaussian_filter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.tools.detector_fixture

from omnimocap.sim.synthetic_models import make_synthetic_mano  # noqa: E402
from omnimocap.hands.model_files import mano_layer_arrays  # noqa: E402
from omnimocap.hands.wilor import default_mean_params, load_wilor, network_autocast, postprocess  # noqa: E402
from omnimocap.hands.wilor.checkpoint import load_checkpoint_file, load_mean_params, split_state_dict  # noqa: E402
from omnimocap.hands.wilor.crop import _affine, crop_boxes, crop_image, normalize_crops  # noqa: E402
from omnimocap.hands.wilor.model import ManoLayer, WilorDims, WilorModel  # noqa: E402

FULL = WilorDims(1280, 32, 16, 16, 192, 16, 10, (1, 2), 256)
GIB = 1024 ** 3


def _rss_peak_gib() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss it starts afresh at exec, so a
    child does not inherit its parent's peak); anonymous and file-backed (memory-mapped) pages alike."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / GIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


# --- the checkpoint --------------------------------------------------------------------------------


def write_checkpoint(path: Path, dims: WilorDims = FULL, seed: int = 0) -> int:
    """Random weights in the official layout (state_dict with backbone./refine_net./mano. keys,
    Lightning's version entry); returns the parameter count."""
    torch.manual_seed(seed)
    hand = make_synthetic_mano("right")
    hand = {k: (v.toarray() if hasattr(v, "toarray") else v) for k, v in hand.items()}  # sparse J_regressor
    mano = ManoLayer.from_arrays(mano_layer_arrays(hand))
    model = WilorModel(dims, mano)
    mean = load_mean_params(default_mean_params())
    with torch.no_grad():
        model.backbone.init_hand_pose.copy_(torch.from_numpy(mean["pose"])[None])
        model.backbone.init_betas.copy_(torch.from_numpy(mean["shape"])[None])
        model.backbone.init_cam.copy_(torch.from_numpy(mean["cam"])[None])
        for head in (model.backbone.decpose, model.backbone.decshape, model.backbone.deccam,
                     model.refine_net.dec_pose, model.refine_net.dec_shape, model.refine_net.dec_cam):
            head.weight.mul_(0.05)
            head.bias.mul_(0.05)
    n = sum(p.numel() for p in model.parameters())
    torch.save({"state_dict": model.state_dict(), "pytorch-lightning_version": "2.2.1"}, path)
    return n


def load_initialised(path: Path) -> WilorModel:
    """The previous loader: the model is built (and randomly initialised) on the CPU, then the
    checkpoint's tensors are copied in."""
    ckpt = load_checkpoint_file(path)
    groups = split_state_dict(ckpt["state_dict"])
    flat = {f"backbone.{k}": v for k, v in groups["backbone"].items()}
    flat.update({f"refine_net.{k}": v for k, v in groups["refine_net"].items()})
    mano_sd = groups["mano"]
    mano = ManoLayer.from_arrays({k: mano_sd[k] for k in ("v_template", "shapedirs", "posedirs", "J_regressor",
                                                          "lbs_weights", "parents")})
    model = WilorModel(WilorDims.from_state_dict(flat), mano)
    model.load_state_dict({**flat, **{f"mano.{k}": v for k, v in mano.state_dict().items()}}, strict=False)
    return model.eval()


def load_child(method: str, ckpt: Path, out: Path) -> None:
    """Runs in a fresh process: load, one crop, report."""
    base = _rss_peak_gib()
    t = time.perf_counter()
    model = load_wilor(ckpt) if method == "meta" else load_initialised(ckpt)
    seconds = time.perf_counter() - t
    after_load = _rss_peak_gib()
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 3, 256, 256)).astype(np.float32))
    with torch.inference_mode():
        verts = model(x)["pred_vertices"].numpy()
    np.save(out.with_suffix(".npy"), verts)
    out.write_text(json.dumps({"seconds": seconds, "peak_rss_after_imports_gib": base,
                               "peak_rss_after_load_gib": after_load, "peak_rss_after_first_crop_gib": _rss_peak_gib()}))


def load_bench(ckpt: Path, tmp: Path) -> dict:
    rows = {}
    for method in ("initialised", "meta"):
        out = tmp / f"load_{method}.json"
        subprocess.run([sys.executable, __file__, "--load-child", method, "--ckpt", str(ckpt), "--child-out", str(out)],
                       check=True)
        rows[method] = json.loads(out.read_text())
    diff = float(np.abs(np.load(tmp / "load_initialised.npy") - np.load(tmp / "load_meta.npy")).max())
    return {"before_initialised_then_copied": rows["initialised"], "after_meta_device_assign_mmap": rows["meta"],
            "load_speedup": rows["initialised"]["seconds"] / rows["meta"]["seconds"],
            "max_vertex_diff_m": diff}


# --- the two paths ---------------------------------------------------------------------------------


class OfficialCrops(torch.utils.data.Dataset):
    """ViTDetDataset's per-box work: blur the whole image when the crop downsamples, mirror the
    whole image for a left hand, warp the 256 crop, BGR -> RGB, normalise."""

    def __init__(self, model: WilorModel, image: np.ndarray, boxes: np.ndarray, is_right: np.ndarray):
        self.model, self.image = model, image
        self.boxes = crop_boxes(boxes, is_right, 2.0, model.bbox_shape)

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, i: int) -> torch.Tensor:
        box, img = self.boxes[i], self.image
        if box.blur_sigma > 0:
            img = gaussian_filter(img.astype(np.float64), (box.blur_sigma, box.blur_sigma, 0), mode="nearest", truncate=4.0)
        cx = box.center[0]
        if not box.is_right:
            img = np.ascontiguousarray(img[:, ::-1])
            cx = np.float32(img.shape[1] - cx - 1)
        patch = cv2.warpAffine(img, _affine(cx, box.center[1], box.size, 256), (256, 256), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return torch.from_numpy(normalize_crops(patch[None, :, :, ::-1].astype(np.float32), self.model.image_mean,
                                                self.model.image_std)[0])


def set_fused_attention(model: WilorModel, fused: bool) -> None:
    for blk in model.backbone.blocks:
        blk.attn.fused_attn = fused


def official_path(model, yolo, scene, device):
    """demo.py: per image, the detector, then a DataLoader (batch 16) over the hands, fp32."""
    set_fused_attention(model, False)
    hands = []
    threads = torch.get_num_threads()
    for image, boxes, is_right in scene:
        yolo(image, conf=0.3, verbose=False)
        torch.set_num_threads(threads)  # ultralytics' CPU set-up lowers it to cores - 1; both paths get the same
        loader = torch.utils.data.DataLoader(OfficialCrops(model, image, boxes, is_right), batch_size=16,
                                             shuffle=False, num_workers=0)
        crop_list = OfficialCrops(model, image, boxes, is_right).boxes
        done = 0
        for batch in loader:
            with torch.inference_mode():
                out = model(batch.to(device))
            hands += postprocess(model, out, crop_list[done:done + len(batch)], (image.shape[1], image.shape[0]))
            done += len(batch)
    set_fused_attention(model, True)
    return hands


def our_path(model, detector, scene, device, precision):
    """The project's path: batched detection per image size, windowed crops of every hand of every
    image in one network call under autocast."""
    detector.detect([image for image, _, _ in scene])
    xs, per_image = [], []
    for image, boxes, is_right in scene:
        cb = crop_boxes(boxes, is_right, 2.0, model.bbox_shape)
        xs.append(normalize_crops(np.stack([crop_image(image, b, model.image_size) for b in cb]), model.image_mean,
                                  model.image_std))
        per_image.append(cb)
    x = torch.from_numpy(np.concatenate(xs)).to(device)
    with torch.inference_mode(), network_autocast(precision, device):
        out = model(x)
    hands, i = [], 0
    for (image, _, _), cb in zip(scene, per_image):
        hands += postprocess(model, {k: v[i:i + len(cb)] for k, v in out.items()}, cb, (image.shape[1], image.shape[0]))
        i += len(cb)
    return hands


def timed(fn, device, repeats=1):
    """Seconds of the fastest of ``repeats`` runs after one warm-up; the last run's result."""
    fn()
    best, result = float("inf"), None
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        result = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, result


def make_scene(n_crops: int, rng) -> list:
    """Images of 960 x 720 with four hands each (two left, two right; two large enough to be blurred)."""
    scene = []
    base = np.array([[530, 320, 790, 560], [100, 430, 280, 690], [20, 300, 300, 520], [600, 80, 720, 200]], np.float32)
    for k in range(int(np.ceil(n_crops / 4))):
        yy, xx = np.mgrid[0:720, 0:960]
        img = np.clip(np.stack([100 + 60 * np.sin(xx / 40 + k), 120 + 50 * np.cos(yy / 30), 140 + 40 * np.sin((xx + yy) / 55)],
                               -1) + rng.normal(0, 12, (720, 960, 3)), 0, 255).astype(np.uint8)
        m = min(4, n_crops - 4 * k)
        scene.append((img, base[:m] + np.float32(10 * k), np.array([1, 0, 0, 1], np.float32)[:m]))
    return scene


def errors_mm(test, ref) -> dict:
    def stat(name, get):
        d = np.array([np.linalg.norm(get(a) - get(b), axis=-1).ravel() for a, b in zip(test, ref)]) * 1000
        return {f"{name}_max_mm": float(d.max()), f"{name}_mean_mm": float(d.mean())}

    return {**stat("vertices", lambda h: h.vertices), **stat("keypoints", lambda h: h.keypoints_3d),
            **stat("translation", lambda h: h.cam_t_full[None])}


def speed_bench(ckpt: Path, tmp: Path, device: str, n_crops: int, repeats: int) -> dict:
    from ultralytics import YOLO

    from omnimocap.hands.wilor.detector import HandDetector
    from tests.tools.detector_fixture import build_detector

    det_path = build_detector(tmp / "detector.pt")
    yolo, detector = YOLO(str(det_path), task="pose"), HandDetector(det_path, device=device)
    model = load_wilor(ckpt, device=device)
    scene = make_scene(n_crops, np.random.default_rng(0))
    low = "fp16" if device == "cuda" else "bf16"
    t_off, off = timed(lambda: official_path(model, yolo, scene, device), device, repeats)
    t_ours, ours = timed(lambda: our_path(model, detector, scene, device, low), device, repeats)
    t_fp32, ours32 = timed(lambda: our_path(model, detector, scene, device, "fp32"), device, repeats)
    model_cl = model.to(memory_format=torch.channels_last)
    t_cl, _ = timed(lambda: our_path(model_cl, detector, scene, device, low), device, repeats)
    t_det_off, _ = timed(lambda: [yolo(img, conf=0.3, verbose=False) for img, _, _ in scene], device, repeats)
    t_det_ours, _ = timed(lambda: detector.detect([img for img, _, _ in scene]), device, repeats)
    n = sum(len(b) for _, b, _ in scene)
    return {
        "device": torch.cuda.get_device_name() if device == "cuda" else (platform.processor() or platform.machine()),
        "threads": torch.get_num_threads(), "images": len(scene), "image_wh": [960, 720], "crops": n,
        "blurred_crops": int(sum(b.blur_sigma > 0 for img, bx, r in scene for b in crop_boxes(bx, r))),
        "official_demo_path_fp32_crops_per_s": n / t_off,
        f"ours_{low}_crops_per_s": n / t_ours,
        "ours_fp32_crops_per_s": n / t_fp32,
        f"ours_{low}_channels_last_crops_per_s": n / t_cl,
        "ratio_ours_to_official": t_off / t_ours,
        "ratio_ours_fp32_to_official": t_off / t_fp32,
        "ratio_channels_last_to_ours": t_ours / t_cl,
        "detector_seconds_official_per_image_calls": t_det_off, "detector_seconds_ours_batched": t_det_ours,
        f"precision_{low}_vs_fp32": errors_mm(ours, ours32),
        "ours_fp32_vs_official_fp32": errors_mm(ours32, off),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--crops", type=int, default=8, help="hands in the speed scene (4 per image)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs after the warm-up (fastest kept)")
    parser.add_argument("--skip-load", action="store_true", help="no load benchmark")
    parser.add_argument("--skip-speed", action="store_true", help="no speed / precision benchmark")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "wilor.json"))
    parser.add_argument("--small", action="store_true", help="a small network (E=160, depth 2) to try the script")
    parser.add_argument("--load-child", choices=("initialised", "meta"), help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_child:
        load_child(args.load_child, Path(args.ckpt), Path(args.child_out))
        return
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    with tempfile.TemporaryDirectory(prefix="bench_wilor_") as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "wilor_final.ckpt"
        t = time.perf_counter()
        dims = WilorDims(160, 2, 2, 16, 192, 16, 10, (1, 2), 256) if args.small else FULL
        n_params = write_checkpoint(ckpt, dims)
        result = {
            "torch": torch.__version__, "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "model": f"E={dims.embed_dim}, depth {dims.depth}, {dims.num_heads} heads; random weights in the official "
                     "checkpoint layout",
            "parameters": n_params, "checkpoint_gib": ckpt.stat().st_size / GIB,
            "checkpoint_written_s": time.perf_counter() - t,
        }
        if not args.skip_load:
            result["load"] = load_bench(ckpt, tmp)
        if not args.skip_speed:
            result["speed"] = speed_bench(ckpt, tmp, args.device, args.crops, args.repeats)
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
