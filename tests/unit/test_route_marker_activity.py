"""The route-marker activities over a fake HTTPProxy API that enforces resourceVersion (issue 21): a conflict is
retried with a fresh read, a live marker of another run is refused before any write, the rollback restores the
user's value. The real API server runs the same paths in tests/integration/test_route_marker_on_cluster.py."""

from __future__ import annotations

import copy
from typing import Any
from unittest import mock

import pytest
from chaoslib.exceptions import ActivityFailed
from kubernetes.client.rest import ApiException

from chaoscontour.activities import routes

DATE = {"Date": "Sat, 05 Dec 2026 18:00:00 GMT"}
USER = {"name": "x-chaoscontour-config", "value": "theirs"}


class FakeProxies:
    def __init__(self) -> None:
        self.obj: dict[str, Any] = {
            "metadata": {"name": "echo"},
            "spec": {"routes": [{"responseHeadersPolicy": {"set": [dict(USER)]}}]},
        }
        self.version, self.conflicts, self.writes = 1, 0, 0

    def get_namespaced_custom_object_with_http_info(self, *args: Any, **kwargs: Any) -> Any:
        if args[4] != "echo":
            raise ApiException(status=404)
        found = copy.deepcopy(self.obj)
        found["metadata"]["resourceVersion"] = str(self.version)
        return found, 200, DATE

    def replace_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> None:
        body = args[5]
        if self.conflicts or body["metadata"]["resourceVersion"] != str(self.version):
            self.conflicts = max(0, self.conflicts - 1)
            self.version += 1  # someone else wrote in between
            raise ApiException(status=409)
        self.obj, self.version, self.writes = copy.deepcopy(body), self.version + 1, self.writes + 1


@pytest.fixture
def fake() -> Any:
    api = FakeProxies()
    with (
        mock.patch("chaoscontour.edges.route_objects.client.CustomObjectsApi", return_value=api),
        mock.patch("chaoscontour.activities.routes.kube", autospec=True),
    ):
        yield api


def write(run: str) -> dict[str, Any]:
    return routes.route_change_propagation(
        httpproxy="echo", url="http://127.0.0.1:9/", expect_arrival=False, timeout_s=0.1, run_id=run
    )


def headers(api: FakeProxies) -> list[dict[str, str]]:
    return api.obj["spec"]["routes"][0]["responseHeadersPolicy"]["set"]


def test_a_conflict_is_retried_on_a_fresh_read_and_the_users_value_is_saved(fake):
    fake.conflicts = 2
    held = write("a")
    assert fake.writes == 1 and held["previous"] == [USER] and held["expires_at"] == "2026-12-05T18:10:00Z"
    assert headers(fake) == [{"name": "x-chaoscontour-config", "value": held["marker"]}]


def test_endless_conflicts_fail_clearly(fake):
    fake.conflicts = 99
    with pytest.raises(ActivityFailed, match="changed under each of 5 attempts"):
        write("a")
    assert headers(fake) == [USER]


def test_another_live_run_is_refused_then_the_rollback_restores_the_users_value(fake):
    write("a")
    writes = fake.writes
    with pytest.raises(ActivityFailed, match=r"already carries a route marker of run a .* Nothing was written"):
        write("b")
    assert fake.writes == writes
    assert routes.remove_route_marker(httpproxy="echo", run_id="b")["removed"] is False
    assert routes.remove_route_marker(httpproxy="echo", run_id="a")["removed"] is True
    assert headers(fake) == [USER] and fake.obj["metadata"]["annotations"] == {}
    again = routes.remove_route_marker(httpproxy="echo", run_id="a")
    assert again["removed"] is False and "set by hand" in again["note"] and headers(fake) == [USER]
    assert routes.remove_route_marker(httpproxy="missing")["removed"] is False
