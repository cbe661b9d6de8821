"""Markerless calibration and sync on simulated sessions, through the CLI, with the acceptance
thresholds: simulate -> calibrate/sync -> process -> evaluate.

The sessions have one person, two Kinects (the default, 15 mm correlated joint noise) and a small
panorama (the solvers read the simulated observer's bearings, not the pixels), so the file runs in
a few minutes on two cores.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from omnimocap.apps.cli import main
from omnimocap.calibration.config import CalibrateConfig, MarkerlessConfig, SyncConfig
from omnimocap.calibration.session import calibrate_session
from omnimocap.capture.rig import Rig
from omnimocap.capture.bodies import read_bodies, write_bodies
from omnimocap.capture.session import Session
from omnimocap.capture.truth import Truth
from omnimocap.errors import UserError
from tests.tools.cli import one_line_error

pytestmark = pytest.mark.slow

# Seed 13 draws a panorama clock 306 ppm fast against the session clock (checked below).
SYNC_SEED = 13


def _run(*argv: str) -> None:
    assert main(list(argv)) == 0


def _simulate(path, seconds: float, seed: int, width: int = 512) -> None:
    _run("simulate", str(path), "--no-kinect-video", "--realism", "ideal", "--seconds", str(seconds), "--seed", str(seed),
         "--people", "1", "--pano-width", str(width))


def _run_json(capsys, *argv: str) -> dict:
    """Run a verb that prints one JSON object on stdout and return it."""
    capsys.readouterr()
    _run(*argv)
    return json.loads(capsys.readouterr().out)


def _process_and_evaluate(session, result) -> dict:
    _run("process", str(session), "--out", str(result), "--hands", "sim", "--quiet")
    _run("evaluate", str(result), "--truth", str(session))
    return json.loads((result / "metrics.json").read_text())



def test_markerless_30s_meets_pose_target(tmp_path, capsys):
    s = tmp_path / "s"
    _simulate(s, 30, seed=0)
    residuals = _run_json(capsys, "calibrate", str(s), "--method", "markerless")
    rig = Rig.load(s / "rig.json")
    assert rig.method == "markerless" and not rig.is_truth
    assert rig.configs == {"calibrate": CalibrateConfig(method="markerless").to_json()}  # written beside the result
    m = _process_and_evaluate(s, tmp_path / "r")
    assert m["calibration.rotation_error_deg"] <= 0.3
    assert m["calibration.translation_error_mm"] <= 10.0
    # The reported 1-sigma uncertainties are honest: the errors stay within 3 sigma.
    assert m["calibration.rotation_error_deg"] <= 3 * residuals["rotation_std_deg"]
    assert m["calibration.translation_error_mm"] <= 3 * residuals["translation_std_mm"]


def test_sync_60s_with_300ppm_rate_error(tmp_path, capsys):
    s = tmp_path / "s"
    _simulate(s, 60, seed=SYNC_SEED)
    true_rate_ppm = (Truth(s).rig().time_map("pano").a - 1.0) * 1e6
    assert abs(true_rate_ppm) >= 250  # a rate error of a few hundred ppm for sync to find
    out = _run_json(capsys, "sync", str(s))
    assert Rig.load(s / "rig.json").configs == {"sync": SyncConfig().to_json()}
    m = _process_and_evaluate(s, tmp_path / "r")
    assert m["sync.offset_error_ms"] <= 1.0
    assert m["sync.rate_error_ppm"] <= 10.0
    assert m["sync.offset_error_ms"] <= 3 * out["offset_std_ms"]
    assert m["sync.rate_error_ppm"] <= 3 * out["rate_std_ppm"]


def test_sync_6s_keeps_the_coarse_rate_and_says_how_uncertain_it_is(tmp_path, capsys):
    """6 s barely show the rate: the result leans on the host arrival times and reports a
    large rate uncertainty that covers its actual error."""
    s = tmp_path / "s"
    _simulate(s, 6, seed=SYNC_SEED, width=256)
    out = _run_json(capsys, "sync", str(s))
    true_map = Truth(s).rig().time_map("pano")
    rate_error_ppm = abs(out["a"] / true_map.a - 1.0) * 1e6
    assert out["rate_std_ppm"] >= 50.0
    assert rate_error_ppm <= 3 * out["rate_std_ppm"]
    assert rate_error_ppm < 0.75 * abs(true_map.a - 1.0) * 1e6  # still most of the way from the nominal rate


def test_degenerate_sessions_exit_2_naming_what_is_missing(tmp_path, capsys):
    short = tmp_path / "short"
    _simulate(short, 2, seed=3, width=256)
    line = one_line_error(capsys, ["calibrate", str(short), "--method", "markerless"])
    assert "too few frames" in line and "need 90 frames" in line
    line = one_line_error(capsys, ["sync", str(short)])
    assert "too few frames" in line
    # The limits are the config's.
    with pytest.raises(UserError, match="need 200 frames and 20 bearings"):
        calibrate_session(short, CalibrateConfig(markerless=MarkerlessConfig(min_frames=200, min_observations=20)))

    still = tmp_path / "still"
    _simulate(still, 8, seed=3, width=256)
    _freeze_people(still)
    line = one_line_error(capsys, ["calibrate", str(still), "--method", "markerless"])
    assert "stand still" in line
    line = one_line_error(capsys, ["sync", str(still)])
    assert "barely move" in line
    # Nothing was written over the session's rig.
    assert Rig.load(still / "rig.json").is_truth


def _freeze_people(path) -> None:
    """Make a simulated session's person stand still: every Kinect joint at its first tracked
    position plus 5 mm of white noise, its orientation at its first tracked one, and the truth
    (which the simulated observer reads) frozen at its first sample."""
    session = Session.open(path)
    rng = np.random.default_rng(0)
    for entry in session.kinects():
        rec = read_bodies(session.path(entry.bodies))
        for track in rec.bodies.values():
            first = np.nanmean(track.positions[:5], axis=0)
            ok = np.isfinite(track.positions)
            track.positions = np.where(ok, first + rng.normal(0.0, 0.005, track.positions.shape), np.nan)
            seen = np.flatnonzero(np.isfinite(track.orientations).all(axis=(1, 2)))  # (F, 32, 4) quaternions
            if len(seen):
                track.orientations = np.where(np.isfinite(track.orientations), track.orientations[seen[0]], np.nan)
        write_bodies(session.path(entry.bodies), rec)
    motion_path = session.truth_dir / "motion.npz"
    with np.load(motion_path) as m:
        motion = {k: m[k] for k in m.files}
    for key in ("smplx_joints", "hand_joints"):
        motion[key] = np.repeat(motion[key][:, :1], motion[key].shape[1], axis=1)
    np.savez_compressed(motion_path, **motion)
