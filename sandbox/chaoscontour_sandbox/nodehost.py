"""What the real node changes on the host outside its directory, how to undo it, and how to see what is left.

A kubelet on containerd with CNI and kube-proxy does not keep to its own directory: the CNI plugins create a network
namespace (``/var/run/netns/cni-*``) and a host veth per pod and install ``CNI-*`` iptables chains for hostPorts;
kube-proxy installs ``KUBE-*`` chains; kube-network-policies an nftables table; the kubelet creates cgroups under
its cgroup root and mounts volumes under its root dir; runc shims outlive containerd. :func:`leftovers` lists all
of it, so ``down`` (and a test) can show that nothing stays; :func:`clean` removes it. Each step is idempotent:
removing what is already gone is success.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from chaoscontour_sandbox.nodeconfig import NodeLayout

__all__ = [
    "CGROUP_MOUNTS",
    "NETNS_DIR",
    "NodeHostError",
    "clean",
    "create_control_plane_netns",
    "enable_forwarding",
    "install_chain",
    "leftovers",
    "missing_tools",
    "our_shims",
    "processes_holding",
    "remove_chain",
]

CGROUP_MOUNTS = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/var/run/netns")
# kube-network-policies' nftables table (its default name, kept by the sandbox's DaemonSet).
NETPOL_TABLE = ("inet", "kube-network-policies")
_CNI_PLUGINS = ("ptp", "host-local", "portmap", "loopback")
_TOOLS = {
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "ip": "iproute2",
    "iptables": "iptables",
    "nft": "nftables",
    "conntrack": "conntrack",
}


class NodeHostError(RuntimeError):
    """A host command failed; the message carries the command and its error output."""


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise NodeHostError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc


def missing_tools() -> list[str]:
    """The Debian packages to install for what the node needs and cannot find (commands and CNI plugins)."""
    packages = {pkg for tool, pkg in _TOOLS.items() if shutil.which(tool) is None}
    if not all((Path("/usr/lib/cni") / plugin).exists() for plugin in _CNI_PLUGINS):
        packages.add("containernetworking-plugins")
    return sorted(packages)


# --- setting up ---------------------------------------------------------------------------------------------------


def enable_forwarding() -> None:
    """Pods on ``ptp`` veths reach the control plane and each other through the host's routing."""
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")


def _link_exists(name: str) -> bool:
    return _run(["ip", "link", "show", name], check=False).returncode == 0


def create_control_plane_netns(layout: NodeLayout) -> str:
    """A bridge ``<prefix>0`` holding the node address, and a network namespace ``<prefix>-cp`` on it at the
    control plane's address, with a route back to the pod CIDR through the node. Returns the namespace's name."""
    bridge, netns, veth = f"{layout.prefix}0", f"{layout.prefix}-cp", f"{layout.prefix}cp"
    prefixlen = ipaddress.ip_network(layout.node_network).prefixlen
    if not _link_exists(bridge):
        _run(["ip", "link", "add", bridge, "type", "bridge"])
    _run(["ip", "addr", "replace", f"{layout.node_ip}/{prefixlen}", "dev", bridge])
    _run(["ip", "link", "set", bridge, "up"])
    holders = processes_holding(layout.control_plane_ip)
    if holders:
        listed = "; ".join(f"{pid} {argv}" for pid, argv in sorted(holders.items())[:5])
        raise NodeHostError(
            f"the control plane's address {layout.control_plane_ip} is in use in another network namespace "
            f"(a sandbox or real-node test with prefix {layout.prefix} still running, perhaps left by a killed "
            f"run): PIDs {listed}. Stop it (`chaoscontour-sandbox down --dir DIR`) or end those processes, then retry"
        )
    if (NETNS_DIR / netns).exists():
        _run(["ip", "netns", "del", netns], check=False)
    if _link_exists(veth):
        # No process holds its namespace (checked above), so something pins it by a mount: the veth is stale.
        _run(["ip", "link", "del", veth])
    _run(["ip", "netns", "add", netns])
    _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])
    _run(["ip", "link", "set", veth, "master", bridge, "up"])
    inside = ["ip", "netns", "exec", netns]
    _run([*inside, "ip", "link", "set", "lo", "up"])
    _run([*inside, "ip", "addr", "add", f"{layout.control_plane_ip}/{prefixlen}", "dev", "eth0"])
    _run([*inside, "ip", "link", "set", "eth0", "up"])
    _run([*inside, "ip", "route", "add", "default", "via", layout.node_ip])
    return netns


def processes_holding(address: str) -> dict[int, str]:
    """Processes (PID → command line) whose network namespace, not the host's, has ``address`` on an interface.

    A node's control plane runs in its own namespace at that address; a run killed before it stopped its node
    leaves those processes (and with them the namespace and its veth) behind, even once the namespace's name is
    gone. Namespaces are told apart by their inode, so each is looked into once."""
    host = os.readlink("/proc/self/ns/net")
    members: dict[str, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                members.setdefault(os.readlink(proc / "ns/net"), []).append(int(proc.name))
    found: dict[int, str] = {}
    for namespace, pids in members.items():
        if namespace == host:
            continue
        out = _run(["nsenter", f"--net=/proc/{pids[0]}/ns/net", "ip", "-o", "-4", "addr", "show"], check=False)
        words = [line.split() for line in out.stdout.splitlines()]
        if any(len(w) > 3 and w[3].split("/")[0] == address for w in words):
            for pid in pids:
                with contextlib.suppress(OSError):
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    found[pid] = " ".join(a.decode(errors="replace") for a in argv if a)[:120]
    return found


def install_chain(table: str, chain: str, rules: Sequence[Sequence[str]]) -> None:
    """Install one of the node's own chains in ``table`` from its ``rules`` (``iptables -t TABLE`` arguments, the
    chain's creation first, the jump into it last), replacing an older copy."""
    remove_chain(table, chain)
    for rule in rules:
        _run(["iptables", "-t", table, *rule])


def remove_chain(table: str, chain: str) -> None:
    """Remove one of the node's own chains and every jump to it. Idempotent."""
    _flush_chains([f"{table}/{chain}"])


def create_cgroup_roots(layout: NodeLayout) -> None:
    """The kubelet refuses a cgroup root that does not exist: create it in every mounted hierarchy."""
    for hierarchy in _hierarchies():
        (hierarchy / layout.prefix).mkdir(exist_ok=True)


def _hierarchies() -> list[Path]:
    if not CGROUP_MOUNTS.is_dir():
        return []
    return [p for p in sorted(CGROUP_MOUNTS.iterdir()) if p.is_dir() and (p / "cgroup.procs").exists()]


# --- what is left, and removing it --------------------------------------------------------------------------------


def our_shims(layout: NodeLayout) -> list[int]:
    """PIDs of containerd shims started by this node's containerd (their ``-address`` is its socket)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = proc.joinpath("cmdline").read_bytes().decode(errors="replace").split("\0")
            if argv and argv[0].endswith("containerd-shim-runc-v2") and str(layout.containerd_socket) in argv:
                found.append(int(proc.name))
    return found


def _mounts_under(directory: Path) -> list[str]:
    with contextlib.suppress(OSError):
        points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        # Octal escapes (\040 for a space) are how mountinfo writes odd characters.
        points = [p.encode().decode("unicode_escape") for p in points]
        return sorted((p for p in points if p == str(directory) or p.startswith(f"{directory}/")), reverse=True)
    return []


def _cgroups(layout: NodeLayout) -> list[str]:
    return [str(h / layout.prefix) for h in _hierarchies() if (h / layout.prefix).exists()]


def _iptables_chains() -> list[str]:
    chains = []
    for table in ("nat", "filter", "mangle"):
        out = _run(["iptables", "-t", table, "-S"], check=False).stdout
        chains += [f"{table}/{line.split()[1]}" for line in out.splitlines() if line.startswith("-N ")]
    return chains


def _our_chains(layout: NodeLayout) -> list[str]:
    ours = ("KUBE-", "CNI-", f"{layout.prefix.upper()}-")
    return [c for c in _iptables_chains() if c.split("/", 1)[1].startswith(ours)]


def _pod_links(layout: NodeLayout) -> list[str]:
    """Host veths of pods: ptp gives each the pod CIDR's gateway address."""
    out = _run(["ip", "-o", "-4", "addr", "show"], check=False).stdout
    pods = ipaddress.ip_network(layout.pod_cidr)
    links = []
    for line in out.splitlines():
        words = line.split()
        if len(words) > 3 and ipaddress.ip_interface(words[3]).ip in pods:
            links.append(words[1].split("@")[0])
    return sorted(set(links))


def _nft_table() -> list[str]:
    proc = _run(["nft", "list", "tables"], check=False) if shutil.which("nft") else None
    wanted = f"table {NETPOL_TABLE[0]} {NETPOL_TABLE[1]}"
    return [wanted] if proc and wanted in proc.stdout.splitlines() else []


def _addresses_in(netns: str) -> list[ipaddress.IPv4Interface]:
    out = _run(["ip", "-n", netns, "-o", "-4", "addr", "show"], check=False).stdout
    return [ipaddress.IPv4Interface(line.split()[3]) for line in out.splitlines() if len(line.split()) > 3]


def _netns(layout: NodeLayout) -> list[str]:
    """The CRI's namespaces of this node's pods (``cni-<uuid>`` holding an address of its pod CIDR; another
    runtime's pods are left alone) and the control plane's."""
    if not NETNS_DIR.is_dir():
        return []
    pods = ipaddress.ip_network(layout.pod_cidr)
    names = [f"{layout.prefix}-cp"] if (NETNS_DIR / f"{layout.prefix}-cp").exists() else []
    for path in sorted(NETNS_DIR.glob("cni-*")):
        if any(address.ip in pods for address in _addresses_in(path.name)):
            names.append(path.name)
    return names


def leftovers(layout: NodeLayout) -> dict[str, list[str]]:
    """Everything of this node that exists now outside its processes' memory; empty lists when all is gone."""
    bridge = f"{layout.prefix}0"
    return {
        "shims": [str(pid) for pid in our_shims(layout)],
        "mounts": _mounts_under(layout.directory),
        "cgroups": _cgroups(layout),
        "iptables": _our_chains(layout),
        "nftables": _nft_table(),
        "netns": _netns(layout),
        "links": _pod_links(layout) + [name for name in (bridge, f"{layout.prefix}cp") if _link_exists(name)],
    }


def _flush_chains(chains: Sequence[str]) -> None:
    """Delete ``table/CHAIN`` chains: first every rule that jumps to one, then their rules, then the chains."""
    by_table: dict[str, list[str]] = {}
    for entry in chains:
        table, chain = entry.split("/", 1)
        by_table.setdefault(table, []).append(chain)
    for table, names in by_table.items():
        for line in _run(["iptables", "-t", table, "-S"], check=False).stdout.splitlines():
            # Quoted comments ("CNI portfwd requiring masquerade") are one argument of the rule.
            words = shlex.split(line)
            if words[:1] == ["-A"] and words[1] not in names and "-j" in words:
                target = words[words.index("-j") + 1]
                if target in names:
                    _run(["iptables", "-t", table, "-D", *words[1:]], check=False)
        for chain in names:
            _run(["iptables", "-t", table, "-F", chain], check=False)
        for chain in names:
            _run(["iptables", "-t", table, "-X", chain], check=False)


def clean(layout: NodeLayout) -> None:
    """Remove whatever :func:`leftovers` finds, after the node's own programs have stopped. Idempotent."""
    for pid in our_shims(layout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while our_shims(layout) and time.monotonic() < deadline:
        time.sleep(0.1)
    for point in _mounts_under(layout.directory):
        _run(["umount", "-l", point], check=False)
    for name in _netns(layout):
        _run(["ip", "netns", "del", name], check=False)
    for link in _pod_links(layout):
        _run(["ip", "link", "del", link], check=False)
    _flush_chains(_our_chains(layout))
    if _nft_table():
        _run(["nft", "delete", "table", *NETPOL_TABLE], check=False)
    for link in (f"{layout.prefix}cp", f"{layout.prefix}0"):
        if _link_exists(link):
            _run(["ip", "link", "del", link], check=False)
    for cgroup in _cgroups(layout):
        _remove_cgroup_tree(Path(cgroup))


def _remove_cgroup_tree(root: Path) -> None:
    """Remove a cgroup and its children, deepest first (a cgroup directory goes with ``rmdir`` once it is empty
    of processes and children); processes still in it are killed first."""
    children = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    for path in [*children, root]:
        with contextlib.suppress(OSError):
            for pid in path.joinpath("cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for _ in range(50):
            try:
                path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)
