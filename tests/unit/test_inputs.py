"""Input checks: each bad value is refused with a message that says what to write instead."""

import re

import pytest

from chaoscontour.domain.inputs import (
    InvalidInput,
    parse_cidrs,
    parse_time,
    require_namespace,
    require_positive,
    require_run_id,
)
from chaoscontour.domain.selectors import InvalidSelector, format_label_selector, parse_label_selector


def test_selector_string_and_mapping_forms_agree():
    assert parse_label_selector("app=contour, release==prod") == {"app": "contour", "release": "prod"}
    assert parse_label_selector({"app": "contour", "release": "prod"}) == {"app": "contour", "release": "prod"}
    assert parse_label_selector({"tier": 1}) == {"tier": "1"}  # a number as JSON gives it is its label value
    assert format_label_selector({"release": "prod", "app": "contour"}) == "app=contour,release=prod"


@pytest.mark.parametrize(
    ("selector", "hint"),
    [
        ("", "empty"),
        ({}, "empty"),
        ("app", "no '='"),
        ("app!=contour", "set-based"),
        ("app in (a,b)", "set-based"),
        ("!app", "set-based"),
        ("app=contour,app=envoy", "two different values"),
        ("a pp=contour", "not a valid label key"),
        ("app=con tour", "not a valid label value"),
        (42, "string or a mapping"),
        # issue 21: None became the label value "None"
        ({"app": None}, "must be strings, not {'app': None}"),
        ({"app": True}, "must be strings"),
        ({"app": ["contour"]}, "must be strings"),
    ],
)
def test_bad_selectors_are_explained(selector, hint):
    with pytest.raises(InvalidSelector, match=hint):
        parse_label_selector(selector)


def test_cidrs_are_normalised_and_bad_ones_named():
    assert parse_cidrs(["10.1.2.3", "fd00::/64", "192.168.1.7/24"]) == ["10.1.2.3/32", "fd00::/64", "192.168.1.0/24"]
    assert parse_cidrs("10.0.0.0/8, 11.0.0.0/8") == ["10.0.0.0/8", "11.0.0.0/8"]
    with pytest.raises(InvalidInput, match=re.escape("'10.0.0.300/8' is not a CIDR")):
        parse_cidrs(["10.0.0.300/8"])
    with pytest.raises(InvalidInput, match="every address"):
        parse_cidrs(["0.0.0.0/0"])


def test_wide_cidrs_need_force_and_everything_is_never_accepted():
    sixteen = [f"{n}.0.0.0/8" for n in range(16)]  # exactly 1/16 of IPv4: the bound itself
    assert parse_cidrs(sixteen) == sixteen
    with pytest.raises(InvalidInput, match=r"together .* cover 6\.6% of IPv4, more than 6\.25%"):
        parse_cidrs([*sixteen, "200.0.0.0/8"])
    with pytest.raises(InvalidInput, match=re.escape("'10.0.0.0/7' is wider than a /8")):
        parse_cidrs(["10.0.0.0/7"])
    assert parse_cidrs("0.0.0.0/1,128.0.0.0/1", bounded=False) == ["0.0.0.0/1", "128.0.0.0/1"]
    with pytest.raises(InvalidInput, match="every address"):
        parse_cidrs(["::/0"], bounded=False)


@pytest.mark.parametrize("value", [0, -1, "abc", float("nan"), True, None])
def test_non_positive_or_non_numeric_durations_are_refused(value):
    with pytest.raises(InvalidInput, match="duration_s"):
        require_positive(value, "duration_s")


def test_namespace_and_run_id_rules():
    assert require_namespace("projectcontour") == "projectcontour"
    with pytest.raises(InvalidInput, match="not a valid namespace"):
        require_namespace("Project_Contour")
    with pytest.raises(InvalidInput, match="run_id"):
        require_run_id("Run 1")


def test_times_without_zone_are_utc_and_garbage_is_refused():
    assert parse_time("2026-11-26T19:00:00").isoformat() == "2026-11-26T19:00:00+00:00"
    assert parse_time("2026-11-26T19:00:00Z").utcoffset().total_seconds() == 0
    with pytest.raises(InvalidInput, match="ISO 8601"):
        parse_time("yesterday")
