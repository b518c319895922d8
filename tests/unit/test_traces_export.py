"""The traces control's export, in process, against local sockets: the hooks as chaostoolkit calls them, the headers
sent and never logged, and the bound on an endpoint that never answers. (The real Collector and the real ``chaos run``
are in tests/integration/test_traces.py.)
"""

from __future__ import annotations

import copy
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from chaoscontour.controls import _otel, traces
from chaoscontour.controls.spans import RUN_ID, run_spans
from tests.support.paths import FIXTURES

HEADER_VALUE = "s3cret-api-key-value"


class Intake(ThreadingHTTPServer):
    """An OTLP/HTTP endpoint that keeps what it is sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[dict[str, str], ExportTraceServiceRequest]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Intake

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((dict(self.headers), ExportTraceServiceRequest.FromString(body)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def intake() -> Iterator[Intake]:
    server = Intake()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent() -> Iterator[str]:
    """A loopback port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def journal() -> dict[str, Any]:
    return dict(json.loads((FIXTURES / "journals" / "xds-blackhole.json").read_text(encoding="utf-8")))


def test_the_hooks_export_the_runs_spans_with_the_headers_and_record_the_run_in_the_journal(
    intake: Intake, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", intake.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"api-key={HEADER_VALUE}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "shop-gameday")
    caplog.set_level(logging.DEBUG)
    state = journal()
    traces.configure_control(experiment=state["experiment"])
    traces.after_experiment_control(context=state["experiment"], state=state, secrets=None)
    traces.cleanup_control()

    record = state[traces.JOURNAL_KEY]
    assert record["exported"] is True
    assert record["service_name"] == "shop-gameday"
    assert record["endpoint"] == f"{intake.url}/v1/traces"
    [(headers, request)] = intake.requests
    assert headers["api-key"] == HEADER_VALUE
    assert headers["Content-Type"] == "application/x-protobuf"
    [resource_spans] = request.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "shop-gameday"
    exported = [span for scope in resource_spans.scope_spans for span in scope.spans]
    expected = run_spans(journal(), record["run_id"])
    assert len(exported) == record["spans"] == 1 + len(expected.children)
    assert {span.trace_id.hex() for span in exported} == {record["trace_id"]}
    for span in exported:
        assert {a.key: a.value.string_value for a in span.attributes}[RUN_ID] == record["run_id"]
    window = next(span for span in exported if span.name == "fault window")
    planned = next(plan for plan in expected.children if plan.name == "fault window")
    assert (window.start_time_unix_nano, window.end_time_unix_nano) == (planned.start_ns, planned.end_ns)
    # The headers are never logged, at any level.
    assert HEADER_VALUE not in caplog.text
    assert [r.getMessage() for r in caplog.records if r.name == "chaostoolkit" and r.levelno >= logging.WARNING] == []


def test_without_configure_the_after_hook_does_nothing() -> None:
    state = journal()
    before = copy.deepcopy(state)
    traces.cleanup_control()
    traces.after_experiment_control(context=state["experiment"], state=state)
    assert state == before


def test_an_endpoint_that_never_answers_costs_one_warning_and_at_most_the_flush_bound(
    silent: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", silent + "/v1/traces")
    monkeypatch.setattr(traces, "EXPORT_TIMEOUT_S", 0.5)
    caplog.set_level(logging.INFO)
    state = journal()
    traces.configure_control()
    started = time.monotonic()
    traces.after_experiment_control(context=state["experiment"], state=state)
    took_s = time.monotonic() - started
    traces.cleanup_control()
    assert took_s < traces.FLUSH_TIMEOUT_S
    assert state[traces.JOURNAL_KEY]["exported"] is False
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.startswith(f"traces: the {state[traces.JOURNAL_KEY]['spans']} spans of run ")
    assert f"did not reach {silent}/v1/traces (ReadTimeout" in warning


def test_the_flush_gives_up_at_its_bound_even_when_the_exporter_would_wait_longer(silent: str) -> None:
    provider, batch = _otel.tracer_provider(silent + "/v1/traces", "t", timeout_s=30.0)
    assert isinstance(batch._exporter, OTLPSpanExporter)
    _otel.emit(provider, run_spans(journal(), "r"))
    started = time.monotonic()
    assert provider.force_flush(500) is False
    assert time.monotonic() - started < 2.0
    assert batch.failure == "no answer within 0.5 s"
    provider.shutdown()
