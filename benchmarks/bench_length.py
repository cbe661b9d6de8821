"""Cost of ``simulate``, ``calibrate`` and ``sync`` against the session's length; writes
``benchmarks/results/length.json``.

Per ``--lengths`` (seconds): ``omnimocap simulate`` (2 people, 2 Kinects, no Kinect video, a
``--pano-width`` panorama, ``--realism field``), then ``calibrate --method markerless --observer
simulated-detector`` and ``sync --observer simulated-detector`` on it, each command in its own
interpreter. Each stage's CPU seconds (user + system of the child, from ``wait4``'s resource usage,
so the figure does not depend on what else the machine runs) and wall seconds are divided by the
session's panorama frames; the spread of CPU milliseconds per frame (longest session / shortest)
should stay within 1.3x. A command's fixed cost (the interpreter, imports, model set-up) weighs on
a short session's figure, so the marginal cost is given too: the CPU milliseconds per added frame
from each session to the next longer one, whose spread shows how the cost grows with the length
(flat: linear). ``process`` has its own figures in ``bench_process.py``.

Usage: nice -n 10 python benchmarks/bench_length.py [--lengths 15 60 240] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PYTHON = sys.executable
OUT = Path(__file__).resolve().parent / "results" / "length.json"


def run_child(args: list[str]) -> dict:
    """Run ``omnimocap ARGS`` in a fresh interpreter; its wall and CPU seconds (user + system)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a long progress bar would fill a pipe and stall the child
        proc = subprocess.Popen([PYTHON, "-m", "omnimocap.apps.cli", *args], stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        log.seek(0)
        err = log.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"omnimocap {' '.join(args)} failed: {err.strip().splitlines()[-1:]}")
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}


def pano_frames(session: Path) -> int:
    with open(session / "pano_frames.csv") as f:
        return sum(1 for line in f if line.strip() and line[0].isdigit())


def measure(work: Path, seconds: float, pano_width: int, seed: int) -> dict:
    session = work / f"len{int(seconds)}"
    row = {"seconds": seconds}
    row["simulate"] = run_child(["simulate", str(session), "--seconds", str(seconds), "--people", "2", "--kinects", "2",
                                 "--seed", str(seed), "--pano-width", str(pano_width), "--realism", "field",
                                 "--no-kinect-video", "--overwrite"])
    row["calibrate"] = run_child(["calibrate", str(session), "--method", "markerless", "--observer", "simulated-detector"])
    row["sync"] = run_child(["sync", str(session), "--observer", "simulated-detector"])
    row["frames"] = pano_frames(session)
    row["cpu_ms_per_frame"] = {stage: round(1000 * row[stage]["cpu_s"] / row["frames"], 2)
                               for stage in ("simulate", "calibrate", "sync")}
    row["load_avg"] = round(os.getloadavg()[0], 2)
    return row


def summarize(rows: list[dict]) -> dict:
    """Spreads of the CPU milliseconds per frame and of the marginal ones (per frame added from one
    session to the next longer)."""
    stages = ("simulate", "calibrate", "sync")
    spread = {stage: round(max(r["cpu_ms_per_frame"][stage] for r in rows) / min(r["cpu_ms_per_frame"][stage] for r in rows), 3)
              for stage in stages}
    marginal = [{"from_s": a["seconds"], "to_s": b["seconds"],
                 **{stage: round(1000 * (b[stage]["cpu_s"] - a[stage]["cpu_s"]) / (b["frames"] - a["frames"]), 2)
                    for stage in stages}} for a, b in zip(rows, rows[1:])]
    marginal_spread = ({stage: round(max(m[stage] for m in marginal) / min(m[stage] for m in marginal), 3)
                        for stage in stages} if len(marginal) > 1 else None)
    return {"sessions": rows, "cpu_ms_per_frame_spread": spread,
            "flat_within_1_3": all(v <= 1.3 for v in spread.values()),
            "marginal_cpu_ms_per_frame": marginal, "marginal_spread": marginal_spread,
            "marginal_flat_within_1_3": None if marginal_spread is None else all(v <= 1.3 for v in marginal_spread.values())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=float, nargs="+", default=[15.0, 60.0, 240.0])
    p.add_argument("--pano-width", type=int, default=480)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--work", type=Path, default=Path("bench_length_work"))
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for seconds in args.lengths:
        rows.append(measure(args.work, seconds, args.pano_width, args.seed))
        print(json.dumps(rows[-1]), file=sys.stderr)
    result = summarize(rows)
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
              "pano_width": args.pano_width, "people": 2, "kinects": 2, "realism": "field", "seed": args.seed,
              **result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("cpu_ms_per_frame_spread", "marginal_spread")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
