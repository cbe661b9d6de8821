"""Flash events: a brightness step (a flash, a light switched on) seen by two streams, located to a
fraction of a frame in each and paired into a time map ``t_session = a * t_sensor + b``.

A camera with a rolling shutter (the 360 camera's two lenses, :class:`~omnimocap.geometry.pano_optics.PanoOptics`)
exposes its rows at their own times, so a frame's mean brightness is no one instant: its pixels are
grouped by capture time (:class:`TimeBands`), each group's brightness is read, and the step is
located over all groups of the frames around it, each at its own time.

Units: seconds on each stream's clock; brightness in grey levels (0-255).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omnimocap.calibration.config import FlashSyncConfig
from omnimocap.capture.rig import TimeMap
from omnimocap.errors import UserError
from omnimocap.geometry.cameras import EquirectCamera
from omnimocap.geometry.pano_optics import PanoOptics

# Capture-time groups of a rolling-shutter frame: more groups sample the step more finely, fewer
# keep each group's mean over enough pixels to be steady.
TIME_BANDS = 64


def frame_brightness(image: np.ndarray, max_width: int = 320) -> float:
    """Mean brightness (grey levels, BT.601 luma of a BGR image, or the mean of a single-channel one)
    of ``image``, from every n-th pixel of every n-th row so that at most ``max_width`` columns are
    read: a mean over tens of thousands of pixels is as good as over all of them for a brightness
    step, and reading a full 5.7K frame would cost more than decoding it."""
    step = max(1, int(np.ceil(image.shape[1] / max_width)))
    return float(_luma(image[::step, ::step]).mean())


def _luma(image: np.ndarray) -> np.ndarray:
    """BT.601 luma (float, grey levels) of a BGR image, or a single-channel image as it is."""
    if image.ndim == 2:
        return image.astype(np.float64)
    b, g, r = (image[..., k].astype(np.float64) for k in range(3))
    return 0.114 * b + 0.587 * g + 0.299 * r


@dataclass(frozen=True)
class TimeBands:
    """The pixels of a rolling-shutter frame grouped by capture time, on a grid of every ``step``-th
    pixel: ``labels`` (h, w) the group of each sampled pixel (-1: none), ``offsets_s`` (B,) each
    group's mean capture time relative to the frame's timestamp (seconds), ``counts`` (B,) its pixels,
    ``exposure_s`` each row's exposure and ``spread_s`` the span of capture times within a group."""

    step: int
    labels: np.ndarray
    offsets_s: np.ndarray
    counts: np.ndarray
    exposure_s: float
    spread_s: float

    @classmethod
    def for_panorama(cls, optics: PanoOptics, width: int, height: int, bands: int = TIME_BANDS,
                     max_width: int = 320) -> "TimeBands":
        """Groups for a ``width`` x ``height`` equirect frame of the camera ``optics``: equal slices of
        its readout (one group without a rolling shutter)."""
        step = max(1, int(np.ceil(width / max_width)))
        rows, cols = np.mgrid[0:height:step, 0:width:step]
        dirs = EquirectCamera(width, height).pixel_to_bearing(np.stack([cols, rows], axis=-1).astype(np.float64))
        offsets = optics.time_offset_s(dirs)
        n = bands if optics.readout_s > 0 else 1
        span = max(optics.readout_s, 1e-12)
        labels = np.clip(np.floor((offsets / span + 0.5) * n), 0, n - 1).astype(np.int64)
        counts = np.bincount(labels.ravel(), minlength=n).astype(np.float64)
        mean = np.bincount(labels.ravel(), weights=offsets.ravel(), minlength=n) / np.maximum(counts, 1.0)
        return cls(step, labels, mean, counts, float(optics.exposure_s), float(optics.readout_s) / n)

    def brightness(self, image: np.ndarray) -> np.ndarray:
        """Mean brightness (B,) (grey levels) of each group's pixels in ``image``."""
        y = _luma(image[::self.step, ::self.step])
        sums = np.bincount(self.labels.ravel(), weights=y.ravel(), minlength=len(self.counts))
        return sums / np.maximum(self.counts, 1.0)


def flash_events(t: np.ndarray, brightness: np.ndarray, *, min_step: float | None = None,
                 plateau: int = 3, bands: TimeBands | None = None) -> np.ndarray:
    """Times (seconds, the stream's clock) of rising brightness steps in a frame sequence.

    ``t`` (N,) frame times (mid-exposure), ``brightness`` (N,) mean image brightness, or (N, B) the
    brightness of each of ``bands``' capture-time groups. A step is a jump of at least ``min_step``
    (default: half the brightness range) between ``plateau``-frame levels of the frame's mean.

    Without ``bands``, it is located by the area under the transition: each frame is taken to be
    exposed for the typical frame period T (fitted over all frames), centred on its time, so its
    fraction f_j of the way from the low to the high level is the fraction of its exposure after
    the step, ``clip((t_j + T/2 - t_step) / T, 0, 1)``. The step is the time whose predicted
    fractions sum to the observed ones over the frames from the last low-plateau frame to the high
    plateau: exact for frames at irregular times (capture jitter) as long as their exposure is T;
    for uniform times it is ``t_step = t_lo + T * sum(1 - f_j) - T / 2``. Shorter exposures err by
    at most half the frame period.

    With ``bands``, every group of every frame around the step is a sample at its own capture time
    ``t_j + offsets_s[b]``, exposed for the rows' exposure (widened by the group's spread of times),
    and the same sum is taken over all of them, each group weighted by its pixels times its own
    low-to-high rise (groups the light barely reaches count little).
    """
    t = np.asarray(t, dtype=np.float64)
    yb = np.asarray(brightness, dtype=np.float64)
    yb = yb[:, None] if yb.ndim == 1 else yb
    w = bands.counts if bands is not None else np.ones(yb.shape[1])
    y = yb @ w / w.sum()
    if len(t) < 2 * plateau + 2:
        return np.zeros(0)
    T = _frame_period(t)
    if min_step is None:
        min_step = 0.5 * (np.percentile(y, 99) - np.percentile(y, 1))
    if min_step <= 0:
        return np.zeros(0)
    events = []
    i = plateau
    while i < len(y) - plateau - 2:
        lo = np.median(y[i - plateau:i])
        hi = np.median(y[i + 1:i + 1 + plateau])
        if hi - lo < min_step:
            i += 1
            continue
        # The first index where the levels differ enough can still see the ramp in its "high" window,
        # so the levels are re-read from frames clear of the ramp, which spans at most two frames.
        start = i - 1  # the last low-plateau frame
        low, high = slice(max(start - plateau + 1, 0), start + 1), slice(start + 3, start + 3 + plateau)
        window = slice(start, start + 3 + plateau)
        if bands is None:
            lo, hi = np.median(y[low]), np.median(y[high])
            f = np.clip((y[window] - lo) / (hi - lo), 0.0, 1.0)
            events.append(_step_time(t[window], float(np.sum(f)), T))
        else:
            events.append(_banded_step_time(t[window], yb[window], yb[low], yb[high], bands))
        i += 2 * plateau
    return np.asarray(events)


def _banded_step_time(t: np.ndarray, y: np.ndarray, low: np.ndarray, high: np.ndarray, bands: TimeBands) -> float:
    """The step time from the groups' brightness ``y`` (n, B) of frames at ``t`` (n,) around it,
    their levels read from the frames ``low`` and ``high`` (k, B) before and after it."""
    lo, hi = np.median(low, axis=0), np.median(high, axis=0)
    rise = hi - lo
    w = bands.counts * np.clip(rise, 0.0, None)
    use = w > 0.0
    f = np.clip((y[:, use] - lo[use]) / rise[use], 0.0, 1.0)
    times = (t[:, None] + bands.offsets_s[None, use]).ravel()
    weights = np.broadcast_to(w[use], f.shape).ravel()
    width = max(bands.exposure_s + bands.spread_s, 1e-4)
    return _step_time(times, float(np.sum(weights * f.ravel())), width, weights)


def _frame_period(t: np.ndarray) -> float:
    """The typical frame period (seconds) of frame times ``t``: the slope of the times against frame
    numbers counted in steps of the median interval (so dropped frames count), which averages out
    the capture jitter that a median of the intervals keeps."""
    d = np.diff(t)
    T0 = float(np.median(d))
    frame = np.r_[0.0, np.cumsum(np.maximum(np.round(d / T0), 1.0))]
    return float(np.polyfit(frame, t, 1)[0])


def _step_time(t: np.ndarray, lit: float, T: float, weights: np.ndarray | None = None) -> float:
    """The step time s at which samples at ``t`` exposed for ``T`` each would see, summed (with
    ``weights``, default 1), ``lit`` samples' worth of the high level: the sum,
    ``sum_j w_j clip((t_j + T/2 - s) / T, 0, 1)``, is piecewise linear and non-increasing in s with
    corners at ``t_j +- T/2``, so it is inverted exactly by interpolating between its values there."""
    w = np.ones(len(t)) if weights is None else np.asarray(weights, dtype=np.float64)
    corners = np.unique(np.r_[t - 0.5 * T, t + 0.5 * T])
    total = np.clip((t[None, :] + 0.5 * T - corners[:, None]) / T, 0.0, 1.0) @ w
    # np.interp wants increasing abscissae: the sum falls as s grows.
    return float(np.interp(lit, total[::-1], corners[::-1]))


def pair_flash_events(t_sensor_events: np.ndarray, t_session_events: np.ndarray, init: TimeMap | None,
                      tolerance_s: float) -> np.ndarray:
    """Pairs (M, 2) ``[t_sensor, t_session]`` of flash events: each sensor event with the nearest
    session event under ``init`` (None: the identity), kept when within ``tolerance_s`` seconds."""
    init = init or TimeMap()
    es = np.asarray(t_sensor_events, dtype=np.float64)
    eh = np.sort(np.asarray(t_session_events, dtype=np.float64))
    pairs = []
    for e in es:
        if len(eh) == 0:
            break
        j = int(np.argmin(np.abs(eh - init.to_session(e))))
        if abs(eh[j] - init.to_session(e)) <= tolerance_s:
            pairs.append((e, eh[j]))
    return np.asarray(pairs, dtype=np.float64).reshape(-1, 2)


def align_flash_events(t_sensor_events: np.ndarray, t_session_events: np.ndarray,
                       init: TimeMap | None = None, config: FlashSyncConfig | None = None) -> TimeMap:
    """Time map from flash events seen on the sensor clock and on the session clock (seconds).

    Events are paired by :func:`pair_flash_events` within ``config.tolerance_s`` (default
    :class:`FlashSyncConfig`). One pair (or pairs within ``config.min_rate_span_s`` of each other)
    fixes the offset (rate from ``init``, default the identity); two or more further apart fit rate
    and offset. Residual RMS in ms. Raises :class:`UserError` when no pair matches."""
    init = init or TimeMap()
    config = config or FlashSyncConfig()
    pairs = pair_flash_events(t_sensor_events, t_session_events, init, config.tolerance_s)
    if not len(pairs):
        raise UserError(f"no flash was seen by both streams within {config.tolerance_s:g} s of each other",
                        fix="flash a light in view of both cameras, or widen the tolerance")
    x, y = pairs.T
    if np.ptp(x) < config.min_rate_span_s:
        b = float(np.mean(y - init.a * x))
        return TimeMap(init.a, b, float(np.sqrt(np.mean((y - init.a * x - b) ** 2)) * 1e3))
    a, b = np.polyfit(x, y, 1)
    return TimeMap(float(a), float(b), float(np.sqrt(np.mean((y - (a * x + b)) ** 2)) * 1e3))
