"""Container restarts of Contour's pods, from pod statuses alone.

The kubelet keeps, per container, ``restartCount`` and the most recent termination in ``lastState.terminated``
(``finishedAt``). So "did Contour restart after time T" is answered from the cluster itself, without state kept
between activities. A container that restarted several times after T counts once here: only its latest termination
is kept by Kubernetes; ``restart_count`` deltas need two readings.
"""

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from chaoscontour.domain.lease import format_api_time, parse_api_time

__all__ = ["restart_summary"]


def _terminated(status: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    found = []
    for where in ("state", "lastState"):
        terminated = (status.get(where) or {}).get("terminated")
        if terminated and terminated.get("finishedAt"):
            found.append((where, terminated))
    return found


def restart_summary(pods: Iterable[Mapping[str, Any]], since: datetime | None = None) -> dict[str, Any]:
    """Total restarts, per-pod detail and, when ``since`` is given, the terminations that finished after it."""
    total = 0
    detail: list[dict[str, Any]] = []
    terminations: list[dict[str, Any]] = []
    for pod in pods:
        metadata = pod.get("metadata") or {}
        status = pod.get("status") or {}
        containers = []
        for cs in status.get("containerStatuses") or []:
            restarts = int(cs.get("restartCount") or 0)
            total += restarts
            last = (cs.get("lastState") or {}).get("terminated") or {}
            containers.append(
                {
                    "name": cs.get("name"),
                    "restart_count": restarts,
                    "ready": bool(cs.get("ready")),
                    "last_terminated": (
                        {
                            "exit_code": last.get("exitCode"),
                            "reason": last.get("reason"),
                            "finished_at": format_api_time(parse_api_time(last.get("finishedAt"))),
                        }
                        if last
                        else None
                    ),
                }
            )
            if since is None:
                continue
            for where, terminated in _terminated(cs):
                finished = parse_api_time(terminated["finishedAt"])
                if finished and finished > since:
                    terminations.append(
                        {
                            "pod": metadata.get("name"),
                            "container": cs.get("name"),
                            "finished_at": format_api_time(finished),
                            "exit_code": terminated.get("exitCode"),
                            "reason": terminated.get("reason"),
                            "state": where,
                        }
                    )
        detail.append(
            {
                "name": metadata.get("name"),
                "phase": status.get("phase"),
                "restarts": sum(c["restart_count"] for c in containers),
                "containers": containers,
            }
        )
    result: dict[str, Any] = {"total_restarts": total, "pods": detail, "pod_count": len(detail)}
    if since is not None:
        terminations.sort(key=lambda t: t["finished_at"])
        result["since"] = format_api_time(since)
        result["terminated_since"] = len(terminations)
        result["terminations"] = terminations
    return result
