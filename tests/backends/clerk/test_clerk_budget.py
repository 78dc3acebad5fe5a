"""The verification budget: secrets not seen succeed recently reach Clerk within it, known ones always.

Every manager here keeps time by a clock the test moves; nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import partial

import pytest
from pydantic import SecretStr

import apikeys
from apikeys import (
    BackendUnavailableError,
    ConfigurationError,
    InvalidKeyError,
    KeyEvent,
    RateLimit,
    Settings,
    VerificationBudgetSpentError,
)
from apikeys._config import load_settings
from apikeys.backends.clerk import ClerkKeyManager
from apikeys.testing import FakeClerk
from benchmarks.clerk_flood import Clock, outcome_of
from tests.backends.clerk.twins import Twin

pytestmark = pytest.mark.clerk

VERIFY = "POST /api_keys/verify"


@pytest.fixture
def now() -> Clock:
    """The wall clock of the fake and the managers, moved by the test."""
    return Clock(frozen=True)


@pytest.fixture
def fake(now: Clock) -> FakeClerk:
    """A fake keeping time by the test's clock, as the managers do."""
    return FakeClerk(clock=now)


@pytest.fixture
def make(make_twin: Callable[..., Twin], now: Clock) -> Callable[..., Twin]:
    def build(**options: object) -> Twin:
        return make_twin(clock=now, **options)

    return build


@pytest.fixture
def events() -> Iterator[list[KeyEvent]]:
    seen: list[KeyEvent] = []
    listener = apikeys.add_event_listener(seen.append)
    yield seen
    apikeys.remove_event_listener(listener)


def stranger(index: int) -> str:
    return f"ak_stranger{index:024d}"


def present(twin: Twin, secret: str) -> str:
    return outcome_of(partial(twin.validate_api_key, secret))


def test_a_spent_budget_refuses_strangers_with_503_and_when_to_retry(
    make: Callable[..., Twin], fake: FakeClerk
) -> None:
    twin = make(verification_budget="5/10s")
    outcomes = [present(twin, stranger(index)) for index in range(8)]
    assert outcomes == ["invalid_api_key"] * 5 + ["verification_budget_spent"] * 3
    assert fake.count(VERIFY) == 5
    with pytest.raises(VerificationBudgetSpentError) as caught:
        twin.validate_api_key(stranger(99))
    error = caught.value
    assert isinstance(error, BackendUnavailableError) and error.status_code == 503
    assert error.code == "verification_budget_spent"
    assert error.retry_after == pytest.approx(10.0)  # when the first of the window leaves it
    assert stranger(99) not in str(error) and stranger(99) not in repr(error)


def test_the_budget_is_a_moving_window(
    make: Callable[..., Twin], fake: FakeClerk, now: Clock
) -> None:
    twin = make(verification_budget="5/10s")
    for index in range(3):
        present(twin, stranger(index))
    now.advance(6)
    assert [present(twin, stranger(3 + i)) for i in range(3)].count("invalid_api_key") == 2
    now.advance(3.9)  # never more than 5 in any 10 s
    assert present(twin, stranger(6)) == "verification_budget_spent"
    now.advance(0.1)  # the first 3 have left the window
    assert [present(twin, stranger(7 + i)) for i in range(4)].count("invalid_api_key") == 3
    assert fake.count(VERIFY) == 8


def test_a_known_key_whose_cache_entry_expired_is_never_held_back(
    make: Callable[..., Twin], fake: FakeClerk, user_id: str, now: Clock
) -> None:
    twin = make(verification_budget="3/10s", cache_ttl=10)
    known = twin.create_api_key(user_id, "known").secret
    twin.validate_api_key(known)
    twin.manager.cache.clear()  # its entry gone, as when it expires
    for index in range(10):
        present(twin, stranger(index))
    before = fake.count(VERIFY)
    assert twin.validate_api_key(known)  # verified with Clerk, outside the budget
    assert fake.count(VERIFY) == before + 1
    never_seen = twin.create_api_key(user_id, "never seen").secret
    with pytest.raises(VerificationBudgetSpentError):
        twin.validate_api_key(never_seen)
    now.advance(10)
    assert twin.validate_api_key(never_seen)  # once the budget refilled


def test_a_key_is_known_for_a_day(
    make: Callable[..., Twin], fake: FakeClerk, user_id: str, now: Clock
) -> None:
    twin = make(verification_budget="1/10s")
    known = twin.create_api_key(user_id, "known").secret
    twin.validate_api_key(known)  # cache_ttl=0: every validation asks Clerk
    now.advance(86_400 - 1)
    present(twin, stranger(0))  # the budget spent
    assert twin.validate_api_key(known)  # still known, and known again for a day from here
    now.advance(86_400 + 1)
    present(twin, stranger(1))
    assert present(twin, known) == "verification_budget_spent"


def test_a_known_key_refused_is_forgotten(
    make: Callable[..., Twin], fake: FakeClerk, user_id: str, now: Clock
) -> None:
    twin = make(verification_budget="2/10s")
    issuer = make(verification_budget=None)
    known = issuer.create_api_key(user_id, "known", expiration=timedelta(hours=1)).secret
    twin.validate_api_key(known)
    now.advance(3601)  # the key expired, and the budget is whole again
    assert present(twin, known) == "expired_api_key"
    present(twin, stranger(0))
    present(twin, stranger(1))  # the budget spent: the two calls went to strangers
    # No longer known: the expired secret meets the spent budget like any other.
    calls = fake.count(VERIFY)
    assert present(twin, known) == "verification_budget_spent"
    assert fake.count(VERIFY) == calls


def test_one_flood_event_per_flood(
    make: Callable[..., Twin], now: Clock, events: list[KeyEvent]
) -> None:
    twin = make(verification_budget="2/10s")
    for index in range(20):
        present(twin, stranger(index))
    floods = [event for event in events if event.kind == "flood"]
    assert len(floods) == 1
    assert floods[0].source == "clerk" and floods[0].key_id is None
    now.advance(9)
    for index in range(20, 40):
        present(twin, stranger(index))
    assert [event.kind for event in events].count("flood") == 1  # the same flood
    now.advance(10)  # a quiet window: the next refusals are a new flood
    for index in range(40, 60):
        present(twin, stranger(index))
    assert [event.kind for event in events].count("flood") == 2


@pytest.mark.parametrize("off", [None, 0, "0"])
def test_the_budget_can_be_turned_off(
    make: Callable[..., Twin], fake: FakeClerk, off: object
) -> None:
    twin = make(verification_budget=off)
    assert twin.manager.verification_budget is None
    assert {present(twin, stranger(index)) for index in range(40)} == {"invalid_api_key"}
    assert fake.count(VERIFY) == 40


def test_garbage_never_reaches_the_budget(make: Callable[..., Twin], fake: FakeClerk) -> None:
    twin = make(verification_budget="1/10s")
    for value in ("ak_short", "sk_" + "A" * 40, "", "ak_" + "A" * 600):
        with pytest.raises(InvalidKeyError):
            twin.validate_api_key(value)
    assert fake.count(VERIFY) == 0
    assert present(twin, stranger(0)) == "invalid_api_key"  # the budget is whole


def test_the_budget_is_set_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeClerk()
    monkeypatch.setenv("APIKEYS_VERIFICATION_BUDGET", "1000/10s")
    settings = Settings(clerk_secret_key=SecretStr(fake.secret_key))
    with ClerkKeyManager.from_settings("clerk://", settings) as manager:
        assert manager.verification_budget == RateLimit(limit=1000, window=10)
    monkeypatch.setenv("APIKEYS_VERIFICATION_BUDGET", "0")
    made = apikeys.create_key_manager("clerk://", clerk_secret_key=fake.secret_key)
    assert isinstance(made, ClerkKeyManager)
    assert made.verification_budget is None
    made.close()
    monkeypatch.delenv("APIKEYS_VERIFICATION_BUDGET")
    with ClerkKeyManager(fake.secret_key) as manager:
        assert manager.verification_budget == RateLimit(limit=20, window=10)


@pytest.mark.parametrize("wrong", ["lots", "20", "-1/10s", 20, 1.5])
def test_a_wrong_budget_is_a_configuration_error(wrong: object) -> None:
    with pytest.raises(ConfigurationError, match="verification_budget"):
        ClerkKeyManager(FakeClerk().secret_key, verification_budget=wrong)
    if isinstance(wrong, str):
        with pytest.raises(ConfigurationError, match="verification_budget"):
            load_settings(verification_budget=wrong)
