"""Every key the gate and the report read from an output of chaoscontour's is one the contract declares (issue 22).

mypy types each output the tools read with the activity's declared TypedDict (``journal.output_as`` and
``journal.output_of``), but it lets ``.get("key")`` of a key the TypedDict lacks pass (it types it ``object``). So
here each output of the fixture journals records the keys read from it while the gate and the report run, and every
one must be declared. With ``test_contract``'s check that each declared key is written by the activities, a key
renamed on either side fails a test.
"""

from collections.abc import Mapping
from typing import Any, TypedDict, get_args, get_type_hints, is_typeddict

import pytest

from chaoscontour import contract
from chaoscontour.tools import journal
from chaoscontour.tools.timeline import report_data
from chaoscontour.tools.verdict import GateOptions, judge
from tests.support.paths import FIXTURES

JOURNALS = sorted((FIXTURES / "journals").glob("*.json"))

# Keys the tools look for by shape rather than by declaration. Any output that carries an availability figure is
# read as envoy_availability's, whoever returned it (a user's wrapper of the sampler, a safeguard probe): so the
# sampler's keys may be looked for in every output.
ANY_OUTPUT = set(get_type_hints(contract.AvailabilityOutput))
# restart_times() walks every mapping of a contour_restart_count output for a termination time (the probe's and the
# API's spelling), and the plotted timeline's rows may come from a user's wrapper (``epoch``, a nested ``latency_ms``).
BY_SHAPE: dict[Any, set[str]] = {
    contract.RestartCountOutput: {"finished_at", "finishedAt"},
    contract.Termination: {"finishedAt"},
    contract.AvailabilitySecond: {"epoch", "p95_ms", "latency_ms"},
}


class _Recorded(dict):
    """An output (or a mapping inside it) declared as ``typed_dict``, noting each key read from it in ``reads``."""

    def __init__(
        self, value: Mapping[str, Any], typed_dict: Any, reads: set[tuple[str, str]], also: frozenset[str] = frozenset()
    ) -> None:
        hints = get_type_hints(typed_dict)
        super().__init__({key: _record(child, hints.get(key), reads) for key, child in value.items()})
        self._name = typed_dict.__name__
        self._allowed = set(hints) | BY_SHAPE.get(typed_dict, set()) | also
        self._reads = reads

    def _read(self, key: object) -> None:
        if key not in self._allowed:
            self._reads.add((self._name, str(key)))

    def get(self, key: Any, default: Any = None) -> Any:
        self._read(key)
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self._read(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._read(key)
        return super().__contains__(key)


def _typed_dict_in(tp: Any) -> Any:
    """The TypedDict a declared type is or holds (``X``, ``X | None``, ``list[X]``), ``None`` when it has none."""
    if is_typeddict(tp):
        return tp
    return next((found for arg in get_args(tp) if (found := _typed_dict_in(arg)) is not None), None)


def _record(value: Any, tp: Any, reads: set[tuple[str, str]]) -> Any:
    typed_dict = _typed_dict_in(tp)
    if typed_dict is None:
        return value
    if isinstance(value, Mapping):
        return _Recorded(value, typed_dict, reads)
    if isinstance(value, list):
        return [_Recorded(v, typed_dict, reads) if isinstance(v, Mapping) else v for v in value]
    return value


def _undeclared_reads(path: Any, declared: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(TypedDict, key) of every key the gate and the report read from the journal's outputs of chaoscontour's
    activities that ``declared`` (activity name -> output type) does not list."""
    data = journal.load_journal(path)
    reads: set[tuple[str, str]] = set()
    entries = [*journal.runs(data), *journal.runs(data, "rollbacks")]
    entries += [r for when in ("before", "after") for r in journal.steady_state_runs(data, when)]
    for run in entries:
        func = journal.chaoscontour_func(run)
        if func is not None and isinstance(run.get("output"), Mapping):
            assert isinstance(run, dict)
            run["output"] = _Recorded(run["output"], declared[func], reads, frozenset(ANY_OUTPUT))
    judge(data)
    judge(data, GateOptions(allow_unverified=True))
    report_data(data)
    return reads


DECLARED = {a.name: a.output for a in contract.ACTIVITIES}


@pytest.mark.parametrize("path", JOURNALS, ids=[p.name for p in JOURNALS])
def test_the_gate_and_the_report_read_only_declared_output_keys(path):
    assert _undeclared_reads(path, DECLARED) == set()


def test_a_key_read_but_not_declared_is_named():
    timeline = get_type_hints(contract.XdsTimelineOutput)
    without = TypedDict(
        "XdsTimelineOutput", {k: t for k, t in timeline.items() if k != "detected_after_s"}, total=False
    )
    path = FIXTURES / "journals" / "xds-blackhole.json"
    assert _undeclared_reads(path, {**DECLARED, contract.ENVOY_XDS_TIMELINE.name: without}) == {
        ("XdsTimelineOutput", "detected_after_s")
    }
