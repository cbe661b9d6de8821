"""``omnimocap export RESULT_DIR --format amass|mano|gltf|bvh|fbx|rrd``: files for other tools.

Reads ``fused.npz`` of the results folder and writes next to it, one file per person (the first
person's file has no ``_person<i>`` suffix):
- amass: ``smplx.npz`` / ``smplx_person<i>.npz``, z up (``--y-up``: ``_yup`` before the suffix),
  resampled to ``--fps`` (a whole number, 30 by default);
- mano: ``mano_person<i>_<side>.npz`` per person and hand, on the fused frames;
- gltf: ``smplx.glb`` (skinned mesh, one animation at ``--fps``);
- bvh: ``smplx.bvh`` (SMPL-X skeleton with fingers, centimetres, ZXY rotations, ``--fps``);
- fbx: ``smplx.fbx`` through Blender's FBX exporter (armature, skinned mesh, animation);
- rrd: ``fused.rrd`` (needs rerun-sdk).

The body model is the one the fit used (``fused.npz`` records its name and SHA-256): glTF and FBX
take its mesh from that file (the built-in skeleton's fits use the synthetic mesh), and a
``--smplx-model`` other than that file is refused.
"""

from __future__ import annotations

import argparse

from omnimocap.apps.config_cli import add_config_options, config_from_args
from omnimocap.apps.options import existing_dir

CONFIG = "omnimocap.fusion.export_results:ExportConfig"
# ExportConfig's fields with a default; ``format`` has none (the option is required) and is declared below.
OPTIONS = ("fps", "y_up", "smplx_model", "models")
# Mirrors fusion.export_results.FORMATS, which is not imported here so that --help stays fast.
FORMATS = ("amass", "mano", "gltf", "bvh", "fbx", "rrd")


def register(sub) -> None:
    p = sub.add_parser("export", help="write AMASS/MANO/glTF/BVH/FBX/rerun files from a results folder",
                       description="Write AMASS SMPL-X npz, per-hand MANO npz, skinned glTF, BVH, FBX or a "
                                   "rerun recording next to RESULT_DIR/fused.npz.")
    p.add_argument("result", metavar="RESULT_DIR")
    p.add_argument("--format", required=True, choices=FORMATS)
    add_config_options(p, CONFIG, OPTIONS, metavars={"fps": "FPS", "smplx_model": "PATH", "models": "DIR"})
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from omnimocap.fusion.export_results import export_results
    from omnimocap.sim.synthetic_models import make_synthetic_smplx

    result = existing_dir(args.result, "results folder")
    config = config_from_args(CONFIG, args, OPTIONS, format=args.format)
    for path in export_results(result, config, builtin_mesh=make_synthetic_smplx):
        print(path)
    return 0
