"""What a live session shows of its Kinects and its scene: each Kinect's newest frame as a pane (the
colour image decoded once, the skeletons projected onto it with the stream's factory calibration)
and the world-frame scene (:class:`~omnimocap.fusion.live.state.WorldState`) that the panes and the
hand preview make. Skeletons in a pane are metres in that Kinect's depth frame; the scene is world
frame (y up), metres."""

from __future__ import annotations

from typing import Callable

import numpy as np

from omnimocap.capture.kinect_calibration import KinectCalibration
from omnimocap.capture.kinect_live import stream_calibration
from omnimocap.capture.rig import Rig
from omnimocap.capture.sources import KinectFrame, Source
from omnimocap.errors import UserError
from omnimocap.fusion.live.body import LiveBody
from omnimocap.fusion.live.feeds import Released, session_time
from omnimocap.fusion.live.preview import HandHold, PreviewResult
from omnimocap.fusion.live.state import KinectPane, WorldState
from omnimocap.geometry.transforms import transform_points


# A Kinect pane whose colour must be decoded from JPEG is made at most this often (the window draws
# the Kinect panes at 15 Hz): decoding 720p JPEGs at 30 Hz per Kinect costs a live session a third
# of a core.
JPEG_PANE_MAX_HZ = 15.0


class KinectPanes:
    """The newest frame of every Kinect (``latest``, by source name) and what it takes to draw it.
    ``warn(source, text)`` reports a Kinect whose calibration cannot be read (once per source)."""

    def __init__(self, warn: Callable[[str, str], None], jpeg_max_hz: float = JPEG_PANE_MAX_HZ):
        """``jpeg_max_hz``: a Kinect whose colour arrives as JPEG bytes gets a new pane at most this
        often (its newest frame when the pane is older than the period; the frame decoded and its
        skeletons drawn together); 0: every frame."""
        self.latest: dict[str, Released] = {}
        self.jpeg_max_hz = jpeg_max_hz
        self._panes: dict[str, tuple[Released, Rig, KinectPane]] = {}
        self._images: dict[str, tuple[int, np.ndarray | None]] = {}
        self._calibrations: dict[str, KinectCalibration | None] = {}
        self._warn = warn

    def clear(self) -> None:
        """Forget every source's frames (a new set of sources)."""
        self.latest.clear()
        self._panes.clear()

    def calibration(self, source: Source) -> KinectCalibration | None:
        """The source's factory calibration in its stream's modes (None without one), read once."""
        if source.name not in self._calibrations:
            try:
                self._calibrations[source.name] = stream_calibration(source.info)
            except UserError as exc:
                self._calibrations[source.name] = None
                self._warn(source.name, f"{source.name}: skeletons not drawn on colour ({exc})")
        return self._calibrations[source.name]

    def pane(self, source: Source, rig: Rig) -> KinectPane:
        """The source's newest frame as a pane (empty before its first frame); made once per frame
        and, for JPEG colour, at most ``jpeg_max_hz`` times a second."""
        released = self.latest.get(source.name)
        if released is None:
            return KinectPane(source.name, float("nan"), None, {}, {})
        cached = self._panes.get(source.name)
        if cached is not None and cached[1] is rig:
            shown, _, pane = cached
            if shown is released or (isinstance(released.frame.color, bytes) and self.jpeg_max_hz > 0 and
                                     0.0 <= released.released_wall - shown.released_wall < 1.0 / self.jpeg_max_hz):
                return pane
        pane = self._pane(source, rig, released)
        self._panes[source.name] = (released, rig, pane)
        return pane

    def _pane(self, source: Source, rig: Rig, released: Released) -> KinectPane:
        frame = released.frame
        skeletons = {i: b.positions for i, b in (frame.bodies or {}).items()}
        color = self._color_image(source.name, frame)
        calib = self.calibration(source)
        color_px = {}
        if color is not None and calib is not None:
            color_px = {i: calib.color.project(transform_points(calib.T_color_depth, p)) for i, p in skeletons.items()}
        return KinectPane(source.name, session_time(rig, source.name, frame), color, skeletons, color_px)

    def _color_image(self, name: str, frame: KinectFrame) -> np.ndarray | None:
        """The frame's colour image as BGR; an MJPG stream's JPEG is decoded once per frame."""
        if not isinstance(frame.color, bytes):
            return frame.color
        cached = self._images.get(name)
        if cached is None or cached[0] != frame.frame_id:
            import cv2

            cached = (frame.frame_id, cv2.imdecode(np.frombuffer(frame.color, np.uint8), cv2.IMREAD_COLOR))
            self._images[name] = cached
        return cached[1]


def world_state(kinects: list[KinectPane], rig: Rig, result: PreviewResult | None, hold: HandHold,
                reference_frame: Released | None, body: LiveBody | None = None) -> WorldState:
    """The scene: every placed Kinect's skeletons in the world, the reference Kinect's (the first)
    people, the preview's hands and the held ones, every sensor's pose, and ``body``'s fitted
    bodies; ``reference_frame``: the reference Kinect's newest frame (with the preview's panorama
    frame and the fitted bodies' time, the pose's key)."""
    skeletons = {f"{pane.name}/{i}": transform_points(rig.T_world_sensor[pane.name], joints)
                 for pane in kinects if pane.name in rig.T_world_sensor
                 for i, joints in pane.skeletons_depth.items()}
    fitted = {} if body is None else body.bodies
    reference = kinects[0] if kinects else None
    bodies = {} if reference is None else \
        {i: skeletons[f"{reference.name}/{i}"] for i in reference.skeletons_depth if f"{reference.name}/{i}" in skeletons}
    return WorldState(
        skeletons=skeletons,
        hands=list(result.hands_world) if result is not None else [],
        sensor_poses=dict(rig.T_world_sensor),
        bodies=bodies,
        person_hands=dict(hold.hands),
        hand_status={k: v for k, v in hold.status.items() if k[0] in bodies},
        t_session=result.pano.t_session if result is not None else float("nan"),
        frame_key=(None if reference_frame is None else (reference_frame.frame.frame_id, reference_frame.released_wall),
                   None if result is None else (result.pano.index, result.pano.released_wall),
                   max((b.t_session for b in fitted.values()), default=None)),
        fitted=dict(fitted),
        body_faces=None if body is None else body.faces)
