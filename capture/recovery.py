"""Recovery of a killed recording: a session whose recorder never finalized it, opened as if it had.

The recorder (:mod:`omnimocap.capture.recorder`) writes every stream so that a SIGKILL loses at most
about a second: the body journals, the Kinect recordings and the 360 video grow on disk with the
manifest naming each file as soon as it exists. :func:`recover_session` reads what is there, in
memory only (readers never write into a session), and says what was lost.
"""

from __future__ import annotations

from pathlib import Path

from omnimocap.capture.bodies import JournalReader
from omnimocap.capture.pano import read_pano_timestamps
from omnimocap.capture.recorder import RESERVE_FILE
from omnimocap.capture.session import (
    MANIFEST, PANO_FRAMES, PANO_VIDEO, SIMULATION_DIR, Session, journal_name, kinect_recording_name,
)
from omnimocap.capture.session_check import video_frame_count
from omnimocap.errors import InputError


def recover_session(root: str | Path) -> tuple[Session, dict]:
    """Open a session as the recorder would have finalized it, without writing anything.

    A complete session is returned as it is. For one whose recorder was killed (status still
    ``recording``), the manifest is completed in memory only: a Kinect's body journal stands in for
    its ``bodies_<serial>.json`` (:func:`read_bodies` reads either; a torn last line is dropped), a
    Kinect recording or 360 video on disk that the manifest does not name yet is added when it has
    decodable frames (and left out, with a note, when it has none). What a killed recorder leaves
    that is not the session (the disk space it held back, a simulated rig's simulation) is named in
    the notes, not deleted. The session keeps status ``recording``. Raises :class:`InputError` when
    the manifest lists no device (a recording or simulation that stopped before any stream began).
    Returns the session and a summary: per device the frames found and the last device / host
    times, and ``notes`` (one line each) on what was lost."""
    session = Session.open(root)
    summary: dict = {"session": str(session.root), "recovered": False, "devices": {}, "notes": []}
    if session.complete:
        return session, summary
    if not session.manifest.devices:
        raise InputError("the session lists no device: its recording (or simulation) stopped before any stream "
                         "began", path=session.root / MANIFEST, fix="record it again")
    notes = summary["notes"]
    for entry in session.kinects():
        journal_path = session.path(journal_name(entry.serial))
        info: dict = {}
        if journal_path.is_file() and not (entry.bodies and session.path(entry.bodies).is_file()):
            journal = JournalReader(journal_path)
            captures, tracked, last = 0, 0, None
            for last in journal.frames():
                captures += 1
                tracked += last.get("bodies") is not None
            if tracked:
                entry.bodies = journal_path.name
            info.update(captures=captures, body_frames=tracked,
                        last_device_time=None if last is None else last["timestamp_usec"] / 1e6,
                        last_host_time=None if last is None else last.get("host_time"))
            notes.append(f"{entry.name}: {captures} captures ({tracked} tracked) up to "
                         f"{'-' if last is None else format(last.get('host_time', float('nan')), '.2f')} s"
                         + (", the last line cut off" if journal.torn else ""))
        mkv = session.path(entry.recording or kinect_recording_name(entry.serial))
        entry.recording = None
        if mkv.is_file():
            captures = _kinect_captures(mkv)
            info["recording_captures"] = captures
            if captures:
                entry.recording = mkv.name
            else:
                notes.append(f"{mkv.name}: no complete capture (cut off in its header); left out")
        summary["devices"][entry.name] = info
    for entry in (d for d in session.manifest.devices if d.kind == "pano"):
        csv_path = session.path(entry.timestamps or PANO_FRAMES)
        video = session.path(entry.recording or PANO_VIDEO)
        entry.recording = entry.timestamps = None
        if not csv_path.is_file() or not video.is_file():
            notes.append("pano: no frames were written")
            continue
        try:
            stamps = read_pano_timestamps(csv_path)
        except InputError:
            notes.append(f"{csv_path.name}: no readable frame times; the 360 stream is left out")
            continue
        decodable = video_frame_count(video)
        if decodable == 0:
            notes.append(f"{video.name}: no decodable frame; the 360 stream is left out")
            continue
        entry.recording, entry.timestamps = video.name, csv_path.name
        if entry.width is None or entry.height is None:
            entry.width, entry.height = _video_size(video)
        n = min(decodable, len(stamps.t_pano))
        summary["devices"][entry.name] = {"frames": n, "frames_listed": len(stamps.t_pano),
                                          "last_pano_time": float(stamps.t_pano[n - 1]),
                                          "last_host_time": float(stamps.t_host[n - 1])}
        notes.append(f"pano: {n} decodable frames up to {stamps.t_host[n - 1]:.2f} s"
                     + (f" ({len(stamps.t_pano) - n} more listed in {csv_path.name} were cut off)"
                        if n < len(stamps.t_pano) else ""))
    if session.path(RESERVE_FILE).is_file():
        notes.append(f"{RESERVE_FILE} is disk space the recorder held back for finalizing; it is not part of the "
                     "session and can be deleted")
    if session.path(SIMULATION_DIR).is_dir():
        notes.append(f"{SIMULATION_DIR} holds the simulation this recording replayed; it is not part of the "
                     "session and can be deleted")
    summary["recovered"] = True
    return session, summary


def _kinect_captures(path: Path) -> int:
    """Complete captures of a Kinect recording (0 when it does not open), colour not decoded."""
    from omnimocap.capture.kinect_mkv import KinectRecording

    try:
        return sum(1 for _ in KinectRecording(path).captures(decode_color=False))
    except InputError:
        return 0


def _video_size(path: Path) -> tuple[int | None, int | None]:
    import av

    try:
        with av.open(str(path)) as container:
            context = container.streams.video[0].codec_context
            return context.width, context.height
    except (av.error.FFmpegError, OSError, IndexError):
        return None, None
