"""The key schema. Braces are literal: in Redis Cluster they make the phone the hash tag, so
every key of one user lives in one slot and one script can touch them all atomically."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

from vimbiso_state.domain.phone import PhoneNumber


@dataclass(frozen=True, slots=True)
class UserKeys:
    user: str
    session: str
    form: str
    handled: str
    token: str
    # While a message is handled: its lease, how many messages wait for it, and the list a
    # waiting message blocks on until the lease ends.
    lease: str
    waiters: str
    wake: str

    @property
    def load(self) -> list[str]:
        """The keys load.lua touches, in the order it expects."""
        return [
            self.user,
            self.session,
            self.form,
            self.handled,
            self.lease,
            self.waiters,
            self.token,
        ]

    @property
    def save(self) -> list[str]:
        """The keys save.lua touches, in the order it expects."""
        return [
            self.user,
            self.session,
            self.form,
            self.handled,
            self.lease,
            self.waiters,
            self.wake,
            self.token,
        ]

    @property
    def begin(self) -> list[str]:
        """The keys begin.lua touches, in the order it expects."""
        return [self.handled, self.lease, self.waiters]

    @property
    def parts(self) -> list[str]:
        """The documents and the token, as a begun message reads them (MGET)."""
        return [self.user, self.session, self.form, self.token]

    @property
    def release(self) -> list[str]:
        """The keys release.lua touches, in the order it expects."""
        return [self.lease, self.waiters, self.wake, self.user, self.session, self.form]

    @property
    def documents(self) -> list[str]:
        """The keys of the three stored documents, as a plain read (MGET) asks for them."""
        return [self.user, self.session, self.form]

    def effects(self, message: bytes) -> str:
        """The hash of one message's effects (``message`` is its id's digest, protocol.py)."""
        return f"effects:{self.lease.removeprefix('lease:')}:{message.hex()}"

    @property
    def all(self) -> list[str]:
        return [
            self.user,
            self.session,
            self.form,
            self.handled,
            self.token,
            self.lease,
            self.waiters,
            self.wake,
        ]


# A user writes a few messages in a row: their keys are built once, not per call.
@lru_cache(maxsize=4096)
def _user_keys(digits: str) -> UserKeys:
    tag = "{" + digits + "}"
    return UserKeys(
        user=f"user:{tag}:state",
        session=f"session:{tag}:data",
        form=f"form:{tag}:data",
        handled=f"handled:{tag}:ids",
        token=f"token:{tag}",
        lease=f"lease:{tag}",
        waiters=f"lease:{tag}:waiters",
        wake=f"lease:{tag}:wake",
    )


class KeySchema:
    """Builds every key from a validated PhoneNumber; raw user text never reaches a key."""

    def for_user(self, phone: PhoneNumber) -> UserKeys:
        return _user_keys(phone.digits)

    # Every key this library writes matches one of these (used by SCAN-based tools and ACLs).
    patterns = (
        "user:{*}:state",
        "session:{*}:data",
        "form:{*}:data",
        "handled:{*}:ids",
        "token:{*}",
        "lease:{*}",
        "lease:{*}:waiters",
        "lease:{*}:wake",
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
        ("handled", ":ids"): "handled",
        ("token", ""): "token",
        ("lease", ""): "lease",
        ("lease", ":waiters"): "waiters",
        ("lease", ":wake"): "wake",
    }
    _effects = re.compile(r":[0-9a-f]{32}")

    def parse(self, key: str | bytes) -> tuple[str, str] | None:
        """The kind (a UserKeys field name, or ``effects``) and phone digits of a key of this
        schema, or None."""
        text = key.decode(errors="replace") if isinstance(key, bytes) else key
        match = self._parsed.fullmatch(text)
        if match is None:
            return None
        prefix, suffix = match["prefix"], match["suffix"]
        if prefix == "effects":
            kind = "effects" if self._effects.fullmatch(suffix) else None
        else:
            kind = self._kinds.get((prefix, suffix))
        return None if kind is None else (kind, match["digits"])
