"""Where the xDS fault's target is: Contour's pods and Service, found in the cluster (never configured), the
labels of their namespace, and whether the run's policy still covers them at the end of the window."""

from dataclasses import dataclass
from typing import Any

from chaoslib.exceptions import ActivityFailed

from chaoscontour.activities._preflight import namespace_policies, require_pods, running_pods
from chaoscontour.domain import verification, xds
from chaoscontour.domain.inputs import require_name, require_namespace
from chaoscontour.domain.selectors import parse_label_selector
from chaoscontour.edges.kube import Kube, read_if_present

__all__ = ["Contour", "defeating_policies", "parse_contour", "uncovered_contour", "xds_target"]


@dataclass(frozen=True)
class Contour:
    """Where Contour's xDS server runs: the namespace and labels of its pods, the Service Envoy's bootstrap names
    (``""``: none) and the xDS port."""

    namespace: str
    labels: dict[str, str]
    service: str
    port: int = xds.XDS_PORT


def parse_contour(
    namespace: str, contour_namespace: Any, contour_selector: Any, contour_service: Any, port: int = xds.XDS_PORT
) -> Contour:
    """The ``contour_*`` arguments, strictly; ``contour_namespace`` defaults to the Envoy pods' ``namespace``."""
    return Contour(
        namespace=require_namespace(contour_namespace, "contour_namespace") if contour_namespace else namespace,
        labels=parse_label_selector(contour_selector),
        service=require_name(contour_service, "contour_service") if contour_service else "",
        port=port,
    )


def xds_target(k: Kube, contour: Contour) -> xds.XdsTarget:
    """The addresses of Contour's running pods and of its Service; refuses, creating nothing, when no Contour pod
    runs, the Service is missing or a pod has no address yet."""
    pods = require_pods(
        k, contour.namespace, contour.labels, "Set contour_namespace and contour_selector to where Contour runs"
    )
    svc = None
    if contour.service:
        where = f"{contour.namespace}/{contour.service}"
        svc = read_if_present(
            f"read Service {where}", k.core.read_namespaced_service, contour.service, contour.namespace
        )
        if svc is None:
            raise ActivityFailed(
                f"Service {where} not found; set contour_service to the Service Envoy's bootstrap names (empty: no "
                "Service)"
            )
    try:
        return xds.xds_target(pods, svc, contour.port)
    except ValueError as exc:
        raise ActivityFailed(f"block_xds_egress: {exc}") from exc


def _namespace_labels(k: Kube, namespace: str) -> dict[str, str]:
    """The labels of Contour's namespace, for the policies that select it; without RBAC for namespaces, the one
    label every namespace has."""
    try:
        found = read_if_present(f"read Namespace {namespace}", k.core.read_namespace, namespace)
    except ActivityFailed:
        found = None
    labels = dict(((found or {}).get("metadata") or {}).get("labels") or {})
    labels.setdefault(xds.NAMESPACE_NAME_LABEL, namespace)
    return labels


def defeating_policies(
    k: Kube, namespace: str, envoys: list[dict[str, Any]], contour: Contour, target: xds.XdsTarget
) -> list[str]:
    """Why the NetworkPolicies of ``namespace`` would keep ``target`` reachable from the ``envoys``, by address or
    by selecting Contour's running pods (see :func:`chaoscontour.domain.xds.xds_defeating_policies`)."""
    contour_pods = running_pods(k, contour.namespace, contour.labels)
    policies = namespace_policies(k, namespace)
    labels = _namespace_labels(k, contour.namespace)
    return xds.xds_defeating_policies(policies, envoys, contour_pods, labels, target)


def uncovered_contour(k: Kube, contour: Contour, policy: dict[str, Any] | None, reasons: list[str]) -> list[str]:
    """The current addresses of Contour's pods and Service that the run's ``policy`` does not block (none when the
    policy is gone): a Contour pod that replaced one during the fault has a new address, which Envoy could reach.
    Adds to ``reasons`` why that matters."""
    if policy is None:
        return []
    target = xds_target(k, contour)  # coverage is by address: the port does not enter into it
    uncovered = verification.uncovered_addresses(list(target.addresses), verification.blocked_networks(policy))
    if uncovered:
        reasons.append(
            f"Contour address(es) {', '.join(uncovered)} appeared during the fault and are not blocked: Envoy "
            "may have reached Contour through them"
        )
    return uncovered
