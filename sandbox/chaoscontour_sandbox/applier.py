"""Apply a user's manifests to a running sandbox, wait until they serve, and delete them again (the API edge).

Used by ``chaoscontour-sandbox up --manifests`` (after Contour and Envoy are up) and by ``sandbox apply`` /
``sandbox delete`` on a running sandbox: the same code path. :mod:`chaoscontour_sandbox.manifests` has checked and
ordered the objects before anything was started; here they are sent with server-side apply (field manager
``chaoscontour-sandbox-user``), then:

- every Deployment must become Ready (all replicas updated and ready) and every HTTPProxy ``valid``
  (``status.currentStatus``, written by Contour's leader, for the generation just applied); one progress line each
  as it gets there;
- the route (``--route``) must be served as applied: 200 ten times in a row with Envoy's configuration settled;
- an HTTPProxy that stays ``invalid`` for :data:`INVALID_FOR_S` fails at once with Contour's own description (a
  moment of ``invalid`` is tolerated: Contour may judge a route before its Service reached its cache);
- after ``timeout_s`` the error names what is not ready and why (pods' waiting reasons, the HTTPProxy's status).

:func:`delete` removes the objects in reverse order and waits until they and their pods are gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import requests

from chaoscontour.domain.envoy_stats import StatValue, parse_stats
from chaoscontour_sandbox.kubeapi import ApiError, KubeApi
from chaoscontour_sandbox.manifests import Document, Plan, api_path, route_settings

__all__ = [
    "ApplyError",
    "FIELD_MANAGER",
    "existing_namespaces",
    "route_answers",
    "serve",
    "apply",
    "wait_ready",
    "delete",
]

Obj = dict[str, Any]
Say = Callable[[str], None]

FIELD_MANAGER = "chaoscontour-sandbox-user"
READY_TIMEOUT_S = 180.0
INVALID_FOR_S = 5.0
POLL_S = 0.5
# A route served as applied: this many 200s in a row, SERVE_POLL_S apart, and Envoy's configuration unchanged for
# SETTLED_S with no cluster warming (Contour batches its updates within half a second).
SERVES_IN_A_ROW = 10
SERVE_POLL_S = 0.1
SETTLED_S = 1.0
CONFIG_STATS = (
    r"^(cluster_manager\.warming_clusters|cluster_manager\.cds\.update_(success|rejected)"
    r"|listener_manager\.lds\.update_(success|rejected)|http\.[^.]+\.rds\.[^.]+\.update_(success|rejected))$"
)
# Worth retrying: the API server busy or restarting, a namespace's default ServiceAccount not made yet.
TRANSIENT = (0, 429, 500, 503, 504)


class ApplyError(RuntimeError):
    """The user's manifests could not be applied, became ready too late, or could not be deleted."""


def existing_namespaces(api: KubeApi) -> list[str]:
    return [n["metadata"]["name"] for n in api.get("/api/v1/namespaces").get("items", [])]


def route_answers(url: str, host: str) -> bool:
    """Whether Envoy answers 200 at ``url`` for virtual host ``host``."""
    with requests.Session() as session:
        session.trust_env = False  # never through a proxy: the address is on the local bridge
        try:
            return session.get(url, headers={"Host": host}, timeout=2.0).status_code == 200
        except requests.RequestException:
            return False


def serve(
    api: KubeApi, plan: Plan, envoy_url: str, say: Say, *, stats_url: str = "", timeout_s: float = READY_TIMEOUT_S
) -> dict[str, str]:
    """Apply ``plan``, wait until it serves, and return the settings of its route (:func:`route_settings`; empty
    without one). With a route, also wait until Envoy serves it as applied (:func:`_wait_served`; Contour's
    ``valid`` for this generation comes first) and, if the route has a ``healthCheckPolicy``, until Envoy
    health-checks at its interval (:func:`_wait_health_checks`)."""
    apply(api, plan, say)
    wait_ready(api, plan, say, timeout_s)
    if not plan.route:
        return {}
    settings = route_settings(plan.objects, plan.route, envoy_url)
    url, host = settings["ENVOY_URL"], settings["ENVOY_HOST"]
    _wait_served(plan.route, url, host, stats_url, timeout_s)
    say(f"route {plan.route}: curl -H 'Host: {host}' {url}")
    proxy = next(d.obj for d in plan.of_kind("HTTPProxy") if f"{d.namespace}/{d.name}" == plan.route)
    intervals = [
        int((r.get("healthCheckPolicy") or {}).get("intervalSeconds") or 5)  # Contour's default: 5 s
        for r in (proxy.get("spec") or {}).get("routes") or []
        if r.get("healthCheckPolicy")
    ]
    if intervals and stats_url:
        cluster = "_".join((settings["BACKEND_NAMESPACE"], settings["BACKEND_SERVICE"], settings["BACKEND_PORT"]))
        _wait_health_checks(stats_url, cluster, url, host, max(intervals), say, timeout_s)
    return settings


def _config_updates(stats_url: str) -> tuple[int | None, tuple[tuple[str, StatValue], ...]]:
    """Envoy's warming clusters and its accepted and rejected CDS, LDS and RDS updates, from its stats."""
    with requests.Session() as session:
        session.trust_env = False
        text = session.get(stats_url, params={"filter": CONFIG_STATS}, timeout=2).text
    stats = parse_stats(text)
    warming = stats.pop("cluster_manager.warming_clusters", None)
    return (warming if isinstance(warming, int) else None), tuple(sorted(stats.items()))


def _wait_served(route: str, url: str, host: str, stats_url: str, timeout_s: float) -> None:
    """Wait until Envoy answers 200 on the route :data:`SERVES_IN_A_ROW` times in a row, and (with ``stats_url``)
    no cluster is warming and no CDS, LDS or RDS update has come for :data:`SETTLED_S`.

    On a re-applied route one 200 proves nothing: Envoy still serves the previous version. Contour names a cluster
    by its policy, so a changed retry or health-check policy is a new cluster, and without ADS Envoy can take the
    route that names it before the cluster has warmed: a moment of 503s (CI saw an experiment started right after
    ``apply`` fail its steady state). Contour's ``valid`` for this generation means its xDS caches hold the change.
    """
    streak, seen, quiet_since = 0, None, time.monotonic()
    deadline = quiet_since + timeout_s
    why = "no answer yet"
    while True:
        now = time.monotonic()
        settled = True
        if stats_url:
            try:
                reading = _config_updates(stats_url)
            except requests.RequestException as exc:
                reading, why = None, f"Envoy's stats unreadable ({exc.__class__.__name__})"
            if reading != seen:
                seen, quiet_since = reading, now
            warming = reading[0] if reading else None
            settled = reading is not None and warming == 0 and now - quiet_since >= SETTLED_S
            if reading is not None and warming:
                why = f"{warming} cluster(s) warming"
        streak = streak + 1 if route_answers(url, host) else 0
        if streak >= SERVES_IN_A_ROW and settled:
            return
        if now > deadline:
            raise ApplyError(
                f"{route} is valid, but Envoy did not serve it steadily in {timeout_s:.0f} s: {url} (Host {host}) "
                f"answered 200 {streak} time(s) in a row of {SERVES_IN_A_ROW}"
                + ("" if settled else f"; its configuration not settled: {why}")
            )
        time.sleep(SERVE_POLL_S)


def _health_check_attempts(stats_url: str, cluster: str) -> int:
    with requests.Session() as session:
        session.trust_env = False
        text = session.get(
            stats_url, params={"filter": rf"^cluster\.{cluster}\.health_check\.attempt$"}, timeout=2
        ).text
    return sum(int(line.rsplit(":", 1)[1]) for line in text.splitlines() if ":" in line)


def _wait_health_checks(
    stats_url: str, cluster: str, url: str, host: str, interval_s: int, say: Say, timeout_s: float
) -> None:
    """Wait until Envoy health-checks ``cluster`` every ``interval_s``, sending requests through the route meanwhile.

    Envoy checks a cluster that never carried traffic only every ``no_traffic_interval`` (60 s by default), and
    moves to the configured interval only when that timer next fires. A fresh sandbox has carried no traffic, so
    an experiment started at once would meet a dead endpoint that no health check takes out for up to a minute
    (seen: not one check during a 60 s churn window). In a cluster with traffic this never shows.
    """
    say(f"  waiting for Envoy to health-check {cluster} every {interval_s} s (up to 60 s: no_traffic_interval)")
    window_s = interval_s + 0.5
    deadline = time.monotonic() + max(timeout_s, 90.0)
    rising = 0
    last = _health_check_attempts(stats_url, cluster)
    while rising < 2:  # the counter rose in two windows in a row: the interval is in force
        if time.monotonic() > deadline:
            raise ApplyError(f"Envoy did not health-check {cluster} every {interval_s} s within {timeout_s:.0f} s")
        route_answers(url, host)  # traffic: what moves Envoy off no_traffic_interval
        time.sleep(window_s)
        now = _health_check_attempts(stats_url, cluster)
        rising = rising + 1 if now > last else 0
        last = now
    say(f"  {cluster}: Envoy health-checks it every {interval_s} s")


def apply(api: KubeApi, plan: Plan, say: Say, *, retry_s: float = 30.0) -> None:
    """Server-side apply of every object of ``plan``, in order; a refusal names the document it came from."""
    for doc in plan.documents:
        deadline = time.monotonic() + retry_s
        while True:
            try:
                api.apply(api_path(doc.obj), doc.obj, field_manager=FIELD_MANAGER)
                break
            except ApiError as exc:
                if exc.status not in TRANSIENT or time.monotonic() > deadline:
                    raise ApplyError(f"{doc.where}: {doc.key} refused by the API server: {exc}") from exc
                time.sleep(POLL_S)
    say(f"applied {len(plan.documents)} objects: " + ", ".join(d.key for d in plan.documents))


def _deployment_state(api: KubeApi, doc: Document) -> tuple[bool, str]:
    """Whether Deployment ``doc`` is Ready, and what its status and pods say."""
    deployment = api.get(api_path(doc.obj))
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    ready, updated = int(status.get("readyReplicas") or 0), int(status.get("updatedReplicas") or 0)
    current = int(status.get("observedGeneration") or 0) >= int(deployment["metadata"].get("generation") or 0)
    done = current and ready == wanted and updated == wanted and int(status.get("replicas") or 0) == wanted
    text = f"{ready}/{wanted} ready"
    if done:
        return True, text
    selector = ",".join(f"{k}={v}" for k, v in ((spec.get("selector") or {}).get("matchLabels") or {}).items())
    pods = api.get(f"/api/v1/namespaces/{doc.namespace}/pods", labelSelector=selector).get("items", [])
    reasons = []
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting")
            if waiting:
                detail = f": {waiting['message']}" if waiting.get("message") else ""
                reasons.append(f"{pod['metadata']['name']}/{container['name']} {waiting.get('reason')}{detail}")
            elif not container.get("ready"):
                reasons.append(f"{pod['metadata']['name']}/{container['name']} not ready")
    return False, text + (f" ({'; '.join(reasons)})" if reasons else f" ({len(pods)} pods)")


def _last_warnings(api: KubeApi, namespace: str) -> str:
    """The latest warning event of each pod of ``namespace`` (a failing probe says why a pod is not Ready)."""
    try:
        events = api.get(f"/api/v1/namespaces/{namespace}/events").get("items", [])
    except ApiError:
        return ""
    latest: dict[str, str] = {}
    for event in sorted(events, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or "")):
        involved = event.get("involvedObject") or {}
        if event.get("type") == "Warning" and involved.get("kind") == "Pod" and event.get("reason") != "StandIn":
            latest[str(involved.get("name"))] = f"{event.get('reason')}: {event.get('message')}"
    return "".join(f"; {pod}: {said}" for pod, said in sorted(latest.items()))


def _proxy_state(api: KubeApi, doc: Document) -> tuple[str, str]:
    """An HTTPProxy's ``currentStatus`` (``valid``, ``invalid``, ``orphaned``, or empty: also while its conditions'
    ``observedGeneration`` is older than the object's) and what Contour says.

    Contour's ``description`` of an invalid proxy is only "At least one error present, see Errors for details"
    (apis/projectcontour/v1/helpers.go): the errors of its conditions follow it.
    """
    proxy = api.get(api_path(doc.obj))
    status = proxy.get("status") or {}
    said = [str(status.get("description") or "")]
    for condition in status.get("conditions") or []:
        said += [f"{e.get('reason')}: {e.get('message')}" for e in condition.get("errors") or []]
    generation = int(proxy["metadata"].get("generation") or 0)
    judged = [int(c["observedGeneration"]) for c in status.get("conditions") or [] if c.get("observedGeneration")]
    if judged and max(judged) < generation:
        # Re-applied: what the status says is about the previous version.
        return "", f"Contour has judged generation {max(judged)}, not yet {generation}"
    return str(status.get("currentStatus") or ""), "; ".join(s for s in said if s)


def wait_ready(api: KubeApi, plan: Plan, say: Say, timeout_s: float) -> None:
    """Wait until every Deployment of ``plan`` is Ready and every HTTPProxy ``valid``; :class:`ApplyError` if not."""
    pending: dict[str, Document] = {d.key: d for d in plan.documents if d.kind in ("Deployment", "HTTPProxy")}
    detail: dict[str, str] = {}
    invalid_since: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while pending:
        for key, doc in list(pending.items()):
            try:
                if doc.kind == "Deployment":
                    ok, detail[key] = _deployment_state(api, doc)
                else:
                    current, description = _proxy_state(api, doc)
                    detail[key] = f"{current or 'no status yet'}" + (f": {description}" if description else "")
                    ok = current == "valid"
                    if current == "invalid":
                        first = invalid_since.setdefault(key, time.monotonic())
                        if time.monotonic() - first >= INVALID_FOR_S:
                            raise ApplyError(f"{doc.key} ({doc.where}) is invalid, says Contour: {description}")
                    else:
                        invalid_since.pop(key, None)
            except ApiError as exc:
                ok, detail[key] = False, str(exc)
            if ok:
                say(f"  {key}: {detail[key]}")
                del pending[key]
        if pending and time.monotonic() > deadline:
            for key, doc in pending.items():
                if doc.kind == "Deployment":
                    detail[key] = detail.get(key, "?") + _last_warnings(api, doc.namespace)
            waiting = "; ".join(f"{key}: {detail.get(key, '?')}" for key in pending)
            raise ApplyError(f"not ready after {timeout_s:.0f} s: {waiting}")
        if pending:
            time.sleep(POLL_S)


def _gone(api: KubeApi, path: str) -> bool:
    try:
        api.get(path)
    except ApiError as exc:
        if exc.status == 404:
            return True
        raise
    return False


def delete(api: KubeApi, plan: Plan, say: Say, timeout_s: float = 120.0) -> None:
    """Delete the objects of ``plan`` (reverse order; missing ones are fine) and wait until they and their pods
    are gone, so that what runs next starts from the sandbox as ``up`` left it."""
    body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
    for doc in plan.deletion_order():
        try:
            api.delete(api_path(doc.obj), body)
        except ApiError as exc:
            if exc.status != 404:
                raise ApplyError(f"cannot delete {doc.key}: {exc}") from exc
    paths = [api_path(d.obj) for d in plan.documents]
    for doc in plan.of_kind("Deployment"):
        labels: Mapping[str, str] = ((doc.obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        paths.append(f"/api/v1/namespaces/{doc.namespace}/pods?labelSelector={selector}")
    deadline = time.monotonic() + timeout_s
    left: list[str] = paths
    while True:
        left = [p for p in left if not (_no_pods(api, p) if "?labelSelector=" in p else _gone(api, p))]
        if not left:
            break
        if time.monotonic() > deadline:
            raise ApplyError(f"still there {timeout_s:.0f} s after deletion: {', '.join(left)}")
        time.sleep(POLL_S)
    say(f"deleted {len(plan.documents)} objects and their pods")


def _no_pods(api: KubeApi, path_and_selector: str) -> bool:
    path, _, selector = path_and_selector.partition("?labelSelector=")
    return not api.get(path, labelSelector=selector).get("items")
