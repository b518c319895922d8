"""`chaoscontour cleanup` against the real API server: it finds every object of ours, by label, and only those."""

from __future__ import annotations

import pytest
from kubernetes import client

from bench.contour_like import create_pod, names
from chaoscontour.activities.network import block_apiserver_egress
from chaoscontour.tools.cleanup import main as cleanup

pytestmark = pytest.mark.usefixtures("kubeconfig_env")

OURS = "app.kubernetes.io/managed-by=chaoscontour"


@pytest.fixture
def two_faults(api: client.ApiClient, namespace: str) -> str:
    """Two runs' faults in ``namespace`` and an unrelated NetworkPolicy beside them."""
    create_pod(client.CoreV1Api(api), namespace, "contour-a")
    for run in ("run-one", "run-two"):
        block_apiserver_egress(namespace=namespace, run_id=run, verify=False, duration_s=600)
    unrelated = {"metadata": {"name": "theirs"}, "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}}
    client.NetworkingV1Api(api).create_namespaced_network_policy(namespace, unrelated)
    return namespace


def ours(api: client.ApiClient, namespace: str) -> list[str]:
    net, batch = client.NetworkingV1Api(api), client.BatchV1Api(api)
    return names(net.list_namespaced_network_policy(namespace, label_selector=OURS)) + names(
        batch.list_namespaced_job(namespace, label_selector=OURS)
    )


def test_dry_run_lists_both_runs_and_removes_nothing(api, two_faults, capsys):
    assert cleanup(["--namespace", two_faults, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("would remove NetworkPolicy") == 2 and out.count("would remove Job") == 2
    assert "(run run-one)" in out and "(run run-two)" in out
    assert len(ours(api, two_faults)) == 4


def test_older_than_keeps_young_objects(api, two_faults, capsys):
    assert cleanup(["--namespace", two_faults, "--older-than", "1h"]) == 0
    assert "removed 0 object(s); 4 younger than 1h kept" in capsys.readouterr().out
    assert len(ours(api, two_faults)) == 4


def test_cleanup_removes_every_object_of_ours_and_nothing_else(api, two_faults, capsys):
    assert cleanup(["--namespace", two_faults]) == 0
    assert "removed 4 object(s)" in capsys.readouterr().out
    assert ours(api, two_faults) == []
    assert names(client.NetworkingV1Api(api).list_namespaced_network_policy(two_faults)) == ["theirs"]
    assert cleanup(["--namespace", two_faults]) == 0, "nothing left to remove is success"
