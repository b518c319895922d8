"""What the xDS black hole does to Envoy, seen from outside: its xDS state over time, and how long a route change
takes to be served.

`envoy_xds_timeline` runs in the background across the fault and turns Envoy's `connected_state` gauges and
update counters into the two figures the experiment is about: how long until Envoy noticed the dead stream, and how
long after the heal until it was connected and current again. `route_change_propagation` writes a marker response
header into a test HTTPProxy through the API server and measures when Envoy serves it (before the fault: the
baseline; during it: it must not arrive); `route_config_converged` waits after the heal until Envoy serves what the
HTTPProxy says; `remove_route_marker` takes the marker out again (a rollback).

No ``from __future__ import annotations`` here: chaostoolkit's discovery reads the annotations as objects.
"""

import time
import uuid
from datetime import UTC, datetime
from typing import Any, Dict

import requests
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets
from kubernetes import client
from logzero import logger

from chaoscontour.activities._common import Progress, user_errors
from chaoscontour.activities._xds_state import KEEPALIVE_BOUND_S, fault_events, read_xds_state
from chaoscontour.activities.envoy import LISTENER_EXAMPLE, STATS_EXAMPLE
from chaoscontour.domain.inputs import (
    InvalidInput,
    parse_bool,
    parse_count,
    parse_host,
    parse_http_url,
    parse_seconds,
    redact_url,
    require_name,
    require_namespace,
)
from chaoscontour.domain.xds import XdsSample, xds_timeline
from chaoscontour.edges import http, stop
from chaoscontour.edges.kube import Kube, call, kube, read_if_present

__all__ = ["envoy_xds_timeline", "remove_route_marker", "route_change_propagation", "route_config_converged"]

MAX_TIMELINE_S = 3600.0
POLL_S = 0.1
MARKER_PREFIX = "x-chaoscontour-"
DEFAULT_HEADER = MARKER_PREFIX + "config"
_GROUP, _VERSION, _PLURAL = "projectcontour.io", "v1", "httpproxies"
# Per (namespace, HTTPProxy, header): the last marker this process wrote and when (epoch seconds).
_WRITTEN: dict[tuple[str, str, str], tuple[str, float]] = {}


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@user_errors
def envoy_xds_timeline(
    stats_url: str = STATS_EXAMPLE,
    duration_s: float = 180,
    interval_s: float = 0.5,
    until_current: bool = True,
    max_detection_s: float = 0,
    max_current_after_heal_s: float = 0,
) -> Dict[str, Any]:
    """Read Envoy's xDS stats every `interval_s` for up to `duration_s` and tell how Envoy lived the xDS fault.

    Meant to run as a `background: true` probe started before `block_xds_egress`. Each reading takes Envoy's
    control-plane `connected_state` gauges and its CDS + LDS `update_success` counters from `stats_url` (Envoy's
    `/stats`, port 8002 on Contour's Envoy). The block and heal times come from `block_xds_egress` and
    `unblock_xds_egress` in the same `chaos run` process.

    Returns `detected_after_s` (block to the first reading with a `connected_state` gauge at 0 or a failed update
    counted: how long Envoy believed the dead stream alive), `reconnect_attempts` (streams Envoy tried during the
    fault, from its `update_failure` counters; each one failed),
    `reconnected_after_s` (heal to the first reading in which CDS or LDS accepted an update: a working stream again)
    and `current_after_s` (heal to the first in which both did: Contour's whole configuration arrived),
    `transitions` (every change of the gauges' reading, in seconds from the first reading), `connected_at_start` /
    `connected_at_end`, `samples`, `failed_reads`, `blocked_at` / `healed_at` (ISO 8601 UTC), `keepalive_bound_s`,
    `stopped_early` and `stop_reason`. With `until_current` (default) it ends as soon as Envoy is current after the
    heal. A gauge at 1 proves nothing by itself: Envoy sets it when it starts a stream, before the connection is up,
    so during the fault it reads 1 for each 5 s connection attempt (Contour's bootstrap `connect_timeout`); only an
    accepted update proves a working stream.

    `max_detection_s` and `max_current_after_heal_s` (0: no bound) add `meets_bounds` and `bound_misses`: a bound
    missed, or a figure that never came, is logged as an error and marked, never raised, so the journal keeps the
    timeline. On SIGINT, SIGTERM or SIGUSR1 it stops within `interval_s` and returns what it saw.
    """
    url = parse_http_url(stats_url, "stats_url", STATS_EXAMPLE)
    duration = parse_seconds(duration_s, "duration_s", maximum=MAX_TIMELINE_S)
    interval = parse_seconds(interval_s, "interval_s", minimum=0.05, maximum=60)
    until = parse_bool(until_current, "until_current")
    max_detection = parse_seconds(max_detection_s, "max_detection_s", maximum=3600, allow_zero=True)
    max_current = parse_seconds(max_current_after_heal_s, "max_current_after_heal_s", maximum=3600, allow_zero=True)
    samples: list[XdsSample] = []
    started = time.monotonic()
    progress = Progress(10.0)
    reason = ""
    figures: dict[str, Any] = {}
    while True:
        at = time.time()
        try:
            state = read_xds_state(url, min(interval * 2, 2.0))
            samples.append(
                XdsSample(
                    at=at,
                    connected=state.connected,
                    cds_success=state.cds.update_success if state.cds else None,
                    lds_success=state.lds.update_success if state.lds else None,
                    cds_failure=state.cds.update_failure if state.cds else None,
                    lds_failure=state.lds.update_failure if state.lds else None,
                )
            )
        except (http.RequestFailed, ActivityFailed):
            samples.append(XdsSample(at=at, connected=None))
        events = fault_events()
        figures = xds_timeline(samples, events.get("blocked_at"), events.get("healed_at"))
        if until and figures["current_after_s"] is not None:
            reason = "current after the heal"
            break
        elapsed = time.monotonic() - started
        if elapsed >= duration:
            break
        progress(
            f"envoy_xds_timeline: {elapsed:.0f}/{duration:g} s, connected={samples[-1].connected}, "
            f"detected after {figures['detected_after_s']} s, {figures['reconnect_attempts']} reconnect attempt(s)"
        )
        if stop.wait(min(interval, duration - elapsed)):
            reason = stop.reason() or "stop requested"
            break
    events = fault_events()
    result: Dict[str, Any] = {
        **figures,
        "stats_url": redact_url(url),
        "blocked_at": _iso(events.get("blocked_at")),
        "healed_at": _iso(events.get("healed_at")),
        "keepalive_bound_s": KEEPALIVE_BOUND_S,
        "duration_s": round(time.monotonic() - started, 3),
        "stopped_early": bool(reason) and reason != "current after the heal",
        "stop_reason": reason or None,
    }
    misses = []
    if max_detection:
        detected = figures["detected_after_s"]
        if detected is None or detected > max_detection:
            misses.append(f"Envoy noticed the dead stream after {detected} s, bound {max_detection:g} s")
    if max_current:
        current = figures["current_after_s"]
        if current is None or current > max_current:
            misses.append(f"Envoy was current {current} s after the heal, bound {max_current:g} s")
    if max_detection or max_current:
        result["meets_bounds"] = not misses
        result["bound_misses"] = misses
    for miss in misses:
        logger.error(f"envoy_xds_timeline: {miss}")
    logger.info(
        f"envoy_xds_timeline: detected after {result['detected_after_s']} s, reconnected "
        f"{result['reconnected_after_s']} s and current {result['current_after_s']} s after the heal"
    )
    return result


# --- configuration propagation -------------------------------------------------------------------------------------


def _proxies(k: Kube) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(k.api)


def _read_proxy(k: Kube, namespace: str, name: str) -> dict[str, Any]:
    found: Any = call(
        f"read HTTPProxy {namespace}/{name}",
        _proxies(k).get_namespaced_custom_object,
        _GROUP,
        _VERSION,
        namespace,
        _PLURAL,
        name,
        not_found=f"HTTPProxy {namespace}/{name} not found; set namespace and httpproxy to the test route",
    )
    return dict(found)


def _set_header(proxy: dict[str, Any], index: int, header: str, value: str | None) -> bool:
    """Set (or with ``None`` remove) ``header`` in route ``index``'s response headers; whether it changed."""
    routes = (proxy.get("spec") or {}).get("routes") or []
    targets = range(len(routes)) if value is None else [index]
    if value is not None and index >= len(routes):
        raise InvalidInput(f"route_index {index} is out of range: the HTTPProxy has {len(routes)} route(s)")
    changed = False
    for i in targets:
        policy = routes[i].setdefault("responseHeadersPolicy", {})
        kept = [h for h in policy.get("set") or [] if str(h.get("name", "")).lower() != header]
        if value is not None:
            kept.append({"name": header, "value": value})
        changed = changed or kept != (policy.get("set") or [])
        if kept:
            policy["set"] = kept
        else:
            policy.pop("set", None)
        if not policy:
            routes[i].pop("responseHeadersPolicy", None)
    return changed


def _marker(k: Kube, namespace: str, name: str, header: str, index: int) -> str | None:
    routes = (_read_proxy(k, namespace, name).get("spec") or {}).get("routes") or []
    if index >= len(routes):
        return None
    for entry in (routes[index].get("responseHeadersPolicy") or {}).get("set") or []:
        if str(entry.get("name", "")).lower() == header:
            return str(entry.get("value"))
    return None


def _served(url: str, host: str, header: str, timeout_s: float, verify_tls: bool) -> str | None:
    """The value of ``header`` in Envoy's answer (``None`` when absent or when no answer came)."""
    headers = {"User-Agent": http.USER_AGENT, **({"Host": host} if host else {})}
    try:
        response = requests.get(url, headers=headers, timeout=timeout_s, allow_redirects=False, verify=verify_tls)
    except requests.RequestException:
        return None
    return response.headers.get(header)


def _wait_served(url: str, host: str, header: str, value: str, timeout_s: float, verify_tls: bool) -> float | None:
    """Seconds until Envoy serves ``header: value`` (``None`` after ``timeout_s`` or a stop request)."""
    started = time.monotonic()
    while True:
        if _served(url, host, header, min(2.0, timeout_s), verify_tls) == value:
            return time.monotonic() - started
        if time.monotonic() - started >= timeout_s or stop.wait(POLL_S):
            return None


def _route_args(
    namespace: str, httpproxy: str, url: str, host: str, header_name: str
) -> tuple[str, str, str, str, str]:
    header = header_name.strip().lower() if isinstance(header_name, str) else ""
    if not header or not all(c.isascii() and (c.isalnum() or c == "-") for c in header):
        raise InvalidInput(f"header_name must be a header name such as {DEFAULT_HEADER!r}, got {header_name!r}")
    # The marker is written into, and its rollback removed from, every route of the HTTPProxy: a real header such
    # as strict-transport-security would be overwritten, then deleted from them all.
    if not header.startswith(MARKER_PREFIX) or header == MARKER_PREFIX:
        raise InvalidInput(
            f"header_name must start with {MARKER_PREFIX!r} (e.g. {DEFAULT_HEADER!r}), got {header_name!r}: the marker "
            "and its removal would otherwise touch a header your routes really set"
        )
    return (
        require_namespace(namespace),
        require_name(httpproxy, "httpproxy"),
        parse_http_url(url, "url", LISTENER_EXAMPLE),
        parse_host(host, "host"),
        header,
    )


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
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Change a test route and measure how long Envoy takes to serve the change.

    Writes a fresh marker value into the response header `header_name` (default `x-chaoscontour-config`) of route
    `route_index` of the HTTPProxy `httpproxy` in `namespace`, through the API server, then sends a GET to `url`
    (the Envoy listener, with `host` as the Host header) every 0.1 s until Envoy answers with that header value.

    With `expect_arrival` (default) it returns `arrived: true` and `propagation_s` (write to first served
    answer), and fails when the change is not served within `timeout_s`. With `expect_arrival` false (during the
    xDS fault) it watches for the whole `timeout_s` and returns `arrived: false`, `held_back_s` and a `summary`
    saying the change did not reach Envoy; it fails when the change does arrive, since the black hole then leaks.
    On SIGINT, SIGTERM or SIGUSR1 it stops at once: `held_back_s` is then the time actually watched, with
    `stopped_early: true`.
    Either way `marker` is the value written; `route_config_converged` later waits for it.
    """
    ns, name, target, host_header, header = _route_args(namespace, httpproxy, url, host, header_name)
    expect = parse_bool(expect_arrival, "expect_arrival")
    timeout = parse_seconds(timeout_s, "timeout_s", maximum=3600)
    index = parse_count(route_index, "route_index", maximum=1000)
    verify = parse_bool(verify_tls, "verify_tls")
    k = kube(secrets)
    marker = "c" + uuid.uuid4().hex[:12]
    proxy = _read_proxy(k, ns, name)
    _set_header(proxy, index, header, marker)
    call(
        f"update HTTPProxy {ns}/{name}",
        _proxies(k).replace_namespaced_custom_object,
        _GROUP,
        _VERSION,
        ns,
        _PLURAL,
        name,
        proxy,
    )
    written = time.time()
    _WRITTEN[(ns, name, header)] = (marker, written)
    served_after = _wait_served(target, host_header, header, marker, timeout, verify)
    result: Dict[str, Any] = {
        "httpproxy": f"{ns}/{name}",
        "header": header,
        "marker": marker,
        "written_at": _iso(written),
        "expect_arrival": expect,
        "arrived": served_after is not None,
        "propagation_s": round(served_after, 3) if served_after is not None else None,
    }
    where = f"{redact_url(target)}" + (f" (Host {host_header})" if host_header else "")
    if expect and served_after is None:
        raise ActivityFailed(
            f"route_change_propagation: Envoy at {where} did not serve {header}: {marker} within {timeout:g} s of "
            f"the change to HTTPProxy {ns}/{name}" + (f" (stopped early: {stop.reason()})" if stop.requested() else "")
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
            f"route_change_propagation: the change to HTTPProxy {ns}/{name} reached Envoy {served_after:.2f} s after "
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
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Wait until Envoy serves the route configuration the API server holds: after the heal, within `timeout_s`.

    Reads the marker value of `header_name` in route `route_index` of the HTTPProxy (what
    `route_change_propagation` wrote, perhaps during the fault) and sends a GET to `url` every 0.1 s until Envoy
    answers with it. Returns `converged_after_s` (from this call), `since_heal_s` (from `unblock_xds_egress` in
    this process, when it ran) and `since_change_s` (from the write, when this process made it). Fails when Envoy
    does not serve it within `timeout_s`, the bound the experiment states.
    """
    ns, name, target, host_header, header = _route_args(namespace, httpproxy, url, host, header_name)
    timeout = parse_seconds(timeout_s, "timeout_s", maximum=3600)
    index = parse_count(route_index, "route_index", maximum=1000)
    verify = parse_bool(verify_tls, "verify_tls")
    k = kube(secrets)
    marker = _marker(k, ns, name, header, index)
    if marker is None:
        raise ActivityFailed(
            f"route_config_converged: route {index} of HTTPProxy {ns}/{name} has no {header} response header; run "
            "route_change_propagation first"
        )
    after = _wait_served(target, host_header, header, marker, timeout, verify)
    now = time.time()
    healed = fault_events().get("healed_at")
    written = _WRITTEN.get((ns, name, header))
    result: Dict[str, Any] = {
        "httpproxy": f"{ns}/{name}",
        "marker": marker,
        "converged": after is not None,
        "converged_after_s": round(after, 3) if after is not None else None,
        "since_heal_s": round(now - healed, 3) if healed and after is not None else None,
        "since_change_s": round(now - written[1], 3) if written and written[0] == marker and after else None,
        "bound_s": timeout,
    }
    if after is None:
        raise ActivityFailed(
            f"route_config_converged: Envoy did not serve {header}: {marker} (HTTPProxy {ns}/{name}) within "
            f"{timeout:g} s"
            + (f", {now - healed:.1f} s after the heal" if healed else "")
            + (f" (stopped early: {stop.reason()})" if stop.requested() else "")
        )
    logger.info(
        f"route_config_converged: Envoy serves the HTTPProxy's configuration after {after:.3f} s"
        + (f" ({result['since_heal_s']} s after the heal)" if healed else "")
    )
    return result


@user_errors
def remove_route_marker(
    namespace: str = "default",
    httpproxy: str = "",
    header_name: str = DEFAULT_HEADER,
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Take the marker header `header_name` out of every route of the HTTPProxy again (a rollback).

    Idempotent: a route without it, or a missing HTTPProxy, is success. Returns `removed` (whether anything changed).
    """
    ns, name, _, _, header = _route_args(namespace, httpproxy, LISTENER_EXAMPLE, "", header_name)
    k = kube(secrets)
    api = _proxies(k)
    found = read_if_present(
        f"read HTTPProxy {ns}/{name}", api.get_namespaced_custom_object, _GROUP, _VERSION, ns, _PLURAL, name
    )
    if found is None:
        return {"httpproxy": f"{ns}/{name}", "removed": False}
    proxy = dict(found)
    changed = _set_header(proxy, 0, header, None)
    if changed:
        call(
            f"update HTTPProxy {ns}/{name}",
            api.replace_namespaced_custom_object,
            _GROUP,
            _VERSION,
            ns,
            _PLURAL,
            name,
            proxy,
        )
    return {"httpproxy": f"{ns}/{name}", "removed": changed}
