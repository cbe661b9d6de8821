"""What sees the people in the panorama for ``calibrate --method markerless`` and ``sync``.

``simulated``: the simulated observer's joint bearings (simulated sessions at ``--realism ideal``
only, the default there: its track of body id p is the simulated person p, which holds only while
the body tracking keeps the true ids); ``detector``: WiLoR's hand detector over the 360 frames (the
default for recorded sessions, needs ``detector.pt``), with a pose model's body keypoints when one
is given; ``simulated-detector``: simulated hand boxes and body keypoints in the same views
(simulated sessions only; the default for ``--realism field`` sessions, whose body ids start at 1,
change and swap). See calibration/pano_hands.py and calibration/pano_bodies.py for how detections
become bearings.
"""

from __future__ import annotations

from pathlib import Path

from omnimocap.calibration.observations import PanoObservations
from omnimocap.calibration.pano_bodies import DetectedBodies, PoseDetector
from omnimocap.calibration.pano_hands import DetectedHands, ImageViewDetector, ViewDetector
from omnimocap.capture.pano import PanoReader
from omnimocap.capture.session import MANIFEST, Session
from omnimocap.capture.truth import REALISM_FILE, Truth
from omnimocap.errors import InputError, ModelFilesMissing, UserError
from omnimocap.geometry.cameras import EquirectCamera


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
    (hands only) without one."""
    if kind == "simulated-detector":
        from omnimocap.hands.sim_pose import SimPoseDetector

        return SimPoseDetector(session.root)
    if pose_detector is not None or kind != "detector":
        return pose_detector
    from omnimocap.hands.pose_model import open_pose_detector as open_pose_model

    return open_pose_model(weights=weights, device=device)


def open_view_detector(session: Session, kind: str, detector: str | None = None, device: str = "cpu") -> ViewDetector:
    """The panorama's hand detector for ``kind`` "detector" (WiLoR's ``detector.pt`` at ``detector``,
    default in the models directory, on torch ``device``) or "simulated-detector"."""
    if kind == "simulated-detector":
        from omnimocap.hands.sim_backend import SimViewDetector

        return SimViewDetector(session.root)
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
