"""Evaluating existing NetworkPolicies: does one already allow the pods a fault selects to reach its target?

NetworkPolicies are additive allow-lists, so a fault that another policy defeats would silently do nothing; the
faults refuse it (unless forced). Works on plain API-shaped dictionaries: label selectors (``matchLabels`` and
``matchExpressions``), ports (numbered, ranges, and named after a pod's container ports), ``ipBlock`` with
``except``, and peers that select pods by ``podSelector`` and ``namespaceSelector``.
"""

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from chaoscontour.domain.labels import MANAGED_BY, MANAGED_BY_LABEL

__all__ = [
    "defeating_policies",
    "egress_allow_reason",
    "label_selector_matches",
    "selector_allow_reason",
    "selects_egress",
]


def label_selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """Kubernetes LabelSelector semantics (``matchLabels`` and ``matchExpressions``); an empty selector matches all."""
    labels = labels or {}
    if selector is None:
        return False  # a nil selector matches nothing
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, operator, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def selects_egress(policy: Mapping[str, Any], pod_labels: Mapping[str, str]) -> bool:
    """Whether ``policy`` restricts the egress of a pod with ``pod_labels``."""
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes")
    if not types:  # the API defaults an empty policyTypes; Egress is included when egress rules are present
        types = ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]
    return "Egress" in types and label_selector_matches(spec.get("podSelector") or {}, pod_labels)


def _ports_allow(
    ports: Sequence[Mapping[str, Any]] | None, targets: Sequence[int], named: Mapping[str, int] | None = None
) -> bool:
    """Whether a rule's ``ports`` allow TCP to one of ``targets`` (all of them when empty); a named port counts when
    the destination pod names one of ``targets`` so (``named``: its container ports by name)."""
    if not ports:
        return True
    for port in ports:
        if (port.get("protocol") or "TCP") != "TCP":
            continue
        number = port.get("port")
        if number is None:
            return True  # a rule with only a protocol allows every port of it
        if isinstance(number, str) and not number.isdigit():
            # A named port refers to a pod's container port: an address outside the cluster (the API server) has none.
            if named and named.get(number) in targets:
                return True
            continue
        low = int(number)
        high = int(port.get("endPort") or low)
        if any(low <= t <= high for t in targets) or not targets:
            return True
    return False


def _ip_block_allows(block: Mapping[str, Any], address: str) -> bool:
    ip = ipaddress.ip_address(address)
    network = ipaddress.ip_network(block["cidr"], strict=False)
    if ip.version != network.version or ip not in network:
        return False
    return not any(
        ip in ipaddress.ip_network(excepted, strict=False)
        for excepted in block.get("except") or []
        if ipaddress.ip_network(excepted, strict=False).version == ip.version
    )


def egress_allow_reason(
    policy: Mapping[str, Any], pod_labels: Mapping[str, str], addresses: Sequence[str], ports: Sequence[int]
) -> str | None:
    """Why ``policy`` lets a pod with ``pod_labels`` reach one of ``addresses`` on one of ``ports``; else ``None``."""
    if not selects_egress(policy, pod_labels):
        return None
    name = (policy.get("metadata") or {}).get("name", "?")
    for index, rule in enumerate((policy.get("spec") or {}).get("egress") or []):
        if not _ports_allow(rule.get("ports"), ports):
            continue
        peers = rule.get("to")
        if not peers:
            return f"NetworkPolicy {name} egress rule {index} allows every destination"
        for peer in peers:
            block = peer.get("ipBlock")
            if not block:
                continue
            for address in addresses:
                if _ip_block_allows(block, address):
                    return f"NetworkPolicy {name} egress rule {index} allows {address} (ipBlock {block['cidr']})"
    return None


def defeating_policies(
    policies: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    addresses: Sequence[str],
    ports: Sequence[int],
) -> list[str]:
    """Reasons, one per (policy, pod), why other policies would keep the API server reachable from these pods.

    Our own policies are skipped: they allow everything *but* the API server.
    """
    reasons: list[str] = []
    for policy in policies:
        labels = (policy.get("metadata") or {}).get("labels") or {}
        if labels.get(MANAGED_BY_LABEL) == MANAGED_BY:
            continue
        for pod in pods:
            metadata = pod.get("metadata") or {}
            reason = egress_allow_reason(policy, metadata.get("labels") or {}, addresses, ports)
            if reason:
                reasons.append(f"{reason} for pod {metadata.get('name')}")
                break
    return reasons


def _named_ports(pod: Mapping[str, Any]) -> dict[str, int]:
    found: dict[str, int] = {}
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") and port.get("containerPort"):
                found[str(port["name"])] = int(port["containerPort"])
    return found


def _peer_selects_pod(
    peer: Mapping[str, Any],
    policy_namespace: str,
    pod: Mapping[str, Any],
    namespace_labels: Mapping[str, str],
) -> bool:
    metadata = pod.get("metadata") or {}
    pod_selector, namespace_selector = peer.get("podSelector"), peer.get("namespaceSelector")
    if pod_selector is None and namespace_selector is None:
        return False
    if namespace_selector is None:
        in_scope = metadata.get("namespace") == policy_namespace
    else:
        in_scope = label_selector_matches(namespace_selector, namespace_labels)
    return in_scope and (pod_selector is None or label_selector_matches(pod_selector, metadata.get("labels")))


def selector_allow_reason(
    policy: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    namespace_labels: Mapping[str, str],
    port: int,
    pod_kind: str = "pod",
) -> str | None:
    """Why ``policy`` lets the pods it selects reach one of ``pods`` (all in one namespace, whose labels are
    ``namespace_labels``) on ``port``, by selecting it (``podSelector`` / ``namespaceSelector``), numbered or named
    port; else ``None``. ``pod_kind`` names those pods in the reason ("Contour pod")."""
    meta = policy.get("metadata") or {}
    for index, rule in enumerate((policy.get("spec") or {}).get("egress") or []):
        for peer in rule.get("to") or []:
            for pod in pods:
                if not _peer_selects_pod(peer, str(meta.get("namespace") or ""), pod, namespace_labels):
                    continue
                if _ports_allow(rule.get("ports"), [port], _named_ports(pod)):
                    pod_name = (pod.get("metadata") or {}).get("name")
                    return (
                        f"NetworkPolicy {meta.get('name', '?')} egress rule {index} allows {pod_kind} {pod_name} "
                        f"on port {port} by selector"
                    )
    return None
