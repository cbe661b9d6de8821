"""Dual-fisheye 360 frames without stitching: the lens models (round trips, OpenCV's fisheye
convention), the two-lens camera, wrist views cut from the lens that sees the hand (pinned against
the equirect path on the same scene), the raw-frame source and the simulator's raw frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnimocap.geometry.cameras import R_CAM_BACK_LENS, DualFisheyeCamera, EquirectCamera, FisheyeLens
from omnimocap.geometry.transforms import axis_angle_to_matrix, invert_pose, look_at, make_pose, transform_points
from omnimocap.capture.dual_fisheye import DualFisheyeSource, load_dual_fisheye, save_dual_fisheye
from omnimocap.capture.pano import PanoReader, PanoWriter
from omnimocap.capture.pano_sources import VideoFilePanoSource
from omnimocap.sim.fisheye import DualFisheyeRenderer, stitch_equirect
from omnimocap.capture.sources import EndOfStream
from omnimocap.errors import DeviceError, InputError
from omnimocap.geometry.fisheye_views import (
    fisheye_view_maps, plan_fisheye_views, project_to_fisheye_view, render_fisheye_view,
)
from omnimocap.geometry.views import render_view

KB = (0.02, -0.004, 0.0006, -0.00004)
unit = st.floats(-1.0, 1.0, allow_nan=False)


def _lens(k=(), rotvec=(0.0, 0.0, 0.0), max_deg=100.0) -> FisheyeLens:
    return FisheyeLens(301.5, 300.2, 255.3, 256.8, 512, 512, tuple(k), np.radians(max_deg),
                       axis_angle_to_matrix(np.array(rotvec)), np.array([0.001, -0.002, 0.015]))


@settings(max_examples=200, deadline=None)
@given(theta=st.floats(0.0, np.radians(99.9)), phi=st.floats(-np.pi, np.pi), kb=st.booleans())
def test_lens_round_trip(theta, phi, kb):
    lens = _lens(KB if kb else ())
    d = np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])
    px = lens.project(d * 2.7)  # a point along d: only its direction matters
    np.testing.assert_allclose(lens.unproject(px), d, atol=1e-9)
    assert lens.in_circle(px)


def test_equidistant_radius_is_f_theta_and_the_circle_ends_at_max_theta():
    lens = _lens()
    theta = np.radians([0.0, 30.0, 90.0, 99.0])
    d = np.stack([np.sin(theta), np.zeros_like(theta), np.cos(theta)], axis=-1)
    px = lens.project(d)
    np.testing.assert_allclose(px[:, 0] - lens.cx, lens.fx * theta, atol=1e-9)
    np.testing.assert_allclose(px[:, 1], lens.cy, atol=1e-9)
    assert np.all(np.isnan(lens.project(np.array([np.sin(1.8), 0.0, np.cos(1.8)]))))  # 103 deg > 100
    assert lens.project(np.array([0.0, 1.0, 0.0]))[1] > lens.cy  # +y (down) images below the centre


def test_kannala_brandt_matches_opencv_fisheye():
    lens = _lens(KB)
    rng = np.random.default_rng(0)
    d = rng.normal(size=(200, 3))
    d[:, 2] = np.abs(d[:, 2]) + 0.05  # OpenCV's fisheye projects points in front of the lens
    K = np.array([[lens.fx, 0, lens.cx], [0, lens.fy, lens.cy], [0, 0, 1.0]])
    ref, _ = cv2.fisheye.projectPoints(d[None], np.zeros(3), np.zeros(3), K, np.array(KB))
    np.testing.assert_allclose(lens.project(d), ref[0], atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(x=unit, y=unit, z=unit, kb=st.booleans())
def test_two_lens_camera_round_trip_and_lens_choice(x, y, z, kb):
    d = np.array([x, y, z])
    if np.linalg.norm(d) < 1e-3:
        return
    tilt = axis_angle_to_matrix(np.array([0.01, -0.02, 0.005]))
    cam = DualFisheyeCamera.nominal(1024, k=KB if kb else (), baseline_m=0.0, R_back=tilt @ R_CAM_BACK_LENS)
    px = cam.project(d, points=False)
    origin, ray = cam.pixel_to_ray(px)
    np.testing.assert_allclose(ray, d / np.linalg.norm(d), atol=1e-9)
    assert (px[0] < 512) == (cam.best_lens(d, points=False) == 0)


def test_two_lens_conventions():
    cam = DualFisheyeCamera.nominal(1024, baseline_m=0.03)
    c = (512 - 1) / 2
    np.testing.assert_allclose(cam.project(np.array([0.0, 0.0, 1.0]), points=False), [c, c], atol=1e-9)  # front
    np.testing.assert_allclose(cam.project(np.array([0.0, 0.0, -1.0]), points=False), [512 + c, c], atol=1e-9)
    right = cam.project(np.array([1.0, 0.0, 0.2]), points=False)  # camera right, a little forward
    assert right[0] > c and right[0] < 512  # right of the front lens's centre
    behind_right = cam.project(np.array([1.0, 0.0, -0.2]), points=False)
    assert 512 <= behind_right[0] < 512 + c  # left of the back lens's centre: it looks the other way
    origin, _ = cam.pixel_to_ray(np.array([[100.0, 200.0], [700.0, 200.0]]))
    np.testing.assert_allclose(origin, [[0, 0, 0.015], [0, 0, -0.015]])
    # A near point beside the camera: each lens sees it from its own centre (parallax).
    p = np.array([0.3, 0.0, 0.0])
    bearing_front = cam.lenses[0].lens_from_cam(p)
    assert np.degrees(np.arctan2(0.015, 0.3)) == pytest.approx(np.degrees(np.arccos(bearing_front[0] / np.linalg.norm(bearing_front))))


def test_lens_model_file_round_trip_and_errors(tmp_path):
    cam = DualFisheyeCamera.nominal(640, k=KB, baseline_m=0.028)
    save_dual_fisheye(cam, tmp_path / "lenses.json")
    back = load_dual_fisheye(tmp_path / "lenses.json")
    d = np.random.default_rng(1).normal(size=(50, 3))
    np.testing.assert_allclose(back.project(d), cam.project(d))
    with pytest.raises(InputError, match="not found"):
        load_dual_fisheye(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text('{"lenses": [{"fx": 1}]}')
    with pytest.raises(InputError, match="malformed") as exc:
        load_dual_fisheye(tmp_path / "bad.json")
    assert "\n" not in str(exc.value)


# --- views ---------------------------------------------------------------------------------------
def _scene(d: np.ndarray) -> np.ndarray:
    """A smooth colour (BGR float) for each direction (...,3): the same scene for both paths."""
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    return np.stack([128 + 100 * np.sin(3 * d[..., 0] + 1), 128 + 100 * np.cos(4 * d[..., 1]),
                     128 + 90 * np.sin(2.5 * d[..., 2] - d[..., 0])], axis=-1)


def _render_dual(cam: DualFisheyeCamera) -> np.ndarray:
    rows, cols = np.mgrid[0:cam.height, 0:cam.width]
    _, rays = cam.pixel_to_ray(np.stack([cols, rows], axis=-1).astype(np.float64))
    return np.clip(_scene(rays), 0, 255).astype(np.uint8)


def _render_equirect(pano: EquirectCamera) -> np.ndarray:
    rows, cols = np.mgrid[0:pano.height, 0:pano.width]
    rays = pano.pixel_to_bearing(np.stack([cols, rows], axis=-1).astype(np.float64))
    return np.clip(_scene(rays), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("kb", [False, True])
def test_views_from_the_lens_agree_with_the_equirect_path(kb):
    """The same far scene rendered as a raw dual-fisheye frame and as an equirect panorama; a view
    cut from each must show the same image (bilinear sampling of a smooth scene: a few grey levels),
    for views in front, behind and across the seam beside the camera."""
    cam = DualFisheyeCamera.nominal(2048, k=KB if kb else ())
    pano = EquirectCamera(2048, 1024)
    frame, equirect = _render_dual(cam), _render_equirect(pano)
    for direction in ([0.2, 0.1, 1.0], [-0.3, -0.2, -1.0], [1.0, 0.05, 0.02], [-1.0, 0.3, -0.05]):
        points = np.array(direction) + np.random.default_rng(2).normal(scale=0.08, size=(21, 3))
        fview = plan_fisheye_views(cam, points[None], size=128)[0]
        ours = render_fisheye_view(frame, cam, fview).astype(np.float64)
        theirs = render_view(equirect, pano, fview.view).astype(np.float64)
        diff = np.abs(ours - theirs)
        assert diff.mean() < 1.0 and np.percentile(diff, 99) < 4.0, (direction, diff.mean(), diff.max())


def test_view_maps_read_the_ray_of_each_view_pixel():
    cam = DualFisheyeCamera.nominal(1024, k=KB, baseline_m=0.03)
    points = np.array([[0.4, 0.1, -0.5]]) + np.random.default_rng(3).normal(scale=0.04, size=(21, 3))
    fview = plan_fisheye_views(cam, points[None], size=64)[0]
    assert fview.lens == 1
    np.testing.assert_allclose(fview.t_cam_view, [0, 0, -0.015])
    map_x, map_y = fisheye_view_maps(cam, fview)
    q = np.array([[0.0, 0.0], [63.0, 10.0], [31.5, 31.5], [5.0, 60.0]])
    qi = q.round().astype(int)
    frame_px = np.stack([map_x[qi[:, 1], qi[:, 0]], map_y[qi[:, 1], qi[:, 0]]], axis=-1).astype(np.float64)
    origin, ray = cam.pixel_to_ray(frame_px)
    expected = fview.view.camera.unproject(qi.astype(np.float64)) @ fview.view.R_pano_view.T
    np.testing.assert_allclose(origin, np.tile(fview.t_cam_view, (4, 1)))
    np.testing.assert_allclose(ray, expected, atol=2e-6)  # float32 maps
    # Every planned point lies inside its view (the margin of plan_views).
    px = project_to_fisheye_view(fview, points)
    assert np.all((px > 64 * 0.1) & (px < 64 * 0.9))


def test_near_hand_beside_the_camera_has_no_parallax_in_the_lens_view():
    """A point 0.3 m beside the camera (at the seam), seen by a lens 15 mm off the camera centre:
    projected about the lens centre it lands where the lens images it; about the camera centre (what
    a stitched panorama assumes) it is off by the parallax, ~2.9 deg."""
    cam = DualFisheyeCamera.nominal(2048, baseline_m=0.03)
    p = np.array([0.3, 0.0, 0.01])
    fview = plan_fisheye_views(cam, p[None, None] + np.array([[[0.0, 0.0, 0.0], [0.0, 0.02, 0.0]]]), size=128)[0]
    lens = cam.lenses[fview.lens]
    frame_px = lens.project(lens.lens_from_cam(p)) + [cam.column_offset(fview.lens), 0]
    _, ray = cam.pixel_to_ray(frame_px)
    view_px = project_to_fisheye_view(fview, p)
    d_view = fview.view.camera.unproject(view_px) @ fview.view.R_pano_view.T
    np.testing.assert_allclose(d_view, ray, atol=1e-9)
    off = np.degrees(np.arccos(np.clip(ray @ (p / np.linalg.norm(p)), -1, 1)))
    assert off == pytest.approx(np.degrees(np.arctan2(0.015, 0.3)), abs=0.1)


# --- the source and the simulator --------------------------------------------------------------------
def test_dual_fisheye_source_passes_raw_frames_and_refuses_another_size(tmp_path):
    cam = DualFisheyeCamera.nominal(128)
    frame = _render_dual(cam)
    video, csv = tmp_path / "raw.mkv", tmp_path / "raw_frames.csv"
    writer = PanoWriter(video, csv, cam.width, cam.height, fps=30)
    for i in range(4):
        writer.write(frame, 2.0 + i / 30, 2.1 + i / 30)
    writer.close()
    source = DualFisheyeSource(VideoFilePanoSource(video, timestamps=csv, realtime=False), cam)
    frames = []
    with pytest.raises(EndOfStream):
        for _ in range(10):
            f = source.read(1.0)
            if f is not None:
                frames.append(f)
    assert len(frames) == 4 and frames[0].image.shape == (64, 128, 3)
    assert [f.t_pano for f in frames] == pytest.approx([2.0 + i / 30 for i in range(4)])
    assert source.info.width == 128 and np.abs(frames[0].image.astype(int) - frame).mean() < 6  # lossy video
    with pytest.raises(DeviceError, match="delivers 128x64 frames, the dual-fisheye lens model is 256x128") as exc:
        DualFisheyeSource(VideoFilePanoSource(video, timestamps=csv, realtime=False), DualFisheyeCamera.nominal(256)).connect()
    assert "\n" not in str(exc.value)


def test_record_keeps_raw_frames_with_their_lens_model(tmp_path, capsys):
    # `record --pano-file F --pano-lenses L`: the raw frames are recorded as they come and the lens
    # model lands beside them, named by the session's 360 entry, so the session reads as raw.
    from omnimocap.apps.cli import main
    from omnimocap.capture.dual_fisheye import LENSES_FILE, pano_camera
    from omnimocap.capture.session import PANO_FRAMES, Session
    from tests.tools.cli import one_line_error

    cam = DualFisheyeCamera.nominal(128, baseline_m=0.03)
    frame = _render_dual(cam)
    video = tmp_path / "raw.mkv"
    writer = PanoWriter(video, tmp_path / PANO_FRAMES, cam.width, cam.height, fps=30)
    for i in range(6):
        writer.write(frame, 1.0 + i / 30, 1.0 + i / 30)
    writer.close()
    lenses = tmp_path / "lenses.json"
    save_dual_fisheye(cam, lenses)
    out = tmp_path / "rec"
    assert main(["record", str(out), "--pano-file", str(video), "--pano-lenses", str(lenses), "--min-free-gb", "0"]) == 0
    session = Session.open(out)
    entry = session.pano()
    assert entry.lenses == LENSES_FILE and (entry.width, entry.height) == (128, 64)
    recorded = pano_camera(session)
    assert isinstance(recorded, DualFisheyeCamera)
    assert recorded.to_dict() == load_dual_fisheye(lenses).to_dict()
    assert len(PanoReader(session.path(entry.recording), session.path(entry.timestamps))) == 6
    # without the lens model the same file records as an equirectangular panorama
    assert main(["record", str(tmp_path / "plain"), "--pano-file", str(video), "--min-free-gb", "0"]) == 0
    assert Session.open(tmp_path / "plain").pano().lenses is None
    # a lens model without a camera, a malformed one or another size: one line, nothing recorded
    line = one_line_error(capsys, ["record", str(tmp_path / "a"), "--pano-lenses", str(lenses), "--min-free-gb", "0"])
    assert "--pano-lenses" in line and not (tmp_path / "a").exists()
    (tmp_path / "bad.json").write_text("{}")
    line = one_line_error(capsys, ["record", str(tmp_path / "b"), "--pano-file", str(video), "--pano-lenses",
                                   str(tmp_path / "bad.json"), "--min-free-gb", "0"])
    assert "bad.json" in line and "lens model" in line and not (tmp_path / "b").exists()
    save_dual_fisheye(DualFisheyeCamera.nominal(256), tmp_path / "big.json")
    line = one_line_error(capsys, ["record", str(tmp_path / "c"), "--pano-file", str(video), "--pano-lenses",
                                   str(tmp_path / "big.json"), "--min-free-gb", "0"])
    assert "256x128" in line and "128x64" in line and not (tmp_path / "c").exists()


@pytest.fixture(scope="module")
def scene():
    from omnimocap.sim.motion import make_people, sample_people
    from omnimocap.data.skeletons import SIDES
    from omnimocap.fusion.body_model import load_skeleton
    from omnimocap.hands.synthetic_mano import make_synthetic_mano
    from omnimocap.hands.mano import ManoModel

    rng = np.random.default_rng(0)
    skeleton, mano = load_skeleton(None), ManoModel.from_dict(make_synthetic_mano("right"))
    T_world_cam = make_pose(look_at(np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])), np.array([0.0, 1.1, 0.0]))
    people = make_people(1, rng, T_world_cam[:3, 3], skeleton)
    sample = sample_people(people, skeleton, mano, np.array([1.0]), with_vertices=True)
    return T_world_cam, sample, {s: mano.faces_side(s) for s in SIDES}


def _skin(img: np.ndarray) -> np.ndarray:
    b, g, r = (img[..., i].astype(int) for i in range(3))
    return (r > 150) & (r - b > 50) & (g > b)


def test_simulated_raw_frame_shows_the_hand_where_the_lens_images_it(scene):
    T_world_cam, sample, faces = scene
    cam = DualFisheyeCamera.nominal(1024, k=KB, baseline_m=0.03)
    frame = DualFisheyeRenderer(cam, T_world_cam, faces).render(sample.joints[:, 0], sample.global_R[:, 0],
                                                                sample.hand_vertices[:, 0])
    assert frame.shape == (512, 1024, 3)
    assert not frame[0, 0].any() and not frame[0, 600].any()  # outside the image circles
    hand_cam = transform_points(invert_pose(T_world_cam), sample.hand_vertices[0, 0, 1])
    fview = plan_fisheye_views(cam, hand_cam[None], size=96)[0]
    view = render_fisheye_view(frame, cam, fview)
    skin = _skin(view)
    assert skin[36:60, 36:60].mean() > 0.5  # the hand fills the middle of its view
    px = project_to_fisheye_view(fview, hand_cam)
    inside = np.zeros((96, 96), bool)
    inside[np.clip(px[:, 1].round().astype(int), 0, 95), np.clip(px[:, 0].round().astype(int), 0, 95)] = True
    assert skin[inside].mean() > 0.7  # the mesh's vertices project onto skin


def test_stitched_panorama_reads_each_direction_from_the_nearer_lens(scene):
    cam = DualFisheyeCamera.nominal(512)
    frame = _render_dual(cam)
    pano = EquirectCamera(512, 256)
    stitched = stitch_equirect(frame, cam, pano).astype(np.float64)
    diff = np.abs(stitched - _render_equirect(pano))
    assert diff.mean() < 2.0 and np.percentile(diff, 99) < 8.0
