"""A soak of the live session: the simulated rig (``LiveController.simulated``, 2 people, 2 Kinects)
replayed in a loop at real time through the live controller (hand preview on with the simulated
observer, the live SMPL-X body on and skinned to the synthetic SMPL-X model, no window) for
``--seconds``, sampling once a second the process's resident memory, every source's display queue
length, the frame and drop counters, the hands the newest panorama frame lifted, the live
pipeline's time for that frame, the bodies fitted and the live body's time for its newest fit.

Reports the memory at the end of the warm-up and at the end, its least-squares slope (MiB per
minute) over the run after the warm-up, the pipeline's median time per frame and the mean hands
lifted per sample in the first minute after the warm-up against the last minute's (every pass of
the loop lifts hands, so both minutes do the whole hand stage; the time must not grow with the
session), the same for the live body's time per fit, the longest queue seen against its bound, and
per source the frames, the frames the display skipped or pushed out of its full queue (the
drop-oldest policy) and the frames the source itself lost; writes benchmarks/results/live_soak.json,
keeping the summary of a run without the body found there under ``without_body``. Run it niced:
``nice -n 10 python benchmarks/bench_live_soak.py --seconds 600``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "live_soak.json"


def rss_mib() -> float:
    """Resident set size of this process, MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def previous_without_body() -> dict | None:
    """The summary (no samples) of the run without the live body that the results file holds: the
    file's own report when it has no ``live_body``, else what it kept under ``without_body``."""
    if not OUT.is_file():
        return None
    old = json.loads(OUT.read_text())
    if "live_body" in old:
        return old.get("without_body")
    return {k: v for k, v in old.items() if k != "samples"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds left out of the memory slope")
    parser.add_argument("--sim-seconds", type=float, default=4.0,
                        help="simulated seconds (plus simulated_rig's 0.5 s of slack) replayed in a loop")
    parser.add_argument("--pano-width", type=int, default=1920)
    args = parser.parse_args()

    import tempfile

    from omnimocap.apps.live import LiveController
    from omnimocap.fusion.live.controller import LiveConfig
    from omnimocap.fusion.pipeline import ProcessConfig
    from omnimocap.sim.synthetic_models import write_synthetic_smplx

    models = Path(tempfile.mkdtemp(prefix="omnimocap_soak_models_"))
    write_synthetic_smplx(models / "smplx")
    config = LiveConfig(process=ProcessConfig(hands="sim", models=str(models)), body=True)
    controller = LiveController.simulated(args.sim_seconds, people=2, kinects=2, seed=1, pano_width=args.pano_width,
                                          config=config)
    samples = []
    load_start = os.getloadavg()[0]
    controller.start()
    t0 = time.perf_counter()
    try:
        while (t := time.perf_counter() - t0) < args.seconds:
            state = controller.latest()
            samples.append({
                "t": round(t, 2), "rss_mib": round(rss_mib(), 1),
                "queues": {f.name: len(f.queue) for f in controller.feeds},
                "frames": {d.name: d.frames for d in state.devices},
                "hand_views": len(state.hand_views),
                "hands_lifted": len(state.world.hands),
                "hands_backend": state.hands_backend,
                "pipeline_ms": round(state.pipeline_ms, 2),
                "bodies_fitted": len(state.world.fitted),
                "body_ms": round(state.body_ms, 2),
            })
            time.sleep(1.0)
        per_source = {}
        for f in controller.feeds:
            own = f.source.health()
            per_source[f.name] = {
                "frames": own.frames, "display_drops": f.dropped, "source_drops": own.drops,
                "queue_bound": f.queue.maxlen,
                "queue_max_seen": max(s["queues"][f.name] for s in samples),
            }
        messages = [m.text for m in controller.latest().messages if m.level == "fault"]
    finally:
        controller.close()
        shutil.rmtree(models, ignore_errors=True)
    t = np.array([s["t"] for s in samples])
    rss = np.array([s["rss_mib"] for s in samples])
    after = t >= args.warmup
    slope = float(np.polyfit(t[after] / 60.0, rss[after], 1)[0]) if after.sum() >= 3 else float("nan")
    step_ms = np.array([s["pipeline_ms"] for s in samples])
    first = after & (t < args.warmup + 60.0)
    last = t >= t[-1] - 60.0
    first_ms, last_ms = float(np.median(step_ms[first])), float(np.median(step_ms[last]))
    lifted = np.array([s["hands_lifted"] for s in samples])
    body_ms = np.array([s["body_ms"] for s in samples])
    first_body, last_body = float(np.median(body_ms[first])), float(np.median(body_ms[last]))
    fitted = np.array([s["bodies_fitted"] for s in samples])
    report = {
        "benchmark": "live session soak",
        "seconds": args.seconds, "warmup_s": args.warmup, "pano_width": args.pano_width, "people": 2, "kinects": 2,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_1min_start": round(load_start, 1),
                    "load_average_1min_end": round(os.getloadavg()[0], 1)},
        "rss_mib": {"end_of_warmup": float(rss[after][0]) if after.any() else None, "end": float(rss[-1]),
                    "max": float(rss.max()), "slope_mib_per_min_after_warmup": round(slope, 2)},
        "pipeline_ms": {"first_minute_after_warmup_p50": round(first_ms, 2), "last_minute_p50": round(last_ms, 2),
                        "last_over_first": round(last_ms / first_ms, 3) if first_ms > 0 else None},
        "hands_lifted_per_sample": {"first_minute_after_warmup_mean": round(float(lifted[first].mean()), 2),
                                    "last_minute_mean": round(float(lifted[last].mean()), 2),
                                    "samples_without_hands_after_warmup": int(np.sum(lifted[after] == 0))},
        "live_body": {"max_hz": config.body_max_hz, "warm_iterations": config.body_warm_iterations,
                      "mesh": "synthetic SMPL-X (10475 vertices)",
                      "first_minute_after_warmup_p50_ms": round(first_body, 2), "last_minute_p50_ms": round(last_body, 2),
                      "last_over_first": round(last_body / first_body, 3) if first_body > 0 else None,
                      "samples_with_two_bodies_after_warmup": int(np.sum(fitted[after] >= 2)),
                      "samples_after_warmup": int(after.sum())},
        "hands_ready_after_s": next((s["t"] for s in samples if s["hands_backend"] == "sim"), None),
        "sources": per_source,
        "faults": messages,
        "samples": samples,
    }
    without_body = previous_without_body()
    if without_body is not None:
        report["without_body"] = without_body
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
