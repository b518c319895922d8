"""Probes that look at Envoy from the outside: does it serve, how available was it across a fault, is it connected to
Contour.

Envoy keeps its last configuration when Contour goes away (docs/contour-and-envoy.md, "Envoy"), so these probes are the
evidence an experiment needs: traffic still flows (``envoy_serving``, ``envoy_availability``) while Envoy is cut off
from its control plane (``envoy_xds_connected``). Each one checks its arguments (``domain.inputs``), calls an edge
(``edges.http`` for one request, ``edges.sampler`` for traffic) and shapes the output (``domain.availability``,
``domain.envoy_stats``).

No ``from __future__ import annotations`` here: chaostoolkit's discovery reads the annotations as objects.
"""

import time
from typing import Any, Dict, List

from chaoslib.exceptions import ActivityFailed
from logzero import logger

from chaoscontour.activities._common import user_errors
from chaoscontour.domain.availability import summarize
from chaoscontour.domain.clock import format_utc
from chaoscontour.domain.envoy_stats import (
    CDS,
    LDS,
    XDS_CLUSTER_FILTER,
    control_plane_identifier,
    describe_xds_stats,
    parse_stats,
    xds_state,
)
from chaoscontour.domain.inputs import (
    InvalidInput,
    parse_bool,
    parse_choice,
    parse_count,
    parse_host,
    parse_http_url,
    parse_ratio,
    parse_seconds,
    parse_statuses,
    redact_url,
)
from chaoscontour.edges import http
from chaoscontour.edges.sampler import CONNECTION_MODES, NeverServed, TrafficSampler

__all__ = ["envoy_availability", "envoy_serving", "envoy_xds_connected"]

DEFAULT_EXPECTED_STATUS = [200]
# How often a running sampler logs its progress.
PROGRESS_EVERY_S = 5.0
MAX_RATE_PER_S = 5000.0
MAX_REQUESTS = 2_000_000
MAX_TIMEOUT_S = 300.0
MAX_SAMPLING_S = 86_400.0
MAX_CONNECTIONS = 4096
# Only the stats these probes read: Contour's Envoy has thousands of per-cluster stats.
# The xDS gauges and counters, and the request gauges of the cluster Envoy reaches Contour through.
STATS_FILTER = r"^(control_plane|cluster_manager\.cds|listener_manager\.lds)\.|" + XDS_CLUSTER_FILTER
LISTENER_EXAMPLE = "http://127.0.0.1:8080/"
STATS_EXAMPLE = "http://127.0.0.1:8002/stats"


def _where(url: str, host: str) -> str:
    return redact_url(url) + (f" with Host {host!r}" if host else " (no Host header set)")


# -- probe 1 --
@user_errors
def envoy_serving(
    url: str = LISTENER_EXAMPLE,
    host: str = "",
    expected_status: List[int] = DEFAULT_EXPECTED_STATUS,
    body_contains: str = "",
    timeout_s: float = 2.0,
    verify_tls: bool = True,
) -> bool:
    """Send one GET request through Envoy and tell whether it was served.

    Returns `true` when the answer's status is one of `expected_status` and, if `body_contains` is set, the body
    contains that text. Anything else returns `false` and logs why: another status, a missing text, a timeout, a
    refused or reset connection. It never raises for a failed request, so a miss reads as a deviation of the steady
    state and the rollbacks still run. Redirects are not followed: a 301 is a 301.

    Arguments: `url` is the Envoy listener URL to request, e.g. `http://127.0.0.1:8080/` or the address of the Envoy
    Service (http or https). `host` is the `Host` header to send (the virtual host of the route under test, e.g.
    `echo.example.com`); empty sends the URL's host. `expected_status` lists the status codes that count as served
    (default `[200]`; also `"200,204"`). `body_contains` is text the body must contain (empty: not checked).
    `timeout_s` bounds the connection and each read, in seconds (at most 300). `verify_tls` checks the server
    certificate of an https URL (`true`/`false`, also `yes`/`no`, `on`/`off`, `1`/`0`); set it to `false` for a
    self-signed certificate (the `host` does not change the TLS server name: use the real name in the URL to verify).

    Invalid arguments (a URL that is not http(s), a timeout of 0 or less, status codes outside 100-599) raise an
    error that says what to fix.
    """
    target = parse_http_url(url, "url", LISTENER_EXAMPLE)
    host_header = parse_host(host, "host")
    statuses = parse_statuses(expected_status, "expected_status")
    timeout = parse_seconds(timeout_s, "timeout_s", maximum=MAX_TIMEOUT_S)
    verify = parse_bool(verify_tls, "verify_tls")
    needle = "" if body_contains is None else str(body_contains)
    where = redact_url(target) + (f" (Host: {host_header})" if host_header else "")

    try:
        answer = http.get(target, host=host_header, timeout_s=timeout, verify_tls=verify)
    except http.RequestFailed as failed:
        logger.info(f"envoy_serving: {where} not served: {failed.kind} ({failed.text})")
        return False
    if answer.status not in statuses:
        logger.info(f"envoy_serving: {where} answered {answer.status}, expected one of {sorted(statuses)}")
        return False
    if needle and needle not in answer.text:
        logger.info(f"envoy_serving: {where} answered {answer.status} but the body lacks {needle!r}")
        return False
    logger.info(f"envoy_serving: {where} served ({answer.status})")
    return True


# -- probe 2: the sampler --
@user_errors
def envoy_availability(
    url: str = LISTENER_EXAMPLE,
    host: str = "",
    duration_s: float = 60.0,
    rate_per_s: float = 20.0,
    timeout_s: float = 1.0,
    expected_status: List[int] = DEFAULT_EXPECTED_STATUS,
    verify_tls: bool = True,
    min_availability: float = 0,
    connection: str = "keep-alive",
    max_connections: int = 0,
) -> Dict[str, Any]:
    """Send requests through Envoy at a fixed rate for a fixed time and report how available it was.

    Meant to run as a `background: true` activity across the fault window: start it before the fault, give it a
    `duration_s` that covers the fault and the recovery. Requests are open-loop: request number `i` is sent at
    `start + i / rate_per_s` whatever happened to the previous ones, so a slow or hung answer never lowers the rate
    (the sampler opens another connection instead, up to `max_connections`). A request succeeds when it is answered
    with one of `expected_status` within `timeout_s`.

    Returns a mapping: `requests` (every request that was due, including `requests_not_sent`), `successes`,
    `failures`, `availability` (successes / requests, 0..1), `longest_outage_s` (the longest run of failures: from
    the start of the first failed request after a success to the start of the next successful request; one still
    running at the end counts until the end; precise to about `1 / rate_per_s`), `longest_outage_started_at`,
    `outage_count`, `latency_ms` (`p50`, `p95`, `p99` of the successful requests, nearest rank, from sending the
    request, or starting its connection, to the kernel's receipt of the answer's last bytes), `error_kinds`
    (failures by kind: `http_503`, `connection_refused`, `read_timeout`, `not_sent`...), `requests_not_sent` (due
    but never sent because every allowed connection was busy: counted as failures, never dropped),
    `started_at` / `ended_at` (ISO 8601 UTC), `target_rate_per_s`, `achieved_rate_per_s` (of the requests sent),
    `send_lag_ms` (how late requests left against their schedule: `p50`, `p99`, `max`), `longest_send_gap_ms` (the
    longest time between two requests sent: an outage shorter than that may have gone unseen; about `1000 /
    rate_per_s` unless the sampler was starved of CPU), `connection`,
    `connections_opened`, `stopped_early` and `stop_reason`, and `timeline`: one row per second with `second`,
    `epoch_s`, `requests`, `successes`, `p50_ms`, `p95_ms`, `p99_ms`. Use it with a tolerance such as
    `{"type": "range", "range": [0.99, 1.0], "target": "availability"}` or a `jsonpath` on `$.longest_outage_s`.

    It fails loudly instead of reporting a meaningless ratio when no request succeeded in the first second (a wrong
    `url` or `host`, or Envoy not serving the route yet), naming the URL, the Host and the first error seen. A
    progress line is logged every 5 seconds. It stops by itself after `duration_s` (plus at most one timeout for the
    last answers). On SIGINT, SIGTERM or SIGUSR1 it stops within about a second and returns what it measured so far,
    with `stopped_early: true` and the signal in `stop_reason`, so that chaostoolkit reaches the rollbacks at once.

    Arguments: `url` is the Envoy listener URL (http or https). `host` is the `Host` header to send (the virtual host
    of the route under test); empty sends the URL's host. `duration_s` is how long to send traffic, in seconds (at
    most one day). `rate_per_s` is the number of requests per second (at most 5000, and `duration_s` x
    `rate_per_s` at most 2,000,000): at rate `r` an outage is measured to about `1 / r` (20/s: 50 ms; 200/s: 5 ms;
    1000/s: 1 ms); docs/measurements.md gives what each rate costs. `timeout_s` bounds one request, in
    seconds (at most 300); a request answered later counts as failed (`read_timeout`). `expected_status` lists the
    status codes that count as success (default `[200]`). `verify_tls` checks the server certificate of an https
    URL. `connection` is `keep-alive` (default: requests reuse a few open connections, so the figures are Envoy's
    routing of requests, as most clients see it) or `new` (every request opens its own connection and closes it,
    so the figures also cover Envoy's listener accepting connections, as new clients see it; it costs more CPU on
    both sides). `max_connections` caps the connections open at once (0, the default: enough for every request of
    one timeout to be in flight, at most 4096).

    `min_availability` (0..1, default 0 = no bound) adds `min_availability` and `meets_min_availability` to the
    result and logs an error when the ratio falls below it. The result is returned either way, so the journal keeps
    the figures and the timeline: chaostoolkit evaluates tolerances only in the steady-state hypothesis (and a
    failed method activity does not change `chaos run`'s exit code), so `chaoscontour gate` fails a journal in
    which `meets_min_availability` is false.
    """
    target = parse_http_url(url, "url", LISTENER_EXAMPLE)
    host_header = parse_host(host, "host")
    duration = parse_seconds(duration_s, "duration_s", maximum=MAX_SAMPLING_S)
    rate = _rate(rate_per_s)
    timeout = parse_seconds(timeout_s, "timeout_s", maximum=MAX_TIMEOUT_S)
    statuses = parse_statuses(expected_status, "expected_status")
    verify = parse_bool(verify_tls, "verify_tls")
    floor = parse_ratio(min_availability, "min_availability")
    mode = parse_choice(connection, "connection", CONNECTION_MODES)
    cap = parse_count(max_connections, "max_connections", maximum=MAX_CONNECTIONS)
    if duration * rate > MAX_REQUESTS:
        raise InvalidInput(
            f"duration_s x rate_per_s = {duration * rate:.0f} requests; keep it at most {MAX_REQUESTS:,} "
            "(lower the rate for a long window)"
        )
    where = _where(target, host_header)

    def progress(elapsed_s: float, requests: int, ratio: float, longest_s: float) -> None:
        logger.info(
            f"envoy_availability: {elapsed_s:.0f}/{duration:g} s, {requests} requests, "
            f"availability so far {ratio:.4f}, longest outage so far {longest_s:.3f} s"
        )

    sampler = TrafficSampler(
        target,
        host=host_header,
        rate_per_s=rate,
        duration_s=duration,
        timeout_s=timeout,
        expected_status=statuses,
        verify_tls=verify,
        connection=mode,
        max_connections=cap or None,
        on_progress=progress,
        progress_every_s=PROGRESS_EVERY_S,
    )
    logger.info(
        f"envoy_availability: {rate:g} requests/s for {duration:g} s to {where} ({mode} connections), "
        f"expecting {sorted(statuses)}"
    )
    try:
        run = sampler.run()
    except NeverServed as never:
        raise ActivityFailed(
            f"envoy_availability: no request to {where} succeeded in the first second of sampling "
            f"({never}). Check `url` and `host` (Envoy answers 404 when no route matches the Host) and that Envoy "
            "serves the route before the fault starts; an availability ratio would be meaningless."
        ) from None
    result = summarize(run.series, run.window_start, run.window_end).as_dict()
    result.update(
        {
            "url": redact_url(target),
            "host": host_header,
            "connection": mode,
            "target_rate_per_s": rate,
            "achieved_rate_per_s": round(run.achieved_rate_per_s, 3),
            "requests_planned": run.planned,
            "requests_unfinished": run.unfinished,
            "connections_opened": run.connections_opened,
            "send_lag_ms": run.send_lag_ms,
            "longest_send_gap_ms": run.longest_send_gap_ms,
            "stopped_early": run.stopped_early,
            "stop_reason": run.stop_reason,
        }
    )
    if run.not_sent:
        logger.warning(
            f"envoy_availability: {run.not_sent} requests could not be sent (all {sampler.max_connections} "
            "connections busy); they are counted as failed (`not_sent`)"
        )
    if run.unfinished:
        logger.warning(f"envoy_availability: {run.unfinished} requests still unanswered were counted as failed")
    if run.stopped_early:
        logger.warning(
            f"envoy_availability: stopped early ({run.stop_reason}) after {result['duration_s']:g} of {duration:g} s; "
            "returning the figures measured so far"
        )
    logger.info(
        f"envoy_availability: done: {result['requests']} requests, availability {result['availability']:.4f}, "
        f"longest outage {result['longest_outage_s']:.4f} s, achieved {result['achieved_rate_per_s']:.2f}/s"
    )
    if floor:
        result["min_availability"] = floor
        result["meets_min_availability"] = result["availability"] >= floor
        if not result["meets_min_availability"]:
            logger.error(
                f"envoy_availability: availability {result['availability']:.4%} is below min_availability "
                f"{floor:.4%} ({result['failures']} failed requests, longest outage {result['longest_outage_s']:.3f} s)"
            )
    return result


def _rate(value: object) -> float:
    # parse_seconds' bounds checks fit a rate as well; the message names the argument and its unit.
    try:
        return parse_seconds(value, "rate_per_s", maximum=MAX_RATE_PER_S)
    except InvalidInput as exc:
        raise InvalidInput(str(exc).replace(" seconds", " requests per second")) from None


# -- probe 3 --
@user_errors
def envoy_xds_connected(stats_url: str = STATS_EXAMPLE, timeout_s: float = 2.0) -> Dict[str, Any]:
    """Read Envoy's stats and tell whether Envoy is connected to its xDS server (Contour) and how old its
    configuration is.

    Returns a mapping: `connected` (true when every control-plane connected-state gauge Envoy has is 1: with
    Contour's bootstrap these are `cluster_manager.cds.control_plane.connected_state` and
    `listener_manager.lds.control_plane.connected_state`; with ADS, `control_plane.connected_state`; and, where
    Envoy's stats show the cluster it reaches Contour through, `<namespace>_contour_<port>` in Contour's bootstrap,
    no xDS stream still waits for a connection on it: Envoy sets a gauge to 1 when it starts a stream, so a 1 alone
    also reads while Envoy dials an address that never answers), `connected_states` (each gauge found), `stream`
    (that cluster's `xds_cluster`, `streams_waiting_for_connection` and `streams_open`; null without its stats),
    `control_plane_identifier` (the management server named in Envoy's last CDS or LDS response; null when it names
    none, as with Contour, whose xDS server leaves the field empty: `contour_xds_clients` finds the replica from
    Contour's side), `cds_update_age_s` and `lds_update_age_s` (seconds since the last
    accepted cluster / listener update, from `update_time`; `null` when none was ever accepted), and `cds` / `lds`
    with `update_success`, `update_rejected`, `update_failure`, `update_attempt`, `version` and `version_text`.
    While Contour is unreachable Envoy keeps serving its last configuration: expect `connected` false and growing
    ages, with traffic still flowing. Ages compare Envoy's clock with this machine's.

    A probe that cannot know says so: stats without any connected-state gauge (an Envoy whose configuration does not
    come from a gRPC xDS server, or stats that were filtered or renamed) fail with an error naming the xDS stats it
    did read, never `connected: false`.

    Arguments: `stats_url` is Envoy's stats endpoint in text format: port 8002 `/stats` on an Envoy configured by
    Contour (reach it with a port-forward), or the admin listener's `/stats`. `timeout_s` bounds the request, in
    seconds (at most 300). An unreachable endpoint, or one without Envoy's xDS stats, fails with an error saying so.
    """
    url = parse_http_url(stats_url, "stats_url", STATS_EXAMPLE)
    timeout = parse_seconds(timeout_s, "timeout_s", maximum=MAX_TIMEOUT_S)
    shown = redact_url(url)
    try:
        answer = http.get(url, timeout_s=timeout, params={"filter": STATS_FILTER})
    except http.RequestFailed as failed:
        raise ActivityFailed(
            f"envoy_xds_connected: Envoy's stats endpoint {shown} could not be reached "
            f"({failed.kind}: {failed.text}); check `stats_url` (port 8002 /stats on Contour's Envoy) "
            "and the port-forward to the Envoy pod"
        ) from failed
    if answer.status != 200:
        raise ActivityFailed(
            f"envoy_xds_connected: {shown} answered {answer.status}; point `stats_url` at Envoy's "
            "/stats (port 8002 on Contour's Envoy, or the admin listener)"
        )
    now = time.time()
    stats = parse_stats(answer.text)
    state = xds_state(stats)
    if not state.has_xds:
        raise ActivityFailed(
            f"envoy_xds_connected: {shown} shows no xDS stats ({CDS}.*, {LDS}.*, control_plane.*); is it "
            "Envoy's /stats in text format, of an Envoy configured over xDS?"
        )
    if state.connected is None:
        raise ActivityFailed(
            f"envoy_xds_connected: {shown} has no control-plane connected-state gauge, so whether Envoy is "
            f"connected to Contour cannot be known. Read: {describe_xds_stats(stats)}. Expected "
            f"`{CDS}.control_plane.connected_state` and `{LDS}.control_plane.connected_state` (Contour's "
            "bootstrap) or `control_plane.connected_state` (ADS): is this Envoy configured by Contour over gRPC?"
        )
    cds = state.cds.as_dict(now) if state.cds else None
    lds = state.lds.as_dict(now) if state.lds else None
    result = {
        "connected": bool(state.established),
        "connected_states": state.connected_states,
        "stream": state.stream_check(),
        "cds_update_age_s": cds["update_age_s"] if cds else None,
        "lds_update_age_s": lds["update_age_s"] if lds else None,
        "cds": cds,
        "lds": lds,
        "control_plane_identifier": control_plane_identifier(stats),
        "stats_url": shown,
        "checked_at": format_utc(now, "milliseconds"),
    }
    logger.info(
        f"envoy_xds_connected: connected={result['connected']} states={result['connected_states']} "
        f"cds age={result['cds_update_age_s']} s, lds age={result['lds_update_age_s']} s"
    )
    return result
