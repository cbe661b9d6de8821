"""The Kinect depth map as a depth cue for the lifted hands (fusion/depth_cue.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from omnimocap.apps.cli import main
from omnimocap.geometry.cameras import PinholeCamera
from omnimocap.fusion.depth_cue import DepthCueConfig, DepthFrames, depth_shift, surface_residual
from omnimocap.fusion.pipeline import ProcessConfig, process_session
from omnimocap.hands.synthetic_mano import make_synthetic_mano
from omnimocap.hands.mano import ManoModel

CAMERA = PinholeCamera(252.0, 252.0, 159.5, 143.5, 320, 288)


def _hand_at(distance: float) -> tuple[np.ndarray, np.ndarray]:
    """A flat right hand, palm towards the camera, centred ``distance`` m in front of it."""
    mano = ManoModel.from_dict(make_synthetic_mano("right"))
    R = np.diag([1.0, -1.0, -1.0])  # MANO's palm normal turned towards the camera
    verts, _ = mano.forward_side("right", R, np.broadcast_to(np.eye(3), (15, 3, 3)))
    return verts - verts.mean(0) + [0.0, 0.0, distance], mano.faces_side("right")


def _depth_image(verts, faces, background_m=3.0) -> np.ndarray:
    from omnimocap.fusion.depth_cue import render_surface_depth

    zbuf, x0, y0 = render_surface_depth(CAMERA, np.eye(4), verts, faces)
    img = np.full((CAMERA.height, CAMERA.width), background_m * 1000.0)
    win = img[y0:y0 + zbuf.shape[0], x0:x0 + zbuf.shape[1]]
    win[np.isfinite(zbuf)] = zbuf[np.isfinite(zbuf)] * 1000.0
    return np.rint(img).astype(np.uint16)


def test_surface_residual_measures_a_shift_and_rejects_background():
    verts, faces = _hand_at(1.5)
    depth = _depth_image(verts, faces)
    res = surface_residual(depth, CAMERA, np.eye(4), verts, faces, gate_m=0.06, min_pixels=12)
    assert res is not None and abs(res[0]) < 0.001 and res[1] > 50
    # the candidate 2 cm too near: the measured surface is 2 cm deeper
    res = surface_residual(depth, CAMERA, np.eye(4), verts - [0, 0, 0.02], faces, gate_m=0.06, min_pixels=12)
    assert res[0] == pytest.approx(0.02, abs=0.0015)
    # a candidate far outside the gate finds no hand
    assert surface_residual(depth, CAMERA, np.eye(4), verts - [0, 0, 0.3], faces, gate_m=0.06, min_pixels=12) is None
    # pixels without a measurement are not the hand
    assert surface_residual(np.zeros_like(depth), CAMERA, np.eye(4), verts, faces, gate_m=0.06, min_pixels=12) is None


def test_depth_shift_follows_the_viewing_ray():
    verts, faces = _hand_at(1.5)
    image = _depth_image(verts, faces)
    frames = [DepthFrames("kinect_x", CAMERA, np.eye(4), np.array([0.0, 1 / 30]), lambda: iter([image, image]))]
    ray = np.array([0.6, 0.0, 0.8])  # a 360 camera looking at the hand from the side
    candidate = verts - 0.02 * ray  # 2 cm too near along the ray
    shift, var = depth_shift(frames, 0.0, candidate, faces, ray, np.zeros(3), DepthCueConfig())
    assert shift == pytest.approx(0.02, abs=0.002)
    assert var == pytest.approx((DepthCueConfig().std_m / 0.8) ** 2)
    # a ray across the Kinect's line of sight carries no depth
    assert depth_shift(frames, 0.0, verts, faces, np.array([1.0, 0.0, 0.0]), np.zeros(3), DepthCueConfig()) is None
    # a depth frame too far in time is not used
    assert depth_shift(frames, 0.5, candidate, faces, ray, np.zeros(3), DepthCueConfig()) is None
    # the predicted motion carries the candidate to the depth frame's time
    moving = depth_shift(frames, -0.01, candidate - 0.01 * np.array([0, 0, 1.0]), faces, ray,
                         np.array([0, 0, 1.0]), DepthCueConfig())
    assert moving[0] == pytest.approx(0.02, abs=0.002)


def test_depth_frames_stream_forward_and_restart_when_asked_back():
    reads = []

    def read():
        reads.append(1)
        return iter([np.full((2, 2), k, dtype=np.uint16) for k in range(20)])

    frames = DepthFrames("kinect_x", CAMERA, np.eye(4), np.arange(20) / 30.0, read, keep=4)
    assert frames.nearest(0.34) == 10 and frames.nearest(-1.0) == 0 and frames.nearest(9.0) == 19
    assert [int(frames.image(i)[0, 0]) for i in (3, 5, 4, 19)] == [3, 5, 4, 19] and len(reads) == 1
    assert int(frames.image(2)[0, 0]) == 2 and len(reads) == 2  # older than the frames kept: read again


def _simulate(path, *extra) -> None:
    assert main(["simulate", str(path), "--seconds", "2", "--people", "1", "--pano-width", "640", "--realism", "ideal",
                 *extra]) == 0


def _run(session, out, **overrides) -> tuple[dict, dict]:
    config = ProcessConfig(hands="sim", preview=False, **overrides)
    report = process_session(session, out, config, progress=False)
    assert main(["evaluate", str(out), "--truth", str(session)]) == 0
    return report, json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    root = tmp_path_factory.mktemp("depth_cue")
    _simulate(root / "noisy", "--seed", "7")
    _simulate(root / "exact", "--seed", "8", "--kinect-noise-mm", "0")
    return root


def test_depth_cue_improves_the_wrist_on_a_noisy_session(sessions, tmp_path):
    observer = {"hand_noise_mm": 5.0, "hand_noise_deg": 3.0, "hand_dropout": 0.1}
    report, with_cue = _run(sessions / "noisy", tmp_path / "cue", **observer)
    _, without = _run(sessions / "noisy", tmp_path / "joints", depth_cue=False, **observer)
    assert report["depth_cue"]["kinects_with_depth"] == 2
    assert report["depth_cue"]["hands_used"] >= 0.8 * report["hand_counts"]["observed"]
    # measured: wrist 7.50 vs 8.64 mm, hand joints 8.70 vs 8.69 mm (people walk, turn and reach in
    # the simulated scene): the cue moves the wrist, not yet the fingers' error
    assert with_cue["hands.wrist_error_mm"] <= 0.9 * without["hands.wrist_error_mm"]
    assert with_cue["hands.joint_error_mm"] <= 1.01 * without["hands.joint_error_mm"]


def test_depth_cue_adds_no_bias_without_noise(sessions, tmp_path):
    report, m = _run(sessions / "exact", tmp_path / "r")
    assert report["depth_cue"]["hands_used"] >= 0.8 * report["hand_counts"]["observed"] > 0
    assert report["depth_cue"]["median_abs_shift_mm"] <= 1.0
    assert m["hands.joint_error_mm"] <= 1.0
    # the cue alone (joint depth trusted 25x less than the cue) stays unbiased too
    _, alone = _run(sessions / "exact", tmp_path / "alone", joint_depth_floor_m=0.1)
    assert alone["hands.wrist_error_mm"] <= 1.5


def test_without_recordings_results_are_unchanged(sessions, tmp_path):
    session = tmp_path / "s"
    shutil.copytree(sessions / "noisy", session)
    for mkv in session.glob("kinect_*.mkv"):
        mkv.unlink()
    report, _ = _run(session, tmp_path / "cue", hand_noise_mm=5.0, hand_dropout=0.1)
    _run(session, tmp_path / "joints", hand_noise_mm=5.0, hand_dropout=0.1, depth_cue=False)
    assert report["depth_cue"] == {"kinects_with_depth": 0, "hands_used": 0, "hands_not_measured": 0}
    with np.load(tmp_path / "cue" / "fused.npz") as a, np.load(tmp_path / "joints" / "fused.npz") as b:
        for key in ("hand_joints_world", "hand_R_world", "hand_pose", "hand_valid", "smplx_local_rotmats"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_broken_recording_is_skipped_with_a_note(sessions, tmp_path):
    session = tmp_path / "s"
    shutil.copytree(sessions / "noisy", session)
    broken = sorted(session.glob("kinect_*.mkv"))[0]
    broken.write_bytes(broken.read_bytes()[:100])
    report, _ = _run(session, tmp_path / "r")
    assert report["depth_cue"]["kinects_with_depth"] == 1
    assert any(broken.name in note for note in report["notes"])
