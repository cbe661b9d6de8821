"""Rotation conventions and rigid transforms (property tests)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from omnimocap.geometry import transforms as tf
from omnimocap.geometry.cameras import EquirectCamera, PinholeCamera

finite = st.floats(-3.0, 3.0, allow_nan=False)
vec3 = arrays(np.float64, 3, elements=finite)


@given(vec3)
def test_axis_angle_round_trip(aa):
    R = tf.axis_angle_to_matrix(aa)
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.allclose(tf.axis_angle_to_matrix(tf.matrix_to_axis_angle(R)), R, atol=1e-9)


@given(vec3)
def test_mirror_convention_matches_axis_angle_rule(aa):
    R = tf.axis_angle_to_matrix(aa)
    assert np.allclose(tf.mirror_rotation(R), tf.axis_angle_to_matrix(tf.mirror_axis_angle(aa)), atol=1e-9)


@given(vec3, vec3)
def test_pose_inverse(aa, t):
    T = tf.make_pose(tf.axis_angle_to_matrix(aa), t)
    assert np.allclose(tf.invert_pose(T) @ T, np.eye(4), atol=1e-9)


@given(arrays(np.float64, 3, elements=st.floats(-1, 1)).filter(lambda v: np.linalg.norm(v) > 0.1))
def test_look_at_points_camera_z_along_forward(forward):
    R = tf.look_at(forward)
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-9)
    assert np.isclose(np.linalg.det(R), 1.0)
    assert np.allclose(R[:, 2], forward / np.linalg.norm(forward))


def test_look_at_keeps_image_up_when_level():
    R = tf.look_at(np.array([0.0, 0.0, 1.0]))  # parent = an OpenCV camera, looking straight ahead
    assert np.allclose(R, np.eye(3))


def test_rigid_align_recovers_pose():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(20, 3))
    R = tf.axis_angle_to_matrix(np.array([0.3, -0.2, 0.9]))
    t = np.array([0.5, -1.0, 2.0])
    R_est, t_est = tf.rigid_align(src, src @ R.T + t)
    assert np.allclose(R_est, R) and np.allclose(t_est, t)


@settings(max_examples=200)
@given(st.floats(-179.9, 179.9), st.floats(-89.9, 89.9))
def test_equirect_pixel_bearing_round_trip(lon_deg, lat_deg):
    cam = EquirectCamera(5760, 2880)
    d = np.array([np.cos(np.radians(lat_deg)) * np.sin(np.radians(lon_deg)), -np.sin(np.radians(lat_deg)),
                  np.cos(np.radians(lat_deg)) * np.cos(np.radians(lon_deg))])
    px = cam.bearing_to_pixel(d)
    assert np.allclose(cam.pixel_to_bearing(px), d, atol=1e-9)


def test_equirect_axes():
    cam = EquirectCamera(1024, 512)
    assert np.allclose(cam.bearing_to_pixel(np.array([0, 0, 1.0])), [511.5, 255.5])  # +Z at the centre
    assert np.allclose(cam.bearing_to_pixel(np.array([1.0, 0, 0])), [767.5, 255.5])  # +X at yaw +90
    assert cam.bearing_to_pixel(np.array([0, -1.0, 0.01]))[1] < 2  # -y (up) at the top row


@given(arrays(np.float64, 2, elements=st.floats(60, 520)))
def test_pinhole_distortion_round_trip(px):
    # moderate distortion like a Kinect depth camera's, over the useful part of the image
    cam = PinholeCamera(504.0, 505.0, 320.0, 288.0, 640, 576, (0.3, -0.05, 0.0005, -0.0003, 0.002, 0.65, 0.01, 0.01))
    d = cam.unproject(px)
    assert np.allclose(cam.project(d), px, atol=1e-6)


@given(vec3, vec3)
def test_rotation_between_turns_a_onto_b_the_short_way(a, b):
    if np.linalg.norm(a) < 1e-3 or np.linalg.norm(b) < 1e-3:
        return
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    R = tf.rotation_between(a, b)
    np.testing.assert_allclose(R @ a, b, atol=1e-9)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(R) > 0
    angle = np.arccos(np.clip(a @ b, -1, 1))
    assert abs(tf.rotation_angle(R) - angle) < 1e-6


def test_rotation_between_opposite_and_batched():
    a = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    b = np.array([[0.0, -1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    R = tf.rotation_between(a, b)
    np.testing.assert_allclose(np.einsum("nij,nj->ni", R, a), b, atol=1e-12)
    np.testing.assert_allclose(R[2], np.eye(3))
    assert abs(tf.rotation_angle(R[0]) - np.pi) < 1e-9


@given(vec3, vec3)
def test_pose_vector_round_trip(aa, t):
    T = tf.make_pose(tf.axis_angle_to_matrix(aa), t)
    np.testing.assert_allclose(tf.pose_from_vector(tf.pose_to_vector(T)), T, atol=1e-9)
    np.testing.assert_allclose(tf.pose_from_vector(np.concatenate([aa, t]))[:3, :3], tf.axis_angle_to_matrix(aa))


def test_average_poses_of_nearby_poses():
    rng = np.random.default_rng(4)
    base = tf.make_pose(tf.axis_angle_to_matrix(np.array([0.3, -0.2, 1.0])), np.array([1.0, 2.0, 3.0]))
    noise = [tf.make_pose(tf.axis_angle_to_matrix(d[:3]), d[3:]) for d in rng.normal(0, 0.01, (200, 6))]
    T = np.stack([n @ base for n in noise])
    mean = tf.average_poses(T)
    assert tf.relative_angle_deg(mean[:3, :3], base[:3, :3]) < 0.25  # 0.57 deg noise per axis over 200
    np.testing.assert_allclose(mean[:3, 3], T[:, :3, 3].mean(axis=0))
    np.testing.assert_allclose(mean[:3, :3], tf.average_rotations(T[:, :3, :3]))
    np.testing.assert_allclose(tf.average_poses(T[:1]), T[0], atol=1e-12)
