"""Body-fit speed and accuracy on the CPU, and the temporal filter's effect; writes
``benchmarks/results/body_fit.json``.

- ``fit_body`` (batched analytic initialisation + Levenberg-Marquardt) on one person over 600
  frames of a synthetic motion (our forward kinematics, Kinect joints through the blend matrix,
  15 mm noise per axis), against a per-frame SMPLify-style reference measured in the same run: Adam
  on axis-angle pose + translation with the same data term and pose prior, warm-started from the
  previous frame, the shape fixed to the fitted betas (so the reference gets shape for free).
- Filtering: jitter (mean |d3 x| * fps^3) and acceleration error (mean |d2 x - d2 truth|) of the
  fitted joints, unfiltered vs rotations filtered with ``filter_rotations`` (One Euro, then forward
  kinematics), and of the noisy Kinect joints vs ``filter_positions``; and the pipeline's way:
  the noise-adaptive smoother ``smooth_positions`` on the Kinect joints before the fit.

Usage: python benchmarks/bench_body_fit.py [--frames 600] [--reference-frames 40] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from omnimocap.data.skeletons import KINECT_BODY_FOR_FIT, kinect_from_smplx_matrix
from omnimocap.sim.synthetic_models import synthetic_body_motion
from omnimocap.fusion.body_fit import BodyFitConfig, fit_body
from omnimocap.fusion.body_model import forward_kinematics, forward_kinematics_torch
from omnimocap.fusion.filtering import FilterConfig, filter_positions, filter_rotations, smooth_positions

FPS = 30.0
OUT = Path(__file__).resolve().parent / "results" / "body_fit.json"


def synthetic_motion(F: int, seed: int = 0, noise_m: float = 0.015):
    """Smooth random poses of the built-in skeleton; returns truth joints, noisy Kinect joints, confidence."""
    skeleton, _, joints, kinect, confidence = synthetic_body_motion(F, seed, FPS)
    kinect = kinect + np.random.default_rng(seed + 1).normal(0.0, noise_m, kinect.shape)
    return skeleton, joints, kinect, confidence


def _axis_angle_torch(v):
    theta = v.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    k = v / theta
    K = torch.zeros(v.shape[:-1] + (3, 3), dtype=v.dtype)
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    K = K - K.transpose(-1, -2)
    s, c = torch.sin(theta)[..., None], torch.cos(theta)[..., None]
    return torch.eye(3, dtype=v.dtype) + s * K + (1 - c) * (K @ K)


def smplify_reference(skeleton, betas, kinect, confidence, frames: int, iters: int, cfg: BodyFitConfig):
    """Per-frame Adam over axis-angle pose + translation (warm start), same data term and pose prior."""
    rows = list(KINECT_BODY_FOR_FIT)
    W = torch.as_tensor(kinect_from_smplx_matrix()[:, :22], dtype=torch.float64)
    rest = torch.as_tensor(skeleton.joints_at_rest(betas)[:22], dtype=torch.float64)
    weights = np.asarray(cfg.confidence_weights)[confidence[:, rows]]
    pose = torch.full((22, 3), 1e-3, dtype=torch.float64, requires_grad=True)
    transl = torch.as_tensor(np.nanmean(kinect[0, rows], axis=0), dtype=torch.float64).clone().requires_grad_(True)
    out = np.zeros((frames, 22, 3))
    for f in range(frames):
        target = torch.as_tensor(np.nan_to_num(kinect[f, rows]), dtype=torch.float64)
        w = torch.as_tensor(weights[f], dtype=torch.float64)
        opt = torch.optim.Adam([pose, transl], lr=0.02)
        for _ in range(iters):
            opt.zero_grad()
            joints, _ = forward_kinematics_torch(rest, _axis_angle_torch(pose)[None], transl[None], skeleton.parents[:22])
            loss = (w * ((W @ joints[0] - target) ** 2).sum(-1)).sum()
            loss = loss + cfg.pose_prior_m_per_rad**2 * (pose[1:] ** 2).sum()
            loss.backward()
            opt.step()
        with torch.no_grad():
            joints, _ = forward_kinematics_torch(rest, _axis_angle_torch(pose)[None], transl[None], skeleton.parents[:22])
            out[f] = joints[0].numpy()
    return out


def jitter(x: np.ndarray) -> float:
    return float(np.mean(np.linalg.norm(np.diff(x, n=3, axis=0), axis=-1)) * FPS**3)


def accel_error(x: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.linalg.norm(np.diff(x, n=2, axis=0) - np.diff(truth, n=2, axis=0), axis=-1)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--reference-frames", type=int, default=40)
    ap.add_argument("--reference-iters", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    skeleton, truth, kinect, confidence = synthetic_motion(args.frames)
    cfg = BodyFitConfig()
    fit_body(kinect[:30], confidence[:30], skeleton, cfg)  # warm-up (lazy torch init)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fit = fit_body(kinect, confidence, skeleton, cfg)
        times.append(time.perf_counter() - t0)
    best = min(times)
    ours_fps = args.frames / best
    err = np.linalg.norm(fit.joints[:, :22] - truth[:, :22], axis=-1) * 1000

    n_ref = min(args.reference_frames, args.frames)
    t0 = time.perf_counter()
    ref_joints = smplify_reference(skeleton, fit.betas, kinect, confidence, n_ref, args.reference_iters, cfg)
    ref_time = time.perf_counter() - t0
    ref_fps = n_ref / ref_time
    ref_err = np.linalg.norm(ref_joints - truth[:n_ref, :22], axis=-1) * 1000

    filt_cfg = FilterConfig()
    local_f = filter_rotations(fit.local_rotmats, FPS, filt_cfg)
    transl_f = filter_positions(fit.transl, FPS, filt_cfg)
    joints_f, _ = forward_kinematics(skeleton, local_f, fit.betas, transl_f)
    rows = list(KINECT_BODY_FOR_FIT)
    kinect_truth = np.einsum("mk,fkc->fmc", kinect_from_smplx_matrix(), truth)
    kinect_f = filter_positions(kinect[:, rows], FPS, filt_cfg)
    body = slice(0, 22)
    kinect_s = smooth_positions(kinect, FPS)
    fit_s = fit_body(kinect_s, confidence, skeleton, cfg)
    result = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "torch_threads": args.threads,
                    "processor": platform.processor() or platform.machine()},
        "frames": args.frames,
        "kinect_noise_mm_per_axis": 15.0,
        "body_fit": {
            "frames_per_s": round(ours_fps, 1),
            "seconds_per_run": [round(t, 4) for t in times],
            "joint_error_mm_mean": round(float(err.mean()), 2),
            "joint_error_mm_p95": round(float(np.percentile(err, 95)), 2),
            "config": asdict(cfg),
        },
        "smplify_adam_reference": {
            "frames": n_ref,
            "adam_iterations_per_frame": args.reference_iters,
            "frames_per_s": round(ref_fps, 2),
            "joint_error_mm_mean": round(float(ref_err.mean()), 2),
            "our_error_mm_mean_same_frames": round(float(err[:n_ref].mean()), 2),
        },
        "speedup_vs_reference": round(ours_fps / ref_fps, 1),
        "filter": {
            "config": asdict(filt_cfg),
            "fitted_joints": {
                "jitter_unfiltered": round(jitter(fit.joints[:, body]), 1),
                "jitter_filtered": round(jitter(joints_f[:, body]), 1),
                "accel_error_unfiltered_mm": round(1000 * accel_error(fit.joints[:, body], truth[:, body]), 3),
                "accel_error_filtered_mm": round(1000 * accel_error(joints_f[:, body], truth[:, body]), 3),
                "joint_error_filtered_mm_mean": round(float(np.linalg.norm(joints_f[:, body] - truth[:, body], axis=-1).mean() * 1000), 2),
            },
            "kinect_joints": {
                "jitter_unfiltered": round(jitter(kinect[:, rows]), 1),
                "jitter_filtered": round(jitter(kinect_f), 1),
                "accel_error_unfiltered_mm": round(1000 * accel_error(kinect[:, rows], kinect_truth), 3),
                "accel_error_filtered_mm": round(1000 * accel_error(kinect_f, kinect_truth), 3),
            },
        },
        "adaptive_smoother_before_fit": {
            "jitter_unsmoothed": round(jitter(fit.joints[:, body]), 1),
            "jitter_smoothed": round(jitter(fit_s.joints[:, body]), 1),
            "accel_error_unsmoothed_mm": round(1000 * accel_error(fit.joints[:, body], truth[:, body]), 3),
            "accel_error_smoothed_mm": round(1000 * accel_error(fit_s.joints[:, body], truth[:, body]), 3),
            "joint_error_smoothed_mm_mean": round(float(np.linalg.norm(fit_s.joints[:, body] - truth[:, body], axis=-1).mean() * 1000), 2),
        },
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
