"""Who is who in k4abt body tracking over time: body ids that change, swap and come back, left/right
labels exchanged while a body faces away, and whole bodies missing for a moment.

Inputs are :class:`omnimocap.capture.skeleton_fusion.BodyTrack` (k4abt bodies already in the world
frame, y up, metres, on the session clock, seconds). k4abt's failures handled here:

* **identity**: a body hidden by another is lost and comes back with a new id; two crossing bodies
  may exchange ids. :func:`split_tracklets` cuts every (Kinect, body id) track where it is missing
  for longer than ``max_gap_s`` or where its midline jumps further in one frame than a person
  moves (an id that moved onto another body); :func:`cut_handovers` also cuts a piece where it
  stops agreeing with another Kinect's view of the same person and its own path breaks (an id
  slid from one crossing body onto the other, with no gap or jump); :func:`link_tracklets` groups
  the pieces of all Kinects into people: in order of start time, each piece joins the person whose
  other Kinects see it at the same place (median midline distance over the common times) or,
  failing that, whose last known position, carried forward at its last velocity, lies within a
  gate that grows with the time since (walking speed); else it starts a new person. People that
  fit together are then joined (a person split by the order of linking). A person never holds two
  pieces that one Kinect reports in the same frames, so a body id that k4abt reports on a person
  beside the person's own for a few frames stays a person of its own; :func:`people_recordings`
  drops people seen for less than ``min_person_s``. Pieces whose times interleave without sharing
  frames are one body: while two people cross, k4abt may hand two ids back and forth between them
  from frame to frame, so one person's ids alternate for a moment.
* **front/back confusion**: k4abt assumes a body faces its camera; seen from behind, it may report
  every left/right pair exchanged. :func:`resolve_mirrors` decides, per frame and per Kinect, whether
  the labels are exchanged, by a Viterbi pass over the joint states of all Kinects that see the
  person. Costs (dimensionless, per frame): exchanged labels must make the body appear to face its
  Kinect (a body only gets mirrored while truly facing away, and the mirror image then faces the
  camera; bounded, since the facing is itself an estimate); agreement between Kinects (their sided
  joints, directly or crossed); temporal continuity (an exchange happens from one frame to the
  next, which moves every sided joint onto its mirror partner; also across short drop-outs, between
  the frames either side); and a small prior against exchanged labels.
* **drop-outs**: :func:`bridge_gaps` interpolates a fused joint across a gap no longer than
  ``bridge_s`` and marks the bridged frames with a low confidence.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import linear_sum_assignment

from omnimocap.capture.session import kinect_name
from omnimocap.data.skeletons import KINECT_INDEX
from omnimocap.geometry.resample import interpolate_linear

# Joints on the body's midline (their positions do not depend on the left/right labels).
_MIDLINE = np.array([KINECT_INDEX[n] for n in ("PELVIS", "SPINE_NAVEL", "SPINE_CHEST", "NECK")])


@dataclass
class PeopleConfig:
    """How k4abt bodies become people (see the module docstring); each repair can be switched off."""

    relink_ids: bool = True
    """Cut body-id tracks at gaps and jumps and link the pieces of all Kinects into people over time
    (off: bodies of different Kinects are matched by position only, one body id is one track)."""
    mirror_repair: bool = True
    """Decide exchanged left/right labels per Kinect and frame by facing, agreement between Kinects and
    temporal continuity (off: the Kinect with the most confident face sets the labels, frame by frame)."""
    bridge_s: float = 0.8
    """Fused joints missing for at most this long (seconds) are interpolated, at LOW confidence; 0: off."""
    max_gap_s: float = 0.25
    """A body-id track missing for longer than this is cut there (seconds)."""
    jump_m: float = 0.25
    """A body-id track whose midline moves further than this between two frames is cut there (metres)."""
    link_gate_m: float = 0.45
    """A piece joins a person seen at the same time by another Kinect within this distance (metres),
    or last seen within this distance plus ``link_speed_m_s`` times the time since."""
    link_speed_m_s: float = 1.2
    """Speed at which the gate for a person not seen for a while grows (metres per second)."""
    link_max_gap_s: float = 6.0
    """A person not seen for longer than this is not linked to a new piece (seconds)."""
    link_recent_first: bool = True
    """Between people a piece fits equally well, prefer the one seen last more recently (off: the
    distance over the gate alone decides, and a person lost long ago, with a wide gate, may take
    the piece of a person seen a moment ago)."""
    cut_handovers: bool = True
    """Cut a body-id track where it stops agreeing with another Kinect's view of the same person and
    its own path breaks there (an id handed from one body to another while they cross, with no jump
    or gap to show it); off: only gaps and jumps cut."""
    agree_m: float = 0.15
    """Two Kinects' bodies whose midlines are closer than this are one person (metres)..."""
    apart_m: float = 0.3
    """... and farther than this, two people (metres); in between, undecided."""
    steady_s: float = 0.3
    """Agreement or disagreement must hold this long to count, on each side of a change (seconds)."""
    merge_people: bool = True
    """After linking, join people that never hold one Kinect's pieces at the same time and fit
    together (the same place where both are seen, else the later starts where the earlier left off),
    closest pair first (off: a person lost in the linking order stays two people)."""
    merge_max_gap_s: float = 1.0
    """People never seen at the same time are joined only across a gap up to this long (seconds):
    stray short pieces must not chain into a person over many seconds."""
    two_bodies_min_frames: int = 2
    """Two pieces of one Kinect are two bodies (never one person) when that Kinect reports both in at least
    this many of the same frames. Pieces whose frames interleave with fewer shared (k4abt passing ids back
    and forth between two crossing people) may be one person. With 1, a single shared frame keeps two
    pieces apart."""
    min_person_s: float = 0.5
    """People seen for less than this in total are dropped (spurious bodies), seconds."""
    drop_fragments: bool = True
    """:func:`people_recordings` also drops the people seen for less than ``min_person_s`` (a few frames
    of a body id that the linking could not place: a k4abt body briefly doubled on a person, or an id
    passed between two crossing people), so they do not count as people in their own right, each with
    hands that the panorama's detections are associated with (off: every linked person is kept)."""
    mirror_bounded_facing: bool = True
    """The cost of deciding exchanged labels for a frame whose reported body faces away from its Kinect
    is at most ``mirror_facing_max`` (off: it grows without bound as the body turns away). k4abt's mirror
    image faces the camera, so a report facing away is seldom exchanged, but a facing judged from a few
    joints is itself an estimate: unbounded, three frames that contradicted it outweighed the agreement
    and continuity of two Kinects over two seconds, and the labels of the whole stretch were turned
    over to spare them."""
    mirror_facing_max: float = 3.0
    """Most cost of one frame's facing (dimensionless, like the others; the agreement of two Kinects
    on a sided joint set costs about 4 per frame, a change of labels between frames about 15)."""
    mirror_bridge_gaps: bool = True
    """The label decision's temporal continuity holds across a track's drop-outs of up to
    ``mirror_bridge_s``: the labels after the gap are compared with those before it, on a scale that
    grows with the gap (off: a drop-out leaves a track's labels free to change at a small cost, so a
    mirrored run that begins and ends in drop-outs, seen by one Kinect, stays unrepaired)."""
    mirror_bridge_s: float = 0.5
    """Longest drop-out, seconds, across which labels are compared (a person turns by less than a
    quarter turn in that time, so each sided joint stays nearer its own earlier place than its
    partner's)."""
    mirror_sigma_m: float = 0.03
    """Scale of the agreement cost of the label decision (metres): two Kinects' sided joints, each
    with its own noise and joint-definition bias."""
    mirror_jump_sigma_m: float = 0.015
    """Scale of the continuity cost between frames (metres): from one frame to the next a body's sided
    joints move a few centimetres, an exchange of labels moves them by the body's width (0.2-0.4 m), so
    a label change that the decision does not follow costs about 15. At the agreement's scale
    (``mirror_sigma_m``, half as strong) a mirrored run through which the person turned to face the
    Kinect, its last frames facing away, was cheaper to explain as correct labels with every frame
    after it exchanged (measured on a 30 s session with an independent model of k4abt's errors: 73 of
    2809 Kinect body frames left mirrored by the decision, 19 at this scale)."""
    mirror_prior: float = 0.05
    """Cost of each frame of each Kinect decided exchanged (dimensionless, like the others). It
    adds up over a run, while the continuity evidence that a run began or ended is paid once: where
    every Kinect mirrors the person at once after a gap (no agreement to go by), a run of about a
    second at 0.2 per frame outweighed the continuity cost of its end and stayed unrepaired, and a
    run lasting to the end of the recording, its start seen by one Kinect only, at 0.1 per frame.
    The walking-direction tie-breaker stays below it (0.8 times)."""


def midline_centre(joints: np.ndarray) -> np.ndarray:
    """Mean (F,3) of the finite midline joints of (F,32,3) joints; NaN where none is finite."""
    m = joints[:, _MIDLINE]
    ok = np.isfinite(m).all(axis=-1)
    with np.errstate(invalid="ignore"):
        c = np.where(ok[..., None], m, 0.0).sum(axis=1) / ok.sum(axis=1)[:, None]
    c[~ok.any(axis=1)] = np.nan
    return c


def split_tracklets(tracks: list, *, max_gap_s: float = 0.25, jump_m: float = 0.25) -> tuple[list, list[int]]:
    """Cut each track where its body is missing for longer than ``max_gap_s`` or its midline centre
    jumps further than ``jump_m`` between consecutive present frames. Returns the pieces (each on its
    track's time base, NaN / confidence 0 outside the piece) and, per piece, the index of its track."""
    pieces, origin = [], []
    for k, tr in enumerate(tracks):
        c = midline_centre(tr.joints)
        present = np.flatnonzero(np.isfinite(c).all(axis=-1))
        if len(present) == 0:
            continue
        cut = np.zeros(len(present), dtype=bool)
        cut[0] = True
        if len(present) > 1:
            gap = np.diff(tr.t[present]) > max_gap_s
            jump = np.linalg.norm(np.diff(c[present], axis=0), axis=-1) > jump_m
            cut[1:] = gap | jump
        starts = np.flatnonzero(cut)
        ends = np.append(starts[1:], len(present))
        for s, e in zip(starts, ends):
            frames = present[s:e]
            lo, hi = frames[0], frames[-1] + 1
            joints = np.full_like(tr.joints, np.nan)
            conf = np.zeros_like(tr.confidence)
            joints[lo:hi], conf[lo:hi] = tr.joints[lo:hi], tr.confidence[lo:hi]
            pieces.append(replace(tr, joints=joints, confidence=conf))
            origin.append(k)
    return pieces, origin


class _Piece:
    def __init__(self, track):
        self.device = track.device
        c = midline_centre(track.joints)
        ok = np.isfinite(c).all(axis=-1)
        self.t = np.asarray(track.t, dtype=np.float64)[ok]
        self.c = c[ok]
        self.start, self.end = float(self.t[0]), float(self.t[-1])

    def at(self, t: np.ndarray) -> np.ndarray:
        """Centre (M,3) at times ``t`` inside the piece (linear), NaN outside."""
        out = np.full((len(t), 3), np.nan)
        inside = (t >= self.start) & (t <= self.end)
        if inside.any():
            out[inside] = np.stack([np.interp(t[inside], self.t, self.c[:, i]) for i in range(3)], axis=-1)
        return out

    def velocity_at_end(self, window_s: float = 0.3) -> np.ndarray:
        use = self.t >= self.end - window_s
        if use.sum() < 2:
            return np.zeros(3)
        v = (self.c[use][-1] - self.c[use][0]) / max(self.t[use][-1] - self.t[use][0], 1e-6)
        v[1] = 0.0  # people walk on the floor
        return v


def seen_s(pieces: list) -> float:
    """How long a person (its pieces, from :func:`split_tracklets`) is seen, seconds: per Kinect, its
    pieces' frames with a body times that Kinect's frame step; the longest over the Kinects."""
    seen: dict[str, float] = {}
    for p in pieces:
        t = np.asarray(p.t, dtype=np.float64)
        step = float(np.median(np.diff(t))) if len(t) > 1 else 0.0
        frames = int(np.isfinite(p.joints).all(axis=-1).any(axis=-1).sum())
        seen[p.device] = seen.get(p.device, 0.0) + frames * step
    return max(seen.values(), default=0.0)


def body_pieces(tracks: list, config: PeopleConfig) -> tuple[list, list[int]]:
    """The pieces of ``tracks`` that are one body each: :func:`split_tracklets`, then (with
    ``cut_handovers``) :func:`cut_handovers`. Returns the pieces and, per piece, its track's index."""
    pieces, origin = split_tracklets(tracks, max_gap_s=config.max_gap_s, jump_m=config.jump_m)
    if config.cut_handovers:
        pieces, origin = cut_handovers(pieces, origin, config)
    return pieces, origin


def cut_handovers(pieces: list, origin: list[int], config: PeopleConfig | None = None) -> tuple[list, list[int]]:
    """Cut pieces (from :func:`split_tracklets`) where a body id passed from one person to another
    without a gap or a jump: two crossing people are close, and k4abt's tracker may slide an id from
    the body it followed onto the one in front over a few frames. Each pair of pieces of two Kinects
    is compared over their common times (midline centres, metres): a steady run of agreement (closer
    than ``agree_m``) followed by a steady run of disagreement (farther than ``apart_m``), or the
    reverse, each at least ``steady_s`` long, means one of the two changed body there; the one whose
    own path breaks more across the change (:func:`_path_break`, by more than ``agree_m``) is cut, and
    its frames between the two runs (the slide, on no one) are dropped. Returns the pieces and their track indices, like
    :func:`split_tracklets`."""
    config = config or PeopleConfig()
    info = [_Piece(p) for p in pieces]
    drops: dict[int, list[tuple[float, float]]] = {}
    for a in range(len(info)):
        for b in range(a + 1, len(info)):
            if info[a].device == info[b].device or info[a].start > info[b].end or info[b].start > info[a].end:
                continue
            for lo, hi in _agreement_changes(info[a], info[b], config):
                breaks = (_path_break(info[a], lo, hi), _path_break(info[b], lo, hi))
                if max(breaks) > config.agree_m:  # else neither path tells which one changed body
                    drops.setdefault((a, b)[int(np.argmax(breaks))], []).append((lo, hi))
    out, out_origin = [], []
    for k, piece in enumerate(pieces):
        if k not in drops:
            out.append(piece)
            out_origin.append(origin[k])
            continue
        t = np.asarray(piece.t, dtype=np.float64)
        label = np.zeros(len(t), dtype=np.int64)
        keep = np.ones(len(t), dtype=bool)
        for lo, hi in drops[k]:
            label += t >= hi
            keep &= ~((t > lo) & (t < hi))
        present = np.isfinite(piece.joints).all(axis=-1).any(axis=-1) & keep
        for part in np.unique(label[present]):
            mine = present & (label == part)
            out.append(replace(piece, joints=np.where(mine[:, None, None], piece.joints, np.nan),
                               confidence=np.where(mine[:, None], piece.confidence, 0)))
            out_origin.append(origin[k])
    return out, out_origin


def _agreement_changes(p: _Piece, q: _Piece, config: PeopleConfig) -> list[tuple[float, float]]:
    """Times ``(lo, hi)`` (seconds) where pieces ``p`` and ``q`` of two Kinects go from a steady run
    of agreement to a steady run of disagreement or back: ``lo`` ends the first run, ``hi`` starts
    the second."""
    common = (p.t >= q.start) & (p.t <= q.end)
    if common.sum() < 2:
        return []
    t = p.t[common]
    d = np.linalg.norm(p.c[common] - q.at(t), axis=-1)
    state = np.where(d < config.agree_m, 1, np.where(d > config.apart_m, 0, -1))
    runs = []  # runs of one decided state: [state, first time, last time, last index]
    for i in np.flatnonzero(state >= 0):
        if runs and runs[-1][0] == state[i] and runs[-1][3] == i - 1:
            runs[-1][2], runs[-1][3] = t[i], i
        else:
            runs.append([state[i], t[i], t[i], i])
    steady = [r for r in runs if r[2] - r[1] >= config.steady_s]
    return [(float(x[2]), float(y[1])) for x, y in zip(steady, steady[1:]) if x[0] != y[0]]


def _path_break(piece: _Piece, lo: float, hi: float, window_s: float = 0.5) -> float:
    """How badly the piece's horizontal path before ``lo`` and after ``hi`` (seconds) fail to
    continue each other (metres): each side's straight-line walk, fitted over ``window_s``,
    extrapolated to the other side's frames, median distance, mean of both ways; 0 when a side has
    fewer than three frames."""
    before = (piece.t <= lo) & (piece.t >= lo - window_s)
    after = (piece.t >= hi) & (piece.t <= hi + window_s)
    if before.sum() < 3 or after.sum() < 3:
        return 0.0
    errors = []
    for fit, test in ((before, after), (after, before)):
        xz = piece.c[:, [0, 2]]
        coef = np.polyfit(piece.t[fit] - piece.t[fit].mean(), xz[fit], 1)
        pred = np.outer(piece.t[test] - piece.t[fit].mean(), coef[0]) + coef[1]
        errors.append(float(np.median(np.linalg.norm(pred - xz[test], axis=-1))))
    return float(np.mean(errors))


def _seen_together(p: _Piece, q: _Piece, config: PeopleConfig) -> bool:
    """Whether one Kinect reports pieces ``p`` and ``q`` as two bodies at once: the same device, in at
    least ``config.two_bodies_min_frames`` of the same frames (a Kinect's pieces share its time base)."""
    if p.device != q.device or p.start > q.end or q.start > p.end:
        return False
    return np.intersect1d(p.t, q.t).size >= config.two_bodies_min_frames


def _link_cost(piece: _Piece, members: list[_Piece], config: PeopleConfig) -> float:
    """Distance of ``piece`` from a person (its pieces ``members``) over the gate; inf when it cannot
    join (the same Kinect reports a piece of the person in the same frames, or the person was not
    seen for too long). The person's pieces whose times overlap the piece's, of any Kinect (a piece
    of its own Kinect whose frames interleave with it), are compared with it there."""
    if any(_seen_together(m, piece, config) for m in members):
        return np.inf
    # seen at the same times: compare there
    common = [m for m in members if m.start <= piece.end and piece.start <= m.end]
    if common:
        d = []
        for m in common:
            dm = np.linalg.norm(m.at(piece.t) - piece.c, axis=-1)
            d.append(dm[np.isfinite(dm)])
        d = np.concatenate(d)
        if len(d):
            return _gated(float(np.median(d)) / config.link_gate_m, 0.0, config)
    before = [m for m in members if m.end <= piece.start]
    if not before:
        return np.inf
    last = max(before, key=lambda m: m.end)
    gap = piece.start - last.end
    if gap > config.link_max_gap_s:
        return np.inf
    predicted = last.c[-1] + last.velocity_at_end() * min(gap, 1.0)
    head = np.median(piece.c[: max(1, min(5, len(piece.c)))], axis=0)
    return _gated(float(np.linalg.norm(head - predicted)) / (config.link_gate_m + config.link_speed_m_s * gap),
                  gap, config)


def _gated(ratio: float, gap_s: float, config: PeopleConfig) -> float:
    """A link's cost from its distance over the gate (``ratio``; inf from 1 on) and the time since
    the person was last seen (seconds): with ``link_recent_first``, half of each. The gate grows with
    the time since, so by the ratio alone a person lost seconds ago (a wide gate) takes a piece as
    readily as one seen a moment ago close by (a narrow gate)."""
    if not ratio < 1.0:
        return np.inf
    return 0.5 * ratio + 0.5 * gap_s / config.link_max_gap_s if config.link_recent_first else ratio


def link_tracklets(pieces: list, config: PeopleConfig | None = None) -> list[list[int]]:
    """Group pieces (from :func:`split_tracklets`) into people; see the module docstring. Pieces that
    start within 0.1 s of each other are assigned together, one Kinect at a time: a Kinect's pieces
    that it reports in the same frames by optimal assignment (two bodies, never one person), one
    after another where they do not (an id lost for a frame and picked up again under a new id is
    one body twice), each next Kinect's against the people as the earlier ones left them, so two
    Kinects that pick a person up again at the same moment join it together. With ``merge_people``,
    people that fit together are joined afterwards (:func:`_merge_people`). Returns, per person,
    the sorted indices of its pieces."""
    config = config or PeopleConfig()
    info = [_Piece(p) for p in pieces]
    order = sorted(range(len(info)), key=lambda i: info[i].start)
    people: list[list[int]] = []
    i = 0
    while i < len(order):
        batch = [order[i]]
        while i + len(batch) < len(order) and info[order[i + len(batch)]].start - info[order[i]].start < 0.1:
            batch.append(order[i + len(batch)])
        i += len(batch)
        for device in dict.fromkeys(info[b].device for b in batch):
            for together in _overlapping(info, [b for b in batch if info[b].device == device], config):
                _assign(info, together, people, config)
    if config.merge_people:
        people = _merge_people(info, people, config)
    return [sorted(p) for p in people]


def _overlapping(info: list[_Piece], batch: list[int], config: PeopleConfig) -> list[list[int]]:
    """``batch`` (one Kinect's pieces in start order) split into runs of pieces that the Kinect reports
    in the same frames (:func:`_seen_together`), chained."""
    groups: list[list[int]] = []
    for b in batch:
        if groups and any(_seen_together(info[b], info[g], config) for g in groups[-1]):
            groups[-1].append(b)
        else:
            groups.append([b])
    return groups


def _merge_people(info: list[_Piece], people: list[list[int]], config: PeopleConfig) -> list[list[int]]:
    """Join pairs of people, closest first, while one fits the other (:func:`_merge_cost` below 1)."""
    people = [list(p) for p in people]

    def cost_of(a: int, b: int) -> float:
        return _merge_cost([info[k] for k in people[a]], [info[k] for k in people[b]], config)

    cost = np.full((len(people), len(people)), np.inf)
    for a in range(len(people)):
        for b in range(a + 1, len(people)):
            cost[a, b] = cost_of(a, b)
    while len(people) > 1:
        a, b = np.unravel_index(int(np.argmin(cost)), cost.shape)
        if not cost[a, b] < 1.0:
            break
        people[a] += people.pop(b)
        cost = np.delete(np.delete(cost, b, axis=0), b, axis=1)
        for c in range(len(people)):  # only the joined person's costs change
            if c != a:
                cost[min(a, c), max(a, c)] = cost_of(min(a, c), max(a, c))
    return people


def _merge_cost(one: list[_Piece], other: list[_Piece], config: PeopleConfig) -> float:
    """How well two people (their pieces) are one (below 1: they are); inf when one Kinect reports
    both in the same frames. Where both are seen at the same times (by different Kinects, or by one
    Kinect in interleaved frames), the median distance of their midlines over the gate; else the
    later one's first piece against the earlier one as :func:`_link_cost` weighs a piece against a
    person, if it starts at most ``merge_max_gap_s`` after the earlier one's end."""
    if any(_seen_together(p, q, config) for p in one for q in other):
        return np.inf
    d = [np.linalg.norm(q.at(p.t) - p.c, axis=-1) for p in one for q in other
         if p.start <= q.end and q.start <= p.end]
    d = np.concatenate(d) if d else np.zeros(0)
    d = d[np.isfinite(d)]
    if len(d):
        return float(np.median(d)) / config.link_gate_m
    first_one, first_other = min(p.start for p in one), min(q.start for q in other)
    earlier, later = (one, other) if first_one <= first_other else (other, one)
    head = min(later, key=lambda q: q.start)
    if head.start - max(p.end for p in earlier) > config.merge_max_gap_s:
        return np.inf
    return _link_cost(head, earlier, config)


def _assign(info: list[_Piece], batch: list[int], people: list[list[int]], config: PeopleConfig) -> None:
    """Add the pieces ``batch`` (one Kinect's, starting together) to ``people`` (in place): one-to-one
    with the people they are close to, else a new person each."""
    taken: dict[int, int] = {}
    if people:
        cost = np.array([[_link_cost(info[b], [info[m] for m in person], config) for person in people]
                         for b in batch])
        rows, cols = linear_sum_assignment(np.where(np.isfinite(cost) & (cost < 1.0), cost, 1e6))
        taken = {int(r): int(c) for r, c in zip(rows, cols) if cost[r, c] < 1.0}
    for r, b in enumerate(batch):
        if r in taken:
            people[taken[r]].append(b)
        else:
            people.append([b])


def merge_pieces(pieces: list, members: list[int]) -> list:
    """One track per Kinect from a person's pieces (pieces of one Kinect share its time base; where two
    report the same frame, the first one's is kept); the merged track keeps the first piece's body id."""
    by_device: dict[str, object] = {}
    for k in members:
        p = pieces[k]
        if p.device not in by_device:
            by_device[p.device] = replace(p, joints=p.joints.copy(), confidence=p.confidence.copy())
            continue
        m = by_device[p.device]
        take = np.isfinite(p.joints).all(axis=-1).any(axis=-1) & ~np.isfinite(m.joints).all(axis=-1).any(axis=-1)
        m.joints[take], m.confidence[take] = p.joints[take], p.confidence[take]
    return list(by_device.values())


def resolve_mirrors(joints: list[np.ndarray], confidence: list[np.ndarray], sensors: list[np.ndarray],
                    config: PeopleConfig | None = None, t_step: float = 1 / 30,
                    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Left/right labels of one person's tracks (each (T,32,3) world metres on common times, NaN
    where missing; confidences (T,32); ``sensors`` the Kinects' positions (3,)), decided jointly over
    Kinects and time (see the module docstring). Returns the relabelled joints, confidences and the
    per-track masks (T,) of frames whose labels were exchanged. ``t_step``: seconds between frames."""
    from omnimocap.capture.skeleton_fusion import FACE, LEFT_RIGHT, SIDED, body_forward, facing_cosine

    config = config or PeopleConfig()
    K = len(joints)
    T = joints[0].shape[0]
    if K == 0 or T == 0:
        return list(joints), list(confidence), [np.zeros(T, dtype=bool) for _ in joints]
    if K > 6:
        raise ValueError(f"{K} Kinect tracks for one person: at most 6 are decided jointly")
    sig = config.mirror_sigma_m
    sig_jump = config.mirror_jump_sigma_m
    S = 1 << K
    bits = (np.arange(S)[:, None] >> np.arange(K)[None, :]) & 1  # (S, K)

    def sided(a, b):
        d = np.linalg.norm(a[:, SIDED] - b[:, SIDED], axis=-1)
        ok = np.isfinite(d)
        with np.errstate(invalid="ignore"):
            return np.where(ok.any(axis=1), np.where(ok, d, 0).sum(axis=1) / ok.sum(axis=1), np.nan)

    present = [np.isfinite(j[:, SIDED]).all(axis=-1).sum(axis=1) >= 4 for j in joints]
    emit = np.zeros((T, S))
    walk = _walking_direction(joints, t_step)
    face = np.stack([np.where(np.isfinite(j[:, FACE, 0]), c[:, FACE], 0).mean(axis=1)
                     for j, c in zip(joints, confidence)])
    seen = np.stack(present)
    with np.errstate(invalid="ignore", divide="ignore"):
        face_mean = np.where(seen.any(axis=0), (face * seen).sum(axis=0) / seen.sum(axis=0), 0.0)
    for k in range(K):
        cos = np.nan_to_num(facing_cosine(joints[k], np.asarray(sensors[k], dtype=np.float64)), nan=0.0)
        # exchanged labels must look like a body facing the Kinect; a small prior against exchanges
        facing = 8.0 * np.clip(0.1 - cos, 0.0, None)
        if config.mirror_bounded_facing:
            facing = np.minimum(facing, config.mirror_facing_max)
        cost_m = facing + config.mirror_prior
        # people mostly walk forwards: exchanged labels would turn a forward walk into a backward one
        # (a tie-breaker only, below the prior: people also step back and walk backwards)
        cost_m += 0.8 * config.mirror_prior * np.nan_to_num(np.sum(body_forward(joints[k]) * walk, axis=-1), nan=0.0)
        # a Kinect more confident of the face than the others is less likely to have exchanged labels
        cost_m += 0.1 * (face[k] - face_mean)
        emit += np.where(present[k], cost_m, 0.0)[:, None] * bits[None, :, k]
    for a in range(K):
        for b in range(a + 1, K):
            same = sided(joints[a], joints[b])
            cross = sided(joints[a][:, LEFT_RIGHT], joints[b])
            both = np.isfinite(same) & np.isfinite(cross)
            lo = np.fmin(same, cross)
            c_same = np.where(both, (same - lo) / sig, 0.0)
            c_cross = np.where(both, (cross - lo) / sig, 0.0)
            differ = bits[:, a] != bits[:, b]
            emit += np.where(differ[None, :], c_cross[:, None], c_same[:, None])
    # transitions: per track, keeping or toggling its bit between frames t-1 and t
    keep_cost = np.zeros((T, K))
    flip_cost = np.zeros((T, K))
    for k in range(K):
        j = joints[k]
        direct = np.full(T, np.nan)
        crossed = np.full(T, np.nan)
        direct[1:] = sided(j[1:], j[:-1])
        crossed[1:] = sided(j[1:][:, LEFT_RIGHT], j[:-1])
        both = np.isfinite(direct) & np.isfinite(crossed)
        lo = np.fmin(direct, crossed)
        keep_cost[:, k] = np.where(both, (direct - lo) / sig_jump, 0.0)
        flip_cost[:, k] = np.where(both, (crossed - lo) / sig_jump + 2.0, 0.5)
        if config.mirror_bridge_gaps and config.mirror_bridge_s > 0:
            _bridge_continuity(j, sided, sig_jump, config.mirror_bridge_s / t_step, keep_cost[:, k], flip_cost[:, k])
    toggles = bits[:, None, :] != bits[None, :, :]  # (S_prev, S, K)
    cost = emit[0].copy()
    back = np.zeros((T, S), dtype=np.int64)
    for t in range(1, T):
        trans = np.where(toggles, flip_cost[t][None, None, :], keep_cost[t][None, None, :]).sum(axis=-1)
        total = cost[:, None] + trans
        back[t] = np.argmin(total, axis=0)
        cost = total[back[t], np.arange(S)] + emit[t]
    state = np.empty(T, dtype=np.int64)
    state[-1] = int(np.argmin(cost))
    for t in range(T - 1, 0, -1):
        state[t - 1] = back[t, state[t]]
    out_j, out_c, masks = [], [], []
    for k in range(K):
        swap = bits[state, k].astype(bool) & present[k]
        out_j.append(np.where(swap[:, None, None], joints[k][:, LEFT_RIGHT], joints[k]))
        out_c.append(np.where(swap[:, None], confidence[k][:, LEFT_RIGHT], confidence[k]))
        masks.append(swap)
    return out_j, out_c, masks


def _bridge_continuity(j: np.ndarray, sided, sig: float, max_frames: float, keep_cost: np.ndarray,
                       flip_cost: np.ndarray) -> None:
    """Temporal continuity of one track's labels across its drop-outs (in place on the (T,) costs of
    keeping or toggling its bit from frame t-1 to t): over a gap of at most ``max_frames`` frames,
    toggling while the track is missing is ruled out and the toggle at its first frame back is
    priced like a frame-to-frame one, between that frame and the last before the gap (``sided``
    their mean sided-joint distance, direct or crossed), on a scale ``sig`` (metres) that doubles
    over the longest gap bridged (the body moves and turns in the meantime; the direct distance stays
    the smaller while it turns by less than a quarter turn, whatever the scale)."""
    from omnimocap.capture.skeleton_fusion import LEFT_RIGHT, SIDED

    has = np.isfinite(j[:, SIDED]).all(axis=-1).any(axis=1)
    idx = np.flatnonzero(has)
    if len(idx) < 2:
        return
    for s, n in zip(idx[:-1], idx[1:]):
        if n - s < 2 or n - s > max_frames:
            continue
        a, b = j[n][None], j[s][None]
        direct, crossed = float(sided(a, b)[0]), float(sided(a[:, LEFT_RIGHT], b)[0])
        if not (np.isfinite(direct) and np.isfinite(crossed)):
            continue
        lo = min(direct, crossed)
        scale = sig * (1.0 + (n - s - 1) / max_frames)
        keep_cost[s + 1:n] = 0.0
        flip_cost[s + 1:n] = np.inf
        keep_cost[n] = (direct - lo) / scale
        flip_cost[n] = (crossed - lo) / scale + 2.0


def _walking_direction(joints: list[np.ndarray], t_step: float, window_s: float = 0.5) -> np.ndarray:
    """Horizontal walking direction (T,3) of one person, scaled from 0 (below 0.3 m/s) to 1 (from
    0.8 m/s): the pelvis velocity over ``window_s``, averaged over the tracks that see it."""
    from scipy.ndimage import uniform_filter1d

    c = np.stack([midline_centre(j) for j in joints])
    ok = np.isfinite(c).all(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = np.where(ok[..., None], c, 0.0).sum(axis=0) / ok.sum(axis=0)[:, None]
    half = max(1, int(round(window_s / t_step / 2)))
    v = np.full_like(centre, np.nan)
    v[half:-half] = (centre[2 * half:] - centre[:-2 * half]) / (2 * half * t_step)
    v[:, 1] = 0.0
    v = uniform_filter1d(np.nan_to_num(v), size=3, axis=0) * np.isfinite(v)
    speed = np.linalg.norm(v, axis=-1, keepdims=True)
    scale = np.clip((speed - 0.3) / 0.5, 0.0, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(speed > 1e-9, v / speed * scale, 0.0)


def bridge_gaps(t: np.ndarray, joints: np.ndarray, confidence: np.ndarray, max_gap_s: float,
                bridged_confidence: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interpolate each joint of (T,32,3) ``joints`` (NaN where missing) linearly across gaps of at
    most ``max_gap_s`` seconds between two present frames; bridged frames get ``bridged_confidence``
    in the (T,32) ``confidence`` (values in [0, 1]). Returns joints, confidence and the (T,) mask of
    frames where the body was missing entirely and is now bridged."""
    joints = joints.copy()
    confidence = confidence.copy()
    missing_before = ~np.isfinite(joints).all(axis=-1).any(axis=-1)
    if max_gap_s <= 0 or len(t) < 3:
        return joints, confidence, np.zeros(len(t), dtype=bool)
    for j in range(joints.shape[1]):
        ok = np.isfinite(joints[:, j]).all(axis=-1)
        if ok.sum() < 2 or ok.all():
            continue
        value = interpolate_linear(t[ok], joints[ok, j], t, max_gap_s)
        fill = ~ok & np.isfinite(value).all(axis=-1)
        joints[fill, j] = value[fill]
        confidence[fill, j] = bridged_confidence
    bridged = missing_before & np.isfinite(joints).all(axis=-1).any(axis=-1)
    return joints, confidence, bridged


# What :func:`people_recordings` uses without a config (the calibration's and sync's Kinect tracks);
# replace to change it for a run.
CALIBRATION_PEOPLE = PeopleConfig()


def people_recordings(session, rig, config: PeopleConfig | None = None) -> dict:
    """Every Kinect's body tracking of ``session`` with the k4abt failures above repaired, as
    :class:`omnimocap.capture.bodies.BodyRecording` per Kinect serial (device frame, device clock,
    like the files): body id ``p`` is person ``p`` in every Kinect (ids re-linked over time and
    matched across Kinects through ``rig``'s poses and time maps), and frames whose left/right labels
    were exchanged carry them the right way round. Drop-outs stay missing (the files' frames are
    kept). With ``relink_ids`` and ``mirror_repair`` both off the recordings are returned as read.
    People are numbered by the reference (first) Kinect's first sight of them."""
    from omnimocap.geometry.transforms import transform_points
    from omnimocap.capture.bodies import BodyRecording, BodyTrack as K4Track, read_bodies
    from omnimocap.capture.skeleton_fusion import LEFT_RIGHT, BodyTrack, resample_track

    config = config or CALIBRATION_PEOPLE
    entries = [e for e in session.kinects() if e.bodies]
    recordings = {e.serial: read_bodies(session.path(e.bodies)) for e in entries}
    if not entries or not (config.relink_ids or config.mirror_repair):
        return recordings
    tracks, keys = [], []
    serial_of = {kinect_name(e.serial): e.serial for e in entries}
    for e in entries:
        name = kinect_name(e.serial)
        if name not in rig.T_world_sensor:
            continue
        rec = recordings[e.serial]
        T = rig.pose(name)
        t = rig.time_map(name).to_session(rec.timestamps)
        for body_id in sorted(rec.bodies):
            tr = rec.bodies[body_id]
            tracks.append(BodyTrack(name, body_id, t, transform_points(T, tr.positions), tr.confidences, T[:3, 3]))
            keys.append((e.serial, body_id))
    if not tracks:
        return recordings
    if config.relink_ids:
        pieces, origin = body_pieces(tracks, config)
        groups = link_tracklets(pieces, config)
    else:
        pieces, origin = tracks, list(range(len(tracks)))
        groups = [[k] for k in range(len(tracks))]
    # people in order of their first frame in the reference Kinect (then anywhere)
    ref = kinect_name(entries[0].serial)

    def first_seen(g):
        starts = [(pieces[k].device != ref, float(pieces[k].t[np.isfinite(pieces[k].joints).all(-1).any(-1)][0]))
                  for k in g]
        return min(starts)

    if config.drop_fragments:
        groups = [g for g in groups if seen_s([pieces[k] for k in g]) >= config.min_person_s]
    groups = sorted(groups, key=first_seen)
    t_ref = tracks[0].t
    out = {s: BodyRecording(r.timestamps, r.frame_ids, {}, r.source_file, r.sdk_version, r.has_confidences, r.stats)
           for s, r in recordings.items()}
    for person, g in enumerate(groups):
        merged = merge_pieces(pieces, g)
        masks = [np.zeros(len(m.t), dtype=bool) for m in merged]
        if config.mirror_repair:
            res = [resample_track(m, t_ref) for m in merged]
            _, _, on_ref = resolve_mirrors([r[0] for r in res], [r[1] for r in res],
                                           [np.asarray(m.sensor_position) for m in merged], config,
                                           float(np.median(np.diff(t_ref))) if len(t_ref) > 1 else 1 / 30)
            for i, m in enumerate(merged):
                nearest = np.clip(np.searchsorted(t_ref, m.t), 0, len(t_ref) - 1)
                masks[i] = on_ref[i][nearest]
        for m, mask in zip(merged, masks):
            serial = serial_of[m.device]
            rec = recordings[serial]
            present = np.isfinite(m.joints).all(axis=-1).any(axis=-1)
            pos = np.full((len(rec), 32, 3), np.nan)
            ori = np.full((len(rec), 32, 4), np.nan)
            conf = np.zeros((len(rec), 32), dtype=np.int64)
            for k in g:
                if pieces[k].device != m.device:
                    continue
                src = rec.bodies[keys[origin[k]][1]]
                mine = np.isfinite(pieces[k].joints).all(axis=-1).any(axis=-1)
                pos[mine], ori[mine], conf[mine] = src.positions[mine], src.orientations[mine], src.confidences[mine]
            flip = mask & present
            pos[flip], ori[flip], conf[flip] = pos[flip][:, LEFT_RIGHT], ori[flip][:, LEFT_RIGHT], conf[flip][:, LEFT_RIGHT]
            out[serial].bodies[person] = K4Track(pos, ori, conf)
    return out
