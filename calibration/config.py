"""The settings of ``calibrate`` and ``sync``: one dataclass per verb, made of blocks, each field
with its unit in its docstring.

The command-line options of both verbs are generated from these fields (``apps/config_cli.py``),
so the CLI and the library share every default, and the configuration used is written into the
session's ``rig.json`` beside the result (``configs.calibrate`` / ``configs.sync``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# What sees the people in the panorama (see calibration/pano_observer.py).
OBSERVERS = ("auto", "simulated", "detector", "simulated-detector")


@dataclass
class RobustConfig:
    """The robust loss of :meth:`~omnimocap.calibration.bearing_problem.BearingProblem.solve` (sync
    and markerless calibration)."""

    scale_from_data: bool = True
    """Refit with the loss scaled by the residuals of a first fit (off: soft-L1 at 2 * noise_deg)."""
    loss: str = "cauchy"
    """scipy least_squares loss of the refit."""
    scale_sigmas: float = 2.5
    """The refit's loss scale in robust standard deviations of the first fit's residuals (per axis)."""
    min_scale_deg: float = 0.05
    """Lowest loss scale, degrees (noise-free simulations)."""
    split_jumps: bool = True
    """Cut the Kinect trajectories where a joint moves faster than ``jump_speed_m_s`` between two frames (a track
    handed over to another person, swapped left and right labels) instead of smoothing across the jump."""
    jump_speed_m_s: float = 7.5
    """Fastest joint motion, metres per second, between two trajectory samples (0.25 m a frame at 30 fps)."""
    cut_outlying_runs: bool = True
    """After the robust refit, drop the observations of each track's windows of ``run_window_s`` whose median
    angle exceeds ``run_cut_sigmas`` of the fit's robust scatter, and fit again: a stretch in which a track
    follows the wrong person (or mirrored labels) is a run of consistent errors that a robust loss, which judges
    each bearing alone, still lets pull."""
    run_window_s: float = 0.5
    """Window, seconds, over which a track's residuals are judged together."""
    run_cut_sigmas: float = 4.0
    """A window's median angle beyond this many robust standard deviations of the fit drops it."""
    weigh_tracks: bool = True
    """After the first fit, each track's weights are scaled by how well the track agrees with it: its
    observations' median weighted angle against that of all tracks (see
    :meth:`~omnimocap.calibration.bearing_problem.BearingProblem.weigh_tracks`). A track whose joint the
    Kinects define with a larger bias, or track with more (slow) noise, than the others (k4abt's hands and
    wrists) then pulls the clock and the pose by its real error, not by the one assumed for every joint;
    off: every track is weighed by the assumed noise alone."""
    track_weight_min: float = 0.25
    """Least factor by which a track's weights are scaled (its residuals at most 4x the typical ones count)."""
    track_weight_min_observations: int = 30
    """Tracks with fewer observations than this keep their weights (too few to judge)."""
    rate_prior_throughout: bool = True
    """The clock rate's measurement from the host arrival times weighs in every fit of the solve (off: in a last
    fit only, after the rate has wandered along the flat valley of rate against keypoint offsets)."""
    bounded_steps: bool = True
    """Stop each least-squares fit once two successive steps change the result by less than the step
    tolerances below (what no metric can see), or after ``max_iterations``; off: scipy's relative tolerances
    (1e-8) and its default of 100 evaluations per parameter, which let a fit creep along a flat valley of the
    cost (the clock rate against the offset and the keypoint offsets) for thousands of steps."""
    step_offset_ms: float = 0.05
    """Step tolerance of the clock, milliseconds: the offset's change, and the rate's change times half the
    observations' time span."""
    step_rotation_deg: float = 0.01
    """Step tolerance of the 360 camera's rotation, degrees."""
    step_translation_mm: float = 0.1
    """Step tolerance of the 360 camera's position and of each keypoint offset, millimetres."""
    max_iterations: int = 100
    """Most trust-region iterations of one fit (with ``bounded_steps``), whatever the number of parameters."""


@dataclass
class ObserverConfig:
    """What sees the people in the panorama, and how its detections are associated and solved."""

    observer: str = "auto"
    """What sees the people in the panorama: the simulated observer (default for simulated sessions at --realism
    ideal), WiLoR's hand detector (default for recorded sessions) or the simulated detector (default for
    simulated sessions at --realism field)."""
    noise_deg: float = 0.2
    """Angular noise of the simulated observer, degrees (simulated sessions only)."""
    detector: str | None = None
    """The hand detector's weights (default: <models>/wilor/detector.pt)."""
    device: str = "cpu"
    """Torch device of the hand detector (cpu, cuda)."""
    stride: int = 1
    """Detect hands in every N-th 360 frame."""
    association_rounds: int = 2
    """Detections are associated with the Kinect hands under the current pose and clock, so association and
    solve alternate this many times, each from the previous solve's pose and clock."""
    refit_search_s: float = 0.05
    """Offset search, seconds, of every solve on detections after the first (the clock is then known to a
    frame or two)."""
    body_keypoints: bool = True
    """Detector observers: the people's shoulders, elbows, wrists, knees and ankles found by a pose model over the
    panorama are solved with beside the hands (each keypoint's offset from the Kinect joint solved in the body's
    frame), in sync and in the calibration's solves after its search; off: hands only. The simulated detector
    brings simulated keypoints; the detector observer needs a pose model."""
    pose_model: str | None = None
    """The body keypoint model's weights for the detector observer (default: <models>/pose/yolo11n-pose.pt when
    present; hands only without it)."""
    body_gate_deg: float = 5.0
    """Association gate, degrees: the median angle between a detected person's keypoints and a Kinect body's."""
    hand_offsets: bool = False
    """With body keypoints: each hand's offset from the Kinect hand centre is solved too, in the frames of the
    same person's wrist (k4abt's wrist and hand joints carry the same joint-definition bias as the body's);
    off (the default): the hands are taken as exact. Measured on 30 s field sessions (seed 2): the pose's
    rotation error 0.36 -> 0.26 deg under the independent k4abt model, but its translation error 8.3 -> 11.2 mm
    under the simulator's own (the offsets trade off against the camera's position)."""
    align_kinect_joints: bool = True
    """Before the Kinects' joints are fused, each other Kinect's joint is moved onto the reference Kinect's
    definition of it: their median difference in the joint's reported orientation, per person and joint (k4abt's
    joint-definition bias is partly each Kinect's own), so that the fused joint does not step where one Kinect
    loses the person (calibration/observations.py ``kinect_wrist_tracks``); off: fused as reported. Measured on
    30 s sessions (calibrate then sync, simulated detector): the pose's rotation error 0.37 -> 0.24 deg under the
    independent k4abt model (seed 2), but 0.13 -> 0.20 deg under the simulator's own (seed 4)."""
    hand_offset_prior_mm: float = 8.0
    """With ``hand_offsets``: the expected size of a hand's offset, millimetres per axis (k4abt's joint-definition
    bias of the wrist and hand joints); a prior of this size keeps the hands' offsets from trading against the
    camera's position."""
    body_offset_prior_mm: float = 15.0
    """The expected size of a body keypoint's offset from its Kinect joint, millimetres per axis (a pose model's
    keypoint definition against k4abt's, and k4abt's bias of the trunk's joints)."""
    body_segment_offsets: bool = True
    """Each body keypoint's offset from the Kinect joint is solved in the Kinect joint's segment frame (its
    reported orientation: k4abt's joint-definition bias turns with the limb) as well as in the body's frame (the
    pose model's keypoint definition turns with the body); off: the body's frame only."""


@dataclass
class MarkerlessConfig:
    """The 360 camera's pose and clock from people moving in view (calibration/markerless.py)."""

    search_s: float = 0.5
    """Offset search, seconds, of the simulated observer's calibration from nothing (around the host-arrival
    map)."""
    detected_search_s: float = 0.25
    """Offset search, seconds, of the first solve on detected hands (around the search's clock)."""
    refine_search_s: float = 0.1
    """Offset search, seconds, when refining a previous calibration (--refine)."""
    search_frames: int = 150
    """360 frames searched whole for hands when calibrating from nothing."""
    pose_from_body: bool = True
    """With body keypoints (``observer.body_keypoints``): the solves after the search (pose and clock) use the
    body keypoints alone; the hands still give the search its pose and clock, and keep their part in ``sync``. A
    hand detection's box centre is not the Kinect's hand centre, which is built from k4abt's wrist and hand
    joints with their own definition bias and noise: the two differ by a centimetre or two, degrees where a hand
    passes close to the 360 camera, and those close passes pull the pose's position. With fewer than
    ``min_frames`` panorama frames of body keypoints the hands stay in. Off: hands and body keypoints together.
    Measured on 30 s sessions (simulated detector; field, independent k4abt model and ideal; from the true
    Kinect rig): the pose's error 0.37 deg / 14.5 mm -> 0.13 deg / 6.7 mm (independent seed 11), 0.50 / 9.3 ->
    0.34 / 6.1 (independent seed 12), 0.22 / 12.7 -> 0.12 / 4.4 (field seed 13), 0.15 / 8.1 -> 0.05 / 2.0
    (ideal seed 11); worse on independent seed 2 (0.24 / 4.1 -> 0.25 / 6.7), field seed 2 (0.22 / 8.8 ->
    0.26 / 9.4) and ideal seeds 2 and 4 (2.9 -> 4.7 mm, 2.0 -> 3.5 mm)."""
    height_from_hands: bool = True
    """With ``pose_from_body`` in effect: after each solve on the body keypoints, the 360 camera's height (along
    the world's up) is solved again from the hands' bearings alone, the rest of the pose and the clock kept
    (calibration/markerless.py ``height_from_tracks``). Each keypoint's offset is solved in the body's frame,
    which turns only about the vertical, so a height shared by the offsets and the camera's height are one
    unknown that only the offsets' prior decides: the camera's height then takes the keypoints' mean vertical
    definition offset (the pose model's against k4abt's). The hands carry no offset, but a hand centre of their
    own definition: the two heights are combined by their offsets' priors (``observer.body_offset_prior_mm`` over
    the keypoint tracks, ``observer.hand_offset_prior_mm`` over the hand tracks: about 0.4 of the hands' shift).
    Off: the height as the body keypoints leave it. Measured on 30 s sessions (calibrate then sync, simulated
    detector; off -> on): the pose's position error 8.2 -> 6.7 mm and the hands' 11.7 -> 10.5 mm (field seed 22),
    5.9 -> 4.6 and 12.1 -> 10.5 (field seed 21), 5.0 -> 4.0 and 9.3 -> 8.3 (ideal seed 21); worse on
    independent seed 21 (3.6 -> 4.0 mm, hands 8.5 -> 9.2 mm), where the keypoints' height happened to be right."""
    face_keypoints: bool = True
    """With body keypoints: the face's nose, eyes and ears are solved with too, against k4abt's NOSE, EYE and EAR
    joints (calibration/pano_bodies.py); off: shoulders, elbows, wrists, knees and ankles only. Measured on 7
    sessions of 30 s (field seeds 22, 24, 2; independent k4abt model seeds 22, 24, 12, 21; calibrate then
    sync, simulated detector; benchmarks/results/face_keypoints.md): the position's error 6.7 -> 3.5,
    4.4 -> 4.7, 9.2 -> 5.3, 10.6 -> 5.3, 4.9 -> 4.4, 5.5 -> 3.5 and 4.0 -> 2.6 mm, the rotation's 0.26 -> 0.20
    deg on field seed 2, 0.19 -> 0.09 deg on independent seed 22 and 0.34 -> 0.19 deg on independent seed 12
    (within 0.04 deg of before on the others)."""
    min_observations: int = 150
    """Fewest bearings inside the Kinect trajectories a calibration needs."""
    min_frames: int = 90
    """Fewest panorama frames with a bearing inside the Kinect trajectories: pose and offset need a few seconds
    of motion, however many joints each frame shows."""
    min_motion_m: float = 0.05
    """Least RMS motion of a tracked joint about its mean, metres, below which the people stand still."""


@dataclass
class KinectPosesConfig:
    """The Kinects' poses and the world frame (calibration/kinect_poses.py)."""

    kinects: str | None = None
    """estimate: the Kinects' poses and the world frame from the reference Kinect's IMU and floor and the shared
    skeletons (default when the reference Kinect recorded its IMU); rig: keep the rig's (default otherwise)."""
    floor_frames: int = 6
    """Depth frames of the reference Kinect, spread over the recording, whose points the floor is fitted to."""
    floor_stride_px: int = 2
    """Pixel step of the depth points taken from each floor frame."""


@dataclass
class BoardConfig:
    """The ChArUco board method (calibration/board_session.py)."""

    still_deg: float = 0.05
    """A board counts as still between two colour frames when no common corner moved more than this, degrees."""
    min_still_frames: int = 6
    """Colour frames a still run needs (0.2 s at 30 fps) before its middle frame is used."""
    min_corners: int = 6
    """Fewest board corners a detection needs."""
    min_kinect_poses: int = 2
    """Still runs a non-reference Kinect must share with the reference before the board places it."""
    estimate_baseline: bool = True
    """Solve the 360 camera's lens baseline too when the board was seen on both sides of its seam
    (else the rig's value is kept)."""
    estimate_readout: bool = True
    """Solve the 360 camera's rolling-shutter readout from the frames where the board moves between
    poses (calibration/board_readout.py), kept when its 1-sigma is within ``readout_max_std_ms``
    (else the rig's value is kept)."""
    readout_max_std_ms: float = 2.0
    """Largest 1-sigma, milliseconds, of a readout estimate that replaces the rig's."""
    readout_min_speed: float = 0.1
    """Board speed, m/s, from which a 360 frame counts as seeing the board move."""
    readout_max_track_miss_mm: float = 10.0
    """A moving-board 360 frame is used only where the colour camera's board track, with either
    bracketing detection left out, still predicts it within this many millimetres (a board swung
    faster than the colour frame rate can follow is not interpolated well enough to time rows)."""
    readout_max_frames: int = 40
    """Most moving-board 360 frames read for the readout (evenly spread over those available)."""


@dataclass
class CalibrateConfig:
    """``omnimocap calibrate``: the world frame, the Kinects' poses and the 360 camera's pose and clock."""

    method: str = "markerless"
    """How the 360 camera is placed: markerless (people moving in view) or board (a ChArUco board held still)."""
    refine: bool = False
    """Markerless: start from the rig's current 360 pose and clock (a previous calibration) instead of searching
    from nothing."""
    kinect_poses: KinectPosesConfig = field(default_factory=KinectPosesConfig)
    observer: ObserverConfig = field(default_factory=ObserverConfig)
    markerless: MarkerlessConfig = field(default_factory=MarkerlessConfig)
    board: BoardConfig = field(default_factory=BoardConfig)
    robust: RobustConfig = field(default_factory=RobustConfig)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class MotionSyncConfig:
    """The time map from motion with the rig's pose (calibration/timesync.py)."""

    search_s: float = 0.25
    """Offset search, seconds, of the first solve (around the host-arrival map)."""
    first_gate_deg: float = 8.0
    """Association gate, degrees, of detections with the predicted hands under the host-arrival map."""
    gate_deg: float = 6.0
    """Association gate, degrees, under a solved clock."""
    hold_kinect_differences: bool = True
    """Where two Kinects see a joint, the other Kinect's joint is also moved by their remaining slow difference
    (its mean over ``kinect_difference_window_s`` on either side), and that difference is carried on where only
    one of them sees the joint: the fused joint then does not step where one Kinect loses a person, drops them or
    gives them a new id (calibration/observations.py ``slow_difference``), a step that the clock takes for motion;
    off: only the constant definition difference is taken out. Measured on 14 sessions of 30 s (field, independent
    k4abt model and ideal; calibrate, then sync, simulated detector): the clock's error 1.34 -> 0.96 ms mean,
    1.56 -> 1.26 ms RMS, better on 9 (independent seed 4 3.2 -> 1.0 ms), worse on 5 (field seed 12 1.6 -> 2.3 ms,
    ideal seed 2 0.4 -> 1.5 ms). The markerless calibration keeps the Kinects' difference (with it, the pose's
    translation error went 4.1 -> 7.1 mm on independent seed 2 and 8.8 -> 10.0 mm on field seed 2)."""
    face_keypoints: bool = False
    """With body keypoints: the face's nose, eyes and ears are solved with too (see
    ``MarkerlessConfig.face_keypoints``). Off by default: a pose model sees the face only while the person looks
    towards the camera, and on the same 7 sessions the clock's error went 0.98 -> 2.63 ms on field seed 24 with
    them (better on independent seed 22, 2.48 -> 1.21 ms; the others within 0.8 ms)."""
    kinect_difference_window_s: float = 0.5
    """Half-width, seconds, of the window over which the two Kinects' slow difference is averaged."""

    def fused_difference_window_s(self) -> float | None:
        """The half-window of ``kinect_wrist_tracks``'s slow Kinect difference, seconds (None: off)."""
        return self.kinect_difference_window_s if self.hold_kinect_differences else None


@dataclass
class FlashSyncConfig:
    """The time map from flashes (calibration/flash_sync.py)."""

    min_step: float = 5.0
    """A flash is a rise of at least this many grey levels (of 255) in a frame's mean brightness: people moving
    change it by a fraction of a level, a light switched on by tens."""
    tolerance_s: float = 0.5
    """Most, seconds, that the host-arrival map may be off (latency, jitter) when a 360 flash is paired with a
    Kinect one."""
    min_rate_span_s: float = 1.0
    """Flash pairs closer together than this, seconds, fix the offset only: over a shorter span a sub-millisecond
    error in each event would be a rate error of hundreds of ppm."""


@dataclass
class SyncConfig:
    """``omnimocap sync``: the 360 camera's time map, from motion or from flashes."""

    flash: bool = False
    """From flashes (a light switched on) seen by the 360 camera and the reference Kinect's colour camera instead
    of from motion."""
    observer: ObserverConfig = field(default_factory=ObserverConfig)
    motion: MotionSyncConfig = field(default_factory=MotionSyncConfig)
    flashes: FlashSyncConfig = field(default_factory=FlashSyncConfig)
    robust: RobustConfig = field(default_factory=RobustConfig)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)
