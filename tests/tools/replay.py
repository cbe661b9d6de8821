"""Reading replay sources to the end from tests."""

from __future__ import annotations

from omnimocap.capture.sources import EndOfStream


def read_all(source) -> list:
    """Every frame of an unpaced, non-looping replay source, read on this thread."""
    frames = []
    while True:
        try:
            frame = source.read(1.0)
        except EndOfStream:
            return frames
        if frame is not None:
            frames.append(frame)


def step_live(session_dir, config, lead: int = 0):
    """Drive a live controller over a session's replay without threads: for each panorama frame, the
    Kinect frames up to its session time (and ``lead`` more) are released, then the frame, then one
    ``step``. Yields (panorama frame, state, controller); closes the controller at the end.
    ``config`` is the controller's ``ProcessConfig``."""
    import time

    import numpy as np

    from omnimocap.capture.replay import replay_sources
    from omnimocap.capture.rig import Rig
    from omnimocap.capture.sources import SessionClock
    from omnimocap.fusion.live.controller import LiveConfig, LiveController
    from omnimocap.fusion.live.feeds import Released, session_time

    clock = SessionClock()
    sources = replay_sources(session_dir, clock, realtime=False, on_session_clock=True)
    controller = LiveController(sources, clock=clock, rig=Rig.load(session_dir / "rig.json"),
                                session_dir=session_dir, config=LiveConfig(process=config))
    kinect = next(f for f in controller.feeds if f.source.kind == "kinect")
    pano = next(f for f in controller.feeds if f.source.kind == "pano")
    body_frames = read_all(kinect.source)
    t_body = np.array([session_time(controller.rig, kinect.name, f) for f in body_frames])
    queued = 0
    try:
        for frame in read_all(pano.source):
            t_pano = session_time(controller.rig, pano.name, frame)
            wanted = min(len(body_frames), int(np.searchsorted(t_body, t_pano, side="right")) + lead)
            for f in body_frames[queued:wanted]:
                kinect.queue.put(Released(f, time.perf_counter()))
            queued = max(queued, wanted)
            pano.queue.put(Released(frame, time.perf_counter()))
            yield frame, controller.step(), controller
    finally:
        controller.close()
