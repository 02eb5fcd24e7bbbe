"""docs/observability.md as written: the bot's SDK setup exports the library's metrics and
spans over OTLP (to a stand-in collector here), the collector and Prometheus configurations
hold together, the metrics table is the catalogue, and every Prometheus name it uses exists."""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from doc_examples import ROOT, block_after
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from vimbiso_state.adapters.otel import CATALOGUE

DOC = ROOT / "docs" / "observability.md"
TEXT = DOC.read_text(encoding="utf-8")


class _Collector(http.server.BaseHTTPRequestHandler):
    """The OTLP/HTTP receiver of a collector: keeps what each path was sent."""

    received: dict[str, list[bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.setdefault(self.path, []).append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, dict[str, list[bytes]]]]:
    received: dict[str, list[bytes]] = {}
    handler = type("Handler", (_Collector,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    thread.join()


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("STATE_", "OTEL_"))}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**environ, **env},
        timeout=120,
        cwd=Path(__file__).parent,
    )


@pytest.mark.slow
def test_the_bot_setup_exports_the_librarys_metrics_and_spans_to_the_collector(
    collector: tuple[str, dict[str, list[bytes]]],
) -> None:
    endpoint, received = collector
    conversation = textwrap.dedent(
        """
        phone = "+263771234567"
        with state.message(phone, "wamid.1", "hi") as msg:
            msg.conversation.navigate("handle_action_offer_credex")
            msg.effect("create_credex", lambda: {"credexID": "c-1"})
        metrics.get_meter_provider().shutdown()  # as at the process's exit: flush
        trace.get_tracer_provider().shutdown()
        """
    )
    done = _run(
        block_after(DOC, "## The bot's side") + conversation,
        STATE_BACKEND="memory",
        STATE_TELEMETRY_SALT="deployment-secret",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
    )
    assert done.returncode == 0, done.stderr
    names: set[str] = set()
    for body in received["/v1/metrics"]:
        request = ExportMetricsServiceRequest.FromString(body)
        for resource in request.resource_metrics:
            service = {a.key: a.value.string_value for a in resource.resource.attributes}
            assert service["service.name"] == "vimbisopay-bot"
            for scope in resource.scope_metrics:
                names |= {metric.name for metric in scope.metrics}
    assert {"vimbiso_state.messages", "vimbiso_state.effects"} <= names
    spans = [
        span
        for body in received["/v1/traces"]
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert {"vimbiso_state.message", "vimbiso_state.effect"} <= {span.name for span in spans}
    for span in spans:
        for attribute in span.attributes:
            assert "263771234567" not in attribute.value.string_value


def test_the_logging_example_shows_the_long_waits() -> None:
    done = _run(
        block_after(DOC, "To see the long waits")
        + textwrap.dedent(
            """
            import logging
            telemetry = logging.getLogger("vimbiso_state.services.telemetry")
            assert telemetry.isEnabledFor(logging.INFO)
            assert not telemetry.isEnabledFor(logging.DEBUG)
            """
        )
    )
    assert done.returncode == 0, done.stderr


def _yaml_blocks() -> dict[str, dict[str, object]]:
    blocks = re.findall(r"```yaml\n(# (\S+)\n.*?)```", TEXT, re.DOTALL)
    return {name: yaml.safe_load(source) for source, name in blocks}


def test_the_collector_configuration_wires_what_it_defines_and_prometheus_scrapes_it() -> None:
    blocks = _yaml_blocks()
    config = blocks["otel-collector.yaml"]
    assert isinstance(config, dict)
    pipelines = config["service"]["pipelines"]  # type: ignore[index]
    assert set(pipelines) == {"metrics", "traces"}
    for pipeline in pipelines.values():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline[kind]) <= set(config[kind]), (kind, pipeline)  # type: ignore[literal-required]
    assert pipelines["metrics"]["exporters"] == ["prometheus"]
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")  # type: ignore[index]
    port = config["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]  # type: ignore[index]
    [job] = blocks["prometheus.yml"]["scrape_configs"]  # type: ignore[index]
    assert job["static_configs"][0]["targets"] == [f"otel-collector:{port}"]


def test_the_metrics_table_is_the_catalogue() -> None:
    table = TEXT.split("## Metrics\n")[1].split("\n## ")[0]
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| `")]
    documented = {
        row[0].strip().strip("`"): (row[1].strip(), row[2].strip().strip("`")) for row in rows
    }
    assert documented == {metric.name: (metric.kind, metric.unit) for metric in CATALOGUE}


def _prometheus_names() -> set[str]:
    """What the collector's Prometheus exporter calls each metric and attribute."""
    suffix = {"s": "_seconds", "By": "_bytes"}
    names = set()
    for metric in CATALOGUE:
        base = metric.name.replace(".", "_") + suffix.get(metric.unit, "")
        if metric.kind == "counter":
            names.add(f"{base}_total")
        else:
            names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    import vimbiso_state.adapters.otel as otel

    attributes = [value for name, value in vars(otel).items() if name.isupper()]
    names |= {a.replace(".", "_") for a in attributes if isinstance(a, str) and "." in a}
    return names


def test_every_prometheus_name_in_the_panels_and_alerts_exists() -> None:
    used = set(re.findall(r"\bvimbiso_state_[a-z_]+", TEXT))
    assert used, "the panels and alerts name no metric"
    assert used <= _prometheus_names(), used - _prometheus_names()
