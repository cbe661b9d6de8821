"""Long sessions in time chunks: each chunk's output frames (its *core*) are processed with a few
seconds of *overlap* either side, so that the filters (Kalman-RTS smoothers, the body fit's
temporal term, the hand resampling) have settled on the core's first and last frames; the cores
tile the session and the stitched result keeps every frame from the one chunk whose core holds it.

Everything a chunk reads beyond its window is loaded once per session (:class:`SessionInputs`:
the Kinect people, the panorama times, the session-wide noise levels and body shape), so the cost
of a session is the sum of its chunks' costs, linear in its length, and the memory of one chunk
does not grow with the session.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from tqdm import tqdm

from omnimocap.calibration.rig import Rig
from omnimocap.capture.session import Session
from omnimocap.fusion import pipeline
from omnimocap.fusion.pipeline import ProcessConfig, SessionInputs, WindowResult, process_window

DEFAULT_CHUNK_S = 60.0
"""Core length of a chunk, seconds of session time."""
DEFAULT_OVERLAP_S = 3.0
"""Frames processed before and after each core, seconds (several time constants of the smoothers)."""


@dataclass(frozen=True)
class Chunk:
    """Output frames ``core_first..core_last-1`` kept from a run over ``first..last-1`` (indices
    into the reference Kinect's frames)."""

    index: int
    first: int
    last: int
    core_first: int
    core_last: int

    @property
    def frames(self) -> int:
        return self.core_last - self.core_first


@dataclass(frozen=True)
class ChunkPlan:
    chunks: tuple[Chunk, ...]
    t_bounds: tuple[float, ...]
    """Session times (seconds) between consecutive cores: a panorama frame at time t belongs to
    the core of chunk ``searchsorted(t_bounds, t, side='right')``."""

    @classmethod
    def for_times(cls, t_out: np.ndarray, chunk_s: float = DEFAULT_CHUNK_S,
                  overlap_s: float = DEFAULT_OVERLAP_S) -> ChunkPlan:
        """Chunks of ``chunk_s`` seconds over the output times ``t_out`` (F,); a last core shorter
        than the overlap joins the one before it. One chunk when the session is not longer."""
        t_out = np.asarray(t_out, dtype=np.float64)
        F = len(t_out)
        if F == 0:
            return cls((Chunk(0, 0, 0, 0, 0),), ())
        if chunk_s <= 0:
            raise ValueError(f"chunk length must be positive, got {chunk_s}")
        starts = [0]
        edge = t_out[0] + chunk_s
        while edge < t_out[-1]:
            k = int(np.searchsorted(t_out, edge))
            if t_out[-1] - t_out[k] >= overlap_s and k > starts[-1]:
                starts.append(k)
            edge += chunk_s
        bounds = starts[1:] + [F]
        chunks = []
        for i, (a, b) in enumerate(zip(starts, bounds)):
            first = int(np.searchsorted(t_out, t_out[a] - overlap_s))
            last = int(np.searchsorted(t_out, t_out[b - 1] + overlap_s, side="right"))
            chunks.append(Chunk(i, first, last, a, b))
        return cls(tuple(chunks), tuple(float(t_out[a]) for a in starts[1:]))

    def owner(self, t: np.ndarray) -> np.ndarray:
        """Index of the chunk whose core holds each session time ``t``."""
        return np.searchsorted(np.asarray(self.t_bounds), np.asarray(t, dtype=np.float64), side="right")


def run_chunk(session_dir: str | Path, inputs: SessionInputs, config: ProcessConfig, chunk: Chunk,
              estimator=None, progress: bool = False) -> WindowResult:
    """Process one chunk of a session (the unit of work of ``process`` and ``batch``)."""
    session = Session.open(session_dir)
    rig = Rig.load(session.rig_path)
    return process_window(session, rig, inputs, config, chunk.first, chunk.last, estimator=estimator,
                          progress=progress, preview=chunk.index == 0)


def process_chunks(session: Session, rig: Rig, inputs: SessionInputs, config: ProcessConfig, plan: ChunkPlan,
                   progress: bool = False) -> WindowResult:
    """All chunks of a session one after the other in this process, stitched."""
    estimator = pipeline.make_estimator(config, session)  # one per session, shared by its chunks
    if len(plan.chunks) == 1:
        c = plan.chunks[0]
        return process_window(session, rig, inputs, config, c.first, c.last, estimator=estimator, progress=progress)
    results = []
    bar = tqdm(total=len(inputs.people.t_session), desc="chunks", unit="frame", disable=not progress, file=sys.stderr)
    for c in plan.chunks:
        results.append(process_window(session, rig, inputs, config, c.first, c.last, estimator=estimator,
                                      preview=c.index == 0))
        bar.update(c.frames)
    bar.close()
    return stitch(plan, inputs, results)


def stitch(plan: ChunkPlan, inputs: SessionInputs, results: list[WindowResult]) -> WindowResult:
    """One result over all output frames from the chunks' results (in plan order): per frame the
    chunk whose core holds it; per view, observation and depth measurement the chunk whose core
    holds its panorama frame's time."""
    if len(results) == 1 and results[0].first == 0 and results[0].last == len(inputs.people.t_session):
        return results[0]
    t_pano = inputs.t_pano_session

    def core(r: WindowResult, c: Chunk, arr: np.ndarray) -> np.ndarray:
        return arr[:, c.core_first - r.first:c.core_last - r.first]

    def pano_core(r: WindowResult, c: Chunk, arr: np.ndarray) -> np.ndarray:
        keep = plan.owner(t_pano[r.pano_first:r.pano_last]) == c.index
        return arr[:, keep]

    per_frame = ("hand_joints", "hand_R", "hand_pose", "hand_valid", "local", "transl", "status")
    out = {name: np.concatenate([core(r, c, getattr(r, name)) for r, c in zip(results, plan.chunks)], axis=1)
           for name in per_frame}
    obs_betas = np.concatenate([pano_core(r, c, r.obs_betas) for r, c in zip(results, plan.chunks)], axis=1)
    obs_valid = np.concatenate([pano_core(r, c, r.obs_valid) for r, c in zip(results, plan.chunks)], axis=1)
    view_keep = [plan.owner(r.views["t_session"]) == c.index for r, c in zip(results, plan.chunks)]
    views = {key: np.concatenate([r.views[key][k] for r, k in zip(results, view_keep)])
             for key in results[0].views}
    shifts = np.concatenate([r.depth_shifts[plan.owner(t_pano[r.depth_shifts[:, 0].astype(int)]) == c.index]
                             for r, c in zip(results, plan.chunks)])
    missed = np.concatenate([r.depth_not_measured[plan.owner(t_pano[r.depth_not_measured]) == c.index]
                             for r, c in zip(results, plan.chunks)])
    timings: dict[str, float] = {}
    for r in results:
        for k, v in r.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    notes = list(dict.fromkeys(n for r in results for n in r.notes))
    first_chunk = results[0]
    return WindowResult(0, len(inputs.people.t_session), 0, len(t_pano), first_chunk.fps,
                        out["hand_joints"], out["hand_R"], out["hand_pose"], out["hand_valid"], obs_betas, obs_valid,
                        out["local"], out["transl"], first_chunk.betas, out["status"], views, shifts, missed,
                        first_chunk.kinects_with_depth, notes, first_chunk.preview, timings)


def save_window(path: Path, result: WindowResult) -> None:
    """Write a chunk's result to ``path`` (.npz) atomically: a file that exists is complete."""
    arrays = {}
    for f in fields(WindowResult):
        value = getattr(result, f.name)
        if f.name == "views":
            arrays.update({f"views.{k}": v for k, v in value.items()})
        elif f.name == "preview":
            arrays["preview"] = np.stack(value) if value else np.zeros((0, 1, 1, 3), dtype=np.uint8)
        elif f.name in ("notes", "timings"):
            arrays[f.name] = np.array(json.dumps(value))
        else:
            arrays[f.name] = np.asarray(value)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_window(path: Path) -> WindowResult:
    with np.load(path, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    kw = {}
    for f in fields(WindowResult):
        if f.name == "views":
            kw["views"] = {k.split(".", 1)[1]: v for k, v in d.items() if k.startswith("views.")}
        elif f.name == "preview":
            kw["preview"] = list(d["preview"])
        elif f.name in ("notes", "timings"):
            kw[f.name] = json.loads(str(d[f.name]))
        elif d[f.name].ndim == 0:
            kw[f.name] = d[f.name].item()
        else:
            kw[f.name] = d[f.name]
    return WindowResult(**kw)
