"""The sandbox's real node: Kubernetes' own kubelet on containerd and runc, CNI ptp/portmap, kube-proxy.

One control plane (in its own network namespace, as the sandbox runs it) and one real node for the module
(:mod:`tests.support.realnode`). Everything is checked from outside the node's code: the API server's view of the
Node and pods, the container processes in /proc, HTTP through the host's iptables (portmap's hostPort,
kube-proxy's ClusterIP), and what is left on the host after ``stop``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client

from chaoscontour_sandbox import binaries, nodehost, nodeimages
from chaoscontour_sandbox.nodeconfig import NodeLayout
from tests.support.realnode import (
    NS,
    RealNode,
    agnhost_pod,
    block_policy,
    processes,
    reap_once,
    running_pod,
    start_engine,
    start_real_node,
)
from tests.support.waiting import wait_for

HOST_PORT = 18080
AGNHOST_PORT = 8081


@pytest.fixture(scope="module")
def real_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    yield from start_real_node(tmp_path_factory, ("pause", "agnhost", "kube-network-policies"))


def test_the_node_registers_ready_with_the_pinned_kubelet_on_containerd(real_node: RealNode) -> None:
    node = real_node.core.read_node(real_node.layout.name)
    info = node.status.node_info
    assert info.kubelet_version == f"v{binaries.COMPONENTS['kubernetes'].version}"
    assert info.container_runtime_version.startswith("containerd://1.")
    assert {a.type: a.address for a in node.status.addresses}["InternalIP"] == real_node.layout.node_ip
    assert nodeimages.PAUSE_IMAGE in real_node.node.images()


def test_a_container_runs_as_the_uid_and_gid_its_pod_asks_for_and_serves_its_host_port(real_node: RealNode) -> None:
    core = real_node.core
    args = ["netexec", f"--http-port={AGNHOST_PORT}"]
    body = agnhost_pod(
        "as-nobody",
        args,
        securityContext={"runAsUser": 65534, "runAsGroup": 65534, "runAsNonRoot": True},
        container={"ports": [{"containerPort": AGNHOST_PORT, "hostPort": HOST_PORT}]},
    )
    core.create_namespaced_pod(NS, body)
    pod = running_pod(core, "as-nobody")
    (pid,) = processes("agnhost", f"--http-port={AGNHOST_PORT}")
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    uid = next(line for line in status if line.startswith("Uid:")).split()[1:]
    gid = next(line for line in status if line.startswith("Gid:")).split()[1:]
    assert uid == ["65534"] * 4 and gid == ["65534"] * 4
    # The pod's own address, from the pod CIDR by host-local, reachable from the node over its ptp veth.
    assert pod.status.pod_ip.startswith("10.217.0.")
    assert requests.get(f"http://{pod.status.pod_ip}:{AGNHOST_PORT}/hostname", timeout=5).text == "as-nobody"
    # hostPort through the portmap plugin's DNAT on the node's address.
    answer = requests.get(f"http://{real_node.layout.node_ip}:{HOST_PORT}/hostname", timeout=5)
    assert answer.text == "as-nobody"


def test_kube_proxy_routes_a_cluster_ip_to_the_pod(real_node: RealNode) -> None:
    core = real_node.core
    service = {
        "metadata": {"name": "as-nobody"},
        "spec": {"selector": {"app": "as-nobody"}, "ports": [{"port": 80, "targetPort": AGNHOST_PORT}]},
    }
    cluster_ip = core.create_namespaced_service(NS, service).spec.cluster_ip
    assert cluster_ip.startswith("10.218.0.")

    def answers() -> str | None:
        try:
            return requests.get(f"http://{cluster_ip}/hostname", timeout=2).text
        except requests.RequestException:
            return None

    assert wait_for(f"http://{cluster_ip}/hostname through kube-proxy", 60, answers) == "as-nobody"


def test_a_pod_reaches_the_api_server_through_the_kubernetes_service(real_node: RealNode) -> None:
    core = real_node.core
    kubernetes_ip = core.read_namespaced_service("kubernetes", "default").spec.cluster_ip
    body = agnhost_pod("dial-apiserver", ["connect", f"{kubernetes_ip}:443", "--timeout=5s"], restartPolicy="Never")
    core.create_namespaced_pod(NS, body)

    def finished() -> str | None:
        phase = core.read_namespaced_pod("dial-apiserver", NS).status.phase
        return phase if phase in ("Succeeded", "Failed") else None

    assert wait_for("the dialling pod to finish", 90, finished) == "Succeeded"


def test_a_failing_liveness_probe_makes_the_kubelet_restart_the_container(real_node: RealNode) -> None:
    core = real_node.core
    probe = {"httpGet": {"path": "/", "port": 9999}, "periodSeconds": 1, "failureThreshold": 1}
    core.create_namespaced_pod(NS, agnhost_pod("unlive", ["pause"], container={"livenessProbe": probe}))

    def restarted() -> int | None:
        statuses = core.read_namespaced_pod("unlive", NS).status.container_statuses or []
        return statuses[0].restart_count if statuses and statuses[0].restart_count >= 1 else None

    assert wait_for("a restart by the kubelet", 90, restarted) >= 1
    events = core.list_namespaced_event(NS, field_selector="involvedObject.name=unlive").items
    assert any(e.reason == "Unhealthy" and "Liveness probe failed" in (e.message or "") for e in events)


# --- NetworkPolicy: the real engine (new connections) and the reaper (open ones) ------------------------------------


def dial_from(pod_ip: str, target_ip: str) -> dict[str, Any]:
    """Ask the agnhost netexec at ``pod_ip`` to open a new connection to ``target_ip`` and fetch its hostname."""
    query = f"request=hostname&protocol=http&host={target_ip}&port={AGNHOST_PORT}&tries=1"
    answer = requests.get(f"http://{pod_ip}:{AGNHOST_PORT}/dial?{query}", timeout=30)
    return dict(answer.json())


def test_the_engine_runs_on_the_node_and_denies_new_connections_a_policy_forbids(real_node: RealNode) -> None:
    start_engine(real_node)
    core = real_node.core
    pods = {}
    for name in ("np-server", "np-blocked", "np-free"):
        core.create_namespaced_pod(NS, agnhost_pod(name, ["netexec", f"--http-port={AGNHOST_PORT}"]))
    for name in ("np-server", "np-blocked", "np-free"):
        pods[name] = running_pod(core, name).status.pod_ip
    networking = client.NetworkingV1Api(core.api_client)
    networking.create_namespaced_network_policy(NS, block_policy("no-server", "np-blocked", pods["np-server"]))
    # The engine learns pods and policies through its informers; a connection it judges before that is let through.
    time.sleep(3)
    blocked = dial_from(pods["np-blocked"], pods["np-server"])
    free = dial_from(pods["np-free"], pods["np-server"])
    assert free["responses"] == ["np-server"], free
    assert not blocked.get("responses") and blocked.get("errors"), blocked


def healthz_calls(core: client.CoreV1Api, pod: str) -> tuple[int, int]:
    log = core.read_namespaced_pod_log(pod, NS)
    return log.count("calling /healthz"), log.count("status=failed")


@pytest.mark.parametrize("mode", ["conntrack", "per-packet"])
def test_an_open_client_go_connection_under_a_new_policy(real_node: RealNode, mode: str) -> None:
    """conntrack: the engine as it is lets the open connection live on. per-packet: the reaper deletes its
    conntrack entry and the engine drops its next packet, so the client's calls stop getting answers."""
    core = real_node.core
    name = f"watcher-{mode}"
    core.create_namespaced_pod(NS, agnhost_pod(name, ["inclusterclient", "--poll-interval=1"]))
    running_pod(core, name)
    wait_for(f"{name} answered three times", 30, lambda: healthz_calls(core, name)[0] >= 3)
    endpoint = core.read_namespaced_endpoints("kubernetes", "default").subsets[0].addresses[0].ip
    networking = client.NetworkingV1Api(core.api_client)
    networking.create_namespaced_network_policy(NS, block_policy(f"block-{mode}", name, endpoint))
    time.sleep(2)
    if mode == "per-packet":
        print(reap_once(real_node))
    calls, failures = healthz_calls(core, name)
    time.sleep(8)
    later_calls, later_failures = healthz_calls(core, name)
    if mode == "conntrack":
        assert later_calls - calls >= 5 and later_failures == failures, (calls, later_calls, failures, later_failures)
    else:
        # One call hangs on the dead connection (client-go notices after its HTTP/2 ping timeout, 30 s + 15 s).
        assert later_calls - calls <= 1, (calls, later_calls)


def test_stop_leaves_nothing_of_the_node_on_the_host(real_node: RealNode) -> None:
    pods = real_node.core.list_namespaced_pod(NS).items
    assert pods, "the earlier tests' pods should still run, so that stop has something to remove"
    before = nodehost.leftovers(real_node.layout)
    assert before["netns"] and before["iptables"] and before["cgroups"], before
    real_node.node.stop()
    real_node.plane.stop()
    left = nodehost.leftovers(real_node.layout)
    left["netns"] = [name for name in left["netns"] if name != f"{real_node.layout.prefix}-cp"]
    left["links"] = [name for name in left["links"] if not name.startswith(real_node.layout.prefix)]
    assert not any(left.values()), left
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and _is_node_program(p, real_node.layout)]


def _is_node_program(proc: Path, layout: NodeLayout) -> bool:
    try:
        argv = proc.joinpath("cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return str(layout.directory) in argv
