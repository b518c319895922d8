"""Open-loop HTTP traffic at a fixed rate, cheap enough for thousands of requests per second on one core.

What it does: request ``i`` is due at ``start + i / rate_per_s`` (absolute deadlines on the monotonic clock) and is
sent then, whatever happened to the earlier ones: a slow or hung answer never delays the next request, and never
lowers the rate. Every due request becomes a sample, including those that could not be sent (``not_sent``: every
connection the sampler may open was busy) and those still unanswered when sampling ended (``unfinished``).

How it stays cheap (figures in docs/measurements.md): one thread, non-blocking sockets, the request bytes
built once, no HTTP library in the request path; and the loop wakes once per due time, not once per answer. Answers
wait in the kernel until the next wake-up and their latency is taken from the kernel's receive timestamp
(``SO_TIMESTAMPNS``), so reading an answer late neither makes it look slow nor puts the sampler's own scheduling
delays into the latency it reports. Only what must go out at once wakes the loop: a connection that has just been
established (the request is sent on it), a TLS handshake, and answers over TLS (which have no kernel timestamp).

This module holds the schedule (the loop that sends each request when it is due, then drains the answers). The
sockets, from connect to answer, are :mod:`chaoscontour.edges.sampler_connections`'; the accounts of every request and
the result are :mod:`chaoscontour.domain.sample_ledger`'s; timers, readiness and receive times are
:mod:`chaoscontour.edges.poller`'s; the HTTP/1.1 bytes are :mod:`chaoscontour.edges.http1`'s.

Stop: the loop watches :mod:`chaoscontour.edges.stop`; once a stop is requested it sends nothing more, gives the
requests in flight at most ``STOP_GRACE_S`` and returns what it measured, marked ``stopped_early``.
"""

import math
import resource
import socket
import ssl
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from chaoscontour.domain.availability import NOT_SENT, OutageTracker
from chaoscontour.domain.sample_ledger import NeverServed, SampleLedger, SamplerResult
from chaoscontour.edges import stop
from chaoscontour.edges.http1 import build_request
from chaoscontour.edges.poller import wait
from chaoscontour.edges.sampler_connections import Connections

__all__ = [
    "CONNECTION_MODES",
    "NeverServed",
    "SamplerResult",
    "TrafficSampler",
    "default_max_connections",
]

CONNECTION_MODES = ("keep-alive", "new")
STOP_GRACE_S = 0.5
# The longest the loop sleeps without looking at the stop flag.
MAX_SLEEP_S = 0.1
MAX_CONNECTIONS = 4096


def _descriptor_room() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MAX_CONNECTIONS if soft == resource.RLIM_INFINITY else max(16, soft - 128)


def default_max_connections(rate_per_s: float, timeout_s: float) -> int:
    """Enough connections for every request of one timeout to be in flight at once (a hung backend), within the
    process's descriptor limit."""
    return max(4, min(MAX_CONNECTIONS, _descriptor_room(), math.ceil(rate_per_s * timeout_s * 1.25) + 8))


class TrafficSampler:
    """One sampling window: ``run()`` sends ``round(duration_s * rate_per_s)`` requests and returns a
    :class:`SamplerResult`. See the module docstring for how."""

    def __init__(
        self,
        url: str,
        *,
        host: str = "",
        rate_per_s: float,
        duration_s: float,
        timeout_s: float,
        expected_status: frozenset[int],
        verify_tls: bool = True,
        connection: str = "keep-alive",
        max_connections: int | None = None,
        on_progress: Callable[[float, int, float, float], None] | None = None,
        progress_every_s: float = 5.0,
    ) -> None:
        if connection not in CONNECTION_MODES:
            raise ValueError(f"connection must be one of {CONNECTION_MODES}")
        parts = urlsplit(url)
        self.tls = parts.scheme == "https"
        self.address = (parts.hostname or "", parts.port or (443 if self.tls else 80))
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default_host = parts.hostname or ""
        if ":" in default_host:
            default_host = f"[{default_host}]"
        if parts.port:
            default_host += f":{parts.port}"
        self.request = build_request(path, host or default_host)
        self.rate_per_s = rate_per_s
        self.duration_s = duration_s
        self.timeout_s = timeout_s
        self.expected_status = expected_status
        self.keep_alive = connection == "keep-alive"
        if max_connections:
            self.max_connections = max(1, min(max_connections, _descriptor_room()))
        else:
            self.max_connections = default_max_connections(rate_per_s, timeout_s)
        self.on_progress = on_progress
        self.progress_every_s = progress_every_s
        self.planned = max(1, round(duration_s * rate_per_s))
        self._ssl: ssl.SSLContext | None = None
        if self.tls:
            self._ssl = ssl.create_default_context()
            if not verify_tls:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        self._server_hostname = parts.hostname
        self._ledger = SampleLedger(self.planned, rate_per_s, timeout_s)

    def _connections(self) -> Connections:
        """Fresh connections to the URL's first address (a name that does not resolve is :class:`NeverServed`)."""
        try:
            infos = socket.getaddrinfo(self.address[0], self.address[1], type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise NeverServed(0, self._ledger.first_second_planned, f"dns_error ({exc})") from exc
        family, _, _, _, sockaddr = infos[0]
        return Connections(
            self._ledger,
            self.request,
            timeout_s=self.timeout_s,
            expected_status=self.expected_status,
            keep_alive=self.keep_alive,
            max_connections=self.max_connections,
            tls=self._ssl,
            server_hostname=self._server_hostname,
            family=family,
            sockaddr=sockaddr,  # type: ignore[arg-type]
        )

    def _send_due(self, conns: Connections, index: int, due_wall: float, now_wall: float, now: float) -> None:
        self._ledger.sent(index, now_wall, due_wall)
        if not conns.send(index, now_wall, now):  # every connection the sampler may open is busy
            self._ledger.started[index] = due_wall
            self._ledger.settle(index, 0.0, False, NOT_SENT)

    def run(self) -> SamplerResult:
        conns = self._connections()
        ledger = self._ledger
        interval = 1.0 / self.rate_per_s
        planned = self.planned
        tracker = OutageTracker()
        frontier = 0
        mono0 = time.monotonic()
        wall0 = time.time()
        next_progress = mono0 + self.progress_every_s
        verified = False
        stopped = ""
        index = 0
        try:
            # Sending: wake for due requests and for what must go out at once; read answers at each wake-up.
            while index < planned:
                now = time.monotonic()
                now_wall = time.time()
                if stop.requested():
                    stopped = stop.reason() or "stop requested"
                    break
                conns.events(conns.rx.ready(), now_wall)
                conns.expire(now, now_wall)
                while index < planned and mono0 + index * interval <= now:
                    self._send_due(conns, index, wall0 + index * interval, now_wall, now)
                    index += 1
                if not verified:
                    verified = ledger.check_first_second(now - mono0)
                if now >= next_progress and self.on_progress is not None:
                    frontier = ledger.advance(tracker, frontier, index)
                    self.on_progress(now - mono0, tracker.requests, _ratio(tracker), tracker.longest_s(now_wall))
                    next_progress += self.progress_every_s
                if index >= planned:
                    break
                wake_at = mono0 + index * interval
                deadline = conns.next_deadline()
                if deadline is not None:
                    wake_at = min(wake_at, deadline)
                timeout = min(wake_at - time.monotonic(), MAX_SLEEP_S)
                if timeout > 0 and wait((conns.wake,), timeout):
                    conns.events(conns.wake.ready(), time.time())
            window_end = time.time() if stopped else max(time.time(), wall0 + planned * interval)
            # Draining: every request sent so far gets its answer or its timeout (or STOP_GRACE_S after a stop).
            drain_until = time.monotonic() + (STOP_GRACE_S if stopped else self.timeout_s + 0.05)
            while index > 0 and conns.in_flight():
                now = time.monotonic()
                if not stopped and stop.requested():
                    stopped = stop.reason() or "stop requested"
                    drain_until = min(drain_until, now + STOP_GRACE_S)
                if now >= drain_until:
                    break
                now_wall = time.time()
                conns.events(conns.rx.ready(), now_wall)
                conns.events(conns.wake.ready(), now_wall)
                conns.expire(now, now_wall)
                if not verified:
                    verified = ledger.check_first_second(now - mono0)
                if conns.in_flight():
                    wait((conns.wake, conns.rx), min(drain_until - now, 0.01))
            unfinished = ledger.settle_unfinished(index, time.time())
            if not verified and not stopped:
                ledger.check_first_second(math.inf)
        finally:
            conns.close()
        return ledger.result(index, (wall0, window_end), unfinished, conns.opened, conns.kernel_ts, stopped)


def _ratio(tracker: OutageTracker) -> float:
    return tracker.successes / tracker.requests if tracker.requests else 0.0
