"""The endpoint-churn lane of the report's timeline: each backend pod chaostoolkit-kubernetes' ``terminate_pods``
killed, each reading of Envoy's view of the backend (``envoy_backend_view``) set against the EndpointSlices, each
endpoint push Envoy accepted (its EDS ``update_time``), when Envoy's endpoints matched the slices again and when
requests converged (``envoy_endpoints_converged``); the interval in which the slices changed and the time Envoy routed
to an endpoint list the slices no longer had; and Envoy's counters for the backend by cause, with the probes'
``failure_causes`` sentences. Pure: from a parsed journal into a :class:`~chaoscontour.tools.tracks.TrackBuilder`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaoscontour import contract
from chaoscontour.contract import BackendViewOutput, EndpointChange
from chaoscontour.tools import pod_kills
from chaoscontour.tools.journal import (
    ENDPOINT_VIEW,
    ENDPOINTS_CONVERGED,
    activity_of,
    chaoscontour_func,
    epoch_of,
    number,
    output_of,
    runs,
)
from chaoscontour.tools.tracks import (
    LANE_ENDPOINTS,
    LANE_SLICES,
    CounterRow,
    TrackBuilder,
    epoch_s_of_ms,
    seconds_text,
    steady_state_runs_of,
)

__all__ = ["COUNTER_LABELS", "POD_KILLERS", "track_churn"]

# chaostoolkit-kubernetes' pod actions that kill backend pods (the endpoint-churn experiment uses terminate_pods),
# the same action the gate's pod-kill checks know.
POD_KILLERS = {(pod_kills.MODULE, pod_kills.FUNC)}

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


def _views(journal: Mapping[str, Any]) -> list[tuple[float, BackendViewOutput, bool]]:
    """Every ``envoy_backend_view`` output with its reading time, in time order, with whether it is one of the
    method's (the steady-state ones only date Envoy's endpoint pushes: its EDS ``update_time`` as they read it)."""
    found = []
    where = [(r, True) for r in runs(journal) if chaoscontour_func(r) == ENDPOINT_VIEW]
    where += [(r, False) for r in steady_state_runs_of(journal, ENDPOINT_VIEW)]
    for run, in_method in where:
        output = output_of(run, contract.ENVOY_BACKEND_VIEW)
        when = epoch_of(output.get("checked_at")) or epoch_of(run.get("start"))
        if when is not None and output:
            found.append((when, output, in_method))
    return sorted(found, key=lambda v: v[0])


def _counter(output: BackendViewOutput | EndpointChange, name: str) -> int | None:
    counters = output.get("counters")
    value = counters.get(name) if isinstance(counters, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _reading(output: BackendViewOutput) -> str:
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


def track_churn(
    journal: Mapping[str, Any], b: TrackBuilder
) -> tuple[list[CounterRow], list[tuple[str, tuple[str, ...]]]]:
    """Adds the endpoint-churn events, spans and facts of ``journal`` to ``b``; returns Envoy's counters for the
    backend by cause and the ``failure_causes`` sentences of each interval."""
    kills: list[tuple[float, str]] = []
    for run in runs(journal):
        provider = activity_of(run).get("provider")
        target = (provider.get("module"), provider.get("func")) if isinstance(provider, Mapping) else None
        start = epoch_of(run.get("start"))
        if target in POD_KILLERS and start is not None:
            output = run.get("output")
            pods = ", ".join(map(str, output)) if isinstance(output, list) and output else "a backend pod"
            status = "" if run.get("status") == "succeeded" else f" (the action {run.get('status')})"
            kills.append((start, pods))
            b.event(LANE_ENDPOINTS, f"{pods} killed ({target[1]}){status}", start)

    views = _views(journal)
    previous: tuple[float, BackendViewOutput, bool] | None = None
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
            pushed = epoch_s_of_ms(output.get("eds_update_time_ms"))
            if pushed is not None and pushed != epoch_s_of_ms(previous[1].get("eds_update_time_ms")):
                old, new_count = _counter(previous[1], "membership_change"), _counter(output, "membership_change")
                changed = old is not None and new_count is not None and new_count > old
                what = "a changed endpoint list" if changed else "the same endpoint list again"
                b.event(LANE_ENDPOINTS, f"Envoy accepted an endpoint push (EDS update_time): {what}", pushed)
        previous = (when, output, in_method)

    rows: list[CounterRow] = []
    causes: list[tuple[str, tuple[str, ...]]] = []
    window_since: EndpointChange | None = None
    for _, output, in_method in views:
        since = output.get("since")
        if in_method and isinstance(since, Mapping):
            window_since = since
            name = output.get("snapshot") or "the reading"
            causes.append(
                (f"from {since.get('snapshot')} to {name}", tuple(map(str, since.get("failure_causes") or [])))
            )
    whole_since: EndpointChange | None = None
    for run in runs(journal):
        if chaoscontour_func(run) != ENDPOINTS_CONVERGED:
            continue
        converging, start = output_of(run, contract.ENVOY_ENDPOINTS_CONVERGED), epoch_of(run.get("start"))
        if start is None:
            continue
        matched, converged = (
            number(converging.get("endpoints_matched_after_s")),
            number(converging.get("converged_after_s")),
        )
        by_count = (converging.get("comparison") or {}).get("method") == "counts"
        if matched is not None:
            what = "the endpoint counts match again" if by_count else "Envoy's endpoints match the EndpointSlices again"
            b.event(LANE_ENDPOINTS, f"{what} ({matched:g} s)", start + matched)
        if converged is not None:
            failed = converging.get("failed_requests") or {}
            lost = f"; its own requests failed meanwhile: {dict(failed)}" if failed else ""
            b.event(LANE_ENDPOINTS, f"converged after {converged:g} s{lost}", start + converged)
        elif run.get("status") != "succeeded":
            b.gave_up(LANE_ENDPOINTS, "not converged", run, start)
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
                f"heal; requests converged {seconds_text(converged)} after the heal"
            )
        if isinstance(converging.get("since"), Mapping):
            whole_since = converging["since"]
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
