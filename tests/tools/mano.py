"""The 16 MANO joints of an exported ``mano_*.npz`` through smplx's own MANO layer (the client users run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def smplx_mano_joints(mano_dir: str | Path, side: str, data) -> np.ndarray:
    """(F,16,3) joints of the parameters in ``data`` (an opened mano npz: global_orient, hand_pose,
    betas, transl) posed by smplx's MANO layer on ``mano_dir/MANO_<SIDE>.pkl``, flat-hand convention."""
    import smplx
    import torch

    layer = smplx.MANO(model_path=str(Path(mano_dir) / f"MANO_{side.upper()}.pkl"), is_rhand=side == "right",
                       use_pca=False, flat_hand_mean=True, num_betas=10)
    F = len(data["transl"])

    def T(x):
        return torch.tensor(np.ascontiguousarray(x), dtype=torch.float32)

    with torch.no_grad():
        out = layer(global_orient=T(data["global_orient"]), hand_pose=T(data["hand_pose"]),
                    betas=T(np.broadcast_to(data["betas"], (F, 10))), transl=T(data["transl"]))
    return out.joints.numpy()
