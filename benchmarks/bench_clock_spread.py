"""How much of the 360 camera's clock error is chance: ``sync`` on the same simulated scenes under
several draws of the independent k4abt error model (benchmarks/k4abt_independent.py), each with the
rig's true poses, so that only the clock is estimated.

Per scene (two people, two Kinects with recordings): the ``--realism ideal`` session, then
``--draws`` sessions made from it with the independent model under different seeds. Each is synced
with the simulated detector (``omnimocap sync S --observer simulated-detector``) from a copy of the
true rig, and the signed clock error at the middle 360 frame is set against the solver's own
1-sigma (``offset_std_ms`` of the sync result). The scenes' motion and the 360 side's detections
are the same in every draw of a scene, so the spread over draws is what the Kinect errors alone
contribute; the ideal session's error is what the 360 side contributes.

Writes ``benchmarks/results/clock_spread.json`` and ``clock_spread.md`` unless ``--out`` says
otherwise. About 20 s per session after the scenes are simulated (2 cores)::

    nice -n 10 python benchmarks/bench_clock_spread.py --scenes 12 22 24 --draws 4
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_MS = 2.0


def sync_error(session: Path) -> dict:
    """Sync ``session`` from its true rig with the simulated detector; signed clock error (ms, at
    the middle 360 frame, estimated minus true) and the solver's 1-sigma."""
    from omnimocap.calibration.config import ObserverConfig, SyncConfig
    from omnimocap.calibration.sync import sync_session
    from omnimocap.capture.rig import Rig
    from omnimocap.capture.truth import Truth

    truth = Truth(session)
    truth.rig().save(session / "rig.json")
    t0 = time.perf_counter()
    result = sync_session(session, SyncConfig(observer=ObserverConfig(observer="simulated-detector")))
    seconds = time.perf_counter() - t0
    true_map, est_map = truth.rig().time_map("pano"), Rig.load(session / "rig.json").time_map("pano")
    frames = truth.motion()["pano_frame_t_session"]
    t_mid = true_map.to_sensor(frames[len(frames) // 2])
    error = (est_map.to_session(t_mid) - true_map.to_session(t_mid)) * 1e3
    return {"error_ms": float(error), "std_ms": float(result["offset_std_ms"]), "sync_s": seconds}


def table(runs: list[dict]) -> str:
    lines = ["| scene | ideal: error (1-sigma), ms | independent draws: errors, ms | their spread, ms | mean 1-sigma, ms | within 2 ms |",
             "|---|---|---|---|---|---|"]
    for scene in sorted({r["scene"] for r in runs}):
        ideal = [r for r in runs if r["scene"] == scene and r["level"] == "ideal"]
        draws = [r for r in runs if r["scene"] == scene and r["level"] == "independent"]
        errs = np.array([r["error_ms"] for r in draws])
        cell = f"{ideal[0]['error_ms']:+.2f} ({ideal[0]['std_ms']:.2f})" if ideal else "-"
        lines.append(f"| {scene} | {cell} | {', '.join(f'{e:+.2f}' for e in errs)} | "
                     f"{np.std(errs, ddof=1) if len(errs) > 1 else float('nan'):.2f} | "
                     f"{np.mean([r['std_ms'] for r in draws]):.2f} | {int(np.sum(np.abs(errs) <= TARGET_MS))}/{len(errs)} |")
    draws = [r for r in runs if r["level"] == "independent"]
    if draws:
        e = np.array([r["error_ms"] for r in draws])
        s = np.array([r["std_ms"] for r in draws])
        lines += ["", f"Over all {len(e)} independent sessions: RMS error {np.sqrt(np.mean(e ** 2)):.2f} ms, "
                      f"RMS of the solver's 1-sigma {np.sqrt(np.mean(s ** 2)):.2f} ms, "
                      f"{int(np.sum(np.abs(e) <= TARGET_MS))}/{len(e)} within {TARGET_MS:g} ms, "
                      f"{int(np.sum(np.abs(e) <= 2 * s))}/{len(e)} within twice their 1-sigma."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", type=int, nargs="+", default=[12, 22, 24])
    p.add_argument("--draws", type=int, default=4, help="independent-model seeds per scene")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--work", type=Path, default=Path("bench_clock_work"), help="folder for the sessions")
    p.add_argument("--out", type=Path, default=RESULTS / "clock_spread", help="writes OUT.json and OUT.md")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_field
    from k4abt_independent import make_session

    runs = []
    for scene in args.scenes:
        ideal = args.work / f"ideal_seed{scene}"
        if not (ideal / "truth").is_dir():
            bench_field.simulate(ideal, "ideal", scene, args.seconds, None)
        runs.append({"scene": scene, "level": "ideal", "model_seed": None, **sync_error(ideal)})
        print(json.dumps(runs[-1]), file=sys.stderr)
        for k in range(args.draws):
            seed = bench_field.INDEPENDENT_SEED_OFFSET + scene + 1000 * k  # k = 0: the field benchmark's draw
            session = args.work / f"independent_seed{scene}_model{seed}"
            make_session(ideal, session, seed=seed)
            runs.append({"scene": scene, "level": "independent", "model_seed": seed, **sync_error(session)})
            print(json.dumps(runs[-1]), file=sys.stderr)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        info = {"seconds": args.seconds, "people": 2, "kinects": 2, "pose": "true rig", "observer": "simulated-detector"}
        args.out.with_suffix(".json").write_text(json.dumps({"settings": info, "runs": runs}, indent=1))
        args.out.with_suffix(".md").write_text(
            f"# The 360 camera's clock: error against chance ({args.seconds:g} s sessions, true rig)\n\n"
            "Signed clock error at the middle 360 frame (estimated minus true), `sync --observer simulated-detector` "
            "from the true rig; each scene's draws differ only in the independent k4abt model's seed "
            "(benchmarks/bench_clock_spread.py).\n\n" + table(runs) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
