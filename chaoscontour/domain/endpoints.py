"""Envoy's view of one backend (a Contour upstream cluster) and how it compares with the EndpointSlices (pure).

While Contour is cut off from the API server, Envoy's EDS is frozen: a backend pod that dies meanwhile stays in
Envoy's endpoint list and requests sent to it fail (projectcontour/contour#1116, #1523, #6743). These functions turn
what Envoy and the API server say into the evidence a journal needs to tell *why* requests failed:

- :func:`backend_snapshot` reads one cluster's figures from Envoy's ``/stats`` (parsed by
  :func:`chaoscontour.domain.envoy_stats.parse_stats`). Contour names a cluster's stats after its Service
  (``alt_stat_name`` = ``<namespace>_<service>_<port>``, internal/envoy/v3/cluster.go), so ``demo/echo:80`` is
  ``cluster.demo_echo_80.*``. Membership and health are gauges; connection failures, retries and 5xx are counters.
- :func:`backend_delta` is what changed between two snapshots (counter deltas, gauges before and after) and
  :func:`failure_causes` says in sentences why requests failed over that time.
- :func:`envoy_hosts` reads the endpoints Envoy routes to from the admin ``/clusters`` text (reachable on the
  read-only admin listener, 127.0.0.1:9001 inside the Envoy pod: ``kubectl port-forward`` reaches it);
  :func:`ready_endpoints` reads the addresses Contour would push from the EndpointSlices (Contour v1.31+ skips
  endpoints whose ``ready`` is false); :func:`compare_endpoints` compares them, by address when Envoy's list is
  known and by count otherwise (a count cannot see a dead pod replaced by a new one, and says so).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chaoscontour.domain.envoy_stats import StatValue

__all__ = [
    "COUNTERS",
    "GAUGES",
    "BackendSnapshot",
    "EndpointComparison",
    "EnvoyHost",
    "backend_delta",
    "backend_snapshot",
    "cluster_stat_name",
    "compare_endpoints",
    "envoy_hosts",
    "failure_causes",
    "ready_endpoints",
    "service_port_name",
    "stats_filter",
]

# Gauges: the state at one moment (membership and health; EDS's last accepted update).
GAUGES = (
    "membership_total",
    "membership_healthy",
    "membership_degraded",
    "membership_excluded",
    "health_check.healthy",
    "upstream_cx_active",
    "update_time",
)
# Counters: what happened between two snapshots.
COUNTERS = (
    "membership_change",
    "update_success",
    "update_attempt",
    "update_failure",
    "upstream_cx_total",
    "upstream_cx_connect_fail",
    "upstream_cx_connect_timeout",
    "upstream_cx_none_healthy",
    "upstream_cx_destroy_remote_with_active_rq",
    "upstream_rq_total",
    "upstream_rq_completed",
    "upstream_rq_pending_failure_eject",
    "upstream_rq_2xx",
    "upstream_rq_5xx",
    "upstream_rq_503",
    "upstream_rq_timeout",
    "upstream_rq_per_try_timeout",
    "upstream_rq_rx_reset",
    "upstream_rq_retry",
    "upstream_rq_retry_success",
    "upstream_rq_retry_limit_exceeded",
    "upstream_rq_retry_overflow",
    "health_check.attempt",
    "health_check.success",
    "health_check.failure",
    "health_check.network_failure",
)


def cluster_stat_name(namespace: str, service: str, port: int) -> str:
    """The stat prefix Contour gives the cluster of Service ``namespace/service`` port ``port``."""
    return f"{namespace}_{service}_{port}"


def stats_filter(stat_name: str) -> str:
    """The ``/stats?filter=`` regex that returns only this cluster's stats (Envoy has thousands)."""
    return "^cluster\\." + "".join("\\" + c if c in ".^$*+?()[]{}|\\" else c for c in stat_name) + "\\."


@dataclass(frozen=True)
class BackendSnapshot:
    """One cluster's figures at ``taken_at`` (epoch seconds); a stat Envoy does not show (yet) reads 0."""

    stat_name: str
    values: Mapping[str, int]
    eds_version_text: str | None
    taken_at: float

    def get(self, name: str) -> int:
        return int(self.values.get(name, 0))

    @property
    def membership(self) -> dict[str, int]:
        return {
            "total": self.get("membership_total"),
            "healthy": self.get("membership_healthy"),
            "degraded": self.get("membership_degraded"),
            "excluded": self.get("membership_excluded"),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "membership": self.membership,
            "eds_version_text": self.eds_version_text,
            "eds_update_time_ms": self.get("update_time") or None,
            "counters": {name: self.get(name) for name in COUNTERS},
        }


def backend_snapshot(stats: Mapping[str, StatValue], stat_name: str, taken_at: float) -> BackendSnapshot | None:
    """The figures of cluster ``stat_name`` in parsed ``/stats``, or ``None`` when Envoy has no such cluster."""
    prefix = f"cluster.{stat_name}."
    if f"{prefix}membership_total" not in stats:
        return None
    values = {}
    for name in (*GAUGES, *COUNTERS):
        value = stats.get(prefix + name)
        if isinstance(value, int):
            values[name] = value
    text = stats.get(prefix + "version_text")
    return BackendSnapshot(stat_name, values, text if isinstance(text, str) else None, taken_at)


def backend_delta(before: BackendSnapshot, after: BackendSnapshot) -> dict[str, Any]:
    """What changed from ``before`` to ``after``: ``counters`` (only those that moved), ``membership_before`` and
    ``membership_after``, ``eds_updated`` (Envoy accepted an endpoint push for this cluster, maybe the same list
    again), ``membership_changed`` (its endpoint list changed) and ``seconds``.

    A counter that went down means Envoy restarted (or the cluster was re-created) in between: it is reported
    as ``counters_reset`` and its delta is its new value.
    """
    counters: dict[str, int] = {}
    reset = []
    for name in COUNTERS:
        old, new = before.get(name), after.get(name)
        if new < old:
            reset.append(name)
            delta = new
        else:
            delta = new - old
        if delta:
            counters[name] = delta
    # Any accepted push moves the version or the update time, including the same endpoints pushed again when Envoy
    # reconnects to another Contour replica; only a change of the list moves `membership_change`.
    eds_updated = after.eds_version_text != before.eds_version_text or after.get("update_time") != before.get(
        "update_time"
    )
    return {
        "seconds": round(max(0.0, after.taken_at - before.taken_at), 3),
        "counters": counters,
        "counters_reset": reset,
        "membership_before": before.membership,
        "membership_after": after.membership,
        "eds_updated": eds_updated,
        "membership_changed": bool(counters.get("membership_change")),
    }


def failure_causes(delta: Mapping[str, Any]) -> list[str]:
    """Sentences saying why requests to this backend failed (or were saved) over ``delta``; empty when nothing
    went wrong."""
    c: Mapping[str, int] = delta.get("counters") or {}
    causes = []
    connect_fail = c.get("upstream_cx_connect_fail", 0)
    if connect_fail:
        timed_out = c.get("upstream_cx_connect_timeout", 0)
        how = f"{timed_out} of them timed out: the address no longer answers" if timed_out else "refused or unreachable"
        causes.append(f"{connect_fail} connection attempt(s) to an endpoint failed ({how})")
    ejected = c.get("upstream_rq_pending_failure_eject", 0)
    if ejected:
        causes.append(
            f"{ejected} request(s) failed because no connection to the chosen endpoint could be made "
            "(503 with response flag UF, 'upstream connection failure')"
        )
    retries = c.get("upstream_rq_retry", 0)
    if retries:
        saved = c.get("upstream_rq_retry_success", 0)
        causes.append(f"{retries} retry(ies), {saved} of which succeeded")
    if c.get("upstream_rq_retry_limit_exceeded", 0):
        causes.append(f"{c['upstream_rq_retry_limit_exceeded']} request(s) ran out of retries")
    if c.get("upstream_rq_retry_overflow", 0):
        causes.append(f"{c['upstream_rq_retry_overflow']} retry(ies) refused by the retry budget or circuit breaker")
    if c.get("upstream_cx_none_healthy", 0):
        causes.append(f"{c['upstream_cx_none_healthy']} time(s) no healthy endpoint was left to connect to")
    if c.get("upstream_rq_timeout", 0) or c.get("upstream_rq_per_try_timeout", 0):
        causes.append(
            f"{c.get('upstream_rq_timeout', 0)} route timeout(s) and {c.get('upstream_rq_per_try_timeout', 0)} "
            "per-try timeout(s) (response flag UT)"
        )
    if c.get("upstream_rq_5xx", 0):
        causes.append(
            f"{c['upstream_rq_5xx']} 5xx answer(s) for this backend, {c.get('upstream_rq_503', 0)} of them 503"
        )
    hc_fail = c.get("health_check.failure", 0)
    if hc_fail:
        causes.append(
            f"{hc_fail} failed active health check(s) ({c.get('health_check.network_failure', 0)} network failures): "
            "Envoy stops sending requests to an endpoint its health checks mark unhealthy"
        )
    before, after = delta.get("membership_before") or {}, delta.get("membership_after") or {}
    if after.get("healthy", 0) < after.get("total", 0):
        causes.append(f"{after['total'] - after['healthy']} of {after['total']} endpoint(s) unhealthy at the end")
    if causes and not delta.get("membership_changed"):
        causes.append(
            f"Envoy's endpoint list did not change meanwhile (EDS frozen): it still routed to the "
            f"{before.get('total', 0)} endpoint(s) it knew"
        )
    return causes


# -------------------------------------------------------------------------------- Envoy's list vs EndpointSlices


@dataclass(frozen=True)
class EnvoyHost:
    """One endpoint of a cluster as Envoy's admin ``/clusters`` shows it."""

    address: str
    health_flags: str = ""
    cx_connect_fail: int = 0
    rq_error: int = 0
    rq_success: int = 0

    @property
    def healthy(self) -> bool:
        return self.health_flags in ("", "healthy")

    def as_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "health_flags": self.health_flags,
            "cx_connect_fail": self.cx_connect_fail,
            "rq_error": self.rq_error,
            "rq_success": self.rq_success,
        }


def envoy_hosts(clusters_text: str, stat_name: str) -> dict[str, EnvoyHost] | None:
    """The endpoints of every cluster whose ``observability_name`` is ``stat_name`` in the admin ``/clusters``
    text (lines ``<cluster>::<ip>:<port>::<stat>::<value>``), by address; ``None`` when no such cluster."""
    lines = [line.split("::") for line in clusters_text.splitlines()]
    names = {p[0] for p in lines if len(p) == 3 and p[1] == "observability_name" and p[2] == stat_name}
    if not names:
        return None
    raw: dict[str, dict[str, str]] = {}
    for parts in lines:
        if len(parts) == 4 and parts[0] in names and ":" in parts[1]:
            raw.setdefault(parts[1], {})[parts[2]] = parts[3]
    hosts = {}
    for address, stats in raw.items():
        hosts[address] = EnvoyHost(
            address,
            stats.get("health_flags", ""),
            _int(stats.get("cx_connect_fail")),
            _int(stats.get("rq_error")),
            _int(stats.get("rq_success")),
        )
    return hosts


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def service_port_name(service: Mapping[str, Any], port: int) -> str | None:
    """The name of ``service``'s port ``port`` (``""`` when unnamed); ``None`` when the Service has no such
    port."""
    for item in (service.get("spec") or {}).get("ports") or []:
        if item.get("port") == port:
            return str(item.get("name") or "")
    return None


def ready_endpoints(slices: Iterable[Mapping[str, Any]], port_name: str) -> tuple[set[str], set[str]]:
    """(ready, not ready) ``ip:port`` addresses of the slices' endpoints for the Service port named ``port_name``.

    Ready is what Contour pushes to Envoy: an endpoint whose ``conditions.ready`` is missing or true (the API's
    "should be interpreted as true"); terminating and not-ready endpoints are left out (Contour v1.31+).
    """
    ready: set[str] = set()
    not_ready: set[str] = set()
    for eps in slices:
        ports = [p for p in eps.get("ports") or [] if (p.get("name") or "") == port_name and p.get("port")]
        for endpoint in eps.get("endpoints") or []:
            target = ready if (endpoint.get("conditions") or {}).get("ready") is not False else not_ready
            for address in endpoint.get("addresses") or []:
                for p in ports:
                    target.add(f"{address}:{p['port']}")
    return ready, not_ready - ready


@dataclass(frozen=True)
class EndpointComparison:
    """Envoy's endpoints against the EndpointSlices' ready ones."""

    method: str  # "addresses" or "counts"
    matches: bool
    slice_ready: tuple[str, ...]
    envoy_endpoints: tuple[str, ...] = ()
    stale: tuple[str, ...] = ()  # Envoy routes to them; the slices no longer list them as ready
    missing: tuple[str, ...] = ()  # ready in the slices; Envoy does not know them
    unhealthy: tuple[str, ...] = ()  # known to Envoy and marked unhealthy by its health checks
    envoy_total: int = 0
    envoy_healthy: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "method": self.method,
            "matches": self.matches,
            "endpointslices_ready": list(self.slice_ready),
            "envoy_total": self.envoy_total,
            "envoy_healthy": self.envoy_healthy,
        }
        if self.method == "addresses":
            result.update(
                {
                    "envoy_endpoints": list(self.envoy_endpoints),
                    "stale": list(self.stale),
                    "missing": list(self.missing),
                    "unhealthy": list(self.unhealthy),
                }
            )
        if self.notes:
            result["notes"] = list(self.notes)
        return result


def compare_endpoints(
    slice_ready: Iterable[str],
    *,
    hosts: Mapping[str, EnvoyHost] | None,
    membership_total: int,
    membership_healthy: int,
) -> EndpointComparison:
    """Compare Envoy's endpoints with the slices' ready ones: by address when ``hosts`` (from ``/clusters``) is
    known, else by count (``membership_total`` against the number of ready addresses).

    They match when Envoy knows exactly the ready endpoints and every one of them is healthy in Envoy's eyes (with
    active health checks a new endpoint counts only once it passed its first check).
    """
    ready = tuple(sorted(set(slice_ready)))
    if hosts is not None:
        known = tuple(sorted(hosts))
        stale = tuple(a for a in known if a not in ready)
        missing = tuple(a for a in ready if a not in hosts)
        unhealthy = tuple(a for a in known if not hosts[a].healthy)
        healthy = sum(1 for h in hosts.values() if h.healthy)
        return EndpointComparison(
            "addresses",
            matches=not stale and not missing and not unhealthy,
            slice_ready=ready,
            envoy_endpoints=known,
            stale=stale,
            missing=missing,
            unhealthy=unhealthy,
            envoy_total=len(known),
            envoy_healthy=healthy,
        )
    return EndpointComparison(
        "counts",
        matches=membership_total == len(ready) and membership_healthy == membership_total,
        slice_ready=ready,
        envoy_total=membership_total,
        envoy_healthy=membership_healthy,
        notes=(
            "compared by count: Envoy's own endpoint list (admin /clusters) was not given (admin_url), and its "
            "stats listener shows only how many endpoints it has; a dead pod replaced by a new one keeps the count",
        ),
    )
