"""What ``state.health()`` reports about a live store: plain facts, no I/O."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# health() answers or raises StateUnavailable within this many seconds, whatever the
# configured timeouts: a load balancer's probe must not hang on a hung server.
HEALTH_DEADLINE = 2.0


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """Facts about a store that can serve. Fields of the other backend are None.

    On a cluster, every primary was checked: the lowest version, the policies found, the
    summed memory (``maxmemory`` 0 when any primary is unbounded) and the slowest latency.
    """

    backend: str  # memory, redis or redis-cluster
    users: int | None = None  # memory: users held by this process's store
    servers: int | None = None  # Redis: servers checked (a cluster: its primaries)
    server_version: str | None = None
    maxmemory_policy: str | None = None
    used_memory: int | None = None  # bytes
    maxmemory: int | None = None  # bytes; 0: no limit
    # Whether the policy lets Redis drop the library's keys when memory is full (every key
    # it writes has a TTL, so volatile-* policies evict them too): only noeviction does not.
    evicts_state: bool | None = None
    latency_ms: float | None = None  # one PING's round trip

    def as_dict(self) -> dict[str, object]:
        """The facts as JSON-ready values (a health endpoint's body)."""
        return asdict(self)
