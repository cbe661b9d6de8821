"""simulate -> process -> evaluate on the simulated rig, with the acceptance thresholds.

The sessions are simulated once per module (they take tens of seconds) and processed with the
simulated hand observer, so the numbers measure the pipeline's geometry.
"""

from __future__ import annotations

import json

import pytest

from omnimocap.apps.cli import main

pytestmark = pytest.mark.slow


def _run(*argv: str) -> None:
    assert main(list(argv)) == 0


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    """10 s, seed 1, noise-free Kinect without k4abt's errors: the geometry must be exact."""
    root = tmp_path_factory.mktemp("exact")
    _run("simulate", str(root / "s"), "--no-kinect-video", "--seconds", "10", "--seed", "1", "--kinect-noise-mm", "0",
         "--realism", "ideal", "--pano-width", "1280")
    _run("process", str(root / "s"), "--out", str(root / "r"), "--hands", "sim", "--quiet")
    _run("evaluate", str(root / "r"), "--truth", str(root / "s"))
    return json.loads((root / "r" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """Default Kinect noise without k4abt's field errors, two people: the geometry under ordinary noise."""
    root = tmp_path_factory.mktemp("noisy")
    _run("simulate", str(root / "s"), "--no-kinect-video", "--seconds", "8", "--seed", "2", "--people", "2", "--pano-width", "1280",
         "--realism", "ideal")
    _run("process", str(root / "s"), "--out", str(root / "r"), "--hands", "sim", "--quiet")
    _run("evaluate", str(root / "r"), "--truth", str(root / "s"))
    return root


def test_geometry_is_exact_without_noise(exact):
    assert exact["hands.joint_error_mm"] <= 2.0
    assert exact["views.center_error_p95"] <= 0.10
    assert exact["hands.coverage"] >= 0.95
    assert exact["smplx.hand_roundtrip_deg"] <= 0.5


def test_360_view_improves_on_the_kinect_wrist(noisy):
    m = json.loads((noisy / "r" / "metrics.json").read_text())
    assert m["people.matched"] == 2
    assert m["hands.wrist_error_mm"] < m["kinect.wrist_error_mm"]
    assert m["body.joint_error_mm"] <= 30


def test_fused_kinect_skeleton_beats_the_better_single_kinect(noisy):
    """Two Kinects (the simulator's default): the skeleton the pipeline fuses from both is closer to
    the truth than either device's own."""
    m = json.loads((noisy / "r" / "metrics.json").read_text())
    assert m["kinect.joint_error_mm"] < m["kinect.best_single_joint_error_mm"]


def test_results_folder_is_complete_and_protected(noisy, capsys):
    r = noisy / "r"
    for name in ("fused.npz", "views.npz", "smplx.npz", "smplx_person1.npz", "report.json", "config.json",
                 "rig.json", "metrics.json"):
        assert (r / name).is_file(), name
    report = json.loads((r / "report.json").read_text())
    assert report["hand_counts"]["observed"] > 0 and report["frames"] > 200
    before = (r / "report.json").read_bytes()
    assert main(["process", str(noisy / "s"), "--out", str(r), "--hands", "sim", "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (r / "report.json").read_bytes() == before


def _process_eval(session, out, *extra) -> dict:
    _run("process", str(session), "--out", str(out), "--hands", "sim", "--hand-noise-mm", "5",
         "--hand-noise-deg", "3", "--hand-dropout", "0.1", "--quiet", *extra)
    _run("evaluate", str(out), "--truth", str(session))
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def observer_noise(noisy):
    """The same session with a noisy, lossy hand observer (5 mm, 3 deg, 10% dropout), processed with
    and without temporal smoothing."""
    return (_process_eval(noisy / "s", noisy / "r_obs"),
            _process_eval(noisy / "s", noisy / "r_obs_raw", "--no-smoothing"))


def test_fused_accuracy_with_a_noisy_observer(observer_noise):
    m, _ = observer_noise
    assert m["hands.joint_error_mm"] <= 8
    assert m["body.joint_error_mm"] <= 20
    assert m["smplx.hand_roundtrip_deg"] <= 0.5
    assert m["hands.wrist_error_mm"] <= 0.6 * m["kinect.wrist_error_mm"]


def test_smoothing_reduces_jitter_without_raising_acceleration_error(observer_noise):
    smooth, raw = observer_noise
    for part in ("hands", "body"):
        assert smooth[f"{part}.jitter"] * 3 <= raw[f"{part}.jitter"], part
        assert smooth[f"{part}.accel_error"] <= raw[f"{part}.accel_error"], part
