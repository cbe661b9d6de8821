"""The session window (pytest-qt, offscreen): it builds over a replayed session, its controls drive
the controller, faults reach the message panel; the OpenGL 3D view is checked under Xvfb."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")
pytest.importorskip("pytestqt")

from omnimocap.fusion.live import calibration as live_calibration  # noqa: E402
from omnimocap.apps.gui import SessionWindow  # noqa: E402
from omnimocap.apps.live import LiveController  # noqa: E402
from omnimocap.fusion.live.controller import LiveConfig  # noqa: E402
from omnimocap.fusion.pipeline import ProcessConfig  # noqa: E402
from omnimocap.capture.session import Session  # noqa: E402
from omnimocap.errors import UserError  # noqa: E402


@pytest.fixture(scope="module")
def sim_session(module_sim_rig):
    """A 1.5 s simulated session folder (one person, one Kinect)."""
    return module_sim_rig(1.0, people=1, kinects=1, seed=5, pano_width=640).sim_dir


@pytest.fixture
def window(qtbot, sim_session, tmp_path):
    controller = LiveController.from_session(sim_session, config=LiveConfig(min_free_gb=0, process=ProcessConfig(hands="sim", view_size=64)))
    w = SessionWindow(controller, record_dir=tmp_path / "recordings", poll_ms=20)
    qtbot.addWidget(w)
    yield w
    controller.close()


def test_window_builds_with_fallback_3d(window):
    assert set(window.kinect_widgets) == {"kinect_000000000001"}
    assert not window.scene.uses_opengl
    assert "top-down" in window.scene.note_label.text()
    assert window.device_table.rowCount() == 2
    assert window.start_button.text() == "Start"


def test_start_button_runs_controller_and_panes_update(window, qtbot):
    window.start_button.click()
    assert window.controller.running
    qtbot.waitUntil(lambda: len(window.displayed) >= 3, timeout=30000)
    assert window.start_button.text() == "Stop"
    states = {window.device_table.item(r, 1).text() for r in range(window.device_table.rowCount())}
    assert states == {"running"}
    assert window.pano_widget.image.image.shape[:2] == (320, 640)
    assert all(latency >= 0 for _, latency in window.displayed)
    window.start_button.click()
    assert not window.controller.running
    assert window.start_button.text() == "Start"


def test_panes_play_while_the_hand_backend_loads(window, qtbot, monkeypatch):
    """A backend slow to load (WiLoR takes seconds): the status line says so, and the panorama keeps
    being drawn meanwhile."""
    import threading
    import time

    from omnimocap.fusion.live import controller as live_controller

    loaded = threading.Event()
    make = live_controller.make_estimator

    def slow_make_estimator(config, session):
        time.sleep(2.0)
        loaded.set()
        return make(config, session)

    monkeypatch.setattr(live_controller, "make_estimator", slow_make_estimator)
    window.start_button.click()
    qtbot.waitUntil(lambda: "hands: loading sim" in window.status_label.text(), timeout=5000)
    qtbot.waitUntil(lambda: len(window.displayed) >= 3, timeout=5000)
    assert not loaded.is_set()  # drawn while the backend was still loading
    qtbot.waitUntil(lambda: window.status_label.text().startswith("hands: sim "), timeout=15000)


def test_preview_checkbox_switches_preview(window, qtbot):
    window.preview_box.setChecked(False)
    assert not window.controller.latest().preview
    window.preview_box.setChecked(True)
    assert window.controller.latest().preview


def test_fault_is_shown_in_message_panel(window, qtbot, monkeypatch):
    def fails(d):
        raise UserError("the board was not found in any frame", fix="hold the board in view")

    monkeypatch.setattr(live_calibration, "calibration_steps", lambda method: [("board calibration", fails)])
    window.board_button.click()
    qtbot.waitUntil(lambda: any("board was not found" in t for t in window.message_texts()), timeout=5000)
    line = next(t for t in window.message_texts() if "board was not found" in t)
    assert "FAULT" in line


def test_record_button_toggles_recording(window, qtbot, tmp_path):
    window.start_button.click()
    qtbot.waitUntil(lambda: window.controller.latest().pano is not None, timeout=8000)
    window.record_button.click()
    assert window.controller.latest().recording.active
    qtbot.waitUntil(lambda: window.record_label.text().startswith("REC"), timeout=3000)
    assert window.record_button.isChecked()
    qtbot.wait(500)
    window.record_button.click()
    state = window.controller.latest().recording
    assert not state.active and not window.record_button.isChecked()
    assert Session.open(state.out_dir).complete
    assert state.out_dir in window.record_label.text()


GL_CHECK = textwrap.dedent("""
    import numpy as np
    from PySide6 import QtCore, QtWidgets
    from omnimocap.apps.gui import Scene3D
    from omnimocap.fusion.live.state import WorldState

    app = QtWidgets.QApplication([])
    scene = Scene3D()
    scene.resize(320, 240)
    joints = np.zeros((32, 3))
    joints[:, 1] = np.linspace(0.0, 1.7, 32)
    scene.show_world(WorldState(skeletons={"k/1": joints}, hands=[], sensor_poses={"pano": np.eye(4)}))
    scene.show()
    for _ in range(10):
        app.processEvents()
    image = scene.view.grabFramebuffer()
    bright = sum(image.pixelColor(x, y).blue() > 150 for x in range(0, image.width(), 2)
                 for y in range(0, image.height(), 2))
    print("opengl", scene.uses_opengl, "bright", bright)
    scene.deleteLater()
    app.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
""")


def test_3d_view_renders_under_xvfb(tmp_path):
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run is not installed (apt-get install xvfb): the OpenGL 3D view needs a display")
    pytest.importorskip("OpenGL", reason="PyOpenGL is needed by pyqtgraph's 3D view")
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    script = tmp_path / "gl_check.py"
    script.write_text(GL_CHECK)
    result = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 640x480x24", sys.executable, str(script)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    words = result.stdout.split()
    assert words[:2] == ["opengl", "True"]
    assert int(words[3]) > 20  # the skeleton was drawn


def test_hand_status_text_per_person():
    from omnimocap.apps.gui import hand_status_text

    text = hand_status_text({(2, "right"): "lost", (1, "left"): "seen", (1, "right"): "held"})
    assert text.splitlines() == ["person 1: left seen, right held", "person 2: right lost"]
    assert hand_status_text({}) == "hands: no person tracked"


def test_lean_images_are_downscaled_contiguous_rgb():
    from omnimocap.apps.gui import display_rgb

    bgr = np.zeros((960, 1920, 3), np.uint8)
    bgr[..., 0] = 200  # blue
    rgb = display_rgb(bgr, 960)
    assert rgb.shape == (480, 960, 3) and rgb.flags.c_contiguous
    assert rgb[0, 0].tolist() == [0, 0, 200]


def test_lean_window_shows_hand_status_and_skips_unchanged_panes(window, qtbot):
    assert window.lean
    window.start_button.click()
    qtbot.waitUntil(lambda: len(window.displayed) >= 3, timeout=15000)
    qtbot.waitUntil(lambda: "person" in window.hand_status_label.text(), timeout=8000)
    status = window.controller.latest().world.hand_status
    assert all(v in ("seen", "held", "lost") for v in status.values())
    # the same snapshot drawn again changes nothing: no pane is redrawn
    calls = []
    window.pano_widget.show_pane = lambda *a, **k: calls.append(a)
    for widget in window.kinect_widgets.values():
        widget.show_pane = lambda *a, **k: calls.append(a)
    window.controller.stop()
    window.refresh()
    window._last_seq = -1  # forces a redraw pass over an unchanged snapshot
    calls.clear()
    window.refresh()
    assert calls == []


def test_lean_window_draws_the_kinects_and_the_scene_at_every_second_panorama_frame(window, qtbot, monkeypatch):
    window.start_button.click()
    qtbot.waitUntil(lambda: len(window.displayed) >= 2 and window.controller.latest().kinects[0].color is not None,
                    timeout=30000)
    window.controller.stop()
    base = window.controller.latest()
    # 30 snapshots, each with a new panorama, Kinect and world frame
    states = [replace(base, seq=10**6 + i, running=True, pano=replace(base.pano, index=10**6 + i),
                      kinects=[replace(k, t_session=k.t_session + i) for k in base.kinects],
                      world=replace(base.world, frame_key=("frame", i))) for i in range(30)]
    window.draws.clear()
    for state in states:
        monkeypatch.setattr(window.controller, "latest", lambda state=state: state)
        window.refresh()
    kinect = base.kinects[0].name
    assert window.draws["pano"] == 30
    assert window.draws["scene"] == window.draws[kinect] == 15
    # a snapshot drawn again: nothing is
    window._last_seq = -1
    window.refresh()
    assert window.draws["pano"] == 30 and window.draws["scene"] == window.draws[kinect] == 15
    # frames drawn under an earlier frame's overlays (the preview runs behind): the image at every
    # frame, the overlays and hand views only when the frame they belong to changes
    window.draws.clear()
    window.displayed_hands.clear()
    for i, state in enumerate(states):
        state = replace(state, seq=2 * 10**6 + i, pano=replace(state.pano, index=2 * 10**6 + i,
                                                               overlay_index=2 * 10**6 + 3 * (i // 3),
                                                               overlay_released_wall=float(i // 3)))
        monkeypatch.setattr(window.controller, "latest", lambda state=state: state)
        window.refresh()
    assert window.draws["pano"] == 30 and window.draws["hands"] == 10
    assert [index for index, _ in window.displayed_hands] == [2 * 10**6 + 3 * k for k in range(10)]


def test_vertex_normals_point_out_of_an_outward_wound_mesh():
    from omnimocap.apps.gui import vertex_normals

    corners = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64)
    faces = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    normals = vertex_normals(corners * 2.0 + 0.5, faces)  # an octahedron, counter-clockwise seen from outside
    np.testing.assert_allclose(normals, corners, atol=1e-6)
    np.testing.assert_allclose(vertex_normals(corners, faces[:, ::-1]), -corners, atol=1e-6)


def fitted_world(with_mesh: bool):
    """A world with one fitted SMPL-X body (arms down a little) standing at the origin, skinned to the
    synthetic model's mesh when ``with_mesh``, and no Kinect skeleton of it drawn."""
    from omnimocap.fusion.body_model import default_skeleton, forward_kinematics
    from omnimocap.fusion.live.body import BodyMesh
    from omnimocap.fusion.live.state import FittedBody, WorldState
    from omnimocap.sim.synthetic_models import make_synthetic_smplx

    skeleton = default_skeleton()
    local = np.broadcast_to(np.eye(3), (55, 3, 3)).copy()
    transl = np.array([0.0, 0.95, 0.0])
    joints, glob = forward_kinematics(skeleton, local, np.zeros(10), transl)
    vertices = faces = None
    if with_mesh:
        mesh = BodyMesh(make_synthetic_smplx())
        vertices, faces = mesh.skin(*mesh.shaped(np.zeros(10)), glob, joints), mesh.faces
    body = FittedBody(1, 0.0, joints, local, transl, np.zeros(10), vertices, {"left": "kinect", "right": "kinect"})
    kinect = np.full((32, 3), 2.0)
    return WorldState(skeletons={"k/1": kinect}, sensor_poses={"pano": np.eye(4)}, bodies={1: kinect},
                      fitted={1: body}, body_faces=faces)


def drawn(item) -> int:
    """Points a plot item draws (pyqtgraph keeps None for no data)."""
    return 0 if item.xData is None else len(item.xData)


@pytest.mark.parametrize("with_mesh", [False, True])
def test_top_down_view_draws_the_fitted_body(qtbot, with_mesh):
    from omnimocap.apps.gui import SMPLX_BONE_PAIRS, Scene3D

    scene = Scene3D(accelerated_only=True)
    qtbot.addWidget(scene)
    world = fitted_world(with_mesh)
    scene.show_world(world)
    assert not scene.uses_opengl
    assert len(scene.body_bones.xData) == 2 * len(SMPLX_BONE_PAIRS)  # the SMPL-X skeleton, fingers too
    np.testing.assert_allclose(sorted(scene.body_bones.xData)[-1], world.fitted[1].joints[:, 0].max())
    assert drawn(scene.skeletons) == 0  # not the Kinect's
    cloud = scene.mesh_points.data
    assert (len(cloud) > 1000) == with_mesh and (len(cloud) == 0) != with_mesh
    scene.show_world(replace(world, fitted={}, body_faces=None))  # no fit yet: the Kinect skeletons
    assert drawn(scene.skeletons) > 0 and drawn(scene.body_bones) == 0 and len(scene.mesh_points.data) == 0


GL_MESH_CHECK = textwrap.dedent("""
    import sys
    from PySide6 import QtCore, QtWidgets
    from omnimocap.apps.gui import Scene3D

    app = QtWidgets.QApplication([])  # on Xvfb's display: test_gui below picks offscreen only where none is set
    sys.path.insert(0, %r)
    from tests.test_gui import fitted_world
    scene = Scene3D()
    scene.resize(320, 240)
    scene.view.setCameraPosition(distance=2.5)  # the body fills the view: a mesh covers, bones do not
    scene.show()
    skin = []
    for with_mesh in (False, True):  # the skeleton, then the mesh
        world = fitted_world(with_mesh)
        scene.show_world(world)
        for _ in range(10):
            app.processEvents()
        image = scene.view.grabFramebuffer()
        skin.append(0)
        for x in range(image.width()):
            for y in range(image.height()):
                c = image.pixelColor(x, y)
                skin[-1] += c.red() > 60 and c.red() > c.green() > c.blue() > 0.4 * c.red()  # mesh, not bones
    print("opengl", scene.uses_opengl, "meshes", len(scene.meshes), "skin", *skin)
    item, uploads = scene.meshes[1], scene.meshes[1].uploads
    world.fitted[1].vertices[:] += 0.1
    scene.show_world(world)  # a new pose of the same mesh: the same item, its buffers written once more
    for _ in range(10):
        app.processEvents()
    print("same", item is scene.meshes[1], "uploads", item.uploads - uploads)
    scene.deleteLater()
    app.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
""")


def test_3d_view_draws_the_body_mesh_under_xvfb(tmp_path):
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run is not installed (apt-get install xvfb): the OpenGL 3D view needs a display")
    pytest.importorskip("OpenGL", reason="PyOpenGL is needed by pyqtgraph's 3D view")
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    script = tmp_path / "gl_mesh_check.py"
    script.write_text(GL_MESH_CHECK % str(Path(__file__).resolve().parents[1]))
    result = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 640x480x24", sys.executable, str(script)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    words = result.stdout.split()
    assert words[:4] == ["opengl", "True", "meshes", "1"]
    skeleton_only, mesh = int(words[5]), int(words[6])
    assert mesh > 100 and mesh > 5 * skeleton_only, (skeleton_only, mesh)  # the shaded body is drawn
    assert words[7:] == ["same", "True", "uploads", "1"]  # a new pose: vertices written, no new mesh
