"""A flood of random well-shaped keys spends at most the verification budget of Clerk's rate limit.

The measurement of ``benchmarks/clerk_flood.py``, asserted: 1,000 random keys
of a Clerk secret's shape from one client, then from 50 at once, while a known
key (verified before, its cache entry expired by the manager's clock) and a
valid key never seen before are presented. The clock stands still, so the
budget never refills during a phase: exactly its ``limit`` flood keys reach
Clerk, and the known key is never refused.
"""

from __future__ import annotations

import random

import pytest

from apikeys import RateLimit
from apikeys._upstream import DEFAULT_VERIFICATION_BUDGET
from apikeys.testing import FakeClerk
from benchmarks.clerk_flood import (
    ACCEPTED,
    CLERK_DEVELOPMENT_LIMIT,
    Clock,
    fake_upstream,
    flood_keys,
    prism_upstream,
    run_phases,
)

pytestmark = pytest.mark.clerk

BUDGET = RateLimit.parse(DEFAULT_VERIFICATION_BUDGET)
FLOOD = 1_000
CLIENTS = (1, 50)
REFUSALS = {"invalid_api_key", "verification_budget_spent"}


def test_the_default_budget_is_a_fifth_of_a_development_instance() -> None:
    assert RateLimit(limit=20, window=10) == BUDGET
    assert BUDGET.limit * 5 == CLERK_DEVELOPMENT_LIMIT


def test_the_fake_enforces_an_instance_rate_limit() -> None:
    clock = Clock(frozen=True)
    fake = FakeClerk(clock=clock, rate_limit=RateLimit(limit=2, window=10))
    with fake.client() as client:
        answers = [client.get(f"{fake.api_url}/api_keys/ak_{'0' * 32}") for _ in range(3)]
        assert [answer.status_code for answer in answers] == [401, 401, 429]
        assert answers[2].headers["Retry-After"] == "10"
        clock.advance(10)
        assert client.get(f"{fake.api_url}/api_keys/ak_{'0' * 32}").status_code == 401


def test_a_flood_spends_at_most_the_budget_and_never_holds_back_a_known_key(
    flavour: str,
) -> None:
    clock = Clock(frozen=True)
    keys = flood_keys(random.Random(16), FLOOD)
    phases = run_phases(
        fake_upstream(clock), flavour, clock=clock, keys=keys, clients=CLIENTS, budget=BUDGET
    )
    assert [phase.clients for phase in phases] == list(CLIENTS)
    for phase in phases:
        assert phase.flood_calls == BUDGET.limit  # the whole budget, not one call more
        assert sum(phase.flood_outcomes.values()) == FLOOD
        assert set(phase.flood_outcomes) == REFUSALS
        assert phase.flood_outcomes["invalid_api_key"] == BUDGET.limit
        assert phase.known_outcomes == [ACCEPTED, ACCEPTED]  # during and after the flood
        # A valid key never seen meets the spent budget: 503, to retry shortly.
        assert phase.new_outcomes == ["verification_budget_spent"]
        # The flood's calls and one for the known key, whose cache entry had expired.
        assert phase.upstream_calls == BUDGET.limit + 1
        assert phase.left_in_development_window == CLERK_DEVELOPMENT_LIMIT - BUDGET.limit - 1


@pytest.mark.e2e
def test_a_flood_against_prism_spends_at_most_the_budget(prism_url: str, flavour: str) -> None:
    clock = Clock(frozen=True)
    keys = flood_keys(random.Random(17), FLOOD)
    phases = run_phases(
        prism_upstream(prism_url), flavour, clock=clock, keys=keys, clients=CLIENTS, budget=BUDGET
    )
    for phase in phases:
        assert phase.upstream_calls == phase.flood_calls == BUDGET.limit
        assert set(phase.flood_outcomes) == REFUSALS
        assert phase.flood_outcomes["invalid_api_key"] == BUDGET.limit


def test_without_a_budget_a_flood_takes_clerks_window_and_its_429_stops_everyone_once(
    flavour: str,
) -> None:
    clock = Clock(frozen=True)
    keys = flood_keys(random.Random(18), FLOOD)
    one, many = run_phases(
        fake_upstream(clock), flavour, clock=clock, keys=keys, clients=CLIENTS, budget=None
    )
    # The window's 100 requests go to 100 flood keys; Clerk's 429 to the next pauses every
    # call: none is sent after it.
    assert one.flood_calls == one.upstream_calls == CLERK_DEVELOPMENT_LIMIT + 1
    assert one.flood_outcomes == {"invalid_api_key": 100, "backend_unavailable": FLOOD - 100}
    assert one.left_in_development_window == 0
    # Legitimate clients pay for it: refused with 503 for the pause.
    assert one.known_outcomes == ["backend_unavailable"] * 2
    assert one.new_outcomes == ["backend_unavailable"]
    # From 50 clients, the calls in flight when the 429 came get one each, then none.
    assert CLERK_DEVELOPMENT_LIMIT + 1 <= many.flood_calls <= CLERK_DEVELOPMENT_LIMIT + 50
    assert set(many.known_outcomes) == {"backend_unavailable"}
