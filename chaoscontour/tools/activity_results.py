"""What each activity of a journal did, phase by phase: an :class:`ActivityResult` per run entry (with the one-line
reason when it counts against the run), and a "not run" result for each planned activity the journal has no run of.

Pure functions of a parsed journal; :func:`chaoscontour.tools.verdict.judge` builds the gate's verdict on them, and
the JUnit XML, the Markdown summary and the HTML report list them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chaoslib.hypothesis import within_tolerance

from chaoscontour import contract
from chaoscontour.tools.findings import SUCCESS_RATIOS, availability_pct
from chaoscontour.tools.journal import (
    activity_name,
    activity_of,
    chaoscontour_func,
    exception_text,
    number,
    output_as,
    provider_target,
    redact,
)

__all__ = [
    "PHASE_AFTER",
    "PHASE_BEFORE",
    "PHASE_METHOD",
    "PHASE_ROLLBACK",
    "ActivityResult",
    "activity_result",
    "excerpt",
    "with_not_run",
]

# Phases, in the order they happen, as shown in the JUnit class names and the Markdown table.
PHASE_BEFORE = "steady-state before"
PHASE_METHOD = "method"
PHASE_AFTER = "steady-state after"
PHASE_ROLLBACK = "rollback"

_MAX_OUTPUT_CHARS = 300


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
    # A probe's tolerance as written in the experiment (chaostoolkit checks it only in the steady state).
    tolerance: Any = None

    @property
    def ran(self) -> bool:
        return self.status != "not run"


def excerpt(value: Any, limit: int = _MAX_OUTPUT_CHARS) -> str:
    """``value`` as compact JSON (its ``repr`` when it is not JSON), tokens masked, cut to ``limit`` characters."""
    try:
        text = json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pct(value: Any) -> str:
    pct = availability_pct(value)
    return "?" if pct is None else f"{pct:.2f} %"


def _ratio_failure(tolerance: Any, output: Any) -> str | None:
    """Why an ``envoy_success_ratio`` output misses the tolerance its probe declares, or ``None``.

    chaostoolkit checks no tolerance in the method, where this probe runs (in the background across the fault), so
    the gate checks it, with chaostoolkit's own :func:`within_tolerance`. A ``probe`` tolerance would run an
    activity: the gate runs none (``chaoscontour_reasons`` notes it as not checked)."""
    if isinstance(tolerance, Mapping) and tolerance.get("type") == "probe":
        return None
    figures = output_as(output, contract.ENVOY_SUCCESS_RATIO)
    if figures is None:
        return f"tolerance not met: expected {excerpt(tolerance, 120)}, got {excerpt(output, 120)}"
    ratio = figures.get("ratio")
    if ratio is None:
        return (
            f"tolerance not met: Envoy's counters give no ratio: {figures.get('not_computable') or 'no reason given'}"
        )
    try:
        # within_tolerance may write into a tolerance; the journal's stays as it was.
        met = within_tolerance(copy.deepcopy(tolerance), dict(figures))
    except Exception as exc:  # any error of chaoslib's check is a tolerance the gate cannot check
        return (
            f"tolerance {excerpt(tolerance, 120)} could not be checked ({type(exc).__name__}: {exc}); write its "
            "bounds as numbers (chaostoolkit substitutes no ${...} in a range)"
        )
    if met:
        return None
    return (
        f"tolerance not met: expected {excerpt(tolerance, 120)}, got ratio {ratio:.6g} ({figures.get('successes')} "
        f"of {figures.get('requests')} requests not 5xx on {', '.join(figures.get('clusters') or []) or 'no cluster'})"
    )


def activity_result(phase: str, run: Mapping[str, Any], *, check_tolerance: bool) -> ActivityResult:
    """The result of one run entry of the journal in ``phase``; ``check_tolerance``: a probe whose tolerance was not
    met counts against the run (the steady-state phases; chaostoolkit checks no tolerance in the method)."""
    activity = activity_of(run)
    status = str(run.get("status") or "unknown")
    output = run.get("output")
    # Any activity whose output says so (envoy_availability, or a user's wrapper of it) is below its bound.
    figures = output_as(output, contract.ENVOY_AVAILABILITY)
    failure: str | None = None
    detail: str | None = None
    last, full = exception_text(run)
    if "status" not in run:
        # chaoslib writes the entry without a status when a signal interrupts the activity itself.
        failure = "did not finish: the run was interrupted during it (no status in the journal)"
        detail = full
    elif status != "succeeded" or last:
        failure = f"{status}: {last}" if last else f"status {status!r}"
        detail = full
    elif figures is not None and figures.get("meets_min_availability") is False:
        # envoy_availability returns its figures even below its min_availability and marks them so, because
        # chaostoolkit checks no tolerance in the method: the gate is where that bound is enforced.
        failure = (
            f"availability {_pct(figures.get('availability'))} is below min_availability "
            f"{_pct(figures.get('min_availability'))}"
        )
        detail = f"output: {excerpt({k: v for k, v in figures.items() if k != 'timeline'}, 4000)}"
    elif check_tolerance and run.get("tolerance_met") is False:
        failure = f"tolerance not met: expected {excerpt(activity.get('tolerance'), 120)}, got {excerpt(output)}"
        detail = f"tolerance: {excerpt(activity.get('tolerance'), 2000)}\noutput: {excerpt(output, 4000)}"
    elif (
        not check_tolerance and chaoscontour_func(activity) in SUCCESS_RATIOS and activity.get("tolerance") is not None
    ):
        failure = _ratio_failure(activity.get("tolerance"), output)
        if failure:
            shown = {k: v for k, v in output.items() if k != "intervals"} if isinstance(output, Mapping) else output
            detail = f"tolerance: {excerpt(activity.get('tolerance'), 2000)}\noutput: {excerpt(shown, 4000)}"
    return ActivityResult(
        phase=phase,
        name=activity_name(activity),
        kind=str(activity.get("type") or "activity"),
        status=status,
        duration_s=number(run.get("duration")),
        start=run.get("start") if isinstance(run.get("start"), str) else None,
        end=run.get("end") if isinstance(run.get("end"), str) else None,
        failure=failure,
        detail=detail,
        func=provider_target(activity),
        output=output,
        ours=chaoscontour_func(activity),
        module=_python_module(activity),
        arguments=_provider_arguments(activity),
        tolerance=activity.get("tolerance"),
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


def with_not_run(
    phase: str, planned: list[Mapping[str, Any]], ran: list[ActivityResult], why: str
) -> list[ActivityResult]:
    """``ran`` plus a "not run" entry for each planned activity that has no run, matched by name.

    Background activities may finish out of order, so runs are matched by name rather than by position.
    """
    remaining = list(ran)
    out: list[ActivityResult] = []
    for activity in planned:
        name = activity_name(activity)
        match = next((r for r in remaining if r.name == name), None)
        if match is not None:
            remaining.remove(match)
            out.append(match)
        else:
            kind = str(activity.get("type") or "activity")
            ours = chaoscontour_func(activity)
            out.append(ActivityResult(phase=phase, name=name, kind=kind, status="not run", detail=why, ours=ours))
    return out + remaining
