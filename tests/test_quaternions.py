"""The one quaternion module: order, sign, algebra, pinned to scipy's Rotation and to matrices."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.transform import Rotation

from omnimocap.geometry import quaternions as qt
from omnimocap.geometry import transforms as tf

finite = st.floats(-3.0, 3.0, allow_nan=False)
vec3 = arrays(np.float64, 3, elements=finite)


@given(vec3)
def test_quaternion_wxyz_order(aa):
    R = tf.axis_angle_to_matrix(aa)
    q = qt.matrix_to_quat_wxyz(R)
    assert q[0] >= 0
    assert np.allclose(qt.quat_wxyz_to_matrix(q), R, atol=1e-9)
    np.testing.assert_allclose(qt.matrix_to_quat_xyzw(R), qt.wxyz_to_xyzw(q))
    np.testing.assert_allclose(qt.xyzw_to_wxyz(qt.wxyz_to_xyzw(q)), q)


def test_quaternion_wxyz_known_value():
    # 90 degrees about z: w = cos 45, z = sin 45, and x maps to y.
    R = qt.quat_wxyz_to_matrix(np.array([np.sqrt(0.5), 0, 0, np.sqrt(0.5)]))
    assert np.allclose(R @ [1, 0, 0], [0, 1, 0])
    np.testing.assert_allclose(qt.matrix_to_quat_xyzw(R), [0, 0, np.sqrt(0.5), np.sqrt(0.5)])


def test_quaternion_algebra_is_written_once():
    """No module but geometry/quaternions.py defines its own quaternion conversion or algebra."""
    import ast
    from pathlib import Path

    root = Path(qt.__file__).resolve().parents[1]
    own = root / "geometry" / "quaternions.py"
    found = [f"{path.relative_to(root)}:{node.lineno} {node.name}"
             for layer in ("geometry", "capture", "hands", "calibration", "fusion", "sim", "apps")
             for path in (root / layer).rglob("*.py") if path != own
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.FunctionDef) and "quat" in node.name.lower()
             and any(op in node.name.lower() for op in ("mul", "product", "conj", "matrix", "log", "exp", "slerp"))]
    assert not found, found


@given(vec3, vec3)
def test_product_is_the_matrix_product(a, b):
    qa = qt.matrix_to_quat_wxyz(tf.axis_angle_to_matrix(a))
    qb = qt.matrix_to_quat_wxyz(tf.axis_angle_to_matrix(b))
    np.testing.assert_allclose(qt.quat_wxyz_to_matrix(qt.quat_multiply(qa, qb)),
                               tf.axis_angle_to_matrix(a) @ tf.axis_angle_to_matrix(b), atol=1e-9)
    np.testing.assert_allclose(qt.quat_multiply(qa, qt.quat_conjugate(qa)), qt.IDENTITY_WXYZ, atol=1e-12)


@given(vec3)
def test_log_and_exp_are_scipys_rotation_vector(v):
    q = qt.quat_exp(v)
    np.testing.assert_allclose(qt.wxyz_to_xyzw(q) * np.sign(q[0] or 1.0),
                               Rotation.from_rotvec(v).as_quat() * np.sign(Rotation.from_rotvec(v).as_quat()[3] or 1.0),
                               atol=1e-12)
    np.testing.assert_allclose(qt.quat_log(q), Rotation.from_rotvec(v).as_rotvec(), atol=1e-9)
    # q and -q are one rotation: the log takes the short way for both
    np.testing.assert_allclose(qt.quat_log(-q), qt.quat_log(q), atol=1e-12)


def test_log_and_exp_at_the_identity():
    np.testing.assert_array_equal(qt.quat_exp(np.zeros(3)), qt.IDENTITY_WXYZ)
    np.testing.assert_array_equal(qt.quat_log(qt.IDENTITY_WXYZ), np.zeros(3))


def test_continuous_signs_keep_each_frame_on_the_hemisphere_of_the_last():
    rng = np.random.default_rng(0)
    aa = np.cumsum(rng.normal(0, 0.2, (200, 3, 3)), axis=0)  # 200 frames, 3 joints, slow turning
    q = qt.matrix_to_quat_wxyz(tf.axis_angle_to_matrix(aa))
    assert np.any(np.sum(q[1:] * q[:-1], axis=-1) < 0)  # w >= 0 alone flips somewhere
    out = qt.continuous_signs(q)
    assert np.all(np.sum(out[1:] * out[:-1], axis=-1) >= 0)
    np.testing.assert_allclose(np.abs(out), np.abs(q))
    np.testing.assert_allclose(qt.quat_wxyz_to_matrix(out), qt.quat_wxyz_to_matrix(q), atol=1e-12)
    np.testing.assert_array_equal(out[0], q[0])


def test_continuous_signs_carry_the_reference_over_missing_frames():
    q = qt.matrix_to_quat_wxyz(tf.axis_angle_to_matrix(np.array([[0.0, 0.0, 3.0], [0.0, 0.0, 3.1], [0.0, 0.0, 3.3],
                                                                [0.0, 0.0, 3.4]])))
    q[1] = np.nan
    out = qt.continuous_signs(q)
    assert np.isnan(out[1]).all()
    assert out[2] @ out[0] > 0 and out[3] @ out[2] > 0  # past 180 deg, w >= 0 alone would flip here
    assert q[2] @ q[0] < 0
