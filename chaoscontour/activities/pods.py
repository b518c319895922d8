"""Contour's pods: how often their containers restarted, and when.

When the API server is gone, every Contour replica's liveness check (`/healthz`, which asks the API server for
its version: internal/health/health.go) fails; with the stock probe (every 10 s, 3 failures) the kubelet restarts
them about 30 s into the outage, then backs off (CrashLoopBackOff).
"""

from datetime import UTC, datetime, timedelta
from typing import Any, Dict

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets

from chaoscontour.activities._common import user_errors
from chaoscontour.domain.inputs import InvalidInput, parse_time, require_namespace, require_non_negative
from chaoscontour.domain.restarts import restart_summary
from chaoscontour.domain.selectors import format_label_selector, parse_label_selector
from chaoscontour.edges.kube import kube, list_pods

__all__ = ["contour_restart_count"]


@user_errors
def contour_restart_count(
    namespace: str = "projectcontour",
    label_selector: str = "app=contour",
    since: str = "",
    within_last_s: float = 0,
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Count the container restarts of the pods of `label_selector` (default `app=contour`) in `namespace`.

    Returns `total_restarts` (sum of `restartCount`), `pod_count`, and `pods` (per pod: phase, restarts, and per
    container the restart count, readiness and last termination). With `since` (an ISO 8601 time such as
    `2026-11-26T19:00:00Z`) or `within_last_s` (seconds before now), it also returns `terminated_since`: how many
    containers' most recent termination (`lastState.terminated.finishedAt`, or a current terminated state)
    finished after that time, and `terminations` with their details. That answers "did Contour restart during the
    fault?" from the cluster alone, with no state kept between activities (a `range` tolerance with `target`
    `terminated_since`). Kubernetes keeps only each container's latest termination, so several restarts of one
    container count once. Fails when no pod matches (a wrong namespace or selector), rather than report zero.
    """
    require_namespace(namespace)
    labels = parse_label_selector(label_selector)
    window = require_non_negative(within_last_s, "within_last_s")
    if since and window:
        raise InvalidInput("give either since or within_last_s, not both")
    moment = parse_time(since) if since else None
    if window:
        moment = datetime.now(UTC) - timedelta(seconds=window)
    k = kube(secrets)
    items = list_pods(k, namespace, format_label_selector(labels))
    if not items:
        # Zero restarts of zero pods would read as good news; it is a wrong namespace or selector.
        raise ActivityFailed(
            f"no pod in namespace {namespace!r} matches {format_label_selector(labels)!r}: check that the namespace "
            "is where Contour runs and that label_selector matches its pods"
        )
    return restart_summary(items, since=moment)
