"""`omnimocap track`: the SDK playback binding against the real libk4arecord (from the pyk4a-bundle
wheel in .venv-k4a, when scripts/setup.sh made it), and the missing-library paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from omnimocap.apps.cli import main
from omnimocap.capture.k4a_playback import Playback, bundled_library, load_k4arecord
from omnimocap.capture.session import DeviceEntry, Session
from omnimocap.errors import DeviceError

REPO = Path(__file__).resolve().parents[1]


def _libk4arecord():
    lib = bundled_library(REPO / ".venv-k4a" / "lib" / "python3.11" / "site-packages")
    if lib is None:
        pytest.skip("no libk4arecord: scripts/setup.sh installs pyk4a-bundle into .venv-k4a")
    return load_k4arecord([lib])


def test_playback_reads_the_sample_with_the_sdk(shared):
    lib = _libk4arecord()
    with Playback(shared("data", "kinect", "recording.mkv"), lib=lib) as playback:
        calibration = playback.calibration()
        assert abs(calibration.color_camera_calibration.intrinsics.parameters[2] - 611.7953) < 1e-3  # fx
        assert sum(1 for _ in playback.captures()) == 1


def test_playback_of_a_written_recording(tmp_path):
    from tests.test_kinect_writer import _write

    lib = _libk4arecord()
    path = tmp_path / "kinect_000111222333.mkv"
    _write(path, n=3)
    with Playback(path, lib=lib) as playback:
        assert sum(1 for _ in playback.captures()) == 3
        assert playback.length_s > 0


def test_missing_libraries_are_named():
    with pytest.raises(DeviceError, match="libk4arecord"):
        load_k4arecord(["/nonexistent/libk4arecord.so"])


def test_track_without_body_tracking_sdk_says_what_to_install(tmp_path, capsys, monkeypatch):
    from tests.test_kinect_writer import _write

    monkeypatch.setenv("OMNIMOCAP_K4ABT_LIBRARY", "/nonexistent/libk4abt.so")
    session = Session.create(tmp_path / "s")
    _write(tmp_path / "s" / "kinect_000111222333.mkv", n=2)
    session.add_device(DeviceEntry(kind="kinect", serial="000111222333", recording="kinect_000111222333.mkv"))
    lib = bundled_library(REPO / ".venv-k4a" / "lib" / "python3.11" / "site-packages")
    if lib:
        monkeypatch.setenv("OMNIMOCAP_K4ARECORD_LIBRARY", lib)
    assert main(["track", str(tmp_path / "s"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert ("libk4abt" in err or "libk4arecord" in err) and "Traceback" not in err
    assert Session.open(tmp_path / "s").kinects()[0].bodies is None


def test_track_session_tracks_untracked_recordings_and_saves_the_manifest(tmp_path, capsys, monkeypatch):
    from omnimocap.capture import k4abt
    from tests.tools.cli import one_line_error

    session = Session.create(tmp_path / "s")
    for serial, bodies in (("000111222333", None), ("000444555666", "bodies_000444555666.json")):
        session.add_device(DeviceEntry(kind="kinect", serial=serial, recording=f"kinect_{serial}.mkv", bodies=bodies))
    tracked = []
    monkeypatch.setattr(k4abt, "track_recording", lambda mkv, json_path, **kw: tracked.append((mkv.name, kw)))
    assert main(["track", str(tmp_path / "s"), "--cpu", "--quiet"]) == 0
    assert tracked == [("kinect_000111222333.mkv", {"cpu": True, "progress": False})]
    assert "kinect_000111222333.mkv -> bodies_000111222333.json" in capsys.readouterr().err
    assert [d.bodies for d in Session.open(tmp_path / "s").kinects()] == ["bodies_000111222333.json",
                                                                          "bodies_000444555666.json"]
    assert "nothing to track" in one_line_error(capsys, ["track", str(tmp_path / "s")])
    tracked.clear()
    assert main(["track", str(tmp_path / "s"), "--overwrite", "--quiet"]) == 0
    assert [name for name, _ in tracked] == ["kinect_000111222333.mkv", "kinect_000444555666.mkv"]
