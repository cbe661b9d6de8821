"""`omnimocap simulate --board` from the command line: the board sequence is simulated with the
Kinect recordings it needs, and asking for it without them is one line."""

from __future__ import annotations

from omnimocap.apps.cli import main
from omnimocap.capture.truth import Truth
from tests.tools.cli import one_line_error


def test_simulate_board_from_the_command_line(tmp_path):
    out = tmp_path / "s"
    assert main(["simulate", str(out), "--board", "--seconds", "3.5", "--people", "1", "--kinects", "1",
                 "--pano-width", "256", "--seed", "2"]) == 0
    board = Truth(out).board()
    assert board and list(out.glob("kinect_*.mkv"))


def test_board_without_kinect_video_is_one_line(tmp_path, capsys):
    line = one_line_error(capsys, ["simulate", str(tmp_path / "s"), "--board", "--no-kinect-video", "--seconds", "3.5"])
    assert "--board" in line and "--no-kinect-video" in line
    assert not (tmp_path / "s").exists()
