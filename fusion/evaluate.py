"""Evaluation of a processed simulated session against its ground truth (``truth/``, read through
capture/truth.py).

Every metric is computed from the result files themselves (``fused.npz``, ``views.npz``, the
exported ``smplx*.npz`` and ``rig.json``), never from numbers the pipeline reported about itself.
Result people are matched to true people by their Kinect pelvis trajectories.

The results must come from the truth's session: ``report.json``'s ``session_id`` (written by
``process``, see :func:`omnimocap.fusion.pipeline.session_identity`) must equal the session's (a
report without one must name the session's folder), and
``fused.npz`` must be whole, with finite, increasing output times and finite Kinect joints;
otherwise one :class:`InputError` line, never metrics.

Metric definitions (names are the CLI contract):
- ``sync.offset_error_ms``: |estimated - true| session time of the middle panorama frame.
- ``sync.rate_error_ppm``: |a_est / a_true - 1| * 1e6 of the panorama time map.
- ``calibration.rotation_error_deg`` / ``translation_error_mm``: the 360 camera's pose relative to
  the reference Kinect, estimated vs true.
- ``calibration.kinect_rotation_error_deg`` / ``kinect_translation_error_mm``: each non-reference
  Kinect's pose relative to the reference Kinect, estimated vs true, mean over those Kinects (null
  with one Kinect).
- ``calibration.world_up_error_deg``: angle between the estimated and the true world up, both
  expressed in the reference Kinect's frame; ``calibration.floor_error_mm``: |estimated - true|
  height of the reference Kinect above the floor (world y of its position).
- ``views.center_error_p95``: 95th percentile of the true hand centre's (mean of its 21 joints)
  distance from the view centre, as a fraction of the view's half-width, over visible hands.
- ``hands.joint_error_mm``: mean 3D error of the fused 21 hand joints (world), over fused hands.
- ``hands.coverage``: fraction of visible true hands (at output times) that were fused.
- ``hands.coverage_24px``: the same over the visible true hands whose box at the 360 camera's
  native resolution is at least ``COVERAGE_MIN_BOX_PX`` (24) pixels: the angular diameter of the
  true 21 joints seen from the true camera centre (hands/sim_field.py ``box_size_px``) times the
  session's pano width / 2 pi pixels per radian (null without a pano width).
- ``hands.wrist_error_mm`` / ``kinect.wrist_error_mm``: fused wrist / Kinect wrist (as tracked,
  fused over the Kinects when there are several, before any smoothing) vs the true wrist, over the
  same fused hands.
- ``kinect.joint_error_mm``: mean error of the fused Kinect skeleton the pipeline used (``fused.npz``
  ``kinect_joints_world``) over the joints the body tracking models from SMPL-X, against those true
  model joints; ``kinect.best_single_joint_error_mm``: the same for each Kinect's own skeleton
  (its body JSON through the estimated rig, at its own frame times, each body matched to the true
  person by its pelvis), the best device's mean. With two Kinects the first should be below the
  second.
- ``body.joint_error_mm``: SMPL-X joints 0..21 from forward kinematics of the exported file vs truth.
  ``body.seen_fraction``: the share of the matched people's output frames that ``fused.npz``
  ``body_valid`` marks as seen by a Kinect; ``body.joint_error_seen_mm``: the joint error over those
  frames only (both None for results without ``body_valid``).
- ``smplx.hand_roundtrip_deg``: mean angle between the finger joints' rotations expressed in their
  wrist frame, from forward kinematics of the exported SMPL-X parameters, and the same rotations of
  the fused MANO hands.
- ``hands.jitter`` / ``body.jitter``: mean |third difference| x fps^3 of the fused hand joints /
  exported body joints (m/s^3), over runs of consecutive frames; ``*.accel_error``: mean
  |second difference of the result - that of the truth| x fps^2 (m/s^2).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from omnimocap.capture.rig import Rig
from omnimocap.geometry.transforms import (
    invert_pose, relative_angle_deg, transform_points,
)
from omnimocap.capture.session import Session, atomic_write_json
from omnimocap.capture.truth import kinect_joints_from_truth, open_truth
from omnimocap.capture.bodies import read_bodies
from omnimocap.hands.sim_field import box_size_px
from omnimocap.data.skeletons import (
    KINECT_FROM_SMPLX, KINECT_INDEX, MANO_PARENTS, SMPLX_HAND_START, SMPLX_WRIST, SIDES,
    smplx_body_joint_ids,
)
from omnimocap.errors import InputError
from omnimocap.fusion.body_model import forward_kinematics, load_skeleton
from omnimocap.geometry.resample import interpolate_positions


def _load_npz(path: Path, what: str) -> dict:
    if not path.is_file():
        raise InputError(f"{what} not found", path=path, fix="run `omnimocap process` first")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise InputError(f"{what} is truncated or corrupt ({exc})", path=path,
                         fix="run `omnimocap process` again") from None


# The smallest hand box (native pixels) counted by ``hands.coverage_24px``.
COVERAGE_MIN_BOX_PX = 24.0

# fused.npz arrays that evaluation reads.
FUSED_KEYS = ("t_session", "person_ids", "kinect_joints_world", "kinect_wrist_world", "hand_joints_world",
              "hand_valid", "hand_pose", "smplx_local_rotmats", "smplx_betas", "smplx_transl")


def _check_fused(fused: dict, path: Path) -> None:
    """The fused results hold every array evaluation reads, finite increasing output times (s) and
    finite Kinect joints (m) somewhere."""
    fix = "run `omnimocap process` again"
    missing = [k for k in FUSED_KEYS if k not in fused]
    if missing:
        raise InputError(f"fused results lack {', '.join(missing)}", path=path, fix=fix)
    t = np.asarray(fused["t_session"], dtype=np.float64)
    if t.ndim != 1 or not len(t) or not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise InputError("t_session is not a finite, increasing sequence of output times", path=path, fix=fix)
    if not np.any(np.isfinite(fused["kinect_joints_world"])):
        raise InputError("kinect_joints_world holds no finite joint position", path=path, fix=fix)


def _check_same_session(result_dir: Path, session: Session) -> None:
    """Refuse results that do not come from ``session``: the report's ``session_id`` must be the
    session's identity; a report without one (written before identities were recorded) must name
    the session's folder (``session``, resolved)."""
    from omnimocap.fusion.pipeline import session_identity

    report_path = result_dir / "report.json"
    report = _load_json(report_path)
    recorded = report.get("session_id")
    if recorded is not None:
        same = recorded == session_identity(session)
    else:
        same = report.get("session") == str(session.root.resolve())
    if not same:
        raise InputError(f"the results come from another session than {session.root}", path=report_path,
                         fix="pass --truth the simulated session these results were processed from, or process "
                             "that session again")


def _hand_chain_global(local: np.ndarray, parents: tuple[int, ...]) -> np.ndarray:
    """Global rotations relative to the chain root for local rotations (..., J, 3, 3), root = joint 0."""
    out = np.empty_like(local)
    out[..., 0, :, :] = np.eye(3)
    for j in range(1, local.shape[-3]):
        out[..., j, :, :] = out[..., parents[j], :, :] @ local[..., j, :, :]
    return out


def evaluate(result_dir: str | Path, session_dir: str | Path) -> dict:
    """The metrics (see the module docstring) of the results in ``result_dir`` against the ground
    truth of the simulated session at ``session_dir``; also written to ``metrics.json`` there."""
    result_dir, session = Path(result_dir), Session.open(session_dir)
    truth_folder = open_truth(session.root, fix="only simulated sessions can be evaluated")
    _check_same_session(result_dir, session)
    truth = truth_folder.motion()
    true_rig = truth_folder.rig()
    est_rig = Rig.load(result_dir / "rig.json")
    fused = _load_npz(result_dir / "fused.npz", "fused results")
    _check_fused(fused, result_dir / "fused.npz")
    ref = session.kinects()[0].name
    metrics = sync_calibration_errors(true_rig, est_rig, truth["pano_frame_t_session"], ref,
                                      [k.name for k in session.kinects()[1:]])
    # The result's world frame may be an estimated one (gravity, floor, the reference Kinect's axis)
    # that differs from the simulation's by a rigid motion; world positions are compared after
    # mapping them through the reference Kinect: G = T_world_ref(true) @ inv(T_world_ref(est)).
    # Up and floor errors of that frame are measured on their own (calibration.world_up_error_deg,
    # calibration.floor_error_mm).
    G = true_rig.pose(ref) @ invert_pose(est_rig.pose(ref))
    for key in ("kinect_joints_world", "hand_joints_world", "kinect_wrist_world"):
        fused[key] = transform_points(G, fused[key])
    match = match_people(fused, truth)
    metrics["people.matched"] = len(match)
    metrics["people.true"] = truth["smplx_joints"].shape[0]
    t_out = fused["t_session"]
    fps = float(1.0 / np.median(np.diff(t_out))) if len(t_out) > 1 else 30.0
    width = session.pano().width if any(d.kind == "pano" for d in session.manifest.devices) else None
    metrics.update(hand_errors(fused, truth, match, fps, true_rig.pose("pano"), width))
    metrics.update(kinect_skeleton_errors(session, truth, est_rig, G, fused, match))
    views_path = result_dir / "views.npz"
    if views_path.is_file():
        metrics.update(view_errors(_load_npz(views_path, "views"), truth, true_rig, match))
    report = _load_json(result_dir / "report.json")
    skeleton = load_skeleton(None if report.get("skeleton", "built-in") == "built-in" else report["skeleton"])
    metrics.update(body_errors(skeleton, fused, truth, G, match, fps))
    metrics = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}
    atomic_write_json(result_dir / "metrics.json", metrics)
    return metrics


def sync_calibration_errors(true_rig: Rig, est_rig: Rig, t_frames_true: np.ndarray, reference: str,
                            others: list[str]) -> dict:
    """The ``sync.*`` and ``calibration.*`` metrics (see the module docstring): the panorama's time
    map at its middle frame (true session times ``t_frames_true``, seconds) and rate, its pose
    relative to the ``reference`` Kinect, and :func:`kinect_calibration_errors`."""
    pano_true, pano_est = true_rig.time_map("pano"), est_rig.time_map("pano")
    t_mid_pano = pano_true.to_sensor(t_frames_true[len(t_frames_true) // 2])
    metrics: dict[str, float | None] = {
        "sync.offset_error_ms": float(abs(pano_est.to_session(t_mid_pano) - pano_true.to_session(t_mid_pano)) * 1e3),
        "sync.rate_error_ppm": float(abs(pano_est.a / pano_true.a - 1.0) * 1e6)}
    T_ref_pano_true = invert_pose(true_rig.pose(reference)) @ true_rig.pose("pano")
    T_ref_pano_est = invert_pose(est_rig.pose(reference)) @ est_rig.pose("pano")
    metrics["calibration.rotation_error_deg"] = float(relative_angle_deg(T_ref_pano_true[:3, :3], T_ref_pano_est[:3, :3]))
    metrics["calibration.translation_error_mm"] = float(np.linalg.norm(T_ref_pano_true[:3, 3] - T_ref_pano_est[:3, 3]) * 1e3)
    metrics.update(kinect_calibration_errors(true_rig, est_rig, reference, others))
    return metrics


def match_people(fused: dict, truth: dict) -> dict[int, int]:
    """``{result person index: true person index}``: the assignment of least mean Kinect pelvis
    distance (world, metres; ``fused`` already in the true world), pairs under 0.5 m."""
    t_out = fused["t_session"]
    t_truth = truth["t_session"]
    P_res, P_true = len(fused["person_ids"]), truth["smplx_joints"].shape[0]
    true_pelvis = np.stack([interpolate_positions(t_truth, truth["smplx_joints"][q, :, 0], t_out) for q in range(P_true)])
    kin_pelvis = fused["kinect_joints_world"][:, :, KINECT_INDEX["PELVIS"]]
    cost = np.zeros((P_res, P_true))
    for p in range(P_res):
        for q in range(P_true):
            d = np.linalg.norm(kin_pelvis[p] - true_pelvis[q], axis=-1)
            cost[p, q] = np.nanmean(d) if np.any(np.isfinite(d)) else 1e9
    rows, cols = linear_sum_assignment(cost)
    return {int(p): int(q) for p, q in zip(rows, cols) if cost[p, q] < 0.5}


def hand_errors(fused: dict, truth: dict, match: dict[int, int], fps: float, T_world_pano: np.ndarray | None = None,
                pano_width: int | None = None) -> dict:
    """The ``hands.*`` metrics and ``kinect.wrist_error_mm`` (see the module docstring); ``fused``
    already in the true world, ``fps`` the output rate, ``T_world_pano`` (4,4) the true 360
    camera's pose and ``pano_width`` its frames' width in pixels (for ``hands.coverage_24px``;
    null without them)."""
    t_out = fused["t_session"]
    t_truth = truth["t_session"]
    hand_err, wrist_err, kin_wrist_err = [], [], []
    hand_jitter, hand_accel = [], []
    visible_total, visible_fused = 0, 0
    large_total, large_fused = 0, 0
    sized = T_world_pano is not None and bool(pano_width)
    for p, q in match.items():
        true_hands = interpolate_positions(t_truth, truth["hand_joints"][q], t_out)  # (F,2,21,3)
        vis_idx = np.clip(np.searchsorted(t_truth, t_out), 0, len(t_truth) - 1)
        visible = truth["hand_visible"][q][vis_idx] & np.all(np.isfinite(true_hands), axis=(-1, -2))
        valid = fused["hand_valid"][p] & np.all(np.isfinite(true_hands), axis=(-1, -2))
        visible_total += int(visible.sum())
        visible_fused += int((visible & valid).sum())
        if sized:
            hands_pano = transform_points(invert_pose(T_world_pano), np.where(visible[..., None, None], true_hands, 1.0))
            large = visible & (box_size_px(hands_pano, float(pano_width)) >= COVERAGE_MIN_BOX_PX)
            large_total += int(large.sum())
            large_fused += int((large & valid).sum())
        if np.any(valid):
            err = np.linalg.norm(fused["hand_joints_world"][p][valid] - true_hands[valid], axis=-1)
            hand_err.append(err.mean(axis=-1))
            wrist_err.append(err[:, 0])
            kw = fused["kinect_wrist_world"][p][valid]
            kerr = np.linalg.norm(kw - true_hands[valid][:, 0], axis=-1)
            kin_wrist_err.append(kerr[np.isfinite(kerr)])
        for side in range(2):
            jit, acc = _jitter_accel(fused["hand_joints_world"][p][:, side], true_hands[:, side], valid[:, side], fps)
            hand_jitter += jit
            hand_accel += acc
    return {"hands.joint_error_mm": _mean_mm(hand_err),
            "hands.wrist_error_mm": _mean_mm(wrist_err),
            "kinect.wrist_error_mm": _mean_mm(kin_wrist_err),
            "hands.coverage": float(visible_fused / visible_total) if visible_total else None,
            "hands.coverage_24px": float(large_fused / large_total) if large_total else None,
            "hands.jitter": float(np.mean(np.concatenate(hand_jitter))) if hand_jitter else None,
            "hands.accel_error": float(np.mean(np.concatenate(hand_accel))) if hand_accel else None}


def view_errors(views: dict, truth: dict, true_rig: Rig, match: dict[int, int]) -> dict:
    """``views.center_error_p95`` and ``views.count`` (see the module docstring) of ``views.npz``."""
    t_truth = truth["t_session"]
    t_frames_true = truth["pano_frame_t_session"]
    T_pano_world_true = invert_pose(true_rig.pose("pano"))
    errs = []
    for p, q in match.items():
        sel = np.flatnonzero(views["person"] == p)
        if not len(sel):
            continue
        k = views["frame_index"][sel]
        s = views["side"][sel]
        t_true = t_frames_true[k]
        idx = np.clip(np.searchsorted(t_truth, t_true), 0, len(t_truth) - 1)
        centre = interpolate_positions(t_truth, truth["hand_joints"][q].mean(axis=-2), t_true)[np.arange(len(sel)), s]
        vis = truth["hand_visible"][q][idx, s] & np.all(np.isfinite(centre), axis=-1)
        c_pano = transform_points(T_pano_world_true, centre[vis])
        c_view = np.einsum("nji,nj->ni", views["R_pano_view"][sel][vis], c_pano)
        offset = np.linalg.norm(c_view[:, :2] / c_view[:, 2:3], axis=-1) * views["fx"][sel][vis]
        half = (views["size"][sel][vis] - 1) / 2.0
        errs.append(np.where(c_view[:, 2] > 0, offset / half, np.inf))
    allerr = np.concatenate(errs) if errs else np.zeros(0)
    return {"views.center_error_p95": float(np.percentile(allerr, 95)) if len(allerr) else None,
            "views.count": int(len(allerr))}


def body_errors(skeleton, fused: dict, truth: dict, G: np.ndarray, match: dict[int, int], fps: float) -> dict:
    """The ``body.*`` metrics and ``smplx.hand_roundtrip_deg`` (see the module docstring) of the
    fitted SMPL-X on the output frames (``smplx.npz`` holds the same motion resampled into AMASS's
    world); ``G`` maps the estimated world into the true one."""
    t_out = fused["t_session"]
    t_truth = truth["t_session"]
    body_ids = list(smplx_body_joint_ids())
    body_err, roundtrip = [], []
    body_jitter, body_accel = [], []
    seen_err, seen = [], []
    for p, q in match.items():
        joints, glob = forward_kinematics(skeleton, fused["smplx_local_rotmats"][p],
                                          fused["smplx_betas"][p][: skeleton.num_betas], fused["smplx_transl"][p])
        joints = transform_points(G, joints)
        true_joints = interpolate_positions(t_truth, truth["smplx_joints"][q], t_out)
        e = np.linalg.norm(joints[:, body_ids] - true_joints[:, body_ids], axis=-1)
        body_err.append(e[np.isfinite(e)])
        if "body_valid" in fused:
            v = np.asarray(fused["body_valid"][p], dtype=bool)
            seen.append(v)
            seen_err.append(e[v][np.isfinite(e[v])])
        ok = np.all(np.isfinite(true_joints[:, body_ids]), axis=(-1, -2))
        jit, acc = _jitter_accel(joints[:, body_ids], true_joints[:, body_ids], ok, fps)
        body_jitter += jit
        body_accel += acc
        roundtrip += _hand_roundtrip(glob, fused["hand_pose"][p], fused["hand_valid"][p])
    return {"body.joint_error_mm": _mean_mm(body_err),
            "body.seen_fraction": float(np.mean(np.concatenate(seen))) if seen else None,
            "body.joint_error_seen_mm": _mean_mm(seen_err) if seen else None,
            "body.jitter": float(np.mean(np.concatenate(body_jitter))) if body_jitter else None,
            "body.accel_error": float(np.mean(np.concatenate(body_accel))) if body_accel else None,
            "smplx.hand_roundtrip_deg": float(np.mean(np.concatenate(roundtrip))) if roundtrip else None}


def _hand_roundtrip(glob: np.ndarray, hand_pose: np.ndarray, hand_valid: np.ndarray) -> list[np.ndarray]:
    """Per side, the angles (degrees) between the finger rotations in their wrist frame from the
    SMPL-X global rotations ``glob`` (F,55,3,3) and from the fused MANO ``hand_pose`` (F,2,15,3,3),
    on the frames where the hand is fused (``hand_valid`` (F,2))."""
    out = []
    for s, side in enumerate(SIDES):
        f = np.flatnonzero(hand_valid[:, s])
        if not len(f):
            continue
        start = SMPLX_HAND_START[side]
        fingers = glob[f][:, start:start + 15]
        rel_smplx = np.swapaxes(glob[f][:, SMPLX_WRIST[side]], -1, -2)[:, None] @ fingers
        mano_local = np.concatenate([np.broadcast_to(np.eye(3), (len(f), 1, 3, 3)), hand_pose[f, s]], axis=1)
        rel_mano = _hand_chain_global(mano_local, MANO_PARENTS)[:, 1:]
        out.append(relative_angle_deg(rel_smplx, rel_mano).ravel())
    return out


def kinect_skeleton_errors(session: Session, truth: dict, est_rig: Rig, G: np.ndarray, fused: dict,
                           match: dict[int, int]) -> dict:
    """``kinect.joint_error_mm`` and ``kinect.best_single_joint_error_mm`` (see the module
    docstring). ``G`` maps the estimated world into the true one; ``fused`` is already mapped."""
    rows = [KINECT_INDEX[name] for name in KINECT_FROM_SMPLX]
    t_truth = truth["t_session"]
    model = kinect_joints_from_truth(truth["smplx_joints"], truth["hand_joints"], joints=rows)  # (P,N,R,3) world

    def errors(t: np.ndarray, joints: np.ndarray, q: int) -> np.ndarray:
        e = np.linalg.norm(joints - interpolate_positions(t_truth, model[q], t), axis=-1)
        return e[np.isfinite(e)]

    t_out = fused["t_session"]
    fused_err = [errors(t_out, fused["kinect_joints_world"][p][:, rows], q) for p, q in match.items()]
    single = []
    for entry in session.kinects():
        if not entry.bodies or entry.name not in est_rig.T_world_sensor:
            continue
        rec = read_bodies(session.path(entry.bodies))
        t = est_rig.time_map(entry.name).to_session(rec.timestamps)
        T = G @ est_rig.pose(entry.name)
        errs = []
        for body in rec.bodies.values():
            pts = transform_points(T, body.positions[:, rows])
            pelvis = pts[:, rows.index(KINECT_INDEX["PELVIS"])]
            dist = [np.nanmean(np.linalg.norm(pelvis - interpolate_positions(t_truth, model[q][:, rows.index(
                KINECT_INDEX["PELVIS"])], t), axis=-1)) for q in range(len(model))]
            q = int(np.nanargmin(dist)) if np.any(np.isfinite(dist)) else None
            if q is not None and dist[q] < 0.5:
                errs.append(errors(t, pts, q))
        if errs:
            single.append(_mean_mm(errs))
    return {"kinect.joint_error_mm": _mean_mm(fused_err),
            "kinect.best_single_joint_error_mm": float(min(single)) if single else None}


def kinect_calibration_errors(true_rig: Rig, est_rig: Rig, reference: str, others: list[str]) -> dict:
    """The ``calibration.kinect_*``, ``world_up_error_deg`` and ``floor_error_mm`` metrics (see the
    module docstring) of an estimated rig against the true one; ``reference`` and ``others`` are
    sensor names (``kinect_<serial>``)."""
    rot_err, trans_err = [], []
    for name in others:
        T_true = invert_pose(true_rig.pose(reference)) @ true_rig.pose(name)
        T_est = invert_pose(est_rig.pose(reference)) @ est_rig.pose(name)
        rot_err.append(float(relative_angle_deg(T_true[:3, :3], T_est[:3, :3])))
        trans_err.append(float(np.linalg.norm(T_true[:3, 3] - T_est[:3, 3]) * 1e3))
    up = np.array([0.0, 1.0, 0.0])
    T_ref_true, T_ref_est = true_rig.pose(reference), est_rig.pose(reference)
    up_cos = (T_ref_true[:3, :3].T @ up) @ (T_ref_est[:3, :3].T @ up)
    return {"calibration.kinect_rotation_error_deg": float(np.mean(rot_err)) if rot_err else None,
            "calibration.kinect_translation_error_mm": float(np.mean(trans_err)) if trans_err else None,
            "calibration.world_up_error_deg": float(np.degrees(np.arccos(np.clip(up_cos, -1.0, 1.0)))),
            "calibration.floor_error_mm": float(abs(T_ref_est[1, 3] - T_ref_true[1, 3]) * 1e3)}


def _jitter_accel(x: np.ndarray, truth: np.ndarray, valid: np.ndarray, fps: float) -> tuple[list, list]:
    """Per-sample jitter (|d3 x| fps^3) and acceleration error (|d2 x - d2 truth| fps^2) of joints
    x (F, J, 3) over runs of at least 4 consecutive valid frames."""
    jitter, accel = [], []
    idx = np.flatnonzero(valid)
    if len(idx) < 4:
        return jitter, accel
    runs = np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)
    for run in runs:
        if len(run) < 4:
            continue
        xr, tr = x[run], truth[run]
        jitter.append(np.linalg.norm(np.diff(xr, 3, axis=0), axis=-1).ravel() * fps**3)
        accel.append(np.linalg.norm(np.diff(xr, 2, axis=0) - np.diff(tr, 2, axis=0), axis=-1).ravel() * fps**2)
    return jitter, accel


def _mean_mm(chunks: list[np.ndarray]) -> float | None:
    vals = np.concatenate(chunks) if chunks else np.zeros(0)
    vals = vals[np.isfinite(vals)]
    return float(vals.mean() * 1e3) if len(vals) else None


def _load_json(path: Path) -> dict:
    from omnimocap.capture.session import read_json

    return read_json(path, "processing report")
