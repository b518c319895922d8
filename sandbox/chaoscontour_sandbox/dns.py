"""Cluster DNS for the sandbox, as a cluster runs it: CoreDNS behind Service ``kube-system/kube-dns`` (pure, no I/O).

:func:`coredns_objects` is what kubeadm deploys for cluster DNS, written here (not copied): ServiceAccount
``coredns``, ClusterRole and ClusterRoleBinding ``system:coredns`` with what the ``kubernetes`` plugin reads
(list/watch of EndpointSlices, Services, Pods and Namespaces), ConfigMap ``coredns`` with the Corefile, Deployment
``coredns`` (the pinned CoreDNS, :data:`chaoscontour_sandbox.nodeimages.COREDNS_IMAGE`), and Service ``kube-dns``
with the node's fixed cluster DNS address on 53/UDP, 53/TCP and 9153/TCP (metrics). The kubelet points every
``ClusterFirst`` pod's resolv.conf at it.

What differs from kubeadm's Corefile, and why: no ``forward . /etc/resolv.conf`` and no ``loop`` -- the sandbox
resolves only cluster names, so a name outside ``cluster.local`` fails at once (SERVFAIL) instead of after a
resolver's timeouts on a host that may have no upstream DNS. One replica rather than kubeadm's two: one node.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from chaoscontour_sandbox.nodeimages import COREDNS_IMAGE

__all__ = [
    "CLUSTER_DNS_IP",
    "CLUSTER_DOMAIN",
    "COREDNS_IMAGE",
    "COREDNS_PLUGINS",
    "COREDNS_SELECTOR",
    "corefile",
    "corefile_plugins",
    "coredns_objects",
]

Obj = dict[str, Any]

NAMESPACE = "kube-system"
# Inside the sandbox's service CIDR (10.0.0.0/24), in the low band that kube-apiserver keeps for fixed ClusterIPs
# (dynamic allocation prefers the rest), as kubeadm's 10.96.0.10 is in 10.96.0.0/12.
CLUSTER_DNS_IP = "10.0.0.10"
CLUSTER_DOMAIN = "cluster.local"
COREDNS_SELECTOR = "k8s-app=kube-dns"
_LABELS = {"k8s-app": "kube-dns"}


def corefile(cluster_domain: str = CLUSTER_DOMAIN) -> str:
    """The Corefile: kubeadm's, without ``forward`` and ``loop`` (see the module's docstring)."""
    return (
        ".:53 {\n"
        "    errors\n"
        "    health {\n"
        "       lameduck 5s\n"
        "    }\n"
        "    ready\n"
        f"    kubernetes {cluster_domain} in-addr.arpa ip6.arpa {{\n"
        "       pods insecure\n"
        "       fallthrough in-addr.arpa ip6.arpa\n"
        "       ttl 30\n"
        "    }\n"
        "    prometheus :9153\n"
        "    cache 30\n"
        "    loadbalance\n"
        "}\n"
    )


def corefile_plugins(text: str) -> list[str]:
    """The plugins a Corefile names: the first word of each line directly inside a server block, in order."""
    names: list[str] = []
    depth = 0
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if depth == 1 and line and not line.startswith("}"):
            names.append(line.split()[0])
        depth += line.count("{") - line.count("}")
    return names


# The plugins :func:`corefile` names, read from it: the only ones the sandbox's CoreDNS is built with
# (:mod:`chaoscontour_sandbox.corednsbuild`), so the Corefile and the build cannot drift apart.
COREDNS_PLUGINS = tuple(corefile_plugins(corefile()))


def coredns_objects(
    cluster_dns_ip: str = CLUSTER_DNS_IP, cluster_domain: str = CLUSTER_DOMAIN, image: str = COREDNS_IMAGE
) -> list[Obj]:
    """ServiceAccount, ClusterRole, ClusterRoleBinding, ConfigMap, Deployment and Service of the cluster DNS."""
    ipaddress.ip_address(cluster_dns_ip)  # a clear ValueError rather than the API server's
    meta = {"namespace": NAMESPACE, "labels": dict(_LABELS)}
    probe_port = {"health": 8080, "ready": 8181}
    container: Obj = {
        "name": "coredns",
        "image": image,
        "args": ["-conf", "/etc/coredns/Corefile"],
        "resources": {"limits": {"memory": "170Mi"}, "requests": {"cpu": "100m", "memory": "70Mi"}},
        "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": True}],
        "ports": [
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
        ],
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": probe_port["health"], "scheme": "HTTP"},
            "initialDelaySeconds": 60,
            "timeoutSeconds": 5,
            "successThreshold": 1,
            "failureThreshold": 5,
        },
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": probe_port["ready"], "scheme": "HTTP"},
            "periodSeconds": 1,
        },
    }
    pod_spec: Obj = {
        "serviceAccountName": "coredns",
        "priorityClassName": "system-cluster-critical",
        # CoreDNS must not resolve through itself: kubeadm gives it the node's resolver (it forwards nothing here).
        "dnsPolicy": "Default",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
        "containers": [container],
        "volumes": [
            {
                "name": "config-volume",
                "configMap": {"name": "coredns", "items": [{"key": "Corefile", "path": "Corefile"}]},
            }
        ],
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", **meta}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns", "labels": dict(_LABELS)},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns", "labels": dict(_LABELS)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", **meta},
            "data": {"Corefile": corefile(cluster_domain)},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", **meta},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": dict(_LABELS)},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "template": {"metadata": {"labels": dict(_LABELS)}, "spec": pod_spec},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kube-dns",
                **meta,
                "labels": {**_LABELS, "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"},
                "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"},
            },
            "spec": {
                "selector": dict(_LABELS),
                "clusterIP": cluster_dns_ip,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
                ],
            },
        },
    ]
