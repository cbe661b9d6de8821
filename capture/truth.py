"""A simulated session's ground truth (``truth/``): the one module that writes and reads it.

The simulator writes the folder through :class:`Truth`; the simulated observers and the evaluation
read it through :func:`open_truth`. Nothing else names a file in it. The files (one constant each):

- :data:`MOTION_FILE` (``motion.npz``): the people's motion, world frame (y up, metres, floor
  y = 0), on the session clock (seconds); P people, N truth samples (240 Hz), sides in ``SIDES``
  order (left, right):
  ``t_session`` (N,); ``smplx_local_rotmats`` (P,N,55,3,3) float32 (joint 0 is the pelvis's world
  rotation); ``betas`` (P,B); ``transl`` (P,N,3); ``smplx_joints`` (P,N,55,3); ``hand_joints``
  (P,N,2,21,3); ``hand_global_R`` (P,N,2,3,3); ``hand_pose`` (P,N,2,15,3,3) float32 (finger
  rotations, left hands as proper left-hand parameters); ``hand_betas`` (P,2,10);
  ``hand_root_rest`` (P,2,3) (the MANO rest root joint of each hand); ``hand_visible`` (P,N,2) bool
  (seen from the 360 camera); ``pano_frame_t_session`` (F,) the true session time of every
  panorama frame; ``kinect_frame_t_session_<serial>`` the same for each Kinect's frames.
- :data:`RIG_FILE` (``rig.json``): the true rig (poses ``T_world_sensor`` and time maps).
- :data:`KINECTS_FILE` (``kinects.json``): each Kinect's true colour camera and extrinsics.
- :data:`BOARD_FILE` (``board.json``): the ChArUco board's poses, with a board sequence only.
- :data:`FLASHES_FILE` (``flashes.json``): the light's times, with flashes only.
- :data:`REALISM_FILE` (``realism.json``): the realism level and what it injected (the body
  tracking's errors; the 360 camera's optics under ``camera``, :class:`~omnimocap.geometry.pano_optics.PanoOptics`).

:func:`pano_pixel_times` (and :meth:`Truth.pano_pixel_times`) gives the exact capture time of any
pixel of a 360 frame: the frame's true session time plus the optics' offset of that pixel's row.

:func:`kinect_joints_from_truth` is the model by which the simulated body tracking turns the true
joints into k4abt's 32 joints; the simulator and the observers that compare with k4abt use it.
"""

from __future__ import annotations

import os
import shutil
import zipfile
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from omnimocap.capture.rig import Rig
from omnimocap.geometry.cameras import EquirectCamera
from omnimocap.geometry.pano_optics import PanoOptics
from omnimocap.capture.session import RIG, TRUTH_DIR, atomic_write_json, read_json
from omnimocap.data.skeletons import (
    HAND21_INDEX, KINECT_FROM_SMPLX, KINECT_INDEX, KINECT_JOINTS, SIDES, SMPLX_INDEX, kinect_from_smplx_matrix,
)
from omnimocap.errors import InputError

MOTION_FILE = "motion.npz"
RIG_FILE = RIG
KINECTS_FILE = "kinects.json"
BOARD_FILE = "board.json"
FLASHES_FILE = "flashes.json"
REALISM_FILE = "realism.json"
KINECT_FRAME_TIMES = "kinect_frame_t_session_{serial}"

# The k4abt hand joints as points of the 21-joint hand.
KINECT_HAND_FROM_HAND21 = {"HAND": "middle1", "HANDTIP": "middle_tip", "THUMB": "thumb_tip"}
# The k4abt eyes as SMPL-X joints.
KINECT_EYES_FROM_SMPLX = {"EYE_LEFT": "left_eye_smplhf", "EYE_RIGHT": "right_eye_smplhf"}
# The k4abt nose and ears as points on the head, in the SMPL-X head joint's frame (x to the
# person's left, y up, z forward), metres.
KINECT_FACE_OFFSETS_M = {"NOSE": (0.0, 0.03, 0.11), "EAR_LEFT": (0.075, 0.04, 0.0), "EAR_RIGHT": (-0.075, 0.04, 0.0)}


class Truth:
    """The ``truth/`` folder of the session at ``session_dir`` (see the module docstring)."""

    def __init__(self, session_dir: str | Path):
        self.session_dir = Path(session_dir)
        self.dir = self.session_dir / TRUTH_DIR

    def exists(self) -> bool:
        """Whether the session has a ground truth (its motion file)."""
        return (self.dir / MOTION_FILE).is_file()

    # --- writing (the simulator) ------------------------------------------------------------------
    def write_motion(self, arrays: dict[str, np.ndarray]) -> None:
        """Write :data:`MOTION_FILE` (compressed) from the arrays of the module docstring."""
        self.dir.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(self.dir / MOTION_FILE, **arrays)

    def write_rig(self, rig: Rig) -> None:
        """Write the true rig (:data:`RIG_FILE`)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        rig.save(self.dir / RIG_FILE)

    def write_kinects(self, record: dict) -> None:
        self._write_json(KINECTS_FILE, record)

    def write_board(self, record: dict) -> None:
        self._write_json(BOARD_FILE, record)

    def write_flashes(self, record: dict) -> None:
        self._write_json(FLASHES_FILE, record)

    def write_realism(self, record: dict) -> None:
        self._write_json(REALISM_FILE, record)

    def _write_json(self, name: str, obj: Any) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.dir / name, obj)

    def copy_to(self, session_dir: str | Path) -> None:
        """Copy the whole folder into another session (a replay of this one on the same clock)."""
        shutil.copytree(self.dir, Path(session_dir) / TRUTH_DIR, dirs_exist_ok=True)

    # --- reading (the simulated observers, the evaluation) ----------------------------------------
    def motion(self, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The arrays ``keys`` of :data:`MOTION_FILE` (all when None), as stored. A missing,
        corrupt or incomplete file raises one :class:`InputError` line."""
        path = self.dir / MOTION_FILE
        if not path.is_file():
            raise _no_truth(self.session_dir)
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in (keys or ()) if k not in z.files]
                if missing:
                    raise InputError(f"the ground truth motion lacks {', '.join(missing)}", path=path,
                                     fix="simulate the session again with `omnimocap simulate`")
                return {k: z[k] for k in (keys if keys is not None else z.files)}
        except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise InputError(f"the ground truth motion is truncated or corrupt ({exc})", path=path,
                             fix="simulate the session again with `omnimocap simulate`") from None

    def rig(self) -> Rig:
        """The true rig (:data:`RIG_FILE`)."""
        self._require()
        return Rig.load(self.dir / RIG_FILE)

    def kinects(self) -> dict:
        return self._read_json(KINECTS_FILE, "true Kinect cameras")

    def board(self) -> dict:
        return self._read_json(BOARD_FILE, "true board poses")

    def flashes(self) -> dict:
        return self._read_json(FLASHES_FILE, "true flash times")

    def realism(self) -> dict:
        return self._read_json(REALISM_FILE, "realism record")

    def pano_optics(self) -> PanoOptics:
        """The true optics of the 360 camera (baseline, readout, exposure): the ``camera`` record of
        :data:`REALISM_FILE`; the ideal single-viewpoint, global-shutter camera where the session
        has none (sessions simulated before the record existed, or ``ideal`` ones)."""
        if not (self.dir / REALISM_FILE).is_file():
            return PanoOptics.ideal()
        return PanoOptics.from_dict(self.realism().get("camera"))

    def pano_pixel_times(self, frame: int | np.ndarray, px: np.ndarray, width: int) -> np.ndarray:
        """Session times (...) in seconds at which the 360 camera captured the pixels ``px`` (...,2)
        (column, row) of its frames ``frame`` (index or (...) indices) in a panorama ``width``
        pixels wide: :func:`pano_pixel_times` with the frames' true times and the true optics."""
        t_frame = self.motion(["pano_frame_t_session"])["pano_frame_t_session"][np.asarray(frame)]
        return pano_pixel_times(self.pano_optics(), t_frame, px, width)

    def _require(self) -> None:
        if not self.dir.is_dir():
            raise _no_truth(self.session_dir)

    def _read_json(self, name: str, what: str) -> dict:
        self._require()
        return read_json(self.dir / name, what)


def _no_truth(session_dir: Path, fix: str | None = None) -> InputError:
    return InputError(f"the session has no ground truth ({TRUTH_DIR}/{MOTION_FILE}); only simulated sessions have one",
                      path=session_dir, fix=fix or "simulate a session with `omnimocap simulate`")


def open_truth(session_dir: str | Path, fix: str | None = None) -> Truth:
    """The ground truth of the session at ``session_dir``; a session without one raises one
    :class:`InputError` line (with ``fix`` as its fix, when given)."""
    truth = Truth(session_dir)
    if not truth.exists():
        raise _no_truth(Path(session_dir), fix)
    return truth


def pano_pixel_times(optics: PanoOptics, t_frame: float | np.ndarray, px: np.ndarray, width: int) -> np.ndarray:
    """Times (...) at which a 360 camera with ``optics`` captured the pixels ``px`` (...,2) (column,
    row; pixel centres at integers) of a stitched equirect frame ``width`` x ``width / 2`` whose
    timestamp is ``t_frame`` (seconds, any clock; broadcast against ``px``'s leading shape): the
    frame's time plus ``PanoOptics.time_offset_s`` of the pixel's direction, the middle of that
    pixel's exposure (``optics.exposure_s`` long)."""
    dirs = EquirectCamera(int(width), int(width) // 2).pixel_to_bearing(np.asarray(px, dtype=np.float64))
    return np.asarray(t_frame, dtype=np.float64) + optics.time_offset_s(dirs)


def kinect_joints_from_truth(smplx_joints: np.ndarray, hand_joints: np.ndarray, R_head: np.ndarray | None = None,
                             joints: Sequence[int] | None = None) -> np.ndarray:
    """k4abt's joints as the simulated body tracking models them from the truth, before its noise
    and errors: (..., J, 3) positions in the frame of the inputs (metres) for the joint indices
    ``joints`` of ``KINECT_JOINTS`` (all 32 when None), in that order.

    ``smplx_joints`` (..., 55, 3) SMPL-X joints; ``hand_joints`` (..., 2, 21, 3) both hands
    (``SIDES`` order); ``R_head`` (..., 3, 3) the SMPL-X head joint's rotation in the same frame.
    Body joints are the SMPL-X blends of ``data/skeletons.py`` ``KINECT_FROM_SMPLX``; HAND,
    HANDTIP and THUMB the hand joints of :data:`KINECT_HAND_FROM_HAND21`; the eyes the SMPL-X eyes;
    the nose and ears the head points :data:`KINECT_FACE_OFFSETS_M`, NaN without ``R_head``."""
    joints = tuple(range(len(KINECT_JOINTS))) if joints is None else tuple(int(j) for j in joints)
    column = {j: c for c, j in enumerate(joints)}
    out = np.full(smplx_joints.shape[:-2] + (len(joints), 3), np.nan)
    body = [(r, KINECT_INDEX[name]) for r, name in enumerate(KINECT_FROM_SMPLX) if KINECT_INDEX[name] in column]
    if body:
        reg = kinect_from_smplx_matrix()[[r for r, _ in body]]
        out[..., [column[j] for _, j in body], :] = np.einsum("kj,...jc->...kc", reg, smplx_joints)
    for s, side in enumerate(SIDES):
        for name, hand_joint in KINECT_HAND_FROM_HAND21.items():
            j = KINECT_INDEX[f"{name}_{side.upper()}"]
            if j in column:
                out[..., column[j], :] = hand_joints[..., s, HAND21_INDEX[hand_joint], :]
    for name, smplx in KINECT_EYES_FROM_SMPLX.items():
        if KINECT_INDEX[name] in column:
            out[..., column[KINECT_INDEX[name]], :] = smplx_joints[..., SMPLX_INDEX[smplx], :]
    if R_head is not None:
        head = smplx_joints[..., SMPLX_INDEX["head"], :]
        for name, offset in KINECT_FACE_OFFSETS_M.items():
            if KINECT_INDEX[name] in column:
                out[..., column[KINECT_INDEX[name]], :] = head + np.einsum("...ij,j->...i", R_head, np.array(offset))
    return out


def linked_copy_with_realism(source: str | Path, dest: str | Path, **records: dict | None) -> Path:
    """A copy of the simulated session ``source`` at ``dest`` (replaced if present; files
    hard-linked, so it costs no space) whose :data:`REALISM_FILE` has the top-level ``records``
    replaced (a value of None removes that record). The source's file is left as it was."""
    source, dest = Path(source), Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest, copy_function=os.link)
    truth = Truth(dest)
    record = dict(truth.realism())
    for key, value in records.items():
        record.pop(key, None)
        if value is not None:
            record[key] = value
    (truth.dir / REALISM_FILE).unlink()  # a hard link: break it before writing
    truth.write_realism(record)
    return dest

