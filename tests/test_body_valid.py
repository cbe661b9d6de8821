"""A person no Kinect sees any more: the frames where the fitted body only holds a pose are marked in
every output, never passed off as seen."""

from __future__ import annotations

import json

import numpy as np
import pytest

from omnimocap.apps.cli import main
from omnimocap.capture.bodies import read_bodies, write_bodies
from omnimocap.data.skeletons import KINECT_CONFIDENCE_NONE
from omnimocap.fusion.export import resample_valid, unseen_runs

LEAVES_S = 0.9  # the person's bodies are taken out of every Kinect's tracking from here on


def test_a_grid_time_is_valid_only_where_every_frame_it_comes_from_is():
    t = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    valid = np.array([True, True, False, True, True])
    grid = np.array([0.0, 0.05, 0.1, 0.15, 0.25, 0.3, 0.35, 0.4])
    assert resample_valid(t, valid, grid).tolist() == [True, True, True, False, False, True, True, True]


def test_unseen_runs_are_the_spans_of_false():
    t = np.arange(6) * 0.5
    assert unseen_runs(np.array([0, 1, 1, 0, 0, 1], dtype=bool), t) == [(0.0, 0.0), (1.5, 2.0)]
    assert unseen_runs(np.ones(6, dtype=bool), t) == []


@pytest.fixture(scope="module")
def left_early(tmp_path_factory):
    root = tmp_path_factory.mktemp("body_valid")
    session, result = root / "s", root / "r"
    assert main(["simulate", str(session), "--no-kinect-video", "--seconds", "1.5", "--people", "1",
                 "--pano-width", "320", "--seed", "3", "--realism", "ideal"]) == 0
    for path in sorted(session.glob("bodies_*.json")):
        rec = read_bodies(path)
        gone = rec.timestamps - rec.timestamps[0] >= LEAVES_S
        for track in rec.bodies.values():
            track.positions[gone] = np.nan
            track.orientations[gone] = np.nan
            track.confidences[gone] = KINECT_CONFIDENCE_NONE
        write_bodies(path, rec)
    assert main(["process", str(session), "--out", str(result), "--hands", "sim", "--no-preview", "--quiet"]) == 0
    return session, result


def test_the_frames_after_the_person_left_are_marked(left_early):
    _, result = left_early
    with np.load(result / "fused.npz") as f:
        valid, t = f["body_valid"][0], f["t_session"] - f["t_session"][0]
    assert valid[t < LEAVES_S - 0.05].all()
    assert not valid[t >= LEAVES_S + 0.05].any()
    notes = json.loads((result / "report.json").read_text())["notes"]
    assert any(n.startswith("person 0 is seen by no Kinect over 0.9") for n in notes), notes
    with np.load(result / "smplx.npz") as amass:
        assert amass["valid"].tolist() == resample_valid(t, valid, amass["t_session"] - amass["t_session"][0]).tolist()
        assert 0 < amass["valid"].sum() < len(amass["valid"])


def test_evaluate_scores_the_seen_frames_apart(left_early):
    session, result = left_early
    assert main(["evaluate", "--truth", str(session), str(result)]) == 0
    m = json.loads((result / "metrics.json").read_text())
    assert 0.5 < m["body.seen_fraction"] < 0.7
    # the held pose drifts from the walking person: all frames score far worse than the seen ones
    assert m["body.joint_error_seen_mm"] < 20.0 < m["body.joint_error_mm"]


def test_gltf_lists_the_unseen_span(left_early):
    import pygltflib

    _, result = left_early
    assert main(["export", str(result), "--format", "gltf"]) == 0
    extras = pygltflib.GLTF2().load(str(result / "smplx.glb")).asset.extras
    (start, end), = extras["unseen_s"]
    assert abs(start - LEAVES_S) < 0.05 and 1.3 < end <= 1.5
