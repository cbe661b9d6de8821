"""k4abt offline_processor JSON: round trip, the official format without confidences, repairs and
their counts, malformed files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from omnimocap.capture import session as session_module
from omnimocap.capture.bodies import BodyRecording, BodyTrack, read_bodies, write_bodies
from omnimocap.data.skeletons import KINECT_CONFIDENCE_MEDIUM, KINECT_CONFIDENCE_NONE, KINECT_INDEX, KINECT_JOINTS
from omnimocap.errors import InputError


def _recording(F: int = 4) -> BodyRecording:
    rng = np.random.default_rng(1)
    tracks = {}
    for body_id in (3, 7):
        pos = rng.normal([0, 0, 2.5], 0.4, (F, 32, 3))
        q = rng.normal(size=(F, 32, 4))
        q /= np.linalg.norm(q, axis=-1, keepdims=True)
        conf = rng.integers(1, 3, (F, 32))
        tracks[body_id] = BodyTrack(pos, q, conf)
    # Body 7 leaves in the last frame; body 3 loses its left wrist in frame 1.
    tracks[7].positions[-1] = np.nan
    tracks[7].orientations[-1] = np.nan
    tracks[7].confidences[-1] = KINECT_CONFIDENCE_NONE
    wrist = KINECT_INDEX["WRIST_LEFT"]
    tracks[3].positions[1, wrist] = np.nan
    tracks[3].orientations[1, wrist] = np.nan
    tracks[3].confidences[1, wrist] = KINECT_CONFIDENCE_NONE
    return BodyRecording(timestamps=0.800222 + np.arange(F) / 30, frame_ids=np.arange(F), bodies=tracks,
                         source_file="kinect_000111222333.mkv")


def test_round_trip(tmp_path):
    rec = _recording()
    path = tmp_path / "bodies_000111222333.json"
    write_bodies(path, rec)
    doc = json.loads(path.read_text())
    assert doc["joint_names"] == list(KINECT_JOINTS) and len(doc["bone_list"]) == 31
    assert [f["num_bodies"] for f in doc["frames"]] == [2, 2, 2, 1]
    assert doc["frames"][0]["timestamp_usec"] == 800222
    # Millimetres in the file.
    np.testing.assert_allclose(doc["frames"][0]["bodies"][0]["joint_positions"][0], rec.bodies[3].positions[0, 0] * 1000)

    back = read_bodies(path)
    assert list(back.bodies) == [3, 7]
    np.testing.assert_array_equal(np.round(back.timestamps * 1e6), np.round(rec.timestamps * 1e6))
    np.testing.assert_array_equal(back.frame_ids, rec.frame_ids)
    for body_id, track in rec.bodies.items():
        got = back.bodies[body_id]
        np.testing.assert_allclose(got.positions, track.positions, atol=1e-12, equal_nan=True)
        np.testing.assert_allclose(got.orientations, track.orientations, atol=1e-12, equal_nan=True)
        np.testing.assert_array_equal(got.confidences, track.confidences)
    assert back.has_confidences
    assert back.bodies[7].present.tolist() == [True, True, True, False]
    assert back.stats.nan_joints == 1  # the missing wrist, stored as null
    assert back.source_file == "kinect_000111222333.mkv"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def _official_frame(t_us, frame_id, body_ids, z=2000.0):
    return {"timestamp_usec": t_us, "frame_id": frame_id, "num_bodies": len(body_ids), "bodies": [
        {"body_id": b, "joint_positions": [[10.0 * j, -5.0 * j, z + b] for j in range(32)],
         "joint_orientations": [[1.0, 0.0, 0.0, 0.0]] * 32} for b in body_ids]}


def test_official_format_and_repairs(tmp_path):
    frames = [
        _official_frame(100_000, 0, [1, 2]),
        _official_frame(133_333, 1, [2, 1]),     # ids reordered
        _official_frame(166_667, 3, []),         # nobody
        _official_frame(200_000, 4, [1]),
    ]
    text = json.dumps({"k4abt_sdk_version": "1.1.2", "source_file": "x.mkv", "joint_names": list(KINECT_JOINTS),
                       "bone_list": [], "frames": frames})
    # offline_processor writes NaN for joints it could not compute.
    text = text.replace("[40.0, -20.0, 2001.0]", "[NaN, NaN, NaN]", 1)
    path = tmp_path / "bodies.json"
    path.write_text(text)
    rec = read_bodies(path)
    assert rec.frame_ids.tolist() == [0, 1, 3, 4]
    np.testing.assert_allclose(rec.timestamps, [0.1, 0.133333, 0.166667, 0.2])
    s = rec.stats
    assert (s.frames, s.nan_joints, s.frames_without_bodies, s.frames_with_reordered_ids) == (4, 1, 1, 1)
    assert not rec.has_confidences
    body1 = rec.bodies[1]
    assert np.isnan(body1.positions[0, 4]).all() and body1.confidences[0, 4] == KINECT_CONFIDENCE_NONE
    assert body1.confidences[0, 5] == KINECT_CONFIDENCE_MEDIUM
    np.testing.assert_allclose(body1.positions[0, 5], [0.05, -0.025, 2.001])  # metres
    assert body1.present.tolist() == [True, True, False, True]
    assert rec.bodies[2].present.tolist() == [True, True, False, False]


@pytest.mark.parametrize("text, match", [
    ('{"frames": [{"timestamp_usec": 1, "frame_id": 0, "bodies": [{"body_id": 1, "joint_pos', "truncated or malformed JSON"),
    ('{"frames": [{"timestamp_usec": 1, "bodies": [{"body_id": 1, "joint_positions": [[0, 0, 0]], '
     '"joint_orientations": [[1, 0, 0, 0]]}]}]}', "1 joints, expected 32"),
    ('{"joint_names": ["HEAD"], "frames": []}', "joint_names"),
    ('{"no_frames": []}', "not a k4abt body tracking file"),
])
def test_malformed_files_raise_one_line(tmp_path, text, match):
    path = tmp_path / "bodies_bad.json"
    path.write_text(text)
    with pytest.raises(InputError, match=match) as err:
        read_bodies(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "bodies.json"
    write_bodies(path, _recording())
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(session_module.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_bodies(path, _recording(F=2))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["bodies.json"]


def test_body_track_checks_shapes():
    with pytest.raises(ValueError, match="orientations"):
        BodyTrack(np.zeros((2, 32, 3)), np.zeros((2, 32, 3)), np.zeros((2, 32)))
    with pytest.raises(ValueError, match="body 1 has 2 frames"):
        BodyRecording(np.zeros(3), np.arange(3), {1: BodyTrack.empty(2)})
