"""The restarted Envoy's lane of the report's timeline (``restart_envoy_pod``): from the delete of an Envoy pod while
Contour was cut off, its replacement serving nothing, then serving from its first 200 after the heal; with the
moments the follower saw the fault removed and the replacement Ready. The surviving Envoy is the report's
availability plot (``envoy_availability`` at ``ENVOY_URL``), so the two Envoys are drawn side by side. Pure: from a
parsed journal into a :class:`~chaoscontour.tools.tracks.TrackBuilder`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaoscontour import contract
from chaoscontour.tools.journal import RESTART_ENVOY, chaoscontour_func, epoch_of, number, output_of, runs
from chaoscontour.tools.tracks import LANE_RESTARTED, TrackBuilder

__all__ = ["track_restart"]


def track_restart(journal: Mapping[str, Any], b: TrackBuilder) -> None:
    """Adds each ``restart_envoy_pod`` run's spans and events to ``b``."""
    for run in runs(journal):
        if chaoscontour_func(run) != RESTART_ENVOY:
            continue
        lane = output_of(run, contract.RESTART_ENVOY_POD)
        found = run.get("output")
        output: Mapping[str, Any] = found if isinstance(found, Mapping) else {}  # the keys the contract leaves out
        deleted = epoch_of(output.get("deleted_at"))
        end = epoch_of(run.get("end"))
        if deleted is None or end is None:
            continue
        heal = _after(deleted, number(output.get("heal_after_delete_s")))
        first = _after(deleted, number(output.get("first_200_after_delete_s")))
        ready = _after(heal, number(lane.get("ready_after_heal_s"))) if heal is not None else None
        replacement = lane.get("replacement_pod") or "its replacement"
        b.event(LANE_RESTARTED, f"Envoy pod {lane.get('deleted_pod')} deleted", deleted)
        b.event(LANE_RESTARTED, "the follower saw the fault removed", heal)
        b.event(LANE_RESTARTED, f"{replacement} Ready", ready)
        b.event(LANE_RESTARTED, f"{replacement} served its first 200", first)
        b.span(LANE_RESTARTED, deleted, first or end, f"{replacement} serves nothing", "bad")
        b.span(LANE_RESTARTED, first, end, f"{replacement} serves", "ok")


def _after(start: float | None, seconds: float | None) -> float | None:
    return start + seconds if start is not None and seconds is not None else None
