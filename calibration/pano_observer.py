"""What sees the people in the panorama for ``calibrate --method markerless`` and ``sync``.

``simulated``: the simulated observer's joint bearings (simulated sessions at ``--realism ideal``
only, the default there: its track of body id p is the simulated person p, which holds only while
the body tracking keeps the true ids); ``detector``: WiLoR's hand detector over the 360 frames (the
default for recorded sessions, needs ``detector.pt``), with a pose model's body keypoints when one
is given; ``simulated-detector``: simulated hand boxes and body keypoints in the same views
(simulated sessions only; the default for ``--realism field`` sessions, whose body ids start at 1,
change and swap). See calibration/pano_hands.py and calibration/pano_bodies.py for how detections
become bearings.

On a raw dual-fisheye stream (the session's 360 entry names a lens model, capture/dual_fisheye.py)
the views are the same, each cut from one lens (:class:`LensViewDetector`, :class:`LensViewPoseDetector`;
``geometry/fisheye_views.py`` cuts them): the lens the solvers assign to the view's axis
(``PanoOptics.lens_of``: the front lens for directions with ``z >= 0``). A view's pixels are then rays
from that lens's optical centre, in the camera frame, so a detection's bearing is a direction from
that centre, not from the camera's origin. The solvers see a bearing from the centre of the lens
``PanoOptics.lens_of`` gives its direction (``BearingProblem.lens_centre``), with the centres of
:func:`raw_pano_optics` (the lens model's baseline along z): so a hand or keypoint whose bearing
lies on the other lens's side (a view's margin across the seam, or within half the baseline of the
seam's plane) is dropped, and every bearing kept is solved from the centre it was seen from.
Ignoring the centres instead (bearings from the origin) would be wrong by ``b/2 / distance``: 2.1 deg
at 0.4 m and 0.4 deg at 2 m for b = 30 mm, against the detections' 1 deg of noise (measured on an 8 s
simulated raw session, two people beside the camera: the 360 camera placed 25 mm off, against 5.7 mm
with the centres). ``sync`` reads the centres from the rig's ``pano_optics``, which ``calibrate``
writes from the lens model: a rig whose ``pano_optics`` has no baseline syncs as if from the origin.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from omnimocap.calibration.observations import PanoObservations
from omnimocap.calibration.pano_bodies import DetectedBodies, PoseDetector
from omnimocap.calibration.pano_hands import (
    DetectedHands, ImageViewDetector, ViewDetector, cut_from_lenses, on_view_lens,
)
from omnimocap.capture.pano import PanoReader
from omnimocap.capture.session import MANIFEST, Session
from omnimocap.capture.truth import REALISM_FILE, Truth
from omnimocap.errors import InputError, ModelFilesMissing, UserError
from omnimocap.geometry.cameras import DualFisheyeCamera, EquirectCamera
from omnimocap.geometry.pano_optics import PanoOptics
from omnimocap.geometry.views import WristView
from omnimocap.hands.estimator import Detections, PoseDetections


def session_realism(session: Session) -> str:
    """The simulated body tracking's realism level ("ideal" or "field", ``truth/realism.json``);
    "ideal" for simulated sessions written before the level existed."""
    truth = Truth(session.root)
    if not (truth.dir / REALISM_FILE).is_file():
        return "ideal"
    return str(truth.realism().get("realism", "ideal"))


def observer_kind(session: Session, observer: str) -> str:
    """``observer`` with "auto" resolved: "simulated" on ideal simulated sessions,
    "simulated-detector" on field ones, else "detector"; :class:`UserError` for a simulated observer
    on a recorded session, and for the simulated observer on a field session."""
    if observer == "auto":
        if not session.manifest.simulated:
            return "detector"
        return "simulated" if session_realism(session) == "ideal" else "simulated-detector"
    if observer.startswith("simulated") and not session.manifest.simulated:
        raise UserError(f"--observer {observer} needs a simulated session (with truth/)", path=session.root,
                        fix="use --observer detector on recorded sessions")
    if observer == "simulated" and session_realism(session) != "ideal":
        raise UserError("--observer simulated takes body id p for the simulated person p, which a session "
                        f"simulated with --realism {session_realism(session)} does not keep", path=session.root,
                        fix="use --observer simulated-detector (or auto)")
    return observer


def open_pose_detector(session: Session, kind: str, pose_detector: PoseDetector | None = None,
                       weights: str | None = None, device: str = "cpu") -> PoseDetector | None:
    """The panorama's body keypoint detector for observer ``kind``: the simulated one for
    "simulated-detector"; for "detector" ``pose_detector`` when given, else the pose model at
    ``weights`` (default ``<models>/pose/yolo11n-pose.pt`` when present) on torch ``device``; None
    (hands only) without one. On a raw dual-fisheye stream it sees views cut from one lens
    (:class:`LensViewPoseDetector`)."""
    poser = _open_pose_detector(session, kind, pose_detector, weights, device)
    if poser is None or session is None or isinstance(poser, LensViewPoseDetector):
        return poser
    camera = raw_camera(session)
    return poser if camera is None else LensViewPoseDetector(poser, camera)


def _open_pose_detector(session: Session, kind: str, pose_detector: PoseDetector | None, weights: str | None,
                        device: str) -> PoseDetector | None:
    if kind == "simulated-detector":
        from omnimocap.hands.sim_pose import SimPoseDetector

        return SimPoseDetector(session.root)
    if pose_detector is not None or kind != "detector":
        return pose_detector
    from omnimocap.hands.pose_model import open_pose_detector as open_pose_model

    return open_pose_model(weights=weights, device=device)


def open_view_detector(session: Session, kind: str, detector: str | None = None, device: str = "cpu") -> ViewDetector:
    """The panorama's hand detector for ``kind`` "detector" (WiLoR's ``detector.pt`` at ``detector``,
    default in the models directory, on torch ``device``) or "simulated-detector"; on a raw
    dual-fisheye stream it sees views cut from one lens (:class:`LensViewDetector`)."""
    if kind == "simulated-detector":
        from omnimocap.hands.sim_backend import SimViewDetector

        det = SimViewDetector(session.root)
        return det if raw_camera(session) is None else LensViewDetector(det)
    from omnimocap.hands.model_store import default_models_dir, missing_message
    from omnimocap.hands.wilor.detector import HandDetector

    if detector is None:
        models = default_models_dir()
        msg = missing_message(models, ("wilor/detector.pt",))
        if msg:
            raise ModelFilesMissing(msg + " (or pass --detector PATH, or calibrate with --method board)")
        path = models / "wilor/detector.pt"
    else:
        path = Path(detector).expanduser()
        if not path.is_file():
            raise ModelFilesMissing("the hand detector's weights are missing", path=path,
                                    fix="run `omnimocap models download`, or give the right --detector PATH")
    entry = session.pano()
    if not entry.recording:
        raise InputError("the session has no 360 video to detect hands in", path=session.root / MANIFEST)
    reader = PanoReader(session.pano_video_path(entry), session.pano_frames_path(entry))
    camera = raw_camera(session)
    if camera is not None:
        return LensViewDetector(ImageViewDetector(HandDetector(path, device=device), camera))
    return ImageViewDetector(HandDetector(path, device=device), EquirectCamera(reader.width, reader.height))


def observer_inputs(obs: PanoObservations) -> dict:
    """The rig.json ``inputs`` that name the simulated observer."""
    if obs.simulated_observer:
        return {"pano_observer": "simulated (true wrists through the true pano pose, "
                                 f"{obs.noise_deg} deg noise)", "simulated_observer": True}
    return {"pano_observer": "hand detections", "simulated_observer": False}


def detection_inputs(detected: DetectedHands, detector: ViewDetector, bodies: DetectedBodies | None = None,
                     pose_detector: PoseDetector | None = None) -> dict:
    """The rig.json ``inputs`` that name the detectors (their weights, or their types) and their counts."""
    weights = getattr(getattr(detector, "detector", None), "weights", None)
    name = str(weights) if weights is not None else type(detector).__name__
    out = {"pano_observer": f"hand detections ({name}) against the Kinect hand centres",
           "simulated_observer": False, "detections": detected.info}
    if bodies is not None:
        weights = getattr(pose_detector, "weights", None)
        pose_name = str(weights) if weights is not None else type(pose_detector).__name__
        out["pano_observer"] += f", body keypoints ({pose_name}) against the Kinect joints"
        out["body_detections"] = bodies.info
    return out


# --- raw dual-fisheye streams ------------------------------------------------------------------------

def raw_camera(session: Session) -> DualFisheyeCamera | None:
    """The lens model of a session whose 360 stream is raw dual-fisheye frames; None for a stitched one."""
    if session.pano().lenses is None:
        return None
    from omnimocap.capture.dual_fisheye import pano_camera

    return pano_camera(session)


def raw_pano_optics(camera: DualFisheyeCamera, optics: PanoOptics) -> PanoOptics:
    """The optics the solvers see a raw stream through: ``optics``'s shutter with the lens model's
    baseline (the distance between its two optical centres, metres; the solvers put them at
    ``(0, 0, +-baseline/2)``, where a lens model from ``calibrate-lens`` or the simulator has them to
    within its calibration error) and no blend band (nothing is stitched)."""
    centres = [np.asarray(lens.t_cam_lens, dtype=np.float64) for lens in camera.lenses]
    return replace(optics, baseline_m=float(np.linalg.norm(centres[0] - centres[1])), blend_deg=0.0)


class LensViewDetector:
    """A hand :class:`ViewDetector` on raw dual-fisheye frames: ``inner`` sees every view cut from
    the lens of :func:`view_lens` (an :class:`ImageViewDetector` made with the lens model cuts it
    from the frame; a simulated detector sees each hand from the centre of the lens on its side),
    and a box whose centre lies on the other lens's side is dropped (see the module docstring)."""

    def __init__(self, inner: ViewDetector):
        self.inner = inner
        self.needs_images = inner.needs_images

    @property
    def detector(self):
        """The wrapped detector's network, when it has one (its weights name the observer)."""
        return getattr(self.inner, "detector", None)

    def detect_views(self, frame_index: int, frame_bgr: np.ndarray | None,
                     views: Sequence[WristView]) -> list[Detections]:
        out = []
        for view, det in zip(views, self.inner.detect_views(frame_index, frame_bgr, views)):
            boxes = np.asarray(det.boxes_xyxy, dtype=np.float64).reshape(-1, 4)
            keep = on_view_lens(view, 0.5 * (boxes[:, :2] + boxes[:, 2:]))
            out.append(Detections(boxes[keep], np.asarray(det.is_right, dtype=bool)[keep],
                                  np.asarray(det.confidence, dtype=np.float64)[keep]))
        return out


class LensViewPoseDetector:
    """A body keypoint :class:`PoseDetector` on raw dual-fisheye frames: a pose model (anything with
    ``detect_images``) sees the views cut from the lens of :func:`view_lens`; a simulated one sees
    each keypoint from the centre of the lens on its side. Keypoints on the other lens's side get
    confidence 0 (see the module docstring)."""

    def __init__(self, inner: PoseDetector, camera: DualFisheyeCamera):
        self.inner = inner
        self.camera = camera
        self.needs_images = bool(getattr(inner, "needs_images", True))
        self.weights = getattr(inner, "weights", None)

    def detect_poses(self, frame_index: int, frame_bgr: np.ndarray | None,
                     views: Sequence[WristView]) -> list[PoseDetections]:
        if not views:
            return []
        if hasattr(self.inner, "detect_images"):
            if frame_bgr is None:
                raise ValueError(f"the body keypoint model needs the raw frame {frame_index}")
            found = self.inner.detect_images(cut_from_lenses(frame_bgr, self.camera, views))
        else:
            found = self.inner.detect_poses(frame_index, frame_bgr, views)
        out = []
        for view, det in zip(views, found):
            kp = np.asarray(det.keypoints, dtype=np.float64)
            conf = np.asarray(det.keypoint_confidence, dtype=np.float64).copy()
            with np.errstate(invalid="ignore"):
                conf[~on_view_lens(view, kp)] = 0.0
            out.append(PoseDetections(det.boxes_xyxy, det.confidence, kp, conf))
        return out
