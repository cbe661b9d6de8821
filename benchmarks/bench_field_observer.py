"""The field hand observer's benchmark: ``process --hands sim`` on field sessions with each of the
observer's failure classes (hands/sim_field.py) and the two-lens, rolling-shutter optics switched
on and off, and the pipeline's repairs of the hand observations (``fusion.hand_refine``) on and
off, against the acceptance (``hands.joint_error_mm <= 15``, ``hands.coverage_24px >= 0.85``).

Flow per seed (two people, two Kinects with recordings, 30 s, the true rig)::

    simulate_session(S, SimConfig(seconds=30, seed=SEED, realism="field"))
    Truth(S).rig().save(S / "rig.json")
    for each variant: a copy of S whose truth/realism.json carries the variant's "camera" and
    "observer" records (everything else hard-linked), then
    process_session(copy, R, ProcessConfig(hands="sim", seed=1, hand_refine=REPAIRS)); evaluate(R, copy)

with REPAIRS the variant's ``HandRefineConfig`` (all repairs on unless the variant's name says
otherwise).

The camera record is the issue's default optics (baseline 30 mm, readout 25 ms, exposure 10 ms);
it changes only what the simulated observers see (the renderer draws the session as it was
simulated). Appends every run's metrics, timing and hand counts to
``benchmarks/results/field_observer.jsonl`` and writes ``field_observer.md`` (one line per variant,
one column per session, from every row of the ``.jsonl``) unless ``--out`` says otherwise. Long (a
30 s session takes minutes per variant): run niced, one variant at a time if need be, e.g.
``nice -n 10 python benchmarks/bench_field_observer.py --seeds 1 2 --variants "field observer + optics"``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

METRICS = ("hands.joint_error_mm", "hands.coverage_24px", "hands.coverage", "hands.wrist_error_mm", "views.count")
CAMERA = {"baseline_m": 0.03, "readout_s": 0.025, "exposure_s": 0.01}


def variants() -> dict[str, tuple[dict | None, dict | None, dict]]:
    """``{name: (camera record or None, observer record or None, repairs)}``: today's observer, the
    optics alone, the field observer with and without the optics, the field observer with each
    failure class off, and with the pipeline's repairs (``HandRefineConfig`` fields set to False in
    ``repairs``) off, all of them and each one."""
    from omnimocap.hands.sim_field import FieldHandModel, FieldObserver, MissModel, observer_record

    def field(**hands) -> dict:
        return observer_record("field", FieldObserver(hands=dataclasses.replace(FieldHandModel(), **hands)))

    no_miss = MissModel(size_half_px=-1e3, size_width_px=1.0, blur_half=1e3, blur_width=1.0, seam=0.0, floor=0.0)
    on: dict = {}
    off = {"keypoint_position": False, "track_size": False, "nearest_hand": False, "track_gate": False}
    return {
        "today (ideal optics, ideal observer)": (None, None, on),
        "optics only": (CAMERA, None, on),
        "field observer, ideal optics": (None, field(), on),
        "field observer + optics": (CAMERA, field(), on),
        "  without misses": (CAMERA, field(miss=no_miss), on),
        "  without flips": (CAMERA, field(flip=0.0), on),
        "  without other hands' boxes": (CAMERA, field(other_hand=0.0), on),
        "  without false hands": (CAMERA, field(false_hand=0.0), on),
        "  without correlated errors": (CAMERA, field(orient_deg=0.0, finger_deg=0.0, joint_mm=0.0,
                                                      keypoint_frac=0.0, scale=0.0), on),
        "  without the hand repairs": (CAMERA, field(), off),
        "  without placement by all 2D keypoints": (CAMERA, field(), {"keypoint_position": False}),
        "  without the track's hand size": (CAMERA, field(), {"track_size": False}),
        "  without rejecting another hand's box": (CAMERA, field(), {"nearest_hand": False}),
        "  without the track's gate": (CAMERA, field(), {"track_gate": False}),
        "ideal optics, ideal observer, without the hand repairs": (None, None, off),
    }


def variant_session(source: Path, dest: Path, camera: dict | None, observer: dict | None) -> Path:
    """A copy of ``source`` at ``dest`` (files hard-linked) whose ``truth/realism.json`` carries
    ``camera`` and ``observer`` (absent when None)."""
    from omnimocap.capture.truth import linked_copy_with_realism

    return linked_copy_with_realism(source, dest, camera=camera, observer=observer)


def run_variant(session: Path, name: str, work: Path) -> dict:
    """One variant of ``session`` processed in ``work`` and evaluated: the metrics, the seconds
    taken and the report's hand counts."""
    from omnimocap.fusion.evaluate import evaluate
    from omnimocap.fusion.hand_refine import HandRefineConfig
    from omnimocap.fusion.pipeline import ProcessConfig, process_session

    camera, observer, repairs = variants()[name]
    copy = variant_session(session, work / "s", camera, observer)
    t0 = time.perf_counter()
    config = ProcessConfig(hands="sim", seed=1, hand_refine=HandRefineConfig(**repairs))
    process_session(copy, work / "r", config, overwrite=True, progress=False)
    m = evaluate(work / "r", copy)
    report = json.loads((work / "r" / "report.json").read_text())
    return {"session": str(session), "variant": name, **{k: m.get(k) for k in METRICS},
            "seconds": round(time.perf_counter() - t0, 1), "hand_counts": report.get("hand_counts")}


def table(rows: list[dict]) -> str:
    """One line per variant (in :func:`variants`' order), one column per session."""
    sessions = sorted({r["session"] for r in rows})
    lines = ["`process --hands sim` on 30 s field sessions (two people, two Kinects, the true rig) with the "
             "field hand observer's failure classes and the optics (baseline 30 mm, readout 25 ms, exposure "
             "10 ms) on and off, and the hand repairs (fusion.hand_refine) on unless said: "
             "hands.joint_error_mm / hands.coverage_24px / hands.coverage. Acceptance: "
             "<= 15 mm, >= 0.85.", "",
             "| variant | " + " | ".join(f"{Path(s).name}: error mm / cov 24px / cov" for s in sessions) + " |",
             "|---|" + "---|" * len(sessions)]
    for name in variants():
        cells = []
        for s in sessions:
            m = next((r for r in rows if r["session"] == s and r["variant"] == name), None)
            cells.append("not run" if m is None else f"{_fmt(m['hands.joint_error_mm'])} / "
                         f"{_fmt(m['hands.coverage_24px'], 3)} / {_fmt(m['hands.coverage'], 3)}")
        lines.append(f"| {name.strip()} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_field_observer"))
    parser.add_argument("--sessions", type=Path, nargs="*", default=None,
                        help="already simulated field sessions (rig.json the true rig) instead of --seeds")
    parser.add_argument("--variants", nargs="*", default=None, help="run only these variants (names as in the table)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "field_observer")
    args = parser.parse_args()
    from omnimocap.capture.truth import Truth
    from omnimocap.sim.simulate import SimConfig, simulate_session

    sessions = args.sessions
    if not sessions:
        sessions = []
        for seed in args.seeds:
            session = args.work / f"seed{seed}"
            simulate_session(session, SimConfig(seconds=args.seconds, seed=seed, realism="field", overwrite=True))
            Truth(session).rig().save(session / "rig.json")
            sessions.append(session)
    names = [n for n in variants() if args.variants is None or n.strip() in [v.strip() for v in args.variants]]
    rows_path = args.out.with_suffix(".jsonl")
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    for session in sessions:
        for name in names:
            row = run_variant(Path(session), name, args.work / f"{Path(session).name}_{abs(hash(name))}")
            print(row, flush=True)
            with rows_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
    args.out.with_suffix(".md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
