"""The live controller of ``omnimocap gui`` with the simulated rig to replay (the controller itself is
``omnimocap.fusion.live.controller``)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from omnimocap.capture.rig import Rig
from omnimocap.capture.session import RIG
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
                  pano_width: int = 960, config: LiveConfig | None = None,
                  **sim_config) -> "LiveController":
        """The simulated rig (:func:`omnimocap.sim.replay.simulated_rig`: ``seconds`` plus its slack,
        further :class:`SimConfig` fields in ``sim_config``) simulated into a temporary folder and
        replayed in a loop, in real time on its session clock; without ``config``, the hands are the
        simulated observer's. Closing the controller deletes the simulation."""
        try:
            from omnimocap.sim.replay import simulated_rig
        except ImportError:
            raise UserError("the simulated rig is not available in this installation",
                            fix="use --session DIR to replay a recorded session") from None
        config = config or LiveConfig(process=ProcessConfig(hands="sim"))
        tmp = Path(tempfile.mkdtemp(prefix="omnimocap_live_"))
        try:
            sim = simulated_rig(seconds, tmp / "simulation", people=people, kinects=kinects, seed=seed,
                                pano_width=pano_width, loop=True, **sim_config)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

        def cleanup() -> None:
            sim.cleanup()
            shutil.rmtree(tmp, ignore_errors=True)

        return cls(sim.sources, clock=sim.clock, reopen=sim.replay, rig=Rig.load(sim.sim_dir / RIG),
                   session_dir=sim.sim_dir, config=config, cleanup=cleanup, replay_loop=sim.loop)
