"""Calibration of a live session's folder in a background thread: its steps run in order, their
progress kept as a :class:`~omnimocap.fusion.live.state.CalibrationState`, and the rig they end with
handed to the session."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from omnimocap.capture.rig import Rig
from omnimocap.errors import UserError
from omnimocap.fusion.live.state import CalibrationState
from omnimocap.capture.session import RIG

Steps = list[tuple[str, Callable[[Path], Any]]]


def has_pano_calibration(session_dir: str | Path) -> bool:
    """Whether the session's rig.json holds an estimated pose and clock of the 360 camera (not the
    simulated truth) that a calibration can start from."""
    try:
        rig = Rig.load(Path(session_dir) / RIG)
    except (UserError, OSError):
        return False
    return not rig.is_truth and "pano" in rig.T_world_sensor and "pano" in rig.time_maps


def calibration_steps(method: str) -> Steps:
    """The calibration stages of ``omnimocap calibrate`` / ``omnimocap sync`` as (label, step(session_dir)):
    the board places the 360 camera, then the clock is refined from motion with that pose; markerless
    solves pose and clock together, refining the session's previous calibration when it has one
    (``calibrate --refine``) and searching from nothing otherwise."""
    from omnimocap.calibration.config import CalibrateConfig
    from omnimocap.calibration.session import calibrate_session
    from omnimocap.calibration.sync import sync_session

    if method == "board":
        return [("board calibration", lambda d: calibrate_session(d, CalibrateConfig(method="board"))),
                ("time sync", sync_session)]
    return [("markerless calibration",
             lambda d: calibrate_session(d, CalibrateConfig(method="markerless", refine=has_pano_calibration(d))))]


def calibration_state(rig: Rig, status: str = "") -> CalibrationState:
    """The calibration a rig holds (method, truth or not, residuals), not running."""
    return CalibrationState(rig.method, rig.is_truth, dict(rig.residuals), False, 0.0, status)


class CalibrationRun:
    """One calibration at a time of a session folder. ``state`` is the newest
    :class:`CalibrationState`; ``on_change()`` runs after each change of it, ``post(level, source,
    text)`` writes a message and ``on_rig(rig)`` receives the rig a finished calibration wrote
    (``rig.json`` of the session)."""

    def __init__(self, rig: Rig, on_change: Callable[[], None], post: Callable[[str, str, str], None],
                 on_rig: Callable[[Rig], None]):
        self.state = calibration_state(rig)
        self._lock = threading.Lock()
        self._on_change, self._post, self._on_rig = on_change, post, on_rig

    def set(self, **changes) -> None:
        with self._lock:
            self.state = replace(self.state, **changes)
        self._on_change()

    def start(self, method: str, session_dir: Path | None, steps_for: Callable[[str], Steps],
              progress: Callable[[float, str], None] | None = None) -> bool:
        """Run ``steps_for(method)`` on ``session_dir`` in a background thread; False, with a
        message, when it cannot start (one already running, no session folder, no calibration in
        this installation: ``steps_for`` raises ImportError)."""
        if self.state.running:
            self._post("warning", "calibration", "a calibration is already running")
            return False
        if session_dir is None:
            self.set(status="calibration needs a session folder (--session or --simulate)")
            self._post("fault", "calibration", self.state.status)
            return False
        try:
            steps = steps_for(method)
        except ImportError:
            self.set(status="calibration not available")
            self._post("fault", "calibration", "calibration not available in this installation")
            return False
        self.set(running=True, progress=0.0, status=f"{method}: starting")
        threading.Thread(target=self._work, args=(method, Path(session_dir), steps, progress), name="calibration",
                         daemon=True).start()
        return True

    def _work(self, method: str, session_dir: Path, steps: Steps, progress) -> None:
        def report(fraction: float, text: str) -> None:
            self.set(running=fraction < 1.0, progress=fraction, status=text)
            if progress is not None:
                progress(fraction, text)

        try:
            for i, (label, step) in enumerate(steps):
                report(i / len(steps), label)
                step(session_dir)
            rig = Rig.load(session_dir / RIG)
        except UserError as exc:
            self.set(running=False, status=f"failed: {exc}")
            self._post("fault", "calibration", str(exc))
            return
        except Exception as exc:  # shown, not raised: the session keeps running
            self.set(running=False, status=f"failed: {type(exc).__name__}: {exc}")
            self._post("fault", "calibration", f"{method} calibration failed ({type(exc).__name__}: {exc})")
            return
        self._on_rig(rig)
        with self._lock:
            self.state = replace(calibration_state(rig, self.state.status), progress=1.0)
        report(1.0, f"{method} calibration done")
        self._post("info", "calibration", f"{method} calibration done: {_residual_text(rig.residuals)}")


def _residual_text(residuals: dict) -> str:
    numbers = {k: v for k, v in residuals.items() if isinstance(v, (int, float))}
    return ", ".join(f"{k} {v:.3g}" for k, v in numbers.items()) or "no residuals reported"
