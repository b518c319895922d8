"""What a stop condition did to a run: chaostoolkit-addons' ``safeguard`` control (``chaosaddons.controls.safeguards``).

A safeguard probe that misses its tolerance (or fails: a probe that raises has no output, and no tolerance meets
``None``) makes the control call ``chaoslib.exit.exit_gracefully()``: SIGUSR1, ``SystemExit`` in the main thread, the
run ends ``interrupted`` and ``chaos run`` exits 1; the rollbacks run only with the strategy ``always``.
chaostoolkit-addons 0.12 records the probe that tripped, and its run, under the journal's ``safeguards``
(``triggered_by``, ``run``); 0.11 (the last release for Python 3.11) records nothing, so an interrupted run of an
experiment that declares a safeguard is all the journal shows.

:func:`stop_condition` reads that; :func:`stop_reasons` gives the gate's reasons: first the abort and what the probe
saw, then whether the fault the method put in place was removed afterwards (an unblock that succeeded after the
block, in the method or the rollbacks, and removed a policy). Pure functions of a parsed journal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chaoscontour import contract
from chaoscontour.domain.availability import iso_utc
from chaoscontour.tools import journal
from chaoscontour.tools.activity_results import excerpt

__all__ = ["SAFEGUARDS_MODULE", "StopCondition", "stop_condition", "stop_findings", "stop_reasons"]

SAFEGUARDS_MODULE = "chaosaddons.controls.safeguards"


@dataclass(frozen=True)
class StopCondition:
    """The stop condition that ended a run. ``name`` is ``None`` when the journal does not say which tripped
    (chaostoolkit-addons 0.11)."""

    name: str | None
    saw: str
    # When the failing result was in: the safeguard probe's run ended (epoch seconds), and how long the control
    # waited after it before acting (its ``frequency``; 0 for a probe run once).
    result_epoch_s: float | None = None
    check_s: float | None = None

    @property
    def tripped_epoch_s(self) -> float | None:
        """When the control acted on the failing result: the end of the probe's run plus its check interval."""
        if self.result_epoch_s is None:
            return None
        return self.result_epoch_s + (self.check_s or 0.0)

    @property
    def headline(self) -> str:
        who = f"stop condition {self.name!r}" if self.name else "a stop condition"
        return f"ABORTED by {who}: {self.saw}"


def _short(value: Any) -> str:
    return excerpt(value, 160)


def _pct(value: Any) -> str:
    number = journal.number(value)
    return "?" if number is None else f"{number * 100:.2f} %"


def _saw(run: Mapping[str, Any]) -> str:
    """What the safeguard probe saw, in one sentence."""
    activity = journal.activity_of(run)
    output = run.get("output")
    # Any probe may be the safeguard; one whose output carries an availability figure reads as envoy_availability's.
    figures = journal.output_as(output, contract.ENVOY_AVAILABILITY)
    last, _ = journal.exception_text(run)
    if run.get("status") == "failed" or last:
        return f"the probe failed ({last or 'no exception recorded'}), which counts as tripping"
    if figures is not None and journal.number(figures.get("availability")) is not None:
        text = f"availability {_pct(figures.get('availability'))}"
        if journal.number(figures.get("min_availability")) is not None:
            text += f" below min_availability {_pct(figures.get('min_availability'))}"
        requests, successes = figures.get("requests"), figures.get("successes")
        if isinstance(requests, int) and isinstance(successes, int):
            text += f" ({successes} of {requests} requests answered as expected"
            kinds = figures.get("error_kinds")
            if isinstance(kinds, Mapping) and kinds:
                text += "; failures: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
            text += ")"
        return text + f" over {_short(figures.get('duration_s'))} s, tolerance {_short(activity.get('tolerance'))}"
    return f"output {_short(output)} did not meet the tolerance {_short(activity.get('tolerance'))}"


def _declares_safeguard(data: Mapping[str, Any]) -> bool:
    experiment = data.get("experiment")
    controls = experiment.get("controls") if isinstance(experiment, Mapping) else None
    for control in controls if isinstance(controls, list) else []:
        provider = control.get("provider") if isinstance(control, Mapping) else None
        if isinstance(provider, Mapping) and provider.get("module") == SAFEGUARDS_MODULE:
            return True
    return False


def stop_condition(data: Mapping[str, Any]) -> StopCondition | None:
    """The stop condition that ended the run, or ``None`` when none did (as far as the journal says)."""
    recorded = data.get("safeguards")
    if isinstance(recorded, Mapping) and recorded.get("triggered_by"):
        run = recorded.get("run") if isinstance(recorded.get("run"), Mapping) else {}
        assert isinstance(run, Mapping)
        check = journal.number(journal.activity_of(run).get("frequency"))
        return StopCondition(
            name=str(recorded["triggered_by"]),
            saw=journal.redact(_saw(run)),
            result_epoch_s=journal.epoch_of(run.get("end")),
            check_s=check if check is not None and check > 0 else None,
        )
    if data.get("status") == "interrupted" and _declares_safeguard(data):
        return StopCondition(
            name=None,
            saw=(
                "the run was interrupted and the experiment declares a safeguard control, but the journal does not "
                "say which probe tripped (chaostoolkit-addons before 0.12 does not record it)"
            ),
        )
    return None


def _after(run: Mapping[str, Any], block: Mapping[str, Any]) -> bool:
    started, blocked = journal.epoch_of(run.get("start")), journal.epoch_of(block.get("end") or block.get("start"))
    return started is None or blocked is None or started >= blocked


def _name(run: Mapping[str, Any]) -> str:
    return journal.activity_name(journal.activity_of(run))


def _removed_policies(unblock: Mapping[str, Any]) -> list[str]:
    """The policies an unblock's run deleted (both unblocks return the same output)."""
    return journal.output_of(unblock, contract.UNBLOCK_APISERVER_EGRESS).get("removed_policies") or []


def _removal(data: Mapping[str, Any], stop: StopCondition) -> tuple[list[str], list[str]]:
    """(reasons, findings) about the removal of each fault the method put in place."""
    reasons: list[str] = []
    findings: list[str] = []
    method, rollbacks = journal.runs(data), journal.runs(data, "rollbacks")
    for block in method:
        func = journal.chaoscontour_func(block)
        if func not in contract.UNBLOCK_OF or block.get("status") != "succeeded":
            continue
        name = _name(block)
        unblocks = [
            (where, r)
            for where, key in (("method", method), ("rollback", rollbacks))
            for r in key
            if journal.chaoscontour_func(r) == contract.UNBLOCK_OF[func] and _after(r, block)
        ]
        done = [(w, r) for w, r in unblocks if r.get("status") == "succeeded"]
        removed = [(w, r) for w, r in done if _removed_policies(r)]
        if removed:
            where, r = removed[0]
            policies = ", ".join(str(p) for p in _removed_policies(r))
            ended = journal.epoch_of(r.get("end"))
            after = (
                f", {ended - stop.result_epoch_s:.1f} s after the failing result"
                if ended is not None and stop.result_epoch_s is not None
                else ""
            )
            findings.append(
                f"the fault of {name!r} was removed by the {where} {_name(r)!r} (deleted {policies}{after})"
            )
        elif done:
            where, r = done[-1]
            reasons.append(
                f"the fault of {name!r} may still be in place: the {where} {_name(r)!r} "
                f"removed no policy ({_short(r.get('output'))})"
            )
        elif unblocks:
            reasons.append(
                f"the fault of {name!r} may still be in place: no unblock after it succeeded "
                f"({', '.join(repr(_name(r)) for _, r in unblocks)} failed)"
            )
        else:
            reasons.append(
                f"the fault of {name!r} may still be in place: no unblock ran after the stop condition tripped "
                "(run with `--rollback-strategy always`; its expiry Job removes it at the latest)"
            )
    return reasons, findings


def stop_reasons(data: Mapping[str, Any], stop: StopCondition | None) -> list[str]:
    """The gate's reasons for a run a stop condition ended: the abort first, then any fault not shown removed."""
    if stop is None:
        return []
    return [stop.headline, *_removal(data, stop)[0]]


def stop_findings(data: Mapping[str, Any], stop: StopCondition | None) -> Sequence[str]:
    """What the report and summary tell about the trip: when, and the fault's removal."""
    if stop is None:
        return []
    found: list[str] = []
    if stop.result_epoch_s is not None:
        interval = f"; the control acted about {stop.check_s:g} s later (its frequency)" if stop.check_s else ""
        found.append(
            f"the stop condition {stop.name!r} saw the failing result at {iso_utc(stop.result_epoch_s)}{interval}"
        )
    return [*found, *_removal(data, stop)[1]]
