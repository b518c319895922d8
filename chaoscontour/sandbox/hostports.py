"""``hostPort``: a container port published on the node's address, as the CNI ``portmap`` plugin does it.

The release manifest's Envoy DaemonSet maps hostPort 80 and 443 to Envoy's 8080 and 8443. Here the node's address
is the bridge address :data:`~chaoscontour.sandbox.network.NODE_IP` (10.213.0.1, the Node's ``InternalIP`` and
every pod's ``hostIP``): a connection from the host to ``NODE_IP:80`` is DNATed to ``<envoy pod IP>:8080``.

- :func:`host_ports` and :func:`assign` (pure): the pod's ``ports`` with a ``hostPort``, and which pod gets each
  (host port, protocol) when two ask for the same one (the first; kube-scheduler's NodePorts filter would not
  have placed the second, the notes say so).
- :func:`render_chain` (pure): the ``iptables-restore --noflush`` input that replaces the chain
  :data:`CHAIN` in the host's ``nat`` table, one DNAT rule per port, only for destination ``NODE_IP`` (the host's
  other addresses and ports stay untouched on a shared machine).
- :func:`sync` and :func:`remove` (edges): load the chain and its one jump from ``OUTPUT`` (comment ``ccsbx``),
  and remove both; ``chaoscontour sandbox down`` removes them too (:func:`chaoscontour.sandbox.network.teardown`).

Only connections made on the host reach a hostPort: a pod's connection to ``NODE_IP:80`` would have to be routed
back out of the host to the bridge, and the sandbox leaves the host's ``ip_forward`` alone.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CHAIN", "JUMP", "HostPort", "host_ports", "assign", "render_chain", "sync", "remove", "leftovers"]

Obj = Mapping[str, Any]

CHAIN = "CCSBX-HOSTPORTS"
# The jump that sends the host's own outgoing connections through CHAIN (network.teardown finds it by its comment).
JUMP = ["OUTPUT", "-m", "comment", "--comment", "ccsbx", "-j", CHAIN]


@dataclass(frozen=True)
class HostPort:
    """``host_port``/``protocol`` on the node, forwarded to ``pod_ip:container_port`` of pod ``pod``."""

    host_port: int
    protocol: str
    pod_ip: str
    container_port: int
    pod: str


def host_ports(pod_spec: Obj, pod_ip: str, pod: str) -> list[HostPort]:
    """The ports of every container of ``pod_spec`` that declare a ``hostPort``."""
    found = []
    for container in pod_spec.get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                protocol = str(port.get("protocol") or "TCP").lower()
                found.append(HostPort(int(port["hostPort"]), protocol, pod_ip, int(port["containerPort"]), pod))
    return found


def assign(wanted: Sequence[HostPort]) -> tuple[list[HostPort], list[str]]:
    """The ports to publish, the first pod winning each (host port, protocol); notes on those refused."""
    taken: dict[tuple[int, str], HostPort] = {}
    notes = []
    for port in wanted:
        key = (port.host_port, port.protocol)
        if key in taken and taken[key].pod != port.pod:
            notes.append(f"hostPort {port.host_port}/{port.protocol} of {port.pod} is taken by {taken[key].pod}")
            continue
        taken.setdefault(key, port)
    return list(taken.values()), notes


def render_chain(ports: Sequence[HostPort], node_ip: str) -> str:
    """``iptables-restore --noflush`` input that replaces :data:`CHAIN` of the ``nat`` table with ``ports``."""
    lines = ["*nat", f":{CHAIN} - [0:0]"]  # declaring the chain flushes it, even with --noflush
    for port in sorted(ports, key=lambda p: (p.host_port, p.protocol)):
        lines.append(
            f"-A {CHAIN} -d {node_ip}/32 -p {port.protocol} -m {port.protocol} --dport {port.host_port}"
            f' -m comment --comment "{port.pod}" -j DNAT --to-destination {port.pod_ip}:{port.container_port}'
        )
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


# --- edges: the host's nat table -------------------------------------------------------------------------------


def _iptables(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, input=stdin, capture_output=True, text=True, check=False)


def sync(rules: str) -> None:
    """Load ``rules`` (from :func:`render_chain`) into the host's nat table and make sure the jump exists."""
    done = _iptables("iptables-restore", "--noflush", stdin=rules)
    if done.returncode != 0:
        raise OSError(f"iptables-restore of {CHAIN} failed: {done.stderr.strip()}")
    if _iptables("iptables", "-t", "nat", "-C", *JUMP).returncode != 0:
        done = _iptables("iptables", "-t", "nat", "-A", *JUMP)
        if done.returncode != 0:
            raise OSError(f"cannot add the jump to {CHAIN}: {done.stderr.strip()}")


def remove() -> None:
    """Remove the jump and the chain from the host's nat table. Idempotent."""
    while _iptables("iptables", "-t", "nat", "-D", *JUMP).returncode == 0:
        pass
    _iptables("iptables", "-t", "nat", "-F", CHAIN)
    _iptables("iptables", "-t", "nat", "-X", CHAIN)


def leftovers() -> list[str]:
    """The host's nat rules and chain of the sandbox's hostPorts that exist now."""
    listing = _iptables("iptables", "-t", "nat", "-S").stdout.splitlines()
    return [line for line in listing if CHAIN in line]
