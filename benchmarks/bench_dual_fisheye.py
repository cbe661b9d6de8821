"""Wrist views from raw dual-fisheye frames against views from the stitched panorama, by how far
the hand lies from the seam.

Scene: the simulator's people (sim/motion.py: 3 people 1.0-1.3 m from the camera, hands at
about 0.6-1.5 m) and its renderer, seen by a dual-fisheye camera (two 200 deg lenses back to back,
equidistant or Kannala-Brandt, their optical centres ``--baseline-mm`` apart along the camera's z)
turned to several yaws so that the people stand in front of a lens, beside the camera (across the
seam) or behind it. Each frame is rendered raw (each lens from its own centre,
sim/fisheye.py) and stitched into an equirectangular panorama the way a stitcher without
depth does (each direction read from the nearer lens as if both lenses sat at the camera's centre).

Per visible hand (hand_visibility of sim/simulate.py) both paths cut a wrist view planned from
the true hand mesh:
- stitched: geometry/views.py from the panorama, the hand predicted about the camera's centre;
- dual-fisheye: geometry/fisheye_views.py from the lens that sees the hand, predicted about that
  lens's centre.
Measured: ``silhouette_on_skin``, the fraction of the predicted hand silhouette (the mesh's
triangles filled in the view) that shows skin in the view (1 = the image shows the hand exactly
where the geometry says; parallax, a doubled or cut hand at the seam lower it), and
``direction_error_deg``, the mean angle between each mesh vertex's direction as the path's image
places it and as the path's geometry predicts it (the stitched path's parallax; 0 for the raw path
by construction, up to float rounding). Both are reported by the hand's angular distance from the
seam (the camera's z = 0 plane), with the ratio of the paths' skin fractions, once per lens
baseline (by default 30 mm, and 0 mm as the control: no parallax, so what remains is the stitched
path's second resampling).

    python benchmarks/bench_dual_fisheye.py [--width 2048] [--baseline-mm 30 0] [--out benchmarks/results/dual_fisheye.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from omnimocap.geometry.cameras import DualFisheyeCamera, EquirectCamera
from omnimocap.geometry.transforms import axis_angle_to_matrix, invert_pose, look_at, make_pose, transform_points
from omnimocap.sim.fisheye import DualFisheyeRenderer, stitch_equirect, stitch_maps
from omnimocap.sim.motion import make_people, sample_people
from omnimocap.sim.simulate import hand_visibility
from omnimocap.data.skeletons import SIDES
from omnimocap.fusion.body_model import load_skeleton
from omnimocap.hands.synthetic_mano import make_synthetic_mano
from omnimocap.geometry.fisheye_views import plan_fisheye_views, project_to_fisheye_view, render_fisheye_view
from omnimocap.hands.mano import ManoModel
from omnimocap.geometry.views import plan_view, project_to_view, render_view

KB = (0.02, -0.004, 0.0006, -0.00004)
BINS_DEG = (0.0, 5.0, 15.0, 30.0, 90.0)
VIEW_SIZE = 128


def skin_mask(img: np.ndarray) -> np.ndarray:
    """Pixels of the renderer's skin colour (shaded); shirts, trousers and the room are not."""
    b, g, r = (img[..., i].astype(int) for i in range(3))
    return (r > 120) & (r - b > 40) & (g > b)


def silhouette(px: np.ndarray, faces: np.ndarray, size: int) -> np.ndarray:
    """The filled triangles ``faces`` of vertex pixels ``px`` (V,2) in a size x size view."""
    mask = np.zeros((size, size), np.uint8)
    tri = px[faces]
    tri = tri[np.all(np.isfinite(tri), axis=(1, 2))]
    cv2.fillPoly(mask, list(np.round(tri * 4).astype(np.int32)), 1, cv2.LINE_8, 2)
    return mask.astype(bool)


def on_skin(view_img: np.ndarray, predicted: np.ndarray) -> float:
    return float(skin_mask(view_img)[predicted].mean()) if predicted.any() else float("nan")


def run(width: int, baseline_m: float, kb: bool, yaws_deg, seeds, times) -> list[dict]:
    skeleton, mano = load_skeleton(None), ManoModel.from_dict(make_synthetic_mano("right"))
    faces = {s: mano.faces_side(s) for s in SIDES}
    camera = DualFisheyeCamera.nominal(width, k=KB if kb else (), baseline_m=baseline_m)
    pano = EquirectCamera(width, width // 2)
    centre = np.array([0.0, 1.1, 0.0])
    rows = []
    for yaw in yaws_deg:
        R = axis_angle_to_matrix(np.radians(yaw) * np.array([0.0, 1.0, 0.0])) @ look_at(
            np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0]))
        T_world_cam = make_pose(R, centre)
        T_cam_world = invert_pose(T_world_cam)
        renderer = DualFisheyeRenderer(camera, T_world_cam, faces)
        maps = stitch_maps(camera, pano)
        for seed in seeds:
            people = make_people(3, np.random.default_rng(seed), centre, skeleton)
            sample = sample_people(people, skeleton, mano, np.asarray(times), with_vertices=True)
            visible = hand_visibility(sample, centre)
            for j in range(len(times)):
                raw = renderer.render(sample.joints[:, j], sample.global_R[:, j], sample.hand_vertices[:, j])
                stitched = stitch_equirect(raw, camera, pano, maps)
                for p in range(len(people)):
                    for s, side in enumerate(SIDES):
                        if not visible[p, j, s]:
                            continue
                        verts = transform_points(T_cam_world, sample.hand_vertices[p, j, s])
                        c = verts.mean(axis=0)
                        seam_deg = float(np.degrees(np.arcsin(abs(c[2]) / np.linalg.norm(c))))
                        view = plan_view(verts, VIEW_SIZE)
                        pred_stitched = silhouette(project_to_view(view, verts), faces[side], VIEW_SIZE)
                        fview = plan_fisheye_views(camera, verts[None], VIEW_SIZE)[0]
                        pred_raw = silhouette(project_to_fisheye_view(fview, verts), faces[side], VIEW_SIZE)
                        # Where each path's image places the vertices: the stitcher reads direction
                        # d from lens L (the one nearest d), which saw the vertex from its own centre.
                        lens_of = camera.best_lens(verts, points=False)
                        t = np.stack([camera.lenses[i].t_cam_lens for i in lens_of])
                        seen = (verts - t) / np.linalg.norm(verts - t, axis=-1, keepdims=True)
                        ideal = verts / np.linalg.norm(verts, axis=-1, keepdims=True)
                        stitched_err = np.degrees(np.arccos(np.clip(np.sum(seen * ideal, -1), -1, 1)))
                        t_raw = fview.t_cam_view
                        raw_seen = (verts - t_raw) / np.linalg.norm(verts - t_raw, axis=-1, keepdims=True)
                        px = project_to_fisheye_view(fview, verts)
                        raw_pred = fview.view.camera.unproject(px) @ fview.view.R_pano_view.T
                        raw_err = np.degrees(np.arccos(np.clip(np.sum(raw_seen * raw_pred, -1), -1, 1)))
                        rows.append({
                            "yaw_deg": yaw, "seed": seed, "t": times[j], "person": p, "side": side,
                            "seam_deg": seam_deg, "distance_m": float(np.linalg.norm(c)), "lens": fview.lens,
                            "stitched_on_skin": on_skin(render_view(stitched, pano, view), pred_stitched),
                            "raw_on_skin": on_skin(render_fisheye_view(raw, camera, fview), pred_raw),
                            "stitched_direction_error_deg": float(stitched_err.mean()),
                            "raw_direction_error_deg": float(raw_err.mean()),
                        })
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    table = []
    for lo, hi in zip(BINS_DEG, BINS_DEG[1:]):
        sel = [r for r in rows if lo <= r["seam_deg"] < hi and np.isfinite(r["stitched_on_skin"])
               and np.isfinite(r["raw_on_skin"])]
        if not sel:
            continue
        stitched = np.array([r["stitched_on_skin"] for r in sel])
        raw = np.array([r["raw_on_skin"] for r in sel])
        table.append({
            "seam_distance_deg": [lo, hi], "hands": len(sel),
            "median_distance_m": float(np.median([r["distance_m"] for r in sel])),
            "stitched_on_skin_mean": float(stitched.mean()), "raw_on_skin_mean": float(raw.mean()),
            "raw_over_stitched_on_skin": float(raw.mean() / stitched.mean()),
            "stitched_below_0_8": float((stitched < 0.8).mean()), "raw_below_0_8": float((raw < 0.8).mean()),
            "stitched_direction_error_deg_mean": float(np.mean([r["stitched_direction_error_deg"] for r in sel])),
            "stitched_direction_error_deg_max": float(np.max([r["stitched_direction_error_deg"] for r in sel])),
            "raw_direction_error_deg_mean": float(np.mean([r["raw_direction_error_deg"] for r in sel])),
        })
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=2048, help="raw frame width (two square lenses) and panorama width")
    ap.add_argument("--baseline-mm", type=float, nargs="+", default=[30.0, 0.0],
                    help="distances between the lenses' optical centres, one table each (0: the control without "
                         "parallax, where only the stitched path's second resampling differs)")
    ap.add_argument("--kannala-brandt", action="store_true", help="Kannala-Brandt lenses instead of equidistant")
    ap.add_argument("--yaws", type=float, nargs="+", default=[0, 45, 70, 90, 110, 135, 180])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--times", type=float, nargs="+", default=[0.5, 1.5, 2.5, 3.5, 4.5])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/dual_fisheye.json"))
    args = ap.parse_args()
    start = time.perf_counter()
    tables = {}
    for baseline_mm in args.baseline_mm:
        rows = run(args.width, baseline_mm / 1000.0, args.kannala_brandt, args.yaws, args.seeds, args.times)
        tables[f"{baseline_mm:g}"] = table = summarise(rows)
        print(f"baseline {baseline_mm:g} mm")
        print(f"{'seam deg':>10} {'hands':>6} {'dist m':>7} {'stitched':>9} {'raw':>6} {'ratio':>6} {'parallax deg':>13}")
        for r in table:
            lo, hi = r["seam_distance_deg"]
            print(f"{lo:>4.0f}-{hi:<5.0f} {r['hands']:>6d} {r['median_distance_m']:>7.2f} "
                  f"{r['stitched_on_skin_mean']:>9.3f} {r['raw_on_skin_mean']:>6.3f} "
                  f"{r['raw_over_stitched_on_skin']:>6.3f} {r['stitched_direction_error_deg_mean']:>13.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "what": "wrist views cut from raw dual-fisheye frames (from the lens that sees the hand) against views "
                "from the stitched panorama, on the simulator's people; see benchmarks/bench_dual_fisheye.py",
        "config": {"width": args.width, "lens": "kannala-brandt" if args.kannala_brandt
                   else "equidistant", "fov_deg": 200.0, "yaws_deg": args.yaws, "seeds": args.seeds, "times_s": args.times,
                   "view_size": VIEW_SIZE},
        "tables_by_baseline_mm": tables, "seconds": time.perf_counter() - start, "machine": platform.platform(),
    }, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
