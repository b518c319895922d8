"""The Kubernetes edge: one way to get API clients, and API failures turned into sentences a user can act on.

Clients come from chaostoolkit-kubernetes' ``create_k8s_api_client`` so that kubeconfig, ``KUBERNETES_CONTEXT``,
``CHAOSTOOLKIT_IN_POD=true`` and the ``KUBERNETES_HOST`` family behave exactly as in the rest of the ecosystem.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar, overload

from chaosk8s import create_k8s_api_client
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets
from kubernetes import client
from kubernetes.client import V1DeleteOptions
from kubernetes.client.rest import ApiException
from kubernetes.config import ConfigException, kube_config
from urllib3.exceptions import HTTPError as Urllib3Error

__all__ = [
    "REQUEST_TIMEOUT_S",
    "ApiUnavailable",
    "Kube",
    "call",
    "delete_if_present",
    "explain",
    "is_not_found",
    "kube",
    "read_lease",
    "read_lease_at",
    "to_dict",
    "list_pods",
    "delete_in_background",
    "patch_job_deadline",
    "pod_proxy_get",
    "read_if_present",
]

# Every API call carries its own deadline: the python provider never enforces an activity's `timeout`, and a
# request to an unreachable API server would otherwise hang the whole experiment.
REQUEST_TIMEOUT_S = 15.0

T = TypeVar("T")
G = TypeVar("G")


class _ApiGroup(Generic[G]):
    """A typed API group (``client.CoreV1Api`` and the like) built on the owning :class:`Kube`'s ``ApiClient``."""

    def __init__(self, group: Callable[[client.ApiClient], G]) -> None:
        self.group = group

    @overload
    def __get__(self, kube: None, owner: type | None = None) -> "_ApiGroup[G]": ...
    @overload
    def __get__(self, kube: "Kube", owner: type | None = None) -> G: ...
    def __get__(self, kube: "Kube | None", owner: type | None = None) -> "G | _ApiGroup[G]":
        return self if kube is None else self.group(kube.api)  # looked up on the class itself: the descriptor


@dataclass(frozen=True)
class Kube:
    """The typed API groups the activities use, sharing one ``ApiClient``."""

    api: client.ApiClient

    core = _ApiGroup(client.CoreV1Api)
    coordination = _ApiGroup(client.CoordinationV1Api)
    networking = _ApiGroup(client.NetworkingV1Api)
    discovery = _ApiGroup(client.DiscoveryV1Api)
    batch = _ApiGroup(client.BatchV1Api)


def kube(secrets: Secrets = None) -> Kube:
    """API clients configured as chaostoolkit-kubernetes configures them (kubeconfig, in-pod or environment)."""
    # The kubernetes package reads $KUBECONFIG once, when imported; chaosk8s checks its current value. Keep the two
    # in step so a KUBECONFIG set later in a long-lived process (a test session, a notebook) is the one used.
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = os.environ.get("KUBECONFIG", "~/.kube/config")
    try:
        return Kube(create_k8s_api_client(secrets))
    except (ConfigException, OSError) as exc:
        raise ActivityFailed(
            f"cannot configure a Kubernetes client: {exc}. Set KUBECONFIG (and KUBERNETES_CONTEXT), run in a pod "
            "with CHAOSTOOLKIT_IN_POD=true, or set KUBERNETES_HOST with a token or certificate"
        ) from exc


class ApiUnavailable(ActivityFailed):
    """A failure that may heal by itself (unreachable API server, 5xx, 429): the only kind a wait retries.

    A missing object or namespace (404), bad credentials (401) or RBAC (403) do not heal while we wait, so they
    fail at once with their cause instead of spending the whole wait on a typo.
    """


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 404


def explain(exc: BaseException, doing: str) -> ActivityFailed:
    """An ``ActivityFailed`` that says what we were doing, why it failed and what to fix.

    ``doing`` completes "failed to ...", e.g. ``"read Lease projectcontour/leader-elect"``.
    """
    if isinstance(exc, ApiException):
        status = exc.status
        if status == 401:
            why = "the API server rejected our credentials (401); check the kubeconfig or the token"
        elif status == 403:
            why = (
                "RBAC forbids it (403); grant the permissions listed in chaoscontour's docs/operations.md (RBAC) to "
                "the identity running the experiment"
            )
        elif status == 404:
            why = "it does not exist (404); check the namespace and the name"
        elif status == 409:
            why = "it conflicts with an existing object (409)"
        elif status == 422:
            why = f"the API server found it invalid (422): {_reason(exc)}"
        else:
            why = f"the API server answered {status} {exc.reason}: {_reason(exc)}"
        if status is None or status >= 500 or status in (408, 429):
            return ApiUnavailable(f"failed to {doing}: {why}")
        return ActivityFailed(f"failed to {doing}: {why}")
    if isinstance(exc, (Urllib3Error, OSError)):
        return ApiUnavailable(
            f"failed to {doing}: the Kubernetes API server could not be reached ({type(exc).__name__}: {exc}); "
            "check KUBECONFIG / KUBERNETES_CONTEXT and that the cluster is up"
        )
    return ActivityFailed(f"failed to {doing}: {type(exc).__name__}: {exc}")


def _reason(exc: ApiException) -> str:
    import json

    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return str(exc.body or exc.reason)
    return str(body.get("message") or exc.reason)


def call(doing: str, fn: Callable[..., T], *args: Any, not_found: str | None = None, **kwargs: Any) -> T:
    """Call a client method with our request deadline, turning any failure into an explained ``ActivityFailed``.

    ``not_found``, when given, is the whole message for a 404 (say what is missing and what to check).
    """
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT_S)
    try:
        return fn(*args, **kwargs)
    except (ApiException, Urllib3Error, OSError) as exc:
        if not_found is not None and is_not_found(exc):
            raise ActivityFailed(not_found) from exc
        raise explain(exc, doing) from exc


def to_dict(k: Kube, obj: Any) -> dict[str, Any]:
    """An API object as the plain camelCase mapping the domain layer works on."""
    return dict(k.api.sanitize_for_serialization(obj))


def read_lease(k: Kube, namespace: str, name: str) -> dict[str, Any]:
    """The Lease as an API-shaped mapping; a missing Lease is an ``ActivityFailed`` that names it."""
    lease = call(
        f"read Lease {namespace}/{name}",
        k.coordination.read_namespaced_lease,
        name,
        namespace,
        not_found=_lease_not_found(namespace, name),
    )
    return to_dict(k, lease)


def _lease_not_found(namespace: str, name: str) -> str:
    return (
        f"Lease {namespace}/{name} not found: is Contour running with leader election on (no "
        "--disable-leader-election), and is its Lease in this namespace (Contour's "
        "--leader-election-resource-namespace; set lease_namespace)? Gateway-provisioned Contours use "
        "'leader-elect-<gateway-name>'"
    )


def read_lease_at(k: Kube, namespace: str, name: str) -> tuple[dict[str, Any], datetime | None]:
    """The Lease and the API server's own clock when it answered (its ``Date`` header; ``None`` if absent).

    The ``Date`` lets a probe judge the Lease's age on the cluster's clock instead of the runner's, which may be
    off by minutes on a laptop or a CI runner.
    """
    lease, _status, headers = call(
        f"read Lease {namespace}/{name}",
        k.coordination.read_namespaced_lease_with_http_info,
        name,
        namespace,
        not_found=_lease_not_found(namespace, name),
    )
    date = None
    raw = (headers or {}).get("Date") or (headers or {}).get("date")
    if raw:
        try:
            date = parsedate_to_datetime(str(raw))
        except (TypeError, ValueError):
            date = None
    return to_dict(k, lease), date


def _unless_gone(doing: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[bool, Any]:
    """``(True, result)`` of a client call with our request deadline; ``(False, None)`` when the object does not
    exist (404); any other failure explained."""
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT_S)
    try:
        return True, fn(*args, **kwargs)
    except (ApiException, Urllib3Error, OSError) as exc:
        if is_not_found(exc):
            return False, None
        raise explain(exc, doing) from exc


def patch_job_deadline(k: Kube, namespace: str, name: str, deadline_s: int) -> bool:
    """Set a Job's ``activeDeadlineSeconds``; returns ``False`` when the Job is gone (nothing left to extend)."""
    patch = {"spec": {"activeDeadlineSeconds": deadline_s}}
    doing = f"extend the deadline of Job {namespace}/{name}"
    return _unless_gone(doing, k.batch.patch_namespaced_job, name, namespace, patch)[0]


def read_if_present(doing: str, fn: Callable[..., Any], *args: Any) -> dict[str, Any] | None:
    """Call a ``read_*`` method; ``None`` when the object does not exist, an explained failure otherwise."""
    found, obj = _unless_gone(doing, fn, *args)
    return dict(client.ApiClient().sanitize_for_serialization(obj)) if found else None


def delete_if_present(doing: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """Call a ``delete_*`` method; an object already gone is success. Returns whether it was there to delete."""
    return _unless_gone(doing, fn, *args, **kwargs)[0]


def list_pods(k: Kube, namespace: str, label_selector: str) -> list[dict[str, Any]]:
    """The pods of ``label_selector`` in ``namespace`` (a server-side selector, never a full list), as mappings."""
    pods = call(
        f"list pods {label_selector!r} in namespace {namespace}",
        k.core.list_namespaced_pod,
        namespace,
        label_selector=label_selector,
    )
    return list(to_dict(k, pods).get("items") or [])


def pod_proxy_get(k: Kube, namespace: str, pod: str, port: int, path: str, timeout_s: float = 2.0) -> str:
    """GET ``path`` from ``port`` of a pod through the API server's pod proxy (``pods/proxy``, verb get): how a
    probe running outside the cluster reads a pod's metrics. Whatever the pod answers other than 2xx, or a pod that
    does not answer, comes back as an explained ``ActivityFailed`` (the API server answers 503 for a pod it cannot
    reach)."""
    text = call(
        f"read {path} from port {port} of pod {namespace}/{pod} through the API server's pod proxy",
        k.core.connect_get_namespaced_pod_proxy_with_path,
        f"{pod}:{port}",
        namespace,
        path,
        _request_timeout=timeout_s,
    )
    return str(text)


def delete_in_background(k: Kube, kind: str, namespace: str, name: str, doing: str = "") -> bool:
    """Delete one NetworkPolicy or Job of ours, its dependents in the background; already gone is success.

    Returns whether it was there to delete. ``doing`` names it in an error (default ``delete KIND NS/NAME``).
    """
    delete = {
        "NetworkPolicy": k.networking.delete_namespaced_network_policy,
        "Job": k.batch.delete_namespaced_job,
    }[kind]
    return delete_if_present(
        doing or f"delete {kind} {namespace}/{name}",
        delete,
        name,
        namespace,
        body=V1DeleteOptions(propagation_policy="Background"),
    )
