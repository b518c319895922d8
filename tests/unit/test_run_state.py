"""The run state: what one `chaos run` process remembers between activities is one object, and ``reset()`` makes
it a fresh process's again."""

import time

from chaoscontour.activities import _confirm, _xds_state
from chaoscontour.edges import heartbeat
from chaoscontour.edges.run_state import RUN
from tests.support.waiting import wait_for


def test_reset_forgets_what_the_activities_remember_and_stops_the_heartbeats():
    _xds_state.record_block("ns", "r1", 100.0)
    _xds_state.record_confirmed("ns", "r1", 7)
    RUN.confirmed_faults[("ns", "r1")] = {"lease_namespace": "ns", "lease_name": "leader-elect"}
    RUN.route_markers[("ns", "echo", "x-marker")] = ("c0ffee", 100.0)
    RUN.backend_snapshots[("http://envoy/stats", "default_echo_80", "before")] = (None, ())
    beat = heartbeat.Heartbeat(
        ("ns", heartbeat.key_of("apiserver-egress", "r1")),
        lambda deadline_s: True,
        started=time.monotonic(),
        dead_man_s=20,
        duration_s=60,
        every_s=5,
    ).start()
    assert heartbeat.running("ns", "apiserver-egress/r1") is beat

    RUN.reset()

    assert _xds_state.fault_events() == {} and _xds_state.confirmed_updates("ns", "r1") is None
    assert _confirm.confirmed_fault("ns", "r1") is None
    assert not RUN.route_markers and not RUN.backend_snapshots
    assert heartbeat.running("ns", "apiserver-egress/r1") is None
    assert beat.ended == "run state reset"
    wait_for("the heartbeat's thread to end", 5, lambda: not beat.alive or None, interval_s=0.05)
