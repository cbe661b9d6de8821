"""The k4abt ctypes binding without the library: struct layouts equal the C headers', skeleton
conversion (mm -> m, quaternion order), the tracker's frame handling against a stand-in library,
and the message when libk4abt is missing."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from omnimocap.capture import k4abt
from omnimocap.data.skeletons import KINECT_INDEX
from omnimocap.errors import DeviceError


def test_struct_layouts_match_c():
    assert ctypes.sizeof(k4abt.k4a_float3_t) == 12
    assert ctypes.sizeof(k4abt.k4a_quaternion_t) == 16
    assert ctypes.sizeof(k4abt.k4abt_joint_t) == 3 * 4 + 4 * 4 + 4 == 32
    assert (k4abt.k4abt_joint_t.position.offset, k4abt.k4abt_joint_t.orientation.offset,
            k4abt.k4abt_joint_t.confidence_level.offset) == (0, 12, 28)
    assert k4abt.k4a_quaternion_t.w.offset == 0  # (w, x, y, z) in memory
    assert ctypes.sizeof(k4abt.k4abt_skeleton_t) == 32 * 32
    assert ctypes.sizeof(k4abt.k4abt_body_t) == 4 + 1024
    # k4a_calibration_t: 2 cameras x 128 bytes + 4x4 extrinsics x 48 bytes + 2 enums.
    assert ctypes.sizeof(k4abt.k4a_calibration_camera_t) == 128
    assert ctypes.sizeof(k4abt.k4a_calibration_t) == 2 * 128 + 16 * 48 + 8
    if ctypes.sizeof(ctypes.c_void_p) == 8:
        assert ctypes.sizeof(k4abt.k4abt_tracker_configuration_t) == 24
        assert k4abt.k4abt_tracker_configuration_t.model_path.offset == 16


def _filled_skeleton() -> k4abt.k4abt_skeleton_t:
    skeleton = k4abt.k4abt_skeleton_t()
    for j in range(32):
        joint = skeleton.joints[j]
        joint.position.x, joint.position.y, joint.position.z = 10.0 * j, -20.0, 1500.0 + j
        joint.orientation.w, joint.orientation.x, joint.orientation.y, joint.orientation.z = 0.5, 0.5, -0.5, 0.5
        joint.confidence_level = j % 3
    return skeleton


def test_skeleton_to_arrays_converts_units_and_order():
    positions, orientations, confidences = k4abt.skeleton_to_arrays(_filled_skeleton())
    assert positions.shape == (32, 3) and orientations.shape == (32, 4) and confidences.shape == (32,)
    wrist = KINECT_INDEX["WRIST_RIGHT"]
    np.testing.assert_allclose(positions[wrist], [0.01 * wrist, -0.02, 1.5 + wrist / 1000], rtol=1e-6)
    np.testing.assert_allclose(orientations[0], [0.5, 0.5, -0.5, 0.5])
    assert confidences.tolist() == [j % 3 for j in range(32)]


class _StandInLibrary:
    """Plays libk4abt for one frame with two bodies (ids 4 and 9) at device time 800222 us."""

    def __init__(self):
        self.released, self.destroyed = [], False

    def k4abt_tracker_create(self, calibration, config, handle):
        handle._obj.value = 1234
        return k4abt.K4A_RESULT_SUCCEEDED

    def k4abt_tracker_pop_result(self, handle, frame, timeout_ms):
        frame._obj.value = 77
        return k4abt.K4A_WAIT_RESULT_SUCCEEDED

    def k4abt_frame_get_num_bodies(self, frame):
        return 2

    def k4abt_frame_get_body_skeleton(self, frame, index, skeleton):
        ctypes.memmove(ctypes.addressof(skeleton._obj), ctypes.addressof(_filled_skeleton()), ctypes.sizeof(skeleton._obj))
        skeleton._obj.joints[0].position.z = 1000.0 * (index + 1)
        return k4abt.K4A_RESULT_SUCCEEDED

    def k4abt_frame_get_body_id(self, frame, index):
        return (4, 9)[index]

    def k4abt_frame_get_device_timestamp_usec(self, frame):
        return 800222

    def k4abt_frame_release(self, frame):
        self.released.append(frame.value)

    def k4abt_tracker_shutdown(self, handle):
        pass

    def k4abt_tracker_destroy(self, handle):
        self.destroyed = True


def test_tracker_pop_builds_body_frame():
    lib = _StandInLibrary()
    with k4abt.BodyTracker(k4abt.k4a_calibration_t(), lib=lib) as tracker:
        frame = tracker.pop()
    assert frame.timestamp == pytest.approx(0.800222)
    assert frame.body_ids.tolist() == [4, 9]
    assert frame.positions.shape == (2, 32, 3)
    np.testing.assert_allclose(frame.positions[:, 0, 2], [1.0, 2.0])
    assert lib.released == [77] and lib.destroyed


def test_missing_library_names_the_sdk():
    with pytest.raises(DeviceError) as err:
        k4abt.load_k4abt(names=("libk4abt_not_installed_here.so",))
    message = str(err.value)
    assert "Body Tracking SDK" in message and "libk4abt_not_installed_here.so" in message and "\n" not in message
