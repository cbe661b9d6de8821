"""The live whole body: the SMPL-X fit of ``omnimocap process`` run causally, frame by frame, with
the live hands on its wrists and fingers.

Per person (a body id of the reference Kinect):

- shape: once the person has been tracked for ``shape_s`` seconds, :func:`~omnimocap.fusion.body_fit.fit_body`
  runs on those seconds of Kinect joints and its betas and joint-definition offsets are held for
  as long as the person stays tracked (``process`` fits them over the whole session);
- pose: every new Kinect frame, ``fit_body`` on that frame alone with the held shape and offsets,
  on the Kinect joints the hand preview smoothed (``fusion.frame_stage.smooth_anchors`` over the
  recent history). The last sample of that smoother is its forward Kalman filter: the causal filter,
  with no future frame; ``process`` smooths forwards and backwards and adds a temporal term between
  neighbouring frames, which a newest frame cannot have; the fit's targets are the Kinect wrists
  (``process``, with ``body.hand_wrists``, takes the wrists of the hands it saw, which live has at the
  panorama frame's time, not at the Kinect frame's). Each fit starts from the person's previous one
  (a warm start, :class:`~omnimocap.fusion.body_fit.BodyFitInit`: ``warm_iterations`` steps instead
  of the analytic initialisation and its 6 + 3 steps; the analytic one again after a gap of more
  than ``warm_max_gap_s``);
- hands: the preview's lifted hand (seen, or held by ``HandHold``) sets the wrist and the fingers
  through :func:`~omnimocap.fusion.hand_integration.integrate_hands`, as ``process`` sets them; a
  hand no longer held keeps its last fingers and the body's wrist (``process``'s ``held`` status).

With an SMPL-X model file (``ProcessConfig.smplx_model``, or the models folder's), the body is
also skinned to its mesh (linear blend skinning with the 4 largest weights per vertex and no pose
correctives, as the glTF export skins it).

World frame (y up, metres) = SMPL-X model frame; session clock, seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from omnimocap.data.skeletons import KINECT_BODY_FOR_FIT, SIDES, SMPLX_HAND_START
from omnimocap.errors import InputError
from omnimocap.fusion.body_fit import BodyFit, BodyFitInit, fit_body
from omnimocap.fusion.body_model import Skeleton, forward_kinematics, load_skeleton, resolve_smplx_model
from omnimocap.fusion.hand_integration import integrate_hands
from omnimocap.fusion.lifting import LiftedHand
from omnimocap.fusion.live.state import FittedBody
from omnimocap.fusion.pipeline import PeopleTracks, ProcessConfig

# Skinning influences kept per vertex (as the glTF export keeps them).
INFLUENCES = 4


class BodyMesh:
    """An SMPL-X model's mesh, shaped per person and skinned to posed joints. ``faces`` (T,3): the
    model's triangles, wound counter-clockwise seen from outside."""

    def __init__(self, model: dict):
        self.v_template = np.asarray(model["v_template"], dtype=np.float64)
        self.shapedirs = np.asarray(model["shapedirs"], dtype=np.float64)
        self.J_regressor = np.asarray(model["J_regressor"], dtype=np.float64)
        faces = np.asarray(model["f"], dtype=np.int32)
        # wound counter-clockwise seen from outside (a positive enclosed volume), as renderers light them
        v = self.v_template[faces]
        volume = np.einsum("ti,ti->", v[:, 0], np.cross(v[:, 1], v[:, 2])) / 6.0
        self.faces = faces if volume >= 0 else np.ascontiguousarray(faces[:, ::-1])
        weights = np.asarray(model["weights"], dtype=np.float64)
        self.influence = np.argsort(-weights, axis=1)[:, :INFLUENCES]
        w = np.take_along_axis(weights, self.influence, axis=1)
        self.weight = w / np.maximum(w.sum(1, keepdims=True), 1e-12)

    def shaped(self, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rest vertices (V,3) and rest joints (55,3) of the shape ``betas`` (model frame, metres)."""
        betas = np.asarray(betas, dtype=np.float64)
        nb = min(len(betas), self.shapedirs.shape[-1])
        verts = self.v_template + self.shapedirs[:, :, :nb] @ betas[:nb]
        return verts, self.J_regressor @ verts

    def skin(self, rest_verts: np.ndarray, rest_joints: np.ndarray, global_R: np.ndarray,
             joints: np.ndarray) -> np.ndarray:
        """Vertices (V,3) posed by each joint's global rotation ``global_R`` (55,3,3) about its rest
        position ``rest_joints`` (55,3), moved to its posed position ``joints`` (55,3, world)."""
        out = np.zeros_like(rest_verts)
        for k in range(self.influence.shape[1]):
            j = self.influence[:, k]
            moved = np.einsum("vij,vj->vi", global_R[j], rest_verts - rest_joints[j]) + joints[j]
            out += self.weight[:, k, None] * moved
        return out


@dataclass
class _Person:
    betas: np.ndarray
    offsets: np.ndarray
    rest: tuple[np.ndarray, np.ndarray] | None
    fingers: dict[str, np.ndarray] = field(default_factory=dict)  # side -> last seen (15,3,3)
    last: tuple[float, BodyFitInit] | None = None  # (session time, pose) of the newest fit


class LiveBody:
    """The causal body of the module docstring, for every person of the reference Kinect.

    ``config``: the same :class:`~omnimocap.fusion.pipeline.ProcessConfig` as ``process`` (body fit
    settings ``config.body`` on ``config.device``, SMPL-X model, gender). ``shape_s``: seconds a
    person is tracked before the shape is fitted and held (no body before); at most the history the
    preview keeps (``BodyHistory.seconds``). ``warm_iterations``: Levenberg-Marquardt steps of a
    frame started from the previous frame's fit (0: every frame from the analytic initialisation,
    as ``process`` starts); ``warm_max_gap_s``: session seconds after which the previous fit is too
    old to start from."""

    def __init__(self, config: ProcessConfig, shape_s: float = 1.5, warm_iterations: int = 2,
                 warm_max_gap_s: float = 0.2):
        self.config = config
        self.shape_s = shape_s
        self.body_config = replace(config.body, device=config.device)
        self.warm_max_gap_s = warm_max_gap_s
        # with held joint-definition offsets, the steps toward the uncorrected joints would only be
        # undone by those toward the corrected ones: a warm start takes the latter alone
        self.warm_config = None if warm_iterations <= 0 else (
            replace(self.body_config, iterations=0, offset_iterations=warm_iterations)
            if self.body_config.joint_offsets else replace(self.body_config, iterations=warm_iterations))
        self.smplx_path: Path | None = resolve_smplx_model(config.smplx_model, config.models, config.gender)
        self.skeleton: Skeleton = load_skeleton(self.smplx_path)
        self.mesh: BodyMesh | None = None
        if self.smplx_path is not None:
            from omnimocap.hands.model_files import load_smplx

            self.mesh = BodyMesh(load_smplx(self.smplx_path, self.config.gender))
        self._people: dict[int, _Person] = {}
        self.bodies: dict[int, FittedBody] = {}

    @property
    def faces(self) -> np.ndarray | None:
        """The mesh's triangles (T,3) into each body's ``vertices``; None without a model file."""
        return None if self.mesh is None else self.mesh.faces

    def update(self, anchors: PeopleTracks, hands: dict[tuple[int, str], LiftedHand]) -> dict[int, FittedBody]:
        """The bodies at the newest frame of ``anchors`` (the reference Kinect's recent people,
        world frame, smoothed), with ``hands`` ((body id, side) -> the lifted hand seen or held now)
        on them; also kept in :attr:`bodies`. A person without a held shape yet, or whose newest
        frame has too few joints to fit, has no body."""
        bodies: dict[int, FittedBody] = {}
        ids = list(anchors.person_ids)
        for gone in set(self._people) - set(ids):
            del self._people[gone]  # a body id that returns is a new person
        for p, pid in enumerate(ids):
            person = self._person(pid, anchors.t_session, anchors.joints[p], anchors.confidence[p])
            if person is None:
                continue
            body = self._fit_newest(pid, person, anchors.t_session, anchors.joints[p], anchors.confidence[p], hands)
            if body is not None:
                bodies[pid] = body
        self.bodies = bodies
        return bodies

    def _person(self, pid: int, t: np.ndarray, joints: np.ndarray, confidence: np.ndarray) -> _Person | None:
        """The person's held shape; fitted here once the person has been tracked ``shape_s`` seconds."""
        if pid in self._people:
            return self._people[pid]
        seen = np.flatnonzero(np.any(np.isfinite(joints[:, list(KINECT_BODY_FOR_FIT)]).all(-1), axis=1))
        if len(seen) < 2 or t[seen[-1]] - t[seen[0]] < self.shape_s:
            return None
        frames = slice(seen[0], seen[-1] + 1)
        try:
            fit = fit_body(joints[frames], confidence[frames], self.skeleton, self.body_config)
        except InputError:
            return None  # no frame with enough confident joints yet: tried again with the next frame
        offsets = np.array(list(fit.joint_offsets.values()))
        rest = None if self.mesh is None else self.mesh.shaped(fit.betas)
        self._people[pid] = _Person(fit.betas, offsets, rest)
        return self._people[pid]

    def _fit_newest(self, pid: int, person: _Person, t: np.ndarray, joints: np.ndarray, confidence: np.ndarray,
                    hands: dict[tuple[int, str], LiftedHand]) -> FittedBody | None:
        """The pose of the newest frame (with the held shape and offsets) and the hands on it."""
        usable = np.isfinite(joints[-1]).all(-1) & (np.asarray(self.body_config.confidence_weights)[
            np.clip(confidence[-1].astype(int), 0, 3)] > 0)
        if usable[list(KINECT_BODY_FOR_FIT)].sum() < self.body_config.min_joints:
            return None
        warm = self.warm_config is not None and person.last is not None and \
            0.0 <= t[-1] - person.last[0] <= self.warm_max_gap_s
        fit = fit_body(joints[-1:], confidence[-1:], self.skeleton, self.warm_config if warm else self.body_config,
                       betas=person.betas, joint_offsets=person.offsets, init=person.last[1] if warm else None)
        person.last = (float(t[-1]), BodyFitInit(fit.local_rotmats, fit.transl))
        local, status = self._with_hands(fit, person, pid, hands)
        transl = fit.transl[0]
        posed, global_R = forward_kinematics(self.skeleton, local, fit.betas, transl)
        vertices = None
        if self.mesh is not None and person.rest is not None:
            vertices = self.mesh.skin(*person.rest, global_R, posed)
        return FittedBody(pid, float(t[-1]), posed, local, transl, fit.betas, vertices, status)

    def _with_hands(self, fit: BodyFit, person: _Person, pid: int,
                    hands: dict[tuple[int, str], LiftedHand]) -> tuple[np.ndarray, dict[str, str]]:
        """Local rotations (55,3,3) with the hands set (see the module docstring) and each side's status."""
        hand_R = np.broadcast_to(np.eye(3), (1, 2, 3, 3)).copy()
        hand_pose = np.broadcast_to(np.eye(3), (1, 2, 15, 3, 3)).copy()
        valid = np.zeros((1, 2), dtype=bool)
        for s, side in enumerate(SIDES):
            lifted = hands.get((pid, side))
            if lifted is not None:
                hand_R[0, s], hand_pose[0, s], valid[0, s] = lifted.R_world, lifted.hand_pose, True
                person.fingers[side] = lifted.hand_pose
        local = integrate_hands(fit, self.skeleton, hand_R, hand_pose, valid).local_rotmats[0]
        status = {}
        for s, side in enumerate(SIDES):
            if valid[0, s]:
                status[side] = "observed"
            elif side in person.fingers:
                start = SMPLX_HAND_START[side]
                local[start:start + 15] = person.fingers[side]
                status[side] = "held"
            else:
                status[side] = "kinect"
        return local, status
