"""Envoy's view of a backend (domain/endpoints.py): stats and /clusters as Envoy 1.38 writes them, EndpointSlices as
the API server returns them. No mocks: text in, figures out."""

from __future__ import annotations

import pytest
from chaoslib.exceptions import ActivityFailed

from chaoscontour.activities.endpoints import envoy_backend_view, envoy_endpoints_converged
from chaoscontour.domain import endpoints as view
from chaoscontour.domain.envoy_stats import parse_stats

STAT = "demo_echo_80"


def stats_text(**values: int) -> str:
    """Envoy's /stats for cluster demo_echo_80 (the lines of a real sandbox Envoy, values overridden)."""
    base = {
        "membership_total": 2,
        "membership_healthy": 2,
        "membership_change": 1,
        "update_success": 2,
        "update_time": 1795788687149,
        "upstream_cx_connect_fail": 0,
        "upstream_cx_connect_timeout": 0,
        "upstream_rq_pending_failure_eject": 0,
        "upstream_rq_retry": 0,
        "upstream_rq_retry_success": 0,
        "upstream_rq_total": 2952,
    }
    base.update(values)
    lines = [f"cluster.{STAT}.{name}: {value}" for name, value in base.items()]
    lines.append(f'cluster.{STAT}.version_text: "05b4a812-3"')
    lines.append(f"cluster.{STAT}.upstream_rq_time: P0(0,0) P25(0,0) P50(0,0)")
    lines.append("cluster.demo_other_80.membership_total: 7")
    return "\n".join(lines) + "\n"


def snapshot(at: float = 0.0, **values: int) -> view.BackendSnapshot:
    found = view.backend_snapshot(parse_stats(stats_text(**values)), STAT, at)
    assert found is not None
    return found


def test_contour_names_a_clusters_stats_namespace_service_port():
    assert view.cluster_stat_name("demo", "echo", 80) == "demo_echo_80"
    assert view.stats_filter("demo_echo_80") == r"^cluster\.demo_echo_80\."


def test_a_snapshot_reads_only_its_cluster_and_treats_absent_counters_as_zero():
    snap = snapshot(membership_total=3, membership_healthy=1)
    assert snap.membership == {"total": 3, "healthy": 1, "degraded": 0, "excluded": 0}
    assert snap.get("upstream_rq_503") == 0
    assert snap.eds_version_text == "05b4a812-3"


def test_a_cluster_envoy_does_not_have_is_none():
    assert view.backend_snapshot(parse_stats(stats_text()), "demo_missing_80", 0.0) is None


def test_delta_over_a_frozen_eds_says_requests_failed_on_connect_timeouts_to_a_gone_address():
    before = snapshot(0.0)
    after = snapshot(
        30.0,
        upstream_cx_connect_fail=12,
        upstream_cx_connect_timeout=12,
        upstream_rq_pending_failure_eject=12,
        upstream_rq_5xx=12,
        upstream_rq_503=12,
        upstream_rq_total=3552,
    )
    delta = view.backend_delta(before, after)
    assert delta["seconds"] == 30.0
    assert delta["eds_updated"] is False and delta["membership_changed"] is False
    assert delta["counters"]["upstream_rq_pending_failure_eject"] == 12
    assert "membership_change" not in delta["counters"], "only counters that moved are listed"
    causes = view.failure_causes(delta)
    assert any("12 of them timed out" in c for c in causes)
    assert any("UF" in c for c in causes)
    assert any("did not change meanwhile" in c and "EDS frozen" in c for c in causes)


def test_retries_and_health_checks_that_saved_requests_are_named():
    delta = view.backend_delta(
        snapshot(0.0),
        snapshot(
            10.0,
            upstream_cx_connect_fail=2,
            upstream_rq_retry=2,
            upstream_rq_retry_success=2,
            membership_healthy=1,
            **{"health_check.failure": 3, "health_check.network_failure": 3},
        ),
    )
    causes = view.failure_causes(delta)
    assert "2 retry(ies), 2 of which succeeded" in causes
    assert any("3 failed active health check(s)" in c for c in causes)
    assert "1 of 2 endpoint(s) unhealthy at the end" in causes


def test_a_push_of_the_same_endpoints_is_an_update_but_not_a_membership_change():
    # Envoy reconnecting to another Contour replica gets the same endpoints again, with a new update time.
    again = view.backend_delta(snapshot(0.0), snapshot(1.0, update_time=1795788699999))
    assert again["eds_updated"] is True and again["membership_changed"] is False
    changed = view.backend_delta(snapshot(0.0), snapshot(1.0, membership_change=2, update_time=1795788699999))
    assert changed["membership_changed"] is True


def test_a_counter_that_went_down_is_a_reset_not_a_negative_delta():
    delta = view.backend_delta(snapshot(0.0, upstream_rq_total=100), snapshot(1.0, upstream_rq_total=4))
    assert delta["counters"]["upstream_rq_total"] == 4
    assert delta["counters_reset"] == ["upstream_rq_total"]


def test_nothing_wrong_means_no_causes():
    assert view.failure_causes(view.backend_delta(snapshot(0.0), snapshot(5.0))) == []


CLUSTERS = """\
demo/echo/80/da39a3ee5e::observability_name::demo_echo_80
demo/echo/80/da39a3ee5e::default_priority::max_connections::1024
demo/echo/80/da39a3ee5e::eds_service_name::demo/echo/http
demo/echo/80/da39a3ee5e::10.213.0.12:8080::cx_connect_fail::7
demo/echo/80/da39a3ee5e::10.213.0.12:8080::rq_error::7
demo/echo/80/da39a3ee5e::10.213.0.12:8080::rq_success::10
demo/echo/80/da39a3ee5e::10.213.0.12:8080::health_flags::/failed_active_hc
demo/echo/80/da39a3ee5e::10.213.0.14:8080::rq_success::1495
demo/echo/80/da39a3ee5e::10.213.0.14:8080::health_flags::healthy
projectcontour/other/80/da39a3ee5e::observability_name::projectcontour_other_80
projectcontour/other/80/da39a3ee5e::10.213.0.99:8080::health_flags::healthy
"""


def test_envoy_hosts_are_read_from_the_admin_clusters_text_of_that_cluster_only():
    hosts = view.envoy_hosts(CLUSTERS, STAT)
    assert hosts is not None and sorted(hosts) == ["10.213.0.12:8080", "10.213.0.14:8080"]
    dead = hosts["10.213.0.12:8080"]
    assert (dead.cx_connect_fail, dead.rq_error, dead.healthy) == (7, 7, False)
    assert hosts["10.213.0.14:8080"].healthy
    assert view.envoy_hosts(CLUSTERS, "demo_nothing_80") is None


def slice_(*endpoints: tuple[str, bool | None], port_name: str = "http", port: int = 8080) -> dict:
    return {
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [ip], "conditions": {} if ready is None else {"ready": ready}} for ip, ready in endpoints
        ],
    }


def test_ready_endpoints_follow_contour_missing_ready_is_ready_and_not_ready_is_left_out():
    ready, not_ready = view.ready_endpoints(
        [slice_(("10.213.0.14", True), ("10.213.0.15", None), ("10.213.0.12", False))], "http"
    )
    assert ready == {"10.213.0.14:8080", "10.213.0.15:8080"}
    assert not_ready == {"10.213.0.12:8080"}
    assert view.ready_endpoints([slice_(("10.213.0.14", True), port_name="metrics")], "http") == (set(), set())


def test_the_service_port_is_found_by_number_and_unnamed_ports_are_empty_names():
    service = {"spec": {"ports": [{"name": "http", "port": 80}, {"port": 9090}]}}
    assert view.service_port_name(service, 80) == "http"
    assert view.service_port_name(service, 9090) == ""
    assert view.service_port_name(service, 81) is None


def test_by_address_a_dead_pod_still_in_envoy_is_stale_and_its_replacement_missing():
    hosts = view.envoy_hosts(CLUSTERS, STAT)
    comparison = view.compare_endpoints(
        ["10.213.0.14:8080", "10.213.0.16:8080"], hosts=hosts, membership_total=2, membership_healthy=1
    )
    assert comparison.method == "addresses" and comparison.matches is False
    assert comparison.stale == ("10.213.0.12:8080",)
    assert comparison.missing == ("10.213.0.16:8080",)
    assert comparison.unhealthy == ("10.213.0.12:8080",)


def test_by_count_a_replaced_pod_goes_unseen_and_the_result_says_so():
    comparison = view.compare_endpoints(
        ["10.213.0.14:8080", "10.213.0.16:8080"], hosts=None, membership_total=2, membership_healthy=2
    )
    assert comparison.method == "counts" and comparison.matches is True
    assert "replaced by a new one keeps the count" in comparison.as_dict()["notes"][0]
    assert not view.compare_endpoints(["a:1", "b:1"], hosts=None, membership_total=2, membership_healthy=1).matches


def test_matching_needs_every_endpoint_known_and_healthy():
    hosts = {"10.0.0.1:80": view.EnvoyHost("10.0.0.1:80", "healthy")}
    assert view.compare_endpoints(["10.0.0.1:80"], hosts=hosts, membership_total=1, membership_healthy=1).matches
    pending = {"10.0.0.1:80": view.EnvoyHost("10.0.0.1:80", "/failed_active_hc/pending_active_hc")}
    assert not view.compare_endpoints(["10.0.0.1:80"], hosts=pending, membership_total=1, membership_healthy=0).matches


# The activities check every argument before anything is read, and say what to fix.


def test_a_delta_against_a_reading_never_taken_fails_before_reading_anything():
    with pytest.raises(ActivityFailed, match="no reading named 'before-the-fault'"):
        envoy_backend_view(stats_url="http://127.0.0.1:9/stats", service="echo", since="before-the-fault")


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"port": "eighty"}, "port must be a number"),
        ({"port": "70000"}, "port must be between 1 and 65535"),
        ({"service": "Echo"}, "not a valid object name"),
        ({"stats_url": "127.0.0.1:8002/stats"}, "stats_url must be an http"),
        ({"within_s": "0"}, "within_s must be greater than 0"),
        ({"required_successes": "2.5"}, "required_successes must be a whole number"),
        ({"every_s": "30", "within_s": "10"}, "every_s (30) must be shorter than within_s (10)"),
    ],
)
def test_convergence_arguments_are_checked_strictly(kwargs, text):
    arguments = {"stats_url": "http://127.0.0.1:9/stats", "service": "echo", **kwargs}
    with pytest.raises(ActivityFailed, match=text.replace("(", r"\(").replace(")", r"\)")):
        envoy_endpoints_converged(**arguments)
