"""Rate limits and quotas as values: their short text form, their bounds, their windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from apikeys import InvalidInputError
from apikeys._keylimits import (
    MAX_LIMIT,
    MAX_QUOTA_PERIOD,
    MAX_RATE_WINDOW,
    Quota,
    RateLimit,
    format_duration,
    quota_window,
    quota_within,
    rate_limit_within,
    rate_window,
)

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


@pytest.mark.parametrize(
    ("text", "limit", "seconds"),
    [
        ("100/1m", 100, 60),
        ("10/s", 10, 1),
        ("5000/1h", 5000, 3600),
        ("1/90s", 1, 90),
        ("7/1d", 7, 86400),
        (" 100/1m\n", 100, 60),
    ],
)
def test_rate_limits_read_from_their_short_form(text: str, limit: int, seconds: int) -> None:
    assert RateLimit.parse(text) == RateLimit(limit=limit, window=timedelta(seconds=seconds))


@pytest.mark.parametrize(
    ("text", "limit", "period"),
    [
        ("100000/30d", 100_000, timedelta(days=30)),
        ("500", 500, None),
        ("1000/1w", 1000, timedelta(weeks=1)),
        ("10/366d", 10, MAX_QUOTA_PERIOD),
    ],
)
def test_quotas_read_from_their_short_form(text: str, limit: int, period: timedelta | None) -> None:
    assert Quota.parse(text) == Quota(limit=limit, period=period)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not of the form 100/1m"),
        ("100", "has no window: write it as 100/1m"),
        ("0/1m", "rate_limit.limit: Input should be greater than or equal to 1"),
        ("100/0s", "rate_limit.window: window must be at least one second"),
        ("100/2d", "rate_limit.window: window must be at most 1d"),
        ("100/1y", "is not of the form 100/1m (units: s, m for minutes, h, d, w)"),
        ("-5/1m", "is not of the form 100/1m"),
        ("1.5/1m", "is not of the form 100/1m"),
        ("5 /1m", "is not of the form 100/1m"),
        ("1" + "0" * 12 + "1/1m", "rate_limit.limit: Input should be less than or equal to"),
        ("1/" + "9" * 400 + "s", "rate_limit.window: window must be at most 1d"),
    ],
)
def test_a_bad_rate_limit_gets_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(
        InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)")
    ) as caught:
        RateLimit.parse(text)
    assert caught.value.field == "rate_limit"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "quota '' is not of the form 100000/30d"),
        ("100000/400d", "quota.period: period must be at most 366d"),
        ("0", "quota.limit: Input should be greater than or equal to 1"),
        ("100000/30", "is not of the form 100000/30d"),
    ],
)
def test_a_bad_quota_gets_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as caught:
        Quota.parse(text)
    assert caught.value.field == "quota"


def test_what_is_not_text_is_refused_as_such() -> None:
    with pytest.raises(InvalidInputError, match="rate_limit must be text such as 100/1m"):
        RateLimit.parse(100)  # type: ignore[arg-type]


def test_a_long_bad_form_is_echoed_only_in_part() -> None:
    with pytest.raises(InvalidInputError) as caught:
        Quota.parse("x" * 10_000)
    assert len(str(caught.value)) < 200


@given(st.text(max_size=40))
@example("1/1m")
@example("99999999999999999999/1m")
def test_any_text_parses_or_gets_a_clear_error(text: str) -> None:
    for model, field in ((RateLimit, "rate_limit"), (Quota, "quota")):
        parsed: RateLimit | Quota | None = None
        try:
            parsed = model.parse(text)
        except InvalidInputError as refused:
            assert_refused_as(refused, field)
        if parsed is not None:
            assert model.parse(str(parsed)) == parsed


def assert_refused_as(refusal: InvalidInputError, field: str) -> None:
    assert refusal.field == field
    assert str(refusal).startswith(field)


@given(
    st.integers(1, MAX_LIMIT),
    st.integers(1, 10**6),
    st.sampled_from(sorted(UNITS)),
)
def test_the_short_form_round_trips(limit: int, count: int, unit: str) -> None:
    seconds = count * UNITS[unit]
    text = f"{limit}/{count}{unit}"
    if seconds > MAX_RATE_WINDOW.total_seconds():
        with pytest.raises(InvalidInputError):
            RateLimit.parse(text)
    else:
        parsed = RateLimit.parse(text)
        assert parsed == RateLimit(limit=limit, window=seconds)
        assert RateLimit.parse(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("window", "message"),
    [
        (1.5, "whole number of seconds"),
        (timedelta(milliseconds=1500), "whole number of seconds"),
        (0, "at least one second"),
        (-60, "at least one second"),
        (float("nan"), "finite number of seconds"),
        (float("inf"), "finite number of seconds"),
        (10**30, "at most 1d"),
        ("60", "a timedelta or a number of seconds"),
        (True, "a timedelta or a number of seconds"),
    ],
)
def test_a_window_must_be_whole_seconds_within_bounds(window: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RateLimit(limit=1, window=window)  # type: ignore[arg-type]


def test_limits_are_strict_integers() -> None:
    with pytest.raises(ValidationError):
        RateLimit(limit="100", window=60)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Quota(limit=1.0)  # type: ignore[arg-type]


def test_limits_are_frozen_values() -> None:
    limit = RateLimit(limit=100, window=60)
    with pytest.raises(ValidationError):
        limit.limit = 1_000_000
    assert limit == RateLimit(limit=100, window=timedelta(minutes=1))
    assert hash(limit) == hash(RateLimit(limit=100, window=timedelta(minutes=1)))


def test_json_gives_windows_and_periods_in_seconds() -> None:
    assert RateLimit(limit=5, window=timedelta(minutes=1)).model_dump_json() == (
        '{"limit":5,"window":60}'
    )
    assert Quota(limit=5, period=timedelta(days=30)).model_dump_json() == (
        '{"limit":5,"period":2592000}'
    )
    assert Quota(limit=5).model_dump_json() == '{"limit":5,"period":null}'
    assert Quota.model_validate_json('{"limit":5,"period":2592000}') == Quota.parse("5/30d")


@pytest.mark.parametrize(
    ("seconds", "text"), [(1, "1s"), (90, "90s"), (120, "2m"), (86400, "1d"), (1209600, "2w")]
)
def test_durations_print_in_their_largest_exact_unit(seconds: int, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text


@given(moments, st.integers(1, int(MAX_RATE_WINDOW.total_seconds())))
def test_a_rate_window_holds_the_moment_and_aligns_to_the_epoch(
    now: datetime, seconds: int
) -> None:
    window = rate_window(RateLimit(limit=1, window=seconds), now)
    assert window.start <= now.timestamp() < window.end
    assert window.end - window.start == seconds
    assert window.start % seconds == 0
    assert 0 < window.seconds_left(now) <= seconds


def test_processes_agree_on_a_window_without_talking() -> None:
    limit = RateLimit.parse("100/1m")
    at = datetime(2026, 12, 3, 16, 0, 59, 999_000, tzinfo=UTC)
    assert rate_window(limit, at) == rate_window(limit, at.replace(second=0, microsecond=0))
    assert rate_window(limit, at + timedelta(milliseconds=1)).start == rate_window(limit, at).end


@given(moments, moments, st.integers(1, int(MAX_QUOTA_PERIOD.total_seconds())))
def test_a_quota_period_counts_from_its_anchor(
    anchor: datetime, now: datetime, seconds: int
) -> None:
    window = quota_window(Quota(limit=1, period=seconds), anchor, now)
    assert window is not None
    assert window.end - window.start == seconds
    assert (window.start - int(anchor.timestamp())) % seconds == 0
    if now >= anchor:
        assert window.start <= now.timestamp() < window.end
    else:  # a clock set back before the anchor stays in the first period: no refill
        assert window.start == int(anchor.timestamp())


def test_a_one_off_balance_has_no_period() -> None:
    now = datetime(2026, 12, 3, tzinfo=UTC)
    assert quota_window(Quota(limit=500), now, now + timedelta(days=3650)) is None


@pytest.mark.parametrize(
    ("child", "parent", "within"),
    [
        (None, None, True),
        ("5/1m", None, True),
        (None, "10/1m", False),  # no limit is looser than any
        ("10/1m", "10/1m", True),
        ("5/1m", "10/1m", True),
        ("10/1h", "10/1m", True),
        ("20/1h", "10/1m", False),  # 20 at once
        ("5/1s", "10/1m", False),  # 300 a minute
        ("10/30s", "10/1m", False),  # 20 a minute
        ("5/30s", "10/1m", True),
    ],
)
def test_a_rate_limit_is_within_another_when_no_looser(
    child: str | None, parent: str | None, within: bool
) -> None:
    def read(text: str | None) -> RateLimit | None:
        return None if text is None else RateLimit.parse(text)

    assert rate_limit_within(read(child), read(parent)) is within


@pytest.mark.parametrize(
    ("child", "parent", "within"),
    [
        ("500", None, True),
        (None, "500", False),
        ("500", "500", True),
        ("100", "500", True),
        ("600", "500", False),
        ("100/30d", "500", False),  # refills for ever under a balance that never does
        ("500", "1000/30d", True),  # once, within one period's worth
        ("2000", "1000/30d", False),
        ("1000/60d", "1000/30d", True),
        ("1000/1d", "1000/30d", False),
        ("30/1d", "1000/30d", True),
        ("40/1d", "1000/30d", False),  # 1,200 in 30 days
    ],
)
def test_a_quota_is_within_another_when_no_looser(
    child: str | None, parent: str | None, within: bool
) -> None:
    def read(text: str | None) -> Quota | None:
        return None if text is None else Quota.parse(text)

    assert quota_within(read(child), read(parent)) is within
