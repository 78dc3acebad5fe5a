"""The RateLimit header fields (draft-ietf-httpapi-ratelimit-headers-10), without a framework,
then their clock through Flask's and Starlette's own test clients."""

from __future__ import annotations

import functools
import math
import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

import apikeys
from apikeys._keylimits import MAX_LIMIT, Window
from apikeys._meter import Allowance, Balance
from apikeys.backends.sqlalchemy import AsyncSQLAlchemyKeyManager, SQLAlchemyKeyManager
from apikeys.integrations._authentication import (
    NOT_ADMITTED,
    Admission,
    route_cost,
    still_to_charge,
)
from apikeys.integrations._ratelimit_fields import refusal_fields, usage_fields
from apikeys.integrations._responses import error_response

START = 1_800_000_000
NOW = datetime.fromtimestamp(START + 42, UTC)

# One list member: an sf-string policy name, then integer parameters.
ITEM = re.compile(r'"(rate|quota)"((?:;[a-z]=\d+)*)')


def parse(field: str) -> dict[str, dict[str, int]]:
    """A Structured Field list of items with integer parameters, as this module writes them."""
    items: dict[str, dict[str, int]] = {}
    for member in field.split(", "):
        match = ITEM.fullmatch(member)
        assert match is not None, member
        parameters = [p.split("=") for p in match.group(2).split(";")[1:]]
        items[match.group(1)] = {name: int(value) for name, value in parameters}
    return items


def test_the_example_of_the_docs() -> None:
    usage = Allowance(
        rate_limit=Balance(100, 42, Window(START + 0, START + 60)),
        quota=Balance(100_000, 99_000, Window(START - 591_958, START + 2_000_042)),
    )
    assert usage_fields(usage, NOW) == (
        ("RateLimit-Policy", '"rate";q=100;w=60, "quota";q=100000;w=2592000'),
        ("RateLimit", '"rate";r=42;t=18, "quota";r=99000;t=2000000'),
    )


def test_a_one_off_quota_has_no_window_and_no_reset() -> None:
    usage = Allowance(quota=Balance(500, 495, None))
    assert usage_fields(usage, NOW) == (
        ("RateLimit-Policy", '"quota";q=500'),
        ("RateLimit", '"quota";r=495'),
    )


def test_an_unlimited_key_gets_no_fields() -> None:
    assert usage_fields(None, NOW) == ()
    assert usage_fields(Allowance(), NOW) == ()


def test_seconds_to_the_reset_are_rounded_up() -> None:
    usage = Allowance(rate_limit=Balance(10, 9, Window(START, START + 60)))
    just_after = NOW + timedelta(milliseconds=1)  # 17.999 s left
    assert usage_fields(usage, just_after)[1] == ("RateLimit", '"rate";r=9;t=18')


balances = st.builds(
    lambda limit, spent, start, length: Balance(
        limit, limit - min(spent, limit), Window(start, start + length)
    ),
    st.integers(1, MAX_LIMIT),
    st.integers(0, MAX_LIMIT),
    st.integers(0, 4_000_000_000),
    st.integers(1, 10 * 365 * 86400),
)


@given(
    rate=st.none() | balances,
    quota=st.none() | balances | st.builds(lambda b: Balance(b.limit, b.remaining, None), balances),
    offset=st.floats(0, 1, exclude_max=True),
)
def test_fields_say_what_the_balances_hold(
    rate: Balance | None, quota: Balance | None, offset: float
) -> None:
    usage = Allowance(rate_limit=rate, quota=quota)
    windows = [b.window for b in (rate, quota) if b is not None and b.window is not None]
    # A moment inside every window there is, or the epoch's 2030 without any.
    moment = max((w.start for w in windows), default=START)
    now = datetime.fromtimestamp(moment, UTC) + timedelta(seconds=offset)
    fields = usage_fields(usage, now)
    expected = {name: b for name, b in (("rate", rate), ("quota", quota)) if b is not None}
    if not expected:
        assert fields == ()
        return
    (policy_name, policy), (state_name, state) = fields
    assert (policy_name, state_name) == ("RateLimit-Policy", "RateLimit")
    policies, states = parse(policy), parse(state)
    assert list(policies) == list(states) == list(expected)
    for name, balance in expected.items():
        assert policies[name]["q"] == balance.limit
        assert states[name]["r"] == balance.remaining
        if balance.window is None:
            assert "w" not in policies[name] and "t" not in states[name]
        else:
            assert policies[name]["w"] == balance.window.end - balance.window.start
            left = balance.window.end - now.timestamp()
            assert states[name]["t"] == max(0, math.ceil(left))


@given(retry_after=st.floats(0, 10**7, allow_nan=False))
def test_a_refusal_names_the_refusing_limit_with_nothing_left(retry_after: float) -> None:
    seconds = math.ceil(retry_after)
    rate = refusal_fields(apikeys.RateLimitedError(retry_after=retry_after))
    assert rate == (("RateLimit", f'"rate";r=0;t={seconds}'),)
    quota = refusal_fields(apikeys.QuotaExceededError(retry_after=retry_after))
    assert quota == (("RateLimit", f'"quota";r=0;t={seconds}'),)


def test_a_spent_one_off_quota_never_resets() -> None:
    assert refusal_fields(apikeys.QuotaExceededError()) == (("RateLimit", '"quota";r=0'),)


def test_seconds_to_the_reset_count_from_when_the_balances_were_read() -> None:
    usage = Allowance(rate_limit=Balance(10, 9, Window(START, START + 60)), at=NOW)
    assert usage_fields(usage)[1] == ("RateLimit", '"rate";r=9;t=18')  # not the wall clock's


def test_a_refusal_with_usage_names_every_limit_the_refusing_one_at_zero() -> None:
    usage = Allowance(
        rate_limit=Balance(100, 3, Window(START, START + 60)),
        quota=Balance(500, 495, None),
        at=NOW,
    )
    rate = refusal_fields(apikeys.RateLimitedError(retry_after=18, usage=usage))
    assert rate == (
        ("RateLimit-Policy", '"rate";q=100;w=60, "quota";q=500'),
        ("RateLimit", '"rate";r=0;t=18, "quota";r=495'),
    )
    quota = refusal_fields(apikeys.QuotaExceededError(usage=usage))
    assert quota == (
        ("RateLimit-Policy", '"rate";q=100;w=60, "quota";q=500'),
        ("RateLimit", '"rate";r=3;t=18, "quota";r=0'),
    )
    # A refusal whose usage lacks the refusing limit is answered as one without usage.
    only_quota = Allowance(quota=Balance(500, 495, None), at=NOW)
    assert refusal_fields(apikeys.RateLimitedError(retry_after=5, usage=only_quota)) == (
        ("RateLimit", '"rate";r=0;t=5'),
    )


def test_both_refusals_are_429_with_retry_after_and_their_code() -> None:
    rate = error_response(apikeys.RateLimitedError("over", retry_after=17.2))
    assert (rate.status, rate.body, dict(rate.headers)) == (
        429,
        {"code": "rate_limited", "message": "over", "retryAfter": 18},
        {"Retry-After": "18"},
    )
    quota = error_response(apikeys.QuotaExceededError("spent", retry_after=3600.0))
    assert quota.status == 429
    assert quota.body == {"code": "quota_exceeded", "message": "spent", "retryAfter": 3600}
    assert dict(quota.headers) == {"Retry-After": "3600"}


@pytest.mark.parametrize("cost", [0, -1, MAX_LIMIT + 1, 1.5, True, "5", None])
def test_a_route_cost_is_checked_when_the_route_is_declared(cost: object) -> None:
    with pytest.raises(apikeys.ConfigurationError, match="invalid route cost"):
        route_cost(cost)


@pytest.mark.parametrize("cost", [1, 5, MAX_LIMIT])
def test_a_route_cost_from_1_to_10_to_the_12(cost: int) -> None:
    assert route_cost(cost) == cost


def _verified() -> apikeys.VerifiedKey:
    return apikeys.VerifiedKey(id="key_1", user_id="user_1", name="ci", scopes=("read:data",))


@given(charged=st.integers(1, 100), cost=st.integers(1, 100))
def test_a_request_is_charged_its_routes_cost_once_in_all(charged: int, cost: int) -> None:
    assert still_to_charge(NOT_ADMITTED, (), cost) == cost
    admitted = Admission(_verified(), charged)
    assert charged + still_to_charge(admitted, (), cost) == max(charged, cost)


def test_a_key_verified_before_is_still_checked_for_the_routes_scopes() -> None:
    with pytest.raises(apikeys.InsufficientScopeError):
        still_to_charge(Admission(_verified(), 1), ("admin:write",), 1)


# --- t by the manager's clock, through real test clients ----------------------------------------

STILL = datetime.fromtimestamp(START + 15, UTC)  # 15 s into a minute, in 2027
"""The managers' clock here: it stands still, far from the wall clock."""

RATE = apikeys.RateLimit(limit=2, window=60)
QUOTA = apikeys.Quota(limit=10, period=timedelta(hours=1))

# Counted from STILL: 45 s to the minute's end, an hour to the quota's (anchored at STILL).
EXPECTED = [
    '"rate";r=1;t=45, "quota";r=9;t=3600',
    '"rate";r=0;t=45, "quota";r=8;t=3600',
    '"rate";r=0;t=45, "quota";r=8;t=3600',  # the 429: the refused call spent nothing
]


def test_flask_counts_t_by_the_managers_clock(db_url: str) -> None:
    from flask import Flask, g

    from apikeys.integrations.flask import APIKeys, require_api_key

    manager = SQLAlchemyKeyManager(db_url, clock=lambda: STILL)
    new = manager.create_api_key("user_1", "ci", rate_limit=RATE, quota=QUOTA)
    app = Flask(__name__)
    APIKeys(app, manager=manager)

    @app.get("/protected")
    @require_api_key
    def protected() -> dict[str, str]:
        return {"user": g.api_key.user_id}

    client = app.test_client()
    try:
        replies = [client.get("/protected", headers={"X-API-Key": new.secret}) for _ in range(3)]
    finally:
        manager.close()
    assert [reply.status_code for reply in replies] == [200, 200, 429]
    assert [reply.headers["RateLimit"] for reply in replies] == EXPECTED
    assert replies[2].headers["Retry-After"] == "45"


def test_starlette_counts_t_by_the_managers_clock(db_url: str) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from apikeys.integrations.starlette import APIKeys, require_api_key

    manager = AsyncSQLAlchemyKeyManager(db_url, clock=lambda: STILL)

    @require_api_key()
    async def protected(request: Request) -> JSONResponse:
        return JSONResponse({"user": request.state.api_key.user_id})

    app = Starlette(routes=[Route("/protected", protected)])
    APIKeys(app, manager=manager)
    with TestClient(app) as client:
        assert client.portal is not None  # the app's event loop, while the client is open
        create = functools.partial(manager.create_api_key, rate_limit=RATE, quota=QUOTA)
        new = client.portal.call(create, "user_1", "ci")
        replies = [client.get("/protected", headers={"X-API-Key": new.secret}) for _ in range(3)]
        client.portal.call(manager.close)
    assert [reply.status_code for reply in replies] == [200, 200, 429]
    assert [reply.headers["RateLimit"] for reply in replies] == EXPECTED
    assert replies[2].headers["Retry-After"] == "45"
