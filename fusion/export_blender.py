"""Blender's Python (the ``bpy`` module) as a separate process: FBX through Blender's own exporter.

``bpy`` pins NumPy 1.x while omnimocap needs NumPy 2, so Blender lives in its own environment
(``scripts/setup.sh`` installs it into ``.venv-blender``) and runs ``fusion/blender_job.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

from omnimocap.errors import UserError

JOB_SCRIPT = Path(__file__).with_name("blender_job.py")
REPO_ROOT = Path(__file__).resolve().parents[1]


def blender_python() -> str | None:
    """An interpreter with ``bpy``: ``$OMNIMOCAP_BLENDER_PYTHON``, else the checkout's
    ``.venv-blender``, else this interpreter when it has ``bpy``; None when there is none."""
    env = os.environ.get("OMNIMOCAP_BLENDER_PYTHON")
    if env:
        return env
    local = REPO_ROOT / ".venv-blender" / "bin" / "python"
    if local.is_file():
        return str(local)
    return sys.executable if find_spec("bpy") is not None else None


def run_blender_job(*args: str, timeout_s: float = 600.0) -> None:
    """Run ``blender_job.py ARGS`` in Blender's Python; a failure is one user-facing line."""
    python = blender_python()
    if python is None:
        raise UserError("Blender's Python module (bpy) is not installed",
                        fix="run scripts/setup.sh (it installs bpy into .venv-blender), or set "
                            "OMNIMOCAP_BLENDER_PYTHON to a Python that has bpy")
    proc = subprocess.run([python, str(JOB_SCRIPT), *args], capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"Blender job '{args[0]}' failed: {last}", path=args[1] if len(args) > 1 else None)
