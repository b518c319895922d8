"""``chaoscontour sandbox up --node real``: the API-server outage experiment on a real node, through the real CLIs.

The sandbox's node here is Kubernetes' own kubelet on containerd, kube-proxy and kube-network-policies (with the
per-packet reaper), running Contour's release manifest unmodified. The module brings it up with the CLI a user runs,
runs ``experiments/apiserver-outage.json`` with ``chaos run`` on the settings ``up`` wrote, judges the journal with
``chaoscontour gate``, and takes the sandbox down, checking that nothing of the node is left on the host. It uses its
own names and networks (``ccnode*``), so the session's node-agent sandbox may stay up beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaoscontour.sandbox import deploy, network, nodehost, nodeplane
from chaoscontour.sandbox.kubeapi import KubeApi

from .chaosrun import CHURN_WINDOWS, EXPERIMENTS, ChaosRun, activity, as_vars, keep_journal
from .conftest import HEALTHY_TIMEOUT_S, Sandbox, envoy_xds_connected, run_cli, unavailable, wait_until
from .test_experiments import assert_steady_before_and_after
from .test_xds_blackhole import VARIABLES as XDS_VARIABLES

UP_TIMEOUT_S = 900  # a cold machine builds the node's binaries first
# The other three demos, with the windows their node-agent e2e tests use, and the gate's verdict by design.
OTHER_DEMOS = {
    "leader-kill": ({"sampling_s": "30"}, 0),
    "xds-blackhole": (XDS_VARIABLES, 0),
    "endpoint-churn-during-outage": (
        {**CHURN_WINDOWS, "backend_port": "80", "dead_man_s": "20", "fault_expiry_s": "300"},
        1,  # the demo route has no retries or health checks: a killed backend pod fails requests until the heal
    ),
}


@pytest.fixture(scope="module")
def real_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    if os.geteuid() != 0:
        unavailable("the real node needs root (containerd, cgroups, network namespaces, iptables)")
    missing = nodehost.missing_tools()
    if missing:
        unavailable(f"the real node needs Debian's {', '.join(missing)}")
    directory = tmp_path_factory.mktemp("realsandbox")
    up = run_cli("up", "--node", "real", "--dir", str(directory), timeout_s=UP_TIMEOUT_S)
    print(up.stdout, up.stderr)
    try:
        assert up.returncode == 0, f"sandbox up --node real failed (exit {up.returncode}):\n{up.stdout}\n{up.stderr}"
        yield directory, json.loads((directory / "settings.json").read_text())
    finally:
        down = run_cli("down", "--dir", str(directory), "--keep-logs", timeout_s=180)
        print(down.stdout, down.stderr)


def test_the_apiserver_outage_experiment_passes_the_gate_on_the_real_node(
    real_sandbox: tuple[Path, dict[str, str]], tmp_path: Path, figures: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, settings = real_sandbox
    assert settings["SANDBOX_NETPOL_MODE"] == "per-packet"
    experiment = EXPERIMENTS / "apiserver-outage.json"
    overrides = {"fault_window_s": "40", "sampling_s": "75", "fault_expiry_s": "240", "recovery_timeout_s": "150"}
    for key, value in settings.items():
        monkeypatch.setenv(key, value)  # what `set -a; . settings.env` does, read by as_vars as by chaos
    run = ChaosRun(experiment, tmp_path, settings, name="apiserver-outage-real-node")
    run.variables = as_vars(experiment, overrides)
    journal = run.run(timeout_s=420)
    keep_journal(run)
    assert_steady_before_and_after(journal)
    verification = activity(journal, "block-apiserver-egress")["output"]["verification"]
    assert verification["confirmed"] is True, verification
    restarts = activity(journal, "contour-restarts-during-the-fault")["output"]
    # The real kubelet restarted every replica: the leader on "leader election lost", the others on /healthz.
    assert {t["pod"] for t in restarts["terminations"]} == {p["name"] for p in restarts["pods"]}, restarts
    availability = activity(journal, "envoy-availability-across-the-fault")["output"]
    # The node agent's run of the same experiment holds the same bounds: at most a sampling interval lost.
    assert availability["availability"] >= 0.999 and availability["longest_outage_s"] <= 0.5, availability
    verdict = gate(run.journal_path)
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    figures["apiserver-outage-real-node"] = {
        "requests": availability["requests"],
        "availability": availability["availability"],
        "p50_ms": availability["latency_ms"]["p50"],
        "p99_ms": availability["latency_ms"]["p99"],
        "total_restarts_during_fault": restarts["total_restarts"],
        "verification_confirmed_after_s": verification["confirmed_after_s"],
    }


def gate(journal: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "chaoscontour.cli", "gate", str(journal)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def contour_healthy(settings: dict[str, str]) -> bool:
    """Both Contour replicas Ready and Envoy's xDS streams connected: the state every experiment starts from."""
    api = KubeApi(Path(settings["KUBECONFIG"]))
    ready = [
        p for p in deploy.pods(api, settings["CONTOUR_NAMESPACE"], settings["CONTOUR_SELECTOR"]) if deploy.pod_ready(p)
    ]
    return len(ready) == 2 and envoy_xds_connected(settings["ENVOY_STATS_URL"])


@pytest.mark.parametrize("name", list(OTHER_DEMOS))
def test_the_other_demos_get_their_verdicts_on_the_real_node(
    real_sandbox: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    _, settings = real_sandbox
    wait_until("Contour healthy before the run", lambda: contour_healthy(settings), HEALTHY_TIMEOUT_S)
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    overrides, expected = OTHER_DEMOS[name]
    experiment = EXPERIMENTS / f"{name}.json"
    run = ChaosRun(experiment, tmp_path, settings, name=f"{name}-real-node", variables=as_vars(experiment, overrides))
    journal = run.run(timeout_s=420)
    assert journal["status"] == "completed", journal["status"]
    assert journal["steady_states"]["before"]["steady_state_met"] is True
    verdict = gate(run.journal_path)
    assert verdict.returncode == expected, verdict.stdout + verdict.stderr


def test_down_leaves_nothing_of_the_real_node_on_the_host_and_the_other_sandbox_running(
    real_sandbox: tuple[Path, dict[str, str]], sandbox: Sandbox
) -> None:
    """The node-agent sandbox of the session runs beside it; a second `down` of the real node's (now empty) dir must
    not take that one's network (in CI it once did: the second `down` fell through to the node agent's `down`,
    which tore down the host's one sandbox network and with it the other sandbox's control plane)."""
    directory, _ = real_sandbox
    layout = nodeplane.layout_for(directory)
    assert any(nodehost.leftovers(layout).values()), "the node should be up before down"
    down = run_cli("down", "--dir", str(directory), timeout_s=180)
    assert down.returncode == 0, down.stdout + down.stderr
    assert nodehost.leftovers(layout) == {k: [] for k in nodehost.leftovers(layout)}
    assert not directory.exists(), sorted(p.name for p in directory.iterdir())
    again = run_cli("down", "--dir", str(directory), timeout_s=60)
    assert again.returncode == 0, "down twice is fine"
    assert network.CONTROL_PLANE_NETNS in network.list_netns(), again.stdout
    assert sandbox.get("/api/v1/namespaces/default")["metadata"]["name"] == "default", "the other sandbox answers"
