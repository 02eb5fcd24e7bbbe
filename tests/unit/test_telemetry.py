"""Telemetry on the memory backend: conflicts and retries, logs (per-module loggers, masked
numbers, never a token), the phone pseudonym, and the library without OpenTelemetry."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from fakes import DIGITS, PHONE, T0, TOKEN_KEY, FakeClock
from otel_sdk import Figures, clear_spans, spans

from vimbiso_state.adapters.otel import ERROR_TYPE, OPERATION, PSEUDO_ID
from vimbiso_state.adapters.redis.connection import RetryPolicy
from vimbiso_state.domain.conversation import Notice
from vimbiso_state.domain.errors import ConcurrencyConflict, StateUnavailable
from vimbiso_state.services.config import Settings
from vimbiso_state.services.container import Container
from vimbiso_state.services.state_service import StateService
from vimbiso_state.services.telemetry import Telemetry, masked

SECRET = "eyJhbGciOiJIUzI1NiJ9.secret-XYZZY-payload.signature"
MASKED = "+26377*****67"


@pytest.fixture
def figures() -> Iterator[None]:
    Figures.take()
    clear_spans()
    yield


# Metrics
def test_a_write_whose_user_was_reset_meanwhile_is_counted_and_warned(
    state: StateService, figures: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    state.update(PHONE, lambda c: c.context.update(n=1))
    assert caplog.records == []
    with pytest.raises(ConcurrencyConflict):
        state.update(PHONE, lambda c: state.reset(PHONE))  # takes the user from the write
    got = Figures.take()
    assert got.total("vimbiso_state.writes.lost", {OPERATION: "update"}) == 1
    failed = {OPERATION: "update", ERROR_TYPE: "ConcurrencyConflict"}
    assert got.count("vimbiso_state.operation.duration", failed) == 1
    [warning] = caplog.records
    assert warning.levelno == logging.WARNING
    assert warning.name == "vimbiso_state.services.telemetry"
    assert "reset" in warning.getMessage() and MASKED in warning.getMessage()


def test_a_duplicate_handle_once_is_counted(state: StateService, figures: None) -> None:
    state.handle_once(PHONE, "wamid.1", lambda c: c.navigate("handle_action_offer_credex"))
    assert state.handle_once(PHONE, "wamid.1", lambda c: None) is None
    got = Figures.take()
    assert got.total("vimbiso_state.duplicates", {OPERATION: "handle_once"}) == 1
    assert got.total("vimbiso_state.messages") == 0  # messages are state.message blocks


def test_one_call_writes_that_wait_for_a_message_record_the_wait(
    state: StateService, figures: None
) -> None:
    holding = threading.Event()

    def hold() -> None:
        with state.message(PHONE, "wamid.held"):
            holding.set()
            time.sleep(0.2)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    state.update(PHONE, lambda c: c.context.update(after=True))
    holder.join()
    got = Figures.take()
    assert got.count("vimbiso_state.lease.wait", {OPERATION: "update"}) == 1
    assert 0.1 < got.total("vimbiso_state.lease.wait", {OPERATION: "update"}) < 2


def test_redis_retries_are_counted_by_error_type(figures: None) -> None:
    failures = [redis.exceptions.ConnectionError("reset"), redis.exceptions.TimeoutError("t")]

    def flaky() -> str:
        if failures:
            raise failures.pop(0)
        return "PONG"

    assert RetryPolicy(retries=2, backoff=0).call(flaky) == "PONG"
    got = Figures.take()
    assert got.by("vimbiso_state.redis.retries", ERROR_TYPE) == {
        "ConnectionError": 1,
        "TimeoutError": 1,
    }


# Logs
def test_every_logger_of_the_library_is_a_module_logger_with_no_handler() -> None:
    import vimbiso_state.adapters.codec
    import vimbiso_state.adapters.redis.clock
    import vimbiso_state.services.message
    import vimbiso_state.services.telemetry  # noqa: F401

    names = [name for name in logging.root.manager.loggerDict if name.startswith("vimbiso_state")]
    assert {
        "vimbiso_state.adapters.codec",
        "vimbiso_state.adapters.redis.connection",
        "vimbiso_state.services.telemetry",
    } <= set(names)
    for name in ["vimbiso_state", *names]:
        assert logging.getLogger(name).handlers == [], name


def test_debug_logs_each_operation_with_a_masked_number_and_never_a_token(
    state: StateService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="vimbiso_state")
    state.start(PHONE)
    state.save_token(PHONE, SECRET)
    assert state.token(PHONE) == SECRET
    with state.message(PHONE, "wamid.1") as msg:
        msg.save_token(SECRET)
        msg.effect("login", lambda: {"token": "from-credex"})
    lines = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert ("vimbiso_state.services.telemetry", "DEBUG", f"token for {MASKED}: ok") in [
        (name, level, text.rsplit(" in ", 1)[0]) for name, level, text in lines
    ]
    operations = [text.split(" for ")[0] for _, _, text in lines]
    assert operations == ["start", "save_token", "token", "effect", "message"]
    for _, _, text in lines:
        assert SECRET not in text and "XYZZY" not in text
        assert DIGITS not in text and DIGITS[3:] not in text
        assert MASKED in text


def test_a_long_wait_for_the_users_previous_message_is_logged_at_info(
    container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    container.telemetry.override(Telemetry(slow_wait=0.1))
    state = container.state_service()
    caplog.set_level(logging.INFO, logger="vimbiso_state")
    holding = threading.Event()

    def hold(seconds: float) -> None:
        with state.message(PHONE, f"wamid.hold.{seconds}"):
            holding.set()
            time.sleep(seconds)

    for seconds in (0.02, 0.3):  # below the threshold, then above it
        holding.clear()
        holder = threading.Thread(target=hold, args=(seconds,))
        holder.start()
        assert holding.wait(5)
        with state.message(PHONE, f"wamid.after.{seconds}"):
            pass
        holder.join()
    [line] = [r for r in caplog.records if r.levelno == logging.INFO]
    assert line.name == "vimbiso_state.services.telemetry"
    assert line.getMessage().startswith(f"message for {MASKED} waited 0.")
    assert "for the user's previous message" in line.getMessage()


def test_lost_state_is_a_warning(
    state: StateService, container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vimbiso_state")
    state.navigate(PHONE, "handle_action_offer_credex")
    container.memory_conversations()._users[DIGITS].critical = None  # evicted
    assert state.start(PHONE).notices == [Notice.STATE_LOST]
    [line] = caplog.records
    assert line.name == "vimbiso_state.services.telemetry"
    assert f"state of {MASKED} was lost" in line.getMessage()


@pytest.mark.parametrize(
    ("digits", "shown"),
    [
        ("263771234567", "+26377*****67"),
        ("14155550123", "+14155****23"),
        ("4930123456", "+4930****56"),
        ("1234567", "+1****67"),
    ],
)
def test_a_masked_number_hides_at_least_four_digits(digits: str, shown: str) -> None:
    assert masked(digits) == shown
    assert shown.count("*") >= 4


# The pseudonym
def test_the_pseudonym_is_keyed_by_the_deployments_salt() -> None:
    plain, salted, other = Telemetry(), Telemetry("s3cret-salt"), Telemetry("other-salt")
    assert len(plain.pseudonym(DIGITS)) == 16
    assert plain.pseudonym(DIGITS) == Telemetry().pseudonym(DIGITS)  # stable across processes
    assert len({plain.pseudonym(DIGITS), salted.pseudonym(DIGITS), other.pseudonym(DIGITS)}) == 3
    assert salted.pseudonym(DIGITS) != salted.pseudonym("263771234568")
    assert "s3cret" not in repr(salted)


def test_the_salt_comes_from_state_telemetry_salt_and_is_never_shown(
    clock: FakeClock, figures: None
) -> None:
    settings = Settings.from_env({"STATE_TELEMETRY_SALT": "s3cret-salt"})
    assert settings.telemetry_salt == "s3cret-salt"
    assert "s3cret" not in repr(settings)
    container = Container.from_settings(settings)
    assert "s3cret" not in repr(container.config())
    container.state_service().start(PHONE)
    [span] = spans()
    assert span.attributes is not None
    assert span.attributes[PSEUDO_ID] == Telemetry("s3cret-salt").pseudonym(DIGITS)


# Without OpenTelemetry
def _python(*parts: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "\n".join(textwrap.dedent(part) for part in parts)],
        capture_output=True,
        text=True,
        timeout=120,
    )


CONVERSATION = """
    from vimbiso_state import Container
    container = Container()
    container.config.from_dict({"backend": "memory"})
    state = container.state_service()
    with state.message("+263771234567", "wamid.1", "hi") as msg:
        msg.conversation.navigate("handle_action_offer_credex")
        msg.effect("login", lambda: {"ok": True})
    assert state.start("+263771234567").stage == "handle_action_offer_credex"
    state.save_token("+263771234567", "a-token")
    try:  # a failed message marks its span failed: there is no span to mark
        with state.message("+263771234567", "wamid.2") as msg:
            raise LookupError("the bot's own bug")
    except LookupError:
        pass
"""


@pytest.mark.slow
def test_the_library_imports_and_runs_without_opentelemetry_installed() -> None:
    done = _python(
        """
        import sys
        sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
        """,
        CONVERSATION,
        """
        from vimbiso_state.adapters import otel
        assert not otel.AVAILABLE
        loaded = [name for name, module in sys.modules.items() if module is not None]
        assert not any(name.startswith("opentelemetry") for name in loaded)
        print("ran")
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ran\n"


@pytest.mark.slow
def test_without_an_sdk_no_span_is_started_and_nothing_is_recorded() -> None:
    done = _python(
        CONVERSATION,
        """
        from vimbiso_state.adapters import otel
        otel.look(float("inf"))
        assert otel.AVAILABLE
        assert not otel.PROVIDERS.tracing and not otel.PROVIDERS.metering
        telemetry = container.telemetry()
        watch = telemetry.watch("update")
        assert watch.span is otel._NOTHING and watch.context is None
        print("ran")
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ran\n"


@pytest.mark.slow
def test_providers_set_after_the_first_messages_are_used_within_a_second() -> None:
    done = _python(
        CONVERSATION,
        """
        import time
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        reader, exporter = InMemoryMetricReader(), InMemorySpanExporter()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        tracing = TracerProvider()
        tracing.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(tracing)
        time.sleep(1.1)
        state.update("+263771234567", lambda c: None)
        assert [span.name for span in exporter.get_finished_spans()] == ["vimbiso_state.update"]
        data = reader.get_metrics_data()
        names = {m.name for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics}
        assert {"vimbiso_state.operation.duration", "vimbiso_state.stored_part.size"} <= names
        print("ran")
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ran\n"


def test_an_unavailable_server_is_counted_and_logged(
    figures: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="vimbiso_state")
    container = Container.from_settings(
        Settings(backend="redis", redis_url="redis://127.0.0.1:1/0", token_keys=(TOKEN_KEY,))
    )
    container.clock.override(FakeClock(T0))
    with pytest.raises(StateUnavailable):
        container.state_service().start(PHONE)
    got = Figures.take()
    assert got.total("vimbiso_state.unavailable", {OPERATION: "start"}) == 1
    assert got.total("vimbiso_state.redis.retries") == 2  # redis_retries, then gave up
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.name for r in warnings] == ["vimbiso_state.services.telemetry"]
    assert warnings[0].getMessage().startswith(f"start for {MASKED}: Redis is unavailable")
