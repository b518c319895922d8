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

Timers, readiness and receive times are :mod:`chaoscontour.edges.poller`'s; the HTTP/1.1 bytes are
:mod:`chaoscontour.edges.http1`'s.

Stop: the loop watches :mod:`chaoscontour.edges.stop`; once a stop is requested it sends nothing more, gives the
requests in flight at most ``STOP_GRACE_S`` and returns what it measured, marked ``stopped_early``.
"""

import contextlib
import errno
import itertools
import math
import resource
import socket
import ssl
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from chaoscontour.domain.availability import NOT_SENT, UNFINISHED, OutageTracker, SampleSeries, percentile
from chaoscontour.edges import poller, stop
from chaoscontour.edges.http import errno_kind
from chaoscontour.edges.http1 import AnswerReader, build_request
from chaoscontour.edges.poller import IN, OUT, Poller, wait

__all__ = [
    "CONNECTION_MODES",
    "NeverServed",
    "SamplerResult",
    "TrafficSampler",
    "default_max_connections",
]

CONNECTION_MODES = ("keep-alive", "new")
# After one second the sampler judges whether the route serves at all (a wrong URL or Host would otherwise read as
# the biggest outage ever).
FIRST_SECOND_S = 1.0
STOP_GRACE_S = 0.5
# The longest the loop sleeps without looking at the stop flag.
MAX_SLEEP_S = 0.1
MAX_CONNECTIONS = 4096

_CONNECTING, _HANDSHAKE, _BUSY, _IDLE, _CLOSED = range(5)
_PENDING = 0  # outcome code of a request not yet settled


def _descriptor_room() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MAX_CONNECTIONS if soft == resource.RLIM_INFINITY else max(16, soft - 128)


def default_max_connections(rate_per_s: float, timeout_s: float) -> int:
    """Enough connections for every request of one timeout to be in flight at once (a hung backend), within the
    process's descriptor limit."""
    return max(4, min(MAX_CONNECTIONS, _descriptor_room(), math.ceil(rate_per_s * timeout_s * 1.25) + 8))


class NeverServed(Exception):
    """No request succeeded in the first second: the URL, the Host or the route is wrong, or Envoy is down."""

    def __init__(self, answered: int, planned: int, first_problem: str) -> None:
        super().__init__(f"{answered} of {planned} answered; first problem seen: {first_problem}")
        self.answered = answered
        self.planned = planned
        self.first_problem = first_problem


@dataclass
class SamplerResult:
    series: SampleSeries
    window_start: float  # epoch s
    window_end: float
    planned: int
    sent: int
    not_sent: int
    unfinished: int
    connections_opened: int
    achieved_rate_per_s: float
    send_lag_ms: dict[str, float | None]
    longest_send_gap_ms: float | None  # the longest time between two requests sent: what the sampler could not see
    kernel_timestamps: bool
    stopped_early: bool
    stop_reason: str


class _Conn:
    __slots__ = ("answer", "fd", "index", "sent_wall", "sock", "state")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.state = _CONNECTING
        self.index = -1
        self.sent_wall = 0.0
        self.answer = AnswerReader()


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
        self.first_second_planned = min(self.planned, max(1, math.ceil(FIRST_SECOND_S * rate_per_s - 1e-9)))
        self._ssl: ssl.SSLContext | None = None
        if self.tls:
            self._ssl = ssl.create_default_context()
            if not verify_tls:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        self._server_hostname = parts.hostname
        # Per request, by index (send order): settled columns, preallocated so a settled request costs no allocation.
        n = self.planned
        self._started = array("d", bytes(8 * n))
        self._duration = array("d", bytes(8 * n))
        self._lag = array("f", bytes(4 * n))
        self._ok = bytearray(n)
        self._outcome = array("H", bytes(2 * n))
        self._series = SampleSeries()
        self._series.kind("pending")  # code 0 (_PENDING)
        self._conns: dict[int, _Conn] = {}
        self._idle: list[_Conn] = []
        self._active = 0  # connections not closed
        self._opened = 0
        self._deadlines: deque[tuple[float, int, _Conn]] = deque()
        self._first_done = 0
        self._first_ok = 0
        self._first_problem = ""
        self._kernel_ts = poller.kernel_timestamps_available() and not self.tls
        self._family = socket.AF_INET
        self._sockaddr: tuple[str, int] | tuple[str, int, int, int] = self.address

    # -- settling one request --------------------------------------------------------------------------------------
    def _settle(self, index: int, duration_s: float, ok: bool, outcome: str) -> None:
        self._duration[index] = duration_s
        self._ok[index] = ok
        self._outcome[index] = self._series.kind(outcome)
        if index < self.first_second_planned:
            self._first_done += 1
            self._first_ok += ok
        if not ok and not self._first_problem:
            self._first_problem = f"HTTP {outcome[5:]}" if outcome.startswith("http_") else outcome

    def _fail(self, conn: _Conn, kind: str, now_wall: float, detail: str = "") -> None:
        if conn.index >= 0:
            if detail and not self._first_problem:
                self._first_problem = f"{kind} ({detail})"
            self._settle(conn.index, max(0.0, now_wall - conn.sent_wall), False, kind)
            conn.index = -1
        self._close(conn)

    # -- connections -----------------------------------------------------------------------------------------------
    def _close(self, conn: _Conn) -> None:
        if conn.state == _CLOSED:
            return
        for ep in (self._wake, self._rx):
            with contextlib.suppress(KeyError, OSError):
                ep.unregister(conn.fd)
        conn.state = _CLOSED
        self._conns.pop(conn.fd, None)
        self._active -= 1
        conn.sock.close()

    def _open(self, index: int, now_wall: float, now: float) -> None:
        try:
            sock = socket.socket(self._family, socket.SOCK_STREAM)
        except OSError as exc:  # out of descriptors (EMFILE): the request cannot go out, and is counted so
            if not self._first_problem:
                self._first_problem = f"{NOT_SENT} ({exc})"
            self._settle(index, 0.0, False, NOT_SENT)
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._kernel_ts:
            try:
                poller.enable_kernel_timestamps(sock)
            except OSError:
                self._kernel_ts = False
        conn = _Conn(sock)
        conn.index = index
        conn.sent_wall = now_wall
        self._conns[conn.fd] = conn
        self._active += 1
        self._opened += 1
        self._deadlines.append((now + self.timeout_s, index, conn))
        err = sock.connect_ex(self._sockaddr)
        if err not in (0, errno.EINPROGRESS):
            self._fail(
                conn, errno_kind(err, connecting=True), now_wall, f"[Errno {err}] {errno.errorcode.get(err, '')}"
            )
            return
        self._wake.register(conn.fd, OUT)

    def _connected(self, conn: _Conn, now_wall: float) -> None:
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(
                conn, errno_kind(err, connecting=True), now_wall, f"[Errno {err}] {errno.errorcode.get(err, '')}"
            )
            return
        if self._ssl is not None:
            self._wake.unregister(conn.fd)
            conn.sock = self._ssl.wrap_socket(
                conn.sock, server_hostname=self._server_hostname, do_handshake_on_connect=False
            )
            conn.state = _HANDSHAKE
            self._wake.register(conn.fd, OUT)
            self._handshake(conn, now_wall)
            return
        if self._kernel_ts:
            self._wake.unregister(conn.fd)
            self._rx.register(conn.fd, IN)
        else:  # no kernel timestamp: an answer must wake the loop to be timed when it comes
            self._wake.modify(conn.fd, IN)
        self._send_on(conn, now_wall)

    def _handshake(self, conn: _Conn, now_wall: float) -> None:
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._wake.modify(conn.fd, IN)
            return
        except ssl.SSLWantWriteError:
            self._wake.modify(conn.fd, OUT)
            return
        except (ssl.SSLError, OSError) as exc:
            self._fail(conn, "tls_error" if isinstance(exc, ssl.SSLError) else _exc_kind(exc), now_wall, str(exc))
            return
        # Answers over TLS have no kernel timestamp: they wake the loop and are timed when read.
        self._wake.modify(conn.fd, IN)
        self._send_on(conn, now_wall)

    def _send_on(self, conn: _Conn, now_wall: float) -> None:
        conn.state = _BUSY
        conn.answer.reset()
        try:
            sent = conn.sock.send(self.request)
        except OSError as exc:
            self._fail(conn, _exc_kind(exc), now_wall, str(exc))
            return
        if sent != len(self.request):  # an empty send buffer always takes a request of a few hundred bytes
            self._fail(conn, "send_error", now_wall, f"sent {sent} of {len(self.request)} bytes")

    # -- answers ---------------------------------------------------------------------------------------------------
    def _read(self, conn: _Conn, now_wall: float) -> None:
        received = now_wall
        try:
            if self._kernel_ts and not self.tls:
                data, stamp = poller.recv_timestamped(conn.sock, 65_536)
                if stamp is not None:
                    received = stamp
            else:
                data = conn.sock.recv(65_536)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError as exc:
            if conn.state == _BUSY:
                self._fail(conn, _exc_kind(exc), now_wall, str(exc))
            else:
                self._close(conn)
            return
        if conn.state != _BUSY:  # an idle connection closed by the server (or sent something unasked)
            self._close(conn)
            return
        if not data:
            if conn.answer.end():
                self._answered(conn, received)  # a body delimited by the end of the connection
            else:
                self._fail(conn, "connection_closed", now_wall, "closed before a complete answer")
            return
        try:
            complete = conn.answer.feed(data)
        except ValueError as exc:
            self._fail(conn, "bad_answer", now_wall, str(exc))
            return
        if complete:
            self._answered(conn, received)
        elif isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending():
            self._read(conn, now_wall)

    def _answered(self, conn: _Conn, received_wall: float) -> None:
        index = conn.index
        status = conn.answer.status
        duration = max(0.0, received_wall - conn.sent_wall)
        if duration > self.timeout_s:
            self._settle(index, duration, False, "read_timeout")
        else:
            self._settle(index, duration, status in self.expected_status, f"http_{status}")
        conn.index = -1
        if conn.answer.close_after or not self.keep_alive:
            self._close(conn)
        else:
            conn.state = _IDLE
            self._idle.append(conn)

    # -- the loop --------------------------------------------------------------------------------------------------
    def _resolve(self) -> None:
        try:
            infos = socket.getaddrinfo(self.address[0], self.address[1], type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise NeverServed(0, self.first_second_planned, f"dns_error ({exc})") from exc
        family, _, _, _, sockaddr = infos[0]
        self._family = family
        self._sockaddr = sockaddr  # type: ignore[assignment]

    def _send_due(self, index: int, due_wall: float, now_wall: float, now: float) -> None:
        self._started[index] = now_wall
        self._lag[index] = now_wall - due_wall
        while self._idle:
            conn = self._idle.pop()
            if conn.state != _IDLE:
                continue
            conn.index = index
            conn.sent_wall = now_wall
            self._deadlines.append((now + self.timeout_s, index, conn))
            self._send_on(conn, now_wall)
            return
        if self._active >= self.max_connections:
            self._started[index] = due_wall
            self._settle(index, 0.0, False, NOT_SENT)
            return
        self._open(index, now_wall, now)

    def _expire(self, now: float, now_wall: float) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, index, conn = deadlines.popleft()
            if conn.index == index and conn.state != _CLOSED:
                kind = "read_timeout" if conn.state == _BUSY else "connect_timeout"
                self._fail(conn, kind, now_wall)

    def _events(self, ready: list[tuple[int, int]], now_wall: float) -> None:
        for fd, _ in ready:
            conn = self._conns.get(fd)
            if conn is None:
                continue
            if conn.state == _CONNECTING:
                self._connected(conn, now_wall)
            elif conn.state == _HANDSHAKE:
                self._handshake(conn, now_wall)
            else:
                self._read(conn, now_wall)

    def _check_first_second(self, elapsed_s: float) -> bool:
        """True once a first-second request succeeded; raises :class:`NeverServed` when none will."""
        if self._first_ok:
            return True
        all_done = self._first_done >= self.first_second_planned
        overdue = elapsed_s >= FIRST_SECOND_S + self.timeout_s + 0.5
        if elapsed_s >= FIRST_SECOND_S and (all_done or overdue):
            raise NeverServed(self._first_done, self.first_second_planned, self._first_problem or "no answer")
        return False

    def run(self) -> SamplerResult:
        self._resolve()
        self._wake = Poller()
        self._rx = Poller()
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
                self._events(self._rx.ready(), now_wall)
                self._expire(now, now_wall)
                while index < planned and mono0 + index * interval <= now:
                    self._send_due(index, wall0 + index * interval, now_wall, now)
                    index += 1
                if not verified:
                    verified = self._check_first_second(now - mono0)
                if now >= next_progress and self.on_progress is not None:
                    frontier = self._advance(tracker, frontier, index)
                    self.on_progress(now - mono0, tracker.requests, _ratio(tracker), tracker.longest_s(now_wall))
                    next_progress += self.progress_every_s
                if index >= planned:
                    break
                wake_at = mono0 + index * interval
                deadlines = self._deadlines
                while deadlines and deadlines[0][2].index != deadlines[0][1]:
                    deadlines.popleft()  # answered already: its deadline must not cost a wake-up
                if deadlines:
                    wake_at = min(wake_at, deadlines[0][0])
                timeout = min(wake_at - time.monotonic(), MAX_SLEEP_S)
                if timeout > 0 and wait((self._wake,), timeout):
                    self._events(self._wake.ready(), time.time())
            window_end = time.time() if stopped else max(time.time(), wall0 + planned * interval)
            # Draining: every request sent so far gets its answer or its timeout (or STOP_GRACE_S after a stop).
            drain_until = time.monotonic() + (STOP_GRACE_S if stopped else self.timeout_s + 0.05)
            while self._in_flight(index):
                now = time.monotonic()
                if not stopped and stop.requested():
                    stopped = stop.reason() or "stop requested"
                    drain_until = min(drain_until, now + STOP_GRACE_S)
                if now >= drain_until:
                    break
                now_wall = time.time()
                self._events(self._rx.ready(), now_wall)
                self._events(self._wake.ready(), now_wall)
                self._expire(now, now_wall)
                if not verified:
                    verified = self._check_first_second(now - mono0)
                if self._in_flight(index):
                    wait((self._wake, self._rx), min(drain_until - now, 0.01))
            unfinished = 0
            now_wall = time.time()
            for i in range(index):
                if self._outcome[i] == _PENDING:
                    self._settle(i, max(0.0, now_wall - self._started[i]), False, UNFINISHED)
                    unfinished += 1
            if not verified and not stopped:
                self._check_first_second(math.inf)
        finally:
            for conn in list(self._conns.values()):
                self._close(conn)
            self._wake.close()
            self._rx.close()
        return self._result(index, wall0, window_end, unfinished, stopped)

    def _in_flight(self, sent: int) -> bool:
        return any(conn.index >= 0 for conn in self._conns.values()) and sent > 0

    def _advance(self, tracker: OutageTracker, frontier: int, sent: int) -> int:
        while frontier < sent and self._outcome[frontier] != _PENDING:
            tracker.add(self._started[frontier], bool(self._ok[frontier]))
            frontier += 1
        return frontier

    def _result(self, count: int, wall0: float, window_end: float, unfinished: int, stopped: str) -> SamplerResult:
        kinds = self._series.kinds
        series = SampleSeries.of_columns(
            self._started[:count], self._duration[:count], self._ok[:count], self._outcome[:count], kinds
        )
        not_sent_code = kinds.index(NOT_SENT) if NOT_SENT in kinds else -1
        sends = [t for t, o in zip(series.started_at, series.outcome, strict=True) if o != not_sent_code]
        if len(sends) > 1 and sends[-1] > sends[0]:
            achieved = (len(sends) - 1) / (sends[-1] - sends[0])
        else:
            achieved = len(sends) / max(window_end - wall0, 1e-9)
        gap = max((b - a for a, b in itertools.pairwise(sends)), default=None)
        lags = sorted(self._lag[:count])
        return SamplerResult(
            series=series,
            window_start=wall0,
            window_end=max(window_end, wall0),
            planned=self.planned,
            sent=len(sends),
            not_sent=count - len(sends),
            unfinished=unfinished,
            connections_opened=self._opened,
            achieved_rate_per_s=achieved,
            send_lag_ms={
                "p50": _ms(percentile(lags, 50)),
                "p99": _ms(percentile(lags, 99)),
                "max": _ms(lags[-1] if lags else None),
            },
            longest_send_gap_ms=_ms(gap),
            kernel_timestamps=self._kernel_ts,
            stopped_early=bool(stopped),
            stop_reason=stopped,
        )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _ratio(tracker: OutageTracker) -> float:
    return tracker.successes / tracker.requests if tracker.requests else 0.0


def _exc_kind(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return "tls_error"
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno_kind(exc.errno)
    return "connection_error"
