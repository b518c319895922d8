"""The xDS black hole's policy, its refusal checks and its timeline maths: pure, no cluster, no mocks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from chaoscontour.domain import policy as fault
from chaoscontour.domain.xds import (
    XdsSample,
    XdsTarget,
    build_xds_block_policy,
    build_xds_expiry_job,
    xds_defeating_policies,
    xds_selector,
    xds_target,
    xds_timeline,
)
from chaoscontour_sandbox import netpol

NOW = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)
CONTOUR = {"app": "contour"}
ENVOY = {"app": "envoy"}


def pod(name: str, ip: str, labels: dict[str, str], namespace: str = "projectcontour") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "c", "ports": [{"name": "xds", "containerPort": 8001}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


SERVICE = {"spec": {"clusterIP": "10.0.0.50", "clusterIPs": ["10.0.0.50"], "ports": [{"port": 8001}]}}
CONTOURS = [pod("contour-a", "10.88.0.5", CONTOUR), pod("contour-b", "10.88.0.6", CONTOUR)]
ENVOYS = [pod("envoy-a", "10.88.0.7", ENVOY)]


def blackhole(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "namespace": "projectcontour",
        "envoy_labels": ENVOY,
        "contour_namespace": "projectcontour",
        "contour_labels": CONTOUR,
        "target": xds_target(CONTOURS, SERVICE, 8001),
        "run_id": "r1",
        "expires_at": NOW,
    }
    return build_xds_block_policy(**{**args, **overrides})


def test_the_target_is_every_contour_pod_address_and_the_services_cluster_ip() -> None:
    target = xds_target(CONTOURS, SERVICE, 8001)
    assert target.addresses == ("10.88.0.5", "10.88.0.6", "10.0.0.50")
    assert xds_target(CONTOURS, None, 8001).cluster_ips == ()


def test_a_contour_pod_without_an_address_is_refused() -> None:
    bare = {"metadata": {"name": "contour-c"}, "status": {"phase": "Pending"}}
    with pytest.raises(ValueError, match="contour-c has no IP address"):
        xds_target([*CONTOURS, bare], SERVICE, 8001)


def test_the_policy_selects_envoy_and_excepts_contours_addresses_from_everything_else() -> None:
    body = blackhole()
    spec = body["spec"]
    assert spec["podSelector"] == {"matchLabels": ENVOY}
    assert spec["policyTypes"] == ["Egress"]
    everything = spec["egress"][0]["to"][0]["ipBlock"]
    assert everything == {"cidr": "0.0.0.0/0", "except": ["10.88.0.5/32", "10.88.0.6/32", "10.0.0.50/32"]}
    other_ports = spec["egress"][2]["ports"]
    assert {"protocol": "TCP", "port": 1, "endPort": 8000} in other_ports
    assert {"protocol": "TCP", "port": 8002, "endPort": 65535} in other_ports


def test_the_policys_labels_and_names_are_not_the_apiserver_faults() -> None:
    body = blackhole()
    job = build_xds_expiry_job(namespace="projectcontour", run_id="r1", duration_s=300, now=NOW, deadline_s=20)
    for obj in (body, job, job["spec"]["template"]):
        assert obj["metadata"]["labels"][fault.FAULT_LABEL] == "xds-egress"
    assert body["metadata"]["name"] != fault.policy_name("r1")
    assert job["metadata"]["name"] != fault.expiry_job_name("r1")
    assert job["spec"]["activeDeadlineSeconds"] == 20
    assert fault.FAULT_APISERVER_EGRESS not in xds_selector("r1")
    assert xds_selector("r1").endswith("chaoscontour/run-id=r1")


def netpol_info(p: dict[str, Any]) -> netpol.PodInfo:
    m = p["metadata"]
    return netpol.PodInfo(m["namespace"], m["name"], m["labels"], p["status"]["podIP"])


def allowed(plan: netpol.EgressPlan, ip: str, port: int, protocol: str = "tcp") -> bool:
    """Whether the sandbox's rules let ``ip:port`` out, read from the plan as iptables would apply it."""
    import ipaddress

    for allow in plan.allows:
        if allow.cidr and ipaddress.ip_address(ip) not in ipaddress.ip_network(allow.cidr):
            continue
        if any(ipaddress.ip_address(ip) in ipaddress.ip_network(e) for e in allow.excepts):
            continue
        if allow.protocol and allow.protocol != protocol:
            continue
        if allow.port is not None and not allow.port <= port <= (allow.end_port or allow.port):
            continue
        return True
    return False


def test_the_sandbox_drops_envoys_xds_traffic_to_contour_and_lets_everything_else_out() -> None:
    backend = pod("echo-a", "10.88.0.9", {"app": "echo"}, namespace="demo")
    pods = [netpol_info(p) for p in [*CONTOURS, *ENVOYS, backend]]
    labels = {n: {"kubernetes.io/metadata.name": n} for n in ("projectcontour", "demo")}
    plan = netpol.egress_plan(pods[2], [blackhole()], pods, labels)
    assert plan.isolated
    assert all("IPv6" in note for note in plan.notes), "the sandbox polices IPv4 only"
    assert not allowed(plan, "10.88.0.5", 8001)
    assert not allowed(plan, "10.0.0.50", 8001)
    assert allowed(plan, "10.88.0.5", 8000), "Contour's other ports stay reachable"
    assert allowed(plan, "10.88.0.9", 8080), "Envoy still reaches its backends"
    assert allowed(plan, "10.0.0.1", 443), "and everything else"
    # The backend is reachable by selector too, for CNIs that never match pods against ipBlock.
    by_selector = netpol.egress_plan(pods[2], [_without_ip_blocks(blackhole())], pods, labels)
    assert allowed(by_selector, "10.88.0.9", 8080)
    assert not allowed(by_selector, "10.88.0.5", 8001)


def _without_ip_blocks(body: dict[str, Any]) -> dict[str, Any]:
    egress = [{**rule, "to": [p for p in rule["to"] if "ipBlock" not in p]} for rule in body["spec"]["egress"]]
    return {**body, "spec": {**body["spec"], "egress": [r for r in egress if r["to"]]}}


def defeat(policy_spec: dict[str, Any], labels: dict[str, str] | None = None) -> list[str]:
    other = {"metadata": {"name": "other", "namespace": "projectcontour", "labels": labels or {}}, "spec": policy_spec}
    target = XdsTarget(("10.88.0.5", "10.88.0.6"), ("10.0.0.50",), 8001)
    return xds_defeating_policies([other], ENVOYS, CONTOURS, {"kubernetes.io/metadata.name": "projectcontour"}, target)


def test_a_policy_that_allows_contour_by_selector_or_address_defeats_the_fault() -> None:
    envoy_egress = {"podSelector": {"matchLabels": ENVOY}, "policyTypes": ["Egress"]}
    by_selector = {**envoy_egress, "egress": [{"to": [{"podSelector": {"matchLabels": CONTOUR}}]}]}
    assert defeat(by_selector) == [
        "NetworkPolicy other egress rule 0 allows Contour pod contour-a on port 8001 by selector for Envoy pod envoy-a"
    ]
    named = {**envoy_egress, "egress": [{"to": [{"podSelector": {}}], "ports": [{"port": "xds"}]}]}
    assert defeat(named), "a named port that resolves to 8001 on Contour's pods"
    by_address = {**envoy_egress, "egress": [{"to": [{"ipBlock": {"cidr": "10.88.0.0/16"}}]}]}
    assert "allows 10.88.0.5" in defeat(by_address)[0]
    assert defeat({**envoy_egress, "egress": [{}]})


def test_policies_that_leave_the_xds_port_alone_do_not_defeat_it() -> None:
    envoy_egress = {"podSelector": {"matchLabels": ENVOY}, "policyTypes": ["Egress"]}
    assert defeat({**envoy_egress, "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "echo"}}}]}]}) == []
    assert defeat({**envoy_egress, "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}) == []
    other_pods = {"podSelector": {"matchLabels": {"app": "echo"}}, "policyTypes": ["Egress"], "egress": [{}]}
    assert defeat(other_pods) == []
    assert defeat(blackhole()["spec"], labels={fault.FAULT_LABEL: "xds-egress"}) == [], "our own is skipped"


def samples(*rows: tuple[float, bool | None, int, int, int]) -> list[XdsSample]:
    return [
        XdsSample(at=at, connected=c, cds_success=cds, lds_success=lds, cds_failure=fail, lds_failure=fail)
        for at, c, cds, lds, fail in rows
    ]


def test_the_timeline_gives_detection_attempts_reconnection_and_currency_relative_to_block_and_heal() -> None:
    rows = samples(
        (100.0, True, 2, 2, 0),
        (110.0, True, 2, 2, 0),  # blocked at 110
        (140.0, True, 2, 2, 0),
        (140.5, False, 2, 2, 1),  # noticed 30.5 s later: the stream died
        (141.0, True, 2, 2, 1),  # a new stream: the gauge reads 1 while its connection is pending
        (146.0, False, 2, 2, 2),
        (146.5, True, 2, 2, 2),
        (152.0, True, 2, 2, 3),  # an attempt whose 0 no reading caught
        (170.0, None, 0, 0, 0),  # a failed read counts for nothing
        (200.5, True, 3, 2, 3),  # healed at 200: CDS accepted an update
        (201.0, True, 3, 3, 3),  # and LDS: current
    )
    figures = xds_timeline(rows, blocked_at=110.0, healed_at=200.0)
    assert figures["detected_after_s"] == 30.5
    assert figures["reconnect_attempts"] == 2
    assert figures["reconnected_after_s"] == 0.5
    assert figures["current_after_s"] == 1.0
    assert figures["failed_reads"] == 1
    assert [t["connected"] for t in figures["transitions"]] == [False, True, False, True]
    assert figures["transitions"][0]["at_s"] == 40.5
    # On the transitions' scale, for the report: each failed stream, and the two updates after the heal.
    assert figures["first_reading_at"] == "1970-01-01T00:01:40.000Z"
    assert figures["failures_at_s"] == [40.5, 46.0, 52.0]
    assert figures["updates_at_s"] == [100.5, 101.0]


def test_a_failed_update_shows_the_dead_stream_even_when_no_reading_caught_the_gauge_at_zero() -> None:
    rows = samples((100.0, True, 2, 2, 0), (125.0, True, 2, 2, 0), (130.0, True, 2, 2, 1))
    assert xds_timeline(rows, blocked_at=110.0)["detected_after_s"] == 20.0


def test_a_gauge_at_one_without_an_accepted_update_is_not_a_reconnection() -> None:
    rows = samples((0.0, True, 2, 2, 0), (50.0, True, 2, 2, 0), (60.0, True, 2, 2, 0))
    figures = xds_timeline(rows, blocked_at=1.0, healed_at=55.0)
    assert figures["detected_after_s"] is None and figures["reconnect_attempts"] is None
    assert figures["reconnected_after_s"] is None
    assert figures["current_after_s"] is None
    assert xds_timeline([], None, None)["connected_at_start"] is None
