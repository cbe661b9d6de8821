"""Start-up time of the command line; writes ``benchmarks/results/startup.json``.

Each command runs ``--runs`` times in a fresh interpreter (wall time of the whole process, seconds):
``python -c pass`` (the reference: the interpreter and site start), ``import numpy`` (the floor the
verbs' modules sit on), ``omnimocap --version``, ``omnimocap --help`` and ``omnimocap process
--help``. The JSON holds every run, the medians, each median as a ratio to the reference measured in
the same run, and the heavy modules each command left in ``sys.modules`` (none expected).

Usage: python benchmarks/bench_startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results" / "startup.json"
HEAVY = ("torch", "cv2", "ultralytics", "open3d", "smplx", "av", "scipy")
CLI = "import sys\nfrom omnimocap.apps.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
REPORT_HEAVY = f"\nprint('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"

COMMANDS = {
    "python -c pass (reference)": ["-c", "pass"],
    "import numpy": ["-c", "import numpy"],
    "omnimocap --version": ["-c", CLI + REPORT_HEAVY, "--version"],
    "omnimocap --help": ["-c", CLI + REPORT_HEAVY, "--help"],
    "omnimocap process --help": ["-c", CLI + REPORT_HEAVY, "process", "--help"],
}


def run_once(args: list[str]) -> tuple[float, list[str]]:
    """Wall seconds of one fresh interpreter running ``args``, and the heavy modules it imported."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - t0
    heavy = next((line[len("HEAVY="):] for line in done.stderr.splitlines() if line.startswith("HEAVY=")), "")
    return seconds, [m for m in heavy.split(",") if m]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    results = {}
    for name, command in COMMANDS.items():
        runs, heavy = [], set()
        for _ in range(args.runs):
            seconds, modules = run_once(command)
            runs.append(round(seconds, 4))
            heavy.update(modules)
        results[name] = {"runs_s": runs, "median_s": round(statistics.median(runs), 4), "heavy_modules": sorted(heavy)}
    reference = results["python -c pass (reference)"]["median_s"]
    for entry in results.values():
        entry["ratio_to_reference"] = round(entry["median_s"] / reference, 2)
    report = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "load_average_1min": round(os.getloadavg()[0], 2)},
              "runs": args.runs, "commands": results}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
