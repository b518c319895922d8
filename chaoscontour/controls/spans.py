"""The spans of one run, read from its journal: pure data, no OpenTelemetry, no clock, no I/O.

:func:`run_spans` turns a Chaos Toolkit journal (what ``after_experiment_control`` receives) into a root span and its
children, each with its real start and end (nanoseconds since the epoch, exactly the journal's microseconds):

- ``experiment``: the journal's ``start`` to ``end``, with the title, status, ``deviated`` and ``interrupted``;
- ``activity: <name>`` for every run record: the steady-state probes before, during and after, the method's
  activities (background ones included) and the rollbacks, each with its type, status, phase, whether it ran in the
  background, its error and a short redacted summary of its output;
- ``fault window``: from each ``block_*`` action's start to the end of the first matching ``unblock_*`` that started
  after it (:data:`chaoscontour.contract.UNBLOCK_OF`, in the method or the rollbacks); to the block's own end when the
  block failed (it removes what it created before it returns); to the experiment's end, with
  ``chaoscontour.fault.removed`` false, when nothing removed it.

Every span carries the run's id (``chaoscontour.run.id``). The attribute names of chaostoolkit-opentracing's
OpenTelemetry control are kept where they mean the same (``chaostoolkit.experiment.*``, ``chaostoolkit.activity.*``),
so a query written for its spans finds ours.

No secrets, ever: activity arguments are not exported at all, texts go through the journal's :func:`redact` (bearer
and basic credentials, ``token=``/``password=`` values, a URL's ``user:password@``), every value of the experiment's
``secrets`` is masked wherever it appears, and an output is exported only as a short summary.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from chaoscontour import contract
from chaoscontour.domain.clock import parse_utc
from chaoscontour.tools.journal import (
    activity_name,
    activity_of,
    chaoscontour_func,
    exception_text,
    redact,
    runs,
    steady_state_runs,
)

__all__ = [
    "FAULT_WINDOW",
    "MASK",
    "ROOT",
    "RUN_ID",
    "AttributeValue",
    "RunSpans",
    "SpanPlan",
    "nanoseconds",
    "output_summary",
    "run_spans",
    "secret_values",
]

ROOT = "experiment"
FAULT_WINDOW = "fault window"
RUN_ID = "chaoscontour.run.id"
MASK = "<secret>"
# A secret shorter than this is not searched for: masking every "on" or "1" would garble the rest.
MIN_SECRET_CHARS = 4
MAX_SUMMARY_CHARS = 256
MAX_STRING_CHARS = 48
MAX_ERROR_CHARS = 512

AttributeValue = str | bool | int | float
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class SpanPlan:
    """One span to export: its name, start and end (epoch nanoseconds), attributes, and an error description when
    its status is an error (``None``: status unset)."""

    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class RunSpans:
    """The root ``experiment`` span and its children (every one a direct child of the root)."""

    root: SpanPlan
    children: tuple[SpanPlan, ...]


# --------------------------------------------------------------------------------------------------------- values


def nanoseconds(value: object) -> int | None:
    """Epoch nanoseconds of a journal time (ISO 8601, naive meaning UTC), exact to its microseconds; ``None`` when
    ``value`` is not such a time."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = parse_utc(value)
    except ValueError:
        return None
    return (moment - _EPOCH) // _MICROSECOND * 1000


def secret_values(secrets: object) -> tuple[str, ...]:
    """Every string of ``secrets`` (chaostoolkit's ``{scope: {name: value}}``, any depth) long enough to mask,
    longest first so that a secret containing another is masked whole."""
    found: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, str) and len(value) >= MIN_SECRET_CHARS:
            found.add(value)
        elif isinstance(value, Mapping):
            for child in value.values():
                walk(child)
        elif isinstance(value, list | tuple):
            for child in value:
                walk(child)

    walk(secrets)
    return tuple(sorted(found, key=lambda s: (-len(s), s)))


def _clean(text: str, secrets: Sequence[str], limit: int) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _scalar(value: object, secrets: Sequence[str]) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(_clean(value, secrets, MAX_STRING_CHARS))
    if isinstance(value, Mapping):
        return f"{{{len(value)} keys}}"
    if isinstance(value, list | tuple):
        return f"[{len(value)} items]"
    return type(value).__name__


def output_summary(output: object, secrets: Sequence[str] = ()) -> str:
    """A short summary of an activity's output: a mapping's keys with its scalar values (a string cut to
    :data:`MAX_STRING_CHARS` characters, redacted, secrets masked) and the sizes of its lists and mappings; at most
    :data:`MAX_SUMMARY_CHARS` characters in all."""
    if isinstance(output, Mapping):
        text = "{" + ", ".join(f"{key}: {_scalar(value, secrets)}" for key, value in output.items()) + "}"
    else:
        text = _scalar(output, secrets)
    return _clean(text, secrets, MAX_SUMMARY_CHARS)


# --------------------------------------------------------------------------------------------------------- spans


@dataclass(frozen=True)
class _Record:
    run: Mapping[str, Any]
    phase: str
    start_ns: int
    end_ns: int


def _records(journal: Mapping[str, Any], end_ns: int) -> list[_Record]:
    steady = journal.get("steady_states")
    during = steady.get("during") if isinstance(steady, Mapping) else None
    during_runs = [
        probe
        for check in (during if isinstance(during, list) else [])
        if isinstance(check, Mapping) and isinstance(check.get("probes"), list)
        for probe in check["probes"]
        if isinstance(probe, Mapping)
    ]
    phases: list[tuple[str, Iterable[Mapping[str, Any]]]] = [
        ("steady-state-before", steady_state_runs(journal, "before")),
        ("method", runs(journal)),
        ("steady-state-during", during_runs),
        ("steady-state-after", steady_state_runs(journal, "after")),
        ("rollback", runs(journal, "rollbacks")),
    ]
    found = []
    for phase, entries in phases:
        for run in entries:
            start = nanoseconds(run.get("start"))
            if start is None:
                continue
            # A run record always gets its end (chaoslib sets it in a `finally`); the experiment's end otherwise.
            end = nanoseconds(run.get("end"))
            found.append(_Record(run, phase, start, end if end is not None and end >= start else max(start, end_ns)))
    return found


def _activity_span(record: _Record, run_id: str, secrets: Sequence[str]) -> SpanPlan:
    run, activity = record.run, activity_of(record.run)
    name = _clean(activity_name(activity), secrets, MAX_STRING_CHARS * 2)
    # chaoslib records no status for an activity that an interruption (SIGINT, SystemExit) cut short.
    status = str(run.get("status") or "interrupted")
    attributes: dict[str, AttributeValue] = {
        RUN_ID: run_id,
        "chaostoolkit.activity.name": name,
        "chaostoolkit.activity.type": str(activity.get("type") or ""),
        "chaostoolkit.activity.status": status,
        "chaostoolkit.activity.background": bool(activity.get("background")),
        "chaoscontour.activity.phase": record.phase,
        "chaostoolkit.activity.output": output_summary(run.get("output"), secrets),
    }
    provider = activity.get("provider")
    if isinstance(provider, Mapping) and provider.get("type", "python") == "python":
        attributes["chaoscontour.activity.function"] = f"{provider.get('module')}.{provider.get('func')}"
    if isinstance(run.get("tolerance_met"), bool):
        attributes["chaostoolkit.activity.tolerance_met"] = run["tolerance_met"]
    error, _ = exception_text(run)
    if error is not None:
        attributes["chaostoolkit.activity.error"] = _clean(error, secrets, MAX_ERROR_CHARS)
    described = attributes.get("chaostoolkit.activity.error", status)
    failure = str(described) if status != "succeeded" else None
    return SpanPlan(f"activity: {name}", record.start_ns, record.end_ns, attributes, failure)


def _fault_spans(records: Sequence[_Record], run_id: str, end_ns: int, secrets: Sequence[str]) -> list[SpanPlan]:
    acting = sorted((r for r in records if r.phase in ("method", "rollback")), key=lambda r: r.start_ns)
    found = []
    for block in acting:
        func = chaoscontour_func(block.run)
        if func not in contract.UNBLOCK_OF:
            continue
        unblock_func = contract.UNBLOCK_OF[func]
        attributes: dict[str, AttributeValue] = {
            RUN_ID: run_id,
            "chaoscontour.fault.kind": func,
            "chaoscontour.fault.block": _clean(activity_name(activity_of(block.run)), secrets, MAX_STRING_CHARS * 2),
        }
        output = block.run.get("output")
        check = output.get("verification") if isinstance(output, Mapping) else None
        if isinstance(check, Mapping) and isinstance(check.get("confirmed"), bool):
            attributes["chaoscontour.fault.confirmed"] = check["confirmed"]
        unblock = next(
            (r for r in acting if r.start_ns >= block.start_ns and chaoscontour_func(r.run) == unblock_func), None
        )
        if block.run.get("status") == "failed":
            end = block.end_ns
            attributes["chaoscontour.fault.removed"] = True
            attributes["chaoscontour.fault.removed_by"] = "the block itself: it failed, and removed what it created"
        elif unblock is not None:
            end = unblock.end_ns
            attributes["chaoscontour.fault.removed"] = True
            attributes["chaoscontour.fault.removed_by"] = _clean(
                activity_name(activity_of(unblock.run)), secrets, MAX_STRING_CHARS * 2
            )
            attributes["chaoscontour.fault.removal_status"] = str(unblock.run.get("status") or "interrupted")
        else:
            end = max(end_ns, block.start_ns)
            attributes["chaoscontour.fault.removed"] = False
            attributes["chaoscontour.fault.never_removed"] = (
                f"no {unblock_func} ran after it: the window ends with the experiment; "
                "`chaoscontour cleanup` removes what is left"
            )
        found.append(SpanPlan(FAULT_WINDOW, block.start_ns, end, attributes))
    return found


def run_spans(journal: Mapping[str, Any], run_id: str, secrets: Sequence[str] = ()) -> RunSpans:
    """The spans of the run ``journal`` records, all carrying ``run_id``; ``secrets`` (:func:`secret_values`) are
    masked in every text. A journal without a valid ``start`` gives a root at its first run's start (or 0)."""
    found_start = nanoseconds(journal.get("start"))
    found_end = nanoseconds(journal.get("end"))
    start = found_start if found_start is not None else 0
    records = _records(journal, found_end if found_end is not None else start)
    if found_start is None and records:
        start = min(r.start_ns for r in records)
    end = found_end if found_end is not None else max([start, *(r.end_ns for r in records)])
    end = max(end, start)
    status = str(journal.get("status") or "unknown")
    deviated = journal.get("deviated") is True
    experiment = journal.get("experiment")
    title = experiment.get("title") if isinstance(experiment, Mapping) else None
    attributes: dict[str, AttributeValue] = {
        RUN_ID: run_id,
        "chaostoolkit.experiment.title": _clean(str(title or ""), secrets, MAX_ERROR_CHARS),
        "chaostoolkit.experiment.status": status,
        "chaostoolkit.experiment.deviated": deviated,
        "chaostoolkit.experiment.interrupted": status == "interrupted",
    }
    error = None
    if status != "completed" or deviated:
        error = "deviated" if deviated and status == "completed" else status
    children = [_activity_span(r, run_id, secrets) for r in records] + _fault_spans(records, run_id, end, secrets)
    never_removed = sum(1 for c in children if c.attributes.get("chaoscontour.fault.removed") is False)
    if never_removed:
        attributes["chaoscontour.faults.never_removed"] = never_removed
    return RunSpans(SpanPlan(ROOT, start, end, attributes, error), tuple(children))
