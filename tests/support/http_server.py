"""The tests' one local HTTP server: a threaded server on 127.0.0.1, on a port the kernel picks, that answers
through a request handler the test writes (the stand-ins for Envoy's listener and admin, the scheduled-failure
backend). It starts and stops one way, with ``start()`` / ``stop()`` or as a context manager.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["LOOPBACK", "LocalServer", "QuietHandler"]

LOOPBACK = "127.0.0.1"


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing and answers with one call; ``self.server.owner`` is the object the
    server was made for (the fake whose state the answers read)."""

    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def answer(self, status: int, body: bytes | str, content_type: str = "text/plain") -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: Any = None


class LocalServer:
    """Serves ``handler`` on 127.0.0.1 in a daemon thread named ``name``; ``owner`` is reachable from the handler
    as ``self.server.owner``. The socket is bound at construction, so ``port`` and ``url`` are known before
    ``start()``."""

    def __init__(self, handler: type[QuietHandler], owner: Any = None, name: str = "local-http") -> None:
        self.server = _Server((LOOPBACK, 0), handler)
        self.server.owner = owner
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> LocalServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join(timeout=5)
        self.server.server_close()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
