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

from omnimocap.capture.rig import Rig
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
    """All chunks of a session one after the other in this process, stitched as they come (one
    chunk's intermediate arrays in memory at a time)."""
    estimator = pipeline.make_estimator(config, session)  # one per session, shared by its chunks
    if len(plan.chunks) == 1:
        c = plan.chunks[0]
        return process_window(session, rig, inputs, config, c.first, c.last, estimator=estimator, progress=progress)
    stitcher = Stitcher(plan, inputs)
    bar = tqdm(total=len(inputs.people.t_session), desc="chunks", unit="frame", disable=not progress, file=sys.stderr)
    for c in plan.chunks:
        stitcher.add(process_window(session, rig, inputs, config, c.first, c.last, estimator=estimator,
                                    preview=c.index == 0))
        bar.update(c.frames)
    bar.close()
    return stitcher.result()


def stitch(plan: ChunkPlan, inputs: SessionInputs, results) -> WindowResult:
    """One result over all output frames from the chunks' results (in plan order; any iterable)."""
    stitcher = Stitcher(plan, inputs)
    for r in results:
        stitcher.add(r)
    return stitcher.result()


class Stitcher:
    """Assembles a session's result from its chunks' results, added in plan order: per output frame
    the chunk whose core holds it; per view, observation and depth measurement the chunk whose core
    holds its panorama frame's time. The per-frame arrays are allocated once for the session and
    filled chunk by chunk, so a chunk's result can be dropped once added."""

    PER_FRAME = ("hand_joints", "hand_R", "hand_pose", "hand_valid", "local", "transl", "status")

    def __init__(self, plan: ChunkPlan, inputs: SessionInputs):
        self.plan, self.inputs = plan, inputs
        self.F = len(inputs.people.t_session)
        self.arrays: dict[str, np.ndarray] = {}
        self.parts: dict[str, list] = {"obs_betas": [], "obs_valid": [], "views": [], "shifts": [], "missed": []}
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []
        self.first: WindowResult | None = None
        self.added = 0

    def add(self, r: WindowResult) -> None:
        c = self.plan.chunks[self.added]
        if (r.first, r.last) != (c.first, c.last):
            raise ValueError(f"chunk {c.index} covers frames {c.first}..{c.last}, the result {r.first}..{r.last}")
        self.added += 1
        if len(self.plan.chunks) == 1:
            self.first = r
            return
        if self.first is None:
            self.first = r
        t_pano = self.inputs.t_pano_session
        core = slice(c.core_first - r.first, c.core_last - r.first)
        for name in self.PER_FRAME:
            arr = getattr(r, name)
            if name not in self.arrays:
                self.arrays[name] = np.empty(arr.shape[:1] + (self.F,) + arr.shape[2:], dtype=arr.dtype)
            self.arrays[name][:, c.core_first:c.core_last] = arr[:, core]
        keep = self.plan.owner(t_pano[r.pano_first:r.pano_last]) == c.index
        self.parts["obs_betas"].append(r.obs_betas[:, keep])
        self.parts["obs_valid"].append(r.obs_valid[:, keep])
        view_keep = self.plan.owner(r.views["t_session"]) == c.index
        self.parts["views"].append({k: v[view_keep] for k, v in r.views.items()})
        self.parts["shifts"].append(r.depth_shifts[self.plan.owner(t_pano[r.depth_shifts[:, 0].astype(int)]) == c.index])
        self.parts["missed"].append(r.depth_not_measured[self.plan.owner(t_pano[r.depth_not_measured]) == c.index])
        for k, v in r.timings.items():
            self.timings[k] = self.timings.get(k, 0.0) + v
        self.notes.extend(n for n in r.notes if n not in self.notes)

    def result(self) -> WindowResult:
        if self.added != len(self.plan.chunks):
            raise ValueError(f"{self.added} of {len(self.plan.chunks)} chunks were added")
        first = self.first
        if len(self.plan.chunks) == 1:
            return first
        a, p = self.arrays, self.parts
        views = {k: np.concatenate([v[k] for v in p["views"]]) for k in p["views"][0]}
        return WindowResult(0, self.F, 0, len(self.inputs.t_pano_session), first.fps,
                            a["hand_joints"], a["hand_R"], a["hand_pose"], a["hand_valid"],
                            np.concatenate(p["obs_betas"], axis=1), np.concatenate(p["obs_valid"], axis=1),
                            a["local"], a["transl"], first.betas, a["status"], views,
                            np.concatenate(p["shifts"]), np.concatenate(p["missed"]), first.kinects_with_depth,
                            self.notes, first.preview, self.timings)


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
