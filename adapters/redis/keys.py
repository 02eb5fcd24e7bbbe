"""The key schema. Braces are literal: in Redis Cluster they make the phone the hash tag, so
every key of one user lives in one slot and one script can touch them all atomically."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

from vimbiso_state.adapters.redis.partitions import partition_of
from vimbiso_state.domain.phone import PhoneNumber


@dataclass(frozen=True, slots=True)
class UserKeys:
    user: str
    session: str
    form: str
    # The ids of the user's last units of work, each with the fence of its commit.
    handled: str
    token: str
    # The user's effect records (a hash): what guards a payment from running twice.
    effects: str
    # While a unit of work holds the user: its lease, how many wait for it, and the list a
    # waiting one blocks on until the lease ends.
    lease: str
    waiters: str
    wake: str
    # The partition of the expiry index that holds this user's deadlines (partitions.py).
    expiry: str

    @property
    def begin(self) -> list[str]:
        """The keys begin.lua touches, in the order it expects; it reads the parts itself
        only when they are given too (``begin_reading``)."""
        return [self.handled, self.lease, self.waiters, self.effects, self.wake]

    @property
    def begin_reading(self) -> list[str]:
        """begin.lua's keys when it reads the parts itself (a cluster)."""
        return [*self.begin, *self.parts]

    @property
    def parts(self) -> list[str]:
        """The documents and the token, as a begun unit of work reads them (MGET)."""
        return [self.user, self.session, self.form, self.token]

    @property
    def commit(self) -> list[str]:
        """The keys commit.lua touches, in the order it expects; the token's goes last, and
        only with a commit that changes the token."""
        return [
            self.lease,
            self.handled,
            self.waiters,
            self.wake,
            self.user,
            self.session,
            self.form,
            self.effects,
            self.expiry,
        ]

    @property
    def expiry_entry(self) -> list[str]:
        """The keys expiry.lua touches, in the order it expects."""
        return [self.user, self.session, self.form, self.expiry]

    @property
    def load(self) -> list[str]:
        """The keys load.lua touches, in the order it expects."""
        return [self.user, self.session, self.form, self.effects]

    @property
    def release(self) -> list[str]:
        """The keys release.lua touches, in the order it expects."""
        return [self.lease, self.waiters, self.wake]

    @property
    def forget(self) -> list[str]:
        """The keys forget.lua touches, in the order it expects."""
        return [self.lease, self.waiters, self.wake, self.user, self.session, self.form, self.token]

    def effect(self, legacy: bytes | None) -> list[str]:
        """The keys effect.lua touches; ``legacy`` is a message's digest when its 0.2 records
        (one hash per message) are to be consulted too."""
        tag = self.lease.removeprefix("lease:")
        old = self.effects if legacy is None else f"effects:{tag}:{legacy.hex()}"
        return [self.effects, self.lease, self.user, old]

    @property
    def all(self) -> list[str]:
        return [
            self.user,
            self.session,
            self.form,
            self.handled,
            self.token,
            self.effects,
            self.lease,
            self.waiters,
            self.wake,
        ]


# A user writes a few messages in a row: their keys are built once, not per call.
@lru_cache(maxsize=4096)
def _user_keys(digits: str, cluster: bool) -> UserKeys:
    tag = "{" + digits + "}"
    return UserKeys(
        user=f"user:{tag}:state",
        session=f"session:{tag}:data",
        form=f"form:{tag}:data",
        handled=f"handled:{tag}",
        token=f"token:{tag}",
        effects=f"effects:{tag}",
        lease=f"lease:{tag}",
        waiters=f"lease:{tag}:waiters",
        wake=f"lease:{tag}:wake",
        expiry=partition_of(digits, cluster),
    )


class KeySchema:
    """Builds every key from a validated PhoneNumber; raw user text never reaches a key.
    On a cluster (``cluster``), the expiry index has a partition in every hash slot."""

    def __init__(self, cluster: bool = False) -> None:
        self.cluster = cluster

    def for_user(self, phone: PhoneNumber) -> UserKeys:
        return _user_keys(phone.digits, self.cluster)

    # Every key this library writes matches one of these (used by SCAN-based tools and ACLs).
    # 0.2 wrote ``handled:{p}:ids`` and one ``effects:{p}:<digest>`` per message; 0.3 never
    # writes them (it reads the latter for a message's own effects), and both expire within
    # a day of the upgrade.
    patterns = (
        "user:{*}:state",
        "session:{*}:data",
        "form:{*}:data",
        "handled:{*}",
        "token:{*}",
        "effects:{*}",
        "lease:{*}",
        "lease:{*}:waiters",
        "lease:{*}:wake",
        "expiry:{*}",
        "handled:{*}:ids",
        "effects:{*}:*",
    )

    # The inverse of for_user, for tools that walk the keyspace (SCAN): (kind, digits) or None.
    _parsed = re.compile(
        r"(?P<prefix>user|session|form|handled|token|lease|effects):"
        r"\{(?P<digits>[1-9][0-9]{6,14})\}(?P<suffix>(?::[a-z0-9]+)?)"
    )
    _kinds: ClassVar[dict[tuple[str, str], str]] = {
        ("user", ":state"): "user",
        ("session", ":data"): "session",
        ("form", ":data"): "form",
        ("handled", ""): "handled",
        ("handled", ":ids"): "handled",
        ("token", ""): "token",
        ("effects", ""): "effects",
        ("lease", ""): "lease",
        ("lease", ":waiters"): "waiters",
        ("lease", ":wake"): "wake",
    }
    _legacy_effects = re.compile(r":[0-9a-f]{32}")
    _partition = re.compile(r"expiry:\{[0-9A-Za-z]{1,3}\}")

    def parse(self, key: str | bytes) -> tuple[str, str] | None:
        """The kind (a UserKeys field name) and phone digits of a key of this schema (no
        digits for a partition of the expiry index), or None."""
        text = key.decode(errors="replace") if isinstance(key, bytes) else key
        if self._partition.fullmatch(text):
            return "expiry", ""  # shared by many users: no phone of its own
        match = self._parsed.fullmatch(text)
        if match is None:
            return None
        prefix, suffix = match["prefix"], match["suffix"]
        if prefix == "effects" and self._legacy_effects.fullmatch(suffix):
            kind: str | None = "effects"
        else:
            kind = self._kinds.get((prefix, suffix))
        return None if kind is None else (kind, match["digits"])
