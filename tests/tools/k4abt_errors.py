"""k4abt's known failures, injected into clean joint tracks for tests: left/right labels exchanged
in runs while the body faces away, whole-body drop-outs, ids that change after a loss, ids swapped
at a crossing, per-joint definition bias, time-correlated wrist and hand noise.

Everything works on arrays: joints (F,32,3) metres in any frame whose y axis is up, times (F,)
seconds, the sensor's position (3,) in that frame."""

from __future__ import annotations

import numpy as np

from omnimocap.data.skeletons import KINECT_INDEX, KINECT_JOINTS

LEFT_RIGHT = np.array([KINECT_INDEX[n.replace("LEFT", "#").replace("RIGHT", "LEFT").replace("#", "RIGHT")]
                       for n in KINECT_JOINTS])
HAND_JOINTS = [KINECT_INDEX[f"{j}_{s}"] for j in ("HAND", "HANDTIP", "THUMB") for s in ("LEFT", "RIGHT")]
WRISTS = [KINECT_INDEX["WRIST_LEFT"], KINECT_INDEX["WRIST_RIGHT"]]
TORSO = [KINECT_INDEX[n] for n in ("PELVIS", "SPINE_NAVEL", "SPINE_CHEST", "NECK", "CLAVICLE_LEFT", "CLAVICLE_RIGHT",
                                   "SHOULDER_LEFT", "SHOULDER_RIGHT", "HIP_LEFT", "HIP_RIGHT")]


def facing_cosine(joints: np.ndarray, sensor: np.ndarray) -> np.ndarray:
    """Cosine between the body's true forward direction and the direction to the sensor (F,)."""
    L = joints[:, [KINECT_INDEX["SHOULDER_LEFT"], KINECT_INDEX["HIP_LEFT"]]].mean(axis=1)
    R = joints[:, [KINECT_INDEX["SHOULDER_RIGHT"], KINECT_INDEX["HIP_RIGHT"]]].mean(axis=1)
    f = np.cross(L - R, [0.0, 1.0, 0.0])
    f /= np.linalg.norm(f, axis=-1, keepdims=True)
    d = sensor - joints[:, KINECT_INDEX["PELVIS"]]
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    return np.sum(f * d, axis=-1)


def mirror_runs(joints: np.ndarray, t: np.ndarray, sensor: np.ndarray, rng, fraction: float = 0.3,
                run_s: tuple[float, float] = (0.5, 1.5)) -> tuple[np.ndarray, np.ndarray]:
    """Exchange every left/right pair in runs (``run_s`` seconds) inside the frames where the body
    faces away from ``sensor``, about ``fraction`` of them. Returns the joints and the mask (F,)."""
    away = facing_cosine(joints, sensor) < 0.0
    mask = np.zeros(len(t), dtype=bool)
    dt = float(np.median(np.diff(t)))
    target = fraction * away.sum()
    for _ in range(1000):
        if mask.sum() >= target:
            break
        candidates = np.flatnonzero(away & ~mask)
        if len(candidates) == 0:
            break
        start = rng.choice(candidates)
        length = int(rng.uniform(*run_s) / dt)
        run = np.arange(start, min(start + length, len(t)))
        run = run[away[run].cumprod().astype(bool)]
        mask[run] = True
    out = joints.copy()
    out[mask] = joints[mask][:, LEFT_RIGHT]
    return out, mask


def dropouts(count: int, t: np.ndarray, rng, run_s: tuple[float, float] = (0.2, 0.7)) -> np.ndarray:
    """Mask (F,) of ``count`` whole-body drop-outs of ``run_s`` seconds each, away from the ends."""
    mask = np.zeros(len(t), dtype=bool)
    for start in rng.uniform(t[0] + 1.0, t[-1] - 1.0, count):
        mask |= (t >= start) & (t < start + rng.uniform(*run_s))
    return mask


def definition_bias(rng, torso_mm: float = 15.0, other_mm: float = 8.0) -> np.ndarray:
    """A constant offset (32,3) metres per joint (to be applied in the body's frame): RMS per axis
    ``torso_mm`` for the torso joints, ``other_mm`` for the rest."""
    scale = np.full(len(KINECT_JOINTS), other_mm)
    scale[TORSO] = torso_mm
    return rng.normal(0.0, 1.0, (len(KINECT_JOINTS), 3)) * scale[:, None] * 1e-3


def body_frame(joints: np.ndarray) -> np.ndarray:
    """Rotations (F,3,3) of the body (columns: left, up, forward) from its labelled hips."""
    x = joints[:, KINECT_INDEX["HIP_LEFT"]] - joints[:, KINECT_INDEX["HIP_RIGHT"]]
    x[:, 1] = 0.0
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    y = np.broadcast_to([0.0, 1.0, 0.0], x.shape)
    z = np.cross(x, y)
    return np.stack([x, y, z], axis=-1)


def apply_bias(joints: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Joints with ``bias`` (32,3) added in the body's frame (:func:`body_frame`)."""
    return joints + np.einsum("fij,kj->fki", body_frame(joints), bias)


def correlated_noise(shape: tuple, std_m: float, rng, tau_frames: float = 5.0) -> np.ndarray:
    """First-order autoregressive noise over axis 0 with correlation time ``tau_frames``, std ``std_m``."""
    a = np.exp(-1.0 / tau_frames)
    e = rng.normal(0.0, std_m * np.sqrt(1 - a * a), shape)
    out = np.empty(shape)
    out[0] = rng.normal(0.0, std_m, shape[1:])
    for i in range(1, shape[0]):
        out[i] = a * out[i - 1] + e[i]
    return out


def hand_noise(joints: np.ndarray, rng, wrist_mm: float = 10.0, hand_mm: float = 25.0) -> np.ndarray:
    """Joints with time-correlated noise on the wrists and the HAND/HANDTIP/THUMB joints."""
    out = joints.copy()
    out[:, WRISTS] += correlated_noise((len(joints), 2, 3), wrist_mm * 1e-3, rng)
    out[:, HAND_JOINTS] += correlated_noise((len(joints), 6, 3), hand_mm * 1e-3, rng)
    return out
