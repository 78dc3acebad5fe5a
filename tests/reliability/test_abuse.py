"""Abuse controls on the SQLAlchemy backend: the work an attacker can force is bounded."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
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
    VerifiedKey,
)
from apikeys._cache import VerificationCache
from apikeys.backends.sqlalchemy import AsyncSQLAlchemyKeyManager, SQLAlchemyKeyManager
from tests.integrations.servers import running_server, uvicorn_command, waitress_command
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
    with SQLAlchemyKeyManager(url, password_hasher=hasher) as made:
        yield made


def refusals(manager: SQLAlchemyKeyManager, key: str, attempts: int) -> list[str]:
    """The error code of each of ``attempts`` validations of ``key``."""
    codes = []
    for _ in range(attempts):
        with pytest.raises(apikeys.APIKeysError) as caught:
            manager.validate_api_key(key)
        codes.append(caught.value.code)
    return codes


# --- a key id is public: nobody can lock its holder out --------------------------------

# More forged keys than the per-key-id limit this library once had (100 a minute).
FORGED = 150


def test_forged_keys_for_a_known_id_never_lock_out_its_holder(
    manager: SQLAlchemyKeyManager, hasher: CountingHasher
) -> None:
    manager.cache.ttl = 0  # every validation of the holder reads and hashes
    victim = manager.create_api_key("u1", "k")
    hasher.reset()
    assert (
        refusals(manager, wrong_secret_for(victim.secret), FORGED) == ["invalid_api_key"] * FORGED
    )
    assert hasher.calls == FORGED  # each forged key costs one hash: bounded work, no refusal
    assert manager.validate_api_key(victim.secret).id == victim.id


def test_known_and_unknown_ids_are_refused_alike(manager: SQLAlchemyKeyManager) -> None:
    known = manager.create_api_key("u1", "k")
    for_known = refusals(manager, wrong_secret_for(known.secret), 20)
    for_unknown = refusals(manager, apikeys.generate_key().key, 20)
    assert for_known == for_unknown == ["invalid_api_key"] * 20


async def test_forged_keys_never_lock_out_the_holder_of_the_async_manager(url: str) -> None:
    async with AsyncSQLAlchemyKeyManager(url, cache_ttl=0) as manager:
        victim = await manager.create_api_key("u1", "k")
        for _ in range(FORGED):
            with pytest.raises(InvalidKeyError):
                await manager.validate_api_key(wrong_secret_for(victim.secret))
        assert (await manager.validate_api_key(victim.secret)).id == victim.id


@pytest.mark.parametrize("name", ["max_failures_per_key", "failure_window"])
@pytest.mark.parametrize("how", ["factory", "manager", "async-manager", "environment"])
def test_the_removed_per_key_id_settings_are_refused_saying_why(
    url: str, name: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    build: dict[str, Callable[[], object]] = {
        "factory": lambda: apikeys.create_key_manager(url, **{name: 3}),
        "manager": lambda: SQLAlchemyKeyManager(url, **{name: 3}),
        "async-manager": lambda: AsyncSQLAlchemyKeyManager(url, **{name: 3}),
        "environment": lambda: apikeys.create_async_key_manager(url),
    }
    if how == "environment":
        monkeypatch.setenv(f"APIKEYS_{name.upper()}", "3")
    with pytest.raises(ConfigurationError) as caught:
        build[how]()
    assert "was removed" in caught.value.message
    assert "lock its holder out" in caught.value.message
    assert "client_max_failures" in caught.value.message


def test_another_unknown_option_is_a_type_error(url: str) -> None:
    with pytest.raises(TypeError, match="unexpected options: max_failure"):
        SQLAlchemyKeyManager(url, max_failure=3)


def test_garbage_is_refused_without_a_hash(
    manager: SQLAlchemyKeyManager, hasher: CountingHasher
) -> None:
    hasher.reset()
    assert refusals(manager, "apk_garbage", 20) == ["invalid_api_key"] * 20
    assert hasher.calls == 0


def test_arbitrary_text_is_refused() -> None:
    manager = SQLAlchemyKeyManager("sqlite:///:memory:")

    @settings(max_examples=300, deadline=None)
    @given(
        text=st.one_of(
            st.text(max_size=120),
            # Well-formed keys of unknown ids (right checksum), ids drawn by hypothesis.
            st.from_regex(r"[0-9A-Za-z]{12}", fullmatch=True).map(
                lambda lookup_id: apikeys.generate_key(id=lookup_id).key
            ),
        )
    )
    def check(text: str) -> None:
        with pytest.raises(InvalidKeyError) as caught:
            manager.validate_api_key(text)
        assert type(caught.value) is InvalidKeyError

    check()
    manager.close()


def test_right_secret_failures_do_not_count(manager: SQLAlchemyKeyManager) -> None:
    new = manager.create_api_key("u1", "k")
    manager.revoke_api_key(new.id)
    assert refusals(manager, new.secret, 6) == ["revoked_api_key"] * 6


@pytest.mark.parametrize(
    "options",
    [
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


# --- a flood of forged keys for one id, while its holder keeps calling -----------------

FORGERS = 4
HOLDER_CALLS = 40


class Flood:
    """Forged keys for one id sent from threads or tasks, with their outcomes counted."""

    def __init__(
        self, victim_secret: str, *, on_running: Callable[[], object] | None = None
    ) -> None:
        self.victim_secret = victim_secret
        self.on_running = on_running
        self.stop = threading.Event()
        self.outcomes: dict[str, int] = {}
        self.lock = threading.Lock()
        self.running = threading.Event()  # set once the flood is past the old limit

    def key(self) -> str:
        return wrong_secret_for(self.victim_secret)

    def count(self, outcome: str) -> None:
        with self.lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            if sum(self.outcomes.values()) >= FORGED and not self.running.is_set():
                self.running.set()
                if self.on_running is not None:
                    self.on_running()


@pytest.mark.parametrize("cache_ttl", [10.0, 0.0], ids=["cache-on", "cache-off"])
def test_a_flood_of_forged_keys_refuses_none_of_the_holders_requests(
    url: str, cache_ttl: float
) -> None:
    manager = SQLAlchemyKeyManager(url, cache_ttl=cache_ttl)
    clock = FakeClock()
    manager.cache = VerificationCache(cache_ttl, clock=clock)
    victim = manager.create_api_key("u1", "victim")
    flood = Flood(victim.secret)

    def forger() -> None:
        while not flood.stop.is_set():
            try:
                manager.validate_api_key(flood.key())
                flood.count("accepted")
            except apikeys.APIKeysError as exc:
                flood.count(exc.code)

    forgers = [threading.Thread(target=forger) for _ in range(FORGERS)]
    for thread in forgers:
        thread.start()
    refused: list[str] = []
    try:
        assert flood.running.wait(timeout=60)
        for call in range(HOLDER_CALLS):
            if call % 2 == 0:
                clock.advance(cache_ttl)  # the holder's cache entry has expired
            try:
                assert manager.validate_api_key(victim.secret).id == victim.id
            except apikeys.APIKeysError as exc:
                refused.append(exc.code)
    finally:
        flood.stop.set()
        for thread in forgers:
            thread.join(timeout=30)
        manager.close()
    assert refused == [], f"{len(refused)} of {HOLDER_CALLS} refused: {sorted(set(refused))}"
    assert set(flood.outcomes) == {"invalid_api_key"}
    assert sum(flood.outcomes.values()) >= FORGED


@pytest.mark.parametrize("cache_ttl", [10.0, 0.0], ids=["cache-on", "cache-off"])
async def test_a_flood_of_forged_keys_refuses_none_of_the_holders_requests_async(
    url: str, cache_ttl: float
) -> None:
    manager = AsyncSQLAlchemyKeyManager(url, cache_ttl=cache_ttl)
    clock = FakeClock()
    manager.cache = VerificationCache(cache_ttl, clock=clock)
    victim = await manager.create_api_key("u1", "victim")
    ready = asyncio.Event()
    flood = Flood(victim.secret, on_running=ready.set)  # called on the loop: the forgers'

    async def forger() -> None:
        while not flood.stop.is_set():
            try:
                await manager.validate_api_key(flood.key())
                flood.count("accepted")
            except apikeys.APIKeysError as exc:
                flood.count(exc.code)

    forgers = [asyncio.create_task(forger()) for _ in range(FORGERS * 2)]
    refused: list[str] = []
    try:
        await asyncio.wait_for(ready.wait(), timeout=60)
        for call in range(HOLDER_CALLS):
            if call % 2 == 0:
                clock.advance(cache_ttl)
            try:
                assert (await manager.validate_api_key(victim.secret)).id == victim.id
            except apikeys.APIKeysError as exc:
                refused.append(exc.code)
    finally:
        flood.stop.set()
        await asyncio.wait_for(asyncio.gather(*forgers), timeout=30)
        await manager.close()
    assert refused == [], f"{len(refused)} of {HOLDER_CALLS} refused: {sorted(set(refused))}"
    assert set(flood.outcomes) == {"invalid_api_key"}


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
            assert manager.validate_api_key(hot.secret).id == hot.id
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
            assert (await manager.validate_api_key(hot.secret)).id == hot.id
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
    assert manager.validate_api_key(new.secret).id == new.id
    manager.close()


# --- the same flood over HTTP, against real servers -------------------------------------

HTTP_FORGERS = 8
HTTP_APPS = [
    pytest.param(uvicorn_command, "examples.fastapi_app:app", "/protected",
                 marks=pytest.mark.fastapi, id="fastapi-uvicorn"),
    pytest.param(waitress_command, "examples.flask_app:app", "/protected",
                 marks=pytest.mark.flask, id="flask-waitress"),
    pytest.param(uvicorn_command, "tests.integrations.django_env_site:application",
                 "/async/whoami", marks=pytest.mark.django, id="django-uvicorn"),
]  # fmt: skip


@pytest.mark.e2e
@pytest.mark.parametrize(("command_for", "app", "route"), HTTP_APPS)
@pytest.mark.parametrize(
    "cache_ttl",
    [
        pytest.param("0", id="cache-off"),
        # Cache on, with entries that expire between the holder's requests: each of them is
        # verified afresh in the middle of the flood, as once a real entry expires.
        pytest.param("0.005", id="cache-on-expiring"),
    ],
)
def test_a_flood_of_forged_keys_over_http_refuses_none_of_the_holders_requests(
    url: str,
    command_for: Callable[[str, int], list[str]],
    app: str,
    route: str,
    cache_ttl: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with SQLAlchemyKeyManager(url) as seeder:
        victim = seeder.create_api_key("u1", "victim")
    monkeypatch.setenv("APIKEYS_CACHE_TTL", cache_ttl)
    flood = Flood(victim.secret)

    def forger(base_url: str) -> None:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            while not flood.stop.is_set():
                reply = http.get(route, headers={"X-API-Key": flood.key()})
                flood.count(f"{reply.status_code} {reply.json().get('code')}")

    refused: list[str] = []
    with (
        running_server(command_for, app, url) as base_url,
        ThreadPoolExecutor(HTTP_FORGERS) as pool,
        httpx.Client(base_url=base_url, timeout=30) as http,
    ):
        forgers = [pool.submit(forger, base_url) for _ in range(HTTP_FORGERS)]
        try:
            assert flood.running.wait(timeout=120)
            for _ in range(HOLDER_CALLS):
                reply = http.get(route, headers={"X-API-Key": victim.secret})
                if reply.status_code != 200:
                    refused.append(f"{reply.status_code} {reply.json().get('code')}")
        finally:
            flood.stop.set()
            for future in forgers:
                future.result(timeout=60)
    assert refused == [], f"{len(refused)} of {HOLDER_CALLS} refused: {sorted(set(refused))}"
    assert set(flood.outcomes) == {"403 invalid_api_key"}
    assert sum(flood.outcomes.values()) >= FORGED
