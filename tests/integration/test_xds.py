"""`block_xds_egress` / `unblock_xds_egress` / `xds_egress_fault` and the route marker against the real API server.

The API server validates the policy (``endPort`` ranges, ``namespaceSelector`` expressions), the expiry Job and the
HTTPProxy write. No CNI and no Envoy run here: Envoy's stats endpoint is ``tests.support.xds_stats``, whose
connected-state gauges each test sets, so that verification can be watched succeeding, failing and refusing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed
from kubernetes import client

from bench.contour_like import create_pod, names
from chaoscontour.activities.network import block_apiserver_egress, unblock_apiserver_egress
from chaoscontour.activities.xds import block_xds_egress, unblock_xds_egress, xds_egress_fault
from chaoscontour.activities.xds_probes import remove_route_marker, route_change_propagation
from chaoscontour.edges import stop
from tests.support.xds_stats import StatsServer

pytestmark = pytest.mark.usefixtures("kubeconfig_env")


@pytest.fixture
def stats() -> Iterator[StatsServer]:
    with StatsServer() as server:
        yield server


def add_pod(core: client.CoreV1Api, namespace: str, name: str, ip: str, labels: dict[str, str]) -> None:
    create_pod(core, namespace, name, labels=labels)
    body: Any = {"status": {"podIP": ip, "podIPs": [{"ip": ip}]}}
    core.patch_namespaced_pod_status(name, namespace, body)


@pytest.fixture
def installation(api: client.ApiClient, namespace: str) -> str:
    """Two Contour pods with addresses, their Service, and one Envoy pod, in ``namespace``."""
    core = client.CoreV1Api(api)
    add_pod(core, namespace, "contour-a", "10.244.0.5", {"app": "contour"})
    add_pod(core, namespace, "contour-b", "10.244.0.6", {"app": "contour"})
    add_pod(core, namespace, "envoy-a", "10.244.0.7", {"app": "envoy"})
    service: Any = {
        "metadata": {"name": "contour"},
        "spec": {"selector": {"app": "contour"}, "ports": [{"name": "xds", "port": 8001, "targetPort": 8001}]},
    }
    core.create_namespaced_service(namespace, service)
    return namespace


def ours(api: client.ApiClient, namespace: str) -> tuple[list[str], list[str]]:
    selector = "app.kubernetes.io/managed-by=chaoscontour"
    policies = client.NetworkingV1Api(api).list_namespaced_network_policy(namespace, label_selector=selector)
    jobs = client.BatchV1Api(api).list_namespaced_job(namespace, label_selector=selector)
    return names(policies), names(jobs)


def test_block_creates_a_policy_the_api_server_accepts_and_unblock_removes_it_idempotently(
    api: client.ApiClient, installation: str
) -> None:
    result = block_xds_egress(namespace=installation, run_id="x1", verify="false", duration_s="300")

    assert result["selected_pods"] == ["envoy-a"]
    assert result["contour_addresses"] == ["10.244.0.5", "10.244.0.6"]
    service = client.CoreV1Api(api).read_namespaced_service("contour", installation)
    assert result["blocked_cidrs"][-1] == f"{service.spec.cluster_ip}/32"
    policy: Any = client.NetworkingV1Api(api).read_namespaced_network_policy(result["name"], installation)
    assert policy.spec.pod_selector.match_labels == {"app": "envoy"}
    assert policy.metadata.labels["chaoscontour/fault"] == "xds-egress"
    assert {(p.port, p.end_port) for p in policy.spec.egress[2].ports if p.protocol == "TCP"} == {
        (1, 8000),
        (8002, 65535),
    }
    [owner] = policy.metadata.owner_references
    job: Any = client.BatchV1Api(api).read_namespaced_job(result["expiry_job"], installation)
    assert (owner.name, job.spec.parallelism, job.spec.active_deadline_seconds) == (job.metadata.name, 0, 20)

    removed = unblock_xds_egress(namespace=installation, run_id="x1")
    assert (removed["removed_policies"], removed["removed_jobs"]) == ([result["name"]], [result["expiry_job"]])
    assert removed["healed_at"] is not None
    assert ours(api, installation) == ([], [])
    again = unblock_xds_egress(namespace=installation, run_id="x1")
    assert (again["removed_policies"], again["removed_jobs"], again["healed_at"]) == ([], [], None)


def test_the_apiserver_and_xds_faults_of_one_run_never_remove_each_other(
    api: client.ApiClient, installation: str
) -> None:
    xds = block_xds_egress(namespace=installation, run_id="x2", verify=False)
    apiserver = block_apiserver_egress(namespace=installation, run_id="x2", verify=False)
    assert ours(api, installation) == (
        sorted([xds["name"], apiserver["name"]]),
        sorted([xds["expiry_job"], apiserver["expiry_job"]]),
    )

    unblock_apiserver_egress(namespace=installation, run_id="x2")
    assert ours(api, installation) == ([xds["name"]], [xds["expiry_job"]])
    block_apiserver_egress(namespace=installation, run_id="x2", verify=False)
    unblock_xds_egress(namespace=installation, run_id="x2")
    assert ours(api, installation) == ([apiserver["name"]], [apiserver["expiry_job"]])
    unblock_apiserver_egress(namespace=installation, run_id="x2")


def test_block_refuses_without_envoy_pods_or_with_a_policy_that_allows_contour(
    api: client.ApiClient, installation: str
) -> None:
    with pytest.raises(ActivityFailed, match=r"no running pod .* matches 'app=gateway'"):
        block_xds_egress(namespace=installation, label_selector="app=gateway", run_id="x3", verify=False)
    allow: Any = {
        "metadata": {"name": "envoy-to-contour"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "envoy"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "contour"}}}], "ports": [{"port": 8001}]}],
        },
    }
    client.NetworkingV1Api(api).create_namespaced_network_policy(installation, allow)
    with pytest.raises(ActivityFailed, match="envoy-to-contour egress rule 0 allows Contour pod contour-a"):
        block_xds_egress(namespace=installation, run_id="x3", verify=False)
    assert ours(api, installation) == ([], [])


def test_block_refuses_when_envoy_is_not_connected_before_the_fault(
    api: client.ApiClient, installation: str, stats: StatsServer
) -> None:
    stats.connected = 0
    started = time.monotonic()
    with pytest.raises(ActivityFailed, match=r"stream to Contour was not up before the fault \(its connected_state"):
        block_xds_egress(namespace=installation, run_id="x4", stats_url=stats.url, connect_wait_s="1")
    assert time.monotonic() - started >= 1.0, "it waited connect_wait_s before refusing"
    assert ours(api, installation) == ([], [])


def test_block_refuses_while_envoy_still_dials_though_its_gauges_read_1(
    api: client.ApiClient, installation: str, stats: StatsServer
) -> None:
    # The sandbox's CI run: Contour's pods replaced, Envoy dialing a gone pod for its 5 s connect timeout with the
    # gauges at 1; a block then "confirmed" the fault on that dial's failure, or found the stream down.
    stats.pending = 5
    with pytest.raises(ActivityFailed, match=r"5 xDS stream\(s\) still wait for a connection .* waited 1"):
        block_xds_egress(namespace=installation, run_id="x9", stats_url=stats.url, connect_wait_s="1")
    assert ours(api, installation) == ([], [])


def test_block_waits_for_envoys_dial_to_finish_before_it_cuts(
    api: client.ApiClient, installation: str, stats: StatsServer
) -> None:
    stats.pending = 5
    stats.later(1.0, pending=0)
    stats.later(2.5, connected=0)
    result = block_xds_egress(namespace=installation, run_id="x10", stats_url=stats.url)
    before = result["stream_before"]
    assert before["streams_waiting_for_connection"] == 0 and before["streams_open"] == 2
    assert 0.5 <= before["waited_s"] <= 5, before
    assert result["verification"]["confirmed"] is True
    unblock_xds_egress(namespace=installation, run_id="x10")


def test_block_is_confirmed_when_envoy_reports_the_stream_down_and_the_end_probe_sees_it_hold(
    api: client.ApiClient, installation: str, stats: StatsServer
) -> None:
    stats.later(1.5, connected=0)
    result = block_xds_egress(namespace=installation, run_id="x5", stats_url=stats.url, dead_man_s=10)
    check = result["verification"]
    assert check["confirmed"] is True and 1.0 <= check["confirmed_after_s"] <= 5, check

    held = xds_egress_fault(namespace=installation, run_id="x5", stats_url=stats.url)
    assert held["held"] is True, held["reasons"]
    assert held["dead_man_switch"]["running"] is True

    # A Contour pod that appears during the fault has an address the policy does not cover.
    add_pod(client.CoreV1Api(api), installation, "contour-c", "10.244.0.8", {"app": "contour"})
    # And an update Envoy accepted since the confirmation proves a working stream.
    stats.connected, stats.updates = 1, 4
    leaked = xds_egress_fault(namespace=installation, run_id="x5", stats_url=stats.url)
    assert leaked["held"] is False
    assert leaked["uncovered_addresses"] == ["10.244.0.8"]
    assert leaked["updates_since_confirmed"] == 2
    assert any("accepted 2 configuration update(s)" in reason for reason in leaked["reasons"])
    unblock_xds_egress(namespace=installation, run_id="x5")
    gone = xds_egress_fault(namespace=installation, run_id="x5")
    assert gone["held"] is False and gone["policy"] is None


def test_block_is_confirmed_by_a_failed_update_when_the_gauges_zero_is_never_read(
    api: client.ApiClient, installation: str, stats: StatsServer
) -> None:
    """Once Envoy retries, its gauges read 0 only between attempts; the failure counter cannot be missed."""
    stats.later(1.5, failures=2)
    result = block_xds_egress(namespace=installation, run_id="x8", stats_url=stats.url)
    check = result["verification"]
    assert check["confirmed"] is True and "counted 4 failed CDS/LDS update(s)" in check["evidence_text"], check
    unblock_xds_egress(namespace=installation, run_id="x8")


def test_block_removes_its_policy_when_envoy_stays_connected(
    api: client.ApiClient, installation: str, stats: StatsServer
) -> None:
    """No CNI enforces the policy here, as on flannel: Envoy keeps its stream, so the fault must not stand."""
    started = time.monotonic()
    with pytest.raises(ActivityFailed, match="Envoy still reported its xDS stream to Contour connected"):
        block_xds_egress(namespace=installation, run_id="x6", stats_url=stats.url, verify_timeout_s="46")
    assert 46 <= time.monotonic() - started < 60
    assert ours(api, installation)[0] == []


def test_the_dead_man_switch_extends_the_xds_faults_deadline(api: client.ApiClient, installation: str) -> None:
    result = block_xds_egress(namespace=installation, run_id="x7", verify=False, dead_man_s=10)
    batch = client.BatchV1Api(api)
    first = batch.read_namespaced_job(result["expiry_job"], installation).spec.active_deadline_seconds
    deadline = time.monotonic() + 10
    extended = first
    while time.monotonic() < deadline and extended <= first:
        time.sleep(0.5)
        extended = batch.read_namespaced_job(result["expiry_job"], installation).spec.active_deadline_seconds
    unblock_xds_egress(namespace=installation, run_id="x7")
    assert extended > first, "the heartbeat never extended the deadline"


def test_the_route_marker_is_written_through_the_api_server_and_removed_idempotently(
    api: client.ApiClient, contour_crds: list[str], namespace: str, stats: StatsServer
) -> None:
    proxies = client.CustomObjectsApi(api)
    body: Any = {
        "apiVersion": "projectcontour.io/v1",
        "kind": "HTTPProxy",
        "metadata": {"name": "echo"},
        "spec": {
            "virtualhost": {"fqdn": "echo.example.com"},
            "routes": [{"conditions": [{"prefix": "/"}], "services": [{"name": "echo", "port": 80}]}],
        },
    }
    proxies.create_namespaced_custom_object("projectcontour.io", "v1", namespace, "httpproxies", body)
    # Nothing serves the route here: with expect_arrival false that is the expected outcome.
    held = route_change_propagation(
        namespace=namespace, httpproxy="echo", url=stats.url, expect_arrival="false", timeout_s="0.5"
    )
    assert held["arrived"] is False and "did not reach Envoy" in held["summary"]
    written = proxies.get_namespaced_custom_object("projectcontour.io", "v1", namespace, "httpproxies", "echo")
    assert written["spec"]["routes"][0]["responseHeadersPolicy"]["set"] == [
        {"name": "x-chaoscontour-config", "value": held["marker"]}
    ]
    with pytest.raises(ActivityFailed, match="did not serve x-chaoscontour-config"):
        route_change_propagation(namespace=namespace, httpproxy="echo", url=stats.url, timeout_s=0.5)

    # A stop request ends the watch at once, and the output says how long it really watched.
    threading.Timer(0.5, lambda: stop.request("SIGTERM received")).start()
    try:
        started = time.monotonic()
        stopped = route_change_propagation(
            namespace=namespace, httpproxy="echo", url=stats.url, expect_arrival=False, timeout_s=30
        )
    finally:
        stop.reset()
    assert time.monotonic() - started < 3
    assert stopped["stopped_early"] is True and stopped["held_back_s"] < 3
    assert "before a stop request" in stopped["summary"]

    assert remove_route_marker(namespace=namespace, httpproxy="echo")["removed"] is True
    after = proxies.get_namespaced_custom_object("projectcontour.io", "v1", namespace, "httpproxies", "echo")
    assert "responseHeadersPolicy" not in after["spec"]["routes"][0]
    assert remove_route_marker(namespace=namespace, httpproxy="echo")["removed"] is False
    assert remove_route_marker(namespace=namespace, httpproxy="missing")["removed"] is False
