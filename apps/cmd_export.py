"""``omnimocap export RESULT_DIR --format amass|mano|gltf|rrd``: files for other tools, from a results folder.

Reads ``fused.npz`` and ``report.json`` (``fps``) of the results folder and writes next to them:
- amass: ``smplx.npz`` for the first person, ``smplx_person<i>.npz`` for the others (``_zup`` before
  the suffix with ``--z-up``);
- mano: ``mano_person<i>_<side>.npz`` per person and hand;
- gltf: ``smplx.glb`` / ``smplx_person<i>.glb`` (needs the SMPL-X model file);
- rrd: ``fused.rrd`` (needs rerun-sdk).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from omnimocap.apps.options import add_models, existing_dir
from omnimocap.errors import InputError, ModelFilesMissing

FUSED_KEYS = ("t_session", "person_ids", "smplx_local_rotmats", "smplx_transl", "smplx_betas",
              "hand_R_world", "hand_pose", "hand_wrist_world", "hand_valid")


def register(sub) -> None:
    p = sub.add_parser("export", help="write AMASS/MANO/glTF/rerun files from a results folder",
                       description="Write AMASS-style SMPL-X npz, per-hand MANO npz, skinned glTF or a rerun "
                                   "recording next to RESULT_DIR/fused.npz.")
    p.add_argument("result", metavar="RESULT_DIR")
    p.add_argument("--format", required=True, choices=["amass", "mano", "gltf", "rrd"])
    p.add_argument("--z-up", action="store_true", help="amass: rotate into AMASS's z-up world (floor = XY plane)")
    p.add_argument("--smplx-model", default=None, metavar="PATH",
                   help="SMPL-X model file (default: <models>/smplx/SMPLX_NEUTRAL.npz)")
    add_models(p)
    p.set_defaults(func=run)


def _name(pid_index: int, stem: str, suffix: str) -> str:
    return f"{stem}{suffix}" if pid_index == 0 else f"{stem}_person{pid_index}{suffix}"


def _load(result: Path) -> tuple[dict, float]:
    fused_path = result / "fused.npz"
    if not fused_path.is_file():
        raise InputError("fused.npz not found", path=result, fix="run `omnimocap process` into this folder first")
    with np.load(fused_path, allow_pickle=False) as data:
        missing = [k for k in FUSED_KEYS if k not in data.files]
        if missing:
            raise InputError(f"missing keys {', '.join(missing)}", path=fused_path, fix="re-run `omnimocap process`")
        fused = {k: data[k] for k in data.files}
    report_path = result / "report.json"
    try:
        fps = float(json.loads(report_path.read_text())["fps"])
    except FileNotFoundError as exc:
        raise InputError("report.json not found", path=report_path, fix="re-run `omnimocap process`") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError("no valid 'fps' entry", path=report_path, fix="re-run `omnimocap process`") from exc
    return fused, fps


def _smplx_model_path(args: argparse.Namespace) -> Path:
    if args.smplx_model:
        path = Path(args.smplx_model)
    else:
        from omnimocap.apps.cmd_models import default_models_dir

        models = Path(args.models) if args.models else default_models_dir()
        path = models / "smplx" / "SMPLX_NEUTRAL.npz"
    if not path.is_file():
        raise ModelFilesMissing(
            "the SMPL-X model file is missing (the glTF export needs its mesh)", path=path,
            fix="put SMPLX_NEUTRAL.npz into <models>/smplx/ (models folder: --models or $OMNIMOCAP_MODELS), "
                "or pass --smplx-model PATH")
    return path


def run(args: argparse.Namespace) -> int:
    from omnimocap.fusion import export

    result = existing_dir(args.result, "results folder")
    fused, fps = _load(result)
    pids = [int(p) for p in fused["person_ids"]]
    written: list[Path] = []
    if args.format == "amass":
        skeleton = None
        if args.z_up and args.smplx_model:
            from omnimocap.fusion.body_model import load_skeleton

            skeleton = load_skeleton(args.smplx_model, num_betas=fused["smplx_betas"].shape[-1])
        suffix = "_zup.npz" if args.z_up else ".npz"
        for i, pid in enumerate(pids):
            written.append(export.write_amass_npz(
                result / _name(i, "smplx", suffix), fused["smplx_local_rotmats"][i], fused["smplx_transl"][i],
                fused["smplx_betas"][i], fps, z_up=args.z_up, skeleton=skeleton,
                extra={"t_session": fused["t_session"], "person_id": np.int64(pid)}))
    elif args.format == "mano":
        betas = fused.get("hand_betas", np.zeros((len(pids), 2, 10)))
        for i, pid in enumerate(pids):
            for s, side in enumerate(("left", "right")):
                written.append(export.write_mano_npz(
                    result / f"mano_person{i}_{side}.npz", side, fused["hand_R_world"][i, :, s],
                    fused["hand_pose"][i, :, s], betas[i, s], fused["hand_wrist_world"][i, :, s],
                    fused["hand_valid"][i, :, s]))
    elif args.format == "gltf":
        from omnimocap.hands.model_files import load_smplx

        model = load_smplx(_smplx_model_path(args))
        for i, _ in enumerate(pids):
            written.append(export.write_gltf(
                result / _name(i, "smplx", ".glb"), model, fused["smplx_local_rotmats"][i],
                fused["smplx_transl"][i], fused["smplx_betas"][i], fps))
    else:
        from omnimocap.fusion.body_model import forward_kinematics, load_skeleton

        skeleton = load_skeleton(args.smplx_model, num_betas=fused["smplx_betas"].shape[-1])
        bodies = {pid: forward_kinematics(skeleton, fused["smplx_local_rotmats"][i], fused["smplx_betas"][i],
                                          fused["smplx_transl"][i])[0] for i, pid in enumerate(pids)}
        hands = None
        if "hand_joints_world" in fused:
            hands = {(pid, side): fused["hand_joints_world"][i, :, s]
                     for i, pid in enumerate(pids) for s, side in enumerate(("left", "right"))}
        written.append(export.write_rrd(result / "fused.rrd", fused["t_session"], bodies, hands))
    for path in written:
        print(path)
    return 0
