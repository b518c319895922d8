"""Reading a Gateway and what Contour's provisioner made for it (for ``chaoscontour gateway-env``).

Run with the operator's own credentials, like ``chaoscontour cleanup``, not the game day's ServiceAccount: it reads
a Gateway, and lists Deployments, DaemonSets, Services and Envoy pods in the Gateway's namespace.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client

from chaoscontour.domain.gateway_layout import GATEWAY_LABEL
from chaoscontour.domain.pods import pod_ready
from chaoscontour.edges.kube import Kube, call, list_pods, to_dict

__all__ = ["GatewayObjects", "envoy_pod_ip", "read_gateway_objects"]

GatewayObjects = tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]


def read_gateway_objects(k: Kube, namespace: str, name: str) -> GatewayObjects:
    """The Gateway, the Deployments and DaemonSets, and the Services labelled with its name in its namespace."""
    gateway: Any = call(
        f"read Gateway {namespace}/{name}",
        client.CustomObjectsApi(k.api).get_namespaced_custom_object,
        "gateway.networking.k8s.io",
        "v1",
        namespace,
        "gateways",
        name,
        not_found=(
            f"Gateway {namespace}/{name} does not exist (or Gateway API's CRDs are not installed): check the "
            "namespace and the name (kubectl get gateways -A)"
        ),
    )
    apps = client.AppsV1Api(k.api)
    selector = f"{GATEWAY_LABEL}={name}"
    workloads: list[dict[str, Any]] = []
    for kind, lister in (
        ("Deployment", apps.list_namespaced_deployment),
        ("DaemonSet", apps.list_namespaced_daemon_set),
    ):
        found = to_dict(
            k, call(f"list {kind}s {selector!r} in {namespace}", lister, namespace, label_selector=selector)
        )
        workloads += [dict(item, kind=kind) for item in found.get("items") or []]
    services = to_dict(
        k,
        call(
            f"list Services {selector!r} in {namespace}",
            client.CoreV1Api(k.api).list_namespaced_service,
            namespace,
            label_selector=selector,
        ),
    )
    return dict(gateway), workloads, list(services.get("items") or [])


def envoy_pod_ip(k: Kube, namespace: str, envoy_selector: str) -> str | None:
    """The address of a Ready Envoy pod of the layout (the first by name, not terminating), or ``None`` when none
    is Ready."""
    for pod in sorted(list_pods(k, namespace, envoy_selector), key=lambda p: str(p["metadata"]["name"])):
        if pod_ready(pod) and pod["status"].get("podIP"):
            return str(pod["status"]["podIP"])
    return None
