"""Contour's release manifest as the sandbox deploys it (pure: text in, objects out).

The manifest is ``examples/render/contour.yaml`` of the pinned Contour module, read from the Go module cache that the
build of ``contour`` fills (:func:`chaoscontour_sandbox.binaries.contour_module_dir`); nothing of it is kept in this
repository. It is what ``kubectl apply -f https://projectcontour.io/quickstart/contour.yaml`` installs: the
``projectcontour`` namespace, the certgen Job that writes the ``contourcert`` and ``envoycert`` Secrets (TLS between
Envoy and Contour), the ``contour`` ConfigMap, the ``contour`` Deployment (2 replicas, ``--incluster``,
``--config-path``), the ``envoy`` DaemonSet with its shutdown-manager, the Services and the RBAC.

It is applied as it is, its images built locally under the references it names
(:mod:`chaoscontour_sandbox.nodeimages`). What differs from a cloud cluster is the cluster's doing, not an edit:

- the ``envoy`` Service of type ``LoadBalancer`` gets no external address (no load-balancer controller runs);
  clients use the Envoy pod's address, or the node's hostPort.

The CustomResourceDefinitions in the manifest are left out here: the control plane installs the same module's CRDs
(``examples/contour/01-crds.yaml``) before anything else, so they are Established when the manifest is applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "MANIFEST",
    "ReleaseManifestError",
    "manifest_path",
    "load",
    "objects_to_apply",
    "certgen_job",
    "describe",
]

MANIFEST = Path("examples") / "render" / "contour.yaml"
NAMESPACE = "projectcontour"
# Applied first: what the others live in or refer to by name.
_FIRST = ("Namespace", "ServiceAccount", "ConfigMap", "ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding")
# The kinds the sandbox expects in the manifest; another kind means the pinned version changed its shape.
EXPECTED_KINDS = frozenset(
    {*_FIRST, "CustomResourceDefinition", "Job", "Service", "Deployment", "DaemonSet"},
)

Obj = dict[str, Any]


class ReleaseManifestError(ValueError):
    """The release manifest is missing or not what this sandbox knows how to run; the message says which."""


def manifest_path(module_dir: Path) -> Path:
    """The release manifest inside the Contour module at ``module_dir``."""
    return module_dir / MANIFEST


def load(text: str, source: str = str(MANIFEST)) -> list[Obj]:
    """The objects of the multi-document YAML ``text`` (empty documents skipped), checked for kind and name."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise ReleaseManifestError(f"{source}: not valid YAML: {exc}") from exc
    objects = []
    for index, document in enumerate(documents):
        if document is None:
            continue
        if (
            not isinstance(document, dict)
            or not document.get("kind")
            or not (document.get("metadata") or {}).get("name")
        ):
            raise ReleaseManifestError(f"{source}: document {index} is not a Kubernetes object with a kind and a name")
        if document["kind"] not in EXPECTED_KINDS:
            raise ReleaseManifestError(
                f"{source}: document {index} is a {document['kind']}, which the sandbox does not run "
                f"(expected only {', '.join(sorted(EXPECTED_KINDS))})"
            )
        objects.append(document)
    return objects


def objects_to_apply(objects: Sequence[Obj]) -> list[Obj]:
    """``objects`` without the CRDs (installed by the control plane), in apply order: what others refer to first."""
    kept = [o for o in objects if o["kind"] != "CustomResourceDefinition"]
    rank = {kind: i for i, kind in enumerate(_FIRST)}
    return sorted(kept, key=lambda o: rank.get(o["kind"], len(_FIRST)))


def certgen_job(objects: Sequence[Obj]) -> Obj:
    """The certgen Job (the one Job of the manifest), whose completion the Envoy and Contour pods wait for."""
    jobs = [o for o in objects if o["kind"] == "Job"]
    if len(jobs) != 1:
        raise ReleaseManifestError(f"expected one certgen Job in the release manifest, found {len(jobs)}")
    return jobs[0]


def describe(objects: Sequence[Obj]) -> str:
    """One line naming what the manifest deploys, for ``sandbox up``'s progress."""
    counts: dict[str, int] = {}
    for obj in objects:
        counts[obj["kind"]] = counts.get(obj["kind"], 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
