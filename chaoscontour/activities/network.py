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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Dict, List

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets
from logzero import logger

from chaoscontour.activities import _fault, _preflight
from chaoscontour.activities._common import user_errors
from chaoscontour.activities._confirm import confirm_fault, confirmed_fault, forget_fault, not_confirmed_message
from chaoscontour.domain import policy, verification
from chaoscontour.domain.inputs import (
    InvalidInput,
    parse_choice,
    parse_cidrs,
    parse_seconds,
    require_name,
    require_namespace,
)
from chaoscontour.domain.lease import lease_liveness_problem, lease_summary
from chaoscontour.domain.selectors import format_label_selector, parse_label_selector
from chaoscontour.edges.kube import Kube, call, delete_if_present, read_lease, read_lease_at, to_dict

__all__ = ["apiserver_egress_fault", "block_apiserver_egress", "unblock_apiserver_egress"]

OPEN_CONNECTION_MODES = ("none", "restart-pods")
# Time left after the Lease's duration for the verification's reads and for replacement pods to start.
VERIFY_MARGIN_S = 5.0


def _apiserver_target(k: Kube) -> policy.ApiServerTarget:
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
        return policy.apiserver_target(to_dict(k, slices).get("items") or [], to_dict(k, service))
    except ValueError as exc:
        raise ActivityFailed(f"block_apiserver_egress: {exc}") from exc


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
    lease_namespace: str = "",
    verify_window_s: float = 0,
    verify_timeout_s: float = 60,
    dead_man_s: float = 20,
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Cut the selected Contour pods off from the Kubernetes API server with a NetworkPolicy, and nothing else.

    The API server's addresses are discovered, not configured: the endpoints of the `default/kubernetes`
    EndpointSlices (IPv4 and IPv6) and that Service's ClusterIPs, plus any `extra_cidrs` (list of CIDRs, e.g.
    an external load balancer in front of the API server). The policy selects the pods of `label_selector`
    (`k=v,k2=v2` string or mapping; default `app=contour`) in `namespace` and allows all other egress (`0.0.0.0/0`
    and `::/0` with those addresses excepted, and DNS to any pod). It is labelled
    `app.kubernetes.io/managed-by=chaoscontour` and `chaoscontour/run-id=<run_id>`, annotated with its expiry,
    and owned by a pod-less expiry Job: when the Job's deadline passes, Kubernetes' garbage collector removes the
    policy even if the `chaos` process was killed.

    Dead-man switch: the Job's deadline starts `dead_man_s` (default 20 s) ahead and a thread of this process
    pushes it forward while the run lives, never past `duration_s` (the hard cap, at most 4 h). If the process
    dies, or is told to stop (SIGINT, SIGTERM, SIGUSR1), the fault ends within `dead_man_s` plus the controllers'
    few seconds. `dead_man_s` 0 turns the switch off (the deadline is `duration_s` from the start).

    Refuses, creating nothing, when the selector matches no pod; with `verify`, when the Lease is not live evidence
    (not renewed within its duration by the API server's clock, or held by none of the selected pods: a Lease nobody
    renews would "confirm" any fault); or when another NetworkPolicy already allows those pods egress to the API
    server (policies are additive, so the fault would do nothing) unless `force` is true. `extra_cidrs` wider than
    a /8, or together more than 1/16 of IPv4 or IPv6 (`0.0.0.0/1,128.0.0.0/1` is everything), are refused unless
    `force` is true; `0.0.0.0/0` and `::/0` always.
    Fails and removes the Job when a queueing controller (e.g. Kueue) suspended it: a suspended Job never reaches
    its deadline, so the fault would never expire.

    `open_connections` says what to do about the connection Contour already holds to the API server, which some
    CNIs (Calico, Antrea) let live on under a new policy: `none` (rely on the CNI) or `restart-pods` (delete the
    selected pods once the policy is in place, so their replacements' connections meet it).

    With `verify` (default), it then reads the Lease `lease_name` in `lease_namespace` (default: `namespace`;
    Contour's `--leader-election-resource-namespace`) until it has stayed unchanged for longer than its own
    `leaseDurationSeconds`, measured between two reads on this process's monotonic clock: whatever Contour's
    leader-election timings, a Contour that still reaches the API server writes its Lease more often than that.
    `verify_window_s` may lengthen that quiet period, never shorten it. If that does not happen within
    `verify_timeout_s`, the policy is removed and the action fails naming what it saw, so the experiment cannot
    report that Envoy survived an outage that never happened.

    `run_id` (1-32 of `a-z0-9-`) names this run's objects; empty means this `chaos run` process's own id, which the
    rollback `unblock_apiserver_egress` uses by default too. Returns `name`, `namespace`, `run_id`,
    `selected_pods`, `blocked_cidrs`, `apiserver_ports`, `expires_at` (the hard cap), `expiry_job`, `dead_man_s`,
    `open_connections`, `restarted_pods` and `verification` (`confirmed`, `evidence`, `evidence_text`,
    `confirmed_after_s`, `required_quiet_s`, renewals seen).
    """
    require_namespace(namespace)
    labels = parse_label_selector(label_selector)
    inputs = _fault.parse_fault_inputs(duration_s, run_id, force, verify, dead_man_s)
    extra = parse_cidrs(extra_cidrs, bounded=not inputs.force)
    mode = parse_choice(open_connections, "open_connections", OPEN_CONNECTION_MODES)
    require_name(lease_name, "lease_name")
    lease_ns = require_namespace(lease_namespace, "lease_namespace") if lease_namespace else namespace
    window = parse_seconds(verify_window_s, "verify_window_s", maximum=3600, allow_zero=True)
    verify_timeout = parse_seconds(verify_timeout_s, "verify_timeout_s", maximum=3600)
    if inputs.verify and verify_timeout <= window + VERIFY_MARGIN_S:
        raise InvalidInput(
            f"verify_timeout_s ({verify_timeout:g}) must be longer than verify_window_s ({window:g}) plus "
            f"{VERIFY_MARGIN_S:g} s"
        )

    cut = ApiServerCut(namespace, inputs, labels, extra, mode, lease_name, lease_ns, window, verify_timeout)
    return _fault.block(cut, secrets)


@dataclass
class ApiServerCut(_fault.Fault):
    """One block's API-server fault: the pods of ``pod_labels`` lose the API server's addresses and ``extra``;
    when verifying, the Lease ``lease_ns``/``lease_name`` stays quiet for longer than its duration (and ``window``)
    within ``verify_timeout``."""

    spec = _fault.FaultSpec(
        policy.FAULT_APISERVER_EGRESS,
        policy_name=policy.policy_name,
        job_name=policy.expiry_job_name,
        forget=forget_fault,
    )
    allows = "allows these pods to reach the API server"
    pod_labels: Dict[str, str]
    extra: List[str]
    mode: str
    lease_name: str
    lease_ns: str
    window: float
    verify_timeout: float
    pods: List[Dict[str, Any]] = field(init=False)
    target: policy.ApiServerTarget = field(init=False)
    blocked: List[str] = field(init=False)

    def discover(self, k: Kube) -> List[Dict[str, Any]]:
        hint = "Check that the namespace is where Contour runs and that label_selector matches its pods"
        self.pods = _preflight.require_pods(k, self.namespace, self.pod_labels, hint)
        if self.inputs.verify:
            _refuse_dead_lease(k, self.lease_ns, self.lease_name, self.pods, self.window, self.verify_timeout)
        self.target = _apiserver_target(k)
        addresses = self.target.addresses
        self.blocked = [policy.host_cidr(a) for a in addresses] + [c for c in self.extra if c not in addresses]
        return self.pods

    def defeating(self, k: Kube) -> List[str]:
        policies = _preflight.namespace_policies(k, self.namespace)
        return policy.defeating_policies(policies, self.pods, list(self.target.addresses), list(self.target.ports))

    def policy(self, **run: Any) -> Dict[str, Any]:
        return policy.build_block_policy(pod_labels=self.pod_labels, blocked_cidrs=self.blocked, **run)

    def describe(self, injected: _fault.Injected, result: Dict[str, Any]) -> str:
        result.update(
            blocked_cidrs=self.blocked,
            apiserver_ports=list(self.target.ports),
            open_connections=self.mode,
            restarted_pods=[],
        )
        dead_man_s = self.inputs.dead_man_s
        return (
            f"{self.namespace}/{injected.name} blocks {', '.join(self.blocked)} for {len(self.pods)} pod(s); "
            f"hard cap {injected.expires_at}"
            + (f", ends within {dead_man_s:g} s of this process's death" if dead_man_s else "")
        )

    def verify(self, k: Kube, injected: _fault.Injected, result: Dict[str, Any]) -> Dict[str, Any] | None:
        if self.mode == "restart-pods":
            for pod in self.pods:
                name = pod["metadata"]["name"]
                where = self.namespace
                delete_if_present(f"delete pod {where}/{name}", k.core.delete_namespaced_pod, name, where)
                result["restarted_pods"].append(name)
            logger.info(
                f"block_apiserver_egress: restarted {len(self.pods)} pod(s) so their new connections meet the policy"
            )
        if not self.inputs.verify:
            return None
        return confirm_fault(
            k,
            namespace=self.namespace,
            run_id=self.inputs.run_id,
            lease_namespace=self.lease_ns,
            lease_name=self.lease_name,
            min_quiet_s=self.window,
            timeout_s=self.verify_timeout,
            blocked_at=injected.blocked_at,
            selector=format_label_selector(self.pod_labels),
            replaced_pods=result["restarted_pods"],
        )

    def refusal(self, verification: Dict[str, Any]) -> str:
        return not_confirmed_message(verification, self.mode)

    def confirmed(self, verification: Dict[str, Any]) -> None:
        """The Lease as it was confirmed is kept by ``confirm_fault`` itself."""


def _refuse_dead_lease(
    k: Kube, lease_ns: str, lease_name: str, pods: List[Dict[str, Any]], window: float, verify_timeout: float
) -> None:
    """Refuse, before anything is created, a Lease that is no live evidence, and a timeout its quiet period
    cannot fit in."""
    lease, cluster_now = read_lease_at(k, lease_ns, lease_name)
    problem = lease_liveness_problem(
        lease_summary(lease, cluster_now, datetime.now(UTC)), [p["metadata"]["name"] for p in pods]
    )
    if problem:
        raise ActivityFailed(
            f"{problem}. Nothing was created. Name the Lease your Contour renews (lease_name, lease_namespace: "
            "Contour's --leader-election-resource-name and -namespace) and select its pods (label_selector), "
            "or set verify=false to block without this evidence"
        )
    lease_duration = (lease.get("spec") or {}).get("leaseDurationSeconds") or 0
    needed = max(float(lease_duration), window) + VERIFY_MARGIN_S
    if verify_timeout <= needed:
        raise InvalidInput(
            f"verify_timeout_s ({verify_timeout:g}) must be longer than the Lease's quiet period to wait for "
            f"({max(float(lease_duration), window):g} s: its leaseDurationSeconds {lease_duration}, or "
            f"verify_window_s if longer) plus {VERIFY_MARGIN_S:g} s; set verify_timeout_s to at least "
            f"{needed + 5:g}. Nothing was created"
        )


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
    remove is success, but never silent: when nothing of that run is there it logs a warning and returns a `note`
    (already removed, or another namespace or run id?). Returns `removed_policies`, `removed_jobs`, the `run_id` it
    looked for and `other_runs`, the run ids whose API-server faults are still in `namespace`.
    """
    return _fault.unblock(ApiServerCut.spec, namespace, run_id, all_runs, secrets)


@user_errors
def apiserver_egress_fault(
    namespace: str = "projectcontour",
    run_id: str = "",
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """End-of-window evidence that the API-server fault of this run held for the whole window.

    Run it at the end of the fault window, before `unblock_apiserver_egress`. It checks that this run's
    NetworkPolicy is still there; that its blocked addresses still cover every current API-server endpoint (the
    `default/kubernetes` EndpointSlices and ClusterIPs are read again: an API server that joined during the fault
    is reported); that the expiry Job has not finished and its deadline has not passed; and that the Lease has not
    been written at all since `block_apiserver_egress` confirmed the fault (any write means a Contour reached the
    API server). `run_id` as for the block (default: this `chaos run` process's id).

    Returns `held` (true only when every check passed), `reasons` (why not), `policy`, `uncovered_addresses`,
    `expires_at`, `dead_man_switch`, `lease_holder` and `seconds_since_confirmed`. It never raises for a fault that
    did not hold: the journal keeps the evidence and `chaoscontour gate` fails the run on `held: false`.
    """
    k, state = _fault.window_state(ApiServerCut.spec, namespace, run_id, secrets)
    target = _apiserver_target(k)
    addresses = [a for a in target.addresses if "/" not in a]
    uncovered = verification.uncovered_addresses(addresses, verification.blocked_networks(state.policy or {}))
    confirmed = confirmed_fault(namespace, state.run_id)
    lease: Dict[str, Any] = {}
    if confirmed is not None:
        lease = read_lease(k, confirmed["lease_namespace"], confirmed["lease_name"])
    reasons = verification.fault_held_reasons(
        policy_present=state.policy is not None,
        uncovered=uncovered if state.policy is not None else [],
        job_finished=state.finished,
        expires_in_s=state.beat.expires_in_s() if state.beat is not None else None,
        confirmed=confirmed,
        lease_version=str((lease.get("metadata") or {}).get("resourceVersion") or ""),
        lease_holder=str((lease.get("spec") or {}).get("holderIdentity") or ""),
    )
    return {
        **state.result(reasons, uncovered),
        "lease_holder": (lease.get("spec") or {}).get("holderIdentity") if lease else None,
        "seconds_since_confirmed": round(time.monotonic() - confirmed["confirmed_at"], 1) if confirmed else None,
    }
