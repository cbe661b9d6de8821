"""Hand detections over the panorama as the markerless calibration's and the sync's observations
(calibration/pano_hands.py): view geometry, merging, association with the Kinect hands, the joint
search of association, pose and offset, and the whole path through the CLI on simulated sessions
(simulated detector boxes) and with a real ultralytics detector (random weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from omnimocap.apps.cli import main
from omnimocap.calibration.observations import TRACKS_PER_PERSON, KinectTracks
from omnimocap.calibration.pano_hands import (
    HandBearings, HandCandidates, ImageViewDetector, associate_detections, bearings_from_detections, confirmed_detections,
    hand_centres, hand_track, ransac_association, search_frame_indices, search_views, tracked_views,
)
from omnimocap.capture.rig import Rig, TimeMap
from omnimocap.geometry.transforms import axis_angle_to_matrix, invert_pose, make_pose, relative_angle_deg, transform_points
from omnimocap.data.skeletons import SIDES
from omnimocap.geometry.resample import interpolate_positions
from omnimocap.geometry.views import project_to_view, view_from_yaw_pitch
from omnimocap.hands.wilor.detector import Detections
from tests.tools.cli import one_line_error
from omnimocap.capture.session import PANO_FRAMES
from omnimocap.capture.truth import Truth

FPS = 30.0
HAND_OFFSETS = {"WRIST": (0.0, 0.0, 0.0), "HAND": (0.0, 0.08, 0.0), "HANDTIP": (0.0, 0.16, 0.0),
                "THUMB": (0.04, 0.1, 0.0)}


def _tracks(seconds: float = 20.0, people: int = 2, seed: int = 0) -> KinectTracks:
    """Two people's hands swinging around a camera at the origin of the Kinect frame, 1-2.5 m away."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, seconds, 1 / FPS)
    pts = np.full((len(t), TRACKS_PER_PERSON * people, 3), np.nan)
    for p in range(people):
        azimuth = rng.uniform(0, 2 * np.pi) + 0.15 * t
        radius = 1.7 + 0.5 * np.sin(0.4 * t + p)
        body = np.stack([radius * np.sin(azimuth), 0.1 * np.sin(0.7 * t), radius * np.cos(azimuth)], axis=-1)
        for s, side in enumerate(SIDES):
            phase = rng.uniform(0, 2 * np.pi)
            swing = np.stack([0.25 * (2 * s - 1) + 0.15 * np.sin(2.1 * t + phase), 0.3 * np.sin(1.7 * t + phase),
                              0.2 * np.cos(1.3 * t + phase)], axis=-1)
            for joint, off in HAND_OFFSETS.items():
                pts[:, hand_track(p, side, joint)] = body + swing + np.array(off)
    return KinectTracks("k", t, pts, np.ones(pts.shape[:2]))


def _true_pose() -> np.ndarray:
    """T_kinect_pano: the panorama 0.4 m beside the Kinect origin, turned 20 degrees."""
    return make_pose(axis_angle_to_matrix(np.radians([3.0, 20.0, -2.0])), np.array([0.4, -0.1, 0.2]))


def _detections(tracks: KinectTracks, T_kinect_pano: np.ndarray, true_time: TimeMap, t_pano: np.ndarray, *,
                noise_deg: float, swap: float, false: float, seed: int) -> tuple[HandBearings, np.ndarray]:
    """Hand-centre bearings at the true pose and clock, with noise, swapped sides and false hands;
    also the true hand-centre track of each detection (-1 for false ones)."""
    rng = np.random.default_rng(seed)
    centres = hand_centres(tracks)[0]
    frames, bearings, right, truth = [], [], [], []
    for f, tp in enumerate(t_pano):
        ts = true_time.to_session(tp)
        i = np.searchsorted(tracks.t_session, ts)
        if not 0 < i < len(tracks.t_session):
            continue
        w = (ts - tracks.t_session[i - 1]) * FPS
        c = (1 - w) * centres[i - 1] + w * centres[i]
        d = transform_points(invert_pose(T_kinect_pano), c)
        for k in range(len(d)):
            b = d[k] / np.linalg.norm(d[k]) + rng.normal(scale=np.radians(noise_deg), size=3)
            frames.append(f)
            bearings.append(b / np.linalg.norm(b))
            right.append((SIDES[k % 2] == "right") != (rng.random() < swap))
            truth.append(k)
        if rng.random() < false:
            b = rng.normal(size=3)
            frames.append(f)
            bearings.append(b / np.linalg.norm(b))
            right.append(bool(rng.random() < 0.5))
            truth.append(-1)
    n = len(frames)
    return HandBearings(np.array(frames), np.array(bearings), np.array(right), np.ones(n), np.full(n, 8.0)), np.array(truth)


def test_a_box_centred_in_a_view_is_the_view_axis_and_duplicates_merge():
    a = view_from_yaw_pitch(30.0, -10.0, 75.0, 640)
    b = view_from_yaw_pitch(60.0, -10.0, 75.0, 640)
    centre = 319.5
    box = np.array([[centre - 20, centre - 20, centre + 20, centre + 20]])
    hb = bearings_from_detections(7, [a], [Detections(box, np.array([True]), np.array([0.9]))])
    assert hb.frame.tolist() == [7] and hb.is_right.tolist() == [True]
    np.testing.assert_allclose(hb.bearing[0], a.R_pano_view[:, 2], atol=1e-9)
    assert hb.size_deg[0] == pytest.approx(np.degrees(np.hypot(40, 40) / a.camera.fx))
    # The same hand (a bearing 40 deg to the right: inside both views) seen twice, plus a second hand
    # 10 degrees away: two hands, the first kept from the view where it is nearer the centre (b).
    hand = a.R_pano_view @ np.array([np.sin(np.radians(25)), 0, np.cos(np.radians(25))])
    other = a.R_pano_view @ np.array([np.sin(np.radians(15)), 0, np.cos(np.radians(15))])

    def box_at(view, d):
        c = project_to_view(view, d)
        return np.r_[c - 15, c + 15]

    dets = [Detections(np.stack([box_at(a, hand), box_at(a, other)]), np.array([False, True]), np.array([0.8, 0.8])),
            Detections(box_at(b, hand)[None], np.array([False]), np.array([0.7]))]
    hb = bearings_from_detections(0, [a, b], dets)
    assert len(hb) == 2
    near = np.argmax(hb.bearing @ hand)
    assert np.degrees(np.arccos(min(1.0, hb.bearing[near] @ hand))) < 1e-6
    assert hb.confidence[near] == pytest.approx(0.7)  # from view b, where the hand is nearer the centre


def test_search_views_cover_the_band_where_hands_are():
    views = search_views()
    rng = np.random.default_rng(1)
    lat = np.radians(rng.uniform(-75, 35, 2000))
    lon = rng.uniform(-np.pi, np.pi, 2000)
    d = np.stack([np.cos(lat) * np.sin(lon), -np.sin(lat), np.cos(lat) * np.cos(lon)], axis=-1)
    inside = np.zeros(len(d), dtype=bool)
    for v in views:
        px = project_to_view(v, d)
        inside |= np.all((px >= 0) & (px <= v.size - 1), axis=-1)
    assert inside.all()


def test_search_frames_come_in_runs_and_flickering_detections_are_dropped():
    frames = np.arange(100, 400)
    pick = search_frame_indices(frames, 30)
    assert 27 <= len(pick) <= 30 and np.all(np.isin(pick, frames))
    runs = np.split(pick, np.nonzero(np.diff(pick) > 1)[0] + 1)
    assert all(len(r) == 3 for r in runs) and len(runs) >= 9
    # A hand moving 1 deg per frame through frames 10-12; a false hand in frame 11 only; a hand in
    # frame 20 whose neighbours were not searched.
    rot = lambda deg: np.array([np.sin(np.radians(deg)), 0.0, np.cos(np.radians(deg))])
    bearings = np.stack([rot(0), rot(1), rot(2), rot(40), rot(80)])
    hb = HandBearings(np.array([10, 11, 12, 11, 20]), bearings, np.zeros(5, dtype=bool), np.ones(5), np.full(5, 8.0))
    assert confirmed_detections(hb, np.array([10, 11, 12, 20])).tolist() == [True, True, True, False, False]
    assert hb.subset(np.array([False, True, False, True, False])).frame.tolist() == [11, 11]


def test_association_assigns_detections_to_their_hands_and_gates_false_ones():
    tracks = _tracks()
    T = _true_pose()
    t_pano = np.arange(0.5, 19.5, 1 / FPS)
    hb, truth = _detections(tracks, T, TimeMap(), t_pano, noise_deg=0.5, swap=0.1, false=0.3, seed=2)
    cands = HandCandidates.from_tracks(tracks)
    bearings, stats = associate_detections(hb, t_pano, cands, T, TimeMap(), cands.points.shape[1])
    assert bearings.shape == (len(t_pano), 4, 3)
    true_rows = np.nonzero(truth >= 0)[0]
    placed = 0
    for i in true_rows:
        got = bearings[hb.frame[i], truth[i]]
        placed += bool(np.allclose(got, hb.bearing[i]))
    assert placed >= 0.99 * len(true_rows)  # swapped sides included: the angle decides
    assert stats.other_side >= 0.05 * len(true_rows)
    assert stats.associated - placed <= 0.02 * (truth < 0).sum() + 2  # false hands rarely pass the gate


def test_ransac_finds_pose_and_offset_without_association():
    tracks = _tracks(seed=3)
    T = _true_pose()
    true_time = TimeMap(1.0, 0.1)  # the panorama clock runs 0.1 s behind the host-arrival guess
    t_pano = np.arange(0.5, 19.0, 0.2)  # a sparse search
    hb, _ = _detections(tracks, T, true_time, t_pano, noise_deg=1.0, swap=0.1, false=0.3, seed=4)
    res = ransac_association(hb, t_pano, HandCandidates.from_tracks(tracks), TimeMap())
    assert abs(res.offset_s - 0.1) <= 1 / 30 + 1e-9
    assert relative_angle_deg(res.T_kinect_pano[:3, :3], T[:3, :3]) < 2.0
    assert np.linalg.norm(res.T_kinect_pano[:3, 3] - T[:3, 3]) < 0.08
    assert res.inlier_fraction > 0.6


def test_k4abt_body_ids_with_gaps_are_just_empty_tracks():
    """k4abt numbers bodies from 1 and never reuses an id: the tracks of absent ids are empty."""
    tracks = _tracks(seed=3)
    shifted = np.full((len(tracks.t_session), 3 * TRACKS_PER_PERSON, 3), np.nan)
    shifted[:, TRACKS_PER_PERSON:] = tracks.points  # bodies 1 and 2, no body 0
    k4abt = KinectTracks("k", tracks.t_session, shifted, np.ones(shifted.shape[:2]))
    cands = HandCandidates.from_tracks(k4abt)
    assert cands.tracks.tolist() == [2, 3, 4, 5]
    T, true_time = _true_pose(), TimeMap(1.0, 0.1)
    t_pano = np.arange(0.5, 19.0, 0.2)
    hb, truth = _detections(tracks, T, true_time, t_pano, noise_deg=1.0, swap=0.1, false=0.0, seed=4)
    res = ransac_association(hb, t_pano, cands, TimeMap())
    assert relative_angle_deg(res.T_kinect_pano[:3, :3], T[:3, :3]) < 2.0
    bearings, _ = associate_detections(hb, t_pano, cands, T, true_time, 6)
    assert np.isnan(bearings[:, :2]).all()
    placed = [np.allclose(bearings[hb.frame[i], truth[i] + 2], hb.bearing[i]) for i in range(len(hb))]
    assert np.mean(placed) > 0.99


def test_ransac_refuses_detections_unrelated_to_the_kinect_hands():
    tracks = _tracks(seed=5)
    t_pano = np.arange(0.5, 19.0, 0.2)
    rng = np.random.default_rng(6)
    d = rng.normal(size=(400, 3))
    hb = HandBearings(rng.integers(0, len(t_pano), 400), d / np.linalg.norm(d, axis=1, keepdims=True),
                      rng.random(400) < 0.5, np.ones(400), np.full(400, 8.0))
    with pytest.raises(Exception, match="do not match the Kinect hands"):
        ransac_association(hb, t_pano, HandCandidates.from_tracks(tracks), TimeMap())


def test_tracked_views_hold_the_predicted_hands():
    tracks = _tracks()
    T = _true_pose()
    views = tracked_views(interpolate_positions(tracks.t_session, tracks.points, np.array([5.0]))[0], T)
    assert len(views) == 4
    i = int(round(5.0 * FPS))
    for v, (p, side) in zip(views, [(p, s) for p in range(2) for s in SIDES]):
        centre = transform_points(invert_pose(T), hand_centres(tracks)[0][i, 2 * p + SIDES.index(side)])
        px = project_to_view(v, centre)
        assert np.all(np.abs(px - (v.size - 1) / 2) < 0.25 * v.size)
        assert v.fov_deg >= 30.0 - 1e-9


def test_image_detector_runs_ultralytics_on_views_of_the_panorama(detector_pt):
    from omnimocap.geometry.cameras import EquirectCamera
    from omnimocap.hands.wilor.detector import HandDetector

    rng = np.random.default_rng(0)
    pano = rng.integers(0, 255, (256, 512, 3), dtype=np.uint8)
    views = search_views(size=160)[:3]
    det = ImageViewDetector(HandDetector(detector_pt), EquirectCamera(512, 256))
    out = det.detect_views(0, pano, views)
    assert len(out) == 3
    for d in out:
        assert d.boxes_xyxy.shape == (len(d.is_right), 4) and d.confidence.shape == d.is_right.shape


# --- through the CLI --------------------------------------------------------------------------------

def _run(*argv: str) -> None:
    assert main(list(argv)) == 0


def _pose_and_clock_errors(session) -> dict:
    from omnimocap.capture.pano import read_pano_timestamps

    est, true = Rig.load(session / "rig.json"), Truth(session).rig()
    A, B = est.pose("pano"), true.pose("pano")
    t_mid = float(np.median(read_pano_timestamps(session / PANO_FRAMES).t_pano))
    return {"rotation_deg": relative_angle_deg(A[:3, :3], B[:3, :3]),
            "translation_mm": float(np.linalg.norm(A[:3, 3] - B[:3, 3]) * 1e3),
            "offset_ms": float(abs(est.time_map("pano").to_session(t_mid) - true.time_map("pano").to_session(t_mid)) * 1e3),
            "rate_ppm": float(abs(est.time_map("pano").a / true.time_map("pano").a - 1) * 1e6)}


@pytest.mark.slow
def test_markerless_and_sync_from_detected_hands_two_people(tmp_path, capsys):
    s = tmp_path / "s"
    _run("simulate", str(s), "--no-kinect-video", "--realism", "ideal", "--seconds", "30", "--seed", "4", "--people", "2",
         "--pano-width", "512")
    capsys.readouterr()
    # hands only: this checks the hand detections' path (body keypoints: tests/test_sync_field.py)
    _run("calibrate", str(s), "--observer", "simulated-detector", "--no-body-keypoints", "--quiet")
    out = json.loads(capsys.readouterr().out)
    rig = Rig.load(s / "rig.json")
    assert rig.inputs["pano_observer"].startswith("hand detections") and not rig.inputs["simulated_observer"]
    assert rig.inputs["detections"]["search"]["frames"] == 150
    assert rig.inputs["detections"]["association"]["associated"] > 2000
    err = _pose_and_clock_errors(s)
    # The markerless targets (0.3 deg, 10 mm), from detected hands alone, with honest uncertainties.
    assert err["rotation_deg"] <= 0.3 and err["translation_mm"] <= 10.0
    assert err["rotation_deg"] <= 3 * out["rotation_std_deg"]
    assert err["translation_mm"] <= 3 * out["translation_std_mm"]
    assert err["offset_ms"] <= 5.0
    # A much worse detector (1 deg box noise, 15 % swapped sides, 30 % missed hands, a false hand in
    # 10 % of the views) still gives the markerless targets.
    from omnimocap.calibration.config import CalibrateConfig, ObserverConfig
    from omnimocap.calibration.session import calibrate_session
    from omnimocap.hands.sim_backend import SimViewDetector

    noisy = SimViewDetector(s, noise_deg=1.0, swap=0.15, miss=0.3, false_rate=0.1)
    calibrate_session(s, CalibrateConfig(observer=ObserverConfig(observer="simulated-detector", body_keypoints=False)),
                      view_detector=noisy)
    capsys.readouterr()
    assert Rig.load(s / "rig.json").configs["calibrate"]["observer"]["observer"] == "simulated-detector"
    noisy_err = _pose_and_clock_errors(s)
    assert noisy_err["rotation_deg"] <= 0.3 and noisy_err["translation_mm"] <= 10.0
    # Refining from that calibration (no search) keeps it.
    _run("calibrate", str(s), "--observer", "simulated-detector", "--no-body-keypoints", "--refine", "--quiet")
    capsys.readouterr()
    assert Rig.load(s / "rig.json").inputs["started_from"] == "rig: markerless"
    assert "search" not in Rig.load(s / "rig.json").inputs["detections"]
    refined = _pose_and_clock_errors(s)
    assert refined["rotation_deg"] <= 0.3 and refined["translation_mm"] <= 10.0
    _run("sync", str(s), "--observer", "simulated-detector", "--no-body-keypoints", "--quiet")
    out = json.loads(capsys.readouterr().out)
    err = _pose_and_clock_errors(s)
    assert err["offset_ms"] <= 3 * out["offset_std_ms"] and err["offset_ms"] <= 5.0
    assert err["rate_ppm"] <= 3 * out["rate_std_ppm"]


@pytest.fixture
def short_session(tmp_path):
    s = tmp_path / "short"
    _run("simulate", str(s), "--no-kinect-video", "--seconds", "3", "--seed", "3", "--people", "1",
         "--pano-width", "256")
    return s



def test_random_detector_weights_end_in_a_clear_refusal(short_session, detector_pt, capsys):
    before = (short_session / "rig.json").read_bytes()
    line = one_line_error(capsys, ["calibrate", str(short_session), "--observer", "detector", "--detector",
                                    str(detector_pt), "--search-frames", "4", "--quiet"])
    assert any(k in line for k in ("found no hands", "do not match the Kinect hands", "hand detections"))
    assert (short_session / "rig.json").read_bytes() == before


def test_refine_needs_a_previous_calibration(short_session, capsys):
    line = one_line_error(capsys, ["calibrate", str(short_session), "--refine"])
    assert "--refine needs a previous calibration" in line and "simulated truth" in line


def test_missing_detector_weights_name_the_file_and_the_fix(short_session, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMNIMOCAP_MODELS", str(tmp_path / "models"))
    for verb in ("calibrate", "sync"):
        line = one_line_error(capsys, [verb, str(short_session), "--observer", "detector", "--quiet"])
        assert "wilor/detector.pt" in line and "omnimocap models download" in line


def test_hand_centre_ignores_a_collapsed_hand_tip_and_thumb():
    tracks = _tracks(seconds=2.0, people=1)
    clean = hand_centres(tracks)[0]
    collapsed = KinectTracks("k", tracks.t_session, tracks.points.copy(), tracks.sigma.copy())
    for side in SIDES:
        for joint in ("HANDTIP", "THUMB"):
            collapsed.points[:30, hand_track(0, side, joint)] = collapsed.points[:30, hand_track(0, side, "HAND")]
    got = hand_centres(collapsed)[0]
    assert np.abs(got - clean).max() < 0.015  # the open hand's centre, within a centimetre and a half
    import omnimocap.calibration.pano_hands as ph

    plain = ph.HAND_CENTRES
    try:
        ph.HAND_CENTRES = ph.HandCentreConfig(collapse_check=False)
        assert np.linalg.norm(hand_centres(collapsed)[0][:30] - clean[:30], axis=-1).min() > 0.02
    finally:
        ph.HAND_CENTRES = plain


def test_rows_by_frame_groups_each_frames_rows_in_order():
    from omnimocap.calibration.pano_hands import rows_by_frame

    frame = np.array([4, 1, 4, 7, 1, 1, 9])
    frames, rows = rows_by_frame(frame)
    assert frames.tolist() == [1, 4, 7, 9]
    assert [r.tolist() for r in rows] == [[1, 4, 5], [0, 2], [3], [6]]
