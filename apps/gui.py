"""The live capture session window (PySide6 + pyqtgraph): a thin view over
:class:`~omnimocap.fusion.live.controller.LiveController`.

The window never blocks and never queues: a QTimer on the GUI thread reads the controller's latest
:class:`~omnimocap.fusion.live.state.LiveState` and redraws when it changed; buttons call the controller's
methods, whose long work runs in the controller's threads.

Panes: each Kinect's colour image with its skeletons (or, without colour, the skeletons seen from the
depth camera, x right, y down), the panorama with predicted wrists and the wrist-centred views'
outlines, the hand views with the reconstructed 2D keypoints, and the 3D scene (pyqtgraph's OpenGL
view, y up; where OpenGL is unavailable, e.g. the ``offscreen`` platform, a top-down x-z plot that
says so): the live SMPL-X body of every person whose shape is fitted (its mesh with a model file,
else its skeleton) with the fused hands, the Kinect skeletons before that. Then the device table, calibration, recording, the preview switch and every message.

The lean drawing (the default) draws the panorama and its hand views at every panorama frame, and
the Kinect panes and the 3D view at every second one (15 Hz from a 30 fps panorama).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from omnimocap.fusion.live.controller import LiveController
from omnimocap.fusion.live.state import LiveState, Message
from omnimocap.data.skeletons import HAND21_JOINTS, KINECT_PARENTS, SMPLX_PARENTS

pg.setConfigOptions(imageAxisOrder="row-major", antialias=True, background="#16181d", foreground="#d8dde6")

# Joint pairs drawn as bones.
KINECT_BONE_PAIRS = np.array([(p, c) for c, p in enumerate(KINECT_PARENTS) if p >= 0])
HAND_BONE_PAIRS = np.array([(0 if name.endswith("1") else i - 1, i) for i, name in enumerate(HAND21_JOINTS) if i > 0])
SMPLX_BONE_PAIRS = np.array([(p, c) for c, p in enumerate(SMPLX_PARENTS) if p >= 0])
BODY_COLOR = (255, 170, 60)
MESH_COLOR = (0.85, 0.62, 0.45, 1.0)
# Mesh vertices drawn per person in the top-down plot (a cloud that shows the body's outline).
TOP_DOWN_MESH_POINTS = 1500
PERSON_COLORS = ((80, 200, 255), (255, 170, 60), (150, 230, 120), (230, 120, 230))
SIDE_COLORS = {"left": (255, 90, 90), "right": (90, 255, 140)}
LEVEL_COLORS = {"info": "#9aa4b2", "warning": "#f0c050", "fault": "#ff6b6b"}
STATE_COLORS = {"running": "#5fd17a", "idle": "#f0c050", "connected": "#f0c050", "stalled": "#ff6b6b",
                "disconnected": "#ff6b6b", "stopped": "#9aa4b2"}
MAX_HAND_VIEWS = 4
# Widest image drawn per pane, pixels (about the pane's width on a 1600-pixel-wide window).
PANO_MAX_WIDTH = 960
KINECT_MAX_WIDTH = 480
# How often the text panels (devices, controls, calibration, recording) are redrawn, seconds.
PANEL_PERIOD_S = 0.25
# Lean drawing: the panorama and its hand views are drawn at every new panorama frame, the Kinect
# panes and the 3D view at every this many (15 Hz from a 30 fps panorama).
SLOW_PANE_EVERY = 2


def bone_segments(joints: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(2K, D) endpoints of the K bones whose both joints are finite, for lines drawn as pairs."""
    seg = joints[pairs].reshape(len(pairs), 2, -1)
    return seg[np.all(np.isfinite(seg), axis=(1, 2))].reshape(-1, joints.shape[-1])


SOFTWARE_GL = ("llvmpipe", "softpipe", "swrast", "software rasterizer")


def opengl_available() -> tuple[bool, str]:
    """Whether the 3D view can use OpenGL here, and why not."""
    platform = QtWidgets.QApplication.platformName()
    if platform in ("offscreen", "minimal"):
        return False, f"3D view: no OpenGL on the '{platform}' Qt platform, showing a top-down (x-z) plot"
    try:
        import OpenGL  # noqa: F401  (pyqtgraph.opengl needs PyOpenGL)
        import pyqtgraph.opengl  # noqa: F401
    except ImportError as exc:
        return False, f"3D view: OpenGL support missing ({exc}), showing a top-down (x-z) plot"
    return True, ""


def opengl_renderer() -> str:
    """The OpenGL renderer's name on this display (e.g. ``llvmpipe (LLVM 15...)``), or "" when no
    context can be made."""
    context = QtGui.QOpenGLContext()
    surface = QtGui.QOffscreenSurface()
    surface.create()
    if not context.create() or not context.makeCurrent(surface):
        return ""
    try:
        return context.functions().glGetString(0x1F01) or ""  # GL_RENDERER
    finally:
        context.doneCurrent()


def opengl_accelerated() -> tuple[bool, str]:
    """Whether the 3D view should use OpenGL: only where it is available and not rendered in
    software (Mesa's llvmpipe redraws the whole window on the CPU, slower than the 2D fallback).
    ``OMNIMOCAP_GL=1`` forces OpenGL, ``OMNIMOCAP_GL=0`` forbids it."""
    import os

    ok, why = opengl_available()
    forced = os.environ.get("OMNIMOCAP_GL", "")
    if not ok or forced == "0":
        return False, why or "3D view: OpenGL turned off (OMNIMOCAP_GL=0), showing a top-down (x-z) plot"
    if forced == "1":
        return True, ""
    renderer = opengl_renderer()
    if not renderer or any(word in renderer.lower() for word in SOFTWARE_GL):
        return False, f"3D view: OpenGL is software-rendered here ({renderer or 'no context'}), " \
                      "showing a top-down (x-z) plot (OMNIMOCAP_GL=1 forces OpenGL)"
    return True, ""


def apply_theme(app: QtWidgets.QApplication) -> None:
    """A dark Fusion palette, so the panes and the controls read as one surface."""
    app.setStyle("Fusion")
    palette = QtGui.QPalette()
    roles = QtGui.QPalette.ColorRole
    for role, color in ((roles.Window, "#1e2128"), (roles.WindowText, "#d8dde6"), (roles.Base, "#16181d"),
                        (roles.AlternateBase, "#22262e"), (roles.Text, "#d8dde6"), (roles.Button, "#2a2f38"),
                        (roles.ButtonText, "#d8dde6"), (roles.Highlight, "#3d6fb6"),
                        (roles.HighlightedText, "#ffffff"), (roles.ToolTipBase, "#2a2f38"),
                        (roles.ToolTipText, "#d8dde6")):
        palette.setColor(role, QtGui.QColor(color))
    app.setPalette(palette)


def set_points(item, x, y, **style) -> None:
    """``item.setData(x, y)``, skipped when both the item and the data are empty (clearing an
    already empty item on every timer tick only costs repaints)."""
    if len(x) == 0:
        held = item.data if isinstance(item, pg.ScatterPlotItem) else item.xData
        if held is None or len(held) == 0:
            return
    item.setData(x, y, **style)


def display_rgb(bgr: np.ndarray, max_width: int) -> np.ndarray:
    """``bgr`` (H,W,3 uint8) as a C-contiguous RGB image at most ``max_width`` wide (bilinear: at
    half size, the mean of each 2x2 block)."""
    import cv2

    h, w = bgr.shape[:2]
    if w > max_width:
        bgr = cv2.resize(bgr, (max_width, max(1, round(h * max_width / w))), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _pen(rgb, width: float = 2.0):
    return pg.mkPen(color=rgb, width=width)


class ImagePane(pg.GraphicsLayoutWidget):
    """An image with overlay items, y axis pointing down like image rows."""

    def __init__(self, title: str):
        super().__init__()
        self.setMinimumSize(160, 120)
        self.label = self.addLabel(title, row=0, col=0, justify="left", size="9pt")
        self.view = self.addViewBox(row=1, col=0, lockAspect=True, invertY=True, enableMouse=True)
        self.image = pg.ImageItem()
        self.view.addItem(self.image)
        self._size: tuple[int, int] | None = None

    def set_image(self, bgr: np.ndarray | None, max_width: int = 1280, lean: bool = False) -> None:
        """Show ``bgr`` in its own pixel coordinates; images wider than ``max_width`` are drawn
        smaller (overlays keep full-resolution coordinates). ``lean``: downscaled with area
        averaging and turned RGB in one contiguous buffer that Qt shows as it is (no levels, no
        further copy); otherwise subsampled and rescaled through the image levels 0-255."""
        if bgr is None:
            if self.image.image is not None:
                self.image.clear()
            return
        if lean:
            self.image.setImage(display_rgb(bgr, max_width), autoLevels=False)
        else:
            step = -(-bgr.shape[1] // max_width)
            self.image.setImage(bgr[::step, ::step, ::-1], autoLevels=False, levels=(0, 255))
        size = bgr.shape[:2]
        if size != self._size or not lean:
            self.image.setRect(QtCore.QRectF(-0.5, -0.5, bgr.shape[1], bgr.shape[0]))
        if size != self._size:
            self._size = size
            self.view.autoRange(padding=0)

    def set_title(self, text: str) -> None:
        if text != self.label.text:
            self.label.setText(text)


class KinectWidget(ImagePane):
    """A Kinect's colour image with skeleton overlays, or the skeletons in its depth frame."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name
        self.bones = pg.PlotDataItem(connect="pairs", pen=_pen(PERSON_COLORS[0], 3))
        self.joints = pg.ScatterPlotItem(size=6, brush=pg.mkBrush(255, 255, 255, 200), pen=None)
        self.view.addItem(self.bones)
        self.view.addItem(self.joints)

    def show_pane(self, pane, lean: bool = False) -> None:
        if pane.color is not None and pane.skeletons_color_px:
            self.set_image(pane.color, KINECT_MAX_WIDTH if lean else 1280, lean)
            points = pane.skeletons_color_px
            self.set_title(f"{self.name}  colour")
        else:
            self.set_image(pane.color, KINECT_MAX_WIDTH if lean else 1280, lean)
            # Without colour: the depth camera's view plane, x right and y down, in millimetres.
            points = {i: 1000.0 * s[:, :2] for i, s in pane.skeletons_depth.items()}
            self.set_title(f"{self.name}  skeletons (depth frame, mm)" if pane.color is None else self.name)
        segs = [bone_segments(p, KINECT_BONE_PAIRS) for p in points.values()]
        if segs:
            seg = np.concatenate(segs)
            set_points(self.bones, seg[:, 0], seg[:, 1])
            pts = np.concatenate(list(points.values()))
            pts = pts[np.all(np.isfinite(pts), axis=1)]
            set_points(self.joints, pts[:, 0], pts[:, 1])
            if pane.color is None and len(pts):
                lo, hi = pts.min(0), pts.max(0)
                self.view.setRange(xRange=(min(lo[0], -1500), max(hi[0], 1500)),
                                   yRange=(min(lo[1], -1200), max(hi[1], 1200)), padding=0.05)
        else:
            set_points(self.bones, [], [])
            set_points(self.joints, [], [])


class PanoWidget(ImagePane):
    """The panorama with predicted wrists (dots) and the views' outlines."""

    def __init__(self):
        super().__init__("360 panorama")
        self.outlines = pg.PlotDataItem(connect="finite", pen=_pen((255, 230, 80), 2))
        self.wrists = pg.ScatterPlotItem(size=10, pen=pg.mkPen("k"))
        self.view.addItem(self.outlines)
        self.view.addItem(self.wrists)

    def show_pane(self, pano, lean: bool = False, title: bool = True, overlays: bool = True) -> None:
        """``overlays`` False: the image only (the wrists and outlines drawn are still those of the
        frame the pane's overlays belong to)."""
        self.set_image(pano.image, PANO_MAX_WIDTH if lean else 1280, lean)
        if title:
            behind = "" if pano.overlay_index is None else f"  (hands of frame {pano.overlay_index})"
            self.set_title(f"360 panorama  frame {pano.index}  t = {pano.t_session:.2f} s{behind}")
        if not overlays:
            return
        if pano.view_outlines:
            parts = []
            for o in pano.view_outlines:
                parts += [o, np.full((1, 2), np.nan)]
            line = np.concatenate(parts)
            set_points(self.outlines, line[:, 0], line[:, 1])
        else:
            set_points(self.outlines, [], [])
        set_points(self.wrists, [float(px[0]) for _, _, px in pano.wrists_px],
                   [float(px[1]) for _, _, px in pano.wrists_px],
                   brush=[pg.mkBrush(*SIDE_COLORS[side]) for _, side, _ in pano.wrists_px])


class HandViewWidget(ImagePane):
    """One wrist-centred view: the image, the predicted box and the reconstructed hand."""

    def __init__(self):
        super().__init__("hand view")
        self.box = pg.PlotDataItem(pen=pg.mkPen((255, 230, 80), width=1, style=QtCore.Qt.PenStyle.DashLine))
        self.bones = pg.PlotDataItem(connect="pairs", pen=_pen((90, 255, 140), 2))
        self.points = pg.ScatterPlotItem(size=4, brush=pg.mkBrush(255, 255, 255), pen=None)
        for item in (self.box, self.bones, self.points):
            self.view.addItem(item)

    def show_view(self, hv, lean: bool = False) -> None:
        self.set_image(hv.image, lean=lean)
        x0, y0, x1, y1 = hv.predicted_box
        self.box.setData([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0])
        status = "no hand" if hv.keypoints_2d is None else "hand"
        self.set_title(f"person {hv.person_id} {hv.side}: {status}")
        if hv.keypoints_2d is not None:
            seg = bone_segments(hv.keypoints_2d, HAND_BONE_PAIRS)
            self.bones.setData(seg[:, 0], seg[:, 1], pen=_pen(SIDE_COLORS[hv.side], 2))
            self.points.setData(hv.keypoints_2d[:, 0], hv.keypoints_2d[:, 1])
        else:
            set_points(self.bones, [], [])
            set_points(self.points, [], [])

    def clear_view(self) -> None:
        self.set_image(None)
        self.set_title("no view")
        for item in (self.box, self.bones, self.points):
            set_points(item, [], [])


class Scene3D(QtWidgets.QWidget):
    """The 3D scene in the world frame: pyqtgraph's GL view, or a top-down x-z plot without OpenGL.
    ``accelerated_only``: use OpenGL only where it is not software-rendered (:func:`opengl_accelerated`)."""

    def __init__(self, accelerated_only: bool = False):
        super().__init__()
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.uses_opengl, self.note = opengl_accelerated() if accelerated_only else opengl_available()
        self.note_label = QtWidgets.QLabel(self.note)
        self.note_label.setWordWrap(True)
        self.note_label.setVisible(bool(self.note))
        layout.addWidget(self.note_label)
        if self.uses_opengl:
            import pyqtgraph.opengl as gl

            self.view = gl.GLViewWidget()
            self.view.setCameraPosition(distance=6.0, elevation=25, azimuth=-60)
            grid = gl.GLGridItem()
            grid.setSize(8, 8)
            grid.setSpacing(0.5, 0.5)
            self.view.addItem(grid)
            self.skeletons = gl.GLLinePlotItem(mode="lines", width=2, color=(0.3, 0.8, 1.0, 1.0), antialias=True)
            self.hands = gl.GLLinePlotItem(mode="lines", width=3, color=(0.35, 1.0, 0.55, 1.0), antialias=True)
            # the lifted hands over the body's mesh (no depth test, drawn after it): a hand often
            # lies in the mesh's own hand
            from OpenGL import GL

            self.hands.setGLOptions({GL.GL_DEPTH_TEST: False, GL.GL_BLEND: True,
                                     "glBlendFunc": (GL.GL_SRC_ALPHA, GL.GL_ONE_MINUS_SRC_ALPHA)})
            self.hands.setDepthValue(10)
            self.sensors = gl.GLLinePlotItem(mode="lines", width=3, antialias=True)
            self.body_bones = gl.GLLinePlotItem(mode="lines", width=2, color=(1.0, 0.67, 0.24, 1.0), antialias=True)
            for item in (self.skeletons, self.hands, self.sensors, self.body_bones):
                self.view.addItem(item)
            self.meshes: dict[int, object] = {}  # person id -> GLMeshItem
            self._gl_faces: tuple[np.ndarray, np.ndarray] | None = None  # (the state's faces, as drawn)
        else:
            self.view = pg.PlotWidget(title="top view (world x-z, metres)")
            self.view.setAspectLocked(True)
            if accelerated_only:
                # axes and their grid repaint their text and ticks with every frame: a fixed
                # 0.5 m grid drawn once instead, and no axes
                self.view.hideAxis("left")
                self.view.hideAxis("bottom")
                ticks = np.arange(-4.0, 4.01, 0.5)
                lines = [np.array([[t, -4.0], [t, 4.0]]) for t in ticks] + [np.array([[-4.0, t], [4.0, t]]) for t in ticks]
                grid = np.concatenate(lines)
                self.view.plot(grid[:, 0], grid[:, 1], connect="pairs", pen=pg.mkPen((90, 96, 110), width=1))
                self.view.setRange(xRange=(-3, 3), yRange=(-3, 3), padding=0)
                self.view.disableAutoRange()
            else:
                self.view.showGrid(x=True, y=True, alpha=0.3)
            self.skeletons = self.view.plot(connect="pairs", pen=_pen((80, 200, 255), 2))
            self.hands = self.view.plot(connect="pairs", pen=_pen((90, 255, 140), 2))
            self.sensors = pg.ScatterPlotItem(size=12, symbol="t", brush=pg.mkBrush(255, 230, 80))
            self.sensor_labels: list[pg.TextItem] = []
            self.view.addItem(self.sensors)
            self.mesh_points = pg.ScatterPlotItem(size=2, pen=None, brush=pg.mkBrush(217, 158, 115, 110))
            self.body_bones = self.view.plot(connect="pairs", pen=_pen(BODY_COLOR, 2))
            self.view.addItem(self.mesh_points)
        layout.addWidget(self.view, 1)

    @staticmethod
    def _gl(points: np.ndarray) -> np.ndarray:
        """World (x, y up, z) -> the GL view's z-up axes (x, -z, y), keeping the frame right-handed."""
        return np.stack([points[:, 0], -points[:, 2], points[:, 1]], axis=1) if len(points) else np.zeros((0, 3))

    def show_world(self, world) -> None:
        """Draw ``world``: the fitted bodies (mesh, else skeleton) when there are any, else the
        Kinect skeletons; the lifted hands; the sensors."""
        fitted = world.fitted
        skel = [] if fitted else [bone_segments(j, KINECT_BONE_PAIRS) for j in world.skeletons.values()]
        hands = [bone_segments(h, HAND_BONE_PAIRS) for h in world.hands]
        skel = np.concatenate(skel) if skel else np.zeros((0, 3))
        hands = np.concatenate(hands) if hands else np.zeros((0, 3))
        with_mesh = world.body_faces is not None and all(b.vertices is not None for b in fitted.values())
        body = [bone_segments(b.joints, SMPLX_BONE_PAIRS) for b in fitted.values()]
        body = np.concatenate(body) if body else np.zeros((0, 3))
        poses = world.sensor_poses
        if self.uses_opengl:
            self.skeletons.setData(pos=self._gl(skel))
            self.hands.setData(pos=self._gl(hands))
            self.body_bones.setData(pos=self._gl(np.zeros((0, 3)) if with_mesh else body))
            self._show_meshes(fitted if with_mesh else {}, world.body_faces)
            axes, colors = [], []
            for T in poses.values():
                for k, rgb in enumerate(((1, 0.3, 0.3, 1), (0.3, 1, 0.3, 1), (0.3, 0.5, 1, 1))):
                    axes += [T[:3, 3], T[:3, 3] + 0.25 * T[:3, k]]
                    colors += [rgb, rgb]
            self.sensors.setData(pos=self._gl(np.array(axes)) if axes else np.zeros((0, 3)),
                                 color=np.array(colors) if colors else (1, 1, 1, 1))
        else:
            set_points(self.skeletons, skel[:, 0], skel[:, 2])
            set_points(self.hands, hands[:, 0], hands[:, 2])
            set_points(self.body_bones, body[:, 0], body[:, 2])
            cloud = [b.vertices[::max(1, len(b.vertices) // TOP_DOWN_MESH_POINTS)] for b in fitted.values()] \
                if with_mesh else []
            cloud = np.concatenate(cloud) if cloud else np.zeros((0, 3))
            set_points(self.mesh_points, cloud[:, 0], cloud[:, 2])
            centres = np.array([T[:3, 3] for T in poses.values()]) if poses else np.zeros((0, 3))
            set_points(self.sensors, centres[:, 0], centres[:, 2])
            if len(self.sensor_labels) != len(poses):
                for label in self.sensor_labels:
                    self.view.removeItem(label)
                self.sensor_labels = [pg.TextItem(name, color="#f0e060", anchor=(0, 1)) for name in poses]
                for label in self.sensor_labels:
                    self.view.addItem(label)
            for label, c in zip(self.sensor_labels, centres):
                label.setPos(c[0], c[2])

    def _show_meshes(self, fitted: dict, faces) -> None:
        """One shaded GL mesh per fitted body; those of people no longer fitted are removed."""
        import pyqtgraph.opengl as gl

        for pid in set(self.meshes) - set(fitted):
            self.view.removeItem(self.meshes.pop(pid))
        if faces is not None and (self._gl_faces is None or self._gl_faces[0] is not faces):
            # pyqtgraph's "shaded" shader lights the faces whose normals point away from the eye
            # (its light vector is (1, -1, -1) in eye space): outward-wound triangles are given reversed
            self._gl_faces = (faces, np.ascontiguousarray(faces[:, ::-1]))
        for pid, body in fitted.items():
            item = self.meshes.get(pid)
            if item is None or item.faces_given is not self._gl_faces[1]:
                if item is not None:
                    self.view.removeItem(item)
                item = posed_mesh_item(self._gl_faces[1])
                self.meshes[pid] = item
                self.view.addItem(item)
            item.set_vertices(self._gl(body.vertices).astype(np.float32))


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit normals (V,3) float32 of ``vertices`` (V,3): the area-weighted mean of their triangles'
    ``faces`` (T,3) normals, each the right-hand normal of its winding."""
    v = vertices.astype(np.float64)
    face_n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    normals = np.stack([np.bincount(faces.ravel(), np.repeat(face_n[:, c], 3), minlength=len(v)) for c in range(3)], 1)
    return (normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def posed_mesh_item(faces: np.ndarray):
    """A shaded GL mesh whose triangles ``faces`` (T,3) are uploaded once, and whose vertex positions
    and normals (:meth:`set_vertices`) are written into the same GPU buffers at each pose: no mesh
    data object, no per-triangle copy, no buffer made again."""
    import pyqtgraph.opengl as gl
    from pyqtgraph.opengl.items.GLMeshItem import DirtyFlag

    class PosedMesh(gl.GLMeshItem):
        def __init__(self):
            super().__init__(smooth=True, shader="shaded", color=MESH_COLOR, glOptions="opaque")
            self.faces_given = faces
            self._indices = np.ascontiguousarray(faces, dtype=np.uint32)
            self._dirty = DirtyFlag(0)
            self.uploads = 0  # poses written to the GPU

        def set_vertices(self, vertices: np.ndarray) -> None:
            self.vertexes = np.ascontiguousarray(vertices, dtype=np.float32)
            self.normals = vertex_normals(self.vertexes, self._indices)
            self._dirty |= DirtyFlag.POSITION | DirtyFlag.NORMAL
            if self.faces is None:
                self.faces = self._indices
                self._dirty |= DirtyFlag.FACES
            self.update()

        def parseMeshData(self):
            dirty, self._dirty = self._dirty, DirtyFlag(0)
            self.uploads += bool(dirty)
            return dirty

    return PosedMesh()


def hand_status_text(status: dict[tuple[int, str], str]) -> str:
    """Per person, each hand's status: ``person 1: left seen, right held``; one line per person."""
    people = sorted({pid for pid, _ in status})
    if not people:
        return "hands: no person tracked"
    return "\n".join(f"person {pid}: " + ", ".join(f"{side} {status[(pid, side)]}" for side in ("left", "right")
                                                  if (pid, side) in status) for pid in people)


def format_bytes(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def flatten_residuals(residuals: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Nested residual dicts as (dotted name, value text) rows; numbers to 3 significant digits."""
    rows = []
    for k, v in residuals.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            rows += flatten_residuals(v, name + ".")
        elif isinstance(v, (int, float)):
            rows.append((name, f"{v:.3g}"))
        elif isinstance(v, str):
            rows.append((name, v))
    return rows


class SessionWindow(QtWidgets.QMainWindow):
    """The live session window over one controller. ``poll_ms``: how often the snapshot is read
    (about twice per frame of a 30 fps camera, so that no frame is skipped for arriving just after a
    look; a look at an unchanged snapshot draws nothing); ``slow_every``: lean, the Kinect panes and
    the 3D view are drawn at every this many panorama frames."""

    DEVICE_COLUMNS = ("device", "state", "fps", "frames", "drops", "last arrival (s)", "sync")

    def __init__(self, controller: LiveController, *, record_dir: str | Path = "recordings", poll_ms: int = 15,
                 lean: bool = True, slow_every: int = SLOW_PANE_EVERY):
        super().__init__()
        self.controller = controller
        # lean: images downscaled once per frame and shown without levels, each pane redrawn only
        # when its own frame changed, the panorama and hand views at every panorama frame, the Kinect
        # panes and the 3D view at every SLOW_PANE_EVERY-th (15 Hz), text panels every
        # PANEL_PERIOD_S, OpenGL only where it is accelerated. Otherwise every pane is redrawn on
        # every new snapshot.
        self.lean = lean
        if lean:
            pg.setConfigOptions(antialias=False)  # antialiased lines cost several times more to paint in software
        self._shown_kinects: dict[str, tuple] = {}
        self._shown_world: tuple | None = None
        self._panels_wall = -1.0
        self._panos_shown = 0
        self.slow_every = slow_every
        self.draws: dict[str, int] = {}  # pane -> times drawn: "pano", "hands" (its overlays and hand views), "scene", a Kinect's name
        self.setWindowTitle("omnimocap — live session")
        self._last_seq = -1
        self._shown_pano: tuple[int, float] | None = None
        self._shown_overlay: tuple[int, float | None] | None = None  # the frame whose overlays are drawn
        self._shown_messages = -1
        self.displayed: list[tuple[int, float]] = []  # (pano frame index, capture-to-display latency s)
        self.displayed_hands: list[tuple[int, float]] = []  # the same for the frames whose hands are drawn
        self._build(Path(record_dir))
        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(poll_ms)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self.refresh()

    # --- layout -------------------------------------------------------------------------------------
    def _build(self, record_dir: Path) -> None:
        state = self.controller.latest()
        self.kinect_widgets = {p.name: KinectWidget(p.name) for p in sorted(state.kinects, key=lambda p: p.name)}
        self.pano_widget = PanoWidget()
        self.hand_widgets = [HandViewWidget() for _ in range(MAX_HAND_VIEWS)]
        self.scene = Scene3D(accelerated_only=self.lean)

        kinect_row = QtWidgets.QHBoxLayout()
        for w in self.kinect_widgets.values():
            kinect_row.addWidget(w)
        hand_row = QtWidgets.QHBoxLayout()
        for w in self.hand_widgets:
            hand_row.addWidget(w)
        left = QtWidgets.QVBoxLayout()
        left.addLayout(kinect_row, 3)
        left.addWidget(self.pano_widget, 4)
        left.addLayout(hand_row, 3)

        self.start_button = QtWidgets.QPushButton("Start")
        self.start_button.setCheckable(True)
        self.start_button.clicked.connect(self._toggle_running)
        self.preview_box = QtWidgets.QCheckBox("live hand preview")
        self.preview_box.setChecked(state.preview)
        self.preview_box.toggled.connect(self.controller.set_preview)
        self.status_label = QtWidgets.QLabel()
        controls = QtWidgets.QHBoxLayout()
        controls.addWidget(self.start_button)
        controls.addWidget(self.preview_box)
        controls.addWidget(self.status_label, 1)
        self.hand_status_label = QtWidgets.QLabel("hands: no person tracked")

        self.device_table = QtWidgets.QTableWidget(0, len(self.DEVICE_COLUMNS))
        self.device_table.setHorizontalHeaderLabels(self.DEVICE_COLUMNS)
        self.device_table.verticalHeader().setVisible(False)
        self.device_table.horizontalHeader().setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        self.device_table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.device_table.setMaximumHeight(120)

        calib = QtWidgets.QGroupBox("calibration")
        self.board_button = QtWidgets.QPushButton("Board")
        self.markerless_button = QtWidgets.QPushButton("Markerless")
        self.board_button.clicked.connect(lambda: self.controller.calibrate("board"))
        self.markerless_button.clicked.connect(lambda: self.controller.calibrate("markerless"))
        self.calib_progress = QtWidgets.QProgressBar()
        self.calib_progress.setRange(0, 100)
        self.calib_label = QtWidgets.QLabel()
        self.calib_label.setWordWrap(True)
        grid = QtWidgets.QGridLayout(calib)
        grid.addWidget(self.board_button, 0, 0)
        grid.addWidget(self.markerless_button, 0, 1)
        grid.addWidget(self.calib_progress, 1, 0, 1, 2)
        grid.addWidget(self.calib_label, 2, 0, 1, 2)

        rec = QtWidgets.QGroupBox("recording")
        self.record_dir = QtWidgets.QLineEdit(str(record_dir))
        self.record_button = QtWidgets.QPushButton("● Record")
        self.record_button.setCheckable(True)
        self.record_button.clicked.connect(self._toggle_recording)
        self.record_label = QtWidgets.QLabel("not recording")
        rgrid = QtWidgets.QGridLayout(rec)
        rgrid.addWidget(QtWidgets.QLabel("folder"), 0, 0)
        rgrid.addWidget(self.record_dir, 0, 1)
        rgrid.addWidget(self.record_button, 1, 0)
        rgrid.addWidget(self.record_label, 1, 1)

        self.messages = QtWidgets.QListWidget()
        self.messages.setMinimumHeight(100)

        right = QtWidgets.QVBoxLayout()
        right.addWidget(self.scene, 5)
        right.addLayout(controls)
        right.addWidget(self.hand_status_label)
        right.addWidget(self.device_table)
        side = QtWidgets.QHBoxLayout()
        side.addWidget(calib)
        side.addWidget(rec)
        right.addLayout(side)
        right.addWidget(QtWidgets.QLabel("messages"))
        right.addWidget(self.messages, 2)

        central = QtWidgets.QWidget()
        main = QtWidgets.QHBoxLayout(central)
        main.addLayout(left, 3)
        main.addLayout(right, 2)
        self.setCentralWidget(central)
        self.resize(1600, 960)

    # --- actions ----------------------------------------------------------------------------------------
    def _toggle_running(self, checked: bool) -> None:
        if checked:
            self.controller.start()
        else:
            self.controller.stop()
        self._panels_wall = -1.0  # a user action shows its result at once
        self.refresh()

    def _toggle_recording(self, checked: bool) -> None:
        if checked:
            out = Path(self.record_dir.text()) / time.strftime("session_%Y%m%d_%H%M%S")
            if not self.controller.start_recording(out):
                self.record_button.setChecked(False)
        else:
            self.controller.stop_recording()
        self._panels_wall = -1.0
        self.refresh()

    # --- drawing -----------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Draw the newest snapshot if it changed (runs on the GUI thread's timer)."""
        state = self.controller.latest()
        if state.seq == self._last_seq:
            return
        self._last_seq = state.seq
        lean = self.lean
        now = time.perf_counter()
        panels_due = not lean or now - self._panels_wall >= PANEL_PERIOD_S or not state.running
        new_pano = state.pano is not None and (state.pano.index, state.pano.released_wall) != self._shown_pano
        # lean: the Kinect panes and the 3D view at every slow_every-th panorama frame (every
        # snapshot without a panorama), each only when its own frame changed
        self._panos_shown += new_pano
        always = not lean or not state.running or state.pano is None
        slow_due = always or (new_pano and self._panos_shown % self.slow_every == 0)
        # the 3D view on the frames between the Kinect panes' (with slow_every 2), so that no look draws both
        scene_due = always or (new_pano and self._panos_shown % self.slow_every == self.slow_every // 2)
        if slow_due:
            self._show_kinects(state)
        if new_pano:
            pano = state.pano
            self._shown_pano = (pano.index, pano.released_wall)
            # the overlays and hand views belong to the newest frame the preview finished: redrawn when it changes
            overlay = (pano.index, pano.released_wall) if pano.overlay_index is None else \
                (pano.overlay_index, pano.overlay_released_wall)
            new_overlay = not lean or overlay != self._shown_overlay
            self.pano_widget.show_pane(pano, lean, title=panels_due, overlays=new_overlay)
            if new_overlay:
                self._shown_overlay = overlay
                self._show_hand_views(state.hand_views)
                self._count("hands")
                if overlay[1] is not None:
                    self.displayed_hands.append((overlay[0], time.perf_counter() - overlay[1]))
                    del self.displayed_hands[:-10000]
            self._count("pano")
        if scene_due and (not lean or state.world.frame_key != self._shown_world or not state.world.frame_key):
            self._shown_world = state.world.frame_key
            self.scene.show_world(state.world)
            self._count("scene")
        if panels_due:
            self._panels_wall = now
            self._show_controls(state)
            self._show_devices(state)
        self._show_messages(state.messages)
        if new_pano:
            # drawn: Qt paints the changed panes when control returns to its event loop
            self.displayed.append((state.pano.index, time.perf_counter() - state.pano.released_wall))
            del self.displayed[:-10000]

    def _count(self, pane: str) -> None:
        self.draws[pane] = self.draws.get(pane, 0) + 1

    def _show_hand_views(self, views) -> None:
        for i, widget in enumerate(self.hand_widgets):
            if i < len(views):
                widget.show_view(views[i], self.lean)
            else:
                widget.clear_view()

    def _show_kinects(self, state: LiveState) -> None:
        """Each Kinect pane whose frame changed (every one when not lean)."""
        for pane in state.kinects:
            widget = self.kinect_widgets.get(pane.name)
            key = (pane.t_session, id(pane.color), len(pane.skeletons_depth))
            if widget is not None and (not self.lean or self._shown_kinects.get(pane.name) != key):
                self._shown_kinects[pane.name] = key
                widget.show_pane(pane, self.lean)
                self._count(pane.name)

    def _show_controls(self, state: LiveState) -> None:
        self.start_button.setChecked(state.running)
        self.start_button.setText("Stop" if state.running else "Start")
        self.preview_box.blockSignals(True)
        self.preview_box.setChecked(state.preview)
        self.preview_box.blockSignals(False)
        hands = sum(h.keypoints_2d is not None for h in state.hand_views)
        self.status_label.setText(f"hands: {state.hands_backend}  {hands}/{len(state.hand_views)} views  "
                                  f"pipeline {state.pipeline_ms:.1f} ms  body {state.body_ms:.1f} ms")
        self.hand_status_label.setText(hand_status_text(state.world.hand_status))
        self._show_calibration(state.calibration)
        self._show_recording(state.recording)

    def _show_calibration(self, cal) -> None:
        self.calib_progress.setValue(int(round(100 * cal.progress)))
        self.board_button.setEnabled(not cal.running)
        self.markerless_button.setEnabled(not cal.running)
        rows = flatten_residuals(cal.residuals)
        text = f"method: {cal.method}" + (" (ground truth)" if cal.is_truth else "")
        if cal.status:
            text += f" — {cal.status}"
        if rows:
            text += "\n" + "\n".join(f"{k}: {v}" for k, v in rows[:6])
        self.calib_label.setText(text)

    def _show_recording(self, rec) -> None:
        self.record_button.setChecked(rec.active)
        self.record_button.setText("■ Stop recording" if rec.active else "● Record")
        if rec.active:
            minutes, seconds = divmod(int(rec.elapsed_s), 60)
            self.record_label.setText(f"REC {minutes:02d}:{seconds:02d}  {format_bytes(rec.bytes_written)} written, "
                                      f"{format_bytes(rec.disk_free_bytes)} free"
                                      + (f", {rec.dropped} lost" if rec.dropped else ""))
            self.record_label.setStyleSheet("color: #ff6b6b; font-weight: bold")
        else:
            self.record_label.setText(f"last: {rec.out_dir} ({format_bytes(rec.bytes_written)})" if rec.out_dir
                                      else "not recording")
            self.record_label.setStyleSheet("")

    def _show_devices(self, state: LiveState) -> None:
        table = self.device_table
        table.setRowCount(len(state.devices))
        for r, d in enumerate(state.devices):
            last = "" if d.last_host_time is None else f"{d.last_host_time:.2f}"
            values = (d.name, d.state, f"{d.fps:.1f}", str(d.frames), str(d.drops), last, state.sync.get(d.name, ""))
            for c, v in enumerate(values):
                item = table.item(r, c)
                if item is None:
                    item = QtWidgets.QTableWidgetItem()
                    table.setItem(r, c, item)
                item.setText(v)
                if c == 1:
                    item.setForeground(QtGui.QColor(STATE_COLORS.get(d.state, "#d8dde6")))

    def _show_messages(self, messages: tuple[Message, ...]) -> None:
        for m in messages:
            if m.id <= self._shown_messages:
                continue
            stamp = time.strftime("%H:%M:%S", time.localtime(m.wall))
            item = QtWidgets.QListWidgetItem(f"{stamp}  {m.level.upper():7s} {m.text}")
            item.setForeground(QtGui.QColor(LEVEL_COLORS.get(m.level, "#d8dde6")))
            self.messages.addItem(item)
            self._shown_messages = m.id
        self.messages.scrollToBottom()

    def message_texts(self) -> list[str]:
        return [self.messages.item(i).text() for i in range(self.messages.count())]

    def closeEvent(self, event) -> None:
        self.timer.stop()
        self.controller.close()
        super().closeEvent(event)


def preload_hand_backend(controller: LiveController) -> None:
    """Import the hand preview's backend (torch, timm, WiLoR) and the live body's torch on the GUI
    thread before any OpenGL context exists. Imported later from the pipeline thread, torch's
    optional triton extension (which carries its own LLVM) crashed the process under Xvfb's Mesa
    llvmpipe OpenGL."""
    if controller.config.body:
        import torch  # noqa: F401  (the live body's fit runs on torch, on the body thread)
    if controller.config.process.hands == "none":
        return
    try:
        import omnimocap.hands.wilor  # noqa: F401
    except ImportError:
        pass  # the controller reports the missing backend in its message panel


def run_app(controller: LiveController, *, record_dir: str | Path = "recordings", start: bool = True) -> int:
    """Show the window over ``controller`` and run the Qt event loop until it is closed."""
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    apply_theme(app)
    preload_hand_backend(controller)
    window = SessionWindow(controller, record_dir=record_dir)
    if start:
        controller.start()
    window.show()
    return app.exec()
