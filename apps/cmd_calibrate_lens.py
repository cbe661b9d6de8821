"""``omnimocap calibrate-lens VIDEO_OR_FOLDER --out lenses.json``: both lenses of a dual-fisheye 360
camera from a raw (unstitched) recording of the ChArUco board (``BoardSpec()``: 7 x 5 squares of
80 mm, 60 mm DICT_5X5_100 markers).

The recording is a video, a folder of frames or a session folder whose 360 stream is raw; at most
``--max-frames`` frames are used, evenly spaced. Show the board to each lens in several poses (on its
axis and well off it) and hold it across the seam, where both lenses see it, about ten times: beside
the camera on both sides, above it and at the diagonals, some near (~0.45 m) and some far (~0.8 m).
Boards in one direction alone leave the back lens's offset along the axis traded for a turn of it
(on the simulated recording of sim/fisheye.py ``board_poses``: 30 mm found as 29.5 mm, the back
lens's orientation to 0.11 deg, where three boards beside the camera gave 22.4 mm). The fit is calibration/fisheye_board.py's (Kannala-Brandt intrinsics per lens, the back
lens's pose relative to the front one, the camera frame midway between the two optical centres); the
lens model is written as capture/dual_fisheye.py reads it (a session names it in its 360 entry's
``lenses``). Prints the reprojection RMS of each lens (pixels), the frames each lens used and the
baseline between the optical centres (millimetres).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omnimocap.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate-lens", help="calibrate a dual-fisheye 360 camera's two lenses from a raw recording of the board",
        description="Calibrate both lenses of a dual-fisheye 360 camera (intrinsics and their relative pose) from a "
                    "raw, unstitched recording of the ChArUco board, and write the lens model JSON.")
    parser.add_argument("recording", type=Path, metavar="VIDEO_OR_FOLDER",
                        help="a raw dual-fisheye video, a folder of raw frames, or a session folder with a raw 360 stream")
    parser.add_argument("--out", type=Path, required=True, metavar="LENSES_JSON", help="lens model file to write")
    parser.add_argument("--max-frames", type=int, default=60, metavar="N",
                        help="use at most N frames, evenly spaced over the recording (default 60)")
    parser.add_argument("--fov-deg", type=float, default=200.0, metavar="DEG",
                        help="the lenses' nominal field of view, degrees: the start of the fit and the image "
                             "circle kept (default 200)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing LENSES_JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from omnimocap.calibration.board import BoardSpec
    from omnimocap.calibration.fisheye_board import calibrate_dual_fisheye
    from omnimocap.capture.dual_fisheye import read_raw_frames, save_dual_fisheye

    _check(args)
    frames = read_raw_frames(args.recording, args.max_frames)
    result = calibrate_dual_fisheye(BoardSpec(), frames, fov_deg=args.fov_deg)
    save_dual_fisheye(result.camera, args.out)
    front, back = result.camera.lenses
    baseline_mm = 1000.0 * float(((back.t_cam_lens - front.t_cam_lens) ** 2).sum() ** 0.5)
    for name, rms, used in zip(("front", "back"), result.rms_px, result.frames_per_lens):
        print(f"{name} lens: reprojection RMS {rms:.2f} px over {len(used)} frames")
    print(f"baseline between the optical centres: {baseline_mm:.1f} mm ({len(result.frames_both)} frames with both lenses)")
    print(f"lens model written to {args.out}")
    return 0


def _check(args: argparse.Namespace) -> None:
    """One InputError line for an option out of range or an output that would be overwritten."""
    if args.max_frames < 4:
        raise InputError(f"--max-frames {args.max_frames} is too few", fix="use at least 4 (3 per lens and one across the seam)")
    if not 90.0 < args.fov_deg <= 360.0:
        raise InputError(f"--fov-deg {args.fov_deg:g} is not a fisheye's field of view", fix="give degrees, e.g. 200")
    if args.out.exists() and not args.overwrite:
        raise InputError("the lens model file exists", path=args.out, fix="choose another --out or pass --overwrite")
    if not args.out.parent.is_dir():
        raise InputError("the output folder does not exist", path=args.out.parent, fix="create it first")
