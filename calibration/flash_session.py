"""``sync --flash`` on a session: the 360 camera's time map from flashes (a light switched on, a
lamp) that both the 360 camera and the reference (first) Kinect's colour camera see.

Every frame's mean brightness is read (the 360 camera's by capture-time group of its pixels when
the rig's ``pano_optics`` has a rolling shutter or an exposure), the rising steps are located to a
fraction of a frame in each stream (calibration/flash_sync.py), the Kinect's on the session clock through the rig's time
map of that Kinect, and paired under the host-arrival map of the 360 frames: one flash fixes the
offset (the rate stays that of the host arrival times), two or more at least
``min_rate_span_s`` apart fit rate and offset. Times in seconds, brightness in grey levels.
"""

from __future__ import annotations

import sys

import numpy as np
from tqdm import tqdm

from omnimocap.calibration.coarse_sync import coarse_time_map
from omnimocap.calibration.config import FlashSyncConfig
from omnimocap.calibration.flash_sync import (TimeBands, align_flash_events, flash_events, frame_brightness,
                                               pair_flash_events)
from omnimocap.capture.kinect_mkv import KinectRecording
from omnimocap.capture.pano import PanoReader
from omnimocap.capture.rig import Rig, TimeMap
from omnimocap.capture.session import MANIFEST, Session
from omnimocap.errors import InputError, UserError


def flash_time_map(session: Session, previous: Rig, config: FlashSyncConfig, progress: bool = False
                   ) -> tuple[TimeMap, dict, dict, dict]:
    """The 360 camera's time map from flashes, its residuals (with ``warnings``: lines for the
    user), the rig.json inputs (the events used) and the verb's result (residuals and events).
    Raises :class:`UserError` without a reference Kinect recording with colour, without a flash in
    either video, or without a pair of them within ``config.tolerance_s`` under the host-arrival map."""
    entry = session.kinects()[0]
    recording = _reference_recording(session)
    pano = session.pano()
    timestamps = session.pano_frames_path(pano)
    reader = PanoReader(session.path(pano.recording), timestamps)
    stamps = reader.timestamps
    coarse = coarse_time_map(stamps.t_pano, stamps.t_host)
    if not coarse.a > 0:
        raise InputError(f"the host arrival times run backwards against the 360 camera's clock (rate {coarse.a:.4f})",
                         path=timestamps, fix="the t_host column is damaged; restore the file the recorder wrote")
    pano_index, pano_y, bands = _pano_brightness(reader, previous, progress)
    kinect_t, kinect_y = _kinect_brightness(recording, previous.time_map(entry.name), progress)
    warnings = _cut_off_warnings(reader, recording, pano_index, kinect_t, session.pano_frames_path(pano).name)
    pano_events, kinect_events = _events(reader, recording, stamps.t_pano[pano_index], pano_y, kinect_t, kinect_y,
                                         config, bands)
    pairs = pair_flash_events(pano_events, kinect_events, coarse, config.tolerance_s)
    if not len(pairs):
        raise UserError(f"none of the {len(pano_events)} flash(es) of the 360 video lies within "
                        f"{config.tolerance_s:g} s of one of the {len(kinect_events)} of the Kinect video under the "
                        "host arrival times", path=timestamps,
                        fix="check that both cameras saw the same flashes and that the host arrival times are right")
    time_map = align_flash_events(pano_events, kinect_events, coarse, config)
    rate_from = "flashes" if np.ptp(pairs[:, 0]) >= config.min_rate_span_s else "host arrival times"
    events = [{"t_pano": float(tp), "t_session": float(ts)} for tp, ts in pairs]
    residuals = {"method": "flash", "residual_rms_ms": time_map.residual_rms_ms, "rate_from": rate_from,
                 "events_used": len(pairs), "pano_events": len(pano_events), "kinect_events": len(kinect_events),
                 "warnings": warnings}
    inputs = {"flash_recording": entry.recording, "flash_events": events}
    return time_map, residuals, inputs, {**residuals, "events": events}


def _reference_recording(session: Session) -> KinectRecording:
    """The reference Kinect's recording; :class:`InputError` without one or without colour."""
    entry = session.kinects()[0]
    if not entry.recording:
        raise InputError(f"the reference Kinect {entry.serial} has no recording to find the flashes in",
                         path=session.root / MANIFEST,
                         fix="record the Kinects' colour video, or sync without --flash")
    recording = KinectRecording(session.path(entry.recording))
    if recording.color_mode is None:
        raise InputError("the recording has no colour track to find the flashes in", path=recording.path,
                         fix="record with colour on, or sync without --flash")
    return recording


def _pano_brightness(reader: PanoReader, rig: Rig, progress: bool) -> tuple[list[int], list, TimeBands | None]:
    """Indices of the 360 frames that decode and their mean brightness: one value per frame for an
    ideal camera, one per capture-time group (the groups returned) for a camera whose rows are
    exposed at their own times or over an exposure (``rig.pano_optics``)."""
    pano_index, pano_y, bands = [], [], None
    with tqdm(total=len(reader), desc="flash: 360 frames", unit="frame", disable=not progress, file=sys.stderr) as bar:
        for i, frame in reader.frames():
            if bands is None and rig.pano_optics.readout_s + rig.pano_optics.exposure_s > 0:
                bands = TimeBands.for_panorama(rig.pano_optics, frame.shape[1], frame.shape[0])
            pano_index.append(i)
            pano_y.append(bands.brightness(frame) if bands is not None else frame_brightness(frame))
            bar.update()
    return pano_index, pano_y, bands


def _kinect_brightness(recording: KinectRecording, kinect_map: TimeMap, progress: bool
                       ) -> tuple[list[float], list[float]]:
    """Session times (through ``kinect_map``) and mean brightness of the recording's colour frames."""
    kinect_t, kinect_y = [], []
    with tqdm(desc="flash: Kinect colour frames", unit="frame", disable=not progress, file=sys.stderr) as bar:
        for capture in recording.captures():
            if capture.color is not None:
                kinect_t.append(kinect_map.to_session(capture.color_timestamp))
                kinect_y.append(frame_brightness(capture.color))
            bar.update()
    return kinect_t, kinect_y


def _cut_off_warnings(reader: PanoReader, recording: KinectRecording, pano_index: list[int], kinect_t: list[float],
                      timestamps_name: str) -> list[str]:
    """Lines for the user when either video is cut off (flashes after its end are not seen)."""
    stamps = reader.timestamps
    warnings = []
    if len(pano_index) < len(reader):
        warnings.append(f"{reader.video_path}: only {len(pano_index)} of the {len(reader)} frames listed in "
                        f"{timestamps_name} decode (the video is cut off); flashes after "
                        f"{stamps.t_pano[pano_index[-1]] if pano_index else stamps.t_pano[0]:.2f} s (360 clock) are not seen")
    if recording.truncated:
        warnings.append(f"{recording.path}: the recording is cut off ({'; '.join(recording.problems)}); "
                        f"flashes after its last colour frame at {max(kinect_t, default=float('nan')):.2f} s "
                        "(session clock) are not seen")
    return warnings


def _events(reader: PanoReader, recording: KinectRecording, pano_t: np.ndarray, pano_y: list[float],
            kinect_t: list[float], kinect_y: list[float], config: FlashSyncConfig, bands: TimeBands | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Flash times of the 360 video (360 clock) and of the Kinect's colour video (session clock);
    :class:`UserError` when either has none."""
    how = (f"no flash (a rise in mean brightness of at least {config.min_step:g} grey levels, held for "
           "a few frames) was found")
    fix = ("switch a light on in view of the 360 camera and the reference Kinect while recording, "
           "or sync without --flash")
    pano_events = _brightness_events(pano_t, pano_y, config, bands)
    if not len(pano_events):
        raise UserError(f"{how} in the 360 video", path=reader.video_path, fix=fix)
    if not kinect_y:
        raise InputError("the recording has no colour frames to find the flashes in", path=recording.path, fix=fix)
    kinect_events = _brightness_events(kinect_t, kinect_y, config)
    if not len(kinect_events):
        raise UserError(f"{how} in the reference Kinect's colour video", path=recording.path, fix=fix)
    return pano_events, kinect_events


def _brightness_events(times, brightness, config: FlashSyncConfig, bands: TimeBands | None = None) -> np.ndarray:
    """Flash times in a stream: rising steps of at least ``config.min_step`` grey levels, or of half
    the stream's brightness range when that is larger (of the frames' mean, over ``bands`` when the
    brightness is per capture-time group)."""
    yb = np.asarray(brightness, dtype=np.float64)
    if len(yb) == 0:
        return np.zeros(0)
    y = yb @ bands.counts / bands.counts.sum() if bands is not None else yb
    step = max(config.min_step, 0.5 * float(np.percentile(y, 99) - np.percentile(y, 1)))
    return flash_events(np.asarray(times, dtype=np.float64), yb, min_step=step, bands=bands)
