"""Render docs/images/blender.png: an exported glTF sequence imported and rendered headless by Blender.

Run: .venv/bin/python scripts/blender_screenshot.py  (needs .venv-blender from scripts/setup.sh)
The motion is a short synthetic walk-in-place on the built-in skeleton, exported by `omnimocap export`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from omnimocap.apps.cli import main
from omnimocap.geometry.transforms import axis_angle_to_matrix
from omnimocap.data.skeletons import SMPLX_INDEX
from omnimocap.fusion.body_model import body_model_record
from omnimocap.fusion.export_blender import run_blender_job

OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "blender.png"


def walk(F: int = 60, fps: float = 30.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t, local rotations (F, 55, 3, 3), transl (F, 3)): arms down and swinging, legs stepping."""
    t = np.arange(F) / fps
    phase = 2 * np.pi * 0.8 * t
    aa = np.zeros((F, 55, 3))
    aa[:, 0, 1] = 0.5  # turned a little towards the camera
    aa[:, SMPLX_INDEX["left_shoulder"], 2] = -1.2
    aa[:, SMPLX_INDEX["right_shoulder"], 2] = 1.2
    aa[:, SMPLX_INDEX["left_shoulder"], 0] = 0.4 * np.sin(phase)
    aa[:, SMPLX_INDEX["right_shoulder"], 0] = -0.4 * np.sin(phase)
    aa[:, SMPLX_INDEX["left_elbow"], 1] = -0.5
    aa[:, SMPLX_INDEX["right_elbow"], 1] = 0.5
    aa[:, SMPLX_INDEX["left_hip"], 0] = -0.4 * np.sin(phase)
    aa[:, SMPLX_INDEX["right_hip"], 0] = 0.4 * np.sin(phase)
    aa[:, SMPLX_INDEX["left_knee"], 0] = 0.6 * np.clip(np.sin(phase), 0, None)
    aa[:, SMPLX_INDEX["right_knee"], 0] = 0.6 * np.clip(-np.sin(phase), 0, None)
    transl = np.stack([np.zeros(F), 0.92 + 0.01 * np.cos(2 * phase), np.zeros(F)], -1)
    return t, axis_angle_to_matrix(aa), transl


def main_() -> None:
    t, local, transl = walk()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        F = len(t)
        np.savez(folder / "fused.npz", t_session=t, person_ids=np.array([1]), smplx_local_rotmats=local[None],
                 smplx_transl=transl[None], smplx_betas=np.zeros((1, 10)), hand_R_world=np.tile(np.eye(3), (1, F, 2, 1, 1)),
                 hand_pose=np.tile(np.eye(3), (1, F, 2, 15, 1, 1)), hand_wrist_world=np.zeros((1, F, 2, 3)),
                 hand_valid=np.zeros((1, F, 2), bool), **body_model_record(None))
        assert main(["export", str(folder), "--format", "gltf", "--models", str(folder / "none")]) == 0
        OUT.parent.mkdir(parents=True, exist_ok=True)
        run_blender_job("render", str(folder / "smplx.glb"), str(OUT), "20")
    print(OUT, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main_()
