"""deploy/admission-policy.yaml on the real kube-apiserver: what the game-day ServiceAccount may no longer do.

RBAC lets that identity create Jobs, delete NetworkPolicies and delete pods in Contour's namespace; the admission
policies narrow each to chaoscontour's own use. Every test here acts as the ServiceAccount (a TokenRequest token,
deploy/rbac.yaml and deploy/admission-policy.yaml applied as written, moved into the test's namespace) and checks
both sides: the escalation is refused with the policy's message, and what the activities do is still accepted.

The expiry Job's Pod Security test is separate: Pod Security admission *enforces* on pods only; on a Job it judges
the pod template for ``warn`` and ``audit`` alone. So that test shows the API server sends no warning for the Job in
a ``restricted`` namespace (and does send one for a template that breaks the standard: the control), and that the
template, submitted as a pod, passes ``enforce=restricted``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from chaoscontour.activities._fault import MAX_FAULT_S
from chaoscontour.domain import policy as fault
from chaoscontour_sandbox import binaries
from chaoscontour_sandbox.controlplane import ControlPlane
from tests.support import identities
from tests.support.game_day_identity import (
    CACHE_DEADLINE_S,
    DEPLOY,
    SERVICE_ACCOUNT,
    admission_documents,
    applied,
    rbac_documents,
    refusal,
    refused_by_policy,
    wait_for_admission_policies,
)

NOW = datetime.now(UTC)
JOB_NAME = fault.expiry_job_name("adm1")


def expiry_job(namespace: str, run_id: str = "adm1") -> dict[str, Any]:
    return fault.build_expiry_job(namespace=namespace, run_id=run_id, duration_s=300, now=NOW)


def message(exc: ApiException | None) -> str:
    assert exc is not None, "the request was accepted"
    return str(json.loads(exc.body)["message"])


def pod(name: str, labels: dict[str, str]) -> Any:
    return {"metadata": {"name": name, "labels": labels}, "spec": {"containers": [{"name": "c", "image": "c:1"}]}}


@pytest.fixture
def as_game_day(control_plane: ControlPlane, api: client.ApiClient, namespace: str) -> Iterator[client.ApiClient]:
    """An ``ApiClient`` of the game-day ServiceAccount, once its RBAC and admission policies are in force."""
    with applied(api, rbac_documents(namespace)), applied(api, admission_documents(namespace)):
        kubeconfig = identities.service_account_kubeconfig(control_plane, namespace, SERVICE_ACCOUNT)
        with config.new_client_from_config(config_file=str(kubeconfig)) as sa_api:
            wait_for_admission_policies(api, sa_api, namespace)
            yield sa_api


def test_the_api_server_runs_the_admission_plugins_the_policies_need(
    control_plane: ControlPlane, api: client.ApiClient
) -> None:
    """ValidatingAdmissionPolicy and PodSecurity are default plugins (1.30+); the harness must not have lost them."""
    log = (control_plane.logs_dir / "kube-apiserver.log").read_text(errors="replace")
    [loaded] = [line for line in log.splitlines() if "validating admission controller(s)" in line]
    plugins = loaded.rsplit(":", 1)[1].strip(" .").split(",")
    assert {"ValidatingAdmissionPolicy", "PodSecurity"} <= set(plugins)
    served = client.AdmissionregistrationV1Api(api).get_api_resources().resources
    assert {"validatingadmissionpolicies", "validatingadmissionpolicybindings"} <= {r.name for r in served}


def _runs_a_pod(job: dict[str, Any]) -> None:
    job["spec"]["parallelism"] = 1


def _runs_as_contour(job: dict[str, Any]) -> None:
    job["spec"]["template"]["spec"]["serviceAccountName"] = "contour"


def _runs_as_contour_deprecated_field(job: dict[str, Any]) -> None:
    job["spec"]["template"]["spec"]["serviceAccount"] = "contour"


def _mounts_a_secret(job: dict[str, Any]) -> None:
    pod_spec = job["spec"]["template"]["spec"]
    pod_spec["volumes"] = [{"name": "certs", "secret": {"secretName": "contourcert"}}]
    pod_spec["containers"][0]["volumeMounts"] = [{"name": "certs", "mountPath": "/certs"}]


def _mounts_a_token(job: dict[str, Any]) -> None:
    job["spec"]["template"]["spec"]["automountServiceAccountToken"] = True


def _is_suspended(job: dict[str, Any]) -> None:
    job["spec"]["suspend"] = True


def _never_expires(job: dict[str, Any]) -> None:
    del job["spec"]["activeDeadlineSeconds"]


def _outlives_the_longest_fault(job: dict[str, Any]) -> None:
    job["spec"]["activeDeadlineSeconds"] = int(MAX_FAULT_S) + 1


def _never_deleted_when_finished(job: dict[str, Any]) -> None:
    del job["spec"]["ttlSecondsAfterFinished"]


def _managed_by_another_controller(job: dict[str, Any]) -> None:
    job["spec"]["managedBy"] = "example.com/not-the-job-controller"


def _is_not_ours(job: dict[str, Any]) -> None:
    # The Job's labels default to its template's when empty, so both go.
    job["metadata"]["labels"] = {"app": "anything"}
    job["spec"]["template"]["metadata"]["labels"] = {"app": "anything"}


@pytest.mark.parametrize(
    ("change", "refused_with"),
    [
        (_runs_a_pod, "must set spec.parallelism: 0"),
        (_runs_as_contour, "must not set serviceAccountName"),
        (_runs_as_contour_deprecated_field, "must not set serviceAccountName"),
        (_mounts_a_secret, "must not have volumes"),
        (_mounts_a_token, "must set automountServiceAccountToken: false"),
        (_is_suspended, "must not be suspended"),
        (_never_expires, "must set spec.activeDeadlineSeconds, at most 14400"),
        (_outlives_the_longest_fault, "must set spec.activeDeadlineSeconds, at most 14400"),
        (_is_not_ours, "only its own expiry Jobs, labelled app.kubernetes.io/managed-by=chaoscontour"),
        (_never_deleted_when_finished, "must set spec.ttlSecondsAfterFinished: 0"),
        (_managed_by_another_controller, "must not set spec.managedBy"),
    ],
    ids=[
        "parallelism-1",
        "service-account-contour",
        "deprecated-service-account",
        "secret-volume",
        "token",
        "suspended",
        "no-deadline",
        "deadline-past-4h",
        "label",
        "no-ttl",
        "managed-by",
    ],
)
def test_a_job_not_shaped_like_the_expiry_job_is_refused(
    api: client.ApiClient,
    namespace: str,
    as_game_day: client.ApiClient,
    change: Callable[[dict[str, Any]], None],
    refused_with: str,
) -> None:
    job = expiry_job(namespace)
    change(job)
    refused = refusal(client.BatchV1Api(as_game_day).create_namespaced_job, namespace, job)
    assert refused_by_policy(refused), refused
    assert refused_with in message(refused)
    assert client.BatchV1Api(api).list_namespaced_job(namespace).items == []


def test_the_expiry_job_is_accepted_its_deadline_extended_and_it_is_deleted(
    namespace: str, as_game_day: client.ApiClient
) -> None:
    jobs = client.BatchV1Api(as_game_day)
    created: Any = jobs.create_namespaced_job(namespace, expiry_job(namespace))
    assert created.spec.parallelism == 0

    # The dead-man switch's heartbeat: a PATCH of activeDeadlineSeconds, an UPDATE to admission.
    extended: Any = jobs.patch_namespaced_job(JOB_NAME, namespace, {"spec": {"activeDeadlineSeconds": 45}})
    assert extended.spec.active_deadline_seconds == 45
    # An update must keep the shape and the label.
    refused = refusal(jobs.patch_namespaced_job, JOB_NAME, namespace, {"spec": {"parallelism": 1}})
    assert "must set spec.parallelism: 0" in message(refused)
    refused = refusal(jobs.patch_namespaced_job, JOB_NAME, namespace, {"spec": {"suspend": True}})
    assert "must not be suspended" in message(refused)
    assert jobs.patch_namespaced_job(JOB_NAME, namespace, {"spec": {"suspend": False}}).spec.suspend is False
    unlabel = {"metadata": {"labels": {fault.MANAGED_BY_LABEL: None}}, "spec": {"activeDeadlineSeconds": 40}}
    refused = refusal(jobs.patch_namespaced_job, JOB_NAME, namespace, unlabel)
    assert "only its own expiry Jobs" in message(refused)

    jobs.delete_namespaced_job(JOB_NAME, namespace, propagation_policy="Background")
    with pytest.raises(ApiException) as gone:
        jobs.read_namespaced_job(JOB_NAME, namespace)
    assert gone.value.status == 404
    # The longest fault the activity accepts still fits the policy's cap on the deadline.
    longest = fault.build_expiry_job(namespace=namespace, run_id="adm-max", duration_s=MAX_FAULT_S, now=NOW)
    jobs.create_namespaced_job(namespace, longest, dry_run="All")


def test_our_job_may_be_deleted_only_with_its_policy(
    api: client.ApiClient, namespace: str, as_game_day: client.ApiClient
) -> None:
    """Issue 21: batch/v1 orphans dependents by default; an orphaned fault policy is never deleted."""
    jobs = client.BatchV1Api(as_game_day)
    jobs.create_namespaced_job(namespace, expiry_job(namespace))
    for options in ({}, {"propagation_policy": "Orphan"}, {"orphan_dependents": True}):
        refused = refusal(jobs.delete_namespaced_job, JOB_NAME, namespace, **options)
        assert "must delete Jobs with propagationPolicy Background or Foreground" in message(refused), options
    assert client.BatchV1Api(api).read_namespaced_job(JOB_NAME, namespace).metadata.name == JOB_NAME
    jobs.delete_namespaced_job(JOB_NAME, namespace, propagation_policy="Foreground")


def test_someone_elses_job_may_not_be_changed_adopted_or_deleted(
    api: client.ApiClient, namespace: str, as_game_day: client.ApiClient
) -> None:
    # Shaped like ours in every way but the label: only ownership decides here.
    theirs = expiry_job(namespace, "theirs")
    theirs["metadata"]["labels"] = theirs["spec"]["template"]["metadata"]["labels"] = {"app": "nightly-report"}
    name = theirs["metadata"]["name"]
    client.BatchV1Api(api).create_namespaced_job(namespace, theirs)

    jobs = client.BatchV1Api(as_game_day)
    for attempt in (
        lambda: jobs.patch_namespaced_job(name, namespace, {"spec": {"activeDeadlineSeconds": 1}}),
        lambda: jobs.patch_namespaced_job(
            name, namespace, {"metadata": {"labels": {fault.MANAGED_BY_LABEL: "chaoscontour"}}}
        ),
        lambda: jobs.delete_namespaced_job(name, namespace),
    ):
        refused = refusal(attempt)
        assert f"Job {namespace}/{name} is not" in message(refused)
    assert client.BatchV1Api(api).read_namespaced_job(name, namespace).spec.active_deadline_seconds == 300


def test_only_our_network_policies_may_be_created_or_deleted(
    api: client.ApiClient, namespace: str, as_game_day: client.ApiClient
) -> None:
    foreign: Any = {"metadata": {"name": "allow-apiserver"}, "spec": {"podSelector": {}, "policyTypes": ["Egress"]}}
    client.NetworkingV1Api(api).create_namespaced_network_policy(namespace, foreign)
    networking = client.NetworkingV1Api(as_game_day)

    refused = refusal(networking.delete_namespaced_network_policy, "allow-apiserver", namespace)
    assert refused_by_policy(refused)
    assert (
        f"only its own NetworkPolicies, labelled app.kubernetes.io/managed-by=chaoscontour; NetworkPolicy "
        f"{namespace}/allow-apiserver is not" in message(refused)
    )
    refused = refusal(networking.create_namespaced_network_policy, namespace, dict(foreign, metadata={"name": "x"}))
    assert "only its own NetworkPolicies" in message(refused)

    # As block_apiserver_egress does it: the expiry Job first, then the policy it owns.
    job: Any = client.BatchV1Api(as_game_day).create_namespaced_job(namespace, expiry_job(namespace))
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": job.metadata.name, "uid": job.metadata.uid}
    block = {"pod_labels": {"app": "contour"}, "blocked_cidrs": ["10.0.0.1/32"], "run_id": "adm1", "expires_at": NOW}
    orphan = fault.build_block_policy(namespace=namespace, **block)
    refused = refusal(networking.create_namespaced_network_policy, namespace, orphan)
    assert "must be owned by its expiry Job" in message(refused)
    ours = fault.build_block_policy(namespace=namespace, owner=owner, **block)
    opens_ingress = fault.build_block_policy(namespace=namespace, owner=owner, **block)
    opens_ingress["spec"].update(policyTypes=["Egress", "Ingress"], ingress=[{}])
    refused = refusal(networking.create_namespaced_network_policy, namespace, opens_ingress)
    assert "must be Egress only" in message(refused)
    # Issue 21: a second owner keeps the policy alive after its Job; a whole-namespace selector or a deny-all is no
    # fault of ours.
    second_owner = fault.build_block_policy(namespace=namespace, owner=owner, **block)
    second_owner["metadata"]["ownerReferences"].append(
        {**owner, "name": "chaoscontour-expiry-other", "uid": str(uuid.uuid4())}
    )
    every_pod = fault.build_block_policy(namespace=namespace, owner=owner, **block)
    every_pod["spec"]["podSelector"] = {}
    deny_all = fault.build_block_policy(namespace=namespace, owner=owner, **block)
    del deny_all["spec"]["egress"]
    halves = fault.build_block_policy(
        namespace=namespace, owner=owner, **{**block, "blocked_cidrs": ["0.0.0.0/1", "128.0.0.0/1"]}
    )
    for bypass, refused_with in (
        (second_owner, "owned by its expiry Job and by nothing else"),
        (every_pod, "must select pods by matchLabels"),
        (deny_all, "must keep egress open to 0.0.0.0/0 and ::/0"),
        (halves, "none wider than a /8"),
    ):
        refused = refusal(networking.create_namespaced_network_policy, namespace, bypass)
        assert refused_by_policy(refused) and refused_with in message(refused), refused_with
    networking.create_namespaced_network_policy(namespace, ours)
    networking.delete_namespaced_network_policy(ours["metadata"]["name"], namespace)
    listed = client.NetworkingV1Api(api).list_namespaced_network_policy(namespace).items
    assert [p.metadata.name for p in listed] == ["allow-apiserver"]


def test_only_contour_pods_may_be_deleted(api: client.ApiClient, namespace: str, as_game_day: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, pod("envoy-x", {"app": "envoy"}))
    core.create_namespaced_pod(namespace, pod("contour-x", {"app": "contour", "pod-template-hash": "abc"}))
    sa_core = client.CoreV1Api(as_game_day)

    refused = refusal(sa_core.delete_namespaced_pod, "envoy-x", namespace)
    assert refused_by_policy(refused)
    assert f"may delete only Contour's pods (labelled app=contour); pod {namespace}/envoy-x is not" in message(refused)
    sa_core.delete_namespaced_pod("contour-x", namespace)
    assert [p.metadata.name for p in core.list_namespaced_pod(namespace).items] == ["envoy-x"]


def test_the_policies_leave_every_other_user_alone(
    api: client.ApiClient, namespace: str, as_game_day: client.ApiClient
) -> None:
    """They guard one identity: the admin may still create a Job that runs a pod (dry run)."""
    job = expiry_job(namespace)
    _runs_a_pod(job)
    created: Any = client.BatchV1Api(api).create_namespaced_job(namespace, job, dry_run="All")
    assert created.spec.parallelism == 1


def _warnings(create: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """The ``Warning`` headers of an accepted request (RFC 7234 form, ``299 - "text"``), quotes unescaped."""
    _, _, headers = create(*args, **kwargs)
    return str((headers or {}).get("Warning") or "").replace('\\"', '"')


def test_the_expiry_job_passes_the_restricted_pod_security_standard(api: client.ApiClient, namespace: str) -> None:
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    levels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn")}
    core.patch_namespace(namespace, {"metadata": {"labels": levels}})

    bare = expiry_job(namespace, "bare")
    del bare["spec"]["template"]["spec"]["securityContext"]
    # The control, repeated until Pod Security admission sees the namespace's new labels: it warns about a template
    # that breaks the standard, so a missing warning below means something.
    deadline = time.monotonic() + CACHE_DEADLINE_S
    while 'would violate PodSecurity "restricted' not in _warnings(
        batch.create_namespaced_job_with_http_info, namespace, bare, dry_run="All"
    ):
        assert time.monotonic() < deadline, "Pod Security admission never warned about a non-compliant Job"
        time.sleep(0.1)

    job = expiry_job(namespace)
    assert _warnings(batch.create_namespaced_job_with_http_info, namespace, job) == ""
    # enforce judges pods only: the template, submitted as a pod, is admitted; the control is refused.
    template = job["spec"]["template"]
    as_pod: Any = {"metadata": {"name": "expiry-template", **template["metadata"]}, "spec": template["spec"]}
    assert _warnings(core.create_namespaced_pod_with_http_info, namespace, as_pod, dry_run="All") == ""
    bare_pod: Any = {"metadata": {"name": "bare"}, "spec": bare["spec"]["template"]["spec"]}
    refused = refusal(core.create_namespaced_pod, namespace, bare_pod, dry_run="All")
    assert refused is not None and refused.status == 403 and 'violates PodSecurity "restricted' in message(refused)


def test_a_kustomize_namespace_overlay_keeps_every_check_in_force(
    control_plane: ControlPlane, api: client.ApiClient, namespace: str, require: Any, tmp_path: Path
) -> None:
    """Issue 21: the policies named the ServiceAccount by its namespace, so `namespace:` in an overlay (which moves
    the ServiceAccount) silently turned every check off. Built with the pinned kustomize, as `kubectl apply -k`."""
    require("kustomize")
    for name in ("rbac.yaml", "admission-policy.yaml"):
        shutil.copy2(DEPLOY / name, tmp_path / name)
    overlay = {"namespace": namespace, "resources": ["rbac.yaml", "admission-policy.yaml"]}
    (tmp_path / "kustomization.yaml").write_text(json.dumps(overlay))
    kustomize = binaries.find_binary("kustomize")
    assert kustomize is not None
    built = subprocess.run([str(kustomize), "build", str(tmp_path)], capture_output=True, text=True, check=True)
    documents = [d for d in yaml.safe_load_all(built.stdout) if d]
    accounts = [d["metadata"].get("namespace") for d in documents if d["kind"] == "ServiceAccount"]
    assert accounts == [namespace]  # the overlay moved the identity
    with applied(api, documents):
        kubeconfig = identities.service_account_kubeconfig(control_plane, namespace, SERVICE_ACCOUNT)
        with config.new_client_from_config(config_file=str(kubeconfig)) as sa_api:
            wait_for_admission_policies(api, sa_api, namespace)
            job = expiry_job(namespace)
            _managed_by_another_controller(job)
            refused = refusal(client.BatchV1Api(sa_api).create_namespaced_job, namespace, job)
            assert refused_by_policy(refused) and "must not set spec.managedBy" in message(refused)
