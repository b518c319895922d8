"""`contour_restart_count` against pods whose statuses were written through the real status subresource."""

from __future__ import annotations

from datetime import timedelta

import pytest
from chaoslib.exceptions import ActivityFailed
from kubernetes import client

from bench.contour_like import create_pod, now
from chaoscontour.activities.pods import contour_restart_count
from chaoscontour.domain.clock import format_utc, parse_api_time

pytestmark = pytest.mark.usefixtures("kubeconfig_env")


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


def test_restart_count_sums_only_the_selected_pods(core: client.CoreV1Api, namespace: str) -> None:
    create_pod(core, namespace, "contour-a", restarts=2, last_terminated_at=now() - timedelta(seconds=30))
    create_pod(core, namespace, "contour-b")
    create_pod(core, namespace, "envoy-x", labels={"app": "envoy"}, restarts=7)

    summary = contour_restart_count(namespace=namespace)

    assert summary["total_restarts"] == 2
    assert summary["pod_count"] == 2
    by_name = {pod["name"]: pod for pod in summary["pods"]}
    assert set(by_name) == {"contour-a", "contour-b"}
    assert by_name["contour-a"]["phase"] == "Running"
    [container] = by_name["contour-a"]["containers"]
    assert container["restart_count"] == 2
    assert container["last_terminated"]["exit_code"] == 1
    assert container["last_terminated"]["reason"] == "Error"
    assert by_name["contour-b"]["containers"][0]["last_terminated"] is None
    assert "terminated_since" not in summary


def test_restart_count_counts_terminations_within_a_window(core: client.CoreV1Api, namespace: str) -> None:
    recent = now() - timedelta(seconds=20)
    create_pod(core, namespace, "contour-a", restarts=1, last_terminated_at=recent)
    create_pod(core, namespace, "contour-b", restarts=4, last_terminated_at=now() - timedelta(hours=1))

    last_minute = contour_restart_count(namespace=namespace, within_last_s=60)
    assert last_minute["total_restarts"] == 5
    assert last_minute["terminated_since"] == 1
    [termination] = last_minute["terminations"]
    assert termination["pod"] == "contour-a"
    assert parse_api_time(termination["finished_at"]) == recent.replace(microsecond=0)
    assert termination["state"] == "lastState"

    since_two_hours = contour_restart_count(
        namespace=namespace, since=format_utc(now() - timedelta(hours=2), "seconds")
    )
    assert since_two_hours["terminated_since"] == 2


def test_a_selector_that_matches_nothing_fails_instead_of_reporting_zero(
    core: client.CoreV1Api, namespace: str
) -> None:
    create_pod(core, namespace, "contour-a", restarts=3)
    with pytest.raises(ActivityFailed, match=r"no pod in namespace .* matches 'app=contour,tier=none'"):
        contour_restart_count(namespace=namespace, label_selector="app=contour,tier=none")


def test_an_unknown_namespace_fails_naming_it() -> None:
    with pytest.raises(ActivityFailed, match="no pod in namespace 'no-such-namespace'"):
        contour_restart_count(namespace="no-such-namespace")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"since": "2026-01-01T00:00:00Z", "within_last_s": 60}, "either since or within_last_s"),
        ({"label_selector": "app in (contour"}, "contour_restart_count"),
        ({"within_last_s": -1}, "within_last_s"),
        ({"namespace": "Not_A_Namespace"}, "namespace"),
    ],
)
def test_restart_count_rejects_invalid_input(namespace: str, arguments: dict[str, object], message: str) -> None:
    arguments = {"namespace": namespace, **arguments}
    with pytest.raises(ActivityFailed, match=message):
        contour_restart_count(**arguments)  # type: ignore[arg-type]
