"""Envoy's success ratio over a window, from its own counters: what an SRE's dashboard shows, without Prometheus.

The counters are the ones docs/dashboards.md's success ratio reads (checked on a real Envoy 1.38.3):

* ``cluster.<name>.upstream_rq_<class>`` (``1xx`` .. ``5xx``): the requests the cluster answered, by response class.
  Envoy's own 503s for a request that reached the cluster count here too (a reset or refused connection, no healthy
  endpoint). Envoy creates each class counter at its first use, so a counter absent at the start reads as 0. The
  cluster itself is known by ``cluster.<name>.upstream_rq_total``, which exists from the cluster's creation on (the
  ``.external.`` and ``.internal.`` sub-scopes have none, so they are never taken for clusters).
* ``http.<prefix>.downstream_rq_5xx``: the 5xx the HTTP listeners with that stats prefix answered (Contour's are
  ``ingress_http`` and ``ingress_https``). The part of it that no cluster counted is Envoy's own answer to a request
  that reached no cluster (a route whose cluster is gone: ``cluster_not_found``); it counts against the ratio as
  ``unrouted_5xx``, since the listener cannot say which route it was meant for.
* ``server.uptime``: seconds since Envoy started (updated at each stats flush, every 5 s by default).

Between two readings a counter that went backwards, a cluster or listener whose counters disappeared, or an uptime
that dropped mean Envoy restarted (or dropped those counters): the requests of that interval are unknown, and a
ratio across it would add up two Envoys' counters. Such an interval is a *reset*; the window's totals are then not
computable, and the summary says why instead of summing.

Pure: readings are built from parsed stats and a time the caller took; nothing here reads a clock or the network.
"""

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CLASSES",
    "CONTOUR_OWN_CLUSTER",
    "DEFAULT_LISTENER_PREFIXES",
    "STATS_FILTER",
    "UPTIME",
    "Interval",
    "Reading",
    "counters_from_json",
    "interval",
    "reading",
    "traffic_summary",
]

CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
DEFAULT_LISTENER_PREFIXES = ("ingress_http", "ingress_https")
UPTIME = "server.uptime"
# Only the counters read here: Contour's Envoy has thousands of stats. (Envoy's /stats ``filter`` is a regex.)
STATS_FILTER = r"^(cluster\..+\.upstream_rq_(total|[1-5]xx)|http\.[^.]+\.downstream_rq_5xx|server\.uptime)$"
# Clusters of Contour's bootstrap, not of a route: the xDS cluster (``contour``, or ``<namespace>_contour_<port>``)
# and ``envoy-admin`` (``<namespace>_envoy-admin_<port>`` in Contour's own Envoy), through which the stats listener
# (this probe's reads, and Prometheus' scrapes) reaches the admin interface.
CONTOUR_OWN_CLUSTER = re.compile(r"(?:[a-z0-9-]+_)?(?:contour|envoy-admin)(?:_[0-9]+)?")

_CLUSTER_TOTAL = re.compile(r"cluster\.(.+)\.upstream_rq_total")
_LISTENER_5XX = re.compile(r"http\.([^.]+)\.downstream_rq_5xx")


def counters_from_json(body: object) -> dict[str, int]:
    """The counters and gauges of Envoy's ``/stats?format=json`` body (``{"stats": [{"name", "value"}, ...]}``) by
    name; histograms and text readouts are left out. Raises ``ValueError`` for a body of another shape."""
    stats = body.get("stats") if isinstance(body, Mapping) else None
    if not isinstance(stats, list):
        raise ValueError('not Envoy\'s /stats?format=json (no "stats" list)')
    found: dict[str, int] = {}
    for entry in stats:
        if not isinstance(entry, Mapping):
            continue
        name, value = entry.get("name"), entry.get("value")
        if isinstance(name, str) and isinstance(value, int) and not isinstance(value, bool):
            found[name] = value
    return found


@dataclass(frozen=True)
class Reading:
    """Envoy's traffic counters at one moment (``epoch_s``, the caller's clock when the answer came)."""

    epoch_s: float
    uptime_s: int | None
    # cluster name -> response class -> count (a class Envoy has not created yet is absent)
    clusters: Mapping[str, Mapping[str, int]]
    # HTTP stats prefix -> downstream 5xx
    listener_5xx: Mapping[str, int]


def reading(stats: Mapping[str, int], epoch_s: float) -> Reading:
    """The traffic counters in ``stats`` (see :func:`counters_from_json`)."""
    clusters: dict[str, dict[str, int]] = {}
    listeners: dict[str, int] = {}
    for name in stats:
        found = _CLUSTER_TOTAL.fullmatch(name)
        if found:
            clusters[found.group(1)] = {}
        found = _LISTENER_5XX.fullmatch(name)
        if found:
            listeners[found.group(1)] = stats[name]
    for cluster, classes in clusters.items():
        for kind in CLASSES:
            value = stats.get(f"cluster.{cluster}.upstream_rq_{kind}")
            if value is not None:
                classes[kind] = value
    return Reading(epoch_s, stats.get(UPTIME), clusters, listeners)


@dataclass(frozen=True)
class Interval:
    """What Envoy counted between two readings: per cluster the answers by class (only the non-zero ones), and the
    5xx of the listeners read; or ``reset``, why the two readings cannot be compared."""

    start_s: float
    end_s: float
    clusters: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    listener_5xx: int = 0
    reset: str | None = None

    def answered(self, clusters: Iterable[str]) -> int:
        return sum(n for c in clusters for n in self.clusters.get(c, {}).values())

    def class_count(self, kind: str, clusters: Iterable[str]) -> int:
        return sum(self.clusters.get(c, {}).get(kind, 0) for c in clusters)

    @property
    def unrouted_5xx(self) -> int:
        """The listeners' 5xx that no cluster counted (never below 0: a retried request counts once downstream and
        once per attempt upstream)."""
        return max(0, self.listener_5xx - self.class_count("5xx", self.clusters))


def interval(before: Reading, after: Reading, prefixes: Sequence[str]) -> Interval:
    """The counts between ``before`` and ``after``, over the listeners with stats prefix in ``prefixes``."""
    start, end = before.epoch_s, after.epoch_s
    if before.uptime_s is not None and after.uptime_s is not None and after.uptime_s < before.uptime_s:
        return Interval(
            start, end, reset=f"Envoy restarted: {UPTIME} went from {before.uptime_s} to {after.uptime_s} s"
        )
    deltas: dict[str, dict[str, int]] = {}
    for cluster, was in before.clusters.items():
        now = after.clusters.get(cluster)
        if now is None:
            return Interval(start, end, reset=f"cluster {cluster}'s counters disappeared (the cluster was removed)")
        for kind in CLASSES:
            old, new = was.get(kind, 0), now.get(kind)
            if new is None and kind in was:
                return Interval(start, end, reset=f"cluster.{cluster}.upstream_rq_{kind} disappeared")
            if (new or 0) < old:
                return Interval(start, end, reset=f"cluster.{cluster}.upstream_rq_{kind} went from {old} to {new}")
    for cluster, now in after.clusters.items():
        was = before.clusters.get(cluster, {})
        changed = {k: n - was.get(k, 0) for k, n in now.items() if n != was.get(k, 0)}
        if changed:
            deltas[cluster] = changed
    listener = 0
    for prefix in prefixes:
        was_5xx, now_5xx = before.listener_5xx.get(prefix), after.listener_5xx.get(prefix)
        if was_5xx is not None and now_5xx is None:
            return Interval(start, end, reset=f"http.{prefix}.downstream_rq_5xx disappeared (the listener was removed)")
        if now_5xx is not None and now_5xx < (was_5xx or 0):
            return Interval(start, end, reset=f"http.{prefix}.downstream_rq_5xx went from {was_5xx} to {now_5xx}")
        listener += (now_5xx or 0) - (was_5xx or 0)
    return Interval(start, end, deltas, listener)


def _round(value: float) -> float:
    return round(value, 3)


def traffic_summary(intervals: Sequence[Interval], cluster: str | None) -> dict[str, Any]:
    """The window's figures over ``intervals`` (in order), for ``cluster``, or, when it is ``None``, for every cluster
    that answered a request in the window except Contour's own (:data:`CONTOUR_OWN_CLUSTER`).

    ``requests`` is what the clusters answered plus ``unrouted_5xx``; ``successes`` what they answered that was not
    5xx; ``ratio`` their quotient. All three, ``by_class`` and ``unrouted_5xx`` are ``None`` when the window holds a
    reset (``restarted`` true, each in ``resets``); ``ratio`` is ``None`` when no request was counted.
    ``not_computable`` says why ``ratio`` is ``None``. ``intervals`` are the per-interval counts for plotting:
    ``epoch_s`` (its start), ``duration_s``, ``requests`` and ``rq_5xx`` (``None`` for a reset).
    """
    if cluster is not None:
        chosen = [cluster]
    else:
        seen = {c for i in intervals for c, counts in i.clusters.items() if any(counts.values())}
        chosen = sorted(c for c in seen if not CONTOUR_OWN_CLUSTER.fullmatch(c))
    series: list[dict[str, Any]] = []
    resets: list[dict[str, Any]] = []
    for i in intervals:
        row: dict[str, Any] = {"epoch_s": _round(i.start_s), "duration_s": _round(i.end_s - i.start_s)}
        if i.reset is not None:
            resets.append({"epoch_s": _round(i.start_s), "end_epoch_s": _round(i.end_s), "reason": i.reset})
            row.update({"requests": None, "rq_5xx": None, "reset": i.reset})
        else:
            row["requests"] = i.answered(chosen) + i.unrouted_5xx
            row["rq_5xx"] = i.class_count("5xx", chosen) + i.unrouted_5xx
        series.append(row)
    result: dict[str, Any] = {
        "clusters": chosen,
        "intervals": series,
        "restarted": bool(resets),
        "resets": resets,
        "requests": None,
        "successes": None,
        "ratio": None,
        "by_class": None,
        "unrouted_5xx": None,
        "not_computable": None,
    }
    if resets:
        result["not_computable"] = (
            f"Envoy's counters were reset in the window ({resets[0]['reason']}): the requests between the readings "
            "around it are unknown, and a ratio across it would add up two sets of counters"
        )
        return result
    by_class = {kind: sum(i.class_count(kind, chosen) for i in intervals) for kind in CLASSES}
    # Over the whole window, not per interval: a request counted upstream just before a reading and downstream just
    # after it would otherwise be counted twice.
    listener = sum(i.listener_5xx for i in intervals)
    upstream_5xx = sum(i.class_count("5xx", i.clusters) for i in intervals)
    unrouted = max(0, listener - upstream_5xx)
    requests = sum(by_class.values()) + unrouted
    successes = sum(by_class.values()) - by_class["5xx"]
    result.update({"requests": requests, "successes": successes, "by_class": by_class, "unrouted_5xx": unrouted})
    if requests:
        result["ratio"] = successes / requests
    else:
        where = f"cluster {cluster}" if cluster is not None else "any cluster"
        result["not_computable"] = f"Envoy counted no request to {where} and no 5xx on its listeners in the window"
    return result
