"""Reprocessing many sessions: ``omnimocap batch``.

Each session is split into time chunks (:mod:`omnimocap.fusion.chunks`); the units of work are

- *prepare* (per session): the Kinect people, the panorama times, the chunk plan;
- *chunk*: decoding, view cutting, hands, lifting, resampling and the body fit of one chunk, saved
  as ``<out>/.<name>.chunks/chunk_NNNN.npz`` the moment it is done;
- *finish* (per session): stitching, the results folder (written as ``<name>.partial`` and renamed
  when complete), the metrics against ``truth/`` when the session has it.

A re-run skips sessions whose results folder is complete and chunks whose file exists, so a killed
batch loses at most the chunks that were in flight. A session that fails is reported in one line
and the others go on.

Engines. ``--workers 1`` without ``--ray-address`` runs the units one after the other in this
process (no Ray needed); otherwise Ray Core runs them. The pattern is Ray Core tasks with
``ray.wait`` back-pressure (not Ray Data): the units are few, coarse (seconds to minutes) and of
three kinds that depend on each other per session (prepare -> chunks -> finish), which a driver
loop over object references expresses directly, while Ray Data's block streaming fits one uniform
row-wise transform. The driver keeps at most ``max_in_flight`` units submitted (by default two per
worker) and submits the next only when ``ray.wait`` returns one, so neither the object store nor the
driver's memory grows with the number or length of sessions. A chunk task decodes its own panorama
frames where the session is stored and cuts the wrist views there; only those crops go to the
hand network: with ``--hands wilor`` on a cluster with GPUs, one actor per GPU holds the network
(fp16 under CUDA autocast) and the chunk tasks send it their views (see :class:`HandNetworkActor`);
on CPUs only, each chunk task runs the network itself. Each task takes one CPU and runs on one
thread (OpenMP, MKL and OpenBLAS through the job's environment, torch and OpenCV set in the worker,
see :func:`_on_one_thread`): on a machine with as many workers as cores, libraries that start a
thread per core in every worker would make the workers fight over the cores. The in-process
engine runs its units on one thread too: the per-frame arrays are small, so a pool gains little,
and on a busy machine its threads wait on each other (on a shared 2-core machine, ``--workers 1``
with torch's default two threads took 67 ms per frame at a load of 5-6, each single-threaded Ray
worker 21 ms at 3.5, and ``--workers 1`` on one thread 15 ms at 1.5). On a cluster of several
machines the
sessions and ``--out`` must be on storage every node sees (the tasks read and write them by path;
only the Kinect people and the chunk plan of a session travel through the object store).
"""

from __future__ import annotations

import glob
import heapq
import itertools
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from omnimocap.capture.session import MANIFEST, atomic_write_json
from omnimocap.errors import UserError
from omnimocap.fusion.chunks import DEFAULT_CHUNK_S, DEFAULT_OVERLAP_S, Chunk, ChunkPlan
from omnimocap.fusion.pipeline import ProcessConfig

REPORT_NAME = "batch_report.json"
# Metrics of ``omnimocap evaluate`` shown in the printed table (all of them go to the report).
TABLE_METRICS = ("body.joint_error_mm", "hands.joint_error_mm", "hands.coverage")


@dataclass
class BatchConfig:
    """How ``omnimocap batch`` runs (the per-session processing is a :class:`ProcessConfig`)."""

    out: Path
    """Folder holding one results folder per session (named after the session folder)."""
    workers: int = 1
    """CPU workers of the local Ray cluster (1 without --ray-address: in this process, no Ray)."""
    ray_address: str | None = None
    """Address of a running Ray cluster to join (``ray start --head`` prints it); None: start one locally."""
    chunk_s: float = DEFAULT_CHUNK_S
    """Core length of a chunk, seconds."""
    overlap_s: float = DEFAULT_OVERLAP_S
    """Frames processed either side of a chunk's core, seconds."""
    max_in_flight: int | None = None
    """Units of work submitted at once (default: two per worker)."""


@dataclass
class SessionStatus:
    session: str
    result: str
    frames: int = 0
    status: str = "pending"  # done, skipped (finished earlier), failed
    error: str | None = None
    metrics: dict = field(default_factory=dict)
    seconds: float = 0.0
    chunks: int = 0
    chunks_reused: int = 0


def find_sessions(specs: list[str]) -> list[Path]:
    """Session folders from command-line arguments: a session folder (it has ``session.json``), a
    folder of session folders, or a glob of either. Order kept, duplicates dropped."""
    found: list[Path] = []
    for spec in specs:
        matches = sorted(glob.glob(spec)) if glob.has_magic(spec) else [spec]
        if not matches:
            raise UserError("no folder matches the pattern", path=Path(spec), fix="check the glob")
        for m in map(Path, matches):
            if (m / MANIFEST).is_file():
                found.append(m)
            elif m.is_dir() and any((c / MANIFEST).is_file() for c in m.iterdir() if c.is_dir()):
                found.extend(sorted(c for c in m.iterdir() if (c / MANIFEST).is_file()))
            elif m.is_dir():
                # kept so that it fails alone, in one line, like any other broken session
                found.append(m)
            else:
                raise UserError("session folder not found", path=m, fix="check the path")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


def result_names(sessions: list[Path]) -> list[str]:
    """A results folder name per session: its folder name, suffixed where two are alike."""
    names, seen = [], {}
    for s in sessions:
        n = s.name
        seen[n] = seen.get(n, 0) + 1
        names.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return names


# --- units of work (plain functions: run in this process or as Ray tasks) -------------------------

def prepare_unit(session_dir: str, config: ProcessConfig, chunk_s: float, overlap_s: float):
    """Open the session (recovering an interrupted recording, as ``process`` does) and load what
    all its chunks read. Returns (SessionInputs, ChunkPlan)."""
    from omnimocap.capture.rig import Rig
    from omnimocap.capture.recovery import recover_session
    from omnimocap.fusion.pipeline import fit_session_body, load_inputs

    session, _ = recover_session(session_dir)  # reads a killed recording without writing into it
    rig = Rig.load(session.rig_path)
    inputs = load_inputs(session, rig, config)
    plan = ChunkPlan.for_times(inputs.people.t_session, chunk_s, overlap_s)
    if len(plan.chunks) > 1:
        fit_session_body(inputs, config)
    return inputs, plan


def chunk_unit(session_dir: str, inputs, config: ProcessConfig, chunk: Chunk, path: str, hand_actor=None) -> dict:
    """Process one chunk and save it to ``path``; returns its frame count and stage timings."""
    from omnimocap.fusion.chunks import run_chunk, save_window

    estimator = _RemoteEstimator(hand_actor) if hand_actor is not None else process_estimator(config)
    result = run_chunk(session_dir, inputs, config, chunk, estimator=estimator)
    save_window(Path(path), result)
    return {"frames": chunk.frames, "timings": result.timings}


_PROCESS_ESTIMATOR: dict = {}


def process_estimator(config: ProcessConfig):
    """The WiLoR backend this process holds for every chunk it runs, loaded on its first one (the
    full network takes seconds to load: the session's other chunks and later sessions reuse it);
    None for ``--hands sim``, whose observer is made per chunk from its session's truth."""
    if config.hands != "wilor":
        return None
    key = (config.models, config.device)
    if key not in _PROCESS_ESTIMATOR:
        from omnimocap.hands.wilor.backend import WilorEstimator

        _PROCESS_ESTIMATOR.clear()  # one network per process
        _PROCESS_ESTIMATOR[key] = WilorEstimator.from_models_dir(config.models, device=config.device)
    return _PROCESS_ESTIMATOR[key]


def finish_unit(session_dir: str, out_dir: str, inputs, config: ProcessConfig, plan: ChunkPlan,
                chunk_paths: list[str]) -> dict:
    """Stitch the chunks, write the results folder as ``process`` does (under its lock, in a marked
    partial folder moved into place when complete, replacing only an earlier results folder) and
    evaluate against ``truth/`` where the session has it. Returns the report and the metrics."""
    from omnimocap.capture.rig import Rig
    from omnimocap.capture.recovery import recover_session
    from omnimocap.fusion.chunks import load_window, stitch
    from omnimocap.fusion.pipeline import session_identity, write_results
    from omnimocap.fusion.results_folder import check_output_path, results_lock, write_results_folder

    t0 = time.perf_counter()
    session, _ = recover_session(session_dir)
    rig = Rig.load(session.rig_path)
    result = stitch(plan, inputs, (load_window(Path(p)) for p in chunk_paths))
    out = Path(os.path.abspath(out_dir))
    check_output_path(out, Path(session_dir))
    with results_lock(out):
        report = write_results_folder(out, True, session_identity(session), lambda work: write_results(
            work, session, rig, inputs, result, config, None, dict(result.timings), t0))
    metrics = {}
    if session.truth_dir.is_dir():
        from omnimocap.fusion.evaluate import evaluate

        metrics = scalar_metrics(evaluate(out, session_dir))
    return {"frames": report["frames"], "metrics": metrics}


def scalar_metrics(metrics: dict) -> dict:
    """The numbers (and missing values) of ``omnimocap evaluate``'s metrics, as the report keeps them."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) or v is None}


class HandNetworkActor:
    """The hand network on one GPU (a Ray actor with ``num_gpus=1``): holds the model, takes the
    views of a batch of frames (their crops, no panorama) and returns the observations."""

    def __init__(self, config: ProcessConfig):
        from omnimocap.hands.wilor.backend import WilorEstimator

        self.estimator = WilorEstimator.from_models_dir(config.models, device="cuda")

    def estimate(self, requests):
        return self.estimator.estimate(requests)


class _RemoteEstimator:
    """The HandEstimator a chunk task uses when the network lives in a :class:`HandNetworkActor`."""

    name = "wilor"
    needs_images = True

    def __init__(self, actor):
        self.actor = actor

    def estimate(self, requests):
        import ray

        return ray.get(self.actor.estimate.remote(list(requests)))


# --- engines --------------------------------------------------------------------------------------

class _Finished:
    def __init__(self, value=None, error: BaseException | None = None):
        self.value, self.error = value, error


class LocalEngine:
    """Runs each unit when it is submitted, in this process (``--workers 1``: no Ray)."""

    workers = 1
    start_s = warm_up_s = 0.0

    def put(self, value):
        return value

    def submit(self, fn, *args):
        import cv2
        import torch

        # one thread for the unit, as in a Ray worker; the calling process's pools as they were after it
        threads = torch.get_num_threads(), cv2.getNumThreads()
        try:
            return _Finished(_on_one_thread(fn, *args))
        except Exception as exc:  # reported per session by the driver
            return _Finished(error=exc)
        finally:
            torch.set_num_threads(threads[0])
            cv2.setNumThreads(threads[1])

    def wait(self, refs: list):
        return refs[0]

    def get(self, ref):
        if ref.error is not None:
            raise ref.error
        return ref.value

    def warm_up(self, config: ProcessConfig) -> None:
        pass

    def hand_actors(self, config: ProcessConfig) -> list:
        return []

    def shutdown(self) -> None:
        pass


# The job's environment on every worker: one thread per task for the OpenMP, MKL and OpenBLAS pools
# (read when those libraries load, so it must be set before the worker imports them).
ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _on_one_thread(fn, *args):
    """Run a unit of work in a Ray worker on one thread: torch's intra-op pool and OpenCV's pool
    are sized per process at run time, so they are set here (the environment covers the rest)."""
    import cv2
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)
    return fn(*args)


def _warm_up(hands: str) -> int:
    """Import what every unit of work needs (else the first unit in each fresh worker pays for it)."""
    import importlib

    for module in ("omnimocap.fusion.body_fit", "omnimocap.fusion.evaluate",
                   {"sim": "omnimocap.hands.sim_backend", "wilor": "omnimocap.hands.wilor.backend"}.get(hands)):
        if module:
            importlib.import_module(module)
    return os.getpid()


class RayEngine:
    """Ray Core tasks (CPU units) and, with ``--hands wilor`` and GPUs in the cluster, one
    :class:`HandNetworkActor` per GPU, created up front. ``start_s``: seconds to start or join the
    cluster; ``warm_up_s``: then to have every worker import the pipeline (one task per CPU)."""

    def __init__(self, workers: int, address: str | None):
        try:
            import ray
        except ImportError:
            raise UserError("Ray is not installed (needed for --workers > 1 and --ray-address)",
                            fix="pip install 'omnimocap[ray]' (scripts/setup.sh installs it), or use --workers 1") from None
        self.ray = ray
        t0 = time.perf_counter()
        runtime_env = {"env_vars": dict(ONE_THREAD_ENV)}
        if address:
            check_cluster_answers(address)
            ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
        else:
            # a private local cluster on the loopback interface, as many CPUs as workers
            ray.init(num_cpus=workers, _node_ip_address="127.0.0.1", include_dashboard=False,
                     log_to_driver=False, object_store_memory=512 * 1024**2, runtime_env=runtime_env)
        self.workers = max(1, int(ray.cluster_resources().get("CPU", workers)))
        self.start_s = time.perf_counter() - t0
        self.warm_up_s = 0.0
        self._unit = ray.remote(_on_one_thread).options(num_cpus=1, max_retries=1)

    def warm_up(self, config: ProcessConfig) -> None:
        """One warm-up task per CPU, all at once: the workers import in parallel, before the first
        units (whose timings are then their work only)."""
        t0 = time.perf_counter()
        self.ray.get([self._unit.remote(_warm_up, config.hands) for _ in range(self.workers)])
        self.warm_up_s = time.perf_counter() - t0

    def put(self, value):
        return self.ray.put(value)

    def submit(self, fn, *args):
        return self._unit.remote(fn, *args)

    def wait(self, refs: list):
        done, _ = self.ray.wait(refs, num_returns=1)
        return done[0]

    def get(self, ref):
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, BaseException) else RuntimeError(str(exc).splitlines()[0])) from None

    def hand_actors(self, config: ProcessConfig) -> list:
        gpus = int(self.ray.cluster_resources().get("GPU", 0))
        if config.hands != "wilor" or gpus == 0:
            return []
        actor_cls = self.ray.remote(num_gpus=1)(HandNetworkActor)
        return [actor_cls.remote(config) for _ in range(gpus)]

    def shutdown(self) -> None:
        self.ray.shutdown()


def check_cluster_answers(address: str, timeout_s: float = 5.0) -> None:
    """Refuse a ``host:port`` (or ``ray://host:port``) cluster address nothing answers at, in one
    line: ``ray.init`` would go on retrying the connection for minutes without a word. Other forms
    (``auto``) are left to Ray."""
    import socket

    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UserError(f"no Ray cluster answers at --ray-address {address} ({exc.strerror or exc})",
                        fix="pass the address `ray start --head` printed on the cluster's head machine, "
                            "or leave out --ray-address for a local cluster") from None


def make_engine(workers: int, address: str | None):
    if workers <= 1 and not address:
        return LocalEngine()
    return RayEngine(workers, address)


def one_line(exc: BaseException) -> str:
    """An exception as the one line a user reads in the batch table."""
    if isinstance(exc, UserError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# --- the driver -----------------------------------------------------------------------------------

@dataclass
class _SessionRun:
    status: SessionStatus
    path: Path
    out: Path
    chunk_dir: Path
    t0: float = 0.0
    inputs_ref: object = None
    inputs: object = None
    plan: ChunkPlan | None = None
    remaining: int = 0


def run_batch(session_dirs: list[Path], config: ProcessConfig, batch: BatchConfig, progress: bool = True,
              engine=None) -> list[SessionStatus]:
    """Process every session into ``batch.out/<name>``; returns one status per session (also
    written to ``batch.out/batch_report.json``)."""
    out_root = Path(batch.out)
    out_root.mkdir(parents=True, exist_ok=True)
    runs = []
    for path, name in zip(session_dirs, result_names(session_dirs)):
        out = out_root / name
        runs.append(_SessionRun(SessionStatus(str(path), str(out)), Path(path), out, out_root / f".{name}.chunks"))
    t0 = time.perf_counter()
    engine = engine or make_engine(batch.workers, batch.ray_address)
    try:
        engine.warm_up(config)
        actors = engine.hand_actors(config)
        max_in_flight = batch.max_in_flight or 2 * engine.workers
        t_work = time.perf_counter()
        _drive(engine, runs, config, batch, actors, max_in_flight, progress)
        work_s = time.perf_counter() - t_work
    finally:
        engine.shutdown()
    statuses = [r.status for r in runs]
    seconds = {"engine_start": engine.start_s, "workers_warm_up": engine.warm_up_s,
               "start_total": t_work - t0, "work": work_s}
    atomic_write_json(out_root / REPORT_NAME, {"sessions": [asdict(s) for s in statuses],
                                               "config": asdict(config), "chunk_s": batch.chunk_s,
                                               "overlap_s": batch.overlap_s, "workers": engine.workers,
                                               "seconds": {k: round(v, 3) for k, v in seconds.items()}})
    return statuses


def _drive(engine, runs: list[_SessionRun], config: ProcessConfig, batch: BatchConfig, actors: list,
           max_in_flight: int, progress: bool) -> None:
    bar = tqdm(total=0, desc="batch", unit="frame", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    # Units wait in a queue ordered by session, then stage, then chunk: a session's chunks and its
    # finish go before the next session's chunks (its inputs leave the object store early), while
    # the next sessions are prepared as soon as there is room.
    queue: list = []
    order = itertools.count()
    stage = {"prepare": 0, "chunk": 1, "finish": 2}

    def push(kind: str, i: int, run: _SessionRun, chunk: Chunk | None = None) -> None:
        heapq.heappush(queue, (i, stage[kind], chunk.index if chunk else 0, next(order), kind, run, chunk))

    for i, run in enumerate(runs):
        report = run.out / "report.json"
        if report.is_file():
            run.status.status = "skipped"
            run.status.frames = int(json.loads(report.read_text()).get("frames", 0))
            saved = run.out / "metrics.json"  # written beside the results when the session has truth
            if saved.is_file():
                run.status.metrics = scalar_metrics(json.loads(saved.read_text()))
            continue
        push("prepare", i, run)
    index = {id(run): i for i, run in enumerate(runs)}
    pending: dict = {}
    actor_turn = 0
    while queue or pending:
        while queue and len(pending) < max_in_flight:
            *_, kind, run, chunk = heapq.heappop(queue)
            if run.status.status == "failed":
                continue
            if kind == "prepare":
                run.t0 = time.perf_counter()
                ref = engine.submit(prepare_unit, str(run.path), config, batch.chunk_s, batch.overlap_s)
            elif kind == "chunk":
                actor = actors[actor_turn % len(actors)] if actors else None
                actor_turn += 1
                ref = engine.submit(chunk_unit, str(run.path), run.inputs_ref, config, chunk,
                                    str(_chunk_path(run, chunk)), actor)
            else:
                ref = engine.submit(finish_unit, str(run.path), str(run.out), run.inputs_ref, config, run.plan,
                                    [str(_chunk_path(run, c)) for c in run.plan.chunks])
            pending[ref] = (kind, run, chunk)
        ref = engine.wait(list(pending))
        kind, run, chunk = pending.pop(ref)
        try:
            value = engine.get(ref)
        except Exception as exc:
            _fail(run, exc, bar)
            continue
        if run.status.status == "failed":
            continue
        if kind == "prepare":
            inputs, plan = value
            run.plan, run.inputs_ref = plan, engine.put(inputs)
            run.status.frames = len(inputs.people.t_session)
            run.status.chunks = len(plan.chunks)
            bar.total += run.status.frames
            _reset_stale_chunks(run, config, batch)
            todo = []
            for c in plan.chunks:
                if _chunk_path(run, c).is_file():
                    run.status.chunks_reused += 1
                    bar.update(c.frames)
                else:
                    todo.append(c)
            run.remaining = len(todo)
            for c in todo:
                push("chunk", index[id(run)], run, c)
            if not todo:
                push("finish", index[id(run)], run)
        elif kind == "chunk":
            bar.update(value["frames"])
            run.remaining -= 1
            if run.remaining == 0:
                push("finish", index[id(run)], run)
        else:
            run.status.status = "done"
            run.status.metrics = value["metrics"]
            run.status.seconds = round(time.perf_counter() - run.t0, 2)
            run.inputs_ref = None
            shutil.rmtree(run.chunk_dir, ignore_errors=True)
        bar.refresh()
    bar.close()


def _chunk_path(run: _SessionRun, chunk: Chunk) -> Path:
    return run.chunk_dir / f"chunk_{chunk.index:04d}.npz"


def _reset_stale_chunks(run: _SessionRun, config: ProcessConfig, batch: BatchConfig) -> None:
    """Chunk files are reused only when written with the same settings and chunk plan."""
    key = {"config": asdict(config), "chunks": [asdict(c) for c in run.plan.chunks]}
    stamp = run.chunk_dir / "plan.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == json.loads(json.dumps(key)):
        return
    shutil.rmtree(run.chunk_dir, ignore_errors=True)
    run.chunk_dir.mkdir(parents=True)
    atomic_write_json(stamp, key)


def _fail(run: _SessionRun, exc: BaseException, bar) -> None:
    if run.status.status == "failed":
        return
    run.status.status = "failed"
    run.status.error = one_line(exc)
    run.status.seconds = round(time.perf_counter() - run.t0, 2) if run.t0 else 0.0
    run.inputs_ref = None
    bar.write(f"omnimocap batch: {Path(run.status.session).name}: failed: {run.status.error}", file=sys.stderr)


def format_table(statuses: list[SessionStatus]) -> str:
    """The printed summary: one row per session, then the one line of each failure."""
    head = ["session", "frames", "status", *TABLE_METRICS, "seconds"]
    rows = [head]
    for s in statuses:
        metrics = [("-" if s.metrics.get(m) is None else f"{s.metrics[m]:.3g}") for m in TABLE_METRICS]
        rows.append([Path(s.session).name, str(s.frames), s.status, *metrics, f"{s.seconds:.1f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines += [f"{Path(s.session).name}: {s.error}" for s in statuses if s.error]
    return "\n".join(lines)
