"""A user's own manifests on the sandbox (examples/my-app: not the demo's), judged by the endpoint-churn experiment.

``chaoscontour sandbox apply --manifests examples/my-app --route shop/cart`` is the code path of ``sandbox up
--manifests`` on the session's running sandbox: the made-up images run the echo backend, the settings point at the
user's route (fqdn ``shop.example.com``, prefix ``/cart``, Service ``shop/cart``), and
experiments/endpoint-churn-during-outage.json runs against that route as a user would run it (settings.env, no
admin relay: Envoy's endpoints compared with the EndpointSlices by count). The route carries a retryPolicy on
connect failure, a healthCheckPolicy and the Service annotation ``projectcontour.io/max-retries``: the gate passes.
``sandbox delete`` removes it all and puts the settings back on the demo route.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .chaosrun import EXPERIMENTS, ROOT, ChaosRun, activity
from .conftest import Sandbox, leftovers

EXAMPLE = ROOT / "examples" / "my-app"
EXPERIMENT = EXPERIMENTS / "endpoint-churn-during-outage.json"
# Short windows, as in test_endpoint_churn.py (strings, as a user passes them with --var).
VARIABLES = {
    "fault_window_s": "10",
    "freeze_wait_s": "30",
    "sample_rate_per_s": "50",
    "sampling_s": "90",
    "convergence_bound_s": "60",
    "convergence_successes": "10",
    "request_timeout_s": "5",
}


@pytest.fixture(scope="module")
def user_route(sandbox: Sandbox, sandbox_env: dict[str, str]) -> Iterator[tuple[dict[str, str], str]]:
    """examples/my-app applied with ``--route shop/cart``: the settings it wrote and `apply`'s output; deleted after."""
    applied = sandbox.cli("apply", "--manifests", str(EXAMPLE), "--route", "shop/cart", timeout_s=300)
    try:
        assert applied.returncode == 0, applied.stdout + applied.stderr
        yield json.loads((sandbox.dir / "settings.json").read_text()), applied.stdout
    finally:
        deleted = sandbox.cli("delete", "--manifests", str(EXAMPLE), timeout_s=300)
        assert deleted.returncode == 0, deleted.stdout + deleted.stderr
        restored = json.loads((sandbox.dir / "settings.json").read_text())
        assert restored["ENVOY_HOST"] == "echo.sandbox.local" and restored["BACKEND_NAMESPACE"] == "demo", restored
        namespaces = [n["metadata"]["name"] for n in sandbox.get("/api/v1/namespaces")["items"]]
        assert "shop" not in namespaces


def test_apply_stands_in_for_images_without_a_local_program_and_points_the_settings_at_the_route(
    sandbox: Sandbox, user_route: tuple[dict[str, str], str]
) -> None:
    settings, output = user_route
    assert "container cart (registry.example.com/shop/cart:2.3) has no local program" in output, output
    assert "on 8080, 9090" in output and "init container migrate" in output and "nodeSelector dropped" in output
    assert "Deployment shop/cart: 2/2 ready" in output and "HTTPProxy shop/cart: valid" in output, output
    ip = settings["ENVOY_STATS_URL"].split("//")[1].split(":")[0]
    assert settings["ENVOY_URL"] == f"http://{ip}:8080/cart"
    assert settings["ENVOY_HOST"] == "shop.example.com"
    assert (settings["BACKEND_NAMESPACE"], settings["BACKEND_SERVICE"], settings["BACKEND_PORT"]) == (
        "shop",
        "cart",
        "80",
    )
    assert settings["BACKEND_SELECTOR"] == "app=cart"
    assert (settings["ROUTE_NAMESPACE"], settings["ROUTE_HTTPPROXY"]) == ("shop", "cart")
    # The stand-in shows in the pod's events, as a user reading `kubectl describe pod` would see it.
    events = sandbox.get("/api/v1/namespaces/shop/events")["items"]
    stand_ins = [e for e in events if e.get("reason") == "StandIn"]
    assert any("container cart" in e["message"] and "8080, 9090" in e["message"] for e in stand_ins), stand_ins
    assert all(e["type"] == "Warning" for e in stand_ins)


def test_the_churn_experiment_on_the_users_route_passes_the_gate(
    sandbox: Sandbox,
    healthy_contour: dict[str, str],
    user_route: tuple[dict[str, str], str],
    k: Any,
    tmp_path: Path,
    figures: dict[str, Any],
) -> None:
    settings, _ = user_route
    env = {key: str(value) for key, value in settings.items()}
    run = ChaosRun(EXPERIMENT, tmp_path, env, name="user-route-churn", variables=VARIABLES)
    journal = run.run(timeout_s=300)
    availability = activity(journal, "envoy-availability-across-the-fault")["output"] or {}
    window = activity(journal, "envoy-view-of-the-backend-at-the-end-of-the-window")["output"] or {}
    converged = activity(journal, "envoy-endpoints-converged-after-the-heal")["output"] or {}
    figures["user_route_churn"] = {
        "availability": availability.get("availability"),
        "requests": availability.get("requests"),
        "failures": availability.get("failures"),
        "longest_outage_s": availability.get("longest_outage_s"),
        "window_counters": (window.get("since") or {}).get("counters"),
        "failure_causes": (window.get("since") or {}).get("failure_causes"),
        "converged_after_s": converged.get("converged_after_s"),
    }

    assert journal["status"] == "completed", run.log()[-3000:]
    assert journal["steady_states"]["before"]["steady_state_met"] is True, run.log()[-3000:]
    assert activity(journal, "block-apiserver-egress")["output"]["verification"]["confirmed"] is True
    killed = activity(journal, "kill-a-backend-pod")
    assert killed["status"] == "succeeded" and len(killed["output"]) == 1, killed
    assert activity(journal, "the-fault-held-for-the-whole-window")["output"]["held"] is True
    # The run means something: the slices moved on while Envoy's view of the user's backend stayed frozen.
    assert window["since"]["endpointslices_changed"] is True, window["since"]
    assert window["since"]["membership_changed"] is False, window["since"]
    assert window["service"] == "shop/cart:80" and window["cluster"] == "shop_cart_80", window
    counters = window["since"]["counters"]
    assert counters.get("health_check.failure", 0) >= 1, counters
    assert availability["meets_min_availability"] is True, availability
    assert converged["converged"] is True, converged
    assert leftovers(k) == []

    gate = subprocess.run(
        [sys.executable, "-m", "chaoscontour.cli", "gate", str(run.journal_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert gate.returncode == 0, gate.stdout + gate.stderr


def test_an_httpproxy_contour_refuses_fails_apply_with_contours_own_words(sandbox: Sandbox) -> None:
    invalid = ROOT / "tests" / "fixtures" / "user-manifests-invalid"
    try:
        applied = sandbox.cli("apply", "--manifests", str(invalid), timeout_s=300)
        assert applied.returncode == 1, applied.stdout + applied.stderr
        assert "HTTPProxy broken-shop/cart" in applied.stderr and "is invalid, says Contour" in applied.stderr
        # Contour's own error (internal/dag/cache.go): port "8080" on service "broken-shop/cart" not matched
        assert 'port "8080" on service "broken-shop/cart" not matched' in applied.stderr, applied.stderr
    finally:
        deleted = sandbox.cli("delete", "--manifests", str(invalid), timeout_s=300)
        assert deleted.returncode == 0, deleted.stdout + deleted.stderr
