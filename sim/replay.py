"""A simulated session replayed live, as if the rig were plugged in: ``record --simulate`` and the
live preview's simulated mode record it like real devices."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from omnimocap.capture.replay import ReplayLoop, replay_loop, replay_sources
from omnimocap.capture.session import RIG
from omnimocap.capture.sources import SessionClock, Source
from omnimocap.capture.truth import Truth
from omnimocap.sim.simulate import SimConfig, simulate_session


@dataclass
class SimulatedRig:
    """A simulated session replayed live: ``sources`` on ``clock`` (record them with a
    :class:`Recorder` on that clock, which starts it with the recording, i.e. at the simulation's
    time 0); ``sim_dir`` holds the simulation until :meth:`cleanup`. ``loop``: the loop the sources
    replay (None: one pass); ``realtime`` False: they release their frames as fast as read."""

    sim_dir: Path
    clock: SessionClock
    sources: list[Source]
    loop: ReplayLoop | None = None
    realtime: bool = True

    def replay(self, clock: SessionClock) -> list[Source]:
        """A fresh set of sources replaying the simulation as ``sources`` do, on ``clock`` (a source
        cannot start again once stopped)."""
        return replay_sources(self.sim_dir, clock, realtime=self.realtime, on_session_clock=True,
                              loop=self.loop is not None)

    def copy_calibration(self, out_dir: str | Path) -> None:
        """Copy the simulation's ``rig.json`` and ``truth/`` into the recorded session: the replay
        keeps the simulation's clock, so its truth applies unchanged."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.sim_dir / RIG, out / RIG)
        Truth(self.sim_dir).copy_to(out)

    def cleanup(self) -> None:
        """Stop the sources and delete the simulation."""
        for source in self.sources:
            source.stop()
        shutil.rmtree(self.sim_dir, ignore_errors=True)


def simulated_rig(seconds: float, work_dir: str | Path, *, people: int = 2, kinects: int = 2, seed: int = 0,
                  pano_width: int = 960, kinect_video: bool = True, loop: bool = False, realtime: bool = True,
                  **config) -> SimulatedRig:
    """Simulate ``seconds`` (+ 0.5 s of slack) into ``work_dir`` (created; replaced if it exists),
    then set up its streams to be replayed on their original session clock: in real time, or with
    ``realtime`` False as fast as they are read. ``loop`` replays the simulation again and again (see
    :func:`replay_sources`), for recordings longer than the simulation; the truth then describes the
    first pass only (:class:`ReplayLoop` maps a looped frame back to it). ``config`` sets further
    :class:`SimConfig` fields (e.g. ``kinect_model``).

    ``record --simulate`` puts ``work_dir`` inside the session it records, so a recorder killed
    before :meth:`SimulatedRig.cleanup` leaves nothing outside that session."""
    sim_dir = Path(work_dir)
    try:
        simulate_session(sim_dir, SimConfig(seconds=seconds + 0.5, people=people, kinects=kinects, seed=seed,
                                            pano_width=pano_width, kinect_video=kinect_video, overwrite=True,
                                            **config))
    except BaseException:
        shutil.rmtree(sim_dir, ignore_errors=True)
        raise
    rig = SimulatedRig(sim_dir, SessionClock(), [], replay_loop(sim_dir, on_session_clock=True) if loop else None,
                       realtime)
    rig.sources = rig.replay(rig.clock)
    return rig
