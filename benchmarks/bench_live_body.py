"""The live body's cost per frame against the hand preview's, in the same run.

Simulates a session once (2 people, 2 Kinects, ``--seconds``, panorama ``--pano-width``, the
synthetic SMPL-X model in a models folder so the bodies are skinned too) and drives the live
controller pass by pass on this thread (``LiveController.step``, each panorama frame queued after
the Kinect frames up to its time), so each pass runs the hand preview and then the body fit of
``fusion.live.body`` one after the other. Per pass it reads the snapshot's ``pipeline_ms`` (the hand
preview) and ``body_ms`` (the body: fit of the newest frame of every person, hands, skinning).
Reported over the passes after both shapes are held: median and 90th percentile of each, and the
ratio of the medians; the pass that fits the shapes is reported apart. The session goes through
twice, one run after the other: with each frame's fit started from the person's previous one
(``warm``, ``LiveConfig.body_warm_iterations`` steps, the default) and from the fit's analytic
initialisation (``cold``, 6 + 3 steps, as ``process`` starts); ``warm_over_cold``: the ratio of
their body-to-preview ratios. Writes benchmarks/results/live_body.json.

    nice -n 10 python benchmarks/bench_live_body.py [--seconds 6] [--pano-width 960]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.tools.replay
from tests.tools.replay import read_all  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "live_body.json"


def drive(controller, on_state) -> None:
    """Every panorama frame of the replay through ``controller.step()``, after the Kinect frames up
    to its time; ``on_state(state)`` after each pass."""
    from omnimocap.fusion.live.feeds import Released, session_time

    kinects = [f for f in controller.feeds if f.source.kind == "kinect"]
    pano = next(f for f in controller.feeds if f.source.kind == "pano")
    frames = {f.name: read_all(f.source) for f in kinects}
    times = {f.name: np.array([session_time(controller.rig, f.name, k) for k in frames[f.name]]) for f in kinects}
    queued = {f.name: 0 for f in kinects}
    for frame in read_all(pano.source):
        t = session_time(controller.rig, pano.name, frame)
        for feed in kinects:
            wanted = int(np.searchsorted(times[feed.name], t, side="right"))
            for k in frames[feed.name][queued[feed.name]:wanted]:
                feed.queue.put(Released(k, time.perf_counter()))
            queued[feed.name] = max(queued[feed.name], wanted)
        pano.queue.put(Released(frame, time.perf_counter()))
        on_state(controller.step())


def summarize(passes: list[tuple[int, float, float]]) -> dict:
    """Per-pass (people fitted, preview ms, body ms) summarised over the passes after both shapes are held."""
    fitted = np.array([p[0] for p in passes])
    first = int(np.argmax(fitted >= 2))  # the pass that fitted the second shape
    steady = np.array([p[1:] for p in passes[first + 1:] if p[0] >= 2])
    preview_ms, body_ms = steady[:, 0], steady[:, 1]
    return {
        "passes": len(passes), "passes_with_two_bodies": len(steady),
        "preview_ms": {"median": round(float(np.median(preview_ms)), 2), "p90": round(float(np.percentile(preview_ms, 90)), 2)},
        "body_ms": {"median": round(float(np.median(body_ms)), 2), "p90": round(float(np.percentile(body_ms, 90)), 2)},
        "body_over_preview": round(float(np.median(body_ms) / np.median(preview_ms)), 3),
        "shape_pass_body_ms": round(float(passes[first][2]), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--pano-width", type=int, default=960)
    args = parser.parse_args()

    import torch

    from omnimocap.capture.replay import replay_sources
    from omnimocap.capture.rig import Rig
    from omnimocap.capture.sources import SessionClock
    from omnimocap.fusion.live.controller import LiveConfig, LiveController
    from omnimocap.fusion.pipeline import ProcessConfig
    from omnimocap.sim.simulate import SimConfig, simulate_session
    from omnimocap.sim.synthetic_models import write_synthetic_smplx

    torch.set_num_threads(1)  # as on the live body's own thread
    with tempfile.TemporaryDirectory() as tmp:
        session = Path(tmp) / "session"
        simulate_session(session, SimConfig(seconds=args.seconds, people=2, kinects=2, seed=0, pano_width=args.pano_width))
        write_synthetic_smplx(Path(tmp) / "models" / "smplx")
        runs = {}
        for name, warm_iterations in (("warm", LiveConfig.body_warm_iterations), ("cold", 0)):
            clock = SessionClock()
            config = LiveConfig(process=ProcessConfig(hands="sim", models=str(Path(tmp) / "models")),
                                body_warm_iterations=warm_iterations)
            controller = LiveController(replay_sources(session, clock, realtime=False, on_session_clock=True),
                                        clock=clock, rig=Rig.load(session / "rig.json"), session_dir=session,
                                        config=config)
            passes: list[tuple[int, float, float]] = []  # (people fitted, preview ms, body ms)
            drive(controller, lambda s: passes.append((len(s.world.fitted), s.pipeline_ms, s.body_ms)))
            controller.close()
            runs[name] = summarize(passes) | {"warm_iterations": warm_iterations}
    result = {
        "config": {"seconds": args.seconds, "people": 2, "kinects": 2, "pano_width": args.pano_width, "hands": "sim",
                   "body_model": "synthetic SMPL-X (10475 vertices)", "torch_threads": 1},
        **runs,
        "warm_over_cold": round(runs["warm"]["body_over_preview"] / runs["cold"]["body_over_preview"], 3),
        "machine": {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
                    "python": platform.python_version()},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
