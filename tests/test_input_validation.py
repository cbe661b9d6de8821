"""Every input is validated where it enters: clocks that go back, ids out of range, names that leave
the session, counts that disagree, impossible options. Each is refused in one line, or, where part
of the session is still usable, processed with a note in the report that is also printed. Files
written through temporary files follow the umask."""

from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np
import pytest

from omnimocap.apps.cli import main
from omnimocap.capture.rig import Rig, TimeMap
from omnimocap.capture.bodies import read_bodies, write_bodies
from omnimocap.capture.pano import read_pano_timestamps
from omnimocap.capture.session import PANO_FRAMES, Session
from omnimocap.errors import InputError
from tests.tools.cli import one_line_error


def _simulate(path, *extra: str) -> None:
    assert main(["simulate", str(path), "--people", "1", "--kinects", "1", "--pano-width", "256", "--seed", "5",
                 *extra]) == 0


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """A 2.5 s simulated session: body tracking JSON, a 360 video, no Kinect video."""
    root = tmp_path_factory.mktemp("valid") / "s"
    _simulate(root, "--seconds", "2.5", "--no-kinect-video")
    return root


@pytest.fixture
def copy(session, tmp_path):
    return shutil.copytree(session, tmp_path / "s")


def _process(s, out, capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(["process", str(s), "--out", str(out), "--hands", "sim", "--quiet"])
    return code, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def _process_refuses(capsys, s, out, *expected: str) -> str:
    manifest = (s / "session.json").read_bytes()
    line = one_line_error(capsys, ["process", str(s), "--out", str(out), "--hands", "sim", "--quiet"])
    assert all(e in line for e in expected), line
    assert not out.exists() or not any(out.iterdir())
    assert (s / "session.json").read_bytes() == manifest  # a reader never changes its input
    return line


def _process_notes(capsys, s, out, expected: str) -> list[str]:
    """Process succeeds, and the loss is a note both in report.json and printed."""
    code, err = _process(s, out, capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    notes = [n for n in report["notes"] if expected in n]
    assert notes, report["notes"]
    assert any(line.startswith("omnimocap process: note:") and expected in line for line in err), err
    return notes


def _bodies(s):
    path = next(s.glob("bodies_*.json"))
    return path, json.loads(path.read_text())


# --- device clocks only move forward ---------------------------------------------------------------
def test_body_frames_in_reverse_order_are_refused(copy, tmp_path, capsys):
    path, doc = _bodies(copy)
    doc["frames"].reverse()
    path.write_text(json.dumps(doc))
    _process_refuses(capsys, copy, tmp_path / "out", path.name, "out of order")


def test_repeated_body_timestamps_are_refused(copy, tmp_path, capsys):
    path, doc = _bodies(copy)
    doc["frames"][3]["timestamp_usec"] = doc["frames"][2]["timestamp_usec"]
    path.write_text(json.dumps(doc))
    _process_refuses(capsys, copy, tmp_path / "out", path.name, "frame 3", "does not increase")


def test_a_time_map_running_backwards_is_refused_when_read_and_when_written(copy, tmp_path, capsys):
    rig = json.loads((copy / "rig.json").read_text())
    rig["time_maps"]["pano"]["a"] = -0.9998
    (copy / "rig.json").write_text(json.dumps(rig))
    _process_refuses(capsys, copy, tmp_path / "out", "rig.json", "rate a = -0.9998")
    with pytest.raises(InputError, match="not positive"):
        Rig(time_maps={"pano": TimeMap(0.0, 1.0)}).save(tmp_path / "rig.json")
    assert not (tmp_path / "rig.json").exists()


# --- ids and names in range ------------------------------------------------------------------------
@pytest.mark.parametrize("body_id", [2 ** 64, -1, 2 ** 32, 1.5])
def test_body_ids_outside_uint32_are_refused(copy, tmp_path, capsys, body_id):
    path, doc = _bodies(copy)
    next(f for f in doc["frames"] if f["bodies"])["bodies"][0]["body_id"] = body_id
    path.write_text(json.dumps(doc))
    _process_refuses(capsys, copy, tmp_path / "out", path.name, "body_id")


@pytest.mark.parametrize("field, name", [("bodies", "../../x"), ("bodies", "/etc/passwd"),
                                         ("timestamps", "../pano_frames.csv"), ("recording", "a/../../pano.mkv")])
def test_manifest_names_outside_the_session_are_refused(copy, tmp_path, capsys, field, name):
    manifest = json.loads((copy / "session.json").read_text())
    device = next(d for d in manifest["devices"] if d[field] is not None)
    device[field] = name
    (copy / "session.json").write_text(json.dumps(manifest))
    _process_refuses(capsys, copy, tmp_path / "out", "session.json", "inside the session folder")


@pytest.mark.parametrize("serial", ["/dev/video0", "rtsp://192.168.42.1/live"])
def test_a_360_camera_named_by_device_path_or_url_is_accepted(copy, serial):
    manifest = json.loads((copy / "session.json").read_text())
    next(d for d in manifest["devices"] if d["kind"] == "pano")["serial"] = serial
    (copy / "session.json").write_text(json.dumps(manifest))
    assert Session.open(copy).pano().serial == serial


def test_an_empty_leftover_of_a_failed_simulation_is_refused_untouched(tmp_path, capsys):
    Session.create(tmp_path / "s", simulated=True)  # what a simulation that failed at once leaves
    line = _process_refuses(capsys, tmp_path / "s", tmp_path / "out", "lists no device")
    assert Session.open(tmp_path / "s").manifest.status == "recording", line


# --- counts that agree ----------------------------------------------------------------------------
def _rewrite_pano_csv(s, rows: list[str]) -> None:
    (s / PANO_FRAMES).write_text("index,t_pano,t_host\n" + "".join(r + "\n" for r in rows))


def _pano_rows(s) -> list[str]:
    return (s / PANO_FRAMES).read_text().splitlines()[1:]


def test_nan_rows_in_the_pano_timestamps_are_refused(copy, tmp_path, capsys):
    rows = _pano_rows(copy)
    rows[5] = "5,nan,"
    _rewrite_pano_csv(copy, rows)
    _process_refuses(capsys, copy, tmp_path / "out", PANO_FRAMES, "frame 5 has no valid time")
    rows[5] = "5,,"
    _rewrite_pano_csv(copy, rows)
    _process_refuses(capsys, copy, tmp_path / "out2", PANO_FRAMES, "line 7 is malformed")


def test_pano_timestamps_shorter_than_the_video_are_a_note(copy, tmp_path, capsys):
    rows = _pano_rows(copy)
    _rewrite_pano_csv(copy, rows[: len(rows) // 2])
    notes = _process_notes(capsys, copy, tmp_path / "out", f"lists {len(rows) // 2}")
    assert f"holds {len(rows)} frames" in notes[0]


def test_a_cut_off_pano_video_is_a_note(copy, tmp_path, capsys):
    video = copy / "pano.mkv"
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    notes = _process_notes(capsys, copy, tmp_path / "out", "(cut off)")
    assert f"lists {len(_pano_rows(copy))} frames" in notes[0]


def _shift_kinect(s, seconds: float) -> None:
    path, doc = _bodies(s)
    for frame in doc["frames"]:
        frame["timestamp_usec"] += int(round(seconds * 1e6))
    path.write_text(json.dumps(doc))


def test_kinect_and_pano_that_do_not_overlap_are_refused(copy, tmp_path, capsys):
    _shift_kinect(copy, -10.0)
    _process_refuses(capsys, copy, tmp_path / "out", "rig.json", "do not overlap")


def test_kinect_covering_part_of_the_pano_stream_is_a_note(copy, tmp_path, capsys):
    _shift_kinect(copy, -1.3)
    notes = _process_notes(capsys, copy, tmp_path / "out", "lie within the Kinect body tracking")
    assert "no hand is estimated in the others" in notes[0]


# --- options ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("seconds", ["nan", "inf", "0", "-1"])
def test_simulate_seconds_must_be_a_positive_length(tmp_path, capsys, seconds):
    line = one_line_error(capsys, ["simulate", str(tmp_path / "s"), "--seconds", seconds])
    assert "--seconds" in line
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("seconds", ["nan", "inf", "-1"])
def test_record_seconds_must_be_a_positive_length(tmp_path, capsys, seconds):
    line = one_line_error(capsys, ["record", str(tmp_path / "s"), "--simulate", "--seconds", seconds])
    assert "--seconds" in line and not (tmp_path / "s").exists()


@pytest.mark.parametrize("verb", ["sync", "calibrate"])
@pytest.mark.parametrize("stride", ["0", "-5"])
def test_stride_must_be_a_frame_step(session, capsys, verb, stride):
    line = one_line_error(capsys, [verb, str(session), "--stride", stride])
    assert f"--stride {stride}" in line


# --- sync --flash ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flash_session(tmp_path_factory):
    """A 2.5 s session with Kinect video and a flash early on, at 0.4 s."""
    root = tmp_path_factory.mktemp("flashvalid") / "s"
    _simulate(root, "--seconds", "2.5", "--flash", "0.4")
    return root


def _sync_flash(capsys, s) -> tuple[dict, list[str]]:
    capsys.readouterr()
    assert main(["sync", str(s), "--flash", "--quiet"]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), [ln for ln in captured.err.splitlines() if "warning" in ln]


def test_sync_flash_refuses_a_host_clock_running_backwards(flash_session, tmp_path, capsys):
    s = shutil.copytree(flash_session, tmp_path / "s")
    stamps = read_pano_timestamps(s / PANO_FRAMES)
    _rewrite_pano_csv(s, [f"{i},{tp:.6f},{th:.6f}" for i, (tp, th) in enumerate(zip(stamps.t_pano, stamps.t_host[::-1]))])
    rig = (s / "rig.json").read_bytes()
    line = one_line_error(capsys, ["sync", str(s), "--flash", "--quiet"])
    assert PANO_FRAMES in line and "backwards" in line
    assert (s / "rig.json").read_bytes() == rig


def test_sync_flash_warns_of_a_cut_off_pano_video(flash_session, tmp_path, capsys):
    s = shutil.copytree(flash_session, tmp_path / "s")
    video = s / "pano.mkv"
    video.write_bytes(video.read_bytes()[: int(video.stat().st_size * 0.4)])
    result, err = _sync_flash(capsys, s)
    assert len(result["warnings"]) == 1 and "cut off" in result["warnings"][0]
    assert err == [f"omnimocap sync: warning: {result['warnings'][0]}"]
    assert Rig.load(s / "rig.json").residuals["pano_sync"]["warnings"] == result["warnings"]


def test_sync_flash_warns_of_a_cut_off_kinect_recording(flash_session, tmp_path, capsys):
    s = shutil.copytree(flash_session, tmp_path / "s")
    mkv = next(s.glob("kinect_*.mkv"))
    mkv.write_bytes(mkv.read_bytes()[: mkv.stat().st_size // 2])
    result, err = _sync_flash(capsys, s)
    assert len(result["warnings"]) == 1 and mkv.name in result["warnings"][0] and "cut off" in result["warnings"][0]
    assert err == [f"omnimocap sync: warning: {result['warnings'][0]}"]


# --- permissions -----------------------------------------------------------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_files_written_through_temporary_files_follow_the_umask(tmp_path, session, umask, mode):
    previous = os.umask(umask)
    try:
        s = Session.create(tmp_path / "s")
        write_bodies(s.path("bodies_x.json"), read_bodies(next(session.glob("bodies_*.json"))))
        Rig(time_maps={"pano": TimeMap()}).save(s.rig_path)
    finally:
        os.umask(previous)
    for name in ("session.json", "bodies_x.json", "rig.json"):
        assert stat.S_IMODE((s.root / name).stat().st_mode) == mode, name
    assert sorted(p.name for p in s.root.iterdir()) == ["bodies_x.json", "rig.json", "session.json"]
