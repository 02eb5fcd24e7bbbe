"""What the Redis server spends on a workload: INFO commandstats and INFO cpu around it.

commandstats counts every command the server executes, the ones a Lua script calls included
(``lua_counts_nested`` checks that on the server at hand), and a script's own usec include
the time of the commands it calls. So the server time of a workload is the usec of the
commands its clients sent (every name seen on the wire, each command of a pipeline included),
and the other commands in the table are the scripts' nested calls, shown for what they are,
not added again.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import harness  # noqa: F401  (puts tests/ on the path, for the wire log)
import redis
import redis.asyncio.connection
from aof import commands as resp_commands
from wire_log import every_send, wire

# The benchmark's own probes, never part of a workload.
OWN_COMMANDS = frozenset({"info", "config|resetstat", "config|get", "ping", "hello", "client"})


def command_stats(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """Calls and usec of every command the server has run since its last CONFIG RESETSTAT."""
    stats: dict[str, Any] = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): (int(value["calls"]), int(value["usec"]))
        for name, value in stats.items()
    }


def main_thread_cpu(client: redis.Redis) -> float:
    """CPU seconds of the server's main thread (where commands run), user and system; the
    whole process's on a server that does not report its main thread."""
    cpu: dict[str, Any] = client.info("cpu")
    if "used_cpu_user_main_thread" in cpu:
        return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def process_cpu(client: redis.Redis) -> float:
    """CPU seconds of the whole server process (INFO cpu used_cpu_sys + used_cpu_user): its
    background threads (the AOF's fsync) included."""
    cpu: dict[str, Any] = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


@dataclass(frozen=True)
class ServerCost:
    """What the server spent on ``messages`` messages."""

    messages: int
    commands: dict[str, tuple[int, int]]  # calls and usec during the workload
    sent: Counter[str]  # commands the clients sent, one per round trip (first of a pipeline)
    cpu_seconds: float  # the main thread's CPU, network and parsing included
    process_cpu_seconds: float = 0.0  # the whole process's (used_cpu_sys + used_cpu_user)
    names: frozenset[str] = frozenset()  # every command the clients sent, pipelines' included

    @property
    def top_level(self) -> set[str]:
        return set(self.names) or {name.lower() for name in self.sent}

    @property
    def usec_per_message(self) -> float:
        """commandstats usec of the commands sent, per message (the issue's target)."""
        usec = sum(u for name, (_, u) in self.commands.items() if name in self.top_level)
        return usec / self.messages

    @property
    def cpu_us_per_message(self) -> float:
        return self.cpu_seconds * 1e6 / self.messages

    @property
    def process_cpu_us_per_message(self) -> float:
        return self.process_cpu_seconds * 1e6 / self.messages

    def usec_per_call(self) -> dict[str, tuple[float, float]]:
        """Calls per message and usec per call of each command the clients sent."""
        return {
            name: (calls / self.messages, usec / calls)
            for name, (calls, usec) in self.commands.items()
            if name in self.top_level and calls
        }

    def calls_per_message(self, nested: bool) -> dict[str, float]:
        """Calls per message of the commands sent (nested False) or of the commands that
        scripts called (nested True), most called first."""
        chosen = {
            name: calls / self.messages
            for name, (calls, _) in self.commands.items()
            if (name not in self.top_level) == nested and calls
        }
        return dict(sorted(chosen.items(), key=lambda item: (-item[1], item[0])))

    def describe_calls(self, nested: bool) -> str:
        calls = self.calls_per_message(nested)
        return ", ".join(f"{name} {count:g}" for name, count in calls.items()) or "-"


def measure(
    client: redis.Redis, workload: Callable[[], object], messages: int, reset: bool
) -> ServerCost:
    """Run ``workload`` (``messages`` messages) and read what the server spent on it.

    With ``reset`` the counters start from zero (CONFIG RESETSTAT: only on a server of our
    own); otherwise the difference of two readings is taken, which other clients of a shared
    server would pollute.
    """
    if reset:
        client.config_resetstat()
    before, cpu_before = command_stats(client), main_thread_cpu(client)
    process_before = process_cpu(client)
    with every_command() as names, wire() as sent:
        workload()
    cpu = main_thread_cpu(client) - cpu_before
    process = process_cpu(client) - process_before
    after = command_stats(client)
    commands = {}
    for name, (calls, usec) in after.items():
        old_calls, old_usec = before.get(name, (0, 0))
        if name not in OWN_COMMANDS and calls > old_calls:
            commands[name] = (calls - old_calls, usec - old_usec)
    return ServerCost(messages, commands, Counter(sent), cpu, process, frozenset(names))


@contextmanager
def every_command() -> Iterator[set[str]]:
    """The name (lower case) of every command sent, sync or asyncio: all of a pipeline's,
    where the wire log names only the first of each send."""
    names: set[str] = set()

    def record(command: Any) -> None:
        if isinstance(command, str):
            command = command.encode()
        data = command if isinstance(command, bytes) else b"".join(bytes(c) for c in command)
        names.update(name.lower() for name, _ in resp_commands(data))

    with every_send(record):
        yield names


def lua_counts_nested(client: redis.Redis, key: str) -> str:
    """Check, on this server, that commandstats counts the commands a script calls and that
    the script's usec include theirs; a sentence saying what was found."""
    script = "for i = 1, 50 do redis.call('SET', KEYS[1], i) end return redis.call('GET', KEYS[1])"
    client.config_resetstat()
    client.eval(script, 1, key)
    stats = command_stats(client)
    client.delete(key)
    eval_usec = stats.get("eval", (0, 0))[1]
    set_calls, set_usec = stats.get("set", (0, 0))
    get_calls = stats.get("get", (0, 0))[0]
    counted = set_calls == 50 and get_calls == 1
    return (
        f"commandstats check: one EVAL calling SET 50 times and GET once gave set calls "
        f"{set_calls}, get calls {get_calls} (nested commands {'ARE' if counted else 'are NOT'} "
        f"counted); eval {eval_usec} usec against set {set_usec} usec (a script's usec "
        f"{'include' if eval_usec >= set_usec else 'do not include'} its nested calls)"
    )


def script_overheads(client: redis.Redis, key: str, calls: int = 2000) -> str:
    """What a script call and each command it calls cost this server by themselves
    (commandstats usec per call): a sentence, for reading the per-message figures."""

    def usec_per_call(script: str, *keys: str) -> tuple[float, float]:
        sha = client.script_load(script)
        client.config_resetstat()
        for _ in range(calls):
            client.evalsha(sha, len(keys), *keys)
        stats = command_stats(client)
        evalsha_calls, evalsha_usec = stats["evalsha"]
        get_calls, get_usec = stats.get("get", (0, 1))
        return evalsha_usec / evalsha_calls, get_usec / max(get_calls, 1)

    empty, _ = usec_per_call("return 1")
    one, get = usec_per_call("return redis.call('GET', KEYS[1])", key)
    ten, _ = usec_per_call("for i = 1, 10 do redis.call('GET', KEYS[1]) end return 1", key)
    nine_keys, _ = usec_per_call("return 1", *[f"{key}:{i}" for i in range(9)])
    return (
        f"script costs on this server (commandstats usec a call): EVALSHA of 'return 1' "
        f"{empty:.1f}, with 9 keys {nine_keys:.1f}; one GET inside {one:.1f}, ten GETs inside "
        f"{ten:.1f}, so about {(ten - one) / 9:.1f} a nested call (GET itself {get:.1f})"
    )


def script_durations(
    client: redis.Redis, workload: Callable[[], object]
) -> list[tuple[str, float]]:
    """The median duration (usec) of each script ``workload`` calls, by the order of their
    first call, from SLOWLOG with every command logged (a pass of its own: logging costs
    the server time of its own). The threshold is restored afterwards."""
    threshold = client.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"]
    length = client.config_get("slowlog-max-len")["slowlog-max-len"]
    client.config_set("slowlog-max-len", 100_000)
    client.config_set("slowlog-log-slower-than", 0)
    client.slowlog_reset()
    try:
        workload()
        entries = client.slowlog_get(100_000)
    finally:
        client.config_set("slowlog-log-slower-than", threshold)
        client.config_set("slowlog-max-len", length)
    durations: dict[str, list[float]] = {}
    for entry in reversed(entries):  # oldest first
        words = _text(entry["command"]).split()
        if len(words) > 1 and words[0].upper() in ("EVALSHA", "EVAL"):
            durations.setdefault(words[1][:8], []).append(float(entry["duration"]))
    return [(sha, statistics.median(found)) for sha, found in durations.items()]


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
