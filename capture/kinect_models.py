"""The k4a devices as data: Microsoft's Azure Kinect and Orbbec's Femto Bolt (through Orbbec's K4A
wrapper), their cameras, modes, clocks and recording tags, and how to tell them apart in a file.

Both run the same k4a API and write the same Matroska layout; what differs, and what this module
states per model:

- colour field of view in the 16:9 modes: Azure Kinect about 90 x 59 deg, Femto Bolt about 80 x 51
  deg (a longer focal length for the same pixel count);
- frame rates: Azure 5, 15, 30 fps; Femto Bolt also 25 fps;
- colour resolutions: the Femto Bolt has only the 16:9 ones (no 1536P / 3072P);
- the device clock: an Azure Kinect counts from power-on (a recording's first timestamp is a few
  tenths of a second to hours) and its ``K4A_START_OFFSET_NS`` is about the first timestamp; the
  wrapper stamps frames with epoch-like device times (microseconds since 1970, about 1.7e15 us)
  while writing a ``K4A_START_OFFSET_NS`` of minutes that changes with each recording, so block
  timestamps in the file are the epoch time minus those minutes (Microsoft's viewer shows yet
  another offset for such a file);
- firmware tags: Azure Kinect ``1.6.x``; a Femto Bolt ``1.0.x``/``1.1.x``, and before 1.1.2 its
  timestamps overflow (they jump; :func:`timestamp_jumps` finds it in a recording);
- serial numbers: an Azure Kinect's is 12 digits, an Orbbec device's starts with letters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

# Device time (s) of 2024-11-05, the order of the wrapper's epoch-like timestamps.
EPOCH_LIKE_S = 1_730_800_000.0
# A device clock that moves by more than this between consecutive frames (or backwards) has jumped.
MAX_FRAME_STEP_S = 3600.0
BOLT_FIXED_FIRMWARE = (1, 1, 2)


@dataclass(frozen=True)
class KinectModel:
    """One k4a device model.

    ``color_fov_deg``: horizontal and vertical field of view of the 16:9 colour modes (degrees);
    ``color_resolutions``/``depth_modes``/``fps``: what the device offers, by the names of
    ``K4A_COLOR_MODE`` (after the format) and ``K4A_DEPTH_MODE``; ``epoch_clock``: whether device
    timestamps are epoch-like (seconds since 1970) with a start offset of minutes;
    ``color_firmware``/``depth_firmware``: the tags a recording of a current device carries."""

    name: str
    label: str
    color_fov_deg: tuple[float, float]
    color_resolutions: tuple[str, ...]
    depth_modes: tuple[str, ...]
    fps: tuple[int, ...]
    epoch_clock: bool
    color_firmware: str
    depth_firmware: str

    def color_focal_px(self, width: int) -> float:
        """Focal length (pixels) of a 16:9 colour image ``width`` pixels wide with this model's
        horizontal field of view (distortion ignored)."""
        return 0.5 * width / np.tan(np.radians(self.color_fov_deg[0]) / 2)

    def serial(self, k: int) -> str:
        """A serial number of this model's form for device ``k``."""
        return f"{k + 1:012d}" if self.name == "azure" else f"CL8F{k + 1:07d}"


_DEPTH = ("NFOV_2X2BINNED", "NFOV_UNBINNED", "WFOV_2X2BINNED", "WFOV_UNBINNED", "PASSIVE_IR")
KINECT_MODELS: dict[str, KinectModel] = {
    "azure": KinectModel("azure", "Azure Kinect DK", (90.0, 59.0),
                         ("720P", "1080P", "1440P", "1536P", "2160P", "3072P"), _DEPTH, (5, 15, 30),
                         epoch_clock=False, color_firmware="1.6.110", depth_firmware="1.6.79"),
    "femto-bolt": KinectModel("femto-bolt", "Orbbec Femto Bolt", (80.0, 51.0),
                              ("720P", "1080P", "1440P", "2160P"), _DEPTH, (5, 15, 25, 30),
                              epoch_clock=True, color_firmware="1.1.2", depth_firmware="1.1.2"),
}


def kinect_model(name: str) -> KinectModel:
    """The model called ``name`` (``azure`` or ``femto-bolt``); ValueError naming the choices."""
    if name not in KINECT_MODELS:
        raise ValueError(f"unknown Kinect model {name!r} (choose {', '.join(KINECT_MODELS)})")
    return KINECT_MODELS[name]


def firmware_version(text: str) -> tuple[int, ...] | None:
    """``"1.1.2"`` -> (1, 1, 2); None when the tag holds no dotted version."""
    m = re.match(r"\s*v?(\d+(?:\.\d+)*)", text or "")
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def device_family(tags: dict[str, str]) -> str:
    """``"azure"`` or ``"orbbec"`` from a recording's file tags: the serial's form first (12 digits
    = Azure Kinect), else the firmware (Azure Kinect firmware is 1.5 or later, Orbbec's 1.0-1.4)."""
    serial = tags.get("K4A_DEVICE_SERIAL_NUMBER", "")
    if serial:
        return "azure" if serial.isdigit() else "orbbec"
    version = firmware_version(tags.get("K4A_DEPTH_FIRMWARE_VERSION", ""))
    return "orbbec" if version is not None and version[:2] < (1, 5) else "azure"


def overflowing_firmware(tags: dict[str, str]) -> str | None:
    """The firmware version when the tags are an Orbbec device's with firmware before 1.1.2 (whose
    timestamps overflow), else None."""
    if device_family(tags) != "orbbec":
        return None
    for key in ("K4A_DEPTH_FIRMWARE_VERSION", "K4A_COLOR_FIRMWARE_VERSION"):
        version = firmware_version(tags.get(key, ""))
        if version is not None and version < BOLT_FIXED_FIRMWARE:
            return tags[key]
    return None


def timestamp_jumps(t_s: np.ndarray) -> list[tuple[int, float]]:
    """(index, step in seconds) of each frame whose device time steps back or forward by more than
    :data:`MAX_FRAME_STEP_S` from the previous frame's; ``t_s`` (N,) device seconds in file order."""
    step = np.diff(np.asarray(t_s, dtype=np.float64))
    bad = np.flatnonzero((step <= 0) | (step > MAX_FRAME_STEP_S))
    return [(int(i) + 1, float(step[i])) for i in bad]


@dataclass(frozen=True)
class DeviceClock:
    """How a simulated device's clock and its recording's start offset relate to the session.

    ``epoch_s``: added to the device clock (0 for a power-on clock, about :data:`EPOCH_LIKE_S` for
    an epoch-like one); ``start_offset_s``: the recording's ``K4A_START_OFFSET_NS`` in seconds, or
    None for the first timestamp (the Azure Kinect recorder's choice)."""

    epoch_s: float = 0.0
    start_offset_s: float | None = None


def device_clock(model: KinectModel, rng: np.random.Generator) -> DeviceClock:
    """A clock of ``model``'s kind, drawn from ``rng``: an epoch-like clock (within a day of
    :data:`EPOCH_LIKE_S`, whole microseconds) with a start offset of 2-40 minutes, or the power-on
    clock with the first timestamp as the offset."""
    if not model.epoch_clock:
        return DeviceClock()
    epoch = EPOCH_LIKE_S + round(rng.uniform(0.0, 86_400.0), 6)
    return DeviceClock(epoch_s=epoch, start_offset_s=round(rng.uniform(120.0, 2400.0), 6))


def scale_color_camera(camera, model: KinectModel, reference: KinectModel = KINECT_MODELS["azure"]):
    """``camera`` (a :class:`~omnimocap.geometry.cameras.PinholeCamera` of a ``reference``-model
    device) with its focal lengths scaled by the ratio of the two models' datasheet fields of view
    (``tan(hfov/2)``, distortion included in both); principal point, size and distortion kept."""
    s = model.color_focal_px(camera.width) / reference.color_focal_px(camera.width)
    return replace(camera, fx=camera.fx * s, fy=camera.fy * s)
