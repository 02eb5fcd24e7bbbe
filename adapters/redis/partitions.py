"""The expiry index's partitions: one key on a single Redis, one key per hash slot on a
Redis Cluster, so that a commit updates its user's entries in the same script (the user's
keys and the partition share a slot) and a consumer finds every due entry by looking at each
partition once.

A partition's key is ``expiry:{<tag>}`` with a tag that hashes to its slot: the shortest
strings of letters and digits, found once per process (a few hundred milliseconds, only on a
cluster) by walking CRC16 (XMODEM, as Redis computes slots) over three-character strings.
"""

from __future__ import annotations

import string
from functools import cache
from typing import Any

SLOTS = 16384
SINGLE = "expiry:{0}"  # a single Redis: one partition
_ALPHABET = (string.ascii_letters + string.digits).encode()


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_TABLE = _crc_table()


def _step(crc: int, byte: int) -> int:
    return ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]


def crc16(data: bytes) -> int:
    """CRC16-XMODEM, as Redis Cluster hashes a key's tag."""
    crc = 0
    for byte in data:
        crc = _step(crc, byte)
    return crc


@cache
def slot_tags() -> tuple[str, ...]:
    """For each hash slot, a short tag that hashes to it."""
    tags: list[str | None] = [None] * SLOTS
    missing = SLOTS
    for length in (1, 2, 3):
        for first in _prefixes(length - 1):
            base = crc16(first)
            for byte in _ALPHABET:
                slot = _step(base, byte) % SLOTS
                if tags[slot] is None:
                    tags[slot] = (first + bytes([byte])).decode()
                    missing -= 1
        if not missing:
            break
    assert missing == 0, "three characters of letters and digits reach every slot"
    return tuple(tag for tag in tags if tag is not None)


def _prefixes(length: int) -> list[bytes]:
    prefixes = [b""]
    for _ in range(length):
        prefixes = [prefix + bytes([byte]) for prefix in prefixes for byte in _ALPHABET]
    return prefixes


def partition_of(digits: str, cluster: bool) -> str:
    """The index partition a user's entries live in: the user's own hash slot's."""
    if not cluster:
        return SINGLE
    return f"expiry:{{{slot_tags()[crc16(digits.encode()) % SLOTS]}}}"


def partitions(cluster: bool) -> list[str]:
    """Every partition, each a key of its own slot."""
    if not cluster:
        return [SINGLE]
    return [f"expiry:{{{tag}}}" for tag in slot_tags()]


class PartitionGroups:
    """The partitions grouped by the server that holds them, so that one script a server
    claims from all of them; found from the client's slot map, and found again after it
    moved (``forget``). On a single Redis, one group: the one partition."""

    def __init__(self, cluster: bool) -> None:
        self._cluster = cluster
        self._groups: list[tuple[Any, list[str]]] | None = None
        self._turn = 0

    def groups(self, client: Any) -> list[tuple[Any, list[str]]]:
        if not self._cluster:
            return [(None, [SINGLE])]
        if self._groups is None:
            by_node: dict[str, tuple[Any, list[str]]] = {}
            for key in partitions(True):
                node = client.get_node_from_key(key)
                by_node.setdefault(node.name, (node, []))[1].append(key)
            self._groups = list(by_node.values())
        return self._groups

    def in_turn(self, client: Any) -> list[tuple[Any, list[str]]]:
        """The groups, from the next server on each call: with a backlog larger than a poll's
        limit, no server's events keep waiting behind another's."""
        groups = self.groups(client)
        self._turn = (self._turn + 1) % len(groups)
        return groups[self._turn :] + groups[: self._turn]

    def forget(self) -> None:
        self._groups = None
