"""Recording from devices: the Azure Kinects named by index (the first the wired-sync master when
there are several) and the 360 camera a :class:`PanoConfig` names, recorded into a session folder."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

from omnimocap.capture.pano_open import PanoConfig, pano_source
from omnimocap.capture.recorder import RecordConfig, RecordingRig, RecordResult, record_session
from omnimocap.capture.sources import SessionClock


def kinect_roles(count: int) -> list[str]:
    """Wired-sync roles of ``count`` Kinects: one alone is standalone, else the first is the master."""
    return ["standalone"] if count == 1 else ["master"] + ["subordinate"] * (count - 1)


def open_device_rig(pano: PanoConfig, kinect_ids: Sequence[int] = (), kinect=None) -> RecordingRig:
    """The 360 camera ``pano`` names and the Kinects ``kinect_ids`` (device indices), on one new
    session clock. ``kinect`` is a :class:`~omnimocap.capture.kinect_live.KinectDeviceConfig`
    whose settings every Kinect takes (its ``device_id`` and ``role`` are replaced)."""
    clock = SessionClock()
    pano_camera = pano_source(pano, clock)
    sources = []
    if kinect_ids:
        from omnimocap.capture.kinect_live import KinectDeviceConfig, KinectRig

        kinect = kinect or KinectDeviceConfig()
        configs = [replace(kinect, device_id=i, role=role) for i, role in zip(kinect_ids, kinect_roles(len(kinect_ids)))]
        sources.extend(KinectRig(configs, clock).open())
    if pano_camera is not None:
        sources.append(pano_camera)
    return RecordingRig(clock, sources)


def record_devices(out_dir: str | Path, config: RecordConfig, pano: PanoConfig, kinect_ids: Sequence[int] = (),
                   kinect=None) -> RecordResult:
    """Record the devices (see :func:`open_device_rig`) into ``out_dir`` (see
    :func:`~omnimocap.capture.recorder.record_session`)."""
    return record_session(out_dir, config, lambda _: open_device_rig(pano, kinect_ids, kinect))
