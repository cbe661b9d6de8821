"""The Azure Kinect SDK's own recording playback (libk4arecord) through ctypes.

Used to feed recorded captures to the body tracker (``omnimocap track``), which consumes the SDK's
capture handles. Reading a recording's images needs no SDK: :mod:`omnimocap.capture.kinect_mkv`
does that with PyAV.

The library comes with the Azure Kinect Sensor SDK, or inside the ``pyk4a-bundle`` wheel;
``OMNIMOCAP_K4ARECORD_LIBRARY`` names it explicitly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys
from pathlib import Path
from typing import Iterator

from omnimocap.capture.k4abt import k4a_calibration_t
from omnimocap.errors import DeviceError, InputError

k4a_playback_t = ctypes.c_void_p
k4a_capture_t = ctypes.c_void_p
K4A_RESULT_SUCCEEDED = 0
K4A_STREAM_RESULT_SUCCEEDED, K4A_STREAM_RESULT_FAILED, K4A_STREAM_RESULT_EOF = 0, 1, 2

INSTALL_HINT = ("install the Azure Kinect Sensor SDK (libk4a1.4 and libk4arecord), or `pip install pyk4a-bundle` "
                "in an environment of its own and point OMNIMOCAP_K4ARECORD_LIBRARY at its libk4arecord*.so")

_SIGNATURES = {
    "k4a_playback_open": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(k4a_playback_t)]),
    "k4a_playback_close": (None, [k4a_playback_t]),
    "k4a_playback_get_calibration": (ctypes.c_int, [k4a_playback_t, ctypes.POINTER(k4a_calibration_t)]),
    "k4a_playback_get_next_capture": (ctypes.c_int, [k4a_playback_t, ctypes.POINTER(k4a_capture_t)]),
    "k4a_playback_get_recording_length_usec": (ctypes.c_uint64, [k4a_playback_t]),
    "k4a_capture_release": (None, [k4a_capture_t]),
}


def _candidates() -> list[str]:
    names = [os.environ.get("OMNIMOCAP_K4ARECORD_LIBRARY", "")]
    names += {"win32": ["k4arecord.dll"]}.get(sys.platform, ["libk4arecord.so", "libk4arecord.so.1.4"])
    names.append(ctypes.util.find_library("k4arecord") or "")
    return [n for n in names if n]


def load_k4arecord(names: list[str] | None = None) -> ctypes.CDLL:
    """Load libk4arecord and declare the signatures used here; DeviceError naming what to install
    when none of ``names`` (default: the environment variable, then the platform's names) loads."""
    names = names or _candidates()
    for name in names:
        try:
            # a bundled copy (auditwheel-renamed) finds its libk4a only if that is loaded first
            for dep in sorted(glob.glob(str(Path(name).parent / "libk4a[-.]*so*"))) if os.sep in name else []:
                ctypes.CDLL(dep, mode=ctypes.RTLD_GLOBAL)
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        for fn, (restype, argtypes) in _SIGNATURES.items():
            func = getattr(lib, fn)
            func.restype, func.argtypes = restype, argtypes
        return lib
    raise DeviceError(f"Azure Kinect recording library not found (tried {', '.join(names)})",
                      path="libk4arecord", fix=INSTALL_HINT)


def bundled_library(site_packages: str | Path) -> str | None:
    """Path of the libk4arecord shipped in a pyk4a-bundle installation under ``site_packages``."""
    hits = sorted(glob.glob(str(Path(site_packages) / "pyk4a_bundle.libs" / "libk4arecord*.so*")))
    return hits[0] if hits else None


class Playback:
    """An open recording: its calibration and its captures as SDK handles."""

    def __init__(self, path: str | Path, lib: ctypes.CDLL | None = None):
        self.path = Path(path)
        self._lib = lib or load_k4arecord()
        self._handle = k4a_playback_t()
        if self._lib.k4a_playback_open(str(self.path).encode(), ctypes.byref(self._handle)) != K4A_RESULT_SUCCEEDED:
            self._handle = k4a_playback_t()
            raise InputError("the Azure Kinect SDK cannot open this recording", path=self.path,
                             fix="check it with `omnimocap inspect`; a cut-off file lacks the index the SDK needs")

    @property
    def length_s(self) -> float:
        return self._lib.k4a_playback_get_recording_length_usec(self._handle) / 1e6

    def calibration(self) -> k4a_calibration_t:
        calibration = k4a_calibration_t()
        if self._lib.k4a_playback_get_calibration(self._handle, ctypes.byref(calibration)) != K4A_RESULT_SUCCEEDED:
            raise InputError("the recording has no usable calibration", path=self.path)
        return calibration

    def captures(self) -> Iterator[k4a_capture_t]:
        """Capture handles in order; each is released when the next one is requested."""
        while True:
            capture = k4a_capture_t()
            result = self._lib.k4a_playback_get_next_capture(self._handle, ctypes.byref(capture))
            if result == K4A_STREAM_RESULT_EOF:
                return
            if result != K4A_STREAM_RESULT_SUCCEEDED:
                raise InputError("reading a capture failed", path=self.path, fix="the recording may be corrupt")
            try:
                yield capture
            finally:
                self._lib.k4a_capture_release(capture)

    def close(self) -> None:
        if self._handle:
            self._lib.k4a_playback_close(self._handle)
            self._handle = k4a_playback_t()

    def __enter__(self) -> "Playback":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
