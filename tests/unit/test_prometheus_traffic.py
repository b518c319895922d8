"""The Prometheus source's arithmetic: range-query series become the readings the direct source makes, so a window
gives the same figures either way; a sum going backwards (one Envoy restarted) gives no ratio; Contour's restarts
are new process start times; DAG rebuilds follow Prometheus' counter-reset rule."""

from itertools import pairwise
from typing import Any

from chaoscontour.domain.envoy_traffic import interval, reading, traffic_summary
from chaoscontour.domain.prometheus_traffic import PromSeries, counter_increase, readings_from_series, restarts
from chaoscontour.tools.findings import side_by_side, traffic_figures

T0 = 1_790_000_000.0
CLUSTER = "default_echo_80"
PREFIXES = ["ingress_http"]


def series(labels: dict[str, str], *values: float | None) -> PromSeries:
    return PromSeries(labels, [(T0 + n, float(v)) for n, v in enumerate(values) if v is not None])


def summary(readings: list[Any]) -> dict[str, Any]:
    return traffic_summary([interval(a, b, PREFIXES) for a, b in pairwise(readings)], None)


def envoy_series(ok: list[float | None], failed: list[float | None], listener: list[float | None]) -> list[Any]:
    total = [None if o is None and f is None else (o or 0) + (f or 0) for o, f in zip(ok, failed, strict=True)]
    return readings_from_series(
        [
            series({"envoy_cluster_name": CLUSTER, "envoy_response_code_class": "2"}, *ok),
            series({"envoy_cluster_name": CLUSTER, "envoy_response_code_class": "5"}, *failed),
        ],
        [series({"envoy_cluster_name": CLUSTER}, *total)],
        [series({"envoy_http_conn_manager_prefix": "ingress_http"}, *listener)],
        [series({}, *(100 + n for n in range(len(ok))))],
    )


def test_the_series_give_the_figures_the_same_counters_read_directly_give() -> None:
    from_prometheus = summary(envoy_series([10, 15, 20, 27], [None, None, 1, 3], [0, 0, 1, 4]))
    direct = summary(
        [
            reading(
                {f"cluster.{CLUSTER}.upstream_rq_total": t, f"cluster.{CLUSTER}.upstream_rq_2xx": ok, **five, **lis},
                T0 + n,
            )
            for n, (t, ok, five, lis) in enumerate(
                [
                    (10, 10, {}, {"http.ingress_http.downstream_rq_5xx": 0}),
                    (15, 15, {}, {"http.ingress_http.downstream_rq_5xx": 0}),
                    (21, 20, {f"cluster.{CLUSTER}.upstream_rq_5xx": 1}, {"http.ingress_http.downstream_rq_5xx": 1}),
                    (30, 27, {f"cluster.{CLUSTER}.upstream_rq_5xx": 3}, {"http.ingress_http.downstream_rq_5xx": 4}),
                ]
            )
        ]
    )
    assert from_prometheus == direct
    # 17 answered 2xx and 3 answered 5xx by the cluster, plus one 5xx the listener answered for no cluster.
    assert (from_prometheus["requests"], from_prometheus["successes"], from_prometheus["unrouted_5xx"]) == (21, 17, 1)


def test_a_class_counter_that_appears_in_the_window_counts_from_zero() -> None:
    figures = summary(envoy_series([5, 5, 9], [None, 2, 2], [0, 2, 2]))
    assert figures["by_class"]["5xx"] == 2 and figures["requests"] == 6


def test_a_sum_that_goes_backwards_is_a_restart_and_gives_no_ratio() -> None:
    figures = summary(envoy_series([10, 12, 3, 8], [0, 0, 0, 0], [0, 0, 0, 0]))
    assert figures["ratio"] is None and figures["restarted"] is True
    assert "went from 12 to 3" in figures["resets"][0]["reason"]


def test_a_counter_increase_takes_a_drop_as_a_restart_from_zero() -> None:
    assert counter_increase([(0, 4), (1, 6), (2, 1), (3, 3)]) == 2 + 1 + 2
    assert counter_increase([(0, 4)]) == 0


def test_restarts_are_the_new_start_times_after_the_window_began() -> None:
    found = restarts(
        [
            series({"pod": "contour-a"}, T0 - 500, T0 - 500, T0 + 1.5, T0 + 1.5, T0 + 2.5),
            series({"pod": "contour-b"}, T0 - 400, T0 - 400),
            PromSeries({"pod": "contour-c"}, [(T0 + 3, T0 + 2.9)]),
        ],
        T0,
    )
    assert found == {"contour-a": [T0 + 1.5, T0 + 2.5], "contour-b": [], "contour-c": [T0 + 2.9]}


def _run(func: str, module: str, output: dict[str, Any]) -> dict[str, Any]:
    activity = {
        "type": "probe",
        "name": func.replace("_", "-"),
        "provider": {"type": "python", "module": module, "func": func},
    }
    return {"activity": activity, "output": output, "status": "succeeded"}


def test_the_gate_sets_prometheus_beside_the_sampler_and_the_direct_counters_with_contours_restarts() -> None:
    direct = summary(envoy_series([10, 20], [0, 0], [0, 0]))
    prom = summary(envoy_series([10, 19], [0, 1], [0, 1]))
    prom.update({"source": "prometheus", "contour_restart_count": 2, "dag_rebuilds": 7, "skipped": None})
    skipped = traffic_summary([], None) | {"source": "prometheus", "skipped": "no prometheus_url given"}
    availability = {"requests": 3000, "successes": 2999, "availability": 2999 / 3000, "timeline": []}
    journal = {
        "run": [
            _run("envoy_availability", "chaoscontour.activities.envoy", availability),
            _run("envoy_success_ratio", "chaoscontour.activities.traffic", direct),
            _run("prometheus_success_ratio", "chaoscontour.activities.metrics", prom),
            _run("prometheus_success_ratio", "chaoscontour.activities.metrics", skipped),
        ]
    }
    from chaoscontour.tools.findings import availability_figures

    lines = side_by_side(availability_figures(journal), traffic_figures(journal))
    assert lines[0].startswith("sampler 99.97 % of 3,000; Envoy's counters 100.00 % of 10")
    assert "Prometheus (Envoy's counters) 90.00 % of 10 on cluster default_echo_80" in lines[1]
    assert "Contour restarts seen 2, DAG rebuilds 7" in lines[1]
    assert "Prometheus (Envoy's counters): not asked (no prometheus_url given)" in lines[2]
