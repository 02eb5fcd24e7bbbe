"""Forms: partial submissions over several messages, validated field by field."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dataclasses_json import DataClassJsonMixin

from vimbiso_state.domain.errors import FormIncomplete, FormValidationError, InvalidInput
from vimbiso_state.domain.json_values import check_json
from vimbiso_state.domain.offer import parse_amount, parse_denomination, parse_handle
from vimbiso_state.domain.schema import SCHEMA_VERSION
from vimbiso_state.domain.timestamps import timestamp

NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_FIELDS = 32
MAX_VALUE_LENGTH = 500

# A rule turns one answer into the normalised values it stands for, or raises InvalidInput.
# "amount" may carry its denomination ("USD 100"), so a rule can fill more than one field.
Rule = Callable[[str], dict[str, str]]


def _amount(text: str) -> dict[str, str]:
    amount, denomination = parse_amount(text)
    return {"amount": str(amount), "denomination": denomination.value}


def _text(name: str) -> Rule:
    def rule(text: str) -> dict[str, str]:
        cleaned = text.strip()
        if not cleaned:
            raise InvalidInput("this answer cannot be empty")
        if len(cleaned) > MAX_VALUE_LENGTH:
            raise InvalidInput(f"at most {MAX_VALUE_LENGTH} characters")
        return {name: cleaned}

    return rule


RULES: dict[str, Rule] = {
    "amount": _amount,
    "denomination": lambda text: {"denomination": parse_denomination(text).value},
    "recipient": lambda text: {"recipient": parse_handle(text)},
    "handle": lambda text: {"handle": parse_handle(text)},
}


def check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidInput(f"{kind} must be lower_snake_case (at most 64 characters): {name!r}")
    return name


@dataclass(kw_only=True, slots=True)
class Form(DataClassJsonMixin):
    """A form in progress; it has its own deadline, independent of the session's."""

    schema_version: int = SCHEMA_VERSION
    name: str
    required: list[str]
    values: dict[str, str] = field(default_factory=dict)
    started_at: datetime = timestamp()
    expires_at: datetime = timestamp()
    # The form's own id, new for every start: the intent an effect of this form is keyed
    # by (``msg.effect("create_offer", ..., key=conv.form.id)``), across its messages.
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            # Stored before forms had ids: one derived from what it holds, the same on every
            # read, so that its effects keep their key.
            seed = f"{self.name}\0{self.started_at.isoformat()}".encode()
            self.id = hashlib.sha256(seed).hexdigest()[:16]

    @classmethod
    def start(
        cls,
        name: str,
        required: Iterable[str],
        now: datetime,
        ttl: timedelta,
        form_id: str | None = None,
    ) -> Form:
        """A new form; ``form_id`` (default: random) names it (see ``id``)."""
        # A str is iterable too: "amount" would require the fields a, m, o, u, n and t.
        if isinstance(required, str | bytes) or not isinstance(required, Iterable):
            raise InvalidInput(
                "required must be a list of field names, for example ['amount'], "
                f"not {type(required).__name__}"
            )
        fields = [check_name("a form field", f) for f in required]
        if not fields or len(fields) > MAX_FIELDS or len(set(fields)) != len(fields):
            raise InvalidInput(f"a form needs 1 to {MAX_FIELDS} distinct required fields")
        return cls(
            name=check_name("a form name", name),
            required=fields,
            started_at=now,
            expires_at=now + ttl,
            id=form_id or secrets.token_hex(8),
        )

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def fill(self, answers: Mapping[str, object], now: datetime, ttl: timedelta) -> None:
        """Validate every answer first, then store them all; a bad one stores none."""
        accepted: dict[str, str] = {}
        errors: dict[str, str] = {}
        for name, answer in answers.items():
            if not isinstance(name, str) or not NAME.fullmatch(name):
                errors[str(name)[:64]] = "unknown field name"
                continue
            if not isinstance(answer, str | int | float):
                errors[name] = "answer must be text"
                continue
            try:
                check_json(str(answer), "answer")
            except InvalidInput as exc:
                errors[name] = str(exc)
                continue
            rule = RULES.get(name, _text(name))
            try:
                accepted.update(rule(str(answer)))
            except InvalidInput as exc:
                errors[name] = str(exc)
        if errors:
            raise FormValidationError(errors)
        if len(self.values.keys() | accepted.keys()) > MAX_FIELDS:
            raise FormValidationError({"form": f"at most {MAX_FIELDS} fields"})
        self.values.update(accepted)
        self.expires_at = now + ttl

    def check_values(self) -> None:
        """InvalidInput unless the stored answers are plain JSON text."""
        check_json(self.values, "form values")

    def missing(self) -> list[str]:
        return [name for name in self.required if name not in self.values]

    @property
    def is_complete(self) -> bool:
        return not self.missing()

    def result(self) -> dict[str, str]:
        """Every value collected; FormIncomplete names what is still missing."""
        missing = self.missing()
        if missing:
            raise FormIncomplete(self.name, missing)
        return dict(self.values)
