"""The one place that names joints: Azure Kinect body tracking (32), MANO (16 and 21), SMPL-X (55),
and the maps between them. Nothing else hard-codes a joint index.
"""

from __future__ import annotations

import numpy as np

# --- Azure Kinect Body Tracking (k4abt), joint order of k4abt_joint_id_t ---------------------------
KINECT_JOINTS: tuple[str, ...] = (
    "PELVIS", "SPINE_NAVEL", "SPINE_CHEST", "NECK", "CLAVICLE_LEFT", "SHOULDER_LEFT", "ELBOW_LEFT",
    "WRIST_LEFT", "HAND_LEFT", "HANDTIP_LEFT", "THUMB_LEFT", "CLAVICLE_RIGHT", "SHOULDER_RIGHT",
    "ELBOW_RIGHT", "WRIST_RIGHT", "HAND_RIGHT", "HANDTIP_RIGHT", "THUMB_RIGHT", "HIP_LEFT",
    "KNEE_LEFT", "ANKLE_LEFT", "FOOT_LEFT", "HIP_RIGHT", "KNEE_RIGHT", "ANKLE_RIGHT", "FOOT_RIGHT",
    "HEAD", "NOSE", "EYE_LEFT", "EAR_LEFT", "EYE_RIGHT", "EAR_RIGHT",
)
KINECT_PARENTS: tuple[int, ...] = (
    -1, 0, 1, 2, 2, 4, 5, 6, 7, 8, 7, 2, 11, 12, 13, 14, 15, 14, 0, 18, 19, 20, 0, 22, 23, 24,
    3, 26, 26, 26, 26, 26,
)
KINECT_INDEX = {name: i for i, name in enumerate(KINECT_JOINTS)}
KINECT_BONES: tuple[tuple[str, str], ...] = tuple(
    (KINECT_JOINTS[p], KINECT_JOINTS[c]) for c, p in enumerate(KINECT_PARENTS) if p >= 0
)
# k4abt_joint_confidence_level_t
KINECT_CONFIDENCE_NONE, KINECT_CONFIDENCE_LOW, KINECT_CONFIDENCE_MEDIUM, KINECT_CONFIDENCE_HIGH = 0, 1, 2, 3

SIDES: tuple[str, str] = ("left", "right")
KINECT_WRIST = {"left": KINECT_INDEX["WRIST_LEFT"], "right": KINECT_INDEX["WRIST_RIGHT"]}
KINECT_ELBOW = {"left": KINECT_INDEX["ELBOW_LEFT"], "right": KINECT_INDEX["ELBOW_RIGHT"]}
KINECT_HAND = {"left": KINECT_INDEX["HAND_LEFT"], "right": KINECT_INDEX["HAND_RIGHT"]}
KINECT_HANDTIP = {"left": KINECT_INDEX["HANDTIP_LEFT"], "right": KINECT_INDEX["HANDTIP_RIGHT"]}
KINECT_THUMB = {"left": KINECT_INDEX["THUMB_LEFT"], "right": KINECT_INDEX["THUMB_RIGHT"]}

# --- MANO ------------------------------------------------------------------------------------------
MANO_JOINTS: tuple[str, ...] = (
    "wrist", "index1", "index2", "index3", "middle1", "middle2", "middle3", "pinky1", "pinky2",
    "pinky3", "ring1", "ring2", "ring3", "thumb1", "thumb2", "thumb3",
)
MANO_PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
# Fingertip vertices of the MANO mesh: thumb, index, middle, ring, pinky.
MANO_TIP_VERTICES: tuple[int, ...] = (744, 320, 443, 554, 671)
# The 21 hand keypoints in OpenPose order (wrist, thumb 1-3 + tip, index, middle, ring, pinky) as
# indices into [16 MANO joints, 5 tips (thumb, index, middle, ring, pinky)].
HAND21_FROM_MANO: tuple[int, ...] = (
    0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20,
)
HAND21_JOINTS: tuple[str, ...] = (
    "wrist", "thumb1", "thumb2", "thumb3", "thumb_tip", "index1", "index2", "index3", "index_tip",
    "middle1", "middle2", "middle3", "middle_tip", "ring1", "ring2", "ring3", "ring_tip",
    "pinky1", "pinky2", "pinky3", "pinky_tip",
)
HAND21_INDEX = {name: i for i, name in enumerate(HAND21_JOINTS)}

# Kinect hand joints and the hand keypoints they correspond to (k4abt's HAND sits at the knuckles,
# HANDTIP at the middle fingertip, THUMB at the thumb tip).
KINECT_HAND_JOINT_TO_HAND21: dict[str, str] = {
    "wrist": "wrist", "hand": "middle1", "handtip": "middle_tip", "thumb": "thumb_tip",
}

# --- SMPL-X ----------------------------------------------------------------------------------------
_SMPLX_BODY = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "jaw", "left_eye_smplhf", "right_eye_smplhf",
)
_FINGERS = ("index", "middle", "pinky", "ring", "thumb")
SMPLX_JOINTS: tuple[str, ...] = _SMPLX_BODY + tuple(
    f"{side}_{finger}{k}" for side in SIDES for finger in _FINGERS for k in (1, 2, 3)
)
SMPLX_PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
) + tuple(
    (20 if side == "left" else 21) if k == 0 else base + 3 * f + k - 1
    for side, base in (("left", 25), ("right", 40))
    for f in range(5)
    for k in range(3)
)
SMPLX_INDEX = {name: i for i, name in enumerate(SMPLX_JOINTS)}
SMPLX_NUM_JOINTS = 55
SMPLX_NUM_BODY_JOINTS = 21  # joints 1..21 carry body_pose
SMPLX_WRIST = {"left": SMPLX_INDEX["left_wrist"], "right": SMPLX_INDEX["right_wrist"]}
# First joint of each hand's 15 finger joints; finger order equals MANO joints 1..15.
SMPLX_HAND_START = {"left": 25, "right": 40}
SMPLX_ELBOW = {"left": SMPLX_INDEX["left_elbow"], "right": SMPLX_INDEX["right_elbow"]}

# Kinect body joints as modelled from SMPL-X joints: each Kinect joint is a weighted blend of SMPL-X
# joints. Approximate by nature (the Kinect PELVIS sits between pelvis and spine1, and so on); the
# body fit treats them as soft correspondences with per-joint weights below.
KINECT_FROM_SMPLX: dict[str, tuple[tuple[str, float], ...]] = {
    "PELVIS": (("pelvis", 0.7), ("spine1", 0.3)),
    "SPINE_NAVEL": (("spine1", 0.5), ("spine2", 0.5)),
    "SPINE_CHEST": (("spine3", 1.0),),
    "NECK": (("neck", 1.0),),
    "CLAVICLE_LEFT": (("left_collar", 1.0),),
    "SHOULDER_LEFT": (("left_shoulder", 1.0),),
    "ELBOW_LEFT": (("left_elbow", 1.0),),
    "WRIST_LEFT": (("left_wrist", 1.0),),
    "CLAVICLE_RIGHT": (("right_collar", 1.0),),
    "SHOULDER_RIGHT": (("right_shoulder", 1.0),),
    "ELBOW_RIGHT": (("right_elbow", 1.0),),
    "WRIST_RIGHT": (("right_wrist", 1.0),),
    "HIP_LEFT": (("left_hip", 1.0),),
    "KNEE_LEFT": (("left_knee", 1.0),),
    "ANKLE_LEFT": (("left_ankle", 1.0),),
    "FOOT_LEFT": (("left_foot", 1.0),),
    "HIP_RIGHT": (("right_hip", 1.0),),
    "KNEE_RIGHT": (("right_knee", 1.0),),
    "ANKLE_RIGHT": (("right_ankle", 1.0),),
    "FOOT_RIGHT": (("right_foot", 1.0),),
    "HEAD": (("head", 1.0),),
}
KINECT_BODY_FOR_FIT: tuple[int, ...] = tuple(KINECT_INDEX[n] for n in KINECT_FROM_SMPLX)


def kinect_from_smplx_matrix() -> np.ndarray:
    """(len(KINECT_FROM_SMPLX), 55) matrix R with kinect_body_joints = R @ smplx_joints."""
    reg = np.zeros((len(KINECT_FROM_SMPLX), SMPLX_NUM_JOINTS))
    for row, blend in enumerate(KINECT_FROM_SMPLX.values()):
        for name, weight in blend:
            reg[row, SMPLX_INDEX[name]] = weight
    return reg


def smplx_body_joint_ids() -> tuple[int, ...]:
    """SMPL-X joints that `body.joint_error_mm` is measured on: the 22 skeleton joints 0..21."""
    return tuple(range(22))

# --- COCO-17 body keypoints (pose models such as ultralytics' YOLO-pose), in their order ----------
COCO_KEYPOINTS: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)
COCO_INDEX = {name: i for i, name in enumerate(COCO_KEYPOINTS)}
# The keypoint each keypoint becomes when left and right are exchanged.
COCO_FLIP: tuple[int, ...] = tuple(
    COCO_INDEX[n.replace("left_", "right_") if n.startswith("left_") else n.replace("right_", "left_")]
    for n in COCO_KEYPOINTS
)
# COCO keypoints that are SMPL-X joints (the face keypoints are points on the head).
COCO_FROM_SMPLX: dict[str, str] = {
    f"{side}_{part}": f"{side}_{part}" for side in SIDES
    for part in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")
} | {"left_eye": "left_eye_smplhf", "right_eye": "right_eye_smplhf"}


# Finger joints of the LEFT hand relative to its wrist, rest pose (palm down, fingers along +x,
# thumb towards +z, i.e. forward); order index, middle, pinky, ring, thumb, 3 joints each.
# The right hand is the mirror image (x negated). The synthetic MANO model has the same rest joints.
LEFT_HAND_REST_FROM_WRIST = np.array([
    [0.088, 0.006, 0.024], [0.124, 0.004, 0.028], [0.148, 0.002, 0.030],    # index
    [0.094, 0.007, 0.002], [0.133, 0.005, 0.002], [0.159, 0.003, 0.002],    # middle
    [0.078, 0.002, -0.038], [0.100, 0.000, -0.045], [0.117, -0.001, -0.050],  # pinky
    [0.089, 0.005, -0.018], [0.124, 0.003, -0.021], [0.148, 0.001, -0.023],  # ring
    [0.025, -0.012, 0.028], [0.048, -0.016, 0.050], [0.070, -0.020, 0.066],  # thumb
])
