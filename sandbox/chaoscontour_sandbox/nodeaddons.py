"""What the real node runs as pods of its own: the NetworkPolicy engine, kube-network-policies.

Written here as objects, not copied from upstream's ``install.yaml``: the same RBAC (list and watch pods,
namespaces and NetworkPolicies), and a DaemonSet run as kind and upstream run it: on the host network, privileged
with ``NET_ADMIN`` (it installs an nftables table and reads an NFQUEUE), its node name from the downward API (it
enforces only the pods of that node). It reads only the in-cluster configuration, so it must run as a pod.

Upstream also mounts the NRI socket and ``/var/run/netns`` (with ``HostToContainer`` propagation); both serve only
its NRI path (``pkg/networkpolicy/nri.go`` at v0.8.0 reads a pod's addresses from its network namespace).
containerd 1.6 has no NRI, the engine falls back to the API server's pod addresses without it, and on a host whose
``/`` is a private mount (this one: no systemd) the propagation makes containerd refuse the container ("is mounted
on / but it is not a shared or slave mount"), so both are left out rather than the host's mounts changed.
"""

from __future__ import annotations

from typing import Any

from chaoscontour_sandbox import nodeimages

__all__ = ["NETPOL_LABELS", "NETPOL_NAME", "NETPOL_NAMESPACE", "NFQUEUE_ID", "network_policy_engine"]

NETPOL_NAME = "kube-network-policies"
NETPOL_NAMESPACE = "kube-system"
NETPOL_LABELS = {"app": NETPOL_NAME}
# Upstream's install.yaml uses queue 98, kind's kindnet 101: any number no other program on the host reads.
NFQUEUE_ID = 98


def network_policy_engine(image: str = nodeimages.NETPOL_IMAGE) -> list[dict[str, Any]]:
    """ServiceAccount, ClusterRole, ClusterRoleBinding and DaemonSet of the engine, in apply order."""
    meta = {"name": NETPOL_NAME, "namespace": NETPOL_NAMESPACE}
    rules = [
        {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["list", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list", "watch"]},
    ]
    container = {
        "name": NETPOL_NAME,
        "image": image,
        "imagePullPolicy": "Never",
        "args": [
            "/bin/netpol",
            "--hostname-override=$(MY_NODE_NAME)",
            "--v=2",
            f"--nfqueue-id={NFQUEUE_ID}",
        ],
        "env": [{"name": "MY_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        "securityContext": {"privileged": True, "capabilities": {"add": ["NET_ADMIN"]}},
        "resources": {"requests": {"cpu": "100m", "memory": "50Mi"}},
    }
    daemonset = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {**meta, "labels": dict(NETPOL_LABELS)},
        "spec": {
            "selector": {"matchLabels": dict(NETPOL_LABELS)},
            "template": {
                "metadata": {"labels": dict(NETPOL_LABELS)},
                "spec": {
                    "hostNetwork": True,
                    "serviceAccountName": NETPOL_NAME,
                    "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [container],
                },
            },
        },
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": NETPOL_NAME},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": NETPOL_NAME},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NETPOL_NAME},
            "subjects": [{"kind": "ServiceAccount", **meta}],
        },
        daemonset,
    ]
