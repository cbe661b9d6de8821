"""Cost of ``process`` against the session's length, its throughput at real panorama resolutions,
and ``batch`` with 2 workers against 1; writes ``benchmarks/results/process.json``.

- Linearity: simulated sessions (2 people, 2 Kinects, no Kinect video, a small panorama,
  ``--hands sim``) of ``--lengths`` seconds, each processed in a fresh process; seconds per output
  frame of every stage (``load_bodies``, ``views_and_hands``, ``body_fit``, ``total``, wall clock),
  the CPU seconds per frame of the whole ``process_session`` call (``process_cpu``, imports
  excluded) and its peak RSS. The spread of seconds per frame (longest / shortest) should stay within 1.3x.
- Memory: peak RSS of ``process`` on a ``--memory-lengths`` pair (e.g. 60 s and 600 s, a
  ``--memory-pano-width`` panorama, which ``--hands sim`` does not decode, ``--memory-people`` people
  and as many Kinects): the long one within 1.5x
  the short one (sessions are processed in 60 s chunks).
- Resolution: a ``--res-seconds`` session per panorama width (3840, 5760): decoding of every frame,
  cutting the four wrist views of every frame, the hand backend (the ``sim`` observer: the tiny
  WiLoR fixture has no matching detector, so the network is not timed here) and the fusion stages
  (``process`` with the sim observer), each in frames/s, with the real-time ratio; and the whole
  ``process`` in this one process against ``batch --workers 2`` in 1 s chunks on the same session.
- Batch: ``--batch-sessions`` sessions of ``--batch-seconds`` through ``batch --workers 1``
  (in-process) and ``--workers 2`` (local Ray cluster, one thread per worker); the speed-up of the
  whole command, without Ray's start, and of the work alone. Each waits (a while) for the load to
  fall under ``--load-limit``; on a shared machine the load average is recorded beside every figure.

Usage: nice -n 10 python benchmarks/bench_process.py [--work DIR] [--lengths 15 60 240]
       [--memory-lengths 60 600] [--skip-linearity] [--skip-memory] [--skip-resolution] [--skip-batch]

Simulated sessions in ``--work`` are made once and reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results" / "process.json"
PYTHON = sys.executable


def load() -> float:
    return round(os.getloadavg()[0], 2)


def simulate(path: Path, seconds: float, pano_width: int, seed: int = 0, people: int = 2, kinects: int = 2) -> Path:
    """Simulate once; a session already there (complete) is reused."""
    if (path / "session.json").is_file() and json.loads((path / "session.json").read_text()).get("status") == "complete":
        return path
    subprocess.run([PYTHON, "-m", "omnimocap.apps.cli", "simulate", str(path), "--seconds", str(seconds),
                    "--people", str(people), "--kinects", str(kinects), "--seed", str(seed),
                    "--pano-width", str(pano_width), "--no-kinect-video", "--overwrite"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path


_CHILD = """
import json, resource, sys, time
from omnimocap.fusion.pipeline import ProcessConfig, process_session
import omnimocap.fusion.body_fit, omnimocap.fusion.export, omnimocap.hands.sim_backend  # start-up cost, not timed
t0, cpu0 = time.perf_counter(), time.process_time()
report = process_session(sys.argv[1], sys.argv[2], ProcessConfig(hands="sim", preview=False), overwrite=True,
                         progress=False)
print(json.dumps({"frames": report["frames"], "pano_frames": report["pano_frames"], "timings_s": report["timings_s"],
                  "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def process_in_child(session: Path, out: Path) -> dict:
    """``process`` in a fresh interpreter (so its peak RSS is its own)."""
    res = subprocess.run([PYTHON, "-c", _CHILD, str(session), str(out)], check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def linearity(work: Path, lengths: list[float], pano_width: int) -> dict:
    rows = []
    for sec in lengths:
        session = simulate(work / f"len{int(sec)}", sec, pano_width)
        r = process_in_child(session, work / f"len{int(sec)}.out")
        per_frame = {k: v / r["frames"] for k, v in r["timings_s"].items()}
        per_frame["process_cpu"] = r["cpu_s"] / r["frames"]  # CPU time: less sensitive to a shared machine's load
        rows.append({"seconds": sec, "frames": r["frames"], "timings_s": r["timings_s"], "cpu_s": round(r["cpu_s"], 2),
                     "ms_per_frame": {k: round(1e3 * v, 3) for k, v in per_frame.items()},
                     "peak_rss_mb": round(r["peak_rss_mb"], 1), "load_avg": load()})
        print(f"  {sec:>5.0f} s: {r['frames']} frames, ms/frame {rows[-1]['ms_per_frame']}, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    stages = rows[0]["ms_per_frame"].keys()
    spread = {k: round(max(r["ms_per_frame"][k] for r in rows) / max(min(r["ms_per_frame"][k] for r in rows), 1e-9), 3)
              for k in stages}
    return {"pano_width": pano_width, "sessions": rows, "ms_per_frame_spread": spread,
            "flat_within_1_3": all(v <= 1.3 for v in spread.values())}


def memory(work: Path, lengths: list[float], pano_width: int, people: int, known: dict) -> dict:
    """Peak RSS of ``process`` (a fresh interpreter each, imports included) on each session length,
    ``people`` people seen by as many Kinects; ``known``: {seconds: row} of sessions this run
    already processed."""
    rows = []
    for sec in lengths:
        if sec in known:
            r = known[sec]
        else:
            name = f"len{int(sec)}_w{pano_width}_p{people}"
            session = simulate(work / name, sec, pano_width, people=people, kinects=people)
            r = process_in_child(session, work / f"{name}.out")
        rows.append({"seconds": sec, "frames": r["frames"], "peak_rss_mb": round(r["peak_rss_mb"], 1),
                     "process_wall_s": round(r["wall_s"], 1), "load_avg": load()})
        print(f"  {sec:>5.0f} s: peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    return {"pano_width": pano_width, "people": people, "kinects": people, "sessions": rows,
            "ratio_long_to_short": round(ratio, 3),
            "within_1_5": ratio <= 1.5}


def resolution(work: Path, seconds: float, widths: list[int]) -> dict:
    from omnimocap.geometry.cameras import EquirectCamera
    from omnimocap.capture.rig import Rig
    from omnimocap.capture.pano import PanoReader
    from omnimocap.capture.session import Session
    from omnimocap.fusion.frame_stage import plan_hand_views, predicted_hands
    from omnimocap.fusion.pipeline import ProcessConfig, load_inputs, make_estimator
    from omnimocap.geometry.transforms import invert_pose
    from omnimocap.hands.estimator import ViewRequest
    from omnimocap.geometry.views import render_views

    out = []
    for width in widths:
        path = simulate(work / f"res{width}", seconds, width, people=1, kinects=1)
        session = Session.open(path)
        rig = Rig.load(session.rig_path)
        config = ProcessConfig(hands="sim", preview=False)
        inputs = load_inputs(session, rig, config)
        entry = session.pano()
        cam = EquirectCamera(int(entry.width), int(entry.height))
        pred = predicted_hands(inputs.people, inputs.t_pano_session)
        T_pano_world = invert_pose(rig.pose("pano"))
        reader = PanoReader(session.path(entry.recording), session.path(entry.timestamps))
        F = len(inputs.t_pano_session)
        t_decode = t_views = 0.0
        crops = 0
        planned_all = []
        t = time.perf_counter()
        for k, frame in reader.frames():
            t_decode += time.perf_counter() - t
            t = time.perf_counter()
            planned = plan_hand_views(pred, T_pano_world, [k], config)
            if planned:
                crops += len(render_views(frame, cam, [pv.view for pv in planned]))
            planned_all.extend(planned)
            t_views += time.perf_counter() - t
            t = time.perf_counter()
        estimator = make_estimator(config, session)
        requests = [ViewRequest(frame_index=pv.k, t_session=float(inputs.t_pano_session[pv.k]),
                                person_id=inputs.people.person_ids[pv.person], side=("left", "right")[pv.side],
                                R_pano_view=pv.view.R_pano_view, camera=pv.view.camera,
                                predicted_wrist_view=pv.view.R_pano_view.T @ pv.wrist_pano,
                                predicted_box_xyxy=pv.box_xyxy) for pv in planned_all]
        t = time.perf_counter()
        estimator.estimate(requests)
        t_hands = time.perf_counter() - t
        whole = process_in_child(path, work / f"res{width}.out")
        fusion_s = whole["timings_s"]["total"] - whole["timings_s"]["views_and_hands"]
        fps_video = F / seconds
        t = time.perf_counter()
        subprocess.run([PYTHON, "-m", "omnimocap.apps.cli", "batch", str(path), "--out", str(work / f"res{width}.batch"),
                        "--workers", "2", "--chunk-s", "1", "--overlap-s", "0.5", "--hands", "sim", "--no-preview",
                        "--quiet"], check=True, capture_output=True)
        batch_s = time.perf_counter() - t
        subprocess.run(["rm", "-rf", str(work / f"res{width}.batch")], check=True)
        stages = {"decode": t_decode, "views": t_views, "hands_sim": t_hands, "fusion": fusion_s}
        row = {"width": width, "height": width // 2, "frames": F, "views": crops,
               "frames_per_s": {k: round(F / v, 2) for k, v in stages.items()},
               "real_time_ratio": {k: round(F / v / fps_video, 3) for k, v in stages.items()},
               "decode_views_hands_fusion_fps": round(F / sum(stages.values()), 2),
               "process_single_process_fps": round(whole["frames"] / whole["wall_s"], 2),
               "batch_2_workers_fps_incl_ray_start": round(whole["frames"] / batch_s, 2),
               "load_avg": load()}
        row["batch_over_single_process"] = round(row["batch_2_workers_fps_incl_ray_start"] / row["process_single_process_fps"], 3)
        print(f"  {width}x{width // 2}: {row}", flush=True)
        out.append(row)
    return {"seconds": seconds, "hands_backend": "sim (the tiny WiLoR fixture is not timed here)", "rows": out}


def wait_for_load(limit: float, patience_s: float) -> None:
    """On a shared machine: wait (at most ``patience_s``) for the 1-minute load to fall under ``limit``."""
    t = time.monotonic()
    while os.getloadavg()[0] > limit and time.monotonic() - t < patience_s:
        time.sleep(10)


def batch_speedup(work: Path, n: int, seconds: float, pano_width: int, load_limit: float, patience_s: float) -> dict:
    """``batch`` over the same ``n`` sessions with ``--workers 1`` (in this process) and 2 (a local
    Ray cluster); each the whole command's wall clock, and from its ``batch_report.json`` the
    cluster's start, the workers' warm-up (their imports) and the work after them."""
    sessions = [simulate(work / f"batch{int(seconds)}/s{i}", seconds, pano_width, seed=i) for i in range(n)]
    res = {}
    for workers in (1, 2):
        out = work / f"batch_out_w{workers}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        wait_for_load(load_limit, patience_s)
        load_before = load()
        t = time.perf_counter()
        subprocess.run([PYTHON, "-m", "omnimocap.apps.cli", "batch", *map(str, sessions), "--out", str(out),
                        "--workers", str(workers), "--hands", "sim", "--no-preview", "--quiet"],
                       check=True, capture_output=True)
        wall = time.perf_counter() - t
        report = json.loads((out / "batch_report.json").read_text())
        sec = report["seconds"]
        res[workers] = {"seconds": round(wall, 2), "ray_start_s": round(sec["engine_start"], 2),
                        "workers_warm_up_s": round(sec["workers_warm_up"], 2), "work_s": round(sec["work"], 2),
                        "frames": sum(s["frames"] for s in report["sessions"]),
                        "load_avg_before": load_before, "load_avg_after": load()}
        print(f"  batch --workers {workers}: {res[workers]}", flush=True)
    w1, w2 = res[1], res[2]
    return {"sessions": n, "session_seconds": seconds, "frames": w1["frames"], "workers_1": w1, "workers_2": w2,
            "speedup": round(w1["seconds"] / w2["seconds"], 3),
            "speedup_without_ray_start": round(w1["seconds"] / (w2["seconds"] - w2["ray_start_s"]), 3),
            "speedup_of_the_work": round(w1["work_s"] / w2["work_s"], 3),
            "note": "speedup: wall clock of the whole command (interpreter start, imports, Ray's local cluster "
                    "start and the workers' warm-up included); without_ray_start: less ray.init; of_the_work: "
                    "the units of work only (after the start and the warm-up)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/omnimocap_bench_process"))
    ap.add_argument("--lengths", type=float, nargs="+", default=[15, 60, 240])
    ap.add_argument("--memory-lengths", type=float, nargs=2, default=[60, 600])
    ap.add_argument("--pano-width", type=int, default=480)
    ap.add_argument("--memory-pano-width", type=int, default=64,
                    help="panorama of the memory sessions (process with --hands sim does not decode it)")
    ap.add_argument("--memory-people", type=int, default=1, help="people (and Kinects) of the memory sessions")
    ap.add_argument("--res-seconds", type=float, default=2.0)
    ap.add_argument("--res-widths", type=int, nargs="+", default=[3840, 5760])
    ap.add_argument("--batch-sessions", type=int, default=4)
    ap.add_argument("--batch-seconds", type=float, default=45.0)
    ap.add_argument("--load-limit", type=float, default=2.5, help="wait for a 1-minute load under this before timing batch")
    ap.add_argument("--load-patience-s", type=float, default=300.0, help="at most this long")
    ap.add_argument("--skip-linearity", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-resolution", action="store_true")
    ap.add_argument("--skip-batch", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    if not args.skip_linearity:
        print("linearity", flush=True)
        result["linearity"] = linearity(args.work, args.lengths, args.pano_width)
    if not args.skip_batch:
        print("batch", flush=True)
        result["batch"] = batch_speedup(args.work, args.batch_sessions, args.batch_seconds, args.pano_width,
                                        args.load_limit, args.load_patience_s)
    if not args.skip_memory:
        print("memory", flush=True)
        # peak RSS of sessions this run processed for linearity; the others are processed here
        known = ({r["seconds"]: {**r, "wall_s": r["timings_s"]["total"]} for r in result["linearity"]["sessions"]}
                 if not args.skip_linearity and (args.memory_pano_width, args.memory_people) == (args.pano_width, 2)
                 else {})
        result["memory"] = memory(args.work, args.memory_lengths, args.memory_pano_width, args.memory_people, known)
    if not args.skip_resolution:
        print("resolution", flush=True)
        result["resolution"] = resolution(args.work, args.res_seconds, args.res_widths)
    result["peak_rss_driver_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
