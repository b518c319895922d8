"""The release manifest's loading: what is applied, in which order, and what is refused."""

from __future__ import annotations

import pytest

from chaoscontour_sandbox import release

MANIFEST = """
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: envoy, namespace: projectcontour}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: httpproxies.projectcontour.io}
---
# a comment-only document
---
apiVersion: v1
kind: Namespace
metadata: {name: projectcontour}
---
apiVersion: batch/v1
kind: Job
metadata: {name: contour-certgen-v1-33-6, namespace: projectcontour}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: contour, namespace: projectcontour}
"""


def test_objects_are_applied_without_crds_namespace_and_rbac_first() -> None:
    objects = release.load(MANIFEST)
    order = [(o["kind"], o["metadata"]["name"]) for o in release.objects_to_apply(objects)]
    assert order == [
        ("Namespace", "projectcontour"),
        ("RoleBinding", "contour"),
        ("DaemonSet", "envoy"),
        ("Job", "contour-certgen-v1-33-6"),
    ]


def test_the_certgen_job_is_found() -> None:
    assert release.certgen_job(release.load(MANIFEST))["metadata"]["name"] == "contour-certgen-v1-33-6"


def test_a_manifest_without_its_job_is_refused() -> None:
    with pytest.raises(release.ReleaseManifestError, match="found 0"):
        release.certgen_job(release.load("kind: Namespace\nmetadata: {name: x}\n"))


def test_an_unexpected_kind_is_refused_by_name() -> None:
    with pytest.raises(release.ReleaseManifestError, match="document 1 is a StatefulSet"):
        release.load("kind: Namespace\nmetadata: {name: x}\n---\nkind: StatefulSet\nmetadata: {name: y}\n")


def test_a_document_without_a_name_is_refused() -> None:
    with pytest.raises(release.ReleaseManifestError, match="document 0 is not a Kubernetes object"):
        release.load("kind: Namespace\nmetadata: {}\n")


def test_invalid_yaml_names_the_source() -> None:
    with pytest.raises(release.ReleaseManifestError, match=r"contour\.yaml: not valid YAML"):
        release.load("kind: [", source="contour.yaml")


def test_describe_counts_kinds() -> None:
    assert release.describe(release.load(MANIFEST)) == (
        "1 CustomResourceDefinition, 1 DaemonSet, 1 Job, 1 Namespace, 1 RoleBinding"
    )
