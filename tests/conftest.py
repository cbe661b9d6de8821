"""Shared test fixtures.

``../shared`` (real sample data and the WiLoR parity fixtures) sits beside the checkout in the
project's CI; a user's clone has none, and the tests that need it skip with a reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OMNIMOCAP_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the calling test when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not present (the sample data and fixtures live in ../shared beside the checkout)")
    return path


@pytest.fixture(scope="module", autouse=True)
def _module_scratch_removed(request, tmp_path_factory):
    """Deletes what a test module's fixtures wrote under the run's temporary folder once the module
    has passed (simulated sessions with Kinect recordings weigh tens of MB each, and a full run
    would otherwise hold gigabytes at its end). A passing test's own ``tmp_path`` is removed by
    pytest itself (``tmp_path_retention_policy = "failed"``); after a failure everything is kept."""
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed == failed:
        for path in set(base.iterdir()) - before:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def shared():
    return shared_path


@pytest.fixture(params=["cpu"] + (["cuda"] if os.environ.get("OMNIMOCAP_TEST_CUDA") else []))
def device(request):
    """Torch device for tests; set OMNIMOCAP_TEST_CUDA=1 to run the same tests on CUDA too."""
    return request.param


@pytest.fixture
def detector_pt(tmp_path, monkeypatch):
    """A YOLOv8 pose model with two classes (left, right) and random weights, built from its YAML and
    saved like detector.pt; network access is made to fail loudly."""
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("the detector tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import PoseModel

    torch.manual_seed(0)
    yolo = YOLO("yolov8n-pose.yaml")
    yolo.model = PoseModel("yolov8n-pose.yaml", nc=2, verbose=False)
    yolo.model.names = {0: "left", 1: "right"}
    path = tmp_path / "detector.pt"
    yolo.save(path)
    return path


@pytest.fixture
def sim_rig(tmp_path):
    """``sim_rig(seconds, **config)``: the simulated rig (``sim/replay.py`` ``simulated_rig``; config as
    there) simulated into this test's folder and replayed on its session clock as fast as it is
    read; its sources are stopped and the simulation deleted after the test."""
    from omnimocap.sim.replay import simulated_rig

    rigs = []

    def make(seconds: float, **config):
        rigs.append(simulated_rig(seconds, tmp_path / f"simulation{len(rigs)}", realtime=False, **config))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.cleanup()


@pytest.fixture(scope="module")
def module_sim_rig(tmp_path_factory):
    """``module_sim_rig(seconds, **config)``: as ``sim_rig``, but simulated once per test module and
    arguments (the same call returns the same rig), for tests that only read the simulation or
    replay it afresh; stopped and deleted after the module."""
    from omnimocap.sim.replay import simulated_rig

    rigs = {}

    def make(seconds: float, **config):
        key = (seconds, tuple(sorted(config.items())))
        if key not in rigs:
            rigs[key] = simulated_rig(seconds, tmp_path_factory.mktemp("simulation"), realtime=False, **config)
        return rigs[key]

    yield make
    for rig in rigs.values():
        rig.cleanup()
