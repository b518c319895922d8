"""What the endpoint-churn and xDS probes recorded, placed on the report's time axis next to availability.

Pure: from a parsed journal and the plot's origin (epoch seconds of offset 0) it computes

- ``events``: moments to mark, with a sentence each: a backend pod killed (chaostoolkit-kubernetes'
  ``terminate_pods``), each reading of Envoy's view of the backend (``envoy_backend_view``) set against the
  EndpointSlices, each endpoint push Envoy accepted (its EDS ``update_time``, read by those probes), when Envoy's
  endpoints matched the slices again and when requests converged (``envoy_endpoints_converged``); when Envoy noticed
  the dead xDS stream, reconnected and was current again (``envoy_xds_timeline``); each route change of the
  propagation probe and when Envoy served it;
- ``spans``: intervals drawn as bars in their own lane: Envoy's xDS stream connected or not (the timeline's gauge
  readings), a route change from its write to when Envoy served it (or for as long as it was held back), the
  interval in which the EndpointSlices changed (the probes read them only at their readings), and the time Envoy
  routed to an endpoint list the slices no longer had;
- ``update_age``: the age of Envoy's configuration (seconds since its last accepted CDS/LDS update) over the xDS
  timeline, a saw-tooth through the updates its readings saw and the ``update_time`` of the steady-state probes;
- ``counters``: Envoy's counters for the backend by cause, during the fault, after the heal and over the whole
  episode, and the probes' ``failure_causes`` sentences.

This module holds that vocabulary and the :class:`TrackBuilder` both parts write into;
:mod:`chaoscontour.tools.churn_track` reads the endpoint-churn probes, :mod:`chaoscontour.tools.xds_track` the xDS
and route probes, and :func:`chaoscontour.tools.timeline.report_data` puts them on the report's axis.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chaoscontour.tools.journal import chaoscontour_func, epoch_of, exception_text, number, steady_state_runs

__all__ = [
    "LANE_ENDPOINTS",
    "LANE_GAUGE",
    "LANE_NAMES",
    "LANE_RESTARTED",
    "LANE_ROUTE",
    "LANE_SLICES",
    "LANE_XDS",
    "CounterRow",
    "Event",
    "Span",
    "TrackBuilder",
    "Tracks",
    "epoch_s_of_ms",
    "seconds_text",
    "steady_state_runs_of",
]

LANE_ENDPOINTS = "endpoints"
LANE_SLICES = "slices"
LANE_XDS = "xds"
LANE_GAUGE = "xds-gauge"
LANE_ROUTE = "route"
LANE_RESTARTED = "restarted-envoy"
# Each lane as the plot's axis and the HTML page name it.
LANE_NAMES = {
    LANE_SLICES: "EndpointSlices",
    LANE_ENDPOINTS: "Envoy endpoints",
    LANE_XDS: "xDS stream",
    LANE_GAUGE: "xDS gauge",
    LANE_ROUTE: "route change",
    LANE_RESTARTED: "restarted Envoy",
}


@dataclass(frozen=True)
class Event:
    lane: str  # one of LANE_NAMES
    label: str
    epoch_s: float


@dataclass(frozen=True)
class Span:
    lane: str
    start_s: float  # offsets from the plot's origin
    end_s: float
    label: str
    kind: str  # "ok", "bad", "held" or "unknown": the colour it is drawn in


@dataclass(frozen=True)
class CounterRow:
    label: str
    during_fault: int | None
    after_heal: int | None
    whole: int | None


@dataclass(frozen=True)
class Tracks:
    events: tuple[Event, ...] = ()
    spans: tuple[Span, ...] = ()
    lanes: tuple[str, ...] = ()  # the span lanes, top to bottom
    update_age: tuple[tuple[float, float], ...] = ()  # (offset, seconds since Envoy's last accepted update)
    failed_streams_s: tuple[float, ...] = ()  # offsets of readings that counted failed xDS updates
    counters: tuple[CounterRow, ...] = ()
    causes: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (which interval, failure_causes sentences)
    facts: tuple[str, ...] = field(default_factory=tuple)

    @property
    def empty(self) -> bool:
        return not (self.events or self.spans or self.update_age or self.counters or self.facts)


def epoch_s_of_ms(value: Any) -> float | None:
    """Epoch seconds from Envoy's epoch milliseconds; ``None`` for 0 (Envoy's "never") or no number."""
    ms = number(value)
    return ms / 1000.0 if ms else None


def steady_state_runs_of(journal: Mapping[str, Any], func: str) -> list[Mapping[str, Any]]:
    """The steady-state runs of chaoscontour's ``func``, before the method and then after it."""
    return [r for w in ("before", "after") for r in steady_state_runs(journal, w) if chaoscontour_func(r) == func]


def seconds_text(value: Any) -> str:
    """``12.5 s``, or ``-`` without a number."""
    seconds = number(value)
    return "-" if seconds is None else f"{seconds:g} s"


class TrackBuilder:
    """Collects the events, spans and facts of one journal on the axis that starts at ``origin``; events outside
    ``[lo, hi]`` (epoch seconds) are left out."""

    def __init__(self, origin: float, lo: float, hi: float) -> None:
        self.origin, self.lo, self.hi = origin, lo, hi
        self.events: list[Event] = []
        self.spans: list[Span] = []
        self.facts: list[str] = []

    def at(self, epoch: float) -> float:
        return round(epoch - self.origin, 6)

    def event(self, lane: str, label: str, epoch: float | None) -> None:
        if epoch is not None and self.lo <= epoch <= self.hi:
            self.events.append(Event(lane, label, epoch))

    def span(self, lane: str, start: float | None, end: float | None, label: str, kind: str) -> None:
        if start is not None and end is not None and end > start:
            self.spans.append(Span(lane, self.at(start), self.at(end), label, kind))

    def gave_up(self, lane: str, what: str, run: Mapping[str, Any], start: float) -> None:
        """An event ``WHAT: the run's exception`` where a waiting probe gave up: at the end of its run (at ``start``
        when the journal has no end)."""
        reason = exception_text(run)[0] or "no reason given"
        self.event(lane, f"{what}: {reason}"[:200], epoch_of(run.get("end")) or start)
