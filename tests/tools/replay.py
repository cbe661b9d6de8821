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
