"""Errors meant for users.

A :class:`UserError` carries one line that names the file, the problem and the fix. The CLI prints
that line and exits non-zero; it never shows a traceback for one. Programming errors stay ordinary
exceptions with context.
"""

from __future__ import annotations

import errno
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


# Operating-system errors a user fixes outside omnimocap: the problem and the fix, by errno.
_OS_ERRORS = {
    errno.ENOSPC: ("no space left on the device", "free disk space or write to another disk, then run again"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota or write elsewhere, then run again"),
    errno.EACCES: ("permission denied", "check the folder's permissions, or choose a folder you can write to"),
    errno.EPERM: ("operation not permitted", "check the folder's permissions, or choose a folder you can write to"),
    errno.EROFS: ("read-only file system", "write to a folder on a writable disk"),
}


def os_error_line(exc: OSError) -> str | None:
    """The one line (file, problem, fix) for an operating-system error the user can fix (a full
    disk, a quota, a missing permission, a read-only file system), or None for any other error."""
    if exc.errno not in _OS_ERRORS:
        return None
    problem, fix = _OS_ERRORS[exc.errno]
    return str(UserError(problem, path=exc.filename, fix=fix))
