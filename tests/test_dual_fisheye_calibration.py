"""``calibrate --method markerless`` and ``sync`` on sessions whose 360 stream holds raw dual-fisheye
frames: the observer's views are cut from one lens each, its bearings are rays from that lens's
centre, and the solvers see them from there (the board method's refusal is in
tests/test_dual_fisheye_session.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from omnimocap.calibration.pano_hands import ImageViewDetector, bearings_from_detections, view_lens
from omnimocap.calibration.pano_observer import LensViewDetector, LensViewPoseDetector, raw_pano_optics
from omnimocap.geometry.fisheye_views import lens_view
from omnimocap.geometry.cameras import DualFisheyeCamera
from omnimocap.geometry.fisheye_views import render_fisheye_view
from omnimocap.geometry.pano_optics import PanoOptics
from omnimocap.geometry.views import plan_views
from omnimocap.hands.estimator import Detections, PoseDetections

CAMERA = DualFisheyeCamera.nominal(512, baseline_m=0.03)


def _frame_with_spot(point_cam: np.ndarray, radius_px: int = 2) -> np.ndarray:
    """A black raw frame with a white spot where ``CAMERA`` images the camera-frame point."""
    frame = np.zeros((CAMERA.height, CAMERA.width, 3), np.uint8)
    c, r = np.round(CAMERA.project(point_cam)).astype(int)
    frame[r - radius_px:r + radius_px + 1, c - radius_px:c + radius_px + 1] = 255
    return frame


class SpotDetector:
    """Finds the bright pixels of each image as one right hand (a stand-in for the hand detector)."""

    def __init__(self):
        self.images = []

    def detect(self, images):
        out = []
        for img in images:
            self.images.append(img)
            rows, cols = np.nonzero(img[..., 0] > 128)
            if len(rows) == 0:
                out.append(Detections(np.zeros((0, 4)), np.zeros(0, bool), np.zeros(0)))
                continue
            box = np.array([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]], dtype=np.float64)
            out.append(Detections(box, np.array([True]), np.array([0.9])))
        return out


def _view_at(direction_cam: np.ndarray, fov_deg: float = 30.0, size: int = 96):
    d = np.asarray(direction_cam, dtype=np.float64)
    d = d / np.linalg.norm(d)
    return plan_views(d[None, None], size=size, min_fov_deg=fov_deg, max_fov_deg=fov_deg, center_pano=d[None])[0]


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    return float(np.degrees(np.arccos(np.clip(a @ b, -1.0, 1.0))))


def test_a_detection_in_a_raw_view_is_a_ray_from_its_lens_centre():
    # A hand 0.5 m away, 20 deg in front of the seam's plane: seen by the front lens from (0, 0, 15 mm).
    point = 0.5 * np.array([np.cos(np.radians(20)), 0.1, np.sin(np.radians(20))])
    view = _view_at(point)
    spot = SpotDetector()
    detector = LensViewDetector(ImageViewDetector(spot, CAMERA))
    found = detector.detect_views(0, _frame_with_spot(point), [view])
    assert view_lens(view) == 0 and len(found[0].boxes_xyxy) == 1
    # The image the detector saw is the view cut from the front lens.
    np.testing.assert_array_equal(spot.images[0], render_fisheye_view(_frame_with_spot(point), CAMERA,
                                                                       lens_view(CAMERA, view, 0)))
    bearing = bearings_from_detections(0, [view], found).bearing[0]
    from_lens = point - CAMERA.lenses[0].t_cam_lens
    # Within a third of a degree (the spot's pixels) of the ray from the lens centre; from the
    # camera's origin the point lies 1.6 deg away, which is what ignoring the centre would cost.
    assert _angle_deg(bearing, from_lens) < 0.35
    assert _angle_deg(point, from_lens) > 1.5
    # The solvers see this bearing from the centre of the lens PanoOptics assigns it: the same one.
    optics = raw_pano_optics(CAMERA, PanoOptics())
    np.testing.assert_allclose(optics.centre(optics.lens_of(bearing)), CAMERA.lenses[0].t_cam_lens, atol=1e-12)


def test_a_box_across_the_seam_from_its_view_lens_is_dropped():
    # A view looking just in front of the seam (front lens), a hand 4 deg behind it (back lens's side).
    view = _view_at([1.0, 0.0, np.tan(np.radians(3))], fov_deg=40.0)
    behind = 0.6 * np.array([np.cos(np.radians(4)), 0.0, -np.sin(np.radians(4))])
    ahead = 0.6 * np.array([np.cos(np.radians(10)), 0.0, np.sin(np.radians(10))])
    inner = LensViewDetector(ImageViewDetector(SpotDetector(), CAMERA))
    assert len(inner.detect_views(0, _frame_with_spot(behind), [view])[0].boxes_xyxy) == 0
    assert len(inner.detect_views(0, _frame_with_spot(ahead), [view])[0].boxes_xyxy) == 1


def test_body_keypoints_across_the_seam_from_their_view_lens_lose_their_confidence():
    view = _view_at([1.0, 0.0, 0.2], fov_deg=60.0)
    behind = view.camera.project(np.array([1.0, 0.0, -0.1]) @ view.R_pano_view)
    assert np.all((behind >= 0) & (behind < view.size))

    class Model:
        needs_images = True

        def detect_images(self, images):
            self.shapes = [im.shape for im in images]
            kp = np.full((1, 17, 2), 48.0)
            kp[0, 0] = behind  # behind the seam
            return [PoseDetections(np.array([[0.0, 0.0, 95.0, 95.0]]), np.array([0.9]), kp, np.full((1, 17), 0.8))]

    model = Model()
    poser = LensViewPoseDetector(model, CAMERA)
    found = poser.detect_poses(0, np.zeros((CAMERA.height, CAMERA.width, 3), np.uint8), [view])
    assert model.shapes == [(96, 96, 3)]
    conf = found[0].keypoint_confidence[0]
    assert conf[0] == 0.0 and np.all(conf[1:] == 0.8)


def test_the_solvers_see_the_lens_models_baseline():
    optics = raw_pano_optics(DualFisheyeCamera.nominal(256, baseline_m=0.028),
                             PanoOptics(baseline_m=0.0, readout_s=0.02, blend_deg=2.0))
    assert optics.baseline_m == pytest.approx(0.028) and optics.readout_s == 0.02 and optics.blend_deg == 0.0


# --- whole sessions ------------------------------------------------------------------------------------

# Two people beside a camera turned a quarter turn, so their hands cross the seam; lenses 128 px wide.
SCENE = dict(seconds=8.0, people=2, kinects=2, seed=5, pano_width=256, pano_baseline_mm=30.0, realism="ideal",
             kinect_video=False, pano_yaw_deg=90.0, pano_format="dual-fisheye")


@pytest.fixture(scope="module")
def raw_session(tmp_path_factory):
    from omnimocap.sim.simulate import SimConfig, simulate_session

    return simulate_session(tmp_path_factory.mktemp("raw_calibration") / "s", SimConfig(**SCENE)).root


@pytest.mark.slow
def test_calibrate_and_sync_a_raw_session(raw_session):
    """About 80 s: markerless calibration and motion sync on the simulated detector's hands and body
    keypoints, all seen in views cut from one lens."""
    from omnimocap.apps.cli import main
    from omnimocap.capture.rig import Rig
    from omnimocap.capture.session import Session
    from omnimocap.capture.truth import Truth
    from omnimocap.fusion.evaluate import sync_calibration_errors

    for verb in (["calibrate", "--method", "markerless"], ["sync"]):
        assert main([verb[0], str(raw_session), *verb[1:], "--observer", "simulated-detector", "--quiet"]) == 0
    rig = json.loads((raw_session / "rig.json").read_text())
    assert rig["pano_optics"]["baseline_m"] == pytest.approx(0.03)
    assert rig["inputs"]["detections"]["association"]["associated"] > 400
    assert "body keypoints" in rig["inputs"]["pano_observer"]
    session, truth = Session.open(raw_session), Truth(raw_session)
    names = [k.name for k in session.kinects()]
    errors = sync_calibration_errors(truth.rig(), Rig.load(raw_session / "rig.json"),
                                     truth.motion(("pano_frame_t_session",))["pano_frame_t_session"],
                                     names[0], names[1:])
    # Measured on this scene: 0.24 deg, 5.7 mm, 1.7 ms.
    assert errors["calibration.rotation_error_deg"] < 0.6, errors
    assert errors["calibration.translation_error_mm"] < 15.0, errors
    assert abs(errors["sync.offset_error_ms"]) < 5.0, errors



@pytest.mark.slow
def test_flash_sync_on_raw_frames(tmp_path, capsys):
    """About 35 s: the flashes' steps in the raw frames' mean brightness time the 360 camera as in
    stitched ones (the black corners outside the image circles stay black)."""
    from omnimocap.apps.cli import main
    from omnimocap.capture.pano import read_pano_timestamps
    from omnimocap.capture.rig import Rig
    from omnimocap.capture.truth import Truth

    session = tmp_path / "s"
    assert main(["simulate", str(session), "--seconds", "4", "--people", "1", "--pano-width", "256",
                 "--pano-readout-ms", "0", "--pano-baseline-mm", "0", "--pano-exposure-ms", "0", "--seed", "7",
                 "--flash", "1", "3", "--pano-format", "dual-fisheye"]) == 0
    capsys.readouterr()
    assert main(["sync", str(session), "--flash", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["events_used"] == 2 and result["rate_from"] == "flashes"
    t = read_pano_timestamps(session / "pano_frames.csv").t_pano
    t_mid = float(t[len(t) // 2])
    est, true = Rig.load(session / "rig.json").time_map("pano"), Truth(session).rig().time_map("pano")
    # Measured: 0.13 ms.
    assert abs(est.to_session(t_mid) - true.to_session(t_mid)) < 1e-3
