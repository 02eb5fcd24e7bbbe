"""What a workload appends to the AOF, from INFO persistence, and which commands the appended
bytes are (read back from the server's incremental AOF file, so a server of our own only).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis


def appended_since_rewrite(client: redis.Redis) -> int:
    """aof_current_size - aof_base_size: what has been appended since the last rewrite."""
    info: dict[str, Any] = client.info("persistence")
    return int(info["aof_current_size"]) - int(info["aof_base_size"])


def rewrite(client: redis.Redis, timeout: float = 60.0) -> None:
    """BGREWRITEAOF, then wait until it has settled: nothing written before counts after."""
    client.bgrewriteaof()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info: dict[str, Any] = client.info("persistence")
        if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
            return
        time.sleep(0.05)
    raise TimeoutError("BGREWRITEAOF did not finish")


def incremental_file(client: redis.Redis) -> Path | None:
    """The file the server appends to now (Redis 7's multi-part AOF), or None when it is not
    readable from here (a remote server, or an older layout)."""
    config = client.config_get("dir")
    folder = Path(str(config.get("dir", "")))
    try:
        name = str(client.config_get("appenddirname").get("appenddirname", ""))
        base = str(client.config_get("appendfilename").get("appendfilename", ""))
        manifest = (folder / name / f"{base}.manifest").read_text()
    except (OSError, redis.ResponseError):
        return None
    current = [line.split()[1] for line in manifest.splitlines() if line.endswith("type i")]
    return folder / name / current[-1] if current else None


def commands(data: bytes) -> list[tuple[str, int]]:
    """(command name, bytes) of each RESP command in an AOF fragment."""
    found: list[tuple[str, int]] = []
    at = 0
    while at < len(data) and data[at : at + 1] == b"*":
        start = at
        end = data.index(b"\r\n", at)
        count = int(data[at + 1 : end])
        at = end + 2
        name = ""
        for i in range(count):
            end = data.index(b"\r\n", at)
            length = int(data[at + 1 : end])
            if i == 0:
                name = data[end + 2 : end + 2 + length].decode(errors="replace").upper()
            at = end + 2 + length + 2
        found.append((name, at - start))
    return found


class AofTally:
    """Reads what was appended to ``path`` after it is made, by command."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.offset = path.stat().st_size if path is not None else 0

    def by_command(self, messages: int) -> dict[str, tuple[float, float]]:
        """Per message: how many of each command were appended, and their bytes."""
        if self.path is None:
            return {}
        time.sleep(0.05)  # the server writes in its event loop, right after the reply
        with self.path.open("rb") as appended:
            appended.seek(self.offset)
            data = appended.read()
        calls: Counter[str] = Counter()
        sizes: Counter[str] = Counter()
        for name, size in commands(data):
            calls[name] += 1
            sizes[name] += size
        return {
            name: (calls[name] / messages, sizes[name] / messages)
            for name, _ in sizes.most_common()
        }
