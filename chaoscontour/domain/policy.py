"""The API-server egress fault as Kubernetes objects, and the checks that decide whether it can work.

Everything here works on plain API-shaped dictionaries (camelCase keys, as ``ApiClient.sanitize_for_serialization``
returns them), so it is tested without a cluster or mocks.

Why the policy looks the way it does:

* NetworkPolicies are additive allow-lists. Egress isolation starts when any policy with ``policyTypes: [Egress]``
  selects a pod; what any such policy allows stays allowed. So our policy *allows* everything except the API
  server (``0.0.0.0/0`` and ``::/0`` with the API server's addresses in ``except``), and we refuse to run when another
  policy already allows the API server, since the fault would silently do nothing.
* Some CNIs (Cilium) never match pod-to-pod traffic against ``ipBlock``; a second rule keeps DNS (port 53 to any pod)
  open there, so the fault cuts the API server and nothing else.
* Which address a CNI matches for the ``kubernetes`` Service depends on where it translates the ClusterIP, so both
  the ClusterIP(s) and the real endpoints (the EndpointSlices the API server maintains for ``default/kubernetes``)
  are excepted.
"""

import ipaddress
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chaoscontour.domain.clock import format_utc
from chaoscontour.domain.labels import FAULT_LABEL, MANAGED_BY, MANAGED_BY_LABEL, RUN_ID_LABEL
from chaoscontour.domain.netpol import defeating_policies, egress_allow_reason, label_selector_matches

__all__ = [
    "EXPIRES_AT_ANNOTATION",
    "owner_references",
    "EXPIRY_JOB_IMAGE",
    "FAULT_APISERVER_EGRESS",
    "FAULT_LABEL",
    "MANAGED_BY",
    "MANAGED_BY_LABEL",
    "RUN_ID_LABEL",
    "ApiServerTarget",
    "apiserver_target",
    "build_block_policy",
    "build_expiry_job",
    "defeating_policies",
    "egress_allow_reason",
    "egress_policy",
    "everything_but",
    "expiry_job_name",
    "fault_labels",
    "fault_metadata",
    "fault_selector",
    "host_cidr",
    "label_selector_matches",
    "managed_labels",
    "managed_selector",
    "policy_name",
]

FAULT_APISERVER_EGRESS = "apiserver-egress"
EXPIRES_AT_ANNOTATION = "chaoscontour/expires-at"
_PURPOSE_ANNOTATION = "chaoscontour/purpose"

_NAME_PREFIX = "chaoscontour-block-apiserver"


@dataclass(frozen=True)
class ApiServerTarget:
    """Where the API server is reached from a pod: its endpoint addresses and ports, and its Service ClusterIPs."""

    endpoint_addresses: tuple[str, ...]
    endpoint_ports: tuple[int, ...]
    cluster_ips: tuple[str, ...]
    service_ports: tuple[int, ...] = field(default=())

    @property
    def addresses(self) -> tuple[str, ...]:
        """Every address to block, endpoints first, without duplicates."""
        seen: dict[str, None] = {}
        for address in (*self.endpoint_addresses, *self.cluster_ips):
            seen.setdefault(address, None)
        return tuple(seen)

    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(sorted({*self.endpoint_ports, *self.service_ports}))


def apiserver_target(
    endpoint_slices: Iterable[Mapping[str, Any]], service: Mapping[str, Any] | None
) -> ApiServerTarget:
    """The API server's addresses from the ``default/kubernetes`` EndpointSlices (IPv4 and IPv6) and Service.

    Raises ``ValueError`` when neither yields an address: there would be nothing to block.
    """
    addresses: dict[str, None] = {}
    ports: set[int] = set()
    for eps in endpoint_slices:
        if eps.get("addressType") not in ("IPv4", "IPv6"):
            continue  # FQDN slices name hosts, not addresses a NetworkPolicy can match
        for endpoint in eps.get("endpoints") or []:
            for address in endpoint.get("addresses") or []:
                addresses.setdefault(str(ipaddress.ip_address(address)), None)
        for port in eps.get("ports") or []:
            if port.get("port"):
                ports.add(int(port["port"]))
    cluster_ips: dict[str, None] = {}
    service_ports: set[int] = set()
    if service:
        spec = service.get("spec") or {}
        for ip in spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []):
            if ip and ip != "None":
                cluster_ips.setdefault(str(ipaddress.ip_address(ip)), None)
        for port in spec.get("ports") or []:
            if port.get("port"):
                service_ports.add(int(port["port"]))
    if not addresses and not cluster_ips:
        raise ValueError(
            "found no address for the API server: the default/kubernetes Service has no ClusterIP and its "
            "EndpointSlices list no endpoints"
        )
    return ApiServerTarget(
        endpoint_addresses=tuple(addresses),
        endpoint_ports=tuple(sorted(ports)),
        cluster_ips=tuple(cluster_ips),
        service_ports=tuple(sorted(service_ports)),
    )


def host_cidr(address: str) -> str:
    """``10.0.0.1`` -> ``10.0.0.1/32``; ``fd00::1`` -> ``fd00::1/128``."""
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def policy_name(run_id: str) -> str:
    return f"{_NAME_PREFIX}-{run_id}"


def expiry_job_name(run_id: str) -> str:
    return f"chaoscontour-expiry-{run_id}"


def fault_labels(kind: str, run_id: str) -> dict[str, str]:
    """The labels on every object of a fault of ``kind`` (``chaoscontour/fault``): how unblock and cleanup find
    them again."""
    return {MANAGED_BY_LABEL: MANAGED_BY, FAULT_LABEL: kind, RUN_ID_LABEL: run_id}


def fault_selector(kind: str, run_id: str = "") -> str:
    """A label selector for the objects of a fault of ``kind``: every run's, or one run's."""
    selector = f"{MANAGED_BY_LABEL}={MANAGED_BY},{FAULT_LABEL}={kind}"
    return f"{selector},{RUN_ID_LABEL}={run_id}" if run_id else selector


def managed_labels(run_id: str) -> dict[str, str]:
    """The API-server fault's labels."""
    return fault_labels(FAULT_APISERVER_EGRESS, run_id)


def managed_selector(run_id: str = "") -> str:
    """A label selector for the API-server fault's objects: every run's, or one run's."""
    return fault_selector(FAULT_APISERVER_EGRESS, run_id)


def fault_metadata(
    *,
    name: str,
    namespace: str,
    labels: Mapping[str, str],
    expires_at: datetime,
    purpose: str,
    owner: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The metadata of a fault's NetworkPolicy: its labels, its expiry and purpose, and its owner (the expiry Job)."""
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": dict(labels),
        "annotations": {EXPIRES_AT_ANNOTATION: format_utc(expires_at, "seconds"), _PURPOSE_ANNOTATION: purpose},
    }
    if owner:
        metadata["ownerReferences"] = owner_references(owner)
    return metadata


def owner_references(owner: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``ownerReferences`` that make the expiry Job own a policy (the garbage collector removes it with the Job);
    not a controller, and no foreground blocking."""
    return [
        {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": owner["name"],
            "uid": owner["uid"],
            "controller": False,
            "blockOwnerDeletion": False,
        }
    ]


def _split_families(cidrs: Iterable[str]) -> tuple[list[str], list[str]]:
    v4: list[str] = []
    v6: list[str] = []
    for cidr in cidrs:
        network = ipaddress.ip_network(cidr, strict=False)
        bucket = v4 if network.version == 4 else v6
        if str(network) not in bucket:
            bucket.append(str(network))
    return v4, v6


def build_block_policy(
    *,
    namespace: str,
    pod_labels: Mapping[str, str],
    blocked_cidrs: Sequence[str],
    run_id: str,
    expires_at: datetime,
    owner: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The NetworkPolicy that denies the selected pods egress to ``blocked_cidrs`` and to nothing else.

    ``owner`` is the expiry Job (``{"apiVersion", "kind", "name", "uid"}``): Kubernetes' garbage collector deletes
    the policy when the Job goes, whether or not our process is still alive.
    """
    if not blocked_cidrs:
        raise ValueError("nothing to block")
    metadata = fault_metadata(
        name=policy_name(run_id),
        namespace=namespace,
        labels=managed_labels(run_id),
        expires_at=expires_at,
        purpose="chaos experiment: deny egress to the Kubernetes API server; safe to delete",
        owner=owner,
    )
    dns_ports = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    dns = {"to": [{"namespaceSelector": {}}], "ports": dns_ports}
    return egress_policy(metadata, pod_labels, [{"to": everything_but(blocked_cidrs)}, dns])


def everything_but(cidrs: Iterable[str]) -> list[dict[str, Any]]:
    """Egress peers for every IPv4 and IPv6 address except ``cidrs``."""
    v4, v6 = _split_families(cidrs)
    return [
        {"ipBlock": {"cidr": "0.0.0.0/0", **({"except": v4} if v4 else {})}},
        {"ipBlock": {"cidr": "::/0", **({"except": v6} if v6 else {})}},
    ]


def egress_policy(
    metadata: dict[str, Any], pod_labels: Mapping[str, str], egress: list[dict[str, Any]]
) -> dict[str, Any]:
    """An Egress-only NetworkPolicy for the pods of ``pod_labels``, allowing ``egress``."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {"podSelector": {"matchLabels": dict(pod_labels)}, "policyTypes": ["Egress"], "egress": egress},
    }


# The expiry Job's pod template. No pod ever runs from it (``parallelism: 0``), yet admission controllers judge it
# all the same: Pod Security admission warns and audits on a Job whose template breaks the namespace's level, and
# Kyverno or Gatekeeper policies commonly refuse templates without resources, with a root user, or with an image
# named by a mutable tag. So the template meets the ``restricted`` Pod Security Standard, asks for tiny resources,
# mounts nothing (deploy/admission-policy.yaml refuses volumes, a service account and a token) and names its image
# by digest, so what a policy approved is what would run. ``pause`` is the Kubernetes project's do-nothing image
# (kubernetes/kubernetes build/pause: a static binary, ``USER 65535:65535``); the digest is the multi-arch index
# published for registry.k8s.io/pause:3.10.
EXPIRY_JOB_IMAGE = "registry.k8s.io/pause:3.10@sha256:ee6521f290b2168b6e0935a181d4cff9be1ac3f505666ef0e3c98fae8199917a"
_EXPIRY_JOB_UID = 65535  # the image's own USER


def _expiry_pod_spec() -> dict[str, Any]:
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": _EXPIRY_JOB_UID,
            "runAsGroup": _EXPIRY_JOB_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "expiry-timer",
                "image": EXPIRY_JOB_IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "resources": {
                    "requests": {"cpu": "1m", "memory": "8Mi"},
                    "limits": {"cpu": "10m", "memory": "8Mi"},
                },
            }
        ],
    }


def build_expiry_job(
    *,
    namespace: str,
    run_id: str,
    duration_s: float,
    now: datetime,
    deadline_s: float | None = None,
    name: str = "",
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A Job that owns the policy and whose end Kubernetes itself brings about.

    ``parallelism: 0`` means the Job never starts a pod (no image is pulled, nothing runs in the cluster), yet the
    job controller still starts its clock: at ``activeDeadlineSeconds`` it marks the Job failed
    (``DeadlineExceeded``), the TTL-after-finished controller deletes it at once (``ttlSecondsAfterFinished: 0``),
    and the garbage collector then deletes the NetworkPolicy it owns. No process of ours has to survive for that.

    ``duration_s`` is the fault's hard cap (the expires-at annotation). ``deadline_s``, when shorter, is the
    first deadline of a dead-man switch that the runner extends while it lives (``activeDeadlineSeconds`` of a
    Job may be updated), never past the hard cap.

    ``name`` and ``labels`` are the fault's (default: the API-server fault's ``expiry_job_name`` and
    ``managed_labels``); the pod template carries the labels too.
    """
    hard_cap_s = max(1, math.ceil(duration_s))
    deadline_s = hard_cap_s if deadline_s is None else max(1, min(hard_cap_s, math.ceil(deadline_s)))
    labels = dict(labels) if labels is not None else managed_labels(run_id)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name or expiry_job_name(run_id),
            "namespace": namespace,
            "labels": labels,
            "annotations": {
                EXPIRES_AT_ANNOTATION: format_utc(now.timestamp() + hard_cap_s, "seconds"),
                _PURPOSE_ANNOTATION: "expiry timer of a chaoscontour fault: runs no pod; its deadline deletes the "
                "fault's NetworkPolicy (owner reference). Deleting this Job ends the fault now.",
            },
        },
        "spec": {
            "parallelism": 0,
            "completions": 1,
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline_s,
            "ttlSecondsAfterFinished": 0,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": _expiry_pod_spec(),
            },
        },
    }
