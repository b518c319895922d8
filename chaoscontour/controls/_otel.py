"""The OpenTelemetry SDK side of the traces control: a tracer provider whose spans leave in one bounded export.

Imported only when the control is configured, so that ``chaoscontour.controls.traces`` imports without the SDK and
says what to install instead of failing with a bare ``ImportError``.

Why a processor of our own rather than the SDK's ``BatchSpanProcessor``: every span of a run is made at its end,
from the journal, so there is exactly one batch; and the SDK's ``force_flush`` (1.38) ignores its timeout and
exports in the caller's thread, while an endpoint that drops packets holds a request for the exporter's whole
timeout. :class:`OneBatch` exports in a daemon thread and waits at most the given time, so an unreachable endpoint
can neither fail the run nor hold the process at exit. The OTLP exporter's own log lines (a retry, a refused batch)
are kept out of the run's output and folded into the one warning the control logs.
"""

from __future__ import annotations

import logging
import threading

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode, format_trace_id

from chaoscontour import __version__
from chaoscontour.controls.spans import RunSpans, SpanPlan

__all__ = ["EXPORTER_LOGGER", "OneBatch", "emit", "tracer_provider"]

# The logger of opentelemetry-exporter-otlp-proto-http's span exporter (its module's name).
EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
SCOPE = "chaoscontour.controls.traces"


class _Held(logging.Filter):
    """Keeps the exporter's log records out of the output, remembering the last one's message."""

    def __init__(self) -> None:
        super().__init__()
        self.last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        self.last = record.getMessage()
        return False


class OneBatch(SpanProcessor):
    """Holds the ended spans; :meth:`force_flush` exports them in one call and waits for it at most its timeout.

    After a flush, :attr:`failure` says why the spans did not arrive (``None`` when they did)."""

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter
        self._spans: list[ReadableSpan] = []
        self._lock = threading.Lock()
        self.failure: str | None = None

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            self._spans.append(span)

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        with self._lock:
            batch, self._spans = self._spans, []
        if not batch:
            return True
        outcome: list[str | None] = []
        held = _Held()

        def export() -> None:
            exporter_log = logging.getLogger(EXPORTER_LOGGER)
            exporter_log.addFilter(held)
            try:
                result = self._exporter.export(batch)
                outcome.append(None if result is SpanExportResult.SUCCESS else held.last or "the endpoint refused them")
            except Exception as exc:  # the exporter lets a connection error out; it must not reach the run
                outcome.append(f"{type(exc).__name__}: {exc}")
            finally:
                exporter_log.removeFilter(held)

        worker = threading.Thread(target=export, name="chaoscontour-traces-export", daemon=True)
        worker.start()
        worker.join(timeout_millis / 1000)
        self.failure = outcome[0] if outcome else f"no answer within {round(timeout_millis / 1000, 1):g} s"
        return self.failure is None


def tracer_provider(endpoint: str, service_name: str, timeout_s: float) -> tuple[TracerProvider, OneBatch]:
    """A tracer provider (not the global one: a process may run several experiments) exporting to ``endpoint``
    (OTLP over HTTP, with ``OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`` as the exporter reads them) as ``service_name``."""
    batch = OneBatch(OTLPSpanExporter(endpoint=endpoint, timeout=timeout_s))
    resource = Resource.create({SERVICE_NAME: service_name, SERVICE_VERSION: __version__})
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(batch)
    return provider, batch


def _end(span: trace.Span, plan: SpanPlan) -> None:
    if plan.error is not None:
        span.set_status(Status(StatusCode.ERROR, plan.error))
    span.end(end_time=plan.end_ns)


def emit(provider: TracerProvider, spans: RunSpans) -> str:
    """Make ``spans`` with ``provider`` (explicit times, every child parented on the root, whatever thread or context
    this runs in); return the trace id (32 hex digits)."""
    tracer = provider.get_tracer(SCOPE, __version__)
    root = tracer.start_span(
        spans.root.name, context=Context(), start_time=spans.root.start_ns, attributes=spans.root.attributes
    )
    parent = trace.set_span_in_context(root)
    for plan in spans.children:
        child = tracer.start_span(plan.name, context=parent, start_time=plan.start_ns, attributes=plan.attributes)
        _end(child, plan)
    _end(root, spans.root)
    return format_trace_id(root.get_span_context().trace_id)
