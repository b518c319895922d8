"""Least privilege, by running every activity as the ServiceAccount of ``deploy/rbac.yaml``.

``tests/integration/test_deploy.py`` asks the RBAC authorizer (SubjectAccessReview) about each verb; here the real
activities run with a TokenRequest token of that ServiceAccount, with deploy/admission-policy.yaml in force too, so a
call the Roles forget, or one the admission policies refuse, fails the test the way it would fail a game day. The
manifests are applied as written, moved into the test's namespace (see ``tests/support/game_day_identity.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from bench.contour_like import Candidate, create_pod, names
from chaoscontour.activities.leader import kill_leader, lease_holder
from chaoscontour.activities.network import block_apiserver_egress, unblock_apiserver_egress
from chaoscontour.activities.pods import contour_restart_count
from chaoscontour_sandbox.controlplane import ControlPlane
from tests.support import identities
from tests.support.game_day_identity import (
    SERVICE_ACCOUNT,
    admission_documents,
    applied,
    rbac_documents,
    wait_for_admission_policies,
)


@pytest.fixture
def service_account_kubeconfig(control_plane: ControlPlane, api: client.ApiClient, namespace: str) -> Iterator[Path]:
    """deploy/rbac.yaml and deploy/admission-policy.yaml in force in ``namespace``; a kubeconfig for its
    ServiceAccount."""
    with applied(api, rbac_documents(namespace)), applied(api, admission_documents(namespace)):
        kubeconfig = identities.service_account_kubeconfig(control_plane, namespace, SERVICE_ACCOUNT)
        with config.new_client_from_config(config_file=str(kubeconfig)) as sa_api:
            wait_for_admission_policies(api, sa_api, namespace)
        yield kubeconfig


@pytest.fixture
def as_service_account(service_account_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The activities' client (chaosk8s, through ``KUBECONFIG``) authenticates as the ServiceAccount."""
    monkeypatch.setenv("KUBECONFIG", str(service_account_kubeconfig))
    for variable in ("KUBERNETES_CONTEXT", "CHAOSTOOLKIT_IN_POD", "KUBERNETES_HOST"):
        monkeypatch.delenv(variable, raising=False)
    return service_account_kubeconfig


def test_the_service_account_runs_every_kubernetes_activity(
    api: client.ApiClient, namespace: str, as_service_account: Path
) -> None:
    core = client.CoreV1Api(api)
    for pod in ("contour-a", "contour-b"):
        create_pod(core, namespace, pod, restarts=1)
    replicas = [Candidate(api, namespace, pod, duration_s=2) for pod in ("contour-a", "contour-b")]
    replicas[0].start()
    assert replicas[0].acquired.wait(10)
    replicas[1].start()
    try:
        assert lease_holder(namespace=namespace)["pod_name"] == "contour-a"
        assert contour_restart_count(namespace=namespace, within_last_s=60)["total_restarts"] == 2

        blocked = block_apiserver_egress(namespace=namespace, run_id="sa1", verify=False)
        assert unblock_apiserver_egress(namespace=namespace, run_id="sa1")["removed_policies"] == [blocked["name"]]
        # The verification path reads the Lease, and removes the policy again when the leader keeps renewing.
        with pytest.raises(ActivityFailed, match="did not take effect"):
            block_apiserver_egress(namespace=namespace, run_id="sa2", verify_window_s=1, verify_timeout_s=15)
        assert unblock_apiserver_egress(namespace=namespace, all_runs=True)["removed_policies"] == []

        killed = kill_leader(namespace=namespace, timeout_s=30)
        assert (killed["old_pod"], killed["new_pod"]) == ("contour-a", "contour-b")
        # No node runs these pods (no IP), so where Envoy's xDS stream was is unknown, and the output says why
        # (test_deploy asks the authorizer that the ServiceAccount may get pods/proxy; e2e reads it for real).
        assert killed["xds"]["known"] is False, killed["xds"]
        assert killed["xds"]["reason"] == "the metrics of contour-a could not be read: the pod has no IP yet"

        restarted = block_apiserver_egress(
            namespace=namespace, run_id="sa3", open_connections="restart-pods", verify=False
        )
        assert restarted["restarted_pods"] == ["contour-b"]
        unblock_apiserver_egress(namespace=namespace, run_id="sa3")
    finally:
        for replica in replicas:
            replica.stop()
    assert not [e for r in replicas for e in r.errors]


def forbidden(call: Any, *args: Any, **kwargs: Any) -> bool:
    try:
        call(*args, **kwargs)
    except ApiException as exc:
        if exc.status == 403:
            return True
        raise
    return False


def test_the_service_account_is_denied_what_the_activities_do_not_need(
    api: client.ApiClient, namespace: str, service_account_kubeconfig: Path
) -> None:
    apps = client.AppsV1Api(api)
    deployment: Any = {
        "metadata": {"name": "contour"},
        "spec": {
            "selector": {"matchLabels": {"app": "contour"}},
            "template": {
                "metadata": {"labels": {"app": "contour"}},
                "spec": {"containers": [{"name": "contour", "image": "contour:v1.33.6"}]},
            },
        },
    }
    apps.create_namespaced_deployment(namespace, deployment)
    secret: Any = {"metadata": {"name": "tls"}, "data": {}}
    client.CoreV1Api(api).create_namespaced_secret(namespace, secret)
    create_pod(client.CoreV1Api(api), namespace, "contour-a")

    with config.new_client_from_config(config_file=str(service_account_kubeconfig)) as sa_api:
        sa_core, sa_apps = client.CoreV1Api(sa_api), client.AppsV1Api(sa_api)
        assert forbidden(sa_core.list_namespaced_secret, namespace)
        assert forbidden(sa_core.read_namespaced_secret, "tls", namespace)
        assert forbidden(sa_apps.delete_namespaced_deployment, "contour", namespace)
        assert forbidden(sa_apps.patch_namespaced_deployment, "contour", namespace, {"spec": {"replicas": 0}})
        assert forbidden(sa_core.patch_namespaced_pod, "contour-a", namespace, {"metadata": {"labels": {"x": "y"}}})
        pod: Any = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "contour:v1.33.6"}]}}
        assert forbidden(sa_core.create_namespaced_pod, namespace, pod)
        assert forbidden(sa_core.list_namespaced_config_map, namespace)
        assert forbidden(sa_core.list_namespaced_pod, "kube-system")
        assert forbidden(sa_core.list_namespace)
        assert forbidden(sa_core.read_namespaced_service, "other", "default")
        assert forbidden(client.CoordinationV1Api(sa_api).list_namespaced_lease, namespace)
        # What it may do, through the same client: the control of this test.
        assert names(sa_core.list_namespaced_pod(namespace)) == ["contour-a"]
    assert names(apps.list_namespaced_deployment(namespace)) == ["contour"]
