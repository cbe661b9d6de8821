"""Fusing the body-tracking skeletons of several Kinects into one skeleton per person.

Inputs are k4abt bodies already mapped into the world frame (y up, metres) and onto the session
clock (seconds): one :class:`BodyTrack` per (device, body id). The steps:

1. resample every track to common times (linear, no bridging of long gaps);
2. associate tracks across devices into people, by the distance of their left/right-symmetric
   torso joints (which a left/right labelling error cannot move);
3. resolve left/right swaps: k4abt assumes each body faces its camera, so a body seen from behind is
   reported with left and right exchanged. Per frame, the track whose face joints are the most
   confident (the device that sees the face) sets the labelling; every other track is compared with
   it joint by joint, directly and with left/right exchanged, and exchanged where that fits better
   (decisions median-filtered over time, since real swaps persist);
4. fuse each joint as a weighted mean: weight = k4abt confidence level weight x 1/sigma(distance)^2
   (depth noise grows with range) x a facing factor (a limb seen from behind is inferred, not seen).

"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import median_filter

from omnimocap.data.skeletons import KINECT_INDEX, KINECT_JOINTS
from omnimocap.geometry.resample import linear_brackets

NUM_JOINTS = len(KINECT_JOINTS)
# k4abt joint index -> the index of its mirror joint (LEFT <-> RIGHT); centre joints map to themselves.
LEFT_RIGHT = np.array([KINECT_INDEX[n.replace("LEFT", "#").replace("RIGHT", "LEFT").replace("#", "RIGHT")]
                       for n in KINECT_JOINTS])
# Joints on the body's midline: their positions do not depend on the left/right labelling.
MIDLINE = np.array([KINECT_INDEX[n] for n in ("PELVIS", "SPINE_NAVEL", "SPINE_CHEST", "NECK", "HEAD")])
FACE = np.array([KINECT_INDEX[n] for n in ("NOSE", "EYE_LEFT", "EAR_LEFT", "EYE_RIGHT", "EAR_RIGHT")])
SIDED = np.nonzero(LEFT_RIGHT != np.arange(NUM_JOINTS))[0]
# Weight of each k4abt confidence level (NONE, LOW = occluded and predicted, MEDIUM, HIGH).
LEVEL_WEIGHT = np.array([0.0, 0.15, 1.0, 1.0])
# Probability-like trust per level, for the fused confidence 1 - prod(1 - q).
LEVEL_TRUST = np.array([0.0, 0.3, 0.8, 0.95])
UP = np.array([0.0, 1.0, 0.0])


@dataclass
class BodyTrack:
    """One body of one Kinect: ``t`` (F,) session seconds, ``joints`` (F,32,3) world metres (NaN where
    missing), ``confidence`` (F,32) k4abt levels 0-3, ``sensor_position`` (3,) the depth camera's
    centre in the world."""

    device: str
    body_id: int
    t: np.ndarray
    joints: np.ndarray
    confidence: np.ndarray
    sensor_position: np.ndarray


@dataclass
class FusedPerson:
    """A fused person on common times ``t`` (T,): ``joints`` (T,32,3) world metres (NaN where no
    device saw the joint), ``confidence`` (T,32) in [0,1], the tracks used (indices into the input
    list) and, per track, the frames (T,) whose left/right labels were exchanged."""

    t: np.ndarray
    joints: np.ndarray
    confidence: np.ndarray
    tracks: list[int]
    swapped: dict[int, np.ndarray] = field(default_factory=dict)


def resample_track(track: BodyTrack, t: np.ndarray, max_gap_s: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Joints (T,32,3) linearly interpolated at ``t`` and confidence (T,32) (the lower of the two
    neighbouring frames); NaN / 0 outside the track and across gaps longer than ``max_gap_s``
    (:func:`omnimocap.geometry.resample.linear_brackets`)."""
    at = linear_brackets(track.t, t, max_gap_s)
    out = at.apply(track.joints)
    conf = np.zeros((len(at.ok), NUM_JOINTS), dtype=np.int64)
    conf[at.ok] = np.minimum(*at.neighbours(np.asarray(track.confidence)))
    out[conf == 0] = np.nan
    return out, conf


def associate(resampled: list[np.ndarray], devices: list[str], max_distance_m: float = 0.35,
              min_common_frames: int = 5) -> list[list[int]]:
    """Group tracks (each (T,32,3) on common times) into people. Two tracks of different devices join
    when the median distance of their midline joints over common frames is below ``max_distance_m``;
    greedy, closest pairs first; a group never holds two tracks of one device that overlap in time."""
    n = len(resampled)
    mid = [r[:, MIDLINE] for r in resampled]
    valid = [np.all(np.isfinite(m), axis=(1, 2)) for m in mid]
    pairs = []
    for a in range(n):
        for b in range(a + 1, n):
            if devices[a] == devices[b]:
                continue
            common = valid[a] & valid[b]
            if common.sum() < min_common_frames:
                continue
            d = np.median(np.linalg.norm(mid[a][common] - mid[b][common], axis=-1).mean(axis=-1))
            if d < max_distance_m:
                pairs.append((d, a, b))
    group = list(range(n))
    members = {i: [i] for i in range(n)}
    for _, a, b in sorted(pairs):
        ga, gb = group[a], group[b]
        if ga == gb:
            continue
        if any(devices[x] == devices[y] and np.any(valid[x] & valid[y]) for x in members[ga] for y in members[gb]):
            continue
        for m in members[gb]:
            group[m] = ga
        members[ga] += members.pop(gb)
    return [sorted(m) for m in members.values()]


def resolve_swaps(joints: list[np.ndarray], confidence: list[np.ndarray],
                  window: int = 9) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Make the left/right labelling of one person's tracks agree. Per frame the track with the most
    confident face joints is the reference (ties: the first); each other track is exchanged where the
    exchanged labelling is closer to the reference (median-filtered over ``window`` frames). Returns
    the relabelled joints, confidences and the per-track exchanged masks (T,)."""
    T = joints[0].shape[0]
    face = np.stack([np.where(np.isfinite(j[:, FACE, 0]), c[:, FACE], 0).mean(axis=1)
                     for j, c in zip(joints, confidence)])
    ref = np.argmax(face, axis=0)
    ref_joints = np.stack(joints)[ref, np.arange(T)]
    out_j, out_c, masks = [], [], []
    for k, (j, c) in enumerate(zip(joints, confidence)):
        direct = _sided_distance(j, ref_joints)
        crossed = _sided_distance(j[:, LEFT_RIGHT], ref_joints)
        swap = np.isfinite(direct) & np.isfinite(crossed) & (crossed < direct) & (ref != k)
        swap = median_filter(swap.astype(np.uint8), size=window, mode="nearest").astype(bool) & (ref != k)
        out_j.append(np.where(swap[:, None, None], j[:, LEFT_RIGHT], j))
        out_c.append(np.where(swap[:, None], c[:, LEFT_RIGHT], c))
        masks.append(swap)
    return out_j, out_c, masks


def _sided_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.linalg.norm(a[:, SIDED] - b[:, SIDED], axis=-1)
    ok = np.isfinite(d)
    return np.where(ok.any(axis=1), np.where(ok, d, 0).sum(axis=1) / np.maximum(ok.sum(axis=1), 1), np.nan)


def body_forward(joints: np.ndarray) -> np.ndarray:
    """Unit horizontal forward direction (T,3) of bodies (T,32,3) in the world frame (y up) from
    their labelled shoulders and hips: forward = (left - right) x up; NaN where unknown."""
    L = joints[:, [KINECT_INDEX["SHOULDER_LEFT"], KINECT_INDEX["HIP_LEFT"]]].mean(axis=1)
    R = joints[:, [KINECT_INDEX["SHOULDER_RIGHT"], KINECT_INDEX["HIP_RIGHT"]]].mean(axis=1)
    fwd = np.cross(L - R, UP)
    with np.errstate(invalid="ignore", divide="ignore"):
        return fwd / np.linalg.norm(fwd, axis=-1, keepdims=True)


def facing_cosine(joints: np.ndarray, sensor_position: np.ndarray) -> np.ndarray:
    """Cosine (T,) between the body's forward direction (:func:`body_forward`, from correctly
    labelled shoulders and hips) and the direction from the body to the sensor; NaN if unknown."""
    fwd = body_forward(joints)
    to_sensor = sensor_position - joints[:, KINECT_INDEX["PELVIS"]]
    to_sensor /= np.linalg.norm(to_sensor, axis=-1, keepdims=True)
    return np.sum(fwd * to_sensor, axis=-1)


def fuse_people(tracks: list[BodyTrack], t: np.ndarray, *, noise_at_1m_m: float = 0.01,
                max_distance_m: float = 0.35, config: "PeopleConfig | None" = None) -> list[FusedPerson]:
    """Fuse all tracks into people on the common times ``t`` (T,). Per joint, weights are
    ``LEVEL_WEIGHT[level] * facing / sigma^2`` with ``sigma = noise_at_1m_m * distance`` (metres) and
    ``facing = 0.3 + 0.7 * max(0, cos)`` from :func:`facing_cosine` of the relabelled body.

    ``config`` (:class:`omnimocap.capture.people.PeopleConfig`) switches the repairs of
    ``capture.people``: re-linked ids, the joint left/right decision and the bridging of drop-outs. Without a config the repairs are all on. ``tracks`` of
    each person are the indices of the input tracks it was built from; ``swapped`` maps each to its
    frames with exchanged labels (a mask of the Kinect's merged track)."""
    from omnimocap.capture.people import (
        PeopleConfig, body_pieces, bridge_gaps, link_tracklets, merge_pieces, resolve_mirrors,
    )

    config = config or PeopleConfig()
    t = np.asarray(t, dtype=np.float64)
    if config.relink_ids:
        pieces, origin = body_pieces(tracks, config)
        groups = []
        for members in link_tracklets(pieces, config):
            merged = merge_pieces(pieces, members)
            groups.append(([sorted({origin[k] for k in members if pieces[k].device == m.device}) for m in merged],
                           merged))
    else:
        res0 = [resample_track(tr, t) for tr in tracks]
        groups = [([[k] for k in g], [tracks[k] for k in g])
                  for g in associate([r[0] for r in res0], [tr.device for tr in tracks], max_distance_m)]
    people = []
    for group, members in groups:
        res = [resample_track(tr, t) for tr in members]
        if not any(np.isfinite(r[0]).any() for r in res):
            continue
        seen_s = np.isfinite(np.stack([r[0][:, MIDLINE[0]] for r in res])).all(axis=-1).any(axis=0).sum()
        if config.relink_ids and len(t) > 1 and seen_s * float(np.median(np.diff(t))) < config.min_person_s:
            continue
        if config.mirror_repair:
            js, cs, masks = resolve_mirrors([r[0] for r in res], [r[1] for r in res],
                                            [np.asarray(m.sensor_position, dtype=np.float64) for m in members],
                                            config, float(np.median(np.diff(t))) if len(t) > 1 else 1 / 30)
        else:
            js, cs, masks = resolve_swaps([r[0] for r in res], [r[1] for r in res])
        num = np.zeros((len(t), NUM_JOINTS, 3))
        den = np.zeros((len(t), NUM_JOINTS))
        distrust = np.ones((len(t), NUM_JOINTS))
        for m, j, c in zip(members, js, cs):
            sensor = np.asarray(m.sensor_position, dtype=np.float64)
            dist = np.linalg.norm(j - sensor, axis=-1)
            facing = 0.3 + 0.7 * np.clip(np.nan_to_num(facing_cosine(j, sensor), nan=0.0), 0.0, None)
            w = LEVEL_WEIGHT[c] * facing[:, None] / (noise_at_1m_m * np.maximum(dist, 0.3)) ** 2
            w = np.where(np.isfinite(j[..., 0]), w, 0.0)
            num += w[..., None] * np.nan_to_num(j)
            den += w
            distrust *= 1.0 - np.where(w > 0, LEVEL_TRUST[c], 0.0)
        fused = np.where(den[..., None] > 0, num / np.maximum(den, 1e-300)[..., None], np.nan)
        confidence = 1.0 - distrust
        if config.bridge_s > 0:
            fused, confidence, _ = bridge_gaps(t, fused, confidence, config.bridge_s)
        swapped = {k: mask for origins, mask in zip(group, masks) for k in origins}
        people.append(FusedPerson(t, fused, confidence, sorted(swapped), swapped))
    return people
