"""The game-day manifests in ``deploy/`` against the real kube-apiserver of the control-plane harness.

* ``deploy/`` is built with the pinned kustomize, as ``kubectl apply -k deploy/`` builds it: exactly the objects of
  the files it lists, and the experiments ConfigMap holding every ``experiments/*.json`` byte for byte.
* Every object it builds (and ``journal-reader.yaml``) passes a server-side apply with ``dryRun=All`` and strict
  field validation; the whole build is then applied for real, and the CronJob's volume finds its ConfigMap.
* The ServiceAccount, with ``rbac.yaml`` really applied, may make every Kubernetes API call the activities make and
  nothing else that matters (SubjectAccessReview, answered by the API server's RBAC authorizer).
* The Roles grant exactly the calls found in ``chaoscontour/activities`` (no more, no less), so the manifest and
  the code cannot drift apart silently.
"""

from __future__ import annotations

import functools
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, dynamic
from kubernetes.client.rest import ApiException

from chaoscontour_sandbox import binaries
from tests.support.paths import ROOT

DEPLOY = ROOT / "deploy"
NAMESPACE = "projectcontour"
SA_USER = f"system:serviceaccount:{NAMESPACE}:chaoscontour"
SA_GROUPS = ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}", "system:authenticated"]

# Where the activities' API calls are made: the activities and the Kubernetes edge they share.
ACTIVITY_SOURCES = [*sorted((ROOT / "chaoscontour" / "activities").glob("*.py")), ROOT / "chaoscontour/edges/kube.py"]
GROUPS = {
    "core": "",
    "coordination": "coordination.k8s.io",
    "networking": "networking.k8s.io",
    "discovery": "discovery.k8s.io",
    "batch": "batch",
}
VERBS = {
    "read": "get",
    "list": "list",
    "create": "create",
    "delete": "delete",
    "patch": "patch",
    "replace": "update",
    "connect_get": "get",
}
RESOURCES = {
    "lease": "leases",
    "pod": "pods",
    "pod_proxy": "pods/proxy",
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


# Applied by hand when needed, so not part of the kustomization.
NOT_IN_KUSTOMIZATION = ("journal-reader.yaml",)


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def listed_objects(directory: Path = DEPLOY) -> list[tuple[str, str]]:
    """``(kind, name)`` of what a kustomization should build, read from the files it lists (no kustomize needed)."""
    (kustomization,) = yaml_docs(directory / "kustomization.yaml")
    found = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        found += (
            listed_objects(path) if path.is_dir() else [(d["kind"], d["metadata"]["name"]) for d in yaml_docs(path)]
        )
    found += [("ConfigMap", generator["name"]) for generator in kustomization.get("configMapGenerator", [])]
    return found


@functools.cache
def _kustomize_build() -> tuple[str, ...]:
    kustomize = binaries.find_binary("kustomize")
    assert kustomize is not None
    proc = subprocess.run([str(kustomize), "build", str(DEPLOY)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"kustomize build deploy/ failed:\n{proc.stderr}"
    return tuple(yaml.safe_dump(d) for d in yaml.safe_load_all(proc.stdout) if d)


@pytest.fixture
def built(require: Any) -> list[dict[str, Any]]:
    """What ``kubectl apply -k deploy/`` would send, from the pinned kustomize (fresh copies for each test)."""
    require("kustomize")
    return [yaml.safe_load(text) for text in _kustomize_build()]


def manifests() -> list[tuple[str, dict[str, Any]]]:
    """The documents of ``deploy/*.yaml`` as written (the RBAC tests read ``rbac.yaml`` without kustomize)."""
    return [
        (path.name, d)
        for path in sorted(DEPLOY.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for d in yaml_docs(path)
    ]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def calls_in_activities() -> set[tuple[str, str, str, str]]:
    """``(namespace, api group, resource, verb)`` for every ``k.<group>.<verb>_namespaced_<kind>`` call."""
    found = set()
    # `..._with_http_info` is the same API call, returning the status and headers as well.
    pattern = re.compile(
        r"\bk\.(\w+)\.(read|list|create|delete|patch|replace|connect_get)_namespaced_(\w+?)"
        r"(?:_with_path)?(?:_with_http_info)?\b"
    )
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


def test_kustomize_builds_exactly_the_objects_of_the_listed_files(built):
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == sorted(listed_objects())
    assert ("ConfigMap", "chaoscontour-experiments") in listed_objects()


def test_experiments_configmap_holds_every_experiment_byte_for_byte(built):
    """Each ``experiments/*.json`` is a key, unchanged; one missing from experiments/kustomization.yaml fails here."""
    configmap = find(built, "ConfigMap", "chaoscontour-experiments")
    experiments = {
        path.name: path.read_text(encoding="utf-8") for path in sorted((ROOT / "experiments").glob("*.json"))
    }
    assert configmap["data"] == experiments
    assert configmap["metadata"]["namespace"] == NAMESPACE
    assert configmap["metadata"]["labels"]["app.kubernetes.io/component"] == "game-day"
    # What the CronJob runs (EXPERIMENTS) is among the keys of the ConfigMap it mounts.
    pod = find(built, "CronJob", "chaoscontour-gameday")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "experiments"]
    assert volume["configMap"]["name"] == "chaoscontour-experiments"
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert set(env["EXPERIMENTS"].split()) <= set(experiments)


DRY_RUN_CASES = [
    *listed_objects(),
    *((d["kind"], d["metadata"]["name"]) for f in NOT_IN_KUSTOMIZATION for d in yaml_docs(DEPLOY / f)),
]


@pytest.mark.parametrize(("kind", "name"), DRY_RUN_CASES, ids=[f"{k}/{n}" for k, n in DRY_RUN_CASES])
def test_manifest_passes_server_side_dry_run(dyn, contour_namespace, built, kind, name):
    from_files = [d for f in NOT_IN_KUSTOMIZATION for d in yaml_docs(DEPLOY / f)]
    doc = find(built + from_files, kind, name)
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
    cronjob = find([d for _, d in manifests()], "CronJob", "chaoscontour-gameday")
    cronjob["spec"]["concurrencyPolicyy"] = "Forbid"
    with pytest.raises(ApiException) as rejected:
        dry_run_apply(dyn, cronjob)
    assert "concurrencyPolicyy" in str(rejected.value.body)


def delete_for_good(dyn: dynamic.DynamicClient, doc: dict[str, Any]) -> None:
    """Delete ``doc``'s object, and drop the finalizers no controller of this session removes (the PVC's
    ``kubernetes.io/pvc-protection``, which kube-controller-manager would lift), so nothing stays Terminating."""
    resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
    ref = {"name": doc["metadata"]["name"], "namespace": doc["metadata"].get("namespace")}
    try:
        resource.delete(**ref)
        resource.patch(body={"metadata": {"finalizers": None}}, content_type="application/merge-patch+json", **ref)
    except ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture
def applied_kustomization(
    dyn: dynamic.DynamicClient, contour_namespace: str, built: list[dict[str, Any]]
) -> Iterator[list[dict[str, Any]]]:
    """``kubectl apply -k deploy/`` for real (a server-side apply of the kustomize build), removed afterwards."""
    applied: list[dict[str, Any]] = []
    try:
        for doc in built:
            dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"]).server_side_apply(
                body=doc,
                name=doc["metadata"]["name"],
                namespace=doc["metadata"].get("namespace"),
                field_manager="chaoscontour-test",
                query_params=[("fieldValidation", "Strict")],
            )
            applied.append(doc)
        yield applied
    finally:
        for doc in reversed(applied):
            delete_for_good(dyn, doc)


def test_kustomization_applies_and_the_cronjob_finds_what_it_mounts(api, built, applied_kustomization):
    assert len(applied_kustomization) == len(built)
    core = client.CoreV1Api(api)
    cronjob: Any = client.BatchV1Api(api).read_namespaced_cron_job("chaoscontour-gameday", NAMESPACE)
    assert cronjob.spec.suspend is True
    pod = cronjob.spec.job_template.spec.template.spec
    volumes = {v.name: v for v in pod.volumes}
    configmap: Any = core.read_namespaced_config_map(volumes["experiments"].config_map.name, NAMESPACE)
    assert set(configmap.data) == {path.name for path in (ROOT / "experiments").glob("*.json")}
    core.read_namespaced_persistent_volume_claim(volumes["journals"].persistent_volume_claim.claim_name, NAMESPACE)
    core.read_namespaced_service_account(pod.service_account_name, NAMESPACE)


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
    """What the API server's authorizer answers for the ServiceAccount (a SubjectAccessReview); ``resource`` may
    name a subresource as RBAC does (``pods/proxy``)."""
    resource, _, sub = resource.partition("/")
    subresource = subresource or sub or None
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
