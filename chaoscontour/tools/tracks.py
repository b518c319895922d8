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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chaoscontour.tools import journal as j
from chaoscontour.tools.journal import epoch_of

__all__ = ["COUNTER_LABELS", "CounterRow", "Event", "Span", "Tracks", "tracks"]

LANE_ENDPOINTS = "endpoints"
LANE_SLICES = "slices"
LANE_XDS = "xds"
LANE_GAUGE = "xds-gauge"
LANE_ROUTE = "route"
# chaostoolkit-kubernetes' pod actions that kill backend pods (the endpoint-churn experiment uses terminate_pods).
POD_KILLERS = {("chaosk8s.pod.actions", "terminate_pods")}

# Envoy's per-cluster counters that say why requests to a backend failed or were saved (domain/endpoints.py reads
# them), in the order the table shows them.
COUNTER_LABELS = (
    ("upstream_cx_connect_fail", "connections to an endpoint failed"),
    ("upstream_cx_connect_timeout", "of which timed out (address gone)"),
    ("upstream_rq_pending_failure_eject", "requests failed for want of a connection (503 UF)"),
    ("upstream_rq_503", "503 answers"),
    ("upstream_rq_5xx", "5xx answers"),
    ("upstream_rq_retry", "retries"),
    ("upstream_rq_retry_success", "retries that succeeded"),
    ("upstream_rq_retry_overflow", "retries refused (circuit breaker)"),
    ("upstream_rq_retry_limit_exceeded", "requests out of retries"),
    ("upstream_cx_none_healthy", "no healthy endpoint left"),
    ("upstream_rq_timeout", "route timeouts (UT)"),
    ("health_check.failure", "failed health checks"),
    ("membership_change", "endpoint list changes"),
)


@dataclass(frozen=True)
class Event:
    lane: str  # "endpoints", "xds" or "route"
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


def _out(run: Mapping[str, Any]) -> Mapping[str, Any]:
    output = run.get("output")
    return output if isinstance(output, Mapping) else {}


def _ms(value: Any) -> float | None:
    number = j.number(value)
    return number / 1000.0 if number else None


def _s(value: Any) -> str:
    number = j.number(value)
    return "-" if number is None else f"{number:g} s"


class _Builder:
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


# --------------------------------------------------------------------------------------------------- endpoint churn


def _views(journal: Mapping[str, Any]) -> list[tuple[float, Mapping[str, Any], bool]]:
    """Every ``envoy_backend_view`` output with its reading time, in time order, with whether it is one of the
    method's (the steady-state ones only date Envoy's endpoint pushes: its EDS ``update_time`` as they read it)."""
    found = []
    where = [(r, True) for r in j.runs(journal)]
    where += [(r, False) for w in ("before", "after") for r in j.steady_state_runs(journal, w)]
    for run, in_method in where:
        if j.chaoscontour_func(run) != j.ENDPOINT_VIEW:
            continue
        output = _out(run)
        when = epoch_of(output.get("checked_at")) or epoch_of(run.get("start"))
        if when is not None and output:
            found.append((when, output, in_method))
    return sorted(found, key=lambda v: v[0])


def _counter(output: Mapping[str, Any], name: str) -> int | None:
    counters = output.get("counters")
    value = counters.get(name) if isinstance(counters, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _reading(output: Mapping[str, Any]) -> str:
    comparison = output.get("comparison") if isinstance(output.get("comparison"), Mapping) else {}
    assert isinstance(comparison, Mapping)
    ready = comparison.get("endpointslices_ready") or []
    text = f"Envoy has {comparison.get('envoy_total', '?')} endpoint(s), the EndpointSlices {len(ready)} ready"
    if comparison.get("method") == "counts":
        # Without Envoy's admin /clusters the probes compare counts: a dead pod replaced keeps the count.
        text += " (compared by count: Envoy's own list not read)"
    if comparison.get("matches") is True:
        return text + ": they match"
    stale, missing = comparison.get("stale") or [], comparison.get("missing") or []
    details = [f"still routes to {', '.join(map(str, stale))} (stale)"] if stale else []
    details += [f"lacks {', '.join(map(str, missing))} (missing)"] if missing else []
    return text + ": they differ" + (f"; Envoy {' and '.join(details)}" if details else "")


def _churn(journal: Mapping[str, Any], b: _Builder) -> tuple[list[CounterRow], list[tuple[str, tuple[str, ...]]]]:
    kills: list[tuple[float, str]] = []
    for run in j.runs(journal):
        provider = j.activity_of(run).get("provider")
        target = (provider.get("module"), provider.get("func")) if isinstance(provider, Mapping) else None
        start = epoch_of(run.get("start"))
        if target in POD_KILLERS and start is not None:
            output = run.get("output")
            pods = ", ".join(map(str, output)) if isinstance(output, list) and output else "a backend pod"
            status = "" if run.get("status") == "succeeded" else f" (the action {run.get('status')})"
            kills.append((start, pods))
            b.event(LANE_ENDPOINTS, f"{pods} killed ({target[1]}){status}", start)

    views = _views(journal)
    previous: tuple[float, Mapping[str, Any], bool] | None = None
    for when, output, in_method in views:
        if in_method:
            b.event(LANE_ENDPOINTS, f"{output.get('snapshot') or 'reading'}: {_reading(output)}", when)
        since = output.get("since") if isinstance(output.get("since"), Mapping) else None
        if in_method and since and since.get("endpointslices_changed"):
            assert isinstance(since, Mapping)
            before = {str(a) for a in since.get("endpointslices_ready_before") or []}
            comparison = output.get("comparison") or {}
            now = {str(a) for a in comparison.get("endpointslices_ready") or []}
            gone, new = sorted(before - now), sorted(now - before)
            # The slices are read only at the readings: they changed somewhere between the kill (or the reading
            # before) and this one.
            earlier = [k for k, _ in kills if k <= when] or [p[0] for p in views if p[0] < when]
            start = max(earlier) if earlier else None
            change = ", ".join([*(f"-{a}" for a in gone), *(f"+{a}" for a in new)])
            b.span(LANE_SLICES, start, when, f"EndpointSlices changed ({change})", "unknown")
        if previous is not None:
            pushed = _ms(output.get("eds_update_time_ms"))
            if pushed is not None and pushed != _ms(previous[1].get("eds_update_time_ms")):
                old, new_count = _counter(previous[1], "membership_change"), _counter(output, "membership_change")
                changed = old is not None and new_count is not None and new_count > old
                what = "a changed endpoint list" if changed else "the same endpoint list again"
                b.event(LANE_ENDPOINTS, f"Envoy accepted an endpoint push (EDS update_time): {what}", pushed)
        previous = (when, output, in_method)

    rows: list[CounterRow] = []
    causes: list[tuple[str, tuple[str, ...]]] = []
    window_since: Mapping[str, Any] | None = None
    for _, output, in_method in views:
        since = output.get("since")
        if in_method and isinstance(since, Mapping):
            window_since = since
            name = output.get("snapshot") or "the reading"
            causes.append(
                (f"from {since.get('snapshot')} to {name}", tuple(map(str, since.get("failure_causes") or [])))
            )
    whole_since: Mapping[str, Any] | None = None
    for run in j.runs(journal):
        if j.chaoscontour_func(run) != j.ENDPOINTS_CONVERGED:
            continue
        output, start = _out(run), epoch_of(run.get("start"))
        if start is None:
            continue
        matched, converged = (
            j.number(output.get("endpoints_matched_after_s")),
            j.number(output.get("converged_after_s")),
        )
        by_count = (output.get("comparison") or {}).get("method") == "counts"
        if matched is not None:
            what = "the endpoint counts match again" if by_count else "Envoy's endpoints match the EndpointSlices again"
            b.event(LANE_ENDPOINTS, f"{what} ({matched:g} s)", start + matched)
        if converged is not None:
            failed = output.get("failed_requests") or {}
            lost = f"; its own requests failed meanwhile: {dict(failed)}" if failed else ""
            b.event(LANE_ENDPOINTS, f"converged after {converged:g} s{lost}", start + converged)
        elif run.get("status") != "succeeded":
            reason = j.exception_text(run)[0] or "no reason given"
            b.event(LANE_ENDPOINTS, f"not converged: {reason}"[:200], epoch_of(run.get("end")) or start)
        stale_from = next((k for k, _ in reversed(kills) if k <= start), None)
        if by_count:
            # Matching counts says nothing about the killed pod's address: only convergence (requests succeeding
            # in a row) bounds the time Envoy may have kept it.
            end = start + converged if converged is not None else epoch_of(run.get("end"))
            what = "Envoy may still route to the killed pod (lists compared by count only)"
        else:
            end = start + matched if matched is not None else epoch_of(run.get("end"))
            what = "Envoy's endpoints differ from the EndpointSlices"
        b.span(LANE_ENDPOINTS, stale_from, end, what, "bad")
        if stale_from is not None and end is not None and run.get("status") == "succeeded":
            b.facts.append(
                f"endpoints: {what} for {end - stale_from:.1f} s, from the kill until {end - start:g} s after the "
                f"heal; requests converged {_s(converged)} after the heal"
            )
        if isinstance(output.get("since"), Mapping):
            whole_since = output["since"]
            assert whole_since is not None
            causes.append(
                (
                    f"from {whole_since.get('snapshot')} until converged",
                    tuple(map(str, whole_since.get("failure_causes") or [])),
                )
            )
    for name, label in COUNTER_LABELS:
        during = _counter(window_since, name) if window_since else None
        whole = _counter(whole_since, name) if whole_since else None
        during = during if during is not None or window_since is None else 0
        whole = whole if whole is not None or whole_since is None else 0
        resets = [*(window_since or {}).get("counters_reset", []), *(whole_since or {}).get("counters_reset", [])]
        after = whole - during if whole is not None and during is not None and name not in resets else None
        if during or whole:
            rows.append(CounterRow(label, during, after, whole))
    return rows, causes


# --------------------------------------------------------------------------------------------------------- xDS


def _xds(journal: Mapping[str, Any], b: _Builder) -> tuple[list[tuple[float, float]], list[float]]:
    age: list[tuple[float, float]] = []
    failed: list[float] = []
    updates: list[float] = []
    for w in ("before", "after"):
        for run in j.steady_state_runs(journal, w):
            if j.chaoscontour_func(run) == j.ENVOY_XDS:
                for key in ("cds", "lds"):
                    sub = _out(run).get(key)
                    when = _ms(sub.get("update_time_ms")) if isinstance(sub, Mapping) else None
                    if when is not None:
                        updates.append(when)
    for run in j.runs(journal):
        func, output = j.chaoscontour_func(run), _out(run)
        if func == j.XDS_TIMELINE and output:
            first = epoch_of(output.get("first_reading_at")) or epoch_of(run.get("start"))
            end = epoch_of(run.get("end"))
            blocked, healed = epoch_of(output.get("blocked_at")), epoch_of(output.get("healed_at"))
            if first is None or end is None:
                continue
            # The gauge reads 1 while Envoy is still attempting a new stream (domain/xds.py): the stream's real
            # state comes from the block, the detection and the first update accepted after the heal.
            state, since = output.get("connected_at_start"), first
            for change in [*(output.get("transitions") or []), {"at_s": end - first, "connected": None}]:
                at = first + (j.number(change.get("at_s")) or 0.0)
                label = "gauge 1" if state is True else "gauge 0" if state is False else "unknown"
                b.span(LANE_GAUGE, since, at, label, "ok" if state is True else "bad" if state is False else "unknown")
                state, since = change.get("connected"), at
            detected = j.number(output.get("detected_after_s"))
            back, current = j.number(output.get("reconnected_after_s")), j.number(output.get("current_after_s"))
            noticed = blocked + detected if blocked is not None and detected is not None else None
            working = healed + back if healed is not None and back is not None else None
            b.span(LANE_XDS, first, blocked or end, "stream working", "ok")
            b.span(LANE_XDS, blocked, noticed or healed or end, "stream dead, Envoy unaware", "held")
            b.span(LANE_XDS, noticed, working or end, "Envoy knows, retries", "bad")
            b.span(LANE_XDS, working, end, "stream working", "ok")
            failed += [b.at(first + s) for s in map(j.number, output.get("failures_at_s") or []) if s is not None]
            if blocked is not None and detected is not None:
                b.event(
                    LANE_XDS, f"Envoy noticed the dead xDS stream ({detected:g} s after the block)", blocked + detected
                )
            if healed is not None and back is not None:
                both = " and current (CDS and LDS)" if current == back else ""
                b.event(
                    LANE_XDS, f"Envoy reconnected{both}: an update accepted {back:g} s after the heal", healed + back
                )
            if healed is not None and current is not None and current != back:
                b.event(LANE_XDS, f"Envoy current again (CDS and LDS) {current:g} s after the heal", healed + current)
            b.facts.append(
                f"xDS: Envoy noticed the dead stream {_s(detected)} after the block (keepalive bound "
                f"{_s(output.get('keepalive_bound_s'))}), started {output.get('reconnect_attempts')} stream(s) that "
                f"failed, reconnected {_s(back)} and was current {_s(current)} after the heal"
            )
            if "updates_at_s" in output:
                # A reading sees an update up to one interval late; Envoy's own update_time (from the steady-state
                # probes) dates the same update exactly, so a reading just after such a time is that update.
                samples = j.number(output.get("samples")) or 0.0
                interval = (j.number(output.get("duration_s")) or 0.0) / max(samples - 1, 1) + 0.05
                seen = [first + s for s in map(j.number, output.get("updates_at_s") or []) if s is not None]
                updates += [u for u in seen if not any(u - interval <= a <= u for a in updates)]
                age = _age(sorted(updates), first, end, b)
        elif func == j.ROUTE_PROPAGATION and output:
            written = epoch_of(output.get("written_at"))
            if output.get("arrived") is True and written is not None:
                took = j.number(output.get("propagation_s")) or 0.0
                b.span(LANE_ROUTE, written, written + took, "route change served", "ok")
                b.event(
                    LANE_ROUTE, f"route change {output.get('marker')} served {took:g} s after the write", written + took
                )
            elif output.get("arrived") is False and written is not None:
                held = j.number(output.get("held_back_s")) or 0.0
                b.span(LANE_ROUTE, written, written + held, "route change held back", "held")
                b.event(LANE_ROUTE, f"route change {output.get('marker')} written; not served in {held:g} s", written)
        elif func == j.ROUTE_CONVERGED:
            began = epoch_of(run.get("start"))
            served = j.number(output.get("converged_after_s"))
            if began is not None and served is not None:
                b.span(LANE_ROUTE, began, began + served, "waiting for the route after the heal", "held")
                b.event(
                    LANE_ROUTE,
                    f"Envoy serves route change {output.get('marker')}: {_s(output.get('since_heal_s'))} after the "
                    f"heal, {_s(output.get('since_change_s'))} after it was written",
                    began + served,
                )
            elif began is not None:
                reason = j.exception_text(run)[0] or "no reason given"
                b.event(LANE_ROUTE, f"route not converged: {reason}"[:200], epoch_of(run.get("end")) or began)
    return age, failed


def _age(updates: Sequence[float], first: float, end: float, b: _Builder) -> list[tuple[float, float]]:
    """Seconds since the last accepted update at each moment from ``first`` to ``end``: a saw-tooth that drops to 0
    at each update; it starts at the last update known before ``first`` (none known: it starts at the first)."""
    known = [u for u in updates if u <= end]
    earlier = [u for u in known if u <= first]
    last = earlier[-1] if earlier else None
    points: list[tuple[float, float]] = []
    cursor = first
    for update in [u for u in known if u > first] + [end]:
        if last is not None:
            start = (b.at(cursor), round(cursor - last, 3))
            points += [start] if not points or points[-1] != start else []
            points.append((b.at(update), round(update - last, 3)))
        if update != end:
            points.append((b.at(update), 0.0))
        last, cursor = update, update
    return points


def tracks(journal: Mapping[str, Any], origin: float | None, lo: float, hi: float) -> Tracks:
    """The churn and xDS timeline of ``journal`` on the report's axis (offsets from ``origin``); events outside
    ``[lo, hi]`` (epoch seconds: the run's time range) are left out. Empty for a journal without those probes."""
    if origin is None:
        return Tracks()
    b = _Builder(origin, lo, hi)
    rows, causes = _churn(journal, b)
    age, failed = _xds(journal, b)
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
