"""The model store: where the WiLoR, MANO, SMPL-X and body keypoint files live, how they are fetched, checked and found.

Models folder: ``--models DIR``, else the environment variable ``OMNIMOCAP_MODELS``, else
``~/.cache/omnimocap/models``. Layout::

    <models>/wilor/wilor_final.ckpt       WiLoR weights        (download)
    <models>/wilor/detector.pt            WiLoR hand detector  (download)
    <models>/wilor/model_config.yaml      WiLoR configuration  (packaged copy, written by download)
    <models>/mano/MANO_RIGHT.pkl          MANO right hand      (registration needed, copy by hand)
    <models>/mano/mano_mean_params.npz    WiLoR mean params    (packaged copy, written by download)
    <models>/smplx/SMPLX_NEUTRAL.npz      SMPL-X body          (registration needed, copy by hand)
    <models>/pose/yolo11n-pose.pt         body keypoints       (download, optional: ultralytics' YOLO11 COCO pose model)
    <models>/checksums.json               SHA-256 of every file, recorded by download / verify

WiLoR's weights are CC BY-NC-ND 4.0; MANO and SMPL-X may not be redistributed, hence the manual steps;
ultralytics' YOLO11 weights are AGPL-3.0. No digest is fixed in advance: the SHA-256 of each file
is recorded when it is downloaded (or first verified) and checked from then on.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from omnimocap.errors import ModelFilesMissing, UserError

WILOR_BASE_URL = "https://huggingface.co/spaces/rolpotamias/WiLoR/resolve/main/pretrained_models"
POSE_WEIGHTS = "pose/yolo11n-pose.pt"
# ultralytics' release asset of YOLO11n-pose (tag v8.3.0, the release that introduced YOLO11; the link
# of ultralytics' pose documentation).
POSE_WEIGHTS_URL = "https://github.com/ultralytics/assets/releases/download/v8.3.0/yolo11n-pose.pt"
CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelFile:
    rel_path: str
    what: str
    source: str  # "download", "package" or "manual"
    how: str  # instructions for a manual file
    optional: bool = False


MANO_HOW = ("register at https://mano.is.tue.mpg.de, download 'Models & Code' (mano_v1_2.zip) and copy "
            "mano_v1_2/models/MANO_RIGHT.pkl to {path}")
SMPLX_HOW = ("register at https://smpl-x.is.tue.mpg.de, download 'SMPL-X v1.1 (NPZ+PKL)' (models_smplx_v1_1.zip) "
             "and copy models/smplx/SMPLX_{gender}.npz to {path}")

FILES: tuple[ModelFile, ...] = (
    ModelFile("wilor/wilor_final.ckpt", "WiLoR weights", "download", "run `omnimocap models download`"),
    ModelFile("wilor/detector.pt", "WiLoR hand detector", "download", "run `omnimocap models download`"),
    ModelFile("wilor/model_config.yaml", "WiLoR configuration", "package", "run `omnimocap models download`"),
    ModelFile("mano/MANO_RIGHT.pkl", "MANO right hand", "manual", MANO_HOW),
    ModelFile("mano/mano_mean_params.npz", "WiLoR mean MANO parameters", "package", "run `omnimocap models download`"),
    ModelFile("smplx/SMPLX_NEUTRAL.npz", "SMPL-X neutral body", "manual", SMPLX_HOW.replace("{gender}", "NEUTRAL")),
    ModelFile("smplx/SMPLX_MALE.npz", "SMPL-X male body", "manual", SMPLX_HOW.replace("{gender}", "MALE"), optional=True),
    ModelFile("smplx/SMPLX_FEMALE.npz", "SMPL-X female body", "manual", SMPLX_HOW.replace("{gender}", "FEMALE"), optional=True),
    ModelFile(POSE_WEIGHTS, "body keypoints (YOLO11 pose)", "download", "run `omnimocap models download`", optional=True),
)
WILOR_FILES = ("wilor/wilor_final.ckpt", "wilor/detector.pt", "wilor/model_config.yaml", "mano/mano_mean_params.npz")


def default_models_dir() -> Path:
    """``$OMNIMOCAP_MODELS`` or ``~/.cache/omnimocap/models``."""
    env = os.environ.get("OMNIMOCAP_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "omnimocap" / "models"


def _spec(rel: str) -> ModelFile:
    return next(f for f in FILES if f.rel_path == rel)


def _instruction(models: Path, f: ModelFile) -> str:
    return f.how.format(path=models / f.rel_path)


def missing_message(models: Path, rel_paths: tuple[str, ...]) -> str | None:
    """One line naming the missing files among ``rel_paths`` and how to get them, or None."""
    missing = [_spec(r) for r in rel_paths if not (models / r).is_file()]
    if not missing:
        return None
    fixes = sorted({_instruction(models, f) for f in missing})
    return f"missing model files in {models}: {', '.join(f.rel_path for f in missing)}; to fix: {'; '.join(fixes)}"


def require_wilor_files(models_dir: str | Path | None = None) -> dict[str, Path]:
    """Paths of the files ``process --hands wilor`` needs: checkpoint, detector, model_config,
    mean_params (WiLoR's checkpoint carries the MANO buffers). Raises ModelFilesMissing with the
    line ``models status`` prints."""
    models = Path(models_dir) if models_dir else default_models_dir()
    msg = missing_message(models, WILOR_FILES)
    if msg:
        raise ModelFilesMissing(msg)
    return {
        "checkpoint": models / "wilor/wilor_final.ckpt",
        "detector": models / "wilor/detector.pt",
        "model_config": models / "wilor/model_config.yaml",
        "mean_params": models / "mano/mano_mean_params.npz",
    }


def require_pose_weights(models_dir: str | Path | None = None) -> Path:
    """Path of the body keypoint model's weights; raises ModelFilesMissing with the line ``models
    status`` prints for a missing file."""
    models = Path(models_dir) if models_dir else default_models_dir()
    msg = missing_message(models, (POSE_WEIGHTS,))
    if msg:
        raise ModelFilesMissing(msg)
    return models / POSE_WEIGHTS


def download_urls(base_url: str = WILOR_BASE_URL) -> dict[str, str]:
    """Where each downloaded file comes from: the WiLoR files from ``base_url`` (their folder, or a
    mirror of it), the body keypoint weights from ultralytics' release (:data:`POSE_WEIGHTS_URL`)."""
    base = base_url.rstrip("/")
    return {"wilor/wilor_final.ckpt": f"{base}/wilor_final.ckpt", "wilor/detector.pt": f"{base}/detector.pt",
            POSE_WEIGHTS: POSE_WEIGHTS_URL}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _checksums_path(models: Path) -> Path:
    return models / "checksums.json"


def read_checksums(models: Path) -> dict[str, str]:
    p = _checksums_path(models)
    if not p.is_file():
        return {}
    try:
        return dict(json.loads(p.read_text()))
    except (ValueError, TypeError) as exc:
        raise ModelFilesMissing(f"unreadable checksums: {exc}", path=p, fix="delete it and run `omnimocap models verify`") from exc


def _record_checksum(models: Path, rel: str, digest: str) -> None:
    sums = read_checksums(models)
    sums[rel] = digest
    _checksums_path(models).write_text(json.dumps(dict(sorted(sums.items())), indent=2) + "\n")


def download_file(url: str, dest: Path, progress: bool = True, timeout: float = 60.0) -> str:
    """Download ``url`` to ``dest``, resuming a previous partial download (``dest.part``) with an
    HTTP Range request; returns the SHA-256 of the complete file."""
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file is already complete
            part.replace(dest)
            return sha256(dest)
        raise UserError(f"download failed with HTTP {exc.code}: {url}", path=dest, fix="try again later") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"cannot reach {url}: {exc}", path=dest, fix="check the network connection and retry; "
                        "the download resumes where it stopped") from exc
    with response:
        resumed = have and response.status == 206
        if not resumed:
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as fh, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=dest.name, disable=not progress
        ) as bar:
            while block := response.read(CHUNK):
                fh.write(block)
                bar.update(len(block))
    if total is not None and part.stat().st_size != total:
        raise UserError(f"download of {url} ended early ({part.stat().st_size} of {total} bytes)", path=part,
                        fix="run the command again to resume")
    part.replace(dest)
    return sha256(dest)


def _copy_package_file(name: str, dest: Path) -> None:
    from importlib import resources

    dest.parent.mkdir(parents=True, exist_ok=True)
    with resources.as_file(resources.files("omnimocap.data") / name) as src:
        shutil.copyfile(src, dest)


def run_download(models: Path, base_url: str = WILOR_BASE_URL, progress: bool = True,
                 out: Callable[[str], None] = print) -> int:
    """Fetch the WiLoR files and the body keypoint weights (:func:`download_urls`), write the
    packaged config / mean parameters, record checksums."""
    models.mkdir(parents=True, exist_ok=True)
    for rel, url in download_urls(base_url).items():
        dest = models / rel
        if dest.is_file():
            out(f"{rel}: present")
            continue
        out(f"{rel}: downloading {url}")
        _record_checksum(models, rel, download_file(url, dest, progress=progress))
    for rel, name in (("wilor/model_config.yaml", "wilor_model_config.yaml"), ("mano/mano_mean_params.npz", "mano_mean_params.npz")):
        dest = models / rel
        if not dest.is_file():
            _copy_package_file(name, dest)
            out(f"{rel}: written from the packaged copy")
        _record_checksum(models, rel, sha256(dest))
    for f in FILES:
        if f.source == "manual" and not f.optional and not (models / f.rel_path).is_file():
            out(f"{f.rel_path}: cannot be downloaded automatically: {_instruction(models, f)}")
    return 0


def run_status(models: Path, out: Callable[[str], None] = print) -> int:
    """List every file as present/missing; exit code 1 when a required one is missing."""
    out(f"models folder: {models}")
    for f in FILES:
        p = models / f.rel_path
        state = f"present ({p.stat().st_size / 1e6:.1f} MB)" if p.is_file() else ("missing (optional)" if f.optional else "MISSING")
        out(f"  {f.rel_path:32s} {f.what:28s} {state}")
    missing = False
    for group in _required_groups():
        msg = missing_message(models, group)
        if msg:
            out(msg)
            missing = True
    return 1 if missing else 0


def _required_groups() -> tuple[tuple[str, ...], ...]:
    """Required files in the groups status reports one line for: WiLoR (as require_wilor_files
    words it), then the rest."""
    rest = tuple(f.rel_path for f in FILES if not f.optional and f.rel_path not in WILOR_FILES)
    return WILOR_FILES, rest


def _validate(path: Path, rel: str) -> None:
    """Load the file as its users do; raises a UserError on a corrupt, wrong or refused file."""
    if rel == POSE_WEIGHTS:
        from omnimocap.hands.pose_model import load_pose_checkpoint

        load_pose_checkpoint(path)  # as open_pose_detector loads it: refuses any non-model global
    elif rel.endswith(".ckpt"):
        from omnimocap.hands.wilor.checkpoint import load_checkpoint_file

        sd = load_checkpoint_file(path)["state_dict"]
        for key in ("backbone.pos_embed", "refine_net.dec_pose.weight"):
            if key not in sd:
                raise ModelFilesMissing(f"no {key} in the checkpoint", path=path)
    elif rel.endswith("detector.pt"):
        from omnimocap.hands.wilor.detector import load_detector_checkpoint

        load_detector_checkpoint(path)  # the load process and calibrate run: refuses any non-model global
    elif rel.endswith(".yaml"):
        from omnimocap.hands.wilor.checkpoint import load_model_config

        load_model_config(path)
    elif rel.endswith("mano_mean_params.npz"):
        from omnimocap.hands.wilor.checkpoint import load_mean_params

        load_mean_params(path)
    elif rel.startswith("mano/"):
        from omnimocap.hands.model_files import load_mano

        load_mano(path, side="right")
    elif rel.startswith("smplx/"):
        from omnimocap.hands.model_files import load_smplx

        load_smplx(path)


def run_verify(models: Path, out: Callable[[str], None] = print) -> int:
    """Re-hash every present file against checksums.json (recording new ones) and validate its
    contents. Exit code 1 when a file is corrupt or a required one is missing."""
    sums = read_checksums(models)
    bad = 0
    for f in FILES:
        p = models / f.rel_path
        if not p.is_file():
            continue
        digest = sha256(p)
        known = sums.get(f.rel_path)
        try:
            if known and known != digest:
                raise ModelFilesMissing(f"SHA-256 {digest[:12]}... differs from the recorded {known[:12]}...", path=p,
                                        fix="download or copy it again")
            _validate(p, f.rel_path)
        except UserError as exc:
            out(f"  {f.rel_path}: FAILED: {exc}")
            bad += 1
            continue
        except Exception as exc:  # an unforeseen reader failure is still this file's failure: report it, go on
            reason = " ".join(str(exc).split()) or type(exc).__name__
            out(f"  {f.rel_path}: FAILED: {p}: cannot read the file ({type(exc).__name__}: {reason}) (download or copy it again)")
            bad += 1
            continue
        if not known:
            _record_checksum(models, f.rel_path, digest)
        out(f"  {f.rel_path}: ok (sha256 {digest[:12]}...)")
    missing = [m for m in (missing_message(models, g) for g in _required_groups()) if m]
    for msg in missing:
        out(msg)
    return 1 if bad or missing else 0
