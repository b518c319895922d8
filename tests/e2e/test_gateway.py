"""Contour provisioned through Gateway API: the session's sandbox runs it beside the release manifest (``up
--gateway``), and the shipped experiments (apiserver-outage, leader-kill, xds-blackhole, endpoint-churn and
envoy-restart) are judged on it as on the release manifest, with the settings a user gets from the Gateway's name
alone (``chaoscontour gateway-env``: the provisioned names, the Lease ``leader-elect-<gateway>``, Envoy's listener
``http-80``)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from chaoscontour.activities.envoy import envoy_serving
from chaoscontour.activities.routes import remove_route_marker, route_change_propagation, route_config_converged
from chaoscontour.edges.kube import kube
from tests.e2e import test_endpoint_churn as churn
from tests.e2e.test_experiments import assert_steady_before_and_after
from tests.e2e.test_xds_blackhole import VARIABLES as XDS_VARIABLES
from tests.support.admin_relay import admin_relay
from tests.support.chaosrun import EXPERIMENTS, ChaosRun, activity, as_vars, gate_verdict, keep_journal
from tests.support.sandbox import HEALTHY_TIMEOUT_S, Sandbox, contour_healthy, contour_pods, leftovers, wait_until

GATEWAY_API = "/apis/gateway.networking.k8s.io/v1"


def gateway_env_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chaoscontour.cli", "gateway-env", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def written(sandbox: Sandbox, sandbox_env: dict[str, str]) -> dict[str, str]:
    """What ``up --gateway`` wrote for the provisioned layout (over the release manifest's settings)."""
    return {k: str(v) for k, v in json.loads((sandbox.dir / "settings-gateway.json").read_text()).items()}


@pytest.fixture(scope="module")
def gateway_env(sandbox_env: dict[str, str], written: dict[str, str]) -> dict[str, str]:
    """The experiments' settings for the Gateway as a user gets them: the Gateway's name given to
    ``chaoscontour gateway-env``, which reads the rest from the cluster; the route's Host is the user's own."""
    derived = gateway_env_cli(written["CONTOUR_GATEWAY"], "--json")
    assert derived.returncode == 0, derived.stderr
    return sandbox_env | json.loads(derived.stdout) | {"ENVOY_HOST": written["ENVOY_HOST"]}


def run_on_gateway(
    experiment_file: str,
    name: str,
    overrides: dict[str, str],
    gateway_env: dict[str, str],
    k: Any,
    tmp_path: Path,
    timeout_s: float,
    keep: bool = False,
) -> tuple[ChaosRun, dict[str, Any]]:
    """Run a shipped experiment on the Gateway's layout, from a healthy Contour, with ``overrides`` over the
    settings as `--var`s; keep its journal for test_journals_report.py when ``keep``. Its steady state must have held
    before and after; return the run and its journal."""
    wait_until("the Gateway's Contour healthy", lambda: contour_healthy(k, gateway_env), HEALTHY_TIMEOUT_S)
    experiment = EXPERIMENTS / experiment_file
    variables = as_vars(experiment, overrides, gateway_env)
    run = ChaosRun(experiment, tmp_path, gateway_env, name=f"gateway-{name}", variables=variables)
    journal = run.run(timeout_s=timeout_s)
    if keep:
        keep_journal(run)
    assert_steady_before_and_after(journal)
    return run, journal


def test_gateway_env_reads_what_the_sandbox_set_up_from_the_gateway_alone(
    written: dict[str, str], gateway_env: dict[str, str]
) -> None:
    keys = ["CONTOUR_NAMESPACE", "CONTOUR_SELECTOR", "ENVOY_SELECTOR", "CONTOUR_LEASE", "ENVOY_URL", "ENVOY_STATS_URL"]
    keys += ["ENVOY_LISTENER_PREFIXES", "CONTOUR_METRICS_SELECTOR", "CONTOUR_SERVICE", "ENVOY_NAMESPACE"]
    assert {key: gateway_env[key] for key in keys} == {key: written[key] for key in keys}
    assert gateway_env["CONTOUR_LEASE_NAMESPACE"] == written["CONTOUR_NAMESPACE"]
    missing = gateway_env_cli(f"{written['CONTOUR_NAMESPACE']}/no-such-gateway")
    assert missing.returncode == 2 and "Gateway gateway/no-such-gateway does not exist" in missing.stderr, missing
    other = gateway_env_cli("demo/echo")  # a namespace with no Gateway of that name
    assert other.returncode == 2 and "demo/echo" in other.stderr


def condition(obj: dict[str, Any], kind: str) -> str | None:
    return next((c["status"] for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), None)


def test_the_provisioned_gateway_is_programmed_and_serves_its_httproute(
    sandbox: Sandbox, gateway_env: dict[str, str], k: Any
) -> None:
    namespace, name = gateway_env["CONTOUR_GATEWAY"].split("/")
    gateway = sandbox.get(f"{GATEWAY_API}/namespaces/{namespace}/gateways/{name}")
    assert condition(gateway, "Programmed") == "True", gateway.get("status")
    route = sandbox.get(f"{GATEWAY_API}/namespaces/{gateway_env['ROUTE_NAMESPACE']}/httproutes/echo")
    [parent] = route["status"]["parents"]
    assert {c["type"]: c["status"] for c in parent["conditions"]} == {"Accepted": "True", "ResolvedRefs": "True"}
    # The provisioner's own objects, found under the names the settings give: two Contour replicas and the Lease.
    pods = contour_pods(k, namespace, gateway_env["CONTOUR_SELECTOR"])
    assert len(pods) == 2 and all(p.metadata.labels["gateway.networking.k8s.io/gateway-name"] == name for p in pods)
    assert envoy_serving(gateway_env["ENVOY_URL"], host=gateway_env["ENVOY_HOST"], timeout_s=5)
    wait_until("the Gateway's Contour healthy", lambda: contour_healthy(k, gateway_env), HEALTHY_TIMEOUT_S)


def test_apiserver_outage_on_the_provisioned_gateway_passes_the_gate(
    gateway_env: dict[str, str], k: Any, tmp_path: Path, figures: dict[str, Any]
) -> None:
    overrides = {"fault_window_s": "40", "sampling_s": "75", "fault_expiry_s": "240", "recovery_timeout_s": "150"}
    run, journal = run_on_gateway(
        "apiserver-outage.json", "apiserver-outage", overrides, gateway_env, k, tmp_path, 420, keep=True
    )

    namespace = gateway_env["CONTOUR_NAMESPACE"]
    verification = activity(journal, "block-apiserver-egress")["output"]["verification"]
    assert verification["confirmed"] is True, verification
    assert verification["lease"] == f"Lease {namespace}/{gateway_env['CONTOUR_LEASE']}", verification
    restarts = activity(journal, "contour-restarts-during-the-fault")["output"]
    assert {t["pod"] for t in restarts["terminations"]} == {p["name"] for p in restarts["pods"]}, restarts
    assert all(p["name"].startswith("contour-contour-") for p in restarts["pods"]), restarts["pods"]
    availability = activity(journal, "envoy-availability-across-the-fault")["output"]
    assert availability["availability"] >= 0.999 and availability["requests"] >= 14_000, availability
    direct = activity(journal, "envoy-success-ratio-across-the-fault")["output"]
    assert direct["ratio"] >= 0.999 and direct["clusters"] == ["demo_echo_80"], direct
    assert direct["listener_prefixes"] == ["http-80"], direct
    prom = activity(journal, "prometheus-success-ratio-across-the-fault")["output"]
    assert prom["ratio"] is not None and prom["ratio"] >= 0.999, prom
    gate = gate_verdict(run.journal_path)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert leftovers(k) == []
    wait_until("the Gateway's Contour healthy again", lambda: contour_healthy(k, gateway_env), HEALTHY_TIMEOUT_S)
    figures["gateway-apiserver-outage"] = {
        "confirmed_after_s": verification["confirmed_after_s"],
        "availability": availability["availability"],
        "requests": availability["requests"],
        "envoy_counted": direct["requests"],
        "prometheus_counted": prom["requests"],
    }


def test_leader_kill_on_the_provisioned_gateway_fails_over_and_says_where_both_envoys_streams_went(
    gateway_env: dict[str, str], k: Any, tmp_path: Path, figures: dict[str, Any]
) -> None:
    overrides = {"sampling_s": "30"}
    run, journal = run_on_gateway("leader-kill.json", "leader-kill", overrides, gateway_env, k, tmp_path, 240)
    kill = activity(journal, "kill-the-contour-leader")
    assert kill["status"] == "succeeded", kill.get("exception")
    out = kill["output"]
    assert out["new_pod"] != out["old_pod"] and out["old_pod"].startswith("contour-contour-"), out
    assert out["failover_s"] <= 2.2 * 2 + 15 + 2.2 * 2, out
    # Two Envoys, one xDS stream each, on the replicas kube-proxy picked behind the Service contour-contour.
    xds = out["xds"]
    assert xds["known"] is True and sum(xds["streams_before"].values()) == 2, xds
    if xds["on_killed_pod"]:
        assert xds["reconnected_after_s"] is not None and 0 < xds["reconnected_after_s"] <= 30, xds
        assert xds["reconnected_to"] and out["old_pod"] not in xds["reconnected_to"], xds
    else:
        assert xds["reconnected_after_s"] is None, xds
    availability = activity(journal, "envoy-availability-across-the-failover")["output"]
    assert availability["availability"] >= 0.999, availability
    gate = gate_verdict(run.journal_path)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    figures["gateway-leader-kill"] = {
        "xds_on_killed_pod": xds["on_killed_pod"],
        "xds_reconnected_after_s": xds["reconnected_after_s"],
        "failover_s": out["failover_s"],
    }


def test_xds_blackhole_on_the_provisioned_gateway_holds_back_an_httproute_change_until_the_heal(
    sandbox: Sandbox, gateway_env: dict[str, str], k: Any, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """Both provisioned Envoys cut off from the Service gateway-env names (``contour-contour``); the marker goes into
    the HTTPRoute. The same verdict as on the release manifest: Envoy routes on, the change arrives after the heal."""
    assert gateway_env["CONTOUR_SERVICE"] == "contour-contour"
    overrides = {**XDS_VARIABLES, "route_httpproxy": "", "route_httproute": "echo"}
    run, journal = run_on_gateway("xds-blackhole.json", "xds-blackhole", overrides, gateway_env, k, tmp_path, 360)
    block = activity(journal, "block-xds-egress")["output"]
    assert len(block["selected_pods"]) == 2 and block["verification"]["confirmed"] is True, block
    during = activity(journal, "route-change-during-the-fault")["output"]
    assert during["arrived"] is False and during["httproute"] == "demo/echo", during
    converged = activity(journal, "route-config-converged-after-the-heal")
    assert converged["status"] == "succeeded", converged.get("exception")
    assert converged["output"]["marker"] == during["marker"]
    availability = activity(journal, "envoy-availability-across-the-fault")["output"]
    assert availability["availability"] >= 0.999, availability
    gate = gate_verdict(run.journal_path)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert leftovers(k) == []
    path = f"{GATEWAY_API}/namespaces/demo/httproutes/echo"
    assert "filters" not in str(sandbox.get(path)["spec"]["rules"]), "the rollback takes the marker out of the route"
    wait_until("the Gateway's Contour healthy again", lambda: contour_healthy(k, gateway_env), HEALTHY_TIMEOUT_S)
    figures["gateway-xds-blackhole"] = {
        "confirmed_after_s": block["verification"]["confirmed_after_s"],
        "converged_after_heal_s": converged["output"]["since_heal_s"],
    }


def test_a_route_change_on_the_httproute_reaches_the_provisioned_envoy_and_is_put_back(
    sandbox: Sandbox, gateway_env: dict[str, str], written: dict[str, str], figures: dict[str, Any]
) -> None:
    namespace, name = gateway_env["ROUTE_NAMESPACE"], written["ROUTE_HTTPROUTE"]
    path = f"{GATEWAY_API}/namespaces/{namespace}/httproutes/{name}"
    before = sandbox.get(path)["spec"]["rules"]
    route = {
        "namespace": namespace,
        "httproute": name,
        "url": gateway_env["ENVOY_URL"],
        "host": gateway_env["ENVOY_HOST"],
    }
    changed = route_change_propagation(**route, run_id="gw-route", timeout_s=30)
    assert changed["arrived"] is True and changed["httproute"] == f"{namespace}/{name}", changed
    converged = route_config_converged(**route, timeout_s=10)
    assert converged["converged"] is True and converged["marker"] == changed["marker"]
    removed = remove_route_marker(namespace=namespace, httproute=name, run_id="gw-route")
    assert removed["removed"] is True and removed["restored_routes"] == [0]
    assert sandbox.get(path)["spec"]["rules"] == before
    figures["gateway-route-change"] = {"propagation_s": changed["propagation_s"]}


@pytest.fixture(scope="module")
def gateway_admin_url(sandbox: Sandbox, gateway_env: dict[str, str]) -> Iterator[str]:
    """The read-only admin ``/clusters`` of the provisioned Envoy that ENVOY_URL reaches (the one sampled)."""
    namespace, address = gateway_env["ENVOY_NAMESPACE"], urlsplit(gateway_env["ENVOY_URL"]).hostname
    pods = kube().core.list_namespaced_pod(namespace, label_selector=gateway_env["ENVOY_SELECTOR"]).items
    sampled = next(p.metadata.name for p in pods if p.status.pod_ip == address)
    with admin_relay(sandbox, namespace, sampled) as url:
        yield url


def test_endpoint_churn_on_the_provisioned_gateway_fails_the_gate_as_on_the_release_manifest(
    sandbox: Sandbox, gateway_env: dict[str, str], gateway_admin_url: str, k: Any, tmp_path: Path, figures: dict
) -> None:
    """The HTTPRoute demo/echo as it is (no retries, no health checks): an echo pod killed while the Gateway's
    Contour is cut off stays in the provisioned Envoy's endpoints, its requests fail with 503 UF, and the gate fails
    below min_availability by design, with the same evidence as on the release manifest."""
    two = lambda: len(churn._ready_echo_pods(k)) == 2 and len(churn._echo_pods(k)) == 2  # noqa: E731
    wait_until("two Ready echo pods", two, 120)
    overrides = {**churn.VARIABLES, "envoy_admin_url": gateway_admin_url}
    name = "endpoint-churn-during-outage"
    run, journal = run_on_gateway(f"{name}.json", "endpoint-churn-plain", overrides, gateway_env, k, tmp_path, 300)
    churn._record(figures, "gateway_endpoint_churn_plain_route", journal)
    churn._common_checks(k, run, journal)
    assert activity(journal, "block-apiserver-egress")["output"]["namespace"] == gateway_env["CONTOUR_NAMESPACE"]
    window = activity(journal, "envoy-view-of-the-backend-at-the-end-of-the-window")["output"]
    assert any("UF" in cause for cause in window["since"]["failure_causes"]), window["since"]["failure_causes"]
    availability = activity(journal, "envoy-availability-across-the-fault")["output"]
    assert availability["meets_min_availability"] is False, availability
    gate = gate_verdict(run.journal_path)
    assert gate.returncode == 1 and "below min_availability" in gate.stdout, gate.stdout + gate.stderr


def test_an_envoy_restarted_during_the_outage_serves_nothing_until_the_heal_while_the_other_keeps_routing(
    sandbox: Sandbox, gateway_env: dict[str, str], k: Any, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """The provisioned Envoy is a Deployment of two: one is deleted once every Contour restarted since the cut. Its
    replacement has no listener and is not Ready until Contour is back; the other, sampled throughout, keeps routing.
    The gate fails by design, on the restarted Envoy's availability. Last in this module: it replaces an Envoy pod
    (never the one ``ENVOY_URL`` names)."""
    namespace = gateway_env["ENVOY_NAMESPACE"]
    envoys_before = {p.metadata.name for p in contour_pods(k, namespace, gateway_env["ENVOY_SELECTOR"])}
    assert len(envoys_before) == 2, envoys_before
    overrides = {"fault_window_s": "45", "sampling_s": "65", "fault_expiry_s": "300", "recovery_timeout_s": "150"}
    name = "envoy-restart-during-outage"
    run, journal = run_on_gateway(f"{name}.json", name, overrides, gateway_env, k, tmp_path, 600, keep=True)

    verification = activity(journal, "block-apiserver-egress")["output"]["verification"]
    assert verification["confirmed"] is True, verification
    assert activity(journal, "the-fault-held-for-the-whole-window")["output"]["held"] is True
    lane = activity(journal, "restart-an-envoy-during-the-outage")["output"]
    kept = gateway_env["ENVOY_URL"].split("//")[1].split(":")[0]
    assert lane["deleted_pod"] in envoys_before and lane["deleted_pod"] not in lane["kept_pods"], lane
    assert lane["replacement_pod"] not in envoys_before and lane["replacement_ip"] != kept, lane
    # No Contour that ran before the cut ran at the delete: none had a cache to serve the new Envoy from.
    assert lane["contours"] and all(c["started_after_cut"] for c in lane["contours"]), lane["contours"]
    # The evidence the fault bit: the replacement was asked many times before the heal and never answered; it was not
    # Ready and its stats listener (which only Contour configures) did not answer. Afterwards it served.
    before = lane["requests_before_heal"]
    assert before["sent"] >= 50 and before["ok"] == 0, before
    assert not lane["served_before_heal"] and not lane["ready_before_heal"] and not lane["stats_before_heal"], lane
    assert lane["heal_seen"] and lane["first_200_after_heal_s"] is not None, lane
    assert lane["xds_after_heal"] and lane["xds_after_heal"]["lds_update_success"] >= 1, lane
    surviving = activity(journal, "surviving-envoy-availability-across-the-fault")["output"]
    assert surviving["availability"] >= 0.999 and surviving["requests"] >= 10_000, surviving
    gate = gate_verdict(run.journal_path)
    assert gate.returncode == 1, gate.stdout + gate.stderr
    assert "served nothing until" in gate.stdout and "its traffic failed while Contour was cut off" in gate.stdout
    assert leftovers(k) == []
    wait_until("the Gateway's Contour healthy again", lambda: contour_healthy(k, gateway_env), HEALTHY_TIMEOUT_S)
    figures["gateway-envoy-restart"] = {
        "requests_before_heal": before["sent"],
        "first_200_after_heal_s": lane["first_200_after_heal_s"],
        "ready_after_heal_s": lane["ready_after_heal_s"],
        "surviving_availability": surviving["availability"],
    }
