"""The OpenTelemetry SDK that the suite records into, as a bot would configure it.

OpenTelemetry lets a process set its global providers once, so tests/conftest.py installs
these at the start of the run: every test then runs the library with a recording SDK, and
the telemetry tests read what one scenario recorded (``Figures.take`` empties the reader:
delta temporality) and which spans it ended (``spans``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

SCOPE = "vimbiso_state"
_DELTA = AggregationTemporality.DELTA
READER = InMemoryMetricReader(
    preferred_temporality={
        kind: _DELTA
        for kind in (
            Counter,
            Histogram,
            UpDownCounter,
            ObservableCounter,
            ObservableGauge,
            ObservableUpDownCounter,
        )
    }
)
EXPORTER = InMemorySpanExporter()
_installed = False


def install() -> None:
    """Set the global meter and tracer providers (once per process)."""
    global _installed
    if _installed:
        return
    metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(tracing)
    _installed = True


Key = tuple[str, frozenset[tuple[str, Any]]]


@dataclass
class Figures:
    """What the library recorded between two readings: each counter's sum and each
    histogram's count, sum and largest value, by metric name and attributes."""

    totals: dict[Key, float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[Key, int] = field(default_factory=lambda: defaultdict(int))
    largest: dict[Key, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)

    @classmethod
    def take(cls) -> Figures:
        """Everything recorded since the last ``take`` (and forget it)."""
        figures = cls()
        data = READER.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                if scope.scope.name != SCOPE:
                    continue
                for metric in scope.metrics:
                    figures.units[metric.name] = metric.unit or ""
                    for point in metric.data.data_points:
                        key = (metric.name, frozenset(dict(point.attributes or {}).items()))
                        if isinstance(point, HistogramDataPoint):
                            figures.totals[key] += point.sum
                            figures.counts[key] += point.count
                            figures.largest[key] = max(figures.largest.get(key, 0.0), point.max)
                        else:
                            assert isinstance(point, NumberDataPoint)
                            figures.totals[key] += point.value
        return figures

    def _matching(self, name: str, attributes: Mapping[str, Any] | None) -> list[Key]:
        wanted = set((attributes or {}).items())
        return [key for key in self.totals if key[0] == name and wanted <= key[1]]

    def total(self, name: str, attributes: Mapping[str, Any] | None = None) -> float:
        """A counter's sum (or a histogram's sum) over the points that have ``attributes``."""
        return sum(self.totals[key] for key in self._matching(name, attributes))

    def count(self, name: str, attributes: Mapping[str, Any] | None = None) -> int:
        """A histogram's number of recordings over the points that have ``attributes``."""
        return sum(self.counts[key] for key in self._matching(name, attributes))

    def by(self, name: str, attribute: str) -> dict[Any, float]:
        """A counter's sums split by one attribute."""
        split: dict[Any, float] = defaultdict(float)
        for (metric, attributes), value in self.totals.items():
            if metric == name:
                split[dict(attributes).get(attribute)] += value
        return dict(split)

    def names(self) -> set[str]:
        return {name for name, _ in self.totals}


def spans() -> list[ReadableSpan]:
    """The spans ended since the last ``clear_spans``."""
    return list(EXPORTER.get_finished_spans())


def clear_spans() -> None:
    EXPORTER.clear()
