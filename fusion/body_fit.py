"""SMPL-X body fitting to Azure Kinect body-tracking joints.

Inputs are Kinect joints in the world frame (y up, metres, floor y = 0), which is also SMPL-X's
model frame, so fitted joints are ``forward_kinematics(local_rotmats, betas) + transl``.

The Kinect joints are modelled from SMPL-X joints by the soft correspondences of
:func:`omnimocap.data.skeletons.kinect_from_smplx_matrix` (rows in ``KINECT_BODY_FOR_FIT`` order).

Method
1. Shape once per person: lengths between Kinect joints whose SMPL-X counterparts keep a fixed
   distance under any pose (parent-child and sibling pairs, e.g. knee-ankle or hip-hip) are
   measured in every frame; their medians (less the lengthening that joint noise causes, with the
   noise estimated from third differences over time) are matched by the skeleton's bone lengths
   through a small Gauss-Newton solve over ``betas`` with a ridge prior, iteratively reweighted by a
   Cauchy loss (``robust_shape``) so that a length made wrong by one badly defined k4abt joint does
   not bend every other bone.
2. Pose per frame, all frames batched in torch:
   - analytic initialisation: the root by a weighted Kabsch alignment of the Kinect joints that move
     rigidly with the pelvis (PELVIS, hips), then in kinematic order every joint whose children are
     Kinect targets is rotated onto them (a swing for one child, Kabsch for several);
   - a few Levenberg-Marquardt steps on the joints only, per frame with its own adaptive damping
     (a step is kept only where it lowers that frame's cost). Unknowns are world-frame rotation
     increments of the joints that move a target (turning the joint's subtree about the joint) plus
     the translation; the Jacobian is analytic (``d p_k / d w_a = -[p_k - p_a]_x`` for a descendant k
     of joint a). Residuals: the confidence-weighted (Huber) distances to the Kinect joints, a pose
     prior towards the rest pose (``log R_a``), and a temporal term towards the slerp midpoint of the
     neighbouring frames' current estimates (a second-difference penalty: no lag on steady motion).
     The priors decide what the Kinect cannot see: twists about bones and joints it is unsure of;
     the spine and clavicles, whose joints are too close together for k4abt's loosely defined trunk
     joints to turn them, get a stronger one (``trunk_prior_m_per_rad``); with ``hinge_prior``, knees
     and elbows, which are hinges, get one against swinging sideways.
3. Joint-definition offsets (``joint_offsets``): k4abt's joints sit off the SMPL-X joints they are
   modelled from by a constant amount in the body segment's frame. The residual of every Kinect
   joint, turned into the frame of the SMPL-X joint that carries it, has its per-axis median over
   the confident frames taken as that offset (shrunk towards zero by its uncertainty); the targets
   less their offsets give a new shape and a new pose, a few times over. What a constant change of
   pose or shape can explain stays ambiguous, but offsets that contradict the other joints no
   longer bend the pose.
4. Wrists seen by the 360 camera (``wrist_targets``, ``hand_wrists``): k4abt's wrist joints are far
   noisier than its other joints, while the hands lifted from the panorama put their wrists within a
   centimetre or so; where a hand was observed, its wrist replaces the Kinect's as the target of
   that SMPL-X wrist, with the weight ``hand_wrist_weight`` and no joint-definition offset (it is a
   SMPL-X wrist, not a k4abt joint). The forearm and the elbow then follow the hand.
5. Mirrored runs (``mirror_guard``): k4abt, looking at a back, may report every left/right pair
   exchanged for a second or so; where the multi-Kinect fusion left such a run (at a session's end,
   after a drop-out), the fitted body would turn around. The body's horizontal lateral direction
   (its shoulders and hips) cannot turn by more than ``mirror_jump_deg`` within a few frames, so a
   jump there and back marks a run whose labels are exchanged back before anything is fitted
   (:func:`mirrored_frames`).
6. Frames with fewer than ``min_joints`` usable joints are not fitted but interpolated from their
   neighbours (slerp of local rotations, linear translation; held at the ends) and reported in
   :attr:`BodyFit.interpolated`.

Hand joints (25..54), jaw, eyes, feet, head and wrists are not moved by the Kinect joints used and
stay identity; hands are set by :mod:`omnimocap.fusion.hand_integration`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from omnimocap.data.skeletons import (
    KINECT_BODY_FOR_FIT,
    KINECT_FROM_SMPLX,
    KINECT_INDEX,
    KINECT_JOINTS,
    SIDES,
    SMPLX_INDEX,
    SMPLX_NUM_JOINTS,
    kinect_from_smplx_matrix,
    smplx_body_joint_ids,
)
from omnimocap.errors import InputError
from omnimocap.fusion.body_model import Skeleton, forward_kinematics

# The fit works on the 22 skeleton joints; nothing the Kinect sees depends on the others.
_NUM_BODY = len(smplx_body_joint_ids())
# Kinect joints that move rigidly with the root: its initial alignment (the spine bends).
_TORSO = ("PELVIS", "HIP_LEFT", "HIP_RIGHT")
TRUNK_JOINTS = ("spine1", "spine2", "spine3", "left_collar", "right_collar")
# Hinge joints and the axis of their own frame (x, y, z = 0, 1, 2; SMPL-X's rest frames are the
# model's: y up, x to the body's left, z forward) they cannot turn about: a knee bends about x and a
# shin turns a little about its own length (y), but it does not swing sideways (z); an elbow bends
# about y in the rest pose (the arm along x), the forearm twists about x, and it does not swing up
# and down (z).
HINGE_JOINTS = {"left_knee": 2, "right_knee": 2, "left_elbow": 2, "right_elbow": 2}


@dataclass
class BodyFitConfig:
    """Settings of :func:`fit_body` (saved with the results)."""

    iterations: int = 6
    """Levenberg-Marquardt steps after the analytic initialisation."""
    confidence_weights: tuple[float, float, float, float] = (0.0, 0.3, 1.0, 1.0)
    """Weight of a Kinect joint per k4abt confidence level NONE, LOW (occluded, predicted), MEDIUM, HIGH."""
    pose_prior_m_per_rad: float = 0.003
    """Pose prior strength: one radian of any non-root joint rotation costs like this many metres of
    (full-confidence) joint error. Small: it only decides what the joints leave open (twists)."""
    trunk_prior_m_per_rad: float = 0.1
    """Pose prior strength of the spine and clavicle joints (:data:`TRUNK_JOINTS`): their SMPL-X
    joints sit a few centimetres apart and k4abt's trunk joints a centimetre or two off them, so
    without it the spine zigzags to follow those offsets. One degree costs like 1.7 mm; a bend
    shared by the three spine joints costs least."""
    temporal_m_per_rad: float = 0.1
    """Temporal smoothness: one radian between a frame's local rotation and the midpoint (slerp) of
    its two neighbours' costs like this many metres of joint error."""
    hinge_prior: bool = False
    """Knees and elbows are hinges (:data:`HINGE_JOINTS`): their sideways swing costs
    ``hinge_prior_m_per_rad``. With a free ball joint there, every k4abt knee, ankle, elbow or wrist
    reported off the limb's plane (its definition offset, its noise) is followed by swinging the
    shin (forearm) sideways, which no knee or elbow does. Measured on five 30 s sessions (field, independent
    k4abt errors, ideal; the body refitted from the same fused joints): 0.06-0.28 mm better on each.
    Off by default: the live body's warm start, which runs the same fit frame by frame, does not yet reach
    the whole-session fit under it (live/process parity 1.55 mm for a 1.5 mm bound)."""
    hinge_prior_m_per_rad: float = 0.3
    """Strength of the hinge prior: one degree of sideways swing at a knee or elbow costs like this
    many metres per radian of joint error (0.3: about 5 mm per degree)."""
    huber_m: float = 0.05
    """Joint distances above this (metres) are down-weighted (Huber), so outliers pull less."""
    damping: float = 1e-9
    """Floor added to the normal equations' diagonal (m^2); the adaptive Marquardt damping comes on top."""
    min_joints: int = 3
    """A frame with fewer usable Kinect joints is interpolated from its neighbours instead of fitted."""
    shape_min_confidence: int = 2
    """Lowest confidence level whose joints measure limb lengths (falls back to LOW when none)."""
    shape_prior: float = 5e-5
    """Ridge weight on betas in the limb-length fit (m^2 per unit beta^2; betas are population
    standard deviations). Lengths off by a joint's definition are down-weighted by ``robust_shape``,
    so the ridge only keeps directions the lengths do not measure near the mean shape; a stronger one
    shrinks real shapes (on a simulated field session, 2e-4 cost 0.6-0.8 mm of body joint error)."""
    max_abs_beta: float = 5.0
    """Fitted betas are clipped to +- this."""
    device: str = "cpu"
    """Torch device for the pose solve ("cpu" or "cuda")."""
    robust_shape: bool = True
    """Limb lengths that disagree with the shape the others give count less (a Cauchy loss of scale
    ``shape_loss_m``): a k4abt joint defined a few centimetres off along one bone makes that one
    length wrong, and with a plain least-squares fit the whole shape (every bone) would follow it."""
    shape_loss_m: float = 0.015
    """Scale of the Cauchy loss on limb lengths (metres): about the spread of k4abt's joint definitions."""
    joint_offsets: bool = True
    """Estimate, per person, a constant offset of every Kinect joint in its body segment's frame
    (k4abt's joints are not SMPL-X joints: each sits a centimetre or so off, the same way in every
    frame) jointly with the shape, and fit the pose to the corrected joints."""
    offset_rounds: int = 3
    """Alternations of offsets, shape and pose after the first fit."""
    offset_iterations: int = 3
    """Levenberg-Marquardt steps of the pose in each alternation."""
    offset_prior_m: float = 0.015
    """Prior RMS of an offset per axis (metres): offsets are shrunk towards zero by their uncertainty."""
    offset_dead_zone_m: float = 0.002
    """Offsets are moved this much towards zero per axis and vanish below it (metres)."""
    max_offset_m: float = 0.05
    """Offsets are clipped to +- this per axis (metres)."""
    offset_min_frames: int = 30
    """A joint confidently seen in fewer frames keeps a zero offset."""
    offset_correlation_frames: float = 5.0
    """Frames per independent sample of a joint's residual (its noise is correlated over time)."""
    hand_wrists: bool = True
    """Where the 360 camera observed a hand, fit the SMPL-X wrist to the hand's wrist instead of the
    Kinect's wrist joint (``fit_body``'s ``wrist_targets``)."""
    hand_wrist_weight: float = 4.0
    """Weight of an observed hand wrist, against 1 for a Kinect joint of MEDIUM or HIGH confidence
    (a hand wrist is about twice as precise per axis)."""
    mirror_guard: bool = True
    """Exchange the left/right labels back in short runs of frames where the body's facing direction
    (from its hips and shoulders) jumps by more than ``mirror_jump_deg`` into the run and back out of
    it: no one turns that fast, while k4abt, looking at a back, reports every left/right pair
    exchanged for a second or so. Runs the multi-Kinect fusion left mirrored (e.g. at a session's
    end, or after a drop-out) would otherwise turn the whole fitted body around."""
    mirror_jump_deg: float = 120.0
    """Change of the horizontal facing direction between two frames (at most ``mirror_max_gap``
    frames apart) that only an exchange of left and right explains (degrees)."""
    mirror_max_gap: int = 10
    """Frames without confidently seen hips and shoulders (e.g. a drop-out bridged by prediction)
    across which a facing jump is still judged: a third of a second at 30 fps, in which a turn by
    ``mirror_jump_deg`` is still faster than anyone turns."""
    mirror_max_frames: int = 90
    """Longest run taken as mirrored (frames): k4abt's front/back confusions last about a second."""


@dataclass
class BodyFit:
    """A fitted SMPL-X body sequence (world frame = model frame, y up, metres)."""

    local_rotmats: np.ndarray  # (F, 55, 3, 3) local rotations, SMPL-X order
    betas: np.ndarray  # (B,)
    transl: np.ndarray  # (F, 3) metres
    joints: np.ndarray  # (F, 55, 3) world, metres
    interpolated: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """(F,) frames that had too few Kinect joints and were interpolated from neighbours."""
    residual_mm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """(F,) weighted mean distance between model and Kinect joints, millimetres (NaN where interpolated)."""
    joint_offsets: dict = field(default_factory=dict)
    """Kinect joint name -> its estimated constant offset (3,) in its segment's frame, metres
    (zeros without ``BodyFitConfig.joint_offsets``)."""


@dataclass
class BodyFitInit:
    """A pose :func:`fit_body` starts its Levenberg-Marquardt steps from, in place of its analytic
    initialisation: a warm start, e.g. the previous frame's fit for the frame that follows it (world
    frame = model frame, y up, metres)."""

    local_rotmats: np.ndarray
    """(F, 55, 3, 3) local rotations, SMPL-X order, one per frame of the fit (its first 22, the
    skeleton's, are used): e.g. :attr:`BodyFit.local_rotmats`."""
    transl: np.ndarray
    """(F, 3) root translation per frame, metres: e.g. :attr:`BodyFit.transl`."""


# --- small SO(3) helpers (torch) -------------------------------------------------------------------


def _so3_exp(v):
    """Axis-angle (..., 3) to rotation matrices (..., 3, 3) (Rodrigues, safe at zero)."""
    import torch

    theta2 = (v * v).sum(-1, keepdim=True).unsqueeze(-1)
    theta = theta2.sqrt()
    small = theta2 < 1e-12
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / torch.where(small, 1.0, theta))
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / torch.where(small, 1.0, theta2))
    K = torch.zeros(v.shape[:-1] + (3, 3), dtype=v.dtype, device=v.device)
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    K = K - K.transpose(-1, -2)
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    return eye + a * K + b * (K @ K)


def _so3_right_jacobian_inv(phi):
    """Inverse right Jacobian of SO(3) (..., 3, 3) at axis-angle ``phi`` (..., 3):
    ``log(exp(phi) exp(v)) = phi + J_r^-1(phi) v`` to first order in v."""
    import torch

    theta2 = (phi * phi).sum(-1, keepdim=True).unsqueeze(-1)
    theta = theta2.sqrt()
    small = theta2 < 1e-8
    safe = torch.where(small, 1.0, theta)
    c = torch.where(small, 1.0 / 12.0 + theta2 / 720.0,
                    1.0 / safe ** 2 - (1.0 + torch.cos(safe)) / (2.0 * safe * torch.sin(safe)))
    K = torch.zeros(phi.shape[:-1] + (3, 3), dtype=phi.dtype, device=phi.device)
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -phi[..., 2], phi[..., 1], -phi[..., 0]
    K = K - K.transpose(-1, -2)
    return torch.eye(3, dtype=phi.dtype, device=phi.device) + 0.5 * K + c * (K @ K)


def _so3_log(R):
    """Rotation matrices (..., 3, 3) to axis-angle (..., 3) (via quaternions: stable near 0 and pi)."""
    import torch

    tr = R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2]
    diag = torch.stack([tr, R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]], dim=-1)
    k = diag.argmax(-1, keepdim=True)
    # The four algebraically equal quaternion formulas; pick the best-conditioned per matrix.
    w = torch.stack([1 + tr, R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    x = torch.stack([R[..., 2, 1] - R[..., 1, 2], 1 + 2 * R[..., 0, 0] - tr, R[..., 0, 1] + R[..., 1, 0], R[..., 0, 2] + R[..., 2, 0]], -1)
    y = torch.stack([R[..., 0, 2] - R[..., 2, 0], R[..., 0, 1] + R[..., 1, 0], 1 + 2 * R[..., 1, 1] - tr, R[..., 1, 2] + R[..., 2, 1]], -1)
    z = torch.stack([R[..., 1, 0] - R[..., 0, 1], R[..., 0, 2] + R[..., 2, 0], R[..., 1, 2] + R[..., 2, 1], 1 + 2 * R[..., 2, 2] - tr], -1)
    q = torch.stack([w, x, y, z], dim=-2).gather(-2, k.unsqueeze(-1).expand(k.shape[:-1] + (1, 4))).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[..., :1] < 0, -q, q)
    s = q[..., 1:].norm(dim=-1, keepdim=True)
    angle = 2.0 * torch.atan2(s, q[..., :1])
    scale = torch.where(s < 1e-12, 2.0 / q[..., :1].clamp_min(1e-12), angle / s.clamp_min(1e-12))
    return q[..., 1:] * scale


def _kabsch_rotation(src, dst, w):
    """Batched weighted rotation R minimising sum w |R src - dst|^2 (no centring). src, dst (..., N, 3)."""
    import torch

    H = torch.einsum("...n,...ni,...nj->...ij", w, src, dst)
    U, _, Vh = torch.linalg.svd(H)
    V = Vh.transpose(-1, -2)
    d = torch.sign(torch.linalg.det(V @ U.transpose(-1, -2)))
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), torch.where(d == 0, 1.0, d)], -1))
    return V @ D @ U.transpose(-1, -2)


def _swing(u, v):
    """Smallest rotation turning direction u (..., 3) onto direction v (..., 3); identity where v is 0."""
    import torch

    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    vn = v.norm(dim=-1, keepdim=True)
    v = v / vn.clamp_min(1e-12)
    axis = torch.linalg.cross(u, v, dim=-1)
    s = axis.norm(dim=-1, keepdim=True)
    c = (u * v).sum(-1, keepdim=True)
    angle = torch.atan2(s, c)
    # Opposite directions: any axis perpendicular to u.
    perp = torch.linalg.cross(u, torch.tensor([1.0, 0.0, 0.0], dtype=u.dtype, device=u.device).expand(u.shape), dim=-1)
    perp2 = torch.linalg.cross(u, torch.tensor([0.0, 1.0, 0.0], dtype=u.dtype, device=u.device).expand(u.shape), dim=-1)
    perp = torch.where(perp.norm(dim=-1, keepdim=True) > 1e-6, perp, perp2)
    axis = torch.where(s > 1e-9, axis / s.clamp_min(1e-12), perp / perp.norm(dim=-1, keepdim=True).clamp_min(1e-12))
    return _so3_exp(axis * angle * (vn > 1e-9))


# --- shape --------------------------------------------------------------------------------------


def _single_correspondences() -> dict[int, int]:
    """Kinect joint index -> SMPL-X joint index for the Kinect joints that are one SMPL-X joint."""
    out = {}
    for name, blend in KINECT_FROM_SMPLX.items():
        if len(blend) == 1 and blend[0][1] == 1.0:
            out[KINECT_INDEX[name]] = SMPLX_INDEX[blend[0][0]]
    return out


def _rigid_pairs(parents: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
    """(kinect a, kinect b, smplx a, smplx b) pairs whose distance no pose changes: SMPL-X
    parent-child or sibling joints that both have a one-joint Kinect counterpart."""
    single = _single_correspondences()
    items = sorted(single.items())
    pairs = []
    for i, (ka, sa) in enumerate(items):
        for kb, sb in items[i + 1:]:
            if parents[sb] == sa or parents[sa] == sb or parents[sa] == parents[sb]:
                pairs.append((ka, kb, sa, sb))
    return pairs


def _noise_variance(x: np.ndarray) -> np.ndarray:
    """Per-joint, per-axis noise variance (32,) of a joint track (F, 32, 3) in m^2, from third
    differences over time (white noise gives var(d3) = 20 var; smooth motion contributes little).
    Robust: the median of squares, 0.455 var for a Gaussian. Zero where too few frames."""
    if len(x) < 8:
        return np.zeros(x.shape[1])
    d3 = np.diff(x, n=3, axis=0) ** 2  # (F-3, 32, 3)
    out = np.zeros(x.shape[1])
    for j in range(x.shape[1]):
        v = d3[:, j][np.all(np.isfinite(d3[:, j]), axis=-1)]
        if len(v) >= 5:
            out[j] = np.median(v) / (20.0 * 0.455)
    return out


def fit_betas(kinect_joints: np.ndarray, levels: np.ndarray, skeleton: Skeleton, config: BodyFitConfig) -> np.ndarray:
    """Shape coefficients (B,) from robust (median) limb lengths; see the module docstring.

    ``kinect_joints`` (F, 32, 3) world metres, NaN where missing; ``levels`` (F, 32) k4abt confidence."""
    finite = np.all(np.isfinite(kinect_joints), axis=-1)
    conf_ok = finite & (levels >= config.shape_min_confidence)
    seen = finite & (levels >= 1)
    noise_var = _noise_variance(kinect_joints)
    rows, targets, counts = [], [], []
    for ka, kb, sa, sb in _rigid_pairs(skeleton.parents):
        d2 = np.sum((kinect_joints[:, ka] - kinect_joints[:, kb]) ** 2, axis=-1)
        good = conf_ok[:, ka] & conf_ok[:, kb]
        if not np.any(good):
            good = seen[:, ka] & seen[:, kb]
        if not np.any(good):
            continue
        rows.append((sa, sb))
        # Noise lengthens measured distances on average: E|d|^2 = L^2 + 3 (var_a + var_b).
        length2 = np.median(d2[good]) - 3.0 * (noise_var[ka] + noise_var[kb])
        targets.append(np.sqrt(max(length2, 0.25 * np.median(d2[good]))))
        counts.append(good.sum())
    B = skeleton.num_betas
    if not rows:
        return np.zeros(B)
    sa, sb = np.array(rows).T
    target = np.array(targets)
    w = np.sqrt(np.asarray(counts, dtype=np.float64) / max(counts))
    rest_diff = skeleton.rest_joints[sa] - skeleton.rest_joints[sb]  # (P, 3)
    dirs_diff = skeleton.shape_dirs[sa] - skeleton.shape_dirs[sb]  # (P, 3, B)
    betas = np.zeros(B)
    lam = np.sqrt(config.shape_prior)
    for _ in range(20):
        vec = rest_diff + dirs_diff @ betas
        length = np.linalg.norm(vec, axis=-1)
        wr = w
        if config.robust_shape:
            # iteratively reweighted: the Cauchy weight 1 / (1 + u^2) on squared residuals
            u = (length - target) / config.shape_loss_m
            wr = w / np.sqrt(1.0 + u * u)
        r = wr * (length - target)
        J = wr[:, None] * np.einsum("pc,pcb->pb", vec / length[:, None], dirs_diff)
        A = np.concatenate([J, lam * np.eye(B)])
        b = np.concatenate([r, lam * betas])
        step = np.linalg.lstsq(A, -b, rcond=None)[0]
        betas = betas + step
        if np.max(np.abs(step)) < 1e-7:
            break
    return np.clip(betas, -config.max_abs_beta, config.max_abs_beta)


# --- pose -------------------------------------------------------------------------------------------


def _fill_gaps_for_init(x: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Per-joint linear interpolation over frames of missing joints (init only); NaN where never seen."""
    out = np.where(ok[..., None], x, np.nan)
    idx = np.arange(len(x))
    for j in range(x.shape[1]):
        m = ok[:, j]
        if m.any() and not m.all():
            for c in range(3):
                out[:, j, c] = np.interp(idx, idx[m], x[m, j, c])
    return out


class _Problem:
    """Constant tensors of one fit: rest joints, blend matrix, which joints are optimised."""

    def __init__(self, skeleton: Skeleton, betas: np.ndarray, device, dtype):
        import torch

        self.parents = skeleton.parents[:_NUM_BODY]
        rest = skeleton.joints_at_rest(betas)[:_NUM_BODY]
        W = kinect_from_smplx_matrix()[:, :_NUM_BODY]
        targets = np.flatnonzero(np.abs(W).sum(0) > 0)
        ancestors = np.zeros((_NUM_BODY, _NUM_BODY), dtype=bool)  # [k, a]: a is a strict ancestor of k
        for k in range(_NUM_BODY):
            a = self.parents[k]
            while a >= 0:
                ancestors[k, a] = True
                a = self.parents[a]
        self.active = np.flatnonzero(ancestors[targets].any(0))  # joints whose rotation moves a target
        self.rest = torch.as_tensor(rest, dtype=dtype, device=device)
        self.W = torch.as_tensor(W, dtype=dtype, device=device)
        # W restricted per active joint a to the joints it moves: Wmask[m, k, a] = W[m, k] [a ancestor of k].
        wmask = W[:, :, None] * ancestors[None, :, self.active]
        self.Wmask = torch.as_tensor(wmask, dtype=dtype, device=device)
        self.Wmask_sum = torch.as_tensor(wmask.sum(1), dtype=dtype, device=device)
        self.bone = self.rest - self.rest[[max(p, 0) for p in self.parents]]
        self.fit_rows = {k: row for row, k in enumerate(KINECT_BODY_FOR_FIT)}
        # SMPL-X joint -> the Kinect row that locates it (its weight >= 0.5, the highest joint of the blend).
        self.target_rows: dict[int, int] = {}
        self.blend_others: dict[int, list[int]] = {}
        for row in range(W.shape[0]):
            nz = np.flatnonzero(W[row])
            c = int(nz.max())
            self.blend_others[row] = [int(o) for o in nz if o != c]
            if W[row, c] >= 0.5:
                self.target_rows[c] = row

    def fk(self, R, transl):
        """Joints (N, 22, 3) and global rotations (N, 22, 3, 3) from local rotations (N, 22, 3, 3)."""
        import torch

        glob = [R[:, 0]]
        pos = [self.rest[0].expand(R.shape[0], 3)]
        for j in range(1, _NUM_BODY):
            p = self.parents[j]
            glob.append(glob[p] @ R[:, j])
            pos.append(pos[p] + glob[p] @ self.bone[j])
        return torch.stack(pos, 1) + transl[:, None], torch.stack(glob, 1)


def _initialise(prob: _Problem, X, w):
    """Analytic pose: X (N, M, 3) Kinect targets (NaN-free; weight 0 where unknown), w (N, M)."""
    import torch

    N = X.shape[0]
    dtype, device = X.dtype, X.device
    eye = torch.eye(3, dtype=dtype, device=device)
    R = eye.expand(N, _NUM_BODY, 3, 3).clone()
    # Root: Kabsch of the torso joints against the rest-pose model's Kinect joints.
    rows = [prob.fit_rows[KINECT_INDEX[n]] for n in _TORSO]
    src = (prob.W[rows] @ prob.rest).expand(N, len(rows), 3)
    wt = w[:, rows]
    wsum = wt.sum(-1, keepdim=True).clamp_min(1e-12)
    mu_s = (wt[..., None] * src).sum(1) / wsum
    mu_d = (wt[..., None] * X[:, rows]).sum(1) / wsum
    R0 = _kabsch_rotation(src - mu_s[:, None], X[:, rows] - mu_d[:, None], wt)
    R[:, 0] = torch.where((wt > 0).sum(-1)[:, None, None] >= 3, R0, eye)
    transl = mu_d - (R[:, 0] @ mu_s[..., None]).squeeze(-1) + (R[:, 0] @ prob.rest[0]) - prob.rest[0]
    transl = torch.where(wsum > 1e-9, transl, X[:, rows[0]] - prob.rest[0])
    # Other joints in kinematic order: rotate each onto its children that are Kinect targets. A
    # child's target comes from a Kinect row where it carries at least half the weight and the rest
    # of the blend sits on joints already placed (e.g. SPINE_NAVEL gives spine2 once spine1 is placed).
    children: dict[int, list[tuple[int, int]]] = {j: [] for j in range(_NUM_BODY)}
    for c, row in prob.target_rows.items():
        if c > 0:
            children[prob.parents[c]].append((c, row))
    glob = [R[:, 0]]
    pos = [prob.rest[0] + transl]
    for j in range(1, _NUM_BODY):
        p = prob.parents[j]
        pos.append(pos[p] + glob[p] @ prob.bone[j])
        kids = [(c, row) for c, row in children[j] if all(o <= j for o in prob.blend_others[row])]
        if kids and j in prob.active:
            u = torch.stack([prob.bone[c] for c, _ in kids]).expand(N, len(kids), 3)
            v = torch.stack([
                (X[:, row] - sum(prob.W[row, o] * pos[o] for o in prob.blend_others[row])) / prob.W[row, c]
                for c, row in kids], dim=1) - pos[j][:, None]
            v = (glob[p].transpose(-1, -2)[:, None] @ v[..., None]).squeeze(-1)  # into the parent's frame
            wk = w[:, [row for _, row in kids]]
            if len(kids) == 1:
                Rj = _swing(u[:, 0], v[:, 0] * (wk > 0))
            else:
                # Directions only: bone lengths already come from the shape fit.
                vdir = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12) * u.norm(dim=-1, keepdim=True)
                Rk = _kabsch_rotation(u, vdir, wk)
                Rj = torch.where((wk > 0).sum(-1)[:, None, None] >= 2, Rk, eye)
            R[:, j] = Rj
        glob.append(glob[p] @ R[:, j])
    return R, transl


def _solve(prob: _Problem, R, transl, X, w, frame_index, config: BodyFitConfig):
    """Levenberg-Marquardt on the joints (see the module docstring), per frame: a step is kept only
    where it lowers that frame's cost, else the frame's damping grows. Returns R, transl and the
    weighted mean joint distance per frame (metres)."""
    import torch

    N = X.shape[0]
    A = len(prob.active)
    M = X.shape[1]
    dtype, device = X.dtype, X.device
    prior2 = torch.as_tensor(_pose_prior_m_per_rad(prob, config) ** 2, dtype=dtype, device=device)
    iso2 = prior2.min(-1).values  # (A,) the same on every axis
    extra2 = prior2 - iso2[:, None]  # (A, 3) the hinge prior's addition on some axes
    s_temp2 = config.temporal_m_per_rad**2
    fi = torch.as_tensor(frame_index, device=device)
    # Frames whose both neighbours are consecutive fitted frames get the temporal term.
    interior = torch.zeros(N, dtype=dtype, device=device)
    if N > 2:
        interior[1:-1] = ((fi[1:-1] - fi[:-2] == 1) & (fi[2:] - fi[1:-1] == 1)).to(dtype)
    act = torch.as_tensor(prob.active, device=device)
    eye3 = torch.eye(3, dtype=dtype, device=device)
    # (A, 3, 3) row and column indices of the joints' diagonal 3x3 blocks of the normal matrix
    rows = (3 * torch.arange(A, device=device)[:, None, None] + torch.arange(3, device=device)[None, :, None]).expand(A, 3, 3)
    cols = rows.transpose(-1, -2)
    delta_h = config.huber_m

    def costs(P, Ra, mid):
        dist = (torch.einsum("mk,nkc->nmc", prob.W, P) - X).norm(dim=-1)
        rho = torch.where(dist > delta_h, 2 * delta_h * dist - delta_h**2, dist * dist)
        c = (w * rho).sum(-1) + (_so3_log(Ra) ** 2 * prior2).sum((-1, -2))
        if mid is not None:
            c = c + s_temp2 * interior * (_so3_log(mid.transpose(-1, -2) @ Ra) ** 2).sum((-1, -2))
        return c

    lam = torch.full((N, 1), 1e-3, dtype=dtype, device=device)
    P, G = prob.fk(R, transl)
    for _ in range(config.iterations):
        Ra = R[:, act]
        mid = None
        if N > 2 and s_temp2 > 0:
            # Towards the midpoint of the neighbours: penalises the second difference, so steady
            # motion is not pulled back (a first-difference term would lag).
            prev, nxt = torch.cat([Ra[:1], Ra[:-1]]), torch.cat([Ra[1:], Ra[-1:]])
            mid = prev @ _so3_exp(0.5 * _so3_log(prev.transpose(-1, -2) @ nxt))
        cost = costs(P, Ra, mid)
        r = torch.einsum("mk,nkc->nmc", prob.W, P) - X  # (N, M, 3)
        dist = r.norm(dim=-1)
        wr = w * torch.where(dist > delta_h, delta_h / dist.clamp_min(1e-12), torch.ones_like(dist))
        # Unknowns: rotation increments w_a in the world frame (G_a <- exp(w_a) G_a turns the
        # subtree of a about joint a) and the translation. For target row m:
        # d y_m / d w_a = -[d_ma]_x with d_ma = sum_k W[m,k] [a ancestor of k] (P_k - P_a).
        d = torch.einsum("mka,nkc->nmac", prob.Wmask, P) - prob.Wmask_sum[None, :, :, None] * P[:, None, act]
        zero = torch.zeros_like(d[..., 0])
        dx, dy, dz = d.unbind(-1)
        Jy = torch.stack([zero, dz, -dy, -dz, zero, dx, dy, -dx, zero], dim=-1).reshape(N, M, A, 3, 3)
        Jy = torch.cat([Jy.permute(0, 1, 3, 2, 4).reshape(N, M, 3, 3 * A), eye3.expand(N, M, 3, 3)], dim=-1)
        Jy = Jy.reshape(N, 3 * M, 3 * A + 3)
        Jw = Jy * wr.repeat_interleave(3, dim=1)[..., None]
        H = Jw.transpose(1, 2) @ Jy
        g = (Jw.transpose(1, 2) @ r.reshape(N, 3 * M, 1)).squeeze(-1)
        # Priors on log(R_a): with world increments their Jacobian is G_a^T, so they add s^2 I to H
        # and s^2 G_a log(.) to the gradient.
        Ga = G[:, act]
        # What the hinge prior adds on some axes of a joint's own frame is a residual h_c log(R_a)_c
        # of a joint that may be bent far from rest: its Jacobian in the local increment is the
        # inverse right Jacobian of SO(3), J_r^-1(log R_a), then G_a^T.
        phi = _so3_log(Ra)
        grad = phi * iso2[:, None]
        block = iso2[None, :, None, None] * eye3
        if extra2.any():
            Jinv = _so3_right_jacobian_inv(phi)
            grad = grad + (Jinv.transpose(-1, -2) @ (extra2 * phi)[..., None]).squeeze(-1)
            Jg = Jinv @ Ga.transpose(-1, -2)
            block = block + Jg.transpose(-1, -2) @ (extra2[..., None] * Jg)
        if mid is not None:
            grad = grad + s_temp2 * _so3_log(mid.transpose(-1, -2) @ Ra) * interior[:, None, None]
            block = block + s_temp2 * interior[:, None, None, None] * eye3
        grad = (Ga @ grad[..., None]).squeeze(-1)
        H[:, rows, cols] += block  # each joint's 3x3 block on the diagonal, in one indexed add
        g[:, : 3 * A] += grad.reshape(N, 3 * A)
        hd = torch.diagonal(H, dim1=-2, dim2=-1)
        H = H + torch.diag_embed(lam * hd + config.damping)
        chol, info = torch.linalg.cholesky_ex(H)
        delta = -torch.cholesky_solve(g[..., None], chol).squeeze(-1)
        delta = torch.where((info == 0)[:, None], delta, torch.zeros_like(delta))
        R_new = R.clone()
        local_step = (Ga.transpose(-1, -2) @ delta[:, : 3 * A].reshape(N, A, 3, 1)).squeeze(-1)
        R_new[:, act] = Ra @ _so3_exp(local_step)
        t_new = transl + delta[:, 3 * A:]
        P_new, G_new = prob.fk(R_new, t_new)
        better = costs(P_new, R_new[:, act], mid) <= cost
        b1 = better[:, None]
        R = torch.where(b1[..., None, None], R_new, R)
        transl = torch.where(b1, t_new, transl)
        P = torch.where(b1[..., None], P_new, P)
        G = torch.where(b1[..., None, None], G_new, G)
        lam = torch.where(b1, lam * 0.3, lam * 10.0).clamp(1e-7, 1e7)
    dist = (torch.einsum("mk,nkc->nmc", prob.W, P) - X).norm(dim=-1)
    resid = (w * dist).sum(-1) / w.sum(-1).clamp_min(1e-12)
    return R, transl, resid


def _pose_prior_m_per_rad(prob: _Problem, config: BodyFitConfig) -> np.ndarray:
    """Pose prior strength (metres per radian) of each active joint (``prob.active`` order) about
    each axis of its own frame, (A, 3): none for the root, ``trunk_prior_m_per_rad`` for
    :data:`TRUNK_JOINTS`, ``pose_prior_m_per_rad`` else; with ``config.hinge_prior``, the axis a
    hinge joint (:data:`HINGE_JOINTS`) cannot turn about gets ``hinge_prior_m_per_rad``."""
    trunk = {SMPLX_INDEX[n] for n in TRUNK_JOINTS}
    s = np.array([config.trunk_prior_m_per_rad if a in trunk else config.pose_prior_m_per_rad for a in prob.active])
    s = np.repeat(np.where(prob.active == 0, 0.0, s)[:, None], 3, axis=1)
    if config.hinge_prior:
        for name, axis in HINGE_JOINTS.items():
            hit = np.flatnonzero(prob.active == SMPLX_INDEX[name])
            s[hit, axis] = np.maximum(s[hit, axis], config.hinge_prior_m_per_rad)
    return s


def _interpolate_missing(local: np.ndarray, transl: np.ndarray, fitted: np.ndarray) -> None:
    """Fill frames not fitted (in place): slerp/linear between fitted neighbours, held at the ends."""
    from omnimocap.geometry.resample import interpolate_positions, interpolate_rotations

    F = len(fitted)
    idx = np.arange(F, dtype=np.float64)
    src = idx[fitted]
    gaps = ~fitted
    R_out, ok = interpolate_rotations(src, local[fitted], np.ones(len(src), dtype=bool), idx, max_gap=np.inf)
    t_out = interpolate_positions(src, transl[fitted], idx, max_gap=np.inf)
    nearest = np.clip(np.searchsorted(src, idx), 0, len(src) - 1)
    prev = np.clip(nearest - 1, 0, len(src) - 1)
    nearest = np.where(np.abs(src[prev] - idx) < np.abs(src[nearest] - idx), prev, nearest)
    hold = gaps & ~ok
    local[gaps & ok] = R_out[gaps & ok]
    local[hold] = local[fitted][nearest[hold]]
    fill_t = gaps & np.all(np.isfinite(t_out), axis=-1)
    transl[fill_t] = t_out[fill_t]
    hold_t = gaps & ~fill_t
    transl[hold_t] = transl[fitted][nearest[hold_t]]


def fit_body(
    kinect_joints: np.ndarray,
    confidence: np.ndarray,
    skeleton: Skeleton,
    config: BodyFitConfig | None = None,
    betas: np.ndarray | None = None,
    joint_offsets: np.ndarray | None = None,
    wrist_targets: np.ndarray | None = None,
    *, init: BodyFitInit | None = None,
) -> BodyFit:
    """Fit SMPL-X body pose, shape and translation to one person's Kinect joints.

    Args:
        kinect_joints: (F, 32, 3) Kinect joints in the world frame (y up, metres), NaN where missing.
        confidence: (F, 32) k4abt confidence levels 0..3.
        skeleton: the SMPL-X skeleton (built-in or from a model file).
        config: settings; defaults when None.
        betas: (B,) shape to fit the pose with; default: fitted to these joints (:func:`fit_betas`).
            Parts of one session fitted separately share the shape fitted over the whole session.
        joint_offsets: (len(KINECT_BODY_FOR_FIT), 3) joint-definition offsets in their segments'
            frames (metres, :attr:`BodyFit.joint_offsets` in row order) to apply as they are, with
            ``betas``; default: estimated here when ``config.joint_offsets``.
        wrist_targets: (F, 2, 3) the SMPL-X wrists [left, right] of the hands observed by the 360
            camera, world metres, NaN where not observed; used with ``config.hand_wrists``.
        init: a pose to start from instead of the analytic initialisation (:class:`BodyFitInit`).
    Returns:
        :class:`BodyFit` (hands, jaw and eyes identity; see the module docstring).
    Raises:
        InputError: when no frame has enough joints to fit.
    """
    import torch

    config = config or BodyFitConfig()
    X_all, level, weights = _fit_inputs(kinect_joints, confidence, config)
    F = X_all.shape[0]

    betas = fit_betas(X_all, level, skeleton, config) if betas is None else np.asarray(betas, dtype=np.float64)

    rows = list(KINECT_BODY_FOR_FIT)
    X = X_all[:, rows]
    w = weights[:, rows]
    from_hand = _take_hand_wrists(X, w, wrist_targets, config)
    fitted = (w > 0).sum(-1) >= config.min_joints
    if not fitted.any():
        raise InputError(f"no frame has {config.min_joints} or more usable Kinect joints: nothing to fit the body to")
    frames = np.flatnonzero(fitted)
    X_init = _fill_gaps_for_init(X[frames], w[frames] > 0)
    w_init = np.where(np.all(np.isfinite(X_init), axis=-1), np.maximum(w[frames], 1e-3), 0.0)

    device = torch.device(config.device)
    dtype = torch.float64
    prob = _Problem(skeleton, betas, device, dtype)
    Xt = torch.as_tensor(np.nan_to_num(X[frames]), dtype=dtype, device=device)
    wt = torch.as_tensor(w[frames], dtype=dtype, device=device)
    offsets = np.zeros((len(rows), 3))
    with torch.no_grad():
        R, transl = _start(prob, X_init, w_init, init, frames, dtype, device)
        R, transl, resid = _solve(prob, R, transl, Xt, wt, frames, config)
        if config.joint_offsets:
            seg = torch.as_tensor(_segment_of_rows(prob), device=device)
            solve_cfg = replace(config, iterations=config.offset_iterations)
            fixed = joint_offsets is not None
            for _ in range(1 if fixed else config.offset_rounds):
                P, G = prob.fk(R, transl)
                if fixed:
                    offsets = np.asarray(joint_offsets, dtype=np.float64)
                else:
                    # the constant part of each Kinect joint's residual in its segment's frame
                    r = Xt - torch.einsum("mk,nkc->nmc", prob.W, P)
                    local = (G[:, seg].transpose(-1, -2) @ r[..., None]).squeeze(-1).cpu().numpy()
                    offsets = _robust_offsets(local, np.where(from_hand[frames], 0.0, w[frames]), config)
                corr = _rotate(G[:, seg], offsets, dtype, device).cpu().numpy()
                X_corr = X_all.copy()
                X_corr[np.ix_(frames, rows)] = X[frames] - np.where(from_hand[frames][..., None], 0.0, corr)
                if not fixed:
                    betas = fit_betas(X_corr, level, skeleton, config)
                    prob = _Problem(skeleton, betas, device, dtype)
                Xc = torch.as_tensor(np.nan_to_num(X_corr[:, rows][frames]), dtype=dtype, device=device)
                R, transl, resid = _solve(prob, R, transl, Xc, wt, frames, solve_cfg)

    local = np.broadcast_to(np.eye(3), (F, SMPLX_NUM_JOINTS, 3, 3)).copy()
    local[frames, :_NUM_BODY] = R.cpu().numpy()
    # Joints no Kinect target depends on (feet, head, wrists) stay at rest.
    inactive = np.setdiff1d(np.arange(_NUM_BODY), prob.active)
    local[:, inactive] = np.eye(3)
    trans = np.zeros((F, 3))
    trans[frames] = transl.cpu().numpy()
    if not fitted.all():
        _interpolate_missing(local, trans, fitted)
    joints, _ = forward_kinematics(skeleton, local, betas, trans)
    residual = np.full(F, np.nan)
    residual[frames] = resid.cpu().numpy() * 1000.0
    return BodyFit(local_rotmats=local, betas=betas, transl=trans, joints=joints,
                   interpolated=~fitted, residual_mm=residual,
                   joint_offsets={KINECT_JOINTS[k]: offsets[i] for i, k in enumerate(rows)})


def _fit_inputs(kinect_joints: np.ndarray, confidence: np.ndarray, config: BodyFitConfig
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The joints (F, 32, 3) the fit reads (short mirrored runs exchanged back when
    ``config.mirror_guard``), their confidence levels (F, 32) 0..3 and weights (F, 32), zero where
    a joint is missing."""
    X_all = np.asarray(kinect_joints, dtype=np.float64)
    conf = np.asarray(confidence)
    mirrored = mirrored_frames(X_all, conf, config) if config.mirror_guard else np.zeros(len(X_all), dtype=bool)
    if mirrored.any():
        X_all, conf = _exchange_sides(X_all, conf, mirrored)
    level = np.clip(np.nan_to_num(conf, nan=0).astype(int), 0, 3)
    weights = np.asarray(config.confidence_weights, dtype=np.float64)[level]
    return X_all, level, np.where(np.all(np.isfinite(X_all), axis=-1), weights, 0.0)


def _start(prob: _Problem, X_init: np.ndarray, w_init: np.ndarray, init: BodyFitInit | None, frames: np.ndarray,
           dtype, device):
    """The pose the steps start from, local rotations (N, 22, 3, 3) and translations (N, 3) of the
    fitted ``frames``: ``init``'s, else the analytic initialisation on the gap-filled targets
    ``X_init`` (N, M, 3) with weights ``w_init`` (N, M)."""
    import torch

    if init is None:
        return _initialise(prob, torch.as_tensor(np.nan_to_num(X_init), dtype=dtype, device=device),
                           torch.as_tensor(w_init, dtype=dtype, device=device))
    R = torch.as_tensor(np.asarray(init.local_rotmats)[frames, :_NUM_BODY], dtype=dtype, device=device)
    return R, torch.as_tensor(np.asarray(init.transl)[frames], dtype=dtype, device=device)


def _lr_pairs() -> tuple[np.ndarray, np.ndarray]:
    """Kinect joint indices of every LEFT joint and its RIGHT counterpart."""
    left = [KINECT_INDEX[n] for n in KINECT_JOINTS if n.endswith("_LEFT")]
    right = [KINECT_INDEX[n[: -len("_LEFT")] + "_RIGHT"] for n in KINECT_JOINTS if n.endswith("_LEFT")]
    return np.array(left), np.array(right)


def mirrored_frames(kinect_joints: np.ndarray, confidence: np.ndarray, config: BodyFitConfig) -> np.ndarray:
    """Frames (F,) bool whose Kinect joints carry exchanged left/right labels, judged from the body's
    lateral direction alone (``config.mirror_*``, see :attr:`BodyFitConfig.mirror_guard`).

    The lateral direction of a frame is (left - right) of its shoulders plus its hips, horizontal
    (world y up), where at least 5 cm long and all four joints are seen with at least MEDIUM
    confidence (predicted joints, e.g. a drop-out bridged between two labellings, turn smoothly
    from one to the other and are not judged). Between two frames at most ``mirror_max_gap`` apart, a
    turn of more than ``mirror_jump_deg`` is a jump; the jumps cut each stretch of judged frames into
    runs of alternating labelling, and the labelling with fewer frames is the mirrored one (its runs
    up to ``mirror_max_frames`` long are returned; frames without a lateral direction inside such a
    run count with it). ``kinect_joints`` (F, 32, 3) world metres, NaN where missing; ``confidence``
    (F, 32) k4abt levels 0..3."""
    X = np.asarray(kinect_joints, dtype=np.float64)
    level = np.nan_to_num(np.asarray(confidence, dtype=np.float64), nan=0.0)
    sure = np.ones(X.shape[0], dtype=bool)
    F = X.shape[0]
    out = np.zeros(F, dtype=bool)
    lateral = np.zeros((F, 2))
    for side in ("SHOULDER", "HIP"):
        d = X[:, KINECT_INDEX[f"{side}_LEFT"]] - X[:, KINECT_INDEX[f"{side}_RIGHT"]]
        lateral += np.nan_to_num(d[:, [0, 2]])
        for lr in ("LEFT", "RIGHT"):
            sure &= level[:, KINECT_INDEX[f"{side}_{lr}"]] >= 2
    length = np.linalg.norm(lateral, axis=-1)
    is_judged = (length > 0.05) & sure
    judged = np.flatnonzero(is_judged)
    if len(judged) < 2:
        return out
    u = lateral[judged] / length[judged, None]
    cos_jump = np.cos(np.radians(config.mirror_jump_deg))
    # stretches: consecutive judged frames close enough in time to be compared
    near = np.diff(judged) <= config.mirror_max_gap + 1
    jump = near & (np.sum(u[1:] * u[:-1], axis=-1) < cos_jump)
    start = 0
    for end in list(np.flatnonzero(~near) + 1) + [len(judged)]:
        cuts = np.flatnonzero(jump[start:end - 1]) + start + 1
        if len(cuts):
            bounds = np.concatenate([[start], cuts, [end]])
            runs = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
            frames = [judged[b - 1] - judged[a] + 1 for a, b in runs]
            odd = sum(frames[1::2]) < sum(frames[0::2])
            for i, (a, b) in enumerate(runs):
                if (i % 2 == 1) == odd and frames[i] <= config.mirror_max_frames:
                    out[judged[a]: judged[b - 1] + 1] = True
                    # unjudged frames at the run's borders go with the side they face alike
                    for f0, f1, own in ((judged[a - 1] if a > start else judged[a], judged[a], a),
                                        (judged[b - 1], judged[b] if b < end else judged[b - 1], b - 1)):
                        other = a - 1 if own == a else b
                        if other < start or other >= end:
                            # the stretch's end: the frames beyond it that still face alike
                            step = -1 if own == a else 1
                            f = judged[own] + step
                            while 0 <= f < F and not is_judged[f] and length[f] > 0.05 and lateral[f] @ u[own] > 0:
                                out[f] = True
                                f += step
                            continue
                        mid = np.arange(f0 + 1, f1)
                        v = lateral[mid] / np.maximum(length[mid], 1e-9)[:, None]
                        closer = (v @ u[own]) > (v @ u[other])
                        out[mid] |= closer & (length[mid] > 0.05)
        start = end
    return out


def _exchange_sides(X: np.ndarray, conf: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Copies of Kinect joints (F, 32, 3) and confidences (F, 32) with every left/right pair
    exchanged on ``frames`` (F,) bool."""
    left, right = _lr_pairs()
    X, conf = X.copy(), conf.copy()
    for a in (X, conf):
        la, ra = a[frames][:, left], a[frames][:, right]
        sel = np.flatnonzero(frames)
        a[np.ix_(sel, left)] = ra
        a[np.ix_(sel, right)] = la
    return X, conf


def _take_hand_wrists(X: np.ndarray, w: np.ndarray, wrist_targets: np.ndarray | None,
                      config: BodyFitConfig) -> np.ndarray:
    """Put the observed hand wrists (F, 2, 3) in place of the Kinect's wrist rows of the targets X
    (F, M, 3) and their weights w (F, M), in place (``config.hand_wrists``). Returns the (F, M) mask
    of targets that are hand wrists: no joint-definition offset applies to them (they are SMPL-X
    wrists, not k4abt joints)."""
    from_hand = np.zeros(X.shape[:2], dtype=bool)
    if not config.hand_wrists or wrist_targets is None:
        return from_hand
    rows = list(KINECT_BODY_FOR_FIT)
    for s, side in enumerate(SIDES):
        m = rows.index(KINECT_INDEX[f"WRIST_{side.upper()}"])
        seen = np.all(np.isfinite(wrist_targets[:, s]), axis=-1)
        X[seen, m] = wrist_targets[seen, s]
        w[seen, m] = config.hand_wrist_weight
        from_hand[:, m] = seen
    return from_hand


def _segment_of_rows(prob: _Problem) -> np.ndarray:
    """Per Kinect row of the fit, the SMPL-X joint whose frame carries its offset: the joint with the
    largest weight in its blend."""
    W = prob.W.cpu().numpy()
    return np.argmax(np.abs(W), axis=1)


def _rotate(G, offsets: np.ndarray, dtype, device):
    """Offsets (M,3) in their segments' frames turned into the world by G (N,M,3,3): (N,M,3)."""
    import torch

    o = torch.as_tensor(offsets, dtype=dtype, device=device)
    return (G @ o[None, :, :, None]).squeeze(-1)


def _robust_offsets(local: np.ndarray, w: np.ndarray, config: BodyFitConfig) -> np.ndarray:
    """Per Kinect row, the constant offset (M,3) in its segment's frame from the residuals ``local``
    (N,M,3) of the confident frames (weight ``w`` (N,M) at least MEDIUM's): the per-axis median,
    shrunk towards zero by its uncertainty against the prior ``offset_prior_m`` and by
    ``offset_dead_zone_m``, and clipped to ``max_offset_m``."""
    out = np.zeros(local.shape[1:])
    good = w >= 0.5 * max(config.confidence_weights)
    for m in range(local.shape[1]):
        v = local[good[:, m], m]
        v = v[np.all(np.isfinite(v), axis=-1)]
        if len(v) < config.offset_min_frames:
            continue
        med = np.median(v, axis=0)
        spread = 1.4826 * np.median(np.abs(v - med), axis=0)
        # a median of n samples has about 1.25 sigma / sqrt(n) uncertainty; slow noise counts less
        # often than once per frame, so the frames are thinned by ``offset_correlation_frames``
        var = (1.25 * spread) ** 2 / max(len(v) / config.offset_correlation_frames, 1.0)
        gain = config.offset_prior_m ** 2 / (config.offset_prior_m ** 2 + var)
        # a dead zone: what is left of a fit to exact joints is the fit's own, not an offset
        shrunk = np.sign(med) * np.maximum(np.abs(gain * med) - config.offset_dead_zone_m, 0.0)
        out[m] = np.clip(shrunk, -config.max_offset_m, config.max_offset_m)
    return out
