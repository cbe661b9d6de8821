"""The live controller with the calibration of ``omnimocap calibrate`` / ``omnimocap sync`` and the
simulated rig, for ``omnimocap gui`` (the controller itself is ``omnimocap.fusion.live.controller``)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from omnimocap.errors import UserError
from omnimocap.fusion.live import controller as live_controller
from omnimocap.fusion.live.controller import LiveConfig, has_pano_calibration
from omnimocap.fusion.pipeline import ProcessConfig

DEFAULT_SIM_SECONDS = 4.0


def calibration_steps(method: str) -> list[tuple[str, Callable[[Path], Any]]]:
    """The calibration stages of ``omnimocap calibrate`` / ``omnimocap sync`` as (label, step(session_dir)):
    the board places the 360 camera, then the clock is refined from motion with that pose; markerless
    solves pose and clock together, refining the session's previous calibration when it has one
    (``calibrate --refine``) and searching from nothing otherwise. Raises ImportError where this
    installation has no calibration."""
    from omnimocap.apps.cmd_calibrate import calibrate_session, sync_session

    if method == "board":
        return [("board calibration", lambda d: calibrate_session(d, method="board")), ("time sync", sync_session)]
    return [("markerless calibration", lambda d: calibrate_session(d, method="markerless", refine=has_pano_calibration(d)))]


class LiveController(live_controller.LiveController):
    """:class:`omnimocap.fusion.live.controller.LiveController` with :func:`calibration_steps` and a
    simulated session to replay."""

    def calibration_steps(self, method: str) -> list[tuple[str, Callable[[Path], Any]]]:
        return calibration_steps(method)

    @classmethod
    def simulated(cls, seconds: float = DEFAULT_SIM_SECONDS, *, people: int = 2, kinects: int = 2, seed: int = 0,
                  pano_width: int = 960, config: LiveConfig | None = None) -> "LiveController":
        """Simulate a short session into a temporary folder and replay it in a loop; without
        ``config``, the hands are the simulated observer's."""
        try:
            from omnimocap.sim.simulate import SimConfig, simulate_session
        except ImportError:
            raise UserError("the simulated rig is not available in this installation",
                            fix="use --session DIR to replay a recorded session") from None
        config = config or LiveConfig(process=ProcessConfig(hands="sim"))
        tmp = Path(tempfile.mkdtemp(prefix="omnimocap_live_"))
        try:
            simulate_session(tmp / "session", SimConfig(seconds=seconds, people=people, kinects=kinects, seed=seed,
                                                         pano_width=pano_width))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls.from_session(tmp / "session", loop=True, config=config,
                                cleanup=lambda: shutil.rmtree(tmp, ignore_errors=True))
