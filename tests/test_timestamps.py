"""``parse_timestamp`` takes exactly what ``datetime.strptime`` with the day-file format takes."""

import time
from datetime import UTC, date, datetime

import pytest

from taskpool.days import day_of
from taskpool.messages import TIMESTAMP_FORMAT, format_timestamp, parse_timestamp


def by_strptime(text: str) -> float:
    return datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "text",
    [
        "2026-06-03T12:34:56Z",
        "2024-02-29T00:00:00Z",
        "2026-12-31T23:59:59Z",
        "1970-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
    ],
)
def test_valid_timestamps_parse_as_strptime_does(text):
    assert parse_timestamp(text) == by_strptime(text)


@pytest.mark.parametrize(
    "text",
    [
        "2025-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-00-10T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T00:60:00Z",
        "2026-01-01T00:00:60Z",
        "2026-01-01T00:00:00",
        "2026-01-01 00:00:00Z",
        "2026-01-01T00:00:00+00:00",
        "",
    ],
)
def test_invalid_timestamps_are_refused(text):
    with pytest.raises(ValueError):
        by_strptime(text)
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_round_trip_over_the_years():
    for moment in range(0, 4_000_000_000, 86_413 * 97):
        assert parse_timestamp(format_timestamp(moment)) == moment


def test_the_day_of_a_moment_is_its_utc_date_also_around_midnight():
    for midnight in range(0, 4_000_000_000, 86_400 * 997):
        for moment in (
            midnight - 1,
            midnight - 0.000001,
            midnight,
            midnight + 0.5,
            midnight + 86_399,
        ):
            assert day_of(moment) == date(*time.gmtime(moment)[:3]), moment
            assert day_of(moment).isoformat() == format_timestamp(moment)[:10], moment


@pytest.mark.parametrize(
    "text",
    [
        "2026-06-03T1\u0662:34:56Z",
        "\u0662\u0660\u0662\u0666-06-03T12:34:56Z",
        "2026-06-03T12:34:5\uff16Z",
    ],
    ids=["arabic-indic-hour", "arabic-indic-year", "fullwidth-second"],
)
def test_digits_other_than_ascii_are_refused(text):
    """``int()`` reads any Unicode digit: the format check must not let them through."""
    with pytest.raises(ValueError):
        parse_timestamp(text)


@pytest.mark.parametrize(
    "text", ["0001-01-01T00:00:00Z", "0999-12-31T23:59:59Z", "2026-06-03T12:34:56Z"]
)
def test_a_timestamp_round_trips_whatever_its_year(text):
    """Years before 1000 too: strftime would write 999 for 0999, which no reader takes."""
    assert format_timestamp(parse_timestamp(text)) == text
