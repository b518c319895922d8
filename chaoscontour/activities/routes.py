"""The route marker: how long a route change takes to reach Envoy, and putting the route back afterwards.

`route_change_propagation` writes a marker response header into a test HTTPProxy (or Gateway API HTTPRoute)
through the API server and measures when Envoy serves it (before the fault: the baseline; during it: it must not
arrive);
`route_config_converged` waits after the heal until Envoy serves what the HTTPProxy says; `remove_route_marker`
(the rollback) puts back what the route had.

Each write records, in an annotation ``chaoscontour.io/route-marker-<header>`` on the HTTPProxy, the run, the
header's previous entries per route and an expiry time (``chaoscontour.domain.route_marker``), so that the rollback
restores the user's value rather than deleting the header, and works from another process after a crash. Unlike a
fault, a marker cannot be garbage-collected by Kubernetes (it is a field of the user's object, owned by nothing of
ours), and no heartbeat keeps it: nothing removes it at its expiry by itself. What the expiry buys is that a marker
left behind by a dead runner is known to be stale: the next `route_change_propagation` on that header restores it
before writing, `remove_route_marker` of any run restores it, and ``chaoscontour cleanup`` restores every marker.
A marker of another run that has not expired is never touched: a second run is refused.

These were in ``chaoscontour.activities.xds_probes``; that module still exports them, so experiments naming it work.
No ``from __future__ import annotations`` here: chaostoolkit's discovery reads the annotations as objects.
"""

import time
import uuid
from datetime import datetime
from typing import Any, Dict

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets
from logzero import logger

from chaoscontour.activities._common import process_run_id, user_errors
from chaoscontour.activities._route_target import DEFAULT_HEADER, expiry_args, route_args, wait_served
from chaoscontour.activities._xds_state import fault_events
from chaoscontour.activities.envoy import LISTENER_EXAMPLE
from chaoscontour.domain import route_marker
from chaoscontour.domain.clock import format_api_time, format_utc
from chaoscontour.domain.inputs import InvalidInput, parse_bool, parse_count, parse_seconds, redact_url, require_run_id
from chaoscontour.edges import stop
from chaoscontour.edges.kube import kube
from chaoscontour.edges.run_state import RUN

__all__ = ["remove_route_marker", "route_change_propagation", "route_config_converged"]


@user_errors
def route_change_propagation(
    namespace: str = "default",
    httpproxy: str = "",
    url: str = LISTENER_EXAMPLE,
    host: str = "",
    header_name: str = DEFAULT_HEADER,
    expect_arrival: bool = True,
    timeout_s: float = 30,
    route_index: int = 0,
    verify_tls: bool = True,
    run_id: str = "",
    expire_after_s: float = route_marker.DEFAULT_EXPIRE_AFTER_S,
    httproute: str = "",
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Change a test route and measure how long Envoy takes to serve the change.

    Writes a fresh marker value into the response header `header_name` (default `x-chaoscontour-config`, it must
    start with `x-chaoscontour-`) of route `route_index` of the HTTPProxy `httpproxy` in `namespace` (or of rule
    `route_index` of the Gateway API HTTPRoute `httproute`, as a `set` entry of its `ResponseHeaderModifier`
    filter, added when the rule has none), through the API server, then sends a GET to `url` (the Envoy listener,
    with `host` as the Host header) every 0.1 s until Envoy answers with that header value.

    The same update stores the annotation `chaoscontour.io/route-marker-<header>` on the route object: `run_id`
    (default: this `chaos run` process's id), the header's previous entries on that route (saved on the run's first
    write; `remove_route_marker` puts them back) and an expiry `expire_after_s` (default 600, 10 to 14400) after
    the write, on the API server's clock. The expiry is no dead-man switch: a field edit cannot be
    garbage-collected and nothing removes the marker at that time by itself. It marks a marker left by a dead run
    as stale: such a marker is restored before this write, while an unexpired marker of another run makes this
    call fail before anything is written. `chaoscontour cleanup` restores every marker.

    With `expect_arrival` (default) it returns `arrived: true` and `propagation_s` (write to first served
    answer), and fails when the change is not served within `timeout_s`. With `expect_arrival` false (during the
    xDS fault) it watches for the whole `timeout_s` and returns `arrived: false`, `held_back_s` and a `summary`
    saying the change did not reach Envoy; it fails when the change does arrive, since the black hole then leaks.
    On SIGINT, SIGTERM or SIGUSR1 it stops at once: `held_back_s` is then the time actually watched, with
    `stopped_early: true`.
    Either way `marker` is the value written; `route_config_converged` later waits for it. `run_id`,
    `expires_at`, `previous` (the saved entries of that route) and, when a stale marker was restored first,
    `restored_stale` are returned too.
    """
    route, target, host_header, header = route_args(namespace, httpproxy, httproute, url, host, header_name)
    expect = parse_bool(expect_arrival, "expect_arrival")
    timeout = parse_seconds(timeout_s, "timeout_s", maximum=3600)
    index = parse_count(route_index, "route_index", maximum=1000)
    verify = parse_bool(verify_tls, "verify_tls")
    run, expire = expiry_args(run_id, expire_after_s)
    k = kube(secrets)
    marker = "c" + uuid.uuid4().hex[:12]
    record, stale = route.write(k, header, index, marker, run, expire)
    written = time.time()
    RUN.route_markers[(route.namespace, route.name, header)] = (marker, written)
    if stale is not None:
        logger.warning(f"route_change_propagation: restored the expired {stale.record.describe()} before writing")
    served_after = wait_served(target, host_header, header, marker, timeout, verify)
    result: Dict[str, Any] = {
        **route.key,
        "header": header,
        "marker": marker,
        "written_at": format_utc(written, "microseconds"),
        "run_id": run,
        "expires_at": format_api_time(record.expires_at),
        "previous": record.routes[index]["previous"],
        "expect_arrival": expect,
        "arrived": served_after is not None,
        "propagation_s": round(served_after, 3) if served_after is not None else None,
    }
    if stale is not None:
        result["restored_stale"] = stale.record.describe()
    where = f"{redact_url(target)}" + (f" (Host {host_header})" if host_header else "")
    if expect and served_after is None:
        raise ActivityFailed(
            f"route_change_propagation: Envoy at {where} did not serve {header}: {marker} within {timeout:g} s of "
            f"the change to {route}" + (f" (stopped early: {stop.reason()})" if stop.requested() else "")
        )
    if not expect and served_after is None and stop.requested():
        # Watched for less than asked: say so rather than claim the whole window.
        watched = round(time.time() - written, 3)
        result.update(held_back_s=watched, stopped_early=True, stop_reason=stop.reason())
        result["summary"] = f"the change did not reach Envoy in the {watched:g} s watched before a stop request"
        logger.warning(f"route_change_propagation: {result['summary']}")
        return result
    if not expect and served_after is not None:
        raise ActivityFailed(
            f"route_change_propagation: the change to {route} reached Envoy {served_after:.2f} s after "
            "it was written although Envoy should be cut off from Contour: the xDS black hole leaks"
        )
    if expect:
        result["summary"] = f"Envoy served the change {served_after:.3f} s after it was written"
    else:
        result["held_back_s"] = timeout
        result["summary"] = f"the change did not reach Envoy in {timeout:g} s while its xDS stream was cut"
    logger.info(f"route_change_propagation: {result['summary']}")
    return result


@user_errors
def route_config_converged(
    namespace: str = "default",
    httpproxy: str = "",
    url: str = LISTENER_EXAMPLE,
    host: str = "",
    header_name: str = DEFAULT_HEADER,
    timeout_s: float = 60,
    route_index: int = 0,
    verify_tls: bool = True,
    httproute: str = "",
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Wait until Envoy serves the route configuration the API server holds: after the heal, within `timeout_s`.

    Reads the marker value of `header_name` in route `route_index` of the HTTPProxy or HTTPRoute (what
    `route_change_propagation` wrote, perhaps during the fault) and sends a GET to `url` every 0.1 s until Envoy
    answers with it. Returns `converged_after_s` (from this call), `since_heal_s` (from `unblock_xds_egress` in
    this process, when it ran) and `since_change_s` (from the write, when this process made it). Fails when Envoy
    does not serve it within `timeout_s`, the bound the experiment states.
    """
    route, target, host_header, header = route_args(namespace, httpproxy, httproute, url, host, header_name)
    timeout = parse_seconds(timeout_s, "timeout_s", maximum=3600)
    index = parse_count(route_index, "route_index", maximum=1000)
    verify = parse_bool(verify_tls, "verify_tls")
    k = kube(secrets)
    marker = route.marker(k, header, index)
    if marker is None:
        raise ActivityFailed(
            f"route_config_converged: route {index} of {route} has no {header} response header; run "
            "route_change_propagation first"
        )
    after = wait_served(target, host_header, header, marker, timeout, verify)
    now = time.time()
    healed = fault_events().get("healed_at")
    written = RUN.route_markers.get((route.namespace, route.name, header))
    result: Dict[str, Any] = {
        **route.key,
        "marker": marker,
        "converged": after is not None,
        "converged_after_s": round(after, 3) if after is not None else None,
        "since_heal_s": round(now - healed, 3) if healed and after is not None else None,
        "since_change_s": round(now - written[1], 3) if written and written[0] == marker and after else None,
        "bound_s": timeout,
    }
    if after is None:
        raise ActivityFailed(
            f"route_config_converged: Envoy did not serve {header}: {marker} ({route}) within "
            f"{timeout:g} s"
            + (f", {now - healed:.1f} s after the heal" if healed else "")
            + (f" (stopped early: {stop.reason()})" if stop.requested() else "")
        )
    logger.info(
        f"route_config_converged: Envoy serves the configuration of {route} after {after:.3f} s"
        + (f" ({result['since_heal_s']} s after the heal)" if healed else "")
    )
    return result


@user_errors
def remove_route_marker(
    namespace: str = "default",
    httpproxy: str = "",
    header_name: str = DEFAULT_HEADER,
    run_id: str = "",
    all_runs: bool = False,
    httproute: str = "",
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Put the routes of the HTTPProxy (or HTTPRoute) back as they were before `route_change_propagation` (a rollback).

    Reads the annotation `chaoscontour.io/route-marker-<header_name>` that the marker's write stored on the
    HTTPProxy, so it works from another process, after a crash too: on each route still carrying the marker it
    restores the header's previous entries (or removes the header when the route had none), then deletes the
    annotation, in one resourceVersion-safe update. The marker of `run_id` (default: this `chaos run` process's
    id) is restored, and an expired marker of any run; an unexpired marker of another run is left in place (with a
    `note`) unless `all_runs` is true. Idempotent: no annotation, or a missing HTTPProxy, is success with
    `removed: false`; a header of that name with no annotation is not ours to remove and is left as it is.
    Returns `removed`, `run_id` (the marker's), `restored_routes`, `previous` (per route) and `missing_routes`
    (routes whose marker someone changed since: left as they are).
    """
    route, _, _, header = route_args(namespace, httpproxy, httproute, LISTENER_EXAMPLE, "", header_name)
    every_run = parse_bool(all_runs, "all_runs")
    if every_run and run_id:
        raise InvalidInput("give either run_id or all_runs=true, not both")
    run = "" if every_run else require_run_id(run_id or process_run_id())
    k = kube(secrets)
    base: Dict[str, Any] = {**route.key, "header": header, "removed": False}

    def change(proxy: Dict[str, Any] | None, now: datetime) -> tuple[Dict[str, Any], bool]:
        if proxy is None:
            return {**base, "note": f"{route} does not exist: nothing to restore"}, False
        record = route.record(proxy, header, "remove_route_marker")
        if record is None:
            routes = route_marker.route_list(proxy)
            carrying = [i for i, r in enumerate(routes) if route_marker.header_entries(r, header, route.kind.kind)]
            note = f"no route marker recorded for {header} on {route}: nothing to restore"
            if carrying:
                note += (
                    f"; route(s) {', '.join(map(str, carrying))} set {header} with no record of ours (set by hand, "
                    "or left by a chaoscontour that kept no record): left as they are"
                )
            return {**base, "note": note}, False
        if run and record.run_id != run and not record.expired(now):
            note = (
                f"{route} carries the {record.describe()}: another run's, not expired, left in place "
                f"(run_id={record.run_id!r} or all_runs=true restores it)"
            )
            return {**base, "run_id": record.run_id, "note": note}, False
        done = route_marker.restore(proxy, record)
        return {
            **base,
            "removed": True,
            "run_id": record.run_id,
            "expired": record.expired(now),
            "restored_routes": list(done.restored_routes),
            "previous": {str(i): r["previous"] for i, r in sorted(record.routes.items())},
            "missing_routes": list(done.missing_routes),
        }, True

    result: Dict[str, Any] = route.update(k, change)
    if result.get("note"):
        logger.warning(f"remove_route_marker: {result['note']}")
    if result.get("missing_routes"):
        logger.warning(
            f"remove_route_marker: route(s) {result['missing_routes']} of {route} no longer carry the "
            f"marker (changed since it was written): left as they are"
        )
    if result["removed"]:
        logger.info(f"remove_route_marker: restored route(s) {result['restored_routes']} of {route}")
    return result
