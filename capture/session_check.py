"""Whether a session's streams fit together, checked before they are fused.

Each reader validates its own file (clocks that only move forward, ids and names in range). What no
single file shows is checked here: the 360 video against its timestamps, and the Kinect body
tracking against the 360 stream on the session clock. A mismatch that leaves nothing to fuse is
refused (:class:`InputError`); one that loses part of the session becomes a note, one line that
says what is lost and why, for the results report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from omnimocap.capture.pano import PanoTimestamps
from omnimocap.capture.session import PANO_FRAMES, PANO_VIDEO, DeviceEntry, Session
from omnimocap.errors import InputError

# A stretch of the 360 stream without body tracking shorter than this is the ordinary start-up skew
# of the devices, not a loss worth a note (seconds, session clock).
UNCOVERED_NOTE_S = 1.0


def video_frame_count(path: str | Path) -> int:
    """Frames stored in a video file: its complete video packets, counted without decoding (a
    long 360 video decodes for minutes). A cut-off last packet is not counted."""
    import av

    n = 0
    try:
        with av.open(str(path)) as container:
            for packet in container.demux(video=0):
                if packet.size and packet.pts is not None and not packet.is_corrupt:
                    n += 1
    except (av.error.FFmpegError, OSError, IndexError):
        pass  # the cut-off tail
    return n


def pano_frame_notes(session: Session, entry: DeviceEntry, stamps: PanoTimestamps) -> list[str]:
    """Compare the rows of ``pano_frames.csv`` with the frames of ``pano.mkv``: extra frames have
    no time and are not used, extra rows have no image."""
    video = session.path(entry.recording or PANO_VIDEO)
    csv_name = entry.timestamps or PANO_FRAMES
    listed, stored = len(stamps.t_pano), video_frame_count(video)
    if stored == 0:
        raise InputError(f"the 360 video holds no frame ({csv_name} lists {listed})", path=video,
                         fix="restore the video the recorder wrote")
    if stored > listed:
        return [f"{video.name} holds {stored} frames but {csv_name} lists {listed}: the last {stored - listed} "
                "have no time and are not used"]
    if stored < listed:
        return [f"{csv_name} lists {listed} frames but {video.name} holds {stored} (cut off): the last "
                f"{listed - stored}, from {stamps.t_pano[stored]:.2f} s on the 360 clock, have no image"]
    return []


def coverage_notes(t_kinect_session: np.ndarray, t_pano_session: np.ndarray, rig_path: str | Path) -> list[str]:
    """The 360 frames outside the time span of the Kinect body tracking (both in seconds on the
    session clock) get no hands; none inside it is refused, a loss of more than
    UNCOVERED_NOTE_S is a note."""
    t_k = np.asarray(t_kinect_session, dtype=np.float64)
    t_p = np.asarray(t_pano_session, dtype=np.float64)
    if len(t_k) == 0 or len(t_p) == 0:
        return []
    k0, k1 = float(np.min(t_k)), float(np.max(t_k))
    inside = (t_p >= k0) & (t_p <= k1)
    span = f"the Kinect body tracking ({k0:.2f} to {k1:.2f} s) and the 360 stream ({t_p.min():.2f} to {t_p.max():.2f} s)"
    if not inside.any():
        raise InputError(f"{span} do not overlap on the session clock", path=rig_path,
                         fix="a time map is wrong: run `omnimocap sync` again, or check the devices' timestamps")
    period = float(np.median(np.diff(t_p))) if len(t_p) > 1 else 0.0
    if (~inside).sum() * period <= UNCOVERED_NOTE_S:
        return []
    return [f"only {int(inside.sum())} of the {len(t_p)} 360 frames ({100.0 * inside.mean():.0f} %, "
            f"{t_p.min():.2f} to {t_p.max():.2f} s) lie within the Kinect body tracking ({k0:.2f} to {k1:.2f} s on the "
            "session clock): no hand is estimated in the others"]
