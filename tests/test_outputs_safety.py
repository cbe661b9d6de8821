"""Writing results deletes nothing it did not write; environment failures (a full disk, a folder
without write permission) end in one line; the command line starts without the heavy libraries."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from omnimocap.apps.cli import main
from omnimocap.fusion.results_folder import RESULTS_MARKER, results_lock
from tests.tools.cli import one_line_error


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """Two short simulated sessions (different seeds) and the first one's results."""
    root = tmp_path_factory.mktemp("outputs")
    for name, seed in (("s", "3"), ("other", "4")):
        assert main(["simulate", str(root / name), "--no-kinect-video", "--seconds", "1.5", "--pano-width", "512",
                     "--seed", seed]) == 0
    assert main(["process", str(root / "s"), "--out", str(root / "r"), "--hands", "sim", "--quiet"]) == 0
    return root


def _tree_digest(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (the folder's whole content)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _process(session: Path, out: Path, *extra: str) -> list[str]:
    return ["process", str(session), "--out", str(out), "--hands", "sim", "--quiet", *extra]


def _nothing_left_beside(out: Path) -> None:
    """No partial folder, no moved-aside folder and no lock file of ``out`` remain beside it."""
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    assert leftovers == []


# --- --overwrite replaces only results folders, never the session ------------------------------------

def test_overwrite_refuses_the_session_itself(sessions, tmp_path, capsys):
    s = _copy(sessions / "s", tmp_path / "s")
    before = _tree_digest(s)
    line = one_line_error(capsys, _process(s, s, "--overwrite"))
    assert "input session" in line
    assert _tree_digest(s) == before
    _nothing_left_beside(s)


def test_overwrite_refuses_a_folder_holding_the_session(sessions, tmp_path, capsys):
    parent = tmp_path / "P"
    s = _copy(sessions / "s", parent / "session")
    (parent / "notes.txt").write_text("unrelated\n")
    before = _tree_digest(parent)
    line = one_line_error(capsys, _process(s, parent, "--overwrite"))
    assert "contains the input session" in line
    assert _tree_digest(parent) == before


def test_out_inside_the_session_is_refused(sessions, tmp_path, capsys):
    s = _copy(sessions / "s", tmp_path / "s")
    before = _tree_digest(s)
    line = one_line_error(capsys, _process(s, s / "results"))
    assert "inside the input session" in line
    assert _tree_digest(s) == before and not (s / "results").exists()


def test_overwrite_refuses_a_folder_that_is_not_a_results_folder(sessions, tmp_path, capsys):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"\xff\xd8 not results")
    line = one_line_error(capsys, _process(sessions / "s", out, "--overwrite"))
    assert "not an omnimocap results folder" in line
    assert (out / "holiday.jpg").read_bytes() == b"\xff\xd8 not results"


def test_overwrite_replaces_a_results_folder(sessions, tmp_path):
    out = _copy(sessions / "r", tmp_path / "r")
    assert (out / RESULTS_MARKER).is_file()
    (out / "stale.txt").write_text("from an older run\n")
    assert main(_process(sessions / "s", out, "--overwrite")) == 0
    assert not (out / "stale.txt").exists()
    assert (out / "fused.npz").is_file() and (out / RESULTS_MARKER).is_file()
    _nothing_left_beside(out)


def test_out_naming_a_file_or_the_current_folder(sessions, tmp_path, capsys, monkeypatch):
    target = tmp_path / "results.txt"
    target.write_text("keep me\n")
    assert "not a folder" in one_line_error(capsys, _process(sessions / "s", target, "--overwrite"))
    assert target.read_text() == "keep me\n"
    here = tmp_path / "here"
    here.mkdir()
    (here / "mine.txt").write_text("keep me\n")
    monkeypatch.chdir(here)
    assert "current folder" in one_line_error(capsys, _process(sessions / "s", Path("."), "--overwrite"))
    assert [p.name for p in here.iterdir()] == ["mine.txt"]


def test_a_second_process_into_the_same_out_is_refused(sessions, tmp_path, capsys):
    out = tmp_path / "r"
    with results_lock(out):
        line = one_line_error(capsys, _process(sessions / "s", out))
        assert "another `omnimocap process`" in line
        assert not out.exists()
    # released: the same command now runs, and the lock file is gone
    assert main(_process(sessions / "s", out)) == 0
    _nothing_left_beside(out)


def test_a_failed_run_removes_only_its_partial_folder(sessions, tmp_path, capsys, monkeypatch):
    """Disk full while writing the results: one line; the previous results, the session and an
    unrelated folder named like a partial one are untouched."""
    out = _copy(sessions / "r", tmp_path / "r")
    lookalike = tmp_path / "r.partial"
    lookalike.mkdir()
    (lookalike / "keep.txt").write_text("not omnimocap's\n")
    s = _copy(sessions / "s", tmp_path / "s")
    before_out, before_session = _tree_digest(out), _tree_digest(s)

    def disk_full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(np, "savez_compressed", disk_full)
    line = one_line_error(capsys, _process(s, out, "--overwrite"))
    assert "no space left" in line and "fused.npz" in line
    assert _tree_digest(out) == before_out and _tree_digest(s) == before_session
    assert (lookalike / "keep.txt").read_text() == "not omnimocap's\n"
    _nothing_left_beside(out)


def test_leftovers_of_a_killed_run_are_removed_and_nothing_else(sessions, tmp_path):
    out = tmp_path / "r"
    killed = tmp_path / ".r.k1ll3d.partial"
    killed.mkdir()
    (killed / RESULTS_MARKER).write_text("{}")
    (killed / "fused.npz").write_bytes(b"half")
    foreign = tmp_path / ".r.notours.partial"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not omnimocap's\n")
    assert main(_process(sessions / "s", out)) == 0
    assert not killed.exists()
    assert (foreign / "keep.txt").read_text() == "not omnimocap's\n"


# --- read-only folders ------------------------------------------------------------------------------

@pytest.fixture
def read_only(monkeypatch):
    """Make folders read-only. Root ignores permission bits, so for root the writes that the kernel
    would refuse (creating, opening for writing, renaming, removing under the folder) raise EACCES."""
    folders: list[Path] = []

    def under(path) -> bool:
        p = Path(os.path.abspath(os.fspath(path)))
        return any(p == f or f in p.parents for f in folders)

    def denied(path):
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

    if os.geteuid() == 0:
        real_open, real_mkdir, real_replace, real_unlink = os.open, os.mkdir, os.replace, os.unlink

        def guarded_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and under(path):
                raise denied(path)
            return real_open(path, flags, *args, **kwargs)

        def guarded(real):
            def call(path, *args, **kwargs):
                if under(path) or (args and isinstance(args[0], (str, Path)) and under(args[0])):
                    raise denied(path)
                return real(path, *args, **kwargs)
            return call

        monkeypatch.setattr(os, "open", guarded_open)
        monkeypatch.setattr(os, "mkdir", guarded(real_mkdir))
        monkeypatch.setattr(os, "replace", guarded(real_replace))
        monkeypatch.setattr(os, "unlink", guarded(real_unlink))

    def make(folder: Path) -> Path:
        folders.append(Path(os.path.abspath(folder)))
        for p in [folder, *folder.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        return folder

    yield make
    for f in folders:
        for p in [f, *f.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


def test_process_reads_a_read_only_session(sessions, tmp_path, read_only):
    s = read_only(_copy(sessions / "s", tmp_path / "s"))
    before = _tree_digest(s)
    assert main(_process(s, tmp_path / "r")) == 0
    assert (tmp_path / "r" / "fused.npz").is_file()
    assert _tree_digest(s) == before


def test_process_into_a_read_only_folder(sessions, tmp_path, capsys, read_only):
    parent = read_only(_copy(sessions / "r", tmp_path / "locked"))
    line = one_line_error(capsys, _process(sessions / "s", parent / "r"))
    assert "permission denied" in line and str(parent) in line


def test_evaluate_a_read_only_results_folder(sessions, tmp_path, capsys, read_only):
    r = read_only(_copy(sessions / "r", tmp_path / "r"))
    line = one_line_error(capsys, ["evaluate", str(r), "--truth", str(sessions / "s")])
    assert "permission denied" in line and "metrics.json" in line


def test_evaluate_reads_a_read_only_truth_session(sessions, tmp_path, read_only):
    s = read_only(_copy(sessions / "s", tmp_path / "s"))
    before = _tree_digest(s)
    r = _copy(sessions / "r", tmp_path / "r")
    assert main(["evaluate", str(r), "--truth", str(s)]) == 0
    assert (r / "metrics.json").is_file() and _tree_digest(s) == before


# --- evaluate checks what it is given -----------------------------------------------------------------

def test_evaluate_refuses_the_truth_of_another_session(sessions, capsys):
    line = one_line_error(capsys, ["evaluate", str(sessions / "r"), "--truth", str(sessions / "other")])
    assert "another session" in line
    assert main(["evaluate", str(sessions / "r"), "--truth", str(sessions / "s")]) == 0


def test_evaluate_results_without_a_session_id_by_their_session_folder(sessions, tmp_path, capsys):
    """Results written before identities were recorded name their session's folder instead."""
    r = _copy(sessions / "r", tmp_path / "r")
    report = json.loads((r / "report.json").read_text())
    del report["session_id"]
    (r / "report.json").write_text(json.dumps(report))
    assert "another session" in one_line_error(capsys, ["evaluate", str(r), "--truth", str(sessions / "other")])
    assert main(["evaluate", str(r), "--truth", str(sessions / "s")]) == 0


def test_evaluate_a_truncated_fused_npz(sessions, tmp_path, capsys):
    r = _copy(sessions / "r", tmp_path / "r")
    fused = r / "fused.npz"
    fused.write_bytes(fused.read_bytes()[: fused.stat().st_size // 2])
    line = one_line_error(capsys, ["evaluate", str(r), "--truth", str(sessions / "s")])
    assert "fused.npz" in line


def test_evaluate_an_all_nan_fused_npz(sessions, tmp_path, capsys):
    r = _copy(sessions / "r", tmp_path / "r")
    with np.load(r / "fused.npz") as z:
        arrays = {k: z[k] for k in z.files}
    for key, value in arrays.items():
        if value.dtype.kind == "f":
            arrays[key] = np.full_like(value, np.nan)
    np.savez_compressed(r / "fused.npz", **arrays)
    line = one_line_error(capsys, ["evaluate", str(r), "--truth", str(sessions / "s")])
    assert "fused.npz" in line and "finite" in line


# --- other one-line cases -----------------------------------------------------------------------------

def test_a_non_numeric_pano_width(sessions, tmp_path, capsys):
    s = _copy(sessions / "s", tmp_path / "s")
    manifest = json.loads((s / "session.json").read_text())
    next(d for d in manifest["devices"] if d["kind"] == "pano")["width"] = "wide"
    (s / "session.json").write_text(json.dumps(manifest))
    line = one_line_error(capsys, _process(s, tmp_path / "r"))
    assert "session.json" in line and "width" in line
    assert not (tmp_path / "r").exists()


def test_inspect_dump_onto_a_file(sessions, tmp_path, capsys):
    target = tmp_path / "frames"
    target.write_text("keep me\n")
    line = one_line_error(capsys, ["inspect", str(sessions / "s"), "--dump", str(target)])
    assert "frames" in line and "not a folder" in line
    assert target.read_text() == "keep me\n"


# --- start-up -----------------------------------------------------------------------------------------

HEAVY_MODULES = ("torch", "cv2", "ultralytics", "open3d")


@pytest.mark.parametrize("code", [
    "import omnimocap.apps.cli",
    "import sys; from omnimocap.apps.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
])
def test_the_command_line_starts_without_heavy_libraries(code):
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []
