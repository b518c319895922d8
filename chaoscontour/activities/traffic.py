"""What Envoy's own counters say about the traffic it served across a fault: the success ratio an SRE's dashboard
shows (docs/dashboards.md), read from Envoy's stats endpoint, without Prometheus.

`envoy_success_ratio` runs in the background across the fault window, beside `envoy_availability`: the sampler
measures what its own client saw, this probe what Envoy counted for every client. It reads the counters
(``edges.http``) and leaves the arithmetic, deltas, ratio and restart detection, to ``domain.envoy_traffic``.

No ``from __future__ import annotations`` here: chaostoolkit's discovery reads the annotations as objects.
"""

import json
import re
import time
from typing import Any, Dict, List

from chaoslib.exceptions import ActivityFailed
from logzero import logger

from chaoscontour.activities._common import Progress, user_errors
from chaoscontour.activities.envoy import STATS_EXAMPLE
from chaoscontour.domain.clock import format_utc
from chaoscontour.domain.envoy_traffic import (
    CLASSES,
    CONTOUR_OWN_CLUSTER,
    DEFAULT_LISTENER_PREFIXES,
    STATS_FILTER,
    UPTIME,
    Interval,
    Reading,
    counters_from_json,
    interval,
    reading,
    traffic_summary,
)
from chaoscontour.domain.inputs import InvalidInput, parse_http_url, parse_seconds, redact_url
from chaoscontour.edges import http, stop

__all__ = ["envoy_success_ratio"]

MAX_TIMEOUT_S = 300.0
MAX_READINGS = 100_000
# A cluster's stat name (Contour's `<namespace>_<service>_<port>`, or a cluster's own name) and an HTTP stats prefix.
_CLUSTER_NAME = re.compile(r"[A-Za-z0-9_.:/-]{1,253}")
PREFIX_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")
DEFAULT_PREFIXES = list(DEFAULT_LISTENER_PREFIXES)


class _Unreadable(Exception):
    """Envoy's stats could not be read: unreachable, another status, or not its JSON."""


def _read(url: str, timeout_s: float) -> Reading:
    try:
        answer = http.get(url, timeout_s=timeout_s, params={"format": "json", "filter": STATS_FILTER})
    except http.RequestFailed as failed:
        raise _Unreadable(f"could not be reached ({failed.kind}: {failed.text})") from failed
    if answer.status != 200:
        raise _Unreadable(f"answered {answer.status}")
    try:
        stats = counters_from_json(json.loads(answer.text))
    except ValueError as exc:
        raise _Unreadable(f"did not answer with Envoy's /stats?format=json ({exc})") from None
    return reading(stats, time.time())


def parse_names(value: object, what: str, pattern: "re.Pattern[str]", example: str) -> List[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise InvalidInput(f"{what} must be a list of names or a comma-separated string such as {example!r}")
    names = [str(item).strip() for item in items if str(item).strip()]
    for name in names:
        if not pattern.fullmatch(name):
            raise InvalidInput(f"{what}: {name!r} is not a name Envoy gives its stats, such as {example!r}")
    return list(dict.fromkeys(names))


def parse_cluster(value: object) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        return ""
    if not isinstance(value, str) or not _CLUSTER_NAME.fullmatch(value.strip()):
        raise InvalidInput(
            f"cluster must be the stat name of an Envoy cluster, such as 'default_echo_80' (Contour's name for "
            f"Service echo port 80 in namespace default), or empty; got {value!r}"
        )
    return value.strip()


def _listing(names: List[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit]) or "none"
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@user_errors
def envoy_success_ratio(
    stats_url: str = STATS_EXAMPLE,
    duration_s: float = 60.0,
    interval_s: float = 1.0,
    cluster: str = "",
    listener_prefixes: List[str] = DEFAULT_PREFIXES,
    timeout_s: float = 2.0,
) -> Dict[str, Any]:
    """Read Envoy's traffic counters across a window and report the success ratio Envoy itself counted.

    Meant to run as a `background: true` probe beside `envoy_availability`, started before the fault, with a
    `duration_s` that covers the fault and the recovery. It reads Envoy's counters at the start, every `interval_s`
    and at the end, the same counters as docs/dashboards.md's success ratio: the answers of the routed cluster by
    response class (`cluster.<cluster>.upstream_rq_1xx` .. `5xx`, Envoy's own 503s for a reset or refused
    connection included) and the 5xx of the HTTP listeners (`http.<prefix>.downstream_rq_5xx`), so that Envoy's
    own 5xx for a request that reached no cluster count too. So the figures are every client's, not only the
    sampler's.

    Returns a mapping: `requests` (what the clusters answered, plus `unrouted_5xx`: the listeners' 5xx that no
    cluster counted), `successes` (the clusters' answers that were not 5xx; a backend's 4xx is an answer), `ratio`
    (successes / requests, 0..1), `by_class` (the clusters' answers by class `1xx` .. `5xx`), `unrouted_5xx`,
    `clusters` (the clusters counted), `listener_prefixes` (those read), `counters` (the stats read),
    `started_at` / `ended_at` (ISO 8601 UTC, the first and last readings), `duration_s`, `readings`,
    `failed_reads` (a reading that failed is skipped: the next one covers its interval), `intervals` (one row per
    interval between readings: `epoch_s`, `duration_s`, `requests`, `rq_5xx`), `restarted`, `resets`,
    `not_computable`, `stopped_early` and `stop_reason`. Use it with a tolerance such as
    `{"type": "range", "range": [0.999, 1.0], "target": "ratio"}`: chaostoolkit checks no tolerance in the method,
    `chaoscontour gate` does.

    When Envoy restarted in the window (`server.uptime` dropped, or a counter went backwards or disappeared) the
    requests around the restart are unknown: `restarted` is true, `resets` says between which readings and why,
    and `requests`, `successes`, `ratio`, `by_class` and `unrouted_5xx` are null, with the reason in
    `not_computable`, never a sum across two Envoys' counters. With no request counted at all, `ratio` is null too.
    On SIGINT, SIGTERM or SIGUSR1 it takes a last reading and returns what it measured, with `stopped_early` true.

    Arguments: `stats_url` is Envoy's stats endpoint: port 8002 `/stats` on Contour's Envoy (reach it with a
    port-forward), or the admin listener's `/stats`; the probe adds `format=json` and a `filter`. `duration_s` is
    how long to read, in seconds (at most one day). `interval_s` is the time between readings (0.1 to 60 s;
    default 1). `cluster` is the stat name of the routed cluster (Contour's `<namespace>_<service>_<port>`, e.g.
    `default_echo_80`); empty (the default) counts every cluster that answered a request in the window except
    Contour's own (its xDS cluster and `envoy-admin`). `listener_prefixes` are the stats prefixes of the HTTP
    listeners whose 5xx count (default Contour's, `ingress_http` and `ingress_https`; at least one must exist).
    `timeout_s` bounds each reading (at most 300 s).

    An unreachable `stats_url` at the start fails with an error naming it; a `cluster` Envoy does not have, or no
    listener with one of `listener_prefixes`, fails with an error listing those Envoy has.
    """
    url = parse_http_url(stats_url, "stats_url", STATS_EXAMPLE)
    duration = parse_seconds(duration_s, "duration_s")
    every = parse_seconds(interval_s, "interval_s", minimum=0.1, maximum=60)
    wanted = parse_cluster(cluster)
    prefixes = parse_names(listener_prefixes, "listener_prefixes", PREFIX_NAME, "ingress_http,ingress_https")
    if not prefixes:
        raise InvalidInput("listener_prefixes must name at least one HTTP stats prefix, such as 'ingress_http'")
    timeout = parse_seconds(timeout_s, "timeout_s", maximum=MAX_TIMEOUT_S)
    if duration / every > MAX_READINGS:
        raise InvalidInput(
            f"duration_s / interval_s = {duration / every:.0f} readings; keep it at most {MAX_READINGS:,} "
            "(a longer interval_s for a long window)"
        )
    shown = redact_url(url)
    fn = "envoy_success_ratio"
    try:
        first = _read(url, timeout)
    except _Unreadable as exc:
        raise ActivityFailed(
            f"{fn}: Envoy's stats endpoint {shown} {exc}; check `stats_url` (port 8002 /stats on Contour's Envoy) "
            "and the port-forward to the Envoy pod"
        ) from None
    if wanted and wanted not in first.clusters:
        routed = sorted(c for c in first.clusters if not CONTOUR_OWN_CLUSTER.fullmatch(c))
        raise ActivityFailed(
            f"{fn}: Envoy at {shown} has no cluster {wanted!r}; its clusters: {_listing(routed)} (Contour names a "
            "Service's cluster <namespace>_<service>_<port>)"
        )
    present = [p for p in prefixes if p in first.listener_5xx]
    if not present:
        raise ActivityFailed(
            f"{fn}: Envoy at {shown} has no HTTP listener with stats prefix {' or '.join(prefixes)}; its HTTP stats "
            f"prefixes: {_listing(sorted(first.listener_5xx))}. Set `listener_prefixes` (Contour creates its "
            "listeners only once a route exists)"
        )
    logger.info(
        f"{fn}: reading {shown} every {every:g} s for {duration:g} s, cluster "
        f"{wanted or '(every cluster with traffic)'}, listeners {', '.join(prefixes)}"
    )

    intervals: List[Interval] = []
    last, failed, reason = first, 0, ""
    started = time.monotonic()
    progress = Progress(10.0)
    while True:
        elapsed = time.monotonic() - started
        if elapsed >= duration or reason:
            break
        if stop.wait(min(every, duration - elapsed)):
            reason = stop.reason() or "stop requested"
        try:
            current = _read(url, timeout)
        except _Unreadable as exc:
            failed += 1
            logger.warning(f"{fn}: a reading of {shown} failed ({exc}); the next one covers its interval")
            continue
        intervals.append(interval(last, current, prefixes))
        last = current
        if intervals[-1].reset:
            logger.warning(f"{fn}: {intervals[-1].reset}; no ratio can be computed across it")
        progress(f"{fn}: {time.monotonic() - started:.0f}/{duration:g} s, {len(intervals) + 1} readings")

    result = traffic_summary(intervals, wanted or None)
    chosen = result["clusters"]
    result.update(
        {
            "stats_url": shown,
            "cluster": wanted or None,
            "listener_prefixes": present,
            "counters": [f"cluster.{c}.upstream_rq_{k}" for c in chosen for k in CLASSES]
            + [f"http.{p}.downstream_rq_5xx" for p in present]
            + ["cluster.*.upstream_rq_5xx (for unrouted_5xx)", UPTIME],
            "started_at": format_utc(first.epoch_s, "microseconds"),
            "ended_at": format_utc(last.epoch_s, "microseconds"),
            "duration_s": round(last.epoch_s - first.epoch_s, 3),
            "readings": len(intervals) + 1,
            "failed_reads": failed,
            "stopped_early": bool(reason),
            "stop_reason": reason or None,
        }
    )
    if result["ratio"] is None:
        logger.warning(f"{fn}: no ratio: {result['not_computable']}")
    else:
        logger.info(
            f"{fn}: done: {result['successes']} of {result['requests']} requests not 5xx ({result['ratio']:.4%}) on "
            f"{', '.join(chosen) or 'no cluster'}, {result['unrouted_5xx']} unrouted 5xx"
        )
    return result
