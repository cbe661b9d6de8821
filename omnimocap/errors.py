"""Errors meant for users.

A :class:`UserError` carries one line that names the file, the problem and the fix. The CLI prints
that line and exits non-zero; it never shows a traceback for one. Programming errors stay ordinary
exceptions with context.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem the user can fix: bad input, a missing model file, a wrong flag."""

    def __init__(self, message: str, *, path: str | Path | None = None, fix: str | None = None):
        self.path = None if path is None else str(path)
        self.problem = message
        self.fix = fix
        parts = []
        if self.path:
            parts.append(f"{self.path}: ")
        parts.append(message)
        if fix:
            parts.append(f" ({fix})")
        super().__init__("".join(parts).replace("\n", " "))


class InputError(UserError):
    """A file that is missing, truncated, malformed or holds invalid values."""


class ModelFilesMissing(UserError):
    """A model file (WiLoR, MANO, SMPL-X) is missing or fails verification."""


class DeviceError(UserError):
    """A device or a device library (libk4a, libk4abt, a camera) is unavailable or failed."""
