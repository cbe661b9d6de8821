"""Memory of a long headless recording: the simulated rig replayed in a loop, in real time.

Simulates a short session (``--sim-seconds``), replays it again and again through the recorder for
``--seconds`` (the replay is paced at real time, as live devices are, so an hour of recording takes
an hour), and samples the process's resident memory (RSS) every ``--every`` seconds while
recording and while the session is finalized. Memory is flat when the RSS late in the recording
stays at the RSS early in it; the report gives their ratio (late / early, both measured in this
run), the slope of a line fitted over the second half of the recording, the peak while finalizing,
the frames written and the size of the session. Writes benchmarks/results/record.json.

    nice -n 10 python benchmarks/bench_record.py [--seconds 3600] [--pano-width 512]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "record.json"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2 ** 20


class Sampler(threading.Thread):
    """Samples (seconds since start, RSS MiB, phase) every ``every`` seconds until stopped."""

    def __init__(self, every: float):
        super().__init__(daemon=True)
        self.every, self.phase = every, "simulate"
        self.samples: list[tuple[float, float, str]] = []
        self._done = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        while not self._done.is_set():
            self.samples.append((time.monotonic() - self._t0, rss_mb(), self.phase))
            self._done.wait(self.every)

    def stop(self) -> None:
        self._done.set()
        self.join()
        self.samples.append((time.monotonic() - self._t0, rss_mb(), self.phase))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3600.0, help="recording length (default 3600)")
    parser.add_argument("--sim-seconds", type=float, default=20.0, help="length of the looped simulation (default 20)")
    parser.add_argument("--pano-width", type=int, default=512)
    parser.add_argument("--people", type=int, default=1)
    parser.add_argument("--kinects", type=int, default=2)
    parser.add_argument("--kinect-video", action="store_true",
                        help="also record the Kinects' colour/depth/IR (about 13 MB/s per Kinect on disk)")
    parser.add_argument("--every", type=float, default=5.0, help="RSS sampling period in seconds (default 5)")
    parser.add_argument("--work-dir", default=None, help="where the session is written (default: a temporary folder)")
    args = parser.parse_args()

    from omnimocap.capture.recorder import RecordConfig, Recorder
    from omnimocap.sim.replay import simulated_rig

    sampler = Sampler(args.every)
    sampler.start()
    with tempfile.TemporaryDirectory(prefix="bench-record-", dir=args.work_dir) as tmp:
        out = Path(tmp) / "session"
        rig = simulated_rig(args.sim_seconds, Path(tmp) / "simulation", people=args.people, kinects=args.kinects,
                            pano_width=args.pano_width, kinect_video=args.kinect_video, loop=True)
        recorder = Recorder(out, rig.sources, RecordConfig(seconds=args.seconds, min_free_gb=1.0, simulated=True),
                            rig.clock)
        # The recording phase ends when the recorder stops reading; finalizing follows in run().
        watcher = threading.Thread(daemon=True, target=lambda: _mark_finalize(recorder, sampler, args.seconds))
        sampler.phase = "record"
        t_start = time.monotonic()
        watcher.start()
        try:
            result = recorder.run()
        finally:
            rig.cleanup()
        wall = time.monotonic() - t_start
        sampler.stop()
        session_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        notes = json.loads((out / "session.json").read_text())["notes"]

    t = np.array([s[0] for s in sampler.samples])
    rss = np.array([s[1] for s in sampler.samples])
    phase = np.array([s[2] for s in sampler.samples])
    rec = phase == "record"
    t_rec, rss_rec = t[rec] - t[rec][0], rss[rec]
    minute = t_rec >= min(60.0, 0.1 * t_rec[-1])
    early = float(np.median(rss_rec[minute][:12]))  # the first minute of samples after warm-up
    late = float(np.median(rss_rec[-12:]))
    half = t_rec >= t_rec[-1] / 2
    slope = float(np.polyfit(t_rec[half] / 60.0, rss_rec[half], 1)[0]) if half.sum() > 2 else float("nan")
    report = {
        "benchmark": "long recording memory (simulated rig, looped, real time)",
        "seconds_requested": args.seconds, "seconds_recorded": round(result.seconds, 1), "wall_s": round(wall, 1),
        "stop_reason": result.stop_reason, "frames": result.frames, "disconnected": result.disconnected,
        "sim_seconds": args.sim_seconds, "pano_width": args.pano_width, "people": args.people,
        "kinects": args.kinects, "kinect_video": args.kinect_video, "session_mb": round(session_bytes / 2 ** 20, 1),
        "rss_mb": {"early": round(early, 1), "late": round(late, 1), "late_over_early": round(late / early, 3),
                   "max_recording": round(float(rss_rec.max()), 1),
                   "slope_mb_per_min_second_half": round(slope, 3),
                   "max_finalizing": round(float(rss[phase == "finalize"].max()), 1) if (phase == "finalize").any() else None},
        "samples": [[round(a, 1), round(b, 1), c] for a, b, c in sampler.samples],
        "manifest_notes": notes,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "nice": os.nice(0)},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("samples", "manifest_notes")}, indent=2))


def _mark_finalize(recorder, sampler: Sampler, seconds: float) -> None:
    """Switch the sampler's phase once the recording length is reached (the recorder then finalizes)."""
    while recorder.clock.now() < seconds or recorder.session is None:
        time.sleep(0.2)
    sampler.phase = "finalize"


if __name__ == "__main__":
    main()
