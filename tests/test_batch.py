"""Long sessions in chunks and ``omnimocap batch``: chunk plans tile the session, chunked results
equal the whole-session run within the filters' tolerance, a killed batch resumes with only what
was missing, and on a local Ray cluster the results equal ``process`` run one by one while a
corrupt session fails alone in one line."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from omnimocap.apps.cli import main
from omnimocap.capture.rig import Rig
from omnimocap.capture.session import Session
from omnimocap.sim.simulate import SimConfig, simulate_session
from omnimocap.fusion import batch as batch_module
from omnimocap.fusion.batch import BatchConfig, LocalEngine, chunk_unit, find_sessions, process_estimator, run_batch
from omnimocap.fusion.chunks import ChunkPlan, load_window, process_chunks, save_window
from omnimocap.fusion.pipeline import ProcessConfig, fit_session_body, load_inputs, process_session
from tests.tools.cli import one_line_error

SIM = ProcessConfig(hands="sim", preview=False)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch_sessions")
    for i in range(3):
        simulate_session(root / f"s{i}", SimConfig(seconds=3.0, people=1, kinects=1, seed=i, pano_width=256,
                                                   kinect_video=False, realism="ideal"))
    return root


def test_chunk_plan_tiles_the_session():
    t = np.arange(0, 10.5, 1 / 30)
    plan = ChunkPlan.for_times(t, chunk_s=3.0, overlap_s=1.0)
    cores = [(c.core_first, c.core_last) for c in plan.chunks]
    assert cores[0][0] == 0 and cores[-1][1] == len(t)
    assert all(a[1] == b[0] for a, b in zip(cores, cores[1:]))
    for c in plan.chunks:
        assert c.first <= c.core_first < c.core_last <= c.last
        if c.first > 0:
            assert t[c.core_first] - t[c.first] == pytest.approx(1.0, abs=1 / 30)
        if c.last < len(t):
            assert t[c.last - 1] - t[c.core_last - 1] == pytest.approx(1.0, abs=1 / 30)
    # 10.5 s in 3 s cores: the last 1.5 s core is not shorter than the overlap, so it stays
    assert len(plan.chunks) == 4
    # a tail shorter than the overlap joins the chunk before it
    assert len(ChunkPlan.for_times(np.arange(0, 6.5, 1 / 30), 3.0, 1.0).chunks) == 2
    assert len(ChunkPlan.for_times(t, chunk_s=60.0).chunks) == 1
    # panorama times go to the one core that holds them
    owner = plan.owner(t)
    for c in plan.chunks:
        assert np.all(owner[c.core_first:c.core_last] == c.index)


def test_chunks_equal_the_whole_session(sessions, tmp_path):
    session = Session.open(sessions / "s0")
    rig = Rig.load(session.rig_path)
    inputs = load_inputs(session, rig, SIM)
    fit_session_body(inputs, SIM)
    t = inputs.people.t_session
    whole = process_chunks(session, rig, inputs, SIM, ChunkPlan.for_times(t, chunk_s=1e9))
    # a second of overlap: the body fit's per-joint smoothing reaches about that far past a chunk's edge
    plan = ChunkPlan.for_times(t, chunk_s=0.6, overlap_s=1.0)
    assert len(plan.chunks) >= 3
    # chunks saved and loaded again, as batch does
    results = []
    for c in plan.chunks:
        path = tmp_path / f"c{c.index}.npz"
        chunk_unit(str(session.root), inputs, SIM, c, str(path))
        results.append(load_window(path))
    from omnimocap.fusion.chunks import stitch

    chunked = stitch(plan, inputs, results)
    assert np.array_equal(whole.hand_valid, chunked.hand_valid)
    assert whole.hand_valid.mean() > 0.25  # hands seen in many frames (the person turns away at times): the comparison has substance
    # within the filters' tolerance: well under a millimetre and a tenth of a degree
    assert np.nanmax(np.abs(whole.hand_joints - chunked.hand_joints)) < 1e-3
    assert np.max(np.abs(whole.transl - chunked.transl)) < 1e-3
    for name in ("local", "hand_R"):
        a, b = getattr(whole, name), getattr(chunked, name)
        cos = (np.trace(np.swapaxes(a, -1, -2) @ b, axis1=-2, axis2=-1) - 1) / 2
        assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() < 0.1, name
    assert np.array_equal(np.sort(whole.views["frame_index"]), np.sort(chunked.views["frame_index"]))
    # the stitched views are those of the whole run, each once
    assert len(chunked.views["frame_index"]) == len(whole.views["frame_index"])


def test_save_and_load_window_round_trip(sessions, tmp_path):
    session = Session.open(sessions / "s1")
    rig = Rig.load(session.rig_path)
    inputs = load_inputs(session, rig, SIM)
    plan = ChunkPlan.for_times(inputs.people.t_session, chunk_s=1e9)
    result = process_chunks(session, rig, inputs, SIM, plan)
    save_window(tmp_path / "w.npz", result)
    back = load_window(tmp_path / "w.npz")
    assert back.first == result.first and back.fps == result.fps and back.timings == result.timings
    assert np.array_equal(back.status, result.status)
    np.testing.assert_array_equal(back.hand_joints, result.hand_joints)
    assert set(back.views) == set(result.views)


class _KilledEngine(LocalEngine):
    """Runs units in this process and is 'killed' (KeyboardInterrupt) when the n-th chunk unit is
    submitted; counts the units it ran."""

    def __init__(self, kill_at: int | None = None):
        self.kill_at, self.ran = kill_at, {"prepare_unit": 0, "chunk_unit": 0, "finish_unit": 0}

    def submit(self, fn, *args):
        if fn.__name__ == "chunk_unit" and self.kill_at is not None and self.ran["chunk_unit"] + 1 == self.kill_at:
            raise KeyboardInterrupt
        self.ran[fn.__name__] += 1
        return super().submit(fn, *args)


def test_killed_batch_resumes_with_what_was_missing(sessions, tmp_path):
    out = tmp_path / "out"
    batch = BatchConfig(out=out, chunk_s=0.8, overlap_s=0.4)
    dirs = find_sessions([str(sessions)])
    assert [d.name for d in dirs] == ["s0", "s1", "s2"]
    s0 = Session.open(dirs[0])
    t = load_inputs(s0, Rig.load(s0.rig_path), SIM).people.t_session
    chunks_per_session = len(ChunkPlan.for_times(t, batch.chunk_s, batch.overlap_s).chunks)
    assert chunks_per_session >= 2
    total_chunks = chunks_per_session * len(dirs)
    killed = _KilledEngine(kill_at=chunks_per_session + 2)  # while the chunks of s1 run
    with pytest.raises(KeyboardInterrupt):
        run_batch(dirs, SIM, batch, progress=False, engine=killed)
    assert (out / "s0" / "report.json").is_file()
    assert not (out / "s1").exists() and not (out / "s2").exists()
    saved = len(list((out / ".s1.chunks").glob("chunk_*.npz")))
    assert 1 <= saved < chunks_per_session

    again = _KilledEngine()
    again.workers = 3  # as a joined cluster's CPUs, which --workers does not set
    statuses = run_batch(dirs, SIM, batch, progress=False, engine=again)
    assert [s.status for s in statuses] == ["skipped", "done", "done"]
    assert [s.chunks for s in statuses[1:]] == [chunks_per_session] * 2
    assert statuses[1].chunks_reused == saved
    assert again.ran == {"prepare_unit": 2, "chunk_unit": total_chunks - chunks_per_session - saved, "finish_unit": 2}
    for name in ("s1", "s2"):
        assert (out / name / "fused.npz").is_file() and not (out / f".{name}.chunks").exists()
    report = json.loads((out / "batch_report.json").read_text())
    assert [s["status"] for s in report["sessions"]] == ["skipped", "done", "done"]
    assert report["workers"] == 3
    # the skipped session's metrics are those its first run wrote beside its results
    first = json.loads((out / "s0" / "metrics.json").read_text())
    assert report["sessions"][0]["metrics"]["hands.joint_error_mm"] == first["hands.joint_error_mm"] is not None


@pytest.mark.slow
def test_batch_on_local_ray_equals_process_and_isolates_a_corrupt_session(sessions, tmp_path, capsys):
    pytest.importorskip("ray")
    corrupt = tmp_path / "in" / "broken"
    corrupt.mkdir(parents=True)
    (corrupt / "session.json").write_text("{")
    out = tmp_path / "out"
    capsys.readouterr()
    code = main(["batch", str(sessions / "s*"), str(corrupt), "--out", str(out), "--workers", "2",
                 "--hands", "sim", "--no-preview", "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    lines = [line for line in captured.err.splitlines() if line.startswith("omnimocap batch:")]
    assert len(lines) == 1 and "broken" in lines[0] and "session.json" in lines[0]
    report = json.loads((out / "batch_report.json").read_text())
    assert [s["status"] for s in report["sessions"]] == ["done", "done", "done", "failed"]
    assert report["sessions"][0]["metrics"]["hands.joint_error_mm"] is not None
    assert "broken" in captured.out and "s2" in captured.out
    for i in range(3):
        ref = process_session(sessions / f"s{i}", tmp_path / f"ref{i}", SIM, progress=False)
        assert report["sessions"][i]["frames"] == ref["frames"]
        for name in ("fused.npz", "views.npz", "smplx.npz"):
            with np.load(out / f"s{i}" / name) as a, np.load(tmp_path / f"ref{i}" / name) as b:
                assert a.files == b.files
                for key in a.files:
                    np.testing.assert_array_equal(a[key], b[key], err_msg=f"s{i}/{name}:{key}")


def test_batch_user_errors_are_one_line(tmp_path, capsys):
    line = one_line_error(capsys, ["batch", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert "missing" in line and "session folder not found" in line
    line = one_line_error(capsys, ["batch", str(tmp_path / "nothing*"), "--out", str(tmp_path / "out")])
    assert "no folder matches" in line
    line = one_line_error(capsys, ["batch", str(tmp_path), "--out", str(tmp_path / "out"), "--workers", "0"])
    assert "--workers" in line


def test_a_cluster_address_nothing_answers_at_is_one_line(tmp_path, capsys):
    pytest.importorskip("ray")
    import socket

    with socket.socket() as closed:  # a port that was free a moment ago: nothing listens there
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    line = one_line_error(capsys, ["batch", str(tmp_path), "--out", str(tmp_path / "out"),
                                   "--ray-address", f"127.0.0.1:{port}"])
    assert f"127.0.0.1:{port}" in line and "ray start --head" in line


def test_a_worker_loads_the_hand_network_once_for_all_its_chunks(monkeypatch):
    from omnimocap.hands.wilor.backend import WilorEstimator

    loads = []

    def load(cls, models_dir=None, device="cpu"):
        loads.append((models_dir, device))
        return object()

    monkeypatch.setattr(WilorEstimator, "from_models_dir", classmethod(load))
    monkeypatch.setattr(batch_module, "_PROCESS_ESTIMATOR", {})
    wilor = ProcessConfig(hands="wilor", models="/models", device="cpu", preview=False)
    first = process_estimator(wilor)
    assert process_estimator(wilor) is first
    on_cuda = process_estimator(replace(wilor, device="cuda"))
    assert on_cuda is not first and process_estimator(replace(wilor, device="cuda")) is on_cuda
    assert loads == [("/models", "cpu"), ("/models", "cuda")]
    assert process_estimator(SIM) is None


def test_an_in_process_unit_leaves_the_callers_thread_pools_as_they_were():
    """``--workers 1`` runs each unit on one thread, as a Ray worker does, in the calling process:
    the process's torch and OpenCV pools are what they were once the unit is done (left at one
    thread, every later torch call of the process, tests included, summed in another order)."""
    import cv2
    import torch

    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(2)
    cv2.setNumThreads(2)
    try:
        engine = LocalEngine()
        assert engine.get(engine.submit(lambda: (torch.get_num_threads(), cv2.getNumThreads()))) == (1, 1)
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (2, 2)
        failed = engine.submit(lambda: 1 / 0)
        assert isinstance(failed.error, ZeroDivisionError)
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (2, 2)
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])
