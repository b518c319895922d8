"""Contour's leader: who holds the leader-election Lease, and killing that pod.

Contour elects its leader with a coordination.k8s.io/v1 Lease named ``leader-elect`` in its namespace (flags
``--leader-election-resource-name`` / ``--leader-election-resource-namespace``; Gateway-provisioned Contours use
``leader-elect-<gateway>``). Lease duration 15 s, renew deadline 10 s, retry period 2 s. Only the leader writes
status; every replica serves xDS, so Envoy keeps its configuration whoever leads.
"""

import time
from datetime import UTC, datetime
from typing import Any, Dict

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets
from logzero import logger

from chaoscontour.activities._common import Progress, user_errors
from chaoscontour.domain.identity import parse_holder_identity
from chaoscontour.domain.inputs import require_name, require_namespace, require_non_negative, require_positive
from chaoscontour.domain.lease import lease_summary, parse_api_time, renewed_by_other
from chaoscontour.domain.selectors import format_label_selector, parse_label_selector, selector_matches
from chaoscontour.edges.kube import call, kube, read_lease, to_dict

__all__ = ["kill_leader", "lease_holder"]

_POLL_S = 0.25


@user_errors
def lease_holder(
    namespace: str = "projectcontour",
    lease_name: str = "leader-elect",
    wait_for_holder_s: float = 0,
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Read Contour's leader-election Lease and say who holds it.

    Returns a mapping with `holder_identity` (`<pod>_<uuid>`), `pod_name`, `acquire_time`, `renew_time`,
    `seconds_since_renewal`, `lease_transitions`, `lease_duration_s`, and `held`: true when a holder renewed the
    Lease within its duration (a live leader). Use it in a steady-state hypothesis with a `jsonpath` tolerance on
    `$.held`, or a `range` tolerance with `target` `seconds_since_renewal`.

    `namespace` and `lease_name` locate the Lease (stock install: `projectcontour` / `leader-elect`).
    `wait_for_holder_s` > 0 waits up to that many seconds for a live holder (after an outage, Contour pods come
    back from CrashLoopBackOff before one is elected) and returns the last reading if none appears. A missing Lease
    fails the probe with a message naming it.
    """
    require_namespace(namespace)
    require_name(lease_name, "lease_name")
    wait_s = require_non_negative(wait_for_holder_s, "wait_for_holder_s")
    k = kube(secrets)
    deadline = time.monotonic() + wait_s
    progress = Progress()
    while True:
        try:
            summary = lease_summary(read_lease(k, namespace, lease_name), datetime.now(UTC))
        except ActivityFailed:
            if time.monotonic() >= deadline:
                raise
            summary = None
        if summary and (summary["held"] or time.monotonic() >= deadline):
            return summary
        progress(f"lease_holder: waiting for a live holder of Lease {namespace}/{lease_name} ({wait_s:.0f} s max)")
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


@user_errors
def kill_leader(
    namespace: str = "projectcontour",
    lease_name: str = "leader-elect",
    label_selector: str = "app=contour",
    grace_period_s: int = 0,
    wait_for_new_leader: bool = True,
    timeout_s: float = 60,
    max_failover_s: float = 0,
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Delete the Contour pod that holds the leader Lease, and measure how fast another replica takes over.

    The pod is the Lease's `holderIdentity` minus its `_<uuid>` suffix. It is deleted only if it exists in
    `namespace` and carries the labels of `label_selector` (`k=v,k2=v2` string or mapping; default `app=contour`):
    nothing else is ever deleted. `grace_period_s` is the deletion grace period (0 = hard kill: the leader cannot
    release the Lease, so the takeover waits for the lease duration to run out, the worst case).

    With `wait_for_new_leader` (default), waits up to `timeout_s` seconds until a different holder renews the
    Lease. Returns `old_holder`, `old_pod`, `new_holder`, `new_pod`, `failover_s` (seconds from the delete call to
    the first reading that showed the new holder, polled every 0.25 s) and `deleted_at`. Fails when no new leader
    appears in `timeout_s`, or when `max_failover_s` > 0 and the failover took longer (chaostoolkit evaluates
    tolerances only in the steady-state hypothesis, so this is how a method step enforces a bound). For Contour's
    defaults the worst case is 23.8 s, not the 17 s that lease duration + retry period suggests: client-go
    (tools/leaderelection) polls every retry period x [1, 2.2) (`JitterFactor` 1.2) and counts the lease duration
    from when the candidate *observed* the last renewal, so 4.4 + 15 + 4.4 s after it.
    """
    require_namespace(namespace)
    require_name(lease_name, "lease_name")
    labels = parse_label_selector(label_selector)
    grace = int(require_non_negative(grace_period_s, "grace_period_s"))
    timeout = require_positive(timeout_s, "timeout_s")
    max_failover = require_non_negative(max_failover_s, "max_failover_s")

    k = kube(secrets)
    lease = read_lease(k, namespace, lease_name)
    old_holder = (lease.get("spec") or {}).get("holderIdentity") or ""
    old_pod = parse_holder_identity(old_holder).pod_name
    old_renew = parse_api_time((lease.get("spec") or {}).get("renewTime")) or datetime.now(UTC)

    pod = call(
        f"read pod {namespace}/{old_pod}",
        k.core.read_namespaced_pod,
        old_pod,
        namespace,
        not_found=(
            f"the Lease {namespace}/{lease_name} names {old_holder!r}, but pod {namespace}/{old_pod} does not "
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
        "deleted_at": deleted_at.isoformat().replace("+00:00", "Z"),
        "grace_period_s": grace,
        "new_holder": None,
        "new_pod": None,
        "failover_s": None,
    }
    if not wait_for_new_leader:
        return result

    progress = Progress()
    while True:
        current = read_lease(k, namespace, lease_name)
        if renewed_by_other(current, old_holder, after=old_renew):
            elapsed = time.monotonic() - started
            new_holder = current["spec"]["holderIdentity"]
            result.update(
                new_holder=new_holder,
                new_pod=parse_holder_identity(new_holder).pod_name,
                failover_s=round(elapsed, 3),
                lease_transitions=current["spec"].get("leaseTransitions"),
            )
            logger.info(f"kill_leader: {result['new_pod']} took over the Lease after {elapsed:.1f} s")
            break
        elapsed = time.monotonic() - started
        if elapsed >= timeout:
            raise ActivityFailed(
                f"no other Contour replica took over Lease {namespace}/{lease_name} within {timeout:.0f} s of "
                f"deleting {old_pod}; is more than one replica running?"
            )
        progress(f"kill_leader: waiting for a new holder of {namespace}/{lease_name}: {elapsed:.0f}/{timeout:.0f} s")
        time.sleep(_POLL_S)
    if max_failover and result["failover_s"] > max_failover:
        raise ActivityFailed(
            f"failover took {result['failover_s']:.1f} s, more than max_failover_s={max_failover:g} "
            f"(old leader {old_pod}, new leader {result['new_pod']})"
        )
    return result
