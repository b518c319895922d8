"""The xDS black hole: silently drop what the Envoy pods send to Contour's xDS port, watch Envoy notice, heal.

What happens then (projectcontour/contour#1744, #3882; docs/contour-and-envoy.md, "Envoy"): packets are dropped, not
refused, so the gRPC streams look alive to both ends. Contour's end gives up first: Go's TCP keepalive (15 s idle,
15 s interval) under grpc-go's 20 s TCP_USER_TIMEOUT makes its kernel reset the connection about 30 s after the
last packet from Envoy, and the reset reaches Envoy (only Envoy's egress is dropped). Envoy's own keepalive from
Contour's bootstrap (30 s idle, then 3 probes 5 s apart: about 45 s) is the fallback. Envoy then reports
`connected_state` 0 and starts a new stream about every 5.5 s while it keeps serving its last configuration. No
configuration change reaches it until the policy goes.

Safety as for the API-server block (`chaoscontour.activities.network`): input checked first; refused when nothing
is selected or another policy keeps the xDS port reachable; the policy is owned by an expiry Job with a dead-man
switch; with `verify` the action waits until Envoy itself reports the dead stream and removes the policy and fails
when it does not; removal is idempotent and scoped to one run and to this fault.
"""

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List

from chaoslib.types import Secrets

from chaoscontour.activities import _fault, _preflight, _xds_state, _xds_target
from chaoscontour.activities._common import user_errors
from chaoscontour.activities.envoy import STATS_EXAMPLE
from chaoscontour.domain import xds
from chaoscontour.domain.clock import format_utc
from chaoscontour.domain.inputs import parse_count, parse_http_url, require_namespace
from chaoscontour.domain.selectors import parse_label_selector
from chaoscontour.edges.kube import Kube

__all__ = ["block_xds_egress", "unblock_xds_egress", "xds_egress_fault"]


@dataclass
class BlackHole(_fault.Fault):
    """One block's xDS black hole: the Envoy pods of ``envoy_labels`` lose the xDS port of ``contour``; when
    verifying, Envoy's stats show it (``evidence``)."""

    spec = _fault.FaultSpec(xds.FAULT_XDS_EGRESS, policy_name=xds.xds_policy_name, job_name=xds.xds_expiry_job_name)
    allows = "lets these Envoy pods reach Contour's xDS port"
    envoy_labels: Dict[str, str]
    contour: _xds_target.Contour
    evidence: _xds_state.EnvoyEvidence
    envoys: List[Dict[str, Any]] = field(init=False)
    target: xds.XdsTarget = field(init=False)

    def discover(self, k: Kube) -> List[Dict[str, Any]]:
        hint = "Check that label_selector matches the Envoy pods"
        self.envoys = _preflight.require_pods(k, self.namespace, self.envoy_labels, hint)
        self.target = _xds_target.xds_target(k, self.contour)
        if self.inputs.verify:
            self.evidence.stream_up()
        return self.envoys

    def defeating(self, k: Kube) -> List[str]:
        return _xds_target.defeating_policies(k, self.namespace, self.envoys, self.contour, self.target)

    def policy(self, **run: Any) -> Dict[str, Any]:
        contour = self.contour
        return xds.build_xds_block_policy(
            envoy_labels=self.envoy_labels,
            contour_namespace=contour.namespace,
            contour_labels=contour.labels,
            target=self.target,
            **run,
        )

    def describe(self, injected: _fault.Injected, result: Dict[str, Any]) -> str:
        _xds_state.record_block(self.namespace, self.inputs.run_id, time.time())
        result.update(
            contour_addresses=list(self.target.pod_addresses),
            blocked_cidrs=self.target.cidrs,
            xds_port=self.contour.port,
            blocked_at=format_utc(injected.created.timestamp(), "microseconds"),
        )
        if self.inputs.verify:
            result["stream_before"] = self.evidence.stream_before()
        return (
            f"{self.namespace}/{injected.name} drops what {len(self.envoys)} Envoy pod(s) send to "
            f"{', '.join(self.target.addresses)} port {self.contour.port}; hard cap {injected.expires_at}"
        )

    def verify(self, k: Kube, injected: _fault.Injected, result: Dict[str, Any]) -> Dict[str, Any] | None:
        return self.evidence.stream_gone(injected.blocked_at) if self.inputs.verify else None

    def refusal(self, verification: Dict[str, Any]) -> str:
        return self.evidence.refusal(verification)

    def confirmed(self, verification: Dict[str, Any]) -> None:
        _xds_state.record_confirmed(self.namespace, self.inputs.run_id, verification["accepted_updates"])


@user_errors
def block_xds_egress(
    namespace: str = "projectcontour",
    label_selector: str = "app=envoy",
    contour_namespace: str = "",
    contour_selector: str = "app=contour",
    contour_service: str = "contour",
    xds_port: int = 8001,
    duration_s: float = 300,
    run_id: str = "",
    force: bool = False,
    verify: bool = True,
    stats_url: str = STATS_EXAMPLE,
    verify_timeout_s: float = 90,
    dead_man_s: float = 20,
    connect_wait_s: float = _xds_state.ESTABLISH_WAIT_S,
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Silently drop what the selected Envoy pods send to Contour's xDS port, with a NetworkPolicy, and nothing else.

    The policy selects the pods of `label_selector` (`k=v,k2=v2` string or mapping; default `app=envoy`) in
    `namespace` and allows all their egress except to `xds_port` (default 8001) of the Contour pods
    (`contour_selector` in `contour_namespace`, default `namespace`) and of the Service `contour_service` (empty:
    none): every address is discovered, not configured. It is labelled `chaoscontour/fault=xds-egress` and
    `chaoscontour/run-id=<run_id>` and owned by a pod-less expiry Job with a dead-man switch, exactly as
    `block_apiserver_egress`'s (`duration_s` is the hard cap, at most 4 h; `dead_man_s`, default 20 s, 0 for
    none, bounds how long the fault outlives this process).

    Refuses, creating nothing, when no Envoy or no Contour pod runs, when a Contour pod has no address, or when
    another NetworkPolicy already lets those Envoy pods reach Contour's xDS port (by address or by selector)
    unless `force` is true. Fails and removes the Job when a queueing controller suspended it.

    With `verify` (default) it first waits, up to `connect_wait_s` (default 40 s: Envoy's retry back-off grows to
    30 s, and each attempt may take Contour's 5 s connect timeout; 0 to refuse at once), for Envoy's xDS stream
    to Contour to be up (`stats_url`: Envoy's `/stats`, port 8002 on Contour's Envoy): the `connected_state` gauges
    at 1 and, on Contour's bootstrap, no stream still waiting for a connection on the `<namespace>_contour_<port>`
    cluster (a gauge reads 1 while Envoy dials, e.g. a Contour pod that was just replaced). Then it reads the gauges
    every 0.5 s until they show the stream gone: about 30 s where Contour's reset reaches Envoy, about 45 s where
    only Envoy's keepalive can tell (Contour's bootstrap; the sandbox's real node); `verify_timeout_s` (default 90, more
    than 45) bounds the wait. If Envoy still reports a connection then, the policy is removed and the action fails:
    the CNI does not enforce NetworkPolicy, or lets the open connection live on (Calico, Antrea), and nothing was
    cut.

    `run_id` as for `block_apiserver_egress` (default: this `chaos run` process's id); `unblock_xds_egress` is the
    rollback. Returns `name`, `namespace`, `run_id`, `selected_pods`, `contour_addresses`, `blocked_cidrs`,
    `xds_port`, `expires_at`, `expiry_job`, `dead_man_s`, `blocked_at` (ISO 8601 UTC), `verification`
    (`confirmed`, `evidence`, `evidence_text`, `confirmed_after_s`: the time until Envoy noticed) and, when verifying,
    `stream_before` (`xds_cluster`, `streams_waiting_for_connection`, `streams_open` when Envoy's stats show that
    cluster, and `waited_s`: how long the stream took to be up).
    """
    require_namespace(namespace)
    labels = parse_label_selector(label_selector)
    port = parse_count(xds_port, "xds_port", minimum=1, maximum=65535)
    contour = _xds_target.parse_contour(namespace, contour_namespace, contour_selector, contour_service, port)
    inputs = _fault.parse_fault_inputs(duration_s, run_id, force, verify, dead_man_s)
    evidence = _xds_state.parse_evidence(stats_url, verify_timeout_s, connect_wait_s, inputs.verify)
    return _fault.block(BlackHole(namespace, inputs, labels, contour, evidence), secrets)


@user_errors
def unblock_xds_egress(
    namespace: str = "projectcontour",
    run_id: str = "",
    all_runs: bool = False,
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Remove the xDS black hole: the rollback of `block_xds_egress`.

    Deletes, in `namespace`, the NetworkPolicies and expiry Jobs labelled `chaoscontour/fault=xds-egress` of one
    run: `run_id`, or by default this `chaos run` process's own id; `all_runs` removes every run's. The API-server
    fault's objects are never touched. Idempotent: nothing to remove is success, but never silent (a warning and a
    `note`, as `unblock_apiserver_egress`). Returns `removed_policies`, `removed_jobs`, the `run_id` it looked for,
    `healed_at` (ISO 8601 UTC, when it removed a policy) and `other_runs` (xDS faults of other runs still there).
    """
    return _fault.unblock(BlackHole.spec, namespace, run_id, all_runs, secrets, extra_keys=_xds_state.healed)


@user_errors
def xds_egress_fault(
    namespace: str = "projectcontour",
    run_id: str = "",
    contour_namespace: str = "",
    contour_selector: str = "app=contour",
    contour_service: str = "contour",
    stats_url: str = "",
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """End-of-window evidence that this run's xDS black hole held for the whole window.

    Run it at the end of the fault window, before `unblock_xds_egress`. It checks that the run's NetworkPolicy is
    still there; that it still covers every current Contour pod address and Service ClusterIP (a Contour pod that
    replaced one during the fault has a new address, which Envoy could reach); that the expiry Job has not finished
    nor its deadline passed; and, with `stats_url`, that Envoy has accepted no configuration update since
    `block_xds_egress` confirmed the fault (an update proves a working stream; the `connected_state` gauges do not,
    as Envoy sets them to 1 while each new connection attempt is pending).

    Returns `held` (true only when every check passed), `reasons`, `policy`, `uncovered_addresses`,
    `envoy_connected_states`, `updates_since_confirmed` (`null` without `stats_url` or a verified block in this
    process), `expires_at` and `dead_man_switch`. It never raises for a fault that did not hold: the journal
    keeps the evidence.
    """
    contour = _xds_target.parse_contour(namespace, contour_namespace, contour_selector, contour_service)
    url = parse_http_url(stats_url, "stats_url", STATS_EXAMPLE) if stats_url else ""
    k, window = _fault.window_state(BlackHole.spec, namespace, run_id, secrets)
    reasons = window.reasons()
    uncovered = _xds_target.uncovered_contour(k, contour, window.policy, reasons)
    states, since = _xds_state.envoy_since_confirmed(url, namespace, window.run_id, reasons) if url else (None, None)
    return window.result(reasons, uncovered, envoy_connected_states=states, updates_since_confirmed=since)
