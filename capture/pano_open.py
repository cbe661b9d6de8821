"""Opening the 360 camera a :class:`PanoConfig` names: a UVC webcam, a network stream, a GStreamer
pipeline or a video file, as a source stamping on the session clock."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from omnimocap.capture.session import PANO_FRAMES
from omnimocap.capture.sources import SessionClock, Source
from omnimocap.errors import UserError

SOURCE_FIELDS = ("pano_uvc", "pano_url", "pano_gst", "pano_file")


@dataclass
class PanoConfig:
    """Which 360 camera to open (at most one of ``pano_uvc``, ``pano_url``, ``pano_gst``,
    ``pano_file``) and its settings; the ``--pano-*`` options of ``record`` and ``gui``."""

    pano_uvc: str | None = None
    """360 camera in USB webcam mode: index (0) or device path."""
    pano_url: str | None = None
    """360 camera stream (rtsp://..., rtmp://...)."""
    pano_gst: str | None = None
    """360 camera through a GStreamer pipeline without its sink (gst-launch syntax), or 'theta' /
    'theta-2k' for a RICOH THETA Z1/V on Linux through gstthetauvc's thetauvcsrc."""
    pano_file: str | None = None
    """Equirectangular video file replayed in real time (with the pano_frames.csv beside it, its
    frame times)."""
    pano_size: str | None = None
    """Requested UVC size, WIDTHxHEIGHT in pixels, e.g. 3840x1920."""
    pano_fps: float | None = None
    """Requested UVC rate, frames per second."""
    pano_fourcc: str = "MJPG"
    """UVC FourCC: MJPG or H264."""
    pano_latency_ms: float = 0.0
    """Subtracted from the 360 frames' host arrival times, milliseconds."""
    pano_lenses: str | None = None
    """Two-lens model JSON (``omnimocap calibrate-lens``) of a camera that delivers its raw,
    unstitched dual-fisheye frames (an Insta360 X3/X4/X5 over USB); without it the frames are an
    equirectangular panorama."""

    @property
    def given(self) -> bool:
        """Whether a 360 camera is named."""
        return any(getattr(self, name) is not None for name in SOURCE_FIELDS)


def pano_size(text: str | None) -> tuple[int | None, int | None]:
    """``"3840x1920"`` -> (3840, 1920) pixels; (None, None) for no size."""
    if not text:
        return None, None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--pano-size {text!r} is not WIDTHxHEIGHT", fix="e.g. --pano-size 3840x1920") from None
    return w, h


def pano_source(config: PanoConfig, clock: SessionClock) -> Source | None:
    """The 360 source ``config`` names (None without one), stamping its frames on ``clock``."""
    from omnimocap.capture.pano_sources import (
        StreamPanoSource, UvcPanoSource, VideoFilePanoSource, gstreamer_pano_source,
    )

    named = [name for name in SOURCE_FIELDS if getattr(config, name) is not None]
    if len(named) > 1:
        options = " and ".join("--" + name.replace("_", "-") for name in named)
        raise UserError(f"{options} name more than one 360 camera", fix="keep one of them")
    if config.pano_lenses is not None:
        from omnimocap.capture.dual_fisheye import DualFisheyeSource, load_dual_fisheye

        if not named:
            raise UserError("--pano-lenses describes a 360 camera, and none is named",
                            fix="name it with --pano-uvc, --pano-url, --pano-gst or --pano-file")
        camera = load_dual_fisheye(config.pano_lenses)  # one line when missing or malformed, before any device opens
        inner = pano_source(replace(config, pano_lenses=None), clock)
        return DualFisheyeSource(inner, camera)
    latency = config.pano_latency_ms / 1000.0
    if config.pano_uvc is not None:
        device = int(config.pano_uvc) if config.pano_uvc.isdigit() else config.pano_uvc
        w, h = pano_size(config.pano_size)
        return UvcPanoSource(device, width=w, height=h, fps=config.pano_fps, fourcc=config.pano_fourcc,
                             latency_s=latency, clock=clock)
    if config.pano_url is not None:
        return StreamPanoSource(config.pano_url, latency_s=latency, clock=clock)
    if config.pano_gst is not None:
        return gstreamer_pano_source(config.pano_gst, latency_s=latency, clock=clock)
    if config.pano_file is not None:
        video = Path(config.pano_file)
        sidecar = video.parent / PANO_FRAMES
        return VideoFilePanoSource(video, timestamps=sidecar if sidecar.is_file() else None, latency_s=latency,
                                   clock=clock)
    return None
