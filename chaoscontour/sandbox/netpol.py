"""NetworkPolicy egress enforcement for the sandbox: policies + pods in, iptables rules out (pure, no I/O).

The node agent calls :func:`egress_plan` for each of its pods whenever a NetworkPolicy or a pod changes, renders the
plan with :func:`render_filter_table` and loads it into the pod's network namespace with ``iptables-restore`` (the
whole ``filter`` table of that namespace is ours, so a reload replaces it atomically). Only egress is enforced, as
that is what the chaos experiments rely on; ingress rules are accepted and ignored.

What is supported, following the NetworkPolicy API (``networking.k8s.io/v1``):

- Selection: ``spec.podSelector`` with ``matchLabels`` and ``matchExpressions`` (``In``, ``NotIn``, ``Exists``,
  ``DoesNotExist``) in the policy's namespace; an empty selector selects every pod of the namespace. A pod is
  egress-isolated when any policy that selects it has ``Egress`` in ``policyTypes`` (when ``policyTypes`` is
  absent: when the policy has an ``egress`` section), and then only what some rule of those policies allows leaves
  it. Policies are additive allow-lists: there is no deny rule in the API.
- ``egress[].to[]``: ``ipBlock`` (IPv4 ``cidr`` with ``except``); ``podSelector`` and ``namespaceSelector`` peers,
  resolved to the IPs of the pods the agent knows (the pods of the sandbox node, the only ones there are). An
  empty or missing ``to`` allows every destination.
- ``egress[].ports[]``: ``protocol`` TCP or UDP (default TCP), numeric ``port``, ``endPort`` ranges; an empty or
  missing ``ports`` allows every port. Not supported, reported in :attr:`EgressPlan.notes` and allowing nothing:
  named ports, SCTP, IPv6 blocks.
- Always allowed: loopback, and packets that answer a connection someone opened *to* the pod (conntrack direction
  REPLY): ingress is not policed here, and no CNI drops the replies of an allowed incoming connection, e.g. the
  kubelet's probes or Envoy's xDS stream to Contour.

Two modes, because real CNIs differ on connections that were open before a policy arrived (CONTOUR-FACTS.md):

- ``per-packet`` (Cilium-like): every packet the pod sends on a connection it opened is checked against the
  current rules, so a new policy cuts Contour's open HTTP/2 connection to the API server.
- ``conntrack`` (Calico/Antrea-like): ``--ctstate ESTABLISHED,RELATED`` is accepted first, so connections open
  before the policy live on; only new ones are checked.

and a third, ``off``: NetworkPolicies are accepted by the API server and ignored, as on a cluster whose CNI does not
enforce them (flannel, plain kindnet). That is the cluster on which a naive chaos tool reports a fault that never
happened.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MODES",
    "CHAIN",
    "PodInfo",
    "Allow",
    "EgressPlan",
    "selector_matches",
    "policy_types",
    "egress_plan",
    "render_filter_table",
]

MODES = ("per-packet", "conntrack", "off")
CHAIN = "CCSBX-EGRESS"

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


def _match(allow: Allow) -> list[str]:
    args: list[str] = []
    if allow.cidr is not None and allow.cidr != "0.0.0.0/0":
        args += ["-d", allow.cidr]
    if allow.protocol is not None:
        args += ["-p", allow.protocol]
        if allow.port is not None:
            ports = f"{allow.port}:{allow.end_port}" if allow.end_port is not None else str(allow.port)
            args += ["--dport", ports]
    return args


def render_filter_table(plan: EgressPlan, mode: str, before: tuple[Sequence[str], Sequence[str]] = ((), ())) -> str:
    """The ``iptables-restore`` input for a pod namespace's whole ``filter`` table under ``plan`` in ``mode``;
    ``before`` adds chains and rules ahead of the policy's (kube-proxy's rejects, :mod:`.proxy`).

    A pod that no egress policy selects gets an empty chain: everything leaves. An isolated pod's chain accepts
    loopback, replies to incoming connections (and, in ``conntrack`` mode, every established connection), then each
    allowed destination, and drops the rest.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    chains = [*before[0], CHAIN]
    rules: list[str] = [*before[1], "-A OUTPUT -j " + CHAIN]
    if plan.isolated and mode != "off":
        rules.append(f"-A {CHAIN} -o lo -j ACCEPT")
        if mode == "conntrack":
            rules.append(f"-A {CHAIN} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT")
        else:
            rules.append(f"-A {CHAIN} -m conntrack --ctstate ESTABLISHED,RELATED --ctdir REPLY -j ACCEPT")
        for index, allow in enumerate(plan.allows):
            match = " ".join(_match(allow))
            prefix = f"-A {CHAIN} {match}".rstrip()
            if allow.excepts:
                # iptables has no "all but": a sub-chain returns for each excepted block and accepts the rest.
                sub = f"{CHAIN}-{index}"
                chains.append(sub)
                rules.append(f"{prefix} -j {sub}")
                rules += [f"-A {sub} -d {block} -j RETURN" for block in allow.excepts]
                rules.append(f"-A {sub} -j ACCEPT")
            else:
                rules.append(f"{prefix} -j ACCEPT")
        rules.append(f"-A {CHAIN} -j DROP")
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    lines += [f":{chain} - [0:0]" for chain in chains]
    lines += rules
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"
