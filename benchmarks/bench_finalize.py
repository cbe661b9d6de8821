"""Speed and memory of finalizing a recording's body journals: frames/s of converting the journal of
an hour against the journal of a minute, in the same run.

Simulates a few seconds of two people in front of one Kinect, writes body journals exactly as the
recorder does (:class:`~omnimocap.capture.record_streams.BodyJournal`, the simulated captures looped
with increasing device times) of ``--short`` and ``--long`` frames (default 1,800 and 108,000: a
minute and an hour at 30 fps), and converts each into ``bodies_<serial>.json`` as the recorder does
on stop (:func:`~omnimocap.capture.record_streams.journal_to_bodies`). Reports frames/s of each and
their ratio (long / short; 1 = linear in the journal's length) and the peak resident memory (RSS)
above the RSS before each conversion (constant memory = the same small peak for both). For
reference, the previous way (the journal read whole into arrays, then written) is timed on the
short journal. Writes benchmarks/results/finalize.json.

    nice -n 10 python benchmarks/bench_finalize.py [--long 108000] [--short 1800]
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

from omnimocap.capture.bodies import read_bodies, read_journal_bodies, write_bodies
from omnimocap.capture.record_streams import BodyJournal, journal_to_bodies
from omnimocap.capture.sources import KinectBody, KinectFrame
from omnimocap.sim.simulate import SimConfig, simulate_session

OUT = Path(__file__).resolve().parent / "results" / "finalize.json"
PAGE = os.sysconf("SC_PAGE_SIZE")
SERIAL = "000000000001"


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2 ** 20


class PeakRss(threading.Thread):
    """The highest RSS (MiB) seen every 20 ms until stopped."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = rss_mb()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, rss_mb())

    def stop(self) -> float:
        self._done.set()
        self.join()
        return max(self.peak, rss_mb())


def simulated_captures(work_dir: Path, people: int) -> list[KinectFrame]:
    """A few seconds of simulated body tracking of ``people`` people, as the captures a Kinect delivers."""
    simulate_session(work_dir, SimConfig(seconds=4.0, people=people, kinects=1, pano_width=128, kinect_video=False,
                                         overwrite=True))
    recording = read_bodies(work_dir / f"bodies_{SERIAL}.json")
    captures = []
    for f, (t, frame_id) in enumerate(zip(recording.timestamps, recording.frame_ids)):
        bodies = {body_id: KinectBody(track.positions[f], track.orientations[f], track.confidences[f])
                  for body_id, track in recording.bodies.items() if track.present[f]}
        captures.append(KinectFrame(SERIAL, int(frame_id), float(t), float(t), bodies=bodies))
    return captures


def write_journal(path: Path, captures: list[KinectFrame], frames: int, fps: float = 30.0) -> None:
    """A journal of ``frames`` captures, ``captures`` looped with device times going on at ``fps``."""
    journal = BodyJournal(path, SERIAL, f"kinect_{SERIAL}.mkv", 0.0)
    t0 = captures[0].device_timestamp
    for i in range(frames):
        c = captures[i % len(captures)]
        t = t0 + i / fps
        journal.append(KinectFrame(SERIAL, i, t, t, bodies=c.bodies))
    journal.close()


def timed(convert) -> dict:
    """Seconds and the RSS peak above the start (MiB) of ``convert()``, which returns the frames."""
    base = rss_mb()
    peak = PeakRss()
    peak.start()
    t = time.perf_counter()
    frames = convert()
    seconds = time.perf_counter() - t
    return {"frames": frames, "seconds": round(seconds, 2), "frames_per_s": round(frames / seconds, 1),
            "rss_peak_above_start_mb": round(peak.stop() - base, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=1800, help="frames of the short journal (default 1800)")
    parser.add_argument("--long", type=int, default=108000, help="frames of the long journal (default 108000)")
    parser.add_argument("--people", type=int, default=2)
    parser.add_argument("--work-dir", default=None, help="where the journals are written (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"the report (default {OUT})")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-finalize-", dir=args.work_dir) as tmp:
        tmp = Path(tmp)
        captures = simulated_captures(tmp / "simulation", args.people)
        runs = {}
        for name, frames in (("short", args.short), ("long", args.long)):
            journal = tmp / f"{name}.jsonl"
            write_journal(journal, captures, frames)
            runs[name] = timed(lambda: journal_to_bodies(journal, tmp / f"{name}.json"))
            runs[name]["journal_mb"] = round(journal.stat().st_size / 2 ** 20, 1)
            runs[name]["bodies_json_mb"] = round((tmp / f"{name}.json").stat().st_size / 2 ** 20, 1)
            if name == "short":
                def whole() -> int:
                    recording = read_journal_bodies(journal)
                    write_bodies(tmp / "whole.json", recording)
                    return len(recording)
                reference = timed(whole)
                reference["same_bytes"] = (tmp / "whole.json").read_bytes() == (tmp / "short.json").read_bytes()
            journal.unlink()
            (tmp / f"{name}.json").unlink()
    report = {
        "benchmark": "finalizing body journals (journal_to_bodies), an hour against a minute",
        "people": args.people, "bodies_per_frame": sorted({len(c.bodies) for c in captures}),
        "short": runs["short"], "long": runs["long"],
        "long_over_short_frames_per_s": round(runs["long"]["frames_per_s"] / runs["short"]["frames_per_s"], 3),
        "previous_way_short": reference,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "nice": os.nice(0)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
