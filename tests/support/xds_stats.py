"""Envoy's ``/stats`` in text format, served on loopback, with the xDS gauges and counters a test sets.

What the xDS fault's verification and timeline read from Contour's Envoy (docs/contour-and-envoy.md, "Envoy"): the
two connected-state gauges of Contour's non-ADS bootstrap and the CDS / LDS ``update_success`` counters. Used where
no CNI can cut a real Envoy's stream (the integration tests) or where a test must script the gauge.
"""

from __future__ import annotations

import threading

from tests.support.http_server import LocalServer, QuietHandler

__all__ = ["StatsServer"]


class _Handler(QuietHandler):
    def do_GET(self) -> None:
        stats: StatsServer = self.server.owner
        lines = [
            f"cluster_manager.cds.control_plane.connected_state: {stats.connected}",
            f"cluster_manager.cds.update_success: {stats.updates}",
            f"cluster_manager.cds.update_failure: {stats.failures}",
            f"listener_manager.lds.control_plane.connected_state: {stats.connected}",
            f"listener_manager.lds.update_success: {stats.updates}",
            f"listener_manager.lds.update_failure: {stats.failures}",
        ]
        if stats.pending is not None:
            lines += [
                f"cluster.projectcontour_contour_8001.upstream_rq_pending_active: {stats.pending}",
                f"cluster.projectcontour_contour_8001.upstream_rq_active: {0 if stats.pending else 2}",
            ]
        self.answer(200, "\n".join(lines) + "\n")


class StatsServer:
    """Serves ``connected`` (1/0), ``updates`` (accepted) and ``failures`` (failed updates) as Envoy would, for CDS
    and LDS alike, and, unless ``pending`` is ``None``, the xDS cluster's request gauges: ``pending`` streams waiting
    for a connection, and 2 open when none waits; ``stop()`` (or the context manager) shuts it."""

    def __init__(self) -> None:
        self.connected = 1
        self.pending: int | None = None
        self.updates = 3
        self.failures = 0
        self._http = LocalServer(_Handler, owner=self, name="xds-stats").start()
        self.url = f"{self._http.url}/stats"

    def later(self, seconds: float, **changes: int | None) -> None:
        """Set ``connected`` / ``updates`` / ``failures`` / ``pending`` after ``seconds``."""
        timer = threading.Timer(seconds, lambda: [setattr(self, k, v) for k, v in changes.items()])
        timer.daemon = True
        timer.start()

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> StatsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
