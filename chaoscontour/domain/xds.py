"""The xDS black hole as Kubernetes objects, the checks that decide whether it can work, and its timeline maths.

Pure: plain API-shaped dictionaries in, dictionaries and numbers out, so it is tested without a cluster or mocks.

Why the policy looks the way it does. It selects the *Envoy* pods and drops what they send to Contour's xDS port,
silently (a NetworkPolicy drops; nothing is refused), which is the failure of projectcontour/contour#3882: Envoy
believes its gRPC stream alive until TCP keepalive gives up. NetworkPolicies are additive allow-lists, so the
policy allows every other destination:

1. ``0.0.0.0/0`` and ``::/0`` except the Contour pods' addresses and the Contour Service's ClusterIPs (some CNIs
   match the ClusterIP, others the pod address after translation: both are excepted);
2. every pod but the Contour pods, written as label selectors, for CNIs that never match pod traffic against
   ``ipBlock`` (Cilium): without this rule Envoy would lose its backends too. "Not a Contour pod" is the union of
   one peer per way of not being one: in another namespace, or lacking one of Contour's labels (``NotIn``);
3. the Contour pods and ClusterIPs on every port but the xDS port (TCP ranges around it, all of UDP).

Our objects carry ``chaoscontour/fault=xds-egress`` and names of their own, so ``unblock_apiserver_egress`` (which
selects ``chaoscontour/fault=apiserver-egress``) and ``unblock_xds_egress`` never remove each other's.
"""

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chaoscontour.domain.availability import iso_utc
from chaoscontour.domain.netpol import egress_allow_reason, selector_allow_reason, selects_egress
from chaoscontour.domain.policy import (
    FAULT_LABEL,
    build_expiry_job,
    egress_policy,
    everything_but,
    fault_labels,
    fault_metadata,
    fault_selector,
    host_cidr,
)

__all__ = [
    "FAULT_XDS_EGRESS",
    "XDS_PORT",
    "XdsSample",
    "XdsTarget",
    "build_xds_block_policy",
    "build_xds_expiry_job",
    "other_pods_peers",
    "xds_defeating_policies",
    "xds_expiry_job_name",
    "xds_labels",
    "xds_policy_name",
    "xds_selector",
    "xds_target",
    "xds_timeline",
]

FAULT_XDS_EGRESS = "xds-egress"
XDS_PORT = 8001
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
_PURPOSE = "chaos experiment: drop Envoy's egress to Contour's xDS port; safe to delete"


def xds_policy_name(run_id: str) -> str:
    return f"chaoscontour-block-xds-{run_id}"


def xds_expiry_job_name(run_id: str) -> str:
    return f"chaoscontour-expiry-xds-{run_id}"


def xds_labels(run_id: str) -> dict[str, str]:
    return fault_labels(FAULT_XDS_EGRESS, run_id)


def xds_selector(run_id: str = "") -> str:
    """A label selector for the xDS fault's objects: every run's, or one run's."""
    return fault_selector(FAULT_XDS_EGRESS, run_id)


@dataclass(frozen=True)
class XdsTarget:
    """Where Envoy reaches Contour's xDS server: the Contour pods' addresses, the Service's ClusterIPs, the port."""

    pod_addresses: tuple[str, ...]
    cluster_ips: tuple[str, ...]
    port: int = XDS_PORT

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.pod_addresses, *self.cluster_ips)))

    @property
    def cidrs(self) -> list[str]:
        """The addresses as the policy blocks them (``/32``, ``/128``)."""
        return [host_cidr(a) for a in self.addresses]


def xds_target(contour_pods: Iterable[Mapping[str, Any]], service: Mapping[str, Any] | None, port: int) -> XdsTarget:
    """The addresses to cut from the Contour pods (``status.podIPs``) and Service (``spec.clusterIPs``).

    Raises ``ValueError`` when a pod has no address yet: the fault would miss it.
    """
    pod_addresses: dict[str, None] = {}
    for pod in contour_pods:
        status = pod.get("status") or {}
        ips = [p.get("ip") for p in status.get("podIPs") or []] or [status.get("podIP")]
        ips = [ip for ip in ips if ip]
        if not ips:
            name = (pod.get("metadata") or {}).get("name")
            raise ValueError(f"Contour pod {name} has no IP address yet; wait until it runs")
        for ip in ips:
            pod_addresses.setdefault(str(ipaddress.ip_address(ip)), None)
    cluster_ips: dict[str, None] = {}
    spec = (service or {}).get("spec") or {}
    for ip in spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []):
        if ip and ip != "None":
            cluster_ips.setdefault(str(ipaddress.ip_address(ip)), None)
    return XdsTarget(tuple(pod_addresses), tuple(cluster_ips), port)


def build_xds_expiry_job(*, run_id: str, **timing: Any) -> dict[str, Any]:
    """:func:`chaoscontour.domain.policy.build_expiry_job` (``timing``: its ``namespace``, ``duration_s``, ``now``
    and ``deadline_s``) under the xDS fault's name and labels."""
    return build_expiry_job(run_id=run_id, name=xds_expiry_job_name(run_id), labels=xds_labels(run_id), **timing)


def other_pods_peers(contour_namespace: str, contour_labels: Mapping[str, str]) -> list[dict[str, Any]]:
    """Peers that together select every pod of the cluster except the pods of ``contour_labels`` in
    ``contour_namespace``: not(ns = N and a = x and b = y) = ns != N or a != x or b != y, one peer each."""
    peers: list[dict[str, Any]] = [
        {
            "namespaceSelector": {
                "matchExpressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": [contour_namespace]}]
            },
            "podSelector": {},
        }
    ]
    for key, value in sorted(contour_labels.items()):
        peers.append(
            {
                "namespaceSelector": {},
                "podSelector": {"matchExpressions": [{"key": key, "operator": "NotIn", "values": [value]}]},
            }
        )
    return peers


def _other_ports(port: int) -> list[dict[str, Any]]:
    ports: list[dict[str, Any]] = []
    if port > 1:
        ports.append({"protocol": "TCP", "port": 1, **({"endPort": port - 1} if port > 2 else {})})
    if port < 65535:
        ports.append({"protocol": "TCP", "port": port + 1, **({"endPort": 65535} if port < 65534 else {})})
    ports.append({"protocol": "UDP"})
    return ports


def build_xds_block_policy(
    *,
    namespace: str,
    envoy_labels: Mapping[str, str],
    contour_namespace: str,
    contour_labels: Mapping[str, str],
    target: XdsTarget,
    run_id: str,
    expires_at: datetime,
    owner: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The NetworkPolicy that drops what the Envoy pods send to Contour's xDS port, and nothing else."""
    if not target.addresses:
        raise ValueError("no Contour address to cut")
    cidrs = target.cidrs
    contour_peer = {
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: contour_namespace}},
        "podSelector": {"matchLabels": dict(contour_labels)},
    }
    metadata = fault_metadata(
        name=xds_policy_name(run_id),
        namespace=namespace,
        labels=xds_labels(run_id),
        expires_at=expires_at,
        purpose=_PURPOSE,
        owner=owner,
    )
    return egress_policy(
        metadata,
        envoy_labels,
        [
            {"to": everything_but(cidrs)},
            {"to": other_pods_peers(contour_namespace, contour_labels)},
            {
                "to": [{"ipBlock": {"cidr": cidr}} for cidr in cidrs] + [contour_peer],
                "ports": _other_ports(target.port),
            },
        ],
    )


# --- does an existing policy keep the xDS port reachable? ---------------------------------------------------------


def xds_defeating_policies(
    policies: Iterable[Mapping[str, Any]],
    envoy_pods: Sequence[Mapping[str, Any]],
    contour_pods: Sequence[Mapping[str, Any]],
    contour_namespace_labels: Mapping[str, str],
    target: XdsTarget,
) -> list[str]:
    """Reasons, one per policy, why another policy would keep Contour's xDS port reachable from the Envoy pods.

    An allow by address (``ipBlock``, or a rule without peers) is judged by
    :func:`chaoscontour.domain.netpol.egress_allow_reason`, an allow by selector (``podSelector`` /
    ``namespaceSelector`` naming a Contour pod, on the xDS port or a port named like Contour's) by
    :func:`chaoscontour.domain.netpol.selector_allow_reason`. The xDS
    fault's own policies are skipped; the API-server fault's are not, since they allow everything but the API
    server when they select Envoy.
    """
    reasons: list[str] = []
    for policy in policies:
        if ((policy.get("metadata") or {}).get("labels") or {}).get(FAULT_LABEL) == FAULT_XDS_EGRESS:
            continue
        for envoy in envoy_pods:
            envoy_meta = envoy.get("metadata") or {}
            labels = envoy_meta.get("labels") or {}
            if not selects_egress(policy, labels):
                continue
            reason = egress_allow_reason(
                policy, labels, list(target.addresses), [target.port]
            ) or selector_allow_reason(policy, contour_pods, contour_namespace_labels, target.port, "Contour pod")
            if reason:
                reasons.append(f"{reason} for Envoy pod {envoy_meta.get('name')}")
                break
    return reasons


# --- Envoy's xDS state over time ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class XdsSample:
    """One reading of Envoy's xDS stats at ``at`` (epoch seconds, our clock); ``connected`` ``None`` for a failed read.

    ``connected`` is true when every control-plane ``connected_state`` gauge is 1. Envoy sets a gauge to 1 as soon
    as it *starts* a stream, before the TCP connection is up (Envoy 1.38, seen on the sandbox: during the fault the
    gauges read 1 for the 5 s of each connection attempt, Contour's bootstrap ``connect_timeout``, and 0 for the
    ~0.5 s back-off between). So a 0 proves a stream died, a 1 proves nothing; an accepted update (``cds_success``,
    ``lds_success``: the subscriptions' ``update_success`` counters) is what proves a working stream, and a failed
    one (``cds_failure``, ``lds_failure``: ``update_failure``, counted whenever a stream dies or cannot be set up)
    what proves a dead one without depending on catching the gauge's short 0.
    """

    at: float
    connected: bool | None
    cds_success: int | None = None
    lds_success: int | None = None
    cds_failure: int | None = None
    lds_failure: int | None = None

    def failures_since(self, earlier: "XdsSample") -> int:
        """Failed stream set-ups since ``earlier``: the larger of the CDS and LDS counts (they share a connection)."""
        return max(
            (self.cds_failure or 0) - (earlier.cds_failure or 0),
            (self.lds_failure or 0) - (earlier.lds_failure or 0),
        )

    @property
    def updates(self) -> int | None:
        if self.cds_success is None and self.lds_success is None:
            return None
        return (self.cds_success or 0) + (self.lds_success or 0)


def _after_heal(ok: Sequence[XdsSample], healed_at: float, both: bool) -> XdsSample | None:
    """The first reading after ``healed_at`` in which CDS or (``both``) CDS and LDS accepted an update."""
    before = [s for s in ok if s.at < healed_at and s.updates is not None]
    if not before:
        return None
    base = before[-1]
    for sample in ok:
        if sample.at < healed_at or sample.updates is None:
            continue
        cds = (sample.cds_success or 0) > (base.cds_success or 0)
        lds = (sample.lds_success or 0) > (base.lds_success or 0)
        if (cds and lds) if both else (cds or lds):
            return sample
    return None


def xds_timeline(
    samples: Sequence[XdsSample], blocked_at: float | None = None, healed_at: float | None = None
) -> dict[str, Any]:
    """What a series of xDS readings says about the fault: when Envoy noticed the dead stream, how often it tried
    again, and how long after the heal it had a working stream and was current again.

    * ``detected_after_s``: from ``blocked_at`` to the first reading with a ``connected_state`` gauge at 0 or with
      more failed updates than the last reading before the block (precise to the sampling interval); ``None`` when
      neither showed before the heal.
    * ``reconnect_attempts``: streams Envoy tried after that, before the heal: the failed updates counted in that
      time, less the one for the stream that died; each attempt failed, or an update would have arrived.
    * ``reconnected_after_s``: from ``healed_at`` to the first reading in which CDS or LDS accepted an update
      (a stream that works); ``current_after_s``: to the first in which both did (Contour's whole snapshot arrived).
    * ``transitions``: every change of the connected reading, in seconds from the first reading
      (``first_reading_at``, ISO 8601 UTC); ``updates_at_s`` and ``failures_at_s``: the readings in which Envoy
      had accepted (CDS + LDS ``update_success``) or failed (``update_failure``) updates since the reading before,
      on the same scale, so that a report can draw the age of Envoy's configuration and each failed stream.
    """
    ok = [s for s in samples if s.connected is not None]
    start = samples[0].at if samples else 0.0
    transitions: list[dict[str, Any]] = []
    updates_at: list[float] = []
    failures_at: list[float] = []
    previous: XdsSample | None = None
    for sample in ok:
        if previous is not None:
            at_s = round(sample.at - start, 3)
            if sample.connected != previous.connected:
                transitions.append({"at_s": at_s, "connected": sample.connected})
            if sample.updates is not None and previous.updates is not None and sample.updates > previous.updates:
                updates_at.append(at_s)
            if sample.failures_since(previous) > 0:
                failures_at.append(at_s)
        previous = sample
    result: dict[str, Any] = {
        "samples": len(samples),
        "failed_reads": len(samples) - len(ok),
        "first_reading_at": iso_utc(start) if samples else None,
        "connected_at_start": ok[0].connected if ok else None,
        "connected_at_end": ok[-1].connected if ok else None,
        "transitions": transitions,
        "updates_at_s": updates_at,
        "failures_at_s": failures_at,
        "detected_after_s": None,
        "reconnect_attempts": None,
        "reconnected_after_s": None,
        "current_after_s": None,
    }
    if blocked_at is not None:
        end = healed_at if healed_at is not None else float("inf")
        before = [s for s in ok if s.at < blocked_at]
        base = before[-1] if before else None
        during = [s for s in ok if blocked_at <= s.at <= end]
        lost = next(
            (s for s in during if s.connected is False or (base is not None and s.failures_since(base) > 0)), None
        )
        if lost is not None:
            result["detected_after_s"] = round(lost.at - blocked_at, 3)
            if base is not None:
                result["reconnect_attempts"] = max(0, during[-1].failures_since(base) - 1)
    if healed_at is not None:
        back = _after_heal(ok, healed_at, both=False)
        current = _after_heal(ok, healed_at, both=True)
        result["reconnected_after_s"] = round(back.at - healed_at, 3) if back else None
        result["current_after_s"] = round(current.at - healed_at, 3) if current else None
    return result
