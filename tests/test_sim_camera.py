"""The field 360 camera of the simulator (sim/pano_camera.py) against the optics it claims
(geometry/pano_optics.py): a small marker is drawn where ``PanoOptics.apparent`` puts it (the
parallax near the seam), where ``capture_times`` and the truth's pixel times put it (the rolling
shutter), and smeared by its speed times the exposure (the blur); ideal sessions render the frames
they rendered before the field camera existed, and realism.json states the optics."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from omnimocap.capture import pano
from omnimocap.capture.truth import Truth, pano_pixel_times
from omnimocap.geometry.cameras import EquirectCamera
from omnimocap.geometry.pano_optics import PanoOptics, capture_times
from omnimocap.geometry.transforms import make_pose, transform_points
from omnimocap.sim.pano_camera import BLUR_SAMPLES, FieldPanoRenderer, PeopleOverShutter, shutter_offsets
from omnimocap.sim.simulate import PANO_DEFAULTS, SimConfig, pano_optics, simulate_session

WIDTH = 1024
T_WORLD_PANO = make_pose(np.eye(3), np.array([0.0, 1.1, 0.0]))
MARKER_M = 0.008
# An octahedron of radius MARKER_M, outward-wound; it stands in for both hand meshes.
_OCTA_V = MARKER_M * np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64)
_OCTA_F = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])


def _octahedron_faces() -> np.ndarray:
    """The faces wound so that their normals point away from the centre."""
    faces = _OCTA_F.copy()
    tri = _OCTA_V[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    flip = np.einsum("ij,ij->i", n, tri.mean(axis=1)) < 0
    faces[flip] = faces[flip][:, ::-1]
    return faces


FACES = {"left": _octahedron_faces(), "right": _octahedron_faces()}


def _renderer(optics: PanoOptics) -> FieldPanoRenderer:
    return FieldPanoRenderer(WIDTH, T_WORLD_PANO, FACES, optics)


def _marker(optics: PanoOptics, centre_cam_at) -> PeopleOverShutter:
    """One 'person' whose joints are undrawn (NaN) and whose two hands are the marker, its centre
    at ``centre_cam_at(t)`` (camera frame) at each shutter offset t."""
    offsets = shutter_offsets(optics)
    centres = transform_points(T_WORLD_PANO, np.stack([centre_cam_at(t) for t in offsets]))  # (S,3) world
    verts = centres[:, None, None, None, :] + _OCTA_V[None, None, None]  # (S,1,1,6,3)
    verts = np.repeat(verts, 2, axis=2)
    joints = np.full((len(offsets), 1, 55, 3), np.nan)
    return PeopleOverShutter(offsets, joints, verts, np.broadcast_to(np.eye(3), (1, 55, 3, 3)).copy())


def _centroid(renderer: FieldPanoRenderer, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (column, row) of the pixels that differ from the empty room, weighted by how much,
    and the (column, row) extent of those pixels."""
    diff = np.abs(frame.astype(np.int32) - renderer.background.astype(np.int32)).sum(axis=-1).astype(np.float64)
    rows, cols = np.nonzero(diff > 6)
    assert len(rows) > 0, "the marker is not in the frame"
    w = diff[rows, cols]
    return np.array([np.average(cols, weights=w), np.average(rows, weights=w)]), \
        np.array([cols.max() - cols.min() + 1, rows.max() - rows.min() + 1])


def _pixel(p_cam: np.ndarray) -> np.ndarray:
    return EquirectCamera(WIDTH, WIDTH // 2).bearing_to_pixel(p_cam)


@pytest.mark.parametrize("lon_deg", [84.0, 96.0, -84.0])
def test_a_marker_near_the_seam_shows_the_lens_parallax(lon_deg):
    optics = PanoOptics(baseline_m=0.03)
    renderer = _renderer(optics)
    lon = np.radians(lon_deg)
    p = 0.45 * np.array([np.sin(lon), -0.1, np.cos(lon)])
    found, _ = _centroid(renderer, renderer.render(_marker(optics, lambda t: p)))
    apparent, lens, seen = optics.apparent(p)
    assert seen and lens == (0 if abs(lon_deg) < 90 else 1)
    predicted, single_viewpoint = _pixel(apparent), _pixel(p)
    assert np.linalg.norm(predicted - single_viewpoint) > 4.0  # the parallax is there to be seen
    assert np.linalg.norm(found - predicted) < 1.0


def test_a_fast_vertical_marker_is_where_its_row_was_exposed():
    """Rolling shutter: a marker 60 deg below the front lens's axis moving down at 6 m/s is drawn
    where ``capture_times`` says it was when its row was read, and the truth's time of the pixel it
    is found at is the time at which it was there."""
    optics = PanoOptics(readout_s=0.025)
    renderer = _renderer(optics)
    down = np.radians(60)
    p0, v = np.array([0.0, np.sin(down), np.cos(down)]), 6.0 * np.array([0.0, np.cos(down), -np.sin(down)])

    def at(t):
        return p0 + np.asarray(t, dtype=np.float64)[..., None] * v

    found, _ = _centroid(renderer, renderer.render(_marker(optics, at)))
    t_captured, p_captured = capture_times(optics, 0.0, at)
    assert t_captured > 0.006  # rows below the axis are read after the frame's timestamp
    predicted = _pixel(p_captured)
    assert np.linalg.norm(predicted - _pixel(p0)) > 4.0
    assert np.linalg.norm(found - predicted) < 1.0
    t_pixel = pano_pixel_times(optics, 10.0, found, WIDTH) - 10.0
    assert abs(t_pixel - t_captured) < 2e-4
    assert np.linalg.norm(_pixel(at(t_pixel)) - found) < 1.0


def test_the_blur_smears_a_fast_marker_by_its_speed_times_the_exposure():
    optics = PanoOptics(exposure_s=0.01)
    still, moving = _renderer(optics), _renderer(optics)
    p0, v = np.array([0.0, 0.0, 1.0]), np.array([6.0, 0.0, 0.0])
    c_still, size_still = _centroid(still, still.render(_marker(optics, lambda t: p0)))
    c_moving, size_moving = _centroid(moving, moving.render(_marker(optics, lambda t: p0 + t * v)))
    ppr = WIDTH / (2 * np.pi)
    travel_px = 6.0 * optics.exposure_s * ppr  # 9.8 px: the marker's path during the exposure
    # the sub-exposures sit at the midpoints of equal slices: their centres span (K-1)/K of the path
    spread = size_moving[0] - size_still[0]
    assert abs(spread - travel_px * (BLUR_SAMPLES - 1) / BLUR_SAMPLES) < 1.5
    assert abs(size_moving[1] - size_still[1]) <= 1
    assert np.linalg.norm(c_moving - c_still) < 0.5  # the exposure is centred on the row's time


def test_ideal_optics_draw_the_single_viewpoint_marker():
    optics = PanoOptics.ideal()
    renderer = _renderer(optics)
    p = 0.45 * np.array([np.sin(np.radians(84)), -0.1, np.cos(np.radians(84))])
    found, _ = _centroid(renderer, renderer.render(_marker(optics, lambda t: p)))
    assert np.linalg.norm(found - _pixel(p)) < 1.0


# sha256 of the raw frames the ideal session below rendered before the field camera existed
# (commit 5dfa322; the encoded H.264 packets were identical too).
IDEAL_FRAMES_SHA256 = "f0dbb1e6139457f28ca4c1ecc9d91538d75aa1148ed7defa9afb3bdd58dbf25d"


def test_ideal_sessions_render_the_frames_they_did_before(tmp_path, monkeypatch):
    digest = hashlib.sha256()
    write = pano.PanoWriter.write

    def hashing_write(self, frame, *args, **kwargs):
        digest.update(frame.tobytes())
        return write(self, frame, *args, **kwargs)

    monkeypatch.setattr(pano.PanoWriter, "write", hashing_write)
    simulate_session(tmp_path, SimConfig(seconds=0.5, people=2, kinects=1, seed=7, pano_width=256, realism="ideal",
                                         kinect_video=False, flashes=(0.2,)))
    assert digest.hexdigest() == IDEAL_FRAMES_SHA256


@pytest.mark.parametrize("realism", ["ideal", "field"])
def test_realism_json_states_the_camera_and_each_pixel_time(tmp_path, realism):
    config = SimConfig(seconds=0.4, people=1, kinects=1, seed=2, pano_width=128, realism=realism, kinect_video=False)
    simulate_session(tmp_path, config)
    truth = Truth(tmp_path)
    record = json.loads((tmp_path / "truth" / "realism.json").read_text())["camera"]
    assert "time_offset_s" in record["note"]
    optics = truth.pano_optics()
    assert optics == pano_optics(config) == PanoOptics.from_dict(record)
    defaults = PANO_DEFAULTS[realism]
    assert optics.baseline_m == pytest.approx(defaults["pano_baseline_mm"] / 1000)
    assert optics.readout_s == pytest.approx(defaults["pano_readout_ms"] / 1000)
    assert optics.exposure_s == pytest.approx(defaults["pano_exposure_ms"] / 1000)
    t_frames = truth.motion(["pano_frame_t_session"])["pano_frame_t_session"]
    top, axis, bottom = np.array([64.0, 0.0]), np.array([64.0, 31.5]), np.array([64.0, 63.0])
    times = truth.pano_pixel_times(np.array([3, 3, 3]), np.stack([top, axis, bottom]), 128)
    assert times[1] == pytest.approx(t_frames[3], abs=1e-9)  # the lens axis is the middle row
    # rows 0 and 63 look 88.6 deg above and below the front lens's axis (column 64: 1.4 deg off it)
    lat, lon = np.radians(90.0 - 90.0 / 64), np.radians(180.0 / 128)
    theta = np.degrees(np.arccos(np.cos(lat) * np.cos(lon)))
    down = np.sin(lat) / np.hypot(np.sin(lat), np.sin(lon) * np.cos(lat))
    half = optics.readout_s * 0.5 * theta / (optics.fov_deg / 2) * down
    assert times[0] == pytest.approx(t_frames[3] - half, abs=1e-7)
    assert times[2] == pytest.approx(t_frames[3] + half, abs=1e-7)


def test_a_level_default_gives_way_to_an_explicit_setting(tmp_path):
    config = SimConfig(realism="field", pano_width=512, pano_readout_ms=0.0)
    optics = pano_optics(config)
    assert optics.readout_s == 0.0 and optics.baseline_m == pytest.approx(0.03)
    assert pano_optics(SimConfig(realism="ideal", pano_baseline_mm=20.0)).baseline_m == pytest.approx(0.02)
    with pytest.raises(ValueError, match="pano_exposure_ms"):
        simulate_session(tmp_path, SimConfig(seconds=0.4, pano_exposure_ms=-1.0, kinect_video=False))
