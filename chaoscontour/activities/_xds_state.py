"""What the xDS fault's activities share: reading Envoy's xDS state, and this process's block and heal times.

`chaos run` executes the block, the background timeline and the heal in one process, so the timeline learns when
the fault started and ended from here, without any state kept in the cluster.
"""

from chaoslib.exceptions import ActivityFailed

from chaoscontour.activities.envoy import STATS_FILTER
from chaoscontour.domain.envoy_stats import XdsState, parse_stats, xds_state
from chaoscontour.domain.inputs import redact_url
from chaoscontour.edges import http

__all__ = [
    "KEEPALIVE_BOUND_S",
    "accepted_updates",
    "confirmed_updates",
    "fault_events",
    "read_xds_state",
    "record_block",
    "record_confirmed",
    "record_heal",
]

# Contour's bootstrap: 30 s idle + 3 keepalive probes 5 s apart (internal/envoy/v3/bootstrap.go, v1.33.6).
KEEPALIVE_BOUND_S = 45.0

# Per (namespace, run id): wall-clock times (epoch seconds) of the block and of the heal.
_EVENTS: dict[tuple[str, str], dict[str, float | None]] = {}


def record_block(namespace: str, run_id: str, at: float) -> None:
    _EVENTS.pop((namespace, run_id), None)
    _EVENTS[(namespace, run_id)] = {"blocked_at": at, "healed_at": None, "updates_when_confirmed": None}


def record_confirmed(namespace: str, run_id: str, updates: int | None) -> None:
    """Envoy's accepted-update count when the fault was confirmed: any later update means something got through."""
    if (namespace, run_id) in _EVENTS:
        _EVENTS[(namespace, run_id)]["updates_when_confirmed"] = updates


def confirmed_updates(namespace: str, run_id: str) -> int | None:
    value = _EVENTS.get((namespace, run_id), {}).get("updates_when_confirmed")
    return None if value is None else int(value)


def record_heal(namespace: str, run_id: str, at: float) -> None:
    """Mark this run's fault (every run's in ``namespace`` when ``run_id`` is empty) healed, once."""
    for key, events in _EVENTS.items():
        if key[0] == namespace and (not run_id or key[1] == run_id) and events.get("healed_at") is None:
            events["healed_at"] = at


def fault_events() -> dict[str, float | None]:
    """``blocked_at`` and ``healed_at`` of the latest xDS fault of this process (``{}`` when there was none)."""
    return dict(list(_EVENTS.values())[-1]) if _EVENTS else {}


def accepted_updates(state: XdsState) -> int | None:
    """CDS + LDS ``update_success``: how many configurations Envoy has accepted (``None`` without the counters)."""
    counts = [s.update_success for s in (state.cds, state.lds) if s is not None and s.update_success is not None]
    return sum(counts) if counts else None


def read_xds_state(url: str, timeout_s: float) -> XdsState:
    """Envoy's xDS state from its ``/stats``; raises ``http.RequestFailed`` (no answer) or ``ActivityFailed``
    (an answer without Envoy's connected-state gauges, so the state cannot be known)."""
    answer = http.get(url, timeout_s=timeout_s, params={"filter": STATS_FILTER})
    if answer.status != 200:
        raise ActivityFailed(f"{redact_url(url)} answered {answer.status}; point stats_url at Envoy's /stats")
    state = xds_state(parse_stats(answer.text))
    if state.connected is None:
        raise ActivityFailed(
            f"{redact_url(url)} has no control-plane connected_state gauge: is it the /stats of an Envoy "
            "configured by Contour over gRPC?"
        )
    return state
