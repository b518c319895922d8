"""Evaluating existing NetworkPolicies: does one already allow the pods a fault selects to reach its target?

NetworkPolicies are additive allow-lists, so a fault that another policy defeats would silently do nothing; the
faults refuse it (unless forced). Works on plain API-shaped dictionaries: label selectors (``matchLabels`` and
``matchExpressions``), ports, and ``ipBlock`` with ``except``.
"""

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from chaoscontour.domain.labels import MANAGED_BY, MANAGED_BY_LABEL

__all__ = ["defeating_policies", "egress_allow_reason", "label_selector_matches"]


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


def _selects_egress(policy: Mapping[str, Any], pod_labels: Mapping[str, str]) -> bool:
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes")
    if types is None:  # the API defaults policyTypes; Egress is included when egress rules are present
        types = ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]
    return "Egress" in types and label_selector_matches(spec.get("podSelector") or {}, pod_labels)


def _ports_allow(ports: Sequence[Mapping[str, Any]] | None, targets: Sequence[int]) -> bool:
    if not ports:
        return True
    for port in ports:
        if (port.get("protocol") or "TCP") != "TCP":
            continue
        number = port.get("port")
        if number is None:
            return True  # a rule with only a protocol allows every port of it
        if isinstance(number, str) and not number.isdigit():
            continue  # a named port refers to a pod's container port; the API server is not a pod of the cluster
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
    if not _selects_egress(policy, pod_labels):
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
