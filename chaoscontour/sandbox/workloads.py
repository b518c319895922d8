"""The objects ``chaoscontour sandbox up`` applies: Contour, Envoy and a backend behind an HTTPProxy.

Written for the sandbox (not Contour's example manifests), as a cluster operator would deploy Contour:

- namespace ``projectcontour``; ServiceAccount ``contour`` with least-privilege RBAC for ``contour serve``: read
  what it builds its configuration from, write the status of what it owns, its leader-election Lease, Events;
- Deployment ``contour`` (2 replicas, ``app=contour``) running ``contour serve --incluster --insecure`` with the
  stock probes: liveness ``httpGet /healthz :8000`` with the Kubernetes defaults (every 10 s, 3 failures), which
  answers 503 when the API server is gone, and readiness ``tcpSocket :8001`` (xDS); Service ``contour`` on 8001;
- Deployment ``envoy`` (1 replica, ``app=envoy``): an init container writes the bootstrap with
  ``contour bootstrap`` against the ``contour`` Service's ClusterIP, then Envoy runs with
  ``--service-cluster projectcontour --service-node <pod>``; a Deployment rather than the usual DaemonSet
  because no scheduler runs (DaemonSet pods are placed by the scheduler through node affinity);
- a static PersistentVolume backed by a directory of the sandbox (``hostPath``), for one claim without a
  StorageClass such as the game day's ``chaoscontour-journals``: no provisioner runs, and kube-controller-manager's
  PersistentVolume controller binds a claim to a matching static volume as in a cluster;
- namespace ``demo``: Deployment ``echo`` (2 replicas of :mod:`chaoscontour.sandbox.echo`), Service ``echo`` and
  the HTTPProxy ``echo`` with ``virtualhost.fqdn: echo.sandbox.local``.

Every pod template sets ``spec.nodeName`` to the sandbox node: pods with a node name bypass scheduling. Images are
named without a registry host; the node agent maps them to local programs by repository path.
"""

from __future__ import annotations

from typing import Any

from chaoscontour.sandbox import versions

__all__ = [
    "CONTOUR_NAMESPACE",
    "DEMO_NAMESPACE",
    "ECHO_FQDN",
    "CONTOUR_SELECTOR",
    "ENVOY_SELECTOR",
    "LEASE_NAME",
    "contour_objects",
    "envoy_objects",
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
CONTOUR_IMAGE = f"projectcontour/contour:v{versions.CONTOUR}"
ENVOY_IMAGE = f"envoyproxy/envoy:v{versions.ENVOY}"
ECHO_IMAGE = "chaoscontour/echo:latest"
MANAGED_BY = {"app.kubernetes.io/managed-by": "chaoscontour-sandbox"}
READ = ["get", "list", "watch"]
WRITE_STATUS = ["create", "get", "update", "patch"]


def _meta(name: str, namespace: str | None = None, **labels: str) -> Obj:
    meta: Obj = {"name": name, "labels": {**MANAGED_BY, **labels}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _field_env(name: str, path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


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


def contour_objects(node: str) -> list[Obj]:
    """Namespace, ServiceAccount, RBAC, Deployment and Service of Contour."""
    rules = [
        {"apiGroups": [""], "resources": ["configmaps", "namespaces", "secrets", "services"], "verbs": READ},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": READ},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"], "verbs": READ},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"], "verbs": WRITE_STATUS},
        {
            "apiGroups": ["projectcontour.io"],
            "resources": [
                "contourconfigurations",
                "extensionservices",
                "httpproxies",
                "tlscertificatedelegations",
            ],
            "verbs": READ,
        },
        {
            "apiGroups": ["projectcontour.io"],
            "resources": ["contourconfigurations/status", "extensionservices/status", "httpproxies/status"],
            "verbs": WRITE_STATUS,
        },
        # Contour asks the API server whether the Gateway API is installed and watches it if so.
        {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["*"], "verbs": READ},
        {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["*/status"], "verbs": WRITE_STATUS},
    ]
    lease_rules = [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create", "get", "update"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
    ]
    labels = {"app": "contour"}
    container = {
        "name": "contour",
        "image": CONTOUR_IMAGE,
        "command": ["contour"],
        "args": ["serve", "--incluster", "--xds-address=0.0.0.0", "--xds-port=8001", "--insecure"],
        "ports": [
            {"name": "xds", "containerPort": 8001, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 8000, "protocol": "TCP"},
            {"name": "debug", "containerPort": 6060, "protocol": "TCP"},
        ],
        "env": [_field_env("CONTOUR_NAMESPACE", "metadata.namespace"), _field_env("POD_NAME", "metadata.name")],
        # As in Contour's own manifest: /healthz fails when the API server does not answer, so the kubelet
        # restarts every replica about 30 s into an API server outage (CONTOUR-FACTS.md).
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8000}},
        "readinessProbe": {"tcpSocket": {"port": 8001}, "periodSeconds": 5},
    }
    pod_spec = {
        "nodeName": node,
        "serviceAccountName": "contour",
        "terminationGracePeriodSeconds": 10,
        "containers": [container],
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(CONTOUR_NAMESPACE)},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta("contour", CONTOUR_NAMESPACE)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta("chaoscontour-sandbox-contour"),
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta("chaoscontour-sandbox-contour"),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "chaoscontour-sandbox-contour",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "contour", "namespace": CONTOUR_NAMESPACE}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta("contour-leader-election", CONTOUR_NAMESPACE),
            "rules": lease_rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta("contour-leader-election", CONTOUR_NAMESPACE),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "contour-leader-election"},
            "subjects": [{"kind": "ServiceAccount", "name": "contour", "namespace": CONTOUR_NAMESPACE}],
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta("contour", CONTOUR_NAMESPACE),
            "spec": {
                "selector": labels,
                "ports": [{"name": "xds", "port": 8001, "targetPort": 8001, "protocol": "TCP"}],
            },
        },
        _deployment("contour", CONTOUR_NAMESPACE, 2, labels, pod_spec),
    ]


def envoy_objects(node: str, contour_cluster_ip: str) -> list[Obj]:
    """The Envoy Deployment, bootstrapped against Contour's Service at ``contour_cluster_ip``:8001."""
    volumes = [{"name": "envoy-config", "emptyDir": {}}, {"name": "envoy-admin", "emptyDir": {}}]
    mounts = [{"name": "envoy-config", "mountPath": "/config"}, {"name": "envoy-admin", "mountPath": "/admin"}]
    init = {
        "name": "envoy-initconfig",
        "image": CONTOUR_IMAGE,
        "command": ["contour"],
        "args": [
            "bootstrap",
            "/config/envoy.json",
            f"--xds-address={contour_cluster_ip}",
            "--xds-port=8001",
            "--admin-address=/admin/admin.sock",
        ],
        "env": [_field_env("CONTOUR_NAMESPACE", "metadata.namespace")],
        "volumeMounts": mounts,
    }
    envoy = {
        "name": "envoy",
        "image": ENVOY_IMAGE,
        "command": ["envoy"],
        "args": [
            "-c",
            "/config/envoy.json",
            "--service-cluster",
            "$(CONTOUR_NAMESPACE)",
            "--service-node",
            "$(ENVOY_POD_NAME)",
            "--log-level",
            "info",
        ],
        "env": [
            _field_env("CONTOUR_NAMESPACE", "metadata.namespace"),
            _field_env("ENVOY_POD_NAME", "metadata.name"),
        ],
        "ports": [
            {"name": "http", "containerPort": 8080, "protocol": "TCP"},
            {"name": "https", "containerPort": 8443, "protocol": "TCP"},
            {"name": "stats", "containerPort": 8002, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8002}, "periodSeconds": 3},
        "volumeMounts": mounts,
    }
    pod_spec = {
        "nodeName": node,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 10,
        "initContainers": [init],
        "containers": [envoy],
        "volumes": volumes,
    }
    return [_deployment("envoy", CONTOUR_NAMESPACE, 1, {"app": "envoy"}, pod_spec)]


def demo_objects(node: str) -> list[Obj]:
    """The backend: namespace ``demo``, Deployment and Service ``echo``, and the HTTPProxy that routes to it."""
    labels = {"app": "echo"}
    pod_spec = {
        "nodeName": node,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 5,
        "containers": [
            {
                "name": "echo",
                "image": ECHO_IMAGE,
                "args": ["--port=8080"],
                "env": [_field_env("POD_NAME", "metadata.name")],
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
}


def api_path(obj: Obj) -> str:
    """The REST path of ``obj`` (name included), for a server-side apply."""
    group_version = obj["apiVersion"]
    base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
    meta = obj["metadata"]
    scope = f"/namespaces/{meta['namespace']}" if meta.get("namespace") else ""
    return f"{base}{scope}/{_PLURALS[obj['kind']]}/{meta['name']}"
