"""What ``chaoscontour-sandbox up`` applies beside Contour's release manifest: the demo backend and a volume.

Contour and Envoy come from Contour's own release manifest (:mod:`chaoscontour_sandbox.release`); here, written for
the sandbox, are the names the experiments' defaults share with it and:

- namespace ``demo``: Deployment ``echo`` (2 replicas of Kubernetes' test server agnhost, ``netexec``: ``/hostname``
  answers the pod's name, ``/healthz`` and ``/echo`` as their names say), Service ``echo`` and the HTTPProxy
  ``echo`` with ``virtualhost.fqdn: echo.sandbox.local``;
- a static PersistentVolume backed by a directory of the sandbox (``hostPath``), for one claim without a
  StorageClass such as the game day's ``chaoscontour-journals``: no provisioner runs, and kube-controller-manager's
  PersistentVolume controller binds a claim to a matching static volume as in a cluster.
"""

from __future__ import annotations

from typing import Any

from chaoscontour_sandbox.nodeimages import AGNHOST_IMAGE

__all__ = [
    "CONTOUR_NAMESPACE",
    "DEMO_NAMESPACE",
    "ECHO_FQDN",
    "CONTOUR_SELECTOR",
    "ENVOY_SELECTOR",
    "LEASE_NAME",
    "demo_objects",
    "storage_objects",
    "api_path",
]

Obj = dict[str, Any]

CONTOUR_NAMESPACE = "projectcontour"
DEMO_NAMESPACE = "demo"
ECHO_FQDN = "echo.sandbox.local"
CONTOUR_SELECTOR = "app=contour"
ENVOY_SELECTOR = "app=envoy"
LEASE_NAME = "leader-elect"
MANAGED_BY = {"app.kubernetes.io/managed-by": "chaoscontour-sandbox"}


def _meta(name: str, namespace: str | None = None, **labels: str) -> Obj:
    meta: Obj = {"name": name, "labels": {**MANAGED_BY, **labels}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _deployment(name: str, namespace: str, replicas: int, labels: dict[str, str], pod_spec: Obj) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, namespace, **labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def demo_objects() -> list[Obj]:
    """The backend: namespace ``demo``, Deployment and Service ``echo``, and the HTTPProxy that routes to it."""
    labels = {"app": "echo"}
    pod_spec = {
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 5,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534},
        "containers": [
            {
                "name": "echo",
                "image": AGNHOST_IMAGE,
                "imagePullPolicy": "Never",
                "args": ["netexec", "--http-port=8080"],
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5},
            }
        ],
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(DEMO_NAMESPACE)},
        _deployment("echo", DEMO_NAMESPACE, 2, labels, pod_spec),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta("echo", DEMO_NAMESPACE),
            "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        },
        {
            "apiVersion": "projectcontour.io/v1",
            "kind": "HTTPProxy",
            "metadata": _meta("echo", DEMO_NAMESPACE),
            "spec": {
                "virtualhost": {"fqdn": ECHO_FQDN},
                "routes": [{"conditions": [{"prefix": "/"}], "services": [{"name": "echo", "port": 80}]}],
            },
        },
    ]


def storage_objects(directory: str, name: str = "sandbox-local-1", capacity: str = "1Gi") -> list[Obj]:
    """A static ``hostPath`` PersistentVolume at ``directory`` (no StorageClass, ``ReadWriteOnce``, ``Retain``)."""
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": _meta(name),
            "spec": {
                "capacity": {"storage": capacity},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": directory, "type": "DirectoryOrCreate"},
            },
        }
    ]


_PLURALS = {
    "Namespace": "namespaces",
    "ServiceAccount": "serviceaccounts",
    "Service": "services",
    "Deployment": "deployments",
    "DaemonSet": "daemonsets",
    "Secret": "secrets",
    "ClusterRole": "clusterroles",
    "ClusterRoleBinding": "clusterrolebindings",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "HTTPProxy": "httpproxies",
    "NetworkPolicy": "networkpolicies",
    "ConfigMap": "configmaps",
    "PersistentVolume": "persistentvolumes",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "CronJob": "cronjobs",
    "Job": "jobs",
    "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings",
    "GatewayClass": "gatewayclasses",
    "Gateway": "gateways",
    "HTTPRoute": "httproutes",
    "ContourDeployment": "contourdeployments",
}


def api_path(obj: Obj) -> str:
    """The REST path of ``obj`` (name included), for a server-side apply."""
    group_version = obj["apiVersion"]
    base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
    meta = obj["metadata"]
    scope = f"/namespaces/{meta['namespace']}" if meta.get("namespace") else ""
    return f"{base}{scope}/{_PLURALS[obj['kind']]}/{meta['name']}"
