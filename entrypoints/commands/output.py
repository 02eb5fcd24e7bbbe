"""Plain terminal output: colour and a progress bar on a terminal, clean text when piped."""

from __future__ import annotations

import os
import time
from typing import TextIO

from vimbiso_state.services.operations.server_checks import Verdict

_COLOURS = {Verdict.OK: "32", Verdict.WARN: "33", Verdict.FAIL: "31;1"}


def interactive(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def colour_enabled(stream: TextIO) -> bool:
    return interactive(stream) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def verdict_label(verdict: Verdict, stream: TextIO, *, upper: bool = False) -> str:
    """``ok  ``, ``warn``, ``FAIL`` (or ``OK``, ``WARN``): coloured on a terminal."""
    upper = upper or verdict is Verdict.FAIL
    text = (verdict.value.upper() if upper else verdict.value).ljust(4)
    if colour_enabled(stream):
        return f"\033[{_COLOURS[verdict]}m{text}\033[0m"
    return text


class ProgressBar:
    """``scanning [#######-------] 45% 12,345/27,431 keys`` redrawn in place, on a terminal only.

    Piped or redirected output gets nothing, so logs and tests see clean text.
    """

    def __init__(
        self, stream: TextIO, label: str, *, enabled: bool | None = None, width: int = 30
    ) -> None:
        self._stream = stream
        self._label = label
        self._enabled = interactive(stream) if enabled is None else enabled
        self._width = width
        self._drawn = 0
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return  # at most ten redraws a second
        self._last = now
        ratio = done / total if total else 1.0
        filled = int(self._width * ratio)
        bar = "#" * filled + "-" * (self._width - filled)
        text = f"{self._label} [{bar}] {ratio:4.0%} {done:,}/{total:,} keys"
        self._stream.write("\r" + text.ljust(self._drawn))
        self._stream.flush()
        self._drawn = len(text)

    def close(self) -> None:
        """Erase the bar so that the report starts on a clean line."""
        if self._drawn:
            self._stream.write("\r" + " " * self._drawn + "\r")
            self._stream.flush()
            self._drawn = 0
