"""Fields decoded on first use: most messages never read the member's profile.

The profile is most of a stored conversation (three accounts are about 1.4 KB of the
2.2 KB) and decoding it into objects costs more than the rest together, yet a menu step
never looks at it. The storage layer hands such a part over as a ``Deferred``; the field
decodes it the first time anyone reads it, and a part nobody read is written back as the
bytes it came as.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger("vimbiso_state")


class Deferred(Generic[T]):
    """Stored bytes (any bytes-like object) and how to decode them; ``fallback`` stands in
    if they cannot be."""

    __slots__ = ("_decode", "_fallback", "data")

    def __init__(self, data: Any, decode: Callable[[Any], T], fallback: T) -> None:
        self.data = data
        self._decode = decode
        self._fallback = fallback

    def load(self) -> T:
        try:
            return self._decode(self.data)
        except ValueError as exc:
            # The document around it decoded, so this is a damaged part, not a damaged
            # conversation: it is lost as the whole document would have been, not raised from
            # whatever line of bot code first read it.
            log.warning("dropping an undecodable stored part (%d bytes): %s", len(self.data), exc)
            return self._fallback

    def __repr__(self) -> str:
        return f"Deferred({len(self.data)} bytes)"

    def __reduce__(self) -> tuple[Callable[[T], T], tuple[T]]:
        # Pickled as the value it stands for: its decoder cannot be pickled, and need not be.
        return (_same, (self.load(),))


def _same(value: T) -> T:
    return value


class LoadedOnUse(Generic[T]):
    """A dataclass field that may hold a ``Deferred`` value and decodes it on first read.

    The instance keeps the value under the field's own name, so ``vars()``, equality,
    ``dataclasses.replace`` and dataclasses-json all see an ordinary field.
    """

    def __init__(self, default: T) -> None:
        self._default = default
        self._name = ""

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name = name

    def __get__(self, instance: object | None, owner: type[Any] | None = None) -> T:
        if instance is None:
            return self._default  # what dataclasses takes as the field's default
        values = instance.__dict__
        value = values.get(self._name, self._default)
        if type(value) is Deferred:
            value = values[self._name] = value.load()
        return value  # type: ignore[no-any-return]

    def __set__(self, instance: object, value: T | Deferred[T]) -> None:
        instance.__dict__[self._name] = value
