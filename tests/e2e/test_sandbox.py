"""The sandbox is a one-node cluster: route, leader, the kubelet's restarts, NetworkPolicy drops, clean teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from chaoscontour_sandbox import nodehost, nodeplane
from tests.support.sandbox import Sandbox, run_cli
from tests.support.waiting import wait_for

NS = "projectcontour"
LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/leader-elect"


def route(sandbox: Sandbox) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False
        url = sandbox.settings["ENVOY_URL"] + "hostname"  # agnhost netexec answers its pod's name
        return session.get(url, headers={"Host": sandbox.settings["ENVOY_HOST"]}, timeout=3)


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


def prometheus(sandbox: Sandbox, query: str) -> dict[str, float]:
    """An instant query to the sandbox's Prometheus: each series' value by its ``pod`` (or ``job``) label."""
    answer = requests.get(sandbox.settings["PROMETHEUS_URL"] + "/api/v1/query", params={"query": query}, timeout=5)
    answer.raise_for_status()
    result = answer.json()["data"]["result"]
    return {r["metric"].get("pod", r["metric"].get("job", "")): float(r["value"][1]) for r in result}


def test_the_sandbox_prometheus_counts_every_request_envoy_routed(sandbox: Sandbox) -> None:
    def every_pod_up() -> bool:
        pods = contour_pods(sandbox) + sandbox.get(f"/api/v1/namespaces/{NS}/pods", labelSelector="app=envoy")["items"]
        up = prometheus(sandbox, f'up{{namespace="{NS}"}}')  # the Gateway's pods (up --gateway) are scraped too
        return set(up) == {p["metadata"]["name"] for p in pods} and set(up.values()) == {1.0}

    wait_for("Prometheus to scrape every Contour and Envoy pod", 30, every_pod_up)
    routed = (
        f'sum(envoy_cluster_upstream_rq_xx{{namespace="{NS}", envoy_cluster_name="demo_echo_80", '
        'envoy_response_code_class="2"})'
    )
    wait_for("a scrape of Envoy's counters", 30, lambda: "" in prometheus(sandbox, routed))
    time.sleep(5)  # two scrapes at least: the value read is the newest
    before = prometheus(sandbox, routed)[""]
    for _ in range(37):
        assert route(sandbox).status_code == 200
    wait_for("Prometheus to count the 37 requests", 30, lambda: prometheus(sandbox, routed)[""] >= before + 37)
    time.sleep(5)
    assert prometheus(sandbox, routed)[""] == before + 37


def test_the_lease_holder_is_a_running_contour_pod_whose_hostname_is_its_name(sandbox: Sandbox) -> None:
    identity = holder(sandbox)
    pod_name = identity[:-37]
    assert identity[len(pod_name)] == "_"
    pods = {p["metadata"]["name"]: p for p in contour_pods(sandbox)}
    assert pod_name in pods
    assert "running" in container_status(pods[pod_name])["state"]
    pid = sandbox.container_pid(NS, pod_name, "contour")
    hostname = subprocess.run(["nsenter", "-t", str(pid), "-u", "hostname"], capture_output=True, text=True, check=True)
    assert hostname.stdout.strip() == pod_name


def test_a_killed_contour_process_is_restarted_by_the_kubelet(sandbox: Sandbox) -> None:
    steady(sandbox)
    leader = holder(sandbox)[:-37]
    follower = next(p for p in contour_pods(sandbox) if p["metadata"]["name"] != leader)
    name = follower["metadata"]["name"]
    before = container_status(follower)["restartCount"]
    os.kill(sandbox.container_pid(NS, name, "contour"), signal.SIGKILL)

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
    name = victim["metadata"]["name"]
    pid = sandbox.container_pid(NS, name, "contour")
    netns = os.readlink(f"/proc/{pid}/ns/net")
    assert netns != os.readlink("/proc/self/ns/net")
    sandbox.api.delete(f"/api/v1/namespaces/{NS}/pods/{name}")

    def netns_in_use() -> bool:
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and os.readlink(proc / "ns" / "net") == netns:
                    return True
            except OSError:
                continue
        return False

    def gone() -> bool:
        names = {p["metadata"]["name"] for p in contour_pods(sandbox)}
        return name not in names and not os.path.exists(f"/proc/{pid}") and not netns_in_use()

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
    assert apiserver_ip == nodeplane.layout_for(sandbox.dir).control_plane_ip
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
    pid = sandbox.container_pid(NS, leader, "contour")
    apiserver = sandbox.api.server.removeprefix("https://")
    host, port = apiserver.rsplit(":", 1)
    path = f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"
    # This pod may have lost the lease in an earlier test: judge only what it logs from now on.
    logged_before = len(sandbox.container_logs(NS, leader, "contour"))
    blocked_at = time.monotonic()
    sandbox.api.create(path, block_apiserver_policy("e2e-block-apiserver-conntrack", host))
    try:
        # From the leader's network namespace, as Contour's user (the node lets root's own packets pass, for the
        # kubelet's probes): bash's /dev/tcp opens a new connection; a dropped SYN leaves it hanging until timeout.
        user = ["--setuid", "65534", "--setgid", "65534"]
        connect = [
            "nsenter",
            "-t",
            str(pid),
            "-n",
            *user,
            "timeout",
            "3",
            "bash",
            "-c",
            f"echo > /dev/tcp/{host}/{port}",
        ]

        def new_connections_dropped() -> bool:
            return subprocess.run(connect, capture_output=True).returncode == 124  # timeout's "timed out"

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


def test_down_refuses_a_directory_that_holds_no_sandbox(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("not a sandbox")
    refused = run_cli("down", "--dir", str(tmp_path), timeout_s=60)
    assert refused.returncode == 1 and "holds no sandbox" in refused.stderr, refused.stdout + refused.stderr
    assert (tmp_path / "precious.txt").read_text() == "not a sandbox"


@pytest.mark.sandbox_teardown
def test_sandbox_down_leaves_nothing_behind(sandbox: Sandbox) -> None:
    layout = nodeplane.layout_for(sandbox.dir)
    pids = [sandbox.container_pid(NS, p["metadata"]["name"], "contour") for p in contour_pods(sandbox)]
    assert pids and any(nodehost.leftovers(layout).values())
    down = sandbox.cli("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert nodehost.leftovers(layout) == {k: [] for k in nodehost.leftovers(layout)}
    assert [pid for pid in pids if os.path.exists(f"/proc/{pid}")] == []
    for name in ("contour", "envoy", "etcd", "kube-apiserver", "kubelet", "containerd", "prometheus", "otelcol"):
        found = subprocess.run(["pgrep", "-af", name], capture_output=True, text=True).stdout
        assert str(sandbox.dir) not in found, found
    assert not sandbox.dir.exists()
    again = sandbox.cli("down")
    assert again.returncode == 0, again.stdout + again.stderr
