"""Render a screenshot of the live session window running the simulated rig.

    xvfb-run -a python scripts/gui_screenshots.py            # with the OpenGL 3D view
    QT_QPA_PLATFORM=offscreen python scripts/gui_screenshots.py  # 3D view as a top-down plot

Writes ``docs/images/gui.png`` (or ``--out``): the window after ``--warmup`` seconds of replay,
so every pane holds live data and the live SMPL-X bodies are fitted (their shape after the first
1.5 s). The bodies are skinned to the synthetic SMPL-X model (``sim.synthetic_models``) unless
``--models`` names a models folder with ``smplx/SMPLX_NEUTRAL.npz``. The 3D view uses OpenGL even
where it is rendered in software (``OMNIMOCAP_GL=1`` unless set otherwise). PNG colours are
quantized when the file would be large.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "images" / "gui.png"))
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the simulated loop")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of replay before the capture")
    parser.add_argument("--models", help="models folder whose SMPL-X file skins the bodies (default: the synthetic model)")
    parser.add_argument("--size", default="1600x900", help="window size WxH")
    parser.add_argument("--max-kb", type=int, default=400, help="quantize colours above this PNG size")
    args = parser.parse_args()

    os.environ.setdefault("OMNIMOCAP_GL", "1")
    from PySide6 import QtCore, QtWidgets

    from omnimocap.apps.gui import SessionWindow, apply_theme
    from omnimocap.apps.live import LiveController
    from omnimocap.fusion.live.controller import LiveConfig
    from omnimocap.fusion.pipeline import ProcessConfig

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    apply_theme(app)
    models = args.models
    if models is None:
        from omnimocap.sim.synthetic_models import write_synthetic_smplx

        models = tempfile.mkdtemp(prefix="omnimocap_models_")
        write_synthetic_smplx(Path(models) / "smplx")
    config = LiveConfig(process=ProcessConfig(hands="sim", models=models))
    controller = LiveController.simulated(args.seconds, people=2, pano_width=1280, config=config)
    window = SessionWindow(controller, record_dir="/tmp/omnimocap_recordings")
    width, height = (int(v) for v in args.size.split("x"))
    window.resize(width, height)
    window.show()
    controller.start()
    end = time.perf_counter() + args.warmup
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.005)
    window.refresh()
    app.processEvents()
    image = window.grab().toImage()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(str(out))
    if out.stat().st_size > args.max_kb * 1024:
        _quantize(out)
    print(f"{out}: {image.width()}x{image.height()}, {out.stat().st_size // 1024} KiB, "
          f"3D view: {'OpenGL' if window.scene.uses_opengl else 'top-down fallback'}")
    window.close()
    # Destroy the GL widget while the application still exists; left to interpreter exit, the
    # teardown order of Qt's and Python's objects crashes.
    window.deleteLater()
    app.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
    controller.close()  # removes the simulation
    if args.models is None:
        shutil.rmtree(models, ignore_errors=True)
    return 0


def _quantize(path: Path) -> None:
    """Re-save with a 256-colour palette (the window is mostly flat colours; photos survive it)."""
    import cv2
    import numpy as np

    bgr = cv2.imread(str(path))
    pixels = bgr.reshape(-1, 3).astype(np.float32)
    sample = pixels[np.random.default_rng(0).choice(len(pixels), 20000, replace=False)]
    _, _, centres = cv2.kmeans(sample, 256, None, (cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0), 1, cv2.KMEANS_PP_CENTERS)
    nearest = np.empty(len(pixels), dtype=np.int64)
    for start in range(0, len(pixels), 65536):
        chunk = pixels[start:start + 65536]
        nearest[start:start + 65536] = ((chunk[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
    cv2.imwrite(str(path), centres[nearest].astype(np.uint8).reshape(bgr.shape), [cv2.IMWRITE_PNG_COMPRESSION, 9])


if __name__ == "__main__":
    raise SystemExit(main())
