"""The Gateway layout's objects and settings (pure), and the provisioner manifest's split."""

from __future__ import annotations

import pytest

from chaoscontour_sandbox import gateway, workloads
from chaoscontour_sandbox.deploy import SandboxError

PROVISIONER = """
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: httpproxies.projectcontour.io}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gateways.gateway.networking.k8s.io}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: xlistenersets.gateway.networking.x-k8s.io}
---
apiVersion: v1
kind: Namespace
metadata: {name: projectcontour}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: contour-gateway-provisioner, namespace: projectcontour}
"""


def test_gateway_apis_crds_are_installed_and_contours_own_left_to_the_control_plane() -> None:
    crds, rest = gateway.provisioner_objects(PROVISIONER)
    assert [c["metadata"]["name"] for c in crds] == [
        "gateways.gateway.networking.k8s.io",
        "xlistenersets.gateway.networking.x-k8s.io",
    ]
    assert [(o["kind"], o["metadata"]["name"]) for o in rest] == [
        ("Namespace", "projectcontour"),
        ("Deployment", "contour-gateway-provisioner"),
    ]


def test_a_provisioner_manifest_of_another_shape_is_refused() -> None:
    with pytest.raises(SandboxError, match=r"kinds the sandbox does not expect .*'Job'"):
        gateway.provisioner_objects(PROVISIONER + "---\napiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\n")
    without_deployment = PROVISIONER.rsplit("---", 1)[0]
    with pytest.raises(SandboxError, match="no provisioner Deployment"):
        gateway.provisioner_objects(without_deployment)


def test_the_route_attaches_to_the_gateway_of_the_class_the_provisioner_serves() -> None:
    objects = {o["kind"]: o for o in gateway.gateway_objects()}
    assert objects["GatewayClass"]["spec"]["controllerName"] == "projectcontour.io/gateway-controller"
    assert objects["Gateway"]["spec"]["gatewayClassName"] == objects["GatewayClass"]["metadata"]["name"]
    [parent] = objects["HTTPRoute"]["spec"]["parentRefs"]
    assert f"{parent['namespace']}/{parent['name']}" == gateway.GATEWAY
    assert objects["HTTPRoute"]["metadata"]["namespace"] == workloads.DEMO_NAMESPACE
    for obj in objects.values():
        assert workloads.api_path(obj).endswith("/" + obj["metadata"]["name"])


def test_the_class_asks_for_two_envoys_so_one_can_restart_while_the_other_serves() -> None:
    objects = {o["kind"]: o for o in gateway.gateway_objects()}
    ref = objects["GatewayClass"]["spec"]["parametersRef"]
    params = objects["ContourDeployment"]
    assert (ref["kind"], ref["name"], ref["namespace"]) == ("ContourDeployment", params["metadata"]["name"], "gateway")
    envoy = params["spec"]["envoy"]
    assert envoy["workloadType"] == "Deployment" and envoy["deployment"]["replicas"] == 2
    assert envoy["networkPublishing"]["type"] == "ClusterIPService"


def test_the_gateway_settings_name_the_provisioned_contour_envoy_and_route() -> None:
    base = {"KUBECONFIG": "/k", "CONTOUR_NAMESPACE": "projectcontour", "PROMETHEUS_URL": "http://127.0.0.1:1"}
    base["ROUTE_HTTPPROXY"] = "echo"
    settings = gateway.gateway_settings(base, "10.217.0.12")
    assert settings["KUBECONFIG"] == "/k" and settings["PROMETHEUS_URL"] == "http://127.0.0.1:1"
    assert settings["CONTOUR_GATEWAY"] == "gateway/contour"
    assert settings["CONTOUR_NAMESPACE"] == "gateway"
    assert settings["CONTOUR_SELECTOR"] == "app=contour-contour"
    assert settings["ENVOY_SELECTOR"] == "app=envoy-contour"
    assert settings["CONTOUR_LEASE"] == "leader-elect-contour"
    assert settings["ENVOY_URL"] == "http://10.217.0.12:8080/"
    assert settings["ENVOY_STATS_URL"] == "http://10.217.0.12:8002/stats"
    assert settings["ENVOY_LISTENER_PREFIXES"] == "http-80"
    assert settings["CONTOUR_METRICS_SELECTOR"] == 'container="contour",namespace="gateway"'
    assert settings["ROUTE_HTTPPROXY"] == "" and settings["ROUTE_HTTPROUTE"] == "echo"
    assert settings["CONTOUR_SERVICE"] == "contour-contour"
