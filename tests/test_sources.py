"""Sources behind one interface: counters, the 360 file / UVC / stream sources, Kinect replay."""

from __future__ import annotations


import cv2
import numpy as np
import pytest

from omnimocap.capture.bodies import BodyRecording, BodyTrack, write_bodies
from omnimocap.capture.kinect_live import KinectFileSource
from omnimocap.capture.pano import PanoWriter, read_pano_timestamps
from omnimocap.capture.pano_sources import StreamPanoSource, UvcPanoSource, VideoFilePanoSource
from omnimocap.capture.sources import DISCONNECTED, EndOfStream, KinectFrame, SessionClock, Source
from omnimocap.capture.rig import TimeMap
from omnimocap.errors import DeviceError, InputError
from omnimocap.capture.session import PANO_FRAMES

W, H = 64, 32


def _frame_image(i: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[:, : 2 + 3 * i] = (40, 200, 90)  # a bar that grows: frames are told apart by its width
    return img


@pytest.fixture
def pano_video(tmp_path):
    """12 frames at 30 fps whose camera times start at 5 s, with host times 0.1 s later."""
    video, csv = tmp_path / "pano.mkv", tmp_path / PANO_FRAMES
    writer = PanoWriter(video, csv, W, H, fps=30)
    for i in range(12):
        writer.write(_frame_image(i), 5.0 + i / 30, 5.1 + i / 30)
    writer.close()
    return video, csv


def _read_all(source: Source, limit: int = 1000) -> list:
    frames = []
    while len(frames) < limit:
        try:
            frame = source.read(1.0)
        except EndOfStream:
            break
        if frame is not None:
            frames.append(frame)
    return frames


class _ListSource(Source[KinectFrame]):
    kind = "kinect"

    def __init__(self, times):
        super().__init__("list")
        self._times = list(times)

    def _connect(self):
        self.nominal_fps = 30.0

    def _read(self, timeout):
        if not self._times:
            raise EndOfStream("list: no more frames")
        t = self._times.pop(0)
        return KinectFrame("s", 0, t, self.clock.now())


def test_counters_see_missing_frames_and_the_end():
    period = 1 / 30
    times = [0, period, 2 * period, 5 * period, 6 * period, 6 * period]  # 2 frames lost, then a repeat
    source = _ListSource(times)
    assert len(_read_all(source)) == 6
    h = source.health()
    assert (h.frames, h.drops, h.timestamp_gaps) == (6, 2, 2)
    assert h.state == DISCONNECTED and "no more frames" in h.message
    with pytest.raises(EndOfStream):
        source.read(0.1)


def test_async_read_calls_back_per_frame_and_at_the_end():
    source = _ListSource([i / 30 for i in range(5)])
    got, ended = [], []
    thread = source.start_async(got.append, ended.append)
    thread.join(5)
    assert [f.device_timestamp for f in got] == pytest.approx([i / 30 for i in range(5)])
    assert len(ended) == 1 and "no more frames" in ended[0]


def test_video_file_source_uses_pts_or_the_sidecar(pano_video):
    video, csv = pano_video
    frames = _read_all(VideoFilePanoSource(video, realtime=False))
    assert len(frames) == 12
    assert [f.t_pano for f in frames] == pytest.approx([5.0 + i / 30 for i in range(12)], abs=1e-3)
    # The frames are the written ones, in order (the bar width grows by 3 px per frame).
    widths = [int((f.image[H // 2, :, 1] > 128).sum()) for f in frames]
    assert widths == [2 + 3 * i for i in range(12)]
    source = VideoFilePanoSource(video, timestamps=csv, realtime=False)
    source.connect()
    assert (source.info.width, source.info.height) == (W, H)
    sidecar = [f.t_pano for f in _read_all(source)]
    assert sidecar == pytest.approx(read_pano_timestamps(csv).t_pano, abs=1e-9)


def test_video_file_source_paces_in_real_time_with_latency_compensation(pano_video):
    video, _ = pano_video
    clock = SessionClock()
    frames = _read_all(VideoFilePanoSource(video, realtime=True, latency_s=0.05, clock=clock))
    host = np.array([f.host_time for f in frames])
    span = frames[-1].t_pano - frames[0].t_pano
    assert host[-1] - host[0] >= 0.9 * span  # released no faster than recorded
    assert host[0] < clock.now() - 0.05 + 1e-6 and np.all(np.diff(host) > 0)


def test_video_file_source_errors_are_one_line(tmp_path):
    with pytest.raises(InputError, match="not found"):
        VideoFilePanoSource(tmp_path / "missing.mkv").connect()
    empty = tmp_path / "empty.mkv"
    PanoWriter(empty, tmp_path / "empty.csv", W, H).close()  # a file that never got a frame
    with pytest.raises(InputError) as exc:
        VideoFilePanoSource(empty).connect()
    assert str(empty) in str(exc.value) and "\n" not in str(exc.value)
    text = tmp_path / "notes.mkv"
    text.write_text("not a video")
    with pytest.raises(InputError):
        VideoFilePanoSource(text).connect()


class FakeCapture:
    """cv2.VideoCapture stand-in: ``frames`` images, ``stamps_ms`` per frame (what POS_MSEC reports
    after reading it), then reads fail."""

    def __init__(self, frames, stamps_ms, opened=True):
        self.frames, self.stamps_ms, self.opened = list(frames), list(stamps_ms), opened
        self.props: dict[int, float] = {}
        self._pos = 0.0
        self.released = False

    def isOpened(self):
        return self.opened

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def get(self, prop):
        if prop == cv2.CAP_PROP_POS_MSEC:
            return self._pos
        return {cv2.CAP_PROP_FRAME_WIDTH: W, cv2.CAP_PROP_FRAME_HEIGHT: H, cv2.CAP_PROP_FPS: 30.0}.get(prop, 0.0)

    def read(self):
        if not self.frames:
            return False, None
        self._pos = self.stamps_ms.pop(0)
        return True, self.frames.pop(0)

    def release(self):
        self.released = True


def test_uvc_source_takes_camera_times_and_requested_mode():
    cap = FakeCapture([_frame_image(i) for i in range(6)], [1000.0 + 33.0 * i for i in range(6)])
    source = UvcPanoSource(0, width=3840, height=1920, fps=30, fourcc="MJPG", latency_s=0.02,
                           stall_timeout_s=0.2, capture_factory=lambda dev: cap, queue_size=16)
    frames = _read_all(source)
    assert [f.t_pano for f in frames] == pytest.approx([1.0 + 0.033 * i for i in range(6)])
    assert cap.props[cv2.CAP_PROP_FRAME_WIDTH] == 3840 and cap.props[cv2.CAP_PROP_FPS] == 30
    assert cap.props[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter_fourcc(*"MJPG")
    assert source.health().state == DISCONNECTED and "no frame for" in source.health().message
    source.stop()
    assert cap.released


def test_uvc_source_without_camera_clock_uses_arrival_times():
    cap = FakeCapture([_frame_image(i) for i in range(4)], [0.0] * 4)
    clock = SessionClock()
    frames = _read_all(UvcPanoSource(0, clock=clock, stall_timeout_s=0.2, capture_factory=lambda dev: cap, queue_size=16))
    assert len(frames) == 4
    assert all(f.t_pano == f.host_time for f in frames) and frames[0].t_pano > 0


def test_uvc_source_missing_device_and_a_file_path(pano_video, tmp_path):
    with pytest.raises(DeviceError, match="no camera") as exc:
        UvcPanoSource(3, capture_factory=lambda dev: FakeCapture([], [], opened=False)).connect()
    assert "webcam" in str(exc.value)
    video, _ = pano_video
    # OpenCV opens a file path like a device; its POS_MSEC is the file's clock from 0.
    frames = _read_all(UvcPanoSource(str(video), stall_timeout_s=0.2, queue_size=64))
    assert len(frames) == 12
    assert np.diff([f.t_pano for f in frames]) == pytest.approx(np.full(11, 1 / 30), abs=2e-3)


def test_stream_source_on_a_local_file_url(pano_video):
    video, _ = pano_video
    source = StreamPanoSource(f"file:{video}", queue_size=4)
    frames = _read_all(source)
    h = source.health()
    assert len(frames) + h.drops == 12  # a slow reader loses the oldest frames, never silently
    assert np.all(np.diff([f.t_pano for f in frames]) > 0)
    assert frames[-1].t_pano == pytest.approx(5.0 + 11 / 30, abs=1e-3)


def test_stream_source_unreachable_url_is_a_device_error():
    with pytest.raises(DeviceError, match="cannot open the stream"):
        StreamPanoSource("rtsp://127.0.0.1:9/live", open_timeout_s=1.0, read_timeout_s=1.0).connect()


def test_kinect_file_source_replays_bodies_on_the_original_clock(tmp_path):
    F = 6
    t = 2.0 + np.arange(F) / 30
    track = BodyTrack.empty(F)
    track.positions[:] = np.arange(32 * 3).reshape(32, 3) / 100
    track.orientations[:] = [1.0, 0, 0, 0]
    track.confidences[:] = 2
    track.positions[3] = np.nan  # the body is missing in frame 3
    path = tmp_path / "bodies_0001.json"
    write_bodies(path, BodyRecording(t, np.arange(F), {7: track}))
    clock = SessionClock()
    tmap = TimeMap(1.0, -2.0 + 0.05)  # device 2.0 s -> session 0.05 s
    source = KinectFileSource("0001", bodies_path=path, clock=clock, release_map=tmap)
    frames = _read_all(source)
    assert [f.device_timestamp for f in frames] == pytest.approx(t)
    assert [sorted(f.bodies) for f in frames] == [[7], [7], [7], [], [7], [7]]
    np.testing.assert_allclose(frames[0].bodies[7].positions, track.positions[0], atol=1e-5)
    host = np.array([f.host_time for f in frames])
    assert np.all(host >= tmap.to_session(t) - 1e-3)  # never released before its time
    assert source.info.fps == pytest.approx(30.0, rel=1e-3)


def test_arrival_times_stay_bounded_when_nobody_asks_for_health(monkeypatch):
    """A recorder never calls health(): the arrival times kept for the frame rate must not grow with
    the recording (one per frame, hours long)."""
    import omnimocap.capture.sources as sources

    clock = {"now": 0.0}
    monkeypatch.setattr(sources.time, "monotonic", lambda: clock["now"])
    source = _ListSource([])
    source.nominal_fps = 30.0
    for i in range(3000):  # 100 s of frames at 30 fps
        clock["now"] = i / 30
        source._count_frame(i / 30)
    assert len(source._arrivals) <= sources.RATE_WINDOW_S * 30 + 2
    assert source.health().frames == 3000
    assert source.health().fps == pytest.approx(30.0, rel=0.02)
