"""360 camera sources behind the :class:`~omnimocap.capture.sources.Source` interface.

- :class:`VideoFilePanoSource`: an equirectangular MP4/MKV; camera timestamps from the container
  pts or from a ``pano_frames.csv`` sidecar (see :mod:`omnimocap.capture.pano`); paced in real time
  or as fast as read.
- :class:`UvcPanoSource`: a camera in USB webcam mode through OpenCV (Ricoh Theta V/Z1 "live
  streaming", Insta360 X-series "USB webcam"): equirect 3840x1920 or 1920x960 at up to 30 fps,
  MJPG or H.264. Horizon correction and stabilisation must be off on the camera.
- :class:`StreamPanoSource`: an RTSP/RTMP (or any FFmpeg) URL through PyAV with low-latency options.
- :func:`gstreamer_pano_source`: a GStreamer pipeline, e.g. a RICOH THETA Z1/V on Linux through the
  ``thetauvcsrc`` element of gstthetauvc (plain V4L2 does not see the THETA's 4K stream): through
  OpenCV's GStreamer backend when OpenCV has one, else through ``gst-launch-1.0`` writing raw BGR
  frames to a pipe (:class:`GstLaunchPanoSource`).

Every frame carries ``t_pano`` (camera clock, seconds) and ``host_time``: the arrival on the session
clock minus ``latency_s``, the configurable latency compensation (the camera's encode + transport
delay, if known). Device sources read on a background thread into a short queue; when the consumer
falls behind, the oldest frame is dropped (counted in ``drops``) so that latency stays bounded.
"""

from __future__ import annotations

import queue
import shlex
import shutil
import subprocess
import threading
from abc import abstractmethod
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from omnimocap.capture.pano import read_pano_timestamps
from omnimocap.capture.sources import EndOfStream, Pacer, PanoFrame, SessionClock, Source
from omnimocap.errors import DeviceError, InputError

_NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "tcp", "http", "https")


class VideoFilePanoSource(Source[PanoFrame]):
    """An equirectangular video file replayed as a live 360 camera.

    ``timestamps``: a ``pano_frames.csv`` whose ``t_pano`` column gives each frame's camera time
    (frames beyond its rows are not delivered); None takes the container pts. ``realtime`` paces
    frames by their camera times (``speed`` x); otherwise they come as fast as they are read.
    ``release_at_host_times`` releases each frame when the session clock reaches the sidecar's
    ``t_host`` (a recorded session replayed on its own clock; frames without one are paced).
    ``loop_period_s`` replays the video again and again: pass ``k`` moves the camera times on by
    ``k * loop_period_s / camera_rate`` (``camera_rate``: the ``a`` of the camera's time map, session
    seconds per camera second) and the recorded host times by ``k * loop_period_s``, so both keep
    increasing and the session's time maps still hold. ``PanoFrame.index`` keeps counting up.
    Raises :class:`InputError` for a missing file, no video stream, or no decodable frame.
    """

    kind = "pano"

    def __init__(self, path: str | Path, *, timestamps: str | Path | None = None, realtime: bool = True,
                 speed: float = 1.0, latency_s: float = 0.0, clock: SessionClock | None = None, name: str = "pano",
                 release_at_host_times: bool = False, loop_period_s: float | None = None,
                 camera_rate: float = 1.0):
        super().__init__(name, clock)
        if release_at_host_times and timestamps is None:
            raise ValueError("release_at_host_times needs the timestamps sidecar")
        if loop_period_s is not None and loop_period_s <= 0:
            raise ValueError(f"loop period must be positive, got {loop_period_s}")
        self.loop_period_s, self.camera_rate = loop_period_s, camera_rate
        self.release_at_host_times = release_at_host_times
        self.path = Path(path)
        self.timestamps_path = None if timestamps is None else Path(timestamps)
        self.latency_s = latency_s
        self._pacer = Pacer(self.clock, realtime, speed)
        self._container = None
        self._frames: Iterator[tuple[np.ndarray, float]] | None = None
        self._next: tuple[np.ndarray, float] | None = None
        self._index = 0
        self._in_pass = 0  # the next frame's index in the file
        self._pass = 0

    def _connect(self) -> None:
        import av

        if not self.path.is_file():
            raise InputError("360 video not found", path=self.path, fix="check the path")
        stamps = read_pano_timestamps(self.timestamps_path) if self.timestamps_path is not None else None
        t_pano = None if stamps is None else stamps.t_pano
        self._t_host_recorded = None if stamps is None else stamps.t_host
        try:
            self._container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as exc:
            raise InputError(f"cannot open as a video ({exc})", path=self.path, fix="give an MP4/MKV equirect video") from None
        if not self._container.streams.video:
            self._container.close()
            raise InputError("the file has no video stream", path=self.path, fix="give an MP4/MKV equirect video")
        stream = self._container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        self.nominal_fps = float(rate) if rate else None
        self._t_pano_recorded = t_pano
        self._frames = self._decode(stream, t_pano)
        self._next = next(self._frames, None)
        if self._next is None:
            self._container.close()
            raise InputError("the 360 video has no frames", path=self.path, fix="record the 360 stream again")
        h, w = self._next[0].shape[:2]
        self.info = replace(self.info, serial=self.name, role="camera", width=w, height=h,
                            fps=self.nominal_fps or 30.0)

    def _decode(self, stream, t_pano: np.ndarray | None) -> Iterator[tuple[np.ndarray, float]]:
        import av

        index = 0
        for packet in self._container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                self._count_decode_error()
                continue
            for frame in frames:
                if t_pano is not None:
                    if index >= len(t_pano):
                        return
                    t = float(t_pano[index])
                elif frame.pts is not None:
                    t = float(frame.time)
                else:
                    t = index / (self.nominal_fps or 30.0)
                index += 1
                yield frame.to_ndarray(format="bgr24"), t

    def _read(self, timeout: float) -> PanoFrame | None:
        if self._next is None:
            self._next = next(self._frames, None)
            if self._next is None and self.loop_period_s is not None and self._in_pass > 0:
                self._rewind()
                self._next = next(self._frames, None)
            if self._next is None:
                raise EndOfStream(f"{self.path.name}: end of the video")
        image, t = self._next
        shift = self._pass * self.loop_period_s if self._pass else 0.0
        t += shift / self.camera_rate
        due = None
        if self.release_at_host_times and np.isfinite(self._t_host_recorded[self._in_pass]):
            due = float(self._t_host_recorded[self._in_pass]) + shift
        if not self._pacer.wait(t, timeout, due):
            return None
        self._next = None
        frame = PanoFrame(self._index, image, t, self.clock.now() - self.latency_s)
        self._index += 1
        self._in_pass += 1
        return frame

    def _rewind(self) -> None:
        """Start the next pass of a looping replay at the video's first frame."""
        self._container.seek(0)
        self._frames = self._decode(self._container.streams.video[0], self._t_pano_recorded)
        self._pass += 1
        self._in_pass = 0

    def _stop(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


class _ThreadedPanoSource(Source[PanoFrame]):
    """A device read on its own thread into a bounded queue (oldest frame dropped when full)."""

    kind = "pano"

    def __init__(self, name: str, clock: SessionClock | None, latency_s: float, queue_size: int):
        super().__init__(name, clock)
        self.latency_s = latency_s
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._index = 0

    @abstractmethod
    def _grab(self) -> list[tuple[np.ndarray, float | None, float]]:
        """Frames that arrived, each (BGR image, camera time in seconds or None, host time on the
        session clock); empty when nothing came this time. Raises :class:`EndOfStream` when the
        device is gone."""

    def _start(self) -> None:
        self._halt.clear()
        self._thread = threading.Thread(target=self._pump, name=f"grab-{self.name}", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        last_t: float | None = None
        while not self._halt.is_set():
            try:
                grabbed = self._grab()
            except EndOfStream as exc:
                self._put(exc)
                return
            for image, t_camera, host in grabbed:
                t = host if t_camera is None else t_camera
                if last_t is not None and t <= last_t:  # a camera clock that stalls or steps back
                    self._count_drop()
                    continue
                last_t = t
                self._put(PanoFrame(self._index, image, t, host))
                self._index += 1

    def _put(self, item) -> None:
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    dropped = self._queue.get_nowait()
                except queue.Empty:
                    continue
                if isinstance(dropped, PanoFrame):
                    self._count_drop()

    def _read(self, timeout: float) -> PanoFrame | None:
        try:
            item = self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        if isinstance(item, EndOfStream):
            raise item
        return item

    def _stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self._release()

    @abstractmethod
    def _release(self) -> None:
        """Close the device."""


class UvcPanoSource(_ThreadedPanoSource):
    """A 360 camera in USB webcam (UVC) mode, read with OpenCV.

    ``device``: a camera index (``0``) or a device path / video file path. ``width``/``height``/
    ``fps`` are requested (the camera may choose another mode; ``info`` has what it delivers).
    ``fourcc``: ``MJPG`` or ``H264``. Camera time: the driver's buffer timestamp
    (``CAP_PROP_POS_MSEC``) when it advances between the first two frames, else the arrival time;
    frames whose camera time does not increase are dropped. ``stall_timeout_s`` without a
    frame ends the source (unplugged). ``capture_factory`` builds the capture object (default
    ``cv2.VideoCapture``); it must offer ``isOpened``, ``set``, ``get``, ``read`` and ``release``.
    """

    def __init__(self, device: int | str, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None, fourcc: str = "MJPG", latency_s: float = 0.0,
                 clock: SessionClock | None = None, stall_timeout_s: float = 2.0, queue_size: int = 2,
                 capture_factory: Callable | None = None):
        super().__init__("pano", clock, latency_s, queue_size)
        self.device, self.width, self.height, self.fps, self.fourcc = device, width, height, fps, fourcc
        self.stall_timeout_s = stall_timeout_s
        self._factory = capture_factory
        self._cap = None
        self._last_ok: float | None = None
        self._camera_clock: bool | None = None
        self._held: tuple[np.ndarray, float, float] | None = None

    def _connect(self) -> None:
        import cv2

        factory = self._factory or cv2.VideoCapture
        cap = factory(self.device)
        if not cap.isOpened():
            cap.release()
            raise DeviceError(f"no camera at {self.device!r}", path=str(self.device),
                              fix="plug the 360 camera in, switch it to USB webcam / live streaming mode "
                                  "(Theta: Live; Insta360: USB webcam) and close other programs using it")
        if len(self.fourcc) != 4:
            raise DeviceError(f"FourCC {self.fourcc!r} is not four characters", fix="use MJPG or H264")
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc))
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, self.width), (cv2.CAP_PROP_FRAME_HEIGHT, self.height),
                            (cv2.CAP_PROP_FPS, self.fps)):
            if value:
                cap.set(prop, float(value))
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS) or self.fps or 30.0
        self.nominal_fps = float(fps)
        self.info = replace(self.info, serial=str(self.device), role="camera", fps=float(fps),
                            width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) or self.width,
                            height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) or self.height)

    def _grab(self) -> list[tuple[np.ndarray, float | None, float]]:
        import cv2

        now = self.clock.now()
        if self._last_ok is None:
            self._last_ok = now
        ok, image = self._cap.read()
        if not ok or image is None:
            if now - self._last_ok > self.stall_timeout_s:
                raise EndOfStream(f"camera {self.device!r} delivered no frame for {self.stall_timeout_s:g} s "
                                  "(unplugged, or its webcam mode ended)")
            self._halt.wait(0.005)
            return []
        self._last_ok = now
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        grabbed = (image, self._cap.get(cv2.CAP_PROP_POS_MSEC), now - self.latency_s)
        if self._camera_clock is None:
            # Whether the driver stamps frames shows only on the second frame: hold the first.
            if self._held is None:
                self._held = grabbed
                return []
            held, self._held = self._held, None
            self._camera_clock = grabbed[1] > held[1] >= 0
            return [self._stamp(*held), self._stamp(*grabbed)]
        return [self._stamp(*grabbed)]

    def _stamp(self, image: np.ndarray, t_ms: float, host: float) -> tuple[np.ndarray, float | None, float]:
        return image, (t_ms / 1000.0 if self._camera_clock else None), host

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class StreamPanoSource(_ThreadedPanoSource):
    """A 360 camera's network stream (RTSP, RTMP, SRT...) or any URL FFmpeg opens, through PyAV.

    Network URLs get low-latency options (no probe buffering, low-delay decoding, RTSP over TCP);
    ``options`` adds or overrides FFmpeg options. Camera time: the stream's pts. ``open_timeout_s``
    and ``read_timeout_s`` bound the network waits; an unreachable URL raises :class:`DeviceError`,
    a stream that ends or breaks ends the source.
    """

    def __init__(self, url: str, *, latency_s: float = 0.0, clock: SessionClock | None = None,
                 open_timeout_s: float = 5.0, read_timeout_s: float = 2.0, options: dict[str, str] | None = None,
                 queue_size: int = 2):
        super().__init__("pano", clock, latency_s, queue_size)
        self.url = url
        self.open_timeout_s, self.read_timeout_s = open_timeout_s, read_timeout_s
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        defaults: dict[str, str] = {}
        if scheme in _NETWORK_SCHEMES:
            defaults = {"fflags": "nobuffer", "flags": "low_delay", "probesize": "500000", "analyzeduration": "500000"}
            if scheme.startswith("rtsp"):
                defaults["rtsp_transport"] = "tcp"
        self.options = {**defaults, **(options or {})}
        self._container = None
        self._frames = None

    def _connect(self) -> None:
        import av

        try:
            self._container = av.open(self.url, options=self.options, timeout=(self.open_timeout_s, self.read_timeout_s))
        except (av.error.FFmpegError, OSError) as exc:
            raise DeviceError(f"cannot open the stream ({exc})", path=self.url,
                              fix="check the URL, that the camera is streaming (RTSP/RTMP on) and that this host reaches it") from None
        if not self._container.streams.video:
            self._container.close()
            raise DeviceError("the stream has no video", path=self.url, fix="point to the camera's video stream")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        self.nominal_fps = float(rate) if rate else None
        self.info = replace(self.info, serial=self.url, role="camera", fps=self.nominal_fps or 30.0,
                            width=stream.codec_context.width or None, height=stream.codec_context.height or None)
        self._frames = self._decode(stream)

    def _decode(self, stream) -> Iterator[tuple[np.ndarray, float | None]]:
        import av

        try:
            for packet in self._container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    self._count_decode_error()
                    continue
                for frame in frames:
                    yield frame.to_ndarray(format="bgr24"), (float(frame.time) if frame.pts is not None else None)
        except (av.error.FFmpegError, OSError) as exc:
            raise EndOfStream(f"stream {self.url} broke off ({exc})") from None

    def _grab(self) -> list[tuple[np.ndarray, float | None, float]]:
        got = next(self._frames, None)
        if got is None:
            raise EndOfStream(f"stream {self.url} ended")
        return [(got[0], got[1], self.clock.now() - self.latency_s)]

    def _release(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


# --- GStreamer ----------------------------------------------------------------------------------------
# The THETA's H.264 stream through gstthetauvc: mode 4K is 3840x1920, 2K 1920x960 (both 30 fps).
THETA_MODES = {"4K": (3840, 1920), "2K": (1920, 960)}
GST_INSTALL_HINT = ("install GStreamer (apt install gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
                    "gstreamer1.0-plugins-bad gstreamer1.0-libav) and, for a THETA, build and install gstthetauvc "
                    "(github.com/nickel110/gstthetauvc, on the libuvc of github.com/nickel110/libuvc); see the README's \"Which cameras\"")


def theta_pipeline(mode: str = "4K") -> str:
    """The GStreamer pipeline (without its sink) that decodes a THETA Z1/V's live stream to BGR at
    the ``mode``'s size (``4K`` 3840x1920 or ``2K`` 1920x960)."""
    if mode not in THETA_MODES:
        raise ValueError(f"THETA mode {mode!r} is not one of {', '.join(THETA_MODES)}")
    w, h = THETA_MODES[mode]
    return (f"thetauvcsrc mode={mode} ! queue ! h264parse ! avdec_h264 ! videoconvert ! "
            f"video/x-raw,format=BGR,width={w},height={h}")


def pipeline_elements(pipeline: str) -> list[str]:
    """Names of the elements of a ``gst-launch`` style pipeline, in order (caps filters and
    properties left out)."""
    names = []
    for part in pipeline.split("!"):
        words = shlex.split(part.strip())
        if words and "/" not in words[0] and "=" not in words[0] and not words[0].endswith("."):
            names.append(words[0])
    return names


def pipeline_size(pipeline: str) -> tuple[int, int] | None:
    """(width, height) of the last caps filter that states both, or None."""
    size = None
    for part in pipeline.split("!"):
        fields = dict(f.split("=", 1) for f in part.strip().split(",")[1:] if "=" in f)
        if "width" in fields and "height" in fields:
            size = (int(fields["width"].split(")")[-1]), int(fields["height"].split(")")[-1]))
    return size


def missing_gst_elements(pipeline: str, inspect: str | None = None) -> list[str]:
    """Elements of ``pipeline`` that GStreamer does not have (``gst-inspect-1.0 --exists``). All of
    them when ``gst-inspect-1.0`` itself is not installed (``inspect`` overrides its path)."""
    inspect = inspect or shutil.which("gst-inspect-1.0")
    names = pipeline_elements(pipeline)
    if inspect is None:
        return names
    return [n for n in names if subprocess.run([inspect, "--exists", n], capture_output=True).returncode != 0]


def opencv_has_gstreamer() -> bool:
    """Whether this OpenCV build has the GStreamer video backend (CAP_GSTREAMER)."""
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return line.split(":", 1)[1].strip().upper().startswith("YES")
    return False


def gstreamer_pano_source(pipeline: str = "theta", *, latency_s: float = 0.0, clock: SessionClock | None = None,
                          inspect: str | None = None, launcher: list[str] | None = None,
                          use_opencv: bool | None = None) -> Source[PanoFrame]:
    """A 360 source reading the GStreamer ``pipeline`` (``gst-launch`` syntax, without a sink;
    ``"theta"`` / ``"theta-2k"`` for :func:`theta_pipeline`), ending in BGR frames.

    Through OpenCV (``CAP_GSTREAMER``, an appsink appended) when this OpenCV build has GStreamer,
    else through ``gst-launch-1.0`` (``launcher`` overrides the command) writing raw BGR to a pipe,
    which needs the frame size in the pipeline's last caps (``video/x-raw,format=BGR,width=..,
    height=..``). Raises :class:`DeviceError` in one line naming the first missing element (all are
    missing without GStreamer) and how to install it."""
    pipeline = {"theta": theta_pipeline("4K"), "theta-2k": theta_pipeline("2K")}.get(pipeline, pipeline)
    if any(name.endswith("sink") for name in pipeline_elements(pipeline)):
        raise DeviceError("the pipeline ends in a sink", path=pipeline, fix="leave the sink out: the source appends its own")
    missing = missing_gst_elements(pipeline, inspect)
    if missing:
        why = "" if (inspect or shutil.which("gst-inspect-1.0")) else " (GStreamer is not installed: no gst-inspect-1.0)"
        raise DeviceError(f"GStreamer element {missing[0]} is not available{why}", path=pipeline, fix=GST_INSTALL_HINT)
    if use_opencv is None:
        use_opencv = opencv_has_gstreamer()
    if use_opencv:
        import cv2

        sink = f"{pipeline} ! appsink drop=true max-buffers=2 sync=false"
        return UvcPanoSource(sink, latency_s=latency_s, clock=clock,
                             capture_factory=lambda spec: cv2.VideoCapture(spec, cv2.CAP_GSTREAMER))
    launcher = launcher or ([shutil.which("gst-launch-1.0")] if shutil.which("gst-launch-1.0") else None)
    if launcher is None:
        raise DeviceError("OpenCV has no GStreamer backend and gst-launch-1.0 is not installed", path=pipeline,
                          fix=GST_INSTALL_HINT)
    return GstLaunchPanoSource(pipeline, launcher, latency_s=latency_s, clock=clock)


class GstLaunchPanoSource(_ThreadedPanoSource):
    """A GStreamer pipeline run by ``gst-launch-1.0 -q PIPELINE ! fdsink fd=1``: raw BGR frames of
    the size in the pipeline's last caps, read from the pipe. Camera time: none (``gst-launch``
    passes no timestamps), so frames are stamped with their arrival. The process ending, or a frame
    cut short, ends the source with the last lines of its error output."""

    def __init__(self, pipeline: str, launcher: list[str], *, latency_s: float = 0.0,
                 clock: SessionClock | None = None, queue_size: int = 2):
        super().__init__("pano", clock, latency_s, queue_size)
        size = pipeline_size(pipeline)
        if size is None:
            raise DeviceError("the pipeline's last caps do not state width and height", path=pipeline,
                              fix="end it with video/x-raw,format=BGR,width=W,height=H")
        self.pipeline, self.launcher, self.size = pipeline, list(launcher), size
        self._process: subprocess.Popen | None = None

    def _connect(self) -> None:
        command = [*self.launcher, "-q", *shlex.split(self.pipeline), "!", "fdsink", "fd=1", "sync=false"]
        try:
            self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        except OSError as exc:
            raise DeviceError(f"cannot run {self.launcher[0]} ({exc})", path=self.pipeline, fix=GST_INSTALL_HINT) from None
        w, h = self.size
        self.info = replace(self.info, serial=self.pipeline.split("!")[0].strip(), role="camera", fps=30.0,
                            width=w, height=h)
        self.nominal_fps = 30.0

    def _grab(self) -> list[tuple[np.ndarray, float | None, float]]:
        w, h = self.size
        need = w * h * 3
        buf = bytearray()
        while len(buf) < need:
            chunk = self._process.stdout.read(need - len(buf))
            if not chunk:
                err = self._process.stderr.read().decode(errors="replace").strip().splitlines()
                raise EndOfStream(f"the GStreamer pipeline ended ({err[-1] if err else 'no more frames'})")
            buf += chunk
        image = np.frombuffer(bytes(buf), np.uint8).reshape(h, w, 3)
        return [(image, None, self.clock.now() - self.latency_s)]

    def _stop(self) -> None:
        # End the process first: the reading thread is blocked on its pipe until it closes.
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
        super()._stop()

    def _release(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=2.0)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._process = None
