"""Wrist-centred views: the equirect convention, agreement with py360convert.e2p, round trips,
view planning, and the torch path.

py360convert 1.0.4's e2p, read against REFERENCE.md §2, agrees on every stated convention (yaw
positive right, pitch positive up, pixel centres at half-integers of the normalised image, the
output grid spanning linspace(-tan(fov/2), tan(fov/2), W)). Details REFERENCE.md does not state,
verified here:
- e2p resamples through cv2 fixed-point maps (cv2.convertMaps to CV_16SC2), so its coordinates are
  rounded to 1/32 pixel; where the image changes by g grey levels per pixel it can differ from an
  exact bilinear sample by about g/32. Our cv2 path rounds the same way (OpenCV 4 rounds float
  maps internally too); the torch path does not.
- e2p pads the panorama with the top and bottom rows rolled half a turn, so within half a row of a
  pole it blends across the pole; we clamp to the pole row. The two differ only where the sampled
  row lies outside [0, H-1].
- Looking straight up or down (v = +-90) e2p keeps the view's x axis horizontal at
  (cos u, 0, -sin u) in the panorama's OpenCV frame, so the yaw still sets the roll there
  (``view_from_yaw_pitch`` does the same; ``look_at`` has no yaw to go by at the poles).
- A scalar fov with a non-square out_hw spans tan(fov/2) on both axes, i.e. non-square pixels
  (fy = (H-1)/(2 tan(fov/2))). Only square views are used here.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import py360convert
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from omnimocap.geometry.cameras import EquirectCamera, lonlat_to_bearing
from omnimocap.geometry.transforms import look_at
from omnimocap.geometry.views import (
    WristView,
    plan_view,
    plan_views,
    project_to_view,
    render_view,
    render_views,
    render_views_torch,
    tiling_views,
    view_from_yaw_pitch,
    view_pixel_to_pano_bearing,
    view_sampling_maps,
)

PANO = EquirectCamera(1024, 512)

# Face colours of demo_equirec.png (RGB), sampled at the face centres.
RED, GREEN, YELLOW, BLUE = (252, 1, 7), (113, 245, 22), (255, 255, 10), (27, 42, 250)
MAGENTA, CYAN, WHITE = (220, 59, 254), (33, 255, 255), (255, 255, 255)


@pytest.fixture
def chart(shared) -> np.ndarray:
    """demo_equirec.png as RGB uint8 (512,1024,3)."""
    img = cv2.imread(str(shared("data", "pano", "demo_equirec.png")), cv2.IMREAD_COLOR)
    assert img.shape == (PANO.height, PANO.width, 3)
    return np.ascontiguousarray(img[..., ::-1])


@functools.cache
def smooth_pano(cam: EquirectCamera = PANO) -> np.ndarray:
    """A panorama smooth on the sphere (no jump at the seam or the poles), uint8 (H,W,3), changing
    by at most about 1.1 grey levels per pixel at 1024 columns."""
    d = cam.pixel_to_bearing(np.stack(np.meshgrid(np.arange(cam.width), np.arange(cam.height)), -1))
    axes = np.array([[0.3, -0.5, 0.8], [-0.7, 0.2, 0.4], [0.1, 0.9, -0.3]])
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    chans = [127.5 + 50 * np.sin(2.0 * d @ a + k) + 50 * np.cos(1.5 * d @ a[::-1]) for k, a in enumerate(axes)]
    return np.clip(np.rint(np.stack(chans, -1)), 0, 255).astype(np.uint8)


def wrapped_column_error(a: np.ndarray, b: np.ndarray, width: int) -> np.ndarray:
    return np.abs((a - b + width / 2) % width - width / 2)


def near(colour: np.ndarray, expected: tuple[int, int, int], tol: int = 12) -> bool:
    return bool(np.all(np.abs(np.asarray(colour, dtype=int) - expected) <= tol))


# --- the equirect convention, pinned on the chart -----------------------------------------------

def test_bearing_to_pixel_puts_the_axes_where_the_chart_labels_them(chart):
    W, H = PANO.width, PANO.height
    px = PANO.bearing_to_pixel(np.array([[0, 0, 1], [1, 0, 0], [-1, 0, 0], [0, -1, 0], [0, 1, 0]], float))
    np.testing.assert_allclose(px[0], [W / 2 - 0.5, H / 2 - 0.5])
    np.testing.assert_allclose(px[1], [3 * W / 4 - 0.5, H / 2 - 0.5])
    np.testing.assert_allclose(px[2], [W / 4 - 0.5, H / 2 - 0.5])
    np.testing.assert_allclose(px[3, 1], -0.5)  # up (-y) is the top edge
    np.testing.assert_allclose(px[4, 1], H - 0.5)
    assert wrapped_column_error(PANO.bearing_to_pixel(np.array([0.0, 0.0, -1.0]))[0], W - 0.5, W) < 1e-9

    # Sample 20 degrees above each horizontal axis (clear of the white labels) and 60 degrees up
    # and down at several yaws.
    cases = [(0, 20, RED), (90, 20, GREEN), (-90, 20, YELLOW), (180, 20, BLUE), (-180, 20, BLUE),
             (0, 60, MAGENTA), (120, 60, MAGENTA), (-100, 60, MAGENTA),
             (0, -60, CYAN), (150, -60, CYAN), (-60, -60, CYAN)]
    for lon, lat, colour in cases:
        col, row = PANO.bearing_to_pixel(lonlat_to_bearing(np.radians(lon), np.radians(lat)))
        assert near(chart[int(round(row)), int(round(col)) % W], colour), (lon, lat)


@pytest.mark.parametrize("yaw, pitch, centre, left, right, top, bottom", [
    (0, 0, RED, YELLOW, GREEN, MAGENTA, CYAN),        # +Z
    (90, 0, GREEN, RED, BLUE, MAGENTA, CYAN),         # +X
    (-90, 0, YELLOW, BLUE, RED, MAGENTA, CYAN),       # -X
    (180, 0, BLUE, GREEN, YELLOW, MAGENTA, CYAN),     # -Z, across the seam
    (0, 90, MAGENTA, YELLOW, GREEN, BLUE, RED),       # up (labelled +Y: the chart's y is up): bottom faces +Z
    (0, -90, CYAN, YELLOW, GREEN, RED, BLUE),         # down: the image's top faces +Z
])
def test_render_view_shows_the_chart_faces_around_each_axis(chart, yaw, pitch, centre, left, right, top, bottom):
    """A 120 degree view along each axis: the face at the centre, its four neighbours at the image
    edges (which pins handedness and roll), and the white axis label in the middle."""
    size = 128
    img = render_view(chart, PANO, view_from_yaw_pitch(yaw, pitch, 120.0, size))
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    c = size // 2
    assert near(img[int(0.3 * size), c], centre)
    assert near(img[c, 2], left)
    assert near(img[c, size - 3], right)
    assert near(img[2, c], top)
    assert near(img[size - 3, c], bottom)
    label = img[c - 10:c + 10, c - 20:c + 20].reshape(-1, 3)
    assert np.mean(np.all(label > 230, axis=-1)) > 0.1


def test_view_sampling_maps_follow_the_camera_convention():
    """The float32 maps equal EquirectCamera.bearing_to_pixel of each view pixel's bearing."""
    for yaw, pitch, fov in [(0, 0, 60), (179, 5, 40), (-150, 70, 100), (30, -89, 20)]:
        view = view_from_yaw_pitch(yaw, pitch, fov, 64)
        map_x, map_y = view_sampling_maps(PANO, view)
        assert map_x.dtype == np.float32 and map_x.shape == (64, 64)
        px = np.stack(np.meshgrid(np.arange(64.0), np.arange(64.0)), -1)
        ref = PANO.bearing_to_pixel(view_pixel_to_pano_bearing(view, px))
        assert wrapped_column_error(map_x, ref[..., 0], PANO.width).max() < 2e-3
        assert np.abs(map_y - ref[..., 1]).max() < 2e-3
        assert map_x.min() >= -0.5 and map_x.max() <= PANO.width - 0.5


# --- agreement with py360convert.e2p --------------------------------------------------------------

E2P_CASES = [(0, 0, 60), (90, 0, 90), (-45, 30, 75), (179, 10, 40), (-179.5, -20, 40), (180, 0, 30),
             (30, 75, 60), (-120, -80, 50), (10, 89, 60), (45, 90, 70)]


def _e2p_and_ours(pano: np.ndarray, yaw: float, pitch: float, fov: float, size: int = 128):
    view = view_from_yaw_pitch(yaw, pitch, fov, size)
    ref = py360convert.e2p(pano, fov, yaw, pitch, (size, size), in_rot_deg=0, mode="bilinear")
    ours = render_view(pano, PANO, view)
    map_x, map_y = view_sampling_maps(PANO, view)
    # e2p blends across the pole where the sampled row is outside [0, H-1]; we clamp there.
    inside = (map_y >= 0) & (map_y <= PANO.height - 1)
    return view, ref.astype(int), ours.astype(int), inside, (map_x, map_y)


@pytest.mark.parametrize("yaw, pitch, fov", E2P_CASES)
def test_matches_e2p_on_a_smooth_panorama(yaw, pitch, fov):
    """Within 1 grey level: the image changes by <= ~1.1 levels per pixel, so e2p's 1/32-pixel
    rounding moves it by < 0.04 levels, and each side rounds to uint8 once."""
    _, ref, ours, inside, _ = _e2p_and_ours(smooth_pano(), yaw, pitch, fov)
    assert inside.mean() > 0.999
    assert np.abs(ref - ours)[inside].max() <= 1


@pytest.mark.parametrize("yaw, pitch, fov", E2P_CASES)
def test_matches_e2p_on_the_chart(chart, yaw, pitch, fov):
    """Both round sample positions to 1/32 pixel from maps that agree to ~1e-4 pixel, so the images
    are identical but where a coordinate sits within float32 noise of a rounding step (< 0.1% of
    the pixels); there the chart's full-contrast edges (up to 255 levels per pixel) move a sample
    by at most 255/32 ~ 8 levels. A half-pixel convention slip would change every edge pixel."""
    _, ref, ours, inside, _ = _e2p_and_ours(chart, yaw, pitch, fov)
    diff = np.abs(ref - ours).max(-1)[inside]
    assert np.mean(diff == 0) > 0.999
    assert diff.max() <= 8


def test_seam_interpolates_between_the_last_and_first_columns():
    """Across the seam a view must blend column W-1 with column 0, not clamp to either. The
    panorama falls linearly from 200 at column 0 to 0 at column W-1, so the seam is a 200-level step
    and the blend between the two columns is 200 t at t columns past W-1."""
    W = PANO.width
    ramp = np.broadcast_to(np.linspace(200, 0, W, dtype=np.float32), (PANO.height, W)).copy()
    view = view_from_yaw_pitch(180.0, 0.0, 4.0, 64)  # ~2 degrees = 5.7 columns each side of the seam
    map_x, _ = view_sampling_maps(PANO, view)
    past_seam = np.where(map_x > W - 1, map_x - (W - 1), map_x + 1)  # columns past column W-1
    expected = np.where(past_seam <= 1, 200 * past_seam, 200 * (1 - map_x / (W - 1)))
    assert (map_x > W - 1).any() and (map_x < 0).any()
    # The cv2 path rounds positions to 1/32 pixel: <= 1/64 of the 200-level step, ~3.1 levels.
    np.testing.assert_allclose(render_view(ramp, PANO, view), expected, atol=3.2)
    # The torch path is exact up to float32 coordinates (~6e-5 pixel near column 1023).
    torch_out = render_views_torch(torch.from_numpy(ramp), PANO, [view])[0, 0].numpy()
    np.testing.assert_allclose(torch_out, expected, atol=0.05)


# --- round trips (hypothesis) ---------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(col=st.floats(-0.5, PANO.width - 0.5, exclude_max=True),
       row=st.floats(-0.499, PANO.height - 0.501))
def test_equirect_pixel_bearing_pixel(col, row):
    d = PANO.pixel_to_bearing(np.array([col, row]))
    np.testing.assert_allclose(np.linalg.norm(d), 1.0, atol=1e-12)
    back = PANO.bearing_to_pixel(d)
    assert wrapped_column_error(back[0], col, PANO.width) < 1e-6
    assert abs(back[1] - row) < 1e-6


@settings(max_examples=200, deadline=None)
@given(lon=st.floats(-np.pi, np.pi), lat=st.floats(-1.55, 1.55), scale=st.floats(0.1, 10.0))
def test_equirect_bearing_pixel_bearing(lon, lat, scale):
    d = lonlat_to_bearing(np.array(lon), np.array(lat)) * scale
    np.testing.assert_allclose(PANO.pixel_to_bearing(PANO.bearing_to_pixel(d)), d / scale, atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(yaw=st.floats(-180, 180), pitch=st.floats(-90, 90), fov=st.floats(10, 120),
       u=st.floats(-0.5, 255.5), v=st.floats(-0.5, 255.5))
def test_view_pixel_pano_bearing_view_pixel(yaw, pitch, fov, u, v):
    view = view_from_yaw_pitch(yaw, pitch, fov, 256)
    np.testing.assert_allclose(view.R_pano_view @ view.R_pano_view.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(view.R_pano_view) > 0
    d = view_pixel_to_pano_bearing(view, np.array([u, v]))
    np.testing.assert_allclose(project_to_view(view, d), [u, v], atol=1e-7)
    assert abs(view.fov_deg - fov) < 1e-9


def test_project_to_view_rejects_points_behind_the_view():
    view = view_from_yaw_pitch(0.0, 0.0, 60.0, 64)
    px = project_to_view(view, np.array([[0.1, 0.0, -1.0], [0.0, 0.0, 2.0]]))
    assert np.all(np.isnan(px[0]))
    np.testing.assert_allclose(px[1], [31.5, 31.5])


@pytest.mark.parametrize("yaw, pitch", [(0, 0), (90, 0), (-135, 40), (60, -70)])
def test_view_from_yaw_pitch_is_look_at_with_the_pano_up(yaw, pitch):
    view = view_from_yaw_pitch(yaw, pitch, 60.0)
    forward = lonlat_to_bearing(np.radians(yaw), np.radians(pitch))
    np.testing.assert_allclose(view.R_pano_view, look_at(forward, np.array([0.0, -1.0, 0.0])), atol=1e-12)


def test_tiling_views_cover_their_bands_in_order():
    views = tiling_views(80.0, 64, (0.0, -40.0, 40.0), 45.0, yaw_start_deg=-180.0)
    assert len(views) == 24
    # pitch by pitch, yaw from the start round the circle, each the yaw/pitch view
    for k, (pitch, yaw) in enumerate((p, y) for p in (0.0, -40.0, 40.0) for y in np.arange(-180.0, 180.0, 45.0)):
        np.testing.assert_array_equal(views[k].R_pano_view, view_from_yaw_pitch(yaw, pitch, 80.0, 64).R_pano_view)
        assert views[k].size == 64 and views[k].fov_deg == pytest.approx(80.0)
    rng = np.random.default_rng(3)
    lat = np.radians(rng.uniform(-70.0, 70.0, 3000))
    d = lonlat_to_bearing(rng.uniform(-np.pi, np.pi, 3000), lat)
    inside = np.zeros(len(d), dtype=bool)
    for v in views:
        px = project_to_view(v, d)
        inside |= np.all((px >= 0) & (px <= v.size - 1), axis=-1)
    assert inside.all()
    # the start only turns the circle: same views, the other order
    from_zero = tiling_views(80.0, 64, (0.0,), 45.0)
    np.testing.assert_allclose(from_zero[4].R_pano_view, views[0].R_pano_view, atol=1e-12)


# --- view planning --------------------------------------------------------------------------------

hand_points = st.tuples(
    st.floats(-np.pi, np.pi), st.floats(-1.4, 1.4), st.floats(0.3, 4.0),   # centre lon, lat, range (m)
    st.floats(0.005, 0.4),                                                  # hand radius (m)
    st.integers(1, 21), st.integers(0, 2**31 - 1))


def _make_hand(params) -> np.ndarray:
    lon, lat, dist, radius, n, seed = params
    rng = np.random.default_rng(seed)
    centre = lonlat_to_bearing(np.array(lon), np.array(lat)) * dist
    return centre + rng.uniform(-radius, radius, size=(n, 3))


@settings(max_examples=200, deadline=None)
@given(params=hand_points, margin=st.floats(1.0, 2.0))
def test_plan_view_keeps_every_point_inside_and_the_centre_in_the_middle(params, margin):
    points = _make_hand(params)
    size = 256
    view = plan_view(points, size=size, margin=margin)
    assert 10.0 - 1e-9 <= view.fov_deg <= 120.0 + 1e-9
    c = (size - 1) / 2
    assert view.camera.cx == c and view.camera.cy == c and view.camera.fx == view.camera.fy
    np.testing.assert_allclose(project_to_view(view, points.mean(0)), [c, c], atol=1e-6)
    # No roll: the view's x axis is horizontal in the panorama (the pano's up is -y).
    assert abs(view.R_pano_view[1, 0]) < 1e-9

    assume(view.fov_deg < 120.0 - 1e-9)
    px = project_to_view(view, points)
    assert np.all(np.isfinite(px))
    offset = np.abs(px - c).max()
    assert offset <= c / margin + 1e-6
    if view.fov_deg > 10.0 + 1e-9:
        # The fit is tight: the widest point sits at exactly 1/margin of the half field of view.
        d = points @ view.R_pano_view
        widest = np.max(np.arctan2(np.abs(d[:, :2]), d[:, 2:]))
        np.testing.assert_allclose(margin * widest, np.radians(view.fov_deg) / 2, rtol=1e-9)


def test_plan_view_limits_and_centre_override():
    far_tiny = np.array([[0.0, 0.0, 5.0], [0.001, 0.0, 5.0]])
    assert plan_view(far_tiny, min_fov_deg=10.0).fov_deg == pytest.approx(10.0)
    around = np.array([[1.0, 0, 0], [-1.0, 0, 0], [0, 0, 1.0], [0, 0.01, -1.0]])  # spans behind the camera
    assert plan_view(around, max_fov_deg=120.0).fov_deg == pytest.approx(120.0)
    view = plan_view(np.array([[0.0, 0.0, 1.0]]), center_pano=np.array([1.0, 0.0, 0.0]))
    np.testing.assert_allclose(view.R_pano_view[:, 2], [1.0, 0.0, 0.0], atol=1e-12)
    assert view.fov_deg == pytest.approx(120.0)  # the point is 90 degrees off the forced axis
    with pytest.raises(ValueError):
        plan_view(np.full((3, 3), np.nan))


def test_plan_views_batched_equals_one_by_one():
    rng = np.random.default_rng(3)
    hands = [_make_hand((rng.uniform(-3, 3), rng.uniform(-1, 1), rng.uniform(0.5, 3), rng.uniform(0.02, 0.2),
                         21, int(rng.integers(1 << 30)))) for _ in range(6)]
    batch = np.stack(hands)
    batch[2, 5] = np.nan  # a missing point is ignored
    views = plan_views(batch, size=128)
    assert len(views) == 6
    for i, view in enumerate(views):
        pts = batch[i][np.all(np.isfinite(batch[i]), axis=-1)]
        single = plan_view(pts, size=128)
        np.testing.assert_allclose(view.R_pano_view, single.R_pano_view, atol=1e-12)
        assert view.camera == single.camera


# --- batched and torch paths ----------------------------------------------------------------------

def _mixed_views(size: int = 97) -> list[WristView]:
    """Ordinary, seam-crossing and pole-containing views of one size; the size is odd so that the
    straight-up view's centre pixel samples the pole itself (row -0.5)."""
    return [view_from_yaw_pitch(y, p, f, size) for y, p, f in
            [(0, 0, 40), (179.9, -10, 30), (-100, 60, 90), (35, 90, 50), (150, -85, 25)]]


def test_render_views_equals_render_view():
    pano = smooth_pano()
    views = _mixed_views()
    batch = render_views(pano, PANO, views)
    assert batch.shape == (len(views), 97, 97, 3)
    for i, view in enumerate(views):
        np.testing.assert_array_equal(batch[i], render_view(pano, PANO, view))


@pytest.mark.parametrize("layout", ["hwc", "chw", "hw"])
def test_torch_path_equals_cv2_path(device, layout):
    pano = smooth_pano()
    # The extra 0.2 degree view straight up has every sample clamped to row 0: a one-row band.
    views = _mixed_views() + [view_from_yaw_pitch(0.0, 90.0, 0.2, 97)]
    channels = slice(1, 2) if layout == "hw" else slice(0, 3)
    ref = render_views(pano, PANO, views).astype(np.float32)[..., channels]  # (V,s,s,C)
    t = torch.from_numpy(pano)
    if layout == "chw":
        t = t.permute(2, 0, 1).contiguous().float()
    elif layout == "hw":
        t = t[..., 1]
    out = render_views_torch(t, PANO, views, device=device)
    assert out.shape == (len(views), ref.shape[-1], 97, 97) and out.dtype == torch.float32
    assert out.device.type == torch.device(device).type
    # cv2 rounds positions to 1/32 pixel (<= 1.1/32 levels here) and values to uint8 (<= 0.5).
    assert np.abs(out.cpu().numpy().transpose(0, 2, 3, 1) - ref).max() <= 0.6
    # One view at a time the band of rows the views reach differs.
    for i, view in enumerate(views):
        single = render_views_torch(t, PANO, [view], device=device)[0].cpu().numpy()
        assert np.abs(single.transpose(1, 2, 0) - ref[i]).max() <= 0.6


def test_torch_path_on_the_chart(chart, device):
    """On full-contrast edges the cv2 path's 1/32-pixel rounding shows (up to ~255/32 levels); the
    flat faces, most of the image, agree to rounding."""
    views = [view_from_yaw_pitch(y, p, 90.0, 64) for y, p in [(0, 0), (180, 0), (90, 90), (-90, -90)]]
    ref = render_views(chart, PANO, views).astype(np.float32)
    out = render_views_torch(torch.from_numpy(chart), PANO, views, device=device).cpu().numpy()
    diff = np.abs(out.transpose(0, 2, 3, 1) - ref).max(-1)
    assert diff.max() <= 255 / 32 + 0.5
    assert np.mean(diff <= 0.5 + 1e-3) > 0.95


def test_shape_errors_are_reported():
    views = _mixed_views(32)
    with pytest.raises(ValueError, match="neither"):
        render_views_torch(torch.zeros(3, 100, 200), PANO, views)
    with pytest.raises(ValueError, match="one square size"):
        render_views(smooth_pano(), PANO, [view_from_yaw_pitch(0, 0, 60, 32), view_from_yaw_pitch(0, 0, 60, 64)])
    with pytest.raises(ValueError, match="camera is"):
        render_view(np.zeros((100, 200, 3), np.uint8), PANO, views[0])
