"""Route objects (Contour's HTTPProxy, Gateway API's HTTPRoute): reads and resourceVersion-safe writes, with the API
server's clock, for the route marker and cleanup.

A write replaces the object as read, ``metadata.resourceVersion`` included, so the API server refuses it (409) when
anyone changed the HTTPProxy in between; :func:`update` then reads it again and redoes the change, a few times.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from chaoslib.exceptions import ActivityFailed
from kubernetes import client
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from chaoscontour.edges.kube import REQUEST_TIMEOUT_S, Kube, call, explain, is_not_found

__all__ = ["HTTPPROXY", "HTTPROUTE", "KINDS", "RouteKind", "list_at", "read_at", "update_route"]


@dataclass(frozen=True)
class RouteKind:
    """A kind of route object, as the API server serves it."""

    kind: str
    group: str
    version: str
    plural: str


HTTPPROXY = RouteKind("HTTPProxy", "projectcontour.io", "v1", "httpproxies")
HTTPROUTE = RouteKind("HTTPRoute", "gateway.networking.k8s.io", "v1", "httproutes")
KINDS = (HTTPPROXY, HTTPROUTE)
MAX_ATTEMPTS = 5
T = TypeVar("T")


def _api(k: Kube) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(k.api)


def _server_now(headers: Any) -> datetime:
    """The API server's clock from its ``Date`` header (second resolution), else this machine's UTC clock."""
    raw = (headers or {}).get("Date") or (headers or {}).get("date")
    if raw:
        try:
            return parsedate_to_datetime(str(raw)).astimezone(UTC)
        except (TypeError, ValueError):
            pass
    return datetime.now(UTC)


def read_at(k: Kube, namespace: str, name: str, kind: RouteKind = HTTPPROXY) -> tuple[dict[str, Any] | None, datetime]:
    """The route object (``None`` when it does not exist) and the API server's clock when it answered."""
    try:
        found: Any
        found, _status, headers = _api(k).get_namespaced_custom_object_with_http_info(
            kind.group, kind.version, namespace, kind.plural, name, _request_timeout=REQUEST_TIMEOUT_S
        )
    except (ApiException, Urllib3Error, OSError) as exc:
        if is_not_found(exc):
            return None, _server_now(getattr(exc, "headers", None))
        raise explain(exc, f"read {kind.kind} {namespace}/{name}") from exc
    return dict(found), _server_now(headers)


def list_at(k: Kube, namespace: str | None, kind: RouteKind = HTTPPROXY) -> tuple[list[dict[str, Any]], datetime]:
    """Every route object of ``kind`` in ``namespace`` (all namespaces when ``None``) and the API server's clock; an
    API server without the kind's CRD has none."""
    api = _api(k)
    found: Any
    try:
        if namespace:
            found, _status, headers = api.list_namespaced_custom_object_with_http_info(
                kind.group, kind.version, namespace, kind.plural, _request_timeout=REQUEST_TIMEOUT_S
            )
        else:
            found, _status, headers = api.list_cluster_custom_object_with_http_info(
                kind.group, kind.version, kind.plural, _request_timeout=REQUEST_TIMEOUT_S
            )
    except (ApiException, Urllib3Error, OSError) as exc:
        if is_not_found(exc):
            return [], _server_now(getattr(exc, "headers", None))
        raise explain(exc, f"list {kind.plural}") from exc
    # A list's items carry no kind: the route marker tells an HTTPRoute's rules from an HTTPProxy's routes by it.
    return [dict(item, kind=kind.kind) for item in dict(found).get("items") or []], _server_now(headers)


def update_route(
    k: Kube,
    namespace: str,
    name: str,
    change: Callable[[dict[str, Any] | None, datetime], tuple[T, bool]],
    kind: RouteKind = HTTPPROXY,
) -> T:
    """Read the route object, let ``change(obj, server_now)`` edit it in place and say whether to write it, write
    it with the resourceVersion read; on a conflict, do it all again (at most ``MAX_ATTEMPTS`` times).

    ``change`` gets ``None`` for a missing object (and must then not ask for a write). Returns what it returned.
    """
    for _ in range(MAX_ATTEMPTS):
        proxy, now = read_at(k, namespace, name, kind)
        result, write = change(proxy, now)
        if not write or proxy is None:
            return result
        try:
            call(
                f"update {kind.kind} {namespace}/{name}",
                _api(k).replace_namespaced_custom_object,
                kind.group,
                kind.version,
                namespace,
                kind.plural,
                name,
                proxy,
            )
        except ActivityFailed as exc:
            cause = exc.__cause__
            if isinstance(cause, ApiException) and cause.status == 409:
                continue
            raise
        return result
    raise ActivityFailed(
        f"failed to update {kind.kind} {namespace}/{name}: it changed under each of {MAX_ATTEMPTS} attempts (409 "
        "Conflict every time); something rewrites it continuously. Nothing of ours was written"
    )
