"""The simulated hand observer (``--hands sim``): ground-truth hands of a simulated session,
expressed per view exactly as WiLoR reports them (see hands/estimator.py), with optional noise.

It is an instrument for measuring the geometry (sync, calibration, views, lifting, fitting,
export) without any network, not a reconstruction. For each :class:`ViewRequest` it takes the true
hand of (person, side) at the *true* session time of pano frame ``frame_index`` (the 240 Hz truth
resampled: positions by cubic Hermite, rotations by slerp) and expresses it in the view camera
through the *true* pano pose and the request's ``R_pano_view``:

- ``global_orient = R_view_world @ R_world_hand``; ``hand_pose`` and ``betas`` as simulated;
  left hands are proper left-hand parameters (mirror convention).
- ``keypoints_3d = R_view_world @ (joints_world - wrist_world) + J0(betas)``: WiLoR's
  ``pred_keypoints_3d``, relative to the MANO origin, J0 the rest root joint of that side's MANO.
- ``keypoints_2d``: the true joints projected with the view intrinsics.
- ``box_xyxy``: a square of twice the keypoints' larger extent about their box centre (WiLoR's
  demo crop: rescale factor 2 around the detection).
- ``cam_t_view``: WiLoR's full-image translation (focal ``f = 5000/256 * S`` for an S-pixel view,
  principal point at the image centre) for which the MANO origin lands on its true pixel with its
  true apparent scale: ``tz = Z f / f_view`` with Z the origin's true depth, ``Tx = (u - S/2) tz / f``
  (same for y). ``cam_crop = (s, tx, ty)`` inverts WiLoR's crop-to-full conversion for
  ``box_xyxy`` (side b, centre c): ``s = 2 f / (b tz)``, ``tx = ±(Tx - 2 (c_x - S/2) / (b s))``
  (sign - for left hands, whose crops WiLoR mirrors), ``ty = Ty - 2 (c_y - S/2) / (b s)``.

Optics: the hand is the one the stitched frame shows (the session's true optics,
``Truth.pano_optics``, geometry/pano_optics.py): taken at the time its wrist's row was exposed
(:meth:`SimHandObserver.capture_time`, one time for the whole hand), each joint seen displaced by
the optical centre of the lens that shows it (``PanoOptics.apparent``): ``keypoints_2d``, the box
and ``cam_t_view`` follow the displaced joints, the hand's rotations and shape its true ones. With
the ideal optics this is bitwise the single-viewpoint, global-shutter observation above.

Field observer: on a session whose ``truth/realism.json`` has a field ``"observer"`` record (what
``omnimocap simulate --realism field`` writes), the observer fails as WiLoR does
(hands/sim_field.py :class:`FieldHandModel`): misses by box size at native resolution, blur and
seam; handedness flips; another close hand's box; false hands; errors correlated over time. Its
draws depend only on (seed, true person, side, frame index) and its errors on (seed, true person,
side, session time), so chunks and workers agree. A hand in the seam's blend band or the blind
strip is missed with the model's seam probability and otherwise observed as its lenses show it.

Noise: explicit noise (any of ``noise_mm``, ``noise_deg``, ``dropout`` above zero, the
``--hand-noise-*``/``--hand-dropout`` flags) replaces the field observer on any session with the
independent noise that follows (the optics still apply): ``noise_mm`` is a Gaussian standard
deviation per axis on every 3D joint (and so on the 2D keypoints), ``noise_deg`` the RMS angle of a
random rotation applied to ``global_orient`` and to every finger rotation, ``dropout`` the
probability of returning None, drawn per call in the order of the calls. None is also returned when
the true hand is not visible from the 360 camera (``truth/motion.npz`` ``hand_visible``), when its
wrist is behind the view camera or outside the view image, and when no true person's wrist of the
requested side lies within ``MATCH_RADIUS_M`` of the request's predicted wrist: the person is the
one whose wrist is nearest (body-tracking ids are not the simulation's person indices).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from omnimocap.geometry.transforms import axis_angle_to_matrix
from omnimocap.capture.truth import REALISM_FILE, open_truth
from omnimocap.geometry.pano_optics import capture_times
from omnimocap.data.skeletons import SIDES
from omnimocap.geometry.resample import interpolate_positions, interpolate_rotations
from omnimocap.hands.estimator import Detections, HandObservation, ViewRequest
from omnimocap.hands.sim_field import SmoothNoise, box_size_px, field_observer, image_speed_px_s, native_width

WILOR_FOCAL = 5000.0
WILOR_CROP = 256.0
BOX_RESCALE = 2.0


# The field errors' track (hands/sim_field.py SmoothNoise): global orientation (3), finger
# rotations (15x3), 3D joints (21x3), 2D keypoints (21x2), hand size (1).
_ERROR_SPLIT = (3, 45, 63, 42, 1)
_ERROR_DIM = sum(_ERROR_SPLIT)

# A request is for the true person whose wrist lies this close to its predicted wrist (metres).
MATCH_RADIUS_M = 0.3


class SimHandObserver:
    """HandEstimator backend ``sim`` over a simulated session's ``truth/`` (capture/truth.py)."""

    name = "sim"
    needs_images = False

    def __init__(self, session_dir: str | Path, noise_mm: float = 0.0, noise_deg: float = 0.0,
                 dropout: float = 0.0, seed: int = 0):
        truth = open_truth(session_dir, fix="use --hands wilor, or simulate a session with `omnimocap simulate`")
        # kept as stored (the 240 Hz hand poses are float32): each request converts only the few
        # samples it interpolates from, so a long session's truth is not held twice
        d = truth.motion(("t_session", "hand_global_R", "hand_pose", "hand_betas", "hand_joints", "hand_visible",
                          "hand_root_rest", "pano_frame_t_session"))
        self._t = d["t_session"]
        self._R_hand = d["hand_global_R"]
        self._pose = d["hand_pose"]
        self._betas = d["hand_betas"].astype(np.float64)
        self._joints = d["hand_joints"]
        self._visible = d["hand_visible"]
        self._root = d["hand_root_rest"].astype(np.float64)
        self._frame_t = d["pano_frame_t_session"]
        T_world_pano = truth.rig().pose("pano")
        self._R_pano_world = T_world_pano[:3, :3].T
        self._pano_centre = T_world_pano[:3, 3]
        self.noise_mm = float(noise_mm)
        self.noise_deg = float(noise_deg)
        self.dropout = float(dropout)
        self._rng = np.random.default_rng(seed)
        self.seed = int(seed)
        self.optics = truth.pano_optics()
        realism = truth.realism() if (truth.dir / REALISM_FILE).is_file() else None
        explicit = self.noise_mm > 0 or self.noise_deg > 0 or self.dropout > 0
        self.field_observer = field_observer(realism)
        self.field = None if explicit or self.field_observer is None else self.field_observer.hands
        self.width_px = native_width(session_dir) if self.field_observer is not None else 0.0
        if self.field is not None:
            self._tracks = SmoothNoise(self.seed, _ERROR_DIM, self.field.corr_s)

    @property
    def num_people(self) -> int:
        return int(self._joints.shape[0])

    @property
    def frame_times(self) -> np.ndarray:
        """True session time (F,) of every pano frame."""
        return self._frame_t

    def to_pano(self, points_world: np.ndarray) -> np.ndarray:
        """World points (...,3) in the true panorama camera frame."""
        return (points_world - self._pano_centre) @ self._R_pano_world.T

    def wrist_pano(self, person: int, side: str, t_session) -> np.ndarray:
        """The true wrist (...,3) of (person, side) in the panorama frame at session times
        ``t_session`` (a scalar or an array, seconds)."""
        s = SIDES.index(side)
        t = np.atleast_1d(np.asarray(t_session, dtype=np.float64))
        i0 = int(np.searchsorted(self._t, t.min()))
        i1 = int(np.searchsorted(self._t, t.max()))
        win = slice(max(0, i0 - 3), min(len(self._t), i1 + 3))
        wrist = interpolate_positions(self._t[win], self._joints[person, win, s, 0], t.ravel())
        return self.to_pano(wrist).reshape(np.shape(t_session) + (3,))

    def capture_time(self, person: int, side: str, frame_index: int) -> float:
        """The session time (seconds) at which pano frame ``frame_index`` captured the hand
        (person, side): the time its wrist's row was exposed (the frame's time with a global
        shutter). One time serves the whole hand."""
        t_frame = float(self._frame_t[frame_index])
        if self.optics.readout_s == 0.0:
            return t_frame
        t, _ = capture_times(self.optics, t_frame, lambda t: self.wrist_pano(person, side, t))
        return float(t) if np.isfinite(t) else t_frame

    def apparent_shift_world(self, joints_world: np.ndarray, view_centre: np.ndarray | None = None) -> np.ndarray:
        """What the image adds to world points (...,3) (metres, world axes): minus the optical
        centre they are seen from. For a view cut from one lens (``view_centre``, the 360 camera
        frame, as ``ViewRequest.view_centre``) that lens's centre for every point; for the stitched
        frame the centre of the lens that shows each (``PanoOptics.apparent``), zero with one
        viewpoint."""
        if view_centre is not None:
            return np.broadcast_to(-np.asarray(view_centre, dtype=np.float64) @ self._R_pano_world,
                                   np.shape(joints_world)).copy()
        if self.optics.baseline_m == 0.0:
            return np.zeros_like(joints_world)
        apparent, _, _ = self.optics.apparent(self.to_pano(joints_world))
        return (apparent - self.to_pano(joints_world)) @ self._R_pano_world

    def detectability(self, person: int, side: str, t_capture: float, joints_world: np.ndarray,
                      view_centre: np.ndarray | None = None) -> tuple[float, float, bool]:
        """What a detector's misses depend on (hands/sim_field.py :class:`MissModel`) for the hand
        (person, side) with world joints ``joints_world`` (21,3) captured at ``t_capture``: its box
        side in native pixels as the stitched frame shows it, its blur length in native pixels
        (the wrist's image speed times the exposure) and whether its wrist lies in the seam's
        blend band or the stitch's blind strip."""
        seen = self.to_pano(joints_world + self.apparent_shift_world(joints_world, view_centre))
        box_px = float(box_size_px(seen, self.width_px))
        blur_px = 0.0
        if self.optics.exposure_s > 0:
            dt = 1.0 / 240.0
            w = self.wrist_pano(person, side, np.array([t_capture - dt / 2, t_capture + dt / 2]))
            w_seen, _, _ = self.optics.apparent(w)
            blur_px = float(image_speed_px_s(w_seen[0], w_seen[1], dt, self.width_px)) * self.optics.exposure_s
        _, _, shown = self.optics.apparent(self.to_pano(joints_world[0]))
        on_seam = bool(self.optics.in_blend(seen[0]) or not shown)
        return box_px, blur_px, on_seam

    def true_hand(self, person: int, side: str, t_session: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """The true hand at a session time: world rotation (3,3), finger rotations (15,3,3),
        world joints (21,3) and whether it is visible from the 360 camera."""
        s = SIDES.index(side)
        t = np.array([t_session])
        i = int(np.searchsorted(self._t, t_session))
        # The interpolants use at most two truth samples either side of t: resample from those
        # alone, so a request costs the same whatever the session's length (same result as the
        # whole track, ends included, since a window that reaches an end is cut there too).
        win = slice(max(0, i - 3), min(len(self._t), i + 3))
        t_win = self._t[win]
        joints = interpolate_positions(t_win, self._joints[person, win, s], t)[0]
        rots = np.concatenate([self._R_hand[person, win, s, None].astype(np.float64),
                               self._pose[person, win, s].astype(np.float64)], axis=1)
        R, ok = interpolate_rotations(t_win, rots, np.ones(len(t_win), dtype=bool), t)
        k = int(np.clip(i, 0, len(self._t) - 1))
        visible = bool(ok[0] and np.all(np.isfinite(joints)) and self._visible[person, k, s])
        return R[0, 0], R[0, 1:], joints, visible

    def _rotation_noise(self, n: int) -> np.ndarray:
        sigma = np.radians(self.noise_deg) / np.sqrt(3.0)
        return axis_angle_to_matrix(self._rng.normal(scale=sigma, size=(n, 3)))

    def _person_at(self, request: ViewRequest) -> int:
        """The true person whose wrist of the requested side lies nearest the request's predicted
        wrist (in the panorama frame), within :data:`MATCH_RADIUS_M`; -1 if none. The pipeline's
        person ids are body-tracking ids, not the simulation's person indices."""
        if request.predicted_wrist_view is None:
            return int(request.person_id)
        predicted = np.asarray(request.R_pano_view, dtype=np.float64) @ np.asarray(request.predicted_wrist_view)
        s = SIDES.index(request.side)
        k = int(np.clip(np.searchsorted(self._t, float(self._frame_t[request.frame_index])), 0, len(self._t) - 1))
        wrists = self.to_pano(self._joints[:, k, s, 0])
        d = np.linalg.norm(wrists - predicted, axis=-1)
        best = int(np.nanargmin(d)) if np.isfinite(d).any() else -1
        return best if best >= 0 and d[best] <= MATCH_RADIUS_M else -1

    def observe(self, request: ViewRequest) -> HandObservation | None:
        if not 0 <= request.frame_index < len(self._frame_t):
            return None
        person = self._person_at(request)
        if not 0 <= person < self._joints.shape[0]:
            return None
        if self.dropout > 0 and self._rng.random() < self.dropout:
            return None
        side = request.side
        t_capture = self.capture_time(person, side, request.frame_index)
        R_world_hand, pose, joints, visible = self.true_hand(person, side, t_capture)
        if not visible:
            return None
        if self.field is not None:
            return self._field_observe(request, person, t_capture, R_world_hand, pose, joints)
        if self.noise_mm > 0:
            joints = joints + self._rng.normal(scale=self.noise_mm / 1000.0, size=joints.shape)
        if self.noise_deg > 0:
            noise = self._rotation_noise(16)
            R_world_hand = R_world_hand @ noise[0]
            pose = pose @ noise[1:]
        return self._observation(request, person, side, R_world_hand, pose, joints,
                                 self.apparent_shift_world(joints, request.view_centre))

    def _field_observe(self, request: ViewRequest, person: int, t_capture: float, R_world_hand: np.ndarray,
                       pose: np.ndarray, joints: np.ndarray) -> HandObservation | None:
        """The field observer (hands/sim_field.py :class:`FieldHandModel`) on the true hand
        (person, requested side) captured at ``t_capture``."""
        model = self.field
        s = SIDES.index(request.side)
        draws = np.random.default_rng([self.seed, person, s, request.frame_index, 0xF1E1D]).random(5)
        shift = self.apparent_shift_world(joints, request.view_centre)
        if draws[0] < model.miss.probability(*self.detectability(person, request.side, t_capture, joints,
                                                                 request.view_centre)):
            return None
        side, observed_person = request.side, person
        if draws[2] < model.other_hand:
            other = self._close_hand(request, person, t_capture, joints + shift, model.close_ratio)
            if other is not None:
                observed_person, side = other
                R_world_hand, pose, joints, _ = self.true_hand(observed_person, side, t_capture)
                shift = self.apparent_shift_world(joints, request.view_centre)
        if draws[3] < model.false_hand:
            shift = shift + self._false_offset_world(request, joints + shift, draws[4])
        is_right = (side == "right") != bool(draws[1] < model.flip)
        errors = self._tracks((observed_person, SIDES.index(side)), float(self._frame_t[request.frame_index]))
        return self._observation(request, observed_person, side, R_world_hand, pose, joints, shift,
                                 is_right=is_right, errors=errors)

    def _close_hand(self, request: ViewRequest, person: int, t_capture: float, joints_seen: np.ndarray,
                    close_ratio: float) -> tuple[int, str] | None:
        """The other hand (person, side) nearest this one in the request's view, when its centre lies
        within ``close_ratio`` WiLoR box sides of this hand's centre; None otherwise."""
        R_view_world = np.asarray(request.R_pano_view, dtype=np.float64).T @ self._R_pano_world
        cam = request.camera

        def centre_px(joints_world):
            v = (joints_world - self._pano_centre) @ R_view_world.T
            if np.any(v[:, 2] <= 0.05):
                return None, 0.0
            kp = cam.project(v)
            return 0.5 * (kp.min(axis=0) + kp.max(axis=0)), BOX_RESCALE * float(np.max(kp.max(axis=0) - kp.min(axis=0)))

        c0, side_px = centre_px(joints_seen)
        if c0 is None:
            return None
        best, best_d = None, close_ratio * side_px
        for p in range(self.num_people):
            for side in SIDES:
                if p == person and side == request.side:
                    continue
                _, _, other, visible = self.true_hand(p, side, t_capture)
                if not visible:
                    continue
                c, _ = centre_px(other + self.apparent_shift_world(other, request.view_centre))
                if c is not None and np.linalg.norm(c - c0) < best_d:
                    best, best_d = (p, side), float(np.linalg.norm(c - c0))
        return best

    def _false_offset_world(self, request: ViewRequest, joints_seen: np.ndarray, u: float) -> np.ndarray:
        """World offset (3,) that moves a seen hand to a false place in the request's view: a
        direction drawn from ``u`` in [0, 1), a third to half the view's width away, same depth."""
        R_view_world = np.asarray(request.R_pano_view, dtype=np.float64).T @ self._R_pano_world
        depth = float(((joints_seen[0] - self._pano_centre) @ R_view_world.T)[2])
        cam = request.camera
        angle = 2 * np.pi * u
        dist_px = cam.width * (1 / 3 + u / 6)
        offset_view = np.array([np.cos(angle) * dist_px * depth / cam.fx, np.sin(angle) * dist_px * depth / cam.fy, 0.0])
        return offset_view @ R_view_world

    def _observation(self, request: ViewRequest, person: int, side: str, R_world_hand: np.ndarray, pose: np.ndarray,
                     joints: np.ndarray, shift_world: np.ndarray, is_right: bool | None = None,
                     errors: np.ndarray | None = None) -> HandObservation | None:
        """WiLoR's report (see the module docstring) of the hand (person, side) with world rotation
        ``R_world_hand``, finger rotations ``pose`` and world joints ``joints`` (21,3) (metres),
        seen displaced by ``shift_world`` (21,3) (the stitch's parallax, a false place), with
        handedness ``is_right`` (the side's when None) and the field errors ``errors`` (the
        :class:`SmoothNoise` track's value; none when None)."""
        s = SIDES.index(side)
        is_right = side == "right" if is_right is None else is_right
        R_view_world = np.asarray(request.R_pano_view, dtype=np.float64).T @ self._R_pano_world
        joints_view = (joints + shift_world - self._pano_centre) @ R_view_world.T
        cam = request.camera
        size = float(cam.width)
        if joints_view[0, 2] <= 0.05:
            return None
        kp2d = cam.project(joints_view)
        if not (0 <= kp2d[0, 0] < cam.width and 0 <= kp2d[0, 1] < cam.height):
            return None
        root = self._root[person, s]
        relative = joints - joints[0]
        lo, hi = kp2d.min(axis=0), kp2d.max(axis=0)
        centre = 0.5 * (lo + hi)
        side_px = BOX_RESCALE * float(np.max(hi - lo))
        scale_error = 1.0
        notes = ["simulated observer: ground truth"]
        if errors is not None:
            model = self.field
            e_orient, e_fingers, e_joints, e_kp, e_scale = np.split(errors, np.cumsum(_ERROR_SPLIT)[:-1])
            E = axis_angle_to_matrix(np.radians(model.orient_deg) / np.sqrt(3.0) * e_orient)
            relative = relative @ (R_world_hand @ E @ R_world_hand.T).T
            R_world_hand = R_world_hand @ E
            pose = pose @ axis_angle_to_matrix(np.radians(model.finger_deg) / np.sqrt(3.0) * e_fingers.reshape(15, 3))
            relative = relative + model.joint_mm / 1000.0 / np.sqrt(3.0) * e_joints.reshape(21, 3)
            kp2d = kp2d + model.keypoint_frac * side_px * e_kp.reshape(21, 2)
            scale_error = float(np.exp(model.scale * e_scale[0]))
            notes = ["simulated observer: field errors"]
        keypoints_3d = scale_error * (relative @ R_view_world.T + root)
        box = np.concatenate([centre - side_px / 2, centre + side_px / 2])
        # WiLoR's full-image camera for this view: the MANO origin on its seen pixel and scale; a
        # hand reported too large by a factor is placed that much further (its depth comes from
        # the apparent size).
        origin_view = joints_view[0] - root
        f = WILOR_FOCAL / WILOR_CROP * size
        f_view = 0.5 * (cam.fx + cam.fy)
        origin_px = cam.project(origin_view)
        tz = origin_view[2] * f / f_view
        T = np.array([(origin_px[0] - size / 2) * tz / f, (origin_px[1] - size / 2) * tz / f, tz])
        if scale_error != 1.0:
            T = scale_error * T
        scale = 2 * f / (side_px * T[2])
        bs = side_px * scale
        sign = 1.0 if is_right else -1.0
        cam_crop = np.array([scale, sign * (T[0] - 2 * (centre[0] - size / 2) / bs), T[1] - 2 * (centre[1] - size / 2) / bs])
        return HandObservation(
            is_right=is_right,
            global_orient=R_view_world @ R_world_hand,
            hand_pose=pose,
            betas=self._betas[person, s].copy(),
            keypoints_3d=keypoints_3d,
            keypoints_2d=kp2d,
            box_xyxy=box,
            cam_crop=cam_crop,
            cam_t_view=T,
            confidence=1.0,
            notes=notes,
        )

    def estimate(self, requests: Sequence[ViewRequest]) -> list[HandObservation | None]:
        return [self.observe(r) for r in requests]


class SimViewDetector:
    """A simulated hand *detector* for the panorama's calibration views (see
    ``calibration/pano_hands.py``): the boxes a detector would find in each view, from a simulated
    session's ``truth/``, so that the detection path (views, box centres to bearings, merging,
    association, solving) runs without network weights. It never looks at the images.

    A hand visible from the 360 camera (``hand_visible``) gives, in every view that holds the centre
    of its box, the box of its 21 true joints padded by ``pad`` of its size on each side (clipped to
    the image; dropped when less than half of it is inside), with the detector's faults drawn once
    per frame and hand so that all views of a frame agree: the box centre moves by ``noise_deg``
    (standard deviation per image axis, as an angle), the side is swapped with probability
    ``swap``, the hand is missed with probability ``miss``; each view also reports a false hand
    anywhere in it with probability ``false_rate``. These are the ideal-level faults.

    The detector sees each hand where the stitched frame shows it, when its wrist's row was exposed
    (:meth:`SimHandObserver.capture_time`, :meth:`SimHandObserver.apparent_shift_world`). On a field
    session (``truth/realism.json`` ``"observer"``) it also misses hands by box size, blur and seam
    and draws a hand's box on another hand close to it (hands/sim_field.py ``hand_detector``), drawn
    per frame and hand like the faults above.
    """

    needs_images = False

    def __init__(self, session_dir: str | Path, noise_deg: float = 0.5, swap: float = 0.05, miss: float = 0.1,
                 false_rate: float = 0.02, pad: float = 0.15, seed: int = 0):
        self._truth = SimHandObserver(session_dir)
        self.noise_deg, self.swap, self.miss, self.false_rate, self.pad = noise_deg, swap, miss, false_rate, pad
        self.seed = seed

    def _hands(self, frame_index: int) -> list[tuple[np.ndarray, bool, np.ndarray]]:
        """(joints in the pano frame (21,3) as the stitched frame shows them, detected side
        is_right, centre noise (2,) radians) of the hands the detector finds in this frame, each
        captured when its wrist's row was exposed."""
        truth = self._truth
        rng = np.random.default_rng([self.seed, frame_index])
        people = truth.num_people
        draws = rng.random((people, len(SIDES), 2))
        noise = rng.normal(scale=np.radians(self.noise_deg), size=(people, len(SIDES), 2))
        out = []
        if not 0 <= frame_index < len(truth.frame_times):
            return out
        field = truth.field_observer.hand_detector if truth.field_observer is not None else None
        field_draws = np.random.default_rng([self.seed, frame_index, 0xF1E1D]).random((people, len(SIDES), 2))
        seen = {}
        for p in range(people):
            for s, side in enumerate(SIDES):
                t_capture = truth.capture_time(p, side, frame_index)
                _, _, joints, visible = truth.true_hand(p, side, t_capture)
                if not visible or draws[p, s, 0] < self.miss:
                    continue
                if field is not None and field_draws[p, s, 0] < field.miss.probability(
                        *truth.detectability(p, side, t_capture, joints)):
                    continue
                seen[p, s] = truth.to_pano(joints + truth.apparent_shift_world(joints))
        for (p, s), joints in seen.items():
            if field is not None and field_draws[p, s, 1] < field.other_hand:
                joints = _close_hand_pano(joints, [j for key, j in seen.items() if key != (p, s)], field.close_ratio)
            is_right = (SIDES[s] == "right") != (draws[p, s, 1] < self.swap)
            out.append((joints, is_right, noise[p, s]))
        return out

    def detect_views(self, frame_index: int, pano_bgr, views) -> list[Detections]:
        hands = self._hands(frame_index)
        rng = np.random.default_rng([self.seed, frame_index, 1])
        out = []
        for view in views:
            size = view.size
            boxes, right = [], []
            for joints, is_right, noise in hands:
                d_view = joints @ view.R_pano_view
                if np.any(d_view[:, 2] <= 0.05):
                    continue
                kp = view.camera.project(d_view)
                lo, hi = kp.min(axis=0), kp.max(axis=0)
                lo, hi = lo - self.pad * (hi - lo), hi + self.pad * (hi - lo)
                shift = noise * np.array([view.camera.fx, view.camera.fy])
                lo, hi = lo + shift, hi + shift
                c = 0.5 * (lo + hi)
                if not (0 <= c[0] < size and 0 <= c[1] < size):
                    continue
                clo, chi = np.clip(lo, 0, size - 1), np.clip(hi, 0, size - 1)
                if np.prod(chi - clo) < 0.5 * np.prod(hi - lo):
                    continue
                boxes.append(np.r_[clo, chi])
                right.append(is_right)
            if rng.random() < self.false_rate:
                w = rng.uniform(0.05, 0.15) * size
                x0, y0 = rng.uniform(0, size - w, size=2)
                boxes.append(np.array([x0, y0, x0 + w, y0 + w]))
                right.append(bool(rng.random() < 0.5))
            n = len(boxes)
            out.append(Detections(np.array(boxes).reshape(n, 4), np.array(right, dtype=bool), np.full(n, 0.9)))
        return out


def _close_hand_pano(joints: np.ndarray, others: list[np.ndarray], close_ratio: float) -> np.ndarray:
    """The joints (21,3) (pano frame) of the hand among ``others`` nearest ``joints``'s hand when
    their centres' directions are less than ``close_ratio`` times its angular box side apart;
    ``joints`` otherwise."""
    def direction(j):
        c = j.mean(axis=0)
        return c / np.linalg.norm(c)

    # an equirect frame 2 pi pixels wide measures the box side in radians
    best, best_angle = joints, close_ratio * float(box_size_px(joints, 2 * np.pi))
    for other in others:
        angle = float(np.arccos(np.clip(direction(joints) @ direction(other), -1.0, 1.0)))
        if angle < best_angle:
            best, best_angle = other, angle
    return best
