"""Telemetry against real Redis servers: an outage is counted and logged, and redis-py's own
OpenTelemetry instrumentation keeps working, its spans inside the library's."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from fakes import TOKEN_KEY
from otel_sdk import Figures, clear_spans, spans
from redis_servers import RedisProcess

from vimbiso_state.adapters.otel import ERROR_TYPE, MESSAGE_OUTCOME, OPERATION
from vimbiso_state.domain.errors import StateUnavailable
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container

PHONE = "+263771234567"


@pytest.fixture
def figures() -> Iterator[None]:
    Figures.take()
    clear_spans()
    yield


def test_a_redis_outage_is_counted_logged_and_marked_on_the_span(
    private_redis: RedisProcess, figures: None, caplog: pytest.LogCaptureFixture
) -> None:
    container = Container.from_settings(
        Settings(backend="redis", redis_url=private_redis.url, token_keys=(TOKEN_KEY,))
    )
    state = container.state_service()
    with state.message(PHONE, "wamid.1", "hi") as msg:
        msg.conversation.navigate("handle_action_offer_credex")
    private_redis.stop()
    caplog.set_level(logging.WARNING, logger="vimbiso_state")
    try:
        with pytest.raises(StateUnavailable), state.message(PHONE, "wamid.2", "1"):
            pytest.fail("entered without a server")
    finally:
        container.close()
    got = Figures.take()
    assert got.total("vimbiso_state.unavailable", {OPERATION: "message"}) == 1
    failed = {MESSAGE_OUTCOME: "failed", ERROR_TYPE: "StateUnavailable"}
    assert got.total("vimbiso_state.messages", failed) == 1
    assert got.total("vimbiso_state.redis.retries") >= 2  # STATE_REDIS_RETRIES, then gave up
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(m.startswith("message for +26377*****67: Redis is unavailable") for m in warnings)
    assert not any("263771234567" in m for m in warnings)
    [span] = [s for s in spans() if s.attributes and s.attributes.get(ERROR_TYPE)]
    assert span.name == "vimbiso_state.message"
    assert span.status.description == "StateUnavailable"


# A bot process that instruments redis-py itself, as opentelemetry-instrument would.
INSTRUMENTED_BOT = """
import json, os
from opentelemetry import trace
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
RedisInstrumentor().instrument()

from vimbiso_state import Container

container = Container.from_env()
state = container.state_service()
state.start("+263771234567")
with state.message("+263771234567", "wamid.1", "1") as msg:
    msg.conversation.navigate("handle_action_offer_credex")
    msg.effect("create_credex", lambda: {"credexID": "c-1"})
container.close()
by_id = {span.context.span_id: span.name for span in exporter.get_finished_spans()}
print(json.dumps([
    [span.name, by_id.get(span.parent.span_id) if span.parent else None,
     span.instrumentation_scope.name]
    for span in exporter.get_finished_spans()
]))
"""


def test_redis_pys_own_instrumentation_nests_its_spans_in_the_librarys(
    private_redis: RedisProcess,
) -> None:
    env = {
        **os.environ,
        "STATE_BACKEND": "redis",
        "REDIS_STATE_URL": private_redis.url,
        "STATE_TOKEN_KEYS": TOKEN_KEY,
    }
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(INSTRUMENTED_BOT)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    ours = {name for name, _, scope in found if scope == "vimbiso_state"}
    assert ours == {"vimbiso_state.start", "vimbiso_state.message", "vimbiso_state.effect"}
    redis_spans = [(name, parent) for name, parent, scope in found if "redis" in scope]
    assert redis_spans, found  # redis-py's instrumentation still sees every call
    # Every Redis call is a child of the operation that made it (the server clock's first
    # TIME included), never a root of its own.
    assert {parent for _, parent in redis_spans} == ours, found
    assert ("TIME", "vimbiso_state.start") in redis_spans
