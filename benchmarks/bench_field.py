"""The field-realism benchmark: the acceptance flow on simulated sessions at both realism levels
and with a second, independent model of k4abt's errors (benchmarks/k4abt_independent.py), and on
the field sessions once more with each repair switched off.

Flow per seed and level (two people, two Kinects with recordings)::

    omnimocap simulate S --realism LEVEL --seconds 30 --seed SEED
    omnimocap calibrate S --method markerless --observer simulated-detector
    omnimocap sync S --observer simulated-detector
    omnimocap process S R --hands sim --hand-noise-mm 5 --hand-noise-deg 3 --hand-dropout 0.1
    omnimocap evaluate R S

run in-process through the verbs' own functions. The repairs are found at run time, not listed
here: every boolean of ``ProcessConfig`` that defaults to True (``depth_cue``, ``smoothing``; not
``preview``) or does so inside one of its dataclass fields (for example ``people.mirror_repair``) and every boolean that defaults to True inside a dataclass
block of ``CalibrateConfig`` / ``SyncConfig`` (for example ``robust.scale_from_data``). With ``--ablate``, each field
session is run again with one switch off at a time (the rig is reset to the simulated copy first,
so calibration starts from nothing each time).

Writes ``benchmarks/results/field.json`` (every run's metrics and timings) and ``field.md`` (one
table: each metric, ideal vs field, then field without each repair; means over the seeds) unless
``--out`` says otherwise. Long: run niced, e.g. ``nice -n 10 python benchmarks/bench_field.py --seeds 1 2``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

METRICS = (
    ("sync.offset_error_ms", "<=", 2.0),
    ("calibration.rotation_error_deg", "<=", 0.3),
    ("calibration.translation_error_mm", "<=", 10.0),
    ("hands.joint_error_mm", "<=", 12.0),
    ("hands.wrist_error_mm", "<=", None),  # <= 0.5 * kinect.wrist_error_mm
    ("kinect.wrist_error_mm", None, None),
    ("body.joint_error_mm", "<=", 20.0),
    ("hands.coverage", ">=", 0.9),
)
RESULTS = Path(__file__).resolve().parent / "results"
# The independent error model's seed is the session's plus this.
INDEPENDENT_SEED_OFFSET = 1000
# Booleans of ProcessConfig that choose outputs, not repairs.
NOT_REPAIRS = ("preview",)


def process_switches() -> list[str]:
    """Dotted names of the repair switches of ``ProcessConfig``: its booleans defaulting to True
    (but :data:`NOT_REPAIRS`) and those inside its dataclass fields."""
    from omnimocap.fusion.pipeline import ProcessConfig

    out = []
    for f in dataclasses.fields(ProcessConfig):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if default is True and f.name not in NOT_REPAIRS:
            out.append(f.name)
        if dataclasses.is_dataclass(default):
            out += [f"{f.name}.{g.name}" for g in dataclasses.fields(default)
                    if isinstance(getattr(default, g.name), bool) and getattr(default, g.name) is True]
    return out


def calibration_switches() -> list[str]:
    """``verb:block.name`` of the booleans defaulting to True inside the dataclass blocks of
    ``CalibrateConfig`` and ``SyncConfig`` (e.g. ``calibrate:robust.scale_from_data``)."""
    from omnimocap.calibration.config import CalibrateConfig, SyncConfig

    out = []
    for verb, config in (("calibrate", CalibrateConfig()), ("sync", SyncConfig())):
        for f in dataclasses.fields(config):
            block = getattr(config, f.name)
            if dataclasses.is_dataclass(block):
                out += [f"{verb}:{f.name}.{g.name}" for g in dataclasses.fields(block)
                        if getattr(block, g.name) is True]
    return out


def _switch_off(obj, dotted: str):
    """A copy of dataclass ``obj`` with the boolean at ``dotted`` (``a.b``) set to False."""
    head, _, rest = dotted.partition(".")
    if not rest:
        return dataclasses.replace(obj, **{head: False})
    return dataclasses.replace(obj, **{head: _switch_off(getattr(obj, head), rest)})


def _calibration_config(off: str | None, verb: str):
    """The verb's config with the simulated detector, and the switch ``off`` (``verb:block.name``) off."""
    from omnimocap.calibration.config import CalibrateConfig, ObserverConfig, SyncConfig

    cls = CalibrateConfig if verb == "calibrate" else SyncConfig
    config = cls(observer=ObserverConfig(observer="simulated-detector"))
    if off is None or not off.startswith(f"{verb}:"):
        return config
    return _switch_off(config, off.split(":", 1)[1])


def simulate(session: Path, level: str, seed: int, seconds: float, pano_width: int | None) -> float:
    """Simulate ``session`` at ``level``; "independent" is the ideal session of the same seed (made
    first when missing) with k4abt's errors from benchmarks/k4abt_independent.py (its own seed)."""
    from omnimocap.sim.simulate import SimConfig, simulate_session

    t0 = time.perf_counter()
    if level == "independent":
        from k4abt_independent import make_session

        ideal = session.parent / f"ideal_seed{seed}"
        if not (ideal / "truth").is_dir():
            simulate(ideal, "ideal", seed, seconds, pano_width)
        make_session(ideal, session, seed=INDEPENDENT_SEED_OFFSET + seed)
        return time.perf_counter() - t0
    simulate_session(session, SimConfig(seconds=seconds, people=2, kinects=2, seed=seed, pano_width=pano_width,
                                        realism=level, overwrite=True))
    return time.perf_counter() - t0


def _calibrate(session: Path, off: str | None, timings: dict, errors: dict) -> None:
    """calibrate then sync ``session`` from the simulated copy of its rig, with switch ``off`` off."""
    from omnimocap.calibration.session import calibrate_session
    from omnimocap.calibration.sync import sync_session
    from omnimocap.capture.truth import Truth

    Truth(session).rig().save(session / "rig.json")
    t0 = time.perf_counter()
    try:
        calibrate_session(session, _calibration_config(off, "calibrate"))
    except Exception as exc:  # a failed step is a result of the benchmark, not the end of it
        errors["calibrate"] = f"{type(exc).__name__}: {exc}"
    timings["calibrate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        sync_session(session, _calibration_config(off, "sync"))
    except Exception as exc:
        errors["sync"] = f"{type(exc).__name__}: {exc}"
    timings["sync_s"] = time.perf_counter() - t0


def run_pipeline(session: Path, result: Path, seed: int, off: str | None = None,
                 calibrated: Path | None = None) -> dict:
    """calibrate (markerless, simulated detector), sync, process, evaluate with repair ``off``
    switched off; the session's rig.json is reset to the simulated copy first. With ``calibrated``
    (the rig.json this flow wrote with every repair on) and ``off`` a repair of ``process``, that
    rig is used as it is instead of calibrating again (the same calibration, in less time)."""
    import shutil

    from omnimocap.fusion.evaluate import evaluate
    from omnimocap.fusion.pipeline import ProcessConfig, process_session

    timings, errors = {}, {}
    if calibrated is not None and off is not None and ":" not in off and calibrated.is_file():
        (session / "rig.json").unlink(missing_ok=True)  # a new file: the session may share its files by hard links
        shutil.copyfile(calibrated, session / "rig.json")
        timings["calibration_reused"] = True
    else:
        _calibrate(session, off, timings, errors)
    config = ProcessConfig(hands="sim", hand_noise_mm=5.0, hand_noise_deg=3.0, hand_dropout=0.1, seed=seed)
    if off is not None and ":" not in off:
        config = _switch_off(config, off)
    t0 = time.perf_counter()
    metrics = {}
    try:
        process_session(session, result, config, overwrite=True, progress=False)
        timings["process_s"] = time.perf_counter() - t0
        metrics = evaluate(result, session)
    except Exception as exc:
        errors["process"] = f"{type(exc).__name__}: {exc}"
    return {"metrics": {k: metrics.get(k) for k, _, _ in METRICS} if metrics else {}, "timings": timings,
            "errors": errors}


def _passes(metrics: dict) -> dict:
    out = {}
    for key, op, target in METRICS:
        v = metrics.get(key)
        if op is None or v is None:
            continue
        if key == "hands.wrist_error_mm":
            k = metrics.get("kinect.wrist_error_mm")
            out[key] = k is not None and v <= 0.5 * k
        else:
            out[key] = v <= target if op == "<=" else v >= target
    return out


def _mean(values: list) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def table(runs: list[dict]) -> str:
    """Markdown: one row per metric, one column per variant (mean over seeds, then each seed)."""
    variants = []
    for r in runs:
        if r["variant"] not in variants:
            variants.append(r["variant"])
    lines = ["| metric | target | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]
    for key, op, target in METRICS:
        goal = "<= 0.5 x kinect.wrist" if key == "hands.wrist_error_mm" else (f"{op} {target:g}" if op else "")
        cells = []
        for v in variants:
            vals = [r["metrics"].get(key) for r in runs if r["variant"] == v]
            m = _mean(vals)
            each = " / ".join("-" if x is None else f"{x:.3g}" for x in vals)
            cells.append("-" if m is None else f"{m:.3g} ({each})")
        lines.append(f"| {key} | {goal} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


SHORT = {"sync.offset_error_ms": "sync ms", "calibration.rotation_error_deg": "360 rot deg",
         "calibration.translation_error_mm": "360 trans mm", "hands.joint_error_mm": "hands mm",
         "hands.wrist_error_mm": "hand wrist / Kinect wrist", "body.joint_error_mm": "body mm",
         "hands.coverage": "hand coverage"}


def _value(run: dict, key: str) -> float | None:
    m = run["metrics"]
    if key == "hands.wrist_error_mm":
        w, k = m.get(key), m.get("kinect.wrist_error_mm")
        return None if w is None or not k else w / k
    return m.get(key)


def variant_table(runs: list[dict]) -> str:
    """Markdown: one row per variant (ideal, field, field with one repair off), one column per
    target metric; each cell the worst seed's value (the targets hold per session), marked ``x``
    where it misses the target (the wrist's is the ratio of the hands' to the Kinect's wrist error,
    target 0.5)."""
    variants = []
    for r in runs:
        if r["variant"] not in variants:
            variants.append(r["variant"])
    keys = [k for k, op, _ in METRICS if op is not None]
    goals = {k: (op, 0.5 if k == "hands.wrist_error_mm" else t) for k, op, t in METRICS if op is not None}
    lines = ["| variant (worst seed) | " + " | ".join(SHORT[k] for k in keys) + " |",
             "|---|" + "---|" * len(keys),
             "| target | " + " | ".join(f"{goals[k][0]} {goals[k][1]:g}" for k in keys) + " |"]
    for v in variants:
        cells = []
        for k in keys:
            vals = [_value(r, k) for r in runs if r["variant"] == v]
            if any(x is None for x in vals) or not vals:
                cells.append("failed")
                continue
            op, goal = goals[k]
            worst = max(vals) if op == "<=" else min(vals)
            ok = worst <= goal if op == "<=" else worst >= goal
            cells.append(f"{worst:.3g}" + ("" if ok else " x"))
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--levels", nargs="+", default=["ideal", "field", "independent"],
                   choices=["ideal", "field", "independent"],
                   help="independent: the ideal session with k4abt's errors from benchmarks/k4abt_independent.py")
    p.add_argument("--pano-width", type=int, default=None,
                   help="panorama width (default: the realism level's, field 3840 and ideal 1920)")
    p.add_argument("--ablate", action="store_true", help="field sessions again with each repair switched off")
    p.add_argument("--switches", nargs="+", default=None, metavar="PREFIX",
                   help="with --ablate, only the switches whose name starts with one of these (e.g. people.)")
    p.add_argument("--work", type=Path, default=Path("bench_field_work"), help="folder for the sessions and results")
    p.add_argument("--out", type=Path, default=RESULTS / "field", help="writes OUT.json and OUT.md")
    p.add_argument("--reuse", action="store_true",
                   help="use the sessions already simulated in --work (same seed, level and settings) instead of new ones")
    args = p.parse_args(argv)
    switches = process_switches() + calibration_switches() if args.ablate else []
    if args.switches:
        switches = [s for s in switches if any(s.startswith(prefix) for prefix in args.switches)]
    print(f"repair switches found: {switches or 'none'}", file=sys.stderr)
    runs = []
    for seed in args.seeds:
        for level in args.levels:
            session = args.work / f"{level}_seed{seed}"
            reuse = args.reuse and level != "independent" and (session / "truth").is_dir()
            sim_s = 0.0 if reuse else simulate(session, level, seed, args.seconds, args.pano_width)
            for off in [None] + (switches if level == "field" else []):
                variant = level if off is None else f"field, {off} off"
                print(f"seed {seed}: {variant}", file=sys.stderr)
                calibrated = args.work / f"result_{level}_seed{seed}_all" / "rig.json"
                run = run_pipeline(session, args.work / f"result_{level}_seed{seed}_{off or 'all'}", seed, off,
                                   calibrated)
                run.update(seed=seed, level=level, variant=variant, switch_off=off, simulate_s=sim_s,
                           passes=_passes(run["metrics"]))
                runs.append(run)
                print(json.dumps(run), file=sys.stderr)
                _write(args, runs, switches)
    return 0


def _write(args, runs: list[dict], switches: list[str]) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    info = {"seconds": args.seconds, "seeds": args.seeds, "people": 2, "kinects": 2, "kinect_recordings": True,
            "pano_width": args.pano_width, "switches": switches,
            "flow": "simulate --realism LEVEL; calibrate --method markerless --observer simulated-detector; "
                    "sync --observer simulated-detector; process --hands sim --hand-noise-mm 5 --hand-noise-deg 3 "
                    "--hand-dropout 0.1; evaluate"}
    args.out.with_suffix(".json").write_text(json.dumps({"setup": info, "runs": runs}, indent=1))
    seeds = sorted({r["seed"] for r in runs})
    md = (f"# Field realism benchmark\n\n{args.seconds:g} s, 2 people, 2 Kinects with recordings, seeds "
          f"{', '.join(map(str, seeds))}; mean over seeds (each seed in brackets). Levels: ideal (no k4abt errors), "
          "field (the simulator's k4abt errors, sim/k4abt.py), independent (the ideal session with k4abt's errors "
          "from a second model written apart from the first, benchmarks/k4abt_independent.py). "
          f"Repair switches: {', '.join(switches) or 'none exposed'}.\n\n" + table(runs)
          + "\nEach variant at its worst seed (x: misses the target):\n\n" + variant_table(runs))
    args.out.with_suffix(".md").write_text(md)


if __name__ == "__main__":
    sys.exit(main())
