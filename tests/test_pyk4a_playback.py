"""Cross-check against the Azure Kinect SDK itself: recordings read by our PyAV reader and written by
our Matroska writer are opened with pyk4a's playback (libk4a from the pyk4a-bundle wheel) and must
give the same frames. pyk4a-bundle needs numpy<2, so it lives in its own environment, `.venv-k4a`,
made by scripts/setup.sh; these tests skip when it is absent."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from omnimocap.capture.kinect_mkv import KinectRecording

REPO = Path(__file__).resolve().parents[1]
K4A_PYTHON = Path(os.environ.get("OMNIMOCAP_K4A_PYTHON", REPO / ".venv-k4a" / "bin" / "python"))
PROBE = Path(__file__).parent / "tools" / "pyk4a_probe.py"


def _sdk_summary(path: Path) -> dict:
    if not K4A_PYTHON.exists():
        pytest.skip(f"{K4A_PYTHON} not found: scripts/setup.sh creates it (pyk4a-bundle with numpy<2)")
    out = subprocess.run([str(K4A_PYTHON), str(PROBE), str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _ours(path: Path) -> list[dict]:
    rec = KinectRecording(path)
    return [{"depth_timestamp_usec": int(round(c.depth_timestamp * 1e6)),
             "depth_sum": int(c.depth.astype(np.int64).sum()), "depth_max": int(c.depth.max())}
            for c in rec.captures(decode_color=False) if c.depth is not None]


def test_sample_recording_matches_the_sdk(shared):
    path = shared("data", "kinect", "recording.mkv")
    sdk = _sdk_summary(path)
    assert sdk["frames"][0]["depth_timestamp_usec"] == 800222
    assert _ours(path) == sdk["frames"]
    K = KinectRecording(path).calibration.color.K
    assert np.allclose(K, np.array(sdk["color_K"]), atol=1e-3)


def test_written_recording_opens_in_the_sdk(tmp_path):
    from tests.test_kinect_writer import _write

    path = tmp_path / "kinect_000111222333.mkv"
    _, times, depth, _, _ = _write(path, n=4)
    sdk = _sdk_summary(path)
    assert len(sdk["frames"]) == 4
    assert [f["depth_sum"] for f in sdk["frames"]] == [int(d.astype(np.int64).sum()) for d in depth]
    assert [f["depth_timestamp_usec"] for f in sdk["frames"]] == [int(round(t * 1e6)) for t in times]
    assert _ours(path) == sdk["frames"]
