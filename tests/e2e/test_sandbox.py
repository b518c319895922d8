"""The sandbox behaves like a one-node cluster: route, leader, restarts, NetworkPolicy drops, clean teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
import requests

from chaoscontour.sandbox import network

from .conftest import Sandbox, wait_for

NS = "projectcontour"
LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/leader-elect"


def route(sandbox: Sandbox) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False
        return session.get(sandbox.settings["ENVOY_URL"], headers={"Host": sandbox.settings["ENVOY_HOST"]}, timeout=3)


def contour_pods(sandbox: Sandbox) -> list[dict[str, Any]]:
    return list(sandbox.get(f"/api/v1/namespaces/{NS}/pods", labelSelector="app=contour")["items"])


def container_status(pod: dict[str, Any]) -> dict[str, Any]:
    return dict(pod["status"]["containerStatuses"][0])


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def holder(sandbox: Sandbox) -> str:
    return str(sandbox.get(LEASE)["spec"].get("holderIdentity") or "")


def steady(sandbox: Sandbox) -> None:
    """Wait until both Contour pods are Ready and a leader holds the Lease (a test leaves the sandbox so)."""

    def ok() -> bool:
        pods = [p for p in contour_pods(sandbox) if not p["metadata"].get("deletionTimestamp")]
        return (
            len(pods) == 2
            and all(is_ready(p) for p in pods)
            and holder(sandbox)[:-37] in {p["metadata"]["name"] for p in pods}
        )

    wait_for("both Contour pods Ready and a leader", 120, ok)


def block_apiserver_policy(name: str, apiserver_ip: str) -> dict[str, Any]:
    """Egress from the Contour pods anywhere but the API server, as ``block_apiserver_egress`` builds it."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "podSelector": {"matchLabels": {"app": "contour"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [f"{apiserver_ip}/32"]}}]}],
        },
    }


def test_the_echo_route_answers_through_envoy(sandbox: Sandbox) -> None:
    response = route(sandbox)
    assert response.status_code == 200
    echo_pods = sandbox.get("/api/v1/namespaces/demo/pods", labelSelector="app=echo")["items"]
    assert response.text.strip() in {p["metadata"]["name"] for p in echo_pods}
    stats = requests.get(sandbox.settings["ENVOY_STATS_URL"], timeout=3).text
    assert "listener_manager.lds.control_plane.connected_state: 1" in stats


def test_the_lease_holder_is_a_running_contour_pod_whose_hostname_is_its_name(sandbox: Sandbox) -> None:
    identity = holder(sandbox)
    pod_name = identity[:-37]
    assert identity[len(pod_name)] == "_"
    pods = {p["metadata"]["name"]: p for p in contour_pods(sandbox)}
    assert pod_name in pods
    assert "running" in container_status(pods[pod_name])["state"]
    pid = sandbox.container_pids()[f"{NS}/{pod_name}/contour"]
    hostname = subprocess.run(["nsenter", "-t", str(pid), "-u", "hostname"], capture_output=True, text=True, check=True)
    assert hostname.stdout.strip() == pod_name


def test_a_killed_contour_process_is_restarted_by_the_agent(sandbox: Sandbox) -> None:
    steady(sandbox)
    leader = holder(sandbox)[:-37]
    follower = next(p for p in contour_pods(sandbox) if p["metadata"]["name"] != leader)
    name = follower["metadata"]["name"]
    before = container_status(follower)["restartCount"]
    os.kill(sandbox.container_pids()[f"{NS}/{name}/contour"], signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        pod = sandbox.get(f"/api/v1/namespaces/{NS}/pods/{name}")
        status = container_status(pod)
        return status if status["restartCount"] == before + 1 and "running" in status["state"] else None

    status = wait_for(f"{name} to be restarted", 30, restarted)
    terminated = status["lastState"]["terminated"]
    assert terminated["exitCode"] == 137
    assert terminated["reason"] == "Error"
    assert terminated["startedAt"] <= terminated["finishedAt"]
    steady(sandbox)


def test_a_deleted_pod_loses_its_processes_and_namespace_and_is_replaced(sandbox: Sandbox) -> None:
    steady(sandbox)
    leader = holder(sandbox)[:-37]
    victim = next(p for p in contour_pods(sandbox) if p["metadata"]["name"] != leader)
    name, uid = victim["metadata"]["name"], victim["metadata"]["uid"]
    pid = sandbox.container_pids()[f"{NS}/{name}/contour"]
    netns = f"{network.PREFIX}-{uid.replace('-', '')[:8]}"
    assert netns in network.list_netns()
    sandbox.api.delete(f"/api/v1/namespaces/{NS}/pods/{name}")

    def gone() -> bool:
        names = {p["metadata"]["name"] for p in contour_pods(sandbox)}
        return name not in names and not os.path.exists(f"/proc/{pid}") and netns not in network.list_netns()

    wait_for(f"{name}, its process and its namespace to be gone", 30, gone)
    steady(sandbox)
    assert name not in {p["metadata"]["name"] for p in contour_pods(sandbox)}


def test_a_policy_denying_egress_to_the_api_server_makes_the_leader_lose_its_lease(
    sandbox: Sandbox, healthy_contour: dict[str, str]
) -> None:
    # healthy_contour: fresh Contour pods, so no CrashLoopBackOff left by earlier tests restarts one mid-test.
    leader = holder(sandbox)[:-37]
    slices = sandbox.get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices")["items"]
    apiserver_ip = next(
        s["endpoints"][0]["addresses"][0]
        for s in slices
        if s["metadata"]["labels"].get("kubernetes.io/service-name") == "kubernetes"
    )
    assert apiserver_ip == network.CONTROL_PLANE_IP
    policy = block_apiserver_policy("e2e-block-apiserver", apiserver_ip)
    path = f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"
    # This pod may have lost the lease in an earlier test: judge only what it logs from now on.
    logged_before = len(sandbox.container_logs(NS, leader, "contour"))

    def logged_since_block() -> str:
        return sandbox.container_logs(NS, leader, "contour")[logged_before:]

    blocked_at = time.monotonic()
    sandbox.api.create(path, policy)
    try:
        wait_for("the leader to log 'leader election lost'", 45, lambda: "leader election lost" in logged_since_block())
        lost_after_s = time.monotonic() - blocked_at
    finally:
        sandbox.api.delete(f"{path}/e2e-block-apiserver")
    print(f"leader {leader} exited {lost_after_s:.1f} s after the policy was created")
    # renew deadline 10 s + retry period 2 s, plus the policy's propagation: well under the 15 s lease duration + 10
    assert 8 < lost_after_s < 30
    assert 'level=fatal msg="Contour server failed" error="leader election lost"' in logged_since_block()
    steady(sandbox)
    assert route(sandbox).status_code == 200


def test_in_conntrack_mode_the_open_api_connection_outlives_a_new_policy_but_new_ones_are_dropped(
    sandbox: Sandbox, healthy_contour: dict[str, str]
) -> None:
    # healthy_contour: fresh Contour pods, so no CrashLoopBackOff left by earlier tests restarts one mid-test.
    assert sandbox.cli("mode", "conntrack").returncode == 0
    leader = holder(sandbox)[:-37]
    pod = sandbox.get(f"/api/v1/namespaces/{NS}/pods/{leader}")
    netns = f"{network.PREFIX}-{pod['metadata']['uid'].replace('-', '')[:8]}"
    apiserver = sandbox.api.server.removeprefix("https://")
    host, port = apiserver.rsplit(":", 1)
    path = f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"
    # This pod may have lost the lease in an earlier test: judge only what it logs from now on.
    logged_before = len(sandbox.container_logs(NS, leader, "contour"))
    blocked_at = time.monotonic()
    sandbox.api.create(path, block_apiserver_policy("e2e-block-apiserver-conntrack", host))
    try:
        connect = f"import socket; socket.create_connection(({host!r}, {port}), timeout=2)"

        def new_connections_dropped() -> bool:
            done = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", connect], capture_output=True)
            return done.returncode != 0 and b"timed out" in done.stderr

        wait_for("a new connection from the leader's pod to be dropped", 10, new_connections_dropped)
        # Past the lease duration (15 s) and the point where per-packet mode loses the lease (about 16 s).
        time.sleep(max(0.0, 18 - (time.monotonic() - blocked_at)))
        assert holder(sandbox)[:-37] == leader
        renewed = sandbox.get(LEASE)["spec"]["renewTime"]
        time.sleep(2.5)  # the retry period is 2 s: the leader renews through its open connection
        assert sandbox.get(LEASE)["spec"]["renewTime"] != renewed
        assert "leader election lost" not in sandbox.container_logs(NS, leader, "contour")[logged_before:]
    finally:
        sandbox.api.delete(f"{path}/e2e-block-apiserver-conntrack")
        assert sandbox.cli("mode", "per-packet").returncode == 0
    steady(sandbox)


@pytest.mark.sandbox_teardown
def test_sandbox_down_leaves_nothing_behind(sandbox: Sandbox) -> None:
    pids = list(sandbox.container_pids().values())
    assert pids
    down = sandbox.cli("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert network.leftovers() == {"netns": [], "links": [], "iptables": [], "nat": [], "etc_netns": []}
    alive = [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
    assert alive == []
    for name in ("contour", "envoy", "etcd", "kube-apiserver", "kube-controller-manager"):
        found = subprocess.run(["pgrep", "-af", name], capture_output=True, text=True).stdout
        assert str(sandbox.dir) not in found, found
    assert not sandbox.dir.exists()
    again = sandbox.cli("down")
    assert again.returncode == 0, again.stdout + again.stderr
