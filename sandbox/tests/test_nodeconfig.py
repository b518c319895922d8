"""The real node's configuration files, read back by the parsers the real programs' formats have."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from chaoscontour_sandbox import nodeconfig
from chaoscontour_sandbox.nodeconfig import NodeLayout


def layout(directory: Path = Path("/tmp/ccnode-test")) -> NodeLayout:
    return NodeLayout(
        directory=directory,
        name="sandbox",
        node_network="10.216.0.0/24",
        pod_cidr="10.217.0.0/24",
        service_cidr="10.218.0.0/24",
    )


def test_addresses_derive_from_the_node_network_and_the_service_cidr() -> None:
    node = layout()
    assert (node.node_ip, node.control_plane_ip, node.cluster_dns) == ("10.216.0.1", "10.216.0.2", "10.218.0.10")


@pytest.mark.parametrize(
    ("pods", "services", "nodes"),
    [
        ("10.217.0.0/24", "10.217.0.128/25", "10.216.0.0/24"),
        ("10.217.0.0/16", "10.218.0.0/24", "10.217.5.0/24"),
        ("10.217.0.0/24", "10.216.0.0/23", "10.216.0.0/24"),
    ],
)
def test_overlapping_networks_are_refused(pods: str, services: str, nodes: str) -> None:
    with pytest.raises(ValueError, match="must not overlap"):
        NodeLayout(Path("/tmp/x"), "n", node_network=nodes, pod_cidr=pods, service_cidr=services)


def test_a_socket_path_too_long_for_unix_sockets_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="over the 107 a Unix socket allows"):
        layout(Path("/tmp") / ("d" * 100))


def test_containerd_uses_its_own_root_state_and_sockets_under_the_node_directory() -> None:
    node = layout()
    config = tomllib.loads(nodeconfig.containerd_config(node))
    assert config["version"] == 2
    for path in (config["root"], config["state"], config["grpc"]["address"], config["ttrpc"]["address"]):
        assert path.startswith(str(node.directory) + "/"), path
    assert config["grpc"]["address"] != "/run/containerd/containerd.sock"


def test_containerd_cri_settings_this_machine_needs() -> None:
    cri = tomllib.loads(nodeconfig.containerd_config(layout()))["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == nodeconfig.SANDBOX_IMAGE
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"]["SystemdCgroup"] is False  # agrees with the kubelet's cgroupfs driver
    assert cri["cni"] == {"bin_dir": "/usr/lib/cni", "conf_dir": str(layout().cni_conf_dir)}


def test_toml_quotes_dotted_keys_and_keeps_types() -> None:
    text = nodeconfig.toml({"a": 1, "plugins": {"io.x.y": {"flag": True, "name": 'q"uote', "list": ["u", "v"]}}})
    assert tomllib.loads(text) == {"a": 1, "plugins": {"io.x.y": {"flag": True, "name": 'q"uote', "list": ["u", "v"]}}}
    with pytest.raises(TypeError):
        nodeconfig.toml({"x": 1.5})


def test_cni_is_kindnets_ptp_host_local_portmap_without_cni_masquerade() -> None:
    node = layout()
    conf = json.loads(nodeconfig.cni_conflist(node))
    ptp, portmap = conf["plugins"]
    assert (ptp["type"], ptp["ipMasq"], ptp["ipam"]["type"]) == ("ptp", False, "host-local")
    assert ptp["ipam"]["ranges"] == [[{"subnet": "10.217.0.0/24"}]]
    assert ptp["ipam"]["dataDir"].startswith(str(node.directory))
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}


def test_masquerade_spares_pod_and_node_traffic_and_hooks_only_pod_sources() -> None:
    node = layout()
    rules = nodeconfig.masquerade_rules(node)
    chain = node.masquerade_chain
    assert rules[0] == ["-N", chain]
    returns = [r[r.index("-d") + 1] for r in rules if r[-1] == "RETURN"]
    assert returns == ["10.217.0.0/24", "10.216.0.0/24"]
    assert rules[-2] == ["-A", chain, "-j", "MASQUERADE"]
    hook = rules[-1]
    assert hook[:4] == ["-A", "POSTROUTING", "-s", "10.217.0.0/24"] and hook[-1] == chain


def test_kubelet_config_for_this_machine_and_no_host_defaults() -> None:
    node = layout()
    config = nodeconfig.kubelet_config(node)
    assert (config["cgroupDriver"], config["failCgroupV1"], config["failSwapOn"]) == ("cgroupfs", False, False)
    assert config["containerRuntimeEndpoint"] == f"unix://{node.containerd_socket}"
    assert config["cgroupRoot"] == "/ccnode"
    assert config["clusterDNS"] == ["10.218.0.10"]
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authorization"]["mode"] == "Webhook"
    assert config["podLogsDir"].startswith(str(node.directory))
    args = nodeconfig.kubelet_args(node)
    assert f"--root-dir={node.kubelet_dir}" in args and "--hostname-override=sandbox" in args
    assert "--node-ip=10.216.0.1" in args


def test_kube_proxy_is_iptables_mode_with_kinds_settings() -> None:
    config = nodeconfig.kube_proxy_config(layout())
    assert (config["mode"], config["clusterCIDR"], config["hostnameOverride"]) == (
        "iptables",
        "10.217.0.0/24",
        "sandbox",
    )
    assert config["iptables"]["minSyncPeriod"] == "1s"
    assert config["conntrack"]["maxPerCore"] == 0


def test_the_demo_backend_is_agnhost_placed_by_the_scheduler_as_a_non_root_user() -> None:
    from chaoscontour_sandbox import nodeimages, workloads

    objects = {o["kind"]: o for o in workloads.demo_objects()}
    spec = objects["Deployment"]["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert "nodeName" not in spec
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 65534
    assert container["image"] == nodeimages.AGNHOST_IMAGE and container["imagePullPolicy"] == "Never"
    assert container["args"] == ["netexec", "--http-port=8080"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"  # agnhost netexec answers it
    route = objects["HTTPProxy"]["spec"]["routes"][0]["services"][0]
    assert (route["name"], route["port"]) == (objects["Service"]["metadata"]["name"], 80)
