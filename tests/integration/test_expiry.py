"""The fault's expiry is Kubernetes' own doing: a pod-less Job's deadline, the TTL controller, the garbage collector.

Runs its own control plane with kube-controller-manager (the session's has none), creates the fault with the real
activity, and then does nothing: the policy must vanish by itself within its duration plus the documented margin.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from chaoscontour.activities.network import block_apiserver_egress, unblock_apiserver_egress
from chaoscontour_sandbox.controlplane import ControlPlane

# Job controller deadline + TTL-after-finished deletion + garbage collection; measured 3.2 s above a 5 s deadline.
EXPIRY_MARGIN_S = 15


@pytest.fixture
def plane_with_controllers(require: Any) -> Iterator[ControlPlane]:
    require("etcd", "kube-apiserver", "kube-controller-manager")
    with ControlPlane(controller_manager=True, progress=lambda m: print(f"\n{m}", flush=True)) as plane:
        yield plane


def _contour_like_pod(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespace({"metadata": {"name": namespace}})
    deadline = time.monotonic() + 30
    while True:  # kube-controller-manager creates the `default` ServiceAccount that pod admission needs
        try:
            core.read_namespaced_service_account("default", namespace)
            break
        except client.ApiException:
            assert time.monotonic() < deadline, "kube-controller-manager never created the default ServiceAccount"
            time.sleep(0.2)
    pod: Any = {
        "metadata": {"name": "contour-0", "labels": {"app": "contour"}},
        "spec": {"containers": [{"name": "contour", "image": "contour"}]},
    }
    core.create_namespaced_pod(namespace, pod)


def test_policy_disappears_by_itself_after_its_duration(plane_with_controllers, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(plane_with_controllers.kubeconfig))
    api = plane_with_controllers.api_client()
    core, net, batch = client.CoreV1Api(api), client.NetworkingV1Api(api), client.BatchV1Api(api)
    _contour_like_pod(core, "expiry")

    duration_s = 5
    created = block_apiserver_egress(namespace="expiry", duration_s=duration_s, run_id="expiry-1", verify=False)
    started = time.monotonic()
    assert net.read_namespaced_network_policy(created["name"], "expiry").metadata.owner_references[0].kind == "Job"
    assert batch.read_namespaced_job(created["expiry_job"], "expiry").spec.parallelism == 0

    while net.list_namespaced_network_policy("expiry").items:
        elapsed = time.monotonic() - started
        assert elapsed < duration_s + EXPIRY_MARGIN_S, f"policy still there {elapsed:.1f} s after creation"
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    print(f"\nexpiry: policy gone {elapsed:.1f} s after creation (duration {duration_s} s)")
    assert elapsed >= duration_s - 1, "the policy must live for its duration"
    assert batch.list_namespaced_job("expiry").items == []
    assert core.list_namespaced_pod("expiry", label_selector="app.kubernetes.io/managed-by=chaoscontour").items == []


DEAD_MAN_S = 10
HOLDER = """
import sys, time
from chaoscontour.activities.network import block_apiserver_egress, unblock_apiserver_egress
block_apiserver_egress(namespace="deadman", duration_s=300, run_id="dm-1", verify=False, dead_man_s={dead_man})
print("BLOCKED", flush=True)
time.sleep(600)
"""


def test_the_fault_outlives_its_dead_man_interval_while_the_runner_lives_and_ends_soon_after_kill_9(
    plane_with_controllers, monkeypatch
):
    """Issue 10.4: a 300 s fault whose runner is killed -9 is gone within dead_man_s + the controllers' delay."""
    monkeypatch.setenv("KUBECONFIG", str(plane_with_controllers.kubeconfig))
    api = plane_with_controllers.api_client()
    core, net, batch = client.CoreV1Api(api), client.NetworkingV1Api(api), client.BatchV1Api(api)
    _contour_like_pod(core, "deadman")
    runner = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(dead_man=DEAD_MAN_S)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert runner.stdout is not None and runner.stdout.readline().strip() == "BLOCKED"
        blocked = time.monotonic()
        # alive: the heartbeat keeps the fault well past its dead-man interval
        time.sleep(DEAD_MAN_S + 8)
        assert [p.metadata.name for p in net.list_namespaced_network_policy("deadman").items], "fault ended early"
        deadline = batch.list_namespaced_job("deadman").items[0].spec.active_deadline_seconds
        assert deadline >= time.monotonic() - blocked + DEAD_MAN_S - 5, deadline
        os.kill(runner.pid, signal.SIGKILL)
        killed = time.monotonic()
    finally:
        runner.kill()
        runner.wait()
    while net.list_namespaced_network_policy("deadman").items:
        elapsed = time.monotonic() - killed
        assert elapsed < DEAD_MAN_S + EXPIRY_MARGIN_S, f"policy still there {elapsed:.1f} s after kill -9"
        time.sleep(0.5)
    elapsed = time.monotonic() - killed
    print(f"\ndead-man switch: policy gone {elapsed:.1f} s after kill -9 (dead_man_s {DEAD_MAN_S}, duration 300 s)")
    assert batch.list_namespaced_job("deadman").items == []


def test_a_job_deleted_without_cascade_orphans_its_policy_and_unblock_removes_it(plane_with_controllers, monkeypatch):
    """Issue 21: batch/v1 orphans dependents when a delete names no propagationPolicy, so deleting the expiry Job
    through the API (kubectl cascades, a client library does not) leaves the policy ownerless: nothing would ever
    expire it. The labels still name its run, so unblock (and cleanup) remove it."""
    monkeypatch.setenv("KUBECONFIG", str(plane_with_controllers.kubeconfig))
    api = plane_with_controllers.api_client()
    core, net, batch = client.CoreV1Api(api), client.NetworkingV1Api(api), client.BatchV1Api(api)
    _contour_like_pod(core, "orphan")
    created = block_apiserver_egress(namespace="orphan", run_id="orphan-1", verify=False)
    batch.delete_namespaced_job(created["expiry_job"], "orphan")  # no propagationPolicy: the API orphans

    deadline = time.monotonic() + 30
    while net.read_namespaced_network_policy(created["name"], "orphan").metadata.owner_references:
        assert time.monotonic() < deadline, "the garbage collector never orphaned the policy"
        time.sleep(0.2)
    time.sleep(2)  # and it stays: nothing deletes an ownerless policy
    assert [p.metadata.name for p in net.list_namespaced_network_policy("orphan").items] == [created["name"]]
    assert batch.list_namespaced_job("orphan").items == []
    removed = unblock_apiserver_egress(namespace="orphan", run_id="orphan-1")
    assert removed["removed_policies"] == [created["name"]]
    assert net.list_namespaced_network_policy("orphan").items == []
