"""What a real Azure Kinect body tracker (k4abt) gets wrong, injected into simulated body tracking.

The simulation models the 32 k4abt joints from the true SMPL-X and MANO joints
(sim/body_tracking.py: ``kinect_joints_world``). A real k4abt does not report those points: its
joints are defined by its own training data, its hand joints are far noisier than its body joints,
it mirrors people who turn their back to it, it loses and renames bodies and it drops them. With
``SimConfig.realism == "field"`` (the default) every Kinect's tracks go through
:func:`apply_k4abt_errors`; with ``"ideal"`` none of this happens (the body ids are the person
indices 0..P-1 and the joints are the modelled ones plus the simulation's ordinary noise), so the
geometry can be measured exactly. What follows is per Kinect; "frames" are that Kinect's frame
indices (rows of its ``bodies_<serial>.json``), times are frames / 30 fps.

Geometry (both realism levels, :func:`kinect_geometry`, computed from the truth):

- *facing away*: the person's forward direction (the pelvis's +z, horizontal) points away from the
  Kinect (angle to the Kinect over 90 deg);
- *hidden joints*: the line of sight from the Kinect to a joint passes through another person's body
  (capsules: pelvis-neck :data:`TORSO_RADIUS_M`, neck-head, thighs, shins) in front of it; such joints
  are reported with LOW confidence at both levels;
- *crossings*: frames where two people's pelvises change their left/right order as the Kinect sees
  them (horizontal bearing in the depth frame) while within :data:`CROSSING_MAX_DEG` of each other.

Error classes (``field`` only), with the parameters of :class:`K4abtErrorModel`:

1. **bias** (joint-definition bias): a constant offset per person and joint, drawn in the frame of
   the joint's body segment (the joint's reported orientation), RMS per axis ``bias_core_mm`` for
   :data:`CORE_JOINTS` and ``bias_other_mm`` for the rest; the variance is split evenly between a
   part shared by all Kinects of that person (drawn once per session) and a part of each Kinect.
   On top of it, :data:`ANATOMICAL_OFFSETS_MM`: where k4abt's joint centres sit systematically
   apart from SMPL-X's (the same for everyone).
2. **hand_noise**: extra first-order autoregressive noise with a correlation time of
   ``hand_noise_corr_frames`` frames, standard deviation per axis ``wrist_noise_mm`` (WRIST) and
   ``hand_noise_mm`` (HAND, HANDTIP, THUMB), times ``far_gain`` beyond ``far_m`` from the Kinect;
   plus runs (``collapse_run_s``, covering about ``collapse_fraction`` of the time per hand) in which
   HANDTIP and THUMB are reported at the HAND joint.
3. **mirror** (front/back confusion): while the person faces away, runs of ``mirror_run_s``
   covering about ``mirror_fraction`` of that time (cut short when the person turns back) in which
   every LEFT/RIGHT joint pair is exchanged (positions and orientations; the confidences stay those
   of the slots, as k4abt gives no sign of it).
4. **identity**: body ids start at 1 and grow with gaps (``id_gap_max``); a body with at least
   ``lost_hidden_fraction`` of its joints hidden by another person is lost, and a lost body (hidden or
   dropped out) comes back under a new id with probability ``new_id_after_hidden`` /
   ``new_id_after_dropout``; at each crossing the two people's ids are exchanged with probability
   ``swap_per_crossing``.
5. **dropout**: whole bodies missing for runs of ``dropout_run_s``, starting at ``dropout_rate_hz``
   per second, ``dropout_rate_partly_hidden_hz`` while some of the body (over
   ``partly_hidden_fraction`` of its joints) is hidden by another person.

``truth/realism.json`` (capture/truth.py) records the level, the model's parameters and, per
Kinect serial, per class: the rates and magnitudes actually drawn and the frames affected (as
``[first, last]`` inclusive runs per person), plus the geometry above; the ``identity`` section
lists every body id's ``segments`` (person, first and last frame), from which
:func:`body_person_map` rebuilds which person each reported body is in each frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.signal import lfilter

from omnimocap.capture.bodies import BodyTrack
from omnimocap.data.skeletons import KINECT_INDEX, KINECT_JOINTS
from omnimocap.geometry.resample import mask_runs

REALISM_LEVELS = ("field", "ideal")
FPS = 30.0
CORE_JOINTS = ("PELVIS", "SPINE_NAVEL", "SPINE_CHEST", "NECK", "CLAVICLE_LEFT", "CLAVICLE_RIGHT",
               "SHOULDER_LEFT", "SHOULDER_RIGHT", "HIP_LEFT", "HIP_RIGHT")
WRIST_JOINTS = ("WRIST_LEFT", "WRIST_RIGHT")
HAND_JOINTS = tuple(f"{name}_{side}" for side in ("LEFT", "RIGHT") for name in ("HAND", "HANDTIP", "THUMB"))
# Systematic offsets of k4abt's joint centres from the SMPL-X-based ones, in the segment frame
# (SMPL-X canonical axes: x to the person's left, y up, z forward), millimetres: k4abt's hips sit
# higher and wider (nearer the iliac crests), its shoulders higher (on the acromion side), its
# neck further forward. The same for every person and Kinect.
ANATOMICAL_OFFSETS_MM = {
    "HIP_LEFT": (8.0, 12.0, 0.0), "HIP_RIGHT": (-8.0, 12.0, 0.0),
    "SHOULDER_LEFT": (4.0, 10.0, 0.0), "SHOULDER_RIGHT": (-4.0, 10.0, 0.0),
    "NECK": (0.0, 0.0, 10.0),
}
MIRROR_PAIRS = tuple((KINECT_INDEX[n], KINECT_INDEX[n[:-len("LEFT")] + "RIGHT"])
                     for n in KINECT_JOINTS if n.endswith("_LEFT"))
# Capsules of a person's body that hide what is behind it: (joint a, joint b, radius m).
TORSO_RADIUS_M = 0.15
BODY_CAPSULES = (("PELVIS", "NECK", TORSO_RADIUS_M), ("NECK", "HEAD", 0.09), ("HIP_LEFT", "KNEE_LEFT", 0.08),
                 ("HIP_RIGHT", "KNEE_RIGHT", 0.08), ("KNEE_LEFT", "ANKLE_LEFT", 0.06),
                 ("KNEE_RIGHT", "ANKLE_RIGHT", 0.06))
CROSSING_MAX_DEG = 15.0
GEOMETRY_CHUNK = 512  # frames per block of the occlusion test


@dataclass(frozen=True)
class K4abtErrorModel:
    """Parameters of the error classes (see the module docstring). Millimetres, seconds, Hz."""

    bias_core_mm: float = 15.0
    bias_other_mm: float = 8.0
    bias_shared_variance: float = 0.5
    wrist_noise_mm: float = 10.0
    hand_noise_mm: float = 25.0
    hand_noise_corr_frames: float = 5.0
    far_m: float = 2.0
    far_gain: float = 2.0
    collapse_fraction: float = 0.15
    collapse_run_s: tuple[float, float] = (0.3, 1.2)
    mirror_fraction: float = 0.3
    mirror_run_s: tuple[float, float] = (0.5, 1.5)
    dropout_run_s: tuple[float, float] = (0.2, 0.7)
    dropout_rate_hz: float = 0.05
    dropout_rate_partly_hidden_hz: float = 0.8
    partly_hidden_fraction: float = 0.2
    lost_hidden_fraction: float = 0.5
    new_id_after_hidden: float = 0.5
    new_id_after_dropout: float = 0.25
    swap_per_crossing: float = 1.0 / 3.0
    id_gap_max: int = 3


@dataclass
class KinectGeometry:
    """What one Kinect sees of the true scene (P people, N frames): ``facing_away`` (P,N) bool,
    ``hidden`` (P,N,32) bool joints hidden by another person, ``crossings`` a list of (frame, p, q)."""

    facing_away: np.ndarray
    hidden: np.ndarray
    crossings: list[tuple[int, int, int]]

    @property
    def hidden_fraction(self) -> np.ndarray:
        """(P,N) fraction of the person's joints hidden by another person."""
        return self.hidden.mean(axis=-1)


def kinect_geometry(pos_world: np.ndarray, pelvis_R_world: np.ndarray, kinect_centre: np.ndarray) -> KinectGeometry:
    """The truth's geometry seen from one Kinect.

    ``pos_world`` (P,N,32,3) the modelled k4abt joints (world, metres), ``pelvis_R_world`` (P,N,3,3)
    the pelvis's world rotation (SMPL-X canonical axes: +z forward), ``kinect_centre`` (3,) the
    depth camera's centre (world). World y is up."""
    P, N, J = pos_world.shape[:3]
    pelvis = pos_world[:, :, KINECT_INDEX["PELVIS"]]
    forward = pelvis_R_world[..., :, 2] * np.array([1.0, 0.0, 1.0])
    to_kinect = (kinect_centre - pelvis) * np.array([1.0, 0.0, 1.0])
    facing_away = np.sum(forward * to_kinect, axis=-1) < 0.0
    hidden = np.zeros((P, N, J), dtype=bool)
    f = np.linspace(0.25, 0.97, 28)
    rel = pos_world - kinect_centre  # (P,N,J,3)
    for lo in range(0, N, GEOMETRY_CHUNK):  # in chunks of frames, to bound the memory
        n = slice(lo, lo + GEOMETRY_CHUNK)
        for q in range(P):
            for a_name, b_name, radius in BODY_CAPSULES:
                a = rel[q, n, KINECT_INDEX[a_name]]  # (n,3)
                ab = rel[q, n, KINECT_INDEX[b_name]] - a
                for p in range(P):
                    if p == q:
                        continue
                    ray = f[:, None, None, None] * rel[p, n][None]  # (S,n,J,3)
                    s = np.clip(np.sum((ray - a[None, :, None]) * ab[None, :, None], axis=-1)
                                / np.sum(ab * ab, axis=-1)[None, :, None], 0.0, 1.0)
                    d = np.linalg.norm(ray - (a[None, :, None] + s[..., None] * ab[None, :, None]), axis=-1)
                    hidden[p, n] |= np.any(d < radius, axis=0)
    bearing = np.arctan2(pelvis[..., 0] - kinect_centre[0], pelvis[..., 2] - kinect_centre[2])  # world azimuth
    crossings = []
    for p in range(P):
        for q in range(p + 1, P):
            diff = np.angle(np.exp(1j * (bearing[p] - bearing[q])))
            flips = np.flatnonzero((np.sign(diff[1:]) != np.sign(diff[:-1])) & (np.abs(diff[1:]) < np.radians(CROSSING_MAX_DEG)))
            crossings += [(int(n) + 1, p, q) for n in flips]
    crossings.sort()
    return KinectGeometry(facing_away, hidden, crossings)


def draw_shared_bias(rng: np.random.Generator, people: int, model: K4abtErrorModel = K4abtErrorModel()) -> np.ndarray:
    """(P,32,3) the part of the joint-definition bias shared by all Kinects, segment frame, metres."""
    return _bias_scale(model)[None, :, None] * np.sqrt(model.bias_shared_variance) * rng.normal(size=(people, len(KINECT_JOINTS), 3))


def _bias_scale(model: K4abtErrorModel) -> np.ndarray:
    return np.array([model.bias_core_mm if n in CORE_JOINTS else model.bias_other_mm for n in KINECT_JOINTS]) / 1000.0


def _anatomical_offsets() -> np.ndarray:
    out = np.zeros((len(KINECT_JOINTS), 3))
    for name, v in ANATOMICAL_OFFSETS_MM.items():
        out[KINECT_INDEX[name]] = np.asarray(v) / 1000.0
    return out


def _random_runs(rng: np.random.Generator, allowed: np.ndarray, fraction: float, run_s: tuple[float, float]) -> np.ndarray:
    """(N,) bool: runs of ``run_s`` seconds inside the True stretches of ``allowed`` (N,), cut at
    their ends, separated by exponential gaps so that they cover about ``fraction`` of them."""
    out = np.zeros(len(allowed), dtype=bool)
    mean_run = 0.5 * (run_s[0] + run_s[1]) * FPS
    mean_gap = mean_run * (1.0 - fraction) / max(fraction, 1e-9)
    for first, last in mask_runs(allowed):
        n = first + int(rng.uniform(0.0, 1.0) * rng.exponential(mean_gap))
        while n <= last:
            length = int(round(rng.uniform(*run_s) * FPS))
            out[n: min(n + length, last + 1)] = True
            n += length + int(round(rng.exponential(mean_gap)))
    return out


def _dropout_runs(rng: np.random.Generator, rate_hz: np.ndarray, run_s: tuple[float, float]) -> np.ndarray:
    """(N,) bool: runs of ``run_s`` seconds that start at ``rate_hz`` (N,) per second."""
    starts = rng.random(len(rate_hz)) < rate_hz / FPS
    lengths = np.round(rng.uniform(*run_s, size=len(rate_hz)) * FPS).astype(int)
    out = np.zeros(len(rate_hz), dtype=bool)
    for n in np.flatnonzero(starts):
        out[n: n + lengths[n]] = True
    return out


def _ar_noise(rng: np.random.Generator, shape: tuple[int, ...], corr_frames: float) -> np.ndarray:
    """Unit-variance first-order autoregressive noise along axis 1 of ``shape`` with correlation
    time ``corr_frames`` frames."""
    rho = float(np.exp(-1.0 / corr_frames))
    drive = rng.normal(size=shape) * np.sqrt(1.0 - rho**2)
    first = rng.normal(size=shape[:1] + shape[2:])
    out, _ = lfilter([1.0], [1.0, -rho], drive, axis=1, zi=(rho * first)[:, None])
    return out


def apply_k4abt_errors(pos: np.ndarray, quats: np.ndarray, conf: np.ndarray, R_kinect_segment: np.ndarray,
                       geometry: KinectGeometry, shared_bias: np.ndarray, rng: np.random.Generator,
                       model: K4abtErrorModel = K4abtErrorModel()) -> tuple[dict[int, BodyTrack], dict]:
    """One Kinect's tracks with the error classes injected, and their record for ``realism.json``.

    ``pos`` (P,N,32,3) joints in the depth frame (metres, NaN where the body is missing) with the
    simulation's ordinary noise, ``quats`` (P,N,32,4) their orientations (w,x,y,z), ``conf`` (P,N,32)
    their k4abt confidences, ``R_kinect_segment`` (P,N,32,3,3) the true segment rotations in the depth
    frame (the bias's frame), ``shared_bias`` (P,32,3) from :func:`draw_shared_bias`. Returns
    ``{body_id: BodyTrack}`` (ids from 1, with gaps) and the record (see the module docstring).
    The classes draw from ``rng`` in the order of the module docstring."""
    pos = pos.copy()
    quats = quats.copy()
    record = {"bias": _inject_bias(pos, R_kinect_segment, shared_bias, rng, model),
              "hand_noise": _inject_hand_noise(pos, rng, model),
              "mirror": _inject_mirror(pos, quats, geometry, rng, model)}
    owner, swaps, lost_hidden, dropped = _assign_body_ids(pos, geometry, rng, model)
    tracks, segments = _tracks_by_body_id(owner, pos, quats, conf)
    P, N = owner.shape
    record["identity"] = {
        "swap_per_crossing": model.swap_per_crossing, "lost_hidden_fraction": model.lost_hidden_fraction,
        "new_id_after_hidden": model.new_id_after_hidden, "new_id_after_dropout": model.new_id_after_dropout,
        "body_ids": sorted(tracks), "segments": sorted(segments, key=lambda s: (s["first"], s["body_id"])),
        "crossings": [{"frame": n, "people": [p, q]} for n, p, q in geometry.crossings], "swaps": swaps,
        "lost_hidden_runs": {str(p): mask_runs(lost_hidden[p]) for p in range(P)},
    }
    record["dropout"] = {
        "run_s": list(model.dropout_run_s), "rate_hz": model.dropout_rate_hz,
        "rate_partly_hidden_hz": model.dropout_rate_partly_hidden_hz,
        "measured_rate_hz": {str(p): len(mask_runs(dropped[p])) / (N / FPS) for p in range(P)},
        "runs_per_person": {str(p): mask_runs(dropped[p]) for p in range(P)},
    }
    return tracks, record


def _inject_bias(pos: np.ndarray, R_kinect_segment: np.ndarray, shared_bias: np.ndarray, rng: np.random.Generator,
                 model: K4abtErrorModel) -> dict:
    """1. joint-definition bias, constant in the segment frame, added to ``pos`` in place; its record."""
    P, _, J = pos.shape[:3]
    own = _bias_scale(model)[None, :, None] * np.sqrt(1.0 - model.bias_shared_variance) * rng.normal(size=(P, J, 3))
    bias = shared_bias + own + _anatomical_offsets()[None]
    pos += np.einsum("pnjab,pjb->pnja", R_kinect_segment, bias)
    return {
        "rms_mm_per_axis": {"core": model.bias_core_mm, "other": model.bias_other_mm},
        "core_joints": list(CORE_JOINTS), "shared_variance": model.bias_shared_variance,
        "anatomical_offsets_mm": ANATOMICAL_OFFSETS_MM,
        "drawn_rms_mm_per_axis": float(1000.0 * np.sqrt(np.mean((shared_bias + own) ** 2))),
        "offsets_mm_segment_frame": np.round(1000.0 * bias, 2).tolist(),
        "frames": "all",
    }


def _inject_hand_noise(pos: np.ndarray, rng: np.random.Generator, model: K4abtErrorModel) -> dict:
    """2. noisier wrists and hands, doubled far away; HANDTIP and THUMB collapse onto HAND. In place
    on ``pos``; returns the record."""
    P, N = pos.shape[:2]
    idx = [KINECT_INDEX[n] for n in WRIST_JOINTS + HAND_JOINTS]
    sigma = np.array([model.wrist_noise_mm] * len(WRIST_JOINTS) + [model.hand_noise_mm] * len(HAND_JOINTS)) / 1000.0
    far = np.linalg.norm(pos[:, :, idx], axis=-1) > model.far_m
    gain = np.where(far, model.far_gain, 1.0)
    noise = _ar_noise(rng, (P, N, len(idx), 3), model.hand_noise_corr_frames)
    pos[:, :, idx] += sigma[None, None, :, None] * gain[..., None] * noise
    collapse_rec = {}
    for p in range(P):
        for side in ("LEFT", "RIGHT"):
            hand = KINECT_INDEX[f"HAND_{side}"]
            mask = _random_runs(rng, np.ones(N, dtype=bool), model.collapse_fraction, model.collapse_run_s)
            for name in ("HANDTIP", "THUMB"):
                pos[p, mask, KINECT_INDEX[f"{name}_{side}"]] = pos[p, mask, hand]
            collapse_rec.setdefault(str(p), {})[side.lower()] = mask_runs(mask)
    return {
        "std_mm_per_axis": {"wrist": model.wrist_noise_mm, "hand": model.hand_noise_mm},
        "correlation_frames": model.hand_noise_corr_frames, "far_m": model.far_m, "far_gain": model.far_gain,
        "far_fraction": float(far.mean()),
        "frames": "all",
        "collapse": {"fraction": model.collapse_fraction, "run_s": list(model.collapse_run_s),
                     "runs_per_person": collapse_rec},
    }


def _inject_mirror(pos: np.ndarray, quats: np.ndarray, geometry: KinectGeometry, rng: np.random.Generator,
                   model: K4abtErrorModel) -> dict:
    """3. front/back confusion while facing away: LEFT/RIGHT pairs exchanged in place; the record."""
    mirror_rec = {}
    for p in range(pos.shape[0]):
        mask = _random_runs(rng, geometry.facing_away[p], model.mirror_fraction, model.mirror_run_s)
        for a, b in MIRROR_PAIRS:
            pos[p, mask, a], pos[p, mask, b] = pos[p, mask, b].copy(), pos[p, mask, a].copy()
            quats[p, mask, a], quats[p, mask, b] = quats[p, mask, b].copy(), quats[p, mask, a].copy()
        away = int(geometry.facing_away[p].sum())
        mirror_rec[str(p)] = {"runs": mask_runs(mask), "facing_away_frames": away,
                              "fraction_of_facing_away": float(mask.sum() / away) if away else 0.0}
    return {"fraction": model.mirror_fraction, "run_s": list(model.mirror_run_s), "per_person": mirror_rec}


def _assign_body_ids(pos: np.ndarray, geometry: KinectGeometry, rng: np.random.Generator,
                     model: K4abtErrorModel) -> tuple[np.ndarray, list[dict], np.ndarray, np.ndarray]:
    """4-5. drop-outs, losses behind other people, new ids, swaps at crossings: the body id of person
    p in frame n (P,N) (0: missing), the swaps made, and the frames (P,N) each person was lost behind
    others and dropped out."""
    P, N = pos.shape[:2]
    hidden_frac = geometry.hidden_fraction
    lost_hidden = hidden_frac >= model.lost_hidden_fraction
    dropped = np.zeros((P, N), dtype=bool)
    for p in range(P):
        rate = np.where(hidden_frac[p] > model.partly_hidden_fraction, model.dropout_rate_partly_hidden_hz,
                        model.dropout_rate_hz)
        dropped[p] = _dropout_runs(rng, rate, model.dropout_run_s)
    missing = lost_hidden | dropped | ~np.isfinite(pos).all(axis=-1).any(axis=-1)
    next_id = 1
    current = np.zeros(P, dtype=int)
    for p in range(P):
        current[p] = next_id
        next_id += 1 + int(rng.integers(0, model.id_gap_max + 1))
    crossing_at: dict[int, list[tuple[int, int]]] = {}
    for n, p, q in geometry.crossings:
        crossing_at.setdefault(n, []).append((p, q))
    swaps = []
    owner = np.zeros((P, N), dtype=int)
    for n in range(N):
        for p, q in crossing_at.get(n, ()):
            if rng.random() < model.swap_per_crossing:
                current[p], current[q] = current[q], current[p]
                swaps.append({"frame": n, "people": [p, q]})
        for p in range(P):
            if n > 0 and missing[p, n - 1] and not missing[p, n]:
                was_hidden = bool(lost_hidden[p, max(0, n - 1)])
                if rng.random() < (model.new_id_after_hidden if was_hidden else model.new_id_after_dropout):
                    current[p] = next_id
                    next_id += 1 + int(rng.integers(0, model.id_gap_max + 1))
            owner[p, n] = 0 if missing[p, n] else current[p]
    return owner, swaps, lost_hidden, dropped


def _tracks_by_body_id(owner: np.ndarray, pos: np.ndarray, quats: np.ndarray,
                       conf: np.ndarray) -> tuple[dict[int, BodyTrack], list[dict]]:
    """``{body_id: BodyTrack}`` from the owners (P,N) of :func:`_assign_body_ids`, and each id's
    ``segments`` (person, first and last frame)."""
    P, N = owner.shape
    tracks: dict[int, BodyTrack] = {}
    segments = []
    for body_id in sorted(set(owner[owner > 0].tolist())):
        track = BodyTrack.empty(N)
        for p in range(P):
            m = owner[p] == body_id
            if m.any():
                track.positions[m] = pos[p, m]
                track.orientations[m] = quats[p, m]
                track.confidences[m] = conf[p, m]
                segments += [{"body_id": body_id, "person": p, "first": a, "last": b} for a, b in mask_runs(m)]
        tracks[body_id] = track
    return tracks, segments


def geometry_record(geometry: KinectGeometry) -> dict:
    """The ``geometry`` section of a Kinect's record in ``realism.json``."""
    P = geometry.facing_away.shape[0]
    hidden = geometry.hidden_fraction
    return {
        "facing_away_fraction": {str(p): float(geometry.facing_away[p].mean()) for p in range(P)},
        "facing_away_runs": {str(p): mask_runs(geometry.facing_away[p]) for p in range(P)},
        "hidden_joint_fraction_mean": {str(p): float(hidden[p].mean()) for p in range(P)},
        "mostly_hidden_runs": {str(p): mask_runs(hidden[p] >= 0.5) for p in range(P)},
        "crossings": [{"frame": n, "people": [p, q]} for n, p, q in geometry.crossings],
    }


def ideal_tracks(pos: np.ndarray, quats: np.ndarray, conf: np.ndarray) -> dict[int, BodyTrack]:
    """``{p: BodyTrack}``: person p reported as body id p (the ``ideal`` level)."""
    return {p: BodyTrack(pos[p], quats[p], conf[p]) for p in range(pos.shape[0])}


def realism_record(level: str, kinects: dict[str, dict], model: K4abtErrorModel = K4abtErrorModel()) -> dict:
    """The content of ``truth/realism.json``: the level, the parameters and each Kinect's record."""
    return {
        "realism": level, "fps": FPS,
        "note": "frames are rows of each Kinect's bodies_<serial>.json; runs are [first, last] inclusive; "
                "people are the indices of truth/motion.npz; see sim/k4abt.py",
        "model": asdict(model) if level == "field" else None,
        "kinects": kinects,
    }


def body_person_map(realism: dict, serial: str, num_frames: int) -> dict[int, np.ndarray]:
    """``{body_id: (num_frames,) person index, -1 where the id is not reported}`` for Kinect
    ``serial`` from a ``realism.json`` dict; in ``ideal`` sessions body id p is person p throughout."""
    entry = realism["kinects"][serial]
    if realism["realism"] != "field":
        return {p: np.full(num_frames, p) for p in range(entry["people"])}
    out: dict[int, np.ndarray] = {}
    for seg in entry["identity"]["segments"]:
        m = out.setdefault(seg["body_id"], np.full(num_frames, -1))
        m[seg["first"]: seg["last"] + 1] = seg["person"]
    return out

