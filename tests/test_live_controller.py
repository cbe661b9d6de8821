"""The live session controller (no Qt) over the capture sources: looping replay, snapshots, bounded
display queues, faults, recording through the capture recorder, calibration control."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

from omnimocap.fusion.live import calibration as live_calibration
from omnimocap.fusion.live import controller as live_controller
from omnimocap.apps.live import LiveController
from omnimocap.fusion.live.controller import LiveConfig
from omnimocap.fusion.live.feeds import DropOldestQueue, Released, SourceFeed, session_time
from omnimocap.fusion.pipeline import ProcessConfig, make_estimator
from omnimocap.capture.rig import Rig
from omnimocap.capture.bodies import read_bodies
from omnimocap.capture.pano import PanoReader
from omnimocap.capture.replay import replay_sources
from omnimocap.capture.session import PANO_FRAMES, Session
from omnimocap.capture.sources import KinectFrame, SessionClock, Source
from omnimocap.errors import UserError
from tests.tools.replay import read_all

PANO_W, PANO_H = 640, 320


@pytest.fixture(scope="module")
def sim_session(module_sim_rig):
    """A 1.5 s simulated session folder (one person, one Kinect)."""
    return module_sim_rig(1.0, people=1, kinects=1, seed=3, pano_width=PANO_W, realism="ideal").sim_dir


def wait_for(predicate, timeout=8.0, step=0.02):
    """Poll ``predicate`` up to ``timeout / step`` times (a bound on waiting, not a speed check)."""
    for _ in range(int(timeout / step)):
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


def test_looping_replay_keeps_timestamps_increasing(sim_session):
    rig = Rig.load(sim_session / "rig.json")
    kinect, pano = replay_sources(sim_session, SessionClock(), realtime=False, on_session_clock=True, loop=True)
    recorded = read_bodies(sim_session / "bodies_000000000001.json")
    n = len(recorded)
    frames = [kinect.read(1.0) for _ in range(2 * n + 1)]
    t = np.array([f.device_timestamp for f in frames])
    assert np.all(np.diff(t) > 0) and [f.frame_id for f in frames] == list(range(2 * n + 1))
    # Every pass moves on by the same session-clock period on every device, so the rig's maps still hold.
    t_session = rig.time_map(kinect.name).to_session(t)
    period = t_session[n] - t_session[0]
    np.testing.assert_allclose(t_session[n:2 * n] - t_session[:n], period, atol=1e-6)
    np.testing.assert_allclose(t_session[2 * n] - t_session[n], period, atol=1e-6)
    assert frames[n].bodies.keys() == frames[0].bodies.keys()
    body_id = min(frames[0].bodies)  # k4abt numbers bodies from 1
    np.testing.assert_array_equal(frames[n].bodies[body_id].positions, frames[0].bodies[body_id].positions)
    m = len(PanoReader(sim_session / "pano.mkv", sim_session / PANO_FRAMES))
    pano_frames = [pano.read(1.0) for _ in range(m + 2)]
    t_pano = rig.time_map("pano").to_session([f.t_pano for f in pano_frames])
    assert np.all(np.diff(t_pano) > 0) and [f.index for f in pano_frames] == list(range(m + 2))
    np.testing.assert_allclose(t_pano[m:] - t_pano[:2], period, atol=1e-6)
    np.testing.assert_array_equal(pano_frames[m].image, pano_frames[0].image)
    kinect.stop()
    pano.stop()


def test_replay_publishes_snapshots(sim_session):
    controller = LiveController.from_session(sim_session, config=LiveConfig(process=ProcessConfig(hands="sim", view_size=96)))
    try:
        controller.start()
        state = wait_for(lambda: (s := controller.latest()).pano is not None and s.hand_views and s.world.skeletons
                         and s.kinects[0].skeletons_color_px and s)
        names = {d.name for d in state.devices}
        assert names == {"kinect_000000000001", "pano"}
        assert state.sync == {"kinect_000000000001": "simulated truth", "pano": "simulated truth"}
        # The Kinect pane shows the recording's colour image with the skeleton projected into it.
        pane = state.kinects[0]
        h, w = pane.color.shape[:2]
        px = next(iter(pane.skeletons_color_px.values()))
        px = px[np.isfinite(px).all(1)]
        assert len(px) > 20 and np.mean((px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)) > 0.8
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
        # the backend loads on its own thread (torch's import, the first time); a looped replay's
        # later passes keep their hands, so they come whenever it is ready
        wait_for(lambda: controller.latest().hands_backend == "sim", timeout=60.0)
        reconstructed = wait_for(lambda: [v for v in controller.latest().hand_views if v.keypoints_2d is not None])
        assert reconstructed[0].keypoints_2d.shape == (21, 2)
        assert controller.latest().world.hands
    finally:
        controller.close()
    assert not controller.latest().running


def drive_loop(controller: LiveController, frames: int):
    """Run the pipeline pass by pass on this thread over ``frames`` panorama frames of an unpaced
    replay (looped or not), each queued after the Kinect frames up to its time; yields each pass's
    snapshot."""
    kinect = next(f for f in controller.feeds if f.source.kind == "kinect")
    pano = next(f for f in controller.feeds if f.source.kind == "pano")
    pending = kinect.source.read(1.0)
    for _ in range(frames):
        frame = pano.source.read(1.0)
        t_pano = session_time(controller.rig, pano.name, frame)
        while session_time(controller.rig, kinect.name, pending) <= t_pano:
            kinect.queue.put(Released(pending, time.perf_counter()))
            pending = kinect.source.read(1.0)
        pano.queue.put(Released(frame, time.perf_counter()))
        yield controller.step()


def test_looped_replay_keeps_its_hands(sim_session):
    """Two passes of a looped replay: the second lifts hands as often as the first, and the same
    hand for the same recorded frame (up to the smoothing of the Kinect joints across the seam,
    where the history still holds the end of the first pass)."""
    controller = LiveController.from_session(sim_session, realtime=False,
                                             config=LiveConfig(process=ProcessConfig(hands="sim", view_size=64)))
    try:
        m = controller.replay_loop.pano_frames
        assert m == len(PanoReader(sim_session / "pano.mkv", sim_session / PANO_FRAMES))
        hands = {}
        for state in drive_loop(controller, 2 * m):
            hands[divmod(state.pano.index, m)] = dict(controller.preview_result.hands_by)
    finally:
        controller.close()
    first = sum(len(hands[0, i]) for i in range(m))
    second = sum(len(hands[1, i]) for i in range(m))
    assert first >= 1.5 * m  # one person: both hands in most frames
    assert first - 4 <= second <= first
    # hands are lost only where the Kinect history still holds the end of the first pass (the hand
    # gate, warmed up by then, turns away a hand the smoothed prediction there misplaces)
    lost = [i for i in range(m) if hands[0, i].keys() - hands[1, i].keys()]
    assert all(i < m // 4 for i in lost), lost
    for i in range(m):
        common = hands[0, i].keys() & hands[1, i].keys()
        assert len(common) >= len(hands[1, i]) - 1
        for key in common:
            error = np.max(np.abs(hands[1, i][key] - hands[0, i][key]))
            assert error < (0.05 if i < m // 2 else 0.001), (i, key, error)


def test_kinect_frames_keep_flowing_while_the_hand_backend_loads(sim_session, monkeypatch):
    """A backend that takes 2.5 s to load (WiLoR takes seconds) loads on its own thread: the
    pipeline keeps draining the Kinect queue, which holds a second (loaded on the pipeline thread, 45
    frames or more would be pushed out of it), so no Kinect frame is; the snapshot says the backend
    is loading until it is ready."""
    loaded = threading.Event()

    def slow_make_estimator(config, session):
        time.sleep(2.5)
        estimator = make_estimator(config, session)
        loaded.set()
        return estimator

    monkeypatch.setattr(live_controller, "make_estimator", slow_make_estimator)
    controller = LiveController.from_session(sim_session, config=LiveConfig(
        kinect_queue=30, process=ProcessConfig(hands="sim", view_size=64)))
    try:
        controller.start()
        loading = []
        while not loaded.is_set():
            loading.append(controller.latest())
            time.sleep(0.05)
        wait_for(lambda: controller.latest().world.hands)
        state = controller.latest()
        kinect = next(f for f in controller.feeds if f.source.kind == "kinect")
        assert kinect.source.health().frames >= 75  # 2.5 s at 30 fps went through the queue
        assert kinect.queue.dropped == 0 and kinect.dropped == 0
        assert next(d for d in state.devices if d.kind == "kinect").drops == 0
        # the pipeline ran meanwhile: the Kinect pane moved on through the load
        times = {s.kinects[0].t_session for s in loading if s.kinects and np.isfinite(s.kinects[0].t_session)}
        assert len(times) > 20
        assert loading[0].hands_backend == "loading sim"
        assert all(s.hands_backend == "loading sim" for s in loading[:-1])
        assert any("loading the hand backend 'sim'" in m.text for m in loading[-1].messages)
        assert state.hands_backend == "sim"
    finally:
        controller.close()


class GatedEstimator:
    """A hand backend whose calls wait while ``gate`` is clear (a preview slower than any frame
    period); ``blocked`` counts the calls that found it clear."""

    def __init__(self, inner, gate: threading.Event):
        self.inner, self.gate, self.blocked = inner, gate, 0

    def estimate(self, requests):
        if not self.gate.is_set():
            self.blocked += 1
            assert self.gate.wait(30.0)
        return self.inner.estimate(requests)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_panorama_plays_at_the_source_rate_while_the_preview_runs(sim_session, monkeypatch):
    """The hand preview runs on its own thread: while it is held in one backend call, the snapshot's
    panorama keeps moving to the newest frame, drawn with the overlays of the last frame the preview
    finished (``overlay_index``); once the backend answers, the overlays catch up. With
    ``display_every_frame`` off, the panorama waits for its preview."""
    gate = threading.Event()
    gated = []

    def gated_estimator(config, session):
        gated.append(GatedEstimator(make_estimator(config, session), gate))
        return gated[-1]

    monkeypatch.setattr(live_controller, "make_estimator", gated_estimator)
    for every_frame in (True, False):
        gate.set()
        controller = LiveController.from_session(sim_session, config=LiveConfig(
            process=ProcessConfig(hands="sim", view_size=64), body=False, display_every_frame=every_frame))
        try:
            controller.start()
            wait_for(lambda: controller.latest().world.hands, timeout=60.0)  # the backend loaded and lifted hands
            gate.clear()
            wait_for(lambda: gated[-1].blocked >= 1)  # a preview is held inside the backend now
            held = controller.latest().pano
            if every_frame:
                # frames keep coming (the replay is at 30 fps): 10 more, none with its own preview
                later = wait_for(lambda: (s := controller.latest()).pano.index >= held.index + 10 and s)
                assert later.pano.overlay_index is not None and later.pano.overlay_index <= held.index
                assert later.pano.overlay_released_wall < later.pano.released_wall
                assert later.pano.wrists_px and later.hand_views  # the older frame's overlays
                assert gated[-1].blocked == 1  # still the one call
                gate.set()
                wait_for(lambda: (s := controller.latest()).pano.overlay_index is not None and
                         s.pano.overlay_index > held.index)
            else:
                time.sleep(0.5)  # 15 frame periods
                assert controller.latest().pano.index == held.index and held.overlay_index is None
                gate.set()
                wait_for(lambda: controller.latest().pano.index > held.index)
                assert controller.latest().pano.overlay_index is None
        finally:
            gate.set()
            controller.close()


def test_kinect_panes_decode_jpeg_colour_at_most_at_their_rate(sim_session):
    """A Kinect pane is made once per frame, and from JPEG colour (how the device and its replay
    deliver MJPG) at most ``jpeg_max_hz`` times a second: a frame within the period keeps the
    previous pane, image and skeletons together; a decoded colour image makes a pane every frame."""
    from omnimocap.fusion.live.panes import KinectPanes

    rig = Rig.load(sim_session / "rig.json")
    kinect = next(s for s in replay_sources(sim_session, SessionClock(), realtime=False, on_session_clock=True)
                  if s.kind == "kinect")
    kinect.connect()
    frames = [kinect.read(1.0) for _ in range(4)]
    kinect.stop()
    assert all(isinstance(f.color, bytes) for f in frames)  # the recording's MJPG, as recorded
    panes = KinectPanes(lambda *a: None, jpeg_max_hz=15.0)
    shown = []
    for k, wall in enumerate((0.0, 0.033, 0.067, 0.1)):
        panes.latest[kinect.name] = Released(frames[k], wall)
        shown.append(panes.pane(kinect, rig))
        assert panes.pane(kinect, rig) is shown[-1]  # the same frame again: the same pane
    assert shown[1] is shown[0] and shown[2] is not shown[1] and shown[3] is shown[2]
    assert shown[0].color.shape[2] == 3 and shown[2].t_session > shown[0].t_session
    import cv2
    np.testing.assert_array_equal(shown[2].color, cv2.imdecode(np.frombuffer(frames[2].color, np.uint8), cv2.IMREAD_COLOR))
    decoded = [replace_color(f) for f in frames]
    panes = KinectPanes(lambda *a: None, jpeg_max_hz=15.0)
    made = []
    for k, wall in enumerate((0.0, 0.033, 0.067, 0.1)):
        panes.latest[kinect.name] = Released(decoded[k], wall)
        made.append(panes.pane(kinect, rig))
    assert len({id(p) for p in made}) == 4


def replace_color(frame: KinectFrame) -> KinectFrame:
    import cv2
    from dataclasses import replace

    return replace(frame, color=cv2.imdecode(np.frombuffer(frame.color, np.uint8), cv2.IMREAD_COLOR))


def test_preview_and_body_threads_run_at_a_lower_priority():
    """The calling thread's nice value goes up by the niceness, the process's (the main thread's)
    does not; 0 leaves it."""
    import os

    if not sys.platform.startswith("linux"):
        pytest.skip("per-thread nice values are a Linux feature")
    main = os.getpriority(os.PRIO_PROCESS, 0)
    seen = {}

    def worker(niceness):
        before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        done = live_controller.lower_thread_priority(niceness)
        seen[niceness] = (done, os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) - before)

    for niceness in (0, 3):
        t = threading.Thread(target=worker, args=(niceness,))
        t.start()
        t.join()
    assert seen[0] == (False, 0)
    assert seen[3] == (True, min(3, 19 - main))
    assert os.getpriority(os.PRIO_PROCESS, 0) == main


@pytest.mark.parametrize("error, text", [(UserError("the WiLoR weights are missing", fix="run scripts/setup.sh"), "weights"),
                                         (RuntimeError("CUDA out of memory"), "RuntimeError: CUDA out of memory")])
def test_hand_backend_that_fails_to_load_is_a_fault(sim_session, monkeypatch, error, text):
    def fails(config, session):
        raise error

    monkeypatch.setattr(live_controller, "make_estimator", fails)
    controller = LiveController.from_session(sim_session, config=LiveConfig(process=ProcessConfig(hands="wilor")))
    try:
        controller.start()
        state = wait_for(lambda: (s := controller.latest()).hands_backend == "none" and s)
        faults = [m.text for m in state.messages if m.level == "fault"]
        assert len(faults) == 1 and "hand backend 'wilor' not available" in faults[0] and text in faults[0]
        index = wait_for(lambda: controller.latest().pano).index
        wait_for(lambda: controller.latest().pano.index > index)  # the streams go on without hands
    finally:
        controller.close()


def test_simulated_controller_loops_restarts_and_cleans_up():
    """``gui --simulate``: the simulated rig replayed in a loop keeps lifting hands in its later
    passes, starts again with fresh sources and deletes its simulation when closed."""
    controller = LiveController.simulated(0.5, people=1, kinects=1, seed=2, pano_width=320)
    sim_dir = controller.session_dir
    m = controller.replay_loop.pano_frames
    try:
        assert m == len(PanoReader(sim_dir / "pano.mkv", sim_dir / PANO_FRAMES))
        controller.start()
        wait_for(lambda: (s := controller.latest()).pano is not None and s.pano.index >= 2 * m and s.world.hands,
                 timeout=60.0)  # the third pass
        first = controller.sources
        controller.stop()
        controller.start()
        wait_for(lambda: (s := controller.latest()).pano is not None and s.pano.index >= m and s.world.hands,
                 timeout=30.0)
        assert not set(map(id, controller.sources)) & set(map(id, first))
    finally:
        controller.close()
    assert not sim_dir.exists()


def test_stopped_session_starts_again_with_fresh_sources(sim_session):
    controller = LiveController.from_session(sim_session, config=LiveConfig(process=ProcessConfig(hands="none")))
    try:
        controller.start()
        wait_for(lambda: controller.latest().pano)
        first = controller.sources
        controller.stop()
        assert {d.state for d in controller.latest().devices} == {"stopped"}
        controller.start()
        state = wait_for(lambda: (s := controller.latest()).pano is not None and
                         all(d.state == "running" and d.frames > 0 for d in s.devices) and s)
        assert not set(map(id, controller.sources)) & set(map(id, first))
        assert [d.name for d in state.devices] == [s.name for s in first]
    finally:
        controller.close()



def test_preview_off_keeps_streams_without_views(sim_session):
    """Driven pass by pass on this thread (no worker, no pacing): each panorama frame, queued after
    the Kinect frames up to one past its time, moves the stream on and gets its predicted wrists,
    and with the preview off no view is rendered."""
    clock = SessionClock()
    sources = replay_sources(sim_session, clock, realtime=False, on_session_clock=True)
    controller = LiveController(sources, clock=clock, rig=Rig.load(sim_session / "rig.json"),
                                session_dir=sim_session, config=LiveConfig(process=ProcessConfig(hands="sim", view_size=64)))
    try:
        controller.set_preview(False)
        kinect = next(f for f in controller.feeds if f.source.kind == "kinect")
        pano = next(f for f in controller.feeds if f.source.kind == "pano")
        body_frames = read_all(kinect.source)
        t_body = np.array([session_time(controller.rig, kinect.name, f) for f in body_frames])
        frame_s = float(np.median(np.diff(t_body)))
        queued = 0
        indices = []
        for _ in range(8):
            frame = pano.source.read(1.0)
            t_pano = session_time(controller.rig, pano.name, frame)
            while queued < len(body_frames) and t_body[queued] <= t_pano + frame_s:
                kinect.queue.put(Released(body_frames[queued], time.perf_counter()))
                queued += 1
            pano.queue.put(Released(frame, time.perf_counter()))
            state = controller.step()
            assert state.pano.index == frame.index
            assert not state.preview
            assert all(v.image is None for v in state.hand_views)
            assert state.pano.wrists_px  # wrists are still predicted
            indices.append(state.pano.index)
        assert indices == sorted(set(indices)) and len(indices) == 8
    finally:
        controller.close()


def test_slow_consumer_drops_instead_of_growing(sim_session):
    seen = []
    feeds = [SourceFeed(s, 2 if s.kind == "pano" else 4, on_frame=lambda source, frame: seen.append(source.name))
             for s in replay_sources(sim_session, SessionClock(), on_session_clock=True, loop=True)]
    for f in feeds:
        f.start()
    try:
        time.sleep(1.2)  # nobody polls: ~20 frames per source arrive
        for f in feeds:
            health = f.health()
            assert len(f.queue) == f.queue.maxlen
            assert health.frames >= 10 and seen.count(f.name) >= health.frames  # the hook saw every frame
            assert f.dropped == health.frames - len(f.queue) and health.drops >= f.dropped
            released = f.poll()
            times = [r.frame.stream_time for r in released]
            assert times == sorted(times) and len(released) == f.queue.maxlen
            assert f.source.health().frames - health.frames <= 2  # the newest survive
    finally:
        for f in feeds:
            f.stop()


class StoppingSource(Source[KinectFrame]):
    """Delivers a few body frames, then nothing, while staying 'connected' (an unplugged cable)."""

    kind = "kinect"

    def __init__(self, frames: int):
        super().__init__("kinect_test")
        self.count = frames
        self.sent = 0

    def _connect(self):
        self.nominal_fps = 30.0

    def _read(self, timeout):
        time.sleep(1 / 30)
        if self.sent >= self.count:
            return None
        self.sent += 1
        return KinectFrame("test", self.sent, self.sent / 30, self.clock.now(), bodies={})


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


class FailingSource(StoppingSource):
    """Delivers a few frames, then its reads fail (a file or device breaking mid-stream)."""

    def _read(self, timeout):
        if self.sent >= self.count:
            raise OSError("USB transfer failed")
        return super()._read(timeout)


def test_source_that_fails_is_a_fault():
    controller = LiveController([FailingSource(3)])
    try:
        controller.start()
        state = wait_for(lambda: (s := controller.latest()).devices[0].state == "disconnected" and s)
        faults = [m.text for m in state.messages if m.level == "fault"]
        assert faults == ["kinect_test: OSError: USB transfer failed"]
        assert state.devices[0].frames == 3
    finally:
        controller.close()


def test_missing_device_library_is_a_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyk4a", None)  # import pyk4a -> ImportError
    controller = LiveController.from_devices()
    state = controller.latest()
    assert state.devices == []
    assert any(m.level == "fault" and "pyk4a" in m.text for m in state.messages)


def test_recording_writes_a_valid_session(sim_session, tmp_path):
    controller = LiveController.from_session(sim_session, config=LiveConfig(min_free_gb=0, process=ProcessConfig(hands="sim")))
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
    assert session.complete and session.manifest.simulated
    assert all(d.status == "complete" for d in session.manifest.devices)
    kinect = session.kinects()[0]
    bodies = read_bodies(session.path(kinect.bodies))
    assert len(bodies) == final.frames["kinect_000000000001"] >= 20
    assert np.all(np.diff(bodies.timestamps) > 0)
    assert bodies.bodies and next(iter(bodies.bodies.values())).present.any()
    assert kinect.recording and (out / kinect.recording).is_file()  # the colour/depth images too
    pano = PanoReader(session.path("pano.mkv"), session.path(PANO_FRAMES))
    assert len(pano) == final.frames["pano"] >= 20
    assert (pano.width, pano.height) == (PANO_W, PANO_H)
    assert sum(1 for _ in pano.frames()) == len(pano)
    Rig.load(session.rig_path)
    assert final.bytes_written > 0


def test_recording_refuses_full_disk_and_used_folder(sim_session, tmp_path):
    controller = LiveController.from_session(sim_session, config=LiveConfig(min_free_gb=1e9, process=ProcessConfig(hands="sim")))
    assert not controller.start_recording(tmp_path / "rec")
    assert any(m.level == "fault" and "free" in m.text for m in controller.latest().messages)
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("x")
    controller.config.min_free_gb = 0
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

    monkeypatch.setattr(live_calibration, "calibration_steps", lambda method: [("time sync", lambda d: None),
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


def test_markerless_refines_a_previous_calibration_and_board_syncs_after(sim_session, tmp_path, monkeypatch):
    import shutil

    from omnimocap.calibration import session as calibration_session
    from omnimocap.calibration import sync as calibration_sync
    from omnimocap.calibration.config import CalibrateConfig

    session_dir = tmp_path / "s"
    shutil.copytree(sim_session, session_dir)
    calls = []
    monkeypatch.setattr(calibration_session, "calibrate_session", lambda d, config: calls.append(("calibrate", config)))
    monkeypatch.setattr(calibration_sync, "sync_session", lambda d: calls.append(("sync", {})))
    steps = live_calibration.calibration_steps
    assert [label for label, _ in steps("board")] == ["board calibration", "time sync"]
    for _, step in steps("board"):
        step(session_dir)
    assert calls == [("calibrate", CalibrateConfig(method="board")), ("sync", {})]
    (step,) = [s for _, s in steps("markerless")]
    calls.clear()
    step(session_dir)  # rig.json is the simulated truth: nothing to refine from
    rig = Rig.load(session_dir / "rig.json")
    rig.method, rig.is_truth = "markerless", False
    rig.save(session_dir / "rig.json")
    step(session_dir)
    assert calls == [("calibrate", CalibrateConfig(method="markerless", refine=False)),
                     ("calibrate", CalibrateConfig(method="markerless", refine=True))]


def test_calibration_not_available_is_reported(sim_session, monkeypatch):
    def missing(method):
        raise ImportError("no calibration")

    monkeypatch.setattr(live_calibration, "calibration_steps", missing)
    controller = LiveController.from_session(sim_session)
    assert not controller.calibrate("board")
    state = controller.latest()
    assert state.calibration.status == "calibration not available"
    assert any("calibration not available" in m.text for m in state.messages)


def test_calibration_failure_is_a_fault(sim_session, tmp_path, monkeypatch):
    def fails(d):
        raise UserError("nobody moved", path=d, fix="walk around")

    monkeypatch.setattr(live_calibration, "calibration_steps", lambda method: [("markerless", fails)])
    controller = LiveController.from_session(sim_session)
    assert controller.calibrate("markerless")
    wait_for(lambda: any("nobody moved" in m.text for m in controller.latest().messages))
    assert not controller.latest().calibration.running
    assert controller.latest().calibration.method == "truth"  # the rig in use did not change


def test_gui_hand_stage_takes_process_defaults():
    from omnimocap.apps.cli import build_parser
    from omnimocap.apps.cmd_gui import live_config

    parser = build_parser()
    replay = live_config(parser.parse_args(["gui", "--session", "somewhere"])).process
    assert replay == ProcessConfig()  # backend, view size, lifting, depth cue: those of `process`
    assert live_config(parser.parse_args(["gui", "--simulate"])).process.hands == "sim"
    assert live_config(parser.parse_args(["gui", "--simulate", "--hands", "none"])).process.hands == "none"
    assert live_config(parser.parse_args(["gui", "--hands", "wilor", "--device", "cuda"])).process.device == "cuda"


def test_running_session_publishes_the_fitted_body(sim_session, tmp_path):
    """The body thread fits the people the preview runs on: with its shape held (after 1 s here),
    each person's SMPL-X body comes with the snapshots, at a Kinect frame's time."""
    config = LiveConfig(process=ProcessConfig(hands="sim", view_size=96, models=str(tmp_path)), body_shape_s=1.0)
    controller = LiveController.from_session(sim_session, realtime=False, config=config)
    try:
        controller.start()
        # a snapshot with the fitted body and the preview's people (a field session's k4abt drops whole
        # bodies for a moment, so some frames have none)
        state = wait_for(lambda: (s := controller.latest()).world.fitted and s.world.bodies and s, timeout=60.0)
        (pid, body), = state.world.fitted.items()
        assert pid in state.world.bodies and body.person_id == pid
        assert body.joints.shape == (55, 3) and np.all(np.isfinite(body.joints))
        assert 1.0 < body.joints[15, 1] < 2.0  # y up: the head (SMPL-X joint 15) stands above a metre
        assert body.vertices is None and state.world.body_faces is None  # no model file in this models folder
        assert state.body_ms > 0 and state.world.frame_key[2] == max(b.t_session for b in state.world.fitted.values())
    finally:
        controller.close()


def test_body_fit_that_fails_is_a_fault(sim_session, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("no such model")

    monkeypatch.setattr(live_controller, "LiveBody", broken)
    controller = LiveController.from_session(sim_session, realtime=False,
                                             config=LiveConfig(process=ProcessConfig(hands="sim", view_size=96)))
    try:
        controller.start()
        wait_for(lambda: any("live body fit failed (ValueError: no such model)" in m.text
                             for m in controller.latest().messages), timeout=30.0)
        assert controller.latest().world.fitted == {}
    finally:
        controller.close()
