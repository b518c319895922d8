"""Probes of Envoy's view of one backend: what it routes to, why requests to it failed, and when it caught up.

While Contour cannot reach the API server, Envoy's endpoints (EDS) are frozen: a backend pod that dies meanwhile
stays in Envoy's list, and requests sent to its address fail until Contour is back and pushes the new endpoints
(projectcontour/contour#1116, #1523, #6743). ``envoy_backend_view`` reads that from Envoy's stats (the stats
listener Contour pushes on 8002) and compares it with the Service's EndpointSlices; ``envoy_endpoints_converged``
measures, after the heal, the time until Envoy's endpoints match the slices again and requests succeed.

Readings are kept in this process under a name (``snapshot``) so that a later call reports what changed since
(``since``): `chaos run` runs every activity of an experiment in one process, as the API-server block and its
rollback already rely on (``_common.process_run_id``).

No ``from __future__ import annotations`` here: chaostoolkit's discovery reads the annotations as objects.
"""

import time
from typing import Any, Dict, Tuple

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets
from logzero import logger

from chaoscontour.activities._common import Progress, user_errors
from chaoscontour.domain import endpoints as view
from chaoscontour.domain.clock import format_utc
from chaoscontour.domain.envoy_stats import parse_stats
from chaoscontour.domain.inputs import (
    InvalidInput,
    parse_count,
    parse_host,
    parse_http_url,
    parse_seconds,
    redact_url,
    require_name,
    require_namespace,
)
from chaoscontour.edges import http, stop
from chaoscontour.edges.clock import poll_until
from chaoscontour.edges.kube import Kube, call, kube, to_dict
from chaoscontour.edges.run_state import RUN

__all__ = ["envoy_backend_view", "envoy_endpoints_converged"]

STATS_EXAMPLE = "http://127.0.0.1:8002/stats"
ADMIN_EXAMPLE = "http://127.0.0.1:19001/clusters"
LISTENER_EXAMPLE = "http://127.0.0.1:8080/"
MAX_TIMEOUT_S = 300.0
MAX_CONVERGENCE_S = 3600.0
MAX_SUCCESSES = 1000


class _Target:
    """The checked arguments every probe here shares, and the reads they make."""

    def __init__(
        self,
        fn: str,
        stats_url: object,
        admin_url: object,
        namespace: object,
        service: object,
        port: object,
        timeout_s: object,
    ) -> None:
        self.fn = fn
        self.stats_url = parse_http_url(stats_url, "stats_url", STATS_EXAMPLE)
        self.admin_url = parse_http_url(admin_url, "admin_url", ADMIN_EXAMPLE) if admin_url else ""
        self.namespace = require_namespace(namespace)
        self.service = require_name(service, "service")
        self.port = parse_count(port, "port", minimum=1, maximum=65535)
        self.timeout_s = parse_seconds(timeout_s, "timeout_s", maximum=MAX_TIMEOUT_S)
        self.stat_name = view.cluster_stat_name(self.namespace, self.service, self.port)
        self._port_name: str | None = None

    def _get(self, url: str, what: str, params: Dict[str, str] | None = None) -> str:
        try:
            answer = http.get(url, timeout_s=self.timeout_s, params=params)
        except http.RequestFailed as failed:
            raise ActivityFailed(
                f"{self.fn}: {what} {redact_url(url)} could not be reached ({failed.kind}: {failed.text})"
            ) from failed
        if answer.status != 200:
            raise ActivityFailed(f"{self.fn}: {what} {redact_url(url)} answered {answer.status}")
        return answer.text

    def snapshot(self) -> view.BackendSnapshot:
        text = self._get(self.stats_url, "Envoy's stats", {"filter": view.stats_filter(self.stat_name)})
        found = view.backend_snapshot(parse_stats(text), self.stat_name, time.time())
        if found is None:
            raise ActivityFailed(
                f"{self.fn}: Envoy at {redact_url(self.stats_url)} has no cluster for Service "
                f"{self.namespace}/{self.service} port {self.port} (no cluster.{self.stat_name}.* stats). Check "
                "namespace, service and port (the Service port an HTTPProxy or Ingress routes to), and that "
                "stats_url is Envoy's /stats (port 8002 on Contour's Envoy)"
            )
        return found

    def hosts(self) -> Dict[str, view.EnvoyHost] | None:
        if not self.admin_url:
            return None
        found = view.envoy_hosts(self._get(self.admin_url, "Envoy's admin"), self.stat_name)
        if found is None:
            raise ActivityFailed(
                f"{self.fn}: Envoy's admin {redact_url(self.admin_url)} lists no cluster with observability_name "
                f"{self.stat_name}; is admin_url Envoy's /clusters (the read-only admin listener, 127.0.0.1:9001 in "
                "the Envoy pod, reached e.g. with kubectl port-forward)?"
            )
        return found

    def slices(self, k: Kube) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        """(ready, not ready) addresses of the Service port in its EndpointSlices."""
        where = f"{self.namespace}/{self.service}"
        if self._port_name is None:
            service = to_dict(
                k,
                call(
                    f"read Service {where}",
                    k.core.read_namespaced_service,
                    self.service,
                    self.namespace,
                    not_found=f"{self.fn}: Service {where} not found; check namespace and service",
                ),
            )
            name = view.service_port_name(service, self.port)
            if name is None:
                raise ActivityFailed(f"{self.fn}: Service {where} has no port {self.port}")
            self._port_name = name
        listing = call(
            f"list the EndpointSlices of Service {where}",
            k.discovery.list_namespaced_endpoint_slice,
            self.namespace,
            label_selector=f"kubernetes.io/service-name={self.service}",
        )
        ready, not_ready = view.ready_endpoints(to_dict(k, listing).get("items") or [], self._port_name)
        return tuple(sorted(ready)), tuple(sorted(not_ready))

    def compare(self, k: Kube, snap: view.BackendSnapshot) -> Tuple[view.EndpointComparison, Tuple[str, ...]]:
        ready, not_ready = self.slices(k)
        hosts = self.hosts()
        comparison = view.compare_endpoints(
            ready,
            hosts=hosts,
            membership_total=snap.get("membership_total"),
            membership_healthy=snap.get("membership_healthy"),
        )
        return comparison, not_ready

    def key(self, name: str) -> Tuple[str, str, str]:
        return (self.stats_url, self.stat_name, name)

    def baseline(self, since: str) -> Tuple[view.BackendSnapshot, Tuple[str, ...]]:
        found = RUN.backend_snapshots.get(self.key(since))
        if found is None:
            raise ActivityFailed(
                f"{self.fn}: no reading named {since!r} was taken in this run: call envoy_backend_view with "
                f"snapshot={since!r} earlier in the method (with the same stats_url, namespace, service and port)"
            )
        return found


def _since(target: _Target, since: str, now: view.BackendSnapshot, ready: Tuple[str, ...]) -> Dict[str, Any]:
    before, ready_before = target.baseline(since)
    delta = view.backend_delta(before, now)
    delta["endpointslices_ready_before"] = list(ready_before)
    delta["endpointslices_changed"] = set(ready_before) != set(ready)
    delta["failure_causes"] = view.failure_causes(delta)
    return delta


@user_errors
def envoy_backend_view(
    stats_url: str = STATS_EXAMPLE,
    namespace: str = "default",
    service: str = "",
    port: int = 80,
    admin_url: str = "",
    snapshot: str = "",
    since: str = "",
    timeout_s: float = 2.0,
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Read Envoy's view of one backend (the upstream cluster of Service `namespace`/`service` port `port`) and
    compare it with the Service's EndpointSlices.

    From Envoy's stats (`stats_url`, the stats listener Contour pushes on port 8002: `/stats`) it reads the cluster
    Contour names `<namespace>_<service>_<port>`: `membership` (`total`, `healthy`, `degraded`, `excluded`
    endpoints), the last endpoint update Envoy accepted (`eds_version_text`, `eds_update_time_ms`) and `counters`
    (connection failures and timeouts, requests failed for want of a connection, retries, 5xx, health checks).

    `comparison` sets Envoy's endpoints against the ready endpoints of the EndpointSlices (what Contour would push):
    by address when `admin_url` is Envoy's admin `/clusters` (the read-only admin listener, 127.0.0.1:9001 inside
    the Envoy pod, reached with `kubectl port-forward`), giving `stale` (Envoy routes to them, the slices no longer
    list them as ready), `missing` and `unhealthy` addresses; otherwise by count (`method: counts`, with a note:
    a dead pod replaced by a new one keeps the count). `matches` is true when they agree.

    `snapshot` keeps this reading in the `chaos run` process under that name (e.g. `before-the-fault`); `since`
    names an earlier one, and adds `since`: the counter deltas, membership before and after, whether Envoy accepted
    an endpoint push (`eds_updated`; a reconnection to another Contour replica pushes the same list again) and
    whether its endpoint list changed (`membership_changed`), whether the slices changed
    (`endpointslices_changed`), and `failure_causes`: sentences that say why requests to this backend failed
    (connection timeouts to a gone address, 503 UF, retries that saved requests, failed health checks, an endpoint
    list that did not change while Contour was down).

    It never fails because Envoy's view is stale (that is the evidence); it fails when Envoy's stats, its admin or
    the API server cannot be read, or the cluster does not exist. `timeout_s` bounds each request (at most 300).
    """
    target = _Target("envoy_backend_view", stats_url, admin_url, namespace, service, port, timeout_s)
    label = str(snapshot or "").strip()
    baseline = str(since or "").strip()
    if baseline:
        target.baseline(baseline)
    k = kube(secrets)
    snap = target.snapshot()
    comparison, not_ready = target.compare(k, snap)
    result: Dict[str, Any] = {
        "cluster": target.stat_name,
        "service": f"{target.namespace}/{target.service}:{target.port}",
        "checked_at": format_utc(snap.taken_at, "milliseconds"),
        **snap.as_dict(),
        "comparison": comparison.as_dict(),
        "endpointslices_not_ready": list(not_ready),
    }
    if baseline:
        result["since"] = {"snapshot": baseline, **_since(target, baseline, snap, comparison.slice_ready)}
        for cause in result["since"]["failure_causes"]:
            logger.info(f"envoy_backend_view: since {baseline}: {cause}")
    if label:
        RUN.backend_snapshots[target.key(label)] = (snap, comparison.slice_ready)
        result["snapshot"] = label
    logger.info(
        f"envoy_backend_view: {target.stat_name}: Envoy {snap.membership['total']} endpoint(s), "
        f"{snap.membership['healthy']} healthy; EndpointSlices {len(comparison.slice_ready)} ready; "
        f"matches={comparison.matches}" + (f" stale={list(comparison.stale)}" if comparison.stale else "")
    )
    return result


@user_errors
def envoy_endpoints_converged(
    stats_url: str = STATS_EXAMPLE,
    url: str = LISTENER_EXAMPLE,
    host: str = "",
    namespace: str = "default",
    service: str = "",
    port: int = 80,
    admin_url: str = "",
    since: str = "",
    within_s: float = 60,
    required_successes: int = 10,
    every_s: float = 0.2,
    timeout_s: float = 2.0,
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Wait until Envoy's endpoints for a backend match its EndpointSlices again and requests succeed; report how
    long that took. Run it right after the fault is removed.

    Every `every_s` seconds it compares Envoy's endpoints with the ready ones of the EndpointSlices (as
    `envoy_backend_view` does: by address with `admin_url`, else by count) and sends one GET to `url` with Host
    `host` (the route under test). Converged means: they match, and the last `required_successes` requests in a row
    were answered 200 within `timeout_s`.

    Returns `converged`, `converged_after_s` (from the start of this probe), `endpoints_matched_after_s`,
    `first_success_after_s`, `requests`, `failed_requests` (by kind, e.g. `http_503`), `comparison` (the last one),
    and with `since` (a `snapshot` taken earlier by `envoy_backend_view`) the whole episode's `since` deltas and
    `failure_causes`. When they have not converged within `within_s` (at most 3600) it fails, naming what still
    differs, so that `chaoscontour gate` fails the run. On SIGINT, SIGTERM or SIGUSR1 it stops within a second and
    returns what it saw, with `stopped_early: true`.
    """
    target = _Target("envoy_endpoints_converged", stats_url, admin_url, namespace, service, port, timeout_s)
    listener = parse_http_url(url, "url", LISTENER_EXAMPLE)
    host_header = parse_host(host, "host")
    bound = parse_seconds(within_s, "within_s", maximum=MAX_CONVERGENCE_S)
    needed = parse_count(required_successes, "required_successes", minimum=1, maximum=MAX_SUCCESSES)
    interval = parse_seconds(every_s, "every_s", minimum=0.05, maximum=60)
    baseline = str(since or "").strip()
    if baseline:
        target.baseline(baseline)
    if interval >= bound:
        raise InvalidInput(f"every_s ({interval:g}) must be shorter than within_s ({bound:g})")
    k = kube(secrets)
    progress = Progress()
    started = time.monotonic()
    matched_at: float | None = None
    first_success: float | None = None
    streak = 0
    requests = 0
    failed: Dict[str, int] = {}
    comparison: view.EndpointComparison | None = None
    snap: view.BackendSnapshot | None = None
    converged_at: float | None = None

    def converged() -> bool:
        nonlocal snap, comparison, matched_at, requests, streak, first_success, converged_at
        now = time.monotonic()
        snap = target.snapshot()
        comparison, _ = target.compare(k, snap)
        # Matching counts from when it started matching for good: a match lost again starts over.
        matched_at = (now if matched_at is None else matched_at) if comparison.matches else None
        requests += 1
        try:
            answer = http.get(listener, host=host_header, timeout_s=target.timeout_s)
            kind = "" if answer.status == 200 else f"http_{answer.status}"
        except http.RequestFailed as exc:
            kind = exc.kind
        if kind:
            failed[kind] = failed.get(kind, 0) + 1
            streak = 0
        else:
            streak += 1
            first_success = now if first_success is None else first_success
        if matched_at is not None and streak >= needed:
            converged_at = time.monotonic()
            return True
        progress(
            f"envoy_endpoints_converged: {now - started:.0f} s: matches={comparison.matches} "
            f"stale={list(comparison.stale)} missing={list(comparison.missing)} successes in a row={streak}"
        )
        return False

    poll_until(converged, bound, interval, started=started)

    def after(at: float | None) -> float | None:
        return None if at is None else round(at - started, 3)

    result: Dict[str, Any] = {
        "converged": converged_at is not None,
        "converged_after_s": after(converged_at),
        "endpoints_matched_after_s": after(matched_at),
        "first_success_after_s": after(first_success),
        "within_s": bound,
        "requests": requests,
        "failed_requests": failed,
        "comparison": comparison.as_dict() if comparison else None,
        "membership": snap.membership if snap else None,
        "stopped_early": stop.requested() and converged_at is None,
        "stop_reason": stop.reason() if stop.requested() else "",
    }
    if baseline and snap is not None and comparison is not None:
        result["since"] = {"snapshot": baseline, **_since(target, baseline, snap, comparison.slice_ready)}
    if converged_at is not None or result["stopped_early"]:
        logger.info(
            f"envoy_endpoints_converged: converged={result['converged']} after {result['converged_after_s']} s "
            f"(endpoints matched after {result['endpoints_matched_after_s']} s)"
        )
        return result
    differs = comparison.as_dict() if comparison is not None else "nothing was read"
    raise ActivityFailed(
        f"envoy_endpoints_converged: Envoy's endpoints for {target.stat_name} did not converge within {bound:g} s "
        f"(endpoints matched: {matched_at is not None}, successes in a row: {streak} of {needed}, failed requests "
        f"{failed}); last comparison: {differs}"
    )
