"""Runs under a separate interpreter that has pyk4a (pyk4a-bundle needs numpy<2, so it cannot share
the project's environment). Opens an Azure Kinect recording with the SDK's own playback and prints a
JSON summary: per capture the depth timestamp, depth sum and max, and the colour camera matrix."""

import json
import sys

import numpy as np
from pyk4a import CalibrationType, PyK4APlayback

playback = PyK4APlayback(sys.argv[1])
playback.open()
frames = []
while True:
    try:
        capture = playback.get_next_capture()
    except EOFError:
        break
    depth = capture.depth
    frames.append({
        "depth_timestamp_usec": int(capture.depth_timestamp_usec),
        "depth_sum": None if depth is None else int(depth.astype(np.int64).sum()),
        "depth_max": None if depth is None else int(depth.max()),
    })
K = playback.calibration.get_camera_matrix(CalibrationType.COLOR)
print(json.dumps({"frames": frames, "color_K": np.asarray(K).tolist()}))
playback.close()
