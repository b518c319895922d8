"""The game-day manifests in ``deploy/`` against the real kube-apiserver of the control-plane harness.

* Every manifest (and the ConfigMap ``deploy/render.py`` renders from ``experiments/``) passes a server-side apply
  with ``dryRun=All`` and strict field validation.
* The ServiceAccount, with ``rbac.yaml`` really applied, may make every Kubernetes API call the activities make and
  nothing else that matters (SubjectAccessReview, answered by the API server's RBAC authorizer).
* The Roles grant exactly the calls found in ``chaoscontour/activities`` (no more, no less), so the manifest and
  the code cannot drift apart silently.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, dynamic
from kubernetes.client.rest import ApiException

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
NAMESPACE = "projectcontour"
SA_USER = f"system:serviceaccount:{NAMESPACE}:chaoscontour"
SA_GROUPS = ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}", "system:authenticated"]

# Where the activities' API calls are made: the activities and the Kubernetes edge they share.
ACTIVITY_SOURCES = [*sorted((REPO / "chaoscontour" / "activities").glob("*.py")), REPO / "chaoscontour/edges/kube.py"]
GROUPS = {
    "core": "",
    "coordination": "coordination.k8s.io",
    "networking": "networking.k8s.io",
    "discovery": "discovery.k8s.io",
    "batch": "batch",
}
VERBS = {"read": "get", "list": "list", "create": "create", "delete": "delete", "patch": "patch", "replace": "update"}
RESOURCES = {
    "lease": "leases",
    "pod": "pods",
    "network_policy": "networkpolicies",
    "job": "jobs",
    "endpoint_slice": "endpointslices",
    "service": "services",
}
# The API server's own Service and EndpointSlices live in `default`; everything else the activities touch lives
# beside Contour.
IN_DEFAULT = {"endpointslices", "services"}
# Calls made on one named object only, granted with resourceNames.
NAMED = {("default", "", "services"): "kubernetes"}


def load_render() -> Any:
    spec = importlib.util.spec_from_file_location("chaoscontour_deploy_render", DEPLOY / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def manifests() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for name in ("rbac.yaml", "pvc.yaml", "cronjob.yaml", "journal-reader.yaml"):
        docs += [(name, d) for d in yaml.safe_load_all((DEPLOY / name).read_text(encoding="utf-8")) if d]
    docs.append(("render.py", load_render().render_configmap(REPO / "experiments")))
    return docs


def calls_in_activities() -> set[tuple[str, str, str, str]]:
    """``(namespace, api group, resource, verb)`` for every ``k.<group>.<verb>_namespaced_<kind>`` call."""
    found = set()
    pattern = re.compile(r"\bk\.(\w+)\.(read|list|create|delete|patch|replace)_namespaced_(\w+?)\b")
    for path in ACTIVITY_SOURCES:
        for group, verb, kind in pattern.findall(path.read_text(encoding="utf-8")):
            resource = RESOURCES[kind]  # a KeyError here means a new kind: add it to RESOURCES and to rbac.yaml
            namespace = "default" if resource in IN_DEFAULT else NAMESPACE
            found.add((namespace, GROUPS[group], resource, VERBS[verb]))
    return found


def granted_by_rbac_yaml() -> set[tuple[str, str, str, str]]:
    granted = set()
    for doc in yaml.safe_load_all((DEPLOY / "rbac.yaml").read_text(encoding="utf-8")):
        if doc and doc["kind"] == "Role":
            for rule in doc["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            granted.add((doc["metadata"]["namespace"], group, resource, verb))
        assert not doc or doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"), "no cluster-wide grants"
    return granted


def test_roles_grant_exactly_the_calls_the_activities_make():
    needed = calls_in_activities()
    assert ("projectcontour", "", "pods", "delete") in needed  # the scan sees the activities at all
    assert granted_by_rbac_yaml() == needed


@pytest.fixture
def dyn(api: client.ApiClient) -> dynamic.DynamicClient:
    return dynamic.DynamicClient(api)


@pytest.fixture
def contour_namespace(api: client.ApiClient) -> str:
    """``projectcontour`` with its ``default`` ServiceAccount (no controller-manager runs to create it)."""
    core = client.CoreV1Api(api)
    for create, args in (
        (core.create_namespace, ({"metadata": {"name": NAMESPACE}},)),
        (core.create_namespaced_service_account, (NAMESPACE, {"metadata": {"name": "default"}})),
    ):
        try:
            create(*args)
        except ApiException as exc:
            if exc.status != 409:
                raise
    return NAMESPACE


def dry_run_apply(dyn: dynamic.DynamicClient, doc: dict[str, Any]) -> Any:
    resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
    return resource.server_side_apply(
        body=doc,
        name=doc["metadata"]["name"],
        namespace=doc["metadata"].get("namespace"),
        field_manager="chaoscontour-test",
        force_conflicts=True,
        dry_run="All",
        query_params=[("fieldValidation", "Strict")],
    )


@pytest.mark.parametrize(("source", "index"), [(s, i) for i, (s, _) in enumerate(manifests())])
def test_manifest_passes_server_side_dry_run(dyn, contour_namespace, source, index):
    doc = manifests()[index][1]
    applied = dry_run_apply(dyn, doc)
    assert applied.kind == doc["kind"] and applied.metadata.name == doc["metadata"]["name"]
    if doc["kind"] == "CronJob":
        spec = applied.spec
        assert spec.concurrencyPolicy == "Forbid" and spec.suspend is True
        assert spec.jobTemplate.spec.backoffLimit == 0 and spec.jobTemplate.spec.activeDeadlineSeconds > 0
        pod = spec.jobTemplate.spec.template.spec
        env = {e.name: e.value for e in pod.containers[0].env}
        assert env["CHAOSTOOLKIT_IN_POD"] == "true"
        assert "--rollback-strategy always" in pod.containers[0].args[0]
        assert pod.serviceAccountName == "chaoscontour"
        # Not selected by the fault's default selector (app=contour), or the game day would cut itself off.
        assert (spec.jobTemplate.spec.template.metadata.labels or {}).get("app") != "contour"
    # dryRun=All persisted nothing.
    with pytest.raises(ApiException) as missing:
        dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"]).get(
            name=doc["metadata"]["name"], namespace=doc["metadata"].get("namespace")
        )
    assert missing.value.status == 404


def test_dry_run_rejects_a_misspelt_field(dyn, contour_namespace):
    """The dry run is strict: a typo in a manifest fails it, so a passing dry run means something."""
    (cronjob,) = [d for s, d in manifests() if d["kind"] == "CronJob"]
    cronjob["spec"]["concurrencyPolicyy"] = "Forbid"
    with pytest.raises(ApiException) as rejected:
        dry_run_apply(dyn, cronjob)
    assert "concurrencyPolicyy" in str(rejected.value.body)


@pytest.fixture
def applied_rbac(dyn: dynamic.DynamicClient, contour_namespace: str) -> Iterator[None]:
    docs = [d for s, d in manifests() if s == "rbac.yaml"]
    for doc in docs:
        dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"]).server_side_apply(
            body=doc, name=doc["metadata"]["name"], namespace=doc["metadata"]["namespace"], field_manager="test"
        )
    yield
    for doc in reversed(docs):
        try:
            dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"]).delete(
                name=doc["metadata"]["name"], namespace=doc["metadata"]["namespace"]
            )
        except ApiException as exc:
            if exc.status != 404:
                raise


def allowed(
    api: client.ApiClient,
    namespace: str,
    group: str,
    resource: str,
    verb: str,
    name: str | None = None,
    subresource: str | None = None,
) -> bool:
    """What the API server's authorizer answers for the ServiceAccount (a SubjectAccessReview)."""
    attributes = client.V1ResourceAttributes(
        namespace=namespace, group=group, resource=resource, verb=verb, name=name, subresource=subresource
    )
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(user=SA_USER, groups=SA_GROUPS, resource_attributes=attributes)
    )
    answer: Any = client.AuthorizationV1Api(api).create_subject_access_review(review)
    return bool(answer.status.allowed)


def test_service_account_may_make_every_call_of_the_activities(api, applied_rbac):
    needed = sorted(calls_in_activities())
    refused = [
        call for call in needed if not allowed(api, *call, **({"name": NAMED[call[:3]]} if call[:3] in NAMED else {}))
    ]
    assert refused == []


@pytest.mark.parametrize(
    ("namespace", "group", "resource", "verb"),
    [
        (NAMESPACE, "", "secrets", "get"),
        (NAMESPACE, "", "secrets", "list"),
        ("default", "", "secrets", "list"),
        ("kube-system", "", "secrets", "get"),
        (NAMESPACE, "apps", "deployments", "delete"),
        (NAMESPACE, "apps", "deployments", "get"),
        (NAMESPACE, "", "configmaps", "get"),
        (NAMESPACE, "", "pods/exec", "create"),
        (NAMESPACE, "coordination.k8s.io", "leases", "update"),
        (NAMESPACE, "networking.k8s.io", "networkpolicies", "patch"),
        ("kube-system", "", "pods", "delete"),
        ("kube-system", "networking.k8s.io", "networkpolicies", "create"),
        ("default", "", "services", "list"),
        ("", "", "nodes", "list"),
        ("", "", "namespaces", "get"),
    ],
)
def test_service_account_may_not_do_anything_else(api, applied_rbac, namespace, group, resource, verb):
    resource, _, subresource = resource.partition("/")
    assert not allowed(api, namespace, group, resource, verb, subresource=subresource or None)


def test_service_account_may_read_no_other_service_in_default(api, applied_rbac):
    assert not allowed(api, "default", "", "services", "get", name="some-app")
