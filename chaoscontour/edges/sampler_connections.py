"""The sampler's connections: non-blocking sockets from connect to answer, each request settled in the ledger.

One :class:`Connections` owns every socket of a sampling window and the two pollers: ``wake`` holds what must be
handled at once (a connection just established, a TLS handshake, answers over TLS or without kernel timestamps),
``rx`` the answers that carry a kernel receive time and can wait for the loop's next wake-up. The loop in
:mod:`chaoscontour.edges.sampler` decides when a request goes out; this module sends it, reads its answer and
settles it in the :class:`~chaoscontour.domain.sample_ledger.SampleLedger`.
"""

import contextlib
import errno
import socket
import ssl
from collections import deque
from dataclasses import dataclass, field

from chaoscontour.domain.availability import NOT_SENT
from chaoscontour.domain.sample_ledger import SampleLedger
from chaoscontour.edges import poller
from chaoscontour.edges.http import errno_kind
from chaoscontour.edges.http1 import AnswerReader
from chaoscontour.edges.poller import IN, OUT, Poller

__all__ = ["Connections"]

_CONNECTING, _HANDSHAKE, _BUSY, _IDLE, _CLOSED = range(5)


class _Conn:
    __slots__ = ("answer", "fd", "index", "sent_wall", "sock", "state")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.state = _CONNECTING
        self.index = -1
        self.sent_wall = 0.0
        self.answer = AnswerReader()


@dataclass(eq=False)
class Connections:
    """The sockets of one sampling window to ``sockaddr``, at most ``max_connections`` open at once."""

    ledger: SampleLedger
    request: bytes
    timeout_s: float
    expected_status: frozenset[int]
    keep_alive: bool
    max_connections: int
    tls: ssl.SSLContext | None
    server_hostname: str | None
    family: int
    sockaddr: tuple[str, int] | tuple[str, int, int, int]
    wake: Poller = field(init=False, default_factory=Poller)
    rx: Poller = field(init=False, default_factory=Poller)
    opened: int = field(init=False, default=0)
    kernel_ts: bool = field(init=False, default=False)
    _conns: dict[int, _Conn] = field(init=False, default_factory=dict)
    _idle: list[_Conn] = field(init=False, default_factory=list)
    _active: int = field(init=False, default=0)  # connections not closed
    _deadlines: deque[tuple[float, int, _Conn]] = field(init=False, default_factory=deque)

    def __post_init__(self) -> None:
        self.kernel_ts = poller.kernel_timestamps_available() and self.tls is None

    # -- sending ---------------------------------------------------------------------------------------------------
    def send(self, index: int, now_wall: float, now: float) -> bool:
        """Send request ``index`` on an idle connection or a new one; ``False`` when every connection is busy."""
        while self._idle:
            conn = self._idle.pop()
            if conn.state != _IDLE:
                continue
            conn.index = index
            conn.sent_wall = now_wall
            self._deadlines.append((now + self.timeout_s, index, conn))
            self._send_on(conn, now_wall)
            return True
        if self._active >= self.max_connections:
            return False
        self._open(index, now_wall, now)
        return True

    def _open(self, index: int, now_wall: float, now: float) -> None:
        try:
            sock = socket.socket(self.family, socket.SOCK_STREAM)
        except OSError as exc:  # out of descriptors (EMFILE): the request cannot go out, and is counted so
            self.ledger.problem(f"{NOT_SENT} ({exc})")
            self.ledger.settle(index, 0.0, False, NOT_SENT)
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.kernel_ts:
            try:
                poller.enable_kernel_timestamps(sock)
            except OSError:
                self.kernel_ts = False
        conn = _Conn(sock)
        conn.index = index
        conn.sent_wall = now_wall
        self._conns[conn.fd] = conn
        self._active += 1
        self.opened += 1
        self._deadlines.append((now + self.timeout_s, index, conn))
        err = sock.connect_ex(self.sockaddr)
        if err not in (0, errno.EINPROGRESS):
            self._connect_failed(conn, err, now_wall)
            return
        self.wake.register(conn.fd, OUT)

    def _connected(self, conn: _Conn, now_wall: float) -> None:
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._connect_failed(conn, err, now_wall)
            return
        if self.tls is not None:
            self.wake.unregister(conn.fd)
            conn.sock = self.tls.wrap_socket(
                conn.sock, server_hostname=self.server_hostname, do_handshake_on_connect=False
            )
            conn.state = _HANDSHAKE
            self.wake.register(conn.fd, OUT)
            self._handshake(conn, now_wall)
            return
        if self.kernel_ts:
            self.wake.unregister(conn.fd)
            self.rx.register(conn.fd, IN)
        else:  # no kernel timestamp: an answer must wake the loop to be timed when it comes
            self.wake.modify(conn.fd, IN)
        self._send_on(conn, now_wall)

    def _connect_failed(self, conn: _Conn, err: int, now_wall: float) -> None:
        self._fail(conn, errno_kind(err, connecting=True), now_wall, f"[Errno {err}] {errno.errorcode.get(err, '')}")

    def _handshake(self, conn: _Conn, now_wall: float) -> None:
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self.wake.modify(conn.fd, IN)
            return
        except ssl.SSLWantWriteError:
            self.wake.modify(conn.fd, OUT)
            return
        except (ssl.SSLError, OSError) as exc:
            self._fail(conn, "tls_error" if isinstance(exc, ssl.SSLError) else _exc_kind(exc), now_wall, str(exc))
            return
        # Answers over TLS have no kernel timestamp: they wake the loop and are timed when read.
        self.wake.modify(conn.fd, IN)
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
    def events(self, ready: list[tuple[int, int]], now_wall: float) -> None:
        """Handle what the pollers found ready."""
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

    def _read(self, conn: _Conn, now_wall: float) -> None:
        received = now_wall
        try:
            if self.kernel_ts and self.tls is None:
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
            self.ledger.settle(index, duration, False, "read_timeout")
        else:
            self.ledger.settle(index, duration, status in self.expected_status, f"http_{status}")
        conn.index = -1
        if conn.answer.close_after or not self.keep_alive:
            self._close(conn)
        else:
            conn.state = _IDLE
            self._idle.append(conn)

    # -- deadlines and endings -------------------------------------------------------------------------------------
    def expire(self, now: float, now_wall: float) -> None:
        """Fail every request whose deadline (monotonic ``now``) has passed."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, index, conn = deadlines.popleft()
            if conn.index == index and conn.state != _CLOSED:
                kind = "read_timeout" if conn.state == _BUSY else "connect_timeout"
                self._fail(conn, kind, now_wall)

    def next_deadline(self) -> float | None:
        """The earliest deadline of a request still in flight (monotonic), ``None`` when there is none."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][2].index != deadlines[0][1]:
            deadlines.popleft()  # answered already: its deadline must not cost a wake-up
        return deadlines[0][0] if deadlines else None

    def in_flight(self) -> bool:
        return any(conn.index >= 0 for conn in self._conns.values())

    def _fail(self, conn: _Conn, kind: str, now_wall: float, detail: str = "") -> None:
        if conn.index >= 0:
            if detail:
                self.ledger.problem(f"{kind} ({detail})")
            self.ledger.settle(conn.index, max(0.0, now_wall - conn.sent_wall), False, kind)
            conn.index = -1
        self._close(conn)

    def _close(self, conn: _Conn) -> None:
        if conn.state == _CLOSED:
            return
        for ep in (self.wake, self.rx):
            with contextlib.suppress(KeyError, OSError):
                ep.unregister(conn.fd)
        conn.state = _CLOSED
        self._conns.pop(conn.fd, None)
        self._active -= 1
        conn.sock.close()

    def close(self) -> None:
        """Close every connection and both pollers."""
        for conn in list(self._conns.values()):
            self._close(conn)
        self.wake.close()
        self.rx.close()


def _exc_kind(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return "tls_error"
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno_kind(exc.errno)
    return "connection_error"
