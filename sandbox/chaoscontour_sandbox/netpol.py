"""NetworkPolicy egress, evaluated (pure, no I/O): which destinations a pod's policies let it open connections to.

The conntrack reaper (:mod:`chaoscontour_sandbox.reaper`) asks :func:`egress_plan` whether a pod's established
connection is still allowed after a policy change; kube-network-policies, the node's engine, judges new connections.

What is evaluated, following the NetworkPolicy API (``networking.k8s.io/v1``):

- Selection: ``spec.podSelector`` with ``matchLabels`` and ``matchExpressions`` (``In``, ``NotIn``, ``Exists``,
  ``DoesNotExist``) in the policy's namespace; an empty selector selects every pod of the namespace. A pod is
  egress-isolated when any policy that selects it has ``Egress`` in ``policyTypes`` (when ``policyTypes`` is
  absent: when the policy has an ``egress`` section), and then only what some rule of those policies allows leaves
  it. Policies are additive allow-lists: there is no deny rule in the API.
- ``egress[].to[]``: ``ipBlock`` (IPv4 ``cidr`` with ``except``); ``podSelector`` and ``namespaceSelector`` peers,
  resolved to the IPs of the pods given. An empty or missing ``to`` allows every destination.
- ``egress[].ports[]``: ``protocol`` TCP or UDP (default TCP), numeric ``port``, ``endPort`` ranges; an empty or
  missing ``ports`` allows every port. Not evaluated, reported in :attr:`EgressPlan.notes` and allowing nothing:
  named ports, SCTP, IPv6 blocks (the reaper widens a named port to every port, so it keeps such connections).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PodInfo",
    "Allow",
    "EgressPlan",
    "selector_matches",
    "policy_types",
    "egress_plan",
]


Obj = Mapping[str, Any]


@dataclass(frozen=True)
class PodInfo:
    """What a policy decision needs to know about a pod."""

    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ip: str | None = None


@dataclass(frozen=True)
class Allow:
    """One allowed egress: to ``cidr`` minus ``excepts``, over ``protocol`` and ports (``None`` means any)."""

    cidr: str | None = None
    excepts: tuple[str, ...] = ()
    protocol: str | None = None
    port: int | None = None
    end_port: int | None = None


@dataclass(frozen=True)
class EgressPlan:
    """The egress decision for one pod: whether it is isolated, what is allowed, and what could not be honoured."""

    isolated: bool = False
    allows: tuple[Allow, ...] = ()
    policies: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def selector_matches(selector: Obj | None, labels: Mapping[str, str]) -> bool:
    """Whether a ``metav1.LabelSelector`` (``matchLabels``/``matchExpressions``) selects ``labels``.

    An empty selector selects everything; a missing one (``None``) selects nothing, as in the API.
    """
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key", ""), expression.get("operator", "")
        values = expression.get("values") or []
        if operator == "In":
            ok = key in labels and labels[key] in values
        elif operator == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif operator == "Exists":
            ok = key in labels
        elif operator == "DoesNotExist":
            ok = key not in labels
        else:
            raise ValueError(f"unknown label selector operator {operator!r}")
        if not ok:
            return False
    return True


def policy_types(policy: Obj) -> list[str]:
    """A policy's effective ``policyTypes``: as written, or the API's default (Ingress, plus Egress with rules)."""
    spec = policy.get("spec") or {}
    written = spec.get("policyTypes")
    if written:
        return list(written)
    return ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def _name(policy: Obj) -> str:
    meta = policy.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _peer_cidrs(
    peer: Obj,
    policy_namespace: str,
    pods: Sequence[PodInfo],
    namespace_labels: Mapping[str, Mapping[str, str]],
    where: str,
    notes: list[str],
) -> list[tuple[str, tuple[str, ...]]]:
    """The (cidr, excepts) pairs one ``to`` peer stands for."""
    block = peer.get("ipBlock")
    if block is not None:
        cidr = str(block.get("cidr", ""))
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            notes.append(f"{where}: ipBlock cidr {cidr!r} is not a network; it allows nothing")
            return []
        if network.version != 4:
            notes.append(f"{where}: IPv6 ipBlock {cidr} is not supported; it allows nothing")
            return []
        excepts = tuple(str(ipaddress.ip_network(e, strict=False)) for e in block.get("except") or [])
        return [(str(network), excepts)]
    pod_selector = peer.get("podSelector")
    namespace_selector = peer.get("namespaceSelector")
    if pod_selector is None and namespace_selector is None:
        notes.append(f"{where}: a peer without ipBlock, podSelector or namespaceSelector allows nothing")
        return []
    found = []
    for pod in pods:
        if not pod.ip:
            continue
        if namespace_selector is None:
            in_scope = pod.namespace == policy_namespace
        else:
            in_scope = selector_matches(namespace_selector, namespace_labels.get(pod.namespace, {}))
        if in_scope and (pod_selector is None or selector_matches(pod_selector, pod.labels)):
            found.append((f"{pod.ip}/32", ()))
    return sorted(set(found))


def _ports(rule: Obj, where: str, notes: list[str]) -> list[tuple[str | None, int | None, int | None]]:
    """The (protocol, port, end_port) triples a rule's ``ports`` stand for; one all-ports entry when it has none."""
    written = rule.get("ports") or []
    if not written:
        return [(None, None, None)]
    found: list[tuple[str | None, int | None, int | None]] = []
    for entry in written:
        protocol = str(entry.get("protocol") or "TCP").upper()
        if protocol not in ("TCP", "UDP"):
            notes.append(f"{where}: protocol {protocol} is not supported; that port entry allows nothing")
            continue
        port = entry.get("port")
        if port is None:
            found.append((protocol.lower(), None, None))
            continue
        if isinstance(port, str) and not port.isdigit():
            notes.append(f"{where}: named port {port!r} is not supported; that port entry allows nothing")
            continue
        end_port = entry.get("endPort")
        found.append((protocol.lower(), int(port), int(end_port) if end_port is not None else None))
    return found


def egress_plan(
    pod: PodInfo,
    policies: Sequence[Obj],
    pods: Sequence[PodInfo] = (),
    namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
) -> EgressPlan:
    """Decide what ``pod`` may send, given every NetworkPolicy of the cluster.

    ``pods`` are the pods a ``podSelector``/``namespaceSelector`` peer may resolve to, ``namespace_labels`` the
    labels of each namespace (for ``namespaceSelector``). Policies of other namespaces, policies that do not select
    the pod and policies without ``Egress`` in their types have no effect on it.
    """
    labels_of_namespaces = namespace_labels or {}
    selecting = []
    for policy in policies:
        meta = policy.get("metadata") or {}
        spec = policy.get("spec") or {}
        if meta.get("namespace") != pod.namespace or "Egress" not in policy_types(policy):
            continue
        if selector_matches(spec.get("podSelector") or {}, pod.labels):
            selecting.append(policy)
    if not selecting:
        return EgressPlan()
    allows: list[Allow] = []
    notes: list[str] = []
    for policy in sorted(selecting, key=_name):
        for index, rule in enumerate((policy.get("spec") or {}).get("egress") or []):
            where = f"NetworkPolicy {_name(policy)} egress[{index}]"
            peers = rule.get("to") or []
            if peers:
                destinations: list[tuple[str | None, tuple[str, ...]]] = []
                for peer in peers:
                    destinations += _peer_cidrs(peer, pod.namespace, pods, labels_of_namespaces, where, notes)
            else:
                destinations = [(None, ())]
            for cidr, excepts in destinations:
                for protocol, port, end_port in _ports(rule, where, notes):
                    allow = Allow(cidr, excepts, protocol, port, end_port)
                    if allow not in allows:
                        allows.append(allow)
    return EgressPlan(True, tuple(allows), tuple(_name(p) for p in sorted(selecting, key=_name)), tuple(notes))
