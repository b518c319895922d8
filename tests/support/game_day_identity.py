"""The game-day identity of ``deploy/`` -- its RBAC and its admission policies -- applied to a test control plane.

The manifests are applied as written, moved into the test's namespace: ``projectcontour`` becomes the fresh
namespace (the admission policies name the ServiceAccount, not its namespace); cluster-scoped objects and those
in ``default`` get a per-namespace suffix, which does not change what they grant or refuse.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, dynamic
from kubernetes.client.rest import ApiException

from tests.support.paths import ROOT

DEPLOY = ROOT / "deploy"
RBAC_YAML = DEPLOY / "rbac.yaml"
ADMISSION_YAML = DEPLOY / "admission-policy.yaml"
MANIFEST_NAMESPACE = "projectcontour"
SERVICE_ACCOUNT = "chaoscontour"
# How long a new Role, RoleBinding or admission policy may take to reach the API server's caches. Seen: well under
# a second; generous because the machines running the suite are shared.
CACHE_DEADLINE_S = 30.0


def _documents(path: Path) -> list[dict[str, Any]]:
    documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    assert documents, f"{path} is empty"
    return documents


def _suffixed(name: str, namespace: str) -> str:
    return f"{name}-{namespace}"[:253]


def rbac_documents(namespace: str) -> list[dict[str, Any]]:
    """deploy/rbac.yaml with ``projectcontour`` replaced by ``namespace``."""
    documents = _documents(RBAC_YAML)
    for doc in documents:
        metadata = doc["metadata"]
        if metadata.get("namespace") == MANIFEST_NAMESPACE:
            metadata["namespace"] = namespace
        elif metadata.get("namespace") == "default":
            metadata["name"] = _suffixed(metadata["name"], namespace)
            if doc["kind"] == "RoleBinding" and doc["roleRef"]["kind"] == "Role":
                doc["roleRef"]["name"] = _suffixed(doc["roleRef"]["name"], namespace)
        for subject in doc.get("subjects") or []:
            if subject.get("namespace") == MANIFEST_NAMESPACE:
                subject["namespace"] = namespace
    return documents


def admission_documents(namespace: str) -> list[dict[str, Any]]:
    """deploy/admission-policy.yaml, policies and bindings renamed per test namespace. Their conditions are used as
    written: they match the ServiceAccount ``chaoscontour`` of any namespace, so the test's is guarded as
    ``projectcontour``'s would be."""
    documents = _documents(ADMISSION_YAML)
    for doc in documents:
        doc["metadata"]["name"] = _suffixed(doc["metadata"]["name"], namespace)
        spec = doc["spec"]
        if doc["kind"] == "ValidatingAdmissionPolicyBinding":
            spec["policyName"] = _suffixed(spec["policyName"], namespace)
            continue
        conditions = " ".join(c["expression"] for c in spec["matchConditions"])
        assert f"endsWith(':{SERVICE_ACCOUNT}')" in conditions, f"{ADMISSION_YAML}: who does it guard?"
        assert MANIFEST_NAMESPACE not in conditions, f"{ADMISSION_YAML}: a namespace overlay would disable it"
    return documents


def _resource(dyn: dynamic.DynamicClient, doc: dict[str, Any]) -> Any:
    return dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])


@contextmanager
def applied(api: client.ApiClient, documents: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Create ``documents`` with strict field validation (a misspelt field fails); delete them again at the end."""
    dyn = dynamic.DynamicClient(api)
    created: list[dict[str, Any]] = []
    try:
        for doc in documents:
            _resource(dyn, doc).create(
                body=doc, namespace=doc["metadata"].get("namespace"), query_params=[("fieldValidation", "Strict")]
            )
            created.append(doc)
        yield documents
    finally:
        for doc in reversed(created):
            try:
                _resource(dyn, doc).delete(name=doc["metadata"]["name"], namespace=doc["metadata"].get("namespace"))
            except ApiException as exc:
                if exc.status != 404:
                    raise


def refusal(call: Callable[..., Any], *args: Any, **kwargs: Any) -> ApiException | None:
    """The ``ApiException`` a call raised, or ``None`` when it was accepted."""
    try:
        call(*args, **kwargs)
    except ApiException as exc:
        return exc
    return None


def refused_by_policy(exc: ApiException | None) -> bool:
    """Whether an admission policy (rather than RBAC, or nothing) refused the request."""
    return exc is not None and exc.status == 422 and "ValidatingAdmissionPolicy" in str(exc.body)


def wait_until_refused_by_policy(
    call: Callable[..., Any], *args: Any, deadline_s: float = CACHE_DEADLINE_S, **kwargs: Any
) -> ApiException:
    """Repeat a request the policies refuse until they do: until then the API server's caches lack the new Role,
    binding or policy (403 from RBAC, or an acceptance). Pass only dry-run or refused requests."""
    deadline = time.monotonic() + deadline_s
    while True:
        exc = refusal(call, *args, **kwargs)
        if refused_by_policy(exc):
            assert exc is not None
            return exc
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no admission policy refused the request within {deadline_s:.0f} s; last answer: "
                f"{'accepted' if exc is None else f'{exc.status} {exc.body}'}"
            )
        time.sleep(0.1)


def wait_for_admission_policies(admin: client.ApiClient, as_service_account: client.ApiClient, namespace: str) -> None:
    """Return once each of the three policies refuses the ServiceAccount a request (dry runs: nothing persists).

    The pod policy needs a pod that is not Contour's to refuse the deletion of: one is created and removed again.
    """
    jobs, networking = client.BatchV1Api(as_service_account), client.NetworkingV1Api(as_service_account)
    job: Any = {
        "metadata": {"name": "probe-runs-a-pod", "labels": {"app.kubernetes.io/managed-by": "chaoscontour"}},
        "spec": {
            "parallelism": 1,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "containers": [{"name": "c", "image": "probe"}],
                }
            },
        },
    }
    wait_until_refused_by_policy(jobs.create_namespaced_job, namespace, job, dry_run="All")
    policy: Any = {"metadata": {"name": "probe-not-ours"}, "spec": {"podSelector": {}}}
    wait_until_refused_by_policy(networking.create_namespaced_network_policy, namespace, policy, dry_run="All")
    core = client.CoreV1Api(admin)
    bystander: Any = {
        "metadata": {"name": "probe-bystander", "labels": {"app": "bystander"}},
        "spec": {"containers": [{"name": "c", "image": "probe"}]},
    }
    core.create_namespaced_pod(namespace, bystander)
    try:
        wait_until_refused_by_policy(
            client.CoreV1Api(as_service_account).delete_namespaced_pod, "probe-bystander", namespace, dry_run="All"
        )
    finally:
        core.delete_namespaced_pod("probe-bystander", namespace, grace_period_seconds=0)
