"""ServiceAccount identities for the integration tests: a kubeconfig that is exactly one ServiceAccount."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from chaoscontour_sandbox import controlplane_flags as flags
from chaoscontour_sandbox.controlplane import ControlPlane

__all__ = ["service_account_kubeconfig"]


def service_account_kubeconfig(
    plane: ControlPlane, namespace: str, name: str, path: Path | None = None, *, expiration_s: int = 24 * 3600
) -> Path:
    """Write a kubeconfig that authenticates as ServiceAccount ``namespace/name`` and return its path.

    The ServiceAccount is created if missing; the token comes from the TokenRequest API (as a pod's projected token
    does), so the identity has exactly the permissions RBAC grants it and nothing else. The token is written into
    the kubeconfig file (mode 0600) only, never printed.
    """
    with plane.api_client() as api:
        core = client.CoreV1Api(api)
        try:
            core.create_namespaced_service_account(
                namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
        # No audiences: the API server defaults them to its own (--api-audiences, else the issuer).
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_s)
        )
        granted: Any = core.create_namespaced_service_account_token(name, namespace, request)
        token = str(granted.status.token)
    target = path or plane.workdir / "kubeconfigs" / f"{namespace}.{name}.kubeconfig"
    user = f"system:serviceaccount:{namespace}:{name}"
    flags.write_kubeconfig(
        target, flags.kubeconfig_document(plane.url, plane.ca_file.read_bytes(), user, {"token": token})
    )
    return target
