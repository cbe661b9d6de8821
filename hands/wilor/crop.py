"""WiLoR's crop step: a hand box to the 256x256 normalised network input.

Follows the original pre-processing number for number (float32 box arithmetic, the 192:256 aspect
enlargement, the anti-aliasing blur with scipy's Gaussian in 'nearest' mode, OpenCV's bilinear
affine warp with a zero border, uint8 rounding of unblurred crops, mirroring of left hands), with
one change that does not alter any crop pixel: the blur and the mirroring are applied only to the
window of the image the crop reads from (plus the blur's reach), not to the whole image.

Pixel coordinates are (column, row) with the centre of the top-left pixel at (0, 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter

BLUR_TRUNCATE = 4.0  # Gaussian support in sigmas, as in scipy / scikit-image
BLUR_THRESHOLD = 1.1  # blur when the crop is downsampled by more than 2 x 1.1


@dataclass(frozen=True)
class CropBox:
    """The square image region a crop is cut from (unmirrored image pixels)."""

    center: np.ndarray  # (2,) float32, box centre (column, row)
    size: np.float32  # side of the square region, pixels (float32 as the original computes it)
    is_right: bool

    @property
    def blur_sigma(self) -> float:
        """Sigma (pixels) of the anti-aliasing blur, 0 when none (float32 arithmetic)."""
        factor = self.size * np.float32(1.0) / np.float32(256) / np.float32(2.0)
        return float((factor - np.float32(1)) / np.float32(2)) if factor > BLUR_THRESHOLD else 0.0

    def xyxy(self) -> np.ndarray:
        """The square region as (x0, y0, x1, y1), float64."""
        c = self.center.astype(np.float64)
        h = float(self.size) / 2.0
        return np.array([c[0] - h, c[1] - h, c[0] + h, c[1] + h])


def crop_boxes(boxes_xyxy: np.ndarray, is_right: np.ndarray, rescale_factor: float = 2.0,
               bbox_shape: tuple[int, int] = (192, 256)) -> list[CropBox]:
    """Square crop regions for hand boxes (N, 4) in pixels: the box extent times
    ``rescale_factor``, its short side enlarged to the aspect ``bbox_shape`` = (width, height),
    then the longer side. All in float32 like the original."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    centers = (boxes[:, 2:4] + boxes[:, 0:2]) / 2.0
    # The original keeps the extent in units of 200 px and multiplies back; float32 rounding of
    # that detour is what the camera formulas then see.
    extents = (rescale_factor * (boxes[:, 2:4] - boxes[:, 0:2]) / 200.0).astype(np.float32) * np.float32(200)
    w_t, h_t = bbox_shape
    out = []
    for center, (w, h), right in zip(centers, extents, np.asarray(is_right).reshape(-1)):
        if h / w < h_t / w_t:
            w_new, h_new = w, max(w * np.float32(h_t) / np.float32(w_t), h)
        else:
            w_new, h_new = max(h * np.float32(w_t) / np.float32(h_t), w), h
        out.append(CropBox(center=center.copy(), size=np.float32(max(w_new, h_new)), is_right=bool(right)))
    return out


def _affine(cx: np.float32, cy: np.float32, size: np.float32, out_size: int) -> np.ndarray:
    """2x3 float32 matrix mapping the square of side ``size`` centred at (cx, cy) onto the output
    square, built like the original (three float32 point pairs through getAffineTransform)."""
    center = np.array([cx, cy], dtype=np.float64)
    half = np.float32(size) * np.float32(0.5)
    src = np.zeros((3, 2), dtype=np.float32)
    src[0] = center
    src[1] = center + np.array([0, half], dtype=np.float32)
    src[2] = center + np.array([half, 0], dtype=np.float32)
    o = np.float32(out_size * 0.5)
    dst = np.array([[o, o], [o, 2 * o], [2 * o, o]], dtype=np.float32)
    return cv2.getAffineTransform(src, dst).astype(np.float32)


def crop_image(image_bgr: np.ndarray, box: CropBox, out_size: int = 256) -> np.ndarray:
    """The (out_size, out_size, 3) RGB float32 crop (0..255 values) for one box; mirrored for left
    hands. Unblurred crops hold integers (the warp runs on uint8), blurred ones do not."""
    h_img, w_img = image_bgr.shape[:2]
    cx, cy = box.center[0], box.center[1]
    if not box.is_right:
        cx = np.float32(w_img - cx - 1)  # centre in the mirrored image
    M = _affine(cx, cy, box.size, out_size).astype(np.float64)
    sigma = box.blur_sigma
    # Source window in the (possibly mirrored) image: the crop square, one pixel for the bilinear
    # footprint, and the blur's kernel radius, so that windowed blurring equals whole-image blurring.
    reach = 2 + (int(BLUR_TRUNCATE * sigma + 0.5) if sigma > 0 else 0)
    half = float(box.size) / 2.0
    x0 = max(int(np.floor(cx - half)) - reach, 0)
    x1 = min(int(np.ceil(cx + half)) + reach + 1, w_img)
    y0 = max(int(np.floor(cy - half)) - reach, 0)
    y1 = min(int(np.ceil(cy + half)) + reach + 1, h_img)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((out_size, out_size, 3), dtype=np.float32)
    if box.is_right:
        window = image_bgr[y0:y1, x0:x1]
    else:
        window = image_bgr[y0:y1, w_img - x1 : w_img - x0][:, ::-1]
    window = window.astype(np.float64)
    if sigma > 0:
        window = gaussian_filter(window, sigma=(sigma, sigma, 0), mode="nearest", truncate=BLUR_TRUNCATE)
    M[:, 2] += M[:, :2] @ np.array([x0, y0], dtype=np.float64)
    # The warp runs on float64 in every case: OpenCV's float bilinear path samples at 1/32-pixel
    # positions in all versions, whereas its uint8 path changed between 4.x and 5.x. An unblurred
    # crop is then rounded half up, which is exactly what 4.x's 15-bit fixed-point uint8 warp gives
    # (the bilinear weights are multiples of 1/1024, so the float sum is exact).
    patch = cv2.warpAffine(np.ascontiguousarray(window), M, (out_size, out_size), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if sigma == 0:
        patch = np.floor(patch + 0.5)
    return patch[:, :, ::-1].astype(np.float32)


def normalize_crops(crops_rgb: list[np.ndarray] | np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(N, H, W, 3) RGB 0..255 -> (N, 3, H, W) float32 ``(v - 255 mean) / (255 std)``, computed in
    float64 and rounded once, as the original does."""
    x = np.asarray(crops_rgb, dtype=np.float32).transpose(0, 3, 1, 2).astype(np.float64)
    m = 255.0 * np.asarray(mean, dtype=np.float64).reshape(1, 3, 1, 1)
    s = 255.0 * np.asarray(std, dtype=np.float64).reshape(1, 3, 1, 1)
    return ((x - m) / s).astype(np.float32)
