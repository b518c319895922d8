"""Reading a Chaos Toolkit journal: loading it, walking its runs, and recognising chaoscontour's activities.

The one place that knows the journal's shape (see chaostoolkit-lib's ``chaoslib/run.py``): ``status``, ``deviated``,
``steady_states.{before,after,during}``, ``run[]`` and ``rollbacks[]``, each run entry with its ``activity``,
``output``, ``status``, ``exception``, ``start``/``end``/``duration`` and, for probes, ``tolerance_met``. The gate, the
report and the JUnit and Markdown outputs read journals only through this module.

A run entry is one of ours when its ``provider.module`` is in ``chaoscontour.activities``; its ``provider.func`` is
then one of the names the declared contract (:mod:`chaoscontour.contract`) lists, which name the constants below. A
user's own function that happens to be called ``kill_leader`` is not ours. Its output is read through
:func:`output_as` or :func:`output_of`, typed as the contract declares it: mypy then checks the type of each
declared key the tools read (it lets ``.get`` of an undeclared key pass; ``tests/unit/test_output_reads.py`` fails
when the gate or the report reads one).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

from chaoscontour import contract
from chaoscontour.domain.clock import parse_utc

__all__ = [
    "ACTIVITIES",
    "ACTIVITY_MODULE",
    "APISERVER_FAULT",
    "BLOCK_APISERVER",
    "BLOCK_XDS",
    "ENDPOINTS_CONVERGED",
    "ENDPOINT_VIEW",
    "ENVOY_AVAILABILITY",
    "RESTART_ENVOY",
    "ENVOY_SERVING",
    "ENVOY_XDS",
    "KILL_LEADER",
    "KNOWN_RUN_STATUSES",
    "LEASE_HOLDER",
    "REMOVE_ROUTE_MARKER",
    "RESTART_COUNT",
    "ROUTE_CONVERGED",
    "ROUTE_PROPAGATION",
    "UNBLOCK_APISERVER",
    "UNBLOCK_XDS",
    "WAIT",
    "XDS_FAULT",
    "XDS_TIMELINE",
    "JournalError",
    "activity_name",
    "activity_of",
    "chaoscontour_func",
    "check_journal",
    "epoch_of",
    "exception_text",
    "load_journal",
    "redact_values",
    "number",
    "output_as",
    "output_of",
    "planned",
    "provider_target",
    "redact",
    "runs",
    "steady_state",
    "steady_state_runs",
    "walk",
]

# The package whose modules hold chaoscontour's activities (what `chaos discover chaostoolkit-contour` lists).
ACTIVITY_MODULE = contract.ACTIVITY_PACKAGE

# The names the readers below and the tools match a run entry's `provider.func` against, from the declared contract.
# chaoscontour.activities.network
BLOCK_APISERVER = contract.BLOCK_APISERVER_EGRESS.name
UNBLOCK_APISERVER = contract.UNBLOCK_APISERVER_EGRESS.name
# The probe run at the end of the fault window: the policy, its addresses and its expiry still hold the fault.
APISERVER_FAULT = contract.APISERVER_EGRESS_FAULT.name
# chaoscontour.activities.leader
KILL_LEADER = contract.KILL_LEADER.name
LEASE_HOLDER = contract.LEASE_HOLDER.name
# chaoscontour.activities.pods
RESTART_COUNT = contract.CONTOUR_RESTART_COUNT.name
# chaoscontour.activities.envoy
ENVOY_SERVING = contract.ENVOY_SERVING.name
ENVOY_AVAILABILITY = contract.ENVOY_AVAILABILITY.name
ENVOY_XDS = contract.ENVOY_XDS_CONNECTED.name
# chaoscontour.activities.envoy_restart
RESTART_ENVOY = contract.RESTART_ENVOY_POD.name
# chaoscontour.activities.timing: a strict, interruptible pause in place of chaostoolkit's `pauses`.
WAIT = contract.WAIT.name
# chaoscontour.activities.xds: the xDS black hole (Envoy's egress to Contour's xDS port) and its end-of-window probe
BLOCK_XDS = contract.BLOCK_XDS_EGRESS.name
UNBLOCK_XDS = contract.UNBLOCK_XDS_EGRESS.name
XDS_FAULT = contract.XDS_EGRESS_FAULT.name
# chaoscontour.activities.xds_probes
XDS_TIMELINE = contract.ENVOY_XDS_TIMELINE.name
# chaoscontour.activities.routes (also importable from xds_probes, where older experiments name them)
ROUTE_PROPAGATION = contract.ROUTE_CHANGE_PROPAGATION.name
ROUTE_CONVERGED = contract.ROUTE_CONFIG_CONVERGED.name
REMOVE_ROUTE_MARKER = contract.REMOVE_ROUTE_MARKER.name
# chaoscontour.activities.endpoints
ENDPOINT_VIEW = contract.ENVOY_BACKEND_VIEW.name
ENDPOINTS_CONVERGED = contract.ENVOY_ENDPOINTS_CONVERGED.name

# Every activity chaoscontour offers.
ACTIVITIES = frozenset(a.name for a in contract.ACTIVITIES)

# Statuses chaostoolkit-lib writes at the top of a journal (chaoslib/run.py). Anything else means the file was not
# written by `chaos run` or was written by a version we do not know how to judge.
KNOWN_RUN_STATUSES = ("completed", "failed", "aborted", "interrupted")


# A mapping output as an activity declares it (one of the contract's TypedDicts).
DeclaredOutput = TypeVar("DeclaredOutput", bound=Mapping[str, object])


class JournalError(ValueError):
    """The file cannot be judged: it is unreadable, not JSON, truncated, or not a Chaos Toolkit journal."""


# --------------------------------------------------------------------------------------------------------- loading


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
    # Whatever the gate and the report print, write or plot comes from here: no credential gets past this.
    return dict(redact_values(data))


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
    if data.get("rollbacks") is not None and not isinstance(data["rollbacks"], list):
        raise JournalError(f"{where}: not a Chaos Toolkit journal ('rollbacks' is not a list)")
    steady = data.get("steady_states")
    if steady is not None and not isinstance(steady, Mapping):
        raise JournalError(f"{where}: not a Chaos Toolkit journal ('steady_states' is not an object)")


# --------------------------------------------------------------------------------------------------------- walking


def runs(journal: Mapping[str, Any], key: str = "run") -> list[Mapping[str, Any]]:
    """The run entries of ``run`` (the method) or ``rollbacks``, in the order chaostoolkit recorded them."""
    value = journal.get(key)
    return [r for r in value if isinstance(r, Mapping)] if isinstance(value, list) else []


def steady_state(journal: Mapping[str, Any], when: str) -> Mapping[str, Any] | None:
    """The ``before`` or ``after`` steady-state check, or ``None`` when it was not made."""
    steady = journal.get("steady_states")
    state = steady.get(when) if isinstance(steady, Mapping) else None
    return state if isinstance(state, Mapping) else None


def steady_state_runs(journal: Mapping[str, Any], when: str) -> list[Mapping[str, Any]]:
    """The probe runs of the ``before`` or ``after`` steady-state check."""
    state = steady_state(journal, when)
    probes = state.get("probes") if state is not None else None
    return [r for r in probes if isinstance(r, Mapping)] if isinstance(probes, list) else []


def planned(journal: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """The activities the experiment embedded in the journal declares under ``method`` or ``rollbacks``."""
    experiment = journal.get("experiment")
    value = experiment.get(key) if isinstance(experiment, Mapping) else None
    return [a for a in value if isinstance(a, Mapping)] if isinstance(value, list) else []


def activity_of(run: Mapping[str, Any]) -> Mapping[str, Any]:
    activity = run.get("activity")
    return activity if isinstance(activity, Mapping) else {}


def activity_name(activity: Mapping[str, Any]) -> str:
    """An activity's name (or its ``ref`` when it points at a declared one)."""
    return str(activity.get("name") or activity.get("ref") or "(unnamed)")


def chaoscontour_func(activity: Mapping[str, Any]) -> str | None:
    """The function name when ``activity`` (a declared activity or a run entry's) is one of chaoscontour's."""
    if "activity" in activity and isinstance(activity.get("activity"), Mapping):
        activity = activity_of(activity)
    provider = activity.get("provider")
    if not isinstance(provider, Mapping) or provider.get("type", "python") != "python":
        return None
    module, func = provider.get("module"), provider.get("func")
    if not isinstance(module, str) or not isinstance(func, str):
        return None
    if module != ACTIVITY_MODULE and not module.startswith(ACTIVITY_MODULE + "."):
        return None
    return func if func in ACTIVITIES else None


def output_as(value: object, activity: contract.Activity[DeclaredOutput]) -> DeclaredOutput | None:
    """``value`` (a run's ``output``) typed as ``activity``'s declared output; ``None`` when it is not a mapping.

    Only the type changes: the tools still read every key defensively, since a journal may come from an older
    release or a user's own function."""
    return cast(DeclaredOutput, value) if isinstance(value, Mapping) else None


def output_of(run: Mapping[str, Any], activity: contract.Activity[DeclaredOutput]) -> DeclaredOutput:
    """A run entry's output typed as ``activity``'s declared output; an empty one when it is not a mapping."""
    return output_as(run.get("output"), activity) or cast(DeclaredOutput, {})


def provider_target(activity: Mapping[str, Any]) -> str | None:
    """What an activity calls, for display: the python function, the process path or the HTTP URL."""
    provider = activity.get("provider")
    if isinstance(provider, Mapping):
        target = provider.get("func") or provider.get("path") or provider.get("url")
        return str(target) if target else None
    return None


# --------------------------------------------------------------------------------------------------------- values

_TOKENISH = re.compile(
    r"(?i)(bearer\s+|basic\s+|token[\"']?\s*[:=]\s*[\"']?|password[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"
)
# Credentials in a URL's userinfo: scheme://user:secret@host (and scheme://token@host).
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\"'<>]+@")


def redact(text: str) -> str:
    """Mask bearer and basic credentials, ``token=``/``password=`` values and a URL's ``user:password@``."""
    text = _URL_USERINFO.sub(lambda m: m.group(1) + "<redacted>@", text)
    return _TOKENISH.sub(lambda m: m.group(1) + "<redacted>", text)


def redact_values(value: Any) -> Any:
    """``value`` (a parsed journal or any part of it) with :func:`redact` applied to every string in it."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {key: redact_values(child) for key, child in value.items()}
    if isinstance(value, list):
        return [redact_values(child) for child in value]
    return value


def exception_text(run: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The last line of a run's exception (what went wrong) and the whole traceback, both redacted."""
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


def number(value: Any) -> float | None:
    """A finite JSON number as a float; ``None`` for anything else (booleans included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def epoch_of(value: Any) -> float | None:
    """Epoch seconds of an ISO 8601 time as journals and the API server write it (``Z`` or offset; naive = UTC)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_utc(value).timestamp()
    except ValueError:
        return None


def walk(value: Any) -> Iterator[Mapping[str, Any]]:
    """Every mapping inside ``value`` (an output), depth first, ``value`` itself included."""
    if isinstance(value, Mapping):
        yield value
        for child in value.values():
            yield from walk(child)
    elif isinstance(value, list):
        for child in value:
            yield from walk(child)
