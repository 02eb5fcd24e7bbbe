"""One node against three masters (issue 6): realistic messages on distinct users with 1, 8
and 32 threads of one process, on a private redis-server and a private local cluster with the
same flags, measured in alternation and the medians shown.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack

import harness  # first: it puts tests/ on the path
import redis
from cryptography.fernet import Fernet
from realistic import Messages, log_in
from redis_cluster import LocalCluster
from redis_servers import RedisProcess
from timing import table

from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container

THREADS = (1, 8, 32)


def threaded_rate(jobs: list[Callable[[], object]], seconds: float) -> float:
    """Messages a second of one thread per job, sharing the container's connection pool."""
    stop = threading.Event()
    ready = threading.Barrier(len(jobs) + 1)
    counts = [0] * len(jobs)

    def work(i: int, job: Callable[[], object]) -> None:
        for _ in range(10):
            job()
        ready.wait()
        while not stop.is_set():
            job()
            counts[i] += 1

    threads = [threading.Thread(target=work, args=(i, j)) for i, j in enumerate(jobs)]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    total, elapsed = sum(counts), time.perf_counter() - started
    for thread in threads:
        thread.join()
    return total / elapsed


def cluster_scaling(seconds: float, rounds: int = 3) -> None:
    key = Fernet.generate_key().decode()
    results: dict[str, dict[int, list[float]]] = {"redis": {}, "redis-cluster": {}}
    users = harness.Users().take(max(THREADS) * 2)
    with ExitStack() as stack:
        single = stack.enter_context(RedisProcess())
        cluster = stack.enter_context(LocalCluster(masters=3))
        jobs: dict[str, list[Messages]] = {}
        for n, (backend, url) in enumerate((("redis", single.url), ("redis-cluster", cluster.url))):
            container = Container.from_settings(
                Settings(backend=backend, redis_url=url, token_keys=(key,))
            )
            stack.callback(container.close)
            state = container.state_service()
            phones = users[n * max(THREADS) : (n + 1) * max(THREADS)]
            for phone in phones:
                log_in(state, phone)
            jobs[backend] = [Messages(state, [phone]) for phone in phones]
        for threads in THREADS:
            for _ in range(rounds):
                for backend, messages in jobs.items():
                    rate = threaded_rate([m.one for m in messages[:threads]], seconds)
                    results[backend].setdefault(threads, []).append(rate)
        client = redis.RedisCluster.from_url(cluster.url)
        owners = Counter(
            client.get_node_from_key("{" + harness.digits(m.phones[0]) + "}").name
            for m in jobs["redis-cluster"]
        )
        client.close()
    spread = "/".join(str(count) for _, count in owners.most_common())
    print(
        f"redis-py {redis.__version__}, Python {sys.version.split()[0]}; realistic messages on "
        f"distinct users (the 32 sit {spread} on the three masters); {seconds:g} s per cell, "
        f"median of {rounds} alternated rounds; one client process, one shared pool"
    )
    rows = []
    for threads in THREADS:
        one = statistics.median(results["redis"][threads])
        three = statistics.median(results["redis-cluster"][threads])
        rows.append([str(threads), f"{one:,.0f}", f"{three:,.0f}", f"{three / one:.2f}x"])
    print(table(["threads", "1 node msg/s", "3 masters msg/s", "3 masters / 1 node"], rows))
