"""Every activity refuses invalid arguments with a message a user understands, before touching the cluster.

The Kubernetes client factory is replaced by an autospec mock (chaostoolkit-kubernetes' own test pattern) only to
prove that it is never called: nothing can have been created.
"""

import re
from unittest import mock

import pytest
from chaoslib.exceptions import ActivityFailed

from chaoscontour.activities import leader, network, pods

BAD_CALLS = [
    (network.block_apiserver_egress, {"extra_cidrs": ["10.0.0.0/33"]}, "is not a CIDR"),
    (network.block_apiserver_egress, {"label_selector": ""}, "empty"),
    (network.block_apiserver_egress, {"label_selector": "app"}, "write 'key=value'"),
    (network.block_apiserver_egress, {"duration_s": 0}, "duration_s must be greater than 0"),
    (network.block_apiserver_egress, {"duration_s": -5}, "duration_s must be greater than 0"),
    (network.block_apiserver_egress, {"namespace": "Bad_NS"}, "not a valid namespace"),
    (network.block_apiserver_egress, {"open_connections": "sometimes"}, "open_connections must be one of"),
    (network.block_apiserver_egress, {"run_id": "Has Spaces"}, "run_id"),
    (network.block_apiserver_egress, {"verify_window_s": 10, "verify_timeout_s": 5}, "must be longer"),
    (network.unblock_apiserver_egress, {"run_id": "r1", "all_runs": True}, "either run_id or all_runs"),
    (network.unblock_apiserver_egress, {"namespace": ""}, "not a valid namespace"),
    (leader.kill_leader, {"label_selector": "app!=contour"}, "set-based"),
    (leader.kill_leader, {"timeout_s": 0}, "timeout_s must be greater than 0"),
    (leader.kill_leader, {"grace_period_s": -1}, "grace_period_s must be 0 or more"),
    (leader.kill_leader, {"lease_name": "Leader_Elect"}, "not a valid object name"),
    (leader.lease_holder, {"wait_for_holder_s": -1}, "wait_for_holder_s"),
    (leader.lease_holder, {"namespace": "x" * 64}, "not a valid namespace"),
    (pods.contour_restart_count, {"since": "last tuesday"}, "ISO 8601"),
    (pods.contour_restart_count, {"within_last_s": -3}, "within_last_s"),
    (pods.contour_restart_count, {"since": "2026-11-26T19:00:00Z", "within_last_s": 5}, "either since or"),
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
