"""The xDS and route lanes of the report's timeline: Envoy's xDS stream connected or not (the gauge readings of
``envoy_xds_timeline``), when Envoy noticed the dead stream, reconnected and was current again, the age of Envoy's
configuration (seconds since its last accepted CDS/LDS update) as a saw-tooth, the readings that counted failed
streams; and each route change of the propagation probe from its write to when Envoy served it (or for as long as it
was held back). Pure: from a parsed journal into a :class:`~chaoscontour.tools.tracks.TrackBuilder`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from chaoscontour import contract
from chaoscontour.contract import XdsTransition
from chaoscontour.tools.journal import (
    ENVOY_XDS,
    ROUTE_CONVERGED,
    ROUTE_PROPAGATION,
    XDS_TIMELINE,
    chaoscontour_func,
    epoch_of,
    number,
    output_of,
    runs,
)
from chaoscontour.tools.tracks import (
    LANE_GAUGE,
    LANE_ROUTE,
    LANE_XDS,
    TrackBuilder,
    epoch_s_of_ms,
    seconds_text,
    steady_state_runs_of,
)

__all__ = ["track_xds"]


def track_xds(journal: Mapping[str, Any], b: TrackBuilder) -> tuple[list[tuple[float, float]], list[float]]:
    """Adds the xDS and route events, spans and facts of ``journal`` to ``b``; returns the age of Envoy's
    configuration over the xDS timeline (offset, seconds) and the offsets of readings that counted failed streams."""
    age: list[tuple[float, float]] = []
    failed: list[float] = []
    updates: list[float] = []
    for run in steady_state_runs_of(journal, ENVOY_XDS):
        for key in ("cds", "lds"):
            sub = output_of(run, contract.ENVOY_XDS_CONNECTED).get(key)
            when = epoch_s_of_ms(sub.get("update_time_ms")) if isinstance(sub, Mapping) else None
            if when is not None:
                updates.append(when)
    for run in runs(journal):
        func = chaoscontour_func(run)
        if func == XDS_TIMELINE and (output := output_of(run, contract.ENVOY_XDS_TIMELINE)):
            first = epoch_of(output.get("first_reading_at")) or epoch_of(run.get("start"))
            end = epoch_of(run.get("end"))
            blocked, healed = epoch_of(output.get("blocked_at")), epoch_of(output.get("healed_at"))
            if first is None or end is None:
                continue
            # The gauge reads 1 while Envoy is still attempting a new stream (domain/xds.py): the stream's real
            # state comes from the block, the detection and the first update accepted after the heal.
            state, since = output.get("connected_at_start"), first
            for transition in [*(output.get("transitions") or []), XdsTransition(at_s=end - first, connected=None)]:
                at = first + (number(transition.get("at_s")) or 0.0)
                label = "gauge 1" if state is True else "gauge 0" if state is False else "unknown"
                b.span(LANE_GAUGE, since, at, label, "ok" if state is True else "bad" if state is False else "unknown")
                state, since = transition.get("connected"), at
            detected = number(output.get("detected_after_s"))
            back, current = number(output.get("reconnected_after_s")), number(output.get("current_after_s"))
            noticed = blocked + detected if blocked is not None and detected is not None else None
            working = healed + back if healed is not None and back is not None else None
            b.span(LANE_XDS, first, blocked or end, "stream working", "ok")
            b.span(LANE_XDS, blocked, noticed or healed or end, "stream dead, Envoy unaware", "held")
            b.span(LANE_XDS, noticed, working or end, "Envoy knows, retries", "bad")
            b.span(LANE_XDS, working, end, "stream working", "ok")
            failed += [b.at(first + s) for s in map(number, output.get("failures_at_s") or []) if s is not None]
            if blocked is not None and detected is not None:
                b.event(
                    LANE_XDS, f"Envoy noticed the dead xDS stream ({detected:g} s after the block)", blocked + detected
                )
            if healed is not None and back is not None:
                both = " and current (CDS and LDS)" if current == back else ""
                b.event(
                    LANE_XDS, f"Envoy reconnected{both}: an update accepted {back:g} s after the heal", healed + back
                )
            if healed is not None and current is not None and current != back:
                b.event(LANE_XDS, f"Envoy current again (CDS and LDS) {current:g} s after the heal", healed + current)
            b.facts.append(
                f"xDS: Envoy noticed the dead stream {seconds_text(detected)} after the block (keepalive bound "
                f"{seconds_text(output.get('keepalive_bound_s'))}), started {output.get('reconnect_attempts')} "
                f"stream(s) that failed, reconnected {seconds_text(back)} and was current {seconds_text(current)} "
                "after the heal"
            )
            if "updates_at_s" in output:
                # A reading sees an update up to one interval late; Envoy's own update_time (from the steady-state
                # probes) dates the same update exactly, so a reading just after such a time is that update.
                samples = number(output.get("samples")) or 0.0
                interval = (number(output.get("duration_s")) or 0.0) / max(samples - 1, 1) + 0.05
                seen = [first + s for s in map(number, output.get("updates_at_s") or []) if s is not None]
                updates += [u for u in seen if not any(u - interval <= a <= u for a in updates)]
                age = _age(sorted(updates), first, end, b)
        elif func == ROUTE_PROPAGATION and (change := output_of(run, contract.ROUTE_CHANGE_PROPAGATION)):
            written = epoch_of(change.get("written_at"))
            if change.get("arrived") is True and written is not None:
                took = number(change.get("propagation_s")) or 0.0
                b.span(LANE_ROUTE, written, written + took, "route change served", "ok")
                b.event(
                    LANE_ROUTE, f"route change {change.get('marker')} served {took:g} s after the write", written + took
                )
            elif change.get("arrived") is False and written is not None:
                held = number(change.get("held_back_s")) or 0.0
                b.span(LANE_ROUTE, written, written + held, "route change held back", "held")
                b.event(LANE_ROUTE, f"route change {change.get('marker')} written; not served in {held:g} s", written)
        elif func == ROUTE_CONVERGED:
            route, began = output_of(run, contract.ROUTE_CONFIG_CONVERGED), epoch_of(run.get("start"))
            served = number(route.get("converged_after_s"))
            if began is not None and served is not None:
                b.span(LANE_ROUTE, began, began + served, "waiting for the route after the heal", "held")
                b.event(
                    LANE_ROUTE,
                    f"Envoy serves route change {route.get('marker')}: {seconds_text(route.get('since_heal_s'))} "
                    f"after the heal, {seconds_text(route.get('since_change_s'))} after it was written",
                    began + served,
                )
            elif began is not None:
                b.gave_up(LANE_ROUTE, "route not converged", run, began)
    return age, failed


def _age(updates: Sequence[float], first: float, end: float, b: TrackBuilder) -> list[tuple[float, float]]:
    """Seconds since the last accepted update at each moment from ``first`` to ``end``: a saw-tooth that drops to 0
    at each update; it starts at the last update known before ``first`` (none known: it starts at the first)."""
    known = [u for u in updates if u <= end]
    earlier = [u for u in known if u <= first]
    last = earlier[-1] if earlier else None
    points: list[tuple[float, float]] = []
    cursor = first
    for update in [u for u in known if u > first] + [end]:
        if last is not None:
            start = (b.at(cursor), round(cursor - last, 3))
            points += [start] if not points or points[-1] != start else []
            points.append((b.at(update), round(update - last, 3)))
        if update != end:
            points.append((b.at(update), 0.0))
        last, cursor = update, update
    return points
