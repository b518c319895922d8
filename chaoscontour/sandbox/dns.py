"""Cluster DNS for the sandbox, as a cluster runs it: CoreDNS behind Service ``kube-system/kube-dns`` (pure, no I/O).

Two halves, both translations from objects to objects:

- :func:`coredns_objects`: what kubeadm deploys for cluster DNS, written here (not copied): ServiceAccount
  ``coredns``, ClusterRole and ClusterRoleBinding ``system:coredns`` with what the ``kubernetes`` plugin reads
  (list/watch of EndpointSlices, Services, Pods and Namespaces), ConfigMap ``coredns`` with the Corefile, Deployment
  ``coredns`` (image ``coredns/coredns``, which the node agent maps to the pinned ``coredns`` binary), and Service
  ``kube-dns`` with the fixed ClusterIP :data:`CLUSTER_DNS_IP` on 53/UDP, 53/TCP and 9153/TCP (metrics).
- :func:`resolv_conf`: each pod's ``/etc/resolv.conf`` as the kubelet writes it for the pod's ``dnsPolicy``
  (``pkg/kubelet/network/dns/dns.go``): ``ClusterFirst`` (the default) searches ``<ns>.svc.<domain>``,
  ``svc.<domain>`` and ``<domain>`` through the cluster DNS with ``ndots:5``; ``Default`` is the node's own
  resolv.conf; ``None`` only the pod's ``dnsConfig``, which the other policies merge in too. A ``hostNetwork``
  pod keeps the node's unless its policy is ``ClusterFirstWithHostNet``.

What differs from kubeadm's Corefile, and why: no ``forward . /etc/resolv.conf`` -- nothing is routed or masqueraded
from the sandbox's bridge to the outside, so the host's resolver is unreachable from the pods and a name outside
``cluster.local`` fails at once (SERVFAIL) instead of after the resolver's timeouts; no ``loop`` (it detects
forwarding loops, and nothing is forwarded); no ``reload`` (the node agent writes ConfigMap volumes once, so a
changed Corefile would never reach the file it watches). One replica rather than kubeadm's two: one node.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "CLUSTER_DNS_IP",
    "CLUSTER_DOMAIN",
    "COREDNS_IMAGE",
    "COREDNS_SELECTOR",
    "DNS_POLICIES",
    "corefile",
    "coredns_objects",
    "resolv_conf",
]

Obj = dict[str, Any]

NAMESPACE = "kube-system"
# Inside the sandbox's service CIDR (10.0.0.0/24), in the low band that kube-apiserver keeps for fixed ClusterIPs
# (dynamic allocation prefers the rest), as kubeadm's 10.96.0.10 is in 10.96.0.0/12.
CLUSTER_DNS_IP = "10.0.0.10"
CLUSTER_DOMAIN = "cluster.local"
COREDNS_IMAGE = "coredns/coredns:1.15.0"
COREDNS_SELECTOR = "k8s-app=kube-dns"
_LABELS = {"k8s-app": "kube-dns"}
DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
# The kubelet's limits (pkg/apis/core/validation: MaxDNSNameservers, MaxDNSSearchPaths).
MAX_NAMESERVERS = 3
MAX_SEARCH_PATHS = 32


def corefile(cluster_domain: str = CLUSTER_DOMAIN) -> str:
    """The Corefile: kubeadm's, without ``forward``, ``loop`` and ``reload`` (see the module's docstring)."""
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


def _node_resolv(text: str) -> tuple[list[str], list[str], list[str]]:
    """Nameservers, search domains and options of a resolv.conf (the last ``search`` line wins, as in glibc)."""
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split(";", 1)[0].split()
        if not words:
            continue
        if words[0] == "nameserver" and len(words) > 1:
            nameservers.append(words[1])
        elif words[0] in ("search", "domain"):
            searches = words[1:]
        elif words[0] == "options":
            options += words[1:]
    return nameservers, searches, options


def _merge_options(base: Sequence[str], extra: Sequence[Mapping[str, Any]]) -> list[str]:
    """``dnsConfig.options`` over ``base``: an option of the same name replaces the earlier one."""
    merged: dict[str, str] = {}
    for text in base:
        merged[text.split(":", 1)[0]] = text
    for option in extra:
        name = str(option.get("name") or "")
        if not name:
            raise ValueError("a dnsConfig option needs a name")
        value = option.get("value")
        merged[name] = f"{name}:{value}" if value not in (None, "") else name
    return list(merged.values())


def resolv_conf(
    pod: Mapping[str, Any],
    *,
    cluster_dns: str = CLUSTER_DNS_IP,
    cluster_domain: str = CLUSTER_DOMAIN,
    node_resolv_conf: str = "",
) -> str:
    """The ``/etc/resolv.conf`` the kubelet writes for ``pod``, given the node's own resolv.conf text.

    Raises :class:`ValueError` for a ``dnsPolicy`` Kubernetes does not have, or ``None`` without nameservers.
    """
    spec = pod.get("spec") or {}
    namespace = (pod.get("metadata") or {}).get("namespace") or "default"
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy not in DNS_POLICIES:
        raise ValueError(f"dnsPolicy {policy!r} is not one of {', '.join(DNS_POLICIES)}")
    host_network = bool(spec.get("hostNetwork"))
    # A host-network pod on ClusterFirst gets the node's resolver (the kubelet's rule); WithHostNet opts in.
    cluster_first = policy == "ClusterFirstWithHostNet" or (policy == "ClusterFirst" and not host_network)
    if cluster_first:
        nameservers = [cluster_dns]
        searches = [f"{namespace}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain]
        options = ["ndots:5"]
    elif policy == "None":
        nameservers, searches, options = [], [], []
    else:
        nameservers, searches, options = _node_resolv(node_resolv_conf)
    config = spec.get("dnsConfig") or {}
    nameservers += [str(n) for n in config.get("nameservers") or [] if str(n) not in nameservers]
    searches += [str(s) for s in config.get("searches") or [] if str(s) not in searches]
    options = _merge_options(options, config.get("options") or [])
    if policy == "None" and not nameservers:
        raise ValueError("dnsPolicy None needs dnsConfig.nameservers (the API server requires them too)")
    lines = [f"search {' '.join(searches[:MAX_SEARCH_PATHS])}"] if searches else []
    lines += [f"nameserver {n}" for n in nameservers[:MAX_NAMESERVERS]]
    lines += [f"options {' '.join(options)}"] if options else []
    return "\n".join(lines) + "\n"
