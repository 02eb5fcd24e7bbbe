"""A local Redis Cluster for the tests and the benchmark: private redis-server processes on
free ports, each in its own temporary directory, joined by `redis-cli --cluster create`.

Like redis_servers.py, nothing here imports the library under test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from types import TracebackType
from typing import Any, Self

import redis
from redis_servers import RedisProcess, find_redis_server, free_port

# The cluster flags of the issue; a short node timeout keeps an unplanned failover quick.
CLUSTER_FLAGS: tuple[str, ...] = (
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "2000",
    "--appendonly",
    "yes",
    # A replica's first sync otherwise waits 5 s for more replicas to share the transfer.
    "--repl-diskless-sync-delay",
    "0",
    # CLUSTER SLOTS lists a replica only once its replication offset has moved, which on an
    # idle master happens at each replication ping (every 10 s by default).
    "--repl-ping-replica-period",
    "1",
)
READY_TIMEOUT = 30.0  # seconds for the slots to be assigned and every node to agree


def find_redis_cli(server: str | None = None) -> str | None:
    """Path of redis-cli: $REDIS_CLI, next to redis-server, then PATH."""
    explicit = os.environ.get("REDIS_CLI")
    if explicit and os.access(explicit, os.X_OK):
        return explicit
    server = server or find_redis_server()
    if server:
        beside = os.path.join(os.path.dirname(server), "redis-cli")
        if os.access(beside, os.X_OK):
            return beside
    return shutil.which("redis-cli")


class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each, on 127.0.0.1.

    ``url`` is the address of one node (a client discovers the rest from it); ``nodes`` are
    the RedisProcess objects, which can be stopped, killed or restarted one by one.
    """

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 0,
        *,
        executable: str | None = None,
        cli: str | None = None,
    ) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least three masters")
        self.executable = executable or find_redis_server()
        if self.executable is None:
            raise FileNotFoundError("redis-server not found (PATH, /usr/bin, /usr/local/bin)")
        found_cli = cli or find_redis_cli(self.executable)
        if found_cli is None:
            raise FileNotFoundError("redis-cli not found (needed for --cluster create)")
        self.cli: str = found_cli
        self.masters = masters
        self.replicas = replicas
        self.nodes: list[RedisProcess] = []

    @property
    def url(self) -> str:
        """The address of a running node: enough for a client to find all of them."""
        return next(node.url for node in self.nodes if node.running)

    def start(self) -> None:
        for _ in range(self.masters * (1 + self.replicas)):
            # The bus port defaults to port + 10000, which may be taken or past 65535: pick it.
            bus = ("--cluster-port", str(free_port()))
            node = RedisProcess(extra_args=(*CLUSTER_FLAGS, *bus), executable=self.executable)
            self.nodes.append(node)
            node.start()
        command = [
            self.cli,
            "--cluster",
            "create",
            *(f"127.0.0.1:{node.port}" for node in self.nodes),
            "--cluster-replicas",
            str(self.replicas),
            "--cluster-yes",
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        self.wait_ready()

    def client(self, node: RedisProcess, **kwargs: Any) -> redis.Redis:
        """A plain client of one node (no redirections followed): for CLUSTER and INFO."""
        kwargs.setdefault("decode_responses", True)
        return node.client(**kwargs)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until every node says cluster_state:ok, sees every node, agrees on the slot map,
        and every replica has finished its initial sync."""
        deadline = time.monotonic() + timeout
        problem = "not checked"
        while time.monotonic() < deadline:
            problem = self._not_ready()
            if not problem:
                return
            time.sleep(0.05)
        raise RuntimeError(f"the cluster did not become ready within {timeout:.0f}s: {problem}")

    def _not_ready(self) -> str:
        maps = set()
        for node in self.nodes:
            with self.client(node, socket_timeout=2) as client:
                try:
                    info = client.cluster("info")
                    known = client.cluster("nodes")
                    maps.add(self._slot_map(client))
                    replication = client.info("replication")
                except redis.RedisError as exc:
                    return f"node {node.port}: {exc!r}"
            if info["cluster_state"] != "ok":
                return f"node {node.port}: cluster_state {info['cluster_state']}"
            if len(known) != len(self.nodes):
                return f"node {node.port} knows {len(known)} of {len(self.nodes)} nodes"
            if replication["role"] == "slave" and (
                replication["master_link_status"] != "up"
                or int(replication.get("master_sync_in_progress", 0))
            ):
                return f"replica {node.port} has not finished its sync"
        if len(maps) != 1:
            return "the nodes do not agree on the slot map yet"
        (slot_map,) = maps
        if len({master for _, _, master, _ in slot_map}) != self.masters:
            return f"not {self.masters} masters in the slot map yet"
        if any(len(replicas) != self.replicas for *_, replicas in slot_map):
            return f"not {self.replicas} replica(s) per master in the slot map yet"
        return ""

    @staticmethod
    def _slot_map(client: redis.Redis) -> tuple[tuple[int, int, str, tuple[str, ...]], ...]:
        """(first slot, last slot, master host:port, replica ports) for each range."""
        shards = client.execute_command("CLUSTER", "SLOTS")
        return tuple(
            sorted(
                (
                    int(shard[0]),
                    int(shard[1]),
                    f"{shard[2][0]}:{shard[2][1]}",
                    tuple(sorted(str(replica[1]) for replica in shard[3:])),
                )
                for shard in shards
            )
        )

    def node_of_port(self, port: int) -> RedisProcess:
        return next(node for node in self.nodes if node.port == port)

    def master_of_slot(self, slot: int) -> RedisProcess:
        """The node that owns ``slot`` now, according to the first node that answers."""
        for node in self.nodes:
            if not node.running:
                continue
            with self.client(node, socket_timeout=2) as client:
                for start, end, master, _ in self._slot_map(client):
                    if start <= slot <= end:
                        return self.node_of_port(int(master.rsplit(":", 1)[1]))
        raise LookupError(f"no node owns slot {slot}")

    def slots_of(self, master: RedisProcess) -> set[int]:
        """The slots ``master`` owns, according to itself."""
        with self.client(master, socket_timeout=2) as client:
            return {
                slot
                for start, end, owner, _ in self._slot_map(client)
                if owner == f"127.0.0.1:{master.port}"
                for slot in range(start, end + 1)
            }

    def replicas_of(self, master: RedisProcess) -> list[RedisProcess]:
        """The replicas of ``master``, according to itself."""
        with self.client(master, socket_timeout=2) as client:
            ports = {
                port
                for _, _, owner, replicas in self._slot_map(client)
                if owner == f"127.0.0.1:{master.port}"
                for port in replicas
            }
        return [self.node_of_port(int(port)) for port in sorted(ports)]

    def role(self, node: RedisProcess) -> str:
        with self.client(node, socket_timeout=2) as client:
            return str(client.info("replication")["role"])

    def close(self) -> None:
        for node in self.nodes:  # SIGTERM to all first: they write their AOF in parallel
            if node.proc is not None and node.running:
                node.proc.terminate()
        for node in self.nodes:
            node.close()
        self.nodes.clear()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        ports = ", ".join(str(node.port) for node in self.nodes)
        return f"LocalCluster(masters={self.masters}, replicas={self.replicas}, ports=[{ports}])"
