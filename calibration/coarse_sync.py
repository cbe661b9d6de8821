"""The coarse time map of a stream from its host arrival times: a robust line ``t_host ~ a * t_sensor + b``.

Arrival is the true time plus a transport latency plus jitter, so this map is biased by the mean
latency (typically tens of milliseconds) but gets the rate and the rough offset; the motion sync
(``calibration/timesync.py``) and the flash sync (``calibration/flash_sync.py``) start from it.
Units: seconds; the map is a :class:`~omnimocap.capture.rig.TimeMap`.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares

from omnimocap.capture.rig import TimeMap
from omnimocap.errors import UserError


def coarse_time_map(t_sensor: np.ndarray, t_host: np.ndarray) -> TimeMap:
    """Robust line fit ``t_host ~ a * t_sensor + b`` over the frames whose arrival time is known.

    ``t_sensor`` (N,) seconds on the device clock, ``t_host`` (N,) seconds on the session clock (NaN
    where unknown). A soft-L1 loss keeps late frames (a stalled USB transfer) from tilting the line.
    The offset keeps the mean transport latency; :func:`fine_time_map` removes it.
    Residual RMS (ms) is of the inliers (|residual| < 3 robust sigmas).
    """
    t_sensor = np.asarray(t_sensor, dtype=np.float64)
    t_host = np.asarray(t_host, dtype=np.float64)
    ok = np.isfinite(t_sensor) & np.isfinite(t_host)
    if ok.sum() < 2 or np.ptp(t_sensor[ok]) <= 0:
        raise UserError("the 360 stream has fewer than two frames with host arrival times; no coarse time map "
                        "can be fitted", fix="record with host timestamps, or give the time map by other means")
    x, y = t_sensor[ok], t_host[ok]
    x0 = np.mean(x)
    slope, icept = np.polyfit(x - x0, y, 1)
    jitter = max(1e-4, _mad_sigma(y - (slope * (x - x0) + icept)))
    fit = least_squares(lambda p: p[0] * (x - x0) + p[1] - y, [slope, icept], loss="soft_l1", f_scale=jitter)
    a, c = fit.x
    r = y - (a * (x - x0) + c)
    inl = np.abs(r) < 3 * max(_mad_sigma(r), 1e-6)
    return TimeMap(float(a), float(c - a * x0), float(np.sqrt(np.mean(r[inl] ** 2)) * 1e3))


def rate_std_ppm(t_sensor: np.ndarray, time_map: TimeMap) -> float:
    """1-sigma uncertainty (ppm) of a coarse map's rate, from its residual RMS and the time span: the
    arrival jitter averages out over many frames while a steady latency does not touch the rate."""
    t = np.asarray(t_sensor, dtype=np.float64)
    t = t[np.isfinite(t)]
    if len(t) < 3 or time_map.residual_rms_ms is None:
        return float("inf")
    return float(time_map.residual_rms_ms * 1e-3 / (np.sqrt(len(t)) * np.std(t)) * 1e6)


def with_rate(time_map: TimeMap, rate_of: TimeMap, t: float) -> TimeMap:
    """``time_map``'s session time at ``t`` (seconds, sensor clock) with ``rate_of``'s rate: a
    start whose rate is the coarse map's, the centre of the rate prior (:func:`rate_std_ppm`)."""
    return TimeMap(rate_of.a, float(time_map.to_session(t) - rate_of.a * t))


def _mad_sigma(r: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(r - np.median(r))))
