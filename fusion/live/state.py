"""The immutable snapshot of a live session that the view draws (:class:`LiveState`) and its parts.

Positions are metres: Kinect joints in that Kinect's depth camera frame, everything in
:class:`WorldState` in the world frame (y up); times are seconds on the session clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from omnimocap.capture.sources import SourceHealth


@dataclass(frozen=True)
class Message:
    """A line of the message panel. ``level``: info | warning | fault."""

    id: int
    wall: float
    level: str
    source: str
    text: str


@dataclass(frozen=True)
class KinectPane:
    """One Kinect: its colour image (BGR, or None), its skeletons in its depth frame (metres) and,
    with a colour image and the device calibration, the same joints as colour pixels (column, row)."""

    name: str
    t_session: float
    color: np.ndarray | None
    skeletons_depth: dict[int, np.ndarray]
    skeletons_color_px: dict[int, np.ndarray]


@dataclass(frozen=True)
class HandView:
    """A wrist-centred view: its image (S,S,3 BGR; None when the preview does not render), the
    predicted hand box and the reconstructed 2D keypoints (21,2) in view pixels, when there are any."""

    person_id: int
    side: str
    image: np.ndarray | None
    predicted_box: np.ndarray
    keypoints_2d: np.ndarray | None


@dataclass(frozen=True)
class PanoPane:
    """The panorama with predicted wrist pixels (person, side, (2,) column/row) and each view's
    border as a polyline of panorama pixels (N,2), NaN rows where it crosses the seam."""

    index: int
    t_session: float
    released_wall: float
    image: np.ndarray
    wrists_px: list[tuple[int, str, np.ndarray]]
    view_outlines: list[np.ndarray]
    overlay_index: int | None = None
    """The frame whose wrists, outlines and hand views are drawn over this one, when it is an
    earlier frame (the hand preview still runs on a newer one); None: this frame's own."""
    overlay_released_wall: float | None = None
    """That frame's release by its capture thread (``time.perf_counter()``)."""


HAND_SEEN, HAND_HELD, HAND_LOST = "seen", "held", "lost"


@dataclass(frozen=True)
class FittedBody:
    """One person's live SMPL-X body at ``t_session`` (the Kinect frame it was fitted to), world
    frame, metres: ``joints`` (55,3), ``local_rotmats`` (55,3,3) with wrists and fingers set from
    the hands, ``transl`` (3,), ``betas`` (B,), ``vertices`` (V,3) when a model file is present (else
    None) and each side's hand on the body: ``observed`` (the preview's hand, seen or held),
    ``held`` (fingers of an earlier hand) or ``kinect`` (never seen: flat fingers)."""

    person_id: int
    t_session: float
    joints: np.ndarray
    local_rotmats: np.ndarray
    transl: np.ndarray
    betas: np.ndarray
    vertices: np.ndarray | None = None
    hand_status: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WorldState:
    """The 3D scene, world frame (y up, metres): skeletons keyed ``<device>/<body id>`` (32,3),
    lifted hands (21,3) and every sensor's pose (4,4).

    The live whole-body pose (what the streams send): ``bodies``, the reference Kinect's people by
    body id (32,3); ``person_hands``, (body id, side) -> the hand (21,3) seen in the newest
    panorama frame or, for up to ``LiveConfig.hand_hold_s``, the last one seen moved with the
    wrist (held); ``hand_status``, (body id, side) -> seen | held | lost for every tracked person;
    ``t_session``, the newest panorama frame's session time (s); ``frame_key``, which Kinect and
    panorama frames the pose comes from (it changes when either does).

    The fitted whole body (``fusion.live.body``): ``fitted``, body id -> its SMPL-X body with the
    hands on it (joints, and mesh vertices with a model file), for every person whose shape is
    held; ``body_faces``, the mesh's triangles (T,3) into every body's vertices (None without a
    model file)."""

    skeletons: dict[str, np.ndarray] = field(default_factory=dict)
    hands: list[np.ndarray] = field(default_factory=list)
    sensor_poses: dict[str, np.ndarray] = field(default_factory=dict)
    bodies: dict[int, np.ndarray] = field(default_factory=dict)
    person_hands: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)
    hand_status: dict[tuple[int, str], str] = field(default_factory=dict)
    t_session: float = float("nan")
    frame_key: tuple = ()
    fitted: dict[int, FittedBody] = field(default_factory=dict)
    body_faces: np.ndarray | None = None


@dataclass(frozen=True)
class CalibrationState:
    method: str = "none"
    is_truth: bool = False
    residuals: dict = field(default_factory=dict)
    running: bool = False
    progress: float = 0.0
    status: str = ""


@dataclass(frozen=True)
class RecordingState:
    active: bool = False
    out_dir: str = ""
    elapsed_s: float = 0.0
    bytes_written: int = 0
    disk_free_bytes: int = 0
    frames: dict[str, int] = field(default_factory=dict)
    dropped: int = 0


@dataclass(frozen=True)
class LiveState:
    """One snapshot of the whole session; the view draws it and never writes to it. ``devices``:
    each source's counters (drops include the frames the display skipped); ``sync``: per device,
    how its clock maps onto the session clock; ``hands_backend``: the hand preview's backend,
    ``loading <backend>`` while it loads, ``none`` without one; ``pipeline_ms`` and ``body_ms``: how
    long the newest preview pass and body fit took, milliseconds."""

    seq: int
    published_wall: float
    running: bool
    preview: bool
    kinects: list[KinectPane]
    pano: PanoPane | None
    hand_views: list[HandView]
    world: WorldState
    devices: list[SourceHealth]
    sync: dict[str, str]
    calibration: CalibrationState
    recording: RecordingState
    messages: tuple[Message, ...]
    hands_backend: str
    pipeline_ms: float
    body_ms: float = 0.0
