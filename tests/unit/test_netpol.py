"""The sandbox's NetworkPolicy egress translation and its ClusterIP rules: objects in, iptables rules out."""

import pytest

from chaoscontour.sandbox.netpol import (
    Allow,
    EgressPlan,
    PodInfo,
    egress_plan,
    policy_types,
    render_filter_table,
    selector_matches,
)
from chaoscontour.sandbox.proxy import render_nat_table, render_reject_rules, service_ports

CONTOUR = PodInfo("projectcontour", "contour-a", {"app": "contour"}, "10.213.0.11")
ENVOY = PodInfo("projectcontour", "envoy-a", {"app": "envoy"}, "10.213.0.12")
ECHO = PodInfo("demo", "echo-a", {"app": "echo"}, "10.213.0.13")


def policy(name, namespace="projectcontour", selector=None, egress=None, types=("Egress",)):
    spec = {"podSelector": {"matchLabels": {"app": "contour"}} if selector is None else selector}
    if types is not None:
        spec["policyTypes"] = list(types)
    if egress is not None:
        spec["egress"] = egress
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


BLOCK_APISERVER = policy("block", egress=[{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.213.0.2/32"]}}]}])


def test_a_pod_no_policy_selects_is_not_isolated():
    assert egress_plan(CONTOUR, []) == EgressPlan()
    assert egress_plan(ENVOY, [BLOCK_APISERVER]).isolated is False


def test_a_policy_in_another_namespace_has_no_effect():
    other = dict(BLOCK_APISERVER, metadata={"name": "block", "namespace": "demo"})
    assert egress_plan(CONTOUR, [other]).isolated is False


def test_an_ingress_only_policy_does_not_isolate_egress():
    assert egress_plan(CONTOUR, [policy("in", types=("Ingress",), egress=[])]).isolated is False


def test_policy_types_default_to_egress_when_the_policy_has_egress_rules():
    assert policy_types(policy("p", types=None, egress=[{}])) == ["Ingress", "Egress"]
    assert policy_types(policy("p", types=None)) == ["Ingress"]


def test_an_egress_policy_without_rules_denies_everything():
    plan = egress_plan(CONTOUR, [policy("deny-all", egress=[])])
    assert plan.isolated and plan.allows == () and plan.policies == ("projectcontour/deny-all",)
    rules = render_filter_table(plan, "per-packet").splitlines()
    assert rules[-2:] == ["-A CCSBX-EGRESS -j DROP", "COMMIT"]


def test_an_ip_block_with_except_becomes_a_sub_chain_that_returns_for_the_excepted_block():
    plan = egress_plan(CONTOUR, [BLOCK_APISERVER])
    assert plan.allows == (Allow("0.0.0.0/0", ("10.213.0.2/32",)),)
    rules = render_filter_table(plan, "per-packet").splitlines()
    assert "-A CCSBX-EGRESS -j CCSBX-EGRESS-0" in rules
    assert rules.index("-A CCSBX-EGRESS-0 -d 10.213.0.2/32 -j RETURN") < rules.index("-A CCSBX-EGRESS-0 -j ACCEPT")
    assert rules.index("-A CCSBX-EGRESS -j CCSBX-EGRESS-0") < rules.index("-A CCSBX-EGRESS -j DROP")


def test_per_packet_mode_accepts_only_replies_to_incoming_connections():
    rules = render_filter_table(egress_plan(CONTOUR, [BLOCK_APISERVER]), "per-packet")
    assert "--ctstate ESTABLISHED,RELATED --ctdir REPLY -j ACCEPT" in rules
    assert "--ctstate ESTABLISHED,RELATED -j ACCEPT" not in rules


def test_conntrack_mode_accepts_every_established_connection_before_the_policy_rules():
    lines = render_filter_table(egress_plan(CONTOUR, [BLOCK_APISERVER]), "conntrack").splitlines()
    established = lines.index("-A CCSBX-EGRESS -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT")
    assert lines.index("-A CCSBX-EGRESS -o lo -j ACCEPT") < established < lines.index("-A CCSBX-EGRESS -j DROP")


def test_off_mode_enforces_nothing_like_a_cni_without_network_policy_support():
    selected = egress_plan(CONTOUR, [BLOCK_APISERVER])
    assert selected.isolated
    assert render_filter_table(selected, "off") == render_filter_table(EgressPlan(), "per-packet")


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="per-packet, conntrack"):
        render_filter_table(EgressPlan(), "cilium")


def test_a_pod_that_is_not_isolated_gets_an_empty_chain():
    assert render_filter_table(EgressPlan(), "per-packet").splitlines() == [
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":CCSBX-EGRESS - [0:0]",
        "-A OUTPUT -j CCSBX-EGRESS",
        "COMMIT",
    ]


def test_ports_become_protocol_and_destination_port_matches_and_end_port_a_range():
    rule = {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 443}, {"protocol": "UDP", "port": 53}]}
    ranged = {"ports": [{"protocol": "TCP", "port": 30000, "endPort": 30100}]}
    plan = egress_plan(CONTOUR, [policy("p", egress=[rule, ranged])])
    rules = render_filter_table(plan, "per-packet")
    assert "-A CCSBX-EGRESS -d 10.0.0.0/8 -p tcp --dport 443 -j ACCEPT" in rules
    assert "-A CCSBX-EGRESS -d 10.0.0.0/8 -p udp --dport 53 -j ACCEPT" in rules
    assert "-A CCSBX-EGRESS -p tcp --dport 30000:30100 -j ACCEPT" in rules


def test_an_empty_rule_allows_everything():
    plan = egress_plan(CONTOUR, [policy("allow-all", egress=[{}])])
    assert plan.allows == (Allow(),)
    assert "-A CCSBX-EGRESS -j ACCEPT" in render_filter_table(plan, "per-packet")


def test_policies_are_additive_so_an_allow_elsewhere_defeats_a_deny():
    allow_apiserver = policy("allow-api", egress=[{"to": [{"ipBlock": {"cidr": "10.213.0.2/32"}}]}])
    plan = egress_plan(CONTOUR, [BLOCK_APISERVER, allow_apiserver])
    assert Allow("10.213.0.2/32") in plan.allows
    assert plan.policies == ("projectcontour/allow-api", "projectcontour/block")


def test_unsupported_ports_and_blocks_allow_nothing_and_are_reported():
    rule = {
        "to": [{"ipBlock": {"cidr": "fd00::/8"}}, {"ipBlock": {"cidr": "10.0.0.0/8"}}],
        "ports": [{"port": "https"}, {"protocol": "SCTP", "port": 9}],
    }
    plan = egress_plan(CONTOUR, [policy("odd", egress=[rule])])
    assert plan.isolated and plan.allows == ()
    assert any("IPv6" in n for n in plan.notes)
    assert any("named port 'https'" in n for n in plan.notes)
    assert any("SCTP" in n for n in plan.notes)


def test_pod_and_namespace_selector_peers_resolve_to_pod_ips():
    to_envoy = {"to": [{"podSelector": {"matchLabels": {"app": "envoy"}}}]}
    to_demo = {"to": [{"namespaceSelector": {"matchLabels": {"team": "demo"}}}]}
    plan = egress_plan(
        CONTOUR,
        [policy("peers", egress=[to_envoy, to_demo])],
        pods=[CONTOUR, ENVOY, ECHO],
        namespace_labels={"demo": {"team": "demo"}, "projectcontour": {}},
    )
    assert plan.allows == (Allow("10.213.0.12/32"), Allow("10.213.0.13/32"))


def test_match_expressions_select_as_the_api_defines():
    labels = {"app": "contour", "tier": "control"}
    assert selector_matches({"matchExpressions": [{"key": "app", "operator": "In", "values": ["contour"]}]}, labels)
    assert not selector_matches(
        {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["contour"]}]}, labels
    )
    assert selector_matches({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, labels)
    assert selector_matches({}, labels)
    assert not selector_matches(None, labels)
    with pytest.raises(ValueError, match="Gt"):
        selector_matches({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}, labels)


def test_an_empty_pod_selector_isolates_every_pod_of_the_namespace():
    deny_all = policy("deny", selector={}, egress=[])
    assert egress_plan(ENVOY, [deny_all]).isolated
    assert egress_plan(CONTOUR, [deny_all]).isolated
    assert not egress_plan(ECHO, [deny_all]).isolated


# --- ClusterIPs (chaoscontour.sandbox.proxy) ---------------------------------------------------------------------

CONTOUR_SERVICE = {
    "metadata": {"name": "contour", "namespace": "projectcontour"},
    "spec": {"clusterIP": "10.0.0.47", "ports": [{"name": "xds", "port": 8001, "protocol": "TCP"}]},
}


def endpoint_slice(*endpoints):
    return {
        "metadata": {
            "name": "contour-x",
            "namespace": "projectcontour",
            "labels": {"kubernetes.io/service-name": "contour"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "xds", "port": 8001, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip, ready in endpoints],
    }


def test_a_cluster_ip_port_maps_to_the_ready_endpoints_only():
    ports = service_ports([CONTOUR_SERVICE], [endpoint_slice(("10.213.0.11", True), ("10.213.0.14", False))])
    assert [(p.cluster_ip, p.port, p.endpoints) for p in ports] == [("10.0.0.47", 8001, (("10.213.0.11", 8001),))]


def test_connections_are_spread_evenly_over_the_endpoints():
    ports = service_ports([CONTOUR_SERVICE], [endpoint_slice(("10.213.0.11", True), ("10.213.0.14", True))])
    rules = render_nat_table(ports)
    assert "-A CCSBX-SERVICES -d 10.0.0.47/32 -p tcp --dport 8001 -m comment --comment projectcontour/contour" in rules
    assert "--probability 0.5000000000 -p tcp -j DNAT --to-destination 10.213.0.11:8001" in rules
    assert "-A CCSBX-SVC-0 -p tcp -j DNAT --to-destination 10.213.0.14:8001" in rules


def test_a_service_without_ready_endpoints_refuses_new_connections_before_any_policy_as_kube_proxy_does():
    ports = service_ports([CONTOUR_SERVICE], [endpoint_slice(("10.213.0.11", False))])
    assert ports[0].endpoints == ()
    assert "DNAT" not in render_nat_table(ports)
    rules = render_filter_table(egress_plan(ENVOY, []), "per-packet", render_reject_rules(ports)).splitlines()
    reject = (
        "-A CCSBX-SVC-REJECT -d 10.0.0.47/32 -p tcp --dport 8001 -m comment --comment projectcontour/contour "
        "-j REJECT --reject-with icmp-port-unreachable"
    )
    assert reject in rules and ":CCSBX-SVC-REJECT - [0:0]" in rules
    jump = rules.index("-A OUTPUT -m conntrack --ctstate NEW -j CCSBX-SVC-REJECT")
    assert jump < rules.index("-A OUTPUT -j CCSBX-EGRESS")


def test_a_service_with_ready_endpoints_is_not_rejected():
    ports = service_ports([CONTOUR_SERVICE], [endpoint_slice(("10.213.0.11", True))])
    chains, rules = render_reject_rules(ports)
    assert chains == ["CCSBX-SVC-REJECT"] and not [r for r in rules if "REJECT --reject-with" in r]
