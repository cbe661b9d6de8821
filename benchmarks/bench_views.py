"""Time wrist-centred view extraction from a 5.7K equirectangular frame.

Compares, in one run and on one synthetic 5760x2880 uint8 RGB frame, the time per 256x256 view of
- py360convert.e2p, with a new (yaw, pitch, fov) on every call as a moving wrist gives,
- our CPU path, one view at a time (sampling maps computed for the view, then cv2.remap),
- our CPU path for a batch of views (render_views),
- the batched torch path (render_views_torch) on the CPU, and on CUDA when available.

Two sets of views, each new on every call:
- "wrist": views planned by ``plan_views`` for synthetic hands (21 points in a 0.18 m box) at
  0.4-3 m in any direction from yaw -180..180 and pitch -60..40 degrees: fields of view ~10-60
  degrees, what the pipeline renders;
- "wide": yaw -180..180, pitch -70..70, fov 30-70 degrees, a pessimistic case (a wider view reads
  more of the panorama for the same 256x256 output).
e2p is given each view's yaw, pitch and fov (the planned views have no roll, as e2p's).
Prints a table and writes the per-view milliseconds and the speed ratios against e2p as JSON.

    python benchmarks/bench_views.py [--reps 20] [--batch 8] [--threads 1 2] [--out benchmarks/results/views.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import py360convert
import torch

from omnimocap.geometry.cameras import EquirectCamera, lonlat_to_bearing
from omnimocap.geometry.views import (
    WristView,
    plan_views,
    render_view,
    render_views,
    render_views_torch,
    view_from_yaw_pitch,
    view_sampling_maps,
)

WIDTH, HEIGHT, SIZE = 5760, 2880, 256


def wrist_views(rng: np.random.Generator, n: int) -> list[WristView]:
    """Views planned for n synthetic hands around the camera."""
    centre = lonlat_to_bearing(np.radians(rng.uniform(-180, 180, n)), np.radians(rng.uniform(-60, 40, n)))
    centre *= rng.uniform(0.4, 3.0, (n, 1))
    points = centre[:, None] + rng.uniform(-0.09, 0.09, (n, 21, 3))
    return plan_views(points, size=SIZE)


def wide_views(rng: np.random.Generator, n: int) -> list[WristView]:
    angles = np.stack([rng.uniform(-180, 180, n), rng.uniform(-70, 70, n), rng.uniform(30, 70, n)], -1)
    return [view_from_yaw_pitch(*a, size=SIZE) for a in angles]


def yaw_pitch_fov(view: WristView) -> tuple[float, float, float]:
    """e2p's (u, v, fov) in degrees for a view without roll."""
    f = view.R_pano_view[:, 2]
    return (float(np.degrees(np.arctan2(f[0], f[2]))), float(np.degrees(np.arctan2(-f[1], np.hypot(f[0], f[2])))),
            view.fov_deg)


def per_call_ms(fn: Callable[[int], object], reps: int, sync: Callable[[], None] = lambda: None) -> float:
    """Median wall time of fn(i) for i in range(reps), after one warm-up call, in milliseconds."""
    fn(reps)
    sync()
    times = []
    for i in range(reps):
        t0 = time.perf_counter()
        fn(i)
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def run(frame: np.ndarray, views: list[WristView], reps: int, batch: int) -> dict:
    """Time every method on ``views`` (at least (reps+1)*batch of them); ms per view."""
    cam = EquirectCamera(WIDTH, HEIGHT)
    e2p_args = [yaw_pitch_fov(v) for v in views]

    def chunk(i: int) -> list[WristView]:
        return views[i * batch:(i + 1) * batch]

    ms: dict[str, float] = {}
    ms["e2p"] = per_call_ms(
        lambda i: py360convert.e2p(frame, e2p_args[i][2], e2p_args[i][0], e2p_args[i][1], (SIZE, SIZE)), reps)
    ms["cpu_maps_only"] = per_call_ms(lambda i: view_sampling_maps(cam, views[i]), reps)
    ms["cpu"] = per_call_ms(lambda i: render_view(frame, cam, views[i]), reps)
    ms["cpu_batched"] = per_call_ms(lambda i: render_views(frame, cam, chunk(i)), reps) / batch
    frame_t = torch.from_numpy(frame)
    ms["torch_cpu_batched"] = per_call_ms(lambda i: render_views_torch(frame_t, cam, chunk(i)), reps) / batch
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        frame_gpu = frame_t.to(dev)
        ms["torch_cuda_batched"] = per_call_ms(
            lambda i: render_views_torch(frame_gpu, cam, chunk(i)), reps, torch.cuda.synchronize) / batch
        ms["torch_cuda_batched_with_upload"] = per_call_ms(
            lambda i: render_views_torch(frame_t, cam, chunk(i), device=dev), reps, torch.cuda.synchronize) / batch
    speedup = {k: ms["e2p"] / v for k, v in ms.items() if k not in ("e2p", "cpu_maps_only")}
    fov = np.array([v.fov_deg for v in views])
    return {"fov_deg_median": float(np.median(fov)), "fov_deg_range": [float(fov.min()), float(fov.max())],
            "ms_per_view": ms, "speedup_vs_e2p": speedup}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=20, help="timed calls per method (default 20)")
    parser.add_argument("--batch", type=int, default=8, help="views per batched call (default 8)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="OpenCV and torch CPU thread counts, each a full comparison (default 1 2)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "views.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    n = (args.reps + 1) * args.batch  # one call more than reps: the warm-up
    scenarios = {"wrist": wrist_views(rng, n), "wide": wide_views(rng, n)}

    runs = []
    for threads in args.threads:
        cv2.setNumThreads(threads)
        torch.set_num_threads(threads)
        for name, views in scenarios.items():
            runs.append({"threads": threads, "views": name, **run(frame, views, args.reps, args.batch)})

    report = {
        "frame_hw": [HEIGHT, WIDTH], "view_size": SIZE, "reps": args.reps, "batch": args.batch,
        "statistic": "median wall time per call, divided by the views per call",
        "views": {"wrist": "plan_views of synthetic hands at 0.4-3 m, yaw -180..180, pitch -60..40 deg",
                  "wide": "yaw -180..180, pitch -70..70, fov 30..70 deg"},
        "runs": runs,
        "cpu_target_speedup": 20.0,
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "load_average_1min": os.getloadavg()[0],
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "versions": {"numpy": np.__version__, "opencv": cv2.__version__, "torch": torch.__version__,
                     "py360convert": py360convert.__version__},
    }
    print(f"{WIDTH}x{HEIGHT} uint8 frame, {SIZE}x{SIZE} views, median of {args.reps} calls")
    for r in runs:
        lo, hi = r["fov_deg_range"]
        print(f"{r['threads']} thread(s), {r['views']} views (fov {lo:.0f}-{hi:.0f}, median {r['fov_deg_median']:.0f} deg):")
        for name, ms in r["ms_per_view"].items():
            ratio = f"{r['speedup_vs_e2p'][name]:7.1f}x vs e2p" if name in r["speedup_vs_e2p"] else ""
            print(f"  {name:32s} {ms:9.3f} ms/view  {ratio}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
