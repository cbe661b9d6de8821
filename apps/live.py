"""The live controller of ``omnimocap gui`` with the simulated rig to replay (the controller itself is
``omnimocap.fusion.live.controller``)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from omnimocap.errors import UserError
from omnimocap.fusion.live import controller as live_controller
from omnimocap.fusion.live.controller import LiveConfig
from omnimocap.fusion.pipeline import ProcessConfig

DEFAULT_SIM_SECONDS = 4.0


class LiveController(live_controller.LiveController):
    """:class:`omnimocap.fusion.live.controller.LiveController` that can also replay a simulated
    session (the simulator sits above the library's live controller)."""

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
