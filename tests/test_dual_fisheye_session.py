"""Sessions whose 360 stream holds raw dual-fisheye frames: ``simulate --pano-format dual-fisheye``
writes them with their lens model, ``process`` cuts the wrist views from the lens that sees each
hand and lifts from that lens's centre, and a bad lens model is refused in one line."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from omnimocap.capture.dual_fisheye import LENSES_FILE, load_dual_fisheye, pano_camera
from omnimocap.capture.session import MANIFEST, Session
from omnimocap.errors import InputError
from omnimocap.fusion.fisheye_stage import FisheyePlannedView, FisheyeViews
from omnimocap.fusion.pipeline import ProcessConfig
from omnimocap.geometry.cameras import DualFisheyeCamera, EquirectCamera
from omnimocap.geometry.fisheye_views import project_to_fisheye_view
from omnimocap.geometry.transforms import make_pose
from tests.tools.cli import one_line_error

WIDTH = 768
# The camera turned a quarter turn: the person stands beside it, across its seam.
SCENE = dict(seconds=2.5, people=1, kinects=2, seed=3, pano_width=WIDTH, pano_baseline_mm=30.0, realism="ideal",
             kinect_noise_mm=0.0, kinect_video=False, pano_yaw_deg=90.0)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    from omnimocap.sim.simulate import SimConfig, simulate_session

    root = tmp_path_factory.mktemp("dual_fisheye")
    raw = simulate_session(root / "raw", SimConfig(**SCENE, pano_format="dual-fisheye"))
    stitched = simulate_session(root / "stitched", SimConfig(**SCENE))
    return raw.root, stitched.root


def test_the_session_names_its_lens_model_and_round_trips(sessions):
    raw, stitched = sessions
    session = Session.open(raw)
    entry = session.pano()
    assert entry.lenses == LENSES_FILE and (entry.width, entry.height) == (WIDTH, WIDTH // 2)
    camera = pano_camera(session)
    assert isinstance(camera, DualFisheyeCamera)
    assert camera.to_dict() == DualFisheyeCamera.nominal(WIDTH, baseline_m=0.03).to_dict()
    session.save()  # written again, read again: the same entry
    assert Session.open(raw).pano() == entry
    video = cv2.VideoCapture(str(session.pano_video_path()))
    ok, frame = video.read()
    video.release()
    assert ok and frame.shape == (camera.height, camera.width, 3)
    # Outside both image circles the raw frame is black; inside it shows the room.
    assert frame[:4, :4].max() < 16 and frame[camera.height // 2, camera.width // 4].mean() > 40
    # The same scene as the stitched session of the same seed.
    truth_raw, truth_stitched = np.load(raw / "truth" / "motion.npz"), np.load(stitched / "truth" / "motion.npz")
    assert sorted(truth_raw.files) == sorted(truth_stitched.files)
    for key in truth_raw.files:
        np.testing.assert_array_equal(truth_raw[key], truth_stitched[key], err_msg=key)
    assert json.loads((raw / "rig.json").read_text()) == json.loads((stitched / "rig.json").read_text())
    assert isinstance(pano_camera(Session.open(stitched)), EquirectCamera)


def test_a_manifest_written_before_lens_models_loads_as_equirect(sessions, tmp_path):
    _, stitched = sessions
    manifest = json.loads((stitched / MANIFEST).read_text())
    for device in manifest["devices"]:
        device.pop("lenses")
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    camera = pano_camera(Session.open(tmp_path))
    assert camera == EquirectCamera(WIDTH, WIDTH // 2)


def test_process_lifts_noise_free_hands_from_the_lens_that_saw_them(sessions, tmp_path):
    from omnimocap.fusion.evaluate import evaluate
    from omnimocap.fusion.pipeline import process_session

    raw, _ = sessions
    report = process_session(raw, tmp_path / "out", ProcessConfig(hands="sim", preview=False), progress=False)
    counts = report["hand_counts"]
    assert counts["views"] > 100 and counts["observed"] == counts["views"]
    metrics = evaluate(tmp_path / "out", raw)
    # Exact Kinect joints and an exact observer: the hands land on their true joints. Lifted from the
    # camera's centre instead of the lens's, they are about 12 mm off on this scene.
    assert metrics["hands.joint_error_mm"] < 1.0, metrics
    assert metrics["hands.coverage"] > 0.95, metrics


def test_views_near_the_seam_come_from_the_lens_that_sees_the_wrist():
    camera = DualFisheyeCamera.nominal(WIDTH, baseline_m=0.03)
    config = ProcessConfig(hands="sim", preview=False)
    views = FisheyeViews(camera, config)
    # One hand beside the camera, its wrist just behind the seam's plane and its fingers just ahead.
    pred = {name: np.full((1, 1, 2, 3), np.nan) for name in ("elbow", "wrist", "hand", "handtip", "thumb")}
    pred["elbow"][0, 0, 1] = [0.80, 0.05, -0.20]
    pred["wrist"][0, 0, 1] = [0.60, 0.0, -0.01]
    pred["hand"][0, 0, 1] = [0.58, 0.0, 0.04]
    pred["handtip"][0, 0, 1] = [0.56, 0.0, 0.09]
    pred["thumb"][0, 0, 1] = [0.57, -0.03, 0.05]
    planned = views.plan(pred, make_pose(np.eye(3), np.zeros(3)), [0])
    assert len(planned) == 1 and isinstance(planned[0], FisheyePlannedView)
    pv = planned[0]
    assert pv.lens == 1 and np.allclose(pv.t_cam_view, camera.lenses[1].t_cam_lens)
    np.testing.assert_allclose(pv.wrist_pano, pred["wrist"][0, 0, 1] - camera.lenses[1].t_cam_lens)
    px = project_to_fisheye_view(pv.fisheye_view, np.stack([pred[n][0, 0, 1] for n in pred]))
    assert np.all((px >= 0) & (px <= config.view_size - 1))
    np.testing.assert_allclose(views.lift_optics(pv).rays(np.array([1.0, 0.0, 0.0]))[0], [0, 0, -0.015])
    image = views.render(np.full((camera.height, camera.width, 3), 90, np.uint8), planned)[0]
    assert image.shape == (config.view_size, config.view_size, 3) and image.mean() > 80


@pytest.mark.parametrize("content, problem", [
    ("{", "malformed dual-fisheye lens model"),
    (json.dumps({"lenses": [{"fx": 1}]}), "malformed dual-fisheye lens model"),
])
def test_a_bad_lens_model_stops_process_in_one_line(sessions, tmp_path, capsys, content, problem):
    raw, _ = sessions
    copy = tmp_path / "session"
    shutil.copytree(raw, copy)
    (copy / LENSES_FILE).write_text(content)
    line = one_line_error(capsys, ["process", str(copy), "--out", str(tmp_path / "out"), "--hands", "sim",
                                   "--no-preview", "--quiet"])
    assert problem in line and LENSES_FILE in line


def test_lens_models_that_are_not_cameras_are_refused(tmp_path):
    good = DualFisheyeCamera.nominal(WIDTH, baseline_m=0.03).to_dict()
    cases = {
        "R_cam_lens is not a rotation": lambda d: d["lenses"][1].update(R_cam_lens=np.diag([2.0, 1, 1]).tolist()),
        "intrinsics are not positive": lambda d: d["lenses"][0].update(fx=-3.0),
        "t_cam_lens is not a point": lambda d: d["lenses"][0].update(t_cam_lens=[0.0, float("nan"), 0.0]),
        "max_theta_deg": lambda d: d["lenses"][0].update(max_theta_deg=250.0),
    }
    for problem, spoil in cases.items():
        d = json.loads(json.dumps(good))
        spoil(d)
        path = tmp_path / "lenses.json"
        path.write_text(json.dumps(d))
        with pytest.raises(InputError, match=problem) as exc:
            load_dual_fisheye(path)
        assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def test_a_lens_model_of_another_size_is_refused(sessions, tmp_path):
    raw, _ = sessions
    copy = tmp_path / "session"
    shutil.copytree(raw, copy, ignore=shutil.ignore_patterns("*.mkv", "truth"))
    (copy / LENSES_FILE).write_text(json.dumps(DualFisheyeCamera.nominal(1024).to_dict()))
    with pytest.raises(InputError, match="lens model is for 1024x512 frames, the 360 stream is 768x384"):
        pano_camera(Session.open(copy))


def test_simulate_refuses_a_rolling_shutter_for_raw_frames(capsys, tmp_path):
    line = one_line_error(capsys, ["simulate", str(tmp_path / "s"), "--pano-format", "dual-fisheye",
                                   "--pano-readout-ms", "25"])
    assert "global shutter" in line


def test_board_calibration_refuses_a_raw_stream_in_one_line(sessions, capsys):
    """The board method reads stitched frames (markerless calibration and sync read raw ones,
    tests/test_dual_fisheye_calibration.py): a raw session is refused, untouched."""
    raw, _ = sessions
    before = (raw / "rig.json").read_bytes()
    line = one_line_error(capsys, ["calibrate", str(raw), "--method", "board", "--quiet"])
    assert "calibrate --method board" in line and "raw dual-fisheye" in line and "stitched" in line
    assert (raw / "rig.json").read_bytes() == before


def test_the_simulated_observer_sees_a_raw_view_from_its_lens(sessions):
    """A view cut from one lens shows the whole hand from that lens's centre: the observer's shift
    is minus that centre for every joint, where the stitched frame's is per joint."""
    from omnimocap.hands.sim_backend import SimHandObserver

    raw, _ = sessions
    observer = SimHandObserver(raw)
    joints = np.array([[0.2, 1.2, 0.5], [0.25, 1.1, -0.4]])
    centre = np.array([0.0, 0.0, -0.015])
    shift = observer.apparent_shift_world(joints, centre)
    np.testing.assert_allclose(shift, np.broadcast_to(-centre @ observer._R_pano_world, joints.shape), atol=1e-12)


def test_live_replay_of_raw_frames_lifts_hands_from_the_lenses(sessions):
    """The live preview on a replayed raw session: its camera is the session's lens model, wrists
    are drawn in the raw frame, the hand views show the hands and each lifted hand lies on its true
    joints."""
    from omnimocap.capture.truth import Truth
    from omnimocap.fusion.live.controller import LiveConfig, LiveController
    from omnimocap.data.skeletons import SIDES
    from omnimocap.geometry.resample import interpolate_positions
    from tests.test_dual_fisheye import _skin
    from tests.test_live_controller import drive_loop

    raw, _ = sessions
    controller = LiveController.from_session(raw, realtime=False, loop=False,
                                             config=LiveConfig(process=ProcessConfig(hands="sim", view_size=64)))
    truth = Truth(raw).motion(["t_session", "hand_joints"])
    errors, skin, frames = [], [], 0
    try:
        for state in drive_loop(controller, 60):
            frames += 1
            assert isinstance(controller._preview.pano_cam, DualFisheyeCamera)
            for _, _, px in state.pano.wrists_px:
                assert np.all(np.isfinite(px)) and 0 <= px[0] < WIDTH and 0 <= px[1] < WIDTH // 2
            skin += [_skin(v.image).mean() for v in state.hand_views if v.image is not None]
            t = state.pano.t_session
            for (_, side), joints in controller.preview_result.hands_by.items():
                true = interpolate_positions(truth["t_session"], truth["hand_joints"][0], np.array([t]))[0, SIDES.index(side)]
                errors.append(np.linalg.norm(joints - true, axis=-1).mean())
    finally:
        controller.close()
    assert frames == 60 and len(errors) >= 60, len(errors)
    assert np.median(errors) < 0.004, np.percentile(errors, [50, 90])
    # the views are cut from the lens that sees the hand: they show it (an equirectangular reading of
    # the raw frame shows none of it)
    assert np.percentile(skin, 10) > 0.1, np.percentile(skin, [10, 50])
