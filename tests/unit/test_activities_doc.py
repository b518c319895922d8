"""The activity contract (issue 22): docs/activities.md is generated from discovery and lists every activity, every
activity has a docstring, and what the activity modules export is exactly what discovery finds, typed by PROBES."""

import importlib
import pkgutil
import re

import pytest

import chaoscontour
import chaoscontour.activities
from chaoscontour import PROBES, discover
from chaoscontour.cli import main as cli_main
from chaoscontour.tools.activities_doc import DOC_PATH, first_sentence, render, undocumented
from tests.support.paths import ROOT

DOC = ROOT / DOC_PATH


@pytest.fixture(scope="module")
def discovery():
    return discover()


def _activity(name, doc, mod="chaoscontour.activities.fake", kind="action", arguments=None):
    return {"type": kind, "name": name, "mod": mod, "doc": doc, "arguments": arguments or []}


def _fake_discovery(*activities):
    return {"extension": {"name": "chaostoolkit-contour"}, "activities": list(activities)}


# (a) the committed page is the current rendering


def test_docs_activities_md_is_the_current_rendering(discovery):
    assert DOC.exists(), f"{DOC_PATH} is missing: run make docs"
    assert DOC.read_text(encoding="utf-8") == render(discovery), f"{DOC_PATH} is out of date: run make docs"


def test_rendering_is_deterministic_whatever_the_discovery_date_or_platform(discovery):
    other = dict(discovery, date="1999-01-01T00:00:00", id="another", platform={"node": "elsewhere"})
    assert render(other) == render(discovery)
    text = render(discovery)
    assert chaoscontour.__version__ not in text
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text)


def test_the_page_says_it_is_generated_and_by_which_command(discovery):
    head = render(discovery).split("## Summary", 1)[0]
    assert "make docs" in head and "chaoscontour activities --out docs/activities.md" in head
    assert "Do not edit it" in head and "by hand" in head


# (b) every activity is documented, and the check can fail


def test_every_discovered_activity_has_a_docstring_and_a_section(discovery):
    problems = undocumented(discovery, DOC.read_text(encoding="utf-8"))
    assert problems == [], "undocumented activities:\n" + "\n".join(problems)


def test_the_check_names_an_activity_without_a_docstring():
    fake = _fake_discovery(_activity("documented", "Does a thing."), _activity("silent", None))
    assert undocumented(fake, render(fake)) == ["chaoscontour.activities.fake.silent has no docstring"]
    blank = _fake_discovery(_activity("blank", "  \n "))
    assert undocumented(blank, render(blank)) == ["chaoscontour.activities.fake.blank has no docstring"]


def test_the_check_names_an_activity_missing_from_the_page(discovery):
    extra = _activity("brand_new_probe", "A probe added after the page was generated.", kind="probe")
    grown = dict(discovery, activities=[*discovery["activities"], extra])
    assert undocumented(grown, DOC.read_text(encoding="utf-8")) == [
        f"chaoscontour.activities.fake.brand_new_probe has no section in {DOC_PATH}"
    ]
    assert undocumented(grown, render(grown)) == []


def test_an_activity_is_on_the_page_whatever_its_name_or_module():
    fake = _fake_discovery(
        _activity("set_route", "Set a route. Then more.", mod="chaoscontour.activities.routes"),
        _activity("route_ok", "Tell whether the route is served.", mod="chaoscontour.activities.routes", kind="probe"),
    )
    text = render(fake)
    assert "## `chaoscontour.activities.routes`" in text
    assert "| [`set_route`](#set_route) | action | `chaoscontour.activities.routes` | Set a route. |" in text
    assert "### route_ok\n\n*probe*\n\nTell whether the route is served." in text


def test_sections_follow_the_modules_order_and_hold_the_full_docstring(discovery):
    text = render(discovery)
    modules = re.findall(r"^## `chaoscontour\.activities\.(\w+)`$", text, flags=re.MULTILINE)
    assert modules == list(chaoscontour._MODULES)
    for activity in discovery["activities"]:
        assert activity["doc"].strip() in text


def test_argument_tables_show_type_and_default_but_not_secrets_or_configuration():
    arguments = [
        {"name": "namespace", "type": "string", "default": "projectcontour"},
        {"name": "cidrs", "type": "list", "default": None},
        {"name": "header", "type": "string"},
        {"name": "pattern", "type": "string", "default": "a|b"},
        {"name": "configuration", "type": "mapping", "default": None},
        {"name": "secrets", "type": "mapping", "default": None},
    ]
    text = render(_fake_discovery(_activity("act", "Act.", arguments=arguments)))
    assert '| `namespace` | string | `"projectcontour"` |' in text
    assert "| `cidrs` | list | `null` |" in text
    assert "| `header` | string | required |" in text
    assert '| `pattern` | string | `"a\\|b"` |' in text
    assert "`secrets`" not in text.split("### act", 1)[1]
    assert "`configuration` |" not in text
    bare = render(_fake_discovery(_activity("bare", "Bare.", arguments=[{"name": "secrets", "default": None}])))
    assert "No arguments of its own." in bare


@pytest.mark.parametrize(
    ("doc", "sentence"),
    [
        ("Wait `n` seconds.\n\nMore.", "Wait `n` seconds."),
        ("Read the stats and tell\nwhether it is up. Then more.", "Read the stats and tell whether it is up."),
        ("Uses e.g. a proxy, i.e. Envoy. Next.", "Uses e.g. a proxy, i.e. Envoy."),
        ("No full stop", "No full stop"),
        (None, ""),
    ],
)
def test_first_sentence(doc, sentence):
    assert first_sentence(doc) == sentence


# (c) what the modules export is what discovery finds, and PROBES types it


def test_every_public_activities_module_is_discovered():
    public = {m.name for m in pkgutil.iter_modules(chaoscontour.activities.__path__) if not m.name.startswith("_")}
    missing = public - set(chaoscontour._MODULES)
    assert not missing, f"activity modules not in chaoscontour._MODULES, so not discovered: {sorted(missing)}"


@pytest.mark.parametrize("module", chaoscontour._MODULES)
def test_everything_a_module_exports_is_discovered(module, discovery):
    mod = importlib.import_module(f"chaoscontour.activities.{module}")
    found = {a["name"] for a in discovery["activities"] if a["mod"] == mod.__name__}
    exported = set(mod.__all__)
    assert not exported - found, f"{mod.__name__} exports names discovery does not find: {sorted(exported - found)}"
    assert not found - exported, f"discovery finds names {mod.__name__} does not export: {sorted(found - exported)}"


def test_an_activity_is_a_probe_exactly_when_probes_lists_it(discovery):
    for activity in discovery["activities"]:
        expected = "probe" if activity["name"] in PROBES else "action"
        assert activity["type"] == expected, f"{activity['name']} is typed {activity['type']}"
    stale = PROBES - {a["name"] for a in discovery["activities"]}
    assert not stale, f"chaoscontour.PROBES names no discovered activity: {sorted(stale)}"


def test_activity_names_are_unique(discovery):
    names = [a["name"] for a in discovery["activities"]]
    assert len(names) == len(set(names))


# the command


def test_cli_prints_the_page(discovery, capsys):
    assert cli_main(["activities"]) == 0
    assert capsys.readouterr().out == render(discovery)


def test_cli_writes_the_page_with_out(discovery, tmp_path, capsys):
    out = tmp_path / "docs" / "activities.md"
    assert cli_main(["activities", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == render(discovery)
    assert capsys.readouterr().out == f"wrote {out}\n"


def test_cli_usage_lists_the_command(capsys):
    assert cli_main(["--help"]) == 0
    assert re.search(r"^  activities +print the activity reference", capsys.readouterr().out, flags=re.MULTILINE)
