"""The route marker's record and restore against the real API server (issue 21): the value a route had comes back,
from the annotation alone, a live marker of another run is refused, and cleanup restores a stale one.

No Envoy serves the route here: each write is made with ``expect_arrival=false`` and a short watch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed
from kubernetes import client

from chaoscontour.activities.routes import remove_route_marker, route_change_propagation
from chaoscontour.edges.run_state import RUN
from chaoscontour.tools.cleanup import main as cleanup
from tests.support.xds_stats import StatsServer

pytestmark = pytest.mark.usefixtures("kubeconfig_env")

HEADER = "x-chaoscontour-config"
KEY = "chaoscontour.io/route-marker-config"
THEIRS = [{"name": HEADER, "value": "set-by-the-user"}, {"name": "cache-control", "value": "no-store"}]


@pytest.fixture
def stats() -> Any:
    with StatsServer() as server:
        yield server


@pytest.fixture
def echo(api: client.ApiClient, contour_crds: list[str], namespace: str) -> Callable[[], dict[str, Any]]:
    """An HTTPProxy ``echo`` whose first route already sets the marker's header; returns a reader of it."""
    proxies = client.CustomObjectsApi(api)
    body: Any = {
        "apiVersion": "projectcontour.io/v1",
        "kind": "HTTPProxy",
        "metadata": {"name": "echo"},
        "spec": {
            "virtualhost": {"fqdn": "echo.example.com"},
            "routes": [
                {
                    "conditions": [{"prefix": "/"}],
                    "services": [{"name": "echo", "port": 80}],
                    "responseHeadersPolicy": {"set": THEIRS},
                },
                {"conditions": [{"prefix": "/other"}], "services": [{"name": "echo", "port": 80}]},
            ],
        },
    }
    proxies.create_namespaced_custom_object("projectcontour.io", "v1", namespace, "httpproxies", body)
    return lambda: proxies.get_namespaced_custom_object("projectcontour.io", "v1", namespace, "httpproxies", "echo")


def write(namespace: str, stats: StatsServer, **extra: Any) -> dict[str, Any]:
    return route_change_propagation(
        namespace=namespace, httpproxy="echo", url=stats.url, expect_arrival=False, timeout_s=0.2, **extra
    )


def first_route_headers(proxy: dict[str, Any]) -> list[dict[str, str]]:
    return proxy["spec"]["routes"][0]["responseHeadersPolicy"]["set"]


def test_the_previous_value_is_restored_and_the_annotation_deleted(namespace, echo, stats):
    held = write(namespace, stats, run_id="rm-a")
    proxy = echo()
    assert {"name": HEADER, "value": held["marker"]} in first_route_headers(proxy)
    assert {"name": HEADER, "value": "set-by-the-user"} not in first_route_headers(proxy)
    record = json.loads(proxy["metadata"]["annotations"][KEY])
    assert record["run_id"] == "rm-a" and record["routes"]["0"]["previous"] == [THEIRS[0]]
    assert held["previous"] == [THEIRS[0]] and held["expires_at"] == record["expires_at"]
    write(namespace, stats, run_id="rm-a", route_index=1)

    removed = remove_route_marker(namespace=namespace, httpproxy="echo", run_id="rm-a")
    assert removed["removed"] is True and removed["restored_routes"] == [0, 1]
    after = echo()
    assert first_route_headers(after) == THEIRS
    assert "responseHeadersPolicy" not in after["spec"]["routes"][1]
    assert KEY not in (after["metadata"].get("annotations") or {})


def test_removal_from_a_fresh_process_restores_from_the_annotation_and_twice_is_success(namespace, echo, stats):
    write(namespace, stats)  # this process's run id
    write(namespace, stats)  # the run's second write keeps the user's value saved
    RUN.reset()  # nothing of the writer's memory is left, as in a fresh process
    first = remove_route_marker(namespace=namespace, httpproxy="echo")
    assert first["removed"] is True
    assert first_route_headers(echo()) == THEIRS
    again = remove_route_marker(namespace=namespace, httpproxy="echo")
    assert again["removed"] is False and "nothing to restore" in again["note"]
    assert "set by hand" in again["note"], "the user's own header is named, and left"
    assert first_route_headers(echo()) == THEIRS
    assert remove_route_marker(namespace=namespace, httpproxy="missing")["removed"] is False


def test_a_live_marker_of_another_run_is_refused_and_nothing_is_written(namespace, echo, stats):
    held = write(namespace, stats, run_id="rm-one")
    before = echo()
    with pytest.raises(ActivityFailed, match="already carries a route marker of run rm-one") as refused:
        write(namespace, stats, run_id="rm-two")
    assert "Nothing was written" in str(refused.value) and "chaoscontour cleanup" in str(refused.value)
    after = echo()
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert {"name": HEADER, "value": held["marker"]} in first_route_headers(after)
    # another run's rollback leaves it too, unless told which run
    kept = remove_route_marker(namespace=namespace, httpproxy="echo", run_id="rm-two")
    assert kept["removed"] is False and "rm-one" in kept["note"]
    assert remove_route_marker(namespace=namespace, httpproxy="echo", all_runs=True)["removed"] is True
    assert first_route_headers(echo()) == THEIRS


def expire(read: Callable[[], dict[str, Any]], api: client.ApiClient, namespace: str) -> None:
    """Age the record as a runner that died long ago would have left it."""
    proxy = read()
    record = json.loads(proxy["metadata"]["annotations"][KEY])
    record["expires_at"] = "2026-01-01T00:00:00Z"
    proxy["metadata"]["annotations"][KEY] = json.dumps(record)
    client.CustomObjectsApi(api).replace_namespaced_custom_object(
        "projectcontour.io", "v1", namespace, "httpproxies", "echo", proxy
    )


def test_an_expired_marker_of_another_run_is_restored_before_the_next_write(api, namespace, echo, stats):
    write(namespace, stats, run_id="rm-dead")
    expire(echo, api, namespace)
    held = write(namespace, stats, run_id="rm-next")
    assert "run rm-dead" in held["restored_stale"]
    assert held["previous"] == [THEIRS[0]], "the user's value, not the dead run's marker, is what is saved"
    remove_route_marker(namespace=namespace, httpproxy="echo", run_id="rm-next")
    assert first_route_headers(echo()) == THEIRS


def test_cleanup_restores_an_expired_marker(api, namespace, echo, stats, capsys):
    write(namespace, stats, run_id="rm-gone")
    expire(echo, api, namespace)
    assert cleanup(["--namespace", namespace, "--dry-run"]) == 0
    assert "would restore route marker x-chaoscontour-config on HTTPProxy" in capsys.readouterr().out
    assert KEY in echo()["metadata"]["annotations"]
    assert cleanup(["--namespace", namespace]) == 0
    out = capsys.readouterr().out
    assert "restored: route marker x-chaoscontour-config" in out and "(run rm-gone, expired at" in out
    assert "restored 1 route marker(s)" in out
    after = echo()
    assert first_route_headers(after) == THEIRS and KEY not in (after["metadata"].get("annotations") or {})
    assert cleanup(["--namespace", namespace]) == 0 and "restored 0 route marker(s)" in capsys.readouterr().out


@pytest.fixture
def echo_route(api: client.ApiClient, gateway_api_crds: list[str], namespace: str) -> Callable[[], dict[str, Any]]:
    """A Gateway API HTTPRoute ``echo``: rule 0 with a request-header filter, rule 1 with a ResponseHeaderModifier
    that already sets the marker's header; returns a reader of it."""
    routes = client.CustomObjectsApi(api)
    request = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x-a", "value": "1"}]}}
    theirs = {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"set": THEIRS}}
    body: Any = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "echo"},
        "spec": {
            "parentRefs": [{"name": "contour", "namespace": "gateway"}],
            "rules": [
                {"filters": [request], "backendRefs": [{"name": "echo", "port": 80}]},
                {"filters": [theirs], "backendRefs": [{"name": "echo", "port": 80}]},
            ],
        },
    }
    args = ("gateway.networking.k8s.io", "v1", namespace, "httproutes")
    routes.create_namespaced_custom_object(*args, body)
    return lambda: routes.get_namespaced_custom_object(*args, "echo")


def test_an_httproute_gets_the_marker_as_a_response_header_filter_and_comes_back_as_it_was(
    api, namespace, echo_route, stats, capsys
):
    before = echo_route()["spec"]["rules"]
    route = {"namespace": namespace, "httproute": "echo", "url": stats.url, "expect_arrival": False, "timeout_s": 0.2}
    first = route_change_propagation(**route, run_id="rm-gw")
    second = route_change_propagation(**route, run_id="rm-gw", route_index=1)
    assert first["httproute"] == f"{namespace}/echo" and "httpproxy" not in first
    rules = echo_route()["spec"]["rules"]  # what the API server stored, defaulting applied
    modifiers = [[f for f in rule["filters"] if f["type"] == "ResponseHeaderModifier"] for rule in rules]
    assert modifiers[0][0]["responseHeaderModifier"]["set"] == [{"name": HEADER, "value": first["marker"]}]
    assert {"name": HEADER, "value": second["marker"]} in modifiers[1][0]["responseHeaderModifier"]["set"]
    assert second["previous"] == [THEIRS[0]]
    with pytest.raises(ActivityFailed, match="give either httpproxy or httproute"):
        route_change_propagation(**route, httpproxy="echo", run_id="rm-gw")

    removed = remove_route_marker(namespace=namespace, httproute="echo", run_id="rm-gw")
    assert removed["removed"] is True and removed["restored_routes"] == [0, 1]
    after = echo_route()
    assert after["spec"]["rules"] == before and KEY not in (after["metadata"].get("annotations") or {})

    # cleanup finds a marker on an HTTPRoute as on an HTTPProxy
    route_change_propagation(**route, run_id="rm-gw-2")
    assert cleanup(["--namespace", namespace]) == 0
    assert "restored: route marker x-chaoscontour-config on HTTPRoute" in capsys.readouterr().out
    assert echo_route()["spec"]["rules"] == before
