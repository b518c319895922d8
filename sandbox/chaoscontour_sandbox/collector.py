"""An OpenTelemetry Collector that keeps every span it receives in its log: the trace backend of the traces control.

The pinned ``otelcol`` (:mod:`chaoscontour_sandbox.builds` makes it with the collector's builder from core components
only) receives OTLP over HTTP on loopback and hands each batch to the debug exporter at ``detailed`` verbosity, which
writes every span -- trace and parent ids, name, start and end times, status and attributes -- to the Collector's
output, here ``DIR/logs/otelcol.log``. No storage and no query API: the log is the record, and a test reads it.

The Collector's own metrics are off (they would otherwise listen on port 8888, which a second Collector, or anything
else on the machine, may hold).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from chaoscontour_sandbox import binaries
from chaoscontour_sandbox.process import Process, free_port

__all__ = ["CONFIG_FILE", "LOG_FILE", "collector_config", "start_collector"]

CONFIG_FILE = "otelcol.yaml"
LOG_FILE = "otelcol.log"
# The batch processor's wait before it hands spans on: short, so a run's spans are in the log a moment after export.
BATCH_TIMEOUT = "200ms"


def collector_config(host: str, port: int) -> dict[str, Any]:
    """The Collector's configuration: OTLP/HTTP on ``host:port``, batched, to the debug exporter (``detailed``)."""
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"{host}:{port}"}}}},
        "processors": {"batch": {"timeout": BATCH_TIMEOUT}},
        "exporters": {"debug": {"verbosity": "detailed"}},
        "service": {
            "telemetry": {"metrics": {"level": "none"}},
            "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["debug"]}},
        },
    }


def start_collector(directory: Path, *, port: int = 0, timeout_s: float = 30.0) -> tuple[Process, str]:
    """Start the pinned Collector with its configuration in ``directory`` and its output in ``directory/logs``;
    return the process and its OTLP endpoint (``http://127.0.0.1:PORT``, what ``OTEL_EXPORTER_OTLP_ENDPOINT``
    takes) once its receiver answers. ``port`` 0 picks a free one.

    Raises :class:`chaoscontour_sandbox.binaries.BinaryNotFound` (saying how to build it) when ``otelcol`` is not
    built, and :class:`chaoscontour_sandbox.process.ProcessExited` or ``ProcessTimeout`` (with the log's tail) when it
    does not come up; the process is stopped then."""
    program = binaries.ensure_binaries(["otelcol"], build=False)["otelcol"]
    host = "127.0.0.1"
    port = port or free_port(host)
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / CONFIG_FILE
    config.write_text(yaml.safe_dump(collector_config(host, port), sort_keys=False))
    endpoint = f"http://{host}:{port}"
    proc = Process.start("otelcol", [str(program), f"--config={config}"], directory / "logs" / LOG_FILE)

    def answers() -> bool:
        # The receiver takes only POST: a 405 to a GET says it listens.
        try:
            with urllib.request.urlopen(f"{endpoint}/v1/traces", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except (urllib.error.URLError, OSError):
            return False

    try:
        proc.wait_ready(answers, timeout_s, what=f"its OTLP receiver at {endpoint}")
    except BaseException:
        proc.stop(5.0)
        raise
    return proc, endpoint
