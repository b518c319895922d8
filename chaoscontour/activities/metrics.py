"""What a user's own Prometheus says about the fault window: Envoy's success ratio from the counters it scraped,
Contour's restarts and its DAG rebuilds.

`prometheus_success_ratio` runs in the background across the fault window, beside `envoy_availability` (what the
sampler's client saw) and `envoy_success_ratio` (Envoy's counters read directly). At the end of its window it
waits two scrapes, then asks Prometheus for the window's series (``edges.prometheus``, through
chaostoolkit-prometheus) and leaves the arithmetic to ``domain.prometheus_traffic`` and ``domain.envoy_traffic``,
the same as the direct reading's. Without a Prometheus URL it measures nothing and says so.

No ``from __future__ import annotations`` here: chaostoolkit's discovery reads the annotations as objects.
"""

import itertools
import re
import time
from typing import Any, Dict, List

from logzero import logger

from chaoscontour.activities._common import user_errors
from chaoscontour.activities.traffic import DEFAULT_PREFIXES, PREFIX_NAME, parse_cluster, parse_names
from chaoscontour.domain import prometheus_traffic
from chaoscontour.domain.clock import format_utc
from chaoscontour.domain.envoy_traffic import interval, traffic_summary
from chaoscontour.domain.inputs import InvalidInput, parse_http_url, parse_seconds, redact_url
from chaoscontour.edges import prometheus, stop

__all__ = ["prometheus_success_ratio"]

PROMETHEUS_EXAMPLE = "http://prometheus.monitoring:9090"
MAX_TIMEOUT_S = 300.0
# Label matchers, comma-separated: `container="contour"`, `namespace="projectcontour",app=~"contour.*"`.
_MATCHER = r'\s*[A-Za-z_][A-Za-z0-9_]*\s*(?:=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*'
_SELECTOR = re.compile(f"{_MATCHER}(?:,{_MATCHER})*")


def _selector(value: object) -> str:
    if not isinstance(value, str) or not _SELECTOR.fullmatch(value):
        raise InvalidInput(
            "contour_selector must be Prometheus label matchers for Contour's own metrics, such as "
            f'\'container="contour"\' or \'namespace="projectcontour",app="contour"\'; got {value!r}'
        )
    return value.strip()


def _skipped(reason: str) -> Dict[str, Any]:
    result = traffic_summary([], None)
    result.update({"source": "prometheus", "skipped": reason, "not_computable": reason, "contour_restarts": {}})
    result.update({"contour_restart_count": None, "dag_rebuilds": None})
    return result


@user_errors
def prometheus_success_ratio(
    prometheus_url: str = "",
    duration_s: float = 60.0,
    cluster: str = "",
    listener_prefixes: List[str] = DEFAULT_PREFIXES,
    contour_selector: str = prometheus_traffic.CONTOUR_DEFAULT_SELECTOR,
    scrape_interval_s: float = 15.0,
    timeout_s: float = 10.0,
) -> Dict[str, Any]:
    """Wait out a window, then ask Prometheus what Envoy counted in it, and how often Contour restarted.

    Meant to run as a `background: true` probe beside `envoy_availability`, started before the fault, with a
    `duration_s` that covers the fault and the recovery. When the window ends it waits two scrape intervals (so
    the window's last scrape is stored), then runs range queries over the window, one step per scrape interval:
    the routed cluster's answers by class (`envoy_cluster_upstream_rq_xx`), the 5xx of Contour's HTTP listeners
    (`envoy_http_downstream_rq_xx`, so Envoy's own 5xx for a request that reached no cluster count too),
    `envoy_server_uptime`, and Contour's `process_start_time_seconds` and `contour_dagrebuild_total`. Envoy's
    figures are summed over its pods, as a dashboard shows them. Prometheus gives a counter's value at each step as
    of its last scrape, so the window it sees starts and ends up to one scrape interval early.

    Returns the same figures as `envoy_success_ratio` (`requests`, `successes`, `ratio`, `by_class`,
    `unrouted_5xx`, `clusters`, `intervals` with `epoch_s`, `duration_s`, `requests`, `rq_5xx`; `restarted`,
    `resets`, `not_computable`), and `source` (`prometheus`), `prometheus_url` (credentials removed), `queries`,
    `step_s`, `started_at` / `ended_at` (ISO 8601 UTC, the window asked for), `contour_restarts` (per Contour
    pod, the start times of its processes that started in the window and lived through a scrape: a lower bound,
    since a process that exits within a scrape interval is never seen), `contour_restart_count`, `dag_rebuilds`
    (Contour's DAG rebuilds in the window, over its pods, a counter reset taken as a restart from zero),
    `skipped`, `stopped_early` and `stop_reason`. An Envoy that restarted in the window makes a sum go backwards:
    then, as with the direct reading, there is no ratio, and `not_computable` says why.

    Without a `prometheus_url` (the experiments read `PROMETHEUS_URL`, empty by default) it returns at once with
    `skipped` saying so and no figures: declare no tolerance on it where Prometheus may be absent.

    Arguments: `prometheus_url` is the Prometheus server's base URL (`http://prometheus.monitoring:9090`).
    `duration_s` is the window, in seconds. `cluster` is the routed cluster's stat name (Contour's
    `<namespace>_<service>_<port>`); empty counts every cluster with traffic except Contour's own. `listener_prefixes`
    as `envoy_success_ratio`'s. `contour_selector` is the label matchers of Contour's own metrics (default
    `container="contour"`, as prometheus-operator labels a target). `scrape_interval_s` is the interval
    Prometheus scrapes Envoy and Contour at (default 15 s; the sandbox's is 2 s). `timeout_s` bounds each query.
    Needs chaostoolkit-prometheus (`pip install 'chaostoolkit-contour[prometheus]'`). A Prometheus that cannot
    be reached or rejects a query fails the probe with an error naming the server and the query.
    """
    url = "" if prometheus_url in (None, "") else parse_http_url(prometheus_url, "prometheus_url", PROMETHEUS_EXAMPLE)
    duration = parse_seconds(duration_s, "duration_s")
    wanted = parse_cluster(cluster)
    prefixes = parse_names(listener_prefixes, "listener_prefixes", PREFIX_NAME, "ingress_http,ingress_https")
    if not prefixes:
        raise InvalidInput("listener_prefixes must name at least one HTTP stats prefix, such as 'ingress_http'")
    selector = _selector(contour_selector)
    step = parse_seconds(scrape_interval_s, "scrape_interval_s", minimum=0.5, maximum=600)
    timeout = parse_seconds(timeout_s, "timeout_s", maximum=MAX_TIMEOUT_S)
    fn = "prometheus_success_ratio"
    if not url:
        logger.info(f"{fn}: no prometheus_url given (PROMETHEUS_URL is empty): nothing measured")
        return _skipped("no prometheus_url given: Prometheus was not asked")
    shown = redact_url(url)
    started = time.time()
    logger.info(f"{fn}: window of {duration:g} s; then asking {shown} (scrape interval {step:g} s)")
    reason = stop.reason() if stop.wait(duration) else ""
    ended = time.time()
    if not reason:
        stop.wait(2 * step)  # the window's last scrape, stored

    clusters = f'envoy_cluster_name="{wanted}"' if wanted else ""
    asked = {
        "rq_xx": prometheus_traffic.RQ_XX_QUERY.format(clusters=clusters),
        "rq_total": prometheus_traffic.CLUSTER_TOTAL_QUERY.format(clusters=clusters),
        # PREFIX_NAME allows letters, digits, '_' and '-', none special in a regex outside brackets; re.escape's
        # "\-" would be an escape PromQL's string literals reject ("unknown escape sequence").
        "listener_5xx": prometheus_traffic.LISTENER_5XX_QUERY.format(prefixes="|".join(prefixes)),
        "uptime": prometheus_traffic.UPTIME_QUERY,
        "start_times": prometheus_traffic.START_TIMES_QUERY.format(selector=selector),
        "dag_rebuilds": prometheus_traffic.DAG_REBUILDS_QUERY.format(selector=selector),
    }
    found = {key: prometheus.range_series(url, query, started, ended, step, timeout) for key, query in asked.items()}
    readings = prometheus_traffic.readings_from_series(
        found["rq_xx"], found["rq_total"], found["listener_5xx"], found["uptime"]
    )
    steps = [interval(before, after, prefixes) for before, after in itertools.pairwise(readings)]
    result = traffic_summary(steps, wanted or None)
    restarted = prometheus_traffic.restarts(found["start_times"], started)
    rebuilds = [prometheus_traffic.counter_increase(series.points) for series in found["dag_rebuilds"]]
    result.update(
        {
            "source": "prometheus",
            "prometheus_url": shown,
            "queries": list(asked.values()),
            "step_s": step,
            "cluster": wanted or None,
            "listener_prefixes": prefixes,
            "started_at": format_utc(started, "microseconds"),
            "ended_at": format_utc(ended, "microseconds"),
            "duration_s": round(ended - started, 3),
            "readings": len(readings),
            "contour_restarts": {
                pod: [format_utc(t, "milliseconds") for t in times] for pod, times in restarted.items()
            },
            "contour_restart_count": sum(len(times) for times in restarted.values()),
            "dag_rebuilds": round(sum(rebuilds)) if rebuilds else None,
            "skipped": None,
            "stopped_early": bool(reason),
            "stop_reason": reason or None,
        }
    )
    if not readings:
        result["not_computable"] = f"Prometheus at {shown} has no Envoy series for the window: {asked['rq_total']}"
    if result["ratio"] is None:
        logger.warning(f"{fn}: no ratio: {result['not_computable']}")
    else:
        logger.info(
            f"{fn}: {result['successes']} of {result['requests']} requests not 5xx ({result['ratio']:.4%}); Contour "
            f"restarted {result['contour_restart_count']} times, rebuilt its DAG {result['dag_rebuilds']} times"
        )
    return result
