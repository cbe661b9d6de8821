"""Flash events end to end: `simulate --flash` renders a light switched on into the 360 video and the
Kinects' colour video, and `sync --flash` recovers the 360 camera's clock from it.

The sessions are short (4 s, one person, a 256-pixel-wide panorama) but keep the Kinect video, whose
colour frames the sync reads.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from omnimocap.apps.cli import main
from omnimocap.capture.rig import Rig
from omnimocap.calibration.coarse_sync import coarse_time_map
from omnimocap.calibration.flash_sync import TimeBands, flash_events, frame_brightness
from omnimocap.capture.kinect_mkv import KinectRecording
from omnimocap.capture.pano import PanoReader, read_pano_timestamps
from omnimocap.capture.session import PANO_FRAMES, Session
from omnimocap.capture.truth import Truth
from omnimocap.geometry.pano_optics import PanoOptics
from omnimocap.sim.pano_camera import flash_fraction_map
from omnimocap.sim.render import FLASH_HOLD_S, apply_flash, flash_fraction
from tests.tools.cli import one_line_error

SECONDS = 4.0
FLASHES = (1.0, 3.0)
SEED = 7
FRAME_S = 1.0 / 30.0


def _simulate(path, *extra: str) -> None:
    # A global-shutter 360 camera: the flash measurement reads each frame's mean brightness as one
    # instant, which a rolling shutter's rows do not share.
    argv = ["simulate", str(path), "--seconds", str(SECONDS), "--people", "1", "--pano-width", "256",
            "--pano-readout-ms", "0", "--pano-baseline-mm", "0", "--pano-exposure-ms", "0", "--seed", str(SEED), *extra]
    assert main(argv) == 0


def _sync(capsys, session) -> dict:
    capsys.readouterr()
    assert main(["sync", str(session), "--flash", "--quiet"]) == 0
    return json.loads(capsys.readouterr().out)



def _offset_error_ms(session, t_pano: float) -> float:
    """Estimated minus true session time (ms) of pano time ``t_pano``."""
    est = Rig.load(session / "rig.json").time_map("pano")
    true = Truth(session).rig().time_map("pano")
    return float((est.to_session(t_pano) - true.to_session(t_pano)) * 1e3)


def _middle_pano_time(session) -> float:
    t = read_pano_timestamps(session / PANO_FRAMES).t_pano
    return float(t[len(t) // 2])


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """The same simulated session (two Kinects) with flashes at FLASHES and without any."""
    root = tmp_path_factory.mktemp("flash")
    _simulate(root / "flash", "--flash", *map(str, FLASHES))
    _simulate(root / "dark")
    return root / "flash", root / "dark"


def _fresh_copy(src, dst):
    """A copy of a module session (whose rig.json is still the copy of the truth) to sync in."""
    shutil.copytree(src, dst)
    return dst


# --- the detector and the renderer, without video ---------------------------------------------------

def test_flash_events_exact_with_capture_jitter():
    """Frames exposed for one period at times jittered by ~1 ms: the located step is exact but for
    the fitted frame period's error (microseconds), where a formula that takes the frames as evenly
    spaced would be off by the jitter of the frames around the step."""
    rng = np.random.default_rng(0)
    t = np.arange(90) * FRAME_S + np.clip(rng.normal(scale=1e-3, size=90), -3e-3, 3e-3)
    steps = [1.0123, 2.2]
    y = np.array([40.0 + 80.0 * flash_fraction(tj, FRAME_S, steps, FLASH_HOLD_S) for tj in t])
    np.testing.assert_allclose(flash_events(t, y), steps, atol=1e-5)


def test_flash_fraction_and_blend():
    # exposure [0.99, 1.01] s around a light on from 1.0 s: half lit
    assert flash_fraction(1.0, 0.02, (1.0,)) == pytest.approx(0.5)
    assert flash_fraction(1.0 + FLASH_HOLD_S, 0.02, (1.0,)) == pytest.approx(0.5)  # the light goes off
    assert flash_fraction(0.9, 0.02, (1.0,)) == 0.0 and flash_fraction(1.2, 0.02, (1.0,)) == 1.0
    img = np.array([[[0, 100, 250]]], dtype=np.uint8)
    lit = apply_flash(img.copy(), 1.0)
    half = apply_flash(img.copy(), 0.5)
    assert np.all(lit > img) and lit[0, 0, 2] == 255  # brighter everywhere, clipped at 255
    np.testing.assert_allclose(half.astype(float), (img.astype(float) + lit) / 2, atol=0.51)
    assert np.array_equal(apply_flash(img.copy(), 0.0), img)


def test_rolling_shutter_flash_is_located_by_capture_time_groups():
    """A two-lens camera whose rows are read over 25 ms and exposed for 10 ms: a frame's mean
    brightness is no one instant, so the frame-mean location misses by milliseconds, while grouping
    the pixels by capture time recovers the step within a tenth of one."""
    optics = PanoOptics(baseline_m=0.03, readout_s=0.025, exposure_s=0.01)
    w, h = 128, 64
    bands = TimeBands.for_panorama(optics, w, h)
    offsets = TimeBands.for_panorama(optics, w, h, bands=10_000).offsets_s  # fine groups: per-pixel times
    occupied = bands.offsets_s[bands.counts > 0]  # groups in order of capture time, over the readout
    assert len(occupied) > 10 and np.all(np.diff(occupied) > 0)
    assert occupied[0] == pytest.approx(-0.0125, abs=2e-3) and occupied[-1] == pytest.approx(0.0125, abs=2e-3)
    rng = np.random.default_rng(3)
    t = np.arange(60) * FRAME_S + rng.normal(scale=3e-4, size=60)
    steps = [0.5123, 1.3007]
    scene = rng.uniform(40.0, 120.0, size=(h, w))
    sub = TimeBands.for_panorama(optics, w, h, bands=10_000)
    frames = []
    for tj in t:
        lit = flash_fraction_map(tj + offsets[sub.labels], optics.exposure_s, tuple(steps))
        frames.append(scene + lit * (0.5 * scene + 30.0))
    by_group = flash_events(t, [bands.brightness(f) for f in frames], bands=bands)
    by_frame = flash_events(t, [frame_brightness(f) for f in frames])
    np.testing.assert_allclose(by_group, steps, atol=2e-4)
    assert np.max(np.abs(by_frame - steps)) > 1e-3  # the frame mean's error is what the groups remove


# --- the simulator -----------------------------------------------------------------------------------

def test_flash_is_rendered_at_the_true_times(sessions):
    """Every Kinect's colour video and the 360 video brighten at the flash times, read through each
    stream's true clock; the truth lists them."""
    flash, _ = sessions
    truth = Truth(flash).flashes()
    assert truth["t_session"] == list(FLASHES) and truth["hold_s"] == FLASH_HOLD_S
    rig = Truth(flash).rig()
    session = Session.open(flash)
    assert len(session.kinects()) == 2
    for entry in session.kinects():
        caps = [c for c in KinectRecording(flash / entry.recording).captures() if c.color is not None]
        t = np.array([c.color_timestamp for c in caps])
        events = flash_events(t, [frame_brightness(c.color) for c in caps])
        np.testing.assert_allclose(events, truth["t_kinect_device"][entry.serial], atol=0.5e-3)
        np.testing.assert_allclose(rig.time_map(entry.name).to_session(events), FLASHES, atol=0.5e-3)
    reader = PanoReader(flash / "pano.mkv", flash / PANO_FRAMES)
    events = flash_events(reader.timestamps.t_pano, [frame_brightness(f) for _, f in reader.frames()])
    np.testing.assert_allclose(events, truth["t_pano"], atol=0.5e-3)


def test_without_flash_the_simulation_is_unchanged(sessions):
    """The option draws no random numbers and touches no frame outside the flashes: the same seed
    without it gives the same timestamps, truth and body tracking, the same Kinect frames outside
    the lit exposures, and the same 360 frames up to the first flash (the video encoder's state
    differs after it)."""
    flash, dark = sessions
    assert not (dark / "truth" / "flashes.json").exists()
    for name in (PANO_FRAMES, "truth/rig.json", "truth/kinects.json"):
        assert (flash / name).read_bytes() == (dark / name).read_bytes(), name
    for entry in Session.open(dark).kinects():
        assert (flash / entry.bodies).read_bytes() == (dark / entry.bodies).read_bytes()
    with np.load(flash / "truth" / "motion.npz") as a, np.load(dark / "truth" / "motion.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            assert np.array_equal(a[key], b[key]), key

    rig = Truth(dark).rig()
    entry = Session.open(dark).kinects()[0]
    tm = rig.time_map(entry.name)
    lit_frames = 0
    for a, b in zip(KinectRecording(flash / entry.recording).captures(),
                    KinectRecording(dark / entry.recording).captures()):
        assert a.color_timestamp == b.color_timestamp and np.array_equal(a.depth, b.depth)
        lit = flash_fraction(tm.to_session(a.color_timestamp), tm.a * FRAME_S, FLASHES)
        if lit == 0.0:
            assert np.array_equal(a.color, b.color)
        else:
            lit_frames += 1
            assert frame_brightness(a.color) > frame_brightness(b.color) + 5.0
    assert lit_frames >= 2 * int(FLASH_HOLD_S / FRAME_S)

    t_session = rig.time_map("pano").to_session(read_pano_timestamps(dark / PANO_FRAMES).t_pano)
    before = int(np.searchsorted(t_session + FRAME_S / 2, FLASHES[0]))  # frames whose exposure ends before it
    fa, fb = ([f for _, f in PanoReader(s / "pano.mkv", s / PANO_FRAMES).frames(0, before + 2)]
              for s in (flash, dark))
    for i in range(before):
        assert np.array_equal(fa[i], fb[i]), i
    assert frame_brightness(fa[before + 1]) > frame_brightness(fb[before + 1]) + 5.0


def test_simulate_refuses_flash_outside_the_session(tmp_path, capsys):
    line = one_line_error(capsys, ["simulate", str(tmp_path / "s"), "--seconds", "2", "--flash", "2.5"])
    assert "--flash" in line and "outside" in line
    assert not (tmp_path / "s").exists()


# --- sync --flash ------------------------------------------------------------------------------------

def test_two_flashes_give_rate_and_offset(sessions, tmp_path, capsys):
    session = _fresh_copy(sessions[0], tmp_path / "s")
    truth = Truth(session).rig()
    out = _sync(capsys, session)
    assert out["method"] == "flash" and out["rate_from"] == "flashes" and out["events_used"] == 2
    assert [e["t_session"] for e in out["events"]] == pytest.approx(FLASHES, abs=0.5e-3)
    err_ms = _offset_error_ms(session, _middle_pano_time(session))
    assert abs(err_ms) <= 0.5, err_ms  # a frame period is 33 ms
    rig = Rig.load(session / "rig.json")
    # two events, each within a quarter of a millisecond, 2 s apart
    assert abs(rig.time_map("pano").a - truth.time_map("pano").a) * 1e6 <= 250.0
    assert not rig.is_truth and rig.method == "flash"
    assert rig.inputs["sync_method"] == "flash" and len(rig.inputs["flash_events"]) == 2
    assert rig.residuals["pano_sync"]["method"] == "flash"
    for name in truth.T_world_sensor:
        np.testing.assert_array_equal(rig.pose(name), truth.pose(name))


def test_rolling_shutter_camera_flash_sync(tmp_path, capsys):
    """The field 360 camera (two lenses, 25 ms readout, 10 ms exposure): sync --flash models its
    rows' capture times from the rig's pano_optics and stays within half a millisecond."""
    session = tmp_path / "s"
    argv = ["simulate", str(session), "--seconds", str(SECONDS), "--people", "1", "--pano-width", "256",
            "--kinects", "1", "--seed", str(SEED), "--flash", *map(str, FLASHES)]
    assert main(argv) == 0
    optics = Rig.load(session / "rig.json").pano_optics
    assert optics.readout_s > 0 and optics.exposure_s > 0
    out = _sync(capsys, session)
    assert out["events_used"] == 2
    assert [e["t_session"] for e in out["events"]] == pytest.approx(FLASHES, abs=0.5e-3)
    assert abs(_offset_error_ms(session, _middle_pano_time(session))) <= 0.5


def test_one_flash_fixes_the_offset_only(tmp_path, capsys):
    session = tmp_path / "s"
    _simulate(session, "--kinects", "1", "--flash", "2.0")
    out = _sync(capsys, session)
    assert out["events_used"] == 1 and out["rate_from"] == "host arrival times"
    stamps = read_pano_timestamps(session / PANO_FRAMES)
    assert out["a"] == coarse_time_map(stamps.t_pano, stamps.t_host).a
    t_flash_pano = Truth(session).flashes()["t_pano"][0]
    assert abs(_offset_error_ms(session, t_flash_pano)) <= 0.5
    # the host arrival times' rate error adds at most a few tenths of a millisecond a second away
    assert abs(_offset_error_ms(session, _middle_pano_time(session))) <= 1.0


def test_session_without_flash_is_refused(sessions, tmp_path, capsys):
    session = _fresh_copy(sessions[1], tmp_path / "s")
    before = (session / "rig.json").read_bytes()
    line = one_line_error(capsys, ["sync", str(session), "--flash", "--quiet"])
    assert "no flash" in line and "360 video" in line and "pano.mkv" in line
    assert (session / "rig.json").read_bytes() == before


def test_flash_missing_in_the_kinect_video_is_refused(sessions, tmp_path, capsys):
    flash, dark = sessions
    session = _fresh_copy(flash, tmp_path / "s")
    entry = Session.open(session).kinects()[0]
    shutil.copy(dark / entry.recording, session / entry.recording)
    before = (session / "rig.json").read_bytes()
    line = one_line_error(capsys, ["sync", str(session), "--flash", "--quiet"])
    assert "no flash" in line and "Kinect" in line and entry.recording in line
    assert (session / "rig.json").read_bytes() == before


def test_flashes_that_do_not_pair_are_refused(sessions, tmp_path, capsys):
    """Host arrival times 1.2 s late put every 360 flash far from each of the Kinect's (2 s apart)."""
    session = _fresh_copy(sessions[0], tmp_path / "s")
    csv = session / PANO_FRAMES
    stamps = read_pano_timestamps(csv)
    rows = ["index,t_pano,t_host"] + [f"{i},{tp:.6f},{th + 1.2:.6f}"
                                      for i, (tp, th) in enumerate(zip(stamps.t_pano, stamps.t_host))]
    csv.write_text("\n".join(rows) + "\n")
    before = (session / "rig.json").read_bytes()
    line = one_line_error(capsys, ["sync", str(session), "--flash", "--quiet"])
    assert "within 0.5 s" in line and PANO_FRAMES in line
    assert (session / "rig.json").read_bytes() == before


def test_session_without_kinect_video_is_refused(sessions, tmp_path, capsys):
    session = _fresh_copy(sessions[0], tmp_path / "s")
    manifest = json.loads((session / "session.json").read_text())
    for device in manifest["devices"]:
        if device["kind"] == "kinect":
            device["recording"] = None
    (session / "session.json").write_text(json.dumps(manifest))
    before = (session / "rig.json").read_bytes()
    line = one_line_error(capsys, ["sync", str(session), "--flash", "--quiet"])
    assert "no recording" in line and "session.json" in line
    assert (session / "rig.json").read_bytes() == before
