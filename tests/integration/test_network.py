"""`block_apiserver_egress` / `unblock_apiserver_egress` against the real API server.

The API server validates the policy and the expiry Job, and maintains the `default/kubernetes` EndpointSlice the
fault is aimed at. No CNI runs here, so a policy never cuts anything: that is what the verification step must
notice (a leader that keeps renewing), and it is the honest outcome to test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed
from kubernetes import client

from bench.contour_like import Candidate, create_lease, create_pod, holder_identity, names, now
from chaoscontour.activities.network import apiserver_egress_fault, block_apiserver_egress, unblock_apiserver_egress
from chaoscontour_sandbox.controlplane import ControlPlane

pytestmark = pytest.mark.usefixtures("kubeconfig_env")

MANAGED = "app.kubernetes.io/managed-by=chaoscontour"


@pytest.fixture
def net(api: client.ApiClient) -> client.NetworkingV1Api:
    return client.NetworkingV1Api(api)


@pytest.fixture
def batch(api: client.ApiClient) -> client.BatchV1Api:
    return client.BatchV1Api(api)


@pytest.fixture
def leader(api: client.ApiClient, contour: str) -> Iterator[Candidate]:
    """contour-a holding a 4 s Lease and renewing it every 0.25 s, as a live leader does."""
    candidate = Candidate(api, contour, "contour-a", duration_s=4)
    candidate.start()
    assert candidate.acquired.wait(10)
    yield candidate
    candidate.stop()
    assert not candidate.errors


def policy_names(net: client.NetworkingV1Api, namespace: str) -> list[str]:
    return names(net.list_namespaced_network_policy(namespace))


def job_names(batch: client.BatchV1Api, namespace: str) -> list[str]:
    return names(batch.list_namespaced_job(namespace))


def test_block_creates_a_policy_the_api_server_accepts_aimed_at_its_own_endpoints(
    control_plane: ControlPlane, net: client.NetworkingV1Api, batch: client.BatchV1Api, contour: str
) -> None:
    result = block_apiserver_egress(namespace=contour, run_id="t1", duration_s=300, verify=False)

    assert result["selected_pods"] == ["contour-a", "contour-b"]
    # The address kube-apiserver itself published in default/kubernetes, then the Service's ClusterIP.
    assert result["blocked_cidrs"] == [f"{control_plane.advertise_address}/32", f"{control_plane.service_ip}/32"]
    assert control_plane.ports["apiserver"] in result["apiserver_ports"]
    policy: Any = net.read_namespaced_network_policy(result["name"], contour)
    assert policy.spec.pod_selector.match_labels == {"app": "contour"}
    assert policy.spec.policy_types == ["Egress"]
    excepted = {
        cidr
        for rule in policy.spec.egress
        for peer in rule.to or []
        if peer.ip_block
        for cidr in peer.ip_block._except or []
    }
    assert set(result["blocked_cidrs"]) <= excepted
    assert policy.metadata.labels["chaoscontour/run-id"] == "t1"
    [owner] = policy.metadata.owner_references
    assert (owner.kind, owner.name) == ("Job", result["expiry_job"])
    job: Any = batch.read_namespaced_job(result["expiry_job"], contour)
    assert job.spec.parallelism == 0
    assert job.spec.active_deadline_seconds == 20, "the dead-man switch starts short; the hard cap is annotated"

    removed = unblock_apiserver_egress(namespace=contour, run_id="t1")
    assert removed["removed_policies"] == [result["name"]]
    assert removed["removed_jobs"] == [result["expiry_job"]]
    assert policy_names(net, contour) == []
    again = unblock_apiserver_egress(namespace=contour, run_id="t1")
    assert (again["removed_policies"], again["removed_jobs"], again["other_runs"]) == ([], [], [])
    assert "nothing of run t1 in namespace" in again["note"]


def test_block_refuses_when_an_allow_all_egress_policy_selects_the_pods(
    net: client.NetworkingV1Api, batch: client.BatchV1Api, contour: str
) -> None:
    allow_all: Any = {
        "metadata": {"name": "allow-all-egress"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},
    }
    net.create_namespaced_network_policy(contour, allow_all)

    with pytest.raises(ActivityFailed, match=r"already allows these pods to reach the API server.*allow-all-egress"):
        block_apiserver_egress(namespace=contour, run_id="t2", verify=False)
    assert policy_names(net, contour) == ["allow-all-egress"]
    assert job_names(batch, contour) == []

    forced = block_apiserver_egress(namespace=contour, run_id="t2", verify=False, force=True)
    assert policy_names(net, contour) == sorted(["allow-all-egress", forced["name"]])
    unblock_apiserver_egress(namespace=contour, run_id="t2")
    assert policy_names(net, contour) == ["allow-all-egress"]


def test_unblock_removes_only_the_given_runs_objects(
    net: client.NetworkingV1Api, batch: client.BatchV1Api, contour: str
) -> None:
    foreign: Any = {
        "metadata": {"name": "deny-ingress", "labels": {"app.kubernetes.io/managed-by": "someone-else"}},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    net.create_namespaced_network_policy(contour, foreign)
    first = block_apiserver_egress(namespace=contour, run_id="r1", verify=False)
    second = block_apiserver_egress(namespace=contour, run_id="r2", verify=False)

    removed = unblock_apiserver_egress(namespace=contour, run_id="r1")
    assert policy_names(net, contour) == sorted(["deny-ingress", second["name"]])
    assert job_names(batch, contour) == [second["expiry_job"]]
    assert removed["other_runs"] == ["r2"] and "note" not in removed

    # A typo'd run id (or r1 again) removes nothing, says so, and names the fault still in place.
    typo = unblock_apiserver_egress(namespace=contour, run_id="r")
    assert (typo["removed_policies"], typo["removed_jobs"]) == ([], [])
    assert "nothing of run r in namespace" in typo["note"] and "still in place there: r2" in typo["note"]
    assert policy_names(net, contour) == sorted(["deny-ingress", second["name"]])

    everything = unblock_apiserver_egress(namespace=contour, all_runs=True)
    assert everything["removed_policies"] == [second["name"]]
    assert policy_names(net, contour) == ["deny-ingress"]
    assert first["name"] not in policy_names(net, contour)


def test_a_run_id_in_use_is_refused_before_anything_is_created(
    net: client.NetworkingV1Api, batch: client.BatchV1Api, contour: str
) -> None:
    """Issue 21: two runs configured with one run id removed each other's fault."""
    first = block_apiserver_egress(namespace=contour, run_id="dup", verify=False)
    with pytest.raises(ActivityFailed, match=r"run_id 'dup' is already in use .*NetworkPolicy .*Job "):
        block_apiserver_egress(namespace=contour, run_id="dup", verify=False)
    assert policy_names(net, contour) == [first["name"]]
    assert job_names(batch, contour) == [first["expiry_job"]]
    unblock_apiserver_egress(namespace=contour, run_id="dup")
    again = block_apiserver_egress(namespace=contour, run_id="dup", verify=False)  # free again once removed
    unblock_apiserver_egress(namespace=contour, run_id="dup")
    assert again["name"] == first["name"] and policy_names(net, contour) == []


@pytest.mark.parametrize(
    "arguments",
    [
        {"duration_s": 0},
        {"extra_cidrs": ["10.0.0.0/33"]},
        {"run_id": "Not_A_Run"},
        {"open_connections": "sometimes"},
        {"label_selector": "app in (contour"},
        {"verify_window_s": 10, "verify_timeout_s": 5},
    ],
    ids=["duration", "cidr", "run-id", "open-connections", "selector", "verify-timeout"],
)
def test_block_rejects_invalid_input_before_creating_anything(
    net: client.NetworkingV1Api, batch: client.BatchV1Api, contour: str, arguments: dict[str, Any]
) -> None:
    with pytest.raises(ActivityFailed, match="block_apiserver_egress"):
        block_apiserver_egress(namespace=contour, **arguments)
    assert policy_names(net, contour) == []
    assert job_names(batch, contour) == []


def test_block_refuses_when_no_pod_matches(net: client.NetworkingV1Api, batch: client.BatchV1Api, contour: str) -> None:
    with pytest.raises(ActivityFailed, match=r"no running pod .* matches 'app=envoy'; nothing was created"):
        block_apiserver_egress(namespace=contour, label_selector="app=envoy", verify=False)
    assert policy_names(net, contour) == []
    assert job_names(batch, contour) == []


def test_block_removes_its_policy_when_the_leader_keeps_renewing(
    net: client.NetworkingV1Api, batch: client.BatchV1Api, contour: str, leader: Candidate
) -> None:
    # No CNI enforces policies here, exactly like a cluster on flannel: the fault must be reported as not working,
    # naming what was seen.
    with pytest.raises(ActivityFailed) as caught:
        block_apiserver_egress(namespace=contour, run_id="t3", verify_timeout_s=10)
    message = str(caught.value)
    assert "the fault did not take effect" in message and "The policy was removed" in message
    assert f"by {leader.identity}" in message and "open_connections='none'" in message
    assert "longer than its 4 s duration" in message
    assert leader.renewals > 1
    assert policy_names(net, contour) == []
    assert job_names(batch, contour) == []


def test_a_slow_renewing_leader_is_never_taken_for_a_cut_off_one(
    api: client.ApiClient, net: client.NetworkingV1Api, contour: str
) -> None:
    """Regression (issue 9): a 3 s retry period beat the old fixed quiet window; the Lease's duration does not."""
    slow = Candidate(api, contour, "contour-a", retry_s=3, duration_s=5)
    slow.start()
    try:
        assert slow.acquired.wait(10)
        with pytest.raises(ActivityFailed, match="the fault did not take effect"):
            block_apiserver_egress(namespace=contour, run_id="t3b", verify_window_s=1, verify_timeout_s=14)
    finally:
        slow.stop()
    assert slow.renewals >= 2  # acquired, then renewed after the block: enough to refuse early
    assert policy_names(net, contour) == []


def test_a_lease_nobody_renews_is_refused_as_evidence_before_anything_is_created(
    api: client.ApiClient, net: client.NetworkingV1Api, batch: client.BatchV1Api, contour: str
) -> None:
    """Issue 21: a Lease last renewed in 2020 stays unchanged whatever the policy does, so it once "confirmed" a
    fault that never bit. The block must refuse it before it creates anything."""
    create_lease(
        client.CoordinationV1Api(api),
        contour,
        holder_identity("contour-a"),
        renewed=datetime(2020, 3, 1, 12, 0, 0, 250000, tzinfo=UTC),  # whole seconds: the client drops the fraction
        duration_s=15,
    )
    with pytest.raises(ActivityFailed, match=r"is not being renewed: .*contour-a.* ago by the API server's clock"):
        block_apiserver_egress(namespace=contour, run_id="stale", verify_timeout_s=30)
    assert policy_names(net, contour) == []
    assert job_names(batch, contour) == []


def test_a_lease_held_by_a_pod_the_block_does_not_select_is_refused(
    api: client.ApiClient, net: client.NetworkingV1Api, batch: client.BatchV1Api, contour: str
) -> None:
    create_lease(client.CoordinationV1Api(api), contour, holder_identity("other-contour"), duration_s=15)
    with pytest.raises(ActivityFailed, match=r"held by .*other-contour.*not one of the selected pods"):
        block_apiserver_egress(namespace=contour, run_id="foreign", verify_timeout_s=30)
    assert policy_names(net, contour) == []
    assert job_names(batch, contour) == []


def test_block_is_confirmed_when_the_leader_stops_renewing(
    api: client.ApiClient, net: client.NetworkingV1Api, contour: str
) -> None:
    # A leader that is cut off: its 2 s Lease is never renewed again.
    create_lease(client.CoordinationV1Api(api), contour, holder_identity("contour-a"), renewed=now(), duration_s=2)
    result = block_apiserver_egress(namespace=contour, run_id="t4", verify_timeout_s=8)
    verification = result["verification"]
    assert verification["confirmed"] is True
    assert verification["evidence"] == "lease-unchanged-longer-than-its-duration"
    assert verification["required_quiet_s"] == 2 and 2 <= verification["confirmed_after_s"] < 5
    assert policy_names(net, contour) == [result["name"]]
    unblock_apiserver_egress(namespace=contour, run_id="t4")


def test_the_lease_may_live_in_another_namespace(api: client.ApiClient, contour: str, namespace: str) -> None:
    # `contour` and `namespace` are the same fixture namespace; make a second one for the Lease.
    core = client.CoreV1Api(api)
    elsewhere = f"{contour[:50]}-lease"
    core.create_namespace({"metadata": {"name": elsewhere}})
    try:
        create_lease(client.CoordinationV1Api(api), elsewhere, holder_identity("contour-a"), duration_s=2)
        with pytest.raises(ActivityFailed, match=r"Lease .*leader-elect not found.*set lease_namespace"):
            block_apiserver_egress(namespace=contour, run_id="t6", verify_timeout_s=8)
        result = block_apiserver_egress(namespace=contour, run_id="t6", lease_namespace=elsewhere, verify_timeout_s=8)
        assert result["verification"]["lease"] == f"Lease {elsewhere}/leader-elect"
        unblock_apiserver_egress(namespace=contour, run_id="t6")
    finally:
        core.delete_namespace(elsewhere)


def test_the_end_of_window_probe_says_whether_the_fault_held_and_why_not(
    api: client.ApiClient, net: client.NetworkingV1Api, contour: str
) -> None:
    coordination = client.CoordinationV1Api(api)
    create_lease(coordination, contour, holder_identity("contour-a"), duration_s=2)
    result = block_apiserver_egress(namespace=contour, run_id="t7", verify_timeout_s=8)
    held = apiserver_egress_fault(namespace=contour, run_id="t7")
    assert held["held"] is True and held["reasons"] == [] and held["uncovered_addresses"] == []
    assert held["dead_man_switch"]["running"] is True

    # a Contour wrote the Lease during the window: the fault did not hold
    lease: Any = coordination.read_namespaced_lease("leader-elect", contour)
    lease.spec.renew_time = now()
    coordination.replace_namespaced_lease("leader-elect", contour, lease)
    after_write = apiserver_egress_fault(namespace=contour, run_id="t7")
    assert after_write["held"] is False
    assert any("was written after the fault was confirmed" in r for r in after_write["reasons"])

    # the policy deleted by hand mid-window
    net.delete_namespaced_network_policy(result["name"], contour)
    gone = apiserver_egress_fault(namespace=contour, run_id="t7")
    assert any("NetworkPolicy is gone" in r for r in gone["reasons"])
    unblock_apiserver_egress(namespace=contour, run_id="t7")
    never = apiserver_egress_fault(namespace=contour, run_id="t7")
    assert never["held"] is False and any("never confirmed" in r for r in never["reasons"])


def test_the_dead_man_switch_extends_the_expiry_jobs_deadline_while_the_run_lives(
    batch: client.BatchV1Api, contour: str
) -> None:
    result = block_apiserver_egress(namespace=contour, run_id="t8", verify=False, duration_s=300, dead_man_s=10)
    first = batch.read_namespaced_job(result["expiry_job"], contour).spec.active_deadline_seconds
    assert first == 10
    deadline_s = 0
    for _ in range(40):
        time.sleep(0.25)
        deadline_s = batch.read_namespaced_job(result["expiry_job"], contour).spec.active_deadline_seconds
        if deadline_s > first:
            break
    assert deadline_s > first, "the heartbeat never extended the deadline"
    unblock_apiserver_egress(namespace=contour, run_id="t8")
    assert job_names(batch, contour) == []


@pytest.mark.parametrize("false_text", ["false", "False", "0", "no", "off"])
def test_all_runs_false_as_a_string_never_removes_another_runs_fault(
    net: client.NetworkingV1Api, contour: str, false_text: str
) -> None:
    mine = block_apiserver_egress(namespace=contour, run_id="mine", verify=False)
    theirs = block_apiserver_egress(namespace=contour, run_id="theirs", verify=False)
    removed = unblock_apiserver_egress(namespace=contour, run_id="mine", all_runs=false_text)
    assert removed["removed_policies"] == [mine["name"]]
    assert policy_names(net, contour) == [theirs["name"]]
    unblock_apiserver_egress(namespace=contour, run_id="theirs")


def test_block_with_restart_pods_deletes_only_the_selected_pods(
    api: client.ApiClient, net: client.NetworkingV1Api, contour: str
) -> None:
    core = client.CoreV1Api(api)
    create_pod(core, contour, "envoy-x", labels={"app": "envoy"})
    result = block_apiserver_egress(namespace=contour, run_id="t5", open_connections="restart-pods", verify=False)
    assert result["restarted_pods"] == ["contour-a", "contour-b"]
    assert names(core.list_namespaced_pod(contour)) == ["envoy-x"]
    unblock_apiserver_egress(namespace=contour, run_id="t5")
    assert policy_names(net, contour) == []
