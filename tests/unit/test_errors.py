"""The error groups a webhook routes by: three names instead of every error's own."""

from __future__ import annotations

import threading

import vimbiso_state
from vimbiso_state import (
    Container,
    RedeliverLater,
    Settings,
    StateError,
    UsageError,
)
from vimbiso_state.services import exceptions

REDELIVER = {
    "UserBusy",
    "LeaseLost",
    "StateUnavailable",
    "StateFromNewerRelease",
    "ConcurrencyConflict",
}
USAGE = {
    "InvalidPhoneNumber",
    "InvalidInput",
    "CalledInsideOwnMessage",
    "StateTooLarge",
    "ConfigurationError",
}
CONVERSATION = {
    "NoActiveForm",
    "FormIncomplete",
    "FormValidationError",
    "TokenError",
    "EffectInDoubt",
}


def _errors() -> dict[str, type[StateError]]:
    found = {n: getattr(vimbiso_state, n) for n in vimbiso_state.__all__}
    return {n: c for n, c in found.items() if isinstance(c, type) and issubclass(c, StateError)}


def test_every_error_is_in_exactly_the_group_its_handling_needs() -> None:
    errors = _errors()
    leaves = set(errors) - {"StateError", "RedeliverLater", "UsageError"}
    assert leaves == REDELIVER | USAGE | CONVERSATION
    for name in leaves:
        kind = errors[name]
        assert issubclass(kind, RedeliverLater) == (name in REDELIVER), name
        assert issubclass(kind, UsageError) == (name in USAGE), name


def test_the_services_module_exports_the_same_errors() -> None:
    assert set(exceptions.__all__) == set(_errors())
    for name in exceptions.__all__:
        assert getattr(exceptions, name) is getattr(vimbiso_state, name)


def _route(call: object) -> int:
    """A webhook's whole error routing, in the three names."""
    try:
        assert callable(call)
        call()
    except RedeliverLater:
        return 503
    except UsageError:
        return 200  # logged and fixed in the code: a redelivery would fail the same way
    except StateError:
        return 299  # the flow answers the member
    return 200


def test_a_webhook_routes_real_failures_by_group() -> None:
    settings = Settings(backend="memory", lease_wait=0.0)
    state = Container.from_settings(settings).state_service()
    assert _route(lambda: state.start("not a phone")) == 200  # InvalidPhoneNumber
    with state.message("+263771234567", "wamid.1", "hi"):
        assert _route(lambda: state.start("+263771234567")) == 200  # CalledInsideOwnMessage

        def busy() -> None:
            errors: list[BaseException] = []

            def other() -> None:
                try:
                    with state.message("+263771234567", "wamid.2", "hi"):
                        pass
                except BaseException as error:
                    errors.append(error)

            thread = threading.Thread(target=other)
            thread.start()
            thread.join()
            raise errors[0]

        assert _route(busy) == 503  # UserBusy from another thread
    assert _route(lambda: state.form_complete("+263771234567")) == 299  # NoActiveForm
