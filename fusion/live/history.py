"""The recent past of every live Kinect, the window the live hand stage looks at: body frames
(:class:`BodyHistory`) and depth images (:class:`RecentDepthFrames`), each bounded in length so the
per-frame cost of the live preview never grows with the session. Session clock, seconds; world
frame, metres.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from omnimocap.capture.people import bridge_gaps
from omnimocap.capture.sources import KinectBody
from omnimocap.data.skeletons import KINECT_JOINTS
from omnimocap.fusion.depth_cue import DepthFrames
from omnimocap.fusion.pipeline import PeopleTracks
from omnimocap.geometry.cameras import PinholeCamera
from omnimocap.geometry.transforms import transform_points


class BodyHistory:
    """Recent body frames of one Kinect (a few seconds, session clock), for interpolating wrists to
    pano times. Frames whose body tracking did not run are left out."""

    def __init__(self, seconds: float = 2.0):
        self.seconds = seconds
        self.frames: deque[tuple[float, dict[int, KinectBody]]] = deque()

    def add(self, t_session: float, bodies: dict[int, KinectBody] | None) -> None:
        if bodies is None:
            return
        if self.frames and t_session <= self.frames[-1][0]:
            self.frames.clear()  # a restarted device clock: the old samples no longer line up
        self.frames.append((t_session, bodies))
        while self.frames and t_session - self.frames[0][0] > self.seconds:
            self.frames.popleft()

    def people(self, T_world_kinect: np.ndarray, bridge_s: float = 0.0) -> PeopleTracks:
        """The history as the offline pipeline's :class:`~omnimocap.fusion.pipeline.PeopleTracks`
        (world frame, session clock), each body's drop-outs of at most ``bridge_s`` seconds bridged
        as ``process`` bridges them (``capture.people.bridge_gaps``)."""
        frames = list(self.frames)
        ids = sorted({i for _, bodies in frames for i in bodies})
        joints = np.full((len(ids), len(frames), len(KINECT_JOINTS), 3), np.nan)
        conf = np.zeros((len(ids), len(frames), len(KINECT_JOINTS)))
        for k, (_, bodies) in enumerate(frames):
            for p, body_id in enumerate(ids):
                body = bodies.get(body_id)
                if body is not None:
                    joints[p, k] = body.positions
                    conf[p, k] = body.confidences
        joints = transform_points(T_world_kinect, joints)
        t = np.array([t for t, _ in frames])
        for p in range(len(ids)):
            joints[p] = bridge_gaps(t, joints[p], np.zeros(joints.shape[1:3]), bridge_s)[0]
        return PeopleTracks(t, ids, joints, conf)


class RecentDepthFrames(DepthFrames):
    """The newest depth images of one live Kinect, with the interface the depth cue reads
    (``fusion.depth_cue.depth_shift``): ``t_session``, ``frame_period_s``, ``nearest``, ``image``,
    ``camera``, ``T_depth_world``. Holds at most ``keep`` images."""

    def __init__(self, sensor: str, camera: PinholeCamera, keep: int = 8):
        """``camera``: the Kinect's depth camera in its stream's depth mode, pixels."""
        self.sensor = sensor
        self.camera = camera
        self.T_depth_world = np.eye(4)  # set from the rig in use before each look
        self._frames: deque[tuple[float, np.ndarray]] = deque(maxlen=keep)

    def frozen(self) -> "RecentDepthFrames":
        """A copy holding the images held now (the images are shared, not copied): what one preview
        pass reads while the pipeline adds newer frames to this one."""
        copy = RecentDepthFrames(self.sensor, self.camera, self._frames.maxlen or 8)
        copy.T_depth_world = self.T_depth_world
        copy._frames.extend(tuple(self._frames))
        return copy

    def add(self, t_session: float, depth_mm: np.ndarray | None) -> None:
        """A depth image (uint16 (H, W) millimetres) at ``t_session``; older ones than the newest
        are dropped (a restarted clock)."""
        if depth_mm is None:
            return
        if self._frames and t_session <= self._frames[-1][0]:
            self._frames.clear()
        self._frames.append((float(t_session), depth_mm))

    @property
    def t_session(self) -> np.ndarray:
        return np.array([t for t, _ in self._frames])

    @property
    def frame_period_s(self) -> float:
        t = self.t_session
        return float(np.median(np.diff(t))) if len(t) > 1 else 1.0 / 30.0

    def image(self, i: int) -> np.ndarray | None:
        return self._frames[i][1] if 0 <= i < len(self._frames) else None

    def __len__(self) -> int:
        return len(self._frames)
