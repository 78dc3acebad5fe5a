"""Abuse controls on the SQLAlchemy backend: the work an attacker can force is bounded."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher, Type
from hypothesis import given, settings
from hypothesis import strategies as st

import apikeys
from apikeys import (
    BackendUnavailableError,
    ConfigurationError,
    InvalidKeyError,
    RateLimitedError,
    VerifiedKey,
)
from apikeys._ratelimit import FailureLimiter
from apikeys.backends.sqlalchemy import AsyncSQLAlchemyKeyManager, SQLAlchemyKeyManager
from tests.reliability.helpers import FakeClock, wrong_secret_for

pytestmark = pytest.mark.sqlalchemy


class CountingHasher(PasswordHasher):
    """An argon2id hasher that counts its calls and the most that ran at once."""

    def __init__(self, *, time_cost: int = 1, memory_cost: int = 1024) -> None:
        super().__init__(time_cost=time_cost, memory_cost=memory_cost, parallelism=1, type=Type.ID)
        self._lock = threading.Lock()
        self.calls = self.inside = self.peak = 0

    def _enter(self) -> None:
        with self._lock:
            self.calls += 1
            self.inside += 1
            self.peak = max(self.peak, self.inside)

    def _leave(self) -> None:
        with self._lock:
            self.inside -= 1

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self._enter()
        try:
            return super().hash(password, salt=salt)
        finally:
            self._leave()

    def verify(self, hash: str | bytes, password: str | bytes) -> Any:
        self._enter()
        try:
            return super().verify(hash, password)
        finally:
            self._leave()

    def reset(self) -> None:
        with self._lock:
            self.calls = self.peak = 0


class QueryCounter:
    """Counts statements an engine sends to the database."""

    def __init__(self, engine: sa.Engine) -> None:
        self.count = 0
        sa.event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: object) -> None:
        self.count += 1


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'keys.db'}"


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


@pytest.fixture
def manager(url: str, hasher: CountingHasher) -> Iterator[SQLAlchemyKeyManager]:
    with SQLAlchemyKeyManager(url, password_hasher=hasher, max_failures_per_key=3) as made:
        yield made


def refusals(manager: SQLAlchemyKeyManager, key: str, attempts: int) -> list[str]:
    """The error code of each of ``attempts`` validations of ``key``."""
    codes = []
    for _ in range(attempts):
        with pytest.raises(apikeys.APIKeysError) as caught:
            manager.validate_api_key(key)
        codes.append(caught.value.code)
    return codes


# --- per key id limits -------------------------------------------------------------


def test_wrong_secrets_for_one_id_are_limited(manager: SQLAlchemyKeyManager) -> None:
    new = manager.create_api_key("u1", "k")
    wrong = wrong_secret_for(new.secret)
    assert refusals(manager, wrong, 5) == ["invalid_api_key"] * 3 + ["rate_limited"] * 2
    with pytest.raises(RateLimitedError) as caught:
        manager.validate_api_key(wrong_secret_for(new.secret))  # any secret for that id
    assert caught.value.status_code == 429
    assert caught.value.retry_after is not None
    assert 0 < caught.value.retry_after <= 20.0  # one token per window / max = 60 / 3
    assert caught.value.key_id is None
    other = manager.create_api_key("u1", "other")
    assert manager.validate_api_key(other.secret).key_id == other.id  # other ids unaffected


def test_unknown_ids_are_limited_exactly_like_known_ones(manager: SQLAlchemyKeyManager) -> None:
    known = manager.create_api_key("u1", "k")
    unknown = apikeys.generate_key().key
    for_known = refusals(manager, wrong_secret_for(known.secret), 5)
    for_unknown = refusals(manager, unknown, 5)
    assert for_known == for_unknown


def test_a_limited_id_costs_no_query_and_no_hash(
    manager: SQLAlchemyKeyManager, hasher: CountingHasher
) -> None:
    new = manager.create_api_key("u1", "k")
    refusals(manager, wrong_secret_for(new.secret), 3)
    hasher.reset()
    queries = QueryCounter(manager.engine)
    assert refusals(manager, wrong_secret_for(new.secret), 50) == ["rate_limited"] * 50
    assert (queries.count, hasher.calls) == (0, 0)


def test_garbage_is_never_counted(manager: SQLAlchemyKeyManager) -> None:
    assert refusals(manager, "apk_garbage", 20) == ["invalid_api_key"] * 20
    assert len(manager.failure_limiter) == 0


def test_arbitrary_text_is_refused_and_only_keys_with_an_id_are_counted() -> None:
    manager = SQLAlchemyKeyManager("sqlite:///:memory:")

    @settings(max_examples=300, deadline=None)
    @given(
        text=st.one_of(
            st.text(max_size=120),
            # Well-formed keys of unknown ids (right checksum), ids drawn by hypothesis.
            st.from_regex(r"[0-9A-Za-z]{12}", fullmatch=True).map(
                lambda lookup_id: apikeys.generate_key(lookup_id=lookup_id).key
            ),
        )
    )
    def check(text: str) -> None:
        manager.failure_limiter = FailureLimiter(1000, 60.0)
        with pytest.raises(InvalidKeyError) as caught:
            manager.validate_api_key(text)
        assert type(caught.value) is InvalidKeyError
        try:
            apikeys.parse_key(text)
        except InvalidKeyError:
            assert len(manager.failure_limiter) == 0  # garbage: nothing remembered
        else:
            assert len(manager.failure_limiter) == 1  # a well-formed unknown key: counted

    check()
    manager.close()


async def test_a_limited_id_costs_the_async_manager_no_query_either(url: str) -> None:
    hasher = CountingHasher()
    async with AsyncSQLAlchemyKeyManager(
        url, password_hasher=hasher, max_failures_per_key=2
    ) as manager:
        new = await manager.create_api_key("u1", "k")
        for _ in range(2):
            with pytest.raises(InvalidKeyError):
                await manager.validate_api_key(wrong_secret_for(new.secret))
        hasher.reset()
        queries = QueryCounter(manager.engine.sync_engine)
        for _ in range(20):
            with pytest.raises(RateLimitedError):
                await manager.validate_api_key(wrong_secret_for(new.secret))
        assert (queries.count, hasher.calls) == (0, 0)


def test_the_right_secret_waits_too_until_a_token_is_back(manager: SQLAlchemyKeyManager) -> None:
    """The documented trade-off: whoever knows a key id can make its holder wait."""
    clock = FakeClock()
    manager.failure_limiter = FailureLimiter(3, 60.0, clock=clock)
    new = manager.create_api_key("u1", "k")
    refusals(manager, wrong_secret_for(new.secret), 3)
    with pytest.raises(RateLimitedError) as caught:
        manager.validate_api_key(new.secret)
    assert caught.value.retry_after == pytest.approx(20.0)
    clock.advance(20.0)
    assert manager.validate_api_key(new.secret).key_id == new.id


def test_a_cached_key_is_still_served_while_its_id_is_limited(
    manager: SQLAlchemyKeyManager,
) -> None:
    new = manager.create_api_key("u1", "k")
    manager.validate_api_key(new.secret)  # now cached
    refusals(manager, wrong_secret_for(new.secret), 4)
    assert manager.validate_api_key(new.secret).key_id == new.id


def test_right_secret_failures_do_not_count(manager: SQLAlchemyKeyManager) -> None:
    new = manager.create_api_key("u1", "k")
    manager.revoke_api_key(new.id)
    assert refusals(manager, new.secret, 6) == ["revoked_api_key"] * 6


def test_limits_come_from_settings(url: str) -> None:
    manager = apikeys.create_key_manager(url, max_failures_per_key=1, failure_window=5)
    key = apikeys.generate_key().key
    with pytest.raises(InvalidKeyError):
        manager.validate_api_key(key)
    with pytest.raises(RateLimitedError) as caught:
        manager.validate_api_key(key)
    assert caught.value.retry_after == pytest.approx(5.0, abs=0.1)
    manager.close()


def test_limits_can_be_turned_off(url: str) -> None:
    with SQLAlchemyKeyManager(url, max_failures_per_key=0) as manager:
        key = apikeys.generate_key().key
        assert set(refusals(manager, key, 30)) == {"invalid_api_key"}


@pytest.mark.parametrize(
    "options",
    [
        {"max_failures_per_key": -1},
        {"failure_window": 0},
        {"failure_window": float("nan")},
        {"max_concurrent_hashes": 0},
        {"max_tracked_key_ids": 0},
        {"suspicious_failures": -1},
        {"suspicious_window": 0},
    ],
)
def test_bad_settings_are_configuration_errors(url: str, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        apikeys.create_key_manager(url, **options)
    with pytest.raises(ConfigurationError):
        SQLAlchemyKeyManager(url, **options)


def test_attempts_queued_behind_the_cap_recheck_the_limit(url: str) -> None:
    """Racing wrong secrets for one id hash at most max_failures + cap times."""
    slow = CountingHasher(time_cost=2, memory_cost=8192)
    manager = SQLAlchemyKeyManager(
        url, password_hasher=slow, max_failures_per_key=3, max_concurrent_hashes=1
    )
    new = manager.create_api_key("u1", "k")
    slow.reset()
    barrier = threading.Barrier(12)
    codes: list[str] = []

    def attack() -> None:
        barrier.wait()
        try:
            manager.validate_api_key(wrong_secret_for(new.secret))
        except apikeys.APIKeysError as exc:
            codes.append(exc.code)

    threads = [threading.Thread(target=attack) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(codes) == 12
    assert 3 <= slow.calls <= 3 + 1
    assert codes.count("invalid_api_key") == slow.calls
    assert codes.count("rate_limited") == 12 - slow.calls
    manager.close()


async def test_async_manager_is_limited_the_same_way(url: str) -> None:
    async with AsyncSQLAlchemyKeyManager(url, max_failures_per_key=2) as manager:
        new = await manager.create_api_key("u1", "k")
        codes = []
        for _ in range(4):
            with pytest.raises(apikeys.APIKeysError) as caught:
                await manager.validate_api_key(wrong_secret_for(new.secret))
            codes.append(caught.value.code)
        assert codes == ["invalid_api_key"] * 2 + ["rate_limited"] * 2


# --- a flood cannot starve valid requests ------------------------------------------

FLOOD_SECONDS = 1.5


class Latencies:
    """Outcomes and latencies of one kind of request, from any thread."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def add(self, started: float, error: str | None = None) -> None:
        with self.lock:
            self.seconds.append(time.perf_counter() - started)
            if error is not None:
                self.errors.append(error)


def flood_key() -> str:
    # Mostly fresh unknown ids, which the per-id limit cannot stop: only the cap bounds them.
    return apikeys.generate_key().key


def test_valid_requests_are_served_during_a_flood_of_wrong_secrets(url: str) -> None:
    hasher = CountingHasher(time_cost=2, memory_cost=4096)
    manager = SQLAlchemyKeyManager(url, password_hasher=hasher, max_concurrent_hashes=2)
    hot, cold = manager.create_api_key("u1", "hot"), manager.create_api_key("u1", "cold")
    manager.validate_api_key(hot.secret)
    stop = threading.Event()
    hits, misses, flood = Latencies(), Latencies(), Latencies()
    successes_for_flood: list[VerifiedKey] = []

    def attacker() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                successes_for_flood.append(manager.validate_api_key(flood_key()))
            except apikeys.APIKeysError as exc:
                flood.add(started, exc.code)

    def hit_client() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            assert manager.validate_api_key(hot.secret).key_id == hot.id
            hits.add(started)
            time.sleep(0.001)

    def miss_client() -> None:
        while not stop.is_set():
            manager.cache.invalidate(cold.id)
            started = time.perf_counter()
            try:
                manager.validate_api_key(cold.secret)
            except apikeys.APIKeysError as exc:
                misses.add(started, exc.code)
            else:
                misses.add(started)

    threads = [threading.Thread(target=attacker) for _ in range(6)]
    threads += [threading.Thread(target=hit_client), threading.Thread(target=miss_client)]
    for thread in threads:
        thread.start()
    time.sleep(FLOOD_SECONDS)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    manager.close()

    assert successes_for_flood == []
    assert set(flood.errors) == {"invalid_api_key"}
    assert len(flood.seconds) > 20  # the flood really ran
    assert hasher.peak <= 2  # never more hashing than the cap
    assert len(hits.seconds) > 100
    assert statistics.median(hits.seconds) < 0.01
    assert misses.errors == []  # every valid miss was served, none refused as busy
    assert len(misses.seconds) >= 5
    assert max(misses.seconds) < 2.0


async def test_valid_tasks_are_served_during_a_flood_of_wrong_secrets(url: str) -> None:
    hasher = CountingHasher(time_cost=2, memory_cost=4096)
    manager = AsyncSQLAlchemyKeyManager(url, password_hasher=hasher, max_concurrent_hashes=2)
    hot, cold = (
        await manager.create_api_key("u1", "hot"),
        await manager.create_api_key("u1", "cold"),
    )
    await manager.validate_api_key(hot.secret)
    stop = asyncio.Event()
    hits, misses, flood = Latencies(), Latencies(), Latencies()
    successes_for_flood: list[VerifiedKey] = []

    async def attacker() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                successes_for_flood.append(await manager.validate_api_key(flood_key()))
            except apikeys.APIKeysError as exc:
                flood.add(started, exc.code)

    async def hit_client() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            assert (await manager.validate_api_key(hot.secret)).key_id == hot.id
            hits.add(started)
            await asyncio.sleep(0.001)

    async def miss_client() -> None:
        while not stop.is_set():
            manager.cache.invalidate(cold.id)
            started = time.perf_counter()
            try:
                await manager.validate_api_key(cold.secret)
            except apikeys.APIKeysError as exc:
                misses.add(started, exc.code)
            else:
                misses.add(started)

    tasks = [asyncio.create_task(attacker()) for _ in range(12)]
    tasks += [asyncio.create_task(hit_client()), asyncio.create_task(miss_client())]
    await asyncio.sleep(FLOOD_SECONDS)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    await manager.close()

    assert successes_for_flood == []
    assert set(flood.errors) == {"invalid_api_key"}
    assert len(flood.seconds) > 20
    assert hasher.peak <= 2
    assert len(hits.seconds) > 100
    assert statistics.median(hits.seconds) < 0.01  # the loop was never blocked
    assert misses.errors == []
    assert len(misses.seconds) >= 5
    assert max(misses.seconds) < 2.0


def test_a_saturated_cap_refuses_instead_of_queueing_forever(url: str) -> None:
    manager = SQLAlchemyKeyManager(url, max_concurrent_hashes=1, timeout=0.1)
    new = manager.create_api_key("u1", "k")
    with manager.hash_cap.hold():  # someone else hashes for longer than timeout
        with pytest.raises(BackendUnavailableError) as caught:
            manager.validate_api_key(new.secret)
        with pytest.raises(BackendUnavailableError):
            manager.create_api_key("u1", "k2")
    assert caught.value.status_code == 503
    assert manager.validate_api_key(new.secret).key_id == new.id
    manager.close()
