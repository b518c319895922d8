"""Probes that look at Envoy from the outside: does it serve, how available was it across a fault, is it connected to
Contour.

Envoy keeps its last configuration when Contour goes away (CONTOUR-FACTS.md, "Envoy side"), so these probes are the
evidence an experiment needs: traffic still flows (``envoy_serving``, ``envoy_availability``) while Envoy is cut off
from its control plane (``envoy_xds_connected``).

No ``from __future__ import annotations`` here: chaostoolkit's discovery reads the annotations as objects.
"""

import concurrent.futures
import http.client
import math
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any, Dict, List
from urllib.parse import urlsplit, urlunsplit

import requests
from chaoslib.exceptions import ActivityFailed
from logzero import logger
from requests.adapters import HTTPAdapter

from chaoscontour import __version__
from chaoscontour.domain.availability import Sample, find_outages, iso_utc, summarize
from chaoscontour.domain.envoy_stats import CDS, LDS, parse_stats, xds_state

__all__ = ["envoy_availability", "envoy_serving", "envoy_xds_connected"]

DEFAULT_EXPECTED_STATUS = [200]
# How often a running sampler logs its progress, and how long it waits for a first success before it decides the
# URL or Host is wrong (a meaningless 0 % availability would otherwise read as the biggest outage ever).
PROGRESS_EVERY_S = 5.0
FIRST_SECOND_S = 1.0
MAX_RATE_PER_S = 1000.0
MAX_REQUESTS = 1_000_000
MAX_WORKERS = 512
USER_AGENT = f"chaoscontour/{__version__}"
# Only the stats these probes read: Contour's Envoy has thousands of per-cluster stats.
STATS_FILTER = r"^(control_plane|cluster_manager\.cds|listener_manager\.lds)\."


# -- argument checks: chaostoolkit passes values as written in the experiment, without coercion --
def _http_url(value: Any, name: str, example: str) -> str:
    url = str(value).strip() if isinstance(value, str) else ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ActivityFailed(f"`{name}` must be an http:// or https:// URL such as {example}, got {value!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ActivityFailed(f"`{name}` has an invalid port: {_redact(url)!r}") from None
    return url


def _redact(url: str) -> str:
    """``url`` without credentials, for logs and results."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = "***@" + parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _host(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or any(c.isspace() for c in value.strip()):
        raise ActivityFailed(f"`host` must be a host name such as 'echo.example.com' (or empty), got {value!r}")
    return value.strip()


def _number(value: Any, name: str, example: str, maximum: float | None = None) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or number <= 0:
        raise ActivityFailed(f"`{name}` must be a number greater than 0, such as {example}, got {value!r}")
    if maximum is not None and number > maximum:
        raise ActivityFailed(f"`{name}` must be at most {maximum:g}, got {value!r}")
    return number


def _ratio(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ActivityFailed(f"`{name}` must be a ratio between 0 and 1, such as 0.999, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ActivityFailed(f"`{name}` must be a ratio between 0 and 1, such as 0.999, got {value!r}") from None
    if not math.isfinite(number) or not 0 <= number <= 1:
        raise ActivityFailed(f"`{name}` must be a ratio between 0 and 1, such as 0.999, got {value!r}")
    return number


def _statuses(value: Any) -> frozenset[int]:
    items: Iterable[Any]
    if isinstance(value, str):
        items = [v for v in value.replace(" ", ",").split(",") if v]
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = value
    else:
        items = []
    codes = set()
    for item in items:
        try:
            code = int(item) if not isinstance(item, bool) else -1
        except (TypeError, ValueError):
            code = -1
        if not 100 <= code <= 599:
            raise ActivityFailed(
                f"`expected_status` must list HTTP status codes between 100 and 599, such as [200, 204]; "
                f"{item!r} is not one"
            )
        codes.add(code)
    if not codes:
        raise ActivityFailed(f"`expected_status` must list at least one HTTP status code, such as [200]; got {value!r}")
    return frozenset(codes)


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
        return value.strip().lower() in ("true", "yes", "1", "on")
    raise ActivityFailed(f"`{name}` must be true or false, got {value!r}")


# -- HTTP edge --
def _session(host: str, verify_tls: bool) -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    if host:
        session.headers["Host"] = host
    session.verify = verify_tls
    # One connection per session and no retries: a retried request would hide the very failure we measure.
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _causes(exc: BaseException) -> Iterable[BaseException]:
    """``exc`` and what it wraps (``__cause__``, ``__context__``, urllib3's ``reason``, exception args)."""
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < 16:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        todo.extend(n for n in nested if isinstance(n, BaseException))


def _error_kind(exc: BaseException) -> str:
    """A short stable name for why a request failed, used as a key of ``error_kinds``."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect_timeout"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "read_timeout"
    if isinstance(exc, requests.exceptions.SSLError):
        return "tls_error"
    for cause in _causes(exc):
        if isinstance(cause, ConnectionRefusedError):
            return "connection_refused"
        if isinstance(cause, ConnectionResetError):
            return "connection_reset"
        if isinstance(cause, http.client.RemoteDisconnected):
            return "connection_closed"
        if isinstance(cause, socket.gaierror):
            return "dns_error"
        if isinstance(cause, TimeoutError):
            return "timeout"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connection_error"
    return "request_error"


def _error_text(exc: BaseException) -> str:
    """The innermost message of ``exc`` (e.g. ``[Errno 111] Connection refused``), without URLs or headers."""
    innermost = exc
    for cause in _causes(exc):
        innermost = cause
    return f"{type(innermost).__name__}: {innermost}"[:200]


# -- probe 1 --
def envoy_serving(
    url: str = "http://127.0.0.1:8080/",
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
    (default `[200]`). `body_contains` is text the body must contain (empty: not checked). `timeout_s` bounds the
    connection and each read, in seconds. `verify_tls` checks the server certificate of an https URL; set it to
    `false` for a self-signed certificate (the `host` does not change the TLS server name: use the real name in the
    URL to verify).

    Invalid arguments (a URL that is not http(s), a timeout of 0 or less, status codes outside 100-599) raise an
    error that says what to fix.
    """
    target = _http_url(url, "url", "http://127.0.0.1:8080/")
    host_header = _host(host)
    statuses = _statuses(expected_status)
    timeout = _number(timeout_s, "timeout_s", "2.0")
    verify = _flag(verify_tls, "verify_tls")
    needle = "" if body_contains is None else str(body_contains)
    where = f"{_redact(target)}" + (f" (Host: {host_header})" if host_header else "")

    with _session(host_header, verify) as session:
        try:
            response = session.get(target, timeout=timeout, allow_redirects=False)
        except requests.RequestException as exc:
            logger.info(f"envoy_serving: {where} not served: {_error_kind(exc)} ({_error_text(exc)})")
            return False
        if response.status_code not in statuses:
            logger.info(f"envoy_serving: {where} answered {response.status_code}, expected one of {sorted(statuses)}")
            return False
        if needle and needle not in response.text:
            logger.info(f"envoy_serving: {where} answered {response.status_code} but the body lacks {needle!r}")
            return False
    logger.info(f"envoy_serving: {where} served ({response.status_code})")
    return True


# -- probe 2: the sampler --
class TrafficSampler:
    """Open-loop HTTP traffic at a fixed rate for a fixed time, recorded as :class:`Sample` values.

    Request ``i`` is due at ``start + i / rate_per_s`` (absolute deadlines): the dispatching thread only sleeps and
    hands requests to a worker pool, so a slow or hung request never delays the next one and never lowers the rate.
    The pool grows only when requests are slow (at most enough workers for every request of two timeouts to be in
    flight). Each worker keeps its own keep-alive connection. Sampling stops by itself: the schedule has a fixed
    number of requests, and in-flight requests get two timeouts plus a second to finish before they are counted as
    failed (``unfinished``).
    """

    def __init__(
        self,
        url: str,
        host: str,
        rate_per_s: float,
        duration_s: float,
        timeout_s: float,
        expected_status: frozenset[int],
        verify_tls: bool,
    ) -> None:
        self.url = url
        self.host = host
        self.rate_per_s = rate_per_s
        self.duration_s = duration_s
        self.timeout_s = timeout_s
        self.expected_status = expected_status
        self.verify_tls = verify_tls
        self.planned = max(1, round(duration_s * rate_per_s))
        self.first_second_planned = min(self.planned, max(1, math.ceil(FIRST_SECOND_S * rate_per_s - 1e-9)))
        self._lock = threading.Lock()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._samples: list[Sample] = []
        self._in_flight: dict[int, float] = {}
        self._successes = 0
        self._first_second_done = 0
        self._first_second_ok = 0
        self._first_problem: str | None = None
        self._mono0 = 0.0
        self._epoch0 = 0.0

    @property
    def where(self) -> str:
        return _redact(self.url) + (f" with Host {self.host!r}" if self.host else " (no Host header set)")

    def _epoch(self, mono: float) -> float:
        return self._epoch0 + (mono - self._mono0)

    def _worker_session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = _session(self.host, self.verify_tls)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def _request(self, index: int) -> None:
        session = self._worker_session()
        sent = time.monotonic()
        with self._lock:
            self._in_flight[index] = sent
        problem = None
        try:
            response = session.get(self.url, timeout=self.timeout_s, allow_redirects=False)
            ok = response.status_code in self.expected_status
            outcome = f"http_{response.status_code}"
            if not ok:
                problem = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            ok = False
            outcome = _error_kind(exc)
            problem = f"{outcome} ({_error_text(exc)})"
        except Exception as exc:  # a bug must not silently kill the worker and shrink the sample
            ok = False
            outcome = "request_error"
            problem = f"{outcome} ({type(exc).__name__}: {exc})"
        done = time.monotonic()
        sample = Sample(self._epoch(sent), done - sent, ok, outcome)
        with self._lock:
            if self._in_flight.pop(index, None) is None:
                return  # already counted as unfinished
            self._samples.append(sample)
            self._successes += ok
            if problem and self._first_problem is None:
                self._first_problem = problem
            if index < self.first_second_planned:
                self._first_second_done += 1
                self._first_second_ok += ok

    def _fail_if_never_served(self, elapsed_s: float, final: bool) -> bool:
        """True once a first-second request succeeded; raises when none did (wrong URL or Host, Envoy down)."""
        with self._lock:
            ok, done, problem = self._first_second_ok, self._first_second_done, self._first_problem
        if ok:
            return True
        all_done = done >= self.first_second_planned
        overdue = elapsed_s >= FIRST_SECOND_S + 2 * self.timeout_s + 1.0
        if final or (elapsed_s >= FIRST_SECOND_S and (all_done or overdue)):
            raise ActivityFailed(
                f"envoy_availability: no request to {self.where} succeeded in the first second of sampling "
                f"({done} of {self.first_second_planned} answered; first problem seen: {problem or 'no answer'}). "
                "Check `url` and `host` (Envoy answers 404 when no route matches the Host) and that Envoy serves "
                "the route before the fault starts; an availability ratio would be meaningless."
            )
        return False

    def _log_progress(self, now: float) -> None:
        with self._lock:
            samples = list(self._samples)
            successes = self._successes
        requests_so_far = len(samples)
        ratio = successes / requests_so_far if requests_so_far else 0.0
        longest = max((o.duration_s for o in find_outages(samples, self._epoch(now))), default=0.0)
        logger.info(
            f"envoy_availability: {now - self._mono0:.0f}/{self.duration_s:g} s, {requests_so_far} requests, "
            f"availability so far {ratio:.4f}, longest outage so far {longest:.3f} s"
        )

    def run(self) -> Dict[str, Any]:
        interval = 1.0 / self.rate_per_s
        workers = min(MAX_WORKERS, math.ceil(self.rate_per_s * 2 * self.timeout_s) + 4)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="envoy-sampler")
        self._mono0 = time.monotonic()
        self._epoch0 = time.time()
        next_progress = self._mono0 + PROGRESS_EVERY_S
        verified = False
        finished = False
        try:
            for index in range(self.planned):
                due = self._mono0 + index * interval
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)
                pool.submit(self._request, index)
                now = time.monotonic()
                if not verified:
                    verified = self._fail_if_never_served(now - self._mono0, final=False)
                if now >= next_progress:
                    self._log_progress(now)
                    next_progress += PROGRESS_EVERY_S
            window_end = self._epoch(max(time.monotonic(), self._mono0 + self.planned * interval))
            grace_until = time.monotonic() + 2 * self.timeout_s + 1.0
            while time.monotonic() < grace_until:
                with self._lock:
                    pending = self.planned - len(self._samples)
                if not verified:
                    verified = self._fail_if_never_served(time.monotonic() - self._mono0, final=False)
                if pending <= 0:
                    break
                time.sleep(0.01)
            with self._lock:
                for index, sent in sorted(self._in_flight.items()):
                    self._samples.append(Sample(self._epoch(sent), time.monotonic() - sent, False, "unfinished"))
                    if index < self.first_second_planned:
                        self._first_second_done += 1
                unfinished = len(self._in_flight)
                self._in_flight.clear()
                never_sent = self.planned - len(self._samples)
            if unfinished:
                logger.warning(f"envoy_availability: {unfinished} requests still unanswered were counted as failed")
            if never_sent:
                # Only when every worker was stuck for the whole grace period (MAX_WORKERS reached).
                logger.warning(f"envoy_availability: {never_sent} requests could not be sent (all workers busy)")
            if not verified:
                self._fail_if_never_served(time.monotonic() - self._mono0, final=True)
            finished = True
        finally:
            pool.shutdown(wait=finished, cancel_futures=True)
            with self._lock:
                sessions, self._sessions = self._sessions, []
            for session in sessions:
                session.close()
        return self._result(window_end)

    def _result(self, window_end: float) -> Dict[str, Any]:
        with self._lock:
            samples = list(self._samples)
        summary = summarize(samples, self._epoch0, window_end)
        sends = sorted(s.started_at for s in samples)
        if len(sends) > 1 and sends[-1] > sends[0]:
            achieved = (len(sends) - 1) / (sends[-1] - sends[0])
        else:
            achieved = len(sends) / self.duration_s
        result = summary.as_dict()
        result.update(
            {
                "url": _redact(self.url),
                "host": self.host,
                "target_rate_per_s": self.rate_per_s,
                "achieved_rate_per_s": round(achieved, 3),
            }
        )
        return result


def envoy_availability(
    url: str = "http://127.0.0.1:8080/",
    host: str = "",
    duration_s: float = 60.0,
    rate_per_s: float = 20.0,
    timeout_s: float = 1.0,
    expected_status: List[int] = DEFAULT_EXPECTED_STATUS,
    verify_tls: bool = True,
    min_availability: float = 0,
) -> Dict[str, Any]:
    """Send requests through Envoy at a fixed rate for a fixed time and report how available it was.

    Meant to run as a `background: true` activity across the fault window: start it before the fault, give it a
    `duration_s` that covers the fault and the recovery. Requests are open-loop: request number `i` is sent at
    `start + i / rate_per_s` whatever happened to the previous ones, so a hung request does not lower the rate.
    A request succeeds when it is answered with one of `expected_status`.

    Returns a mapping: `requests`, `successes`, `failures`, `availability` (successes / requests, 0..1),
    `longest_outage_s` (the longest run of failures: from the start of the first failed request after a success to
    the start of the next successful request; one still running at the end counts until the end; precise to about
    `1 / rate_per_s`), `longest_outage_started_at`, `outage_count`, `latency_ms` (`p50`, `p95`, `p99` of the
    successful requests, nearest rank), `error_kinds` (failures by kind: `http_503`, `connection_refused`,
    `read_timeout`...), `started_at` / `ended_at` (ISO 8601 UTC), `target_rate_per_s`, `achieved_rate_per_s`, and
    `timeline`: one row per second with `second`, `epoch_s`, `requests`, `successes`, `p50_ms`, `p99_ms`. Use it
    with a tolerance such as `{"type": "range", "range": [0.99, 1.0], "target": "availability"}` or a `jsonpath`
    on `$.longest_outage_s`.

    It fails loudly instead of reporting a meaningless ratio when no request succeeded in the first second (a wrong
    `url` or `host`, or Envoy not serving the route yet), naming the URL, the Host and the first error seen. A
    progress line is logged every 5 seconds. It stops by itself after `duration_s` (plus at most two timeouts).

    Arguments: `url` is the Envoy listener URL (http or https). `host` is the `Host` header to send (the virtual host
    of the route under test); empty sends the URL's host. `duration_s` is how long to send traffic, in seconds.
    `rate_per_s` is the number of requests per second (at most 1000; a higher rate sees shorter outages: 20/s sees
    50 ms). `timeout_s` bounds the connection and each read of one request, in seconds; a timed-out request counts as
    failed. `expected_status` lists the status codes that count as success (default `[200]`). `verify_tls` checks
    the server certificate of an https URL.

    `min_availability` (0..1, default 0 = no bound) adds `min_availability` and `meets_min_availability` to the
    result and logs an error when the ratio falls below it. The result is returned either way, so the journal keeps
    the figures and the timeline: chaostoolkit evaluates tolerances only in the steady-state hypothesis (and a
    failed method activity does not change `chaos run`'s exit code), so `chaoscontour gate` fails a journal in
    which `meets_min_availability` is false.
    """
    target = _http_url(url, "url", "http://127.0.0.1:8080/")
    host_header = _host(host)
    duration = _number(duration_s, "duration_s", "60")
    rate = _number(rate_per_s, "rate_per_s", "20", maximum=MAX_RATE_PER_S)
    timeout = _number(timeout_s, "timeout_s", "1.0")
    statuses = _statuses(expected_status)
    verify = _flag(verify_tls, "verify_tls")
    if duration * rate > MAX_REQUESTS:
        raise ActivityFailed(
            f"`duration_s` x `rate_per_s` = {duration * rate:.0f} requests; keep it at most {MAX_REQUESTS} "
            "(lower the rate for a long window)"
        )
    floor = _ratio(min_availability, "min_availability")
    sampler = TrafficSampler(target, host_header, rate, duration, timeout, statuses, verify)
    logger.info(
        f"envoy_availability: {rate:g} requests/s for {duration:g} s to {sampler.where}, expecting {sorted(statuses)}"
    )
    result = sampler.run()
    logger.info(
        f"envoy_availability: done: {result['requests']} requests, availability {result['availability']:.4f}, "
        f"longest outage {result['longest_outage_s']:.3f} s, achieved {result['achieved_rate_per_s']:.2f}/s"
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


# -- probe 3 --
def envoy_xds_connected(stats_url: str = "http://127.0.0.1:8002/stats", timeout_s: float = 2.0) -> Dict[str, Any]:
    """Read Envoy's stats and tell whether Envoy is connected to its xDS server (Contour) and how old its
    configuration is.

    Returns a mapping: `connected` (true when every control-plane connected-state gauge Envoy has is 1: with
    Contour's bootstrap these are `cluster_manager.cds.control_plane.connected_state` and
    `listener_manager.lds.control_plane.connected_state`; with ADS, `control_plane.connected_state`),
    `connected_states` (each gauge found), `cds_update_age_s` and `lds_update_age_s` (seconds since the last
    accepted cluster / listener update, from `update_time`; `null` when none was ever accepted), and `cds` / `lds`
    with `update_success`, `update_rejected`, `update_failure`, `update_attempt`, `version` and `version_text`.
    While Contour is unreachable Envoy keeps serving its last configuration: expect `connected` false and growing
    ages, with traffic still flowing. Ages compare Envoy's clock with this machine's.

    Arguments: `stats_url` is Envoy's stats endpoint in text format: port 8002 `/stats` on an Envoy configured by
    Contour (reach it with a port-forward), or the admin listener's `/stats`. `timeout_s` bounds the request, in
    seconds. An unreachable endpoint, or one without Envoy's xDS stats, fails with an error saying so.
    """
    url = _http_url(stats_url, "stats_url", "http://127.0.0.1:8002/stats")
    timeout = _number(timeout_s, "timeout_s", "2.0")
    with _session("", True) as session:
        try:
            response = session.get(url, params={"filter": STATS_FILTER}, timeout=timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise ActivityFailed(
                f"envoy_xds_connected: Envoy's stats endpoint {_redact(url)} could not be reached "
                f"({_error_kind(exc)}: {_error_text(exc)}); check `stats_url` (port 8002 /stats on Contour's Envoy) "
                "and the port-forward to the Envoy pod"
            ) from exc
    if response.status_code != 200:
        raise ActivityFailed(
            f"envoy_xds_connected: {_redact(url)} answered {response.status_code}; point `stats_url` at Envoy's "
            "/stats (port 8002 on Contour's Envoy, or the admin listener)"
        )
    now = time.time()
    state = xds_state(parse_stats(response.text))
    if not state.has_xds:
        raise ActivityFailed(
            f"envoy_xds_connected: {_redact(url)} shows no xDS stats ({CDS}.*, {LDS}.*, control_plane.*); is it "
            "Envoy's /stats in text format, of an Envoy configured over xDS?"
        )
    cds = state.cds.as_dict(now) if state.cds else None
    lds = state.lds.as_dict(now) if state.lds else None
    result = {
        "connected": bool(state.connected),
        "connected_states": state.connected_states,
        "cds_update_age_s": cds["update_age_s"] if cds else None,
        "lds_update_age_s": lds["update_age_s"] if lds else None,
        "cds": cds,
        "lds": lds,
        "stats_url": _redact(url),
        "checked_at": iso_utc(now),
    }
    if state.connected is None:
        logger.info(f"envoy_xds_connected: {_redact(url)} has no connected-state gauge: Envoy uses no gRPC xDS server")
    logger.info(
        f"envoy_xds_connected: connected={result['connected']} states={result['connected_states']} "
        f"cds age={result['cds_update_age_s']} s, lds age={result['lds_update_age_s']} s"
    )
    return result
