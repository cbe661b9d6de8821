"""The ChArUco board method of ``calibrate``: the 360 camera placed from a board held still in view
of it and of the reference Kinect's colour camera (and the other Kinects from the same board).

The reference (first) Kinect's colour frames are read from its recording; the runs of frames where
the board holds still are found, the board is detected in the 360 frame nearest the middle of each
run (matched through the rig's time maps), the board poses and the 360 camera are solved jointly
(calibration/board.py), and the result is composed with the Kinect's factory colour-to-depth
extrinsics into the 360 camera's world pose. The 360 camera's bearings are seen from each lens's
centre (the rig's ``pano_optics``), and its lens baseline is solved when the board was seen on both
sides of the seam (``BoardConfig.estimate_baseline``). A still board cannot show the rolling-shutter
readout: it is solved from the 360 frames in which the board moves between poses
(calibration/board_readout.py, ``BoardConfig.estimate_readout``), else kept from the rig. When the Kinects' poses are estimated, every other
Kinect whose colour camera saw the board in enough of those still runs is placed from it too.

Poses ``T_a_b`` map frame-b points into frame a (metres); times in seconds.
"""

from __future__ import annotations

import numpy as np

from omnimocap.calibration.board import (
    BoardDetection, BoardSpec, calibrate_board_sequence, detect_equirect, detect_pinhole,
)
from omnimocap.calibration.board_readout import BoardTrack, ReadoutEstimate, estimate_readout, with_readout
from omnimocap.calibration.coarse_sync import coarse_time_map
from omnimocap.calibration.config import BoardConfig
from omnimocap.capture.kinect_mkv import KinectRecording
from omnimocap.capture.pano import PanoReader, read_pano_timestamps
from omnimocap.capture.rig import Rig
from omnimocap.capture.session import MANIFEST, Session
from omnimocap.errors import InputError, UserError
from omnimocap.geometry.cameras import EquirectCamera
from omnimocap.geometry.transforms import invert_pose, relative_angle_deg


def calibrate_board(session: Session, previous: Rig, kinect_rig: Rig, config: BoardConfig,
                    spec: BoardSpec | None = None) -> tuple[Rig, dict]:
    """The rig with the 360 camera placed by the board ``spec`` (default :class:`BoardSpec`) on
    ``kinect_rig``'s Kinect poses (and, when those are estimated, the other Kinects that saw the
    board), its time map kept from ``previous`` (else the host-arrival map), and the summary the
    verb prints. Nothing is written."""
    spec = BoardSpec() if spec is None else spec
    entry = session.kinects()[0]
    recording, times, dets, runs = _reference_still_runs(session, spec, config)
    kinect_cal = recording.calibration
    stamps = read_pano_timestamps(session.path(session.pano().timestamps))
    pano_map = previous.time_maps.get("pano") or coarse_time_map(stamps.t_pano, stamps.t_host)
    pairs = _pano_frames_in_runs(times, runs, previous.time_map(entry.name), pano_map.to_session(stamps.t_pano))
    pano_dets = _pano_detections(session, spec, [j for _, j in pairs])
    cal = calibrate_board_sequence(spec, [dets[i] for i, _ in pairs], [pano_dets[j] for _, j in pairs],
                                   kinect_cal.T_depth_color, optics=previous.pano_optics,
                                   estimate_baseline=config.estimate_baseline)
    used = [pairs[k] for k in cal.frames_used]
    t_color = previous.time_map(entry.name).to_session(np.asarray(times, dtype=np.float64))
    readout = (_readout(session, spec, config, cal, BoardTrack(spec, t_color, dets, config.min_corners),
                        pano_map.to_session(stamps.t_pano)) if config.estimate_readout else None)
    optics = with_readout(cal.optics, readout, config.readout_max_std_ms * 1e-3)
    rig = Rig(dict(kinect_rig.T_world_sensor), dict(previous.time_maps), method="board", is_truth=False,
              pano_optics=optics)
    rig.T_world_sensor["pano"] = kinect_rig.pose(entry.name) @ cal.T_depth_pano
    rig.time_maps["pano"] = pano_map
    rig.residuals = {**kinect_rig.residuals, "pano": {**cal.to_json(), "optics": optics.to_dict(),
                                                      "readout": readout.to_json() if readout else None}}
    kinects_from_board = {}
    if "kinects" in kinect_rig.residuals:  # the Kinects' poses are estimated, not kept from the rig
        kinects_from_board = _board_kinects(session, rig, previous, spec, config, times, dets, runs,
                                            kinect_cal.T_depth_color)
    rig.inputs = {"reference_kinect": entry.serial, "recording": entry.recording,
                  "board": {"squares_x": spec.squares_x, "squares_y": spec.squares_y, "square_m": spec.square_m,
                            "marker_m": spec.marker_m, "dictionary": int(spec.dictionary)},
                  "still_runs": len(runs),
                  "poses_used": [{"color_frame": int(i), "t_color_device": float(times[i]), "pano_frame": int(j),
                                  "t_pano": float(stamps.t_pano[j])} for i, j in used],
                  "pano_time_map_from": "rig" if "pano" in previous.time_maps else "host arrival times",
                  **kinect_rig.inputs}
    if kinects_from_board:
        rig.inputs["kinect_poses_from_board"] = kinects_from_board
    return rig, {"method": "board", "poses_used": len(used), "kinect_rms_deg": cal.kinect_rms_deg,
                 "pano_rms_deg": cal.pano_rms_deg, "lens_baseline_mm": cal.optics.baseline_m * 1e3,
                 "lens_baseline_from": "board" if cal.baseline_estimated else "rig",
                 "readout_ms": optics.readout_s * 1e3,
                 "readout_from": "board" if optics is not cal.optics else "rig",
                 **({"readout_std_ms": readout.readout_std_s * 1e3} if readout else {})}


def _readout(session: Session, spec: BoardSpec, config: BoardConfig, cal, track: BoardTrack,
             t_pano_session: np.ndarray) -> ReadoutEstimate | None:
    """The 360 camera's readout from the frames (session times ``t_pano_session``) in which the
    colour camera's board ``track`` moves faster than ``config.readout_min_speed`` and can be
    interpolated (``config.readout_max_track_miss_mm``)."""
    miss = track.prediction_error(t_pano_session, spec.corners())
    moving = np.flatnonzero((track.speed(t_pano_session) >= config.readout_min_speed)
                            & (miss <= config.readout_max_track_miss_mm * 1e-3))
    if len(moving) > config.readout_max_frames:
        moving = moving[np.linspace(0, len(moving) - 1, config.readout_max_frames).round().astype(int)]
    if not len(moving):
        return None
    dets = _pano_detections(session, spec, [int(j) for j in moving])
    return estimate_readout(spec, track, invert_pose(cal.T_color_pano), cal.optics, t_pano_session[moving],
                            [dets[int(j)] for j in moving])


def _reference_still_runs(session: Session, spec: BoardSpec, config: BoardConfig
                          ) -> tuple[KinectRecording, list[float], list[BoardDetection | None], list[tuple[int, int]]]:
    """The reference Kinect's recording, its colour frames' device times (seconds), the board
    detected in each (None below ``config.min_corners``) and the still runs; raises
    :class:`InputError` / :class:`UserError` without colour, without the board or without a still run."""
    entry = session.kinects()[0]
    if entry.recording is None:
        raise InputError(f"the reference Kinect {entry.serial} has no recording to find the board in",
                         path=session.root / MANIFEST, fix="record the Kinects' video, or use --method markerless")
    recording = KinectRecording(session.path(entry.recording))
    if recording.color_mode is None:
        raise InputError("the recording has no colour track", path=recording.path,
                         fix="record with colour on, or use --method markerless")
    times, dets = [], []
    for capture in recording.captures():
        if capture.color is None:
            continue
        det = detect_pinhole(spec, capture.color, recording.calibration.color)
        times.append(capture.color_timestamp)
        dets.append(det if len(det) >= config.min_corners else None)
    board_name = (f"ChArUco board ({spec.squares_x}x{spec.squares_y} squares of {spec.square_m * 1e3:.0f} mm, "
                  f"{spec.marker_m * 1e3:.0f} mm markers)")
    if not any(d is not None for d in dets):
        raise UserError(f"the {board_name} is never seen in the colour frames", path=recording.path,
                        fix="record it held still in several poses where the Kinect and the 360 camera both see it, "
                            "or use --method markerless")
    runs = still_runs(np.asarray(times), dets, config)
    if not runs:
        raise UserError(f"the {board_name} never holds still for {config.min_still_frames} frames", path=recording.path,
                        fix="hold it still for about half a second in each pose")
    return recording, times, dets, runs


def _pano_frames_in_runs(times: list[float], runs: list[tuple[int, int]], kinect_map, t_pano_session: np.ndarray
                         ) -> list[tuple[int, int]]:
    """(colour capture index, pano frame index) of each still run: its middle colour frame and the
    pano frame nearest to it in session time, kept when that pano frame lies inside the run, a frame
    away from its ends."""
    pairs = []
    for a, b in runs:
        mid = (a + b) // 2
        j = int(np.argmin(np.abs(t_pano_session - kinect_map.to_session(times[mid]))))
        if kinect_map.to_session(times[a + 1]) <= t_pano_session[j] <= kinect_map.to_session(times[b - 1]):
            pairs.append((mid, j))
    return pairs


def _pano_detections(session: Session, spec: BoardSpec, frames: list[int]) -> dict[int, BoardDetection | None]:
    """The board detected in each of the 360 ``frames`` (indices), read in one pass."""
    pano = session.pano()
    reader = PanoReader(session.path(pano.recording), session.path(pano.timestamps))
    camera = EquirectCamera(reader.width, reader.height)
    wanted: dict[int, BoardDetection | None] = {j: None for j in frames}
    if wanted:
        for j, frame in reader.frames(min(wanted), max(wanted) + 1):
            if j in wanted:
                wanted[j] = detect_equirect(spec, frame, camera)
    return wanted


def still_runs(times: np.ndarray, dets: list[BoardDetection | None], config: BoardConfig) -> list[tuple[int, int]]:
    """[first, last] capture indices of runs of at least ``config.min_still_frames`` where the board
    was detected and no common corner moved more than ``config.still_deg``."""
    runs, start = [], None
    for i in range(len(dets)):
        still = False
        if i > 0 and dets[i] is not None and dets[i - 1] is not None:
            common, a, b = np.intersect1d(dets[i - 1].ids, dets[i].ids, return_indices=True)
            if len(common) >= config.min_corners:
                cos = np.sum(dets[i - 1].bearings[a] * dets[i].bearings[b], axis=-1)
                still = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).max() < config.still_deg
        if still:
            start = i - 1 if start is None else start
        else:
            if start is not None:
                runs.append((start, i - 1))
            start = None
    if start is not None:
        runs.append((start, len(dets) - 1))
    return [(a, b) for a, b in runs if b - a + 1 >= config.min_still_frames]


def _board_kinects(session: Session, rig: Rig, previous: Rig, spec: BoardSpec, config: BoardConfig,
                   ref_times: list[float],
                   ref_dets: list[BoardDetection | None], runs: list[tuple[int, int]],
                   T_depth_color_ref: np.ndarray) -> dict:
    """Place every non-reference Kinect whose colour camera saw the board in the reference's still
    runs: the colour capture nearest (in session time) to each run's middle, solved jointly with the
    reference's detection for the colour-to-colour pose and composed with both devices' factory
    colour-to-depth extrinsics. Updates ``rig``'s poses and ``residuals["kinects"]`` in place (a
    Kinect that never saw the board keeps its skeleton-based pose) and returns, per serial, the
    poses used or why the board was not used."""
    entry = session.kinects()[0]
    T_world_ref = rig.pose(entry.name)
    t_mid = np.array([previous.time_map(entry.name).to_session(ref_times[(a + b) // 2]) for a, b in runs])
    used = {}
    for other in session.kinects()[1:]:
        if not other.recording:
            used[other.serial] = "skeletons: no recording"
            continue
        recording = KinectRecording(session.path(other.recording))
        if recording.color_mode is None:
            used[other.serial] = "skeletons: no colour track"
            continue
        cal = recording.calibration
        other_map = previous.time_map(other.name)
        captures = [(other_map.to_session(c.color_timestamp), c.color) for c in recording.captures()
                    if c.color is not None]
        t_other = np.array([t for t, _ in captures])
        nearest = [int(np.argmin(np.abs(t_other - t))) for t in t_mid]
        other_dets = [detect_pinhole(spec, captures[j][1], cal.color) for j in nearest]
        try:
            res = calibrate_board_sequence(spec, [ref_dets[(a + b) // 2] for a, b in runs], other_dets,
                                           T_depth_color_ref, min_frames=config.min_kinect_poses,
                                           cameras=("the reference Kinect's colour camera",
                                                    f"Kinect {other.serial}'s colour camera"))
        except UserError as exc:
            used[other.serial] = f"skeletons: {exc.problem}"
            continue
        T_ref_other = res.T_depth_pano @ invert_pose(cal.T_depth_color)
        skeleton_pose = rig.pose(other.name)
        rig.T_world_sensor[other.name] = T_world_ref @ T_ref_other
        rig.residuals["kinects"][other.serial] = {
            "method": "board", "reference_rms_deg": res.kinect_rms_deg, "other_rms_deg": res.pano_rms_deg,
            "poses_used": len(res.frames_used),
            "skeleton_rotation_difference_deg": float(relative_angle_deg(skeleton_pose[:3, :3],
                                                                         rig.pose(other.name)[:3, :3])),
            "skeleton_translation_difference_mm": float(np.linalg.norm(skeleton_pose[:3, 3]
                                                                       - rig.pose(other.name)[:3, 3]) * 1e3),
            "skeletons": rig.residuals["kinects"].get(other.serial)}
        used[other.serial] = [{"reference_color_frame": int((runs[k][0] + runs[k][1]) // 2),
                               "color_frame": int(nearest[k]), "t_session": float(t_mid[k])}
                              for k in res.frames_used]
    return used
