"""The cluster DNS objects (pure, no cluster): kubeadm's shape, the Corefile, the pinned image."""

from __future__ import annotations

from typing import Any

from chaoscontour_sandbox import dns, images, nodeimages


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


def test_the_coredns_image_is_the_one_the_node_has_and_runs_with_the_deployments_args() -> None:
    container = by_kind(dns.coredns_objects())["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert images.qualified_reference(container["image"]) == images.qualified_reference(nodeimages.COREDNS_IMAGE)
    assert container["args"] == ["-conf", "/etc/coredns/Corefile"]


def test_coredns_is_built_with_the_seven_plugins_the_corefile_names() -> None:
    # CoreDNS is built with COREDNS_PLUGINS only (corednsbuild), read from the Corefile: a plugin the build lacked
    # would stop CoreDNS at start ("unknown directive"); one built and never named would only make the build longer.
    assert dns.COREDNS_PLUGINS == ("errors", "health", "ready", "kubernetes", "prometheus", "cache", "loadbalance")
    assert len(set(dns.COREDNS_PLUGINS)) == len(dns.COREDNS_PLUGINS)


def test_corefile_plugins_are_the_server_blocks_directives_not_their_options() -> None:
    corefile = (
        ".:53 {\n    errors # comment {\n    kubernetes cluster.local {\n       pods insecure\n    }\n"
        "    cache 30\n}\nexample.org:53 {\n    whoami\n}\n"
    )
    assert dns.corefile_plugins(corefile) == ["errors", "kubernetes", "cache", "whoami"]
