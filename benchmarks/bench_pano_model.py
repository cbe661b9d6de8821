"""What modelling the 360 camera's optics buys the hands: ``process`` on a field session whose 360
camera has two lenses 30 mm apart and a 25 ms rolling shutter, with each piece of
``ProcessConfig.camera_model`` switched off in turn (``fusion.frame_stage.PanoModelConfig``).

Flow per seed::

    omnimocap simulate S --realism field --seconds T --seed SEED  (2 people, 2 Kinects)
    the optics (baseline 0.03 m, readout 0.025 s, exposure 0.01 s) written into S/truth/realism.json's
        "camera" record and the pano_optics of S/rig.json and S/truth/rig.json
    omnimocap process S R --hands sim --hand-noise-mm 5 --hand-noise-deg 3 --hand-dropout 0.1
    omnimocap evaluate R S

run in-process on the true rig (no calibration or sync, so only the hands' modelling differs
between the variants). The hand observer sees the true hands as the stitched frame shows them:
each hand at the time the rows of its wrist were exposed (``geometry.pano_optics.capture_times``)
and along its directions from the lens on its side of the seam (``PanoOptics.apparent``);
otherwise it is ``--hands sim``'s observer with its noise (``StitchedSimObserver``). The simulated
panorama images are not looked at (the observer reads the truth), so the seam's blend and the
views' resolution have no effect on what it returns: their rows measure only that they cost
nothing here.

Writes ``benchmarks/results/pano_model.json`` and ``.md``. Run niced:
``nice -n 10 python benchmarks/bench_pano_model.py --seeds 1 --seconds 12``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
FIELD_CAMERA = {"baseline_m": 0.03, "readout_s": 0.025, "exposure_s": 0.01}
METRICS = ("hands.joint_error_mm", "hands.wrist_error_mm", "hands.coverage")
SWITCHES = tuple(f.name for f in dataclasses.fields(__import__(
    "omnimocap.fusion.frame_stage", fromlist=["PanoModelConfig"]).PanoModelConfig))


def stitched_observer_class():
    """``--hands sim``'s observer seeing through the session's true optics (see the module docstring)."""
    from omnimocap.geometry.pano_optics import capture_times
    from omnimocap.hands.sim_backend import SimHandObserver

    class StitchedSimObserver(SimHandObserver):
        def __init__(self, session_dir, optics, **kwargs):
            super().__init__(session_dir, **kwargs)
            self.optics = optics

        def true_hand(self, person, side, t_session):
            plain = super().true_hand

            def wrist_at(t):
                return self.to_pano(plain(person, side, float(t))[2][0])

            t, _ = capture_times(self.optics, t_session, wrist_at)
            R, pose, joints, visible = plain(person, side, float(t))
            apparent, _, _ = self.optics.apparent(self.to_pano(joints))
            # world points that the single-viewpoint projection shows where the stitched frame does
            return R, pose, apparent @ self._R_pano_world + self._pano_centre, visible

    return StitchedSimObserver


def prepare(session: Path, seed: int, seconds: float, pano_width: int, reuse: bool) -> float:
    """Simulate ``session`` (unless reused) and write the field optics into its truth and rigs."""
    from omnimocap.capture.rig import Rig
    from omnimocap.capture.truth import Truth
    from omnimocap.geometry.pano_optics import PanoOptics
    from omnimocap.sim.simulate import SimConfig, simulate_session

    t0 = time.perf_counter()
    if not (reuse and (session / "truth").is_dir()):
        simulate_session(session, SimConfig(seconds=seconds, people=2, kinects=2, seed=seed, pano_width=pano_width,
                                            realism="field", overwrite=True))
    truth = Truth(session)
    realism = truth.realism() if (truth.dir / "realism.json").is_file() else {}
    realism["camera"] = {**PanoOptics.from_dict(realism.get("camera")).to_dict(), **FIELD_CAMERA}
    truth.write_realism(realism)
    optics = truth.pano_optics()
    for path in (session / "rig.json", truth.dir / "rig.json"):
        rig = Rig.load(path)
        rig.pano_optics = optics
        path.unlink()  # a new file: the session may share its files by hard links
        rig.save(path)
    return time.perf_counter() - t0


def run(session: Path, result: Path, seed: int, off: tuple[str, ...], noise: bool) -> dict:
    from omnimocap.capture.truth import Truth
    from omnimocap.fusion import pipeline
    from omnimocap.fusion.evaluate import evaluate
    from omnimocap.fusion.pipeline import ProcessConfig, process_session

    optics = Truth(session).pano_optics()
    kwargs = dict(noise_mm=5.0, noise_deg=3.0, dropout=0.1, seed=seed) if noise else dict(seed=seed)
    observer = stitched_observer_class()
    pipeline.make_estimator = lambda config, s: observer(s.root, optics, **kwargs)
    config = ProcessConfig(hands="sim", seed=seed, preview=False)
    config = dataclasses.replace(config, camera_model=dataclasses.replace(config.camera_model, **{k: False for k in off}))
    t0 = time.perf_counter()
    process_session(session, result, config, overwrite=True, progress=False)
    process_s = time.perf_counter() - t0
    metrics = evaluate(result, session)
    return {"metrics": {k: metrics.get(k) for k in METRICS}, "process_s": round(process_s, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--pano-width", type=int, default=1920)
    p.add_argument("--work", type=Path, default=Path("bench_pano_model_work"))
    p.add_argument("--reuse", action="store_true", help="use the sessions already simulated in --work")
    p.add_argument("--out", type=Path, default=RESULTS / "pano_model", help="writes OUT.json and OUT.md")
    args = p.parse_args(argv)
    variants = [()] + [(s,) for s in SWITCHES] + [SWITCHES]
    runs = []
    for seed in args.seeds:
        session = args.work / f"field_seed{seed}"
        sim_s = prepare(session, seed, args.seconds, args.pano_width, args.reuse)
        for noise in (True, False):
            for off in variants:
                name = "all modelled" if not off else ("none modelled" if off == SWITCHES else f"{off[0]} off")
                r = run(session, args.work / f"result_seed{seed}_{'noisy' if noise else 'exact'}_{'-'.join(off) or 'all'}",
                        seed, off, noise)
                r.update(seed=seed, variant=name, noise=noise, prepare_s=round(sim_s, 1))
                runs.append(r)
                print(json.dumps(r), file=sys.stderr)
                write(args, runs, variants)
    return 0


def write(args, runs: list[dict], variants) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    setup = {"seconds": args.seconds, "seeds": args.seeds, "people": 2, "kinects": 2, "realism": "field",
             "pano_width": args.pano_width, "camera": FIELD_CAMERA, "rig": "true (no calibration or sync)"}
    args.out.with_suffix(".json").write_text(json.dumps({"setup": setup, "runs": runs}, indent=1))
    names = list(dict.fromkeys(r["variant"] for r in runs))
    lines = [f"# The 360 camera's optics in the hand stage\n\n{args.seconds:g} s field sessions (2 people, 2 Kinects), "
             f"seeds {', '.join(map(str, args.seeds))}, {args.pano_width} px panorama, the camera "
             f"{FIELD_CAMERA}; true rig; the observer sees through the optics (bench_pano_model.py). Mean over "
             "seeds. noisy: --hand-noise-mm 5 --hand-noise-deg 3 --hand-dropout 0.1; exact: no observer noise.\n",
             "| variant | " + " | ".join(f"{m} ({n})" for n in ("noisy", "exact") for m in METRICS) + " |",
             "|---|" + "---|" * (2 * len(METRICS))]
    for name in names:
        cells = []
        for noise in (True, False):
            for m in METRICS:
                vals = [r["metrics"][m] for r in runs if r["variant"] == name and r["noise"] == noise
                        and r["metrics"].get(m) is not None]
                cells.append(f"{np.mean(vals):.3g}" if vals else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
