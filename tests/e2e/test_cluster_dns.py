"""Cluster DNS in the sandbox, proved from inside pods: CoreDNS behind kube-dns, each pod's resolv.conf as the
kubelet writes it, and answers that follow the cluster's Services. The pods are Jobs' pods, which name no node:
kube-scheduler places them, and run Python from the game-day runner image (the one image of the node with it)."""

from __future__ import annotations

import contextlib
import json
import textwrap
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from chaoscontour_sandbox import dns, nodeplane
from chaoscontour_sandbox.kubeapi import ApiError
from chaoscontour_sandbox.runnerimage import gameday_reference
from tests.support.paths import ROOT
from tests.support.sandbox import Sandbox
from tests.support.waiting import wait_for

RUNNER_IMAGE = gameday_reference(ROOT / "deploy" / "cronjob.yaml")

# Run in the pod: print its resolv.conf and what each name resolves to, as one JSON line. With "wait", retry
# until every name resolves (or 60 s pass) and report how long that took.
LOOKUP = textwrap.dedent(
    """
    import json, socket, sys, time
    names, wait = sys.argv[1].split(","), sys.argv[2] == "wait"
    began = time.monotonic()
    while True:
        answers = {}
        for name in names:
            try:
                answers[name] = sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET)})
            except socket.gaierror as exc:
                answers[name] = "error: " + str(exc)
        if not wait or all(isinstance(a, list) for a in answers.values()) or time.monotonic() - began > 60:
            break
        time.sleep(0.2)
    resolv = open("/etc/resolv.conf").read()
    print(json.dumps({"resolv": resolv, "answers": answers, "after_s": round(time.monotonic() - began, 2)}))
    """
)


@pytest.fixture
def namespace(sandbox: Sandbox) -> Iterator[str]:
    name = f"dns-{uuid.uuid4().hex[:6]}"
    sandbox.api.create("/api/v1/namespaces", {"metadata": {"name": name}})
    yield name
    with contextlib.suppress(ApiError):
        sandbox.api.delete(f"/api/v1/namespaces/{name}")


def service(sandbox: Sandbox, namespace: str, name: str) -> str:
    body = {"metadata": {"name": name}, "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}}
    return str(sandbox.api.create(f"/api/v1/namespaces/{namespace}/services", body)["spec"]["clusterIP"])


def run_lookup(sandbox: Sandbox, namespace: str, job: str, names: list[str], wait: bool) -> tuple[dict[str, Any], Any]:
    """Run LOOKUP in a Job's pod; return its JSON output and the pod."""
    body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "lookup",
                            "image": RUNNER_IMAGE,
                            "imagePullPolicy": "Never",
                            "command": ["python3", "-c", LOOKUP, ",".join(names), "wait" if wait else "once"],
                        }
                    ],
                }
            },
        },
    }
    sandbox.api.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", body)

    def finished() -> dict[str, Any] | None:
        status = sandbox.api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{job}").get("status", {})
        return status if status.get("succeeded") or status.get("failed") else None

    status = wait_for(f"Job {namespace}/{job} to finish", 90, finished)
    pods = sandbox.api.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=f"job-name={job}")["items"]
    assert len(pods) == 1, pods
    pod = pods[0]
    logs = sandbox.container_logs(namespace, pod["metadata"]["name"], "lookup")
    assert status.get("succeeded") == 1, f"the lookup Job failed: {status}\n{logs}"
    lines = [line for line in logs.splitlines() if line.startswith("{")]
    assert lines, f"no output from the lookup pod:\n{logs}"
    return json.loads(lines[-1]), pod


def test_a_pod_resolves_the_api_server_and_its_namespaces_services_by_short_name_through_coredns(
    sandbox: Sandbox, namespace: str, figures: dict[str, Any]
) -> None:
    web_ip = service(sandbox, namespace, "web")
    began = time.monotonic()
    out, pod = run_lookup(sandbox, namespace, "lookup", ["kubernetes.default", "web", "late"], wait=False)
    # kube-scheduler placed the Job's pod (it named no node), on the one node.
    assert pod["spec"]["nodeName"] == "sandbox"
    assert out["resolv"] == (
        f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local\n"
        f"nameserver {nodeplane.layout_for(sandbox.dir).cluster_dns}\noptions ndots:5\n"
    )
    assert out["answers"]["kubernetes.default"] == [
        sandbox.get("/api/v1/namespaces/default/services/kubernetes")["spec"]["clusterIP"]
    ]
    assert out["answers"]["web"] == [web_ip]
    # No such Service yet: the name does not resolve (and fails at once, not after resolver timeouts).
    assert str(out["answers"]["late"]).startswith("error:"), out
    figures["cluster DNS: a lookup Job from creation to completion (s)"] = round(time.monotonic() - began, 1)

    # CoreDNS watches Services: a new one's short name resolves to its ClusterIP at once...
    fresh_ip = service(sandbox, namespace, "fresh")
    fresh, _ = run_lookup(sandbox, namespace, "lookup-fresh", ["fresh"], wait=True)
    assert fresh["answers"]["fresh"] == [fresh_ip], fresh
    assert fresh["after_s"] < 5, fresh
    # ...but a name that was asked for before its Service existed keeps its cached NXDOMAIN for up to 30 s, as in
    # a kubeadm cluster: `cache 30`, and the `kubernetes` plugin's `ttl 30` is its SOA minimum (negative TTL).
    late_ip = service(sandbox, namespace, "late")
    later, _ = run_lookup(sandbox, namespace, "lookup-late", ["late"], wait=True)
    assert later["answers"]["late"] == [late_ip], later
    figures["cluster DNS: a new Service resolves in a pod after (s)"] = fresh["after_s"]
    figures["cluster DNS: a name looked up before its Service existed resolves after (s)"] = later["after_s"]


def test_coredns_runs_as_a_cluster_runs_it(sandbox: Sandbox) -> None:
    service_obj = sandbox.api.get("/api/v1/namespaces/kube-system/services/kube-dns")
    assert service_obj["spec"]["clusterIP"] == nodeplane.layout_for(sandbox.dir).cluster_dns
    pods = sandbox.api.get("/api/v1/namespaces/kube-system/pods", labelSelector=dns.COREDNS_SELECTOR)["items"]
    assert [p["status"]["phase"] for p in pods] == ["Running"]
    slices = sandbox.api.get(
        "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices",
        labelSelector="kubernetes.io/service-name=kube-dns",
    )["items"]
    addresses = {a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]}
    assert addresses == {pods[0]["status"]["podIP"]}
