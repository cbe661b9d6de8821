"""The results folder of ``process`` and ``batch``: assembled in a hidden partial folder beside its
final place and moved there when complete, never replacing what is not a results folder, one writer
at a time (a lock file beside it)."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from omnimocap import __version__
from omnimocap.capture.session import atomic_write_json
from omnimocap.errors import UserError

RESULTS_MARKER = ".omnimocap-results"


def check_output_path(out_dir: Path, session_dir: Path) -> None:
    """Refuse an ``--out`` that is a file, the current folder or one of its parents, or that is,
    contains or lies inside the input session (paths compared after resolving links)."""
    out, session = out_dir.resolve(), session_dir.resolve()
    fix = "choose a --out folder outside the session, e.g. a new folder beside it"
    if out == session:
        raise UserError("--out is the input session folder; results never replace a session", path=out_dir, fix=fix)
    if out in session.parents:
        raise UserError(f"--out contains the input session {session_dir}; results never replace a session",
                        path=out_dir, fix=fix)
    if session in out.parents:
        raise UserError(f"--out lies inside the input session {session_dir}; processing never writes into a "
                        "session", path=out_dir, fix=fix)
    cwd = Path.cwd().resolve()
    if out == cwd or out in cwd.parents:
        raise UserError("--out is the current folder (or contains it)", path=out_dir,
                        fix="name a results folder, e.g. --out results")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError("--out exists and is not a folder", path=out_dir, fix="choose a new --out folder")


def _check_replaceable(out_dir: Path, overwrite: bool) -> None:
    """An existing non-empty ``out_dir`` may be replaced only with ``overwrite`` and only when it is
    an omnimocap results folder (it holds :data:`RESULTS_MARKER`)."""
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise UserError("results folder exists and is not empty", path=out_dir,
                        fix="choose a new --out folder, or pass --overwrite")
    if not (out_dir / RESULTS_MARKER).is_file():
        raise UserError(f"is not an omnimocap results folder (no {RESULTS_MARKER}); --overwrite replaces only "
                        "folders written by `omnimocap process`", path=out_dir,
                        fix="choose a new --out folder, or move this one away yourself")


@contextmanager
def results_lock(out_dir: str | Path):
    """Hold the lock of results folder ``out_dir`` (an exclusive ``flock`` on ``.<name>.lock`` beside
    it, removed on release); raises :class:`UserError` at once when another process holds it."""
    out_dir = Path(os.path.abspath(out_dir))
    lock_path = out_dir.with_name(f".{out_dir.name}.lock")
    busy = UserError("another `omnimocap process` is writing this results folder", path=out_dir,
                     fix="wait for it to finish, or choose another --out folder")
    for _ in range(3):
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise busy from None
        try:  # the previous holder removes the file on release: ours must still be the one at the path
            current = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    else:
        raise busy
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        os.close(fd)


def _prepare_output(out_dir: Path, overwrite: bool, identity: str) -> Path:
    """Check that ``out_dir`` may be written and create the partial results folder beside it (a new,
    uniquely named folder that holds :data:`RESULTS_MARKER` from the start). Called under
    :func:`results_lock`: partial and moved-aside folders of ``out_dir`` that hold the marker are
    then left over by a killed run, and are removed."""
    _check_replaceable(out_dir, overwrite)
    for pattern in (f".{out_dir.name}.*.partial", f".{out_dir.name}.*.old"):
        for stale in out_dir.parent.glob(pattern):
            if stale.is_dir() and not stale.is_symlink() and (stale / RESULTS_MARKER).is_file():
                shutil.rmtree(stale)
    partial = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    atomic_write_json(partial / RESULTS_MARKER, {"format": "omnimocap-results", "omnimocap_version": __version__,
                                                 "session_id": identity})
    return partial


def _publish(work: Path, out_dir: Path, overwrite: bool) -> None:
    """Move the finished ``work`` folder to ``out_dir``; a previous results folder there is moved
    aside first and deleted only once the new one is in place."""
    _check_replaceable(out_dir, overwrite)
    previous = None
    if out_dir.is_dir():
        previous = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
        os.replace(out_dir, previous)  # onto the empty folder just made
    try:
        os.replace(work, out_dir)
    except BaseException:
        if previous is not None:
            os.replace(previous, out_dir)
        raise
    if previous is not None:
        shutil.rmtree(previous)


def write_results_folder(out_dir: Path, overwrite: bool, identity: str, write: Callable[[Path], dict]) -> dict:
    """Assemble a results folder: ``write(work)`` fills a marked partial folder and returns the
    report, which is saved with the session's ``identity``; the folder then replaces ``out_dir``
    (:func:`_publish`). A failure removes only the partial folder. Called under :func:`results_lock`."""
    work = _prepare_output(out_dir, overwrite, identity)
    try:
        report = write(work)
        report["session_id"] = identity
        atomic_write_json(work / "report.json", report)
        _publish(work, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return report
