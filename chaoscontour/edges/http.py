"""One-shot HTTP requests (``requests``), and the short names that every probe gives to why a request failed.

The sampler (:mod:`chaoscontour.edges.sampler`) has its own lean client; both name failures with
:func:`error_kind`, so ``error_kinds`` reads the same whichever probe reported it.
"""

import errno
import http.client
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter

from chaoscontour import __version__

__all__ = ["USER_AGENT", "Answer", "RequestFailed", "errno_kind", "error_kind", "error_text", "get"]

USER_AGENT = f"chaoscontour/{__version__}"


@dataclass(frozen=True)
class Answer:
    status: int
    text: str


class RequestFailed(Exception):
    """A request that got no answer: ``kind`` is a key of ``error_kinds`` (``connection_refused``...)."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(f"{kind} ({text})")
        self.kind = kind
        self.text = text


def get(
    url: str,
    *,
    host: str = "",
    timeout_s: float,
    verify_tls: bool = True,
    params: Mapping[str, str] | None = None,
) -> Answer:
    """One GET on a fresh connection, without retries or redirects (a retried request would hide the very failure
    we measure; a 301 is a 301). Raises :class:`RequestFailed` when no answer came."""
    with requests.Session() as session:
        session.headers["User-Agent"] = USER_AGENT
        if host:
            session.headers["Host"] = host
        session.verify = verify_tls
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        try:
            response = session.get(url, params=params, timeout=timeout_s, allow_redirects=False)
        except requests.RequestException as exc:
            raise RequestFailed(error_kind(exc), error_text(exc)) from exc
        return Answer(response.status_code, response.text)


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


_ERRNO_KINDS = {
    errno.ECONNREFUSED: "connection_refused",
    errno.ECONNRESET: "connection_reset",
    errno.EPIPE: "connection_reset",
    errno.ETIMEDOUT: "timeout",
    errno.EHOSTUNREACH: "host_unreachable",
    errno.ENETUNREACH: "network_unreachable",
}


def errno_kind(err: int, connecting: bool = False) -> str:
    """The ``error_kinds`` name of a socket error number (``connecting``: the error ended a connection attempt)."""
    if err == errno.ETIMEDOUT and connecting:
        return "connect_timeout"
    return _ERRNO_KINDS.get(err, "connection_error")


def error_kind(exc: BaseException) -> str:
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
        if isinstance(cause, ssl.SSLError):
            return "tls_error"
        if isinstance(cause, TimeoutError):
            return "timeout"
        if isinstance(cause, OSError) and cause.errno in _ERRNO_KINDS:
            return errno_kind(cause.errno)
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connection_error"
    if isinstance(exc, OSError):
        return "connection_error"
    return "request_error"


def error_text(exc: BaseException) -> str:
    """The innermost message of ``exc`` (e.g. ``[Errno 111] Connection refused``), without URLs or headers."""
    innermost = exc
    for cause in _causes(exc):
        innermost = cause
    return f"{type(innermost).__name__}: {innermost}"[:200]
