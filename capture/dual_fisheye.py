"""A 360 source of raw dual-fisheye frames: an Insta360 X3/X4/X5 over USB (or its recorded raw
video) delivers its two fisheye images side by side and unstitched; this source passes them on
as they are, with the two-lens model (:class:`~omnimocap.geometry.cameras.DualFisheyeCamera`)
that maps their pixels to rays in the 360 camera's frame. Wrist views are cut from them directly
(:mod:`omnimocap.geometry.fisheye_views`), so nothing is stitched.

The lens model is a JSON file (:func:`load_dual_fisheye`, :func:`save_dual_fisheye`): ``lenses``, two
objects as :meth:`~omnimocap.geometry.cameras.FisheyeLens.to_dict` writes them (intrinsics in
pixels of each lens's half, ``k`` the Kannala-Brandt coefficients or empty for equidistant,
``max_theta_deg``, ``R_cam_lens`` and ``t_cam_lens`` in metres).

In a session (capture/session.py), the 360 device entry's ``lenses`` names that file
(:data:`LENSES_FILE`, beside ``pano.mkv``) when the stream holds raw dual-fisheye frames; without it
the stream is an equirectangular panorama. :func:`pano_camera` gives the camera model of either.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from omnimocap.geometry.cameras import DualFisheyeCamera, EquirectCamera
from omnimocap.capture.sources import EndOfStream, PanoFrame, Source
from omnimocap.errors import DeviceError, InputError

# The lens model's file name in a session folder.
LENSES_FILE = "pano_lenses.json"

_SIZE_FIX = ("set the camera to deliver its unstitched dual-fisheye frame at the lens model's size, or load the "
             "lens model made for this resolution")


def load_dual_fisheye(path: str | Path) -> DualFisheyeCamera:
    """The two-lens model stored at ``path``; :class:`InputError` in one line when it is missing or
    malformed."""
    path = Path(path)
    try:
        camera = DualFisheyeCamera.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise InputError("dual-fisheye lens model not found", path=path, fix="check the path") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"malformed dual-fisheye lens model ({exc})", path=path,
                         fix="write it with save_dual_fisheye or follow the format in capture/dual_fisheye.py") from None
    fix = "write it with save_dual_fisheye or `omnimocap calibrate-lens`"
    for name, lens in zip(("front", "back"), camera.lenses):
        R = np.asarray(lens.R_cam_lens)
        if R.shape != (3, 3) or not np.allclose(R @ R.T, np.eye(3), atol=1e-6) or np.linalg.det(R) < 0:
            raise InputError(f"the {name} lens's R_cam_lens is not a rotation", path=path, fix="store a 3x3 rotation matrix")
        t = np.asarray(lens.t_cam_lens)
        if t.shape != (3,) or not np.all(np.isfinite(t)):
            raise InputError(f"the {name} lens's t_cam_lens is not a point (3 finite metres)", path=path, fix=fix)
        values = (lens.fx, lens.fy, lens.cx, lens.cy, lens.max_theta, *lens.k)
        if not all(np.isfinite(values)) or lens.fx <= 0 or lens.fy <= 0 or lens.width <= 0 or lens.height <= 0:
            raise InputError(f"the {name} lens's intrinsics are not positive finite numbers", path=path, fix=fix)
        if not 0 < lens.max_theta <= np.pi:
            raise InputError(f"the {name} lens's max_theta_deg is not within (0, 180]", path=path, fix=fix)
    if camera.lenses[0].height != camera.lenses[1].height:
        raise InputError("the two lenses' images are not equally tall", path=path, fix=fix)
    return camera


def pano_camera(session, entry=None) -> EquirectCamera | DualFisheyeCamera:
    """The camera model of a session's 360 stream (``entry`` or ``session.pano()``): its
    :class:`DualFisheyeCamera` when the entry names a lens model (raw dual-fisheye frames), else the
    :class:`EquirectCamera` of its size. A lens model whose frame size is not the stream's is
    refused in one line (:class:`InputError`)."""
    entry = entry or session.pano()
    if entry.lenses is None:
        return EquirectCamera(int(entry.width or 0), int(entry.height or 0))
    path = session.path(entry.lenses)
    camera = load_dual_fisheye(path)
    if entry.width and entry.height and (camera.width, camera.height) != (entry.width, entry.height):
        raise InputError(f"the lens model is for {camera.width}x{camera.height} frames, the 360 stream is "
                         f"{entry.width}x{entry.height}", path=path, fix="store the lens model calibrated at the stream's size")
    return camera


def save_dual_fisheye(camera: DualFisheyeCamera, path: str | Path) -> None:
    Path(path).write_text(json.dumps(camera.to_dict(), indent=2))


class DualFisheyeSource(Source[PanoFrame]):
    """Raw dual-fisheye frames from ``inner`` (any 360 source that delivers the camera's frames
    undecoded by a stitcher: UVC, a file, a stream, a GStreamer pipeline) with the lens model
    ``camera``. Frames keep their times; ``frame.image`` is the raw (H, 2H, 3) frame, not an
    equirectangular panorama. A frame of another size than the model's ends the source with one
    line naming both sizes."""

    kind = "pano"

    def __init__(self, inner: Source[PanoFrame], camera: DualFisheyeCamera):
        super().__init__(inner.name, inner.clock)
        self.inner, self.camera = inner, camera

    def _mismatch(self, width: int | None, height: int | None) -> str | None:
        if width and height and (width, height) != (self.camera.width, self.camera.height):
            return (f"the 360 source delivers {width}x{height} frames, the dual-fisheye lens model is "
                    f"{self.camera.width}x{self.camera.height}")
        return None

    def _connect(self) -> None:
        self.inner.connect()
        problem = self._mismatch(self.inner.info.width, self.inner.info.height)
        if problem:
            raise DeviceError(problem, path=self.inner.name, fix=_SIZE_FIX)
        self.info = replace(self.inner.info, width=self.camera.width, height=self.camera.height)
        self.nominal_fps = self.inner.nominal_fps

    def _start(self) -> None:
        self.inner.start()

    def _read(self, timeout: float) -> PanoFrame | None:
        frame = self.inner.read(timeout)
        if frame is not None:
            problem = self._mismatch(frame.image.shape[1], frame.image.shape[0])
            if problem:
                raise EndOfStream(f"{self.inner.name}: {problem}; {_SIZE_FIX}")
        return frame

    def _stop(self) -> None:
        self.inner.stop()


# Image files a folder of raw frames may hold.
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def read_raw_frames(path: str | Path, max_frames: int = 60) -> list[np.ndarray]:
    """Raw dual-fisheye frames (H, W, 3) BGR uint8 from a video file (any container OpenCV reads), a
    folder of images (sorted by name) or a session folder (its 360 stream): at most ``max_frames``,
    evenly spaced over the recording. Refused in one line (:class:`InputError`) when the path is
    missing, holds no frames, or its frames are not two square fisheye images side by side
    (width = 2 x height)."""
    import cv2

    path = Path(path)
    if not path.exists():
        raise InputError("raw dual-fisheye recording not found", path=path, fix="check the path")
    if path.is_dir() and (path / "session.json").is_file():
        from omnimocap.capture.session import Session

        path = Session.open(path).pano_video_path()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not files:
            raise InputError("the folder holds no image files", path=path,
                             fix=f"put the raw frames there as {', '.join(FRAME_SUFFIXES)} files, or pass the video")
        frames = [cv2.imread(str(files[i]), cv2.IMREAD_COLOR) for i in _spread(len(files), max_frames)]
        if any(f is None for f in frames):
            raise InputError("an image in the folder cannot be read", path=path, fix="remove or re-export it")
    else:
        frames = _video_frames(path, max_frames)
    h, w = frames[0].shape[:2]
    if w != 2 * h or any(f.shape[:2] != (h, w) for f in frames):
        raise InputError(f"frames of {w}x{h} pixels are not two square fisheye images side by side", path=path,
                         fix="record the camera's unstitched dual-fisheye output (width = 2 x height), not a stitched panorama")
    return frames


def _spread(n: int, most: int) -> list[int]:
    """At most ``most`` indices evenly spread over ``range(n)``."""
    return sorted(set(np.linspace(0, n - 1, min(n, max(1, most))).round().astype(int).tolist()))


def _video_frames(path: Path, max_frames: int) -> list[np.ndarray]:
    import cv2

    video = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, frame = video.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        video.release()
    if not frames:
        raise InputError("no video frames could be read", path=path,
                         fix="pass a video OpenCV can decode (mp4, mkv) or a folder of frames")
    return [frames[i] for i in _spread(len(frames), max_frames)]
