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
from datetime import UTC, datetime
from typing import Any, Dict, List

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets
from logzero import logger

from chaoscontour.activities import _fault
from chaoscontour.activities._common import process_run_id, user_errors
from chaoscontour.activities._xds_state import (
    ESTABLISH_WAIT_S,
    KEEPALIVE_BOUND_S,
    accepted_updates,
    confirmed_updates,
    failed_updates,
    not_confirmed_message,
    read_xds_state,
    record_block,
    record_confirmed,
    record_heal,
    wait_until_disconnected,
    wait_until_established,
)
from chaoscontour.activities.envoy import STATS_EXAMPLE
from chaoscontour.domain import policy, verification, xds
from chaoscontour.domain.envoy_stats import XdsState
from chaoscontour.domain.inputs import (
    InvalidInput,
    parse_count,
    parse_http_url,
    parse_seconds,
    redact_url,
    require_name,
    require_namespace,
    require_run_id,
)
from chaoscontour.domain.selectors import parse_label_selector
from chaoscontour.edges import http
from chaoscontour.edges.kube import (
    Kube,
    kube,
    read_if_present,
)

__all__ = ["block_xds_egress", "unblock_xds_egress", "xds_egress_fault"]


XDS_EGRESS = _fault.FaultSpec(
    kind=xds.FAULT_XDS_EGRESS,
    block="block_xds_egress",
    unblock="unblock_xds_egress",
    selector=xds.xds_selector,
    policy_name=xds.xds_policy_name,
    job_name=xds.xds_expiry_job_name,
    build_job=xds.build_xds_expiry_job,
)


def _target(k: Kube, contour_ns: str, contour_labels: dict[str, str], service: str, port: int) -> xds.XdsTarget:
    pods = _fault.require_pods(
        k, contour_ns, contour_labels, "Set contour_namespace and contour_selector to where Contour runs"
    )
    svc = None
    if service:
        svc = read_if_present(
            f"read Service {contour_ns}/{service}", k.core.read_namespaced_service, service, contour_ns
        )
        if svc is None:
            raise ActivityFailed(
                f"Service {contour_ns}/{service} not found; set contour_service to the Service Envoy's bootstrap "
                "names (empty: no Service)"
            )
    try:
        return xds.xds_target(pods, svc, port)
    except ValueError as exc:
        raise ActivityFailed(f"block_xds_egress: {exc}") from exc


def _namespace_labels(k: Kube, namespace: str) -> dict[str, str]:
    try:
        found = read_if_present(f"read Namespace {namespace}", k.core.read_namespace, namespace)
    except ActivityFailed:  # no RBAC for namespaces: the label every namespace has
        found = None
    labels = dict(((found or {}).get("metadata") or {}).get("labels") or {})
    labels.setdefault(xds.NAMESPACE_NAME_LABEL, namespace)
    return labels


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
    connect_wait_s: float = ESTABLISH_WAIT_S,
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
    contour_ns = require_namespace(contour_namespace, "contour_namespace") if contour_namespace else namespace
    contour_labels = parse_label_selector(contour_selector)
    service = require_name(contour_service, "contour_service") if contour_service else ""
    port = parse_count(xds_port, "xds_port", minimum=1, maximum=65535)
    inputs = _fault.parse_fault_inputs(duration_s, run_id, force, verify, dead_man_s)
    url = parse_http_url(stats_url, "stats_url", STATS_EXAMPLE)
    verify_timeout = parse_seconds(verify_timeout_s, "verify_timeout_s", maximum=3600)
    connect_wait = parse_seconds(connect_wait_s, "connect_wait_s", maximum=600, allow_zero=True)
    if inputs.verify and verify_timeout <= KEEPALIVE_BOUND_S:
        raise InvalidInput(
            f"verify_timeout_s ({verify_timeout:g}) must be longer than the {KEEPALIVE_BOUND_S:g} s after which "
            "Contour's bootstrap keepalive lets Envoy notice a dead stream"
        )

    k = kube(secrets)
    envoys = _fault.require_pods(k, namespace, labels, "Check that label_selector matches the Envoy pods")
    target = _target(k, contour_ns, contour_labels, service, port)
    if inputs.verify:
        before, waited = _stream_before(url, connect_wait)
    _fault.refuse_in_use(k, XDS_EGRESS, namespace, inputs.run_id)
    contour_pods = _fault.running_pods(k, contour_ns, contour_labels)
    reasons = xds.xds_defeating_policies(
        _fault.namespace_policies(k, namespace), envoys, contour_pods, _namespace_labels(k, contour_ns), target
    )
    _fault.refuse_defeated(XDS_EGRESS, reasons, inputs.force, "lets these Envoy pods reach Contour's xDS port")

    injected = _fault.inject(
        k,
        XDS_EGRESS,
        namespace,
        inputs,
        xds.build_xds_block_policy,
        envoy_labels=labels,
        contour_namespace=contour_ns,
        contour_labels=contour_labels,
        target=target,
    )
    record_block(namespace, inputs.run_id, time.time())
    logger.info(
        f"block_xds_egress: {namespace}/{injected.name} drops what {len(envoys)} Envoy pod(s) send to "
        f"{', '.join(target.addresses)} port {port}; hard cap {injected.expires_at}"
    )
    result = injected.result(namespace, inputs, envoys)
    result.update(
        contour_addresses=list(target.pod_addresses),
        blocked_cidrs=[policy.host_cidr(a) for a in target.addresses],
        xds_port=port,
        blocked_at=injected.created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    )
    if inputs.verify:
        result["stream_before"] = {**(before.stream_check() or {}), "waited_s": waited}
        result["verification"] = _fault.engage(
            k,
            XDS_EGRESS,
            namespace,
            inputs.run_id,
            lambda: wait_until_disconnected(url, verify_timeout, injected.blocked_at, failed_updates(before)),
            lambda v: not_confirmed_message(v, verify_timeout),
        )
        record_confirmed(namespace, inputs.run_id, result["verification"]["accepted_updates"])
    return injected.finish(result)


def _stream_before(url: str, connect_wait: float) -> tuple[XdsState, float]:
    """Envoy's xDS state once its stream to Contour is up (waiting up to ``connect_wait``); refuse, creating nothing,
    when the stats cannot be read or the stream is not up: the stats could not show the fault."""
    try:
        before, waited = wait_until_established(url, connect_wait, "block_xds_egress")
    except http.RequestFailed as failed:
        raise ActivityFailed(
            f"Envoy's stats endpoint {redact_url(url)} could not be read ({failed.kind}), so the fault could "
            "not be verified; nothing was created. Check stats_url, or set verify=false"
        ) from failed
    if not before.established:
        raise ActivityFailed(
            f"Envoy's xDS stream to Contour was not up before the fault ({before.not_established_text()}; "
            f"waited {waited:g} s), so its stats could not show the fault; nothing was created. Check that "
            "Contour is Ready and that Envoy reaches it"
        )
    return before, waited


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
    return _fault.unblock(XDS_EGRESS, namespace, run_id, all_runs, secrets, extra_keys=_healed)


def _healed(namespace: str, run_id: str, removed_a_policy: bool) -> Dict[str, Any]:
    """``healed_at``: when the policy went (``None`` when there was none to remove), kept for the timeline."""
    if not removed_a_policy:
        return {"healed_at": None}
    healed = datetime.now(UTC)
    record_heal(namespace, run_id, healed.timestamp())
    return {"healed_at": healed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}


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
    require_namespace(namespace)
    run = require_run_id(run_id or process_run_id())
    contour_ns = require_namespace(contour_namespace, "contour_namespace") if contour_namespace else namespace
    contour_labels = parse_label_selector(contour_selector)
    service = require_name(contour_service, "contour_service") if contour_service else ""
    url = parse_http_url(stats_url, "stats_url", STATS_EXAMPLE) if stats_url else ""
    k = kube(secrets)
    window = _fault.window_state(k, XDS_EGRESS, namespace, run)
    reasons = window.reasons()
    uncovered: List[str] = []
    if window.policy is not None:
        # Coverage is by address; the port does not enter into it.
        target = _target(k, contour_ns, contour_labels, service, xds.XDS_PORT)
        blocked = verification.blocked_networks(window.policy)
        uncovered = verification.uncovered_addresses(list(target.addresses), blocked)
        if uncovered:
            reasons.append(
                f"Contour address(es) {', '.join(uncovered)} appeared during the fault and are not blocked: Envoy "
                "may have reached Contour through them"
            )
    states: Dict[str, int] | None = None
    since = None
    before = confirmed_updates(namespace, run)
    if url:
        try:
            state = read_xds_state(url, 2.0)
            states = state.connected_states
            now_updates = accepted_updates(state)
            if before is not None and now_updates is not None:
                since = now_updates - before
        except (http.RequestFailed, ActivityFailed) as exc:
            reasons.append(f"Envoy's xDS state could not be read: {exc}")
        if since:
            reasons.append(
                f"Envoy accepted {since} configuration update(s) after the fault was confirmed: a stream to Contour "
                "worked during the fault, so the black hole leaks"
            )
    for reason in reasons:
        logger.error(f"xds_egress_fault: {reason}")
    return {
        "held": not reasons,
        "reasons": reasons,
        "run_id": run,
        "policy": f"{namespace}/{xds.xds_policy_name(run)}" if window.policy is not None else None,
        "uncovered_addresses": uncovered,
        "envoy_connected_states": states,
        "updates_since_confirmed": since,
        "expires_at": window.expires_at,
        "dead_man_switch": window.beat.summary() if window.beat is not None else None,
    }
