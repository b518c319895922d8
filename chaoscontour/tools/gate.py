"""``chaoscontour gate JOURNAL``: judge a Chaos Toolkit journal for CI.

``chaos run`` exits 0 when the steady state is missed *before* the method (the method is then never played), when
an action of the method fails, and when a rollback fails, so a CI job cannot trust its exit code. The gate reads the
journal instead and passes only when the run completed, the steady state was met before and after, the experiment
did not deviate, and no activity of the method and no rollback failed.

Exit codes: 0 passed, 1 failed (the reasons are printed one per line), 2 the journal could not be judged
(unreadable, not JSON, truncated, or not a journal) or the command line was wrong.

The judging is a pure function, :func:`judge`, from a parsed journal to a :class:`Verdict`; reading files and
writing JUnit XML and Markdown happen around it.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ActivityResult",
    "AvailabilityFigures",
    "JournalError",
    "Verdict",
    "availability_outputs",
    "fault_findings",
    "judge",
    "load_journal",
    "main",
    "markdown_summary",
]

# Statuses chaostoolkit-lib writes at the top of a journal (chaoslib/run.py). Anything else means the file was not
# written by `chaos run` or was written by a version we do not know how to judge.
KNOWN_RUN_STATUSES = ("completed", "failed", "aborted", "interrupted")

# The probe whose output carries Envoy's availability figures and per-second timeline.
AVAILABILITY_FUNC = "envoy_availability"

# Phases, in the order they happen, as shown in the JUnit class names and the Markdown table.
PHASE_BEFORE = "steady-state before"
PHASE_METHOD = "method"
PHASE_AFTER = "steady-state after"
PHASE_ROLLBACK = "rollback"

_MAX_OUTPUT_CHARS = 300


class JournalError(ValueError):
    """The file cannot be judged: it is unreadable, not JSON, truncated, or not a Chaos Toolkit journal."""


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

    @property
    def ran(self) -> bool:
        return self.status != "not run"


@dataclass(frozen=True)
class AvailabilityFigures:
    """The key figures of one ``envoy_availability`` output, in the units shown to people."""

    name: str
    requests: int | None
    successes: int | None
    availability_pct: float | None
    longest_outage_s: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


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


# --------------------------------------------------------------------------------------------------------- reading


def load_journal(path: str | Path) -> dict[str, Any]:
    """Read and minimally validate a journal, raising :class:`JournalError` with a sentence a user can act on."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JournalError(f"{p}: no such file; pass the path given to `chaos run --journal-path`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JournalError(f"{p}: cannot read the journal: {exc}") from None
    if not text.strip():
        raise JournalError(f"{p}: the file is empty; the run may have been killed before chaostoolkit wrote it")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # json reports a cut-off document as an unterminated string or as a missing token at the very end.
        if exc.msg.startswith("Unterminated") or exc.pos >= len(text.rstrip()) - 1:
            raise JournalError(
                f"{p}: the JSON is cut short ({exc.msg} at line {exc.lineno} column {exc.colno}): the journal is "
                "truncated; the run may have been killed while chaostoolkit was writing it"
            ) from None
        raise JournalError(f"{p}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    check_journal(data, str(p))
    return data


def check_journal(data: object, where: str = "journal") -> None:
    """Raise :class:`JournalError` unless ``data`` has the shape of a journal written by ``chaos run``."""
    if not isinstance(data, Mapping):
        raise JournalError(f"{where}: not a Chaos Toolkit journal (the top level is not a JSON object)")
    missing = [k for k in ("experiment", "status", "run") if k not in data]
    if missing:
        hint = ""
        if "method" in data or "steady-state-hypothesis" in data:
            hint = "; this looks like an experiment, not the journal `chaos run` writes"
        raise JournalError(f"{where}: not a Chaos Toolkit journal (no {', '.join(repr(k) for k in missing)}){hint}")
    if not isinstance(data["experiment"], Mapping):
        raise JournalError(f"{where}: not a Chaos Toolkit journal ('experiment' is not an object)")
    if not isinstance(data["run"], list):
        raise JournalError(f"{where}: not a Chaos Toolkit journal ('run' is not a list)")
    if not isinstance(data["status"], str):
        raise JournalError(f"{where}: not a Chaos Toolkit journal ('status' is not a string)")
    for key in ("rollbacks",):
        if key in data and data[key] is not None and not isinstance(data[key], list):
            raise JournalError(f"{where}: not a Chaos Toolkit journal ({key!r} is not a list)")
    steady = data.get("steady_states")
    if steady is not None and not isinstance(steady, Mapping):
        raise JournalError(f"{where}: not a Chaos Toolkit journal ('steady_states' is not an object)")


# --------------------------------------------------------------------------------------------------------- judging

_TOKENISH = re.compile(r"(?i)(bearer\s+|token[\"']?\s*[:=]\s*[\"']?|password[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+")


def redact(text: str) -> str:
    """Mask bearer tokens and ``token=``/``password=`` values that an exception text may have picked up."""
    return _TOKENISH.sub(lambda m: m.group(1) + "<redacted>", text)


def _short(value: Any, limit: int = _MAX_OUTPUT_CHARS) -> str:
    try:
        text = json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _exception_text(run: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The last line of the journal's exception (what went wrong) and the whole traceback."""
    exc = run.get("exception")
    if not exc:
        return None, None
    lines = [str(x) for x in exc] if isinstance(exc, list) else [str(exc)]
    full = redact("".join(lines)).strip()
    last = next((ln.strip() for ln in reversed(full.splitlines()) if ln.strip()), full)
    # chaoslib wraps every provider error as "chaoslib.exceptions.ActivityFailed: <original>"; the original is what
    # a reader needs.
    for prefix in ("chaoslib.exceptions.ActivityFailed: ", "ActivityFailed: "):
        if last.startswith(prefix):
            last = last[len(prefix) :]
    return last, full


def _activity_name(activity: Mapping[str, Any]) -> str:
    return str(activity.get("name") or activity.get("ref") or "(unnamed)")


def _func(activity: Mapping[str, Any]) -> str | None:
    provider = activity.get("provider")
    if isinstance(provider, Mapping):
        func = provider.get("func") or provider.get("path") or provider.get("url")
        return str(func) if func else None
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _below_min_availability(output: Any) -> bool:
    """``envoy_availability`` returns its figures even below its ``min_availability`` and marks them so, because
    chaostoolkit checks no tolerance in the method: the gate is where that bound is enforced."""
    return isinstance(output, Mapping) and output.get("meets_min_availability") is False


def _pct(value: Any) -> str:
    pct = availability_pct(value)
    return "?" if pct is None else f"{pct:.2f} %"


def _result(phase: str, run: Mapping[str, Any], *, check_tolerance: bool) -> ActivityResult:
    activity = run.get("activity") if isinstance(run.get("activity"), Mapping) else {}
    assert isinstance(activity, Mapping)
    name = _activity_name(activity)
    status = str(run.get("status") or "unknown")
    failure: str | None = None
    detail: str | None = None
    last, full = _exception_text(run)
    if status != "succeeded":
        failure = f"{status}: {last}" if last else f"status {status!r}"
        detail = full
    elif _below_min_availability(run.get("output")):
        output = run.get("output")
        assert isinstance(output, Mapping)
        failure = (
            f"availability {_pct(output.get('availability'))} is below min_availability "
            f"{_pct(output.get('min_availability'))}"
        )
        detail = f"output: {_short({k: v for k, v in output.items() if k != 'timeline'}, 4000)}"
    elif check_tolerance and run.get("tolerance_met") is False:
        failure = (
            f"tolerance not met: expected {_short(activity.get('tolerance'), 120)}, got {_short(run.get('output'))}"
        )
        detail = f"tolerance: {_short(activity.get('tolerance'), 2000)}\noutput: {_short(run.get('output'), 4000)}"
    return ActivityResult(
        phase=phase,
        name=name,
        kind=str(activity.get("type") or "activity"),
        status=status,
        duration_s=_float(run.get("duration")),
        start=run.get("start") if isinstance(run.get("start"), str) else None,
        end=run.get("end") if isinstance(run.get("end"), str) else None,
        failure=failure,
        detail=detail,
        func=_func(activity),
        output=run.get("output"),
    )


def _runs(value: Any) -> list[Mapping[str, Any]]:
    return [r for r in value if isinstance(r, Mapping)] if isinstance(value, list) else []


def _with_not_run(phase: str, planned: Any, ran: list[ActivityResult], why: str) -> list[ActivityResult]:
    """``ran`` plus a "not run" entry for each planned activity that has no run, matched by name.

    Background activities may start out of order, so runs are matched by name rather than by position.
    """
    remaining = list(ran)
    out: list[ActivityResult] = []
    for activity in planned if isinstance(planned, list) else []:
        if not isinstance(activity, Mapping):
            continue
        name = _activity_name(activity)
        match = next((r for r in remaining if r.name == name), None)
        if match is not None:
            remaining.remove(match)
            out.append(match)
        else:
            out.append(
                ActivityResult(
                    phase=phase, name=name, kind=str(activity.get("type") or "activity"), status="not run", detail=why
                )
            )
    return out + remaining


def _steady_state(journal: Mapping[str, Any], when: str) -> Mapping[str, Any] | None:
    steady = journal.get("steady_states")
    if not isinstance(steady, Mapping):
        return None
    state = steady.get(when)
    return state if isinstance(state, Mapping) else None


def availability_outputs(journal: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """Every ``envoy_availability`` output in the journal as ``(activity name, output)``, in run order.

    A probe is recognised by its provider function, or, for a renamed wrapper, by an output that carries both an
    ``availability`` figure and a ``timeline``.
    """
    found: list[tuple[str, Mapping[str, Any]]] = []
    candidates: list[Mapping[str, Any]] = []
    for when in ("before", "after"):
        state = _steady_state(journal, when)
        if state is not None:
            candidates += _runs(state.get("probes"))
    candidates = _runs(journal.get("run")) + candidates
    for run in candidates:
        output = run.get("output")
        activity = run.get("activity")
        if not isinstance(output, Mapping) or not isinstance(activity, Mapping):
            continue
        by_func = _func(activity) == AVAILABILITY_FUNC
        by_shape = "availability" in output and isinstance(output.get("timeline"), list)
        if by_func or by_shape:
            found.append((_activity_name(activity), output))
    return found


def _finding(func: str | None, output: Mapping[str, Any], after_fault_removed: bool) -> str | None:
    """One sentence about what a chaoscontour activity of the method saw, or ``None``."""
    if func == "block_apiserver_egress":
        check = output.get("verification") or {}
        pods = ", ".join(output.get("selected_pods") or [])
        text = f"API server cut off for {pods} (blocked {', '.join(output.get('blocked_cidrs') or [])})"
        if check.get("confirmed"):
            return text + f"; confirmed after {check.get('confirmed_after_s')} s: the Lease stopped being renewed"
        return text + "; not verified"
    if func == "lease_holder" and not after_fault_removed:
        held = "still held" if output.get("held") else "not held"
        return f"during the fault the Lease was {held}: {output.get('seconds_since_renewal')} s since its last renewal"
    if func == "lease_holder":
        return f"afterwards {output.get('pod_name') or 'nobody'} holds the Lease (held: {output.get('held')})"
    if func == "contour_restart_count" and "terminated_since" in output:
        terminated = sorted({str(t.get("pod")) for t in output.get("terminations") or [] if isinstance(t, Mapping)})
        return (
            f"{output['terminated_since']} Contour container(s) terminated during the fault"
            + (f" ({', '.join(terminated)})" if terminated else "")
            + f"; {output.get('total_restarts')} restarts in all"
        )
    if func == "envoy_xds_connected":
        return (
            f"Envoy's xDS connection to Contour: {'connected' if output.get('connected') else 'disconnected'}; "
            f"its configuration was {output.get('cds_update_age_s')} s old and still served"
        )
    if func == "kill_leader" and output.get("new_pod"):
        return (
            f"leader {output.get('old_pod')} killed; {output.get('new_pod')} took over in {output.get('failover_s')} s"
        )
    return None


def fault_findings(journal: Mapping[str, Any]) -> list[str]:
    """What the method's chaoscontour activities observed, in run order: the story of the run in sentences."""
    findings: list[str] = []
    removed = False
    for run in _runs(journal.get("run")):
        activity, output = run.get("activity"), run.get("output")
        if not isinstance(activity, Mapping):
            continue
        func = _func(activity)
        if func == "unblock_apiserver_egress":
            removed = True
        if isinstance(output, Mapping):
            finding = _finding(func, output, removed)
            if finding:
                findings.append(finding)
    return findings


def availability_pct(value: Any) -> float | None:
    """``envoy_availability`` reports availability as a ratio in [0, 1]; shown as a percentage."""
    f = _float(value)
    if f is None:
        return None
    return f * 100.0 if f <= 1.0 else f


def _figures(name: str, output: Mapping[str, Any]) -> AvailabilityFigures:
    latency = output.get("latency_ms") if isinstance(output.get("latency_ms"), Mapping) else {}
    assert isinstance(latency, Mapping)
    requests = output.get("requests")
    successes = output.get("successes")
    return AvailabilityFigures(
        name=name,
        requests=requests if isinstance(requests, int) and not isinstance(requests, bool) else None,
        successes=successes if isinstance(successes, int) and not isinstance(successes, bool) else None,
        availability_pct=availability_pct(output.get("availability")),
        longest_outage_s=_float(output.get("longest_outage_s")),
        p50_ms=_float(latency.get("p50")),
        p95_ms=_float(latency.get("p95")),
        p99_ms=_float(latency.get("p99")),
    )


def judge(journal: Mapping[str, Any]) -> Verdict:
    """Decide whether a journal passes the gate, and why not.

    Pure: no I/O, no clock. Expects a mapping that :func:`check_journal` accepts.
    """
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
    if not isinstance(hypothesis, Mapping) or not planned_probes:
        reasons.append("the experiment has no steady-state hypothesis, so there is nothing to hold the run against")

    before = _steady_state(journal, "before")
    after = _steady_state(journal, "after")
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
    not_checked = "not run: the steady state was not checked"
    for phase, state in ((PHASE_BEFORE, before), (PHASE_AFTER, after)):
        ran = [_result(phase, r, check_tolerance=True) for r in _runs(state.get("probes"))] if state else []
        if phase == PHASE_AFTER and before_met is False:
            why = "not run: the steady state was missed before the method"
        else:
            why = not_checked
        results += _with_not_run(phase, planned_probes, ran, why)

    method_runs = [_result(PHASE_METHOD, r, check_tolerance=False) for r in _runs(journal.get("run"))]
    method_why = (
        "not run: the steady state was missed before the method"
        if before_met is False
        else f"not run: the run ended with status {status!r} before reaching it"
    )
    results += _with_not_run(PHASE_METHOD, experiment.get("method"), method_runs, method_why)

    rollback_runs = [_result(PHASE_ROLLBACK, r, check_tolerance=False) for r in _runs(journal.get("rollbacks"))]
    results += _with_not_run(
        PHASE_ROLLBACK,
        experiment.get("rollbacks"),
        rollback_runs,
        "not run: rollbacks were skipped (use `--rollback-strategy always`)",
    )

    for r in results:
        if r.phase in (PHASE_METHOD, PHASE_ROLLBACK) and r.failure:
            what = "rollback" if r.phase == PHASE_ROLLBACK else f"method {r.kind}"
            reasons.append(f"{what} {r.name!r} {r.failure}")
        elif r.phase in (PHASE_BEFORE, PHASE_AFTER) and r.failure:
            reasons.append(f"{r.phase} probe {r.name!r} {r.failure}")

    planned_rollbacks = experiment.get("rollbacks")
    if planned_rollbacks and not _runs(journal.get("rollbacks")) and before_met is not False:
        reasons.append("rollbacks were not played; run with `--rollback-strategy always` so the fault is always undone")

    during = journal.get("steady_states", {}).get("during") if isinstance(journal.get("steady_states"), Mapping) else []
    missed_during = [s for s in during or [] if isinstance(s, Mapping) and s.get("steady_state_met") is False]
    if missed_during:
        reasons.append(f"steady state not met during the method in {len(missed_during)} of {len(during)} checks")

    figures = tuple(_figures(name, output) for name, output in availability_outputs(journal))

    return Verdict(
        passed=not reasons,
        reasons=tuple(dict.fromkeys(reasons)),
        title=title,
        status=status,
        deviated=deviated,
        before_met=before_met,
        after_met=after_met,
        duration_s=_float(journal.get("duration")),
        start=journal.get("start") if isinstance(journal.get("start"), str) else None,
        results=tuple(results),
        availability=figures,
        findings=tuple(fault_findings(journal)),
    )


# --------------------------------------------------------------------------------------------------------- Markdown


def _md(text: object) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("`", "'")


def _fmt_s(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def _fmt(value: float | None, unit: str, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f} {unit}".rstrip()


def _met(value: bool | None) -> str:
    return {True: "met", False: "**not met**", None: "not checked"}[value]


def markdown_summary(verdict: Verdict, journal_name: str | None = None) -> str:
    """A Markdown summary for a CI job summary (``$GITHUB_STEP_SUMMARY``)."""
    head = "✅ passed" if verdict.passed else "❌ failed"
    lines = [f"## Chaos gate {head}: {_md(verdict.title)}", ""]
    facts = [
        f"run status `{verdict.status}`",
        f"deviated `{str(verdict.deviated).lower()}`",
        f"steady state before: {_met(verdict.before_met)}",
        f"after: {_met(verdict.after_met)}",
        f"duration {_fmt_s(verdict.duration_s)}",
    ]
    if journal_name:
        facts.insert(0, f"journal `{_md(journal_name)}`")
    lines += ["; ".join(facts) + ".", ""]
    if verdict.reasons:
        lines += ["**Why it failed**", ""]
        lines += [f"- {_md(r)}" for r in verdict.reasons]
        lines.append("")
    if verdict.findings:
        lines += ["### What happened", ""]
        lines += [f"- {_md(finding)}" for finding in verdict.findings]
        lines.append("")
    for fig in verdict.availability:
        lines += [f"### Envoy availability (`{_md(fig.name)}`)", ""]
        lines += ["| Availability | Longest outage | p50 | p95 | p99 | Requests (ok / total) |"]
        lines += ["|---:|---:|---:|---:|---:|---:|"]
        reqs = (
            "-" if fig.requests is None else f"{fig.successes if fig.successes is not None else '?'} / {fig.requests}"
        )
        lines += [
            f"| {_fmt(fig.availability_pct, '%', 2)} | {_fmt(fig.longest_outage_s, 's', 1)} | "
            f"{_fmt(fig.p50_ms, 'ms')} | {_fmt(fig.p95_ms, 'ms')} | {_fmt(fig.p99_ms, 'ms')} | {reqs} |",
            "",
        ]
    lines += [
        "### Activities",
        "",
        "| Phase | Activity | Type | Status | Duration | Note |",
        "|---|---|---|---|---:|---|",
    ]
    for r in verdict.results:
        status = r.status if not r.failure else f"**{r.status}**"
        note = r.failure or (r.detail if not r.ran else "")
        lines.append(
            f"| {r.phase} | `{_md(r.name)}` | {r.kind} | {status} | {_fmt_s(r.duration_s) if r.ran else '-'} | "
            f"{_md(note or '')} |"
        )
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------- command


def _error_verdict_reason(message: str) -> Verdict:
    return Verdict(
        passed=False,
        reasons=(message,),
        title="(journal could not be read)",
        status="unreadable",
        deviated=False,
        before_met=None,
        after_met=None,
        duration_s=None,
        start=None,
    )


def _write(path: str, text: str, append: bool) -> None:
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("a" if append else "w", encoding="utf-8") as f:
        f.write(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chaoscontour gate",
        description=(
            "Judge a Chaos Toolkit journal for CI. Exit 0 only when the run completed, the steady state was met "
            "before and after, the experiment did not deviate and no method activity or rollback failed; exit 1 "
            "with the reasons otherwise; exit 2 when the journal cannot be read."
        ),
    )
    parser.add_argument("journal", help="the journal written by `chaos run --journal-path`")
    parser.add_argument("--junit", metavar="PATH", help="write JUnit XML here (one test case per activity)")
    parser.add_argument("--summary", metavar="PATH", help="write a Markdown summary here (e.g. $GITHUB_STEP_SUMMARY)")
    parser.add_argument(
        "--append", action="store_true", help="append to the --summary file instead of replacing it (several gates)"
    )
    return parser


def _outputs(args: argparse.Namespace, verdict: Verdict, errored: bool) -> None:
    from chaoscontour.tools.junit import junit_xml

    if args.junit:
        _write(args.junit, junit_xml(verdict, errored=errored), append=False)
    if args.summary:
        _write(args.summary, markdown_summary(verdict, Path(args.journal).name), append=args.append)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        journal = load_journal(args.journal)
    except JournalError as exc:
        print(f"chaoscontour gate: error: {exc}", file=sys.stderr)
        try:
            _outputs(args, _error_verdict_reason(str(exc)), errored=True)
        except OSError as write_exc:
            print(f"chaoscontour gate: error: cannot write the outputs: {write_exc}", file=sys.stderr)
        return 2
    verdict = judge(journal)
    try:
        _outputs(args, verdict, errored=False)
    except OSError as exc:
        print(f"chaoscontour gate: error: cannot write the outputs: {exc}", file=sys.stderr)
        return 2
    if verdict.passed:
        print(f"PASSED: {verdict.title}")
        return 0
    print(f"FAILED: {verdict.title}")
    _print_lines(verdict.reasons)
    return 1


def _print_lines(lines: Iterable[str]) -> None:
    for line in lines:
        print(line)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
