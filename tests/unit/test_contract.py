"""The declared activity contract (issue 22) agrees with the activity modules, with discovery, and with the outputs
recorded in real journals: a function exported and not declared, a declared name with no function behind it, or a
kind that discovery gives otherwise fails here."""

import importlib
import inspect
import pkgutil
import re
import types
from collections.abc import Iterable, Mapping
from typing import Any, Union, get_args, get_origin, get_type_hints, is_typeddict

import pytest

import chaoscontour
import chaoscontour.activities
from chaoscontour import contract, discover
from chaoscontour.contract import ACTIVITIES, Activity
from chaoscontour.tools import journal
from chaoscontour.tools.activities_doc import output_text, render
from tests.support.paths import FIXTURES, ROOT

JOURNALS = sorted((FIXTURES / "journals").glob("*.json"))


def _exports() -> dict[str, set[str]]:
    """What each public module of ``chaoscontour.activities`` exports (its ``__all__``)."""
    found = {}
    for info in pkgutil.iter_modules(chaoscontour.activities.__path__):
        if not info.name.startswith("_"):
            found[info.name] = set(importlib.import_module(f"{contract.ACTIVITY_PACKAGE}.{info.name}").__all__)
    return found


def _problems(declared: Iterable[Activity], exports: Mapping[str, set[str]], discovery: Mapping[str, Any]) -> list[str]:
    """Every way ``declared`` disagrees with the modules' exports and with what discovery lists, one line each."""
    declared = list(declared)
    problems = []
    names = {(a.module, a.name) for a in declared}
    for module, exported in sorted(exports.items()):
        for name in sorted(exported):
            if (module, name) not in names:
                problems.append(f"{contract.ACTIVITY_PACKAGE}.{module}.{name} is exported but not declared")
    for a in declared:
        if a.name not in exports.get(a.module, set()):
            problems.append(f"{a.module_path}.{a.name} is declared but the module exports no such function")
        elif not inspect.isfunction(getattr(importlib.import_module(a.module_path), a.name, None)):
            problems.append(f"{a.module_path}.{a.name} is declared but is not a function")
    kinds = {(str(d["mod"]), str(d["name"])): d["type"] for d in discovery.get("activities") or []}
    for a in declared:
        found = kinds.get((a.module_path, a.name))
        if found is not None and found != a.kind:
            problems.append(f"discovery types {a.name} as {found}, the contract as {a.kind}")
    return problems


@pytest.fixture(scope="module")
def discovery():
    return discover()


def test_the_declaration_is_what_the_modules_export_and_discovery_types(discovery):
    assert _problems(ACTIVITIES, _exports(), discovery) == []


def test_discovery_lists_exactly_the_declared_activities_in_the_declared_module_order(discovery):
    listed = [(d["mod"], d["name"], d["type"]) for d in discovery["activities"]]
    assert sorted(listed) == sorted((a.module_path, a.name, a.kind) for a in ACTIVITIES)
    modules = [d["mod"].rsplit(".", 1)[1] for d in discovery["activities"]]
    assert list(dict.fromkeys(modules)) == list(contract.MODULES) == list(chaoscontour._MODULES)


def test_a_function_exported_but_not_declared_is_named(discovery):
    exports = {module: set(names) for module, names in _exports().items()}
    exports["leader"].add("promote_leader")
    assert _problems(ACTIVITIES, exports, discovery) == [
        "chaoscontour.activities.leader.promote_leader is exported but not declared"
    ]


def test_a_declared_name_without_a_function_is_named(discovery):
    ghost = Activity("ghost_probe", "probe", "envoy", bool)
    assert _problems([*ACTIVITIES, ghost], _exports(), discovery) == [
        "chaoscontour.activities.envoy.ghost_probe is declared but the module exports no such function"
    ]


def test_a_kind_discovery_disagrees_with_is_named(discovery):
    flipped = [Activity(a.name, "probe", a.module, a.output) if a is contract.WAIT else a for a in ACTIVITIES]
    assert _problems(flipped, _exports(), discovery) == ["discovery types wait as action, the contract as probe"]


def test_names_are_unique_and_found_by_name():
    assert len({a.name for a in ACTIVITIES}) == len(ACTIVITIES)
    for a in ACTIVITIES:
        assert contract.by_name(a.name) is a
    assert contract.by_name("terminate_pods") is None


def test_the_journal_recognises_exactly_the_declared_names():
    assert {a.name for a in ACTIVITIES} == journal.ACTIVITIES
    assert journal.ACTIVITY_MODULE == contract.ACTIVITY_PACKAGE
    assert journal.BLOCK_APISERVER == "block_apiserver_egress" and journal.ENDPOINT_VIEW == "envoy_backend_view"
    assert {a.name for a in ACTIVITIES if a.kind == "probe"} == chaoscontour.PROBES


# -- outputs ---------------------------------------------------------------------------------------------------------


def _typed_dicts(tp: Any) -> Iterable[type]:
    """Every TypedDict inside ``tp`` (itself included), depth first."""
    if is_typeddict(tp):
        yield tp
        for inner in get_type_hints(tp).values():
            yield from _typed_dicts(inner)
    else:
        for arg in get_args(tp):
            yield from _typed_dicts(arg)


def _producer_source() -> str:
    folders = [ROOT / "chaoscontour" / d for d in ("activities", "domain")]
    return "\n".join(p.read_text(encoding="utf-8") for folder in folders for p in folder.rglob("*.py"))


@pytest.mark.parametrize("activity", ACTIVITIES, ids=[a.name for a in ACTIVITIES])
def test_every_declared_output_key_is_one_the_package_writes(activity):
    source = _producer_source()
    for typed_dict in _typed_dicts(activity.output):
        for key in get_type_hints(typed_dict):
            # A key is written as a string ("key": ...), a keyword (key=...) or a dataclass field (key: ...).
            written = re.search(rf"[\"']{key}[\"']|\b{key}=|^\s+{key}: ", source, flags=re.MULTILINE)
            assert written, f"{typed_dict.__name__}.{key}: no activity or domain code writes {key!r}"


def _conforms(value: Any, tp: Any) -> bool:
    """Whether a JSON value has the declared type (an ``int`` is a number; a bool is not)."""
    origin, args = get_origin(tp), get_args(tp)
    if is_typeddict(tp):
        hints = get_type_hints(tp)
        return isinstance(value, Mapping) and all(_conforms(value[k], t) for k, t in hints.items() if k in value)
    if origin in (Union, types.UnionType):
        return any(_conforms(value, arg) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, Mapping) and all(_conforms(v, args[1]) for v in value.values())
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _recorded_outputs() -> list[tuple[str, str, Any]]:
    found = []
    for path in JOURNALS:
        data = journal.load_journal(path)
        entries = [*journal.runs(data), *journal.runs(data, "rollbacks")]
        entries += [r for when in ("before", "after") for r in journal.steady_state_runs(data, when)]
        for run in entries:
            func = journal.chaoscontour_func(run)
            if func is not None and "output" in run:
                found.append((path.name, func, run["output"]))
    return found


def test_outputs_recorded_in_real_journals_have_the_declared_types():
    recorded = _recorded_outputs()
    assert len({func for _, func, _ in recorded}) >= 15, "the fixture journals should cover most activities"
    for where, func, output in recorded:
        declared = contract.by_name(func)
        assert declared is not None
        assert _conforms(output, declared.output), f"{where}: {func}'s output does not match {declared.output}"


def test_the_type_check_can_fail():
    assert not _conforms({"held": "yes"}, contract.FaultHeldOutput)
    assert not _conforms({"selected_pods": [1]}, contract.BlockOutput)
    assert not _conforms({"requests": True}, contract.AvailabilityOutput)
    assert _conforms({"requests": 3, "availability": 1, "other": object()}, contract.AvailabilityOutput)


# -- the Output line of docs/activities.md ---------------------------------------------------------------------------


def test_each_declared_activity_has_its_output_line_after_its_arguments(discovery):
    page = render(discovery)
    for a in ACTIVITIES:
        section = page.split(f"\n### {a.name}\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
        assert section.rstrip().endswith(output_text(a.output)), a.name


def test_the_output_line_gives_json_types_and_nested_keys():
    assert output_text(bool) == "Output: boolean."
    assert output_text(contract.UnblockOutput) == (
        "Output: a mapping; the keys chaoscontour's `gate` and `report` read: `removed_policies` list of string."
    )
    restarts = output_text(contract.RestartCountOutput)
    assert "`terminations` list of mapping {`pod` string, `container` string, `finished_at` string}" in restarts
    assert "`new_pod` string or null, `failover_s` number or null" in output_text(contract.KillLeaderOutput)
    assert (
        output_text(contract.NoKeysRead)
        == "Output: a mapping; chaoscontour's `gate` and `report` read none of its keys."
    )


def test_an_activity_the_contract_does_not_declare_has_no_output_line():
    fake = {"activities": [{"type": "probe", "name": "user_probe", "mod": "x", "doc": "Probe.", "arguments": []}]}
    assert "Output:" not in render(fake)
