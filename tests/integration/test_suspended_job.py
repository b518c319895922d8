"""A queueing controller that suspends new Jobs (Kueue does it with a mutating webhook) would stop the fault's
expiry clock: a suspended Job never reaches its deadline. Caused for real here with a MutatingAdmissionPolicy
(beta in Kubernetes 1.34, switched on for this control plane only) that sets ``spec.suspend`` on every new Job."""

import time
from collections.abc import Iterator
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed
from kubernetes import client

from bench.contour_like import create_pod
from chaoscontour.activities.network import block_apiserver_egress
from chaoscontour_sandbox.controlplane import ControlPlane

MAP_ARGS = [
    "--feature-gates=MutatingAdmissionPolicy=true",
    "--runtime-config=admissionregistration.k8s.io/v1beta1=true",
]
GROUP, VERSION = "admissionregistration.k8s.io", "v1beta1"


@pytest.fixture
def suspending_plane(require: Any) -> Iterator[ControlPlane]:
    require("etcd", "kube-apiserver")
    with ControlPlane(apiserver_args=MAP_ARGS, progress=lambda m: print(f"\n{m}", flush=True)) as plane:
        api = plane.api_client()
        custom = client.CustomObjectsApi(api)
        policy: Any = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "MutatingAdmissionPolicy",
            "metadata": {"name": "suspend-new-jobs"},
            "spec": {
                "matchConstraints": {
                    "resourceRules": [
                        {"apiGroups": ["batch"], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["jobs"]}
                    ]
                },
                "failurePolicy": "Fail",
                "reinvocationPolicy": "Never",
                "mutations": [
                    {
                        "patchType": "ApplyConfiguration",
                        "applyConfiguration": {"expression": "Object{spec: Object.spec{suspend: true}}"},
                    }
                ],
            },
        }
        custom.create_cluster_custom_object(GROUP, VERSION, "mutatingadmissionpolicies", policy)
        binding: Any = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": {"name": "suspend-new-jobs"},
            "spec": {"policyName": "suspend-new-jobs"},
        }
        custom.create_cluster_custom_object(GROUP, VERSION, "mutatingadmissionpolicybindings", binding)
        batch = client.BatchV1Api(api)
        probe: Any = {
            "metadata": {"generateName": "probe-"},
            "spec": {
                "parallelism": 0,
                "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}},
            },
        }
        deadline = time.monotonic() + 30
        while not batch.create_namespaced_job("default", probe, dry_run="All").spec.suspend:
            assert time.monotonic() < deadline, "the MutatingAdmissionPolicy never took effect"
            time.sleep(0.2)
        yield plane


def test_a_suspended_expiry_job_is_removed_and_the_block_fails_creating_nothing(suspending_plane, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(suspending_plane.kubeconfig))
    api = suspending_plane.api_client()
    core, net, batch = client.CoreV1Api(api), client.NetworkingV1Api(api), client.BatchV1Api(api)
    core.create_namespace({"metadata": {"name": "queued"}})
    core.create_namespaced_service_account("queued", {"metadata": {"name": "default"}})
    create_pod(core, "queued", "contour-a")
    with pytest.raises(ActivityFailed, match=r"created suspended .* Kueue.* never reaches its deadline"):
        block_apiserver_egress(namespace="queued", run_id="queued-1", verify=False)
    assert net.list_namespaced_network_policy("queued").items == []
    assert batch.list_namespaced_job("queued").items == []
