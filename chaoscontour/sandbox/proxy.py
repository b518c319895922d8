"""A minimal kube-proxy for the sandbox: Service ClusterIPs in, ``iptables`` DNAT rules out (pure, no I/O).

Only what the sandbox needs: Envoy reaches the ``contour`` Service (:8001) and CoreDNS's ``kube-dns``, and a program
that uses ``default/kubernetes`` (10.0.0.1:443) reaches the API server. For every Service with a ClusterIP, each of
its ports is mapped to the *ready* endpoints of the Service's EndpointSlices (label ``kubernetes.io/service-name``;
kube-controller-manager's endpointslice controller keeps them in step with pod readiness, and kube-apiserver keeps
the one of ``default/kubernetes``). Connections are spread at random over the endpoints, as kube-proxy's iptables
mode does. The rules live in each pod's namespace, in the ``nat`` table's ``OUTPUT`` chain (the pod's own traffic),
so the host's tables are never touched.

A Service port without ready endpoints refuses new connections at once, as kube-proxy's iptables mode does (a
``REJECT`` in the ``filter`` table, ICMP port unreachable; :func:`render_reject_rules`). Without it a connection
to such a port went nowhere and hung until its client gave up; Envoy counts its xDS stream as connected from the
moment it starts one (``control_plane.connected_state`` is set before the TCP connection exists), so Envoy read
"connected" for the length of a 5 s connect timeout while every Contour pod was unready during the API-server
outage, and its first connection after Contour became Ready again could still hang on that attempt.

Not implemented: NodePorts, LoadBalancers, ExternalName, session affinity, topology. Pods reach each other,
including backends that Contour and Envoy find through EndpointSlices, by pod IP over the bridge, which needs no
rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["REJECT_CHAIN", "SERVICES_CHAIN", "ServicePort", "service_ports", "render_nat_table", "render_reject_rules"]

SERVICES_CHAIN = "CCSBX-SERVICES"
REJECT_CHAIN = "CCSBX-SVC-REJECT"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class ServicePort:
    """One ClusterIP port of a Service and the ready endpoints (ip, port) behind it."""

    service: str
    cluster_ip: str
    protocol: str
    port: int
    endpoints: tuple[tuple[str, int], ...]


def _ready(endpoint: Obj) -> bool:
    # EndpointConditions: a missing `ready` means ready ("should be interpreted as true").
    return (endpoint.get("conditions") or {}).get("ready") is not False


def service_ports(services: Sequence[Obj], endpoint_slices: Sequence[Obj]) -> list[ServicePort]:
    """Each ClusterIP port of ``services`` with its ready endpoints from ``endpoint_slices``."""
    slices_of: dict[tuple[str, str], list[Obj]] = {}
    for eps in endpoint_slices:
        meta = eps.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if owner and eps.get("addressType", "IPv4") == "IPv4":
            slices_of.setdefault((meta.get("namespace", ""), owner), []).append(eps)
    found = []
    for service in services:
        meta, spec = service.get("metadata") or {}, service.get("spec") or {}
        cluster_ip = spec.get("clusterIP")
        if not cluster_ip or cluster_ip == "None" or spec.get("type") == "ExternalName":
            continue
        key = (meta.get("namespace", ""), meta.get("name", ""))
        for port in spec.get("ports") or []:
            protocol = str(port.get("protocol") or "TCP")
            if protocol not in ("TCP", "UDP"):
                continue
            endpoints: set[tuple[str, int]] = set()
            for eps in slices_of.get(key, []):
                for slice_port in eps.get("ports") or []:
                    if (slice_port.get("name") or "") != (port.get("name") or ""):
                        continue
                    if str(slice_port.get("protocol") or "TCP") != protocol or slice_port.get("port") is None:
                        continue
                    for endpoint in eps.get("endpoints") or []:
                        if _ready(endpoint):
                            endpoints |= {(address, int(slice_port["port"])) for address in endpoint["addresses"]}
            found.append(
                ServicePort(f"{key[0]}/{key[1]}", cluster_ip, protocol, int(port["port"]), tuple(sorted(endpoints)))
            )
    return sorted(found, key=lambda p: (p.service, p.port, p.protocol))


def render_nat_table(ports: Sequence[ServicePort]) -> str:
    """The ``iptables-restore`` input for a pod namespace's whole ``nat`` table: DNAT for every ClusterIP port."""
    chains = [SERVICES_CHAIN]
    rules = [f"-A OUTPUT -j {SERVICES_CHAIN}"]
    for index, port in enumerate(p for p in ports if p.endpoints):
        chain = f"CCSBX-SVC-{index}"
        chains.append(chain)
        rules.append(
            f"-A {SERVICES_CHAIN} -d {port.cluster_ip}/32 -p {port.protocol.lower()} --dport {port.port} "
            f"-m comment --comment {port.service} -j {chain}"
        )
        count = len(port.endpoints)
        for position, (ip, target) in enumerate(port.endpoints):
            remaining = count - position
            # Endpoint i of n is taken with probability 1/(n-i) when the earlier ones were not: uniform overall.
            chance = f"-m statistic --mode random --probability {1 / remaining:.10f} " if remaining > 1 else ""
            rules.append(f"-A {chain} {chance}-p {port.protocol.lower()} -j DNAT --to-destination {ip}:{target}")
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    lines += [":POSTROUTING ACCEPT [0:0]"]
    lines += [f":{chain} - [0:0]" for chain in chains]
    lines += rules
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def render_reject_rules(ports: Sequence[ServicePort]) -> tuple[list[str], list[str]]:
    """The ``filter`` table's chains and rules that refuse new connections to every ClusterIP port without ready
    endpoints (kube-proxy: ``has no endpoints``, ``-j REJECT``), to be placed before the egress policy's chain."""
    rules = [f"-A OUTPUT -m conntrack --ctstate NEW -j {REJECT_CHAIN}"]
    for port in ports:
        if not port.endpoints:
            rules.append(
                f"-A {REJECT_CHAIN} -d {port.cluster_ip}/32 -p {port.protocol.lower()} --dport {port.port} "
                f"-m comment --comment {port.service} -j REJECT --reject-with icmp-port-unreachable"
            )
    return [REJECT_CHAIN], rules
