"""Running verbs in-process from tests."""

from __future__ import annotations

from omnimocap.apps.cli import main


def one_line_error(capsys, argv: list[str]) -> str:
    """Run a verb that must fail as a user error: exit code 2 and exactly one non-empty line on
    stderr, which is returned."""
    capsys.readouterr()
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]
