"""Where the Kinect puts a hand: one point per hand from k4abt's arm and hand joints.

k4abt gives each hand a WRIST, a HAND joint (at the knuckles), a HANDTIP (middle fingertip) and a
THUMB (thumb tip) (``data/skeletons.py`` ``KINECT_HAND_JOINT_TO_HAND21``). The hand centre is a
weighted mean of those four points, or, when the hand joints are not trusted, the wrist moved a
fixed reach along the forearm (elbow to wrist). Joints are passed by their lower-case names
(``wrist``, ``hand``, ``handtip``, ``thumb``, ``elbow``) as arrays of any matching shape (...,3),
in any one frame (metres); the centre comes back in that frame. NaN marks a missing joint.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from omnimocap.data.skeletons import KINECT_HAND_JOINT_TO_HAND21

# The k4abt joints of one hand, by their lower-case names: wrist, hand, handtip, thumb.
HAND_JOINTS = tuple(KINECT_HAND_JOINT_TO_HAND21)

# Blend of the Kinect's WRIST, HAND, HANDTIP and THUMB joints that best predicts the mean of the
# 21 hand joints over open, closed, pointing and pinching hands (least squares on simulated hands,
# rounded); it sums to 1, so it is a point, not a direction.
HAND_CENTRE_BLEND = {"wrist": 0.10, "hand": 0.45, "handtip": 0.33, "thumb": 0.12}

# The plain mean of the four joints: a detector's box centre lies about 1 deg (RMS, at 1 m) from its
# bearing (measured on simulated hands).
HAND_JOINT_MEAN = {name: 1.0 / len(HAND_JOINTS) for name in HAND_JOINTS}

# Distance from the wrist to the mean of the 21 hand joints of an open hand, metres.
HAND_CENTRE_REACH_M = 0.08


def collapsed_hand(joints: Mapping[str, np.ndarray], collapse_m: float) -> np.ndarray:
    """Mask (...) of hands whose HANDTIP or THUMB joint lies closer than ``collapse_m`` (metres) to
    the HAND joint: k4abt reports them there when it cannot see the fingers."""
    with np.errstate(invalid="ignore"):
        return ((np.linalg.norm(joints["handtip"] - joints["hand"], axis=-1) < collapse_m)
                | (np.linalg.norm(joints["thumb"] - joints["hand"], axis=-1) < collapse_m))


def hand_centre(joints: Mapping[str, np.ndarray], from_arm: bool = False, *,
                weights: Mapping[str, float] = HAND_CENTRE_BLEND, reach_m: float = HAND_CENTRE_REACH_M,
                collapse_m: float | None = None, collapse_gain: float = 1.06,
                wrist_fallback: bool = True) -> np.ndarray:
    """The hand centre (...,3), in the joints' frame (metres).

    With ``from_arm``: the wrist moved ``reach_m`` along the forearm (elbow to wrist). Otherwise the
    ``weights`` mean of the named hand joints (the default :data:`HAND_CENTRE_BLEND` estimates the
    mean of the 21 hand joints; :data:`HAND_JOINT_MEAN` is the plain mean); with ``collapse_m``,
    hands whose tip or thumb collapsed onto the HAND joint (:func:`collapsed_hand`) get the wrist
    moved ``collapse_gain`` times the wrist-to-HAND vector instead, so the collapse does not pull the
    centre towards the wrist. With ``wrist_fallback`` a centre that cannot be formed (a joint
    missing) is the wrist; without it, NaN."""
    wrist = joints["wrist"]
    if from_arm:
        forearm = wrist - joints["elbow"]
        with np.errstate(invalid="ignore", divide="ignore"):
            centre = wrist + reach_m * forearm / np.linalg.norm(forearm, axis=-1, keepdims=True)
    else:
        centre = sum(w * joints[name] for name, w in weights.items())
        if collapse_m is not None:
            collapsed = collapsed_hand(joints, collapse_m)
            centre[collapsed] = (wrist + collapse_gain * (joints["hand"] - wrist))[collapsed]
    if wrist_fallback:
        centre = np.where(np.isfinite(centre), centre, wrist)
    return centre
