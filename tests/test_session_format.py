"""Session manifest, rig file and pano stream: atomic writes, validation, clear errors."""

import json

import numpy as np
import pytest

from omnimocap.capture.rig import Rig, TimeMap
from omnimocap.capture.pano import PanoReader, PanoWriter, read_pano_timestamps
from omnimocap.capture.session import DeviceEntry, PANO_FRAMES, Session
from omnimocap.errors import InputError


def test_manifest_round_trip_and_status(tmp_path):
    s = Session.create(tmp_path / "s", simulated=True)
    s.add_device(DeviceEntry(kind="kinect", serial="000123", role="master", bodies="bodies_000123.json"))
    s.add_device(DeviceEntry(kind="pano", serial="cam", recording="pano.mkv", timestamps=PANO_FRAMES,
                             width=64, height=32))
    again = Session.open(tmp_path / "s")
    assert not again.complete and again.manifest.simulated
    assert [d.name for d in again.manifest.devices] == ["kinect_000123", "pano"]
    again.mark_complete()
    assert Session.open(tmp_path / "s").complete
    assert not list((tmp_path / "s").glob(".*.tmp"))  # atomic writes leave no temp files


def test_create_refuses_non_empty_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        Session.create(tmp_path / "x")
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("content,match", [
    (None, "not found"),
    ('{"format": "omnimocap-session", "devices": [', "not valid JSON"),
    ('{"hello": 1}', "not an omnimocap session"),
    ('{"format": "omnimocap-session", "devices": [{"kind": "kinect"}]}', "malformed device"),
])
def test_bad_manifest_gives_one_clear_line(tmp_path, content, match):
    if content is not None:
        (tmp_path / "session.json").write_text(content)
    with pytest.raises(InputError, match=match) as info:
        Session.open(tmp_path)
    assert "\n" not in str(info.value) and "session.json" in str(info.value)


def test_rig_round_trip_and_validation(tmp_path):
    T = np.eye(4)
    T[:3, 3] = [1, 2, 3]
    rig = Rig({"pano": T}, {"pano": TimeMap(1.0003, -2.5, 0.4)}, method="board")
    rig.save(tmp_path / "rig.json")
    back = Rig.load(tmp_path / "rig.json")
    assert np.allclose(back.pose("pano"), T) and back.time_map("pano").a == 1.0003
    assert np.isclose(back.time_map("pano").to_sensor(back.time_map("pano").to_session(7.0)), 7.0)
    bad = json.loads((tmp_path / "rig.json").read_text())
    bad["sensors"]["pano"]["T_world_sensor"][0][0] = 3.0
    (tmp_path / "rig.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match="not a rotation"):
        Rig.load(tmp_path / "rig.json")
    with pytest.raises(InputError, match="calibrate"):
        back.pose("kinect_1")


def test_pano_stream_round_trip_and_truncated_csv(tmp_path):
    w = PanoWriter(tmp_path / "pano.mkv", tmp_path / PANO_FRAMES, 64, 32)
    for i in range(5):
        w.write(np.full((32, 64, 3), 40 * i, np.uint8), t_pano=10 + i / 30, t_host=None if i == 2 else 3 + i / 30)
    w.close()
    r = PanoReader(tmp_path / "pano.mkv", tmp_path / PANO_FRAMES)
    assert len(r) == 5 and (r.width, r.height) == (64, 32)
    frames = list(r.frames())
    assert [i for i, _ in frames] == [0, 1, 2, 3, 4]
    assert abs(float(frames[3][1].mean()) - 120) < 4
    ts = read_pano_timestamps(tmp_path / PANO_FRAMES)
    assert np.isnan(ts.t_host[2]) and np.allclose(ts.t_pano, 10 + np.arange(5) / 30, atol=1e-6)
    text = (tmp_path / PANO_FRAMES).read_text()
    (tmp_path / "cut.csv").write_text(text[: text.rindex("\n", 0, len(text) - 1) + 5])  # a torn last row
    assert len(read_pano_timestamps(tmp_path / "cut.csv").t_pano) == 4


def test_empty_pano_stream_is_an_input_error(tmp_path):
    (tmp_path / PANO_FRAMES).write_text("index,t_pano,t_host\n")
    with pytest.raises(InputError, match="no frames"):
        read_pano_timestamps(tmp_path / PANO_FRAMES)


def test_built_file_and_sensor_names_come_from_the_session_module(tmp_path):
    from omnimocap.capture.session import (
        PANO_FRAMES, PANO_VIDEO, bodies_name, journal_name, kinect_name, kinect_recording_name,
    )

    assert kinect_name("000123") == "kinect_000123" == DeviceEntry(kind="kinect", serial="000123").name
    assert kinect_recording_name("000123") == "kinect_000123.mkv"
    assert bodies_name("000123") == "bodies_000123.json" and journal_name("000123") == "bodies_000123.jsonl"
    s = Session.create(tmp_path / "s")
    s.add_device(DeviceEntry(kind="pano", serial="cam"))
    assert s.pano_video_path() == tmp_path / "s" / PANO_VIDEO and s.pano_frames_path() == tmp_path / "s" / PANO_FRAMES
    named = DeviceEntry(kind="pano", serial="cam", recording="other.mkv", timestamps="other.csv")
    assert s.pano_video_path(named).name == "other.mkv" and s.pano_frames_path(named).name == "other.csv"
