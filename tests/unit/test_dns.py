"""Cluster DNS objects and each pod's resolv.conf, as the kubelet writes it (pure, no cluster)."""

from __future__ import annotations

from typing import Any

import pytest

from chaoscontour.sandbox import dns, podspec, proxy
from chaoscontour.sandbox.container import images

NODE_RESOLV = "# written by the host\nnameserver 10.255.255.53\nsearch corp.example\noptions edns0 timeout:2\n"


def pod(namespace: str = "shop", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": namespace}, "spec": spec}


def test_cluster_first_is_the_default_and_searches_the_pods_namespace_first() -> None:
    text = dns.resolv_conf(pod(), node_resolv_conf=NODE_RESOLV)
    assert text == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.0.0.10\noptions ndots:5\n"
    )
    assert dns.resolv_conf(pod(dnsPolicy="ClusterFirst"), node_resolv_conf=NODE_RESOLV) == text


def test_cluster_dns_and_domain_come_from_the_agents_flags() -> None:
    text = dns.resolv_conf(pod("a"), cluster_dns="10.96.0.10", cluster_domain="k8s.test")
    assert text.splitlines()[:2] == ["search a.svc.k8s.test svc.k8s.test k8s.test", "nameserver 10.96.0.10"]


def test_default_policy_and_host_network_pods_get_the_nodes_resolver() -> None:
    expected = "search corp.example\nnameserver 10.255.255.53\noptions edns0 timeout:2\n"
    assert dns.resolv_conf(pod(dnsPolicy="Default"), node_resolv_conf=NODE_RESOLV) == expected
    assert dns.resolv_conf(pod(hostNetwork=True), node_resolv_conf=NODE_RESOLV) == expected
    with_host_net = dns.resolv_conf(pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet"))
    assert "nameserver 10.0.0.10" in with_host_net


def test_dns_config_is_merged_in_and_none_uses_only_it() -> None:
    config = {
        "nameservers": ["192.0.2.53"],
        "searches": ["extra.test", "svc.cluster.local"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
    }
    merged = dns.resolv_conf(pod(dnsConfig=config))
    assert merged == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local extra.test\n"
        "nameserver 10.0.0.10\nnameserver 192.0.2.53\noptions ndots:2 edns0\n"
    )
    only = dns.resolv_conf(pod(dnsPolicy="None", dnsConfig=config), node_resolv_conf=NODE_RESOLV)
    assert only == "search extra.test svc.cluster.local\nnameserver 192.0.2.53\noptions ndots:2 edns0\n"


def test_policies_kubernetes_does_not_have_and_none_without_nameservers_are_refused() -> None:
    with pytest.raises(ValueError, match="dnsPolicy 'Cluster' is not one of"):
        dns.resolv_conf(pod(dnsPolicy="Cluster"))
    with pytest.raises(ValueError, match=r"needs dnsConfig\.nameservers"):
        dns.resolv_conf(pod(dnsPolicy="None"))


def test_at_most_three_nameservers_as_the_kubelet_keeps() -> None:
    config = {"nameservers": ["192.0.2.1", "192.0.2.2", "192.0.2.3"]}
    text = dns.resolv_conf(pod(dnsConfig=config))
    assert [line for line in text.splitlines() if line.startswith("nameserver")] == [
        "nameserver 10.0.0.10",
        "nameserver 192.0.2.1",
        "nameserver 192.0.2.2",
    ]


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {obj["kind"]: obj for obj in objects}


def test_coredns_objects_are_kubeadms_shape_with_a_fixed_cluster_ip() -> None:
    objects = by_kind(dns.coredns_objects())
    assert set(objects) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Service"}
    service = objects["Service"]
    assert (service["metadata"]["namespace"], service["metadata"]["name"]) == ("kube-system", "kube-dns")
    assert service["spec"]["clusterIP"] == dns.CLUSTER_DNS_IP
    assert {(p["port"], p["protocol"]) for p in service["spec"]["ports"]} == {(53, "UDP"), (53, "TCP"), (9153, "TCP")}
    read = {(g, r) for rule in objects["ClusterRole"]["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert {("discovery.k8s.io", "endpointslices"), ("", "services"), ("", "pods"), ("", "namespaces")} <= read
    assert all(rule["verbs"] == ["list", "watch"] for rule in objects["ClusterRole"]["rules"])
    subject = objects["ClusterRoleBinding"]["subjects"][0]
    assert (subject["namespace"], subject["name"]) == ("kube-system", "coredns")
    template = objects["Deployment"]["spec"]["template"]
    assert template["metadata"]["labels"] == service["spec"]["selector"]
    assert template["spec"]["dnsPolicy"] == "Default"
    assert template["spec"]["serviceAccountName"] == "coredns"


def test_the_corefile_serves_the_cluster_domain_and_forwards_nothing() -> None:
    corefile = by_kind(dns.coredns_objects(cluster_domain="k8s.test"))["ConfigMap"]["data"]["Corefile"]
    assert "kubernetes k8s.test in-addr.arpa ip6.arpa {" in corefile
    assert "pods insecure" in corefile and "ready" in corefile and "health" in corefile
    assert "forward" not in corefile and "loop" not in corefile


def test_the_coredns_image_runs_the_pinned_binary_with_the_deployments_args() -> None:
    container = by_kind(dns.coredns_objects())["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    program = podspec.program_for_image(container["image"])
    assert program == "coredns"
    image = images("/c/contour", "/e/envoy", coredns="/cache/coredns-v1.15.0/coredns")[program]
    argv = podspec.container_argv(image, container, {})
    assert argv == ["/cache/coredns-v1.15.0/coredns", "-conf", "/etc/coredns/Corefile"]


def test_the_kube_dns_service_is_mapped_for_udp_and_tcp() -> None:
    service = by_kind(dns.coredns_objects())["Service"]
    endpoint_slice = {
        "metadata": {"namespace": "kube-system", "labels": {"kubernetes.io/service-name": "kube-dns"}},
        "addressType": "IPv4",
        "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            {"name": "metrics", "port": 9153, "protocol": "TCP"},
        ],
        "endpoints": [{"addresses": ["10.213.0.11"], "conditions": {"ready": True}}],
    }
    ports = proxy.service_ports([service], [endpoint_slice])
    assert {(p.protocol, p.port, p.endpoints) for p in ports} == {
        ("UDP", 53, (("10.213.0.11", 53),)),
        ("TCP", 53, (("10.213.0.11", 53),)),
        ("TCP", 9153, (("10.213.0.11", 9153),)),
    }
    rules = proxy.render_nat_table(ports)
    assert "-d 10.0.0.10/32 -p udp --dport 53" in rules
    assert "-p udp -j DNAT --to-destination 10.213.0.11:53" in rules
    assert "-d 10.0.0.10/32 -p tcp --dport 53" in rules
