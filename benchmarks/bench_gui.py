"""Live session display rate and capture-to-display latency on the simulated rig.

Simulates a short session once (``simulated_rig``: 2 people, 2 Kinects, 30 fps panorama), replays
it in a loop for ``--seconds`` through the live controller with the hand preview (simulated
observer) and the live SMPL-X body on (``LiveConfig.body``, skinned to the synthetic SMPL-X model
written into a temporary models folder, so the 3D view draws both people's meshes), and measures,
per displayed panorama frame, the time from its release by the capture thread to the moment the
view finished drawing it:

- ``headless``: a consumer polling ``LiveController.latest()`` every 16 ms (no Qt);
- ``gui_paced``: the lean window (``SessionWindow(lean=True)``) with the panorama published only
  together with its own hand preview (``LiveConfig.display_every_frame=False``), as the window
  played before: the display runs at the preview's rate;
- ``gui_lean``: the same window with every panorama frame published as it is polled, drawn under the
  overlays of the newest frame the preview (on its own thread) has finished (the default).

In each, the Kinect panes and the 3D view are drawn at every second panorama frame (15 Hz), the body
fitted at most 15 times a second, each fit warm-started.

The windows run in the same process one after the other (offscreen Qt platform unless a display
is set; run it under ``xvfb-run`` for a real X server), each after a warm-up that ends when the hand
preview lifts its first hands (the backend loads on its own thread meanwhile). Reports display fps
against the source fps measured over the same seconds (their ratio), latency percentiles (release
by the capture thread to the window's widgets holding the frame), the same two for the frames whose
hands are drawn (``hands_fps``, ``hands_latency_ms``: the preview's own rate and lag), the live pipeline's time per
frame, the live body's time per fit and the people it fitted, the drops and the machine's load
average (1 minute, at the start and the end of each variant); writes benchmarks/results/gui.json.

    xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/bench_gui.py [--seconds 10] [--pano-width 1920]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "gui.json"


def percentiles_ms(latencies_s: list[float]) -> dict:
    lat = np.array(latencies_s) * 1000 if latencies_s else np.array([np.nan])
    return {f"p{q}": round(float(np.percentile(lat, q)), 1) for q in (50, 90, 95, 99)} | {"max": round(float(lat.max()), 1)}


def summarize(latencies_s: list[float], frames: int, seconds: float, controller, pipeline_ms: list[float],
              source_frames0: int = 0, body_ms: list[float] | None = None,
              hand_latencies_s: list[float] | None = None) -> dict:
    state = controller.latest()
    pano = next(d for d in state.devices if d.kind == "pano")
    display_fps = frames / seconds
    source_fps = (pano.frames - source_frames0) / seconds
    hand_latencies_s = hand_latencies_s or []
    return {
        "display_fps": round(display_fps, 2),
        "source_fps": round(source_fps, 2),
        "display_over_source": round(display_fps / source_fps, 3) if source_fps else None,
        "latency_ms": percentiles_ms(latencies_s),
        "hands_fps": round(len(hand_latencies_s) / seconds, 2),
        "hands_latency_ms": percentiles_ms(hand_latencies_s),
        "pipeline_ms": {f"p{q}": round(float(np.percentile(pipeline_ms or [np.nan], q)), 1) for q in (50, 95)},
        "body_ms": {f"p{q}": round(float(np.percentile(body_ms or [np.nan], q)), 1) for q in (50, 95)},
        "bodies_fitted_last": len(state.world.fitted),
        "body_mesh_last": state.world.body_faces is not None,
        "pano_drops": pano.drops,
        "hands_backend": state.hands_backend,
        "hand_views_last": len(state.hand_views),
    }


def live_controller(session_dir: Path, models: Path, **config):
    """The live controller replaying ``session_dir`` in a loop with the simulated hands and the
    live body skinned to the SMPL-X model of ``models``; ``config``: further LiveConfig fields."""
    from omnimocap.apps.live import LiveController
    from omnimocap.fusion.live.controller import LiveConfig
    from omnimocap.fusion.pipeline import ProcessConfig

    return LiveController.from_session(
        session_dir, config=LiveConfig(process=ProcessConfig(hands="sim", models=str(models)), body=True, **config))


def run_headless(session_dir: Path, models: Path, seconds: float, warmup_s: float = 120.0) -> dict:
    controller = live_controller(session_dir, models)
    controller.start()
    shown, shown_hands, latencies, hand_latencies, pipeline, body = None, None, [], [], [], []
    t0 = time.perf_counter()
    while not warmed_up(controller) and time.perf_counter() - t0 < warmup_s:
        time.sleep(0.02)
    frames0 = pano_frames(controller)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds:
            state = controller.latest()
            if state.pano is not None and (state.pano.index, state.pano.released_wall) != shown:
                shown = (state.pano.index, state.pano.released_wall)
                latencies.append(time.perf_counter() - state.pano.released_wall)
                pipeline.append(state.pipeline_ms)
                body.append(state.body_ms)
                hands = (state.pano.index, state.pano.released_wall) if state.pano.overlay_index is None else \
                    (state.pano.overlay_index, state.pano.overlay_released_wall)
                if hands != shown_hands and hands[1] is not None:
                    shown_hands = hands
                    hand_latencies.append(time.perf_counter() - hands[1])
            time.sleep(0.016)
        result = summarize(latencies, len(latencies), time.perf_counter() - t0, controller, pipeline, frames0, body,
                           hand_latencies)
        result["load_average_1min"] = [round(load, 1), round(os.getloadavg()[0], 1)]
        return result
    finally:
        controller.close()


def warmed_up(controller) -> bool:
    """The hand backend is loaded, the newest panorama frame lifted hands and both people's bodies
    are fitted (their shapes held)."""
    state = controller.latest()
    return state.hands_backend == "sim" and bool(state.world.hands) and len(state.world.fitted) >= 2


def pano_frames(controller) -> int:
    return next(d for d in controller.latest().devices if d.kind == "pano").frames


def run_gui(session_dir: Path, models: Path, seconds: float, lean: bool = True, warmup_s: float = 120.0,
            slow_every: int | None = None, **config) -> dict:
    from PySide6 import QtCore, QtWidgets

    from omnimocap.apps.gui import SessionWindow, preload_hand_backend

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    controller = live_controller(session_dir, models, **config)
    preload_hand_backend(controller)
    window = SessionWindow(controller, record_dir=tempfile.gettempdir(), lean=lean,
                           **({} if slow_every is None else {"slow_every": slow_every}))
    window.resize(1600, 900)
    window.show()
    pipeline, body = [], []
    last_seq = -1
    controller.start()
    t0 = time.perf_counter()
    while not warmed_up(controller) and time.perf_counter() - t0 < warmup_s:
        app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 5)
        time.sleep(0.005)
    window.displayed.clear()
    window.displayed_hands.clear()
    frames0 = pano_frames(controller)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 5)
        state = controller.latest()
        if state.seq != last_seq:
            last_seq = state.seq
            pipeline.append(state.pipeline_ms)
            body.append(state.body_ms)
        time.sleep(0.001)
    elapsed = time.perf_counter() - t0
    latencies = [lat for _, lat in window.displayed]
    result = summarize(latencies, len(latencies), elapsed, controller, pipeline, frames0, body,
                       [lat for _, lat in window.displayed_hands])
    result["qt_platform"] = QtWidgets.QApplication.platformName()
    result["opengl_3d"] = window.scene.uses_opengl
    result["load_average_1min"] = [round(load, 1), round(os.getloadavg()[0], 1)]
    window.close()
    window.deleteLater()
    app.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sim-seconds", type=float, default=4.0,
                        help="simulated seconds (plus simulated_rig's 0.5 s of slack) replayed in a loop")
    parser.add_argument("--pano-width", type=int, default=1920)
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen") if not os.environ.get("DISPLAY") else None

    from omnimocap.sim.replay import simulated_rig
    from omnimocap.sim.synthetic_models import write_synthetic_smplx

    with tempfile.TemporaryDirectory() as tmp:
        session_dir = simulated_rig(args.sim_seconds, Path(tmp) / "simulation", people=2, kinects=2, seed=1,
                                    pano_width=args.pano_width).sim_dir
        models = Path(tmp) / "models"
        write_synthetic_smplx(models / "smplx")
        results = {"headless": run_headless(session_dir, models, args.seconds)}
        try:
            results["gui_paced"] = run_gui(session_dir, models, args.seconds, lean=True, display_every_frame=False)
            results["gui_lean"] = run_gui(session_dir, models, args.seconds, lean=True)
        except ImportError as exc:
            results["gui"] = {"skipped": f"PySide6/pyqtgraph missing ({exc})"}
        if "gui_lean" in results:
            paced, lean = results["gui_paced"], results["gui_lean"]
            results["lean_over_paced_display_fps"] = round(lean["display_fps"] / max(paced["display_fps"], 1e-9), 2)
    report = {
        "benchmark": "live session display",
        "seconds": args.seconds, "pano_width": args.pano_width, "people": 2, "kinects": 2, "live_body": True,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "display": os.environ.get("DISPLAY", ""), "qt_platform": os.environ.get("QT_QPA_PLATFORM", "")},
        "results": results,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
