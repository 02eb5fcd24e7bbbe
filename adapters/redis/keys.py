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

    @property
    def conversation(self) -> list[str]:
        """The keys the load and save scripts touch, in the order they expect."""
        return [self.user, self.session, self.form, self.handled]

    @property
    def documents(self) -> list[str]:
        """The keys of the three stored documents, as a plain read (MGET) asks for them."""
        return [self.user, self.session, self.form]

    @property
    def all(self) -> list[str]:
        return [*self.conversation, self.token]


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
    )


class KeySchema:
    """Builds every key from a validated PhoneNumber; raw user text never reaches a key."""

    def for_user(self, phone: PhoneNumber) -> UserKeys:
        return _user_keys(phone.digits)

    def conversation(self, phone: PhoneNumber) -> list[str]:
        return _user_keys(phone.digits).conversation

    def documents(self, phone: PhoneNumber) -> list[str]:
        return _user_keys(phone.digits).documents

    # Every key this library writes matches one of these (used by SCAN-based tools and ACLs).
    patterns = (
        "user:{*}:state",
        "session:{*}:data",
        "form:{*}:data",
        "handled:{*}:ids",
        "token:{*}",
    )

    # The inverse of for_user, for tools that walk the keyspace (SCAN): (kind, digits) or None.
    _parsed = re.compile(
        r"(?P<kind>user|session|form|handled|token):\{(?P<digits>[1-9][0-9]{6,14})\}"
        r"(?P<suffix>:state|:data|:ids|)"
    )
    _suffixes: ClassVar[dict[str, str]] = {
        "user": ":state",
        "session": ":data",
        "form": ":data",
        "handled": ":ids",
        "token": "",
    }

    def parse(self, key: str | bytes) -> tuple[str, str] | None:
        """The kind (a UserKeys field name) and phone digits of a key of this schema, or None."""
        text = key.decode(errors="replace") if isinstance(key, bytes) else key
        match = self._parsed.fullmatch(text)
        if match is None or self._suffixes[match["kind"]] != match["suffix"]:
            return None
        return match["kind"], match["digits"]
