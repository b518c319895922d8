"""The sandbox's backend: a tiny HTTP server that answers every GET with the name of the pod it runs in.

The image ``chaoscontour/echo`` maps to ``python -m chaoscontour.sandbox.echo`` (see
:mod:`chaoscontour.sandbox.agent`). The answer names the pod (``$POD_NAME``, else the hostname, which the agent
sets to the pod name), so a test can see which backend Envoy picked; ``/healthz`` answers ``ok``, every other path
200 too. It also stands in for a user's image that has no local program (``sandbox up --manifests``), listening on
every port the container declares (``--port`` repeated).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["main"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up its own FQDN, which hangs where no DNS answers (a pod without cluster DNS).
        self.socket.bind(self.server_address)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    pod_name = "unknown"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"ok\n" if self.path == "/healthz" else f"{self.pod_name}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaoscontour.sandbox.echo", description=__doc__)
    parser.add_argument("--port", type=int, action="append", help="a port to listen on (repeatable; default 8080)")
    parser.add_argument("--address", default="0.0.0.0")
    args = parser.parse_args(argv)
    _Handler.pod_name = os.environ.get("POD_NAME") or socket.gethostname()
    servers = [_Server((args.address, port), _Handler) for port in args.port or [8080]]
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    ports = ", ".join(str(s.server_port) for s in servers)
    print(f"echo: {_Handler.pod_name} listening on {args.address}:{ports}", flush=True)
    # SIGTERM (the agent stopping the pod) ends the server cleanly, with exit code 0 as a well-behaved container.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        servers[0].serve_forever()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
