"""The verification budget behind real web apps: a flood gets 503 with Retry-After, a known key 200."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from apikeys.testing import FakeClerk
from tests.backends.clerk.test_clerk_http import fastapi_client, flask_client, get_reports

pytestmark = pytest.mark.clerk


@pytest.fixture(params=["fastapi", "flask"])
def make_web(request: pytest.FixtureRequest, fake: FakeClerk) -> Callable[..., Any]:
    make = fastapi_client if request.param == "fastapi" else flask_client
    return lambda **options: make(fake, **options)


def test_a_flood_gets_503_with_retry_after_and_a_known_key_gets_in(
    make_web: Callable[..., Any], fake: FakeClerk, user_id: str
) -> None:
    web = make_web(verification_budget="3/10s", cache_ttl=0)
    known = fake.key_manager().create_api_key(user_id, "reader", ["read:data"]).secret
    assert get_reports(web, known)[0] == 200  # one of the budget, and known from here on
    answers = [get_reports(web, f"ak_httpstranger{index:024d}") for index in range(6)]
    assert [status for status, _, _ in answers] == [403, 403] + [503] * 4
    for _, body, answer in answers[2:]:
        assert body["code"] == "verification_budget_spent"
        assert 0 < int(answer.headers["Retry-After"]) <= 10
        assert "httpstranger" not in str(body)
    calls = fake.count("POST /api_keys/verify")
    assert get_reports(web, known)[0] == 200  # cache off: verified again, outside the budget
    assert fake.count("POST /api_keys/verify") == calls + 1
