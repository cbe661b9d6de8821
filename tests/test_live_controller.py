"""The live session controller (no Qt): replay, snapshots, bounded queues, faults, recording,
calibration control."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

from omnimocap.apps import live
from omnimocap.apps.live import (
    DropOldestQueue, KinectFrame, LiveConfig, LiveController, Source, replay_sources,
)
from omnimocap.calibration.rig import Rig
from omnimocap.capture.bodies import read_bodies
from omnimocap.capture.pano import PanoReader
from omnimocap.capture.session import Session
from omnimocap.errors import UserError

PANO_W, PANO_H = 640, 320


@pytest.fixture(scope="session")
def sim_session(tmp_path_factory):
    from omnimocap.capture.simulate import SimConfig, simulate_session

    root = tmp_path_factory.mktemp("live") / "session"
    simulate_session(root, SimConfig(seconds=1.5, people=1, kinects=1, seed=3, pano_width=PANO_W))
    return root


def wait_for(predicate, timeout=8.0, step=0.02):
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not reached in time")


def test_queue_drops_oldest_and_counts():
    q = DropOldestQueue(3)
    for i in range(10):
        q.put(i)
    assert len(q) == 3
    assert q.drain() == [7, 8, 9]
    assert q.dropped == 7
    assert q.drain() == []


def test_replay_publishes_snapshots(sim_session):
    controller = LiveController.from_session(sim_session, config=LiveConfig(view_size=96))
    try:
        controller.start()
        state = wait_for(lambda: (s := controller.latest()).pano is not None and s.hand_views and s.world.skeletons
                         and s)
        names = {d.name for d in state.devices}
        assert names == {"kinect_000000000001", "pano"}
        assert state.pano.image.shape == (PANO_H, PANO_W, 3)
        assert all(v.image.shape == (96, 96, 3) for v in state.hand_views)
        # Predicted wrists and view outlines land inside the panorama.
        for _, side, px in state.pano.wrists_px:
            assert side in ("left", "right")
            assert 0 <= px[0] < PANO_W and 0 <= px[1] < PANO_H
        outline = np.concatenate(state.pano.view_outlines)
        outline = outline[np.isfinite(outline).all(1)]
        assert len(outline) > 0 and np.all((outline >= -0.5) & (outline <= [PANO_W, PANO_H]))
        # Each predicted wrist lies inside its own view's outline bounding box.
        for (_, _, px), o in zip(state.pano.wrists_px, state.pano.view_outlines):
            o = o[np.isfinite(o).all(1)]
            if np.ptp(o[:, 0]) < PANO_W / 2:
                assert o[:, 0].min() <= px[0] <= o[:, 0].max() and o[:, 1].min() <= px[1] <= o[:, 1].max()
        skeleton = next(iter(state.world.skeletons.values()))
        assert skeleton.shape == (32, 3) and np.nanmax(skeleton[:, 1]) > 1.0  # y up: the head is above 1 m
        assert set(state.world.sensor_poses) == {"kinect_000000000001", "pano"}
        later = wait_for(lambda: (s := controller.latest()).pano.index != state.pano.index and s)
        assert later.seq > state.seq
        if later.hands_backend == "sim":
            reconstructed = wait_for(lambda: [v for v in controller.latest().hand_views if v.keypoints_2d is not None])
            assert reconstructed[0].keypoints_2d.shape == (21, 2)
            assert controller.latest().world.hands
    finally:
        controller.close()
    assert not controller.latest().running


def test_preview_off_keeps_streams_without_views(sim_session):
    controller = LiveController.from_session(sim_session, config=LiveConfig(view_size=64))
    try:
        controller.set_preview(False)
        controller.start()
        first = wait_for(lambda: controller.latest().pano)
        state = wait_for(lambda: (s := controller.latest()).pano.index != first.index and s)
        assert not state.preview
        assert all(v.image is None for v in state.hand_views) or not state.hand_views
        assert state.pano.wrists_px  # wrists are still predicted
    finally:
        controller.close()


def test_slow_consumer_drops_instead_of_growing(sim_session):
    rig = Rig.load(sim_session / "rig.json")
    sources = replay_sources(sim_session, rig, display_queue=2, kinect_queue=4)
    for s in sources:
        s.clock.start()
        s.start()
    try:
        time.sleep(0.6)  # nobody polls: ~18 frames per source arrive
        for s in sources:
            health = s.health()
            assert len(s.queue) <= s.queue.maxlen
            assert health.frames >= 10
            assert health.drops == health.frames - len(s.queue)
            packets = s.poll()
            assert [p.index for p in packets] == sorted(p.index for p in packets)
            assert packets[-1].index >= health.frames - 2  # the newest survive
    finally:
        for s in sources:
            s.stop()


class StoppingSource(Source):
    """Delivers a few body frames, then nothing, while staying 'connected' (an unplugged cable)."""

    def __init__(self, frames: int):
        super().__init__("kinect_test", "kinect", queue_size=8, stall_after_s=0.3)
        self.count = frames

    def _produce(self):
        for i in range(self.count):
            self._emit(KinectFrame(self.name, i, i / 30, i / 30, {}, None, time.perf_counter()))
            time.sleep(1 / 30)
        self._halt.wait()


def test_source_that_stops_is_a_fault():
    controller = LiveController([StoppingSource(3)], config=LiveConfig(stall_after_s=0.3))
    try:
        controller.start()
        state = wait_for(lambda: (s := controller.latest()).devices[0].state == "stalled" and s)
        faults = [m for m in state.messages if m.level == "fault" and "kinect_test" in m.text]
        assert len(faults) == 1 and "no data" in faults[0].text
        time.sleep(0.3)
        again = controller.latest()
        assert sum(m.level == "fault" for m in again.messages) == 1  # reported once, not every tick
    finally:
        controller.close()


def test_missing_device_library_is_a_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyk4a", None)  # import pyk4a -> ImportError
    controller = LiveController.from_devices()
    state = controller.latest()
    assert state.devices == []
    assert any(m.level == "fault" and "pyk4a" in m.text for m in state.messages)


def test_recording_writes_a_valid_session(sim_session, tmp_path):
    controller = LiveController.from_session(sim_session, config=LiveConfig(min_free_bytes=0))
    out = tmp_path / "rec"
    try:
        controller.start()
        wait_for(lambda: controller.latest().pano)
        assert controller.start_recording(out)
        assert controller.latest().recording.active
        time.sleep(1.0)
        final = controller.stop_recording()
    finally:
        controller.close()
    assert not final.active and final.dropped == 0
    session = Session.open(out)
    assert session.complete
    kinect = session.kinects()[0]
    bodies = read_bodies(session.path(kinect.bodies))
    assert len(bodies) == final.frames["kinect_000000000001"] >= 20
    assert np.all(np.diff(bodies.timestamps) > 0)
    assert bodies.bodies and next(iter(bodies.bodies.values())).present.any()
    pano = PanoReader(session.path("pano.mkv"), session.path("pano_frames.csv"))
    assert len(pano) == final.frames["pano"] >= 20
    assert (pano.width, pano.height) == (PANO_W, PANO_H)
    assert sum(1 for _ in pano.frames()) == len(pano)
    Rig.load(session.rig_path)
    assert final.bytes_written > 0


def test_recording_refuses_full_disk_and_used_folder(sim_session, tmp_path):
    controller = LiveController.from_session(sim_session, config=LiveConfig(min_free_bytes=2**62))
    assert not controller.start_recording(tmp_path / "rec")
    assert any(m.level == "fault" and "free" in m.text for m in controller.latest().messages)
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("x")
    controller.config.min_free_bytes = 0
    assert not controller.start_recording(used)
    assert any(m.level == "fault" and "not empty" in m.text for m in controller.latest().messages)
    assert not controller.latest().recording.active


def test_calibration_runs_in_background_with_progress(sim_session, tmp_path, monkeypatch):
    import shutil

    session_dir = tmp_path / "s"
    shutil.copytree(sim_session, session_dir)
    release = threading.Event()

    def fake_calibrate(d):
        release.wait(5)
        rig = Rig.load(d / "rig.json")
        rig.method, rig.is_truth, rig.residuals = "markerless", False, {"angular_rms_deg": 0.21}
        rig.save(d / "rig.json")

    monkeypatch.setattr(live, "calibration_steps", lambda method: [("time sync", lambda d: None),
                                                                   (f"{method} calibration", fake_calibrate)])
    controller = LiveController.from_session(session_dir)
    seen = []
    assert controller.calibrate("markerless", progress=lambda f, text: seen.append((f, text)))
    wait_for(lambda: controller.latest().calibration.running and controller.latest().calibration.progress > 0)
    assert not controller.calibrate("board")  # one at a time
    release.set()
    cal = wait_for(lambda: (c := controller.latest().calibration).progress == 1.0 and not c.running and c)
    assert cal.method == "markerless" and cal.residuals == {"angular_rms_deg": 0.21}
    assert [f for f, _ in seen] == sorted(f for f, _ in seen) and seen[-1][0] == 1.0


def test_calibration_not_available_is_reported(sim_session, monkeypatch):
    def missing(method):
        raise ImportError("no calibration")

    monkeypatch.setattr(live, "calibration_steps", missing)
    controller = LiveController.from_session(sim_session)
    assert not controller.calibrate("board")
    state = controller.latest()
    assert state.calibration.status == "calibration not available"
    assert any("calibration not available" in m.text for m in state.messages)


def test_calibration_failure_is_a_fault(sim_session, tmp_path, monkeypatch):
    def fails(d):
        raise UserError("nobody moved", path=d, fix="walk around")

    monkeypatch.setattr(live, "calibration_steps", lambda method: [("markerless", fails)])
    controller = LiveController.from_session(sim_session)
    assert controller.calibrate("markerless")
    wait_for(lambda: any("nobody moved" in m.text for m in controller.latest().messages))
    assert not controller.latest().calibration.running
    assert controller.latest().calibration.method == "truth"  # the rig in use did not change
