"""What the xDS black hole does to Envoy, seen from outside: its xDS state over time.

`envoy_xds_timeline` runs in the background across the fault and turns Envoy's `connected_state` gauges and
update counters into the two figures the experiment is about: how long until Envoy noticed the dead stream, and how
long after the heal until it was connected and current again.

The route marker (`route_change_propagation`, `route_config_converged`, `remove_route_marker`) lives in
``chaoscontour.activities.routes``; it is imported here too, so experiments that name this module keep working
(discovery lists it under ``routes`` only: this module's ``__all__`` does not name it).

No ``from __future__ import annotations`` here: chaostoolkit's discovery reads the annotations as objects.
"""

import time
from typing import Any, Dict

from chaoslib.exceptions import ActivityFailed
from logzero import logger

from chaoscontour.activities._common import Progress, user_errors
from chaoscontour.activities._xds_state import KEEPALIVE_BOUND_S, fault_events, read_xds_state
from chaoscontour.activities.envoy import STATS_EXAMPLE
from chaoscontour.activities.routes import (  # noqa: F401  (re-exported: experiments name this module)
    remove_route_marker,
    route_change_propagation,
    route_config_converged,
)
from chaoscontour.domain.clock import format_utc
from chaoscontour.domain.inputs import parse_bool, parse_http_url, parse_seconds, redact_url
from chaoscontour.domain.xds import XdsSample, xds_timeline
from chaoscontour.edges import http, stop
from chaoscontour.edges.clock import poll_until

__all__ = ["envoy_xds_timeline"]

MAX_TIMELINE_S = 3600.0


@user_errors
def envoy_xds_timeline(
    stats_url: str = STATS_EXAMPLE,
    duration_s: float = 180,
    interval_s: float = 0.5,
    until_current: bool = True,
    max_detection_s: float = 0,
    max_current_after_heal_s: float = 0,
) -> Dict[str, Any]:
    """Read Envoy's xDS stats every `interval_s` for up to `duration_s` and tell how Envoy lived the xDS fault.

    Meant to run as a `background: true` probe started before `block_xds_egress`. Each reading takes Envoy's
    control-plane `connected_state` gauges and its CDS + LDS `update_success` counters from `stats_url` (Envoy's
    `/stats`, port 8002 on Contour's Envoy). The block and heal times come from `block_xds_egress` and
    `unblock_xds_egress` in the same `chaos run` process.

    Returns `detected_after_s` (block to the first reading with a `connected_state` gauge at 0 or a failed update
    counted: how long Envoy believed the dead stream alive), `reconnect_attempts` (streams Envoy tried during the
    fault, from its `update_failure` counters; each one failed),
    `reconnected_after_s` (heal to the first reading in which CDS or LDS accepted an update: a working stream again)
    and `current_after_s` (heal to the first in which both did: Contour's whole configuration arrived),
    `transitions` (every change of the gauges' reading, in seconds from the first reading), `connected_at_start` /
    `connected_at_end`, `samples`, `failed_reads`, `blocked_at` / `healed_at` (ISO 8601 UTC), `keepalive_bound_s`,
    `stopped_early` and `stop_reason`. With `until_current` (default) it ends as soon as Envoy is current after the
    heal. A gauge at 1 proves nothing by itself: Envoy sets it when it starts a stream, before the connection is up,
    so during the fault it reads 1 for each 5 s connection attempt (Contour's bootstrap `connect_timeout`); only an
    accepted update proves a working stream.

    `max_detection_s` and `max_current_after_heal_s` (0: no bound) add `meets_bounds` and `bound_misses`: a bound
    missed, or a figure that never came, is logged as an error and marked, never raised, so the journal keeps the
    timeline. On SIGINT, SIGTERM or SIGUSR1 it stops within `interval_s` and returns what it saw.
    """
    url = parse_http_url(stats_url, "stats_url", STATS_EXAMPLE)
    duration = parse_seconds(duration_s, "duration_s", maximum=MAX_TIMELINE_S)
    interval = parse_seconds(interval_s, "interval_s", minimum=0.05, maximum=60)
    until = parse_bool(until_current, "until_current")
    max_detection = parse_seconds(max_detection_s, "max_detection_s", maximum=3600, allow_zero=True)
    max_current = parse_seconds(max_current_after_heal_s, "max_current_after_heal_s", maximum=3600, allow_zero=True)
    samples: list[XdsSample] = []
    started = time.monotonic()
    progress = Progress(10.0)
    figures: dict[str, Any] = {}

    def current_after_heal() -> bool:
        nonlocal figures
        at = time.time()
        try:
            state = read_xds_state(url, min(interval * 2, 2.0))
            samples.append(
                XdsSample(
                    at=at,
                    connected=state.connected,
                    cds_success=state.cds.update_success if state.cds else None,
                    lds_success=state.lds.update_success if state.lds else None,
                    cds_failure=state.cds.update_failure if state.cds else None,
                    lds_failure=state.lds.update_failure if state.lds else None,
                )
            )
        except (http.RequestFailed, ActivityFailed):
            samples.append(XdsSample(at=at, connected=None))
        events = fault_events()
        figures = xds_timeline(samples, events.get("blocked_at"), events.get("healed_at"))
        return until and figures["current_after_s"] is not None

    def report(elapsed: float) -> None:
        progress(
            f"envoy_xds_timeline: {elapsed:.0f}/{duration:g} s, connected={samples[-1].connected}, "
            f"detected after {figures['detected_after_s']} s, {figures['reconnect_attempts']} reconnect attempt(s)"
        )

    polled = poll_until(current_after_heal, duration, interval, started=started, on_wait=report, wake_at_deadline=True)
    if polled.done:
        reason = "current after the heal"
    elif polled.stopped and polled.elapsed_s < duration:  # a stop after the whole duration stops nothing early
        reason = stop.reason() or "stop requested"
    else:
        reason = ""
    events = fault_events()
    blocked_at, healed_at = events.get("blocked_at"), events.get("healed_at")
    result: Dict[str, Any] = {
        **figures,
        "stats_url": redact_url(url),
        "blocked_at": format_utc(blocked_at, "microseconds") if blocked_at is not None else None,
        "healed_at": format_utc(healed_at, "microseconds") if healed_at is not None else None,
        "keepalive_bound_s": KEEPALIVE_BOUND_S,
        "duration_s": round(time.monotonic() - started, 3),
        "stopped_early": bool(reason) and reason != "current after the heal",
        "stop_reason": reason or None,
    }
    misses = []
    if max_detection:
        detected = figures["detected_after_s"]
        if detected is None or detected > max_detection:
            misses.append(f"Envoy noticed the dead stream after {detected} s, bound {max_detection:g} s")
    if max_current:
        current = figures["current_after_s"]
        if current is None or current > max_current:
            misses.append(f"Envoy was current {current} s after the heal, bound {max_current:g} s")
    if max_detection or max_current:
        result["meets_bounds"] = not misses
        result["bound_misses"] = misses
    for miss in misses:
        logger.error(f"envoy_xds_timeline: {miss}")
    logger.info(
        f"envoy_xds_timeline: detected after {result['detected_after_s']} s, reconnected "
        f"{result['reconnected_after_s']} s and current {result['current_after_s']} s after the heal"
    )
    return result
