"""The live hand preview: the hand stage of ``omnimocap process`` on the newest panorama frame.

:class:`LivePreview` runs :class:`~omnimocap.fusion.frame_stage.HandStage` (views, hand estimator,
association to the skeleton's side, lifting on the weighted Kinect hand joints, depth cue) with the
same :class:`~omnimocap.fusion.pipeline.ProcessConfig`, so a frame gives the hand ``process`` gives.
Live differs only where it cannot see what ``process`` sees:

- the Kinect joints are the reference Kinect's last ``BodyHistory.seconds`` (process fuses every
  Kinect's skeleton per person, ``capture.skeleton_fusion``); their smoothing and their
  interpolation to the frame's time use the frames that have arrived, so the newest panorama frame
  is often extrapolated (at most 50 ms) where process interpolates, and the smoother has no future;
  a body's drop-out is bridged as process bridges it (``PeopleConfig.bridge_s``) once the body is
  seen again, not while it is missing;
- the noise of the Kinect joints (the smoother's strength, the depth prior) is measured over that
  history, not over the whole session;
- the hand centre's velocity, which carries a hand to a depth frame's time, is a central difference
  over +/- ``VELOCITY_STEP_S`` of the Kinect prediction in both, so its later half is extrapolated
  live (or missing: then only depth frames within 5 ms are used);
- the depth cue reads the newest depth images of each Kinect (``RecentDepthFrames``);
- frames the display skips are never looked at, so side runs (``SideConsistency``) count only the
  frames the preview saw.

World frame y up, metres; session clock, seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from omnimocap.capture.rig import Rig
from omnimocap.data.skeletons import KINECT_BODY_FOR_FIT, SIDES
from omnimocap.fusion.filtering import estimate_noise_std
from omnimocap.fusion.frame_stage import (
    PREDICTED_JOINT_COLUMNS, HandStage, ObservedView, hand_centre_velocity, joint_depth_std, predicted_hands, smooth_anchors,
)
from omnimocap.fusion.live.feeds import Released
from omnimocap.fusion.live.history import BodyHistory, RecentDepthFrames
from omnimocap.fusion.lifting import LiftedHand
from omnimocap.fusion.live.state import HAND_HELD, HAND_LOST, HAND_SEEN, HandView, PanoPane
from omnimocap.fusion.pipeline import PeopleTracks, ProcessConfig
from omnimocap.geometry.cameras import DualFisheyeCamera, EquirectCamera
from omnimocap.geometry.transforms import invert_pose
from omnimocap.geometry.views import view_pixel_to_pano_bearing
from omnimocap.hands.estimator import HandEstimator

# Points along each edge of a view's border when it is drawn into the panorama.
OUTLINE_POINTS_PER_EDGE = 24
# The Kinect joints smoothed per frame: those the hands are predicted from and those the body is
# fitted to (each coordinate is smoothed on its own, so the hands come out as with these alone).
SMOOTHED_JOINT_COLUMNS = sorted(set(PREDICTED_JOINT_COLUMNS) | set(KINECT_BODY_FOR_FIT))


@dataclass
class PreviewResult:
    """``hands_by``: (body id, side) -> lifted hand (21,3, world); ``lifted_by``: the same hands
    with their rotations (:class:`~omnimocap.fusion.lifting.LiftedHand`); ``wrists``: (body id,
    side) -> the Kinect wrist predicted at the frame's time (3, world) for every planned view;
    ``views``: the stage's outcome of every planned view; ``anchors``: the reference Kinect's
    recent people, world frame, smoothed (``SMOOTHED_JOINT_COLUMNS``), that the stage ran on."""

    pano: PanoPane
    hand_views: list[HandView]
    hands_world: list[np.ndarray]
    hands_by: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)
    wrists: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)
    views: list[ObservedView] = field(default_factory=list)
    lifted_by: dict[tuple[int, str], LiftedHand] = field(default_factory=dict)
    anchors: PeopleTracks | None = None


class LivePreview:
    """The hand stage on one panorama frame at a time (see the module docstring for where it
    differs from ``process``). ``rig`` and ``estimator`` may be replaced between frames (a new
    calibration, a backend loaded later); a new rig restarts the side runs."""

    def __init__(self, rig: Rig, pano_cam: EquirectCamera | DualFisheyeCamera, reference_kinect: str,
                 config: ProcessConfig, estimator: HandEstimator | None = None,
                 depth: dict[str, RecentDepthFrames] | None = None):
        """``pano_cam``: the 360 stream's camera (an equirectangular panorama, or the lens model of
        raw dual-fisheye frames, whose views are cut from the lenses as ``process`` cuts them);
        ``depth``: each Kinect's recent depth images (filled by the driver), by sensor name."""
        self.pano_cam = pano_cam
        self.reference_kinect = reference_kinect
        self.config = config
        self.depth = {} if depth is None else depth
        self._estimator = estimator
        self.rig = rig

    @property
    def rig(self) -> Rig:
        return self._rig

    @rig.setter
    def rig(self, rig: Rig) -> None:
        self._rig = rig
        pose = rig.T_world_sensor.get("pano", np.eye(4))
        self.stage = HandStage(self.config, self._estimator, pose, self.pano_cam, optics=rig.pano_optics)

    @property
    def estimator(self) -> HandEstimator | None:
        return self._estimator

    @estimator.setter
    def estimator(self, estimator: HandEstimator | None) -> None:
        self._estimator = estimator
        self.rig = self._rig

    def run(self, released: Released, t_session: float, history: BodyHistory, render: bool,
            frame_index: int | None = None) -> PreviewResult:
        """The stage on the panorama frame ``released`` at ``t_session`` (its time on the session
        clock), on the reference Kinect's ``history``. ``render`` False: predicted wrists and view
        outlines only (no images, no backend call). ``frame_index``: the frame's index in its
        recording, which the hand backend's requests carry (a looped replay's frames count on past
        it, :class:`~omnimocap.capture.replay.ReplayLoop`); default the frame's own index."""
        frame = released.frame
        cfg = self.config
        people = history.people(self.rig.pose(self.reference_kinect), cfg.people.bridge_s)
        noise = np.array([estimate_noise_std(j) for j in people.joints])
        anchors = smooth_anchors(people, noise, cfg, SMOOTHED_JOINT_COLUMNS)
        t = np.array([t_session])
        pred = predicted_hands(anchors, t)
        self.stage.depth_frames = self._depth_frames()
        velocity = hand_centre_velocity(anchors, t, cfg.depth.arm_anchor) if self.stage.depth_frames else None
        joint_std = joint_depth_std(people, cfg.joint_depth_floor_m, cfg.depth.arm_anchor, cfg.depth.wrist_floor_m)
        index = frame.index if frame_index is None else frame_index
        views = self.stage.run(pred, t, [0], people.person_ids, index, joint_std, velocity,
                               frames={0: frame.image}, render=render, estimate=render, anchors=anchors)
        result = self._result(released, t_session, views, pred, people.person_ids, render)
        result.anchors = anchors
        return result

    def _depth_frames(self) -> list[RecentDepthFrames]:
        """The depth streams the depth cue can read now: Kinects with images and a pose in the rig."""
        if not self.config.depth_cue:
            return []
        frames = []
        for name, recent in list(self.depth.items()):  # the pipeline thread may add a Kinect meanwhile
            if len(recent) and name in self.rig.T_world_sensor:
                recent = recent.frozen()  # and newer images
                recent.T_depth_world = invert_pose(self.rig.pose(name))
                frames.append(recent)
        return frames

    def _result(self, released: Released, t_session: float, views: list[ObservedView], pred, person_ids,
                render: bool) -> PreviewResult:
        """What the view draws: predicted wrists and view outlines in the panorama, the hand views
        and the lifted hands."""
        result = PreviewResult(PanoPane(released.frame.index, t_session, released.released_wall, released.frame.image,
                                        [], []), [], [], views=views)
        for ov in views:
            pv = ov.planned
            key = (int(person_ids[pv.person]), SIDES[pv.side])
            result.wrists[key] = pred["wrist"][pv.person, pv.k, pv.side]
            if np.all(np.isfinite(pv.wrist_pano)):
                result.pano.wrists_px.append((key[0], key[1], frame_pixels(self.pano_cam, pv.wrist_pano)))
            result.pano.view_outlines.append(view_outline(pv.view, self.pano_cam))
            if ov.lifted is not None:
                result.hands_world.append(ov.lifted.joints)
                result.hands_by[key] = ov.lifted.joints
                result.lifted_by[key] = ov.lifted
            if render:
                keypoints = ov.observation.keypoints_2d if ov.lifted is not None else None
                result.hand_views.append(HandView(key[0], key[1], ov.request.image_bgr, ov.request.predicted_box_xyxy,
                                                  keypoints))
        return result


def frame_pixels(pano_cam: EquirectCamera | DualFisheyeCamera, dirs: np.ndarray) -> np.ndarray:
    """Camera-frame directions (...,3) -> pixels (...,2) of the 360 stream's frames: the panorama's,
    or those of the lens that sees each direction in a raw dual-fisheye frame (NaN where none)."""
    if isinstance(pano_cam, DualFisheyeCamera):
        return pano_cam.project(dirs, points=False)
    return pano_cam.bearing_to_pixel(dirs)


def view_outline(view, pano_cam: EquirectCamera | DualFisheyeCamera,
                 per_edge: int = OUTLINE_POINTS_PER_EDGE) -> np.ndarray:
    """The border of a wrist-centred view (its outermost pixel centres) as frame pixels (N,2),
    closed, with a NaN row inserted wherever the line crosses the longitude seam (or, in a raw
    dual-fisheye frame, passes from one lens's image to the other's)."""
    last = view.size - 1
    s = np.linspace(0.0, last, per_edge, endpoint=False)
    edge = np.concatenate([np.stack([s, np.zeros_like(s)], 1), np.stack([np.full_like(s, last), s], 1),
                           np.stack([last - s, np.full_like(s, last)], 1), np.stack([np.zeros_like(s), last - s], 1),
                           [[0.0, 0.0]]])
    px = frame_pixels(pano_cam, view_pixel_to_pano_bearing(view, edge))
    limit = pano_cam.width / (4 if isinstance(pano_cam, DualFisheyeCamera) else 2)
    jumps = np.nonzero(np.abs(np.diff(px[:, 0])) > limit)[0]
    return np.insert(px, jumps + 1, np.nan, axis=0)


class HandHold:
    """Each tracked hand's status after a panorama frame: seen (lifted in this frame), held (seen
    within ``hold_s`` session seconds before: the last hand moved by the wrist's motion since) or
    lost. ``hands``: (body id, side) -> hand (21,3, world) seen or held; ``lifted``: the same hands'
    lifted parameters (a held hand's are those it was seen with: its rotations do not move);
    ``status``: (body id, side) -> seen | held | lost for every hand with a planned view."""

    def __init__(self, hold_s: float):
        self.hold_s = hold_s
        self._memory: dict[tuple[int, str], tuple[float, np.ndarray, np.ndarray]] = {}
        self._seen: dict[tuple[int, str], LiftedHand] = {}
        self.hands: dict[tuple[int, str], np.ndarray] = {}
        self.lifted: dict[tuple[int, str], LiftedHand] = {}
        self.status: dict[tuple[int, str], str] = {}

    def update(self, t_session: float, result: PreviewResult) -> None:
        memory = self._memory
        for key in [k for k, (t, _, _) in memory.items() if not 0.0 <= t_session - t <= self.hold_s]:
            del memory[key]
            self._seen.pop(key, None)
        hands, lifted, status = {}, {}, {}
        for key, wrist in result.wrists.items():
            if key in result.hands_by:
                hands[key] = result.hands_by[key]
                memory[key] = (t_session, result.hands_by[key], wrist)
                if key in result.lifted_by:
                    self._seen[key] = result.lifted_by[key]
                status[key] = HAND_SEEN
            elif key in memory and np.all(np.isfinite(wrist)):
                _, joints, seen_wrist = memory[key]
                hands[key] = joints + (wrist - seen_wrist)
                status[key] = HAND_HELD
            else:
                status[key] = HAND_LOST
            if key in hands and key in self._seen:
                lifted[key] = self._seen[key]
        self.hands, self.lifted, self.status = hands, lifted, status
