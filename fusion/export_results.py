"""Exporting a results folder: its ``fused.npz`` checked, the body model of its fit found, and one
file per person written next to it in the format asked for (the writers: :mod:`omnimocap.fusion.export`,
:mod:`omnimocap.fusion.export_bvh`, :mod:`omnimocap.fusion.export_blender`).

File names: the first person's file has no ``_person<i>`` suffix (``smplx.npz``, then
``smplx_person1.npz``); MANO files are ``mano_person<i>_<side>.npz`` for every person.
"""

from __future__ import annotations

import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from omnimocap.errors import InputError, ModelFilesMissing, UserError

FUSED_KEYS = ("t_session", "person_ids", "smplx_local_rotmats", "smplx_transl", "smplx_betas",
              "hand_R_world", "hand_pose", "hand_wrist_world", "hand_valid")
MODEL_KEYS = ("body_model", "body_model_sha256", "body_model_path")
FORMATS = ("amass", "mano", "gltf", "bvh", "fbx", "rrd")
SIDES = ("left", "right")


@dataclass
class ExportConfig:
    """What ``omnimocap export`` writes: the format and its settings."""

    format: str
    """One of :data:`FORMATS`."""
    fps: float = 30.0
    """Frame rate of amass/gltf/bvh/fbx files, a whole number."""
    y_up: bool = False
    """amass: keep our y-up world instead of AMASS's z-up one (the files get _yup before the suffix)."""
    smplx_model: str | None = None
    """SMPL-X model file; it must be the file the fit used (default: found by the name fused.npz
    records, in <models>/smplx/ or where the fit found it)."""
    models: str | None = None
    """Models directory (default: $OMNIMOCAP_MODELS or ~/.cache/omnimocap/models)."""


@dataclass
class _Job:
    """One export: the results folder, its checked ``fused.npz`` arrays and the fit's model record."""

    config: ExportConfig
    result: Path
    fused: dict
    record: dict[str, str]
    rate: float
    builtin_mesh: Callable[[], dict] | None = None

    @property
    def pids(self) -> list[int]:
        return [int(p) for p in self.fused["person_ids"]]

    def name(self, index: int, stem: str, suffix: str) -> Path:
        return self.result / (f"{stem}{suffix}" if index == 0 else f"{stem}_person{index}{suffix}")


def export_results(result_dir: str | Path, config: ExportConfig,
                   builtin_mesh: Callable[[], dict] | None = None) -> list[Path]:
    """Write ``config.format`` files from ``result_dir/fused.npz`` next to it; returns their paths.
    Every fault of the input, the model files or the folder is a :class:`UserError` line.

    ``builtin_mesh()`` returns the SMPL-X model dict whose mesh glTF and FBX files take for a fit on
    the built-in skeleton (the synthetic SMPL-X of :mod:`omnimocap.sim.synthetic_models`, which
    reproduces that skeleton; the caller passes it because the simulator sits above this layer)."""
    from omnimocap.fusion.export import check_rate

    result = Path(result_dir)
    if config.format not in FORMATS:
        raise UserError(f"unknown export format {config.format!r}", fix=f"choose one of {', '.join(FORMATS)}")
    try:
        rate = check_rate(config.fps)
    except ValueError as exc:
        raise UserError(str(exc), fix="pass --fps with a whole number such as 30") from exc
    fused = load_fused(result)
    job = _Job(config, result, fused, fit_model_record(fused, result / "fused.npz"), rate, builtin_mesh)
    try:
        return WRITERS[config.format](job)
    except PermissionError as exc:
        raise UserError(f"cannot write here ({exc.strerror})", path=exc.filename or result,
                        fix="make the results folder writable, or export from a writable copy of it") from exc
    except OSError as exc:
        if exc.errno is None:
            raise
        raise UserError(f"writing failed ({exc.strerror})", path=exc.filename or result,
                        fix="free disk space or choose a writable results folder") from exc


def load_fused(result: Path) -> dict:
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


def fit_model_record(fused: dict, fused_path: Path) -> dict[str, str]:
    """The body model record (name, SHA-256, path) that ``fused.npz`` keeps of its fit."""
    if not all(k in fused for k in MODEL_KEYS):
        raise InputError("does not record the body model of its fit (written by an older omnimocap)",
                         path=fused_path, fix="re-run `omnimocap process`")
    return {k: str(fused[k]) for k in MODEL_KEYS}


def _models_dir(config: ExportConfig) -> Path:
    from omnimocap.hands.model_store import default_models_dir

    return Path(config.models).expanduser() if config.models else default_models_dir()


def _given_model_file(path: Path, record: dict[str, str]) -> Path:
    """``--smplx-model``: accepted only when it is the file the fit used."""
    from omnimocap.fusion.body_model import BUILT_IN, sha256_of

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


def fit_model_file(config: ExportConfig, record: dict[str, str]) -> Path | None:
    """The SMPL-X file the fit used (None for the built-in skeleton): ``config.smplx_model`` when it
    is that file, else found by its name and SHA-256 in the models folder or where the fit found it."""
    from omnimocap.fusion.body_model import BUILT_IN, sha256_of

    if config.smplx_model:
        return _given_model_file(Path(config.smplx_model).expanduser(), record)
    if record["body_model"] == BUILT_IN:
        return None
    candidates = [_models_dir(config) / "smplx" / record["body_model"]]
    if record["body_model_path"]:
        candidates.append(Path(record["body_model_path"]))
    for path in candidates:
        if path.is_file() and sha256_of(path) == record["body_model_sha256"]:
            return path
    raise ModelFilesMissing(
        f"the SMPL-X model file the fit used ({record['body_model']}, SHA-256 {record['body_model_sha256'][:12]}...) "
        "is not there", path=candidates[0],
        fix="put that file into <models>/smplx/ (models folder: --models or $OMNIMOCAP_MODELS), or pass --smplx-model PATH")


def _skeleton(job: _Job, model_path: Path | None):
    from omnimocap.fusion.body_model import load_skeleton

    return load_skeleton(model_path, num_betas=job.fused["smplx_betas"].shape[-1])


def _mesh(job: _Job, model_path: Path | None) -> dict:
    if model_path is None:
        if job.builtin_mesh is None:
            raise ValueError("a fit on the built-in skeleton exports a mesh only with builtin_mesh given")
        return job.builtin_mesh()
    from omnimocap.hands.model_files import load_smplx

    return load_smplx(model_path)


def _mano_right(config: ExportConfig):
    """(ManoModel, record) of the models folder's MANO_RIGHT, else of the synthetic MANO."""
    from omnimocap.fusion.body_model import body_model_record
    from omnimocap.hands.mano import ManoModel

    path = _models_dir(config) / "mano" / "MANO_RIGHT.pkl"
    if path.is_file():
        rec = body_model_record(path)
        return ManoModel.load(path), {"mano_model": rec["body_model"], "mano_model_sha256": rec["body_model_sha256"]}
    from omnimocap.hands.synthetic_mano import make_synthetic_mano

    return ManoModel.from_dict(make_synthetic_mano("right")), {"mano_model": "built-in", "mano_model_sha256": ""}


def _write_mano(job: _Job) -> list[Path]:
    from omnimocap.fusion.export import write_mano_npz

    fused = job.fused
    model, mano_record = _mano_right(job.config)
    betas = fused.get("hand_betas", np.zeros((len(job.pids), 2, 10)))
    written = []
    for i, _ in enumerate(job.pids):
        for s, side in enumerate(SIDES):
            b = np.nan_to_num(betas[i, s])
            written.append(write_mano_npz(
                job.result / f"mano_person{i}_{side}.npz", side, fused["hand_R_world"][i, :, s],
                fused["hand_pose"][i, :, s], b, fused["hand_wrist_world"][i, :, s], fused["hand_valid"][i, :, s],
                model.root_joint(side, b), extra={"t_session": fused["t_session"], **job.record, **mano_record}))
    return written


def _write_amass(job: _Job) -> list[Path]:
    from omnimocap.fusion.export import write_amass_npz

    fused, y_up = job.fused, job.config.y_up
    skeleton = _skeleton(job, fit_model_file(job.config, job.record))
    return [write_amass_npz(job.name(i, "smplx", "_yup.npz" if y_up else ".npz"), fused["smplx_local_rotmats"][i],
                            fused["smplx_transl"][i], fused["smplx_betas"][i], fused["t_session"], rate=job.rate,
                            z_up=not y_up, skeleton=skeleton, extra={"person_id": np.int64(pid), **job.record},
                            valid=fused["body_valid"][i] if "body_valid" in fused else None)
            for i, pid in enumerate(job.pids)]


def _resampled(job: _Job, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Person ``i``'s local rotations and translation on the file's uniform grid."""
    from omnimocap.fusion.export import resample_motion

    fused = job.fused
    _, R, trans = resample_motion(fused["t_session"], fused["smplx_local_rotmats"][i], fused["smplx_transl"][i],
                                  job.rate)
    return R, trans


def _unseen(job: _Job, i: int) -> dict:
    """``{"unseen_s": [[start, end], ...]}``: the spans of person ``i``'s animation (seconds from its
    first frame, on the file's grid) whose body no Kinect saw (``fused.npz`` ``body_valid``); empty
    when every frame was seen or the results predate ``body_valid``."""
    from omnimocap.fusion.export import resample_valid, uniform_grid, unseen_runs

    if "body_valid" not in job.fused:
        return {}
    t = job.fused["t_session"]
    grid = uniform_grid(t, job.rate) if len(t) > 1 else t
    runs = unseen_runs(resample_valid(t, job.fused["body_valid"][i], grid), grid - grid[0])
    return {"unseen_s": [[round(a, 4), round(b, 4)] for a, b in runs]} if runs else {}


def _write_gltf(job: _Job) -> list[Path]:
    from omnimocap.fusion.export import write_gltf

    mesh = _mesh(job, fit_model_file(job.config, job.record))
    return [write_gltf(job.name(i, "smplx", ".glb"), mesh, *_resampled(job, i), job.fused["smplx_betas"][i], job.rate,
                       extras={"person_id": pid, **job.record, **_unseen(job, i)})
            for i, pid in enumerate(job.pids)]


def _write_fbx(job: _Job) -> list[Path]:
    """Through Blender's FBX exporter, from a glTF written to a temporary folder."""
    from omnimocap.fusion.export import write_gltf
    from omnimocap.fusion.export_blender import run_blender_job

    mesh = _mesh(job, fit_model_file(job.config, job.record))
    written = []
    for i, pid in enumerate(job.pids):
        out = job.name(i, "smplx", ".fbx")
        with tempfile.TemporaryDirectory(prefix="omnimocap-fbx-") as tmp:
            glb = write_gltf(Path(tmp) / "motion.glb", mesh, *_resampled(job, i), job.fused["smplx_betas"][i], job.rate,
                             extras={"person_id": pid, **job.record})
            partial = out.with_name(out.name + ".partial.fbx")
            run_blender_job("fbx", str(glb), str(partial))
            partial.replace(out)
        written.append(out)
    return written


def _write_bvh(job: _Job) -> list[Path]:
    from omnimocap.fusion.export_bvh import write_bvh

    skeleton = _skeleton(job, fit_model_file(job.config, job.record))
    return [write_bvh(job.name(i, "smplx", ".bvh"), skeleton.joints_at_rest(job.fused["smplx_betas"][i]),
                      *_resampled(job, i), job.rate)
            for i, _ in enumerate(job.pids)]


def _write_rrd(job: _Job) -> list[Path]:
    from omnimocap.fusion.body_model import forward_kinematics
    from omnimocap.fusion.export import write_rrd

    fused = job.fused
    skeleton = _skeleton(job, fit_model_file(job.config, job.record))
    bodies = {pid: forward_kinematics(skeleton, fused["smplx_local_rotmats"][i], fused["smplx_betas"][i],
                                      fused["smplx_transl"][i])[0] for i, pid in enumerate(job.pids)}
    hands = None
    if "hand_joints_world" in fused:
        hands = {(pid, side): fused["hand_joints_world"][i, :, s]
                 for i, pid in enumerate(job.pids) for s, side in enumerate(SIDES)}
    return [write_rrd(job.result / "fused.rrd", fused["t_session"], bodies, hands)]


WRITERS: dict[str, Callable[[_Job], list[Path]]] = {
    "amass": _write_amass, "mano": _write_mano, "gltf": _write_gltf, "bvh": _write_bvh, "fbx": _write_fbx,
    "rrd": _write_rrd,
}
