"""A chunk reads only its own part of the panorama: the reader seeks to the key frame before the
chunk's first frame, the frames it yields are the very frames (same rows, same pixels) a read from
the start yields, and a chunk late in a session sees the same views and hands as the whole-session
run without decoding the frames before it."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from omnimocap.capture import pano
from omnimocap.capture.pano import PanoReader
from omnimocap.capture.rig import Rig
from omnimocap.capture.session import Session
from omnimocap.fusion.chunks import ChunkPlan
from omnimocap.fusion.pipeline import ProcessConfig, load_inputs, make_estimator, process_window
from omnimocap.sim.simulate import SimConfig, simulate_session

SIM = ProcessConfig(hands="sim", preview=False)
GOP = 30  # the writer's key frame interval: one second of 30 fps frames


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("chunks_pano") / "s"
    simulate_session(root, SimConfig(seconds=4.0, people=1, kinects=1, seed=3, pano_width=256,
                                     kinect_video=False, realism="ideal"))
    return Session.open(root)


def _reader(session: Session) -> PanoReader:
    entry = session.pano()
    return PanoReader(session.pano_video_path(entry), session.pano_frames_path(entry))


def test_reading_from_a_late_frame_seeks_and_yields_the_same_frames(session):
    reader = _reader(session)
    everything = dict(reader.frames())
    assert reader.decoded == len(reader) == len(everything) >= 4 * GOP - 2
    for start, stop in [(1, 4), (GOP - 1, GOP + 1), (GOP, GOP + 5), (2 * GOP + 7, None), (len(reader) - 1, None)]:
        got = list(reader.frames(start, stop))
        end = len(reader) if stop is None else stop
        assert [k for k, _ in got] == list(range(start, end))
        for k, frame in got:
            np.testing.assert_array_equal(frame, everything[k], err_msg=f"frame {k} read from {start}")
        # decoded: from the key frame at or before start (one every GOP frames) to the last one wanted
        assert reader.decoded == end - (start // GOP) * GOP, (start, stop)


def test_a_reader_falls_back_to_the_first_frame_when_timestamps_do_not_name_the_frames(session):
    reader = _reader(session)
    everything = dict(reader.frames())
    # rows shifted by 0.4 of a frame: the key frame's time names no row, so the reader starts over
    reader.timestamps.t_pano = reader.timestamps.t_pano + 0.4 / 30
    got = list(reader.frames(2 * GOP + 1, 2 * GOP + 3))
    assert [k for k, _ in got] == [2 * GOP + 1, 2 * GOP + 2]
    np.testing.assert_array_equal(got[0][1], everything[2 * GOP + 1])
    # from frame 0 to the last one wanted (plus the key frame the seek found, when it got that far)
    assert 2 * GOP + 3 <= reader.decoded <= 2 * GOP + 4


class _LookingObserver:
    """The sim observer, made to look at the views: counts the view images it gets."""

    needs_images = True

    def __init__(self, inner):
        self.inner, self.name, self.images = inner, inner.name, 0

    def estimate(self, requests):
        requests = list(requests)
        assert all(r.image_bgr is not None for r in requests)
        self.images += len(requests)
        return self.inner.estimate(requests)


def test_a_late_chunk_sees_the_whole_runs_frames_and_views_without_decoding_the_early_frames(session, monkeypatch):
    rig = Rig.load(session.rig_path)
    inputs = load_inputs(session, rig, SIM)
    t = inputs.people.t_session
    readers: list[PanoReader] = []

    class RecordingReader(PanoReader):
        """Counts what it decodes and keeps a digest of every frame it hands out, by row."""

        def __init__(self, *args):
            super().__init__(*args)
            self.handed: dict[int, str] = {}
            readers.append(self)

        def frames(self, start=0, stop=None):
            for k, frame in super().frames(start, stop):
                self.handed[k] = hashlib.sha1(frame.tobytes()).hexdigest()
                yield k, frame

    monkeypatch.setattr(pano, "PanoReader", RecordingReader)
    whole_obs = _LookingObserver(make_estimator(SIM, session))
    whole = process_window(session, rig, inputs, SIM, 0, len(t), estimator=whole_obs)
    whole_reader = readers[-1]
    assert whole_reader.decoded == len(whole_reader.handed) == len(inputs.t_pano_session)

    plan = ChunkPlan.for_times(t, chunk_s=1.0, overlap_s=0.3)
    late = plan.chunks[-1]
    chunk_obs = _LookingObserver(make_estimator(SIM, session))
    chunk = process_window(session, rig, inputs, SIM, late.first, late.last, estimator=chunk_obs, preview=False)
    chunk_reader = readers[-1]
    assert chunk.pano_first > GOP + 10  # late enough that a read from frame 0 would decode a key frame interval and more
    assert chunk_reader.decoded <= (chunk.pano_last - chunk.pano_first) + GOP
    assert chunk_reader.decoded < chunk.pano_first
    # the chunk's frames are the whole run's frames of the same rows, pixel for pixel
    assert sorted(chunk_reader.handed) == list(range(chunk.pano_first, chunk.pano_last))
    assert all(whole_reader.handed[k] == digest for k, digest in chunk_reader.handed.items())
    assert chunk_obs.images > 0

    # what the hand stage made of them in the chunk's core (the frames stitching keeps from it): the
    # whole run's views and observed hands, to the smoothers' tolerance (the chunk's Kinect anchors
    # are smoothed over the chunk alone)
    mine = plan.owner(chunk.views["t_session"]) == late.index
    theirs = plan.owner(whole.views["t_session"]) == late.index
    assert mine.sum() > 20
    for key in ("frame_index", "person", "side", "outcome"):
        np.testing.assert_array_equal(chunk.views[key][mine], whole.views[key][theirs], err_msg=key)
    np.testing.assert_allclose(chunk.views["R_pano_view"][mine], whole.views["R_pano_view"][theirs], atol=1e-3)
    core = plan.owner(inputs.t_pano_session[chunk.pano_first:chunk.pano_last]) == late.index
    np.testing.assert_array_equal(chunk.obs_valid[:, core], whole.obs_valid[:, chunk.pano_first:chunk.pano_last][:, core])
    assert chunk.obs_valid[:, core].any()
