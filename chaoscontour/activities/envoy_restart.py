"""An Envoy restarted while Contour is cut off from the API server (a DaemonSet rollout, a node drain, an OOM kill).

Envoy keeps its last configuration only while it runs. Its replacement starts empty, and no Contour can serve it: a
Contour started while the API server is unreachable serves no xDS before its informers sync. So that Envoy's traffic
fails until the API server is back, while every Envoy that kept running keeps routing. ``restart_envoy_pod`` shows it:
run it in the background after ``block_apiserver_egress``; it waits until every Contour has restarted since the cut,
deletes one Envoy pod (never the one the experiment's sampler keeps using) and follows the replacement until after
the heal. The pure parts are :mod:`chaoscontour.domain.envoy_restart`.
"""

import time
from datetime import UTC, datetime
from typing import Any, Dict
from urllib.parse import urlsplit

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets
from logzero import logger

from chaoscontour.activities._common import Progress, process_run_id, user_errors
from chaoscontour.activities._fault import read_policy
from chaoscontour.activities.network import ApiServerCut
from chaoscontour.domain.clock import format_utc, parse_api_time
from chaoscontour.domain.envoy_restart import (
    Attempt,
    NoSecondEnvoy,
    contours_restarted_since,
    lane_summary,
    pick_envoy_to_delete,
)
from chaoscontour.domain.envoy_stats import parse_stats, xds_state
from chaoscontour.domain.inputs import (
    parse_count,
    parse_host,
    parse_http_url,
    parse_ratio,
    parse_seconds,
    require_namespace,
    require_run_id,
)
from chaoscontour.domain.pods import pod_ready
from chaoscontour.domain.selectors import format_label_selector, parse_label_selector
from chaoscontour.edges import http, stop
from chaoscontour.edges.clock import poll_until
from chaoscontour.edges.kube import call, kube, list_pods

__all__ = ["restart_envoy_pod"]

_LIST_EVERY_S = 1.0  # how often the replacement pod, its readiness and the fault's policy are read while following


def _stats(url: str, timeout_s: float) -> Dict[str, Any] | None:
    """The replacement's xDS counters, or ``None`` while its stats listener (an xDS listener) does not answer."""
    try:
        answer = http.get(url, timeout_s=timeout_s)
    except http.RequestFailed:
        return None
    if answer.status != 200:
        return None
    state = xds_state(parse_stats(answer.text))
    return {
        "lds_update_success": state.lds.update_success if state.lds else None,
        "cds_update_success": state.cds.update_success if state.cds else None,
        "xds_streams_active": state.streams_active,
    }


@user_errors
def restart_envoy_pod(
    keep_url: str,
    namespace: str = "projectcontour",
    label_selector: str = "app=envoy",
    host: str = "",
    port: int = 8080,
    stats_port: int = 8002,
    contour_namespace: str = "projectcontour",
    contour_selector: str = "app=contour",
    run_id: str = "",
    contour_restart_timeout_s: float = 150,
    follow_s: float = 300,
    rate_per_s: float = 10,
    timeout_s: float = 1.0,
    min_availability: float = 0.999,
    settle_successes: int = 20,
    grace_period_s: int = -1,
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Delete one Envoy pod while Contour is cut off from the API server, and follow its replacement until it serves.

    Run it with `background: true` after `block_apiserver_egress` (whose `namespace` and `run_id` are
    `contour_namespace` and `run_id` here); it fails at once when that run's NetworkPolicy is not there. It first
    picks the Envoy pod (`label_selector` in `namespace`) to delete: never the one `keep_url` reaches (its host is a
    pod IP, or a node address for Envoy on host ports), which the experiment's `envoy_availability` samples as the
    surviving Envoy; with no other Ready Envoy pod it fails and says so. Then it waits (up to
    `contour_restart_timeout_s`) until no Contour process that ran at the cut still runs: every container of
    `contour_selector` waiting, or started after the policy was created. Only then does no Contour hold a cache to
    serve a new Envoy from. It deletes the pod (`grace_period_s`; -1: the pod's own, as a rollout does) and, for
    `follow_s` at most, sends `rate_per_s` GETs (`host` as Host, `timeout_s` each) to the replacement's pod IP on
    `port`, reads its Ready condition and the policy every second, and tries its stats listener on `stats_port`
    (which Envoy gets from Contour over xDS). It ends once the replacement, after the heal (the policy gone), has
    answered `settle_successes` 200s and is Ready.

    Returns `deleted_pod`, `kept_pods`, `replacement_pod`, `contours` (each container's state at the delete),
    `deleted_at`, `heal_seen`, `heal_after_delete_s`, the replacement's `requests_before_heal` and
    `requests_after_heal` (`sent`, `ok`, `failed_by_kind`), `served_before_heal`, `first_200_after_delete_s`,
    `first_200_after_heal_s`, `ready_before_heal`, `ready_after_heal_s`, `stats_before_heal` (its stats listener
    answered before the heal), `xds_after_heal` (its LDS/CDS update counts once it served), `availability` over
    the whole lane and `meets_availability` against `min_availability`. It does not fail on what the replacement
    did: `chaoscontour gate` judges it (a replacement served before the heal means some Contour was not cut off).
    """
    parse_http_url(keep_url, "keep_url")
    keep_address = urlsplit(keep_url).hostname or ""
    require_namespace(namespace)
    envoy_selector = format_label_selector(parse_label_selector(label_selector))
    host = parse_host(host) if host else ""
    port = parse_count(port, "port", minimum=1, maximum=65535)
    stats_port = parse_count(stats_port, "stats_port", minimum=1, maximum=65535)
    require_namespace(contour_namespace, "contour_namespace")
    contour_sel = format_label_selector(parse_label_selector(contour_selector))
    run = require_run_id(run_id or process_run_id())
    restart_wait = parse_seconds(contour_restart_timeout_s, "contour_restart_timeout_s", maximum=1800)
    follow = parse_seconds(follow_s, "follow_s", maximum=3600)
    interval = 1.0 / parse_seconds(rate_per_s, "rate_per_s", maximum=100)
    request_timeout = parse_seconds(timeout_s, "timeout_s", maximum=30)
    floor = parse_ratio(min_availability, "min_availability")
    settle = parse_count(settle_successes, "settle_successes", minimum=1, maximum=10000)
    grace = parse_count(grace_period_s, "grace_period_s", minimum=-1, maximum=3600)

    k = kube(secrets)

    def cut_policy() -> Dict[str, Any] | None:
        return read_policy(k, ApiServerCut.spec, contour_namespace, run)

    policy = cut_policy()
    if policy is None:
        raise ActivityFailed(
            f"restart_envoy_pod: no API-server fault of run {run!r} in namespace {contour_namespace!r}: run it after "
            "block_apiserver_egress, with the same namespace and run_id"
        )
    cut = parse_api_time(policy["metadata"].get("creationTimestamp")) or datetime.now(UTC)
    try:
        victim, kept = pick_envoy_to_delete(list_pods(k, namespace, envoy_selector), keep_address)
    except NoSecondEnvoy as exc:
        raise ActivityFailed(f"restart_envoy_pod: {exc}") from exc
    victim_name = str(victim["metadata"]["name"])

    progress = Progress()
    states: list[Dict[str, Any]] = []

    def restarted() -> bool:
        nonlocal states
        if cut_policy() is None:
            raise ActivityFailed("restart_envoy_pod: the API-server fault was removed before every Contour restarted")
        done, states = contours_restarted_since(list_pods(k, contour_namespace, contour_sel), cut)
        return done

    waited = poll_until(
        restarted,
        restart_wait,
        2.0,
        on_wait=lambda s: progress(
            f"restart_envoy_pod: waiting for every Contour to restart since the cut ({s:.0f} s)"
        ),
    )
    if not waited.done:
        still = ", ".join(f"{s['pod']} running since {s['started_at']}" for s in states if not s["started_after_cut"])
        raise ActivityFailed(
            f"restart_envoy_pod: not every Contour restarted within {restart_wait:g} s of waiting ({still or 'no pod'})"
            "; lengthen contour_restart_timeout_s (the liveness probe restarts Contour about 30 s into the outage)"
        )
    before = {str(p["metadata"]["name"]) for p in list_pods(k, namespace, envoy_selector)}
    deleted_wall = time.time()
    deleted_at = time.monotonic()
    call(
        f"delete pod {namespace}/{victim_name}",
        k.core.delete_namespaced_pod,
        victim_name,
        namespace,
        grace_period_seconds=None if grace < 0 else grace,
    )
    logger.info(
        f"restart_envoy_pod: every Contour restarted since the cut ({waited.elapsed_s:.0f} s); deleted Envoy pod "
        f"{namespace}/{victim_name}, keeping {', '.join(kept)}"
    )

    attempts: list[Attempt] = []
    replacement: Dict[str, Any] | None = None
    heal_at: float | None = None
    ready_at: float | None = None
    ready_before_heal = stats_before_heal = False
    xds_after: Dict[str, Any] | None = None
    ok_after_heal = 0  # the replacement's 200s since the heal: the follow ends at `settle` of them, once Ready
    next_read = 0.0
    while time.monotonic() - deleted_at < follow and not stop.requested():
        now = time.monotonic()
        tick = now >= next_read  # once a second: the policy, the pods, and the stats listener until the heal
        if tick:
            next_read = now + _LIST_EVERY_S
            if heal_at is None and cut_policy() is None:
                heal_at = time.monotonic()
                logger.info(f"restart_envoy_pod: the fault is gone, {heal_at - deleted_at:.1f} s after the delete")
            fresh = [
                p
                for p in list_pods(k, namespace, envoy_selector)
                if p["metadata"]["name"] not in before and not p["metadata"].get("deletionTimestamp")
            ]
            if fresh:
                replacement = fresh[0]
            if replacement is not None and pod_ready(replacement) and ready_at is None:
                ready_at = time.monotonic()
                ready_before_heal = heal_at is None
        ip = (replacement or {}).get("status", {}).get("podIP")
        if tick and ip and heal_at is None and not stats_before_heal:
            stats_before_heal = _stats(f"http://{ip}:{stats_port}/stats", request_timeout) is not None
        if ip:
            try:
                answer = http.get(f"http://{ip}:{port}/", host=host, timeout_s=request_timeout)
                attempts.append(Attempt(time.monotonic(), answer.status))
            except http.RequestFailed as exc:
                attempts.append(Attempt(time.monotonic(), None, exc.kind))
            if attempts[-1].ok and heal_at is not None:
                ok_after_heal += 1
                if xds_after is None:
                    xds_after = _stats(f"http://{ip}:{stats_port}/stats", request_timeout)
            if ok_after_heal >= settle and ready_at is not None:
                break
        stop.wait(max(0.0, interval - (time.monotonic() - now)))

    lane = lane_summary(attempts, deleted_at=deleted_at, heal_at=heal_at, min_availability=floor)
    if replacement is None:
        logger.error(f"restart_envoy_pod: no replacement of {victim_name} appeared within {follow:g} s")
    return {
        "deleted_pod": victim_name,
        "namespace": namespace,
        "kept_pods": kept,
        "replacement_pod": (replacement or {}).get("metadata", {}).get("name"),
        "replacement_ip": (replacement or {}).get("status", {}).get("podIP"),
        "contours": states,
        "contour_restart_wait_s": round(waited.elapsed_s, 1),
        "deleted_at": format_utc(deleted_wall),
        "heal_seen": heal_at is not None,
        "heal_after_delete_s": round(heal_at - deleted_at, 1) if heal_at is not None else None,
        "ready_before_heal": ready_before_heal,
        "ready_after_heal_s": round(ready_at - heal_at, 1) if ready_at and heal_at and not ready_before_heal else None,
        "stats_before_heal": stats_before_heal,
        "xds_after_heal": xds_after,
        **lane,
    }
