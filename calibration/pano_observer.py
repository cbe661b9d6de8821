"""What sees the people in the panorama for ``calibrate --method markerless`` and ``sync``.

``simulated``: the simulated observer's joint bearings (simulated sessions only, the default
there); ``detector``: WiLoR's hand detector over the 360 frames (the default for recorded sessions,
needs ``detector.pt``); ``simulated-detector``: simulated detector boxes in the same views
(simulated sessions only). See calibration/pano_hands.py for how detections become bearings.
"""

from __future__ import annotations

from pathlib import Path

from omnimocap.calibration.observations import PanoObservations
from omnimocap.calibration.pano_hands import DetectedHands, ImageViewDetector, ViewDetector
from omnimocap.capture.pano import PanoReader
from omnimocap.capture.session import MANIFEST, Session
from omnimocap.errors import InputError, ModelFilesMissing, UserError
from omnimocap.geometry.cameras import EquirectCamera


def observer_kind(session: Session, observer: str) -> str:
    """``observer`` with "auto" resolved: "simulated" on simulated sessions, else "detector";
    :class:`UserError` for a simulated observer on a recorded session."""
    if observer == "auto":
        return "simulated" if session.manifest.simulated else "detector"
    if observer.startswith("simulated") and not session.manifest.simulated:
        raise UserError(f"--observer {observer} needs a simulated session (with truth/)", path=session.root,
                        fix="use --observer detector on recorded sessions")
    return observer


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


def detection_inputs(detected: DetectedHands, detector: ViewDetector) -> dict:
    """The rig.json ``inputs`` that name the detector (its weights, or its type) and its counts."""
    weights = getattr(getattr(detector, "detector", None), "weights", None)
    name = str(weights) if weights is not None else type(detector).__name__
    return {"pano_observer": f"hand detections ({name}) against the Kinect hand centres",
            "simulated_observer": False, "detections": detected.info}
