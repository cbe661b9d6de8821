"""How the simulated observers fail on ``--realism field`` sessions: what a real hand detector,
WiLoR and a COCO pose model get wrong on a consumer 360 camera's stitched frames.

The simulated observers (hands/sim_backend.py, hands/sim_pose.py) read the session's truth and
report what a detector would. On a field session (``truth/realism.json`` ``"observer"`` record,
written by the simulator from :func:`observer_record`) they also fail as real ones do:

- *misses* (:class:`MissModel`): a logistic in the hand's (person's) box size at the camera's
  native resolution (the session's pano width, ``width / 2 pi`` pixels per radian), more with
  motion blur (the image speed times the optics' exposure, in pixels, as a fraction of the box)
  and in the seam's blend band or the stitch's blind strip;
- *handedness flips*, *boxes of another hand* (the other side or another person's hand) when two
  hands are close in the image, *false hands* somewhere else in a view;
- *correlated errors* (the hand observer): smooth random tracks per (person, side) over the
  session clock (:class:`SmoothNoise`), so that a frame's error does not depend on which worker
  or chunk asks, nor on what was asked before.

Every draw is a deterministic function of the observer's seed and of what it is drawn for (true
person, side, pano frame index, session time); nothing depends on the order of requests.

Sizes: :func:`box_size_px` is the angular diameter of a set of points about their mean direction,
seen from the 360 camera's origin, in native pixels. The evaluation's ``hands.coverage_24px`` uses
the same function on the true hand joints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from omnimocap.capture.session import MANIFEST, Session
from omnimocap.errors import InputError

# Knot indices are offset so that knots before the session's start still seed a generator
# (seeds are non-negative).
_KNOT_OFFSET = 1 << 24


def box_size_px(points_cam: np.ndarray, width_px: float) -> np.ndarray:
    """Angular diameter (...) of point sets (..., J, 3) (camera frame, metres, seen from its
    origin) about their mean direction, in pixels of an equirect frame ``width_px`` wide
    (``width_px / 2 pi`` pixels per radian): the side of the box a detector would draw."""
    p = np.asarray(points_cam, dtype=np.float64)
    d = p / np.linalg.norm(p, axis=-1, keepdims=True)
    m = d.mean(axis=-2, keepdims=True)
    m = m / np.linalg.norm(m, axis=-1, keepdims=True)
    angle = np.arccos(np.clip(np.sum(d * m, axis=-1), -1.0, 1.0))
    return 2.0 * angle.max(axis=-1) * width_px / (2.0 * np.pi)


def image_speed_px_s(dir_a: np.ndarray, dir_b: np.ndarray, dt_s: float, width_px: float) -> np.ndarray:
    """Image speed (...) in native pixels per second of a point whose camera-frame direction moves
    from ``dir_a`` to ``dir_b`` (...,3) in ``dt_s`` seconds."""
    a = dir_a / np.linalg.norm(dir_a, axis=-1, keepdims=True)
    b = dir_b / np.linalg.norm(dir_b, axis=-1, keepdims=True)
    angle = np.arccos(np.clip(np.sum(a * b, axis=-1), -1.0, 1.0))
    return angle / dt_s * width_px / (2.0 * np.pi)


def native_width(session_dir: str | Path) -> float:
    """The 360 stream's width in pixels (the camera's native resolution), from the session's manifest."""
    session = Session.open(session_dir)
    width = session.pano().width
    if not width:
        raise InputError("the 360 stream's width is not in the manifest", path=session.root / MANIFEST,
                         fix="simulate the session again with `omnimocap simulate`")
    return float(width)


def _logistic(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


@dataclass(frozen=True)
class MissModel:
    """The probability that a detector misses an object, from its box at native resolution."""

    size_half_px: float = 26.0
    """Box side (native pixels) at which half are missed (the logistic's midpoint)."""
    size_width_px: float = 6.0
    """Scale of the logistic in box side, pixels: 24 px misses 58 %, 60 px 0.3 % at the defaults."""
    blur_half: float = 0.6
    """Blur length (image speed x exposure, native pixels) as a fraction of the box side at which
    half are missed."""
    blur_width: float = 0.1
    """Scale of the blur logistic, as a fraction of the box side."""
    seam: float = 0.3
    """Probability of a miss in the seam's blend band or the stitch's blind strip."""
    floor: float = 0.01
    """Probability of a miss whatever the box (occlusion, unusual poses)."""

    def probability(self, box_px: np.ndarray, blur_px: np.ndarray, on_seam: np.ndarray) -> np.ndarray:
        """Miss probability (...) of objects with box side ``box_px`` and blur length ``blur_px``
        (native pixels), ``on_seam`` (bool) in the blend band or the blind strip; the causes are
        independent."""
        box = np.maximum(np.asarray(box_px, dtype=np.float64), 1e-6)
        p_size = _logistic((self.size_half_px - box) / self.size_width_px)
        p_blur = _logistic((np.asarray(blur_px) / box - self.blur_half) / self.blur_width)
        p_seam = np.where(on_seam, self.seam, 0.0)
        return 1.0 - (1.0 - self.floor) * (1.0 - p_size) * (1.0 - p_blur) * (1.0 - p_seam)


@dataclass(frozen=True)
class FieldHandModel:
    """The field hand observer's failures (``--hands sim`` on a field session)."""

    miss: MissModel = field(default_factory=MissModel)
    """Misses by box size, blur and seam (:class:`MissModel`)."""
    flip: float = 0.03
    """Probability that the handedness is reported wrong (the other side's label, the parameters as
    found: read under the other side's mirror convention they are the mirrored hand)."""
    other_hand: float = 0.3
    """Probability that the box belongs to another hand (the other side, or another person's)
    when that hand's centre lies within ``close_ratio`` box sides of this hand's in the view."""
    close_ratio: float = 1.0
    """How close another hand must be for its box to be taken, in box sides (view image)."""
    false_hand: float = 0.02
    """Probability that a view reports a false hand: a plausible hand elsewhere in the view."""
    corr_s: float = 0.2
    """Knot spacing of the correlated errors' tracks, seconds (their correlation time)."""
    orient_deg: float = 8.0
    """RMS angle of the error of ``global_orient``, degrees."""
    finger_deg: float = 13.0
    """RMS angle of the error of each finger rotation of ``hand_pose``, degrees (13: about 7 mm
    PA-MPJPE through MANO's kinematics)."""
    joint_mm: float = 8.0
    """RMS 3D error (norm) of each joint of ``keypoints_3d`` about the hand, millimetres (per axis
    ``joint_mm / sqrt(3)``; 8: about 7 mm PA-MPJPE, the alignment absorbs part of it)."""
    keypoint_frac: float = 0.03
    """RMS error per image axis of each 2D keypoint, as a fraction of the box side."""
    scale: float = 0.05
    """RMS relative error of the hand's size (``keypoints_3d`` about the MANO origin). WiLoR's depth
    comes from the apparent size, so ``cam_t_view`` is scaled by the same factor."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FieldHandModel":
        return _from_dict(cls, d)


@dataclass(frozen=True)
class FieldDetectorModel:
    """The field faults a detector (hand boxes, body keypoints) adds to its ideal-level ones."""

    miss: MissModel = field(default_factory=MissModel)
    """Misses by box size, blur and seam (:class:`MissModel`), on top of the ideal-level misses."""
    other_hand: float = 0.3
    """Probability that a hand's box is drawn on another hand within ``close_ratio`` box sides of it
    (hand detector only)."""
    close_ratio: float = 1.0
    """How close another hand must be for its box to be taken, in box sides."""
    false_rate: float = 0.0
    """Probability per frame that a false person is reported (body keypoints only): a real
    person's keypoints at another bearing."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FieldDetectorModel":
        return _from_dict(cls, d)


# A person's box is large: a pose model misses people below a few tens of pixels.
POSE_MISS = MissModel(size_half_px=40.0, size_width_px=8.0, blur_half=0.6, blur_width=0.1, seam=0.1, floor=0.0)


def _from_dict(cls, d: dict):
    kwargs = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        kwargs[f.name] = MissModel(**d[f.name]) if f.name == "miss" else float(d[f.name])
    return cls(**kwargs)


@dataclass(frozen=True)
class FieldObserver:
    """The field failures of the three simulated observers, as ``truth/realism.json`` records them."""

    hands: FieldHandModel = field(default_factory=FieldHandModel)
    hand_detector: FieldDetectorModel = field(default_factory=FieldDetectorModel)
    pose_detector: FieldDetectorModel = field(
        default_factory=lambda: FieldDetectorModel(miss=POSE_MISS, other_hand=0.0, false_rate=0.01))

    def to_dict(self) -> dict:
        return {"hands": self.hands.to_dict(), "hand_detector": self.hand_detector.to_dict(),
                "pose_detector": self.pose_detector.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "FieldObserver":
        return cls(FieldHandModel.from_dict(d.get("hands", {})), FieldDetectorModel.from_dict(d.get("hand_detector", {})),
                   FieldDetectorModel.from_dict(d.get("pose_detector", {})))


def observer_record(level: str, observer: FieldObserver | None = None) -> dict:
    """``truth/realism.json``'s ``"observer"`` record for a session of realism ``level``: the field
    failures the simulated observers inject (null at other levels)."""
    if level != "field":
        return {"level": level, "field": None}
    return {"level": level, "field": (observer or FieldObserver()).to_dict()}


def field_observer(realism: dict | None) -> FieldObserver | None:
    """The field failures a session's ``realism.json`` (as a dict, None when the session has none)
    asks of its observers; None for the ideal observers."""
    record = (realism or {}).get("observer") or {}
    return FieldObserver.from_dict(record["field"]) if record.get("field") else None


class SmoothNoise:
    """Unit-variance random tracks over the session clock, one per key (e.g. (person, side)): a
    uniform cubic B-spline through Gaussian knots every ``spacing_s`` seconds, normalised to unit
    variance at every time. Each knot is drawn from its own generator, seeded by (``seed``, key,
    knot index), so a track's value at a time does not depend on what else was asked."""

    def __init__(self, seed: int, dim: int, spacing_s: float):
        self.seed, self.dim, self.spacing_s = int(seed), int(dim), float(spacing_s)
        self._knots: dict[tuple, np.ndarray] = {}

    def _knot(self, key: tuple[int, ...], k: int) -> np.ndarray:
        cached = self._knots.get((key, k))
        if cached is None:
            cached = np.random.default_rng([self.seed, *key, k + _KNOT_OFFSET]).normal(size=self.dim)
            if len(self._knots) > 4096:
                self._knots.clear()
            self._knots[(key, k)] = cached
        return cached

    def __call__(self, key: tuple[int, ...], t_s: float) -> np.ndarray:
        """The track ``key``'s value (dim,) at session time ``t_s`` (seconds)."""
        x = float(t_s) / self.spacing_s
        k = int(np.floor(x))
        u = x - k
        w = np.array([(1 - u) ** 3, 3 * u ** 3 - 6 * u ** 2 + 4, -3 * u ** 3 + 3 * u ** 2 + 3 * u + 1, u ** 3]) / 6.0
        knots = np.stack([self._knot(key, k + j) for j in (-1, 0, 1, 2)])
        return (w @ knots) / np.sqrt(np.sum(w * w))
