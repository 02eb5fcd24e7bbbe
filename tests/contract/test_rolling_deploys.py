"""Two releases side by side on one store, as during a rolling deploy.

A worker of this release meets documents a newer release wrote: of a newer schema version
(it cannot read them: it must leave them alone and say so, never replace them with a fresh
conversation), or of this schema version with fields added (it reads them and writes them
back with those fields intact).
"""

from __future__ import annotations

import time

import pytest
from stored_documents import HEADERS, json_of, raw_of, rewrite

from vimbiso_state.domain.schema import SCHEMA_VERSION
from vimbiso_state.services.container import Container
from vimbiso_state.services.exceptions import StateFromNewerRelease, StateUnavailable
from vimbiso_state.services.state_service import StateService

OFFER = "handle_action_offer_credex"


@pytest.mark.parametrize("part", ["user", "session", "form"])
def test_a_document_of_a_newer_schema_is_left_alone_and_said_so(
    container: Container, backend: str, state: StateService, phone: str, part: str
) -> None:
    state.set_profile(phone, {"memberID": "m-1"}, [{"accountID": "a-1"}])
    state.navigate(phone, OFFER)
    state.form_start(phone, "offer", ["amount"])
    rewrite(
        container,
        backend,
        phone,
        part,
        lambda doc: {**doc, "schema_version": SCHEMA_VERSION + 1, "renamed": {"x": 1}},
    )
    stored = {name: raw_of(container, backend, phone, name) for name in HEADERS}
    for attempt in (
        lambda: state.start(phone),
        lambda: state.navigate(phone, "handle_action_menu"),
        lambda: state.update(phone, lambda conv: conv.context.update(lost=True)),
    ):
        with pytest.raises(StateFromNewerRelease, match="newer release") as raised:
            attempt()
        assert isinstance(raised.value, StateUnavailable)  # the webhook answers non-2xx
    with pytest.raises(StateFromNewerRelease), state.message(phone, "wamid.deploy"):
        pytest.fail("a message began on state it cannot read")
    # Nothing was replaced, not even a last-seen time.
    after = {name: raw_of(container, backend, phone, name) for name in HEADERS}
    assert {n: v[16:] for n, v in after.items()} == {n: v[16:] for n, v in stored.items()}
    # The message gave its lease back: the next delivery is told the same at once, rather
    # than waiting out the lease and getting UserBusy.
    started = time.monotonic()
    with pytest.raises(StateFromNewerRelease), state.message(phone, "wamid.deploy.2"):
        pytest.fail("a message began on state it cannot read")
    assert time.monotonic() - started < 1


def test_fields_a_newer_release_added_survive_a_write_by_this_one(
    container: Container, backend: str, state: StateService, phone: str
) -> None:
    state.set_profile(phone, {"memberID": "m-1"}, [{"accountID": "a-1"}])
    state.navigate(phone, OFFER)
    state.form_start(phone, "offer", ["amount", "recipient"])
    added = {"user": {"loyalty": {"tier": 2}}, "session": {"locale": "sn"}, "form": {"hint": 1}}
    for part, fields in added.items():
        rewrite(container, backend, phone, part, lambda doc, fields=fields: {**doc, **fields})

    conv = state.start(phone)  # readable: same schema version, only fields added
    assert conv.notices == [] and conv.stage == OFFER
    state.update(phone, lambda conv: conv.context.update(amount="25"))
    state.form_fill(phone, amount="USD 25")
    with state.message(phone, "wamid.keep") as msg:
        msg.conversation.navigate("handle_action_confirm")

    for part, fields in added.items():
        document = json_of(container, backend, phone, part)
        assert {name: document.get(name) for name in fields} == fields, part
    conv = state.start(phone)
    assert conv.stage == "handle_action_confirm" and conv.context == {"amount": "25"}
    assert conv.form is not None and conv.form.values["amount"] == "25"


def test_added_fields_go_with_a_part_the_rules_replace(
    container: Container, backend: str, state: StateService, phone: str
) -> None:
    """A greeting starts a new session: the fields of the old one are not carried into it."""
    state.navigate(phone, OFFER)
    rewrite(container, backend, phone, "session", lambda doc: {**doc, "locale": "sn"})
    state.restart(phone)
    assert "locale" not in json_of(container, backend, phone, "session")
