"""Replay of a recorded session's streams as live sources, in real time or as fast as read.

Each Kinect (its body tracking and/or recording) becomes a :class:`KinectFileSource` and the 360
stream a :class:`VideoFilePanoSource`, so that the recorder, the live preview and the tests read a
session exactly as they read devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnimocap.capture.bodies import read_bodies
from omnimocap.capture.dual_fisheye import DualFisheyeSource, pano_camera
from omnimocap.capture.kinect_live import KinectFileSource
from omnimocap.capture.pano import read_pano_timestamps
from omnimocap.capture.pano_sources import VideoFilePanoSource
from omnimocap.capture.rig import Rig
from omnimocap.capture.session import MANIFEST, Session
from omnimocap.capture.sources import SessionClock, Source
from omnimocap.errors import UserError


def replay_sources(session_dir: str | Path, clock: SessionClock, *, realtime: bool = True,
                   on_session_clock: bool = False, loop: bool = False) -> list[Source]:
    """Sources that replay a recorded session's streams as if live: each Kinect (bodies and/or
    recording) and the 360 stream (named ``pano``, as in ``rig.json``). ``on_session_clock``
    releases every frame at its time on the original session clock (Kinects through ``rig.json``'s
    time maps, the 360 stream at its recorded host times), so ``clock`` must start with the original
    session; otherwise streams are paced from their first frame. ``loop`` replays the session
    again and again, every stream shifted per pass by the same period (the session's span plus one
    frame), so the streams stay in step and their timestamps keep increasing (:func:`replay_loop`
    says which recorded frame a looped one is). Kinect sources come subordinates first, as a live
    rig starts."""
    session = Session.open(session_dir)
    rig = Rig.load(session.rig_path) if on_session_clock else Rig()
    period = replay_loop(session_dir, on_session_clock=on_session_clock).period_s if loop else None
    order = {"subordinate": 0, "standalone": 1, "master": 2}
    sources: list[Source] = []
    for entry in sorted(session.kinects(), key=lambda e: order.get(e.role, 1)):
        sources.append(KinectFileSource(
            entry.serial, bodies_path=session.path(entry.bodies) if entry.bodies else None,
            recording_path=session.path(entry.recording) if entry.recording else None, role=entry.role,
            fps=entry.fps, clock=clock, realtime=realtime, release_map=rig.time_maps.get(entry.name),
            loop_period_s=period))
    pano = next((d for d in session.manifest.devices if d.kind == "pano"), None)
    if pano is not None and pano.recording:
        pano_map = rig.time_maps.get(pano.name)
        source = VideoFilePanoSource(
            session.path(pano.recording), timestamps=session.path(pano.timestamps) if pano.timestamps else None,
            realtime=realtime, clock=clock, name=pano.name, release_at_host_times=on_session_clock and bool(pano.timestamps),
            loop_period_s=period, camera_rate=pano_map.a if pano_map is not None else 1.0)
        # raw dual-fisheye frames replay with their lens model, as the camera delivered them
        sources.append(source if pano.lenses is None else DualFisheyeSource(source, pano_camera(session, pano)))
    return sources


@dataclass(frozen=True)
class ReplayLoop:
    """Where a frame of a looped replay (:func:`replay_sources` with ``loop``) lies in the recording.

    Pass ``k`` delivers the recording again with every time moved on by ``k * period_s`` session
    seconds and the panorama frame indices counting on from ``k * pano_frames``, so the frame a
    looped replay numbers ``index`` is the recording's frame ``index % pano_frames``: the index the
    session's own files (``pano_frames.csv``, a simulation's truth) know it by."""

    period_s: float
    """Session seconds one pass takes: the recording's span plus one frame."""
    pano_frames: int
    """Panorama frames the replay delivers per pass (0: the session has no 360 timestamps)."""

    def recorded_index(self, index: int) -> int:
        """The recording's index of the panorama frame a looped replay numbered ``index``."""
        return index % self.pano_frames if self.pano_frames else index


def replay_loop(session_dir: str | Path, *, on_session_clock: bool = False) -> ReplayLoop:
    """The loop a looped :func:`replay_sources` of ``session_dir`` replays (same ``on_session_clock``)."""
    session = Session.open(session_dir)
    rig = Rig.load(session.rig_path) if on_session_clock else Rig()
    pano = next((d for d in session.manifest.devices if d.kind == "pano"), None)
    frames = len(read_pano_timestamps(session.path(pano.timestamps)).t_pano) if pano is not None and pano.timestamps else 0
    return ReplayLoop(_loop_period(session, rig), frames)


def _loop_period(session: Session, rig: Rig) -> float:
    """Seconds of session time one pass of a looped replay takes, plus one frame: the span from the
    first to the last frame of the streams that ``rig`` maps onto the session clock (released at
    those times, so they share one clock), and at least each other stream's own span (paced from
    its own first frame: device and camera clocks have origins of their own, so their times are not
    compared)."""
    on_session, spans = [], []
    for entry in session.kinects():
        if entry.bodies:
            t = np.asarray(read_bodies(session.path(entry.bodies)).timestamps, dtype=np.float64)
            time_map = rig.time_maps.get(entry.name)
            if time_map is not None:
                on_session.append(time_map.to_session(t))
            elif len(t):
                spans.append(float(t.max() - t.min()))
    pano = next((d for d in session.manifest.devices if d.kind == "pano"), None)
    if pano is not None and pano.timestamps:
        stamps = read_pano_timestamps(session.path(pano.timestamps))
        time_map = rig.time_maps.get(pano.name)
        if time_map is not None:
            on_session.append(time_map.to_session(stamps.t_pano))
        elif len(stamps.t_pano):
            spans.append(float(np.max(stamps.t_pano) - np.min(stamps.t_pano)))
    times = np.concatenate(on_session) if on_session else np.zeros(0)
    if len(times):
        spans.append(float(times.max() - times.min()))
    if not spans:
        raise UserError("the session has no body tracking or 360 timestamps to replay in a loop",
                        path=session.root / MANIFEST, fix="replay it without looping")
    rates = [d.fps for d in session.manifest.devices if d.fps]
    return max(spans) + 1.0 / (max(rates) if rates else 30.0)
