"""A key's limits in their stored forms (apikeys._limitstorage): written, then read back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apikeys._keylimits import MAX_LIMIT, MAX_QUOTA_PERIOD, MAX_RATE_WINDOW, Quota, RateLimit
from apikeys._limitstorage import (
    LIMITS_CLAIM,
    NO_LIMITS,
    KeyLimits,
    anchor_at,
    limits_from_claims,
    limits_to_claim,
    read_quota,
    read_rate_limit,
)

counts = st.integers(min_value=1, max_value=MAX_LIMIT)
rate_limits = st.none() | st.builds(
    RateLimit,
    limit=counts,
    window=st.integers(min_value=1, max_value=int(MAX_RATE_WINDOW.total_seconds())),
)
quotas = st.none() | st.builds(
    Quota,
    limit=counts,
    period=st.none() | st.integers(min_value=1, max_value=int(MAX_QUOTA_PERIOD.total_seconds())),
)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


@given(
    rate_limit=rate_limits,
    quota=quotas,
    now=moments,
    meter=st.none() | st.text(min_size=1, max_size=32),
    other_claims=st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
def test_limits_survive_the_claim_and_json(
    rate_limit: RateLimit | None,
    quota: Quota | None,
    now: datetime,
    meter: str | None,
    other_claims: dict[str, int],
) -> None:
    limits = KeyLimits(rate_limit, quota, None if quota is None else anchor_at(now), meter)
    claim = limits_to_claim(limits)
    claims = {**other_claims, LIMITS_CLAIM: claim} if claim else other_claims
    assert limits_from_claims(json.loads(json.dumps(claims))) == limits
    assert (claim is None) == (limits == NO_LIMITS)


def test_an_anchor_is_utc_in_whole_seconds() -> None:
    moment = datetime(2026, 3, 1, 12, 0, 0, 999_999, tzinfo=UTC)
    assert anchor_at(moment) == datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_columns_are_read_strictly() -> None:
    assert read_rate_limit(None, None) is None
    assert read_rate_limit(10, 60) == RateLimit(limit=10, window=timedelta(minutes=1))
    assert read_quota(None, None, None) is None
    anchor = datetime(2026, 1, 1, tzinfo=UTC)
    assert read_quota(5, None, anchor) == Quota(limit=5)
    for limit, window in [(10, None), (None, 60), (True, 60), (10.0, 60), (10, 0)]:
        with pytest.raises(ValueError, match="rate limit"):
            read_rate_limit(limit, window)
    for values in [(5, None, None), (None, 60, anchor), (0, None, anchor), (5, -1, anchor)]:
        with pytest.raises(ValueError, match="quota"):
            read_quota(*values)
