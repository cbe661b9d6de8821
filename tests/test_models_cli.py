"""``omnimocap models``: download with resume and checksums (local server), status, verify."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading

import numpy as np
import pytest

from omnimocap.hands import model_store
from omnimocap.apps.cli import main
from omnimocap.errors import ModelFilesMissing

PAYLOAD = {"wilor_final.ckpt": bytes(range(256)) * 300, "detector.pt": b"detector-bytes" * 100,
           "yolo11n-pose.pt": b"pose-bytes" * 100}


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    requests: list[tuple[str, str | None]] = []

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        rng = self.headers.get("Range")
        type(self).requests.append((name, rng))
        if name not in PAYLOAD or "/missing/" in self.path:
            self.send_error(404)
            return
        data = PAYLOAD[name]
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _RangeHandler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/pretrained_models"
    httpd.shutdown()
    httpd.server_close()


def test_download_resumes_and_records_checksums(tmp_path, server, capsys, monkeypatch):
    monkeypatch.setattr(model_store, "POSE_WEIGHTS_URL", f"{server}/ultralytics/yolo11n-pose.pt")
    models = tmp_path / "models"
    part = models / "wilor" / "wilor_final.ckpt.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD["wilor_final.ckpt"][:1000])  # an interrupted earlier download
    rc = main(["models", "download", "--models", str(models), "--base-url", server, "--no-progress"])
    assert rc == 0
    assert ("wilor_final.ckpt", "bytes=1000-") in _RangeHandler.requests
    assert ("detector.pt", None) in _RangeHandler.requests
    assert ("yolo11n-pose.pt", None) in _RangeHandler.requests
    for rel in ("wilor/wilor_final.ckpt", "wilor/detector.pt", "pose/yolo11n-pose.pt"):
        assert (models / rel).read_bytes() == PAYLOAD[rel.rsplit("/", 1)[1]]
    assert not part.exists()
    sums = json.loads((models / "checksums.json").read_text())
    assert sums["wilor/wilor_final.ckpt"] == hashlib.sha256(PAYLOAD["wilor_final.ckpt"]).hexdigest()
    assert sums["wilor/detector.pt"] == hashlib.sha256(PAYLOAD["detector.pt"]).hexdigest()
    assert sums["pose/yolo11n-pose.pt"] == hashlib.sha256(PAYLOAD["yolo11n-pose.pt"]).hexdigest()
    assert (models / "wilor/model_config.yaml").is_file() and (models / "mano/mano_mean_params.npz").is_file()
    assert "mano.is.tue.mpg.de" in capsys.readouterr().out
    # A second run downloads nothing.
    n = len(_RangeHandler.requests)
    assert main(["models", "download", "--models", str(models), "--base-url", server, "--no-progress"]) == 0
    assert len(_RangeHandler.requests) == n


def test_download_error_is_a_user_error(tmp_path, server, capsys):
    rc = main(["models", "download", "--models", str(tmp_path), "--base-url", server + "/missing", "--no-progress"])
    assert rc == 2 and "HTTP 404" in capsys.readouterr().err


def test_status_and_require(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMNIMOCAP_MODELS", str(tmp_path))
    assert model_store.default_models_dir() == tmp_path
    assert main(["models", "status"]) == 1
    out = capsys.readouterr().out
    assert "wilor/wilor_final.ckpt" in out and "MISSING" in out and "smpl-x.is.tue.mpg.de" in out
    with pytest.raises(ModelFilesMissing) as err:
        model_store.require_wilor_files()
    assert str(err.value) in out  # the same line status prints
    for rel in model_store.WILOR_FILES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    paths = model_store.require_wilor_files(tmp_path)
    assert paths["checkpoint"] == tmp_path / "wilor/wilor_final.ckpt"


def test_verify_detects_corruption(tmp_path, capsys):
    models = tmp_path
    (models / "mano").mkdir()
    model_store._copy_package_file("mano_mean_params.npz", models / "mano/mano_mean_params.npz")
    model_store._copy_package_file("wilor_model_config.yaml", models / "wilor/model_config.yaml")
    (models / "wilor/detector.pt").write_bytes(b"not a zip")
    rc = main(["models", "verify", "--models", str(models)])
    out = capsys.readouterr().out
    assert rc == 1
    assert "mano/mano_mean_params.npz: ok" in out and "wilor/model_config.yaml: ok" in out
    assert "wilor/detector.pt: FAILED" in out
    sums = json.loads((models / "checksums.json").read_text())
    assert "mano/mano_mean_params.npz" in sums and "wilor/detector.pt" not in sums
    # A file changed after its checksum was recorded fails on re-hashing.
    mean = dict(np.load(models / "mano/mano_mean_params.npz"))
    mean["cam"] = mean["cam"] + 1
    np.savez(models / "mano/mano_mean_params.npz", **mean)
    main(["models", "verify", "--models", str(models)])
    assert "mano/mano_mean_params.npz: FAILED: " in capsys.readouterr().out
