"""`envoy_xds_timeline` against a stats endpoint whose gauges change on a schedule, with the block and heal times
that `block_xds_egress` / `unblock_xds_egress` record in the same process."""

import threading
import time
from collections.abc import Iterator

import pytest

from chaoscontour.activities import _xds_state
from chaoscontour.activities.xds_probes import envoy_xds_timeline
from chaoscontour.edges import stop
from tests.support.xds_stats import StatsServer


@pytest.fixture
def stats() -> Iterator[StatsServer]:
    stop.reset()
    with StatsServer() as server:
        yield server
    stop.reset()


def test_the_timeline_measures_detection_and_currency_from_the_recorded_block_and_heal(stats: StatsServer) -> None:
    threading.Timer(0.3, lambda: _xds_state.record_block("ns", "t1", time.time())).start()
    stats.later(1.3, connected=0, failures=1)
    threading.Timer(2.3, lambda: _xds_state.record_heal("ns", "t1", time.time())).start()
    stats.later(2.8, connected=1)
    stats.later(3.3, updates=5)

    result = envoy_xds_timeline(
        stats_url=stats.url, duration_s="20", interval_s="0.1", max_detection_s="5", max_current_after_heal_s="5"
    )

    assert 0.9 <= result["detected_after_s"] <= 1.5, result
    # The gauge back at 1 (0.5 s after the heal) is not a working stream; the accepted updates (1 s after) are.
    assert 0.9 <= result["reconnected_after_s"] <= 1.5, result
    assert result["current_after_s"] == result["reconnected_after_s"]
    assert result["meets_bounds"] is True and result["bound_misses"] == []
    assert result["stop_reason"] == "current after the heal", "until_current ends it long before duration_s"
    assert result["duration_s"] < 6
    assert [t["connected"] for t in result["transitions"]] == [False, True]
    assert result["reconnect_attempts"] == 0, "one failure: the stream that died"


def test_the_dead_stream_is_seen_in_the_failure_counter_when_every_read_misses_the_gauges_zero(
    stats: StatsServer,
) -> None:
    """Envoy's gauges read 0 only in the ~0.5 s back-off between attempts; a poll can miss every one of them."""
    threading.Timer(0.3, lambda: _xds_state.record_block("ns", "t3", time.time())).start()
    stats.later(1.3, failures=1)
    stats.later(1.8, failures=3)

    result = envoy_xds_timeline(stats_url=stats.url, duration_s="3", interval_s="0.1")

    assert 0.9 <= result["detected_after_s"] <= 1.5, result
    assert result["reconnect_attempts"] == 2
    assert result["transitions"] == []


def test_a_missed_bound_is_marked_not_raised_and_a_stop_request_ends_the_timeline(stats: StatsServer) -> None:
    _xds_state.record_block("ns", "t2", time.time())
    threading.Timer(1.0, lambda: stop.request("SIGTERM received")).start()
    started = time.monotonic()

    result = envoy_xds_timeline(stats_url=stats.url, duration_s=60, interval_s=0.5, max_detection_s=30)

    assert time.monotonic() - started < 2.5
    assert result["stopped_early"] is True and result["stop_reason"] == "SIGTERM received"
    assert result["detected_after_s"] is None
    assert result["meets_bounds"] is False
    assert "Envoy noticed the dead stream after None s" in result["bound_misses"][0]
