"""An Envoy restarted while Contour is cut off from the API server: which Envoy pod to delete, whether every Contour
has restarted since the cut, and what the replacement's requests showed.

Envoy keeps its configuration in memory only. A new Envoy pod starts empty: its listeners, the stats listener that
answers its readiness probe among them, come from Contour over xDS. A Contour process started while the API server is
unreachable serves no xDS (it waits for its informers, which need the API server), but one that was already running
when the cut came still does, from its cache, until the kubelet restarts it. So the restart proves the edge only once
every Contour container has started after the cut (or is waiting to): :func:`contours_restarted_since`.

Pure functions over pod mappings and request records; the activity that reads the cluster and sends the requests is
:mod:`chaoscontour.activities.envoy_restart`.
"""

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chaoscontour.domain.clock import format_api_time, parse_api_time
from chaoscontour.domain.pods import pod_ready

__all__ = ["NoSecondEnvoy", "Attempt", "contours_restarted_since", "lane_summary", "pick_envoy_to_delete"]


class NoSecondEnvoy(ValueError):
    """No Envoy pod can be deleted while the one the experiment keeps sampling survives."""


def pick_envoy_to_delete(pods: Iterable[Mapping[str, Any]], keep_address: str) -> tuple[Mapping[str, Any], list[str]]:
    """The Envoy pod to delete and the names of the pods kept, given the address the surviving lane is sampled at.

    Kept: the pods whose pod IP is ``keep_address``; when none is, the pods whose node (host IP) is (Envoy on host
    ports, one per node). Deleted: the first, by name, of the other Ready pods that are not already terminating.
    Raises :class:`NoSecondEnvoy` when the address names no Envoy pod, or when every other pod is missing.
    """
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]

    def ips(field: str) -> dict[str, Mapping[str, Any]]:
        return {str(p["metadata"]["name"]): p for p in live if (p.get("status") or {}).get(field) == keep_address}

    kept = ips("podIP") or ips("hostIP")
    if not kept:
        where = [(p["metadata"]["name"], p.get("status") or {}) for p in live]
        names = ", ".join(f"{name} ({status.get('podIP')} on {status.get('hostIP')})" for name, status in where)
        raise NoSecondEnvoy(
            f"no Envoy pod is at {keep_address} (pod or node address); keep_url must reach the Envoy that survives. "
            f"Envoy pods: {names or 'none'}"
        )
    others = [p for p in live if p["metadata"]["name"] not in kept and pod_ready(p)]
    others.sort(key=lambda p: str(p["metadata"]["name"]))
    if not others:
        raise NoSecondEnvoy(
            f"every Ready Envoy pod is at {keep_address} ({', '.join(sorted(kept))}): the experiment needs a second "
            "Envoy to restart while this one keeps serving (Envoy on another node, or an Envoy Deployment with 2 "
            "replicas)"
        )
    return others[0], sorted(kept)


def contours_restarted_since(pods: Iterable[Mapping[str, Any]], cut: datetime) -> tuple[bool, list[dict[str, Any]]]:
    """Whether no Contour process that was running at ``cut`` still runs: every container of every pod is waiting
    (CrashLoopBackOff), terminated, or was started strictly after ``cut`` (the API's times have whole seconds, so a
    start in the cut's own second does not count). Also each container's state, for the journal."""
    states: list[dict[str, Any]] = []
    done = True
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or [{"name": None}]:
            state = status.get("state") or {}
            running = state.get("running")
            started = parse_api_time(running.get("startedAt")) if running else None
            fresh = running is None or (started is not None and started > cut)
            done = done and fresh
            waiting = (state.get("waiting") or {}).get("reason")
            states.append(
                {
                    "pod": pod["metadata"]["name"],
                    "container": status.get("name"),
                    "state": "running" if running else ("waiting" if "waiting" in state else "terminated"),
                    "reason": waiting,
                    "started_at": format_api_time(started),
                    "restarts": int(status.get("restartCount") or 0),
                    "started_after_cut": fresh,
                }
            )
    return done and bool(states), states


@dataclass(frozen=True)
class Attempt:
    """One request to the replacement Envoy: when (monotonic seconds), and its status or why it got none."""

    at: float
    status: int | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


def _share(attempts: list[Attempt]) -> dict[str, Any]:
    kinds = Counter(a.error or f"status_{a.status}" for a in attempts if not a.ok)
    return {"sent": len(attempts), "ok": sum(a.ok for a in attempts), "failed_by_kind": dict(sorted(kinds.items()))}


def lane_summary(
    attempts: list[Attempt], *, deleted_at: float, heal_at: float | None, min_availability: float
) -> dict[str, Any]:
    """The replacement's lane: requests before and after the heal (``heal_at``, monotonic, ``None`` if not seen),
    whether any was served before the heal, when the first 200 came (after the delete and after the heal) and the
    availability over the whole lane against ``min_availability``."""
    before = [a for a in attempts if heal_at is None or a.at < heal_at]
    after = [a for a in attempts if heal_at is not None and a.at >= heal_at]
    first = next((a for a in attempts if a.ok), None)
    availability = sum(a.ok for a in attempts) / len(attempts) if attempts else None
    return {
        "requests_before_heal": _share(before),
        "requests_after_heal": _share(after),
        "served_before_heal": any(a.ok for a in before),
        "first_200_after_delete_s": round(first.at - deleted_at, 3) if first else None,
        "first_200_after_heal_s": round(first.at - heal_at, 3) if first and heal_at is not None else None,
        "availability": round(availability, 6) if availability is not None else None,
        "min_availability": min_availability,
        "meets_availability": availability is not None and availability >= min_availability,
    }
