"""The real node's configuration files and command lines, as pure functions of one :class:`NodeLayout`.

The sandbox's node is assembled as kind assembles one, minus Docker: containerd (CRI) with runc, the standard CNI
plugins (``ptp`` + ``host-local`` + ``portmap``, kindnetd's configuration), Kubernetes' own kubelet and
kube-proxy (iptables mode). Nothing here starts anything or touches the host; :mod:`chaoscontour_sandbox.node`
writes these files and runs the programs. Each choice that differs from a stock install says why beside it.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoscontour_sandbox import versions

__all__ = [
    "MAX_SOCKET_PATH",
    "NodeLayout",
    "cni_conflist",
    "containerd_config",
    "kube_proxy_args",
    "kube_proxy_config",
    "kubelet_args",
    "kubelet_config",
    "masquerade_rules",
    "network_policy_hook_rules",
    "toml",
]

# sockaddr_un's sun_path holds 108 bytes on Linux, the terminating NUL included; containerd adds nothing to it.
MAX_SOCKET_PATH = 107
# The pause image the CRI plugin starts each pod sandbox from; built locally from Kubernetes' own pause.c.
SANDBOX_IMAGE = f"registry.k8s.io/pause:{versions.PAUSE}"


@dataclass(frozen=True)
class NodeLayout:
    """Where one node keeps its files, what it is called, and the addresses it uses.

    ``node_network`` is the bridge's subnet: the node's address is its first, the control plane's its second.
    ``directory`` holds everything the node writes (containerd's root and state, the kubelet's root, pod logs, CNI
    state, configuration, logs), so that removing it removes the node's files. ``prefix`` names what the node
    creates outside that directory (its cgroup root, the masquerade chain), so that clean-up finds exactly those.
    """

    directory: Path
    name: str
    node_network: str
    pod_cidr: str
    service_cidr: str
    prefix: str = "ccnode"
    cluster_domain: str = "cluster.local"

    def __post_init__(self) -> None:
        pods = ipaddress.ip_network(self.pod_cidr)
        services = ipaddress.ip_network(self.service_cidr)
        nodes = ipaddress.ip_network(self.node_network)
        for one, other in ((pods, services), (pods, nodes), (services, nodes)):
            if one.overlaps(other):
                raise ValueError(f"the node's networks must not overlap: {one} and {other} do")
        if len(str(self.containerd_socket)) > MAX_SOCKET_PATH:
            raise ValueError(
                f"containerd's socket path {self.containerd_socket} is {len(str(self.containerd_socket))} bytes, "
                f"over the {MAX_SOCKET_PATH} a Unix socket allows: use a shorter sandbox directory"
            )

    # --- paths ------------------------------------------------------------------------------------------------------

    @property
    def config_dir(self) -> Path:
        return self.directory / "config"

    @property
    def logs_dir(self) -> Path:
        return self.directory / "logs"

    @property
    def containerd_dir(self) -> Path:
        return self.directory / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_dir / "containerd.sock"

    @property
    def containerd_config_file(self) -> Path:
        return self.config_dir / "containerd.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.config_dir / "cni"

    @property
    def cni_state_dir(self) -> Path:
        return self.directory / "cni-ipam"

    @property
    def kubelet_dir(self) -> Path:
        return self.directory / "kubelet"

    @property
    def pod_logs_dir(self) -> Path:
        return self.directory / "pod-logs"

    @property
    def kubelet_config_file(self) -> Path:
        return self.config_dir / "kubelet.yaml"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.config_dir / "kubelet.kubeconfig"

    @property
    def kube_proxy_config_file(self) -> Path:
        return self.config_dir / "kube-proxy.yaml"

    @property
    def kube_proxy_kubeconfig(self) -> Path:
        return self.config_dir / "kube-proxy.kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.config_dir / "ca.crt"

    @property
    def resolv_conf(self) -> Path:
        return self.config_dir / "resolv.conf"

    # --- names and addresses ----------------------------------------------------------------------------------------

    @property
    def node_ip(self) -> str:
        """The node's address: the node network's first, on the host's bridge."""
        return str(ipaddress.ip_network(self.node_network)[1])

    @property
    def control_plane_ip(self) -> str:
        """Where the control plane listens, in its own network namespace on the node network."""
        return str(ipaddress.ip_network(self.node_network)[2])

    @property
    def cgroup_root(self) -> str:
        return "/" + self.prefix

    @property
    def masquerade_chain(self) -> str:
        return f"{self.prefix.upper()}-MASQ"

    @property
    def network_policy_chain(self) -> str:
        return f"{self.prefix.upper()}-NETPOL"

    @property
    def cluster_dns(self) -> str:
        """The cluster DNS Service's address: the service CIDR's 10th, as kubeadm chooses it."""
        return str(ipaddress.ip_network(self.service_cidr)[10])


# --- containerd ---------------------------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string is a JSON string for the characters we write
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def toml(document: Mapping[str, Any]) -> str:
    """``document`` as TOML: scalars and lists first in each table, then its sub-tables (dotted, quoted keys)."""
    lines: list[str] = []

    def table(path: Sequence[str], values: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in values.items() if not isinstance(v, Mapping)}
        if path and (scalars or not values):
            lines.append("[" + ".".join(json.dumps(p) if not p.isidentifier() else p for p in path) + "]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
        if scalars:
            lines.append("")
        for key, sub in values.items():
            if isinstance(sub, Mapping):
                table([*path, key], sub)

    table([], document)
    return "\n".join(lines).rstrip() + "\n"


def containerd_config(layout: NodeLayout) -> str:
    """containerd 1.6's configuration (version 2): its own root, state and sockets, never the host's defaults."""
    cri = "io.containerd.grpc.v1.cri"
    d = layout.containerd_dir
    return toml(
        {
            "version": 2,
            "root": str(d / "root"),
            "state": str(d / "state"),
            "grpc": {"address": str(layout.containerd_socket)},
            "ttrpc": {"address": str(d / "containerd.sock.ttrpc")},
            "plugins": {
                "io.containerd.internal.v1.opt": {"path": str(d / "opt")},
                cri: {
                    "sandbox_image": SANDBOX_IMAGE,
                    # This machine refuses a negative oom_score_adj: without this runc fails to start any container
                    # ("can't get final child's PID from pipe"), as in kind's rootless nodes.
                    "restrict_oom_score_adj": True,
                    # Images come from local archives, never from a registry.
                    "disable_tcp_service": True,
                    "containerd": {
                        "snapshotter": "overlayfs",
                        "default_runtime_name": "runc",
                        "runtimes": {
                            "runc": {
                                "runtime_type": "io.containerd.runc.v2",
                                # The kubelet's cgroup driver is cgroupfs here (no systemd); they must agree.
                                "options": {"SystemdCgroup": False},
                            }
                        },
                    },
                    "cni": {"bin_dir": "/usr/lib/cni", "conf_dir": str(layout.cni_conf_dir)},
                },
            },
        }
    )


# --- CNI ----------------------------------------------------------------------------------------------------------


def cni_conflist(layout: NodeLayout) -> str:
    """kindnetd's network: a ``ptp`` veth per pod with ``host-local`` addresses from the pod CIDR, and ``portmap``
    for hostPorts. Masquerading is not CNI's (``ipMasq: false``): :func:`masquerade_rules` does it, as kindnetd's
    masq agent does."""
    return json.dumps(
        {
            "cniVersion": "0.3.1",
            "name": layout.prefix,
            "plugins": [
                {
                    "type": "ptp",
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(layout.cni_state_dir),
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "ranges": [[{"subnet": layout.pod_cidr}]],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=1,
    )


def masquerade_rules(layout: NodeLayout) -> list[list[str]]:
    """``iptables -t nat`` argument lists for kindnetd's masq agent: traffic from pods to anything that is neither
    a pod nor this node leaves with the node's address. The pod CIDR and the node's own network keep their source
    addresses (so the API server and NetworkPolicies see the pod's)."""
    chain = layout.masquerade_chain
    return [
        ["-N", chain],
        ["-A", chain, "-d", layout.pod_cidr, "-j", "RETURN"],
        ["-A", chain, "-d", layout.node_network, "-j", "RETURN"],
        ["-A", chain, "-j", "MASQUERADE"],
        ["-A", "POSTROUTING", "-s", layout.pod_cidr, "-m", "addrtype", "!", "--dst-type", "LOCAL", "-j", chain],
    ]


def network_policy_hook_rules(layout: NodeLayout, queue_id: int) -> list[list[str]]:
    """``iptables -t mangle`` argument lists that hand new connections of pods to the NetworkPolicy engine.

    kube-network-policies installs these itself as an nftables chain (``inet kube-network-policies``, hook
    postrouting, priority srcnat - 5) whose last rules use nftables' ``queue`` expression. This machine's kernel
    has no ``queue`` expression (built without CONFIG_NFT_QUEUE, no modules to load: ``nft add rule ... queue num
    98`` fails with "No such file or directory", and so does the engine's whole rule batch), but it has the
    iptables ``NFQUEUE`` target. So the same rules, in the same order, are written here in iptables, in the mangle
    table's POSTROUTING (after kube-proxy's DNAT, like the engine's hook), and the engine's own userspace verdicts
    do the judging: it reads the queue whether or not its nftables rules exist.

    The upstream rules, in order: DNS passes (the engine polices it in prerouting, which is left out here), root's
    own packets pass (the kubelet's probes), packets of connections already accepted pass (so only new connections
    are judged), everything else from or to a pod goes to the queue, dropped if nothing reads it (no bypass, as
    the engine without --fail-open). Upstream queues only pods that some policy selects; the engine accepts the
    packets of the others, so queueing every pod's new connection gives the same verdicts.
    """
    chain = layout.network_policy_chain
    return [
        ["-N", chain],
        ["-A", chain, "-p", "udp", "--dport", "53", "-j", "RETURN"],
        ["-A", chain, "-m", "owner", "--uid-owner", "0", "-j", "RETURN"],
        ["-A", chain, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"],
        ["-A", chain, "-s", layout.pod_cidr, "-j", "NFQUEUE", "--queue-num", str(queue_id)],
        ["-A", chain, "-d", layout.pod_cidr, "-j", "NFQUEUE", "--queue-num", str(queue_id)],
        ["-A", "POSTROUTING", "-j", chain],
    ]


# --- kubelet and kube-proxy ---------------------------------------------------------------------------------------


def kubelet_config(layout: NodeLayout) -> dict[str, Any]:
    """The KubeletConfiguration: kubeadm's and kind's defaults, plus what this machine needs."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": layout.node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "imageServiceEndpoint": f"unix://{layout.containerd_socket}",
        # No systemd here; the machine mounts cgroup v1 controllers beside a unified hierarchy, which kubelet 1.34
        # refuses unless told (failCgroupV1); swap is on some hosts.
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": layout.cgroup_root,
        "failCgroupV1": False,
        "failSwapOn": False,
        "clusterDNS": [layout.cluster_dns],
        "clusterDomain": layout.cluster_domain,
        "resolvConf": str(layout.resolv_conf),
        "podLogsDir": str(layout.pod_logs_dir),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(layout.ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        # kind's "disable disk resource management": images come from archives and cannot be pulled back.
        "imageGCHighThresholdPercent": 100,
        "evictionHard": {"nodefs.available": "0%", "nodefs.inodesFree": "0%", "imagefs.available": "0%"},
        "serializeImagePulls": False,
        "rotateCertificates": False,
    }


def kubelet_args(layout: NodeLayout) -> list[str]:
    return [
        f"--config={layout.kubelet_config_file}",
        f"--kubeconfig={layout.kubelet_kubeconfig}",
        f"--root-dir={layout.kubelet_dir}",
        f"--cert-dir={layout.kubelet_dir / 'pki'}",
        f"--hostname-override={layout.name}",
        f"--node-ip={layout.node_ip}",
    ]


def kube_proxy_config(layout: NodeLayout) -> dict[str, Any]:
    """kind's KubeProxyConfiguration: iptables mode, a 1 s minimum sync, conntrack sized by the host."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(layout.kube_proxy_kubeconfig)},
        "hostnameOverride": layout.name,
        "bindAddress": layout.node_ip,
        "clusterCIDR": layout.pod_cidr,
        "iptables": {"minSyncPeriod": "1s"},
        # kind: leave the host's nf_conntrack_max alone.
        "conntrack": {"maxPerCore": 0},
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
    }


def kube_proxy_args(layout: NodeLayout) -> list[str]:
    return [f"--config={layout.kube_proxy_config_file}"]
