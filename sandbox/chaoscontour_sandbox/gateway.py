"""Contour provisioned through Gateway API, beside the release manifest: ``chaoscontour-sandbox up --gateway``.

Contour's documentation leads new users here: the Gateway provisioner (``examples/render/contour-gateway-provisioner
.yaml`` of the pinned Contour module, read from the Go module cache; it carries Gateway API's CRDs) watches Gateways
of its GatewayClass and creates, in each Gateway's namespace, a Contour Deployment ``contour-<gateway>`` (labels
``app=contour-<gateway>``, Lease ``leader-elect-<gateway>``) and Envoy ``envoy-<gateway>`` (``app=envoy-<gateway>``)
with its Services and Secrets. Envoy names its HTTP listener after the Gateway's listener (``http-80``, its stats
prefix too) and listens on the port plus 8000.

The sandbox applies the provisioner as written, then a GatewayClass whose parameters (a ContourDeployment) ask for
Envoy as a Deployment of two replicas behind a ClusterIP Service (the sandbox has one node and no load balancer; two
Envoys let ``envoy-restart-during-outage`` restart one while the other keeps serving), the Gateway
``gateway/contour`` (one HTTP listener on 80, routes from every namespace) and the HTTPRoute ``demo/echo``
(``echo-gw.sandbox.local`` to the demo backend). It waits until the Gateway is Programmed and the route answers
through both Envoys, and writes ``settings-gateway.env``: the release-manifest settings with this layout's Contour,
Envoy and route.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from chaoscontour_sandbox import applier, binaries, crds, deploy, workloads
from chaoscontour_sandbox.deploy import SandboxError

__all__ = [
    "GATEWAY",
    "PROVISIONER",
    "SETTINGS",
    "deploy_gateway",
    "gateway_objects",
    "gateway_settings",
    "provisioner_objects",
]

PROVISIONER = Path("examples") / "render" / "contour-gateway-provisioner.yaml"
NAMESPACE = "gateway"
NAME = "contour"
GATEWAY = f"{NAMESPACE}/{NAME}"
CLASS = "contour"
CONTROLLER = "projectcontour.io/gateway-controller"  # the provisioner's default --gateway-controller-name
PARAMETERS = "contour-params"  # the GatewayClass's ContourDeployment, in NAMESPACE
ENVOY_REPLICAS = 2
ROUTE_FQDN = "echo-gw.sandbox.local"
LISTENER_PREFIX = "http-80"  # Contour's name for the Envoy listener of the Gateway's HTTP listener on port 80
SETTINGS = "settings-gateway"  # .env and .json beside the release manifest's settings
GATEWAY_API = "gateway.networking"  # the CRD groups of Gateway API (gateway.networking.k8s.io, ...x-k8s.io)
_KINDS = frozenset(
    {"CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole", "Role", "RoleBinding"}
    | {"ClusterRoleBinding", "Deployment"}
)

Obj = dict[str, Any]
Say = Callable[[str], None]


def provisioner_objects(text: str, source: str = str(PROVISIONER)) -> tuple[list[Obj], list[Obj]]:
    """Gateway API's CRDs and the provisioner's other objects, from the manifest ``text``. Contour's own CRDs in it
    are left out (the control plane installed the same module's); a kind the sandbox does not expect is refused."""
    documents = [d for d in yaml.safe_load_all(text) if d]
    unexpected = sorted({str(d.get("kind")) for d in documents} - _KINDS)
    if unexpected:
        raise SandboxError(f"{source}: kinds the sandbox does not expect from the provisioner: {unexpected}")
    gateway_crds = [
        d for d in documents if d["kind"] == "CustomResourceDefinition" and GATEWAY_API in d["metadata"]["name"]
    ]
    rest = [d for d in documents if d["kind"] != "CustomResourceDefinition"]
    if not gateway_crds or not any(d["kind"] == "Deployment" for d in rest):
        raise SandboxError(f"{source}: no Gateway API CRDs or no provisioner Deployment in it")
    return gateway_crds, rest


def gateway_objects() -> list[Obj]:
    """The GatewayClass, the Gateway and its namespace, and the HTTPRoute to the demo backend."""
    gateway_api = "gateway.networking.k8s.io/v1"
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": workloads.MANAGED_BY}},
        {
            "apiVersion": "projectcontour.io/v1alpha1",
            "kind": "ContourDeployment",
            "metadata": {"name": PARAMETERS, "namespace": NAMESPACE},
            "spec": {
                "envoy": {
                    "workloadType": "Deployment",
                    "deployment": {"replicas": ENVOY_REPLICAS},
                    "networkPublishing": {"type": "ClusterIPService"},
                }
            },
        },
        {
            "apiVersion": gateway_api,
            "kind": "GatewayClass",
            "metadata": {"name": CLASS},
            "spec": {
                "controllerName": CONTROLLER,
                "parametersRef": {
                    "group": "projectcontour.io",
                    "kind": "ContourDeployment",
                    "name": PARAMETERS,
                    "namespace": NAMESPACE,
                },
            },
        },
        {
            "apiVersion": gateway_api,
            "kind": "Gateway",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {
                "gatewayClassName": CLASS,
                "listeners": [
                    {"name": "http", "protocol": "HTTP", "port": 80, "allowedRoutes": {"namespaces": {"from": "All"}}}
                ],
            },
        },
        {
            "apiVersion": gateway_api,
            "kind": "HTTPRoute",
            "metadata": {"name": "echo", "namespace": workloads.DEMO_NAMESPACE},
            "spec": {
                "parentRefs": [{"name": NAME, "namespace": NAMESPACE}],
                "hostnames": [ROUTE_FQDN],
                "rules": [{"backendRefs": [{"name": "echo", "port": 80}]}],
            },
        },
    ]


def gateway_settings(base: dict[str, str], envoy_ip: str) -> dict[str, str]:
    """``base`` (the release manifest's settings) with this layout's Contour, Envoy and route instead. The
    HTTPProxy's key is emptied, not dropped: ``make demo GATEWAY=1`` sources this file over ``settings.env``, and a
    route probe given both an HTTPProxy and an HTTPRoute refuses."""
    return base | {
        "ROUTE_HTTPPROXY": "",
        "CONTOUR_GATEWAY": GATEWAY,
        "CONTOUR_NAMESPACE": NAMESPACE,
        "CONTOUR_SELECTOR": f"app=contour-{NAME}",
        "CONTOUR_SERVICE": f"contour-{NAME}",
        "ENVOY_SELECTOR": f"app=envoy-{NAME}",
        "ENVOY_NAMESPACE": NAMESPACE,
        "CONTOUR_LEASE": f"leader-elect-{NAME}",
        "ENVOY_URL": f"http://{envoy_ip}:8080/",
        "ENVOY_HOST": ROUTE_FQDN,
        "ENVOY_STATS_URL": f"http://{envoy_ip}:8002/stats",
        "ENVOY_LISTENER_PREFIXES": LISTENER_PREFIX,
        "CONTOUR_METRICS_SELECTOR": f'container="contour",namespace="{NAMESPACE}"',
        "ROUTE_NAMESPACE": workloads.DEMO_NAMESPACE,
        "ROUTE_HTTPROUTE": "echo",
    }


def deploy_gateway(api: Any, kubeconfig: Path, say: Say, check: Callable[[], None], timeout_s: float) -> str:
    """Install the provisioner and the Gateway; wait until the route answers through its Envoy; return Envoy's IP."""
    path = binaries.contour_module_dir() / PROVISIONER
    try:
        gateway_crds, provisioner = provisioner_objects(path.read_text(), source=str(path))
    except OSError as exc:
        raise SandboxError(f"cannot read Contour's Gateway provisioner manifest: {exc}") from exc
    began = time.monotonic()
    crds.install_crd_documents(kubeconfig, gateway_crds)
    deploy.apply_objects(api, provisioner)
    deploy.apply_objects(api, gateway_objects())
    say(f"gateway: {len(gateway_crds)} Gateway API CRDs and the provisioner from {path}; Gateway {GATEWAY} applied")
    gateway_path = f"/apis/gateway.networking.k8s.io/v1/namespaces/{NAMESPACE}/gateways/{NAME}"

    def programmed() -> bool:
        check()
        conditions = api.get(gateway_path).get("status", {}).get("conditions", [])
        return any(c.get("type") == "Programmed" and c.get("status") == "True" for c in conditions)

    deploy.wait_for(f"Gateway {GATEWAY} to be Programmed", timeout_s, programmed)

    def envoy_ips() -> list[str]:
        check()
        found = sorted(deploy.pods(api, NAMESPACE, f"app=envoy-{NAME}"), key=lambda p: p["metadata"]["name"])
        ips = [str(p["status"].get("podIP") or "") for p in found if deploy.pod_ready(p)]
        return ips if len(ips) == ENVOY_REPLICAS and all(ips) else []

    ips = deploy.wait_for(f"the {ENVOY_REPLICAS} Envoy pods of Gateway {GATEWAY} to be Ready", timeout_s, envoy_ips)
    for url in [f"http://{ip}:8080/" for ip in ips]:
        answers = partial(applier.route_answers, url, ROUTE_FQDN)
        deploy.wait_for(f"{url} (Host {ROUTE_FQDN}) to answer 200", timeout_s, answers)
    took = time.monotonic() - began
    say(f"gateway: Programmed; HTTPRoute demo/echo answers through envoy-{NAME} at {', '.join(ips)} ({took:.1f} s)")
    return str(ips[0])
