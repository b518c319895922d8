"""Every activity refuses invalid arguments with a message a user understands, before touching the cluster.

The Kubernetes client factory is replaced by an autospec mock (chaostoolkit-kubernetes' own test pattern) only to
prove that it is never called: nothing can have been created.
"""

import re
from unittest import mock

import pytest
from chaoslib.exceptions import ActivityFailed

from chaoscontour.activities import leader, network, pods, routes, timing

_MARKER = routes.route_change_propagation
_ROUTE = {"httpproxy": "echo", "url": "http://10.0.0.1:8080/"}

BAD_CALLS = [
    (network.block_apiserver_egress, {"extra_cidrs": ["10.0.0.0/33"]}, "is not a CIDR"),
    (network.block_apiserver_egress, {"label_selector": ""}, "empty"),
    (network.block_apiserver_egress, {"label_selector": "app"}, "write 'key=value'"),
    (network.block_apiserver_egress, {"duration_s": 0}, "duration_s must be at least 1 seconds"),
    (network.block_apiserver_egress, {"duration_s": -5}, "duration_s must be at least 1 seconds"),
    # a typo must not create a fault that lasts until 2058, nor crash computing its expiry
    (network.block_apiserver_egress, {"duration_s": "1000000000"}, "duration_s must be at most 14400 seconds"),
    (network.block_apiserver_egress, {"duration_s": "3O"}, "duration_s must be a number of seconds, not '3O'"),
    (network.block_apiserver_egress, {"duration_s": "nan"}, "finite"),
    (network.block_apiserver_egress, {"force": "perhaps"}, "force must be true or false"),
    (network.block_apiserver_egress, {"verify": "nope"}, "verify must be true or false"),
    (network.block_apiserver_egress, {"dead_man_s": 5}, "dead_man_s must be at least 10"),
    (network.block_apiserver_egress, {"lease_namespace": "Bad_NS"}, "lease_namespace 'Bad_NS' is not a valid"),
    (network.block_apiserver_egress, {"extra_cidrs": {"a": 1}}, "must be a list of CIDRs"),
    # issue 21: everything in two halves, for either family
    (network.block_apiserver_egress, {"extra_cidrs": "0.0.0.0/1,128.0.0.0/1"}, "wider than a /8"),
    (network.block_apiserver_egress, {"extra_cidrs": ["::/1", "8000::/1"]}, "wider than a /8"),
    (network.block_apiserver_egress, {"extra_cidrs": [f"{n}.0.0.0/8" for n in range(1, 18)]}, "6.6% of IPv4"),
    (network.block_apiserver_egress, {"namespace": "Bad_NS"}, "not a valid namespace"),
    (network.block_apiserver_egress, {"open_connections": "sometimes"}, "open_connections must be one of"),
    (network.block_apiserver_egress, {"run_id": "Has Spaces"}, "run_id"),
    (network.block_apiserver_egress, {"verify_window_s": 10, "verify_timeout_s": 5}, "must be longer"),
    (network.unblock_apiserver_egress, {"run_id": "r1", "all_runs": True}, "either run_id or all_runs"),
    (network.unblock_apiserver_egress, {"run_id": "r1", "all_runs": "TRUE"}, "either run_id or all_runs"),
    (network.unblock_apiserver_egress, {"all_runs": "maybe"}, "all_runs must be true or false"),
    (network.apiserver_egress_fault, {"run_id": "Bad Id"}, "run_id"),
    (network.unblock_apiserver_egress, {"namespace": ""}, "not a valid namespace"),
    (leader.kill_leader, {"label_selector": "app!=contour"}, "set-based"),
    (leader.kill_leader, {"timeout_s": 0}, "timeout_s must be greater than 0"),
    (leader.kill_leader, {"grace_period_s": -1}, "grace_period_s must be between 0 and 3600"),
    (leader.kill_leader, {"grace_period_s": "2.5"}, "grace_period_s must be a whole number"),
    (leader.kill_leader, {"wait_for_new_leader": "sure"}, "wait_for_new_leader must be true or false"),
    (leader.kill_leader, {"timeout_s": "99999"}, "timeout_s must be at most 3600"),
    (leader.kill_leader, {"lease_namespace": "Bad_NS"}, "lease_namespace"),
    (timing.wait, {"duration_s": "forty"}, "duration_s must be a number of seconds"),
    (timing.wait, {"duration_s": 1e9}, "duration_s must be at most 86400"),
    (leader.kill_leader, {"lease_name": "Leader_Elect"}, "not a valid object name"),
    (leader.lease_holder, {"wait_for_holder_s": -1}, "wait_for_holder_s"),
    (leader.lease_holder, {"namespace": "x" * 64}, "not a valid namespace"),
    (leader.lease_holder, {"lease_namespace": "-x"}, "lease_namespace"),
    (pods.contour_restart_count, {"since": "last tuesday"}, "ISO 8601"),
    (pods.contour_restart_count, {"within_last_s": -3}, "within_last_s"),
    (pods.contour_restart_count, {"since": "2026-11-26T19:00:00Z", "within_last_s": 5}, "either since or"),
    # issue 21: the marker and its rollback would overwrite, then delete, a real header of every route
    (
        routes.remove_route_marker,
        {"httpproxy": "echo", "header_name": "strict-transport-security"},
        "header_name must start with 'x-chaoscontour-'",
    ),
    (
        routes.route_change_propagation,
        {"httpproxy": "echo", "url": "http://10.0.0.1:8080/", "header_name": "x-chaoscontour-"},
        "header_name must start with 'x-chaoscontour-'",
    ),
    # issue 21: the marker's expiry, parsed as strictly as a fault's duration
    (_MARKER, {**_ROUTE, "expire_after_s": "abc"}, "expire_after_s must be a number of seconds, not 'abc'"),
    (_MARKER, {**_ROUTE, "expire_after_s": -600}, "expire_after_s must be at least 10 seconds"),
    (_MARKER, {**_ROUTE, "expire_after_s": "0"}, "expire_after_s must be at least 10 seconds"),
    (_MARKER, {**_ROUTE, "expire_after_s": "1e9"}, "expire_after_s must be at most 14400 seconds"),
    (_MARKER, {**_ROUTE, "expire_after_s": "inf"}, "finite"),
    (_MARKER, {**_ROUTE, "expire_after_s": True}, "expire_after_s must be a number of seconds"),
    (_MARKER, {**_ROUTE, "run_id": "Two Runs"}, "run_id"),
    (routes.remove_route_marker, {"httpproxy": "echo", "run_id": "r1", "all_runs": "true"}, "either run_id or"),
    (routes.remove_route_marker, {"httpproxy": "echo", "all_runs": "perhaps"}, "all_runs must be true or false"),
    (routes.remove_route_marker, {"httpproxy": "echo", "run_id": "Bad Id"}, "run_id"),
]


@pytest.mark.parametrize(("activity", "arguments", "message"), BAD_CALLS)
def test_invalid_arguments_fail_clearly_and_touch_nothing(activity, arguments, message):
    with (
        mock.patch("chaoscontour.edges.kube.create_k8s_api_client", autospec=True) as factory,
        pytest.raises(ActivityFailed, match=re.escape(message)) as caught,
    ):
        activity(**arguments)
    assert caught.value.args[0].startswith(activity.__name__)
    factory.assert_not_called()


def test_malformed_holder_identity_is_refused_and_nothing_deleted():
    with (
        mock.patch("chaoscontour.edges.kube.create_k8s_api_client", autospec=True),
        mock.patch("chaoscontour.activities.leader.read_lease", return_value={"spec": {"holderIdentity": "oops"}}),
        mock.patch("chaoscontour.edges.kube.client.CoreV1Api", autospec=True) as core,
        pytest.raises(ActivityFailed, match=re.escape("is not '<pod-name>_<uuid>'")),
    ):
        leader.kill_leader()
    core.return_value.delete_namespaced_pod.assert_not_called()


@pytest.mark.parametrize(("text", "expected"), [("false", False), ("No", False), ("0", False), ("OFF", False)])
def test_all_runs_given_as_a_false_string_is_false(text, expected):
    """``all_runs="false"`` once removed every run's fault (a non-empty string is truthy); now it is this run's."""
    from chaoscontour.domain.inputs import parse_bool

    assert parse_bool(text, "all_runs") is expected
    # with run_id and a false all_runs there is no conflict: only "either ... or" would be raised before any call
    with (
        mock.patch("chaoscontour.activities._fault.kube", autospec=True) as factory,
        mock.patch(
            "chaoscontour.activities._fault.remove", autospec=True, return_value={"policies": [], "jobs": []}
        ) as remove,
    ):
        out = network.unblock_apiserver_egress(run_id="r1", all_runs=text)
    factory.assert_called_once()
    assert remove.call_args.args[3] == "r1" and out["run_id"] == "r1"


def test_wait_parses_a_string_from_var_and_returns_at_once_for_zero():
    assert timing.wait("0") == {"waited_s": 0.0}
    assert timing.wait(" 0.2 ")["waited_s"] == 0.2


def test_the_marker_expiry_from_a_var_string_parses_and_reaches_the_write():
    """``--var expire_after_s=600`` arrives as the string "600"; it must parse, not be refused nor taken as text."""
    with (
        mock.patch("chaoscontour.activities.routes.kube", autospec=True),
        mock.patch(
            "chaoscontour.activities._route_target.RouteTarget.write", autospec=True, side_effect=RuntimeError("stop")
        ) as write,
        pytest.raises(RuntimeError, match="stop"),
    ):
        routes.route_change_propagation(**_ROUTE, expire_after_s=" 600 ", run_id="r1")
    assert write.call_args.args[5:] == ("r1", 600.0)  # (self, k, header, index, marker, run, expire)
