"""A second, independent model of k4abt's field errors, written into an ``--realism ideal`` session's
body tracking files, to check that the pipeline's repairs hold for the error classes and not only
for the simulator's own draws (``sim/k4abt.py``).

It shares no code with the simulator's error model and makes its choices differently where the
classes leave room:

- *joint-definition bias*: per person and joint, a constant offset in the frame of the joint's own
  reported orientation (the simulator uses the segment's), RMS per axis ``core_mm`` for pelvis,
  spine, neck, clavicles, shoulders and hips and ``other_mm`` for the rest; half the variance shared
  by the Kinects (the same draw for a person on every Kinect), half per Kinect;
- *noisy wrists and hands*: white noise smoothed by a Gaussian kernel (sigma ``corr_frames``
  frames, rescaled to the target standard deviation) rather than a first-order autoregression;
  ``wrist_mm`` on the wrists, ``hand_mm`` on HAND/HANDTIP/THUMB, doubled beyond ``far_m`` from
  the Kinect; runs in which HANDTIP and THUMB sit on HAND;
- *front/back confusion*: facing away is judged from the reported joints themselves (hips and
  spine in the depth frame), and runs of 0.5-1.5 s covering ``mirror_fraction`` of that time swap
  every LEFT/RIGHT pair;
- *identity*: a body whose pelvis passes behind another body's (bearings closer than
  ``occlude_deg``, farther from the Kinect) is lost while it is behind and comes back under a new id
  with probability one half; ids are exchanged when two bodies' bearings cross, with probability
  ``swap_p``; ids are 1-based with gaps;
- *drop-outs*: runs of 0.2-0.7 s at ``dropout_hz``, three times as often within ``near_deg`` of
  another body.

Usage::

    python benchmarks/k4abt_independent.py IDEAL_SESSION OUT_SESSION [--seed N]

OUT_SESSION is a copy of IDEAL_SESSION (hard links for everything but the body files, which are
rewritten); the truth stays exact. What was injected goes to OUT_SESSION/independent_errors.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from omnimocap.capture.bodies import BodyRecording, BodyTrack, read_bodies, write_bodies
from omnimocap.data.skeletons import KINECT_INDEX, KINECT_JOINTS

FPS = 30.0
CORE = ("PELVIS", "SPINE_NAVEL", "SPINE_CHEST", "NECK", "CLAVICLE_LEFT", "CLAVICLE_RIGHT", "SHOULDER_LEFT",
        "SHOULDER_RIGHT", "HIP_LEFT", "HIP_RIGHT")
PAIRS = [(KINECT_INDEX[n], KINECT_INDEX[n.replace("_LEFT", "_RIGHT")]) for n in KINECT_JOINTS if n.endswith("_LEFT")]


@dataclass
class Model:
    core_mm: float = 15.0
    other_mm: float = 8.0
    wrist_mm: float = 10.0
    hand_mm: float = 25.0
    corr_frames: float = 5.0
    far_m: float = 2.0
    collapse_fraction: float = 0.15
    mirror_fraction: float = 0.3
    occlude_deg: float = 6.0
    swap_p: float = 1.0 / 3.0
    dropout_hz: float = 0.1
    near_deg: float = 12.0


def _rotations(q: np.ndarray) -> np.ndarray:
    """(...,4) w,x,y,z -> (...,3,3); NaN stays NaN."""
    w, x, y, z = np.moveaxis(q / np.linalg.norm(q, axis=-1, keepdims=True), -1, 0)
    return np.stack([np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
                     np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
                     np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], -2)


def _smooth_noise(rng, n: int, dims: tuple, std: float, corr: float) -> np.ndarray:
    """(n, *dims) Gaussian-smoothed white noise with per-sample standard deviation ``std``."""
    half = int(4 * corr)
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / corr) ** 2)
    k /= np.sqrt(np.sum(k ** 2))
    white = rng.normal(0.0, std, (n + 2 * half,) + dims)
    return np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 0, white)


def _runs(rng, allowed: np.ndarray, fraction: float, lo: float, hi: float) -> np.ndarray:
    """A mask of runs of ``lo..hi`` seconds inside ``allowed`` covering about ``fraction`` of it."""
    mask = np.zeros_like(allowed)
    target = fraction * allowed.sum()
    for _ in range(1000):
        if mask.sum() >= target or not allowed.any():
            break
        start = rng.choice(np.flatnonzero(allowed))
        length = int(rng.uniform(lo, hi) * FPS)
        seg = np.arange(start, min(start + length, len(allowed)))
        seg = seg[: np.argmin(allowed[seg]) if not allowed[seg].all() else len(seg)]
        mask[seg] = True
    return mask


def _facing_away(pos: np.ndarray) -> np.ndarray:
    """(F,) bool from the reported joints (depth frame: x right, y down, z forward)."""
    left = pos[:, KINECT_INDEX["HIP_LEFT"]] - pos[:, KINECT_INDEX["HIP_RIGHT"]]
    up = pos[:, KINECT_INDEX["NECK"]] - pos[:, KINECT_INDEX["PELVIS"]]
    forward = np.cross(left, up)
    with np.errstate(invalid="ignore"):
        return np.sum(forward * -pos[:, KINECT_INDEX["PELVIS"]], axis=-1) < 0


def inject(recs: dict[str, BodyRecording], model: Model, seed: int) -> tuple[dict[str, BodyRecording], dict]:
    rng = np.random.default_rng(seed)
    people = sorted({b for r in recs.values() for b in r.bodies})
    scale = np.array([model.core_mm if n in CORE else model.other_mm for n in KINECT_JOINTS]) * 1e-3
    shared = {p: rng.normal(0.0, 1.0, (len(KINECT_JOINTS), 3)) * scale[:, None] * np.sqrt(0.5) for p in people}
    out, log = {}, {}
    for serial, rec in recs.items():
        tracks, info = {}, {}
        for p, tr in rec.bodies.items():
            pos, quat, conf = tr.positions.copy(), tr.orientations.copy(), tr.confidences.copy()
            F = len(pos)
            own = rng.normal(0.0, 1.0, (len(KINECT_JOINTS), 3)) * scale[:, None] * np.sqrt(0.5)
            R = _rotations(quat)
            pos += np.einsum("fjab,jb->fja", np.nan_to_num(R), shared[p] + own)
            far = np.where(np.linalg.norm(pos[:, KINECT_INDEX["PELVIS"]], axis=-1) > model.far_m, 2.0, 1.0)
            for side in ("LEFT", "RIGHT"):
                pos[:, KINECT_INDEX[f"WRIST_{side}"]] += far[:, None] * _smooth_noise(
                    rng, F, (3,), model.wrist_mm * 1e-3, model.corr_frames)
                for j in ("HAND", "HANDTIP", "THUMB"):
                    pos[:, KINECT_INDEX[f"{j}_{side}"]] += far[:, None] * _smooth_noise(
                        rng, F, (3,), model.hand_mm * 1e-3, model.corr_frames)
                col = _runs(rng, np.ones(F, bool), model.collapse_fraction, 0.3, 1.2)
                for j in ("HANDTIP", "THUMB"):
                    pos[col, KINECT_INDEX[f"{j}_{side}"]] = pos[col, KINECT_INDEX[f"HAND_{side}"]]
            away = _facing_away(pos) & np.all(np.isfinite(pos[:, 0]), axis=-1)
            mirror = _runs(rng, away, model.mirror_fraction, 0.5, 1.5)
            for a, b in PAIRS:
                pos[mirror, a], pos[mirror, b] = pos[mirror, b].copy(), pos[mirror, a].copy()
                quat[mirror, a], quat[mirror, b] = quat[mirror, b].copy(), quat[mirror, a].copy()
            tracks[p] = (pos, quat, conf)
            info[str(p)] = {"facing_away_frames": int(away.sum()), "mirrored_frames": int(mirror.sum())}
        out[serial], log[serial] = _identities(rec, tracks, model, rng, info)
    return out, log


def _bearing(pos: np.ndarray) -> np.ndarray:
    return np.degrees(np.arctan2(pos[:, 0], pos[:, 2]))


def _identities(rec: BodyRecording, tracks: dict, model: Model, rng, info: dict) -> tuple[BodyRecording, dict]:
    """Occlusion losses, drop-outs, new ids and swaps at crossings; returns the new recording."""
    people = sorted(tracks)
    F = len(rec)
    pel = {p: tracks[p][0][:, KINECT_INDEX["PELVIS"]] for p in people}
    lost = {p: np.zeros(F, bool) for p in people}
    near = {p: np.zeros(F, bool) for p in people}
    crossings = []
    for i, p in enumerate(people):
        for q in people[i + 1:]:
            d = _bearing(pel[p]) - _bearing(pel[q])
            close = np.abs(d) < model.near_deg
            near[p] |= close
            near[q] |= close
            behind_p = (np.abs(d) < model.occlude_deg) & (pel[p][:, 2] > pel[q][:, 2])
            behind_q = (np.abs(d) < model.occlude_deg) & (pel[q][:, 2] > pel[p][:, 2])
            lost[p] |= behind_p
            lost[q] |= behind_q
            sign = np.sign(d)
            crossings += [(int(f), p, q) for f in np.flatnonzero(sign[1:] * sign[:-1] < 0) if close[f]]
    for p in people:
        rate = np.where(near[p], 3 * model.dropout_hz, model.dropout_hz) / FPS
        starts = np.flatnonzero(rng.random(F) < rate)
        for s in starts:
            lost[p][s: s + int(rng.uniform(0.2, 0.7) * FPS)] = True
    # owner[f, p]: the body id under which person p is reported in frame f (0: not reported)
    next_id = [1]

    def new_id() -> int:
        next_id[0] += int(rng.integers(1, 4))
        return next_id[0]

    current = {p: new_id() for p in people}
    owner = np.zeros((F, len(people)), int)
    swaps = []
    cross_at = {}
    for f, p, q in crossings:
        cross_at.setdefault(f, []).append((p, q))
    for f in range(F):
        for p, q in cross_at.get(f, []):
            if rng.random() < model.swap_p:
                current[p], current[q] = current[q], current[p]
                swaps.append([f, p, q])
        for k, p in enumerate(people):
            if lost[p][f]:
                if f + 1 < F and not lost[p][f + 1] and rng.random() < 0.5:
                    current[p] = new_id()
                continue
            owner[f, k] = current[p]
    bodies: dict[int, BodyTrack] = {}
    for k, p in enumerate(people):
        pos, quat, conf = tracks[p]
        for body_id in np.unique(owner[:, k]):
            if body_id == 0:
                continue
            rows = owner[:, k] == body_id
            tr = bodies.setdefault(int(body_id), BodyTrack.empty(F))
            tr.positions[rows], tr.orientations[rows], tr.confidences[rows] = pos[rows], quat[rows], conf[rows]
    new = BodyRecording(rec.timestamps, rec.frame_ids, bodies, rec.source_file, rec.sdk_version, rec.has_confidences)
    return new, {"people": info, "lost_frames": {str(p): int(lost[p].sum()) for p in people},
                 "crossings": len(crossings), "swaps": swaps, "body_ids": sorted(bodies)}


def make_session(ideal: Path, out: Path, seed: int, model: Model | None = None) -> dict:
    """Copy ``ideal`` to ``out`` (hard links) with its body files rewritten with the errors."""
    model = model or Model()
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(ideal, out, copy_function=os.link)
    recs = {f.name: read_bodies(f) for f in sorted(out.glob("bodies_*.json"))}
    new, log = inject(recs, model, seed)
    for name, rec in new.items():
        (out / name).unlink()
        write_bodies(out / name, rec)
    (out / "independent_errors.json").write_text(json.dumps({"model": asdict(model), "seed": seed, "kinects": log},
                                                            indent=1))
    return log


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ideal", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(json.dumps(make_session(args.ideal, args.out, args.seed), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
