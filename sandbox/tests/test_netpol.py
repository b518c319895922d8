"""The NetworkPolicy egress evaluator the conntrack reaper judges established connections with: objects in, plan out."""

import pytest

from chaoscontour_sandbox.netpol import (
    Allow,
    EgressPlan,
    PodInfo,
    egress_plan,
    policy_types,
    selector_matches,
)

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


def test_an_ip_block_with_except_allows_the_block_minus_the_excepted_one():
    plan = egress_plan(CONTOUR, [BLOCK_APISERVER])
    assert plan.isolated and plan.allows == (Allow("0.0.0.0/0", ("10.213.0.2/32",)),)


def test_ports_become_protocol_and_port_allows_and_end_port_a_range():
    rule = {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 443}, {"protocol": "UDP", "port": 53}]}
    ranged = {"ports": [{"protocol": "TCP", "port": 30000, "endPort": 30100}]}
    plan = egress_plan(CONTOUR, [policy("p", egress=[rule, ranged])])
    assert set(plan.allows) == {
        Allow("10.0.0.0/8", (), "tcp", 443),
        Allow("10.0.0.0/8", (), "udp", 53),
        Allow(None, (), "tcp", 30000, 30100),
    }


def test_an_empty_rule_allows_everything():
    plan = egress_plan(CONTOUR, [policy("allow-all", egress=[{}])])
    assert plan.isolated and plan.allows == (Allow(),)


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
