"""The conntrack reaper: what turns kube-network-policies into the sandbox's ``per-packet`` NetworkPolicy mode.

kube-network-policies judges only a connection's first packet (conntrack state NEW; ``established,related`` is
accepted before its queue), so a connection that was open before a policy arrived, such as Contour's HTTP/2 watch
to the API server, lives on. The reaper runs on the node host, as root and in the host's network namespace (where
kube-proxy's DNAT and the engine's nftables hooks are), and every ``--interval-s`` deletes the conntrack entry of
each connection that the current policies deny. The connection's next packet is then NEW again (the kernel's
``nf_conntrack_tcp_loose``, on by default, picks up mid-stream TCP), goes to the engine, and is dropped: what the
engine's later "strict mode" does, and what Cilium-like CNIs do.

Only egress is reaped: an entry whose *original* source is a (non-hostNetwork) pod of this node, judged against the
destination the engine sees after DNAT, which is the *reply* tuple's source (the real endpoint, not the ClusterIP).
Entries towards a pod (ingress) are left alone, as the experiments only block egress. Only TCP and UDP over IPv4:
that is what :mod:`chaoscontour_sandbox.netpol` evaluates. Where a verdict is in doubt the reaper keeps the entry (the
engine still judges new connections): named ports, which netpol.py does not resolve, are widened to every port.

With ``--new-pods-s S`` the reaper stands in, in the sandbox's ``conntrack`` mode, for what the engine's NRI path
does on containerd 1.7 and later, and Calico-like CNIs do when they wire a pod: judge a new pod's connections from
its first packet. Without NRI (containerd 1.6 here) the engine learns a pod's address only when the kubelet
publishes it, about a second after the containers start, and lets the packets of an address it does not know pass
(kubernetes/kubernetes#85966): a restarted Contour's first connection to the API server would then outlive any
policy. So only the entries of pods first seen less than S seconds ago are deleted, and only those that the policies
in force when the pod was first seen deny; pods already running when the reaper starts, policies that arrive later,
and every pod once S has passed leave connections to the engine alone.

The reaper itself talks to the API server with admin credentials from the host; the sandbox's blocks select only
Contour pods, so they never cut the reaper off. Run: ``python -m chaoscontour_sandbox.reaper --kubeconfig FILE
--node NODE [--interval-s 0.5] [--new-pods-s S] [--once]``.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaoscontour_sandbox.kubeapi import ApiError, KubeApi
from chaoscontour_sandbox.netpol import Allow, EgressPlan, PodInfo, egress_plan

__all__ = [
    "FlowTuple",
    "Entry",
    "Cluster",
    "Deletion",
    "NewPods",
    "parse_conntrack",
    "allowed",
    "cluster_view",
    "decide",
    "main",
]

PROTOCOLS = ("tcp", "udp")
Obj = Mapping[str, Any]


@dataclass(frozen=True)
class FlowTuple:
    """One direction of a conntrack entry."""

    src: str
    dst: str
    sport: int
    dport: int


@dataclass(frozen=True)
class Entry:
    """A conntrack entry: ``reply.src``/``reply.sport`` is where the flow really goes after DNAT."""

    protocol: str
    original: FlowTuple
    reply: FlowTuple
    state: str | None = None  # TCP only; UDP entries have no state word
    unreplied: bool = False  # ``[UNREPLIED]``: no answer seen yet


def _ipv4(text: str) -> str:
    return str(ipaddress.IPv4Address(text))


def _line(line: str) -> Entry | None:
    words = line.split()
    if len(words) > 2 and words[0] in ("ipv4", "ipv6"):  # `-o extended` puts the layer 3 protocol first
        words = words[2:]
    if len(words) < 4 or words[0] not in PROTOCOLS or not (words[1].isdigit() and words[2].isdigit()):
        return None
    state = words[3] if "=" not in words[3] and not words[3].startswith("[") else None
    tuples: list[dict[str, str]] = []
    for word in words[3:]:
        key, _, value = word.partition("=")
        if key == "src":  # each tuple opens with src=; zone=, mark=, secctx=, [ASSURED] and the rest are ignored
            tuples.append({})
        if key in ("src", "dst", "sport", "dport") and tuples:
            tuples[-1][key] = value
    try:  # exactly two tuples, or the unpacking fails
        original, reply = (
            FlowTuple(_ipv4(t["src"]), _ipv4(t["dst"]), int(t["sport"]), int(t["dport"])) for t in tuples
        )
    except (KeyError, ValueError):
        return None
    return Entry(words[0], original, reply, state, "[UNREPLIED]" in words)


def parse_conntrack(text: str) -> tuple[list[Entry], int]:
    """Parse ``conntrack -L`` output into entries, plus how many non-empty lines were skipped.

    The plain format is what :func:`list_entries` asks for: ``-o extended`` only adds the layer 3 protocol, which is
    always IPv4 here (``conntrack -L`` lists IPv4 unless told ``-f ipv6``); its lines are accepted all the same.
    Skipped: other protocols (ICMP has no ports, SCTP is not evaluated by netpol.py), IPv6, anything unexpected.
    """
    parsed = [_line(line) for line in text.splitlines() if line.strip()]
    entries = [entry for entry in parsed if entry is not None]
    return entries, len(parsed) - len(entries)


def _covers(allow: Allow, address: ipaddress.IPv4Address, protocol: str, port: int) -> bool:
    # An IPv4 address is simply not "in" an IPv6 network (the block's ``::/0`` half).
    if allow.cidr is not None and address not in ipaddress.ip_network(allow.cidr):
        return False
    if any(address in ipaddress.ip_network(block) for block in allow.excepts) or allow.protocol not in (None, protocol):
        return False
    return allow.port is None or allow.port <= port <= (allow.end_port or allow.port)


def allowed(plan: EgressPlan, ip: str, protocol: str, port: int) -> bool:
    """Whether ``plan`` lets its pod send to ``ip``:``port`` over ``protocol`` (``tcp``/``udp``)."""
    if not plan.isolated:
        return True
    address = ipaddress.IPv4Address(ip)
    return any(_covers(allow, address, protocol.lower(), port) for allow in plan.allows)


@dataclass(frozen=True)
class Cluster:
    """What the decisions need: this node's pods by IP, every pod a peer selector may name, namespaces, policies."""

    local: Mapping[str, PodInfo] = field(default_factory=dict)
    peers: Sequence[PodInfo] = ()
    namespace_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    policies: Sequence[Obj] = ()


def _widen_named_ports(policy: Obj) -> Obj:
    """``policy`` with each named port replaced by all ports of its protocol: a doubt must never cut a connection."""
    spec = dict(policy.get("spec") or {})
    rules = []
    for rule in spec.get("egress") or []:
        ports = [
            {"protocol": p.get("protocol") or "TCP"}
            if isinstance(p.get("port"), str) and not p["port"].isdigit()
            else p
            for p in rule.get("ports") or []
        ]
        rules.append({**rule, "ports": ports} if ports else rule)
    if "egress" in spec:
        spec["egress"] = rules
    return {**policy, "spec": spec}


def _name(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def cluster_view(pods: Iterable[Obj], namespaces: Iterable[Obj], policies: Iterable[Obj], node: str) -> Cluster:
    """Build a :class:`Cluster` from API objects as the API serves them.

    Peers come from every node (a selector may name a pod elsewhere) but, as in kube-network-policies' IP index,
    hostNetwork pods are nobody: their IP is the node's. A pod that has finished may still show an IP that a running
    pod now has; the running one wins.
    """
    local: dict[str, PodInfo] = {}
    peers: list[PodInfo] = []
    for pod in pods:
        meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
        ips = [entry.get("ip") for entry in status.get("podIPs") or []] or [status.get("podIP")]
        ips = [ip for ip in ips if ip and ipaddress.ip_address(ip).version == 4]
        if spec.get("hostNetwork") or not ips:
            continue
        info = PodInfo(meta.get("namespace", ""), meta.get("name", ""), dict(meta.get("labels") or {}), ips[0])
        peers.append(info)
        if spec.get("nodeName") == node and (status.get("phase") == "Running" or ips[0] not in local):
            local[ips[0]] = info
    labels = {}
    for namespace in namespaces:
        meta = namespace.get("metadata") or {}
        labels[meta.get("name", "")] = dict(meta.get("labels") or {})
    return Cluster(local, tuple(peers), labels, tuple(_widen_named_ports(p) for p in policies))


@dataclass(frozen=True)
class Deletion:
    """An entry to delete, whose pod it is, and the policies that isolate that pod."""

    entry: Entry
    pod: PodInfo
    policies: tuple[str, ...]

    def __str__(self) -> str:
        o, r = self.entry.original, self.entry.reply
        return (
            f"{self.pod.namespace}/{self.pod.name}: {self.entry.protocol} {o.src}:{o.sport} -> {o.dst}:{o.dport}"
            f" (to {r.src}:{r.sport}) denied; isolated by {', '.join(self.policies)} and no egress rule allows it"
        )


def decide(
    entries: Iterable[Entry], cluster: Cluster, only: Mapping[str, Sequence[Obj]] | None = None
) -> list[Deletion]:
    """The entries the current policies deny: egress of this node's pods only (see the module docstring).

    ``only``, when given (``--new-pods-s``), narrows that to the pods with these addresses, each judged by the
    policies mapped to it (those in force when the pod was first seen) instead of the current ones.
    """
    plans: dict[str, EgressPlan] = {}
    found = []
    for entry in entries:
        pod = cluster.local.get(entry.original.src)
        if only is not None and entry.original.src not in only:
            continue
        # Until a reply is seen, conntrack calls every packet of the original direction NEW, so the engine judges
        # each one itself: nothing to cut, and reaping a pod's retried SYNs would only fill the log.
        if pod is None or entry.unreplied or entry.protocol not in PROTOCOLS:
            continue
        if entry.original.src not in plans:
            policies = cluster.policies if only is None else only[entry.original.src]
            plans[entry.original.src] = egress_plan(pod, policies, cluster.peers, cluster.namespace_labels)
        plan = plans[entry.original.src]
        if not allowed(plan, entry.reply.src, entry.protocol, entry.reply.sport):
            found.append(Deletion(entry, pod, plan.policies))
    return found


class NewPods:
    """Which of this node's pods were first seen less than ``window_s`` ago (``--new-pods-s``), and the policies in
    force when each was first seen.

    Those are the policies the engine would have applied from the pod's first packet had it known the pod (NRI):
    a policy that arrives later meets the pod's open connections as the engine alone meets them, so it is not used.
    A pod is keyed by namespace, name and address, so a replacement with a reused name is new again. Pods present in
    the first round are not new: the reaper did not see them start.
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.first_seen: dict[tuple[str, str, str], tuple[float, tuple[Obj, ...]]] = {}
        self.rounds = 0

    def update(self, cluster: Cluster, now: float) -> dict[str, tuple[Obj, ...]]:
        """Record this round's pods; return the new ones' addresses, each with its policies at first sight."""
        first = self.rounds == 0
        self.rounds += 1
        current = {(pod.namespace, pod.name, ip): ip for ip, pod in cluster.local.items()}
        seen_now = (-math.inf if first else now, tuple(cluster.policies))
        self.first_seen = {key: self.first_seen.get(key, seen_now) for key in current}
        return {current[key]: policies for key, (at, policies) in self.first_seen.items() if now - at < self.window_s}


def read_cluster(api: KubeApi, node: str) -> Cluster:
    """All pods, not only this node's (``fieldSelector=spec.nodeName``): peer selectors may name pods elsewhere."""
    items = [api.get(path).get("items") or [] for path in ("/api/v1/pods", "/api/v1/namespaces")]
    policies = api.get("/apis/networking.k8s.io/v1/networkpolicies").get("items") or []
    return cluster_view(items[0], items[1], policies, node)


def list_entries() -> tuple[list[Entry], int]:
    proc = subprocess.run(["conntrack", "-L"], capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise OSError(f"conntrack -L: exit {proc.returncode}: {proc.stderr.strip()}")
    return parse_conntrack(proc.stdout)


def delete(entry: Entry) -> str | None:
    """Delete exactly ``entry``; ``None`` on success, including when it is already gone; else the error."""
    o = entry.original
    argv = ["conntrack", "-D", "-p", entry.protocol, "--orig-src", o.src, "--orig-dst", o.dst]
    argv += ["--orig-port-src", str(o.sport), "--orig-port-dst", str(o.dport)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    if proc.returncode == 0 or "0 flow entries have been deleted" in proc.stderr:
        return None
    return f"exit {proc.returncode}: {proc.stderr.strip()}"


def one_round(
    api: KubeApi, node: str, log: Callable[[str], None], seen: list[Any], new_pods: NewPods | None = None
) -> str:
    """Read the cluster and conntrack, delete what is denied, return a summary; ``seen`` is the last policy set."""
    cluster = read_cluster(api, node)
    only = None if new_pods is None else new_pods.update(cluster, time.monotonic())
    versions = tuple(sorted((_name(p), (p.get("metadata") or {}).get("resourceVersion", "")) for p in cluster.policies))
    if seen != [versions]:  # a policy changed in place counts too
        log(f"NetworkPolicies now: {', '.join(name for name, _ in versions) or 'none'}")
        seen[:] = [versions]
    entries, skipped = list_entries()
    deleted = 0
    for deletion in decide(entries, cluster, only):
        error = delete(deletion.entry)
        log(f"deleted {deletion}" if error is None else f"could not delete {deletion}: {error}")
        deleted += error is None
    return f"{len(entries)} tcp/udp entries ({skipped} other lines skipped), {deleted} deleted"


class _Stop(BaseException):
    """Raised by the signal handler; a BaseException so that no ``except Exception`` on the way swallows it."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaoscontour_sandbox.reaper", description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", type=Path, required=True, help="an admin kubeconfig")
    parser.add_argument("--node", required=True, help="the node this host is (its pods are reaped)")
    parser.add_argument("--interval-s", type=float, default=0.5, help="seconds between rounds")
    parser.add_argument(
        "--new-pods-s",
        type=float,
        default=None,
        metavar="S",
        help="reap only pods first seen less than S seconds ago (the conntrack mode's stand-in for NRI)",
    )
    parser.add_argument("--once", action="store_true", help="one round; print the deletions")
    args = parser.parse_args(argv)
    if args.interval_s <= 0 or (args.new_pods_s is not None and args.new_pods_s <= 0):
        parser.error("--interval-s and --new-pods-s must be positive numbers of seconds")
    new_pods = None if args.new_pods_s is None else NewPods(args.new_pods_s)

    def log(message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} reaper: {message}", flush=True)

    def on_signal(signum: int, frame: object) -> None:
        raise _Stop  # interrupts a blocked API call or sleep at once; a half-done round is harmless

    api, seen = KubeApi(args.kubeconfig), list[Any]()
    if args.once:
        try:
            log(one_round(api, args.node, log, seen))
        except (ApiError, OSError, subprocess.SubprocessError) as exc:
            log(f"round failed: {exc}")
            return 1
        return 0
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    scope = "" if new_pods is None else f" (only pods first seen less than {args.new_pods_s:g} s ago)"
    log(f"reaping egress conntrack entries of node {args.node} every {args.interval_s}s{scope}")
    failing = ""  # a failure is logged when it starts or changes, not twice a second while it lasts
    try:
        while True:
            try:
                one_round(api, args.node, log, seen, new_pods)
                if failing:
                    log("rounds work again")
                failing = ""
            except Exception as exc:  # the API server or conntrack may fail for a while; a surprise must not stop us
                if f"{exc}" != failing:
                    log(f"round failed, retrying every {args.interval_s}s: {type(exc).__name__}: {exc}")
                failing = f"{exc}"
            time.sleep(args.interval_s)
    except _Stop:
        log("stopped")
        return 0


if __name__ == "__main__":
    sys.exit(main())
