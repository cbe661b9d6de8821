"""WiLoR hand reconstruction: detector, reconstructor and the official checkpoint format.

``load_wilor`` builds the reconstructor from the official files; ``reconstruct`` runs the original
demo's crop and full-image post-processing around it for any number of hand boxes in one image, in
one batch. Left hands come back as proper left-hand MANO parameters (mirror convention, see
``omnimocap.hands.estimator``).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from omnimocap.geometry.transforms import MIRROR
from omnimocap.data.skeletons import HAND21_FROM_MANO, MANO_TIP_VERTICES
from omnimocap.errors import ModelFilesMissing
from omnimocap.hands.model_files import load_mano, mano_layer_arrays
from omnimocap.hands.wilor.checkpoint import (
    load_checkpoint_file,
    load_mean_params,
    load_model_config,
    report_key_mismatch,
    split_state_dict,
)
from omnimocap.hands.wilor.crop import crop_boxes, crop_image, normalize_crops
from omnimocap.hands.wilor.model import ManoLayer, WilorDims, WilorModel

__all__ = ["PRECISIONS", "WilorHand", "WilorModel", "default_model_config", "default_mean_params", "load_wilor",
           "network_autocast", "reconstruct"]

_MANO_BUFFERS = ("v_template", "shapedirs", "posedirs", "J_regressor", "lbs_weights", "parents")
# MANO-layer entries of the checkpoint that the rotation-matrix path does not use.
_MANO_UNUSED = ("hand_components", "hand_mean", "pose_mean", "faces_tensor", "extra_joints_idxs",
                "joint_map", "vertex_joint_selector.extra_joints_idxs")
_OTHER_UNUSED = ("initialized",)


def default_model_config() -> Path:
    """The packaged copy of WiLoR's ``model_config.yaml``."""
    return Path(str(resources.files("omnimocap.data") / "wilor_model_config.yaml"))


def default_mean_params() -> Path:
    """The packaged copy of WiLoR's ``mano_mean_params.npz``."""
    return Path(str(resources.files("omnimocap.data") / "mano_mean_params.npz"))


def load_wilor(checkpoint: str | Path, model_config: str | Path | None = None, mano_dir: str | Path | None = None,
               mean_params: str | Path | None = None, device: str | torch.device = "cpu") -> WilorModel:
    """The WiLoR reconstructor in eval mode on ``device``.

    ``checkpoint``: the official Lightning checkpoint (or one in its format). ``model_config``:
    its ``model_config.yaml`` (default: the packaged copy). ``mano_dir``: folder with
    ``MANO_RIGHT.pkl``; when omitted the MANO buffers stored in the checkpoint are used.
    ``mean_params``: ``mano_mean_params.npz`` (default: the packaged copy), used only for mean
    parameters the checkpoint lacks. Sizes (width, depth, refinement channels) come from the
    checkpoint's tensors; a config that names other backbone sizes is an error. On the CPU the
    model's float32 weights are the memory-mapped checkpoint tensors (no copy)."""
    cfg = load_model_config(model_config or default_model_config())
    ckpt = load_checkpoint_file(checkpoint)
    state = {k: v for k, v in ckpt["state_dict"].items()}
    groups = split_state_dict(state)
    if "pos_embed" not in groups["backbone"]:
        raise ModelFilesMissing("no backbone weights (backbone.pos_embed) in the checkpoint", path=checkpoint,
                                fix="use the official wilor_final.ckpt")
    if any(f"init_{n}" not in groups["backbone"] for n in ("hand_pose", "betas", "cam")):
        mean = load_mean_params(mean_params or default_mean_params())
        for name, key in (("init_hand_pose", "pose"), ("init_betas", "shape"), ("init_cam", "cam")):
            groups["backbone"].setdefault(name, torch.from_numpy(mean[key])[None])
    flat = {f"backbone.{k}": v for k, v in groups["backbone"].items()}
    flat.update({f"refine_net.{k}": v for k, v in groups["refine_net"].items()})
    dims = WilorDims.from_state_dict(flat, cfg.image_size)
    for key, have in (("EMBED_DIM", dims.embed_dim), ("DEPTH", dims.depth), ("NUM_HEADS", dims.num_heads)):
        if key in cfg.backbone and int(cfg.backbone[key]) != have:
            raise ModelFilesMissing(f"model config says BACKBONE.{key} = {cfg.backbone[key]} but the checkpoint "
                                    f"has {have}", path=model_config, fix="use the config that came with the checkpoint")

    mano_sd = groups["mano"]
    if mano_dir is not None:
        mano_file = load_mano(mano_dir, side="right")
        mano = ManoLayer.from_arrays(mano_layer_arrays(mano_file))
        faces = np.asarray(mano_file["f"], dtype=np.int64)
    elif all(k in mano_sd for k in _MANO_BUFFERS):
        mano = ManoLayer.from_arrays(
            {k: mano_sd[k] for k in _MANO_BUFFERS},
            extra_joints_idxs=mano_sd.get("vertex_joint_selector.extra_joints_idxs", mano_sd.get("extra_joints_idxs", MANO_TIP_VERTICES)),
            joint_map=mano_sd.get("joint_map", HAND21_FROM_MANO),
        )
        faces = mano_sd["faces_tensor"].numpy().astype(np.int64) if "faces_tensor" in mano_sd else None
    else:
        raise ModelFilesMissing("the checkpoint holds no MANO buffers", path=checkpoint,
                                fix="pass the folder holding MANO_RIGHT.pkl (mano_dir)")

    # Built on the meta device (no memory, no random initialisation) and given the checkpoint's
    # (memory-mapped) tensors themselves: nothing is initialised only to be overwritten.
    with torch.device("meta"):
        model = WilorModel(dims, mano, focal_length=cfg.focal_length, image_mean=cfg.image_mean,
                           image_std=cfg.image_std, bbox_shape=cfg.bbox_shape)
    result = model.load_state_dict({**flat, **{f"mano.{k}": v for k, v in mano.state_dict().items()}}, strict=False,
                                   assign=True)
    unexpected = [k for k in result.unexpected_keys]
    unexpected += [f"mano.{k}" for k in mano_sd if k not in _MANO_BUFFERS and k not in _MANO_UNUSED]
    unexpected += [k for k in groups["other"] if k not in _OTHER_UNUSED]
    report_key_mismatch(list(result.missing_keys), unexpected, checkpoint)
    model.faces = faces  # (F, 3) triangle indices of the MANO mesh, for rendering
    return model.float().eval().to(device)  # float() copies nothing when the checkpoint is float32


@dataclass
class WilorHand:
    """One reconstructed hand in the coordinates of the image it was cut from.

    Left hands are true left hands: ``vertices`` / ``keypoints_3d`` have x negated and the
    rotations are ``M R M`` (M = diag(-1, 1, 1)) of the network's right-hand output."""

    is_right: bool
    global_orient: np.ndarray  # (3, 3) root rotation in the camera frame
    hand_pose: np.ndarray  # (15, 3, 3) MANO joints 1..15 relative to their parents
    betas: np.ndarray  # (10,)
    vertices: np.ndarray  # (778, 3) metres, MANO frame in camera orientation, no translation
    keypoints_3d: np.ndarray  # (21, 3) same frame, OpenPose hand order
    cam_crop: np.ndarray  # (3,) crop camera (s, tx, ty), tx sign-corrected for left hands
    cam_t_full: np.ndarray  # (3,) metres, translation in the full-image camera
    focal_full: float  # pixels, the full-image focal 5000/256 * max(W, H)
    keypoints_2d_full: np.ndarray  # (21, 2) image pixels
    keypoints_2d_crop: np.ndarray  # (21, 2) normalised coordinates of the (mirrored, if left) crop
    box_center: np.ndarray  # (2,) pixels
    box_size: float  # side of the square crop region, pixels
    blur_sigma: float  # anti-aliasing blur applied before cropping, pixels (0: none)


def project_full(points: np.ndarray, cam_t: np.ndarray, focal: float, image_wh: tuple[int, int]) -> np.ndarray:
    """Project (..., N, 3) camera-frame points shifted by ``cam_t`` with focal ``focal`` and the
    principal point at the image centre (W/2, H/2) -> (..., N, 2) pixels."""
    p = np.asarray(points, dtype=np.float64) + np.asarray(cam_t, dtype=np.float64)[..., None, :]
    return focal * p[..., :2] / p[..., 2:3] + np.array([image_wh[0] / 2.0, image_wh[1] / 2.0])


def prepare_batch(model: WilorModel, image_bgr: np.ndarray, boxes_xyxy: np.ndarray, is_right: np.ndarray,
                  rescale_factor: float = 2.0) -> tuple[torch.Tensor, list]:
    """Normalised crops (N, 3, S, S) in the model's dtype and device, and their crop boxes."""
    boxes = crop_boxes(boxes_xyxy, is_right, rescale_factor, model.bbox_shape)
    crops = [crop_image(image_bgr, b, model.image_size) for b in boxes]
    p = next(model.parameters())
    x = normalize_crops(np.stack(crops), model.image_mean, model.image_std) if crops else np.zeros((0, 3, model.image_size, model.image_size), np.float32)
    return torch.from_numpy(x).to(device=p.device, dtype=p.dtype), boxes


def postprocess(model: WilorModel, out: dict[str, torch.Tensor], boxes: list, image_wh: tuple[int, int]) -> list[WilorHand]:
    """The original demo's full-image step (float64): un-mirror left hands, full-image camera,
    projection; plus the mirror of left-hand rotations."""
    o = {k: v.detach().double().cpu().numpy() for k, v in out.items()}
    focal = model.focal_length / model.image_size * max(image_wh)
    hands = []
    for i, box in enumerate(boxes):
        sign = 1.0 if box.is_right else -1.0
        cam = o["pred_cam"][i].copy()
        cam[1] *= sign
        flip = np.array([sign, 1.0, 1.0])
        verts = o["pred_vertices"][i] * flip
        kp3 = o["pred_keypoints_3d"][i] * flip
        center = box.center.astype(np.float64)
        bs = float(box.size) * cam[0] + 1e-9
        cam_t = np.array([2 * (center[0] - image_wh[0] / 2.0) / bs + cam[1],
                          2 * (center[1] - image_wh[1] / 2.0) / bs + cam[2],
                          2 * focal / bs])
        go, hp = o["global_orient"][i, 0], o["hand_pose"][i]
        if not box.is_right:
            go, hp = MIRROR @ go @ MIRROR, MIRROR @ hp @ MIRROR
        hands.append(WilorHand(
            is_right=box.is_right, global_orient=go, hand_pose=hp, betas=o["betas"][i], vertices=verts,
            keypoints_3d=kp3, cam_crop=cam, cam_t_full=cam_t, focal_full=focal,
            keypoints_2d_full=project_full(kp3, cam_t, focal, image_wh),
            keypoints_2d_crop=o["pred_keypoints_2d"][i], box_center=center, box_size=float(box.size),
            blur_sigma=box.blur_sigma,
        ))
    return hands


PRECISIONS = ("fp32", "bf16", "fp16")


def network_autocast(precision: str, device: torch.device | str):
    """The autocast context for running the network at ``precision``: "fp32" (none), "bf16"
    (CPU or CUDA) or "fp16" (CUDA only). MANO, the 6D conversion and the cameras stay float32
    inside the model either way (see WilorModel.forward)."""
    device_type = torch.device(device).type
    if precision == "fp32":
        return nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    if precision == "fp16" and device_type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    raise ValueError(f"precision {precision!r} on {device_type}: use one of {PRECISIONS} (fp16 on CUDA only)")


def reconstruct(model: WilorModel, image_bgr: np.ndarray, boxes_xyxy: np.ndarray, is_right: np.ndarray,
                rescale_factor: float = 2.0, precision: str = "fp32") -> list[WilorHand]:
    """Reconstruct hands in a BGR uint8 image (H, W, 3) from boxes (N, 4) pixels (x0, y0, x1, y1)
    and handedness (N,) (true/1 = right). All boxes run through the network as one batch, at
    ``precision`` (see :func:`network_autocast`)."""
    x, boxes = prepare_batch(model, image_bgr, boxes_xyxy, is_right, rescale_factor)
    if not boxes:
        return []
    with torch.inference_mode(), network_autocast(precision, x.device):
        out = model(x)
    return postprocess(model, out, boxes, (image_bgr.shape[1], image_bgr.shape[0]))
