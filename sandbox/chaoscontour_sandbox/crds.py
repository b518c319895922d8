"""CustomResourceDefinitions into a control plane: Contour's, read from the pinned Contour module (never copied here).

The control plane and the tests install them before anything that uses them; each CRD is created, or replaced when
it exists, and waited for until the API server reports it ``Established`` (only then are its objects served).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from chaoscontour_sandbox import binaries

__all__ = ["CrdError", "read_crds", "install_crds", "install_crd_documents", "install_contour_crds"]


class CrdError(RuntimeError):
    """A CRD was not Established in time."""


def read_crds(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every document of the YAML files ``paths``; any other kind than a CRD is refused (``ValueError``)."""
    found: list[dict[str, Any]] = []
    for path in paths:
        for document in yaml.safe_load_all(Path(path).read_text()):
            if not document:
                continue
            if document.get("kind") != "CustomResourceDefinition":
                raise ValueError(f"{path}: {document.get('kind')!r} is not a CustomResourceDefinition")
            found.append(document)
    return found


def install_crds(
    kubeconfig: Path,
    paths: Iterable[Path],
    *,
    timeout_s: float = 60.0,
    progress: Callable[[str], None] | None = None,
) -> list[str]:
    """Create (or replace) every CRD in ``paths`` as the kubeconfig's user; wait until each is Established.

    Returns the CRD names. Documents of other kinds are refused before any is sent.
    """
    return install_crd_documents(kubeconfig, read_crds(paths), timeout_s=timeout_s, progress=progress)


def install_crd_documents(
    kubeconfig: Path,
    crds: list[dict[str, Any]],
    *,
    timeout_s: float = 60.0,
    progress: Callable[[str], None] | None = None,
) -> list[str]:
    """:func:`install_crds` for CRDs already read (say, the CRDs of a manifest that holds other objects too)."""
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    with config.new_client_from_config(config_file=str(kubeconfig)) as api:
        ext = client.ApiextensionsV1Api(api)
        for crd in crds:
            name = crd["metadata"]["name"]
            body: Any = crd  # the client accepts plain documents; its annotations name only its models
            try:
                ext.create_custom_resource_definition(body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                current: Any = ext.read_custom_resource_definition(name)
                body = dict(crd, metadata=dict(crd["metadata"], resourceVersion=current.metadata.resource_version))
                ext.replace_custom_resource_definition(name, body)
        names = [crd["metadata"]["name"] for crd in crds]
        deadline = time.monotonic() + timeout_s
        pending = set(names)
        while pending:
            for name in sorted(pending):
                status: Any = ext.read_custom_resource_definition(name).status
                conditions = (status.conditions if status else None) or []
                if any(c.type == "Established" and c.status == "True" for c in conditions):
                    pending.discard(name)
            if pending:
                if time.monotonic() > deadline:
                    raise CrdError(f"CRDs not Established within {timeout_s:.0f} s: {sorted(pending)}")
                time.sleep(0.1)
    if progress is not None:
        progress(f"control plane: installed {len(names)} CRDs")
    return names


def install_contour_crds(kubeconfig: Path, *, progress: Callable[[str], None] | None = None) -> list[str]:
    """Install Contour's CRDs, read from the pinned Contour module in the Go module cache."""
    path = binaries.contour_module_dir() / "examples" / "contour" / "01-crds.yaml"
    return install_crds(kubeconfig, [path], progress=progress)
