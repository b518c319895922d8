"""Contour's own release manifest, unmodified, on the real node, and the seed's story told by the real kubelet.

The node (:mod:`tests.support.realnode`) runs CoreDNS, kube-network-policies, Contour's release manifest (certgen Job,
two Contour replicas, the Envoy DaemonSet with its hostPorts) from images made of the pinned binaries, and an
agnhost backend behind an HTTPProxy. The outage test then cuts Contour off from the API server with a NetworkPolicy
(the engine drops new connections, the per-packet reaper the open ones) and reads from the API server what the
kubelet did: the leader's exit, the liveness failures, the restarts, the CrashLoopBackOff waiting reason; while a
client keeps asking Envoy and every answer is a 200.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client

from chaoscontour_sandbox import binaries, deploy, dns, nodeimages, release, workloads
from chaoscontour_sandbox.kubeapi import KubeApi
from tests.support.realnode import RealNode, block_policy, processes, reap_once, start_engine, start_real_node
from tests.support.waiting import wait_for

IMAGES = ("pause", "agnhost", "kube-network-policies", "contour", "envoy", "coredns")
CONTOUR_NS = workloads.CONTOUR_NAMESPACE
BACKEND_NS = "demo"
FQDN = "echo.realnode.local"
READY_TIMEOUT_S = 240.0
# The outage lasts until a Contour pod shows CrashLoopBackOff; the seed's timings put that near a minute.
OUTAGE_LIMIT_S = 150.0


@dataclass
class ContourNode:
    node: RealNode
    api: KubeApi
    envoy_ip: str

    @property
    def url(self) -> str:
        return f"http://{self.envoy_ip}:8080/hostname"


def backend_objects() -> list[dict[str, Any]]:
    labels = {"app": "echo"}
    container = {
        "name": "echo",
        "image": nodeimages.AGNHOST_IMAGE,
        "imagePullPolicy": "Never",
        "args": ["netexec", "--http-port=8080"],
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/hostname", "port": 8080}, "periodSeconds": 1},
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": BACKEND_NS}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "echo", "namespace": BACKEND_NS},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "echo", "namespace": BACKEND_NS},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
        },
        {
            "apiVersion": "projectcontour.io/v1",
            "kind": "HTTPProxy",
            "metadata": {"name": "echo", "namespace": BACKEND_NS},
            "spec": {"virtualhost": {"fqdn": FQDN}, "routes": [{"services": [{"name": "echo", "port": 80}]}]},
        },
    ]


def answer(url: str) -> requests.Response | None:
    try:
        return requests.get(url, headers={"Host": FQDN}, timeout=2)
    except requests.RequestException:
        return None


@pytest.fixture(scope="module")
def contour_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContourNode]:
    started = start_real_node(tmp_path_factory, IMAGES)
    real_node = next(started)
    try:
        say = lambda message: print(f"\n{message}", flush=True)  # noqa: E731
        api = KubeApi(real_node.plane.kubeconfig)
        real_node.plane.install_contour_crds()
        start_engine(real_node)
        layout = real_node.layout
        deploy.apply_objects(api, dns.coredns_objects(layout.cluster_dns, layout.cluster_domain))
        wait_for(
            "CoreDNS Ready",
            READY_TIMEOUT_S,
            lambda: [p for p in deploy.pods(api, "kube-system", dns.COREDNS_SELECTOR) if deploy.pod_ready(p)],
        )
        deploy.deploy_contour(api, say, lambda: None, READY_TIMEOUT_S)
        deploy.apply_objects(api, backend_objects())
        envoy_ip = deploy.wait_serving(api, say, lambda: None, READY_TIMEOUT_S)
        served = ContourNode(real_node, api, envoy_ip)
        wait_for(
            f"{served.url} to answer 200", READY_TIMEOUT_S, lambda: (r := answer(served.url)) and r.status_code == 200
        )
        yield served
    finally:
        started.close()


def contour_pods(core: client.CoreV1Api) -> list[client.V1Pod]:
    return list(core.list_namespaced_pod(CONTOUR_NS, label_selector=workloads.CONTOUR_SELECTOR).items)


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("Uid:")).split()[1])


def test_the_release_manifest_runs_unmodified_and_envoy_routes_to_the_backend(contour_node: ContourNode) -> None:
    first = answer(contour_node.url)
    assert first is not None and first.status_code == 200 and first.text.startswith("echo-"), first
    # Envoy's hostPort 80 (the manifest's), published by the portmap plugin on the node's address.
    through_host_port = answer(f"http://{contour_node.node.layout.node_ip}/hostname")
    assert through_host_port is not None and through_host_port.status_code == 200


def test_contour_envoy_and_certgen_run_as_the_users_their_manifest_asks_for(contour_node: ContourNode) -> None:
    path = release.manifest_path(binaries.contour_module_dir())
    objects = {
        o["metadata"]["name"]: o for o in release.load(path.read_text()) if o["kind"] in ("Deployment", "DaemonSet")
    }
    wanted = {
        name: objects[name]["spec"]["template"]["spec"]["securityContext"]["runAsUser"] for name in ("contour", "envoy")
    }
    # Only the real node's containers: the session's node-agent sandbox may run its own Contour and Envoy, as root.
    root = contour_node.node.layout.cgroup_root + "/"

    def ours(pids: list[int]) -> list[int]:
        return [pid for pid in pids if root in Path(f"/proc/{pid}/cgroup").read_text()]

    contour, envoy = ours(processes("contour", "serve")), ours(processes("envoy", "-c"))
    assert contour and envoy, (contour, envoy)
    assert {uid_of(pid) for pid in contour} == {wanted["contour"]}
    assert {uid_of(pid) for pid in envoy} == {wanted["envoy"]}
    # certgen ran as a Job and is gone; its pod's status keeps the user it ran as in the spec the kubelet ran.
    job_pods = contour_node.node.core.list_namespaced_pod(CONTOUR_NS, label_selector="job-name").items
    assert job_pods and all(p.status.phase == "Succeeded" for p in job_pods)


def test_the_seed_story_on_the_real_kubelet(contour_node: ContourNode) -> None:
    node, core = contour_node.node, contour_node.node.core
    lease = client.CoordinationV1Api(core.api_client)
    leader = lease.read_namespaced_lease(workloads.LEASE_NAME, CONTOUR_NS).spec.holder_identity
    leader_pod = leader[:-37]  # holderIdentity is "<pod name>_<uuid>"
    endpoint = core.read_namespaced_endpoints("kubernetes", "default").subsets[0].addresses[0].ip
    policy = block_policy("contour-no-apiserver", "contour", endpoint)
    networking = client.NetworkingV1Api(core.api_client)
    began = time.monotonic()
    networking.create_namespaced_network_policy(CONTOUR_NS, policy)
    marks: dict[str, float] = {}
    samples: list[int] = []
    reaped_at: list[float] = []
    try:
        while time.monotonic() - began < OUTAGE_LIMIT_S:
            now = time.monotonic() - began
            # per-packet: the open connections go once the engine knows the policy (its informer, ~1 s).
            if len(reaped_at) < 2 and now > 3 + 3 * len(reaped_at):
                print(reap_once(node))
                reaped_at.append(now)
            response = answer(contour_node.url)
            samples.append(response.status_code if response is not None else 0)
            for pod in contour_pods(core):
                for status in pod.status.container_statuses or []:
                    if status.restart_count and f"restart {pod.metadata.name}" not in marks:
                        marks[f"restart {pod.metadata.name}"] = now
                    waiting = status.state.waiting
                    if waiting is not None and waiting.reason == "CrashLoopBackOff":
                        marks.setdefault("CrashLoopBackOff", now)
            if "CrashLoopBackOff" in marks and len([k for k in marks if k.startswith("restart")]) >= 2:
                break
            time.sleep(0.5)
    finally:
        networking.delete_namespaced_network_policy("contour-no-apiserver", CONTOUR_NS)
    print(f"outage: {marks}; {len(samples)} requests to Envoy, {samples.count(200)} answered 200")
    events = core.list_namespaced_event(CONTOUR_NS).items
    unhealthy = [e for e in events if e.reason == "Unhealthy" and "Liveness probe failed" in (e.message or "")]
    assert f"restart {leader_pod}" in marks, marks
    assert len([k for k in marks if k.startswith("restart")]) == 2, "both Contour replicas restart"
    assert "CrashLoopBackOff" in marks, marks
    assert unhealthy, "the kubelet's liveness probe failed against /healthz"
    assert samples and samples.count(200) == len(samples), f"Envoy kept routing: {samples}"

    def recovered() -> bool:
        ready = [
            p
            for p in contour_pods(core)
            if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]
        return len(ready) == 2

    wait_for("both Contour pods Ready again after the heal", 180, recovered)
