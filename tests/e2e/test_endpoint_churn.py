"""experiments/endpoint-churn-during-outage.json with the real ``chaos`` CLI on the sandbox, judged by
``chaoscontour gate``: the demo HTTPProxy as it is fails under endpoint churn; the same route with a retryPolicy on
connect failure and a healthCheckPolicy passes.

While Contour is cut off from the API server, a backend pod is killed with chaostoolkit-kubernetes'
``terminate_pods``. Envoy's endpoints are frozen, so it keeps the dead pod's address: on the sandbox, as in a
cluster, nothing owns that address any more, so a connection to it gets no answer and Envoy gives up at Contour's
2 s connect timeout (503, response flag UF). Envoy's admin ``/clusters`` (127.0.0.1:9001 in the Envoy pod) is
reached through a relay in the Envoy pod's network namespace (``nsenter``), in place of ``kubectl port-forward``,
so that Envoy's endpoint list is compared with the EndpointSlices address by address.
The figures are docs/measurements.md's.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from chaoscontour.tools.journal import epoch_of
from chaoscontour.tools.stop_condition import stop_condition
from tests.support.admin_relay import admin_relay
from tests.support.chaosrun import CHURN_WINDOWS, EXPERIMENTS, ChaosRun, activity, gate_verdict, keep_journal
from tests.support.sandbox import NS, Sandbox, envoy_serves_in_a_row, leftovers, wait_until

EXPERIMENT = EXPERIMENTS / "endpoint-churn-during-outage.json"
VARIABLES = {**CHURN_WINDOWS, "backend_port": "80", "dead_man_s": "20", "fault_expiry_s": "300"}
RESILIENT = {
    # Retry a request whose connection failed (on another endpoint: Contour's default load balancer is round
    # robin) and let Envoy's own health checks take a dead endpoint out of rotation within about a second.
    "retryPolicy": {"count": 3, "retryOn": ["connect-failure", "reset"]},
    "healthCheckPolicy": {
        "path": "/healthz",
        "intervalSeconds": 1,
        "timeoutSeconds": 1,
        "unhealthyThresholdCount": 1,
        "healthyThresholdCount": 1,
    },
}


def _proxies(k: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(k.api)


def _echo_pods(k: Any) -> list[client.V1Pod]:
    return [p for p in k.core.list_namespaced_pod("demo", label_selector="app=echo").items]


def _ready_echo_pods(k: Any) -> list[client.V1Pod]:
    return [
        p
        for p in _echo_pods(k)
        if not p.metadata.deletion_timestamp
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]


@pytest.fixture(scope="module")
def admin_url(sandbox: Sandbox, sandbox_env: dict[str, str]) -> Iterator[str]:
    from chaoscontour.edges.kube import kube

    envoy = kube().core.list_namespaced_pod(NS, label_selector="app=envoy").items[0]
    with admin_relay(sandbox, NS, envoy.metadata.name) as url:
        yield url


@pytest.fixture
def backend_ready(healthy_contour: dict[str, str], k: Any) -> dict[str, str]:
    """Two Ready echo pods and the demo route as shipped (whatever an earlier test did to either)."""
    wait_until("two Ready echo pods", lambda: len(_ready_echo_pods(k)) == 2 and len(_echo_pods(k)) == 2, 120)
    return healthy_contour


def _route_with(k: Any, policy: dict[str, Any]) -> dict[str, Any]:
    proxy = _proxies(k).get_namespaced_custom_object("projectcontour.io", "v1", "demo", "httpproxies", "echo")
    original = copy.deepcopy(proxy["spec"]["routes"])
    routes = [{**route, **policy} for route in original]
    _proxies(k).patch_namespaced_custom_object(
        "projectcontour.io", "v1", "demo", "httpproxies", "echo", {"spec": {"routes": routes}}
    )
    return {"spec": {"routes": original}}


# Envoy lets 3 retries be under way at once per cluster by default (circuit breaker max_retries); at 50 requests/s
# with a 2 s connect timeout more than that are due while the dead endpoint is being found out, and the rest fail
# as `upstream_rq_retry_overflow` (seen: 21 of 28). Contour raises it with this Service annotation.
MAX_RETRIES_ANNOTATION = "projectcontour.io/max-retries"
MAX_RETRIES = "64"


def _annotate_service(k: Any, value: str | None) -> None:
    body = {"metadata": {"annotations": {MAX_RETRIES_ANNOTATION: value}}}
    k.core.patch_namespaced_service("echo", "demo", body)


def _envoy_max_retries(admin: str) -> bool:
    import requests

    text = requests.get(admin, timeout=2).text
    return f"::default_priority::max_retries::{MAX_RETRIES}" in text


def _health_checks_running(stats_url: str) -> bool:
    import requests

    text = requests.get(stats_url, params={"filter": r"^cluster\.demo_echo_80\.health_check\."}, timeout=2).text
    return any(
        line.startswith("cluster.demo_echo_80.health_check.success:") and not line.endswith(": 0")
        for line in text.splitlines()
    )


def _run(tmp_path: Path, name: str, admin: str) -> tuple[ChaosRun, dict[str, Any]]:
    run = ChaosRun(EXPERIMENT, tmp_path, {}, name=name, variables={**VARIABLES, "envoy_admin_url": admin})
    journal = run.run(timeout_s=300)
    # test_journals_report.py judges it again and renders its report's endpoint timeline.
    keep_journal(run)
    return run, journal


def _figures(journal: dict[str, Any]) -> dict[str, Any]:
    availability = activity(journal, "envoy-availability-across-the-fault")["output"]
    window = activity(journal, "envoy-view-of-the-backend-at-the-end-of-the-window")["output"]
    converged = activity(journal, "envoy-endpoints-converged-after-the-heal")["output"] or {}
    counters = window["since"]["counters"]
    return {
        "availability": availability["availability"],
        "failures": availability["failures"],
        "requests": availability["requests"],
        "error_kinds": availability["error_kinds"],
        "latency_ms": availability["latency_ms"],
        "longest_outage_s": availability["longest_outage_s"],
        "window_counters": counters,
        "contour_restarts_before_kill": activity(journal, "contour-restarts-before-the-kill")["output"].get(
            "total_restarts"
        ),
        "failure_causes": window["since"]["failure_causes"],
        "stale_at_end_of_window": window["comparison"].get("stale"),
        "missing_at_end_of_window": window["comparison"].get("missing"),
        "converged_after_s": converged.get("converged_after_s"),
        "endpoints_matched_after_s": converged.get("endpoints_matched_after_s"),
        "first_success_after_s": converged.get("first_success_after_s"),
        "requests_failed_while_converging": converged.get("failed_requests"),
        "episode_counters": (converged.get("since") or {}).get("counters"),
    }


def _record(figures: dict[str, Any], name: str, journal: dict[str, Any]) -> None:
    """Keep the figures even when a check below fails (the checks then say what went wrong)."""
    try:
        figures[name] = _figures(journal)
    except (AssertionError, KeyError, TypeError) as exc:
        figures[name] = {"incomplete": repr(exc)}


def _common_checks(k: Any, run: ChaosRun, journal: dict[str, Any]) -> None:
    assert journal["status"] == "completed", run.log()[-3000:]
    assert journal["steady_states"]["before"]["steady_state_met"] is True
    block = activity(journal, "block-apiserver-egress")
    assert block["status"] == "succeeded", block.get("exception")
    assert block["output"]["verification"]["confirmed"] is True
    killed = activity(journal, "kill-a-backend-pod")
    assert killed["status"] == "succeeded" and len(killed["output"]) == 1, killed
    assert activity(journal, "the-fault-held-for-the-whole-window")["output"]["held"] is True

    before = activity(journal, "envoy-view-of-the-backend-before-the-fault")["output"]
    window = activity(journal, "envoy-view-of-the-backend-at-the-end-of-the-window")["output"]
    # The evidence: the slices moved on (the dead pod out, its replacement in), Envoy did not.
    assert before["comparison"]["matches"] is True, before
    assert window["since"]["endpointslices_changed"] is True, window["since"]
    assert window["since"]["membership_changed"] is False, window["since"]
    # The killed pod's address, still in Envoy's list; its replacement is `missing` once Ready (if it was by then).
    assert len(window["comparison"]["stale"]) == 1, window["comparison"]
    dead = window["comparison"]["stale"][0]
    restarts = activity(journal, "contour-restarts-before-the-kill")["output"]
    assert restarts["total_restarts"] >= 1, restarts

    converged = activity(journal, "envoy-endpoints-converged-after-the-heal")
    assert converged["status"] == "succeeded", converged.get("exception")
    assert converged["output"]["converged"] is True
    assert converged["output"]["comparison"]["stale"] == [] and converged["output"]["comparison"]["missing"] == []
    # As in a cluster, the dead pod's address is not handed straight to another pod (host-local IPAM goes round).
    assert dead not in converged["output"]["comparison"]["envoy_endpoints"], converged["output"]["comparison"]
    assert activity(journal, "unblock-apiserver-egress", where="rollbacks")["status"] == "succeeded"
    assert leftovers(k) == []


def test_the_demo_route_as_it_is_fails_the_gate_when_a_backend_pod_dies_while_contour_is_cut_off(
    sandbox: Sandbox, backend_ready: dict[str, str], admin_url: str, k: Any, tmp_path: Path, figures: dict[str, Any]
) -> None:
    run, journal = _run(tmp_path, "endpoint-churn-plain", admin_url)
    _record(figures, "endpoint_churn_plain_route", journal)
    _common_checks(k, run, journal)

    window = activity(journal, "envoy-view-of-the-backend-at-the-end-of-the-window")["output"]
    counters = window["since"]["counters"]
    # Requests sent to the dead address failed for want of a connection (503 UF), nothing retried them.
    assert counters.get("upstream_cx_connect_fail", 0) >= 1, counters
    assert counters.get("upstream_rq_pending_failure_eject", 0) >= 1, counters
    assert counters.get("upstream_rq_retry", 0) == 0, counters
    assert any("UF" in cause for cause in window["since"]["failure_causes"]), window["since"]["failure_causes"]
    availability = activity(journal, "envoy-availability-across-the-fault")["output"]
    assert availability["meets_min_availability"] is False, availability
    assert availability["error_kinds"].get("http_503", 0) >= 1, availability["error_kinds"]

    gate = gate_verdict(run.journal_path)
    assert gate.returncode == 1, gate.stdout + gate.stderr
    assert "below min_availability" in gate.stdout, gate.stdout


def test_the_same_route_with_retries_on_connect_failure_and_health_checks_passes_the_gate(
    sandbox: Sandbox, backend_ready: dict[str, str], admin_url: str, k: Any, tmp_path: Path, figures: dict[str, Any]
) -> None:
    restore = _route_with(k, RESILIENT)
    _annotate_service(k, MAX_RETRIES)
    try:
        wait_until("Envoy allowing more retries at once", lambda: _envoy_max_retries(admin_url), 60)
        wait_until(
            "Envoy health-checking the echo endpoints",
            lambda: _health_checks_running(backend_ready["ENVOY_STATS_URL"]),
            60,
        )
        # The health-checked route is a new cluster (Contour names clusters by their policy), and without ADS
        # Envoy may take the route that names it before the cluster has warmed: a moment of 503s. The experiment's
        # steady state asks the route to serve, so start once it does, ten times in a row.
        wait_until("Envoy serving the route with its new policy", lambda: envoy_serves_in_a_row(backend_ready), 60)
        run, journal = _run(tmp_path, "endpoint-churn-resilient", admin_url)
    finally:
        _proxies(k).patch_namespaced_custom_object("projectcontour.io", "v1", "demo", "httpproxies", "echo", restore)
        _annotate_service(k, None)
    _record(figures, "endpoint_churn_resilient_route", journal)
    _common_checks(k, run, journal)

    window = activity(journal, "envoy-view-of-the-backend-at-the-end-of-the-window")["output"]
    counters = window["since"]["counters"]
    assert counters.get("health_check.failure", 0) >= 1, counters
    assert window["comparison"]["unhealthy"] == window["comparison"]["stale"], "the health checks caught the dead one"
    availability = activity(journal, "envoy-availability-across-the-fault")["output"]
    assert availability["meets_min_availability"] is True, availability

    gate = gate_verdict(run.journal_path)
    assert gate.returncode == 0, gate.stdout + gate.stderr


def test_a_stop_condition_aborts_the_churn_run_and_the_fault_is_gone_within_the_bound(
    sandbox: Sandbox, backend_ready: dict[str, str], k: Any, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """experiments/endpoint-churn-with-stop-condition.json on the demo route as shipped: the backend pod's death
    makes real traffic fail, the stop condition trips, the run ends interrupted, the rollback removes the fault
    within the check interval plus 2 s of the failing result, and the gate says why."""
    experiment = EXPERIMENTS / "endpoint-churn-with-stop-condition.json"
    run = ChaosRun(experiment, tmp_path, {}, name="endpoint-churn-stop-condition", variables=VARIABLES)
    # Not kept for test_journals_report.py: this test judges its journal itself.
    journal = run.run(timeout_s=300)

    assert journal["status"] == "interrupted", run.log()[-3000:]
    stop = stop_condition(journal)
    assert stop is not None and stop.name == "stop-when-envoy-availability-drops", journal.get("safeguards")
    block = activity(journal, "block-apiserver-egress")
    assert block["output"]["verification"]["confirmed"] is True
    killed = activity(journal, "kill-a-backend-pod")
    assert killed["status"] == "succeeded" and len(killed["output"]) == 1, killed
    # The trip came after the kill, on the traffic the kill hurt, not on a sampler that never worked.
    assert stop.result_epoch_s is not None and stop.result_epoch_s >= epoch_of(killed["end"]), (stop, killed)
    unblock = activity(journal, "unblock-apiserver-egress", where="rollbacks")
    assert unblock["status"] == "succeeded" and unblock["output"]["removed_policies"], unblock
    removed_after_s = epoch_of(unblock["end"]) - stop.result_epoch_s
    figures["stop_condition"] = {"removed_after_failing_result_s": round(removed_after_s, 2), "check_s": stop.check_s}
    # The bound is check interval + 2 s; 2 s more of margin for two busy cores.
    assert removed_after_s <= (stop.check_s or 0) + 4.0, removed_after_s
    assert leftovers(k) == []

    gate = gate_verdict(run.journal_path)
    assert gate.returncode == 1, gate.stdout + gate.stderr
    assert "ABORTED by stop condition 'stop-when-envoy-availability-drops'" in gate.stdout, gate.stdout
