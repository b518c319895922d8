"""The Prometheus source on a real Prometheus scraping a real Envoy: the edge's series hold exactly the answers
Envoy gave, by class; ``prometheus_success_ratio`` counts exactly the requests sent in its window; a bad query or an
absent server is a clear ActivityFailed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from chaoslib.exceptions import ActivityFailed

from chaoscontour.activities.metrics import prometheus_success_ratio
from chaoscontour.edges import prometheus
from tests.support.backend import Backend
from tests.support.envoy import EnvoyProcess, static_bootstrap, status_through
from tests.support.prometheus import PrometheusProcess

VHOST = "echo.local"
CLUSTER = "default_echo_80"
BY_CLASS = f'sum by (envoy_response_code_class) (envoy_cluster_upstream_rq_xx{{envoy_cluster_name="{CLUSTER}"}})'


@dataclass(frozen=True)
class Scraped:
    prometheus_url: str
    envoy_url: str
    backend: Backend
    # The window in which Envoy answered 7 requests 200 and 3 with the backend's 503.
    start: float
    end: float


@pytest.fixture(scope="module")
def scraped() -> Iterator[Scraped]:
    with Backend() as backend:
        bootstrap = static_bootstrap(backend.port, virtual_host=VHOST)
        bootstrap["static_resources"]["clusters"][0]["alt_stat_name"] = CLUSTER
        with EnvoyProcess(bootstrap) as envoy, PrometheusProcess([envoy.admin_url[7:]], "/stats/prometheus") as prom:
            prom.wait_scraped()
            start = time.time()
            statuses = [status_through(envoy.url("/"), VHOST) for _ in range(7)]
            backend.fail_in(0, 30, mode="status")
            statuses += [status_through(envoy.url("/"), VHOST) for _ in range(3)]
            backend.heal()
            assert statuses == [200] * 7 + [503] * 3
            time.sleep(3)  # two scrapes after the traffic
            yield Scraped(prom.url, envoy.url("/"), backend, start - 2, time.time())


def test_a_range_query_returns_envoys_counters_by_class(scraped: Scraped) -> None:
    url, start, end = scraped.prometheus_url, scraped.start, scraped.end
    series = prometheus.range_series(url, BY_CLASS, start, end, 1, 10)
    by_class = {s.labels["envoy_response_code_class"]: s.points for s in series}
    assert sorted(by_class) == ["2", "5"]
    # Envoy makes a class's counter at its first answer of that class, so both series begin inside the window.
    assert by_class["2"][-1][1] == 7 and by_class["5"][-1][1] == 3
    assert by_class["5"][0][0] >= by_class["2"][0][0] > start
    for points in by_class.values():
        times = [t for t, _ in points]
        assert times == sorted(times) and start - 1 <= times[0] and times[-1] <= end + 1


def test_a_query_prometheus_rejects_names_the_server_and_the_query(scraped: Scraped) -> None:
    url, start, end = scraped.prometheus_url, scraped.start, scraped.end
    with pytest.raises(ActivityFailed) as failed:
        prometheus.range_series(url, "sum by (", start, end, 1, 10)
    assert url in str(failed.value) and "sum by (" in str(failed.value)


def test_an_absent_server_is_named() -> None:
    with pytest.raises(ActivityFailed) as failed:
        prometheus.range_series("http://127.0.0.1:9", "up", time.time() - 10, time.time(), 1, 2)
    assert "127.0.0.1:9" in str(failed.value)


def test_the_probe_counts_exactly_the_requests_of_its_window(scraped: Scraped) -> None:
    found: dict[str, object] = {}

    def probe() -> None:
        found.update(
            prometheus_success_ratio(
                scraped.prometheus_url,
                duration_s="6",
                cluster=CLUSTER,
                # a Gateway's listener as well: its name has a '-', which PromQL's strings must not see escaped
                listener_prefixes="ingress_http,http-80",
                scrape_interval_s="1",
                timeout_s="10",
            )
        )

    worker = threading.Thread(target=probe)
    worker.start()
    time.sleep(2.5)  # the window's first scrape is stored before the traffic
    statuses = [status_through(scraped.envoy_url, VHOST) for _ in range(12)]
    scraped.backend.fail_in(0, 30, mode="status")
    statuses += [status_through(scraped.envoy_url, VHOST) for _ in range(4)]
    scraped.backend.heal()
    assert statuses == [200] * 12 + [503] * 4
    worker.join(30)
    assert not worker.is_alive()
    assert (found["requests"], found["successes"], found["ratio"]) == (16, 12, 0.75)
    assert found["by_class"] == {"1xx": 0, "2xx": 12, "3xx": 0, "4xx": 0, "5xx": 4}
    assert found["source"] == "prometheus" and found["clusters"] == [CLUSTER] and found["restarted"] is False
    # No Contour here: no process start times and no DAG rebuilds to count.
    assert (found["contour_restarts"], found["contour_restart_count"], found["dag_rebuilds"]) == ({}, 0, None)


def test_without_a_prometheus_url_the_probe_measures_nothing_and_says_so() -> None:
    began = time.monotonic()
    found = prometheus_success_ratio("", duration_s=60)
    assert time.monotonic() - began < 1
    assert found["skipped"] and found["ratio"] is None and "Prometheus was not asked" in str(found["not_computable"])
