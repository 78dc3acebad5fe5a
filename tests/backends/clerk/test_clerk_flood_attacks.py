"""Attacks on the Clerk flood defences, run as an outsider would run them.

Each test is one attack: concurrent floods racing the verification budget (threads,
tasks, several managers on one Redis), variants of a known secret passed off as
known, and a flood looking for a secret in logs, events, errors and Redis. The
attacks fail, including two that once succeeded: retries of a verification while
Clerk answers 5xx or times out, and the look-up explaining why a once-valid key is
refused, each draw from the budget too.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial

import httpx
import pytest

import apikeys
from apikeys import KeyEvent
from apikeys.backends.clerk import AsyncClerkKeyManager, ClerkKeyManager
from apikeys.testing import FakeClerk
from benchmarks.clerk_flood import outcome_of, outcome_of_async
from tests.backends.clerk.test_clerk_budget import present
from tests.backends.clerk.twins import Twin, record_sleeps
from tests.redis_server import RedisServer

pytestmark = pytest.mark.clerk

VERIFY = "POST /api_keys/verify"
BUDGET = 20
REFUSALS = {"invalid_api_key", "verification_budget_spent"}


def stranger(index: int) -> str:
    return f"ak_attacker{index:026d}"


def flood_from_threads(managers: list[ClerkKeyManager], keys: int) -> Counter[str]:
    """Every key from its own thread, all released at once, spread over ``managers``."""
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(keys)

    def attack(index: int) -> None:
        manager = managers[index % len(managers)]
        start.wait()
        outcome = outcome_of(partial(manager.validate_api_key, stranger(index)))
        with lock:
            outcomes[outcome] += 1

    threads = [threading.Thread(target=attack, args=(index,)) for index in range(keys)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


async def flood_from_tasks(managers: list[AsyncClerkKeyManager], keys: int) -> Counter[str]:
    """Every key from its own task, all gathered at once, spread over ``managers``."""
    outcomes = await asyncio.gather(
        *(
            outcome_of_async(
                partial(managers[index % len(managers)].validate_api_key, stranger(index))
            )
            for index in range(keys)
        )
    )
    return Counter(outcomes)


def test_threads_racing_the_budget_get_no_more_than_it() -> None:
    fake = FakeClerk()
    with fake.key_manager() as manager:
        outcomes = flood_from_threads([manager], 200)
    assert outcomes == {"invalid_api_key": BUDGET, "verification_budget_spent": 200 - BUDGET}
    assert fake.count(VERIFY) == BUDGET


def test_tasks_racing_the_budget_get_no_more_than_it() -> None:
    fake = FakeClerk()

    async def attack() -> Counter[str]:
        async with fake.async_key_manager() as manager:
            return await flood_from_tasks([manager], 500)

    outcomes = asyncio.run(attack())
    assert outcomes == {"invalid_api_key": BUDGET, "verification_budget_spent": 500 - BUDGET}
    assert fake.count(VERIFY) == BUDGET


def test_managers_sharing_a_redis_racing_the_budget_get_no_more_than_it(
    redis: RedisServer,
) -> None:
    fake = FakeClerk()
    managers = [fake.key_manager(redis_url=redis.url) for _ in range(4)]
    try:
        outcomes = flood_from_threads(managers, 200)
    finally:
        for manager in managers:
            manager.close()
    assert set(outcomes) == REFUSALS
    assert fake.count(VERIFY) == outcomes["invalid_api_key"] == BUDGET


@pytest.mark.parametrize(
    "struggle",
    [
        pytest.param(lambda fake: fake.fail_next(503, times=1_000, route=VERIFY), id="503"),
        pytest.param(
            lambda fake: fake.raise_next(httpx.ReadTimeout, times=1_000, route=VERIFY, after=True),
            id="timeout",
        ),
    ],
)
def test_clerk_struggling_receives_no_more_verify_calls_than_the_budget(
    make_twin: Callable[..., Twin],
    fake: FakeClerk,
    struggle: Callable[[FakeClerk], None],
) -> None:
    # Every retry of a verification drawn from the budget draws again.
    twin = make_twin(verification_budget="5/10s")
    record_sleeps(twin.manager)  # the backoff between retries, not slept
    struggle(fake)
    outcomes = Counter(present(twin, stranger(index)) for index in range(20))
    assert fake.count(VERIFY) == 5
    # Three attempts for the first stranger, two for the second and the budget is spent.
    assert outcomes == {"backend_unavailable": 1, "verification_budget_spent": 19}


def test_an_expired_key_spends_no_more_clerk_calls_than_the_budget(
    make_twin: Callable[..., Twin], fake: FakeClerk, user_id: str
) -> None:
    def now() -> datetime:  # the fake's time, which the test moves
        return datetime.fromtimestamp(fake.now_ms() / 1000, UTC)

    issuer = fake.key_manager(clock=now)
    twin = make_twin(verification_budget="5/10s", clock=now)
    mine = issuer.create_api_key(user_id, "mine", expiration=timedelta(seconds=60)).secret
    assert twin.validate_api_key(mine)  # the attacker's own key, once valid
    fake.advance(61)
    calls = fake.count()
    outcomes = Counter(present(twin, mine) for _ in range(20))
    # Known once: its verification and the look-up explaining the refusal are not drawn;
    # it is forgotten then, and each later call to Clerk, look-ups included, is drawn.
    assert fake.count() - calls == 2 + 5
    assert outcomes == {
        "expired_api_key": 3,  # as known, then twice with two draws each
        "invalid_api_key": 1,  # the fifth draw verified; no draw was left to explain why
        "verification_budget_spent": 16,
    }


def test_variants_of_a_known_secret_are_strangers(
    make_twin: Callable[..., Twin], fake: FakeClerk, user_id: str
) -> None:
    twin = make_twin(verification_budget="1/10s")
    known = twin.create_api_key(user_id, "known").secret
    assert twin.validate_api_key(known)  # the budget's one call: known from here on
    calls = fake.count(VERIFY)
    variants = [
        known.lower(),
        known.upper(),
        known.swapcase(),
        known + "A",
        known[:-1],
        known[:-1] + ("B" if known[-1] != "B" else "C"),
        " " + known,
        known + " ",
        known + "\n",
        known + "\x00",
        "AK_" + known[3:],
        known.replace("a", "\uff41"),  # fullwidth a
    ]
    outcomes = {present(twin, variant) for variant in variants if variant != known}
    assert outcomes <= REFUSALS  # never accepted, never verified as known
    assert fake.count(VERIFY) == calls  # each drew from the spent budget, or was garbage
    assert twin.validate_api_key(known)  # the real one is still known
    assert fake.count(VERIFY) == calls + 1


def test_a_flood_leaves_no_secret_in_logs_events_errors_or_redis(
    redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import redis as redis_py

    fake = FakeClerk()
    manager = fake.key_manager(redis_url=redis.url, verification_budget="3/10s")
    known = manager.create_api_key(fake.new_user_id(), "known").secret
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    try:
        manager.validate_api_key(known)
        for index in range(10):
            try:
                manager.validate_api_key(stranger(index))
            except apikeys.APIKeysError as exc:
                errors.append(f"{exc!s} {exc!r} {vars(exc)!r} {exc.__cause__!r}")
        fake.rate_limit(retry_after="5")  # Clerk's own 429 on the known key, and the pause
        manager.cache.clear()
        for _ in range(2):
            try:
                manager.validate_api_key(known)
            except apikeys.APIKeysError as exc:
                errors.append(f"{exc!s} {exc!r} {vars(exc)!r} {exc.__cause__!r}")
        client = redis_py.Redis.from_url(redis.url, decode_responses=True)
        names = [str(name) for name in client.keys("*")]
        values = "".join(str(client.get(name)) for name in names if client.type(name) == "string")
        values += "".join(
            str(client.lrange(name, 0, -1)) for name in names if client.type(name) == "list"
        )
        client.close()
    finally:
        manager.close()
    assert any(":known:" in name for name in names)  # the attack did reach Redis
    events: list[KeyEvent] = [
        vars(record)["apikeys_event"]
        for record in caplog.records
        if "apikeys_event" in vars(record)
    ]
    assert [event.kind for event in events].count("flood") == 1
    secrets = [known, *(stranger(index) for index in range(10))]
    bodies = [secret[3:] for secret in secrets]  # without the shared ak_ prefix
    seen = [
        caplog.text,
        *errors,
        *names,
        values,
        *(repr(event) for event in events),
        repr(manager),
        repr(manager.guard.__dict__),
    ]
    for text in seen:
        assert not any(body in text for body in bodies)
