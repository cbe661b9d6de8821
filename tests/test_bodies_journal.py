"""A recorder's body journal converted to k4abt JSON in one streamed pass: the same bytes as reading
the journal whole and writing it with write_bodies, read back equal, malformed lines refused."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from omnimocap.capture.bodies import (
    JOURNAL_FORMAT,
    NUM_JOINTS,
    read_bodies,
    read_journal_bodies,
    write_bodies,
    write_journal_bodies,
)
from omnimocap.capture.record_streams import journal_to_bodies
from omnimocap.errors import InputError

HEADER = {"format": JOURNAL_FORMAT, "version": 1, "serial": "000000000001", "source_file": "kinect_000000000001.mkv",
          "k4abt_sdk_version": "1.1.2", "session_clock_start_monotonic": 1234.5}


def _body(rng, body_id: int, confidences: bool = True, missing=(), nan_orientation=(), all_missing=False) -> dict:
    positions = [[round(float(v), 2) for v in rng.normal(0, 700, 3)] for _ in range(NUM_JOINTS)]
    orientations = [[round(float(v), 6) for v in rng.normal(0, 1, 4)] for _ in range(NUM_JOINTS)]
    for j in range(NUM_JOINTS) if all_missing else missing:
        positions[j] = None
    for j in nan_orientation:
        orientations[j][2] = None
    body = {"body_id": body_id, "joint_positions": positions, "joint_orientations": orientations}
    if confidences:
        body["joint_confidences"] = [int(c) for c in rng.integers(1, 4, NUM_JOINTS)]
    return body


def _write_journal(path, frames: list[dict]) -> None:
    lines = [json.dumps(HEADER)] + [json.dumps(f) for f in frames]
    path.write_text("\n".join(lines) + "\n")


def _edge_case_frames() -> list[dict]:
    """Every case the conversion treats: untracked captures, empty frames, bodies coming and going in
    another order, missing joints (null position, null orientation value), a body with no joint,
    bodies without the confidence extension, a repeated id, a device time going back, frame ids
    absent, values that are integers in JSON."""
    rng = np.random.default_rng(7)
    frames = []
    for i in range(40):
        frame = {"timestamp_usec": 800222 + 33333 * i, "frame_id": 3 + i, "host_time": 0.5 + i / 30,
                 "num_bodies": None, "bodies": None}
        if i % 7 != 3:  # every 7th capture untracked
            bodies = []
            if i % 5 != 0:
                bodies.append(_body(rng, 2, missing=(0, 31) if i % 3 == 0 else (), nan_orientation=(5,) if i % 4 == 1 else ()))
            if 10 <= i < 30:
                bodies.insert(0 if i % 2 else len(bodies), _body(rng, 4_000_000_000 if i < 20 else 9,
                                                                 confidences=i < 25, all_missing=i == 15))
            if i == 22:
                bodies.append(_body(rng, 2))  # a repeated id: the later one stands
            if i == 24:
                bodies[0]["joint_positions"][6] = [1, 2, 3]
                bodies[0]["joint_orientations"][6] = [1, 0, 0, 0]
            frame["bodies"], frame["num_bodies"] = bodies, len(bodies)
        if i == 33:
            frame["timestamp_usec"] = 800222 + 33333 * 20  # the device clock went back: dropped
        if i == 35:
            del frame["frame_id"]
        frames.append(frame)
    return frames


def test_streamed_conversion_is_byte_for_byte_the_write_bodies_file(tmp_path):
    journal = tmp_path / "bodies_000000000001.jsonl"
    _write_journal(journal, _edge_case_frames())
    write_bodies(tmp_path / "whole.json", read_journal_bodies(journal))
    stats = write_journal_bodies(journal, tmp_path / "streamed.json")
    assert (tmp_path / "streamed.json").read_bytes() == (tmp_path / "whole.json").read_bytes()
    expected = read_journal_bodies(journal)
    assert stats.frames == len(expected) == 40 - 6 - 1
    assert stats.frames_dropped_out_of_order == expected.stats.frames_dropped_out_of_order == 1
    assert stats.nan_joints == expected.stats.nan_joints > 0
    assert stats.frames_without_bodies == expected.stats.frames_without_bodies > 0
    assert journal_to_bodies(journal, tmp_path / "again.json") == stats.frames

    back = read_bodies(tmp_path / "streamed.json")
    np.testing.assert_array_equal(back.timestamps, expected.timestamps)
    np.testing.assert_array_equal(back.frame_ids, expected.frame_ids)
    assert back.bodies.keys() == expected.bodies.keys() == {2, 9, 4_000_000_000}
    for body_id, track in expected.bodies.items():
        np.testing.assert_allclose(back.bodies[body_id].positions, track.positions, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(back.bodies[body_id].orientations, track.orientations)
        np.testing.assert_array_equal(back.bodies[body_id].confidences, track.confidences)
    assert np.isnan(back.bodies[2].positions).any() and np.isnan(back.bodies[2].orientations).any()

    doc = json.loads((tmp_path / "streamed.json").read_text())
    assert doc["source_file"] == HEADER["source_file"]
    by_id = [[b["body_id"] for b in f["bodies"]] for f in doc["frames"]]
    assert all(ids == sorted(ids) for ids in by_id) and [9, 2] not in by_id
    assert all(f["num_bodies"] == len(f["bodies"]) for f in doc["frames"])


def test_empty_journal_converts_to_a_file_without_frames(tmp_path):
    journal = tmp_path / "bodies_x.jsonl"
    _write_journal(journal, [{"timestamp_usec": 10, "frame_id": 0, "host_time": 0.0, "num_bodies": None,
                              "bodies": None}])
    write_bodies(tmp_path / "whole.json", read_journal_bodies(journal))
    assert write_journal_bodies(journal, tmp_path / "streamed.json").frames == 0
    assert (tmp_path / "streamed.json").read_bytes() == (tmp_path / "whole.json").read_bytes()


@pytest.mark.parametrize("damage, match", [
    (lambda b: b.update(body_id=-1), "body_id"),
    (lambda b: b["joint_positions"].pop(), "31 joints"),
    (lambda b: b["joint_orientations"][4].pop(), "has 3 values"),
    (lambda b: b["joint_confidences"].append(1), "33 joint confidences"),
    (lambda b: b.pop("joint_orientations"), "KeyError"),
])
def test_malformed_capture_is_refused_and_leaves_no_file(tmp_path, damage, match):
    frames = _edge_case_frames()[:12]
    damage(frames[8]["bodies"][0])
    journal = tmp_path / "bodies_x.jsonl"
    _write_journal(journal, frames)
    with pytest.raises(InputError, match=match):
        write_journal_bodies(journal, tmp_path / "out" / "bodies_x.json")
    assert list((tmp_path / "out").iterdir()) == []


def test_streamed_conversion_memory_does_not_grow_with_the_journal(tmp_path):
    """The peak of Python allocations while converting 1,200 captures is that of 60 captures (a
    conversion holding every capture would need about 20 times more)."""
    rng = np.random.default_rng(1)
    frame = {"timestamp_usec": 0, "frame_id": 0, "host_time": 0.0, "num_bodies": 2,
             "bodies": [_body(rng, 1), _body(rng, 2)]}
    peaks = []
    for n in (60, 1200):
        journal = tmp_path / f"bodies_{n}.jsonl"
        lines = [json.dumps(HEADER)]
        for i in range(n):
            frame.update(timestamp_usec=1000 + 33333 * i, frame_id=i, host_time=i / 30)
            lines.append(json.dumps(frame))
        journal.write_text("\n".join(lines) + "\n")
        tracemalloc.start()
        assert write_journal_bodies(journal, tmp_path / f"bodies_{n}.json").frames == n
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 2 * peaks[0]
