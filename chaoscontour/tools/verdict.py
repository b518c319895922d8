"""The gate's verdict on a journal: :func:`judge`, a pure function from a parsed journal (and options) to a
:class:`Verdict` with one reason per failed condition.

A journal passes only when the run completed, the steady state was met before and after, the experiment did not
deviate, every planned method activity and rollback ran and none failed, no ``envoy_availability`` output fell below
its ``min_availability`` or went missing, every ``block_apiserver_egress`` confirmed its fault (or the caller accepts
an unverified one), no ``apiserver_egress_fault`` probe saw the fault stop holding before the end of its window,
and no ``lease_holder`` probe saw the verified Lease held while a confirmed block was in force.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chaoscontour.tools import journal as j
from chaoscontour.tools.findings import (
    AvailabilityFigures,
    availability_figures,
    availability_pct,
    fault_findings,
    fault_reasons,
)
from chaoscontour.tools.pod_kills import pod_kill_reasons
from chaoscontour.tools.stop_condition import StopCondition, stop_condition, stop_findings, stop_reasons

__all__ = [
    "PHASE_AFTER",
    "PHASE_BEFORE",
    "PHASE_METHOD",
    "PHASE_ROLLBACK",
    "ActivityResult",
    "GateOptions",
    "Verdict",
    "judge",
]

# Phases, in the order they happen, as shown in the JUnit class names and the Markdown table.
PHASE_BEFORE = "steady-state before"
PHASE_METHOD = "method"
PHASE_AFTER = "steady-state after"
PHASE_ROLLBACK = "rollback"

_MAX_OUTPUT_CHARS = 300


@dataclass(frozen=True)
class GateOptions:
    """What the caller accepts. ``allow_unverified``: a ``block_apiserver_egress`` run with ``verify=false`` (no
    confirmation either way) does not fail the gate; the verdict then says it rests on an unverified fault."""

    allow_unverified: bool = False


@dataclass(frozen=True)
class ActivityResult:
    """One activity as it ran (or did not run) in one phase of the experiment."""

    phase: str
    name: str
    kind: str  # "probe" or "action"
    status: str  # "succeeded", "failed", or "not run"
    duration_s: float | None = None
    start: str | None = None
    end: str | None = None
    # A one-line reason when this activity counts against the run, and the longer text behind it.
    failure: str | None = None
    detail: str | None = None
    func: str | None = None
    output: Any = None
    # The function name when the activity is one of chaoscontour's (``provider.module`` in chaoscontour.activities).
    ours: str | None = None
    # A python provider's module (``chaosk8s.pod.actions``...), for the checks on other extensions' activities.
    module: str | None = None
    # The provider's arguments as written in the experiment (placeholders unresolved).
    arguments: Any = None

    @property
    def ran(self) -> bool:
        return self.status != "not run"


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


# --------------------------------------------------------------------------------------------------------- results


def _short(value: Any, limit: int = _MAX_OUTPUT_CHARS) -> str:
    try:
        text = json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    text = j.redact(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pct(value: Any) -> str:
    pct = availability_pct(value)
    return "?" if pct is None else f"{pct:.2f} %"


def _result(phase: str, run: Mapping[str, Any], *, check_tolerance: bool) -> ActivityResult:
    activity = j.activity_of(run)
    status = str(run.get("status") or "unknown")
    output = run.get("output")
    failure: str | None = None
    detail: str | None = None
    last, full = j.exception_text(run)
    if "status" not in run:
        # chaoslib writes the entry without a status when a signal interrupts the activity itself.
        failure = "did not finish: the run was interrupted during it (no status in the journal)"
        detail = full
    elif status != "succeeded" or last:
        failure = f"{status}: {last}" if last else f"status {status!r}"
        detail = full
    elif isinstance(output, Mapping) and output.get("meets_min_availability") is False:
        # envoy_availability returns its figures even below its min_availability and marks them so, because
        # chaostoolkit checks no tolerance in the method: the gate is where that bound is enforced.
        failure = (
            f"availability {_pct(output.get('availability'))} is below min_availability "
            f"{_pct(output.get('min_availability'))}"
        )
        detail = f"output: {_short({k: v for k, v in output.items() if k != 'timeline'}, 4000)}"
    elif check_tolerance and run.get("tolerance_met") is False:
        failure = f"tolerance not met: expected {_short(activity.get('tolerance'), 120)}, got {_short(output)}"
        detail = f"tolerance: {_short(activity.get('tolerance'), 2000)}\noutput: {_short(output, 4000)}"
    return ActivityResult(
        phase=phase,
        name=j.activity_name(activity),
        kind=str(activity.get("type") or "activity"),
        status=status,
        duration_s=j.number(run.get("duration")),
        start=run.get("start") if isinstance(run.get("start"), str) else None,
        end=run.get("end") if isinstance(run.get("end"), str) else None,
        failure=failure,
        detail=detail,
        func=j.provider_target(activity),
        output=output,
        ours=j.chaoscontour_func(activity),
        module=_python_module(activity),
        arguments=_provider_arguments(activity),
    )


def _provider_arguments(activity: Mapping[str, Any]) -> Any:
    provider = activity.get("provider")
    return provider.get("arguments") if isinstance(provider, Mapping) else None


def _python_module(activity: Mapping[str, Any]) -> str | None:
    provider = activity.get("provider")
    if isinstance(provider, Mapping) and provider.get("type", "python") == "python":
        module = provider.get("module")
        return module if isinstance(module, str) else None
    return None


def _with_not_run(
    phase: str, planned: list[Mapping[str, Any]], ran: list[ActivityResult], why: str
) -> list[ActivityResult]:
    """``ran`` plus a "not run" entry for each planned activity that has no run, matched by name.

    Background activities may finish out of order, so runs are matched by name rather than by position.
    """
    remaining = list(ran)
    out: list[ActivityResult] = []
    for activity in planned:
        name = j.activity_name(activity)
        match = next((r for r in remaining if r.name == name), None)
        if match is not None:
            remaining.remove(match)
            out.append(match)
        else:
            kind = str(activity.get("type") or "activity")
            ours = j.chaoscontour_func(activity)
            out.append(ActivityResult(phase=phase, name=name, kind=kind, status="not run", detail=why, ours=ours))
    return out + remaining


def _why(r: ActivityResult) -> str:
    return (r.detail or "").removeprefix("not run: ")


# --------------------------------------------------------------------------------------------------------- judging


def _unverified_block(r: ActivityResult) -> tuple[str, bool] | None:
    """Why a succeeded ``block_apiserver_egress`` run does not prove its fault, and whether that may be accepted
    (no verification at all) or never (a verification that did not confirm the fault)."""
    output = r.output if isinstance(r.output, Mapping) else {}
    check = output.get("verification")
    if isinstance(check, Mapping) and check.get("confirmed") is True:
        return None
    if not isinstance(check, Mapping):
        return f"the fault of {r.name!r} was not verified (its output has no verification)", True
    if check.get("confirmed") is None:
        return f"the fault of {r.name!r} was not verified (verify=false)", True
    evidence = check.get("evidence_text") or check.get("evidence")
    return f"the fault of {r.name!r} was not confirmed" + (f": {evidence}" if evidence else ""), False


def _during_a_confirmed_block(
    method: list[ActivityResult], block_func: str = j.BLOCK_APISERVER
) -> list[tuple[ActivityResult, ActivityResult]]:
    """The method's results that started while a *confirmed* block (``block_func``) was in force: after the block
    returned (it returns once its verification confirmed the fault), before any unblock of the same fault in the
    method started; each with that block's result."""
    unblock = j.UNBLOCK_APISERVER if block_func == j.BLOCK_APISERVER else j.UNBLOCK_XDS
    found: list[tuple[ActivityResult, ActivityResult]] = []
    for index, block in enumerate(method):
        output = block.output if isinstance(block.output, Mapping) else {}
        check = output.get("verification")
        if block.ours != block_func or not isinstance(check, Mapping) or check.get("confirmed") is not True:
            continue
        later = method[index + 1 :]
        heal = next((r.start for r in later if r.ours == unblock and r.ran and r.start), None)
        for r in later:
            in_window = bool(r.start and block.end and r.start >= block.end and (heal is None or r.start < heal))
            if r.ran and in_window:
                found.append((r, block))
    return found


def _contradicting_evidence(method: list[ActivityResult]) -> list[str]:
    """A Lease seen held while a confirmed API-server block was in force: a Contour renewed it, so it reached the API
    server and the fault did not hold, whatever the end-of-window probe says (it may have run before, or read
    another object); only the Lease the block verified counts. And an xDS stream seen on an open connection while a
    confirmed xDS block was in force: Envoy reached Contour again."""
    reasons = []
    for r, block in _during_a_confirmed_block(method):
        output = r.output if isinstance(r.output, Mapping) else {}
        verified = str(block.output["verification"].get("lease") or "")
        lease = f"Lease {output.get('namespace')}/{output.get('name')}"
        if r.ours == j.LEASE_HOLDER and lease == verified and output.get("held") is True:
            reasons.append(
                f"{r.name!r} saw {verified} held during the API-server fault (renewed "
                f"{output.get('seconds_since_renewal')} s before, by {output.get('holder_identity')}): a Contour "
                "still reached the API server after the fault was confirmed, so it did not hold"
            )
    for r, block in _during_a_confirmed_block(method, j.BLOCK_XDS):
        output = r.output if isinstance(r.output, Mapping) else {}
        found = output.get("stream")
        stream: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        # Only an open connection counts: a connected_state gauge alone reads 1 while Envoy merely dials.
        if r.ours == j.ENVOY_XDS and output.get("connected") is True and (j.number(stream.get("streams_open")) or 0):
            reasons.append(
                f"{r.name!r} saw Envoy's xDS stream up during the xDS fault of {block.name!r} "
                f"({stream.get('streams_open')} stream(s) open on {stream.get('xds_cluster')}, none waiting): "
                "Envoy opened a connection to Contour after the fault was confirmed, so it did not hold "
                "(a probe must read one of the Envoy pods the block selected)"
            )
    return reasons


def _chaoscontour_reasons(
    results: list[ActivityResult], options: GateOptions
) -> tuple[list[str], list[str], list[str]]:
    """(reasons, unverified faults accepted, notes) from what chaoscontour's method activities returned."""
    reasons: list[str] = []
    accepted: list[str] = []
    notes: list[str] = []
    method = [r for r in results if r.phase == PHASE_METHOD]
    for r in method:
        output = r.output if isinstance(r.output, Mapping) else None
        succeeded = r.ran and r.status == "succeeded"
        if r.ours == j.ENVOY_AVAILABILITY and r.ran and not succeeded:
            reasons.append(
                f"no availability figures: the sampler {r.name!r} failed, so nothing shows what Envoy's clients saw"
            )
        elif r.ours == j.ENVOY_AVAILABILITY and succeeded and j.number((output or {}).get("availability")) is None:
            reasons.append(f"no availability figures: the sampler {r.name!r} returned {_short(r.output, 120)}")
        elif r.ours in (j.BLOCK_APISERVER, j.BLOCK_XDS) and succeeded:
            unverified = _unverified_block(r)
            if unverified is None:
                continue
            text, acceptable = unverified
            if acceptable and options.allow_unverified:
                accepted.append(text)
            elif acceptable:
                lost = "Contour lost the API server" if r.ours == j.BLOCK_APISERVER else "Envoy lost its xDS stream"
                reasons.append(f"{text}: nothing shows {lost} (--allow-unverified accepts that)")
            else:
                reasons.append(text)
        elif r.ours == j.ENDPOINT_VIEW and succeeded and isinstance((output or {}).get("since"), Mapping):
            since = (output or {})["since"]
            if since.get("endpointslices_changed") and since.get("membership_changed"):
                reasons.append(
                    f"{r.name!r}: Envoy's endpoint list changed during the fault (Contour still saw the "
                    "EndpointSlices), so stale endpoints were not tested; lengthen freeze_wait_s"
                )
        elif r.ours == j.XDS_TIMELINE and succeeded and output is not None and output.get("meets_bounds") is False:
            misses = "; ".join(str(m) for m in output.get("bound_misses") or []) or "no reason given"
            reasons.append(f"{r.name!r} missed its bounds: {misses}")
        elif r.ours in (j.APISERVER_FAULT, j.XDS_FAULT) and succeeded:
            if output is None or not isinstance(output.get("held"), bool):
                reasons.append(f"{r.name!r} did not say whether the fault held (no 'held' in its output)")
            elif output["held"] is False:
                reasons.append(
                    f"the fault did not hold for the whole window ({r.name!r}): {'; '.join(fault_reasons(output))}"
                )
    reasons += _contradicting_evidence(method)
    reasons += pod_kill_reasons(method)
    for block, probe in ((j.BLOCK_APISERVER, j.APISERVER_FAULT), (j.BLOCK_XDS, j.XDS_FAULT)):
        if any(r.ours == block for r in method) and not any(r.ours == probe for r in method):
            notes.append(
                f"the method has no {probe} probe, so nothing checked that the fault still held at the end "
                "of its window (an experiment written before that probe existed)"
            )
    return reasons, accepted, notes


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

    if status not in j.KNOWN_RUN_STATUSES:
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

    before, after = j.steady_state(journal, "before"), j.steady_state(journal, "after")
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
        ran = [_result(phase, r, check_tolerance=True) for r in j.steady_state_runs(journal, when)]
        if phase == PHASE_AFTER and before_met is False:
            why = "not run: the steady state was missed before the method"
        else:
            why = "not run: the steady state was not checked"
        results += _with_not_run(phase, planned_probes, ran, why)

    ended = f"the run ended with status {status!r} before reaching it"
    method_why = (
        "not run: the steady state was missed before the method"
        if before_met is False
        else f"not run: {ended if status != 'completed' else 'the journal has no run of it'}"
    )
    method_runs = [_result(PHASE_METHOD, r, check_tolerance=False) for r in j.runs(journal)]
    results += _with_not_run(PHASE_METHOD, j.planned(journal, "method"), method_runs, method_why)

    planned_rollbacks = j.planned(journal, "rollbacks")
    rollback_runs = [_result(PHASE_ROLLBACK, r, check_tolerance=False) for r in j.runs(journal, "rollbacks")]
    rollback_why = (
        "not run: rollbacks were skipped (use `--rollback-strategy always`)"
        if not rollback_runs
        else f"not run: {ended if status != 'completed' else 'the journal has no run of it'}"
    )
    results += _with_not_run(PHASE_ROLLBACK, planned_rollbacks, rollback_runs, rollback_why)

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
            names = ", ".join(repr(j.activity_name(a)) for a in planned_rollbacks)
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

    ours, accepted, notes = _chaoscontour_reasons(results, options)
    reasons += ours
    stop = stop_condition(journal)
    reasons = stop_reasons(journal, stop) + reasons
    unverified = None
    if accepted:
        unverified = "the verdict rests on an unverified fault: " + "; ".join(accepted)

    return Verdict(
        passed=not reasons,
        # Reasons quote outputs and exceptions, which may carry a token: mask them once, here.
        reasons=tuple(dict.fromkeys(j.redact(r) for r in reasons)),
        title=title,
        status=status,
        deviated=deviated,
        before_met=before_met,
        after_met=after_met,
        duration_s=j.number(journal.get("duration")),
        start=journal.get("start") if isinstance(journal.get("start"), str) else None,
        results=tuple(results),
        availability=availability_figures(journal),
        findings=tuple(j.redact(f) for f in (*stop_findings(journal, stop), *fault_findings(journal))),
        unverified=j.redact(unverified) if unverified else None,
        notes=tuple(notes),
        stop=stop,
    )
