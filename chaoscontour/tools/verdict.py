"""The gate's verdict on a journal: :func:`judge`, a pure function from a parsed journal (and options) to a
:class:`Verdict` with one reason per failed condition.

A journal passes only when the run completed, the steady state was met before and after, the experiment did not
deviate, every planned method activity and rollback ran and none failed, no ``envoy_availability`` output fell below
its ``min_availability`` or went missing, every ``block_apiserver_egress`` confirmed its fault (or the caller accepts
an unverified one), no ``apiserver_egress_fault`` probe saw the fault stop holding before the end of its window,
no ``lease_holder`` probe saw the verified Lease held while a confirmed block was in force, and every
``envoy_success_ratio`` probe (Envoy's own counters over the fault window) met the tolerance it declares. Envoy's
ratio is set beside the sampler's availability in the findings.

Each activity's result comes from :mod:`chaoscontour.tools.activity_results`; the checks on what chaoscontour's
activities returned are :mod:`chaoscontour.tools.output_checks`, on chaostoolkit-kubernetes' pod kills
:mod:`chaoscontour.tools.pod_kills`, on a stop condition :mod:`chaoscontour.tools.stop_condition`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chaoscontour.tools.activity_results import (
    PHASE_AFTER,
    PHASE_BEFORE,
    PHASE_METHOD,
    PHASE_ROLLBACK,
    ActivityResult,
    activity_result,
    with_not_run,
)
from chaoscontour.tools.findings import (
    AvailabilityFigures,
    TrafficFigures,
    availability_figures,
    fault_findings,
    side_by_side,
    traffic_figures,
)
from chaoscontour.tools.journal import (
    KNOWN_RUN_STATUSES,
    activity_name,
    number,
    planned,
    redact,
    runs,
    steady_state,
    steady_state_runs,
)
from chaoscontour.tools.output_checks import chaoscontour_reasons
from chaoscontour.tools.stop_condition import StopCondition, stop_condition, stop_findings, stop_reasons

__all__ = ["GateOptions", "Verdict", "judge"]


@dataclass(frozen=True)
class GateOptions:
    """What the caller accepts. ``allow_unverified``: a ``block_apiserver_egress`` run with ``verify=false`` (no
    confirmation either way) does not fail the gate; the verdict then says it rests on an unverified fault."""

    allow_unverified: bool = False


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: tuple[str, ...]
    title: str
    status: str
    deviated: bool
    before_met: bool | None
    after_met: bool | None
    duration_s: float | None
    start: str | None
    results: tuple[ActivityResult, ...] = field(default_factory=tuple)
    availability: tuple[AvailabilityFigures, ...] = field(default_factory=tuple)
    findings: tuple[str, ...] = field(default_factory=tuple)
    # Set when the verdict rests on a fault nobody confirmed (accepted with ``allow_unverified``): says which.
    unverified: str | None = None
    # What the verdict cannot vouch for without failing on it (e.g. no end-of-window probe in an older experiment).
    notes: tuple[str, ...] = field(default_factory=tuple)
    # The stop condition (chaostoolkit-addons' safeguard) that ended the run, if one did.
    stop: StopCondition | None = None
    # What Envoy's own counters said of the window (``envoy_success_ratio``), method first.
    traffic: tuple[TrafficFigures, ...] = field(default_factory=tuple)


def _why(r: ActivityResult) -> str:
    return (r.detail or "").removeprefix("not run: ")


def judge(journal: Mapping[str, Any], options: GateOptions | None = None) -> Verdict:
    """Decide whether a journal passes the gate, and why not.

    Pure: no I/O, no clock. Expects a mapping that :func:`chaoscontour.tools.journal.check_journal` accepts.
    """
    options = options or GateOptions()
    experiment = journal.get("experiment") if isinstance(journal.get("experiment"), Mapping) else {}
    assert isinstance(experiment, Mapping)
    title = str(experiment.get("title") or "(untitled experiment)")
    status = str(journal.get("status"))
    deviated = journal.get("deviated") is True
    reasons: list[str] = []

    if status not in KNOWN_RUN_STATUSES:
        reasons.append(f"run status is {status!r}, not one chaostoolkit writes (completed/failed/aborted/interrupted)")
    elif status != "completed":
        reasons.append(f"run status is {status!r}, not 'completed'")

    if experiment.get("dry"):
        reasons.append(f"the run was a dry run ({experiment.get('dry')}): activities were not really executed")

    hypothesis = experiment.get("steady-state-hypothesis")
    planned_probes = hypothesis.get("probes") if isinstance(hypothesis, Mapping) else None
    planned_probes = [p for p in planned_probes if isinstance(p, Mapping)] if isinstance(planned_probes, list) else []
    if not planned_probes:
        reasons.append("the experiment has no steady-state hypothesis, so there is nothing to hold the run against")

    before, after = steady_state(journal, "before"), steady_state(journal, "after")
    before_met = before.get("steady_state_met") if before is not None else None
    after_met = after.get("steady_state_met") if after is not None else None
    before_met = before_met if isinstance(before_met, bool) else None
    after_met = after_met if isinstance(after_met, bool) else None

    if planned_probes:
        if before_met is None:
            reasons.append("the steady state was not checked before the method")
        elif not before_met:
            # chaostoolkit exits 0 here: the method is skipped and the run is still 'completed'.
            reasons.append("steady state not met before the method (the method was not run)")
        if after_met is None:
            if before_met:
                reasons.append("the steady state was not checked after the method")
        elif not after_met:
            reasons.append("steady state not met after the method")
    if deviated and after_met is not False:
        reasons.append("the experiment deviated from its steady state")

    results: list[ActivityResult] = []
    for phase, when in ((PHASE_BEFORE, "before"), (PHASE_AFTER, "after")):
        ran = [activity_result(phase, r, check_tolerance=True) for r in steady_state_runs(journal, when)]
        if phase == PHASE_AFTER and before_met is False:
            why = "not run: the steady state was missed before the method"
        else:
            why = "not run: the steady state was not checked"
        results += with_not_run(phase, planned_probes, ran, why)

    ended = f"the run ended with status {status!r} before reaching it"
    method_why = (
        "not run: the steady state was missed before the method"
        if before_met is False
        else f"not run: {ended if status != 'completed' else 'the journal has no run of it'}"
    )
    method_runs = [activity_result(PHASE_METHOD, r, check_tolerance=False) for r in runs(journal)]
    results += with_not_run(PHASE_METHOD, planned(journal, "method"), method_runs, method_why)

    planned_rollbacks = planned(journal, "rollbacks")
    rollback_runs = [activity_result(PHASE_ROLLBACK, r, check_tolerance=False) for r in runs(journal, "rollbacks")]
    rollback_why = (
        "not run: rollbacks were skipped (use `--rollback-strategy always`)"
        if not rollback_runs
        else f"not run: {ended if status != 'completed' else 'the journal has no run of it'}"
    )
    results += with_not_run(PHASE_ROLLBACK, planned_rollbacks, rollback_runs, rollback_why)

    for r in results:
        if r.phase in (PHASE_METHOD, PHASE_ROLLBACK) and r.failure:
            what = "rollback" if r.phase == PHASE_ROLLBACK else f"method {r.kind}"
            reasons.append(f"{what} {r.name!r} {r.failure}")
        elif r.phase in (PHASE_BEFORE, PHASE_AFTER) and r.failure:
            reasons.append(f"{r.phase} probe {r.name!r} {r.failure}")

    # A method that never started (steady state missed before it) has nothing to undo and fails for that already.
    if before_met is not False:
        for r in results:
            if r.phase == PHASE_METHOD and not r.ran:
                reasons.append(f"planned method {r.kind} {r.name!r} did not run: {_why(r)}")
        if planned_rollbacks and not rollback_runs:
            names = ", ".join(repr(activity_name(a)) for a in planned_rollbacks)
            reasons.append(
                f"rollbacks were not played ({names}); run with `--rollback-strategy always` so the fault is always "
                "undone"
            )
        elif rollback_runs:
            for r in results:
                if r.phase == PHASE_ROLLBACK and not r.ran:
                    reasons.append(
                        f"planned rollback {r.name!r} did not run: {_why(r)}; the fault may still be in place"
                    )

    steady = journal.get("steady_states")
    during = steady.get("during") if isinstance(steady, Mapping) else None
    during = [s for s in during if isinstance(s, Mapping)] if isinstance(during, list) else []
    missed_during = [s for s in during if s.get("steady_state_met") is False]
    if missed_during:
        reasons.append(f"steady state not met during the method in {len(missed_during)} of {len(during)} checks")

    ours, accepted, notes = chaoscontour_reasons(results, allow_unverified=options.allow_unverified)
    reasons += ours
    stop = stop_condition(journal)
    reasons = stop_reasons(journal, stop) + reasons
    unverified = None
    if accepted:
        unverified = "the verdict rests on an unverified fault: " + "; ".join(accepted)

    availability = availability_figures(journal)
    traffic = traffic_figures(journal)
    findings = (*side_by_side(availability, traffic), *stop_findings(journal, stop), *fault_findings(journal))
    return Verdict(
        passed=not reasons,
        # Reasons quote outputs and exceptions, which may carry a token: mask them once, here.
        reasons=tuple(dict.fromkeys(redact(r) for r in reasons)),
        title=title,
        status=status,
        deviated=deviated,
        before_met=before_met,
        after_met=after_met,
        duration_s=number(journal.get("duration")),
        start=journal.get("start") if isinstance(journal.get("start"), str) else None,
        results=tuple(results),
        availability=availability,
        findings=tuple(redact(f) for f in findings),
        unverified=redact(unverified) if unverified else None,
        notes=tuple(notes),
        stop=stop,
        traffic=traffic,
    )
