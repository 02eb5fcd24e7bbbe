"""What an operator must see when the command line fails, for the CLI tests of both suites."""

from __future__ import annotations


def one_error_line(err: str) -> str:
    """The one line of stderr a failed command prints; no traceback, the program's name first."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("vimbiso-state: ")
    return lines[0]
