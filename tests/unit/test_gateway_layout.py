"""A Gateway's Contour and Envoy from the objects Contour's provisioner makes (domain/gateway_layout)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from chaoscontour.domain.gateway_layout import GatewayLayoutError, layout_of, parse_gateway_ref
from chaoscontour.domain.inputs import InvalidInput

LABELS = {"gateway.networking.k8s.io/gateway-name": "web"}
GATEWAY = {
    "metadata": {"namespace": "ingress", "name": "web"},
    "spec": {
        "gatewayClassName": "contour",
        "listeners": [
            {"name": "http", "protocol": "HTTP", "port": 80},
            {"name": "https", "protocol": "HTTPS", "port": 443},
            {"name": "tcp", "protocol": "TCP", "port": 5432},
        ],
    },
}


def workload(kind: str, name: str, app: str, containers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"name": name, "namespace": "ingress", "labels": LABELS},
        "spec": {"selector": {"matchLabels": {"app": app}}, "template": {"spec": {"containers": containers}}},
    }


CONTOUR = workload(
    "Deployment",
    "contour-web",
    "contour-web",
    [{"name": "contour", "args": ["serve", "--incluster", "--leader-election-resource-name=leader-elect-web"]}],
)
ENVOY = workload(
    "DaemonSet",
    "envoy-web",
    "envoy-web",
    [
        {"name": "shutdown-manager", "args": ["envoy", "shutdown-manager"]},
        {"name": "envoy", "ports": [{"name": "metrics", "containerPort": 8002}]},
    ],
)
SERVICES = [
    {
        "metadata": {"name": "contour-web"},
        "spec": {"selector": {"app": "contour-web"}, "ports": [{"name": "xds", "port": 8001, "targetPort": 8001}]},
    },
    {
        "metadata": {"name": "envoy-web"},
        "spec": {
            "selector": {"app": "envoy-web"},
            "ports": [{"name": "http-80", "port": 80, "targetPort": 8080}, {"name": "https-443", "targetPort": 8443}],
        },
    },
]


def test_the_layout_is_read_from_the_provisioners_objects() -> None:
    layout = layout_of(GATEWAY, [CONTOUR, ENVOY], SERVICES)
    assert layout.settings("10.1.2.3") == {
        "CONTOUR_GATEWAY": "ingress/web",
        "CONTOUR_NAMESPACE": "ingress",
        "CONTOUR_SELECTOR": "app=contour-web",
        "ENVOY_SELECTOR": "app=envoy-web",
        "ENVOY_NAMESPACE": "ingress",
        "CONTOUR_LEASE": "leader-elect-web",
        "CONTOUR_LEASE_NAMESPACE": "ingress",
        "ENVOY_LISTENER_PREFIXES": "http-80,https-443",
        "CONTOUR_METRICS_SELECTOR": 'container="contour",namespace="ingress"',
        "ENVOY_POD_PORT": "8080",
        "ENVOY_POD_STATS_PORT": "8002",
        "CONTOUR_SERVICE": "contour-web",
        "ENVOY_URL": "http://10.1.2.3:8080/",
        "ENVOY_STATS_URL": "http://10.1.2.3:8002/stats",
    }
    assert "ENVOY_URL" not in layout.settings(None)
    assert layout.settings("fd00::5")["ENVOY_STATS_URL"] == "http://[fd00::5]:8002/stats"


def test_the_lease_follows_the_contour_arguments_in_either_form() -> None:
    contour = copy.deepcopy(CONTOUR)
    contour["spec"]["template"]["spec"]["containers"][0]["args"] = [
        "serve",
        "--leader-election-resource-name",
        "custom",
        "--leader-election-resource-namespace=leases",
    ]
    layout = layout_of(GATEWAY, [contour, ENVOY], SERVICES)
    assert (layout.lease_name, layout.lease_namespace) == ("custom", "leases")


@pytest.mark.parametrize(
    ("workloads", "message"),
    [
        ([ENVOY], r"expected one Contour Deployment .* found 0 among: DaemonSet envoy-web"),
        ([CONTOUR], r"expected one Envoy DaemonSet or Deployment .* found 0 among: Deployment contour-web"),
        ([], r"found 0 among: none\. Is the Gateway's class served by Contour's Gateway provisioner"),
    ],
)
def test_what_is_missing_is_named(workloads: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(GatewayLayoutError, match=message):
        layout_of(GATEWAY, workloads, SERVICES)


def test_a_gateway_without_http_listeners_is_refused() -> None:
    tcp_only = copy.deepcopy(GATEWAY)
    tcp_only["spec"]["listeners"] = [{"name": "tcp", "protocol": "TCP", "port": 5432}]
    with pytest.raises(GatewayLayoutError, match="no HTTP or HTTPS listener"):
        layout_of(tcp_only, [CONTOUR, ENVOY], SERVICES)


@pytest.mark.parametrize("value", ["web", "/web", "ingress/", "Ingress/web", "ingress/web/x", 42, None, "a b/web"])
def test_a_gateway_reference_is_parsed_strictly(value: object) -> None:
    with pytest.raises(InvalidInput, match="NAMESPACE/NAME"):
        parse_gateway_ref(value)


def test_a_gateway_reference_is_split() -> None:
    assert parse_gateway_ref(" ingress/web.example ") == ("ingress", "web.example")
