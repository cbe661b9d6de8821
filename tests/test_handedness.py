"""Handedness over time: the skeleton's side is the authority; a backend label that disagrees for a
single frame is dropped, one that keeps disagreeing while its wrist sits on the skeleton's wrist is
kept for the skeleton's side and counted."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from omnimocap.apps.cli import main
from omnimocap.fusion import pipeline
from omnimocap.fusion.frame_stage import SideConsistency
from omnimocap.fusion.pipeline import ProcessConfig, process_session
from omnimocap.hands.sim_backend import SimHandObserver


def test_side_consistency_rule():
    sides = SideConsistency(persist=3)
    assert not sides.observe((0, 1), agrees=False)  # a single swap: dropped
    assert not sides.observe((0, 1), agrees=True)
    assert not sides.observe((0, 1), agrees=False)
    assert not sides.observe((0, 1), agrees=False)
    assert sides.observe((0, 1), agrees=False)  # third in a row: overruled
    assert sides.observe((0, 1), agrees=False)
    assert not sides.observe((0, 0), agrees=False)  # runs are per (person, side)
    assert not sides.observe((0, 1), agrees=True)
    assert not sides.observe((0, 1), agrees=False)


class SwappingObserver:
    """The simulated observer with its left/right labels swapped where ``swap(request)`` says."""

    name = "swapping"
    needs_images = False

    def __init__(self, inner: SimHandObserver, swap):
        self.inner = inner
        self.swap = swap
        self.swapped = 0

    def estimate(self, requests):
        out = []
        for req, obs in zip(requests, self.inner.estimate(requests)):
            if obs is not None and self.swap(req):
                obs = replace(obs, is_right=not obs.is_right)
                self.swapped += 1
            out.append(obs)
        return out


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("hand_sides")
    assert main(["simulate", str(root / "s"), "--no-kinect-video", "--seconds", "1.5", "--people", "1",
                 "--pano-width", "320", "--seed", "3", "--realism", "ideal"]) == 0
    return root / "s"


def _process(session, out, monkeypatch, swap):
    made = {}

    def make(config, sess):
        made["est"] = SwappingObserver(SimHandObserver(sess.root), swap)
        return made["est"]

    monkeypatch.setattr(pipeline, "make_estimator", make)
    report = process_session(session, out, ProcessConfig(hands="sim", preview=False), progress=False)
    with np.load(out / "fused.npz") as f:
        return report, made["est"].swapped, f["hand_joints_world"], f["hand_valid"]


def test_single_swaps_are_dropped(session, tmp_path, monkeypatch):
    clean, _, joints0, valid0 = _process(session, tmp_path / "clean", monkeypatch, lambda r: False)
    report, swapped, joints, valid = _process(session, tmp_path / "r", monkeypatch,
                                              lambda r: r.frame_index % 7 == 3)
    counts = report["hand_counts"]
    assert swapped > 0
    assert counts["side_mismatch"] == swapped
    assert counts["side_relabelled"] == 0
    assert counts["observed"] == clean["hand_counts"]["observed"] - swapped
    # isolated gaps are bridged: the hands stay where they were
    both = valid & valid0
    assert both.sum() >= 0.9 * valid0.sum()
    assert np.nanmax(np.abs(joints[both] - joints0[both])) < 0.01


def test_persistent_swap_keeps_the_skeleton_side(session, tmp_path, monkeypatch):
    _, _, joints0, valid0 = _process(session, tmp_path / "clean", monkeypatch, lambda r: False)
    report, swapped, joints, valid = _process(session, tmp_path / "r", monkeypatch,
                                              lambda r: r.side == "right")
    counts = report["hand_counts"]
    assert swapped > 10
    # the first persist-1 swapped observations are dropped, every later one is kept as the right hand
    assert counts["side_mismatch"] == ProcessConfig().side_persist - 1
    assert counts["side_relabelled"] == swapped - counts["side_mismatch"]
    right = valid[0, :, 1] & valid0[0, :, 1]
    assert right.sum() >= 0.9 * valid0[0, :, 1].sum()
    np.testing.assert_allclose(joints[0, right, 1], joints0[0, right, 1], atol=0.01)


def test_persistent_swap_far_from_the_skeleton_wrist_is_not_kept(session, tmp_path, monkeypatch):
    """A persistently swapped label whose hand lies away from the skeleton's wrist (gate 0) is never
    used: the skeleton's side stays the authority."""
    made = {}

    def make(config, sess):
        made["est"] = SwappingObserver(SimHandObserver(sess.root), lambda r: r.side == "right")
        return made["est"]

    monkeypatch.setattr(pipeline, "make_estimator", make)
    report = process_session(session, tmp_path / "r", ProcessConfig(hands="sim", preview=False, max_gate_m=0.0),
                             progress=False)
    counts = report["hand_counts"]
    assert counts["side_relabelled"] == 0 and counts["observed"] == 0
    assert counts["gated"] + counts["side_mismatch"] + counts["no_hand"] == counts["views"]
