"""The hands of whole sessions processed from the stitched panorama and from the raw dual-fisheye
frames of the same scene, by the hand's angular distance from the seam.

Flow per seed (in-process, on the true rig, so only the 360 path differs)::

    simulate S_stitched --realism field --seconds T --seed SEED --pano-width W --pano-baseline-mm 30
             --pano-readout-ms 0 --pano-exposure-ms 0 --no-kinect-video  (2 people, 2 Kinects,
             the 360 camera yawed 90 deg so the people stand beside it and their hands cross the seam)
    simulate S_raw     the same, --pano-format dual-fisheye (the same truth: scene, rig, Kinect tracks)
    process S R --hands sim [--hand-noise-mm 5 --hand-noise-deg 3 --hand-dropout 0.1]
    evaluate R S  +  the hands binned by the true hand centre's angle from the seam's plane (z = 0 of
             the 360 camera, seen from its centre)

The stitched path models the stitched camera's optics (``PanoModelConfig``, all on: views from the
lens on the hand's side, off the blend band, rays from that lens's centre); the raw path cuts each
view from the lens that sees the wrist and lifts from its centre (``fusion/fisheye_stage.py``). Both
cameras have a global shutter and no blur (the raw frames are simulated so), two lenses 30 mm apart.

What the observer is: ``--hands sim`` reads the truth, not the images. With noise flags it is the
same on both sessions (each joint seen from the lens the stitch assigns it, so the seam's blend, the
blind strip and the stitch's ghosting never reach it): those rows compare the two paths' geometry
only. Without noise flags it is the field observer (misses by box size, flips, other hands' boxes,
correlated errors); on the stitched session it also misses 30% of the hands whose wrist lies in the
blend band or the blind strip, on the raw session it does not (``sim/simulate.py``
``seamless_observer``: a view cut from one lens has no seam). That difference is the model's
assumption, not a measurement from images; benchmarks/bench_dual_fisheye.py measures the images.

The in-tree observer places each joint as the stitch would show it (the lens on the joint's side of
the seam, from the true joint). A view cut from one lens shows the whole hand from that lens, chosen
from the Kinect-predicted wrist; where the prediction and the true wrist lie on opposite sides of
the seam the two disagree and the in-tree observer reports the hand from a lens the view was not cut
from. The raw session is therefore also processed with ``LensViewObserver`` (path "raw, lens-view
observer"): the same observer, noise and draws, but every joint seen from the optical centre of the
lens its view was cut from (the stage's planned view's ``t_cam_view``, handed to the observer
with each request).

``--calibrate``: the same sessions calibrated instead of on the true rig, and the table of the
calibrated runs added to OUT (the true-rig rows, and the calibrated runs of other seeds, kept from
OUT.json, not run again)::

    calibrate S --method markerless   (the simulated detector: hand boxes and body keypoints in views,
             cut from one lens each on the raw session; calibration/pano_observer.py)
    sync S
    process S R --hands sim           (the field observer, on the calibrated rig)
    evaluate R S                      (the 360 camera's rotation, translation and clock against the
             truth, the hands and the body)

Writes OUT.json and OUT.md (default /tmp/fish21/dual_fisheye_process). Run niced:
``nice -n 10 python benchmarks/bench_dual_fisheye_process.py --seeds 1 2 --seconds 12``, then with
``--calibrate`` (``--reuse`` takes the sessions already simulated in ``--work``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

FORMATS = ("equirect", "dual-fisheye")
PATHS = ("stitched", "raw dual-fisheye", "raw, lens-view observer")
BINS_DEG = ((0.0, 5.0), (5.0, 15.0), (15.0, 90.01))
NOISE = {"hand_noise_mm": 5.0, "hand_noise_deg": 3.0, "hand_dropout": 0.1}
# The pipeline's own hand backend factory, restored after a run with the lens-view observer.
_MAKE_ESTIMATOR = None
METRICS = ("hands.joint_error_mm", "hands.wrist_error_mm", "hands.coverage", "kinect.wrist_error_mm")
CALIBRATED_METRICS = ("calibration.rotation_error_deg", "calibration.translation_error_mm", "sync.offset_error_ms",
                      "sync.rate_error_ppm", "hands.joint_error_mm", "hands.coverage", "body.joint_error_mm")


def simulate(path: Path, fmt: str, seed: int, args) -> float:
    from omnimocap.sim.simulate import SimConfig, simulate_session

    t0 = time.perf_counter()
    if not (args.reuse and (path / "truth").is_dir()):
        simulate_session(path, SimConfig(seconds=args.seconds, people=2, kinects=2, seed=seed, pano_width=args.pano_width,
                                         pano_baseline_mm=30.0, pano_readout_ms=0.0, pano_exposure_ms=0.0,
                                         kinect_video=False, realism="field", pano_yaw_deg=args.yaw,
                                         pano_format=fmt, overwrite=True))
    return time.perf_counter() - t0


def seam_bins(result: Path, session: Path) -> list[dict]:
    """Per bin of the true hand centre's angle from the seam's plane (degrees): visible true hands,
    the fraction fused, and the fused hands' mean joint error (mm), as ``fusion.evaluate`` counts
    them (output times, people matched by their Kinect pelvis)."""
    from omnimocap.capture.rig import Rig
    from omnimocap.capture.session import Session
    from omnimocap.capture.truth import open_truth
    from omnimocap.fusion.evaluate import match_people
    from omnimocap.geometry.resample import interpolate_positions
    from omnimocap.geometry.transforms import invert_pose, transform_points

    s = Session.open(session)
    truth_folder = open_truth(s.root)
    truth, true_rig = truth_folder.motion(), truth_folder.rig()
    fused = dict(np.load(result / "fused.npz"))
    ref = s.kinects()[0].name
    G = true_rig.pose(ref) @ invert_pose(Rig.load(result / "rig.json").pose(ref))
    for key in ("kinect_joints_world", "hand_joints_world", "kinect_wrist_world"):
        fused[key] = transform_points(G, fused[key])
    T_pano_world = invert_pose(true_rig.pose("pano"))
    t_out, t_truth = fused["t_session"], truth["t_session"]
    rows = {b: {"visible": 0, "fused": 0, "errors": []} for b in BINS_DEG}
    for p, q in match_people(fused, truth).items():
        true_hands = interpolate_positions(t_truth, truth["hand_joints"][q], t_out)  # (F,2,21,3)
        finite = np.all(np.isfinite(true_hands), axis=(-1, -2))
        visible = truth["hand_visible"][q][np.clip(np.searchsorted(t_truth, t_out), 0, len(t_truth) - 1)] & finite
        valid = fused["hand_valid"][p] & finite
        centre = transform_points(T_pano_world, np.where(finite[..., None, None], true_hands, 1.0).mean(axis=-2))
        seam = np.degrees(np.arcsin(np.clip(np.abs(centre[..., 2]) / np.linalg.norm(centre, axis=-1), 0, 1)))
        err = np.linalg.norm(fused["hand_joints_world"][p] - true_hands, axis=-1).mean(axis=-1) * 1000.0
        for lo, hi in BINS_DEG:
            inside = (seam >= lo) & (seam < hi)
            rows[(lo, hi)]["visible"] += int((inside & visible).sum())
            rows[(lo, hi)]["fused"] += int((inside & visible & valid).sum())
            rows[(lo, hi)]["errors"].append(err[inside & valid])
    out = []
    for (lo, hi), r in rows.items():
        errors = np.concatenate(r["errors"]) if r["errors"] else np.zeros(0)
        out.append({"seam_deg": [lo, min(hi, 90.0)], "visible": r["visible"],
                    "coverage": round(r["fused"] / r["visible"], 4) if r["visible"] else None,
                    "fused": int(errors.size),
                    "joint_error_mm": round(float(errors.mean()), 2) if errors.size else None,
                    "joint_error_p90_mm": round(float(np.percentile(errors, 90)), 2) if errors.size else None})
    return out


def lens_view_observer_class():
    """``--hands sim``'s observer seeing each view's hand from the lens the view was cut from (see
    the module docstring)."""
    from omnimocap.fusion.frame_stage import HandStage
    from omnimocap.hands.sim_backend import SimHandObserver

    if not hasattr(HandStage, "plain_requests"):
        HandStage.plain_requests = HandStage.requests

        def requests(stage, planned, *args, **kwargs):
            out = stage.plain_requests(planned, *args, **kwargs)
            for pv, request in zip(planned, out):
                request.lens_centre = getattr(pv, "t_cam_view", None)
            return out

        HandStage.requests = requests

    class LensViewObserver(SimHandObserver):
        def __init__(self, session_dir, **kwargs):
            super().__init__(session_dir, **kwargs)
            self._centre = None

        def apparent_shift_world(self, joints_world, view_centre=None):
            if self._centre is None:
                return super().apparent_shift_world(joints_world, view_centre)
            return np.broadcast_to(-self._centre @ self._R_pano_world, np.shape(joints_world)).copy()

        def observe(self, request):
            self._centre = getattr(request, "lens_centre", None)
            try:
                return super().observe(request)
            finally:
                self._centre = None

    return LensViewObserver


def run(session: Path, result: Path, seed: int, noise: bool, lens_view: bool = False) -> dict:
    from omnimocap.fusion import pipeline
    from omnimocap.fusion.evaluate import evaluate
    from omnimocap.fusion.pipeline import ProcessConfig, process_session

    global _MAKE_ESTIMATOR
    _MAKE_ESTIMATOR = _MAKE_ESTIMATOR or pipeline.make_estimator
    config = ProcessConfig(hands="sim", seed=seed, preview=False, **(NOISE if noise else {}))
    observer = lens_view_observer_class() if lens_view else None
    pipeline.make_estimator = (lambda c, s: observer(s.root, noise_mm=c.hand_noise_mm, noise_deg=c.hand_noise_deg,
                                                     dropout=c.hand_dropout, seed=c.seed)) if lens_view else _MAKE_ESTIMATOR
    t0 = time.perf_counter()
    report = process_session(session, result, config, overwrite=True, progress=False)
    process_s = time.perf_counter() - t0
    metrics = evaluate(result, session)
    return {"metrics": {k: metrics.get(k) for k in METRICS}, "bins": seam_bins(result, session),
            "hand_counts": report["hand_counts"], "process_s": round(process_s, 1)}


def calibrated_run(session: Path, result: Path, seed: int) -> dict:
    """calibrate (markerless) + sync from the true rig's Kinect poses' start, then process and
    evaluate on the calibrated rig (the field observer, no noise flags)."""
    from omnimocap.calibration.config import CalibrateConfig, SyncConfig
    from omnimocap.calibration.session import calibrate_session
    from omnimocap.calibration.sync import sync_session
    from omnimocap.capture.truth import Truth
    from omnimocap.fusion.evaluate import evaluate
    from omnimocap.fusion.pipeline import ProcessConfig, process_session

    Truth(session).rig().save(session / "rig.json")  # every run starts from the simulator's rig.json
    t0 = time.perf_counter()
    calibrate_session(session, CalibrateConfig())
    calibrate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sync_session(session, SyncConfig())
    sync_s = time.perf_counter() - t0
    rig = json.loads((session / "rig.json").read_text())
    t0 = time.perf_counter()
    process_session(session, result, ProcessConfig(hands="sim", seed=seed, preview=False), overwrite=True,
                    progress=False)
    process_s = time.perf_counter() - t0
    metrics = evaluate(result, session)
    return {"metrics": {k: metrics.get(k) for k in CALIBRATED_METRICS}, "bins": seam_bins(result, session),
            "observer": rig["inputs"].get("pano_observer"), "detections": rig["inputs"].get("detections"),
            "pano_optics": rig.get("pano_optics"), "calibrate_s": round(calibrate_s, 1), "sync_s": round(sync_s, 1),
            "process_s": round(process_s, 1)}


def main_calibrate(args) -> int:
    """The ``--calibrate`` mode (see the module docstring)."""
    previous = json.loads(Path(f"{args.out}.json").read_text()) if Path(f"{args.out}.json").is_file() else {}
    true_rig_runs = previous.get("runs", [])
    # calibrated runs of other seeds already in OUT.json stay (seeds can be run one at a time)
    calibrated = [r for r in previous.get("calibrated_runs", []) if r["seed"] not in args.seeds]
    for seed in args.seeds:
        for fmt in FORMATS:
            session = args.work / f"seed{seed}_{fmt}"
            sim_s = simulate(session, fmt, seed, args)
            r = calibrated_run(session, args.work / f"result_seed{seed}_{fmt}_calibrated", seed)
            r.update(seed=seed, path=PATHS[FORMATS.index(fmt)], simulate_s=round(sim_s, 1))
            calibrated.append(r)
            print(json.dumps(r), file=sys.stderr)
            write(args, true_rig_runs, calibrated, previous.get("setup"))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--pano-width", type=int, default=1920)
    p.add_argument("--yaw", type=float, default=90.0, help="the 360 camera's yaw, degrees (90: people across the seam)")
    p.add_argument("--work", type=Path, default=Path("/tmp/fish21/work"))
    p.add_argument("--reuse", action="store_true", help="use the sessions already simulated in --work")
    p.add_argument("--out", type=Path, default=Path("/tmp/fish21/dual_fisheye_process"), help="writes OUT.json and OUT.md")
    p.add_argument("--calibrate", action="store_true",
                   help="calibrate + sync + process + evaluate both sessions (see the module docstring); the "
                        "true-rig runs already in OUT.json are kept")
    p.add_argument("--tables-only", action="store_true", help="rewrite OUT.md from OUT.json, running nothing")
    args = p.parse_args(argv)
    if args.tables_only:
        doc = json.loads(Path(f"{args.out}.json").read_text())
        calibrated_setup = doc.get("calibrated_setup", {})
        args.seconds = calibrated_setup.get("seconds", args.seconds)
        args.pano_width = calibrated_setup.get("pano_width", args.pano_width)
        args.yaw = calibrated_setup.get("yaw_deg", args.yaw)
        write(args, doc["runs"], doc.get("calibrated_runs"), doc["setup"])
        return 0
    if args.calibrate:
        return main_calibrate(args)
    runs = []
    for seed in args.seeds:
        for fmt in FORMATS:
            session = args.work / f"seed{seed}_{fmt}"
            sim_s = simulate(session, fmt, seed, args)
            for noise in (True, False):
                for lens_view in ((False, True) if fmt == "dual-fisheye" else (False,)):
                    path = PATHS[2] if lens_view else PATHS[FORMATS.index(fmt)]
                    r = run(session, args.work / f"result_seed{seed}_{fmt}_{'noisy' if noise else 'field'}"
                            f"{'_lensview' if lens_view else ''}", seed, noise, lens_view)
                    r.update(seed=seed, path=path, noise=noise, simulate_s=round(sim_s, 1))
                    runs.append(r)
                    print(json.dumps(r), file=sys.stderr)
                    write(args, runs)
    return 0


def pooled(runs: list[dict], path: str, noise: bool) -> list[dict]:
    """The bins of every seed's run of ``path`` pooled (coverage and error weighted by their counts)."""
    out = []
    for i, (lo, hi) in enumerate(BINS_DEG):
        rows = [r["bins"][i] for r in runs if r["path"] == path and r["noise"] == noise]
        visible = sum(b["visible"] for b in rows)
        fused = sum(round(b["coverage"] * b["visible"]) for b in rows if b["coverage"] is not None)
        n = sum(b["fused"] for b in rows)
        err = sum(b["joint_error_mm"] * b["fused"] for b in rows if b["joint_error_mm"] is not None)
        out.append({"seam_deg": [lo, min(hi, 90.0)], "visible": visible, "coverage": fused / visible if visible else None,
                    "fused": n, "joint_error_mm": err / n if n else None})
    return out


def write(args, runs: list[dict], calibrated: list[dict] | None = None, setup: dict | None = None) -> None:
    """OUT.json and OUT.md: the true-rig ``runs`` (with their ``setup``, default ``args``'s) and,
    when given, the ``calibrated`` runs of ``--calibrate`` with theirs."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    this = {"seconds": args.seconds, "seeds": args.seeds, "people": 2, "kinects": 2, "realism": "field",
            "pano_width": args.pano_width, "baseline_mm": 30.0, "readout_ms": 0.0, "exposure_ms": 0.0,
            "yaw_deg": args.yaw, "kinect_video": False, "rig": "true", "noise": NOISE,
            "bins_deg": [[lo, min(hi, 90.0)] for lo, hi in BINS_DEG]}
    setup = setup or this
    doc = {"setup": setup, "runs": runs}
    if calibrated is not None:
        doc["calibrated_setup"] = {**this, "rig": "calibrated: calibrate --method markerless, then sync",
                                   "observer": "auto (simulated-detector on field sessions)", "noise": None}
        doc["calibrated_runs"] = calibrated
    Path(f"{args.out}.json").write_text(json.dumps(doc, indent=1) + "\n")
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    lines = ["# Hands from the stitched panorama and from the raw dual-fisheye frames, by distance from the seam", "",
             f"`benchmarks/bench_dual_fisheye_process.py --seeds {' '.join(map(str, setup['seeds']))} --seconds "
             f"{setup['seconds']:g} --pano-width {setup['pano_width']} --yaw {setup['yaw_deg']:g}`: 2 people, 2 Kinects with field k4abt errors (no Kinect "
             "video, so no depth cue), a 360 camera with two lenses 30 mm apart, global shutter, yawed so the people stand "
             "across its seam; the true rig; `--hands sim`. Seeds pooled; error = mean 3D error of the 21 fused hand joints "
             "(mm) over fused hands; coverage = fused / visible true hands at output times; seam angle = the true hand "
             "centre's angle from the seam's plane, from the camera's centre. The observer reads the truth (see the "
             "script's docstring): with noise the rows compare geometry only; the field observer misses hands on the "
             "stitched seam and not on the raw frames by assumption.", ""]
    for noise in (True, False):
        lines += [f"## {'noise flags: 5 mm, 3 deg, dropout 0.1' if noise else 'no noise flags: the field observer'}", "",
                  "| seam deg | hands | coverage: stitched / raw / raw, lens-view observer | "
                  "error mm: stitched / raw / raw, lens-view observer |", "|---|---|---|---|"]
        pools = [pooled(runs, path, noise) for path in PATHS]
        for rows in zip(*pools):
            x = rows[0]
            lines.append(f"| {x['seam_deg'][0]:g}-{x['seam_deg'][1]:g} | {x['visible']} | "
                         f"{' / '.join(fmt(r['coverage'], '.3f') for r in rows)} | "
                         f"{' / '.join(fmt(r['joint_error_mm'], '.1f') for r in rows)} |")
        lines.append("")
        lines += ["| seed | path | hands.joint_error_mm | hands.coverage | kinect.wrist_error_mm | process s |", "|---|---|---|---|---|---|"]
        for r in runs:
            if r["noise"] == noise:
                m = r["metrics"]
                lines.append(f"| {r['seed']} | {r['path']} | {fmt(m['hands.joint_error_mm'], '.1f')} | "
                             f"{fmt(m['hands.coverage'], '.3f')} | {fmt(m['kinect.wrist_error_mm'], '.1f')} | {r['process_s']} |")
        lines.append("")
    lines += ["Since these true-rig tables were measured, `--hands sim` itself sees a raw view's hand from the lens the "
              "view was cut from (`ViewRequest.view_centre`), as the \"lens-view observer\" column does; the \"raw "
              "dual-fisheye\" column is the observer as it was before (each joint from the lens the stitch would assign "
              "it). `process` has changed since too (rejecting a hand nearer another predicted hand is off by default): compare the calibrated rows below "
              "with each other, not with these.", ""]
    if calibrated is not None:
        lines += calibrated_lines(args, calibrated)
    Path(f"{args.out}.md").write_text("\n".join(lines))


def calibrated_lines(args, calibrated: list[dict]) -> list[str]:
    """The markdown section of the ``--calibrate`` runs."""
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    seeds = sorted({r["seed"] for r in calibrated})
    lines = ["## Calibrated: calibrate + sync + process + evaluate", "",
             f"`benchmarks/bench_dual_fisheye_process.py --calibrate --seeds {' '.join(map(str, seeds))} --seconds "
             f"{args.seconds:g} --pano-width {args.pano_width} --yaw {args.yaw:g}`: the same sessions, each started from "
             "the simulator's rig.json, `calibrate --method markerless` and `sync` with the field session's observer "
             "(the simulated detector's hand boxes and body keypoints, in views cut from one lens each on the raw "
             "session, its bearings solved from that lens's centre), then `process --hands sim` (the field observer, no "
             "noise flags) on the calibrated rig and `evaluate`. Rotation and translation: the 360 camera's pose "
             "relative to the reference Kinect against the truth; sync: the clock at the session's middle frame.", "",
             "| seed | path | rotation deg | translation mm | sync ms | rate ppm | hands mm | hands coverage | body mm | "
             "hands associated | calibrate s | sync s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in calibrated:
        m = r["metrics"]
        assoc = (r.get("detections") or {}).get("association", {}).get("associated")
        lines.append(f"| {r['seed']} | {r['path']} | {fmt(m['calibration.rotation_error_deg'], '.3f')} | "
                     f"{fmt(m['calibration.translation_error_mm'], '.1f')} | {fmt(m['sync.offset_error_ms'], '.2f')} | "
                     f"{fmt(m['sync.rate_error_ppm'], '.0f')} | {fmt(m['hands.joint_error_mm'], '.1f')} | "
                     f"{fmt(m['hands.coverage'], '.3f')} | {fmt(m['body.joint_error_mm'], '.1f')} | {fmt(assoc, 'd')} | "
                     f"{r['calibrate_s']} | {r['sync_s']} |")
    lines += ["", "| seam deg | hands | coverage: stitched / raw | error mm: stitched / raw |", "|---|---|---|---|"]
    pools = [pooled([{**r, "noise": None} for r in calibrated], path, None) for path in PATHS[:2]]
    for rows in zip(*pools):
        x = rows[0]
        lines.append(f"| {x['seam_deg'][0]:g}-{x['seam_deg'][1]:g} | {x['visible']} | "
                     f"{' / '.join(fmt(r['coverage'], '.3f') for r in rows)} | "
                     f"{' / '.join(fmt(r['joint_error_mm'], '.1f') for r in rows)} |")
    lines += ["", "Both sessions' observers see the same hands with the same errors: the simulated detector places each "
              "hand where the lens on its side of the seam shows it, and the solvers model that lens's centre on both "
              "paths, so the calibration rows compare the two geometries (views cut from one lens against the "
              "stitched frame's), not detectors on real seams. The coverage near the seam differs by the field "
              "observer's assumption (it misses hands in the stitched frame's blend band and blind strip, and none on "
              "raw frames), not by a measurement from images.", ""]
    return lines


if __name__ == "__main__":
    sys.exit(main())
