"""The sandbox's network: one Linux bridge, a network namespace per pod and one for the control plane.

Layout (everything named with the ``ccsbx`` prefix so that :func:`teardown` finds all of it)::

    host (root namespace)          10.213.0.1  on bridge ccsbx0   -- the node's address (hostIP)
    netns ccsbx-cp                 10.213.0.2  veth ccsbxcp       -- etcd, kube-apiserver, kube-controller-manager
    netns ccsbx-<uid8> per pod     10.213.0.N  veth ccsbx<uid8>   -- the pod's containers, eth0 in the pod

The pod CIDR 10.213.0.0/24 is a private range unlikely to clash with a host's own networks. Pods reach each
other, the control plane and the host over the bridge; nothing is routed or masqueraded to the outside (no
``ip_forward``, no NAT on the host but the node agent's hostPort DNAT, :mod:`chaoscontour.sandbox.hostports`). The
only rule added to the host's own iptables is an ACCEPT in ``FORWARD`` for
traffic within the bridge (``br_netfilter`` sends bridged frames through the host's ``FORWARD`` chain, whose policy
may be DROP on a host that runs Docker); it carries the comment ``ccsbx``.

Each namespace gets ``/etc/netns/<ns>/hosts`` and ``resolv.conf`` (``ip netns exec`` bind-mounts them over
``/etc/hosts`` and ``/etc/resolv.conf``), as the kubelet writes a pod's: the node agent passes the resolv.conf of the
pod's ``dnsPolicy`` (:func:`chaoscontour.sandbox.dns.resolv_conf`); other namespaces get one that fails fast.
Everything here needs root and the ``ip`` and ``iptables`` commands.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from chaoscontour.sandbox import hostports

__all__ = [
    "BRIDGE",
    "FAIL_FAST_RESOLV_CONF",
    "CONTROL_PLANE_IP",
    "CONTROL_PLANE_NETNS",
    "NODE_IP",
    "POD_CIDR",
    "PREFIX",
    "IpPool",
    "NetworkError",
    "create_bridge",
    "create_netns",
    "delete_netns",
    "iptables_restore",
    "leftovers",
    "list_netns",
    "missing_tools",
    "netns_exec",
    "netns_pids",
    "teardown",
]

PREFIX = "ccsbx"
BRIDGE = f"{PREFIX}0"
POD_CIDR = ipaddress.ip_network("10.213.0.0/24")
NODE_IP = "10.213.0.1"
CONTROL_PLANE_NETNS = f"{PREFIX}-cp"
CONTROL_PLANE_IP = "10.213.0.2"
# Pods get .10 and up; .2 to .9 stay free for sandbox infrastructure.
_FIRST_POD_HOST = 10
_COMMENT = PREFIX
_FORWARD_RULE = ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-m", "comment", "--comment", _COMMENT, "-j", "ACCEPT"]
NETNS_ETC = Path("/etc/netns")
# For namespaces that need no DNS (the control plane's): the host's resolver is unreachable from the bridge, and a
# resolver that refuses at once beats lookups that hang until their timeout (Python's http.server does one on bind).
FAIL_FAST_RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"


class NetworkError(RuntimeError):
    """A network command failed; the message carries the command and its error output."""


def _run(argv: Sequence[str], *, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise NetworkError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc


def missing_tools() -> list[str]:
    """The commands the sandbox network needs that are not on ``PATH`` (empty when all are there)."""
    needed = ["ip", "iptables", "iptables-restore", "unshare", "hostname"]
    return [tool for tool in needed if shutil.which(tool) is None]


class IpPool:
    """Pod addresses from :data:`POD_CIDR`, handed out in turn and kept per owner (a pod UID).

    A released address goes to the back of the line, as the host-local IPAM plugin's round robin does (and AWS VPC
    CNI's cooldown): a deleted pod's address must stay unowned for a while, since Envoy may still route to it while
    Contour is cut off; handed straight to the replacement pod it would hide the stale endpoint.
    """

    def __init__(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network = POD_CIDR) -> None:
        self._free = [str(ip) for ip in list(network.hosts())[_FIRST_POD_HOST - 1 :]]
        self._taken: dict[str, str] = {}

    def allocate(self, owner: str) -> str:
        if owner in self._taken:
            return self._taken[owner]
        if not self._free:
            raise NetworkError(f"no free pod address left in {POD_CIDR}")
        ip = self._free.pop(0)
        self._taken[owner] = ip
        return ip

    def release(self, owner: str) -> None:
        ip = self._taken.pop(owner, None)
        if ip is not None:
            self._free.append(ip)


def _link_exists(name: str) -> bool:
    return _run(["ip", "link", "show", name], check=False).returncode == 0


def create_bridge() -> None:
    """Create the bridge with the node address (idempotent) and let bridged traffic through the host's FORWARD."""
    if not _link_exists(BRIDGE):
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    _run(["ip", "addr", "replace", f"{NODE_IP}/{POD_CIDR.prefixlen}", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])
    if _run(["iptables", "-C", *_FORWARD_RULE], check=False).returncode != 0:
        _run(["iptables", "-I", *_FORWARD_RULE])


def _host_veth(netns: str) -> str:
    # Interface names are at most 15 characters: ccsbx + up to 10 characters of the namespace's own suffix.
    return PREFIX + netns.removeprefix(PREFIX + "-")[:10]


def create_netns(
    netns: str, ip: str, hosts: dict[str, str] | None = None, resolv_conf: str = FAIL_FAST_RESOLV_CONF
) -> None:
    """Create namespace ``netns`` with ``eth0`` at ``ip`` on the bridge and a default route via the node.

    ``hosts`` maps names to addresses for the namespace's ``/etc/hosts`` (``localhost`` is always there);
    ``resolv_conf`` is the text of its ``/etc/resolv.conf``.
    """
    if not netns.startswith(PREFIX + "-"):
        raise ValueError(f"sandbox namespaces are named {PREFIX}-*, not {netns!r}")
    delete_netns(netns)
    veth = _host_veth(netns)
    etc = NETNS_ETC / netns
    etc.mkdir(parents=True, exist_ok=True)
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{address}\t{name}" for name, address in (hosts or {}).items()]
    (etc / "hosts").write_text("\n".join(lines) + "\n")
    (etc / "resolv.conf").write_text(resolv_conf)
    _run(["ip", "netns", "add", netns])
    _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])
    _run(["ip", "link", "set", veth, "master", BRIDGE])
    _run(["ip", "link", "set", veth, "up"])
    inside = netns_exec(netns)
    _run([*inside, "ip", "link", "set", "lo", "up"])
    _run([*inside, "ip", "addr", "add", f"{ip}/{POD_CIDR.prefixlen}", "dev", "eth0"])
    _run([*inside, "ip", "link", "set", "eth0", "up"])
    _run([*inside, "ip", "route", "add", "default", "via", NODE_IP])


def netns_exec(netns: str) -> list[str]:
    """The command prefix that runs a program inside ``netns``."""
    return ["ip", "netns", "exec", netns]


def netns_pids(netns: str) -> list[int]:
    """PIDs of every process whose network namespace is ``netns``."""
    proc = _run(["ip", "netns", "pids", netns], check=False)
    return [int(pid) for pid in proc.stdout.split() if pid.isdigit()]


def _kill_all(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def delete_netns(netns: str) -> None:
    """Remove ``netns`` (killing whatever still runs in it), its veth and its ``/etc/netns`` dir. Idempotent."""
    if netns in list_netns():
        _kill_all(netns_pids(netns))
        _run(["ip", "netns", "del", netns], check=False)
    veth = _host_veth(netns)
    if _link_exists(veth):
        _run(["ip", "link", "del", veth], check=False)
    shutil.rmtree(NETNS_ETC / netns, ignore_errors=True)


def iptables_restore(netns: str, rules: str) -> None:
    """Replace the tables named in ``rules`` (``iptables-restore`` input) inside ``netns``, atomically per table."""
    _run([*netns_exec(netns), "iptables-restore"], stdin=rules)


def list_netns() -> list[str]:
    """Names of the sandbox's network namespaces that exist now."""
    proc = _run(["ip", "netns", "list"], check=False)
    names = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    return [name for name in names if name.startswith(PREFIX + "-")]


def _links() -> list[str]:
    proc = _run(["ip", "-o", "link", "show"], check=False)
    names = []
    for line in proc.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return [name for name in names if name.startswith(PREFIX)]


def _host_rules() -> list[str]:
    proc = _run(["iptables", "-S"], check=False)
    return [line for line in proc.stdout.splitlines() if f"--comment {_COMMENT}" in line]


def leftovers() -> dict[str, list[str]]:
    """What of the sandbox network exists now: namespaces, links, host iptables rules and ``/etc/netns`` dirs."""
    etc = sorted(p.name for p in NETNS_ETC.glob(PREFIX + "-*")) if NETNS_ETC.exists() else []
    return {
        "netns": list_netns(),
        "links": _links(),
        "iptables": _host_rules(),
        "nat": hostports.leftovers(),
        "etc_netns": etc,
    }


def teardown() -> None:
    """Remove every namespace, link, host iptables rule and ``/etc/netns`` dir of the sandbox. Idempotent."""
    for netns in list_netns():
        delete_netns(netns)
    for link in _links():
        _run(["ip", "link", "del", link], check=False)
    for rule in _host_rules():
        # `iptables -S` prints "-A CHAIN ..."; the same words after -D delete exactly that rule.
        _run(["iptables", "-D", *rule.split()[1:]], check=False)
    hostports.remove()  # the node agent's hostPort DNAT, if a pod had one
    if NETNS_ETC.exists():
        for path in NETNS_ETC.glob(PREFIX + "-*"):
            shutil.rmtree(path, ignore_errors=True)
