"""Envoy's success ratio and Contour's restarts over a window, from the series a user's Prometheus keeps.

Prometheus scrapes the counters :mod:`chaoscontour.domain.envoy_traffic` reads from Envoy directly, under the
names Envoy's ``/stats/prometheus`` gives them (checked on a real Envoy 1.38.3 and a real Prometheus 2.42):

* ``envoy_cluster_upstream_rq_xx{envoy_cluster_name, envoy_response_code_class="2"}`` for
  ``cluster.<name>.upstream_rq_2xx`` (the class is one digit), and ``envoy_cluster_upstream_rq_total``;
* ``envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix, envoy_response_code_class="5"}`` for
  ``http.<prefix>.downstream_rq_5xx``;
* ``envoy_server_uptime`` for ``server.uptime``.

The queries sum over Envoy's pods (``sum by``), so the window's figures are every Envoy's; a restart of one of
them makes a sum go backwards, which :func:`~chaoscontour.domain.envoy_traffic.interval` takes as a reset, as it
does for one Envoy read directly: no ratio across it. Each step of the range query becomes one
:class:`~chaoscontour.domain.envoy_traffic.Reading`, so both sources share one arithmetic.

Contour's restarts come from ``process_start_time_seconds`` of its pods: each new value inside the window is a
process that started then. Prometheus sees only the processes that lived through one of its scrapes: in
CrashLoopBackOff a Contour that exits within seconds is missed, so this is a lower bound (the kubelet's count,
``contour_restart_count``, is the full one). Its DAG rebuilds come from ``contour_dagrebuild_total``, summed per
pod with Prometheus' own rule for a counter reset (a drop means the counter restarted from zero).

Pure: the series are given; nothing here reads a clock or the network.
"""

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chaoscontour.domain.envoy_traffic import UPTIME, Reading, reading

__all__ = [
    "CLUSTER_TOTAL_QUERY",
    "CONTOUR_DEFAULT_SELECTOR",
    "DAG_REBUILDS_QUERY",
    "LISTENER_5XX_QUERY",
    "RQ_XX_QUERY",
    "START_TIMES_QUERY",
    "UPTIME_QUERY",
    "PromSeries",
    "counter_increase",
    "readings_from_series",
    "restarts",
]

# The label matchers that select Contour's own process metrics: prometheus-operator's PodMonitor and ServiceMonitor,
# and the sandbox, label each target with its container's name.
CONTOUR_DEFAULT_SELECTOR = 'container="contour"'
RQ_XX_QUERY = "sum by (envoy_cluster_name, envoy_response_code_class) (envoy_cluster_upstream_rq_xx{{{clusters}}})"
CLUSTER_TOTAL_QUERY = "sum by (envoy_cluster_name) (envoy_cluster_upstream_rq_total{{{clusters}}})"
LISTENER_5XX_QUERY = (
    "sum by (envoy_http_conn_manager_prefix) "
    '(envoy_http_downstream_rq_xx{{envoy_response_code_class="5", envoy_http_conn_manager_prefix=~"{prefixes}"}})'
)
UPTIME_QUERY = "min(envoy_server_uptime)"
DAG_REBUILDS_QUERY = "contour_dagrebuild_total{{{selector}}}"
START_TIMES_QUERY = "process_start_time_seconds{{{selector}}}"


@dataclass(frozen=True)
class PromSeries:
    """One series of a range query: its labels and its ``(epoch_s, value)`` points, oldest first."""

    labels: Mapping[str, str]
    points: Sequence[tuple[float, float]]


def _at(series: Sequence[PromSeries]) -> dict[float, list[tuple[Mapping[str, str], float]]]:
    found: dict[float, list[tuple[Mapping[str, str], float]]] = {}
    for one in series:
        for when, value in one.points:
            found.setdefault(when, []).append((one.labels, value))
    return found


def readings_from_series(
    rq_xx: Sequence[PromSeries],
    rq_total: Sequence[PromSeries],
    listener_5xx: Sequence[PromSeries],
    uptime: Sequence[PromSeries],
) -> list[Reading]:
    """One reading per step of the range queries (the answers of :data:`RQ_XX_QUERY`, :data:`CLUSTER_TOTAL_QUERY`,
    :data:`LISTENER_5XX_QUERY` and :data:`UPTIME_QUERY` over the same window and step), oldest first."""
    by_query = [_at(rq_xx), _at(rq_total), _at(listener_5xx), _at(uptime)]
    found = []
    for when in sorted({t for query in by_query for t in query}):
        stats: dict[str, int] = {}
        for labels, value in by_query[1].get(when, []):
            stats[f"cluster.{labels.get('envoy_cluster_name', '')}.upstream_rq_total"] = int(value)
        for labels, value in by_query[0].get(when, []):
            name, digit = labels.get("envoy_cluster_name", ""), labels.get("envoy_response_code_class", "")
            stats[f"cluster.{name}.upstream_rq_{digit}xx"] = int(value)
        for labels, value in by_query[2].get(when, []):
            stats[f"http.{labels.get('envoy_http_conn_manager_prefix', '')}.downstream_rq_5xx"] = int(value)
        for _, value in by_query[3].get(when, []):
            stats[UPTIME] = int(value)
        found.append(reading(stats, when))
    return found


def counter_increase(points: Sequence[tuple[float, float]]) -> float:
    """How much a counter grew over ``points``: the sum of its rises, a drop counted as a restart from zero (so the
    value after it is all new), as Prometheus' ``increase()`` does without extrapolating."""
    total = 0.0
    for (_, before), (_, after) in itertools.pairwise(points):
        total += after - before if after >= before else after
    return total


def restarts(start_times: Sequence[PromSeries], window_start_s: float) -> dict[str, list[float]]:
    """Per pod (label ``pod``, else the series' labels), the start times (epoch s) of processes that started after
    ``window_start_s``, read from ``process_start_time_seconds`` series: a value seen for the first time is a new
    process, and a first value inside the window is one too."""
    found: dict[str, list[float]] = {}
    for series in start_times:
        name = series.labels.get("pod") or ",".join(f"{k}={v}" for k, v in sorted(series.labels.items()))
        seen: set[float] = set()
        for _, value in series.points:
            if value not in seen and value > window_start_s:
                found.setdefault(name, []).append(value)
            seen.add(value)
        found.setdefault(name, [])
    return found
