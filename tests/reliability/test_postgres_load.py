"""Many threads and tasks creating, validating, rotating and revoking at once, on PostgreSQL.

Three managers share one database: ``local`` (threads) is the process that
revokes; ``remote`` (threads) and ``async`` (tasks on an event loop) stand
for other processes, each with its own verification cache. Checked after a
bounded run:

- once ``revoke_api_key`` (or a rotation without grace) returns, no
  validation *started* later through the same manager accepts the key;
- through another manager, none started later than ``cache_ttl`` after the
  revocation plus the length of the validation that filled its cache entry
  (the documented bound, see ``docs/security.md``);
- every key whose creation returned is stored, exactly once, in the state
  its history implies.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa

import apikeys
from apikeys import NewAPIKey
from apikeys.backends.sqlalchemy import (
    AsyncSQLAlchemyKeyManager,
    SQLAlchemyKeyManager,
    api_keys_table,
)
from tests.eventually import WAIT, eventually
from tests.reliability.load import Journal

pytestmark = [pytest.mark.sqlalchemy, pytest.mark.postgres, pytest.mark.slow]

RUN_SECONDS = 2.5
CACHE_TTL = 0.5
LOCAL_THREADS, REMOTE_THREADS, ASYNC_TASKS = 4, 2, 6
EXPECTED_ERRORS = {
    "validate": {"revoked_api_key"},  # a key revoked or rotated by another worker
    "rotate": {"invalid_input"},  # "the key was revoked or rotated meanwhile"
}


@dataclass
class Registry:
    """Every key whose creation returned, and when each revocation returned."""

    keys: dict[str, NewAPIKey] = field(default_factory=dict)
    revoked: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> (by, at)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, new: NewAPIKey) -> None:
        with self.lock:
            self.keys[new.id] = new

    def revoke_returned(self, key_id: str, worker: str) -> None:
        at = time.monotonic()
        with self.lock:
            self.revoked.setdefault(key_id, (worker.rstrip("0123456789"), at))

    def pick(self, rng: random.Random, *, live: bool) -> NewAPIKey | None:
        with self.lock:
            ids = [i for i in self.keys if not live or i not in self.revoked]
            return self.keys[rng.choice(ids)] if ids else None


def choose(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.6:
        return "validate"
    if roll < 0.75:
        return "create"
    if roll < 0.88:
        return "rotate"
    return "revoke"


def wants_live(operation: str, rng: random.Random) -> bool:
    # Validations mostly target live keys (so the revocation races are many),
    # sometimes any key; the other operations need a live one.
    return operation != "validate" or rng.random() < 0.7


class Run:
    def __init__(self, user: str) -> None:
        self.user = user
        self.registry = Registry()
        self.journal = Journal()
        self.stop = threading.Event()

    def step_sync(self, manager: SQLAlchemyKeyManager, rng: random.Random, worker: str) -> None:
        operation = choose(rng)
        key = self.registry.pick(rng, live=wants_live(operation, rng))
        if key is None or operation == "create":
            with self.journal.record("create", worker):
                self.registry.add(manager.create_api_key(self.user, worker, ["read"]))
            return
        with self.journal.record(operation, worker, key.id):
            if operation == "validate":
                manager.validate_api_key(key.secret)
            elif operation == "rotate":
                self.registry.add(manager.rotate_api_key(key.id))
                self.registry.revoke_returned(key.id, worker)
            else:
                manager.revoke_api_key(key.id)
                self.registry.revoke_returned(key.id, worker)

    async def step_async(
        self, manager: AsyncSQLAlchemyKeyManager, rng: random.Random, worker: str
    ) -> None:
        operation = choose(rng)
        key = self.registry.pick(rng, live=wants_live(operation, rng))
        if key is None or operation == "create":
            with self.journal.record("create", worker):
                self.registry.add(await manager.create_api_key(self.user, worker, ["read"]))
            return
        with self.journal.record(operation, worker, key.id):
            if operation == "validate":
                await manager.validate_api_key(key.secret)
            elif operation == "rotate":
                self.registry.add(await manager.rotate_api_key(key.id))
                self.registry.revoke_returned(key.id, worker)
            else:
                await manager.revoke_api_key(key.id)
                self.registry.revoke_returned(key.id, worker)


def test_concurrent_lifecycle_on_postgres(postgres_url: str) -> None:
    run = Run(f"load-{time.time_ns()}")
    options = {"cache_ttl": CACHE_TTL, "timeout": 10.0}
    local = SQLAlchemyKeyManager(postgres_url, **options)
    remote = SQLAlchemyKeyManager(postgres_url, **options)
    for index in range(6):
        run.registry.add(local.create_api_key(run.user, f"seed{index}", ["read"]))

    def thread_worker(manager: SQLAlchemyKeyManager, worker: str, seed: int) -> None:
        rng = random.Random(seed)
        while not run.stop.is_set():
            run.step_sync(manager, rng, worker)

    async def async_side() -> None:
        async with AsyncSQLAlchemyKeyManager(postgres_url, **options) as manager:

            async def task(index: int) -> None:
                rng = random.Random(100 + index)
                while not run.stop.is_set():
                    await run.step_async(manager, rng, f"async{index}")

            await asyncio.gather(*(task(index) for index in range(ASYNC_TASKS)))

    threads = [
        threading.Thread(target=thread_worker, args=(local, f"local{i}", i))
        for i in range(LOCAL_THREADS)
    ]
    threads += [
        threading.Thread(target=thread_worker, args=(remote, f"remote{i}", 50 + i))
        for i in range(REMOTE_THREADS)
    ]
    threads.append(threading.Thread(target=asyncio.run, args=(async_side(),)))
    for thread in threads:
        thread.start()
    time.sleep(RUN_SECONDS)
    run.stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    journal, registry = run.journal, run.registry

    for operation in ("create", "validate", "rotate", "revoke"):
        outcomes = journal.select(operation)
        assert len(journal.select(operation, ok=True)) >= 5, f"too few {operation}s to judge"
        unexpected = {o.error for o in outcomes if not o.ok} - EXPECTED_ERRORS.get(operation, set())
        assert not unexpected, (operation, unexpected)

    # The revocation bound, per manager.
    longest = {
        kind: max(
            (o.seconds for o in journal.select("validate", ok=True) if o.worker.startswith(kind)),
            default=0.0,
        )
        for kind in ("local", "remote", "async")
    }
    late: list[str] = []
    for outcome in journal.select("validate", ok=True):
        assert outcome.key_id is not None
        revocation = registry.revoked.get(outcome.key_id)
        if revocation is None:
            continue
        by, at = revocation
        kind = outcome.worker.rstrip("0123456789")
        bound = at if kind == by else at + CACHE_TTL + longest[kind]
        if outcome.started > bound:
            late.append(f"{outcome.worker} accepted {outcome.key_id} {outcome.started - at:.3f}s")
    assert late == []

    # Every key whose creation returned is stored exactly once, revoked as recorded.
    with local.engine.connect() as connection:
        rows = connection.execute(
            sa.select(api_keys_table.c.id, api_keys_table.c.revoked_at).where(
                api_keys_table.c.user_id == run.user
            )
        ).all()
    stored = Counter(row.id for row in rows)
    assert set(stored) == set(registry.keys)
    assert max(stored.values()) == 1
    revoked_in_db = {row.id for row in rows if row.revoked_at is not None}
    assert revoked_in_db == set(registry.revoked)

    # Within the bound, every manager refuses every revoked key and accepts the others.
    def every_revoked_key_refused() -> bool:
        for key_id in registry.revoked:
            for manager in (local, remote):
                try:
                    manager.validate_api_key(registry.keys[key_id].secret)
                except apikeys.RevokedKeyError:
                    continue
                return False
        return True

    eventually(every_revoked_key_refused, timeout=CACHE_TTL + WAIT)
    for key_id, new in registry.keys.items():
        for manager in (local, remote):
            if key_id in registry.revoked:
                with pytest.raises(apikeys.RevokedKeyError):
                    manager.validate_api_key(new.secret)
            else:
                assert manager.validate_api_key(new.secret).id == key_id
    local.close()
    remote.close()
    counts = Counter((o.operation, o.ok) for o in journal.outcomes)
    print(f"\nconcurrent run: {dict(counts)}; longest validation {longest}")
