"""What a run's outputs say, in the units and sentences shown to people: the ``envoy_availability`` figures, the
``envoy_success_ratio`` figures (Envoy's own counters) beside them, and the story of the fault ("What happened") told
by the method's chaoscontour activities, in run order.

Pure functions of a parsed journal; the gate's summary and the report show them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chaoscontour import contract
from chaoscontour.contract import (
    AvailabilityOutput,
    FaultHeldOutput,
    FaultVerification,
    Latency,
    PrometheusRatioOutput,
    RouteConvergedOutput,
    RoutePropagationOutput,
)
from chaoscontour.tools.journal import (
    APISERVER_FAULT,
    BLOCK_APISERVER,
    BLOCK_XDS,
    ENVOY_AVAILABILITY,
    ENVOY_XDS,
    KILL_LEADER,
    LEASE_HOLDER,
    RESTART_COUNT,
    RESTART_ENVOY,
    ROUTE_CONVERGED,
    ROUTE_PROPAGATION,
    UNBLOCK_APISERVER,
    UNBLOCK_XDS,
    XDS_FAULT,
    XDS_TIMELINE,
    activity_name,
    activity_of,
    chaoscontour_func,
    number,
    output_as,
    output_of,
    runs,
    steady_state_runs,
)

__all__ = [
    "SUCCESS_RATIOS",
    "AvailabilityFigures",
    "TrafficFigures",
    "availability_figures",
    "availability_outputs",
    "availability_pct",
    "fault_findings",
    "fault_reasons",
    "side_by_side",
    "traffic_figures",
]

# Envoy's success ratio from its own counters: read directly (activities.traffic) or from Prometheus
# (activities.metrics, which adds Contour's restarts and DAG rebuilds).
SUCCESS_RATIOS = frozenset({contract.ENVOY_SUCCESS_RATIO.name, contract.PROMETHEUS_SUCCESS_RATIO.name})


@dataclass(frozen=True)
class AvailabilityFigures:
    """The key figures of one ``envoy_availability`` output, in the units shown to people."""

    name: str
    requests: int | None
    successes: int | None
    availability_pct: float | None
    longest_outage_s: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class TrafficFigures:
    """The key figures of one ``envoy_success_ratio`` output: what Envoy's own counters say of the window."""

    name: str
    requests: int | None
    successes: int | None
    ratio_pct: float | None
    unrouted_5xx: int | None
    clusters: tuple[str, ...]
    # Why there is no ratio (Envoy restarted, no traffic), when there is none.
    not_computable: str | None
    # (epoch_s, duration_s, requests, rq_5xx) per interval between readings; counts are None across a restart.
    intervals: tuple[tuple[float, float, int | None, int | None], ...]
    # "envoy" (its stats endpoint) or "prometheus"; Contour's figures come only from Prometheus.
    source: str = "envoy"
    contour_restarts: int | None = None
    dag_rebuilds: int | None = None
    skipped: str | None = None

    @property
    def five_xx(self) -> int | None:
        return None if self.requests is None or self.successes is None else self.requests - self.successes


def availability_pct(value: Any) -> float | None:
    """``envoy_availability`` reports availability as a ratio in [0, 1]; shown as a percentage."""
    f = number(value)
    if f is None:
        return None
    return f * 100.0 if f <= 1.0 else f


def availability_outputs(journal: Mapping[str, Any]) -> list[tuple[str, AvailabilityOutput]]:
    """Every ``envoy_availability`` output in the journal as ``(activity name, output)``, method first.

    A probe is recognised as chaoscontour's, or, for a user's wrapper, by an output that carries both an
    ``availability`` figure and a ``timeline``.
    """
    found: list[tuple[str, AvailabilityOutput]] = []
    candidates = runs(journal) + steady_state_runs(journal, "before") + steady_state_runs(journal, "after")
    for run in candidates:
        output = output_as(run.get("output"), contract.ENVOY_AVAILABILITY)
        if output is None:
            continue
        by_func = chaoscontour_func(run) == ENVOY_AVAILABILITY
        by_shape = "availability" in output and isinstance(output.get("timeline"), list)
        if by_func or by_shape:
            found.append((activity_name(activity_of(run)), output))
    return found


def _figures(name: str, output: AvailabilityOutput) -> AvailabilityFigures:
    found = output.get("latency_ms")
    latency: Latency = found if isinstance(found, Mapping) else {}
    requests, successes = output.get("requests"), output.get("successes")
    return AvailabilityFigures(
        name=name,
        requests=requests if isinstance(requests, int) and not isinstance(requests, bool) else None,
        successes=successes if isinstance(successes, int) and not isinstance(successes, bool) else None,
        availability_pct=availability_pct(output.get("availability")),
        longest_outage_s=number(output.get("longest_outage_s")),
        p50_ms=number(latency.get("p50")),
        p95_ms=number(latency.get("p95")),
        p99_ms=number(latency.get("p99")),
    )


def _block_finding(func: str, run: Mapping[str, Any]) -> str:
    """What a ``block_apiserver_egress`` or ``block_xds_egress`` cut off, and what confirmed it."""
    output = output_of(run, contract.BLOCK_APISERVER_EGRESS)  # the keys both blocks return
    found = output.get("verification")
    check: FaultVerification = found if isinstance(found, Mapping) else {}
    pods = ", ".join(str(p) for p in output.get("selected_pods") or [])
    cidrs = ", ".join(str(c) for c in output.get("blocked_cidrs") or [])
    after = f"after {check.get('confirmed_after_s')} s"
    if func == BLOCK_APISERVER:
        evidence = check.get("evidence_text") or check.get("evidence") or "the Lease stopped being renewed"
        text, confirmed = f"API server cut off for {pods} (blocked {cidrs})", f"confirmed {after}: {evidence}"
    else:
        port = output_of(run, contract.BLOCK_XDS_EGRESS).get("xds_port")
        text = f"xDS black hole for {pods} (dropped {cidrs} port {port})"
        confirmed = f"Envoy reported the dead stream {after}"
    return f"{text}; {confirmed if check.get('confirmed') is True else 'not verified'}"


def _finding(func: str | None, run: Mapping[str, Any], after_fault_removed: bool) -> str | None:
    """One sentence about what a chaoscontour activity of the method saw, or ``None``."""
    if func in (BLOCK_APISERVER, BLOCK_XDS):
        return _block_finding(func, run)
    if func == XDS_TIMELINE:
        timeline = output_of(run, contract.ENVOY_XDS_TIMELINE)
        return (
            f"Envoy noticed the dead xDS stream after {timeline.get('detected_after_s')} s, started "
            f"{timeline.get('reconnect_attempts')} stream(s) that failed during the fault, and was current "
            f"{timeline.get('current_after_s')} s after the heal"
        )
    if func == ROUTE_PROPAGATION:
        change = output_of(run, contract.ROUTE_CHANGE_PROPAGATION)
        return f"route change ({_route_of(change)}): {change['summary']}" if change.get("summary") else None
    if func == ROUTE_CONVERGED:
        route = output_of(run, contract.ROUTE_CONFIG_CONVERGED)
        return f"after the heal Envoy served {_route_of(route)}'s configuration in {route.get('converged_after_s')} s"
    if func in (APISERVER_FAULT, XDS_FAULT):
        fault = output_of(run, contract.APISERVER_EGRESS_FAULT)
        if fault.get("held") is True:
            return "at the end of the fault window the fault still held"
        return "at the end of the fault window the fault no longer held: " + "; ".join(fault_reasons(fault))
    if func == LEASE_HOLDER:
        lease = output_of(run, contract.LEASE_HOLDER)
        if not after_fault_removed:
            held = "still held" if lease.get("held") else "not held"
            return (
                f"during the fault the Lease was {held}: {lease.get('seconds_since_renewal')} s since its last renewal"
            )
        return f"afterwards {lease.get('pod_name') or 'nobody'} holds the Lease (held: {lease.get('held')})"
    if func == RESTART_COUNT:
        restarts = output_of(run, contract.CONTOUR_RESTART_COUNT)
        if "terminated_since" not in restarts:
            return None
        terminated = sorted({str(t.get("pod")) for t in restarts.get("terminations") or [] if isinstance(t, Mapping)})
        return (
            f"{restarts['terminated_since']} Contour container(s) terminated during the fault"
            + (f" ({', '.join(terminated)})" if terminated else "")
            + f"; {restarts.get('total_restarts')} restarts in all"
        )
    if func == ENVOY_XDS:
        xds = output_of(run, contract.ENVOY_XDS_CONNECTED)
        return (
            f"Envoy's xDS connection to Contour: {'connected' if xds.get('connected') else 'disconnected'}; "
            f"its configuration was {xds.get('cds_update_age_s')} s old and still served"
        )
    if func == KILL_LEADER:
        kill = output_of(run, contract.KILL_LEADER)
        if kill.get("new_pod"):
            took_over = (
                f"leader {kill.get('old_pod')} killed; {kill.get('new_pod')} took over in {kill.get('failover_s')} s"
            )
            return took_over + _xds_of_kill(kill.get("xds"))
    if func == RESTART_ENVOY:
        return _restart_finding(run)
    return None


def _route_of(output: RoutePropagationOutput | RouteConvergedOutput) -> str:
    """The route object a route probe wrote to: ``HTTPProxy ns/name`` or ``HTTPRoute ns/name``."""
    if output.get("httproute"):
        return f"HTTPRoute {output['httproute']}"
    return f"HTTPProxy {output.get('httpproxy')}"


def _restart_finding(run: Mapping[str, Any]) -> str:
    """What the Envoy restarted during the outage did, before and after the heal."""
    lane = output_of(run, contract.RESTART_ENVOY_POD)
    before = run["output"].get("requests_before_heal") or {}
    ready = "became Ready" if lane.get("ready_before_heal") else "was not Ready"
    stats = "answered" if lane.get("stats_before_heal") else "did not answer"
    first = lane.get("first_200_after_heal_s")
    after = f"first 200 {first} s after the heal" if first is not None else "no 200 after the heal"
    if lane.get("ready_after_heal_s") is not None:
        after += f", Ready {lane['ready_after_heal_s']} s after it"
    return (
        f"Envoy pod {lane.get('deleted_pod')} deleted once every Contour had restarted since the cut; its replacement "
        f"{lane.get('replacement_pod')} served {before.get('ok', 0)} of {before.get('sent', 0)} requests before the "
        f"heal, {ready} and its stats listener (configured by Contour) {stats}; {after}"
    )


def _xds_of_kill(xds: contract.LeaderXds | None) -> str:
    """What the kill did to Envoy's xDS streams, as the end of the kill's sentence ("" for an older journal)."""
    if not xds:
        return ""
    if not xds.get("known"):
        return f"; which replica served Envoy's xDS is unknown ({xds.get('reason')})"
    before = sum((xds.get("streams_before") or {}).values())
    on_killed = xds.get("on_killed_pod") or 0
    if not on_killed:
        serving = sorted(pod for pod, n in (xds.get("streams_before") or {}).items() if n)
        return f"; Envoy's xDS stream was on {', '.join(serving) or 'no replica'}, not on the killed pod: not cut"
    where = f"{on_killed} of {before} Envoy xDS stream(s) were on the killed pod"
    if xds.get("reconnected_after_s") is None:
        return f"; {where} and were not all back on another replica by the end of the wait"
    back_on = ", ".join(xds.get("reconnected_to") or [])
    return f"; {where}, back on {back_on} {xds['reconnected_after_s']} s after the delete"


def fault_findings(journal: Mapping[str, Any]) -> list[str]:
    """What the method's chaoscontour activities observed, in run order: the story of the run in sentences."""
    findings: list[str] = []
    removed = False
    for run in runs(journal):
        func = chaoscontour_func(run)
        if func in (UNBLOCK_APISERVER, UNBLOCK_XDS):
            removed = True
        if func and isinstance(run.get("output"), Mapping):
            finding = _finding(func, run, removed)
            if finding:
                findings.append(finding)
    return findings


def fault_reasons(output: FaultHeldOutput) -> list[str]:
    reasons = output.get("reasons")
    listed = [str(r) for r in reasons if str(r).strip()] if isinstance(reasons, list) else []
    return listed or ["the probe gave no reason"]


def availability_figures(journal: Mapping[str, Any]) -> tuple[AvailabilityFigures, ...]:
    """The key figures of every ``envoy_availability`` output, method first."""
    return tuple(_figures(name, output) for name, output in availability_outputs(journal))


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _traffic(name: str, output: PrometheusRatioOutput) -> TrafficFigures:
    rows = []
    for row in output.get("intervals") or []:
        epoch = number(row.get("epoch_s")) if isinstance(row, Mapping) else None
        if epoch is not None:
            duration = number(row.get("duration_s")) or 0.0
            rows.append((epoch, duration, _count(row.get("requests")), _count(row.get("rq_5xx"))))
    clusters = output.get("clusters")
    reason = output.get("not_computable")
    return TrafficFigures(
        name=name,
        requests=_count(output.get("requests")),
        successes=_count(output.get("successes")),
        ratio_pct=availability_pct(output.get("ratio")),
        unrouted_5xx=_count(output.get("unrouted_5xx")),
        clusters=tuple(str(c) for c in clusters) if isinstance(clusters, list) else (),
        not_computable=str(reason) if reason else None,
        intervals=tuple(rows),
        source="prometheus" if output.get("source") == "prometheus" else "envoy",
        contour_restarts=_count(output.get("contour_restart_count")),
        dag_rebuilds=_count(output.get("dag_rebuilds")),
        skipped=str(output.get("skipped")) if output.get("skipped") else None,
    )


def traffic_figures(journal: Mapping[str, Any]) -> tuple[TrafficFigures, ...]:
    """The key figures of every ``envoy_success_ratio`` and ``prometheus_success_ratio`` output, method first."""
    found = []
    candidates = runs(journal) + steady_state_runs(journal, "before") + steady_state_runs(journal, "after")
    for run in candidates:
        output = output_as(run.get("output"), contract.PROMETHEUS_SUCCESS_RATIO)
        if output is not None and chaoscontour_func(run) in SUCCESS_RATIOS:
            found.append(_traffic(activity_name(activity_of(run)), output))
    return tuple(found)


def _or_dash(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} %"


def side_by_side(sampler: tuple[AvailabilityFigures, ...], counters: tuple[TrafficFigures, ...]) -> list[str]:
    """One sentence per ``envoy_success_ratio`` output setting Envoy's counters beside the (first) sampler's
    availability: ``sampler 99.98 % of 3,000; Envoy's counters 99.97 % of 3,105 on cluster default_echo_80``."""
    lines = []
    first = sampler[0] if sampler else None
    ours = f"sampler {_pct(first.availability_pct)} of {first.requests or 0:,}; " if first else ""
    for fig in counters:
        where = f"cluster{'s' if len(fig.clusters) > 1 else ''} {', '.join(fig.clusters)}" if fig.clusters else ""
        counted = "Prometheus (Envoy's counters)" if fig.source == "prometheus" else "Envoy's counters"
        if fig.skipped:
            envoy = f"{counted}: not asked ({fig.skipped})"
        elif fig.ratio_pct is None:
            envoy = f"{counted} give no ratio ({fig.not_computable or 'no figures'})"
        else:
            envoy = f"{counted} {_pct(fig.ratio_pct)} of {fig.requests or 0:,}" + (f" on {where}" * bool(where))
            if fig.unrouted_5xx:
                envoy += f" ({fig.unrouted_5xx:,} of them Envoy's own 5xx for no cluster)"
        if fig.source == "prometheus" and not fig.skipped:
            envoy += (
                f"; Contour restarts seen {_or_dash(fig.contour_restarts)}, DAG rebuilds {_or_dash(fig.dag_rebuilds)}"
            )
        lines.append(f"{ours}{envoy} ({fig.name})")
    return lines
