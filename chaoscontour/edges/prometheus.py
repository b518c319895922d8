"""A user's Prometheus, read through chaostoolkit-prometheus (``chaosprometheus.probes``), the query client Chaos
Toolkit users already have, rather than another one of our own.

Its ``query_interval`` sends ``GET /api/v1/query_range`` and returns Prometheus' JSON as it is; the server's URL is
its configuration key ``prometheus_base_url``. It is an optional dependency (``pip install
'chaostoolkit-contour[prometheus]'``), imported only when a Prometheus URL is given. chaosprometheus parses the
window's ends with dateparser and keeps a tenth of a second; the series come back with Prometheus' own timestamps.
"""

from typing import Any

from chaoslib.exceptions import ActivityFailed

from chaoscontour.domain.clock import format_utc
from chaoscontour.domain.prometheus_traffic import PromSeries

__all__ = ["INSTALL_HINT", "range_series"]

INSTALL_HINT = "pip install 'chaostoolkit-contour[prometheus]'"


def range_series(
    url: str, query: str, start_s: float, end_s: float, step_s: float, timeout_s: float
) -> list[PromSeries]:
    """``query`` evaluated every ``step_s`` from ``start_s`` to ``end_s`` (epoch seconds) on the Prometheus at ``url``.

    Raises ActivityFailed naming the server and the query when Prometheus cannot answer or rejects the query."""
    try:
        from chaosprometheus.probes import query_interval
    except ImportError as exc:
        raise ActivityFailed(f"reading Prometheus needs chaostoolkit-prometheus: {INSTALL_HINT}") from exc
    try:
        answer: dict[str, Any] = query_interval(
            query,
            format_utc(start_s, "milliseconds"),
            format_utc(end_s, "milliseconds"),
            step=step_s,
            timeout=timeout_s,
            configuration={"prometheus_base_url": url.rstrip("/")},
        )
    except ActivityFailed as exc:
        raise ActivityFailed(f"Prometheus at {url} did not answer the query {query!r}: {exc}") from exc
    except OSError as exc:  # requests' connection errors are OSErrors
        raise ActivityFailed(f"cannot reach Prometheus at {url}: {exc}") from exc
    if answer.get("status") != "success" or answer.get("data", {}).get("resultType") != "matrix":
        raise ActivityFailed(f"Prometheus at {url} gave no series for {query!r}: {str(answer)[:200]}")
    return [
        PromSeries(dict(item.get("metric", {})), [(float(t), float(v)) for t, v in item.get("values", [])])
        for item in answer["data"]["result"]
    ]
