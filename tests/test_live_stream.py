"""The live pose streamed out: VMC bone messages received by python-osc's UDP server, a rerun
recording read back from its file, the Unity bone solve and the hands' seen/held/lost status."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from omnimocap.apps.live import LiveController
from omnimocap.fusion.live.controller import LiveConfig
from omnimocap.fusion.live.feeds import Released, session_time
from omnimocap.fusion.live.preview import HandHold, PreviewResult
from omnimocap.fusion.live.state import HAND_HELD, HAND_LOST, HAND_SEEN, PanoPane
from omnimocap.fusion.pipeline import ProcessConfig
from omnimocap.capture.rig import Rig
from omnimocap.capture.replay import replay_sources
from omnimocap.capture.sources import SessionClock
from omnimocap.data.skeletons import HAND21_INDEX, KINECT_INDEX
from omnimocap.fusion import live_stream
from omnimocap.fusion.live_stream import BODY_BONES, FINGERS, RerunSink, VmcSender, parse_host_port, unity_bones
from tests.tools.replay import read_all

S = np.diag([1.0, 1.0, -1.0])


@pytest.fixture(scope="module")
def sim_session(module_sim_rig):
    """A 1 s simulated session folder (one person, one Kinect)."""
    return module_sim_rig(0.5, people=1, kinects=1, seed=5, pano_width=640).sim_dir


def drive(controller: LiveController, frames: int):
    """Run the pipeline pass by pass on this thread over the first ``frames`` panorama frames, each
    queued after the Kinect frames up to its time; yields each pass's snapshot."""
    kinect = next(f for f in controller.feeds if f.source.kind == "kinect")
    pano = next(f for f in controller.feeds if f.source.kind == "pano")
    body_frames = read_all(kinect.source)
    t_body = np.array([session_time(controller.rig, kinect.name, f) for f in body_frames])
    queued = 0
    for _ in range(frames):
        frame = pano.source.read(1.0)
        t_pano = session_time(controller.rig, pano.name, frame)
        while queued < len(body_frames) and t_body[queued] <= t_pano:
            kinect.queue.put(Released(body_frames[queued], time.perf_counter()))
            queued += 1
        pano.queue.put(Released(frame, time.perf_counter()))
        yield controller.step()


def make_controller(sim_session) -> LiveController:
    clock = SessionClock()
    sources = replay_sources(sim_session, clock, realtime=False, on_session_clock=True)
    return LiveController(sources, clock=clock, rig=Rig.load(sim_session / "rig.json"), session_dir=sim_session,
                          config=LiveConfig(process=ProcessConfig(hands="sim", view_size=96)))


def fk(received: dict[str, tuple[np.ndarray, np.ndarray]], parents: dict[str, str | None]):
    """World positions and rotations (Unity frame) composed from local bone poses, independently of
    the sender's own world values."""
    world: dict[str, tuple[np.ndarray, Rotation]] = {}

    def solve(name):
        if name not in world:
            pos, quat = received[name]
            parent = parents[name]
            if parent is None:
                world[name] = (pos, Rotation.from_quat(quat))
            else:
                pp, pr = solve(parent)
                world[name] = (pp + pr.apply(pos), pr * Rotation.from_quat(quat))
        return world[name]

    for name in received:
        solve(name)
    return world


def test_vmc_bones_received_by_python_osc_match_the_pose(sim_session):
    from pythonosc.dispatcher import Dispatcher
    from pythonosc.osc_server import BlockingOSCUDPServer

    frames: list[dict] = [{}]

    def on_bone(address, name, *values):
        frames[-1].setdefault("bones", {})[name] = (np.array(values[:3]), np.array(values[3:]))

    def on_root(address, name, *values):
        frames[-1]["root"] = (name, values)

    def on_time(address, t):
        frames[-1]["t"] = t

    def on_ok(address, *args):
        frames.append({})

    dispatcher = Dispatcher()
    dispatcher.map("/VMC/Ext/Bone/Pos", on_bone)
    dispatcher.map("/VMC/Ext/Root/Pos", on_root)
    dispatcher.map("/VMC/Ext/T", on_time)
    dispatcher.map("/VMC/Ext/OK", on_ok)
    server = BlockingOSCUDPServer(("127.0.0.1", 0), dispatcher)
    server.timeout = 10.0  # a bound on waiting for a datagram already sent, not a speed check
    controller = make_controller(sim_session)
    sender = VmcSender("127.0.0.1", server.server_address[1])
    controller.add_sink(sender)
    sent = []  # (t_session, person_id, body, hands) per frame sent
    try:
        for state in drive(controller, 10):
            assert sender.sent - len(sent) in (0, 1)  # at most one VMC frame per pipeline pass
            if sender.sent > len(sent):
                pid, body, hands = live_stream.person_pose(state)
                sent.append((state.world.t_session, body, hands))
        assert len(sent) >= 5
        for _ in range(len(sent)):
            server.handle_request()
    finally:
        sender.close()
        server.server_close()
        controller.close()
    received = frames[:-1]
    assert len(received) == len(sent)
    parents = {b[0]: b[2] for b in BODY_BONES}
    for finger in FINGERS:
        for side in ("Left", "Right"):
            parents |= {f"{side}{finger}Proximal": f"{side}Hand", f"{side}{finger}Intermediate": f"{side}{finger}Proximal",
                        f"{side}{finger}Distal": f"{side}{finger}Intermediate"}
    with_fingers = 0
    for got, (t, body, hands) in zip(received, sent):
        assert got["root"][0] == "root"
        assert got["t"] == pytest.approx(t, abs=1e-3)
        names = set(got["bones"])
        assert {b[0] for b in BODY_BONES} <= names
        assert names <= set(parents)
        world = fk(got["bones"], parents)
        # positions: each bone at its joint, after (x, y, z) -> (x, y, -z)
        for name, joint, _, child, rest in BODY_BONES:
            np.testing.assert_allclose(world[name][0], S @ body[KINECT_INDEX[joint]], atol=1e-4)
            if child is not None and name != "Hips":  # rotations: the rest direction turned onto the bone
                d = S @ (body[KINECT_INDEX[child]] - body[KINECT_INDEX[joint]])
                np.testing.assert_allclose(world[name][1].apply(rest), d / np.linalg.norm(d), atol=1e-4)
        R_hips = world["Hips"][1]
        up = S @ (body[KINECT_INDEX["SPINE_NAVEL"]] - body[KINECT_INDEX["PELVIS"]])
        np.testing.assert_allclose(R_hips.apply([0, 1, 0]), up / np.linalg.norm(up), atol=1e-4)
        for side, hand in hands.items():
            prefix = side.capitalize()
            for finger, key in FINGERS.items():
                for k, segment in enumerate(("Proximal", "Intermediate", "Distal")):
                    np.testing.assert_allclose(world[f"{prefix}{finger}{segment}"][0],
                                               S @ hand[HAND21_INDEX[f"{key}{k + 1}"]], atol=1e-4)
            with_fingers += 1
    assert with_fingers > 0  # the sim hand backend saw hands, and their fingers were streamed


def test_rerun_recording_holds_the_body(sim_session, tmp_path):
    from rerun.chunk import RrdReader

    path = tmp_path / "live.rrd"
    controller = make_controller(sim_session)
    sink = RerunSink(str(path))
    controller.add_sink(sink)
    logged = {}
    try:
        for state in drive(controller, 6):
            for pid, body in state.world.bodies.items():
                logged[(round(state.world.t_session, 6), pid)] = body
    finally:
        sink.close()
        controller.close()
    assert logged
    found = 0
    for chunk in RrdReader(path).stream():
        if not chunk.entity_path.endswith("/body") or "person_" not in chunk.entity_path:
            continue
        batch = chunk.to_record_batch()
        pid = int(chunk.entity_path.split("person_")[1].split("/")[0])
        times = batch.column("session").cast("int64").to_pylist()  # nanoseconds
        positions = batch.column("Points3D:positions").to_pylist()
        for t, pos in zip(times, positions):
            body = logged[(round(t / 1e9, 6), pid)]
            np.testing.assert_allclose(np.array(pos), body, atol=1e-5)
            found += 1
    assert found == len(logged)


def test_unity_bones_conversion_and_hierarchy():
    """A T-pose-like body facing -z in our world (so +z in Unity) gives near-identity rotations; the
    Hips sit at the pelvis with z negated."""
    body = np.zeros((32, 3))
    spots = {"PELVIS": (0, 1, 0.5), "SPINE_NAVEL": (0, 1.2, 0.5), "SPINE_CHEST": (0, 1.4, 0.5), "NECK": (0, 1.6, 0.5),
             "HEAD": (0, 1.75, 0.5), "CLAVICLE_LEFT": (-0.05, 1.5, 0.5), "SHOULDER_LEFT": (-0.2, 1.5, 0.5),
             "ELBOW_LEFT": (-0.5, 1.5, 0.5), "WRIST_LEFT": (-0.75, 1.5, 0.5), "HAND_LEFT": (-0.85, 1.5, 0.5),
             "CLAVICLE_RIGHT": (0.05, 1.5, 0.5), "SHOULDER_RIGHT": (0.2, 1.5, 0.5), "ELBOW_RIGHT": (0.5, 1.5, 0.5),
             "WRIST_RIGHT": (0.75, 1.5, 0.5), "HAND_RIGHT": (0.85, 1.5, 0.5), "HIP_LEFT": (-0.1, 1.0, 0.5),
             "KNEE_LEFT": (-0.1, 0.5, 0.5), "ANKLE_LEFT": (-0.1, 0.1, 0.5), "FOOT_LEFT": (-0.1, 0.05, 0.35),
             "HIP_RIGHT": (0.1, 1.0, 0.5), "KNEE_RIGHT": (0.1, 0.5, 0.5), "ANKLE_RIGHT": (0.1, 0.1, 0.5),
             "FOOT_RIGHT": (0.1, 0.05, 0.35)}
    for name, xyz in spots.items():
        body[KINECT_INDEX[name]] = xyz
    bones = {b.name: b for b in unity_bones(body)}
    np.testing.assert_allclose(bones["Hips"].position, [0, 1, -0.5])
    for name in ("Hips", "Spine", "Chest", "LeftUpperArm", "RightLowerArm", "LeftUpperLeg"):
        np.testing.assert_allclose(Rotation.from_quat(bones[name].rotation).magnitude(), 0.0, atol=1e-6)
    # the elbow is 0.3 m along the upper arm, which points along -x in the rest pose
    np.testing.assert_allclose(bones["LeftLowerArm"].position, [-0.3, 0, 0], atol=1e-9)
    body[KINECT_INDEX["KNEE_LEFT"]] = np.nan
    assert unity_bones(body) == []


def test_host_port_parsing():
    assert parse_host_port("10.0.0.2:9000") == ("10.0.0.2", 9000)
    assert parse_host_port(":9000") == ("127.0.0.1", 9000)
    assert parse_host_port("localhost") == ("localhost", live_stream.DEFAULT_VMC_PORT)
    with pytest.raises(ValueError, match="port"):
        parse_host_port("host:abc")
    with pytest.raises(ValueError, match="65535"):
        parse_host_port("host:70000")


def test_hand_status_seen_held_lost():
    hold = HandHold(0.5)
    pane = PanoPane(0, 0.0, 0.0, np.zeros((2, 4, 3), np.uint8), [], [])
    hand = np.arange(63.0).reshape(21, 3)
    wrist = np.array([1.0, 1.0, 1.0])
    key = (1, "left")
    hold.update(10.0, PreviewResult(pane, [], [hand], {key: hand}, {key: wrist}))
    assert hold.status[key] == HAND_SEEN
    moved = wrist + [0.1, 0.0, 0.0]
    hold.update(10.3, PreviewResult(pane, [], [], {}, {key: moved}))
    assert hold.status[key] == HAND_HELD
    np.testing.assert_allclose(hold.hands[key], hand + [0.1, 0.0, 0.0])
    hold.update(10.6, PreviewResult(pane, [], [], {}, {key: moved}))
    assert hold.status[key] == HAND_LOST
    assert key not in hold.hands


def test_bad_vmc_address_is_one_line(sim_session, capsys, monkeypatch):
    from tests.tools.cli import one_line_error

    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    line = one_line_error(capsys, ["gui", "--session", str(sim_session), "--vmc", "127.0.0.1:notaport"])
    assert "--vmc" in line and "port" in line and "HOST:PORT" in line


def test_fitted_body_is_streamed_in_place_of_the_kinect_skeleton():
    from types import SimpleNamespace

    from omnimocap.data.skeletons import SMPLX_INDEX
    from omnimocap.fusion.body_model import default_skeleton, forward_kinematics
    from omnimocap.fusion.live.state import FittedBody, WorldState
    from omnimocap.geometry.transforms import axis_angle_to_matrix

    skeleton = default_skeleton()
    local = axis_angle_to_matrix(np.random.default_rng(4).normal(0.0, 0.3, (55, 3)))
    transl = np.array([0.2, 0.9, 2.0])
    joints, _ = forward_kinematics(skeleton, local, np.zeros(10), transl)
    kinect = np.full((32, 3), 5.0)  # the reference Kinect's skeleton, somewhere else
    fitted = FittedBody(3, 1.0, joints, local, transl, np.zeros(10))
    state = SimpleNamespace(world=WorldState(bodies={3: kinect}, fitted={3: fitted}))
    pid, body, hands = live_stream.person_pose(state)
    assert pid == 3 and hands == {}
    np.testing.assert_allclose(body[KINECT_INDEX["ELBOW_LEFT"]], joints[SMPLX_INDEX["left_elbow"]])
    np.testing.assert_allclose(body[KINECT_INDEX["HAND_RIGHT"]], joints[SMPLX_INDEX["right_middle1"]])
    np.testing.assert_allclose(body[KINECT_INDEX["PELVIS"]], 0.7 * joints[0] + 0.3 * joints[SMPLX_INDEX["spine1"]])
    bones = {b.name: b for b in unity_bones(body)}
    assert {b[0] for b in BODY_BONES} <= set(bones)
    np.testing.assert_allclose(bones["RightLowerArm"].world_position, S @ joints[SMPLX_INDEX["right_elbow"]], atol=1e-12)
    # without a fit, the Kinect skeleton is the body
    state = SimpleNamespace(world=WorldState(bodies={3: kinect}))
    np.testing.assert_array_equal(live_stream.person_pose(state)[1], kinect)
