"""``omnimocap export RESULT_DIR --format amass|mano|gltf|bvh|fbx|rrd``: files for other tools.

Reads ``fused.npz`` of the results folder and writes next to it, one file per person (the first
person's file has no ``_person<i>`` suffix):
- amass: ``smplx.npz`` / ``smplx_person<i>.npz``, z up (``--y-up``: ``_yup`` before the suffix),
  resampled to ``--fps`` (a whole number, 30 by default);
- mano: ``mano_person<i>_<side>.npz`` per person and hand, on the fused frames;
- gltf: ``smplx.glb`` (skinned mesh, one animation at ``--fps``);
- bvh: ``smplx.bvh`` (SMPL-X skeleton with fingers, centimetres, ZXY rotations, ``--fps``);
- fbx: ``smplx.fbx`` through Blender's FBX exporter (armature, skinned mesh, animation);
- rrd: ``fused.rrd`` (needs rerun-sdk).

The body model is the one the fit used (``fused.npz`` records its name and SHA-256): glTF and FBX
take its mesh from that file (the built-in skeleton's fits use the synthetic mesh), and a
``--smplx-model`` other than that file is refused.
"""

from __future__ import annotations

import argparse
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from omnimocap.apps.options import add_models, existing_dir
from omnimocap.errors import InputError, ModelFilesMissing, UserError

FUSED_KEYS = ("t_session", "person_ids", "smplx_local_rotmats", "smplx_transl", "smplx_betas",
              "hand_R_world", "hand_pose", "hand_wrist_world", "hand_valid")
MODEL_KEYS = ("body_model", "body_model_sha256", "body_model_path")
FORMATS = ("amass", "mano", "gltf", "bvh", "fbx", "rrd")


def register(sub) -> None:
    p = sub.add_parser("export", help="write AMASS/MANO/glTF/BVH/FBX/rerun files from a results folder",
                       description="Write AMASS SMPL-X npz, per-hand MANO npz, skinned glTF, BVH, FBX or a "
                                   "rerun recording next to RESULT_DIR/fused.npz.")
    p.add_argument("result", metavar="RESULT_DIR")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--fps", type=float, default=30.0,
                   help="frame rate of amass/gltf/bvh/fbx files, a whole number (default 30)")
    p.add_argument("--y-up", action="store_true", help="amass: keep our y-up world instead of AMASS's z-up one")
    p.add_argument("--smplx-model", default=None, metavar="PATH",
                   help="SMPL-X model file; it must be the file the fit used (default: found by the name "
                        "fused.npz records, in <models>/smplx/ or where the fit found it)")
    add_models(p)
    p.set_defaults(func=run)


def _name(pid_index: int, stem: str, suffix: str) -> str:
    return f"{stem}{suffix}" if pid_index == 0 else f"{stem}_person{pid_index}{suffix}"


def _load(result: Path) -> dict:
    """``fused.npz`` checked: every key, finite body parameters, one line for any fault."""
    fused_path = result / "fused.npz"
    if not fused_path.is_file():
        raise InputError("fused.npz not found", path=result, fix="run `omnimocap process` into this folder first")
    fix = "re-run `omnimocap process`"
    try:
        with np.load(fused_path, allow_pickle=False) as data:
            missing = [k for k in FUSED_KEYS if k not in data.files]
            if missing:
                raise InputError(f"missing keys {', '.join(missing)}", path=fused_path, fix=fix)
            fused = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise InputError(f"truncated or not an npz ({type(exc).__name__})", path=fused_path, fix=fix) from exc
    body = ("smplx_local_rotmats", "smplx_transl", "smplx_betas", "t_session")
    bad = [k for k in body if not np.all(np.isfinite(fused[k]))]
    if bad:
        raise InputError(f"non-finite values in {', '.join(bad)}", path=fused_path, fix=fix)
    P, F = fused["smplx_transl"].shape[:2]
    if len(fused["person_ids"]) != P or len(fused["t_session"]) != F or F == 0:
        raise InputError("inconsistent person or frame counts", path=fused_path, fix=fix)
    if F > 1 and np.any(np.diff(fused["t_session"]) <= 0):
        raise InputError("t_session does not increase", path=fused_path, fix=fix)
    return fused


def _fit_model(fused: dict, fused_path: Path) -> dict[str, str]:
    if not all(k in fused for k in MODEL_KEYS):
        raise InputError("does not record the body model of its fit (written by an older omnimocap)",
                         path=fused_path, fix="re-run `omnimocap process`")
    return {k: str(fused[k]) for k in MODEL_KEYS}


def _model_file(args: argparse.Namespace, record: dict[str, str]) -> Path | None:
    """The SMPL-X file the fit used (None for the built-in skeleton); refuses any other file."""
    from omnimocap.fusion.body_model import BUILT_IN, sha256_of

    if args.smplx_model:
        path = Path(args.smplx_model).expanduser()
        if not path.is_file():
            raise ModelFilesMissing("SMPL-X model file not found", path=path, fix="check the path")
        if record["body_model"] == BUILT_IN:
            raise UserError("the fit used the built-in skeleton, not this model file", path=path,
                            fix="leave out --smplx-model, or re-run `omnimocap process --smplx-model` with it")
        if sha256_of(path) != record["body_model_sha256"]:
            raise UserError(f"not the model file the fit used ({record['body_model']}, SHA-256 "
                            f"{record['body_model_sha256'][:12]}...)", path=path,
                            fix="pass that file, or re-run `omnimocap process` with this one")
        return path
    if record["body_model"] == BUILT_IN:
        return None
    from omnimocap.hands.model_store import default_models_dir

    models = Path(args.models).expanduser() if args.models else default_models_dir()
    candidates = [models / "smplx" / record["body_model"]]
    if record["body_model_path"]:
        candidates.append(Path(record["body_model_path"]))
    for path in candidates:
        if path.is_file() and sha256_of(path) == record["body_model_sha256"]:
            return path
    raise ModelFilesMissing(
        f"the SMPL-X model file the fit used ({record['body_model']}, SHA-256 {record['body_model_sha256'][:12]}...) "
        "is not there", path=candidates[0],
        fix="put that file into <models>/smplx/ (models folder: --models or $OMNIMOCAP_MODELS), or pass --smplx-model PATH")


def _skeleton(model_path: Path | None, num_betas: int):
    from omnimocap.fusion.body_model import load_skeleton

    return load_skeleton(model_path, num_betas=num_betas)


def _mesh(model_path: Path | None) -> dict:
    if model_path is None:
        from omnimocap.sim.synthetic_models import make_synthetic_smplx

        return make_synthetic_smplx()
    from omnimocap.hands.model_files import load_smplx

    return load_smplx(model_path)


def _mano_rest_wrist(args: argparse.Namespace):
    """(ManoModel, record) of the models folder's MANO_RIGHT, else of the synthetic MANO."""
    from omnimocap.fusion.body_model import body_model_record
    from omnimocap.hands.mano import ManoModel

    from omnimocap.hands.model_store import default_models_dir

    models = Path(args.models).expanduser() if args.models else default_models_dir()
    path = models / "mano" / "MANO_RIGHT.pkl"
    if path.is_file():
        rec = body_model_record(path)
        return ManoModel.load(path), {"mano_model": rec["body_model"], "mano_model_sha256": rec["body_model_sha256"]}
    from omnimocap.hands.synthetic_mano import make_synthetic_mano

    return ManoModel.from_dict(make_synthetic_mano("right")), {"mano_model": "built-in", "mano_model_sha256": ""}


def run(args: argparse.Namespace) -> int:
    from omnimocap.fusion import export

    result = existing_dir(args.result, "results folder")
    try:
        rate = export.check_rate(args.fps)
    except ValueError as exc:
        raise UserError(str(exc), fix="pass --fps with a whole number such as 30") from exc
    fused = _load(result)
    record = _fit_model(fused, result / "fused.npz")
    pids = [int(p) for p in fused["person_ids"]]
    try:
        written = _write(args, result, fused, record, pids, rate)
    except PermissionError as exc:
        raise UserError(f"cannot write here ({exc.strerror})", path=exc.filename or result,
                        fix="make the results folder writable, or export from a writable copy of it") from exc
    except OSError as exc:
        if exc.errno is None:
            raise
        raise UserError(f"writing failed ({exc.strerror})", path=exc.filename or result,
                        fix="free disk space or choose a writable results folder") from exc
    for path in written:
        print(path)
    return 0


def _write(args, result: Path, fused: dict, record: dict, pids: list[int], rate: float) -> list[Path]:
    from omnimocap.fusion import export

    written: list[Path] = []
    t = fused["t_session"]
    nb = fused["smplx_betas"].shape[-1]
    if args.format == "mano":
        model, mano_record = _mano_rest_wrist(args)
        betas = fused.get("hand_betas", np.zeros((len(pids), 2, 10)))
        for i, _ in enumerate(pids):
            for s, side in enumerate(("left", "right")):
                b = np.nan_to_num(betas[i, s])
                written.append(export.write_mano_npz(
                    result / f"mano_person{i}_{side}.npz", side, fused["hand_R_world"][i, :, s],
                    fused["hand_pose"][i, :, s], b, fused["hand_wrist_world"][i, :, s],
                    fused["hand_valid"][i, :, s], model.root_joint(side, b),
                    extra={"t_session": t, **record, **mano_record}))
        return written
    model_path = _model_file(args, record)
    skeleton = _skeleton(model_path, nb)
    if args.format == "amass":
        suffix = "_yup.npz" if args.y_up else ".npz"
        for i, pid in enumerate(pids):
            written.append(export.write_amass_npz(
                result / _name(i, "smplx", suffix), fused["smplx_local_rotmats"][i], fused["smplx_transl"][i],
                fused["smplx_betas"][i], t, rate=rate, z_up=not args.y_up, skeleton=skeleton,
                extra={"person_id": np.int64(pid), **record}))
    elif args.format in ("gltf", "fbx"):
        mesh = _mesh(model_path)
        for i, pid in enumerate(pids):
            _, R, trans = export.resample_motion(t, fused["smplx_local_rotmats"][i], fused["smplx_transl"][i], rate)
            extras = {"person_id": pid, **record}
            if args.format == "gltf":
                written.append(export.write_gltf(result / _name(i, "smplx", ".glb"), mesh, R, trans,
                                                 fused["smplx_betas"][i], rate, extras=extras))
                continue
            from omnimocap.fusion.export_blender import run_blender_job

            out = result / _name(i, "smplx", ".fbx")
            with tempfile.TemporaryDirectory(prefix="omnimocap-fbx-") as tmp:
                glb = export.write_gltf(Path(tmp) / "motion.glb", mesh, R, trans, fused["smplx_betas"][i], rate,
                                        extras=extras)
                partial = out.with_name(out.name + ".partial.fbx")
                run_blender_job("fbx", str(glb), str(partial))
                partial.replace(out)
            written.append(out)
    elif args.format == "bvh":
        from omnimocap.fusion.export_bvh import write_bvh

        for i, _ in enumerate(pids):
            _, R, trans = export.resample_motion(t, fused["smplx_local_rotmats"][i], fused["smplx_transl"][i], rate)
            written.append(write_bvh(result / _name(i, "smplx", ".bvh"),
                                     skeleton.joints_at_rest(fused["smplx_betas"][i]), R, trans, rate))
    else:
        from omnimocap.fusion.body_model import forward_kinematics

        bodies = {pid: forward_kinematics(skeleton, fused["smplx_local_rotmats"][i], fused["smplx_betas"][i],
                                          fused["smplx_transl"][i])[0] for i, pid in enumerate(pids)}
        hands = None
        if "hand_joints_world" in fused:
            hands = {(pid, side): fused["hand_joints_world"][i, :, s]
                     for i, pid in enumerate(pids) for s, side in enumerate(("left", "right"))}
        written.append(export.write_rrd(result / "fused.rrd", t, bodies, hands))
    return written
