"""Expiration parsing: every accepted form, every refusal, and untrusted text."""

from __future__ import annotations

import time as process_time
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from apikeys import ConfigurationError, InvalidInputError, parse_expiration
from apikeys._expiry import MAX_LIFETIME, as_utc, check_clock, is_expired, utcnow
from tests.core.outcomes import outcome

NOW = datetime(2030, 6, 15, 12, 30, tzinfo=UTC)
NEXT_MIDNIGHT = datetime(2030, 6, 16, tzinfo=UTC)
offsets = st.timedeltas(
    min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
).map(timezone)


def parse(value: object, **kwargs: object) -> datetime | None:
    return parse_expiration(value, now=NOW, **kwargs)  # type: ignore[arg-type]


def refused(value: object) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as caught:
        parse(value)
    assert caught.value.field == "expiration"
    assert caught.value.status_code == 422
    return caught.value


# --- accepted forms -------------------------------------------------------------------------


def test_none_never_expires() -> None:
    assert parse(None) is None


def test_an_aware_datetime_is_that_instant_in_utc() -> None:
    paris_summer = timezone(timedelta(hours=2))
    value = datetime(2031, 1, 1, 14, 0, tzinfo=paris_summer)
    result = parse(value)
    assert result == value
    assert result is not None
    assert result.tzinfo == UTC
    assert result.hour == 12


def test_a_naive_datetime_is_taken_as_utc() -> None:
    assert parse(datetime(2031, 1, 1, 9, 15)) == datetime(2031, 1, 1, 9, 15, tzinfo=UTC)


def test_a_date_is_valid_through_that_whole_day_utc() -> None:
    assert parse(date(2031, 12, 31)) == datetime(2032, 1, 1, tzinfo=UTC)


def test_today_is_valid_until_the_next_midnight() -> None:
    assert parse(NOW.date()) == NEXT_MIDNIGHT
    assert parse(NOW.date().isoformat()) == NEXT_MIDNIGHT


@pytest.mark.parametrize("text", ["2031-12-31", " 2031-12-31 ", "2031-12-31\n"])
def test_a_date_string_is_valid_through_that_day(text: str) -> None:
    assert parse(text) == datetime(2032, 1, 1, tzinfo=UTC)


# 2031-W01-1 is Monday 2030-12-30.
@pytest.mark.parametrize(
    ("text", "last_day"), [("20311231", date(2031, 12, 31)), ("2031-W01-1", date(2030, 12, 30))]
)
def test_compact_and_week_dates_are_whole_days_where_python_reads_them(
    text: str, last_day: date
) -> None:
    assert parse(text) == datetime.combine(last_day + timedelta(days=1), time(), tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2031-01-01T10:00:00Z", datetime(2031, 1, 1, 10, tzinfo=UTC)),
        ("2031-01-01T10:00:00z", datetime(2031, 1, 1, 10, tzinfo=UTC)),
        ("2031-01-01T10:00:00+02:00", datetime(2031, 1, 1, 8, tzinfo=UTC)),
        ("2031-01-01T10:00:00-05:30", datetime(2031, 1, 1, 15, 30, tzinfo=UTC)),
        ("2031-01-01 10:00", datetime(2031, 1, 1, 10, tzinfo=UTC)),
        (
            "2031-01-01T10:00:00.250000Z",
            datetime(2031, 1, 1, 10, 0, 0, 250000, tzinfo=UTC),
        ),
        ("2031-01-01T00:00:00", datetime(2031, 1, 1, tzinfo=UTC)),
    ],
)
def test_iso_date_times(text: str, expected: datetime) -> None:
    result = parse(text)
    assert result == expected
    assert result is not None
    assert result.utcoffset() == timedelta(0)


def test_a_timedelta_is_a_lifetime_from_now() -> None:
    assert parse(timedelta(days=30)) == NOW + timedelta(days=30)
    assert parse(timedelta(microseconds=1)) == NOW + timedelta(microseconds=1)


def test_exactly_100_years_is_allowed() -> None:
    assert parse(MAX_LIFETIME) == NOW + MAX_LIFETIME
    assert parse(NOW + MAX_LIFETIME) == NOW + MAX_LIFETIME


def test_now_defaults_to_the_current_time() -> None:
    before = utcnow()
    result = parse_expiration(timedelta(hours=1))
    after = utcnow()
    assert result is not None
    assert before + timedelta(hours=1) <= result <= after + timedelta(hours=1)


def test_a_naive_now_is_utc() -> None:
    assert parse_expiration(timedelta(hours=1), now=NOW.replace(tzinfo=None)) == NOW + timedelta(
        hours=1
    )


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        NOW,
        NOW - timedelta(microseconds=1),
        datetime(2000, 1, 1),
        NOW.date() - timedelta(days=1),
        "2030-06-14",
        "2030-06-15T12:30:00Z",
        "2000-01-01T00:00:00+00:00",
    ],
)
def test_the_past_and_now_are_refused(value: object) -> None:
    assert "past" in refused(value).message


@pytest.mark.parametrize("value", [timedelta(0), timedelta(seconds=-1), timedelta(days=-365)])
def test_zero_and_negative_lifetimes_are_refused(value: timedelta) -> None:
    assert "positive" in refused(value).message


@pytest.mark.parametrize(
    "value",
    [
        MAX_LIFETIME + timedelta(microseconds=1),
        timedelta.max,
        NOW + MAX_LIFETIME + timedelta(seconds=1),
        date(2200, 1, 1),
        "2200-01-01",
        "9999-12-31",
        date.max,
        datetime.max,
        "9999-12-31T23:59:59.999999",
        "9999-12-31T23:00:00-05:00",
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_more_than_100_years_or_out_of_range_is_refused(value: object) -> None:
    refused(value)


def test_an_instant_before_year_one_in_utc_is_refused() -> None:
    refused("0001-01-01T00:00:00+05:00")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "tomorrow",
        "2031-13-01",
        "2031-02-30",
        "2031-12-31T25:00",
        "31/12/2031",
        "2031-12-31T10:00:00+25:00",
        "2031-12-31TZ",
        "２０３１-12-31",
        "\ud800",
        "2031-12-31\x00",
    ],
)
def test_unparseable_text_is_refused(text: str) -> None:
    error = refused(text)
    assert "ISO 8601" in error.message


@pytest.mark.parametrize("value", [5, 1.5, True, b"2031-12-31", object(), [2031, 1, 1], time(12)])
def test_wrong_types_are_refused(value: object) -> None:
    error = refused(value)
    assert type(value).__name__ in error.message


def test_the_field_name_can_be_chosen() -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_expiration("nope", field="valid_until")
    assert caught.value.field == "valid_until"
    assert "valid_until" in caught.value.message


# --- untrusted input -------------------------------------------------------------------------------


def assert_parsed_or_refused(value: object) -> datetime | None:
    """Check the outcome for untrusted ``value``; return the instant, or ``None`` if refused."""
    result = outcome(lambda: parse(value), InvalidInputError)
    if isinstance(result, InvalidInputError):
        assert result.field == "expiration"
        return None
    assert result is not None
    assert result.utcoffset() == timedelta(0)
    assert NOW < result <= NOW + MAX_LIFETIME
    return result


@given(text=st.text())
@example("2031-01-01")
@example("9999-12-31")
@example("2031-W53-8")
def test_arbitrary_text_parses_or_raises_only_invalid_input(text: str) -> None:
    assert_parsed_or_refused(text)


@given(
    text=st.from_regex(
        r"\d{4}-?\d{2}-?\d{2}([T ]\d{2}(:\d{2}(:\d{2}(\.\d{1,6})?)?)?)?(Z|[+-]\d{2}:\d{2})?",
        fullmatch=True,
    )
)
def test_iso_shaped_text_parses_or_raises_only_invalid_input(text: str) -> None:
    assert_parsed_or_refused(text)


@given(value=st.datetimes(timezones=st.one_of(st.none(), offsets)))
def test_arbitrary_datetimes_are_their_instant_or_refused(value: datetime) -> None:
    result = assert_parsed_or_refused(value)
    assert result is None or result == as_utc(value)


@given(value=st.dates())
def test_arbitrary_dates_are_the_next_midnight_or_refused(value: date) -> None:
    result = assert_parsed_or_refused(value)
    if result is not None:
        assert result.time() == time(0)
        assert result.date() == value + timedelta(days=1)


@given(value=st.timedeltas())
def test_arbitrary_timedeltas_are_a_lifetime_or_refused(value: timedelta) -> None:
    assert_parsed_or_refused(value)


# --- is_expired and as_utc ------------------------------------------------------------------------------


def test_is_expired() -> None:
    assert not is_expired(None)
    assert not is_expired(None, NOW)
    assert is_expired(NOW, NOW)  # the expiry instant itself is already expired
    assert is_expired(NOW - timedelta(microseconds=1), NOW)
    assert not is_expired(NOW + timedelta(microseconds=1), NOW)
    assert is_expired(utcnow() - timedelta(seconds=1))
    assert not is_expired(utcnow() + timedelta(minutes=1))


def test_is_expired_reads_naive_datetimes_as_utc() -> None:
    naive_now = NOW.replace(tzinfo=None)
    assert is_expired(naive_now - timedelta(seconds=1), NOW)
    assert not is_expired(naive_now + timedelta(seconds=1), NOW)
    assert is_expired(NOW, naive_now)
    assert is_expired(datetime(2000, 1, 1))


def test_as_utc() -> None:
    assert as_utc(datetime(2031, 1, 1)) == datetime(2031, 1, 1, tzinfo=UTC)
    shifted = datetime(2031, 1, 1, 3, tzinfo=timezone(timedelta(hours=3)))
    converted = as_utc(shifted)
    assert converted.tzinfo == UTC
    assert converted.hour == 0
    assert utcnow().tzinfo == UTC


def test_a_clock_is_accepted_only_if_it_tells_aware_time() -> None:
    assert check_clock(utcnow) is utcnow
    east = timezone(timedelta(hours=2))
    assert check_clock(lambda: NOW.astimezone(east))() == NOW
    for wrong in (lambda: NOW.replace(tzinfo=None), lambda: NOW.timestamp(), lambda: None, NOW):
        with pytest.raises(ConfigurationError, match="timezone-aware"):
            check_clock(wrong)  # type: ignore[arg-type]


# --- the messages users see -------------------------------------------------------------------------


def test_unparseable_text_is_refused_quoting_it_and_saying_what_is_accepted() -> None:
    assert (
        refused("tomorrow").message == "expiration 'tomorrow' is not an ISO 8601 date or date-time"
    )
    with pytest.raises(InvalidInputError) as caught:
        parse("tomorrow", accepted="a duration such as 30d")
    assert caught.value.message == "expiration 'tomorrow' is not a duration such as 30d"


@pytest.mark.parametrize(
    "text", ["2031-01-01Z10:00:00", "2031-01-01Z10:00", "20310101Z1000", "2031-W01-1Z10:00"]
)
def test_a_z_in_place_of_the_date_time_separator_is_refused(text: str) -> None:
    # Python reads any character between date and time as the separator; ISO 8601 does not.
    assert "ISO 8601" in refused(text).message


@pytest.mark.parametrize(
    "value",
    [
        MAX_LIFETIME + timedelta(microseconds=1),
        NOW + MAX_LIFETIME + timedelta(seconds=1),
        date(2200, 1, 1),
        "2200-01-01",
        date.max,
    ],
)
def test_too_far_is_refused_saying_so(value: object) -> None:
    assert refused(value).message == "expiration is more than 100 years away"


@pytest.mark.parametrize(
    "value",
    ["9999-12-31T23:00:00-05:00", datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=5)))],
)
def test_an_instant_past_the_last_representable_one_is_refused_as_out_of_range(
    value: object,
) -> None:
    assert refused(value).message == "expiration is out of range"


def test_a_bad_clock_is_refused_with_an_example_of_a_good_one() -> None:
    with pytest.raises(ConfigurationError) as caught:
        check_clock(lambda: NOW.replace(tzinfo=None))
    assert caught.value.message == (
        "clock must be a callable returning a timezone-aware datetime,"
        " such as lambda: datetime.now(UTC)"
    )


# --- whatever the server's local time zone ----------------------------------------------------------


@pytest.fixture
def local_zone_five_hours_west(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "EST+05")
    process_time.tzset()
    yield
    monkeypatch.undo()
    process_time.tzset()


@pytest.mark.usefixtures("local_zone_five_hours_west")
def test_instants_come_back_in_utc_whatever_the_local_zone() -> None:
    east = timezone(timedelta(hours=2))
    assert as_utc(datetime(2031, 1, 1, 14, tzinfo=east)).utcoffset() == timedelta(0)
    result = parse(datetime(2031, 1, 1, 14, tzinfo=east))
    assert result is not None
    assert (result.hour, result.utcoffset()) == (12, timedelta(0))
