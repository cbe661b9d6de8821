"""The simulated rig: a complete, valid session whose files agree with its ground truth."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from omnimocap.geometry.cameras import EquirectCamera
from omnimocap.capture.rig import Rig
from omnimocap.geometry.transforms import invert_pose, transform_points
from omnimocap.capture.bodies import read_bodies
from omnimocap.capture.pano import PanoReader
from omnimocap.capture.session import PANO_FRAMES, Session, bodies_name, kinect_name, kinect_recording_name
from omnimocap.capture.truth import Truth
from omnimocap.sim.simulate import SimConfig, simulate_session
from omnimocap.data.skeletons import HAND21_INDEX, KINECT_CONFIDENCE_NONE, KINECT_FROM_SMPLX, KINECT_INDEX, kinect_from_smplx_matrix
from omnimocap.geometry.resample import interpolate_positions


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim") / "session"
    simulate_session(root, SimConfig(seconds=1.5, people=2, kinects=2, seed=3, pano_width=640, kinect_noise_mm=0.0,
                                     realism="ideal"))
    return root


@pytest.fixture(scope="module")
def truth(sim):
    return Truth(sim).motion()


def test_session_complete_and_valid(sim, truth):
    session = Session.open(sim)
    assert session.complete and session.manifest.simulated
    kinects = session.kinects()
    assert [k.role for k in kinects] == ["master", "subordinate"]
    for k in kinects:
        assert (sim / k.bodies).is_file() and (sim / k.recording).is_file() and k.recording == kinect_recording_name(k.serial)
    pano = session.pano()
    assert (pano.recording, pano.timestamps, pano.width, pano.height) == ("pano.mkv", PANO_FRAMES, 640, 320)
    rig = Truth(sim).rig()
    assert rig.is_truth and rig.method == "truth"
    assert set(rig.T_world_sensor) == {"pano"} | {k.name for k in kinects} == set(rig.time_maps)
    assert Rig.load(session.rig_path).to_json() == rig.to_json()
    P, N = truth["smplx_joints"].shape[:2]
    assert P == 2 and N >= 1.5 * 240
    shapes = {"smplx_local_rotmats": (P, N, 55, 3, 3), "betas": (P, 10), "transl": (P, N, 3), "hand_joints": (P, N, 2, 21, 3),
              "hand_global_R": (P, N, 2, 3, 3), "hand_pose": (P, N, 2, 15, 3, 3), "hand_betas": (P, 2, 10), "hand_visible": (P, N, 2)}
    for key, shape in shapes.items():
        assert truth[key].shape == shape, key
    assert truth["hand_visible"].mean() > 0.5
    assert not np.allclose(truth["betas"][0], truth["betas"][1])
    # The 360 camera sits 1.0-1.2 m high; the people walk on lanes 0.87 and 1.6 m from it, up to
    # 0.95 m to either side, so their wrists stay within about 0.3-2.6 m of it.
    centre = rig.pose("pano")[:3, 3]
    assert 1.0 <= centre[1] <= 1.2
    dist = np.linalg.norm(truth["hand_joints"][..., 0, :] - centre, axis=-1)
    assert 0.3 < dist.min() and dist.max() < 2.6


def test_time_maps_consistent(sim, truth):
    rig = Truth(sim).rig()
    with open(sim / PANO_FRAMES) as fh:
        rows = list(csv.DictReader(fh))
    t_pano = np.array([float(r["t_pano"]) for r in rows])
    t_host = np.array([float(r["t_host"]) for r in rows])
    pano_map = rig.time_map("pano")
    assert 150e-6 < abs(pano_map.a - 1.0) < 450e-6
    np.testing.assert_allclose(pano_map.to_session(t_pano), truth["pano_frame_t_session"], atol=1e-9)
    assert np.all(np.abs(np.diff(t_pano) - 1 / 30) < 0.007)
    latency = t_host - truth["pano_frame_t_session"]
    assert 0.04 < latency.min() and latency.max() < 0.13
    t = truth["t_session"]
    assert t[0] <= truth["pano_frame_t_session"].min() and truth["pano_frame_t_session"].max() <= t[-1]
    master = None
    for serial in ("000000000001", "000000000002"):
        rec = read_bodies(sim / bodies_name(serial))
        t_kinect = rig.time_map(kinect_name(serial)).to_session(rec.timestamps)
        np.testing.assert_allclose(t_kinect, truth[f"kinect_frame_t_session_{serial}"], atol=1e-9)
        assert 0.4 < rec.timestamps[0] < 1.1  # device clocks start 0.5-1 s before the session
        if master is None:
            master = t_kinect
        else:  # wired sync: the subordinate captures 160 us after the master
            np.testing.assert_allclose(t_kinect - master, 160e-6, atol=2e-6)


def test_kinect_json_matches_truth_without_noise(sim, truth):
    rig = Truth(sim).rig()
    blend = kinect_from_smplx_matrix()
    rows = [KINECT_INDEX[name] for name in KINECT_FROM_SMPLX]
    for serial in ("000000000001", "000000000002"):
        rec = read_bodies(sim / bodies_name(serial))
        assert sorted(rec.bodies) == [0, 1]
        t = truth[f"kinect_frame_t_session_{serial}"]
        T = rig.pose(kinect_name(serial))
        for p, track in rec.bodies.items():
            assert track.present.all()  # no dropouts without noise
            world = transform_points(T, track.positions)
            true = np.einsum("kj,njc->nkc", blend, interpolate_positions(truth["t_session"], truth["smplx_joints"][p], t))
            assert np.abs(world[:, rows] - true).max() < 5e-4
            tip = interpolate_positions(truth["t_session"], truth["hand_joints"][p][:, 1, HAND21_INDEX["middle_tip"]], t)
            assert np.abs(world[:, KINECT_INDEX["HANDTIP_RIGHT"]] - tip).max() < 5e-4
            in_view = track.confidences[:, rows] != KINECT_CONFIDENCE_NONE
            assert in_view.mean() > 0.9
            q = track.orientations
            np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-9)


def _is_skin(bgr: np.ndarray) -> np.ndarray:
    b, g, r = (bgr[..., i].astype(int) for i in range(3))
    return (r > 90) & (r > g + 15) & (g > b + 10)


def test_pano_shows_hands_where_they_are(sim, truth):
    rig = Truth(sim).rig()
    session = Session.open(sim)
    reader = PanoReader(sim / "pano.mkv", sim / PANO_FRAMES)
    camera = EquirectCamera(reader.width, reader.height)
    T_pano_world = invert_pose(rig.pose("pano"))
    t = truth["pano_frame_t_session"]
    palm = 0.5 * (truth["hand_joints"][..., HAND21_INDEX["wrist"], :] + truth["hand_joints"][..., HAND21_INDEX["middle1"], :])
    hits, total, background_skin = 0, 0, []
    for i, frame in reader.frames(0, len(t)):
        if i % 5:
            continue
        k = int(np.argmin(np.abs(truth["t_session"] - t[i])))
        px = camera.bearing_to_pixel(transform_points(T_pano_world, palm[:, k]))
        for p in range(palm.shape[0]):
            for s in range(2):
                if not truth["hand_visible"][p, k, s]:
                    continue
                c, r = np.round(px[p, s]).astype(int)
                patch = frame[max(r - 1, 0): r + 2, max(c - 1, 0): c + 2]
                total += 1
                hits += bool(_is_skin(patch).any())
        background_skin.append(_is_skin(frame[: reader.height // 5]).mean())
    assert session.pano().width == reader.width
    assert total >= 10 and hits / total > 0.85
    assert max(background_skin) < 0.01  # skin colour is the people's, not the room's


def test_cli_refuses_non_empty_folder(tmp_path, capsys):
    from omnimocap.apps.cli import main

    (tmp_path / "something").write_text("x")
    assert main(["simulate", str(tmp_path), "--seconds", "0.5", "--pano-width", "128"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["simulate", str(tmp_path), "--seconds", "0.5", "--pano-width", "128", "--people", "1",
                 "--kinects", "1", "--overwrite"]) == 0
    assert Session.open(tmp_path).complete
