"""The numbers behind ``chaoscontour report``'s plot, computed from a journal without drawing: the per-second
series ``envoy_availability`` measured (its output's ``timeline``), and the moments to mark on it (the fault's
start, its removal, each Contour container termination a ``contour_restart_count`` output lists), in seconds from
the first second sampled; and, for the endpoint-churn and xDS experiments, what their probes recorded on the same
axis (:mod:`chaoscontour.tools.tracks`). Pure, so the marker positions are tested against the journal's times.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chaoscontour import contract
from chaoscontour.contract import AvailabilityOutput
from chaoscontour.tools.churn_track import track_churn
from chaoscontour.tools.findings import availability_outputs
from chaoscontour.tools.journal import (
    BLOCK_APISERVER,
    BLOCK_XDS,
    ENVOY_AVAILABILITY,
    KILL_LEADER,
    RESTART_COUNT,
    UNBLOCK_APISERVER,
    UNBLOCK_XDS,
    activity_name,
    activity_of,
    chaoscontour_func,
    epoch_of,
    number,
    output_as,
    runs,
    steady_state_runs,
    walk,
)
from chaoscontour.tools.restart_track import track_restart
from chaoscontour.tools.tracks import TrackBuilder, Tracks
from chaoscontour.tools.verdict import Verdict, judge
from chaoscontour.tools.xds_track import track_xds

__all__ = [
    "FAULT_END_FUNCS",
    "FAULT_FUNCS",
    "MARKER_NAMES",
    "Marker",
    "ReportData",
    "Series",
    "report_data",
    "restart_times",
]

FAULT_FUNCS = (BLOCK_APISERVER, BLOCK_XDS, KILL_LEADER)
FAULT_END_FUNCS = (UNBLOCK_APISERVER, UNBLOCK_XDS)
# Each kind of marker as the plot's legend and the HTML page name it (a lane's events by their lane's name).
MARKER_NAMES = {
    "fault": "fault injected",
    "fault-end": "fault removed",
    "restart": "Contour restart",
    "endpoints": "endpoint event",
    "xds": "xDS event",
    "route": "route change",
    "restarted-envoy": "restarted Envoy event",
    "stop": "stop condition tripped",
}


@dataclass(frozen=True)
class Marker:
    """A moment to mark on the plot: ``kind`` is ``fault``, ``fault-end``, ``restart`` or ``stop`` (a stop condition's
    failing result), or the lane of a
    :class:`chaoscontour.tools.tracks.Event` (``endpoints``, ``xds``, ``route``, ``restarted-envoy``)."""

    kind: str
    label: str
    epoch_s: float
    offset_s: float  # seconds since the plot's origin (the first second of the timeline)


@dataclass(frozen=True)
class Series:
    """The per-second timeline, as columns; ``None`` where a second had no request (or no success, for latency)."""

    offset_s: list[float]
    requests: list[int]
    availability_pct: list[float | None]
    p50_ms: list[float | None]
    p95_ms: list[float | None]
    p99_ms: list[float | None]


@dataclass(frozen=True)
class ReportData:
    title: str
    verdict: Verdict
    origin_epoch_s: float | None
    source: str | None  # the name of the envoy_availability activity plotted
    series: Series | None
    markers: tuple[Marker, ...] = field(default_factory=tuple)
    # The shaded fault window, in offsets: from the fault's start to its removal (or the end of the timeline).
    fault_window: tuple[float, float] | None = None
    # The plotted envoy_availability output without its timeline (empty without one).
    summary: AvailabilityOutput = field(default_factory=lambda: AvailabilityOutput())
    # Why there is nothing to plot, when there is not.
    note: str | None = None
    # The endpoint-churn and xDS timeline (empty for other experiments); its events are among ``markers``.
    tracks: Tracks = field(default_factory=Tracks)


# --------------------------------------------------------------------------------------------------------- pure part


def _label(run: Mapping[str, Any]) -> str:
    activity = activity_of(run)
    return activity_name(activity) if activity.get("name") else str(chaoscontour_func(run))


def _row_epoch(row: Mapping[str, Any]) -> float | None:
    for key in ("epoch_s", "epoch"):
        if key in row:
            return number(row[key])
    return None


def _row_latency(row: Mapping[str, Any], q: str) -> float | None:
    if f"{q}_ms" in row:
        return number(row[f"{q}_ms"])
    nested = row.get("latency_ms")
    return number(nested.get(q)) if isinstance(nested, Mapping) else None


def _series(timeline: Sequence[Any]) -> tuple[float, Series] | None:
    rows = [(e, r) for r in timeline if isinstance(r, Mapping) and (e := _row_epoch(r)) is not None]
    if not rows:
        return None
    rows.sort(key=lambda pair: pair[0])
    origin = rows[0][0]
    offsets, requests, avail = [], [], []
    p50, p95, p99 = [], [], []
    for epoch, row in rows:
        sent = row.get("requests")
        ok = row.get("successes")
        sent_n = int(sent) if isinstance(sent, int) and not isinstance(sent, bool) else 0
        ok_n = int(ok) if isinstance(ok, int) and not isinstance(ok, bool) else 0
        offsets.append(round(epoch - origin, 6))
        requests.append(sent_n)
        avail.append(100.0 * ok_n / sent_n if sent_n else None)
        p50.append(_row_latency(row, "p50"))
        p95.append(_row_latency(row, "p95"))
        p99.append(_row_latency(row, "p99"))
    return origin, Series(offsets, requests, avail, p50, p95, p99)


def restart_times(output: Any) -> list[tuple[float, str]]:
    """``(epoch, label)`` of each container termination listed in a ``contour_restart_count`` output.

    Terminations are any objects with a ``finished_at`` (or the API's ``finishedAt``) time, labelled with their
    ``pod``/``container`` when given. The probe lists a termination twice (in ``terminations`` and under its pod),
    so terminations at the same instant count once, keeping the most specific label.
    """
    found: dict[float, str] = {}
    for obj in walk(output):
        when = epoch_of(obj.get("finished_at", obj.get("finishedAt")))
        if when is None:
            continue
        who = "/".join(str(obj[k]) for k in ("pod", "container") if obj.get(k))
        if len(who) >= len(found.get(when, "")):
            found[when] = who
    return sorted(found.items())


def _tracks(journal: Mapping[str, Any], origin: float | None, lo: float, hi: float) -> Tracks:
    """The churn, xDS and restarted-Envoy timeline of ``journal`` on the report's axis (offsets from ``origin``);
    events outside ``[lo, hi]`` (epoch seconds: the run's time range) are left out. Empty without those probes."""
    if origin is None:
        return Tracks()
    b = TrackBuilder(origin, lo, hi)
    rows, causes = track_churn(journal, b)
    age, failed = track_xds(journal, b)
    track_restart(journal, b)
    lanes = tuple(dict.fromkeys(s.lane for s in b.spans))
    return Tracks(
        events=tuple(sorted(dict.fromkeys(b.events), key=lambda e: e.epoch_s)),
        spans=tuple(b.spans),
        lanes=lanes,
        update_age=tuple(age),
        failed_streams_s=tuple(failed),
        counters=tuple(rows),
        causes=tuple(c for c in causes if c[1]),
        facts=tuple(b.facts),
    )


def report_data(journal: Mapping[str, Any]) -> ReportData:
    """Everything the PNG and the HTML show, computed from a journal without drawing.

    The plot's origin (offset 0) is the first second of the plotted ``envoy_availability`` timeline (the longest one
    when the journal has several); without a timeline it is the journal's ``start``. Marker offsets are seconds
    from that origin. Restarts and timeline events are kept from the journal's start to its end, and within the
    plotted timeline when that reaches further: a restart the pod status dates before the run, or an endpoint push
    Envoy accepted before it, is left out; a measurement this run made after the sampler stopped (endpoints that
    match again 40 s after the heal) is not.
    """
    verdict = judge(journal)
    outputs = availability_outputs(journal)
    best: tuple[str, AvailabilityOutput, float, Series] | None = None
    for name, output in outputs:
        timeline = output.get("timeline")
        built = _series(timeline) if isinstance(timeline, list) else None
        if built and (best is None or len(built[1].offset_s) > len(best[3].offset_s)):
            best = (name, output, built[0], built[1])

    origin: float | None
    summary: AvailabilityOutput
    if best is not None:
        source, summary, origin, series = best[0], best[1], best[2], best[3]
    else:
        source, summary, series = None, {}, None
        origin = epoch_of(journal.get("start"))
    summary_fields = summary.copy()
    summary_fields.pop("timeline", None)

    markers: list[Marker] = []

    def add(kind: str, label: str, epoch: float | None) -> None:
        if epoch is not None and origin is not None:
            markers.append(Marker(kind, label, epoch, round(epoch - origin, 6)))

    for run in runs(journal):
        if chaoscontour_func(run) in FAULT_FUNCS:
            add("fault", f"{_label(run)} starts", epoch_of(run.get("start")))
    for key, where in (("run", "method"), ("rollbacks", "rollback")):
        for run in runs(journal, key):
            if chaoscontour_func(run) in FAULT_END_FUNCS:
                add("fault-end", f"{_label(run)} ({where})", epoch_of(run.get("start")))

    if series is not None and origin is not None:
        lo, hi = origin - 1.0, origin + series.offset_s[-1] + 2.0
        began, ended = epoch_of(journal.get("start")), epoch_of(journal.get("end"))
        lo, hi = min(lo, began if began is not None else lo), max(hi, ended if ended is not None else hi)
    else:
        lo, hi = -math.inf, math.inf
    every_run = [*runs(journal), *runs(journal, "rollbacks")]
    every_run += steady_state_runs(journal, "before") + steady_state_runs(journal, "after")
    for run in every_run:
        if chaoscontour_func(run) == RESTART_COUNT:
            for epoch, who in restart_times(run.get("output")):
                if lo <= epoch <= hi:
                    add("restart", f"Contour restart {who}".strip(), epoch)
        if chaoscontour_func(run) == contract.PROMETHEUS_SUCCESS_RATIO.name:
            figures = output_as(run.get("output"), contract.PROMETHEUS_SUCCESS_RATIO) or {}
            for pod, started in (figures.get("contour_restarts") or {}).items():
                for epoch in filter(None, (epoch_of(text) for text in started)):
                    if lo <= epoch <= hi:
                        add("restart", f"Contour process started {pod} (Prometheus)", epoch)
    if verdict.stop is not None and verdict.stop.result_epoch_s is not None:
        add("stop", f"stop condition {verdict.stop.name!r} saw the failing result", verdict.stop.result_epoch_s)
    extra = _tracks(journal, origin, lo, hi)
    for event in extra.events:
        add(event.lane, event.label, event.epoch_s)
    # Several restart probes may list the same termination.
    unique = list(dict.fromkeys(markers))
    unique.sort(key=lambda m: m.epoch_s)

    window: tuple[float, float] | None = None
    faults = [m for m in unique if m.kind == "fault"]
    if faults:
        start = faults[0].offset_s
        ends = [m.offset_s for m in unique if m.kind == "fault-end" and m.offset_s >= start]
        if ends:
            window = (start, ends[0])
        elif series is not None:
            window = (start, series.offset_s[-1] + 1.0)

    note = None
    if series is None:
        note = "no envoy_availability timeline in this journal"
        failed = [r for r in verdict.results if r.ours == ENVOY_AVAILABILITY and r.failure]
        if failed:
            # A sampler that raised leaves no output in the journal, only its exception.
            note = f"envoy_availability {failed[0].failure}"[:160]

    return ReportData(
        note=note,
        title=verdict.title,
        verdict=verdict,
        origin_epoch_s=origin,
        source=source,
        series=series,
        markers=tuple(unique),
        fault_window=window,
        summary=summary_fields,
        tracks=extra,
    )
