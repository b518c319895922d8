"""The spans an OpenTelemetry Collector received, read back from its log (the debug exporter at ``detailed``
verbosity prints each span with its ids, times, status and attributes), for the tests that compare them with a
journal: the integration test on the real kube-apiserver and the end-to-end test in the sandbox."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from chaoscontour_sandbox.process import Process

__all__ = ["MS", "RUN_ID", "ExportedSpan", "exported_spans", "go_time_ns", "journal_ns", "wait_for_spans"]

RUN_ID = "chaoscontour.run.id"
# One millisecond, in nanoseconds: how close an exported time must be to the journal's.
MS = 1_000_000


@dataclass
class ExportedSpan:
    """One span as the Collector's debug exporter printed it."""

    name: str = ""
    trace_id: str = ""
    parent_id: str = ""
    span_id: str = ""
    start_ns: int = 0
    end_ns: int = 0
    status: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


_FIELD = re.compile(r"^ {4}([A-Za-z ]+?) *: ?(.*)$")
_ATTRIBUTE = re.compile(r"^ +-> ([^:]+): \w+\((.*)\)$")


def go_time_ns(text: str) -> int:
    """Epoch nanoseconds of Go's ``time.Time.String()`` in UTC (``2026-12-06 06:21:20.2 +0000 UTC``)."""
    moment, _, zone = text.strip().partition(" +0000")
    assert zone == " UTC", text
    whole, _, fraction = moment.partition(".")
    seconds = int(datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp())
    return seconds * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))


def exported_spans(log: str) -> list[ExportedSpan]:
    """Every span of the Collector's log (its resource attributes left out)."""
    spans: list[ExportedSpan] = []
    current: ExportedSpan | None = None
    in_attributes = False
    for line in log.splitlines():
        if line.startswith("Span #"):
            current, in_attributes = ExportedSpan(), False
            spans.append(current)
        elif "ResourceSpans #" in line or line.startswith("ScopeSpans #"):
            current, in_attributes = None, False
        elif current is not None and line == "Attributes:":
            in_attributes = True
        elif current is not None and in_attributes and (found := _ATTRIBUTE.match(line)):
            current.attributes[found.group(1)] = found.group(2)
        elif current is not None and not in_attributes and (found := _FIELD.match(line)):
            key, value = found.group(1), found.group(2).strip()
            if key == "Name":
                current.name = value
            elif key == "Trace ID":
                current.trace_id = value
            elif key == "Parent ID":
                current.parent_id = value
            elif key == "ID":
                current.span_id = value
            elif key == "Start time":
                current.start_ns = go_time_ns(value)
            elif key == "End time":
                current.end_ns = go_time_ns(value)
            elif key == "Status code":
                current.status = value
    return spans


def journal_ns(iso: str) -> int:
    moment = datetime.fromisoformat(iso)
    return int(moment.replace(microsecond=0).timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def wait_for_spans(
    log: Path, run_id: str, count: int, proc: Process | None, timeout_s: float = 15.0
) -> list[ExportedSpan]:
    """The ``count`` spans of run ``run_id`` in the Collector's ``log``, once they are all there; ``proc``, the
    Collector when the caller started it, must keep running meanwhile."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = log.read_text(errors="replace")
        found = [s for s in exported_spans(text) if s.attributes.get(RUN_ID) == run_id]
        if len(found) >= count:
            return found
        assert proc is None or proc.running, f"the Collector exited:\n{proc.tail() if proc else ''}"
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(found)} of the run's {count} spans in the Collector's log:\n{text[-4000:]}")
        time.sleep(0.2)
