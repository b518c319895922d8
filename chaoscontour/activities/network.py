"""The network fault: cut Contour off from the Kubernetes API server with a NetworkPolicy, and remove it again.

What happens then (Contour's cmd/contour/serve.go and internal/health/health.go): the leader cannot renew its
Lease and exits with "leader election lost"; no other replica can take the Lease; every replica's liveness check
(`/healthz` asks the API server) fails, so the kubelet restarts them all about 30 s later, into CrashLoopBackOff.
Envoy keeps its last xDS configuration and keeps routing.

Safety, in order: input is checked before anything is sent; the fault is refused when it could not work; the
policy is owned by an expiry Job so Kubernetes removes it even if this process dies; after creating it we verify
that the leader's renewals stopped, and remove it and fail when they did not, so an experiment never claims Envoy
survived an outage that never happened; removal is idempotent and scoped to one run.
"""

import time
from datetime import UTC, datetime
from typing import Any, Dict, List

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets
from logzero import logger

from chaoscontour.activities._common import Progress, process_run_id, user_errors
from chaoscontour.domain import policy as fault
from chaoscontour.domain.inputs import (
    InvalidInput,
    parse_cidrs,
    require_name,
    require_namespace,
    require_positive,
    require_run_id,
)
from chaoscontour.domain.lease import parse_api_time
from chaoscontour.domain.selectors import format_label_selector, parse_label_selector
from chaoscontour.edges.kube import (
    Kube,
    call,
    delete_if_present,
    delete_in_background,
    kube,
    list_pods,
    read_lease,
    to_dict,
)

__all__ = ["block_apiserver_egress", "unblock_apiserver_egress"]

OPEN_CONNECTION_MODES = ("none", "restart-pods")
_POLL_S = 0.5


def _selected_pods(k: Kube, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    """The selected pods that are running or about to: the ones the fault must cut off."""
    return [
        pod
        for pod in list_pods(k, namespace, format_label_selector(labels))
        if not pod["metadata"].get("deletionTimestamp")
        and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]


def _apiserver_target(k: Kube) -> fault.ApiServerTarget:
    slices = call(
        "list the EndpointSlices of Service default/kubernetes",
        k.discovery.list_namespaced_endpoint_slice,
        "default",
        label_selector="kubernetes.io/service-name=kubernetes",
    )
    service = call(
        "read Service default/kubernetes",
        k.core.read_namespaced_service,
        "kubernetes",
        "default",
        not_found="Service default/kubernetes not found: this does not look like a Kubernetes API server",
    )
    try:
        return fault.apiserver_target(to_dict(k, slices).get("items") or [], to_dict(k, service))
    except ValueError as exc:
        raise ActivityFailed(f"block_apiserver_egress: {exc}") from exc


def _verify(
    k: Kube, namespace: str, lease_name: str, window_s: float, timeout_s: float, created_at: float
) -> Dict[str, Any]:
    """Watch the Lease until its renewals have stopped for ``window_s`` seconds, or ``timeout_s`` runs out.

    A live leader renews every retry period (2 s by default), so quiet for ``window_s`` (default 8 s, four retry
    periods) means it can no longer reach the API server. Renewals by an empty holder (a Lease being released)
    are not renewals: a pod deleted by ``restart-pods`` may release the Lease on its way out.
    """
    lease = read_lease(k, namespace, lease_name)
    last_renew = parse_api_time(lease["spec"].get("renewTime"))
    quiet_since = created_at
    renewals = 0
    progress = Progress()
    while True:
        now = time.monotonic()
        if now - quiet_since >= window_s:
            return {
                "confirmed": True,
                "signal": "lease-renewals-stopped",
                "renewals_after_block": renewals,
                "quiet_s": round(now - quiet_since, 1),
                "confirmed_after_s": round(now - created_at, 1),
            }
        if now - created_at >= timeout_s:
            return {
                "confirmed": False,
                "signal": "lease-still-renewed",
                "renewals_after_block": renewals,
                "holder": lease["spec"].get("holderIdentity"),
                "checked_for_s": round(now - created_at, 1),
            }
        progress(
            f"block_apiserver_egress: verifying the fault: Lease {namespace}/{lease_name} quiet for "
            f"{now - quiet_since:.0f}/{window_s:.0f} s, {renewals} renewal(s) since the block"
        )
        time.sleep(_POLL_S)
        lease = read_lease(k, namespace, lease_name)
        renew = parse_api_time(lease["spec"].get("renewTime"))
        if renew != last_renew and lease["spec"].get("holderIdentity"):
            renewals += 1
            quiet_since = time.monotonic()
        last_renew = renew


def _not_confirmed_message(verification: Dict[str, Any], namespace: str, lease_name: str, mode: str) -> str:
    seen = verification["renewals_after_block"]
    message = (
        f"the fault did not take effect: Lease {namespace}/{lease_name} was renewed {seen} time(s) by "
        f"{verification.get('holder')} in the {verification['checked_for_s']:.0f} s after the NetworkPolicy was "
        "created, so Contour still reaches the API server. The policy was removed. "
    )
    if mode == "none":
        message += (
            "With open_connections='none' this is what a CNI that lets established connections live on does "
            "(Calico, Antrea): Contour's open connection to the API server is never cut; run again with "
            "open_connections='restart-pods'. "
        )
    return message + (
        "Otherwise: the cluster's CNI does not enforce NetworkPolicy (e.g. flannel, kindnet without policies), "
        "it matches the API server by something other than its address (Cilium's kube-apiserver entity), or a "
        "policy we could not see allows it."
    )


@user_errors
def block_apiserver_egress(
    namespace: str = "projectcontour",
    label_selector: str = "app=contour",
    duration_s: float = 120,
    extra_cidrs: List[str] = None,
    run_id: str = "",
    force: bool = False,
    open_connections: str = "none",
    verify: bool = True,
    lease_name: str = "leader-elect",
    verify_window_s: float = 8,
    verify_timeout_s: float = 30,
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Cut the selected Contour pods off from the Kubernetes API server with a NetworkPolicy, and nothing else.

    The API server's addresses are discovered, not configured: the endpoints of the `default/kubernetes`
    EndpointSlices (IPv4 and IPv6) and that Service's ClusterIPs, plus any `extra_cidrs` (list of CIDRs, e.g.
    an external load balancer in front of the API server). The policy selects the pods of `label_selector`
    (`k=v,k2=v2` string or mapping; default `app=contour`) in `namespace` and allows all other egress (`0.0.0.0/0`
    and `::/0` with those addresses excepted, and DNS to any pod). It is labelled
    `app.kubernetes.io/managed-by=chaoscontour` and `chaoscontour/run-id=<run_id>`, annotated with its expiry,
    and owned by a pod-less Job whose `activeDeadlineSeconds` is `duration_s`: when it ends, Kubernetes' garbage
    collector removes the policy even if the `chaos` process was killed.

    Refuses, creating nothing, when the selector matches no pod, or when another NetworkPolicy already allows those
    pods egress to the API server (policies are additive, so the fault would do nothing) unless `force` is true.

    `open_connections` says what to do about the connection Contour already holds to the API server, which some
    CNIs (Calico, Antrea) let live on under a new policy: `none` (rely on the CNI) or `restart-pods` (delete the
    selected pods once the policy is in place, so their replacements' connections meet it).

    With `verify` (default), it then watches the `lease_name` Lease: the fault is confirmed when no renewal
    happens for `verify_window_s` seconds (four retry periods by default) within `verify_timeout_s`. If the leader
    keeps renewing, the policy is removed and the action fails saying why, so the experiment cannot report that
    Envoy survived an outage that never happened.

    `run_id` (1-32 of `a-z0-9-`) names this run's objects; empty means this `chaos run` process's own id, which the
    rollback `unblock_apiserver_egress` uses by default too. Returns `name`, `namespace`, `run_id`,
    `selected_pods`, `blocked_cidrs`, `expires_at`, `expiry_job`, `open_connections`, `restarted_pods` and
    `verification`.
    """
    require_namespace(namespace)
    labels = parse_label_selector(label_selector)
    duration = require_positive(duration_s, "duration_s")
    extra = parse_cidrs(extra_cidrs)
    run = require_run_id(run_id or process_run_id())
    if open_connections not in OPEN_CONNECTION_MODES:
        raise InvalidInput(
            f"open_connections must be one of {', '.join(OPEN_CONNECTION_MODES)}, not {open_connections!r}"
        )
    require_name(lease_name, "lease_name")
    window = require_positive(verify_window_s, "verify_window_s")
    verify_timeout = require_positive(verify_timeout_s, "verify_timeout_s")
    if verify and verify_timeout <= window:
        raise InvalidInput(f"verify_timeout_s ({verify_timeout:g}) must be longer than verify_window_s ({window:g})")

    k = kube(secrets)
    pods = _selected_pods(k, namespace, labels)
    if not pods:
        raise ActivityFailed(
            f"no running pod in namespace {namespace!r} matches {format_label_selector(labels)!r}; nothing was "
            "created. Check that the namespace is where Contour runs and that label_selector matches its pods"
        )
    target = _apiserver_target(k)
    blocked = [fault.host_cidr(a) for a in target.addresses] + [c for c in extra if c not in target.addresses]

    policies = call(f"list NetworkPolicies in {namespace}", k.networking.list_namespaced_network_policy, namespace)
    reasons = fault.defeating_policies(
        to_dict(k, policies).get("items") or [], pods, list(target.addresses), list(target.ports)
    )
    if reasons and not force:
        raise ActivityFailed(
            "another NetworkPolicy already allows these pods to reach the API server, and policies are additive, "
            "so the fault would do nothing: " + "; ".join(reasons) + ". Nothing was created; set force=true to "
            "create it anyway"
        )
    for reason in reasons:
        logger.warning(f"block_apiserver_egress: force=true despite: {reason}")

    now = datetime.now(UTC)
    job = to_dict(
        k,
        call(
            f"create expiry Job in {namespace}",
            k.batch.create_namespaced_job,
            namespace,
            fault.build_expiry_job(namespace=namespace, run_id=run, duration_s=duration, now=now),
        ),
    )["metadata"]
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": job["name"], "uid": job["uid"]}
    expires_at = job["annotations"][fault.EXPIRES_AT_ANNOTATION]
    body = fault.build_block_policy(
        namespace=namespace,
        pod_labels=labels,
        blocked_cidrs=blocked,
        run_id=run,
        expires_at=parse_api_time(expires_at) or now,
        owner=owner,
    )
    try:
        call(
            f"create NetworkPolicy {namespace}/{body['metadata']['name']}",
            k.networking.create_namespaced_network_policy,
            namespace,
            body,
        )
    except ActivityFailed:
        delete_in_background(k, "Job", namespace, job["name"])
        raise
    created_at = time.monotonic()
    logger.info(
        f"block_apiserver_egress: {namespace}/{body['metadata']['name']} blocks {', '.join(blocked)} for "
        f"{len(pods)} pod(s) until {expires_at}"
    )

    result: Dict[str, Any] = {
        "name": body["metadata"]["name"],
        "namespace": namespace,
        "run_id": run,
        "selected_pods": sorted(p["metadata"]["name"] for p in pods),
        "blocked_cidrs": blocked,
        "apiserver_ports": list(target.ports),
        "expires_at": expires_at,
        "expiry_job": job["name"],
        "open_connections": open_connections,
        "restarted_pods": [],
        "verification": {"confirmed": None, "signal": "not verified (verify=false)"},
    }
    try:
        if open_connections == "restart-pods":
            for pod in pods:
                name = pod["metadata"]["name"]
                delete_if_present(f"delete pod {namespace}/{name}", k.core.delete_namespaced_pod, name, namespace)
                result["restarted_pods"].append(name)
            logger.info(
                f"block_apiserver_egress: restarted {len(pods)} pod(s) so their new connections meet the policy"
            )
        if verify:
            result["verification"] = _verify(k, namespace, lease_name, window, verify_timeout, created_at)
    except BaseException:
        _remove_run(k, namespace, run)
        raise
    if verify and not result["verification"]["confirmed"]:
        _remove_run(k, namespace, run)
        raise ActivityFailed(_not_confirmed_message(result["verification"], namespace, lease_name, open_connections))
    return result


def _names(k: Kube, listing: Any) -> list[str]:
    return [item["metadata"]["name"] for item in to_dict(k, listing).get("items") or []]


def _remove_run(k: Kube, namespace: str, run_id: str) -> Dict[str, List[str]]:
    """Delete the policies and expiry Jobs of one run (or of all runs when ``run_id`` is empty)."""
    selector = fault.managed_selector(run_id)
    removed: Dict[str, List[str]] = {"policies": [], "jobs": []}
    policies = call(
        f"list our NetworkPolicies in {namespace}",
        k.networking.list_namespaced_network_policy,
        namespace,
        label_selector=selector,
    )
    for name in _names(k, policies):
        if delete_in_background(k, "NetworkPolicy", namespace, name):
            removed["policies"].append(name)
    jobs = call(f"list our expiry Jobs in {namespace}", k.batch.list_namespaced_job, namespace, label_selector=selector)
    for name in _names(k, jobs):
        if delete_in_background(k, "Job", namespace, name):
            removed["jobs"].append(name)
    return removed


@user_errors
def unblock_apiserver_egress(
    namespace: str = "projectcontour",
    run_id: str = "",
    all_runs: bool = False,
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Remove the API-server egress fault: the rollback of `block_apiserver_egress`.

    Deletes, in `namespace`, the NetworkPolicies and expiry Jobs this extension created for one run: `run_id`, or
    by default this `chaos run` process's own id (the one `block_apiserver_egress` used by default), so concurrent
    runs never remove each other's fault. `all_runs` removes every run's objects instead. Idempotent: nothing to
    remove is success. Returns `removed_policies`, `removed_jobs` and the `run_id` it looked for.
    """
    require_namespace(namespace)
    if all_runs and run_id:
        raise InvalidInput("give either run_id or all_runs=true, not both")
    run = "" if all_runs else require_run_id(run_id or process_run_id())
    k = kube(secrets)
    removed = _remove_run(k, namespace, run)
    logger.info(
        f"unblock_apiserver_egress: removed {len(removed['policies'])} policy(ies) and "
        f"{len(removed['jobs'])} expiry Job(s) of run {run or '*'} in {namespace}"
    )
    return {"run_id": run or "*", "removed_policies": removed["policies"], "removed_jobs": removed["jobs"]}
