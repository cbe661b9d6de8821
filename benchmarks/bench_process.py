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
- Resolution: a ``--res-seconds`` session per panorama width (3840, 5760), 1 person, 1 Kinect:
  decoding of every frame, planning and cutting the wrist views of every frame, the hand backends
  on all views (the ``sim`` observer; WiLoR's detector alone, its regressor alone on the predicted
  boxes, and the whole WiLoR backend) and the fusion stages, each in frames/s with the real-time
  ratio; the whole ``process`` with ``--hands sim`` and with ``--hands wilor`` (fresh interpreters)
  and, on the CPU, ``batch --workers 2`` in 1 s chunks on the same session. The networks are the
  WiLoR parity fixture's tiny checkpoint (``--fixture``) and ``tests/tools/detector_fixture.py``'s
  YOLOv8n-pose hand detector with random weights (its boxes are not hands; their count is
  recorded), on ``--device`` (fp16 autocast on CUDA, as ``process`` runs it).
- Batch: ``--batch-sessions`` sessions of ``--batch-seconds`` through ``batch --workers 1``
  (in-process) and ``--workers 2`` (local Ray cluster, one thread per worker); the speed-up of the
  whole command, without Ray's start, and of the work alone. Each waits (a while) for the load to
  fall under ``--load-limit``; on a shared machine the load average is recorded beside every figure.

Usage: nice -n 10 python benchmarks/bench_process.py [--work DIR] [--lengths 15 60 240]
       [--memory-lengths 60 600] [--device cpu|cuda] [--out FILE]
       [--skip-linearity] [--skip-memory] [--skip-resolution] [--skip-batch]

Sections not run keep the values ``--out`` already holds.

Simulated sessions in ``--work`` are made once and reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "process.json"
FIXTURE = Path(os.environ.get("OMNIMOCAP_SHARED", REPO.parent / "shared")) / "fixtures" / "wilor_parity"
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
config = ProcessConfig(**{"hands": "sim", "preview": False, **json.loads(sys.argv[3])})
t0, cpu0 = time.perf_counter(), time.process_time()
report = process_session(sys.argv[1], sys.argv[2], config, overwrite=True, progress=False)
print(json.dumps({"frames": report["frames"], "pano_frames": report["pano_frames"], "timings_s": report["timings_s"],
                  "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def process_in_child(session: Path, out: Path, config: dict | None = None) -> dict:
    """``process`` in a fresh interpreter (so its peak RSS is its own); ``config``: ``ProcessConfig``
    fields (default ``--hands sim``, no preview)."""
    res = subprocess.run([PYTHON, "-c", _CHILD, str(session), str(out), json.dumps(config or {})], check=True,
                         capture_output=True, text=True)
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


def wilor_models(folder: Path, fixture: Path) -> Path:
    """A models folder laid out as ``omnimocap models`` writes it, with the WiLoR parity fixture's tiny
    checkpoint (``fixture``: its folder) and the YOLOv8n-pose hand detector of
    ``tests/tools/detector_fixture.py`` (random weights, deterministic); made once and reused."""
    detector = folder / "wilor" / "detector.pt"
    if detector.is_file():
        return folder
    files = {"wilor_tiny.ckpt": "wilor/wilor_final.ckpt", "model_config.yaml": "wilor/model_config.yaml",
             "mano_mean_params.npz": "mano/mano_mean_params.npz"}
    missing = [name for name in files if not (fixture / name).is_file()]
    if missing:
        sys.exit(f"{fixture}: no {', '.join(missing)} (the WiLoR parity fixture); pass --fixture DIR or "
                 "--skip-resolution")
    for name, rel in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(fixture / name, folder / rel)
    sys.path.insert(0, str(REPO))  # tests.tools.detector_fixture
    from tests.tools.detector_fixture import build_detector

    build_detector(detector)
    return folder


def timed(fn):
    """(seconds, result, 1-minute load average right after) of one call."""
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result, load()


def resolution(work: Path, seconds: float, widths: list[int], device: str, fixture: Path) -> dict:
    """Per panorama width, a ``seconds`` session (1 person, 1 Kinect): each stage over all its frames,
    in this process; the whole ``process`` with each hand backend in a fresh process; ``batch
    --workers 2`` on the same session."""
    from omnimocap.capture.pano import PanoReader
    from omnimocap.capture.rig import Rig
    from omnimocap.capture.session import Session
    from omnimocap.fusion.frame_stage import plan_hand_views, predicted_hands
    from omnimocap.fusion.pipeline import ProcessConfig, load_inputs, make_estimator
    from omnimocap.geometry.cameras import EquirectCamera
    from omnimocap.geometry.transforms import invert_pose
    from omnimocap.geometry.views import render_views
    from omnimocap.hands.estimator import ViewRequest
    from omnimocap.hands.wilor.backend import WilorEstimator

    models = wilor_models(work / "wilor_models", fixture)
    load_s, wilor, _ = timed(lambda: WilorEstimator.from_models_dir(models, device=device))
    regressor_only = WilorEstimator(wilor.model, detector=None, precision=wilor.precision)
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
        t_session = inputs.t_pano_session
        F = len(t_session)
        fps_video = (F - 1) / float(t_session[-1] - t_session[0])
        t_decode = t_views = 0.0
        planned_all, images = [], []
        t = time.perf_counter()
        for k, frame in reader.frames():
            t_decode += time.perf_counter() - t
            t = time.perf_counter()
            planned = plan_hand_views(pred, T_pano_world, [k], config, rig.pano_optics, cam.width)
            if planned:
                images.extend(render_views(frame, cam, [pv.view for pv in planned]))
            planned_all.extend(planned)
            t_views += time.perf_counter() - t
            t = time.perf_counter()
        loads = {"decode_and_views": load()}
        requests = [ViewRequest(frame_index=pv.k, t_session=float(t_session[pv.k]),
                                person_id=inputs.people.person_ids[pv.person], side=("left", "right")[pv.side],
                                R_pano_view=pv.view.R_pano_view, camera=pv.view.camera,
                                predicted_wrist_view=pv.view.R_pano_view.T @ pv.wrist_pano,
                                predicted_box_xyxy=pv.box_xyxy, image_bgr=image)
                    for pv, image in zip(planned_all, images)]
        sim = make_estimator(config, session)
        t_sim, _, loads["hands_sim"] = timed(lambda: sim.estimate(requests))
        # First calls (the predictor's set-up, CUDA kernels) are not the throughput: one warm-up each.
        wilor.detector.detect(images[:2])
        regressor_only.estimate(requests[:2])
        t_det, dets, loads["detector"] = timed(lambda: wilor.detector.detect(images))
        t_reg, _, loads["regressor"] = timed(lambda: regressor_only.estimate(requests))
        t_wilor, observations, loads["hands_wilor"] = timed(lambda: wilor.estimate(requests))
        boxes = sum(len(d.boxes_xyxy) for d in dets)
        detected = sum(1 for o in observations if o is not None and o.confidence > 0)
        whole_sim = process_in_child(path, work / f"res{width}.out", {"hands": "sim", "device": device})
        loads["process_sim"] = load()
        whole_wilor = process_in_child(path, work / f"res{width}.wilor.out",
                                       {"hands": "wilor", "models": str(models), "device": device})
        loads["process_wilor"] = load()
        fusion_s = whole_sim["timings_s"]["total"] - whole_sim["timings_s"]["views_and_hands"]
        loads["fusion"] = loads["process_sim"]
        batch_s = None
        if device == "cpu":  # batch's comparison is a CPU one (--hands sim); on CUDA the hand network's path is what is measured
            t = time.perf_counter()
            subprocess.run([PYTHON, "-m", "omnimocap.apps.cli", "batch", str(path), "--out", str(work / f"res{width}.batch"),
                            "--workers", "2", "--chunk-s", "1", "--overlap-s", "0.5", "--hands", "sim", "--no-preview",
                            "--quiet"], check=True, capture_output=True)
            batch_s = time.perf_counter() - t
            shutil.rmtree(work / f"res{width}.batch")
        stages = {"decode": t_decode, "views": t_views, "hands_sim": t_sim, "detector": t_det, "regressor": t_reg,
                  "hands_wilor": t_wilor, "fusion": fusion_s}
        fps = {k: F / v for k, v in stages.items()}
        fps["process_sim"] = whole_sim["frames"] / whole_sim["wall_s"]
        fps["process_wilor"] = whole_wilor["frames"] / whole_wilor["wall_s"]
        row = {"width": width, "height": width // 2, "frames": F, "video_fps": round(fps_video, 3),
               "views": len(requests), "detector_boxes": boxes,
               "detector_boxes_per_frame": round(boxes / F, 2), "views_with_a_detection": detected,
               "regressor_crops": len(requests), "regressor_crops_per_s": round(len(requests) / t_reg, 2),
               "frames_per_s": {k: round(v, 2) for k, v in fps.items()},
               "real_time_ratio": {k: round(v / fps_video, 3) for k, v in fps.items()},
               "load_avg": loads,
               "decode_views_wilor_fusion_fps": round(F / (t_decode + t_views + t_wilor + fusion_s), 2),
               "process_wilor_over_sim": round(fps["process_wilor"] / fps["process_sim"], 3)}
        if batch_s is not None:
            row["batch_2_workers_sim_fps_incl_ray_start"] = round(whole_sim["frames"] / batch_s, 2)
            row["batch_over_single_process"] = round(row["batch_2_workers_sim_fps_incl_ray_start"] / fps["process_sim"], 3)
        print(f"  {width}x{width // 2}: {row}", flush=True)
        out.append(row)
    return {"seconds": seconds, "device": device, "wilor_precision": wilor.precision,
            "wilor_load_s": round(load_s, 2), "rows": out,
            "note": "stages in this process over all frames of the session: decode (the 360 video), views (plan "
                    "and cut the wrist views), hands_sim (the simulated observer), detector (the WiLoR hand "
                    "detector on every view), regressor (the WiLoR network on every view's predicted box, no "
                    "detector), hands_wilor (the whole WiLoR backend: detector, association, regressor), fusion "
                    "(process with the sim observer less its views_and_hands stage); process_sim / process_wilor: "
                    "the whole single-process process command (a fresh interpreter, imports excluded) with each "
                    "backend; with the sim observer process decodes no panorama frame. The networks are the parity fixture's tiny WiLoR (not the full ViT-H) and a "
                    "YOLOv8n-pose detector with random weights: its boxes are not hands, and the backend "
                    "regresses one crop per view whatever it finds (the detection it associates, else the "
                    "predicted box), so the regressor's work is the number of views."}


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
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="torch device of the hand network (and the body fit) in the resolution section")
    ap.add_argument("--fixture", type=Path, default=FIXTURE, help="the WiLoR parity fixture's folder")
    ap.add_argument("--out", type=Path, default=OUT, help="results file; sections not run keep their values there")
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
        result["resolution"] = resolution(args.work, args.res_seconds, args.res_widths, args.device, args.fixture)
    result["peak_rss_driver_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
