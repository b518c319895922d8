"""Envoy's ``/stats`` in text format, served on loopback, with the xDS gauges and counters a test sets.

What the xDS fault's verification and timeline read from Contour's Envoy (docs/contour-and-envoy.md, "Envoy"): the
two connected-state gauges of Contour's non-ADS bootstrap and the CDS / LDS ``update_success`` counters. Used where
no CNI can cut a real Envoy's stream (the integration tests) or where a test must script the gauge.
"""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["StatsServer"]


class StatsServer:
    """Serves ``connected`` (1/0), ``updates`` (accepted) and ``failures`` (failed updates) as Envoy would, for CDS
    and LDS alike, and, unless ``pending`` is ``None``, the xDS cluster's request gauges: ``pending`` streams waiting
    for a connection, and 2 open when none waits; ``stop()`` (or the context manager) shuts it."""

    def __init__(self) -> None:
        self.connected = 1
        self.pending: int | None = None
        self.updates = 3
        self.failures = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                lines = [
                    f"cluster_manager.cds.control_plane.connected_state: {owner.connected}",
                    f"cluster_manager.cds.update_success: {owner.updates}",
                    f"cluster_manager.cds.update_failure: {owner.failures}",
                    f"listener_manager.lds.control_plane.connected_state: {owner.connected}",
                    f"listener_manager.lds.update_success: {owner.updates}",
                    f"listener_manager.lds.update_failure: {owner.failures}",
                ]
                if owner.pending is not None:
                    lines += [
                        f"cluster.projectcontour_contour_8001.upstream_rq_pending_active: {owner.pending}",
                        f"cluster.projectcontour_contour_8001.upstream_rq_active: {0 if owner.pending else 2}",
                    ]
                body = ("\n".join(lines) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stats"
        self._thread = threading.Thread(target=self.server.serve_forever, name="xds-stats", daemon=True)
        self._thread.start()

    def later(self, seconds: float, **changes: int | None) -> None:
        """Set ``connected`` / ``updates`` / ``failures`` / ``pending`` after ``seconds``."""
        timer = threading.Timer(seconds, lambda: [setattr(self, k, v) for k, v in changes.items()])
        timer.daemon = True
        timer.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "StatsServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
