"""Contour's leader: who holds the leader-election Lease, and killing that pod.

Contour elects its leader with a coordination.k8s.io/v1 Lease named ``leader-elect`` in its namespace (flags
``--leader-election-resource-name`` / ``--leader-election-resource-namespace``; Gateway-provisioned Contours use
``leader-elect-<gateway>``). Lease duration 15 s, renew deadline 10 s, retry period 2 s. Only the leader writes
status; every replica serves xDS, so Envoy keeps its configuration whoever leads. Which replica holds Envoy's xDS
stream is read from Contour's own gRPC metrics (:mod:`chaoscontour.domain.xds_clients`): Envoy's
``control_plane.identifier`` stays empty with Contour.
"""

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Dict

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets
from logzero import logger

from chaoscontour.activities._common import Progress, user_errors
from chaoscontour.domain.clock import format_utc
from chaoscontour.domain.identity import parse_holder_identity
from chaoscontour.domain.inputs import parse_bool, parse_count, parse_seconds, require_name, require_namespace
from chaoscontour.domain.lease import lease_summary, new_holder
from chaoscontour.domain.selectors import format_label_selector, parse_label_selector, selector_matches
from chaoscontour.domain.xds_clients import envoy_streams, open_xds_streams
from chaoscontour.edges import stop
from chaoscontour.edges.clock import poll_until
from chaoscontour.edges.kube import (
    ApiUnavailable,
    Kube,
    call,
    kube,
    list_pods,
    pod_proxy_get,
    read_lease,
    read_lease_at,
    to_dict,
)

__all__ = ["contour_xds_clients", "kill_leader", "lease_holder"]

_POLL_S = 0.25


@user_errors
def lease_holder(
    namespace: str = "projectcontour",
    lease_name: str = "leader-elect",
    wait_for_holder_s: float = 0,
    lease_namespace: str = "",
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Read Contour's leader-election Lease and say who holds it.

    Returns a mapping with `holder_identity` (`<pod>_<uuid>`), `pod_name`, `acquire_time`, `renew_time`,
    `seconds_since_renewal`, `lease_transitions`, `lease_duration_s`, and `held`: true when a holder renewed the
    Lease within its duration (a live leader). The Lease's age is judged on the API server's clock (the `Date` of
    its answer), not this machine's; `clock_offset_s` says how far this machine's clock is from the cluster's and
    `judged_by` which clock was used. Use it in a steady-state hypothesis with a `jsonpath` tolerance on `$.held`.

    The Lease is `lease_name` in `lease_namespace` (default: `namespace`; Contour's
    `--leader-election-resource-namespace`; stock install: `projectcontour` / `leader-elect`).
    `wait_for_holder_s` > 0 waits up to that many seconds for a live holder (after an outage, Contour pods come
    back from CrashLoopBackOff before one is elected) and returns the last reading if none appears. Only an
    unreachable API server is retried while waiting: a missing Lease, a missing namespace, 401 or 403 fail at once
    with their cause.
    """
    require_namespace(namespace)
    require_name(lease_name, "lease_name")
    lease_ns = require_namespace(lease_namespace, "lease_namespace") if lease_namespace else namespace
    wait_s = parse_seconds(wait_for_holder_s, "wait_for_holder_s", maximum=3600, allow_zero=True)
    k = kube(secrets)
    progress = Progress()
    summary: Dict[str, Any] | None = None
    unavailable: ApiUnavailable | None = None

    def held() -> bool:
        nonlocal summary, unavailable
        try:
            lease, cluster_now = read_lease_at(k, lease_ns, lease_name)
            summary, unavailable = lease_summary(lease, cluster_now, datetime.now(UTC)), None
        except ApiUnavailable as exc:
            unavailable = exc
        return unavailable is None and summary is not None and bool(summary["held"])

    def report(_: float) -> None:
        progress(f"lease_holder: waiting for a live holder of Lease {lease_ns}/{lease_name} ({wait_s:.0f} s max)")

    poll_until(held, wait_s, 0.5, on_wait=report, wake_at_deadline=True, check_after_stop=True)
    if unavailable is not None:  # out of time (or stopped) with the API server unreachable at the last try
        raise unavailable
    assert summary is not None
    return summary


@user_errors
def kill_leader(
    namespace: str = "projectcontour",
    lease_name: str = "leader-elect",
    label_selector: str = "app=contour",
    grace_period_s: int = 0,
    wait_for_new_leader: bool = True,
    timeout_s: float = 60,
    max_failover_s: float = 0,
    lease_namespace: str = "",
    metrics_port: int = 8000,
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Delete the Contour pod that holds the leader Lease, and measure how fast another replica takes over.

    The pod is the Lease's `holderIdentity` minus its `_<uuid>` suffix. It is deleted only if it exists in
    `namespace` and carries the labels of `label_selector` (`k=v,k2=v2` string or mapping; default `app=contour`):
    nothing else is ever deleted. `grace_period_s` is the deletion grace period. Even 0 is no SIGKILL on a real
    node: the kubelet gives every container at least 2 s (`minimumGracePeriodInSeconds`) and sends SIGTERM first,
    and Contour releases the Lease on SIGTERM (`LeaderElectionReleaseOnCancel`), so another replica takes it within
    a retry period or two. A leader that dies without releasing (its node lost, its process killed) leaves the Lease
    to expire: the worst case below.

    With `wait_for_new_leader` (default), waits up to `timeout_s` seconds until a different identity holds the
    Lease (recognised by identity, so no two machines' clocks are compared; `lease_namespace` as for
    `lease_holder`). Returns `old_holder`, `old_pod`, `new_holder`, `new_pod`, `failover_s` (seconds from the
    delete call to the first reading that showed the new holder, polled every 0.25 s) and `deleted_at`. Fails when
    no new leader appears in `timeout_s`, or when `max_failover_s` > 0 and the failover took longer (chaostoolkit
    evaluates tolerances only in the steady-state hypothesis, so this is how a method step enforces a bound). For
    Contour's defaults the worst case is 23.8 s, not the 17 s that lease duration + retry period suggests:
    client-go (tools/leaderelection) polls every retry period x [1, 2.2) (`JitterFactor` 1.2) and counts the lease
    duration from when the candidate *observed* the last renewal, so 4.4 + 15 + 4.4 s after it. On SIGINT,
    SIGTERM or SIGUSR1 the wait ends at once and returns what it has, with `stopped_early`.

    Whether Envoy felt it: before the delete, each replica's open xDS streams are read from its metrics on
    `metrics_port` (as `contour_xds_clients` does; 0 skips this). `xds` in the output says how many Envoy streams
    were on the killed pod (`on_killed_pod`, of `streams_before`) and, when there were some, the seconds from the
    delete call until the other replicas held them all (`reconnected_after_s`, polled with the Lease; null when not
    seen within `timeout_s`) and on which pods (`reconnected_to`). `known` is false, with a `reason`, when the
    killed pod's metrics could not be read (RBAC without `get` on `pods/proxy`, another metrics port): the kill
    goes on, and the output says the stream's place is unknown rather than guessing.
    """
    require_namespace(namespace)
    require_name(lease_name, "lease_name")
    lease_ns = require_namespace(lease_namespace, "lease_namespace") if lease_namespace else namespace
    labels = parse_label_selector(label_selector)
    grace = parse_count(grace_period_s, "grace_period_s", maximum=3600)
    waiting = parse_bool(wait_for_new_leader, "wait_for_new_leader")
    timeout = parse_seconds(timeout_s, "timeout_s", maximum=3600)
    max_failover = parse_seconds(max_failover_s, "max_failover_s", maximum=3600, allow_zero=True)
    port = parse_count(metrics_port, "metrics_port", maximum=65535)

    k = kube(secrets)
    lease = read_lease(k, lease_ns, lease_name)
    old_holder = (lease.get("spec") or {}).get("holderIdentity") or ""
    old_pod = parse_holder_identity(old_holder).pod_name

    pod = call(
        f"read pod {namespace}/{old_pod}",
        k.core.read_namespaced_pod,
        old_pod,
        namespace,
        not_found=(
            f"the Lease {lease_ns}/{lease_name} names {old_holder!r}, but pod {namespace}/{old_pod} does not "
            "exist: the Lease is stale (no live leader?); nothing was deleted"
        ),
    )
    pod_labels = to_dict(k, pod)["metadata"].get("labels") or {}
    if not selector_matches(labels, pod_labels):
        raise ActivityFailed(
            f"refusing to delete pod {namespace}/{old_pod}: it holds Lease {lease_name} but does not match "
            f"{format_label_selector(labels)!r} (its labels: {format_label_selector(pod_labels) or 'none'}); "
            "nothing was deleted. Set label_selector to Contour's pod labels"
        )

    selector = format_label_selector(labels)
    xds = _xds_before(k, namespace, selector, port, old_pod)
    deleted_at = datetime.now(UTC)
    started = time.monotonic()
    call(
        f"delete pod {namespace}/{old_pod}",
        k.core.delete_namespaced_pod,
        old_pod,
        namespace,
        grace_period_seconds=grace,
    )
    logger.info(f"kill_leader: deleted leader pod {namespace}/{old_pod} (grace {grace} s)")
    result: Dict[str, Any] = {
        "old_holder": old_holder,
        "old_pod": old_pod,
        "deleted_at": format_utc(deleted_at),
        "grace_period_s": grace,
        "new_holder": None,
        "new_pod": None,
        "failover_s": None,
        "xds": xds,
    }
    if not waiting:
        return result

    progress = Progress()

    taken: Dict[str, Any] = {}
    moved = _StreamWatch(k, namespace, selector, port, old_pod, xds, started)

    def taken_over() -> tuple[str, Dict[str, Any]] | None:
        if not taken:
            try:
                current = read_lease(k, lease_ns, lease_name)
            except ApiUnavailable:
                current = {}
            holder = new_holder(current, old_holder)
            if holder:
                taken.update(holder=holder, lease=current, after_s=time.monotonic() - started)
        moved.check()
        return (taken["holder"], taken["lease"]) if taken and moved.done else None

    def report(elapsed: float) -> None:
        progress(f"kill_leader: waiting for a new holder of {lease_ns}/{lease_name}: {elapsed:.0f}/{timeout:.0f} s")

    polled = poll_until(taken_over, timeout, _POLL_S, started=started, on_wait=report, check_after_stop=True)
    elapsed = taken.get("after_s", polled.elapsed_s)
    if taken and not moved.done:
        logger.warning(f"kill_leader: Envoy's xDS streams were not all on the other replicas within {timeout:.0f} s")
    if polled.stopped:
        logger.warning(f"kill_leader: {stop.reason()}: stopped waiting after {elapsed:.1f} s")
        result["stopped_early"] = True
        if not taken:
            return result
    if not taken:
        raise ActivityFailed(
            f"no other Contour replica took over Lease {lease_ns}/{lease_name} within {timeout:.0f} s of "
            f"deleting {old_pod}; is more than one replica running?"
        )
    holder, current = taken["holder"], taken["lease"]
    result.update(
        new_holder=holder,
        new_pod=parse_holder_identity(holder).pod_name,
        failover_s=round(elapsed, 3),
        lease_transitions=current["spec"].get("leaseTransitions"),
    )
    logger.info(f"kill_leader: {result['new_pod']} took over the Lease after {elapsed:.1f} s")
    if max_failover and result["failover_s"] > max_failover:
        raise ActivityFailed(
            f"failover took {result['failover_s']:.1f} s, more than max_failover_s={max_failover:g} "
            f"(old leader {old_pod}, new leader {result['new_pod']})"
        )
    return result


def _xds_readings(k: Kube, namespace: str, selector: str, port: int, skip: str = "") -> list[Dict[str, Any]]:
    """Each pod of ``selector`` (but ``skip``) with the xDS streams its metrics show open, or why they could not
    be read (a pod not running, a metrics port that does not answer, RBAC without ``pods/proxy``)."""
    readings: list[Dict[str, Any]] = []
    for pod in list_pods(k, namespace, selector):
        name = str(pod["metadata"]["name"])
        status = pod.get("status") or {}
        if name == skip:
            continue
        if status.get("phase") != "Running" or not status.get("podIP"):
            phase = status.get("phase") or "not scheduled"
            why = "has no IP yet" if phase == "Running" else f"is {phase}, not Running"
            readings.append({"pod": name, "error": f"the pod {why}"})
            continue
        try:
            opened = open_xds_streams(pod_proxy_get(k, namespace, name, port, "metrics"))
        except ActivityFailed as exc:
            readings.append({"pod": name, "error": str(exc)})
            continue
        readings.append({"pod": name, "envoy_streams": envoy_streams(opened), "open_streams": opened})
    return readings


def _streams(readings: list[Dict[str, Any]]) -> int:
    return sum(int(r.get("envoy_streams") or 0) for r in readings)


def _xds_before(k: Kube, namespace: str, selector: str, port: int, killed: str) -> Dict[str, Any]:
    """Where Envoy's xDS streams are before ``killed`` is deleted: ``kill_leader``'s ``xds`` output, to be
    completed by :class:`_StreamWatch`."""
    xds: Dict[str, Any] = {
        "known": False,
        "reason": None,
        "streams_before": {},
        "on_killed_pod": None,
        "reconnected_after_s": None,
        "reconnected_to": [],
    }
    if port == 0:
        xds["reason"] = "not read (metrics_port 0)"
        return xds
    try:
        readings = _xds_readings(k, namespace, selector, port)
    except ActivityFailed as exc:
        xds["reason"] = str(exc)
        return xds
    xds["streams_before"] = {r["pod"]: r["envoy_streams"] for r in readings if "error" not in r}
    [mine] = [r for r in readings if r["pod"] == killed] or [{"error": "the pod is not among the selector's pods"}]
    if "error" in mine:
        xds["reason"] = f"the metrics of {killed} could not be read: {mine['error']}"
    else:
        xds.update(known=True, on_killed_pod=mine["envoy_streams"])
    return xds


@dataclass
class _StreamWatch:
    """After the delete: once the other replicas hold every Envoy stream counted before, record when and where."""

    k: Kube
    namespace: str
    selector: str
    port: int
    killed: str
    xds: Dict[str, Any]
    t0: float

    def __post_init__(self) -> None:
        self.wanted = sum(self.xds["streams_before"].values())
        self.done = not self.xds["known"] or not self.xds["on_killed_pod"]

    def check(self) -> None:
        if self.done:
            return
        try:
            readings = _xds_readings(self.k, self.namespace, self.selector, self.port, skip=self.killed)
        except ActivityFailed:  # the API server busy with the failover: look again at the next poll
            return
        if _streams(readings) >= self.wanted:
            self.xds["reconnected_after_s"] = round(time.monotonic() - self.t0, 3)
            self.xds["reconnected_to"] = [r["pod"] for r in readings if r.get("envoy_streams")]
            self.done = True


@user_errors
def contour_xds_clients(
    namespace: str = "projectcontour",
    label_selector: str = "app=contour",
    metrics_port: int = 8000,
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Tell which Contour replicas serve Envoy's xDS streams, and how many Envoys each serves.

    Every replica serves xDS (only status writing needs the leader), and Envoy's own `control_plane.identifier`
    stats stay empty with Contour, so the answer comes from Contour's side: each pod's gRPC server metrics
    (`grpc_server_started_total` minus `grpc_server_handled_total` for the `envoy.service.*DiscoveryService`
    streams), read on `metrics_port` (Contour's `--http-port`, 8000 in the release manifest) through the API
    server's pod proxy, which needs `get` on `pods/proxy`.

    Returns `pods` (one entry per pod of `label_selector` in `namespace`: `pod`, `envoy_streams`, the number of
    Envoys it serves, and `open_streams` per gRPC method; or `pod` and `error` when its metrics could not be read),
    `serving` (the pods with at least one Envoy), `envoy_streams` (the total) and `unreadable` (pods with an
    error). Fails when no pod matches or none could be read, with the reasons.
    """
    require_namespace(namespace)
    labels = parse_label_selector(label_selector)
    port = parse_count(metrics_port, "metrics_port", maximum=65535)
    if port == 0:
        raise ActivityFailed("contour_xds_clients: metrics_port must be Contour's metrics port (1-65535), not 0")
    selector = format_label_selector(labels)
    readings = _xds_readings(kube(secrets), namespace, selector, port)
    unreadable = [r["pod"] for r in readings if "error" in r]
    if not readings:
        raise ActivityFailed(f"contour_xds_clients: no pod matches {selector!r} in namespace {namespace}")
    if len(unreadable) == len(readings):
        reasons = "; ".join(f"{r['pod']}: {r['error']}" for r in readings)
        raise ActivityFailed(f"contour_xds_clients: no Contour pod's metrics could be read on port {port}: {reasons}")
    serving = [r["pod"] for r in readings if r.get("envoy_streams")]
    total = _streams(readings)
    logger.info(f"contour_xds_clients: {total} Envoy stream(s), on {', '.join(serving) or 'no replica'}")
    return {
        "pods": readings,
        "serving": serving,
        "envoy_streams": total,
        "unreadable": unreadable,
        "metrics_port": port,
    }
