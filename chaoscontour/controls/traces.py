"""A Chaos Toolkit control that exports each run's OpenTelemetry spans to an OTLP endpoint (docs/traces.md).

Declare it in an experiment (or in chaostoolkit's settings, for every run)::

    "controls": [{"name": "traces", "provider": {"type": "python", "module": "chaoscontour.controls.traces"}}]

and install the SDK with ``pip install 'chaostoolkit-contour[traces]'``. The endpoint is the OpenTelemetry SDK's
own: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as it is, else ``OTEL_EXPORTER_OTLP_ENDPOINT`` plus ``/v1/traces``, else
``http://localhost:4318/v1/traces`` (OTLP over HTTP, protobuf); headers (an API key) from
``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` or ``OTEL_EXPORTER_OTLP_HEADERS``, never logged; the service name from
``OTEL_SERVICE_NAME``, else ``chaoscontour``.

What it exports, at the end of the run, from the journal (:mod:`chaoscontour.controls.spans`): a root
``experiment`` span, one span per activity with its real start and end (background ones too: they run in threads,
and their spans are made from the run records with explicit times and the root as parent, never from a thread's
current context), and a ``fault window`` span from each block to the end of the unblock that removed it. Every span
carries the run's id, which the journal also gets, under ``traces`` (with the trace id and whether the export
arrived). The export waits at most :data:`FLUSH_TIMEOUT_S`; an endpoint that is down or refuses the spans costs one
warning line and never fails or holds up the run.

Why not chaostoolkit-opentracing's OpenTelemetry control (``chaostracing.oltp``): it depends on 48 packages
(grpcio, google-cloud-trace, cloud propagators and detectors among them) that pip only resolves with a constraint
file; it never ends the ``method`` span of an interrupted run (a stop condition's SystemExit skips the event that
ends it), so the activities' spans point at a parent that is never exported; and it has no span for the fault
window, the one interval a chaoscontour run is about.

Hooks (chaostoolkit-lib calls them; an exception they raise is swallowed, so each failure is logged here):
``configure_control`` sets up the exporter and the run's id, ``after_experiment_control`` (which chaoslib calls
after an interrupted run too) builds, exports and flushes the spans, ``cleanup_control`` shuts the exporter down.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chaoslib.types import Configuration, Experiment, Journal, Secrets, Settings

from chaoscontour.controls.spans import run_spans, secret_values
from chaoscontour.tools.journal import redact

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from chaoscontour.controls._otel import OneBatch

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_SERVICE_NAME",
    "EXPORT_TIMEOUT_S",
    "FLUSH_TIMEOUT_S",
    "INSTALL_HINT",
    "JOURNAL_KEY",
    "after_experiment_control",
    "cleanup_control",
    "configure_control",
    "service_name",
    "traces_endpoint",
]

logger = logging.getLogger("chaostoolkit")

DEFAULT_ENDPOINT = "http://localhost:4318"
TRACES_PATH = "/v1/traces"
DEFAULT_SERVICE_NAME = "chaoscontour"
# One HTTP request's bound (the exporter tries a refused connection twice), and the wait for the whole export.
EXPORT_TIMEOUT_S = 5.0
FLUSH_TIMEOUT_S = 12.0
JOURNAL_KEY = "traces"
INSTALL_HINT = "pip install 'chaostoolkit-contour[traces]'"
_ERRNO = re.compile(r"\[Errno -?\d+\][^'\")]*")
MAX_REASON_CHARS = 240


def traces_endpoint(environ: Mapping[str, str]) -> str:
    """Where the spans go, as the OpenTelemetry SDK's OTLP/HTTP exporter reads its environment."""
    explicit = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if explicit:
        return explicit
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or DEFAULT_ENDPOINT
    return base.rstrip("/") + TRACES_PATH


def service_name(environ: Mapping[str, str]) -> str:
    """``OTEL_SERVICE_NAME``, else ``chaoscontour``."""
    return environ.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME


@dataclass
class _Tracing:
    run_id: str
    endpoint: str
    service: str
    provider: TracerProvider
    batch: OneBatch


_lock = threading.Lock()
_tracing: _Tracing | None = None


def _reason(text: str) -> str:
    """A failure's reason in one short line: the OS error of a connection that failed, else the text, redacted."""
    errno = _ERRNO.search(text)
    reason = errno.group(0).strip() if errno else " ".join(text.split())
    reason = redact(reason)
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"


def _shutdown(tracing: _Tracing | None) -> None:
    if tracing is None:
        return
    try:
        tracing.provider.shutdown()
    except Exception as exc:
        logger.debug(f"traces: shutting the exporter down failed: {exc}")


def configure_control(
    experiment: Experiment = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
    settings: Settings = None,
) -> None:
    """Set up the exporter for this run and give the run its id. Without the SDK, log an error that says what to
    install; the run then goes on without spans."""
    global _tracing
    with _lock:
        previous, _tracing = _tracing, None
    _shutdown(previous)
    try:
        from chaoscontour.controls import _otel
    except ImportError as exc:
        logger.error(f"traces: the OpenTelemetry SDK is missing ({exc}), so this run exports no spans: {INSTALL_HINT}")
        return
    endpoint, service = traces_endpoint(os.environ), service_name(os.environ)
    try:
        provider, batch = _otel.tracer_provider(endpoint, service, EXPORT_TIMEOUT_S)
    except Exception as exc:
        logger.error(f"traces: cannot set up the export to {redact(endpoint)}, so this run exports no spans: {exc}")
        return
    tracing = _Tracing(uuid.uuid4().hex, endpoint, service, provider, batch)
    with _lock:
        _tracing = tracing
    logger.info(f"traces: run {tracing.run_id}: its spans go to {redact(endpoint)} as service {service!r}")


def after_experiment_control(context: Experiment, state: Journal, secrets: Secrets = None, **kwargs: Any) -> None:
    """Build the run's spans from the journal (``state``), export them and wait for the export (at most
    :data:`FLUSH_TIMEOUT_S`); record the run's id, the trace id and the outcome in the journal under ``traces``."""
    with _lock:
        tracing = _tracing
    if tracing is None or not isinstance(state, dict):
        return
    from chaoscontour.controls import _otel

    endpoint = redact(tracing.endpoint)
    try:
        spans = run_spans(state, tracing.run_id, secret_values(secrets))
        trace_id = _otel.emit(tracing.provider, spans)
        count = 1 + len(spans.children)
        record: dict[str, Any] = {"run_id": tracing.run_id, "trace_id": trace_id, "service_name": tracing.service}
        record.update({"endpoint": endpoint, "spans": count, "exported": False})
        state[JOURNAL_KEY] = record
        if tracing.provider.force_flush(int(FLUSH_TIMEOUT_S * 1000)):
            record["exported"] = True
            logger.info(f"traces: {count} spans of run {tracing.run_id} (trace {trace_id}) exported to {endpoint}")
        else:
            logger.warning(
                f"traces: the {count} spans of run {tracing.run_id} did not reach {endpoint} "
                f"({_reason(tracing.batch.failure or 'unknown')}); the run itself is not affected"
            )
    except Exception as exc:
        logger.warning(f"traces: no spans exported for run {tracing.run_id}: {_reason(f'{type(exc).__name__}: {exc}')}")


def cleanup_control() -> None:
    """Shut the exporter down (what it still held was flushed at the experiment's end)."""
    global _tracing
    with _lock:
        tracing, _tracing = _tracing, None
    _shutdown(tracing)
