"""The NetworkPolicy we build, the API server's addresses, and the check for policies that defeat the fault."""

import re
from datetime import UTC, datetime

import pytest

from chaoscontour.domain import policy as fault

NOW = datetime(2026, 11, 26, 19, 0, 0, tzinfo=UTC)


def _slice(address_type: str, addresses: list[str], port: int = 6443) -> dict:
    return {
        "addressType": address_type,
        "endpoints": [{"addresses": [a]} for a in addresses],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }


SERVICE = {"spec": {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"], "ports": [{"port": 443}]}}


def test_target_collects_endpoints_and_cluster_ip_with_ports():
    target = fault.apiserver_target([_slice("IPv4", ["172.18.0.2"])], SERVICE)
    assert target.addresses == ("172.18.0.2", "10.96.0.1")
    assert target.ports == (443, 6443)


def test_target_handles_several_endpoints_and_ipv6_and_dual_stack_service():
    slices = [_slice("IPv4", ["172.18.0.2", "172.18.0.3"]), _slice("IPv6", ["fc00:f853:ccd:e793::2"])]
    service = {"spec": {"clusterIPs": ["10.96.0.1", "fd00:10:96::1"], "ports": [{"port": 443}]}}
    target = fault.apiserver_target(slices, service)
    assert target.endpoint_addresses == ("172.18.0.2", "172.18.0.3", "fc00:f853:ccd:e793::2")
    assert target.cluster_ips == ("10.96.0.1", "fd00:10:96::1")


def test_target_normalises_ipv6_text_and_skips_fqdn_slices():
    slices = [_slice("IPv6", ["FD00:0:0::2"]), {"addressType": "FQDN", "endpoints": [{"addresses": ["api.example"]}]}]
    assert fault.apiserver_target(slices, None).addresses == ("fd00::2",)


def test_target_without_any_address_is_an_error():
    with pytest.raises(ValueError, match="no address for the API server"):
        fault.apiserver_target([{"addressType": "IPv4", "endpoints": []}], {"spec": {"clusterIP": "None"}})


def test_host_cidr_per_family():
    assert fault.host_cidr("10.0.0.1") == "10.0.0.1/32"
    assert fault.host_cidr("fd00::1") == "fd00::1/128"


def test_block_policy_denies_only_the_blocked_addresses_and_keeps_dns():
    body = fault.build_block_policy(
        namespace="projectcontour",
        pod_labels={"app": "contour"},
        blocked_cidrs=["172.18.0.2/32", "10.96.0.1/32", "fd00::2/128"],
        run_id="r1",
        expires_at=NOW,
        owner={"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u-1"},
    )
    spec = body["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app": "contour"}}
    assert spec["policyTypes"] == ["Egress"]
    assert spec["egress"][0]["to"] == [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["172.18.0.2/32", "10.96.0.1/32"]}},
        {"ipBlock": {"cidr": "::/0", "except": ["fd00::2/128"]}},
    ]
    assert {p["port"] for p in spec["egress"][1]["ports"]} == {53}
    meta = body["metadata"]
    assert meta["labels"][fault.MANAGED_BY_LABEL] == "chaoscontour"
    assert meta["labels"][fault.RUN_ID_LABEL] == "r1"
    assert meta["annotations"][fault.EXPIRES_AT_ANNOTATION] == "2026-11-26T19:00:00Z"
    assert meta["ownerReferences"][0]["uid"] == "u-1"


def test_block_policy_without_ipv6_addresses_leaves_ipv6_open_without_except():
    body = fault.build_block_policy(
        namespace="n", pod_labels={"app": "contour"}, blocked_cidrs=["10.0.0.1/32"], run_id="r", expires_at=NOW
    )
    assert {"ipBlock": {"cidr": "::/0"}} in body["spec"]["egress"][0]["to"]
    assert "ownerReferences" not in body["metadata"]


def test_our_own_policy_does_not_count_as_allowing_the_apiserver():
    ours = fault.build_block_policy(
        namespace="n", pod_labels={"app": "contour"}, blocked_cidrs=["10.0.0.1/32"], run_id="r", expires_at=NOW
    )
    # Judged on its rules alone it excepts the API server...
    assert fault.egress_allow_reason(ours, {"app": "contour"}, ["10.0.0.1"], [6443]) is None
    # ...and as one of ours it is skipped altogether.
    assert (
        fault.defeating_policies(
            [ours], [{"metadata": {"name": "p", "labels": {"app": "contour"}}}], ["10.0.0.1"], [6443]
        )
        == []
    )


def _policy(egress: list, selector: dict | None = None, types: list | None = None, name: str = "other") -> dict:
    spec: dict = {"podSelector": selector if selector is not None else {}, "egress": egress}
    if types is not None:
        spec["policyTypes"] = types
    return {"metadata": {"name": name}, "spec": spec}


POD = {"metadata": {"name": "contour-1", "labels": {"app": "contour"}}}


@pytest.mark.parametrize(
    "egress",
    [
        [{}],  # allow everything
        [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}],
        [{"to": [{"ipBlock": {"cidr": "172.18.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 6443}]}],
        [{"ports": [{"protocol": "TCP", "port": 6000, "endPort": 7000}]}],
    ],
)
def test_allow_rules_that_reach_the_apiserver_defeat_the_fault(egress):
    reasons = fault.defeating_policies([_policy(egress, types=["Egress"])], [POD], ["172.18.0.2"], [6443])
    assert len(reasons) == 1 and "other" in reasons[0] and "contour-1" in reasons[0]


@pytest.mark.parametrize(
    "policy",
    [
        _policy([{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["172.18.0.2/32"]}}]}], types=["Egress"]),
        _policy([{"ports": [{"protocol": "UDP", "port": 53}]}], types=["Egress"]),
        _policy([{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}], types=["Egress"]),
        _policy([{}], selector={"matchLabels": {"app": "envoy"}}, types=["Egress"]),
        _policy([{}], types=["Ingress"]),
        _policy([{"to": [{"ipBlock": {"cidr": "::/0"}}]}], types=["Egress"]),
    ],
)
def test_rules_that_do_not_reach_the_apiserver_are_harmless(policy):
    assert fault.defeating_policies([policy], [POD], ["172.18.0.2"], [6443]) == []


def test_policy_types_default_includes_egress_when_egress_rules_exist():
    assert fault.defeating_policies([_policy([{}])], [POD], ["172.18.0.2"], [6443])


def test_match_expressions():
    selector = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["contour", "x"]}]}
    assert fault.label_selector_matches(selector, {"app": "contour"})
    assert not fault.label_selector_matches(selector, {"app": "envoy"})
    assert fault.label_selector_matches({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, {})
    assert not fault.label_selector_matches({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {})
    assert not fault.label_selector_matches(
        {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["contour"]}]}, {"app": "contour"}
    )


def test_expiry_job_runs_no_pod_and_is_deleted_when_its_deadline_passes():
    job = fault.build_expiry_job(namespace="n", run_id="r1", duration_s=90.2, now=NOW)
    spec = job["spec"]
    assert spec["parallelism"] == 0
    assert spec["activeDeadlineSeconds"] == 91
    assert spec["ttlSecondsAfterFinished"] == 0
    assert job["metadata"]["annotations"][fault.EXPIRES_AT_ANNOTATION] == "2026-11-26T19:01:31Z"
    assert job["metadata"]["labels"][fault.RUN_ID_LABEL] == "r1"


def restricted_violations(pod: dict) -> list[str]:
    """The pod spec's breaches of the ``restricted`` Pod Security Standard (Kubernetes docs, "Pod Security
    Standards", baseline + restricted, version latest), as our reading of it; the integration test asks the real
    PodSecurity admission plugin."""
    found: list[str] = []
    context = pod.get("securityContext") or {}
    containers = [*(pod.get("initContainers") or []), *pod["containers"]]
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            found.append(key)
    if any("hostPath" in volume for volume in pod.get("volumes") or []):
        found.append("hostPath volume")
    for container in containers:
        name, own = container["name"], container.get("securityContext") or {}
        if own.get("privileged"):
            found.append(f"{name}: privileged")
        if own.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        capabilities = own.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities")
        if not own.get("runAsNonRoot", context.get("runAsNonRoot")):
            found.append(f"{name}: runAsNonRoot is not true")
        if own.get("runAsUser", context.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = (own.get("seccompProfile") or context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile {seccomp}")
        if any(port.get("hostPort") for port in container.get("ports") or []):
            found.append(f"{name}: hostPort")
    return found


def test_expiry_job_pod_template_meets_the_restricted_pod_security_standard():
    pod = fault.build_expiry_job(namespace="n", run_id="r1", duration_s=60, now=NOW)["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert pod["securityContext"]["runAsUser"] != 0


def test_the_restricted_check_sees_a_breach():
    """The control of the test above: a template without security settings breaks the standard on every count."""
    pod = {"containers": [{"name": "c", "image": "busybox"}]}
    assert len(restricted_violations(pod)) == 4


def test_expiry_job_pod_template_has_tiny_resources_and_an_image_pinned_by_digest():
    pod = fault.build_expiry_job(namespace="n", run_id="r1", duration_s=60, now=NOW)["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == fault.EXPIRY_JOB_IMAGE
    assert re.fullmatch(r"[a-z0-9.\-/]+:[\w.\-]+@sha256:[0-9a-f]{64}", fault.EXPIRY_JOB_IMAGE)
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}


def test_expiry_job_pod_template_has_no_identity_and_mounts_nothing():
    """What deploy/admission-policy.yaml demands of every Job of the game-day ServiceAccount."""
    job = fault.build_expiry_job(namespace="n", run_id="r1", duration_s=60, now=NOW)
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["parallelism"] == 0
    assert job["metadata"]["labels"][fault.MANAGED_BY_LABEL] == fault.MANAGED_BY
    assert pod["automountServiceAccountToken"] is False
    assert not pod.get("serviceAccountName") and not pod.get("serviceAccount")
    assert not pod.get("volumes") and not any(c.get("volumeMounts") for c in pod["containers"])


def test_managed_selector_for_all_runs_or_one():
    assert fault.managed_selector() == "app.kubernetes.io/managed-by=chaoscontour,chaoscontour/fault=apiserver-egress"
    assert fault.managed_selector("r9").endswith(",chaoscontour/run-id=r9")
