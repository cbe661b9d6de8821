"""The crash-safe recorder: a simulated live recording, SIGKILL and recovery, disk space,
disconnects, Ctrl-C, malformed inputs, and the 360 file readable while it grows."""

from __future__ import annotations

import _thread
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from omnimocap.apps.cli import main
from omnimocap.capture.rig import Rig
from omnimocap.capture.bodies import BodyRecording, read_bodies, read_journal, write_bodies
from omnimocap.capture.pano import PanoReader, PanoWriter, read_pano_timestamps
from omnimocap.capture.record_streams import journal_to_bodies
from omnimocap.capture.recorder import GB, RESERVE_BYTES, RESERVE_FILE, RecordConfig, Recorder
from omnimocap.capture.recovery import recover_session
from omnimocap.capture.replay import replay_loop, replay_sources
from omnimocap.capture.session import PANO_FRAMES, Session, bodies_name, journal_name, kinect_name
from omnimocap.sim.simulate import SimConfig, simulate_session
from omnimocap.capture.sources import KinectFrame, SessionClock, Source
from omnimocap.errors import UserError

SIM = dict(people=1, kinects=2, pano_width=256)


def _decodable_frames(path: Path) -> int:
    """Frames of a video that decode: the exact count the recorder's packet count is held to."""
    import av

    n = 0
    try:
        with av.open(str(path)) as container:
            for _ in container.decode(video=0):
                n += 1
    except (av.error.FFmpegError, OSError, IndexError):
        pass  # the cut-off tail
    return n


@pytest.fixture(scope="module")
def source_session(tmp_path_factory) -> Path:
    """A simulated 2 s session (body tracking, no Kinect images) whose streams the recorder replays."""
    out = tmp_path_factory.mktemp("sim") / "session"
    simulate_session(out, SimConfig(seconds=2.0, seed=3, overwrite=True, kinect_video=False, **SIM))
    return out


def _last_line(path: Path) -> dict | None:
    lines = path.read_bytes().split(b"\n")
    for line in reversed(lines):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if "timestamp_usec" in obj:
            return obj
    return None


def test_record_simulate_writes_a_consistent_session(tmp_path, capsys):
    out = tmp_path / "rec"
    rc = main(["record", str(out), "--simulate", "--seconds", "3", "--people", "1", "--kinects", "2",
               "--pano-width", "256", "--seed", "1", "--min-free-gb", "0"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["stop_reason"] == "duration"
    session = Session.open(out)
    assert session.complete and session.manifest.simulated
    kinects = session.kinects()
    assert [k.role for k in kinects] == ["master", "subordinate"]  # the reference Kinect first
    assert all(d.status == "complete" for d in session.manifest.devices)
    rig = Rig.load(session.rig_path)
    for entry in kinects:
        bodies = read_bodies(session.path(entry.bodies))
        assert 75 <= len(bodies) <= 95 and np.all(np.diff(bodies.timestamps) > 0)
        tracked = np.any([track.present for track in bodies.bodies.values()], axis=0)
        assert tracked.mean() > 0.7  # the field Kinect drops whole bodies for 0.2-0.7 s at times
        journal = read_journal(session.path(journal_name(entry.serial)))
        t_dev = np.array([f["timestamp_usec"] for f in journal.frames]) / 1e6
        t_host = np.array([f["host_time"] for f in journal.frames])
        # The replay releases each capture at its true session time: arrival ~ device time mapped.
        lag = t_host - rig.time_map(entry.name).to_session(t_dev)
        assert np.median(lag) == pytest.approx(0.0, abs=0.05) and lag.min() > -0.005
        np.testing.assert_array_equal(bodies.timestamps, t_dev)
    pano = session.pano()
    reader = PanoReader(session.path(pano.recording), session.path(pano.timestamps))
    assert 75 <= len(reader) <= 95 and (reader.width, reader.height) == (256, 128)
    assert _decodable_frames(session.path(pano.recording)) == len(reader)
    stamps = reader.timestamps
    assert np.all(np.diff(stamps.t_pano) > 0) and np.all(np.diff(stamps.t_host) > 0)
    latency = stamps.t_host - rig.time_map("pano").to_session(stamps.t_pano)
    assert 0.03 < np.median(latency) < 0.2  # the simulated camera's 60-100 ms transport latency
    assert stamps.t_host[0] < 0.2 and stamps.t_host[-1] <= summary["seconds"] + 0.05
    assert (out / "truth").is_dir()


def test_sigkill_at_a_random_moment_loses_at_most_a_second_and_stays_processable(tmp_path, capsys):
    # Killed at a random moment of the recording: the session has its calibration, truth and every
    # device file on disk, nothing is left in the temporary folder, and `process` reads it as it is
    # (the manifest is not rewritten) with a note that it was interrupted.
    kill_after = float(np.random.default_rng().uniform(1.0, 4.0))
    out, tmp = tmp_path / "rec", tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "omnimocap.apps.cli", "record", str(out), "--simulate",
                             "--seconds", "8", "--people", "1", "--kinects", "1", "--pano-width", "256",
                             "--min-free-gb", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path,
                            env={**os.environ, "TMPDIR": str(tmp)})
    journal_path = out / "bodies_000000000001.jsonl"
    try:
        for _ in range(1800):  # the simulation comes first; at most 3 minutes on a loaded machine
            last = _last_line(journal_path) if journal_path.is_file() else None
            if last is not None and last["host_time"] > kill_after:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.1)
        else:
            pytest.fail(f"the recorder did not get {kill_after:.2f} s into the recording")
    finally:
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert [p for p in tmp.rglob("*") if p.is_file()] == []  # (torch may leave an empty cache folder)
    journal = read_journal(journal_path)
    t_kill = killed_at - journal.header["session_clock_start_monotonic"]
    assert journal.frames[-1]["host_time"] >= t_kill - 1.0, kill_after
    stamps = read_pano_timestamps(out / PANO_FRAMES)
    frames_on_disk = _decodable_frames(out / "pano.mkv")
    assert frames_on_disk >= 20
    assert stamps.t_host[frames_on_disk - 1] >= t_kill - 1.0, kill_after  # the video on disk trails by < 1 s
    manifest = (out / "session.json").read_bytes()
    on_disk = Session.open(out)
    assert on_disk.manifest.status == "recording"
    kinect = on_disk.kinects()[0]
    assert kinect.recording == "kinect_000000000001.mkv"  # named as soon as it was created
    assert (on_disk.pano().recording, on_disk.pano().timestamps) == ("pano.mkv", PANO_FRAMES)
    assert Rig.load(out / "rig.json").time_maps and (out / "truth").is_dir()

    session, summary = recover_session(out)
    assert summary["recovered"] and not session.complete
    assert (out / RESERVE_FILE).is_file() and any(RESERVE_FILE in note for note in summary["notes"])
    assert session.kinects()[0].bodies == journal_path.name
    assert summary["devices"]["kinect_000000000001"]["recording_captures"] > 0
    bodies = read_bodies(session.path(session.kinects()[0].bodies))
    assert len(bodies) == sum(f["bodies"] is not None for f in journal.frames)
    assert summary["devices"]["pano"]["frames"] == frames_on_disk

    capsys.readouterr()
    assert main(["process", str(out), "--out", str(tmp_path / "result"), "--hands", "sim", "--quiet"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("omnimocap process: note:")]
    assert any("interrupted" in line for line in notes)
    report = json.loads((tmp_path / "result" / "report.json").read_text())
    assert report["session_complete"] is False and report["recovery"]["recovered"]
    assert (out / "session.json").read_bytes() == manifest  # the reader changed nothing
    assert not (out / "bodies_000000000001.json").exists()


def test_recovery_names_the_disk_reserve_a_killed_recorder_leaves(tmp_path, source_session):
    clock = SessionClock()
    kinect = replay_sources(source_session, clock, realtime=False)[0]
    out = tmp_path / "rec"
    recorder = Recorder(out, [kinect], RecordConfig(min_free_gb=0), clock)
    recorder.begin()
    kinect.start()
    for _ in range(10):
        recorder.push(kinect, kinect.read(1.0))
    try:
        # the recorder has not finalized: the session is as a killed recorder leaves it
        assert (out / RESERVE_FILE).stat().st_size == RESERVE_BYTES
        _, summary = recover_session(out)
        named = [note for note in summary["notes"] if RESERVE_FILE in note]
        assert len(named) == 1 and "not part of the session" in named[0] and "can be deleted" in named[0]
        assert (out / RESERVE_FILE).stat().st_size == RESERVE_BYTES  # named, not deleted: readers write nothing
        (out / RESERVE_FILE).unlink()
        _, summary = recover_session(out)
        assert summary["recovered"] and not any(RESERVE_FILE in note for note in summary["notes"])
    finally:
        recorder.end()
        kinect.stop()
    assert Session.open(out).complete and not (out / RESERVE_FILE).exists()


def test_refuses_to_start_without_disk_space(tmp_path, source_session, capsys):
    out = tmp_path / "rec"
    sources = replay_sources(source_session, SessionClock(), realtime=False)
    with pytest.raises(UserError, match="min-free-gb"):
        Recorder(out, sources, RecordConfig(min_free_gb=1.0), disk_free=lambda p: int(0.5 * GB)).run()
    assert not out.exists()
    rc = main(["record", str(out), "--pano-file", str(source_session / "pano.mkv"), "--min-free-gb", "1e9"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "GB free" in err and not out.exists()


def test_stops_cleanly_when_the_disk_fills(tmp_path, source_session):
    calls = []

    def disk_free(path):
        calls.append(path)
        return 10 * GB if len(calls) <= 2 else int(0.2 * GB)

    clock = SessionClock()
    out = tmp_path / "rec"
    result = Recorder(out, replay_sources(source_session, clock), RecordConfig(min_free_gb=1.0), clock, disk_free).run()
    assert result.stop_reason == "disk" and "GB free" in result.message
    session = Session.open(out)
    assert session.complete and "GB free" in session.manifest.notes
    assert 0.8 < result.seconds < 1.8  # the first check passed, the next (a second later) stopped it
    for entry in session.kinects():
        assert len(read_bodies(session.path(entry.bodies))) > 10


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_stops_cleanly_finalizes_and_says_so_in_one_line(tmp_path, source_session, capsys, monkeypatch):
    # The 360 writer hits a full disk after 10 frames; closing the video fails the same way.
    write = PanoWriter.write

    def write_until_full(self, *args, **kwargs):
        if self._count >= 10:
            _disk_full()
        write(self, *args, **kwargs)

    monkeypatch.setattr(PanoWriter, "write", write_until_full)
    monkeypatch.setattr(PanoWriter, "close", _disk_full)
    out = tmp_path / "rec"
    capsys.readouterr()
    rc = main(["record", str(out), "--pano-file", str(source_session / "pano.mkv"), "--min-free-gb", "0"])
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.strip()]
    assert rc == 0 and len(err) == 1 and "the disk holding" in err[0] and "is full" in err[0], err
    assert json.loads(captured.out)["stop_reason"] == "disk"
    session = Session.open(out)
    assert session.complete and session.pano().status == "complete"
    assert "No space left on device" in session.pano().notes and "No space left on device" in session.manifest.notes
    assert len(read_pano_timestamps(out / PANO_FRAMES).t_pano) == 10
    assert not (out / ".omnimocap-reserve").exists()


def test_a_full_disk_keeps_the_body_journal_as_the_body_tracking(tmp_path, source_session, monkeypatch):
    from omnimocap.capture import bodies

    clock = SessionClock()
    kinect = replay_sources(source_session, clock)[0]
    monkeypatch.setattr(bodies, "atomic_write_chunks", _disk_full)  # no room for bodies_<serial>.json
    out = tmp_path / "rec"
    result = Recorder(out, [kinect], RecordConfig(seconds=1.0, min_free_gb=0), clock).run()
    assert result.stop_reason == "duration"
    entry = Session.open(out).kinects()[0]
    assert entry.bodies == journal_name(kinect.serial) and "not written" in entry.notes
    assert not (out / bodies_name(kinect.serial)).exists()
    assert len(read_bodies(out / entry.bodies)) == result.frames[entry.name] > 20


class _SilentSource(Source[KinectFrame]):
    kind = "kinect"

    def _connect(self):
        self.info.serial = "silent"

    def _read(self, timeout):
        time.sleep(timeout)
        return None


def test_a_source_that_disconnects_ends_its_stream_only(tmp_path, source_session):
    # One Kinect's recording stops after 0.5 s, another never delivers; the rest go on to the end.
    short = tmp_path / "short"
    shutil.copytree(source_session, short)
    master = Session.open(short).kinects()[0]
    full = read_bodies(short / master.bodies)
    keep = full.timestamps < full.timestamps[0] + 0.5
    write_bodies(short / master.bodies, BodyRecording(full.timestamps[keep], full.frame_ids[keep],
                                                      {i: type(t)(t.positions[keep], t.orientations[keep], t.confidences[keep])
                                                       for i, t in full.bodies.items()}))
    clock = SessionClock()
    sources = replay_sources(short, clock) + [_SilentSource("silent", clock)]
    out = tmp_path / "rec"
    result = Recorder(out, sources, RecordConfig(seconds=1.5, disconnect_timeout_s=0.6, min_free_gb=0), clock).run()
    assert result.stop_reason == "duration" and sorted(result.disconnected) == [kinect_name(master.serial), "kinect_silent"]
    session = Session.open(out)
    status = {d.name: d.status for d in session.manifest.devices}
    assert status == {kinect_name(master.serial): "disconnected", "kinect_000000000002": "complete",
                      "kinect_silent": "disconnected", "pano": "complete"}
    assert session.complete
    notes = session.manifest.notes
    assert f"kinect_{master.serial} disconnected at" in notes and "no frame for 0.6 s" in notes
    assert len(read_bodies(out / master.bodies)) == keep.sum()
    # 1.5 s of the other Kinect (45 frames), give or take the few frames a loaded machine stops late
    assert 40 <= len(read_bodies(out / "bodies_000000000002.json")) <= 49
    silent = next(d for d in session.manifest.devices if d.serial == "silent")
    assert silent.bodies is None and "disconnected at" in silent.notes


def test_a_looped_replay_streams_on_past_its_first_pass(tmp_path, source_session):
    """Without a rig each stream is paced from its own first frame, so a pass lasts the longest
    stream's own span: the 360 camera's clock starts far from the Kinects' device clocks, and their
    times are not compared."""
    assert replay_loop(source_session).period_s < 2.2
    clock = SessionClock()
    result = Recorder(tmp_path / "rec", replay_sources(source_session, clock, loop=True),
                      RecordConfig(seconds=3.0, min_free_gb=0), clock).run()
    assert result.stop_reason == "duration" and not result.disconnected
    # 3 s at 30 fps, past the 2 s pass, give or take the frames a loaded machine delivers late
    assert all(n >= 70 for n in result.frames.values()), result.frames


def test_ctrl_c_stops_cleanly_and_marks_complete(tmp_path, source_session):
    clock = SessionClock()
    # looped: the streams cannot end before the interrupt, however late it comes (the duration
    # only bounds the test)
    recorder = Recorder(tmp_path / "rec", replay_sources(source_session, clock, loop=True),
                        RecordConfig(min_free_gb=0, seconds=60.0), clock)
    done = threading.Event()

    def press_ctrl_c():
        # once frames are written, and again while run() goes on: Python drops a KeyboardInterrupt
        # that lands in a garbage collector's callback (it only prints "Exception ignored")
        while not done.wait(0.5):
            if sum(recorder.frame_counts().values()) >= 10:
                _thread.interrupt_main()

    presser = threading.Thread(target=press_ctrl_c, daemon=True)
    # Python's Ctrl-C handler, which a shell that starts the tests in the background replaces by
    # "ignore" (an ignored SIGINT makes interrupt_main do nothing)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    presser.start()
    try:
        result = recorder.run()
    finally:
        done.set()
        try:
            presser.join()
            time.sleep(0.05)
        except KeyboardInterrupt:
            pass  # a press sent just as run() returned
        signal.signal(signal.SIGINT, previous)
    assert result.stop_reason == "interrupted"
    session = Session.open(tmp_path / "rec")
    assert session.complete and all(d.status == "complete" for d in session.manifest.devices)
    pano = session.pano()
    assert len(PanoReader(session.path(pano.recording), session.path(pano.timestamps))) >= 10


def test_pano_file_with_no_frames_is_one_clear_line(tmp_path, capsys):
    empty = tmp_path / "empty.mkv"
    PanoWriter(empty, tmp_path / "empty.csv", 64, 32).close()
    rc = main(["record", str(tmp_path / "rec"), "--pano-file", str(empty), "--min-free-gb", "0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and str(empty) in err and "frames" in err
    assert not (tmp_path / "rec").exists()
    rc = main(["record", str(tmp_path / "rec"), "--simulate", "--kinect", "0"])
    assert rc == 2 and "--simulate" in capsys.readouterr().err


def test_journal_with_a_torn_last_line_converts_what_is_complete(tmp_path, source_session):
    clock = SessionClock()
    kinect = replay_sources(source_session, clock, realtime=False)[0]
    out = tmp_path / "rec"
    Recorder(out, [kinect], RecordConfig(min_free_gb=0), clock).run()
    journal = out / journal_name(kinect.serial)
    data = journal.read_bytes()
    cut = data[: data.rstrip(b"\n").rfind(b"\n") + 40]  # the last line cut after 40 bytes
    journal.write_bytes(cut)
    read = read_journal(journal)
    assert read.torn and len(read.frames) == data.count(b"\n") - 2
    n = journal_to_bodies(journal, tmp_path / "bodies.json")
    original = read_bodies(source_session / bodies_name(kinect.serial))
    bodies = read_bodies(tmp_path / "bodies.json")
    assert n == len(bodies) == len(original) - 1
    assert bodies.bodies.keys() == original.bodies.keys()
    for body_id in original.bodies:
        np.testing.assert_allclose(bodies.bodies[body_id].positions, original.bodies[body_id].positions[:-1],
                                   atol=1e-5, equal_nan=True)
    journal.write_bytes(b'{"format": "something else"}\n')
    with pytest.raises(UserError, match="not an omnimocap body journal"):
        read_journal(journal)


def test_live_pano_file_is_readable_while_it_grows(tmp_path):
    """A copy of the file taken mid-recording decodes up to within a second of stream time."""
    fps = 30
    writer = PanoWriter(tmp_path / "p.mkv", tmp_path / "p.csv", 128, 64, fps=fps, live=True)
    rng = np.random.default_rng(0)
    for i in range(3 * fps):
        writer.write(rng.integers(0, 255, (64, 128, 3), dtype=np.uint8), i / fps, i / fps)
        if i == 2 * fps:
            shutil.copy(tmp_path / "p.mkv", tmp_path / "copy.mkv")
    writer.close()
    assert _decodable_frames(tmp_path / "copy.mkv") >= 2 * fps + 1 - fps
    plain = PanoWriter(tmp_path / "plain.mkv", tmp_path / "plain.csv", 128, 64, fps)
    for i in range(2 * fps + 1):
        plain.write(rng.integers(0, 255, (64, 128, 3), dtype=np.uint8), i / fps)
    shutil.copy(tmp_path / "plain.mkv", tmp_path / "plain_copy.mkv")
    plain.close()
    assert _decodable_frames(tmp_path / "plain_copy.mkv") == 0  # why the live options exist


def test_kinect_images_go_into_a_kinect_recording(tmp_path, shared):
    from omnimocap.capture.kinect_live import KinectFileSource
    from omnimocap.capture.kinect_mkv import KinectRecording

    sample = shared("data", "kinect", "recording.mkv")
    clock = SessionClock()
    source = KinectFileSource("sample", recording_path=sample, fps=5, clock=clock, realtime=False)
    Recorder(tmp_path / "rec", [source], RecordConfig(min_free_gb=0), clock).run()
    entry = Session.open(tmp_path / "rec").kinects()[0]
    written = KinectRecording(tmp_path / "rec" / entry.recording)
    original = KinectRecording(sample)
    (a,), (b,) = list(written.captures()), list(original.captures())
    assert a.depth_timestamp == b.depth_timestamp == pytest.approx(0.800222)
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.ir, b.ir)
    assert written.calibration_json == original.calibration_json and written.color_mode == "MJPG_720P"
