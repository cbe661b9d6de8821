"""The 360 source from a GStreamer pipeline (a RICOH THETA on Linux through gstthetauvc's
``thetauvcsrc``): the one-line refusal when an element is missing (this machine has neither
GStreamer nor the element), and the ``gst-launch-1.0`` pipe path through a stand-in launcher that
writes raw BGR frames as ``... ! fdsink fd=1`` would."""

from __future__ import annotations

import shutil
import sys
import textwrap

import cv2
import pytest

from omnimocap.capture.pano_sources import (
    GstLaunchPanoSource, UvcPanoSource, gstreamer_pano_source, missing_gst_elements, opencv_has_gstreamer,
    pipeline_elements, pipeline_size, theta_pipeline,
)
from omnimocap.capture.sources import EndOfStream, SessionClock
from omnimocap.errors import DeviceError
from tests.tools.cli import one_line_error


def _script(path, body: str) -> str:
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def inspect_without_theta(tmp_path):
    """A gst-inspect-1.0 that knows every element but thetauvcsrc."""
    return _script(tmp_path / "gst-inspect-1.0", """
        import sys
        sys.exit(1 if sys.argv[-1] == "thetauvcsrc" else 0)
    """)


def test_theta_pipeline_elements_and_size():
    assert pipeline_elements(theta_pipeline()) == ["thetauvcsrc", "queue", "h264parse", "avdec_h264", "videoconvert"]
    assert pipeline_size(theta_pipeline()) == (3840, 1920) and pipeline_size(theta_pipeline("2K")) == (1920, 960)
    assert pipeline_size("videotestsrc ! video/x-raw,format=BGR,width=(int)64,height=(int)32") == (64, 32)
    assert pipeline_size("videotestsrc ! videoconvert") is None
    with pytest.raises(ValueError, match="8K"):
        theta_pipeline("8K")


def test_this_opencv_build_reports_its_gstreamer_backend():
    info = [line for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GStreamer:")]
    assert opencv_has_gstreamer() == bool(info and "YES" in info[0])


@pytest.mark.skipif(shutil.which("gst-inspect-1.0") is not None, reason="GStreamer is installed here")
def test_missing_gstreamer_names_the_theta_element_in_one_line():
    with pytest.raises(DeviceError) as exc:
        gstreamer_pano_source("theta")
    text = str(exc.value)
    assert "element thetauvcsrc is not available" in text and "GStreamer is not installed" in text
    assert "gstthetauvc" in text and "gstreamer1.0-tools" in text and "\n" not in text


def test_missing_element_is_named_when_gstreamer_is_there(inspect_without_theta):
    assert missing_gst_elements(theta_pipeline(), inspect_without_theta) == ["thetauvcsrc"]
    with pytest.raises(DeviceError, match="element thetauvcsrc is not available") as exc:
        gstreamer_pano_source("theta", inspect=inspect_without_theta)
    assert "GStreamer is not installed" not in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(DeviceError, match="ends in a sink"):
        gstreamer_pano_source("videotestsrc ! appsink", inspect=inspect_without_theta)


def test_record_with_a_missing_element_fails_in_one_line(capsys, tmp_path, inspect_without_theta, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")  # the stand-in gst-inspect-1.0 lies in tmp_path
    line = one_line_error(capsys, ["record", str(tmp_path / "session"), "--pano-gst", "theta", "--seconds", "1",
                                   "--min-free-gb", "0"])
    assert "thetauvcsrc" in line and "gstthetauvc" in line


def test_gst_launch_pipe_delivers_frames_then_ends(tmp_path, inspect_without_theta):
    w, h = 8, 4
    launcher = _script(tmp_path / "gst-launch-1.0", f"""
        import sys
        args = sys.argv[1:]
        assert args[0] == "-q" and args[-3:] == ["fdsink", "fd=1", "sync=false"], args
        for k in range(3):
            sys.stdout.buffer.write(bytes([40 * k + 10]) * ({w} * {h} * 3))
        sys.stdout.buffer.write(b"\\x01" * 7)  # a frame cut short: the pipeline stopped
        sys.stdout.flush()
        sys.stderr.write("ERROR: from element /GstPipeline:pipeline0/GstThetauvcsrc: device lost\\n")
    """)
    pipeline = f"videotestsrc ! videoconvert ! video/x-raw,format=BGR,width={w},height={h}"
    source = gstreamer_pano_source(pipeline, inspect=inspect_without_theta, launcher=[launcher], use_opencv=False,
                                   clock=SessionClock())
    assert isinstance(source, GstLaunchPanoSource)
    source.connect()
    source.start()
    frames = []
    with pytest.raises(EndOfStream, match="device lost"):
        for _ in range(10):
            frame = source.read(2.0)
            if frame is not None:
                frames.append(frame)
    source.stop()
    values = [int(f.image[0, 0, 0]) for f in frames]
    # a consumer slower than the pipe loses frames waiting in the queue (oldest first, bounded
    # latency), counted as drops: what arrives is in order, and nothing is lost uncounted
    assert values and values == sorted(set(values)) and set(values) <= {10, 50, 90}
    assert len(values) + source.health().drops == 3
    assert frames[0].image.shape == (h, w, 3) and source.info.width == w
    assert all(b.t_pano > a.t_pano for a, b in zip(frames, frames[1:]))  # arrival times


def test_opencv_path_asks_opencv_for_the_pipeline(inspect_without_theta):
    source = gstreamer_pano_source("videotestsrc ! videoconvert", inspect=inspect_without_theta, use_opencv=True)
    assert isinstance(source, UvcPanoSource) and source.device.endswith("! appsink drop=true max-buffers=2 sync=false")
    if not opencv_has_gstreamer():
        with pytest.raises(DeviceError, match="no camera"):
            source.connect()


def test_stopping_a_running_pipeline_ends_its_process(tmp_path, inspect_without_theta):
    launcher = _script(tmp_path / "gst-launch-1.0", """
        import sys, time
        sys.stdout.buffer.write(bytes(4 * 2 * 3))
        sys.stdout.flush()
        time.sleep(60)  # a camera that delivers one frame, then nothing
    """)
    source = gstreamer_pano_source("videotestsrc ! video/x-raw,format=BGR,width=4,height=2",
                                   inspect=inspect_without_theta, launcher=[launcher], use_opencv=False)
    assert source.read(5.0) is not None
    process = source._process
    source.stop()
    assert process.poll() is not None  # terminated, not left running
