"""Where `start` spends its time beyond a raw GET (issue 4): the pieces, one added at a time.

    .venv/bin/python bench/hot_path.py [--iterations N] [--rounds R]

Starts its own redis-server with the seed's flags. Each row adds one layer to the one above,
measured in alternation with the others (median of R rounds of N calls), so the differences
between rows are what each layer costs inside the real loop, cold caches included. Then the
server's own time per call, from INFO commandstats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import run as bench  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402
from redis_servers import RedisProcess  # noqa: E402

from vimbiso_state.adapters.redis.store import LOAD, RedisConversationRepository  # noqa: E402
from vimbiso_state.adapters.redis.wire import Wire  # noqa: E402
from vimbiso_state.domain.phone import PhoneNumber  # noqa: E402
from vimbiso_state.services.config import Settings  # noqa: E402
from vimbiso_state.services.container import Container  # noqa: E402


def measure(cases: dict[str, Callable[[], object]], n: int, rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            started = time.perf_counter_ns()
            for _ in range(n):
                case()
            samples[name].append((time.perf_counter_ns() - started) / n / 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with RedisProcess() as server:
        settings = Settings(
            backend="redis", redis_url=server.url, token_keys=(Fernet.generate_key().decode(),)
        )
        container = Container.from_settings(settings)
        state, client = container.state_service(), container.redis_client()
        phone = "+263771234567"
        bench.build_conversation(state, phone)
        repo = container.conversations()
        assert isinstance(repo, RedisConversationRepository)
        number = PhoneNumber.parse(phone)
        keys = repo._keys.for_user(number).conversation
        client.set("raw", b"".join(client.get(k) or b"" for k in keys[:3]))
        wire = Wire(client)
        now = datetime.now(UTC)
        packed = LOAD.evalsha(keys, repo._calls.load_args(now, None, True))
        wire.call(packed)
        client.config_resetstat()
        cases: dict[str, Callable[[], object]] = {
            "raw redis.get of the same bytes": lambda: client.get("raw"),
            "load script, packed in advance, on the lean wire": lambda: wire.call(packed),
            "... and its reply decoded (protocol.loaded)": lambda: repo._calls.loaded(
                wire.call(packed), now
            ),
            "repo.load (fresh time, packing, retry policy)": lambda: repo.load(
                number, datetime.now(UTC)
            ),
            "state.start (phone, flows, expiry rules)": lambda: state.start(phone),
        }
        results = measure(cases, args.iterations, args.rounds)
        base = next(iter(results.values()))
        previous = base
        print(f"{'piece':52} {'us':>8} {'added':>7} {'x GET':>6}")
        for name, value in results.items():
            print(f"{name:52} {value:8.1f} {value - previous:+7.1f} {value / base:6.2f}")
            previous = value
        stats = client.info("commandstats")
        print()
        for command in ("get", "evalsha", "setrange"):
            entry = stats.get(f"cmdstat_{command}")
            if entry:
                print(f"server time per {command.upper():8} {entry['usec_per_call']:6.2f} us")
        # The write side: updates right after one another skip their read (RecentValues), so
        # every EVALSHA here is save.lua; against a plain SET of the same bytes.
        update = bench.select_account(state, phone)
        raw = client.get("raw") or b""
        documents = repo._keys.documents(number)
        for label, call, command in (
            ("save.lua", update, "evalsha"),
            ("SET PX", lambda: client.set("raw", raw, px=300_000), "set"),
            # The read before a write this process has not just read: MGET, not load.lua.
            ("MGET", lambda: repo._read(documents), "mget"),
        ):
            call()
            client.config_resetstat()
            for _ in range(args.iterations):
                call()
            entry = client.info("commandstats")[f"cmdstat_{command}"]
            print(f"server time per {label:8} {entry['usec_per_call']:6.2f} us")
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
