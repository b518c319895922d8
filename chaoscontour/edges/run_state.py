"""What one ``chaos run`` process remembers between its activities, in one object.

`chaos run` executes an experiment's block, its background probes, its end-of-window probes and its rollbacks in
one process, so what one activity learnt reaches the next from here, with no state kept in the cluster: the Lease as
it was when the API-server fault was confirmed, the xDS fault's block, confirmation and heal, the route markers
written, Envoy's named backend readings, and the dead-man heartbeats running. Each activity module keeps its own
accessors; this module only holds the storage, so that a test (or anything that must act as a fresh process) calls
:meth:`RunState.reset` once instead of clearing dictionaries by hand.

It lives with the edges because the heartbeats (``chaoscontour.edges.heartbeat``) keep their registry here and
every layer that remembers may import it; it holds plain dictionaries and does no I/O.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaoscontour.edges.heartbeat import Heartbeat

__all__ = ["RUN", "RunState"]


@dataclass
class RunState:
    """This process's memory of its run, keyed as its users find it again."""

    # Per (namespace, run id): the Lease as it was when the API-server fault was confirmed (activities._confirm).
    confirmed_faults: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # Per (namespace, run id): the xDS fault's wall-clock block and heal times (epoch seconds) and Envoy's accepted
    # updates when it was confirmed (activities._xds_state).
    xds_events: dict[tuple[str, str], dict[str, float | None]] = field(default_factory=dict)
    # Per (namespace, HTTPProxy, header): the last route marker written and when, epoch seconds (activities.routes).
    route_markers: dict[tuple[str, str, str], tuple[str, float]] = field(default_factory=dict)
    # Per (stats URL, cluster stat name, snapshot name): a named reading of Envoy's view of a backend and the
    # EndpointSlices' ready addresses then (activities.endpoints).
    backend_snapshots: dict[tuple[str, str, str], tuple[Any, tuple[str, ...]]] = field(default_factory=dict)
    # Per (namespace, heartbeat key): the dead-man heartbeat running (edges.heartbeat, which guards it with its lock).
    heartbeats: dict[tuple[str, str], "Heartbeat"] = field(default_factory=dict)

    def reset(self) -> None:
        """Forget everything, as a fresh process would start. Running heartbeats are stopped first (their faults
        then end within their dead-man interval, unless a rollback removes them before)."""
        for beat in list(self.heartbeats.values()):
            beat.stop("run state reset")  # each leaves the registry under the heartbeat module's lock
        self.confirmed_faults.clear()
        self.xds_events.clear()
        self.route_markers.clear()
        self.backend_snapshots.clear()


# The one run state of this process.
RUN = RunState()
