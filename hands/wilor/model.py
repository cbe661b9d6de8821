"""The WiLoR hand reconstructor as torch modules, parameter names as in the official checkpoint.

Input: (B, 3, 256, 256) RGB crops normalised with the ImageNet mean/std on 0..255 values; the
network sees only the central 256 x 192 columns. Output: MANO parameters of a *right* hand (left
hands are mirrored before the network), the crop camera (s, tx, ty), and the MANO vertices and 21
joints in the MANO model frame (metres, no translation). ``pred_keypoints_2d`` are normalised crop
coordinates: (0, 0) is the crop centre, +-0.5 the crop border, x right, y down.

Every dimension comes from the checkpoint's tensor shapes, so checkpoints of other widths and
depths load into the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from omnimocap.data.skeletons import HAND21_FROM_MANO, MANO_TIP_VERTICES

HEAD_DIM = 80  # the ViT's attention head width; heads = embed_dim // 80
PATCH_PADDING = 2  # the patch-embedding convolution pads by 2, giving a 16 x 12 grid on 256 x 192
CROP_COLUMNS = 32  # columns 32..W-33 of the crop reach the ViT
ROT6D = 6


@dataclass(frozen=True)
class WilorDims:
    """Sizes of one WiLoR network, all read off a state dict."""

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    num_patches: int
    num_joints: int  # MANO joints including the root (16)
    num_betas: int
    refine_branches: tuple[int, ...]  # transposed convolutions per upsampling branch
    image_size: int

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], image_size: int = 256) -> "WilorDims":
        embed_dim = sd["backbone.pos_embed"].shape[-1]
        depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("backbone.blocks."))
        branches: dict[int, int] = {}
        for key in sd:
            if key.startswith("refine_net.deconv.deconv.") and key.endswith(".weight"):
                parts = key.split(".")
                branch, layer = int(parts[3]), int(parts[4])
                if sd[key].ndim == 4:
                    branches[branch] = max(branches.get(branch, 0), layer // 3 + 1)
        return cls(
            embed_dim=embed_dim,
            depth=depth,
            num_heads=embed_dim // HEAD_DIM,
            patch_size=sd["backbone.patch_embed.proj.weight"].shape[-1],
            num_patches=sd["backbone.pos_embed"].shape[1] - 1,
            num_joints=sd["backbone.init_hand_pose"].shape[-1] // ROT6D,
            num_betas=sd["backbone.init_betas"].shape[-1],
            refine_branches=tuple(branches[i] for i in sorted(branches)),
            image_size=image_size,
        )

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid (rows, columns) of the 256 x 192 ViT input."""
        h = self.image_size
        w = self.image_size - 2 * CROP_COLUMNS
        k, p = self.patch_size, PATCH_PADDING
        return (h + 2 * p - k) // k + 1, (w + 2 * p - k) // k + 1


def rot6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """6D rotations (..., 6) -> matrices (..., 3, 3) whose columns are b1, b2, b3 (Gram-Schmidt of
    the 3-vectors x[..., 0:3] and x[..., 3:6])."""
    a1, a2 = x[..., :3], x[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-1)


def perspective_projection(points: torch.Tensor, translation: torch.Tensor, focal: float | torch.Tensor) -> torch.Tensor:
    """Pinhole projection of (B, N, 3) points shifted by (B, 3), principal point 0, focal (B,) or
    scalar, in whatever unit the focal is given in."""
    p = points + translation[:, None, :]
    xy = p[..., :2] / p[..., 2:3]
    if isinstance(focal, torch.Tensor):
        focal = focal.reshape(-1, 1, 1)
    return xy * focal


class ViTBackbone(nn.Module):
    """ViT with 18 MANO parameter tokens (16 pose, 1 shape, 1 camera) prepended to the patches."""

    def __init__(self, dims: WilorDims):
        super().__init__()
        e = dims.embed_dim
        self.dims = dims
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, e, dims.patch_size, stride=dims.patch_size, padding=PATCH_PADDING)
        self.pos_embed = nn.Parameter(torch.zeros(1, dims.num_patches + 1, e))
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList(
            Block(e, dims.num_heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=norm, act_layer=nn.GELU)
            for _ in range(dims.depth)
        )
        self.last_norm = norm(e)
        self.pose_emb = nn.Linear(ROT6D, e)
        self.shape_emb = nn.Linear(dims.num_betas, e)
        self.cam_emb = nn.Linear(3, e)
        self.decpose = nn.Linear(e, ROT6D)
        self.decshape = nn.Linear(e, dims.num_betas)
        self.deccam = nn.Linear(e, 3)
        self.register_buffer("init_hand_pose", torch.zeros(1, dims.num_joints * ROT6D))
        self.register_buffer("init_betas", torch.zeros(1, dims.num_betas))
        self.register_buffer("init_cam", torch.zeros(1, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, 3, 256, 192) -> raw 6D pose (B, J*6), betas (B, 10), camera (B, 3) and the patch
        feature map (B, E, 16, 12)."""
        b = x.shape[0]
        nj = self.dims.num_joints
        patches = self.patch_embed.proj(x)
        hp, wp = patches.shape[-2:]
        tokens = patches.flatten(2).transpose(1, 2)
        # Every patch receives the class-token slot's embedding too (the original adds pos[0] to all).
        tokens = tokens + self.pos_embed[:, 1:] + self.pos_embed[:, :1]
        pose_tok = self.pose_emb(self.init_hand_pose.reshape(1, nj, ROT6D))
        shape_tok = self.shape_emb(self.init_betas)[:, None]
        cam_tok = self.cam_emb(self.init_cam)[:, None]
        params = torch.cat([pose_tok, shape_tok, cam_tok], dim=1).expand(b, -1, -1)
        h = torch.cat([params, tokens], dim=1)
        for blk in self.blocks:
            h = blk(h)
        h = self.last_norm(h)
        pose = self.decpose(h[:, :nj]).reshape(b, -1) + self.init_hand_pose
        betas = self.decshape(h[:, nj]) + self.init_betas
        cam = self.deccam(h[:, nj + 1]) + self.init_cam
        feat = h[:, nj + 2 :].reshape(b, hp, wp, -1).permute(0, 3, 1, 2)
        return pose, betas, cam, feat


def _full(x: torch.Tensor) -> torch.Tensor:
    """x in float32 when it is half or bfloat16 (autocast output), else unchanged (float64 stays)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class _DeconvNet(nn.Module):
    """1x1 conv E -> E/2 (no BN/ReLU), then upsampling branches; branch i has i+1 transposed
    convolutions (kernel 4, stride 2, padding 1, no bias), each followed by BatchNorm and ReLU."""

    def __init__(self, embed_dim: int, branches: tuple[int, ...]):
        super().__init__()
        half = embed_dim // 2
        self.first_conv = nn.Sequential(nn.Conv2d(embed_dim, half, 1))
        self.deconv = nn.ModuleList()
        for n in branches:
            layers: list[nn.Module] = []
            c_in = half
            for _ in range(n):
                c_out = c_in // 2
                layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
                c_in = c_out
            self.deconv.append(nn.Sequential(*layers))

    def forward(self, feat: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps from finest to coarsest."""
        base = self.first_conv(feat)
        return [branch(base) for branch in self.deconv][::-1] + [base]

    def out_channels(self) -> int:
        half = self.first_conv[0].out_channels
        return half + sum(half >> n for n in (len(b) // 3 for b in self.deconv))


def sample_vertex_features(feat: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of feat (B, C, H, W) at pixel positions xy (B, N, 2) -> (B, N, C); zero
    padding, align_corners=True (pixel p maps to p/(size-1)*2-1), as the original does."""
    h, w = feat.shape[-2:]
    gx = xy[..., 0] / (w - 1) * 2 - 1
    gy = xy[..., 1] / (h - 1) * 2 - 1
    grid = torch.stack((gx, gy), dim=-1)[:, :, None, :]
    return F.grid_sample(feat, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[..., 0].transpose(1, 2)


class RefineNet(nn.Module):
    """Samples upsampled feature maps under the first-stage vertices and predicts residuals."""

    def __init__(self, dims: WilorDims, focal_length: float):
        super().__init__()
        self.focal_length = focal_length
        self.deconv = _DeconvNet(dims.embed_dim, dims.refine_branches)
        n = self.deconv.out_channels()
        self.dec_pose = nn.Linear(n, dims.num_joints * ROT6D)
        self.dec_shape = nn.Linear(n, dims.num_betas)
        self.dec_cam = nn.Linear(n, 3)

    def forward(self, feat: torch.Tensor, vertices: torch.Tensor, cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Residuals (pose 6D, betas, camera) from the patch map and first-stage vertices/camera."""
        pooled = []
        for fmap in self.deconv(feat):
            size = fmap.shape[-2]
            # Positions and sampling at full precision under autocast (map pixels need more than 8 bits).
            with torch.autocast(fmap.device.type, enabled=False):
                t = torch.stack([cam[:, 1], cam[:, 2], 2 * self.focal_length / (size * cam[:, 0] + 1e-9)], dim=-1)
                # These are normalised crop coordinates, yet the original samples them as map pixels;
                # the trained weights depend on it, so it is kept.
                xy = perspective_projection(vertices, t, self.focal_length / size)
                pooled.append(sample_vertex_features(_full(fmap), xy).amax(dim=1))
        v = torch.cat(pooled, dim=-1)
        return self.dec_pose(v), self.dec_shape(v), self.dec_cam(v)


class ManoLayer(nn.Module):
    """MANO fed with rotation matrices (flat-hand convention, no PCA, no translation).

    Buffers as in the official checkpoint: ``posedirs`` is (9*(J-1), V*3)."""

    def __init__(self, num_vertices: int = 778, num_joints: int = 16, num_betas: int = 10):
        super().__init__()
        self.register_buffer("v_template", torch.zeros(num_vertices, 3))
        self.register_buffer("shapedirs", torch.zeros(num_vertices, 3, num_betas))
        self.register_buffer("posedirs", torch.zeros(9 * (num_joints - 1), num_vertices * 3))
        self.register_buffer("J_regressor", torch.zeros(num_joints, num_vertices))
        self.register_buffer("lbs_weights", torch.zeros(num_vertices, num_joints))
        self.register_buffer("parents", torch.zeros(num_joints, dtype=torch.long))
        self.register_buffer("extra_joints_idxs", torch.tensor(MANO_TIP_VERTICES, dtype=torch.long))
        self.register_buffer("joint_map", torch.tensor(HAND21_FROM_MANO, dtype=torch.long))

    @classmethod
    def from_arrays(cls, arrays: dict, extra_joints_idxs=MANO_TIP_VERTICES, joint_map=HAND21_FROM_MANO) -> "ManoLayer":
        """From checkpoint-layout arrays: v_template, shapedirs, posedirs (P, V*3), J_regressor,
        lbs_weights, parents (root = -1)."""
        v, _, nb = arrays["shapedirs"].shape
        layer = cls(v, arrays["J_regressor"].shape[0], nb)
        for name in ("v_template", "shapedirs", "posedirs", "J_regressor", "lbs_weights", "parents"):
            src = torch.as_tensor(arrays[name])
            buf = getattr(layer, name)
            if tuple(src.shape) != tuple(buf.shape):
                raise ValueError(f"MANO buffer {name} has shape {tuple(src.shape)}, expected {tuple(buf.shape)}")
            buf.copy_(src)
        layer.extra_joints_idxs.copy_(torch.as_tensor(extra_joints_idxs))
        layer.joint_map.copy_(torch.as_tensor(joint_map))
        return layer

    def forward(self, rotmats: torch.Tensor, betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """rotmats (B, J, 3, 3) (root first), betas (B, nb) -> vertices (B, V, 3) and the 21
        keypoints (B, 21, 3) in OpenPose hand order."""
        b, nj = rotmats.shape[:2]
        v_shaped = self.v_template + torch.einsum("bl,mkl->bmk", betas, self.shapedirs)
        joints = torch.einsum("bik,ji->bjk", v_shaped, self.J_regressor)
        eye = torch.eye(3, dtype=rotmats.dtype, device=rotmats.device)
        pose_feature = (rotmats[:, 1:] - eye).reshape(b, -1)
        v_posed = v_shaped + torch.matmul(pose_feature, self.posedirs).reshape(b, -1, 3)

        rel = joints.clone()
        rel[:, 1:] = joints[:, 1:] - joints[:, self.parents[1:]]
        local = torch.zeros(b, nj, 4, 4, dtype=rotmats.dtype, device=rotmats.device)
        local[..., :3, :3] = rotmats
        local[..., :3, 3] = rel
        local[..., 3, 3] = 1.0
        chain = [local[:, 0]]
        for i in range(1, nj):
            chain.append(torch.matmul(chain[int(self.parents[i])], local[:, i]))
        world = torch.stack(chain, dim=1)
        posed_joints = world[..., :3, 3]
        # Skinning transforms map rest-pose points: subtract the rotated rest joint.
        skin = world.clone()
        skin[..., :3, 3] = world[..., :3, 3] - torch.einsum("bjik,bjk->bji", world[..., :3, :3], joints)
        T = torch.matmul(self.lbs_weights, skin.reshape(b, nj, 16)).reshape(b, -1, 4, 4)
        verts = torch.einsum("bvij,bvj->bvi", T[..., :3, :3], v_posed) + T[..., :3, 3]
        all_joints = torch.cat([posed_joints, verts[:, self.extra_joints_idxs]], dim=1)
        return verts, all_joints[:, self.joint_map]


class WilorModel(nn.Module):
    """Backbone + first MANO pass + refinement + final MANO pass.

    ``forward(img)`` with img (B, 3, 256, 256) returns the official output dict: pred_cam (B, 3),
    pred_cam_t (B, 3) metres, focal_length (B, 2) pixels of a 256 crop, pred_keypoints_3d (B, 21, 3)
    and pred_vertices (B, V, 3) metres in the MANO frame, pred_keypoints_2d (B, 21, 2) normalised
    crop coordinates, global_orient (B, 1, 3, 3), hand_pose (B, J-1, 3, 3), betas (B, nb)."""

    def __init__(self, dims: WilorDims, mano: ManoLayer, focal_length: float = 5000.0,
                 image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
                 image_std: tuple[float, float, float] = (0.229, 0.224, 0.225),
                 bbox_shape: tuple[int, int] = (192, 256)):
        super().__init__()
        self.dims = dims
        self.focal_length = float(focal_length)
        self.image_size = dims.image_size
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)
        self.bbox_shape = tuple(int(v) for v in bbox_shape)  # crop aspect (width, height)
        self.backbone = ViTBackbone(dims)
        self.refine_net = RefineNet(dims, self.focal_length)
        self.mano = mano

    def forward(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        """Under autocast (bfloat16 / float16) the backbone and the refinement's convolutions and
        heads run in the low precision; the 6D-to-matrix step, both MANO passes, the refinement's
        vertex sampling and the cameras stay in the input's float precision."""
        b = img.shape[0]
        nj = self.dims.num_joints
        full = torch.autocast(img.device.type, enabled=False)
        pose6d, betas, cam, feat = self.backbone(img[:, :, :, CROP_COLUMNS:-CROP_COLUMNS])
        pose6d, betas, cam = _full(pose6d), _full(betas), _full(cam)
        with full:
            first_vertices, _ = self.mano(rot6d_to_matrix(pose6d.reshape(b, nj, ROT6D)), betas)
        d_pose, d_betas, d_cam = self.refine_net(feat, first_vertices, cam)
        with full:
            pose6d, betas, cam = pose6d + _full(d_pose), betas + _full(d_betas), cam + _full(d_cam)
            rotmats = rot6d_to_matrix(pose6d.reshape(b, nj, ROT6D))
            vertices, keypoints = self.mano(rotmats, betas)
            f = self.focal_length
            cam_t = torch.stack([cam[:, 1], cam[:, 2], 2 * f / (self.image_size * cam[:, 0] + 1e-9)], dim=-1)
            keypoints_2d = perspective_projection(keypoints, cam_t, f / self.image_size)
        return {
            "pred_cam": cam,
            "pred_cam_t": cam_t,
            "focal_length": torch.full((b, 2), f, dtype=img.dtype, device=img.device),
            "pred_keypoints_3d": keypoints,
            "pred_vertices": vertices,
            "pred_keypoints_2d": keypoints_2d,
            "global_orient": rotmats[:, :1],
            "hand_pose": rotmats[:, 1:],
            "betas": betas,
        }
