"""Recording the simulated rig in real time (``omnimocap record --simulate``): the recorder meets
the simulated streams exactly as it meets devices."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from omnimocap.capture.recorder import RecordConfig, RecordingRig, RecordResult, record_session
from omnimocap.capture.session import SIMULATION_DIR
from omnimocap.sim.replay import simulated_rig

DEFAULT_SECONDS = 10.0


def record_simulated(out_dir: str | Path, config: RecordConfig, *, people: int = 2, kinects: int = 2, seed: int = 0,
                     pano_width: int = 960) -> RecordResult:
    """Simulate ``config.seconds`` (default 10 s) of a rig with ``people`` and ``kinects`` and a
    panorama ``pano_width`` pixels wide, and record its replay into ``out_dir``.

    The simulation lives inside the session (``SIMULATION_DIR``) until the recording ends, and the
    session has its calibration and truth from the start: a killed recorder leaves one whole folder."""
    seconds = DEFAULT_SECONDS if config.seconds is None else config.seconds
    config = replace(config, seconds=seconds, simulated=True)

    def open_rig(out: Path) -> RecordingRig:
        print(f"simulating {seconds:g} s ...", file=sys.stderr)
        rig = simulated_rig(seconds, out / SIMULATION_DIR, people=people, kinects=kinects, seed=seed,
                            pano_width=pano_width)
        rig.copy_calibration(out)
        return RecordingRig(rig.clock, list(rig.sources), rig.cleanup, fills_out_dir=True,
                            notes="simulated rig replayed in real time")

    return record_session(out_dir, config, open_rig)
