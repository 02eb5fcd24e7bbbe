"""Plain JSON values: the only values the library stores on the bot's behalf.

A value that JSON cannot carry would come back as something else (NaN as null, a tuple as a
list, an int key as text, a Decimal as text) or fail deep inside the storage codec. Checking
first turns both into one clear InvalidInput that says where the value is, before any I/O.
"""

from __future__ import annotations

import math
from datetime import date, datetime, time
from decimal import Decimal

from vimbiso_state.domain.errors import InvalidInput

# Deep enough for any real flow data, shallow enough that nothing recurses near Python's limit.
MAX_DEPTH = 64
# CPython refuses to turn an int of more than 4300 digits into text; a JSON number that long
# is a bug, not data.
_INT_LIMIT = 10**1000
_SHOWN_STEPS = 12


class _Refused(Exception):
    """Raised inside the walk; the path is collected while it unwinds."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str] = []


def check_json(value: object, where: str) -> None:
    """Raise InvalidInput unless ``value`` is plain JSON.

    Plain JSON is a dict with str keys, a list, a str without lone surrogates, an int, a
    finite float, a bool or None, nested at most MAX_DEPTH deep; exact types only, so that
    what is stored is what comes back. The message names the path from ``where`` (for example
    ``context['a'][3]``) and never echoes the value, which may be personal data or a secret.
    """
    if _plain(value, 0):
        return
    try:
        _walk(value, 0)
    except _Refused as refused:
        steps = list(reversed(refused.path))
        # A runaway nesting would make a runaway message: its first steps say where enough.
        shown = "".join(steps[:_SHOWN_STEPS]) + ("..." if len(steps) > _SHOWN_STEPS else "")
        path = where + shown
        raise InvalidInput(f"{path}: {refused.problem}") from None


def check_text(value: str, where: str) -> None:
    """Raise InvalidInput if ``value`` cannot be stored as UTF-8 (a lone surrogate)."""
    if not value.isascii() and not _encodable(value):
        raise InvalidInput(f"{where}: {_SURROGATE}")


_SURROGATE = "text with a lone surrogate (not valid UTF-8)"


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _plain(value: object, depth: int) -> bool:
    """Whether ``value`` is plain JSON: the walk every stored write takes, so the scalars of
    a container are checked inline and only containers cost a call. ``_walk`` (slower, with
    the path) runs only to explain a refusal."""
    kind = type(value)
    if kind is dict or kind is list:
        if depth >= MAX_DEPTH:
            return False
        if kind is dict:
            for key in value:  # type: ignore[attr-defined]
                if type(key) is not str or not (key.isascii() or _encodable(key)):
                    return False
            items = value.values()  # type: ignore[attr-defined]
        else:
            items = value
        for item in items:
            kind = type(item)
            if kind is str:
                if not (item.isascii() or _encodable(item)):
                    return False
            elif kind is dict or kind is list:
                if not _plain(item, depth + 1):
                    return False
            elif kind is int:
                if not -_INT_LIMIT < item < _INT_LIMIT:
                    return False
            elif kind is float:
                if not math.isfinite(item):
                    return False
            elif kind is not bool and item is not None:
                return False
        return True
    return _plain([value], depth - 1)


def _walk(value: object, depth: int) -> None:
    # Exact types (``type(x) is``): a subclass such as a StrEnum would come back as its base.
    if type(value) is str:
        if not value.isascii() and not _encodable(value):
            raise _Refused(_SURROGATE)
    elif type(value) is bool or value is None:
        pass
    elif type(value) is int:
        if not -_INT_LIMIT < value < _INT_LIMIT:
            raise _Refused("an integer of more than 1000 digits")
    elif type(value) is float:
        if not math.isfinite(value):
            raise _Refused("NaN and infinity are not JSON numbers (they would come back as None)")
    elif type(value) is dict:
        _deeper(depth)
        _walk_dict(value, depth + 1)
    elif type(value) is list:
        _deeper(depth)
        _walk_list(value, depth + 1)
    else:
        raise _Refused(_why_not(value))


def _deeper(depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise _Refused(f"nested deeper than {MAX_DEPTH} levels")


def _walk_dict(value: dict[object, object], depth: int) -> None:
    for key, item in value.items():
        if type(key) is not str:
            refused = _Refused(
                f"a {type(key).__name__} key (JSON keys are text; it would come back as text)"
            )
            refused.path.append(f"[{_shown(key)}]")
            raise refused
        try:
            if not key.isascii() and not _encodable(key):
                raise _Refused(f"a key that is {_SURROGATE}")
            _walk(item, depth)
        except _Refused as refused:
            refused.path.append(f"[{_shown(key)}]")
            raise


def _walk_list(value: list[object], depth: int) -> None:
    for index, item in enumerate(value):
        try:
            _walk(item, depth)
        except _Refused as refused:
            refused.path.append(f"[{index}]")
            raise


def _shown(key: object) -> str:
    # Keys are names the bot chose, not the user's data; still, a runaway key is cut short.
    text = repr(key) if type(key) in (str, int, float, bool) or key is None else type(key).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _why_not(value: object) -> str:
    kind = type(value).__name__
    if isinstance(value, set | frozenset):
        return f"a {kind} is not JSON (store a list)"
    if isinstance(value, tuple):
        return "a tuple would come back as a list (store a list)"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"{kind} are not JSON text (decode or base64-encode them)"
    if isinstance(value, datetime | date | time):
        return f"a {kind} would come back as text (store its isoformat())"
    if isinstance(value, Decimal):
        return "a Decimal would come back as text (store str(value))"
    if isinstance(value, float | int | str | dict | list):
        # A subclass: an IntEnum, a StrEnum, an OrderedDict... would come back as the base type.
        return f"a {kind} would come back as a plain {_base(value)} (store a plain one)"
    return f"a {kind} is not a JSON value"


def _base(value: object) -> str:
    for base in (bool, int, float, str, dict, list):
        if isinstance(value, base):
            return base.__name__
    return "value"  # pragma: no cover - only called for the types above
