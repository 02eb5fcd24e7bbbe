"""Server instructions a workload costs: a private redis-server under valgrind's callgrind,
zeroed before the workload and dumped after it (callgrind_control), its idle cron subtracted.

Instructions do not drift with the machine's load the way times do: the same workload gives
the same count to a percent, so they are the steady measure of the server's side.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import harness  # noqa: F401  (puts tests/ on the path, for the private redis-server)
from redis_servers import RedisProcess

START_TIMEOUT = 120.0  # redis-server starts ten to a hundred times slower under valgrind


def available() -> bool:
    return all(shutil.which(tool) for tool in ("valgrind", "callgrind_control"))


class CallgrindRedis(RedisProcess):
    """A private redis-server (the seed's flags) run by ``valgrind --tool=callgrind``; its
    dumps go to ``dumps`` (its own directory by default)."""

    def __init__(self, dumps: Path | None = None) -> None:
        super().__init__()
        self.dumps = dumps or self.dir
        self.dumps.mkdir(parents=True, exist_ok=True)
        self._dumped = 0

    def command_line(self) -> list[str]:
        out = self.dumps / f"callgrind.out.{self.port}"
        return [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            *super().command_line(),
        ]

    def start(self, timeout: float = START_TIMEOUT) -> None:
        super().start(timeout)

    def _control(self, option: str) -> None:
        if self.proc is None:
            raise RuntimeError("the callgrind server is not running")
        done = subprocess.run(
            ["callgrind_control", option, str(self.proc.pid)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode:
            raise RuntimeError(f"callgrind_control {option}: {done.stdout}{done.stderr}")

    def zero(self) -> None:
        self._control("-z")

    def dump(self) -> tuple[int, Path]:
        """Dump the counters; the instructions counted since the last zero, and the file."""
        self._control("-d")
        self._dumped += 1
        path = self.dumps / f"callgrind.out.{self.port}.{self._dumped}"
        for _ in range(100):  # the server writes the file in its own time
            if path.exists() and "totals:" in path.read_text(errors="replace"):
                break
            time.sleep(0.05)
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                return int(line.split()[1]), path
        raise RuntimeError(f"no totals in {path}")

    def idle_per_second(self, seconds: float = 1.0) -> float:
        """What the server runs by itself (its cron), per second."""
        self.zero()
        time.sleep(seconds)
        count, _ = self.dump()
        return count / seconds

    def count(self, workload: Callable[[], object], idle: float) -> tuple[int, Path]:
        """Instructions ``workload`` cost the server, less the idle cron meanwhile."""
        self.zero()
        started = time.perf_counter()
        workload()
        elapsed = time.perf_counter() - started
        total, path = self.dump()
        return max(0, round(total - idle * elapsed)), path
