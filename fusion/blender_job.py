"""Jobs run inside Blender's Python (the ``bpy`` module), in their own process.

Run as ``python blender_job.py JOB ARGS...`` with an interpreter that has ``bpy``. It imports only
``bpy`` and the standard library, so it works in Blender's own environment (whose NumPy differs from
ours). Jobs:

- ``fbx IN.glb OUT.fbx``: import our glTF (armature, skinned mesh, animation) with Blender's glTF
  importer and write it with Blender's FBX exporter (y up, -z forward, metres, baked animation).
- ``probe IN OUT.json``: import a ``.glb``, ``.bvh`` or ``.fbx`` and write, as JSON, the scene's
  frame rate, the action's frame range and the world position of every bone head (Blender's z-up
  world, metres) at every frame.
- ``render IN.glb OUT.png FRAME``: import the glTF and render one frame headless with Workbench.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import bpy


def _reset() -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)


def _fps_of_glb(path: str) -> float:
    """Our glTF files record their frame rate in ``asset.extras.fps`` (glTF itself keeps only times)."""
    import struct

    with open(path, "rb") as f:
        head = f.read(20)
        length = struct.unpack("<I", head[12:16])[0]
        doc = json.loads(f.read(length))
    return float(doc.get("asset", {}).get("extras", {}).get("fps", 30.0))


def _set_fps(fps: float) -> None:
    scene = bpy.context.scene
    scene.render.fps = int(round(fps))
    scene.render.fps_base = scene.render.fps / fps


def _import(path: str) -> None:
    suffix = Path(path).suffix.lower()
    if suffix in (".glb", ".gltf"):
        _set_fps(_fps_of_glb(path))
        bpy.ops.import_scene.gltf(filepath=path)
    elif suffix == ".bvh":
        bpy.ops.import_anim.bvh(filepath=path, global_scale=0.01, update_scene_fps=True, update_scene_duration=True)
    elif suffix == ".fbx":
        bpy.ops.import_scene.fbx(filepath=path, use_anim=True)
    else:
        raise SystemExit(f"{path}: not a .glb, .bvh or .fbx file")


def _armature():
    arms = [o for o in bpy.context.scene.objects if o.type == "ARMATURE"]
    if len(arms) != 1:
        raise SystemExit(f"expected one armature, found {len(arms)}")
    return arms[0]


def _frame_range(arm) -> tuple[int, int]:
    action = arm.animation_data.action if arm.animation_data else None
    if action is None:
        raise SystemExit("the armature has no animation")
    start, end = action.frame_range
    return int(round(start)), int(round(end))


def fbx(src: str, dst: str) -> None:
    _reset()
    _import(src)
    for obj in [o for o in bpy.context.scene.objects if o.type == "MESH"]:
        if not any(m.type == "ARMATURE" for m in obj.modifiers):  # the importer's bone-shape helper
            bpy.data.objects.remove(obj)
    start, end = _frame_range(_armature())
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = start, end
    bpy.ops.export_scene.fbx(filepath=dst, use_selection=False, object_types={"ARMATURE", "MESH"},
                             add_leaf_bones=False, bake_anim=True, bake_anim_use_all_actions=False,
                             bake_anim_use_nla_strips=False, bake_anim_simplify_factor=0.0,
                             axis_forward="-Z", axis_up="Y", apply_unit_scale=True, global_scale=1.0)


def probe(src: str, out: str) -> None:
    _reset()
    _import(src)
    arm = _armature()
    start, end = _frame_range(arm)
    scene = bpy.context.scene
    frames = {}
    for frame in range(start, end + 1):
        scene.frame_set(frame)
        frames[frame] = {b.name: list(arm.matrix_world @ b.head) for b in arm.pose.bones}
    Path(out).write_text(json.dumps({
        "fps": scene.render.fps / scene.render.fps_base, "frame_start": start, "frame_end": end,
        "bones": [b.name for b in arm.pose.bones], "heads": frames,
        "skinned_meshes": [o.name for o in scene.objects if o.type == "MESH"
                           and any(m.type == "ARMATURE" for m in o.modifiers)],
        "blender": bpy.app.version_string,
    }))


def render(src: str, out: str, frame: str) -> None:
    _reset()
    _import(src)
    scene = bpy.context.scene
    scene.frame_set(int(frame))
    mesh = next(o for o in scene.objects if o.type == "MESH" and any(m.type == "ARMATURE" for m in o.modifiers))
    mesh.data.materials.clear()
    posed = mesh.evaluated_get(bpy.context.evaluated_depsgraph_get())
    points = [posed.matrix_world @ v.co for v in posed.data.vertices]
    low = [min(p[i] for p in points) for i in range(3)]
    high = [max(p[i] for p in points) for i in range(3)]
    centre = type(points[0])([(a + b) / 2 for a, b in zip(low, high)])
    height = high[2] - low[2]
    cam_data = bpy.data.cameras.new("camera")
    cam = bpy.data.objects.new("camera", cam_data)
    scene.collection.objects.link(cam)
    cam.location = (centre.x + 1.2 * height, centre.y - 2.0 * height, centre.z + 0.3 * height)
    cam.rotation_euler = (centre - cam.location).to_track_quat("-Z", "Y").to_euler()
    scene.camera = cam
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light = "STUDIO"
    scene.display.shading.color_type = "SINGLE"
    scene.display.shading.single_color = (0.62, 0.66, 0.74)
    scene.display.shading.show_cavity = True
    scene.render.resolution_x, scene.render.resolution_y = 480, 480
    scene.render.film_transparent = False
    world = bpy.data.worlds.new("world")
    scene.world = world
    world.color = (0.95, 0.95, 0.95)
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    scene.render.image_settings.compression = 100
    scene.render.filepath = out
    bpy.ops.render.render(write_still=True)


if __name__ == "__main__":
    jobs = {"fbx": fbx, "probe": probe, "render": render}
    job = sys.argv[1] if len(sys.argv) > 1 else ""
    if job not in jobs:
        raise SystemExit(f"usage: blender_job.py {{{'|'.join(jobs)}}} ARGS...")
    jobs[job](*sys.argv[2:])
