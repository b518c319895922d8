"""Availability and outage maths on hand-built samples: no I/O, no mocks."""

from array import array

import pytest

from chaoscontour.domain.availability import (
    NOT_SENT,
    OutageTracker,
    Sample,
    SampleSeries,
    find_outages,
    iso_utc,
    latency_percentiles_ms,
    longest_outage_s,
    per_second_timeline,
    percentile,
    summarize,
)

T0 = 1_700_000_000.0  # an arbitrary epoch second: 2023-11-14T22:13:20Z


def ok(t: float, latency_s: float = 0.002) -> Sample:
    return Sample(T0 + t, latency_s, True, "http_200")


def bad(t: float, outcome: str = "http_503", latency_s: float = 0.001) -> Sample:
    return Sample(T0 + t, latency_s, False, outcome)


def every(step_s: float, start: float, end: float) -> list[float]:
    """Send times from ``start`` (inclusive) to ``end`` (exclusive), ``step_s`` apart, without float drift."""
    count = round((end - start) / step_s)
    return [round(start + i * step_s, 6) for i in range(count)]


def test_all_successful_requests_mean_full_availability_and_no_outage():
    samples = [ok(t) for t in every(0.1, 0, 2)]
    result = summarize(samples, T0, T0 + 2)
    assert (result.requests, result.successes, result.failures) == (20, 20, 0)
    assert result.availability == 1.0
    assert result.outages == []
    assert result.longest_outage_s == 0.0
    assert result.error_kinds == {}


def test_outage_runs_from_first_failure_to_next_success():
    samples = [ok(t) for t in every(0.1, 0, 1)] + [bad(1.0), bad(1.1), bad(1.2)] + [ok(t) for t in every(0.1, 1.3, 2)]
    (outage,) = find_outages(samples, T0 + 2)
    assert outage.started_at == pytest.approx(T0 + 1.0)
    assert outage.ended_at == pytest.approx(T0 + 1.3)
    assert outage.duration_s == pytest.approx(0.3)
    assert outage.failed_requests == 3
    assert not outage.still_running


def test_outage_still_running_at_the_end_counts_until_the_window_end():
    samples = [ok(t) for t in every(0.1, 0, 2)] + [bad(t) for t in every(0.1, 2, 3)]
    (outage,) = find_outages(samples, T0 + 3.0)
    assert outage.still_running
    assert outage.duration_s == pytest.approx(1.0)
    assert longest_outage_s(samples, T0 + 3.0) == pytest.approx(1.0)


def test_window_opening_with_failures_counts_from_the_first_request():
    samples = [bad(0.0, "connection_refused"), bad(0.25, "connection_refused"), ok(0.5), ok(0.75)]
    assert longest_outage_s(samples, T0 + 1) == pytest.approx(0.5)


def test_longest_of_several_outages_is_reported_and_all_are_counted():
    samples = [ok(0), bad(0.1), ok(0.2), bad(0.3), bad(0.4), bad(0.5), ok(0.6), bad(0.7), ok(0.8)]
    result = summarize(samples, T0, T0 + 1)
    assert len(result.outages) == 3
    assert result.longest_outage_s == pytest.approx(0.3)
    assert result.longest_outage is not None
    assert result.longest_outage.started_at == pytest.approx(T0 + 0.3)


def test_samples_are_ordered_by_send_time_not_by_completion_order():
    in_order = [ok(0), bad(0.1), bad(0.2), ok(0.3), ok(0.4)]
    completed_order = [in_order[0], in_order[3], in_order[1], in_order[4], in_order[2]]
    assert longest_outage_s(completed_order, T0 + 0.5) == pytest.approx(longest_outage_s(in_order, T0 + 0.5))
    assert longest_outage_s(completed_order, T0 + 0.5) == pytest.approx(0.2)


def test_a_hung_request_belongs_to_the_moment_it_was_sent():
    # Sent at 1.0, timed out after 1 s; the request sent at 1.1 succeeded: the outage seen is 0.1 s, not 1 s.
    samples = [ok(0.9), Sample(T0 + 1.0, 1.0, False, "read_timeout"), ok(1.1), ok(1.2)]
    assert longest_outage_s(samples, T0 + 2) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("q", "expected"),
    [(50, 50), (95, 95), (99, 99), (100, 100), (1, 1), (0.5, 1)],
)
def test_percentile_uses_nearest_rank(q, expected):
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert percentile(values, q) == expected


def test_percentile_of_one_value_and_of_none():
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


@pytest.mark.parametrize("q", [0, -1, 100.1])
def test_percentile_refuses_a_rank_outside_0_100(q):
    with pytest.raises(ValueError):
        percentile([1.0], q)


def test_latency_percentiles_are_of_successful_requests_only():
    samples = [ok(i * 0.01, latency_s=0.001 * (i + 1)) for i in range(100)]
    samples += [bad(2.0, "read_timeout", latency_s=5.0)] * 50
    assert latency_percentiles_ms(samples) == {"p50": 50.0, "p95": 95.0, "p99": 99.0}


def test_latency_percentiles_are_none_when_nothing_succeeded():
    assert latency_percentiles_ms([bad(0), bad(1)]) == {"p50": None, "p95": None, "p99": None}


def test_timeline_has_a_row_per_second_including_empty_ones():
    samples = [ok(0.0, 0.010), ok(0.5, 0.030), bad(0.9), ok(2.2, 0.020), ok(2.999, 0.040)]
    rows = per_second_timeline(samples, T0, T0 + 3)
    assert [r["second"] for r in rows] == [0, 1, 2]
    assert [r["epoch_s"] for r in rows] == [T0, T0 + 1, T0 + 2]
    assert [(r["requests"], r["successes"]) for r in rows] == [(3, 2), (0, 0), (2, 2)]
    assert (rows[0]["p50_ms"], rows[0]["p99_ms"]) == (10.0, 30.0)
    assert (rows[1]["p50_ms"], rows[1]["p95_ms"], rows[1]["p99_ms"]) == (None, None, None)
    assert (rows[2]["p50_ms"], rows[2]["p99_ms"]) == (20.0, 40.0)


def test_timeline_rows_carry_the_p95_the_report_plots():
    # 100 successes in one second, 1..100 ms: nearest rank gives p50 50, p95 95, p99 99 (the report's three lines).
    samples = [ok(i / 100, (i + 1) / 1000) for i in range(100)]
    (row,) = per_second_timeline(samples, T0, T0 + 1)
    assert (row["p50_ms"], row["p95_ms"], row["p99_ms"]) == (50.0, 95.0, 99.0)


def test_timeline_puts_boundary_samples_in_the_later_second_and_late_ones_in_the_last_row():
    rows = per_second_timeline([ok(1.0), ok(2.5), ok(7.0)], T0, T0 + 2.5)
    assert len(rows) == 3
    assert [r["requests"] for r in rows] == [0, 1, 2]


def test_summary_counts_error_kinds_of_failures_and_computes_the_ratio():
    samples = [ok(0), bad(0.1, "http_503"), bad(0.2, "http_503"), bad(0.3, "connection_reset"), ok(0.4)]
    result = summarize(samples, T0, T0 + 1)
    assert result.availability == pytest.approx(2 / 5)
    assert result.error_kinds == {"connection_reset": 1, "http_503": 2}


def test_summary_as_dict_is_json_ready_with_iso_utc_times():
    samples = [ok(0), bad(0.25), ok(0.5)]
    out = summarize(samples, T0, T0 + 1.5).as_dict()
    assert out["started_at"] == "2023-11-14T22:13:20.000Z"
    assert out["ended_at"] == "2023-11-14T22:13:21.500Z"
    assert out["duration_s"] == 1.5
    assert out["longest_outage_started_at"] == "2023-11-14T22:13:20.250Z"
    assert out["longest_outage_s"] == pytest.approx(0.25)
    assert (out["requests"], out["successes"], out["failures"], out["outage_count"]) == (3, 2, 1, 1)
    assert len(out["timeline"]) == 2
    assert set(out["latency_ms"]) == {"p50", "p95", "p99"}


def test_summary_of_no_samples_reports_no_evidence_of_service():
    result = summarize([], T0, T0 + 1)
    assert result.availability == 0.0
    assert result.longest_outage_s == 0.0
    assert result.as_dict()["longest_outage_started_at"] is None
    assert result.latency_ms == {"p50": None, "p95": None, "p99": None}


def test_summary_refuses_a_window_that_ends_before_it_starts():
    with pytest.raises(ValueError, match="before it starts"):
        summarize([], T0 + 1, T0)


def test_iso_utc_keeps_milliseconds():
    assert iso_utc(T0 + 0.1234) == "2023-11-14T22:13:20.123Z"


def test_a_series_in_columns_gives_the_same_figures_as_the_samples():
    samples = [ok(0), bad(0.1), bad(0.2), ok(0.3), bad(0.4, "connection_reset"), ok(0.5, 0.004)]
    series = SampleSeries.of(reversed(samples))  # sorted by send time on the way in
    assert list(series) == samples
    assert summarize(series, T0, T0 + 1).as_dict() == summarize(samples, T0, T0 + 1).as_dict()


def test_a_series_over_existing_columns_copies_nothing_and_checks_lengths():
    started, durations = array("d", [T0, T0 + 0.5]), array("d", [0.001, 0.002])
    series = SampleSeries.of_columns(
        started, durations, bytearray([1, 0]), array("H", [1, 0]), ["http_503", "http_200"]
    )
    assert series.started_at is started
    assert [s.outcome for s in series] == ["http_200", "http_503"]
    with pytest.raises(ValueError, match="different lengths"):
        SampleSeries.of_columns(started, durations, bytearray([1]), array("H", [0, 0]), ["http_200"])


def test_requests_not_sent_are_failures_counted_apart():
    samples = [ok(0), bad(0.1, "read_timeout"), bad(0.2, NOT_SENT), bad(0.3, NOT_SENT), ok(0.4)]
    out = summarize(samples, T0, T0 + 1).as_dict()
    assert out["requests"] == 5 and out["failures"] == 3
    assert out["requests_not_sent"] == 2
    assert out["error_kinds"] == {"not_sent": 2, "read_timeout": 1}
    assert out["outage_count"] == 1 and out["longest_outage_s"] == pytest.approx(0.3)


def test_the_outage_tracker_agrees_with_find_outages_at_every_step():
    samples = [ok(0), bad(0.1), bad(0.2), ok(0.3), bad(0.4), ok(0.5), bad(0.6)]
    tracker = OutageTracker()
    for i, sample in enumerate(samples):
        tracker.add(sample.started_at, sample.ok)
        now = sample.started_at + 0.05
        assert tracker.all(now) == find_outages(samples[: i + 1], now)
        assert tracker.longest_s(now) == pytest.approx(longest_outage_s(samples[: i + 1], now))
    assert (tracker.requests, tracker.successes) == (7, 3)
    assert tracker.longest_s(T0 + 1.0) == pytest.approx(0.4)  # the one still running, counted to the window end
