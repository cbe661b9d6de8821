"""Memory of a long headless recording: the simulated rig replayed in a loop through the recorder.

Simulates a short session (``--sim-seconds``), replays it again and again through the recorder for
``--seconds`` of session time, and samples the process's resident memory (RSS) every ``--every``
seconds while recording and while the session is finalized. Memory is flat when the RSS late in
the recording stays at the RSS early in it; the report gives their ratio (late / early, both
measured in this run), the slope of a line fitted over the second half of the recording, the peak
and the seconds of finalizing, the frames written per stream and the size of the session. Writes
benchmarks/results/record.json.

By default the replay is paced at real time, as live devices are, so an hour takes an hour.
``--unpaced`` releases every stream's frames as fast as the recorder takes them: the recorder, its
journals and encoders and the finalizing are the same, and so are the frames written (the same
device times, bodies and images, ``--seconds`` of device time per stream); what changes is the
pacing only, so the host arrival times in the journals and ``pano_frames.csv`` are the (faster)
real arrivals, streams are not released in step with each other, and the recording stops when
every stream has delivered ``--seconds`` of device time (a stream that got there first waits, not
counted as disconnected) rather than by the session clock.

    nice -n 10 python benchmarks/bench_record.py [--seconds 3600] [--pano-width 512] [--unpaced]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from omnimocap.capture.recorder import RecordConfig, Recorder
from omnimocap.capture.replay import replay_sources
from omnimocap.capture.sources import SessionClock
from omnimocap.sim.replay import simulated_rig
from omnimocap.sim.simulate import SimConfig, simulate_session

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


class UpTo:
    """A source that delivers its first ``seconds`` of stream time, then nothing (``done`` is set);
    everything else is the wrapped source's."""

    def __init__(self, source, seconds: float):
        self.source, self.seconds = source, seconds
        self.done = threading.Event()
        self._first: float | None = None

    def __getattr__(self, name):
        return getattr(self.source, name)

    def read(self, timeout: float = 1.0):
        if self.done.is_set():
            time.sleep(timeout)
            return None
        frame = self.source.read(timeout)
        if frame is None:
            return None
        if self._first is None:
            self._first = frame.stream_time
        if frame.stream_time - self._first >= self.seconds:
            self.done.set()
            return None
        return frame


def unpaced_rig(seconds: float, sim_seconds: float, work_dir: Path, **sim) -> tuple[Path, SessionClock, list[UpTo]]:
    """The simulated rig of ``simulated_rig(loop=True)``, its streams released as fast as read and
    each cut at ``seconds`` of stream time."""
    simulate_session(work_dir, SimConfig(seconds=sim_seconds + 0.5, overwrite=True, **sim))
    clock = SessionClock()
    sources = replay_sources(work_dir, clock, realtime=False, on_session_clock=True, loop=True)
    return work_dir, clock, [UpTo(s, seconds) for s in sources]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3600.0, help="recording length (default 3600)")
    parser.add_argument("--sim-seconds", type=float, default=20.0, help="length of the looped simulation (default 20)")
    parser.add_argument("--pano-width", type=int, default=512)
    parser.add_argument("--people", type=int, default=1)
    parser.add_argument("--kinects", type=int, default=2)
    parser.add_argument("--kinect-video", action="store_true",
                        help="also record the Kinects' colour/depth/IR (about 13 MB/s per Kinect on disk)")
    parser.add_argument("--unpaced", action="store_true",
                        help="release the replayed frames as fast as they are recorded (see the docstring)")
    parser.add_argument("--every", type=float, default=5.0, help="RSS sampling period in seconds (default 5)")
    parser.add_argument("--work-dir", default=None, help="where the session is written (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"the report (default {OUT})")
    args = parser.parse_args()

    sampler = Sampler(args.every)
    sampler.start()
    sim = dict(people=args.people, kinects=args.kinects, pano_width=args.pano_width, kinect_video=args.kinect_video)
    with tempfile.TemporaryDirectory(prefix="bench-record-", dir=args.work_dir) as tmp:
        out = Path(tmp) / "session"
        stop = threading.Event()
        if args.unpaced:
            sim_dir, clock, sources = unpaced_rig(args.seconds, args.sim_seconds, Path(tmp) / "simulation", **sim)
            config = RecordConfig(seconds=None, min_free_gb=1.0, simulated=True, disconnect_timeout_s=1e9)
            ended = lambda: all(s.done.is_set() for s in sources)  # noqa: E731
        else:
            rig = simulated_rig(args.sim_seconds, Path(tmp) / "simulation", loop=True, **sim)
            sim_dir, clock, sources = rig.sim_dir, rig.clock, rig.sources
            config = RecordConfig(seconds=args.seconds, min_free_gb=1.0, simulated=True)
            ended = lambda: clock.now() >= args.seconds  # noqa: E731
        recorder = Recorder(out, sources, config, clock)
        # The recording phase ends when the recorder stops reading; finalizing follows in run().
        finalize_start: list[float] = []
        watcher = threading.Thread(daemon=True, target=_mark_finalize,
                                   args=(recorder, sampler, ended, stop, finalize_start))
        sampler.phase = "record"
        t_start = time.monotonic()
        watcher.start()
        try:
            result = recorder.run(stop)
        finally:
            for source in sources:
                source.stop()
            shutil.rmtree(sim_dir, ignore_errors=True)
        t_end = time.monotonic()
        sampler.stop()
        session_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        manifest = json.loads((out / "session.json").read_text())
        bodies_frames = {d["serial"]: count_frames(out / d["bodies"]) for d in manifest["devices"] if d.get("bodies")}

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
    finalize_s = t_end - finalize_start[0] if finalize_start else float("nan")
    report = {
        "benchmark": f"long recording memory (simulated rig, looped, {'unpaced' if args.unpaced else 'real time'})",
        "seconds_requested": args.seconds, "unpaced": args.unpaced,
        # paced: the session clock at the stop; unpaced: the session clock ran at wall speed while each
        # stream delivered --seconds of device time
        "session_clock_at_stop_s": round(result.seconds, 1),
        "wall_s": round(t_end - t_start, 1), "recording_wall_s": round(t_end - t_start - finalize_s, 1),
        "finalize_s": round(finalize_s, 1),
        "stop_reason": result.stop_reason, "frames": result.frames, "bodies_json_frames": bodies_frames,
        "disconnected": result.disconnected,
        "sim_seconds": args.sim_seconds, "pano_width": args.pano_width, "people": args.people,
        "kinects": args.kinects, "kinect_video": args.kinect_video, "session_mb": round(session_bytes / 2 ** 20, 1),
        "rss_mb": {"early": round(early, 1), "late": round(late, 1), "late_over_early": round(late / early, 3),
                   "max_recording": round(float(rss_rec.max()), 1),
                   "slope_mb_per_min_second_half": round(slope, 3),  # per minute of wall time
                   "growth_over_the_recording": round(late - early, 1),
                   "max_finalizing": round(float(rss[phase == "finalize"].max()), 1) if (phase == "finalize").any() else None},
        "samples": [[round(a, 1), round(b, 1), c] for a, b, c in sampler.samples],
        "manifest_notes": manifest["notes"],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "nice": os.nice(0)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("samples", "manifest_notes")}, indent=2))


def count_frames(bodies_json: Path) -> int:
    """Frames of a k4abt JSON file, counted without parsing it (one ``timestamp_usec`` key per frame)."""
    key, n, tail = b'"timestamp_usec":', 0, b""
    with open(bodies_json, "rb") as f:
        while chunk := f.read(1 << 22):
            block = tail + chunk
            n += block.count(key)
            tail = block[-(len(key) - 1):]  # a key cut by the chunk's end is counted with the next chunk
    return n


def _mark_finalize(recorder, sampler: Sampler, ended, stop: threading.Event, finalize_start: list[float]) -> None:
    """Once the recording is long enough, switch the sampler's phase and stop the recorder (which
    then finalizes); ``finalize_start`` gets the time (monotonic)."""
    while recorder.session is None or not ended():
        time.sleep(0.2)
    finalize_start.append(time.monotonic())
    sampler.phase = "finalize"
    stop.set()


if __name__ == "__main__":
    main()
