"""Cost of the field 360 camera in the simulator: seconds of ``simulate`` per simulated second.

Simulates the same short session (``--seconds``, two people, two Kinects, no Kinect recordings so
that the 360 camera's share shows) with the ideal camera at 1920 px (the reference, measured in this
run) and with the field camera in several forms: 3840 px with everything (two lenses, rolling
shutter, blur), 3840 px with the two lenses only (no readout, no exposure), and 1920 px with
everything. Each row gives the wall seconds, seconds per simulated second, the ratio to the
reference and the 360 video's bitrate. With ``--full-seconds`` it then times one whole field
session as the acceptance runs it (two people, two Kinects with recordings, 3840 px). Writes
benchmarks/results/sim_camera.json.

    nice -n 10 python benchmarks/bench_sim_camera.py [--seconds 3] [--full-seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from omnimocap.sim.pano_camera import BLUR_SAMPLES, SHUTTER_SAMPLES
from omnimocap.sim.simulate import SimConfig, simulate_session

OUT = Path(__file__).resolve().parent / "results" / "sim_camera.json"
VARIANTS = {
    "ideal_1920": dict(realism="ideal", pano_width=1920),
    "field_3840": dict(realism="field"),
    "field_3840_lenses_only": dict(realism="field", pano_readout_ms=0.0, pano_exposure_ms=0.0),
    "field_1920": dict(realism="field", pano_width=1920),
}


def timed_session(root: Path, seconds: float, kinect_video: bool, **config) -> dict:
    """Simulate one session into ``root``; its wall seconds and its 360 video's bitrate."""
    t0 = time.perf_counter()
    simulate_session(root, SimConfig(seconds=seconds, people=2, kinects=2, seed=0, kinect_video=kinect_video,
                                     overwrite=True, **config))
    wall = time.perf_counter() - t0
    video_bits = (root / "pano.mkv").stat().st_size * 8
    return {"wall_s": round(wall, 2), "s_per_sim_s": round(wall / seconds, 2),
            "pano_mbit_per_s": round(video_bits / seconds / 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="simulated seconds per variant")
    parser.add_argument("--full-seconds", type=float, default=0.0,
                        help="also time one field session this long with Kinect recordings (0: skip)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_sim_camera_"))
    try:
        rows = {name: timed_session(work / name, args.seconds, False, **cfg) for name, cfg in VARIANTS.items()}
        ref = rows["ideal_1920"]["wall_s"]
        for row in rows.values():
            row["ratio_to_ideal_1920"] = round(row["wall_s"] / ref, 2)
        result = {"seconds": args.seconds, "people": 2, "kinects": 2, "kinect_video": False, "variants": rows,
                  "configs": VARIANTS, "blur_samples": BLUR_SAMPLES, "shutter_samples": SHUTTER_SAMPLES,
                  "cpu_count": os.cpu_count(), "load_avg_at_end": os.getloadavg(),
                  "platform": platform.platform()}
        OUT.write_text(json.dumps(result, indent=2) + "\n")
        if args.full_seconds > 0:
            result["full_field_session"] = {"seconds": args.full_seconds, "kinect_video": True,
                                            **timed_session(work / "full", args.full_seconds, True)}
            result["load_avg_at_end"] = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
