"""``envoy_backend_view`` and ``envoy_endpoints_converged`` against a real API server (Service and EndpointSlices)
and a local HTTP server that answers as Envoy's stats listener, admin ``/clusters`` and listener would.

The Envoy side is a stand-in here (the real one runs in tests/e2e/test_endpoint_churn.py): what these tests prove is
the probes' reading of the slices, the deltas between named readings of one process, the address comparison, the
convergence bound and the stop request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed
from kubernetes import client

from chaoscontour.activities.endpoints import envoy_backend_view, envoy_endpoints_converged
from chaoscontour.edges import stop
from tests.support.http_server import LocalServer, QuietHandler

A, B, C = "10.9.0.11", "10.9.0.12", "10.9.0.13"


class _EnvoyHandler(QuietHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        envoy: FakeEnvoy = self.server.owner
        if self.path.startswith("/stats"):
            self.answer(200, envoy.stats())
        elif self.path.startswith("/clusters"):
            self.answer(200, envoy.clusters())
        else:
            self.answer(envoy.listener_status, "echo\n")


class FakeEnvoy:
    """Envoy's /stats (cluster <ns>_echo_80), /clusters and a listener, all from fields a test changes."""

    def __init__(self, namespace: str) -> None:
        self.stat = f"{namespace}_echo_80"
        self.cluster = f"{namespace}/echo/80/da39a3ee5e"
        self.hosts = {A: "healthy", B: "healthy"}
        self.counters: dict[str, int] = {"membership_change": 1, "upstream_cx_connect_fail": 0}
        self.listener_status = 200
        self.http = LocalServer(_EnvoyHandler, owner=self, name="fake-envoy-admin").start()
        self.url = self.http.url

    def stats(self) -> str:
        healthy = sum(1 for flags in self.hosts.values() if flags == "healthy")
        values = {"membership_total": len(self.hosts), "membership_healthy": healthy, **self.counters}
        return "".join(f"cluster.{self.stat}.{name}: {value}\n" for name, value in values.items())

    def clusters(self) -> str:
        lines = [f"{self.cluster}::observability_name::{self.stat}"]
        for ip, flags in self.hosts.items():
            lines.append(f"{self.cluster}::{ip}:8080::health_flags::{flags}")
        return "\n".join(lines) + "\n"


@pytest.fixture
def envoy(namespace: str) -> Iterator[FakeEnvoy]:
    fake = FakeEnvoy(namespace)
    yield fake
    fake.http.stop()


def _slice(ips: dict[str, bool]) -> dict[str, Any]:
    return {
        "metadata": {"name": "echo-abcde", "labels": {"kubernetes.io/service-name": "echo"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip, ready in ips.items()],
    }


@pytest.fixture
def backend(api: client.ApiClient, namespace: str, kubeconfig_env: str) -> client.DiscoveryV1Api:
    core = client.CoreV1Api(api)
    service: Any = {"metadata": {"name": "echo"}, "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}
    core.create_namespaced_service(namespace, service)
    discovery = client.DiscoveryV1Api(api)
    discovery.create_namespaced_endpoint_slice(namespace, _slice({A: True, B: True}))
    return discovery


def _args(envoy: FakeEnvoy, namespace: str) -> dict[str, Any]:
    return {
        "stats_url": f"{envoy.url}/stats",
        "admin_url": f"{envoy.url}/clusters",
        "namespace": namespace,
        "service": "echo",
        "port": "80",
    }


def test_a_pod_gone_from_the_slices_but_not_from_envoy_is_stale_and_the_delta_says_why(
    backend: client.DiscoveryV1Api, envoy: FakeEnvoy, namespace: str
) -> None:
    args = _args(envoy, namespace)
    before = envoy_backend_view(**args, snapshot="before-the-fault")
    assert before["comparison"]["matches"] is True
    assert before["comparison"]["method"] == "addresses"

    # A dies, C replaces it; Envoy hears nothing (EDS frozen) and fails to connect to A.
    backend.replace_namespaced_endpoint_slice("echo-abcde", namespace, _slice({A: False, B: True, C: True}))
    envoy.counters.update(
        upstream_cx_connect_fail=9, upstream_cx_connect_timeout=9, upstream_rq_pending_failure_eject=9
    )
    after = envoy_backend_view(**args, since="before-the-fault")
    assert after["comparison"]["stale"] == [f"{A}:8080"]
    assert after["comparison"]["missing"] == [f"{C}:8080"]
    assert after["endpointslices_not_ready"] == [f"{A}:8080"]
    assert after["since"]["membership_changed"] is False
    assert after["since"]["endpointslices_changed"] is True
    assert any("UF" in cause for cause in after["since"]["failure_causes"])

    counted = envoy_backend_view(**{**args, "admin_url": ""})
    assert counted["comparison"]["method"] == "counts"
    assert counted["comparison"]["matches"] is True, "a count cannot see the replacement: the note says so"
    assert counted["comparison"]["notes"]


def test_convergence_is_timed_from_the_probes_start_until_envoy_matches_and_requests_succeed(
    backend: client.DiscoveryV1Api, envoy: FakeEnvoy, namespace: str
) -> None:
    args = _args(envoy, namespace)
    envoy_backend_view(**args, snapshot="before")
    backend.replace_namespaced_endpoint_slice("echo-abcde", namespace, _slice({B: True, C: True}))

    def contour_back() -> None:
        time.sleep(1.0)
        envoy.hosts = {B: "healthy", C: "healthy"}
        envoy.counters["membership_change"] = 2

    threading.Thread(target=contour_back, daemon=True).start()
    result = envoy_endpoints_converged(
        **args, url=f"{envoy.url}/", host="echo.example.com", since="before", within_s="20", required_successes="3"
    )
    assert result["converged"] is True
    assert 0.9 <= result["endpoints_matched_after_s"] <= 3.0, result
    assert result["converged_after_s"] >= result["endpoints_matched_after_s"]
    assert result["since"]["membership_changed"] is True


def test_no_convergence_within_the_bound_fails_naming_the_stale_endpoint(
    backend: client.DiscoveryV1Api, envoy: FakeEnvoy, namespace: str
) -> None:
    backend.replace_namespaced_endpoint_slice("echo-abcde", namespace, _slice({B: True, C: True}))
    started = time.monotonic()
    with pytest.raises(ActivityFailed, match=f"did not converge within 1 s.*{A}:8080"):
        envoy_endpoints_converged(**_args(envoy, namespace), url=f"{envoy.url}/", within_s="1")
    assert time.monotonic() - started < 5


def test_a_stop_request_ends_the_wait_within_a_second_with_what_was_seen(
    backend: client.DiscoveryV1Api, envoy: FakeEnvoy, namespace: str
) -> None:
    envoy.listener_status = 503
    timer = threading.Timer(1.0, stop.request, args=("SIGTERM received",))
    timer.start()
    started = time.monotonic()
    try:
        result = envoy_endpoints_converged(**_args(envoy, namespace), url=f"{envoy.url}/", within_s="60")
    finally:
        timer.cancel()
        stop.reset()
    assert time.monotonic() - started < 3
    assert result["stopped_early"] is True and result["converged"] is False
    assert result["failed_requests"].get("http_503", 0) >= 1
