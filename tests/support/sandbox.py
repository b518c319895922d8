"""The e2e suite's sandbox as its tests use it: the running sandbox, its Contour, and what the extension left in it.

The fixtures that bring the sandbox up and down are in ``tests/e2e/conftest.py``; these are the objects and checks
they and the tests share.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoslib.exceptions import ActivityFailed
from kubernetes import client

from chaoscontour.activities.envoy import envoy_serving, envoy_xds_connected
from chaoscontour.activities.leader import lease_holder
from chaoscontour_sandbox import nodeplane
from chaoscontour_sandbox.kubeapi import KubeApi
from tests.support.waiting import wait_for

__all__ = [
    "HEALTHY_TIMEOUT_S",
    "NS",
    "OURS",
    "Sandbox",
    "contour_healthy",
    "contour_pods",
    "contour_restarted",
    "leftovers",
    "run_cli",
    "strip_cri",
    "wait_until",
    "xds_stream_up",
]

NS = "projectcontour"
OURS = "app.kubernetes.io/managed-by=chaoscontour"
HEALTHY_TIMEOUT_S = 240


@dataclass
class Sandbox:
    """A running sandbox: its dir, the settings ``up`` wrote, and an admin API client."""

    dir: Path
    settings: dict[str, str]
    api: KubeApi

    def cli(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--dir", str(self.dir), timeout_s=timeout_s)

    def container_pid(self, namespace: str, pod: str, container: str) -> int:
        """The host PID of ``container``'s running process in ``pod``, as the node's containerd reports it."""
        status = self.get(f"/api/v1/namespaces/{namespace}/pods/{pod}")["status"]
        ids = [c.get("containerID", "") for c in status.get("containerStatuses") or [] if c["name"] == container]
        if not ids or not ids[0].startswith("containerd://"):
            raise AssertionError(f"{namespace}/{pod} has no running container {container}: {status}")
        socket = nodeplane.layout_for(self.dir).containerd_socket
        argv = ["ctr", "--address", str(socket), "--namespace", "k8s.io", "tasks", "list"]
        tasks = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout.splitlines()
        wanted = ids[0].removeprefix("containerd://")
        return next(int(line.split()[1]) for line in tasks if line.split()[:1] == [wanted])

    def container_logs(self, namespace: str, pod: str, container: str) -> str:
        """Every log line of ``container`` in ``pod`` the kubelet kept (its restarts, oldest first), as one text,
        without the CRI prefix (time, stream, tag) the kubelet writes before each line."""
        files = self.container_log_files(namespace, pod, container)
        return strip_cri("".join(f.read_text(errors="replace") for f in files))

    def container_log_files(self, namespace: str, pod: str, container: str) -> list[Path]:
        """The kubelet's log files of ``container`` in ``pod``, oldest first. The kubelet deletes the files of all
        but the newest dead instance: read them during the run to keep the ones a restart loop discards."""
        root = nodeplane.layout_for(self.dir).pod_logs_dir
        return sorted(
            root.glob(f"{namespace}_{pod}_*/{container}/*.log"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0
        )

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self.api.get(path, **params)


def strip_cri(text: str) -> str:
    """The log lines without the CRI prefix (time, stream, tag) the kubelet writes before each."""
    return "".join(line.split(" ", 3)[3] + "\n" for line in text.splitlines() if line.count(" ") >= 3)


def run_cli(*args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chaoscontour_sandbox.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def contour_pods(k: Any, namespace: str = NS, selector: str = "app=contour") -> list[client.V1Pod]:
    return [
        p
        for p in k.core.list_namespaced_pod(namespace, label_selector=selector).items
        if not p.metadata.deletion_timestamp
    ]


def leftovers(k: Any) -> list[str]:
    """Every object of ours still in the cluster."""
    policies = k.networking.list_network_policy_for_all_namespaces(label_selector=OURS).items
    jobs = k.batch.list_job_for_all_namespaces(label_selector=OURS).items
    return [f"NetworkPolicy {p.metadata.name}" for p in policies] + [f"Job {j.metadata.name}" for j in jobs]


def wait_until(what: str, check: Any, timeout_s: float, every_s: float = 0.5) -> float:
    """:func:`wait_for`, returning the seconds it took instead of ``check``'s value."""
    started = time.monotonic()
    wait_for(what, timeout_s, check, every_s)
    return time.monotonic() - started


def contour_healthy(k: Any, settings: dict[str, str]) -> bool:
    """Two Ready Contour pods, a live leader, Envoy serving and its xDS stream up, for the layout of ``settings``
    (the release manifest's or a Gateway's)."""
    namespace = settings.get("CONTOUR_NAMESPACE", NS)
    pods = contour_pods(k, namespace, settings.get("CONTOUR_SELECTOR", "app=contour"))
    ready = [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
    if len(pods) != 2 or len(ready) != 2:
        return False
    if not lease_holder(namespace=namespace, lease_name=settings.get("CONTOUR_LEASE", "leader-elect"))["held"]:
        return False
    return envoy_serves_in_a_row(settings) and xds_stream_up(settings["ENVOY_STATS_URL"])


SERVED_IN_A_ROW = 10


def envoy_serves_in_a_row(settings: dict[str, str], times: int = SERVED_IN_A_ROW) -> bool:
    """Whether Envoy answers ``times`` requests in a row, so every endpoint it balances over (the backend has two)
    answers. One answer is not enough: after a test that killed a backend pod while Contour was cut off, Envoy may
    still hold the dead pod's address next to a live one until its new Contour's endpoints arrive, and one request
    in two then times out (seen in CI: the fixture got its 200, the experiment's steady-state probe a timeout 1 s
    later)."""
    return all(envoy_serving(settings["ENVOY_URL"], host=settings["ENVOY_HOST"], timeout_s=2.0) for _ in range(times))


def xds_stream_up(stats_url: str) -> bool:
    """Whether Envoy's xDS stream to Contour is up, as the product's probe judges it. After Contour's pods were
    replaced, Envoy dials again on its own retry back-off (through the `contour` Service's name in the release
    manifest's bootstrap), so its stream may still be down while Contour is Ready and Envoy keeps serving its last
    configuration; and a connected_state gauge reads 1 while Envoy still dials a pod that is gone (seen here: the
    fixture went on, and the xDS black hole's block found the stream down when that dial timed out 5 s later), so
    the probe also requires no stream waiting for a connection on Contour's xDS cluster."""
    try:
        result = envoy_xds_connected(stats_url)
    except ActivityFailed:
        return False
    return result["connected"] is True and result["stream"] is not None


def contour_restarted(k: Any) -> bool:
    return any(cs.restart_count for p in contour_pods(k) for cs in p.status.container_statuses or [])
