"""The one timestamp format and parser (``chaoscontour.domain.clock``): byte for byte what the journals hold."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from chaoscontour.domain.clock import format_api_time, format_utc, parse_api_time, parse_utc

EPOCH = 1_764_183_600.25  # 2025-11-26T19:00:00.250000Z
WHOLE = datetime(2026, 11, 26, 19, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("precision", "expected"),
    [
        ("seconds", "2025-11-26T19:00:00Z"),
        ("milliseconds", "2025-11-26T19:00:00.250Z"),
        ("microseconds", "2025-11-26T19:00:00.250000Z"),
        ("auto", "2025-11-26T19:00:00.250000Z"),
    ],
)
def test_an_epoch_is_written_in_utc_to_the_precision_asked(precision, expected):
    assert format_utc(EPOCH, precision) == expected


def test_precision_truncates_and_never_rounds_up():
    assert format_utc(1_764_183_600.9999, "milliseconds") == "2025-11-26T19:00:00.999Z"
    assert format_utc(datetime(2026, 1, 1, 23, 59, 59, 999_999, tzinfo=UTC), "seconds") == "2026-01-01T23:59:59Z"


def test_auto_precision_drops_the_fraction_of_a_whole_second_as_kubernetes_does():
    assert format_utc(WHOLE) == "2026-11-26T19:00:00Z"
    assert format_utc(WHOLE + timedelta(microseconds=5)) == "2026-11-26T19:00:00.000005Z"


def test_a_datetime_in_another_zone_is_written_in_utc():
    paris = datetime(2026, 11, 26, 20, 0, 0, 500_000, tzinfo=timezone(timedelta(hours=1)))
    assert format_utc(paris, "milliseconds") == "2026-11-26T19:00:00.500Z"


def test_formats_match_what_each_caller_wrote_before():
    """The expressions the callers used to write, kept here so the journals' strings cannot drift."""
    for epoch in (EPOCH, 0.0, 1_700_000_000.123456, 1_764_183_600.0):
        moment = datetime.fromtimestamp(epoch, tz=UTC)
        assert format_utc(epoch, "microseconds") == moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert format_utc(epoch, "milliseconds") == (moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
        assert format_utc(moment, "seconds") == moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert format_utc(moment) == moment.isoformat().replace("+00:00", "Z")


def test_parsing_reads_z_offsets_and_naive_times_as_utc():
    assert parse_utc("2026-11-26T19:00:00Z") == WHOLE
    assert parse_utc(" 2026-11-26T19:00:00z ") == WHOLE
    assert parse_utc("2026-11-26T20:00:00+01:00") == WHOLE
    naive = parse_utc("2026-11-26T19:00:00")
    assert naive == WHOLE and naive.utcoffset() == timedelta(0)
    assert parse_utc("2026-11-26T19:00:00.250000Z").microsecond == 250_000


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01T00:00:00Z", "2026-11-26T19:00:00ZZ"])
def test_parsing_what_is_not_a_time_raises_value_error(text):
    with pytest.raises(ValueError):
        parse_utc(text)


def test_a_written_time_reads_back_to_the_same_moment():
    for precision in ("seconds", "milliseconds", "microseconds", "auto"):
        text = format_utc(WHOLE, precision)
        assert parse_utc(text) == WHOLE


def test_api_time_fields_keep_absent_values_absent():
    assert parse_api_time(None) is None and parse_api_time("") is None
    assert format_api_time(None) is None
    assert parse_api_time("2026-11-26T19:00:00.123456Z") == WHOLE + timedelta(microseconds=123_456)
    assert parse_api_time(datetime(2026, 11, 26, 19, 0, 0)) == WHOLE
    assert format_api_time(parse_api_time("2026-11-26T19:00:00.123456Z")) == "2026-11-26T19:00:00.123456Z"
    with pytest.raises(ValueError):
        parse_api_time("not a time")
