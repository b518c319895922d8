"""The route marker's record (issue 21): the header value a route had is saved and put back, from the annotation
alone, and a marker says whose it is and until when."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chaoscontour.domain import route_marker as rm

HEADER = "x-chaoscontour-config"
KEY = "chaoscontour.io/route-marker-config"
NOW = datetime(2026, 12, 5, 17, 0, 0, tzinfo=UTC)


def proxy(*route_headers: list[dict[str, str]] | None) -> dict[str, Any]:
    """An HTTPProxy with one route per argument: that route's response-header ``set`` list (``None``: no policy)."""
    routes: list[dict[str, Any]] = []
    for headers in route_headers:
        route: dict[str, Any] = {"conditions": [{"prefix": f"/{len(routes)}"}], "services": [{"name": "s", "port": 80}]}
        if headers is not None:
            route["responseHeadersPolicy"] = {"set": headers}
        routes.append(route)
    return {"metadata": {"name": "echo", "namespace": "demo", "resourceVersion": "7"}, "spec": {"routes": routes}}


def write(p: dict[str, Any], marker: str, *, index: int = 0, run: str = "r1", at: datetime = NOW) -> rm.MarkerRecord:
    return rm.write_marker(p, index=index, header=HEADER, marker=marker, run_id=run, now=at, expire_after_s=600)


def test_a_value_the_route_already_had_is_restored_not_deleted():
    """The bad case: the rollback deleted the header, so a route that really set it lost its value."""
    theirs = [{"name": "X-Chaoscontour-Config", "value": "v1"}, {"name": "cache-control", "value": "no-store"}]
    p = proxy(copy.deepcopy(theirs))
    original = copy.deepcopy(p)
    write(p, "c1")
    assert p["spec"]["routes"][0]["responseHeadersPolicy"]["set"] == [{"name": HEADER, "value": "c1"}, theirs[1]]
    write(p, "c2")  # the run's second write must not save its own first marker as "the previous value"
    record = rm.read_record(p, HEADER)
    assert record is not None and record.routes[0]["previous"] == [theirs[0]]
    done = rm.restore(p, record)
    assert done.restored_routes == (0,) and done.missing_routes == ()
    assert p["spec"]["routes"][0]["responseHeadersPolicy"]["set"] == theirs, "the same entries, in the same order"
    assert KEY not in p["metadata"]["annotations"]
    assert p["spec"]["routes"][0]["conditions"] == original["spec"]["routes"][0]["conditions"]


def test_a_route_without_the_header_gets_its_policy_removed_again():
    p = proxy(None, [{"name": "cache-control", "value": "no-store"}])
    original = copy.deepcopy(p)
    write(p, "c1", index=0)
    write(p, "c2", index=1)
    record = rm.read_record(p, HEADER)
    assert record is not None and sorted(record.routes) == [0, 1]
    rm.restore(p, record)
    assert p["spec"] == original["spec"]


def test_the_record_alone_restores_from_another_process():
    p = proxy([{"name": HEADER, "value": "theirs"}])
    write(p, "c1")
    # another process: only the stored object, read back as JSON
    stored = json.loads(json.dumps(p))
    record = rm.read_record(stored, HEADER)
    assert record is not None and record.run_id == "r1" and record.header == HEADER
    assert record.expires_at == NOW + timedelta(seconds=600)
    rm.restore(stored, record)
    assert stored["spec"]["routes"][0]["responseHeadersPolicy"]["set"] == [{"name": HEADER, "value": "theirs"}]


def test_expiry_is_pushed_forward_by_each_write_and_judged_on_the_clock_given():
    p = proxy(None)
    write(p, "c1")
    record = write(p, "c2", at=NOW + timedelta(seconds=300))
    assert record.expires_at == NOW + timedelta(seconds=900)
    assert not record.expired(NOW + timedelta(seconds=899)) and record.expired(NOW + timedelta(seconds=900))


def test_another_runs_record_is_never_overwritten():
    p = proxy(None)
    write(p, "c1", run="r1")
    with pytest.raises(ValueError, match="already carries a route marker of run r1"):
        write(p, "c2", run="r2")


def test_a_route_whose_marker_moved_is_found_and_one_whose_marker_changed_is_left():
    p = proxy([{"name": HEADER, "value": "theirs"}], None)
    write(p, "c1", index=0)
    write(p, "c2", index=1)
    routes = p["spec"]["routes"]
    routes.insert(0, {"conditions": [{"prefix": "/new"}]})  # a route inserted before ours
    routes[2]["responseHeadersPolicy"]["set"] = [{"name": HEADER, "value": "edited by hand"}]
    record = rm.read_record(p, HEADER)
    assert record is not None
    done = rm.restore(p, record)
    assert done.restored_routes == (1,) and done.missing_routes == (1,)
    assert routes[1]["responseHeadersPolicy"]["set"] == [{"name": HEADER, "value": "theirs"}]
    assert routes[2]["responseHeadersPolicy"]["set"] == [{"name": HEADER, "value": "edited by hand"}]


def test_an_unreadable_record_is_refused_with_what_to_do():
    p = proxy(None)
    p["metadata"]["annotations"] = {KEY: '{"run_id": "r1"'}
    with pytest.raises(rm.InvalidRecord, match="Fix the route's response headers by hand, then delete the annotation"):
        rm.read_record(p, HEADER)
    ((key, why),) = rm.records(p)
    assert key == KEY and isinstance(why, rm.InvalidRecord)


def test_an_out_of_range_route_is_refused_and_nothing_is_changed():
    p = proxy(None)
    original = copy.deepcopy(p)
    with pytest.raises(ValueError, match="route_index 3 is out of range"):
        write(p, "c1", index=3)
    assert p == original


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("x-chaoscontour-config", "chaoscontour.io/route-marker-config"),
        ("x-chaoscontour-a-b", "chaoscontour.io/route-marker-a-b"),
    ],
)
def test_annotation_keys_name_the_header(header, key):
    assert rm.annotation_key(header) == key


@pytest.mark.parametrize("header", ["x-chaoscontour--x-", "x-chaoscontour-" + "a" * 60])
def test_a_header_that_makes_no_valid_key_gets_a_digest(header):
    key = rm.annotation_key(header)
    name = key.split("/", 1)[1]
    assert key.startswith(rm.ANNOTATION_PREFIX) and len(name) <= 63 and name[-1].isalnum()
    assert rm.annotation_key(header) == key != rm.annotation_key(header + "b")


def httproute(*rule_filters: list[dict[str, Any]] | None) -> dict[str, Any]:
    """An HTTPRoute with one rule per argument: that rule's ``filters`` (``None``: none)."""
    rules: list[dict[str, Any]] = []
    for filters in rule_filters:
        rule: dict[str, Any] = {"backendRefs": [{"name": "echo", "port": 80}]}
        if filters is not None:
            rule["filters"] = filters
        rules.append(rule)
    return {"kind": "HTTPRoute", "metadata": {"name": "echo", "namespace": "demo"}, "spec": {"rules": rules}}


def modifier(*entries: dict[str, str], **more: Any) -> dict[str, Any]:
    return {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"set": list(entries), **more}}


def test_on_an_httproute_the_marker_is_a_response_header_modifier_entry_and_the_rule_comes_back_as_it_was():
    redirect = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x-a", "value": "1"}]}}
    theirs = modifier({"name": HEADER, "value": "v1"}, {"name": "cache-control", "value": "no-store"})
    p = httproute(None, [copy.deepcopy(redirect)], [copy.deepcopy(redirect), copy.deepcopy(theirs)])
    original = copy.deepcopy(p)
    for index in (0, 1, 2):
        write(p, f"c{index}", index=index)
    rules = p["spec"]["rules"]
    assert rules[0]["filters"] == [modifier({"name": HEADER, "value": "c0"})]
    assert rules[1]["filters"] == [redirect, modifier({"name": HEADER, "value": "c1"})]
    assert rules[2]["filters"][1]["responseHeaderModifier"]["set"][0] == {"name": HEADER, "value": "c2"}
    assert rm.header_entries(rules[2], HEADER, "HTTPRoute") == [{"name": HEADER, "value": "c2"}]
    assert rm.header_entries(rules[2], HEADER) == [], "an HTTPProxy's path is not an HTTPRoute's"
    record = rm.read_record(p, HEADER)
    assert record is not None and record.routes[2]["previous"] == [{"name": HEADER, "value": "v1"}]
    done = rm.restore(p, record)
    assert done.restored_routes == (0, 1, 2) and p["spec"] == original["spec"]


def test_an_httproute_rule_out_of_range_names_the_kind():
    with pytest.raises(ValueError, match="the HTTPRoute has 1 route"):
        write(httproute(None), "c1", index=1)
