"""A user's own manifests on the sandbox (examples/my-app: not the demo's), judged by the endpoint-churn experiment.

``chaoscontour-sandbox apply --manifests examples/my-app --route shop/cart`` is the code path of ``sandbox up
--manifests`` on the session's running sandbox. The sandbox has no registry: ``apply`` first refuses, naming the
image the node lacks, and creates nothing; ``sandbox load`` imports the user's image archive (here Kubernetes' agnhost
under the example's name, as ``make example-image`` writes it), and the apply that follows runs it unmodified. The
settings point at the
user's route (fqdn ``shop.example.com``, prefix ``/cart``, Service ``shop/cart``), and
experiments/endpoint-churn-during-outage.json runs against that route as a user would run it (settings.env, no
admin relay: Envoy's endpoints compared with the EndpointSlices by count). The route as written (retryPolicy on
connect failure, healthCheckPolicy, Service annotation ``projectcontour.io/max-retries``) passes the gate; re-applied
without retryPolicy and healthCheckPolicy, they leave Envoy (the route then fails the gate as the demo route as
shipped does in test_endpoint_churn.py). An HTTPProxy Contour
refuses fails ``apply`` with Contour's words. ``sandbox delete`` removes it all and puts the settings back on the
demo route.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.support.chaosrun import CHURN_WINDOWS, EXPERIMENTS, ChaosRun, activity, gate_verdict
from tests.support.paths import FIXTURES, ROOT
from tests.support.sandbox import Sandbox, leftovers, wait_until

EXAMPLE = ROOT / "examples" / "my-app"
EXPERIMENT = EXPERIMENTS / "endpoint-churn-during-outage.json"
VARIABLES = CHURN_WINDOWS


CART_IMAGE = "registry.example.com/shop/cart:2.3"


def _namespaces(sandbox: Sandbox) -> list[str]:
    return [n["metadata"]["name"] for n in sandbox.get("/api/v1/namespaces")["items"]]


@pytest.fixture(scope="module")
def loaded(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """The example refused for its missing image (the refusal's stderr), then its image loaded (load's output)."""
    refused = sandbox.cli("apply", "--manifests", str(EXAMPLE), "--route", "shop/cart", timeout_s=120)
    archive = tmp_path_factory.mktemp("images") / "cart.tar"
    argv = [sys.executable, "-m", "chaoscontour_sandbox.nodeimages", CART_IMAGE, str(archive)]
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    load = sandbox.cli("load", str(archive), timeout_s=300)
    assert load.returncode == 0, load.stdout + load.stderr
    return refused.stderr + f"\n(exit {refused.returncode})", load.stdout


def test_apply_refuses_an_image_the_node_lacks_and_creates_nothing_until_it_is_loaded(
    sandbox: Sandbox, loaded: tuple[str, str]
) -> None:
    refused, load = loaded
    assert "(exit 1)" in refused and f"{CART_IMAGE}: not on the node (Deployment shop/cart" in refused, refused
    assert "chaoscontour-sandbox load IMAGE.tar" in refused, refused
    assert "shop" not in _namespaces(sandbox)  # refused before anything was sent
    assert f"loaded: {CART_IMAGE}" in load, load
    missing = sandbox.cli("load", str(sandbox.dir / "no-such.tar"), timeout_s=60)
    assert missing.returncode == 1 and "no such file" in missing.stderr, missing.stdout + missing.stderr


@pytest.fixture(scope="module")
def user_route(
    sandbox: Sandbox, sandbox_env: dict[str, str], loaded: tuple[str, str]
) -> Iterator[tuple[dict[str, str], str]]:
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
        assert "shop" not in _namespaces(sandbox)


def test_apply_runs_the_users_image_as_written_and_points_the_settings_at_the_route(
    sandbox: Sandbox, user_route: tuple[dict[str, str], str]
) -> None:
    settings, output = user_route
    assert "Deployment shop/cart: 2/2 ready" in output and "HTTPProxy shop/cart: valid" in output, output
    # Envoy off its 60 s no_traffic_interval before an experiment may start: the route's 1 s health checks run.
    assert "shop_cart_80: Envoy health-checks it every 1 s" in output, output
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
    pods = sandbox.get("/api/v1/namespaces/shop/pods", labelSelector="app=cart")["items"]
    # The kubelet ran the image as written, as the user the manifest asks for.
    for pod in pods:
        pid = sandbox.container_pid("shop", pod["metadata"]["name"], "cart")
        uid_line = next(
            line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:")
        )
        assert uid_line.split()[1:] == ["10001"] * 4, uid_line


def _ready_cart_pods(sandbox: Sandbox) -> int:
    pods = sandbox.get("/api/v1/namespaces/shop/pods", labelSelector="app=cart")["items"]
    return (
        sum(
            1
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
        )
        if len(pods) == 2
        else 0
    )


def _churn(
    sandbox: Sandbox, settings: dict[str, str], tmp_path: Path, name: str, figures: dict[str, Any]
) -> tuple[ChaosRun, dict[str, Any], subprocess.CompletedProcess[str]]:
    """The churn experiment on the user's route as a user runs it (settings.env), then the gate on its journal."""
    wait_until("two Ready cart pods", lambda: _ready_cart_pods(sandbox) == 2, 120)
    run = ChaosRun(EXPERIMENT, tmp_path, dict(settings), name=name, variables=VARIABLES)
    journal = run.run(timeout_s=300)
    before = (journal.get("steady_states") or {}).get("before") or {}
    # Said first: a steady state that failed leaves no method activity for the lines below to look up.
    assert before.get("steady_state_met") is True, json.dumps(before.get("probes"), default=str)[-3000:]
    availability = activity(journal, "envoy-availability-across-the-fault")["output"] or {}
    window = activity(journal, "envoy-view-of-the-backend-at-the-end-of-the-window")["output"] or {}
    converged = activity(journal, "envoy-endpoints-converged-after-the-heal")["output"] or {}
    figures[name] = {
        "availability": availability.get("availability"),
        "requests": availability.get("requests"),
        "failures": availability.get("failures"),
        "error_kinds": availability.get("error_kinds"),
        "longest_outage_s": availability.get("longest_outage_s"),
        "window_counters": (window.get("since") or {}).get("counters"),
        "failure_causes": (window.get("since") or {}).get("failure_causes"),
        "converged_after_s": converged.get("converged_after_s"),
    }
    return run, journal, gate_verdict(run.journal_path)


def _common_checks(run: ChaosRun, journal: dict[str, Any], k: Any) -> None:
    assert journal["status"] == "completed", run.log()[-3000:]
    assert journal["steady_states"]["before"]["steady_state_met"] is True, run.log()[-3000:]
    assert activity(journal, "block-apiserver-egress")["output"]["verification"]["confirmed"] is True
    killed = activity(journal, "kill-a-backend-pod")
    assert killed["status"] == "succeeded" and len(killed["output"]) == 1, killed
    assert activity(journal, "the-fault-held-for-the-whole-window")["output"]["held"] is True
    window = activity(journal, "envoy-view-of-the-backend-at-the-end-of-the-window")["output"]
    assert window["service"] == "shop/cart:80" and window["cluster"] == "shop_cart_80", window
    # The run means something: the slices moved on while Envoy's view of the user's backend stayed frozen.
    assert window["since"]["endpointslices_changed"] is True, window["since"]
    assert window["since"]["membership_changed"] is False, window["since"]
    assert activity(journal, "envoy-endpoints-converged-after-the-heal")["output"]["converged"] is True
    assert leftovers(k) == []


def test_the_churn_experiment_on_the_users_route_passes_the_gate(
    sandbox: Sandbox,
    healthy_contour: dict[str, str],
    user_route: tuple[dict[str, str], str],
    k: Any,
    tmp_path: Path,
    figures: dict[str, Any],
) -> None:
    settings, _ = user_route
    run, journal, gate = _churn(sandbox, settings, tmp_path, "user_route_churn", figures)
    _common_checks(run, journal, k)
    window = activity(journal, "envoy-view-of-the-backend-at-the-end-of-the-window")["output"]
    assert window["since"]["counters"].get("health_check.failure", 0) >= 1, window["since"]["counters"]
    availability = activity(journal, "envoy-availability-across-the-fault")["output"]
    assert availability["meets_min_availability"] is True, availability
    assert gate.returncode == 0, gate.stdout + gate.stderr


def _health_checks(stats_url: str) -> int:
    text = requests.get(stats_url, params={"filter": r"^cluster\.shop_cart_80\.health_check\.attempt$"}, timeout=2).text
    return sum(int(line.rsplit(":", 1)[1]) for line in text.splitlines() if ":" in line)


def test_reapplying_the_route_without_retries_and_health_checks_takes_them_out_of_envoy(
    sandbox: Sandbox, healthy_contour: dict[str, str], user_route: tuple[dict[str, str], str], tmp_path: Path
) -> None:
    """``apply`` again with the policies removed: server-side apply drops the fields this manager no longer sets, and
    Envoy stops health-checking the cart endpoints. Not followed by a churn run: the route without them fails the
    gate exactly as the demo route as shipped does (test_endpoint_churn.py), every run."""
    settings, _ = user_route
    plain = tmp_path / "my-app-plain"
    shutil.copytree(EXAMPLE, plain)
    proxy = yaml.safe_load((plain / "httpproxy.yaml").read_text())
    for route in proxy["spec"]["routes"]:
        route.pop("retryPolicy")
        route.pop("healthCheckPolicy")
    (plain / "httpproxy.yaml").write_text(yaml.safe_dump(proxy))
    stats = settings["ENVOY_STATS_URL"]
    assert not _checks_stopped(stats), "the example's health checks run before the re-apply"
    applied = sandbox.cli("apply", "--manifests", str(plain), "--route", "shop/cart", timeout_s=300)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    stored = sandbox.get("/apis/projectcontour.io/v1/namespaces/shop/httpproxies/cart")
    assert all("retryPolicy" not in r and "healthCheckPolicy" not in r for r in stored["spec"]["routes"]), stored
    wait_until("Envoy to stop health-checking the cart endpoints", lambda: _checks_stopped(stats), 60, every_s=0.1)


def _checks_stopped(stats_url: str) -> bool:
    before = _health_checks(stats_url)
    time.sleep(2.5)  # the example checks every second
    return _health_checks(stats_url) == before


def test_an_httpproxy_contour_refuses_fails_apply_with_contours_own_words(sandbox: Sandbox) -> None:
    invalid = FIXTURES / "user-manifests-invalid"
    try:
        applied = sandbox.cli("apply", "--manifests", str(invalid), timeout_s=300)
        assert applied.returncode == 1, applied.stdout + applied.stderr
        assert "HTTPProxy broken-shop/cart" in applied.stderr and "is invalid, says Contour" in applied.stderr
        # Contour's own error (internal/dag/cache.go): port "8080" on service "broken-shop/cart" not matched
        assert 'port "8080" on service "broken-shop/cart" not matched' in applied.stderr, applied.stderr
    finally:
        deleted = sandbox.cli("delete", "--manifests", str(invalid), timeout_s=300)
        assert deleted.returncode == 0, deleted.stdout + deleted.stderr
