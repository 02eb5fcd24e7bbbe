"""OpenTelemetry, when the bot has it: the library's tracer and every metric it records.

``opentelemetry-api`` is optional (the ``otel`` extra). Without it, stand-ins that do nothing
take its place; with it and no SDK configured, the API's own no-op instruments and spans do
the same. The library never configures a provider or an exporter: the bot does
(docs/observability.md). Every instrument is created here, so that this module is the
catalogue of what is recorded, and the docs are checked against it (``CATALOGUE``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

try:
    from opentelemetry import context as _context
    from opentelemetry import metrics as _metrics
    from opentelemetry import trace as _trace
except ImportError:  # the otel extra is not installed
    _metrics = _trace = _context = None  # type: ignore[assignment]

SCOPE = "vimbiso_state"
AVAILABLE = _metrics is not None

AttributeValue = str | bool | int | float | Sequence[str]
Attributes = Mapping[str, AttributeValue]

# Attribute names: OpenTelemetry's own where one fits (error.type, enduser.pseudo.id).
OPERATION = "vimbiso_state.operation"
# Span attributes only (set when a span records).
DUPLICATE = "vimbiso_state.duplicate"
LEASE_WAITED = "vimbiso_state.lease.wait"
NOTICES = "vimbiso_state.notices"
MESSAGE_OUTCOME = "vimbiso_state.message.outcome"
EFFECT_NAME = "vimbiso_state.effect.name"
EFFECT_OUTCOME = "vimbiso_state.effect.outcome"
EXPIRY_KIND = "vimbiso_state.expiry.kind"
EXPIRY_DELIVERY = "vimbiso_state.expiry.delivery"
PART = "vimbiso_state.part"
ERROR_TYPE = "error.type"
PSEUDO_ID = "enduser.pseudo.id"


class Counter(Protocol):
    def add(self, amount: int, attributes: Attributes | None = None) -> None: ...


class Histogram(Protocol):
    def record(self, amount: float, attributes: Attributes | None = None) -> None: ...


class Span(Protocol):
    def is_recording(self) -> bool: ...

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...

    def end(self) -> None: ...


class _Nothing:
    """An instrument and a span that record nothing: the API is not installed."""

    def add(self, amount: int, attributes: Attributes | None = None) -> None:
        pass

    def record(self, amount: float, attributes: Attributes | None = None) -> None:
        pass

    def is_recording(self) -> bool:
        return False

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        pass

    def end(self) -> None:
        pass


_NOTHING = _Nothing()
NO_SPAN: Span = _NOTHING  # what an operation has when no tracer provider is set


@dataclass(frozen=True, slots=True)
class Metric:
    """One instrument as docs/observability.md describes it."""

    name: str
    unit: str
    description: str
    kind: str  # counter or histogram


CATALOGUE: list[Metric] = []
_meter = None if _metrics is None else _metrics.get_meter(SCOPE)
_tracer = None if _trace is None else _trace.get_tracer(SCOPE)


def _counter(name: str, unit: str, description: str) -> Counter:
    CATALOGUE.append(Metric(name, unit, description, "counter"))
    if _meter is None:
        return _NOTHING
    return _meter.create_counter(name, unit, description)


def _histogram(name: str, unit: str, description: str, buckets: Sequence[float]) -> Histogram:
    CATALOGUE.append(Metric(name, unit, description, "histogram"))
    if _meter is None:
        return _NOTHING
    try:
        return _meter.create_histogram(
            name, unit, description, explicit_bucket_boundaries_advisory=buckets
        )
    except TypeError:  # opentelemetry-api before 1.23 takes no advice: the SDK's buckets
        return _meter.create_histogram(name, unit, description)


# The SDK's default buckets are for milliseconds; these are seconds and bytes.
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BYTES = (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)

OPERATION_DURATION = _histogram(
    "vimbiso_state.operation.duration",
    "s",
    "How long an operation took: a one-call operation, a whole `state.message` block (the "
    "time the user was held), or an effect (its run included)",
    SECONDS,
)
MESSAGES = _counter(
    "vimbiso_state.messages",
    "{message}",
    "WhatsApp messages handled with `state.message`, by outcome: committed, duplicate, "
    "rolled_back (the handler raised, nothing stored) or failed (error.type says why)",
)
DUPLICATES = _counter(
    "vimbiso_state.duplicates",
    "{delivery}",
    "Deliveries of a message id handled before (`state.message` or `handle_once`): not applied",
)
WRITES_LOST = _counter(
    "vimbiso_state.writes.lost",
    "{operation}",
    "One-call writes whose hold on the user was taken (a reset or a failover) before they "
    "committed: ConcurrencyConflict, nothing stored",
)
REDIS_RETRIES = _counter(
    "vimbiso_state.redis.retries",
    "{retry}",
    "Redis calls sent again after a connection error or a timeout (error.type)",
)
LEASE_WAIT = _histogram(
    "vimbiso_state.lease.wait",
    "s",
    "How long a message or a one-call write waited for the user's previous message to end "
    "(recorded only when it had to wait, UserBusy included)",
    SECONDS,
)
USER_BUSY = _counter(
    "vimbiso_state.user_busy",
    "{operation}",
    "Operations refused with UserBusy: the user's previous message did not end in lease_wait",
)
EFFECTS = _counter(
    "vimbiso_state.effects",
    "{effect}",
    "Effects by outcome: run (first time), replayed (its recorded result returned), in_doubt "
    "(EffectInDoubt), lease_lost, settled (`msg.settle`)",
)
EXPIRIES = _counter(
    "vimbiso_state.expiries",
    "{expiry}",
    "Expiries the user was told about, by kind: session, form, or token (a stored token read "
    "past its deadline)",
)
STATE_LOST = _counter(
    "vimbiso_state.state_lost",
    "{conversation}",
    "Conversations found with a part missing or damaged before its deadline (evicted by "
    "allkeys-lru, or corrupt): the user was told",
)
UNAVAILABLE = _counter(
    "vimbiso_state.unavailable",
    "{operation}",
    "Operations that failed with StateUnavailable: Redis down, hung, full or refusing",
)
EXPIRATIONS = _counter(
    "vimbiso_state.expirations",
    "{event}",
    "Expiry events handed to a consumer, by kind (form, session) and delivery: on_time, late "
    "(more than a minute after the deadline) or redelivered (a consumer before failed or died)",
)
EXPIRATION_DELAY = _histogram(
    "vimbiso_state.expiration.delay",
    "s",
    "How long after its deadline an expiry event was handed out: the polling interval, more "
    "when consumers fall behind",
    SECONDS,
)
PART_SIZE = _histogram(
    "vimbiso_state.stored_part.size",
    "By",
    "Bytes of each stored document (critical, session, form) as encoded for a write",
    BYTES,
)


class _Providers:
    """Whether the bot has set a tracer provider and a meter provider. Until it has, an
    operation starts no span and the hot path records no metric (even the API's no-ops cost a
    call each). Set once, a provider cannot be unset; until both are, the globals are looked
    at (``look``) at most once a second, as operations start."""

    tracing = False
    metering = False
    next_look = 0.0


PROVIDERS = _Providers()


def look(now: float) -> None:
    """Refresh PROVIDERS; ``now`` is time.monotonic()."""
    if now < PROVIDERS.next_look:
        return
    if _trace is None or _metrics is None:
        PROVIDERS.next_look = float("inf")
        return
    PROVIDERS.tracing = not isinstance(_trace.get_tracer_provider(), _trace.ProxyTracerProvider)
    # The API's stand-in meter provider is a private class: should a release rename it,
    # metrics are recorded always (a little slower), never lost.
    PROVIDERS.metering = type(_metrics.get_meter_provider()).__name__ != "_ProxyMeterProvider"
    done = PROVIDERS.tracing and PROVIDERS.metering
    PROVIDERS.next_look = float("inf") if done else now + 1.0


def start_span(name: str, attributes: Attributes, parent: Span | None = None) -> Span:
    """A span for one operation, a child of ``parent`` or of the current span (only worth
    calling when ``PROVIDERS.tracing``)."""
    if _tracer is None:
        return _NOTHING
    context = None if parent is None else _trace.set_span_in_context(parent)  # type: ignore[arg-type]
    return _tracer.start_span(name, context, attributes=attributes)  # type: ignore[union-attr]


def context_of(span: Span) -> object | None:
    """The context that makes ``span`` current (redis-py's own instrumentation then nests its
    spans in it), or None when making it current would change nothing."""
    if span is _NOTHING:
        return None
    # A no-op span (a no-op provider) is the caller's own, or the invalid one.
    if not span.get_span_context().is_valid:  # type: ignore[attr-defined]
        return None
    return _trace.set_span_in_context(span)  # type: ignore[arg-type]


def attach(context: object | None) -> object | None:
    """Make ``context`` (from ``context_of``) current; a token for ``detach``."""
    if context is None:
        return None
    return _context.attach(context)  # type: ignore[arg-type]


def detach(token: object | None) -> None:
    if token is not None:
        _context.detach(token)  # type: ignore[arg-type]


def set_error(span: Span, error_type: str) -> None:
    """Mark the span failed. The type only: an error's message may quote user input."""
    if span is _NOTHING:
        return
    span.set_attribute(ERROR_TYPE, error_type)
    if _trace is not None:
        status: Any = _trace.Status(_trace.StatusCode.ERROR, error_type)
        span.set_status(status)  # type: ignore[attr-defined]
