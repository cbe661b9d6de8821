"""Azure Kinect body tracking through the k4abt C library (ctypes): the tracker that runs on live
captures, and :func:`track_session` that runs it over a session's Kinect recordings.

Needs the Azure Kinect Body Tracking SDK 1.1 (``libk4abt.so`` / ``k4abt.dll`` with its ONNX model)
and the Sensor SDK (``libk4a``) on the host; without them :func:`load_k4abt` raises
:class:`DeviceError` naming what to install. Processing a session does not need this module: its
body tracking is read from ``bodies_<serial>.json`` (:mod:`omnimocap.capture.bodies`).

The structures mirror ``k4atypes.h`` / ``k4abttypes.h`` (natural C alignment, 64-bit):
a joint is {k4a_float3_t position (mm), k4a_quaternion_t orientation (w, x, y, z), int
confidence_level} = 32 bytes, a skeleton 32 joints = 1024 bytes. Positions are in the depth camera
frame (x right, y down, z forward); :func:`skeleton_to_arrays` converts them to metres.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from omnimocap.data.skeletons import KINECT_JOINTS
from omnimocap.errors import DeviceError, UserError

K4ABT_JOINT_COUNT = len(KINECT_JOINTS)
K4A_CALIBRATION_TYPE_NUM = 4  # depth, colour, gyro, accelerometer

# k4a_result_t and k4a_wait_result_t
K4A_RESULT_SUCCEEDED = 0
K4A_WAIT_RESULT_SUCCEEDED, K4A_WAIT_RESULT_FAILED, K4A_WAIT_RESULT_TIMEOUT = 0, 1, 2
K4A_WAIT_INFINITE = -1
# k4abt_sensor_orientation_t
K4ABT_SENSOR_ORIENTATION_DEFAULT, K4ABT_SENSOR_ORIENTATION_CLOCKWISE90 = 0, 1
K4ABT_SENSOR_ORIENTATION_COUNTERCLOCKWISE90, K4ABT_SENSOR_ORIENTATION_FLIP180 = 2, 3
# k4abt_tracker_processing_mode_t
K4ABT_TRACKER_PROCESSING_MODE_GPU, K4ABT_TRACKER_PROCESSING_MODE_CPU = 0, 1
K4ABT_TRACKER_PROCESSING_MODE_GPU_CUDA, K4ABT_TRACKER_PROCESSING_MODE_GPU_TENSORRT = 2, 3
K4ABT_TRACKER_PROCESSING_MODE_GPU_DIRECTML = 4

K4ABT_INSTALL_HINT = (
    "install the Azure Kinect Body Tracking SDK 1.1 (Linux: apt install libk4abt1.1-dev from "
    "packages.microsoft.com; Windows: the Body Tracking SDK installer, with its bin folder on PATH) "
    "or set OMNIMOCAP_K4ABT_LIBRARY to the library file; recorded sessions need no tracker"
)


class k4a_float3_t(ctypes.Structure):
    _fields_ = [("x", ctypes.c_float), ("y", ctypes.c_float), ("z", ctypes.c_float)]


class k4a_quaternion_t(ctypes.Structure):
    _fields_ = [("w", ctypes.c_float), ("x", ctypes.c_float), ("y", ctypes.c_float), ("z", ctypes.c_float)]


class k4abt_joint_t(ctypes.Structure):
    _fields_ = [("position", k4a_float3_t), ("orientation", k4a_quaternion_t), ("confidence_level", ctypes.c_int)]


class k4abt_skeleton_t(ctypes.Structure):
    _fields_ = [("joints", k4abt_joint_t * K4ABT_JOINT_COUNT)]


class k4abt_body_t(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32), ("skeleton", k4abt_skeleton_t)]


class k4abt_tracker_configuration_t(ctypes.Structure):
    _fields_ = [("sensor_orientation", ctypes.c_int), ("processing_mode", ctypes.c_int),
                ("gpu_device_id", ctypes.c_int32), ("model_path", ctypes.c_char_p)]


class k4a_calibration_extrinsics_t(ctypes.Structure):
    _fields_ = [("rotation", ctypes.c_float * 9), ("translation", ctypes.c_float * 3)]


class k4a_calibration_intrinsics_t(ctypes.Structure):
    # parameters: cx, cy, fx, fy, k1..k6, codx, cody, p2, p1, metric_radius
    _fields_ = [("type", ctypes.c_int), ("parameter_count", ctypes.c_uint), ("parameters", ctypes.c_float * 15)]


class k4a_calibration_camera_t(ctypes.Structure):
    _fields_ = [("extrinsics", k4a_calibration_extrinsics_t), ("intrinsics", k4a_calibration_intrinsics_t),
                ("resolution_width", ctypes.c_int), ("resolution_height", ctypes.c_int),
                ("metric_radius", ctypes.c_float)]


class k4a_calibration_t(ctypes.Structure):
    _fields_ = [("depth_camera_calibration", k4a_calibration_camera_t),
                ("color_camera_calibration", k4a_calibration_camera_t),
                ("extrinsics", (k4a_calibration_extrinsics_t * K4A_CALIBRATION_TYPE_NUM) * K4A_CALIBRATION_TYPE_NUM),
                ("depth_mode", ctypes.c_int), ("color_resolution", ctypes.c_int)]


# Opaque handles.
k4abt_tracker_t = ctypes.c_void_p
k4abt_frame_t = ctypes.c_void_p
k4a_capture_t = ctypes.c_void_p

# name: (restype, argtypes) of the k4abt functions used here.
_SIGNATURES = {
    "k4abt_tracker_create": (ctypes.c_int, [ctypes.POINTER(k4a_calibration_t), k4abt_tracker_configuration_t,
                                            ctypes.POINTER(k4abt_tracker_t)]),
    "k4abt_tracker_destroy": (None, [k4abt_tracker_t]),
    "k4abt_tracker_shutdown": (None, [k4abt_tracker_t]),
    "k4abt_tracker_set_temporal_smoothing": (None, [k4abt_tracker_t, ctypes.c_float]),
    "k4abt_tracker_enqueue_capture": (ctypes.c_int, [k4abt_tracker_t, k4a_capture_t, ctypes.c_int32]),
    "k4abt_tracker_pop_result": (ctypes.c_int, [k4abt_tracker_t, ctypes.POINTER(k4abt_frame_t), ctypes.c_int32]),
    "k4abt_frame_release": (None, [k4abt_frame_t]),
    "k4abt_frame_get_num_bodies": (ctypes.c_uint32, [k4abt_frame_t]),
    "k4abt_frame_get_body_skeleton": (ctypes.c_int, [k4abt_frame_t, ctypes.c_uint32, ctypes.POINTER(k4abt_skeleton_t)]),
    "k4abt_frame_get_body_id": (ctypes.c_uint32, [k4abt_frame_t, ctypes.c_uint32]),
    "k4abt_frame_get_device_timestamp_usec": (ctypes.c_uint64, [k4abt_frame_t]),
}

_LIBRARY_NAMES = {"win32": ("k4abt.dll",), "darwin": ()}.get(sys.platform, ("libk4abt.so", "libk4abt.so.1.1", "libk4abt.so.1"))


def load_k4abt(names: tuple[str, ...] | None = None) -> ctypes.CDLL:
    """Load libk4abt and declare the signatures used here. ``names`` overrides the library names
    tried (default: ``OMNIMOCAP_K4ABT_LIBRARY``, then the platform's names). Raises
    :class:`DeviceError` when none loads."""
    if names is None:
        env = os.environ.get("OMNIMOCAP_K4ABT_LIBRARY")
        found = ctypes.util.find_library("k4abt")
        names = tuple(n for n in (env, *_LIBRARY_NAMES, found) if n)
    errors = []
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            errors.append(str(exc))
            continue
        for fn, (restype, argtypes) in _SIGNATURES.items():
            func = getattr(lib, fn)
            func.restype, func.argtypes = restype, argtypes
        return lib
    tried = ", ".join(names) or "none for this platform"
    raise DeviceError(f"Azure Kinect body tracking library not found (tried {tried})", path="libk4abt",
                      fix=K4ABT_INSTALL_HINT)


@dataclass
class BodyFrame:
    """Bodies of one tracked depth frame: ``timestamp`` seconds (device clock), ``body_ids`` (B,),
    ``positions`` (B,32,3) metres in the depth camera frame, ``orientations`` (B,32,4) (w, x, y, z),
    ``confidences`` (B,32) k4abt levels."""

    timestamp: float
    body_ids: np.ndarray
    positions: np.ndarray
    orientations: np.ndarray
    confidences: np.ndarray


_JOINT_DTYPE = np.dtype([("position", "<f4", 3), ("orientation", "<f4", 4), ("confidence", "<i4")])


def skeleton_to_arrays(skeleton: k4abt_skeleton_t) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A filled skeleton -> positions (32,3) metres, orientations (32,4) (w, x, y, z), confidences (32,)."""
    joints = np.frombuffer(bytes(skeleton), dtype=_JOINT_DTYPE, count=K4ABT_JOINT_COUNT)
    return (joints["position"].astype(np.float64) / 1000.0, joints["orientation"].astype(np.float64),
            joints["confidence"].astype(np.int64))


class BodyTracker:
    """A k4abt tracker for one device. ``calibration`` is the SDK's calibration struct for the
    device's modes (from libk4a: ``k4a_device_get_calibration`` or ``k4a_calibration_get_from_raw``).
    Feed capture handles (``k4a_capture_t``) with :meth:`enqueue`, read results with :meth:`pop`."""

    def __init__(self, calibration: k4a_calibration_t, *, processing_mode: int = K4ABT_TRACKER_PROCESSING_MODE_GPU,
                 sensor_orientation: int = K4ABT_SENSOR_ORIENTATION_DEFAULT, gpu_device_id: int = 0,
                 model_path: str | None = None, lib: ctypes.CDLL | None = None):
        self._lib = lib or load_k4abt()
        config = k4abt_tracker_configuration_t(sensor_orientation, processing_mode, gpu_device_id,
                                               model_path.encode() if model_path else None)
        self._handle = k4abt_tracker_t()
        if self._lib.k4abt_tracker_create(ctypes.byref(calibration), config, ctypes.byref(self._handle)) != K4A_RESULT_SUCCEEDED:
            raise DeviceError("k4abt_tracker_create failed", path="libk4abt",
                              fix="check the GPU driver / ONNX runtime of the Body Tracking SDK, or use processing_mode CPU")

    def enqueue(self, capture: k4a_capture_t, timeout_ms: int = K4A_WAIT_INFINITE) -> bool:
        """Queue a capture (depth + IR). False on timeout (queue full)."""
        result = self._lib.k4abt_tracker_enqueue_capture(self._handle, capture, timeout_ms)
        if result == K4A_WAIT_RESULT_FAILED:
            raise DeviceError("k4abt_tracker_enqueue_capture failed", path="libk4abt",
                              fix="the capture needs both depth and IR images")
        return result == K4A_WAIT_RESULT_SUCCEEDED

    def pop(self, timeout_ms: int = K4A_WAIT_INFINITE) -> BodyFrame | None:
        """The next tracked frame, or None on timeout."""
        frame = k4abt_frame_t()
        result = self._lib.k4abt_tracker_pop_result(self._handle, ctypes.byref(frame), timeout_ms)
        if result == K4A_WAIT_RESULT_TIMEOUT:
            return None
        if result != K4A_WAIT_RESULT_SUCCEEDED:
            raise DeviceError("k4abt_tracker_pop_result failed", path="libk4abt", fix="restart the tracker")
        try:
            n = self._lib.k4abt_frame_get_num_bodies(frame)
            skeleton = k4abt_skeleton_t()
            ids, pos, rot, conf = [], [], [], []
            for i in range(n):
                if self._lib.k4abt_frame_get_body_skeleton(frame, i, ctypes.byref(skeleton)) != K4A_RESULT_SUCCEEDED:
                    continue
                p, q, c = skeleton_to_arrays(skeleton)
                ids.append(self._lib.k4abt_frame_get_body_id(frame, i))
                pos.append(p)
                rot.append(q)
                conf.append(c)
            timestamp = self._lib.k4abt_frame_get_device_timestamp_usec(frame) / 1e6
        finally:
            self._lib.k4abt_frame_release(frame)
        J = K4ABT_JOINT_COUNT
        return BodyFrame(timestamp, np.asarray(ids, dtype=np.int64), np.asarray(pos).reshape(-1, J, 3),
                         np.asarray(rot).reshape(-1, J, 4), np.asarray(conf, dtype=np.int64).reshape(-1, J))

    def close(self) -> None:
        if self._handle:
            self._lib.k4abt_tracker_shutdown(self._handle)
            self._lib.k4abt_tracker_destroy(self._handle)
            self._handle = k4abt_tracker_t()

    def __enter__(self) -> "BodyTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track_recording(mkv_path: str | Path, json_path: str | Path, *, cpu: bool = False, progress: bool = True) -> int:
    """Track every capture of the Kinect recording ``mkv_path`` and write the k4abt JSON (with
    confidences; positions in millimetres in the depth camera frame, device timestamps) to
    ``json_path``. ``cpu`` runs the tracker's network on the CPU. Returns the frames written."""
    from tqdm import tqdm

    from omnimocap.capture.bodies import BodyRecording, BodyTrack, write_bodies
    from omnimocap.capture.k4a_playback import Playback  # imports this module: not at the top

    mkv_path = Path(mkv_path)
    frames: list[BodyFrame] = []
    with Playback(mkv_path) as playback:
        mode = K4ABT_TRACKER_PROCESSING_MODE_CPU if cpu else K4ABT_TRACKER_PROCESSING_MODE_GPU
        with BodyTracker(playback.calibration(), processing_mode=mode) as tracker:
            bar = tqdm(desc=f"tracking {mkv_path.name}", unit="frame", disable=not progress, file=sys.stderr)
            for capture in playback.captures():
                tracker.enqueue(capture)
                result = tracker.pop()
                if result is not None:
                    frames.append(result)
                bar.update()
            bar.close()
    ids = sorted({int(i) for f in frames for i in f.body_ids})
    bodies = {i: BodyTrack.empty(len(frames)) for i in ids}
    for k, f in enumerate(frames):
        for b, body_id in enumerate(f.body_ids):
            track = bodies[int(body_id)]
            track.positions[k], track.orientations[k], track.confidences[k] = f.positions[b], f.orientations[b], f.confidences[b]
    write_bodies(json_path, BodyRecording(np.array([f.timestamp for f in frames]), np.arange(len(frames)), bodies,
                                          source_file=mkv_path.name))
    return len(frames)


def track_session(session_dir: str | Path, *, cpu: bool = False, overwrite: bool = False,
                  progress: bool = True) -> Iterator[tuple[str, str]]:
    """Track each Kinect recording of a session that has no body tracking yet (every one with
    ``overwrite``), writing ``bodies_<serial>.json`` beside it and saving the manifest after each.
    Yields (recording file name, body file name) as each is done; raises :class:`UserError` when
    there is nothing to track."""
    from omnimocap.capture.session import bodies_name
    from omnimocap.capture.session import Session

    session = Session.open(session_dir)
    todo = [d for d in session.kinects() if d.recording and (overwrite or not d.bodies)]
    if not todo:
        raise UserError("nothing to track: no Kinect recording without body tracking", path=session.root,
                        fix="pass --overwrite to track again")
    for entry in todo:
        name = bodies_name(entry.serial)
        track_recording(session.path(entry.recording), session.path(name), cpu=cpu, progress=progress)
        entry.bodies = name
        session.save()
        yield entry.recording, name
