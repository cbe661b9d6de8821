"""The live preview's view of the past is bounded (its per-frame cost cannot grow with the session):
the body history keeps its last seconds, the depth frames their last few images, both restart with
a restarted clock, and the depth frames answer the depth cue as a recording's would."""

from __future__ import annotations

import numpy as np

from omnimocap.capture.sources import KinectBody
from omnimocap.fusion.depth_cue import DepthFrames
from omnimocap.fusion.live.history import BodyHistory, RecentDepthFrames
from omnimocap.geometry.cameras import PinholeCamera


def body(x: float) -> KinectBody:
    positions = np.zeros((32, 3))
    positions[:, 0] = x
    return KinectBody(positions=positions, orientations=np.tile([1.0, 0.0, 0.0, 0.0], (32, 1)), confidences=np.full(32, 2))


def test_body_history_keeps_its_last_seconds_and_bridges_drop_outs():
    history = BodyHistory(seconds=2.0)
    t = np.arange(600) / 30.0  # 20 s
    for k, tk in enumerate(t):
        history.add(tk, {} if k == 590 else {1: body(tk)})  # body 1 missed one frame
    assert len(history.frames) == 61 and history.frames[0][0] >= t[-1] - 2.0
    people = history.people(np.eye(4), bridge_s=0.8)
    assert people.person_ids == [1] and people.joints.shape == (1, 61, 32, 3)
    np.testing.assert_allclose(people.joints[0, :, 0, 0], people.t_session, atol=1e-12)  # the gap bridged
    gap = int(np.argmin(np.abs(people.t_session - t[590])))
    assert np.isnan(history.people(np.eye(4)).joints[0, gap, 0, 0])  # unbridged without bridge_s
    history.add(1.0, {1: body(0.0)})  # a restarted clock
    assert len(history.frames) == 1


def test_recent_depth_frames_are_bounded_and_read_like_a_recording():
    camera = PinholeCamera(100.0, 100.0, 8.0, 6.0, 16, 12)
    recent = RecentDepthFrames("kinect_1", camera, keep=8)
    images = [np.full((12, 16), k, np.uint16) for k in range(100)]
    t = 0.02 + np.arange(100) / 30.0
    for tk, image in zip(t, images):
        recent.add(tk, image)
    assert len(recent) == 8
    np.testing.assert_allclose(recent.t_session, t[-8:])
    assert abs(recent.frame_period_s - 1 / 30) < 1e-9
    recording = DepthFrames("kinect_1", camera, np.eye(4), t[-8:], lambda: iter(images[-8:]))
    for query in (t[-8] - 0.01, t[-5] + 0.004, t[-3] - 0.017, t[-1] + 0.2):
        i = recent.nearest(query)
        assert i == recording.nearest(query)
        np.testing.assert_array_equal(recent.image(i), recording.image(i))
    recent.add(0.5, images[0])  # a restarted clock
    assert len(recent) == 1
