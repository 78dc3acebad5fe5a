"""keyshield as a benchmark subject: its SQLAlchemy repository, default argon2 hasher, two services.

keyshield is async only: its repository takes an ``AsyncSession`` (here on
``sqlite+aiosqlite``, a SQLite file), and every call is driven to completion
on one event loop owned by the subject. Validation goes through
``ApiKeyService.verify_key`` (no cache) or ``CachedApiKeyService.verify_key``
(its ``aiocache`` in-memory cache keyed by SHA-256 of the full key), both with
``min_delay=max_delay=0``: **the random response delay (0.1 to 0.3 s by
default) is switched off** so the figures show the work, not a sleep. A zero
delay still awaits ``asyncio.sleep(0)`` once per call, as the peer does.

The hasher is the peer's ``Argon2ApiKeyHasher`` with argon2-cffi's default
``PasswordHasher()`` (time_cost=3, memory_cost=64 MiB, parallelism=4) and an
explicit pepper (the peer warns about its default one). Every successful
verification writes ``last_used_at`` and the subject commits it, as the peer's
web integrations do per request.

Seeding: only the keys the workloads present are hashed from known secrets
(argon2 at these parameters takes about half a second a key here). Every other
row's ``key_hash`` is a real hash with its salt replaced by random bytes: the
peer's ``key_hash`` column is UNIQUE, so hashes cannot simply be reused. No
workload presents a filler's key.
"""

from __future__ import annotations

import asyncio
import base64
import random
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.apikeys_sqlite import QueryCounter, SeedReport, garbage_keys
from benchmarks.peers import ALPHABET, typo
from benchmarks.workloads import KeySets

SUBJECT_NAME = "keyshield"
CACHED_SUBJECT_NAME = "keyshield-cached"
CREATED_NAME = "bench-create"
_SECRET_LENGTH = 64  # the peer's key_secret_factory default
_CHUNK = 10_000


@dataclass
class KeyshieldSubject:
    """One SQLite file behind keyshield's repository, with the plain and the cached service.

    :meth:`validate` uses the cached service; :meth:`validate_uncached` the plain one.
    """

    size: int
    path: Path
    keys: KeySets
    seed_report: SeedReport
    engine: Any
    session: Any
    plain: Any
    cached: Any
    loop: asyncio.AbstractEventLoop
    counter: QueryCounter = field(default_factory=QueryCounter)
    name: str = SUBJECT_NAME
    rejection: type[BaseException] = Exception

    def _verify(self, service: Any, key: str) -> object:
        async def verify() -> object:
            try:
                return await service.verify_key(key)
            finally:
                await self.session.commit()  # the last_used_at write, as a request would

        return self.loop.run_until_complete(verify())

    def validate(self, key: str) -> object:
        """``CachedApiKeyService.verify_key``."""
        return self._verify(self.cached, key)

    def validate_uncached(self, key: str) -> object:
        """``ApiKeyService.verify_key``."""
        return self._verify(self.plain, key)

    def create(self) -> object:
        """``ApiKeyService.create``: a secret, its argon2 hash, one INSERT, committed."""

        async def create() -> object:
            created = await self.plain.create(name=CREATED_NAME)
            await self.session.commit()
            return created

        return self.loop.run_until_complete(create())

    def forget_created(self) -> None:
        """Delete the keys :meth:`create` issued."""
        from keyshield.repositories.sql import ApiKeyModel  # type: ignore[import-not-found, unused-ignore]

        async def forget() -> None:
            await self.session.execute(
                sa.delete(ApiKeyModel).where(ApiKeyModel.name == CREATED_NAME)
            )
            await self.session.commit()

        self.loop.run_until_complete(forget())

    def queries(self) -> int:
        """Statements sent to SQLite so far."""
        return self.counter.count

    def close(self) -> None:
        """Close the session, dispose of the engine and close the loop."""

        async def close() -> None:
            await self.session.close()
            await self.engine.dispose()

        self.loop.run_until_complete(close())
        self.loop.close()


def _refilled_salt(real_hash: str) -> str:
    """``real_hash`` (an argon2 PHC string) with its salt replaced by 16 random bytes."""
    head, _salt, digest = real_hash.rsplit("$", 2)
    salt = base64.b64encode(secrets.token_bytes(16)).decode().rstrip("=")
    return f"{head}${salt}${digest}"


def open_subject(path: Path, size: int, *, real_keys: int, rng: random.Random) -> KeyshieldSubject:
    """Create a SQLite file at ``path`` holding ``size`` keyshield keys and wrap it.

    Args:
        path: The database file to create (it must not exist).
        size: Keys to store.
        real_keys: Keys hashed from known secrets, the ones presented (capped at ``size``).
        rng: Source of filler ids and secrets and of garbage.
    """
    from keyshield.domain.errors import ApiKeyError  # type: ignore[import-not-found, unused-ignore]
    from keyshield.hasher.argon2 import Argon2ApiKeyHasher  # type: ignore[import-not-found, unused-ignore]
    from keyshield.repositories.sql import ApiKeyModel, Base, SqlAlchemyApiKeyRepository  # type: ignore[import-not-found, unused-ignore]
    from keyshield.services.base import ApiKeyService  # type: ignore[import-not-found, unused-ignore]
    from keyshield.services.cached import CachedApiKeyService  # type: ignore[import-not-found, unused-ignore]
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    if path.exists():
        raise FileExistsError(path)
    started = time.perf_counter()
    hasher = Argon2ApiKeyHasher(pepper=secrets.token_urlsafe(24))
    real_count = min(real_keys, size)
    hash_started = time.perf_counter()
    secrets_by_id = {
        uuid.UUID(int=rng.getrandbits(128)).hex[:16]: "".join(rng.choices(ALPHABET, k=64))
        for _ in range(real_count)
    }
    real_hashes = {key_id: hasher.hash(secret) for key_id, secret in secrets_by_id.items()}
    hash_seconds = time.perf_counter() - hash_started
    template = next(iter(real_hashes.values()), None) or hasher.hash("filler")
    seeding_engine = sa.create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(seeding_engine)
    table = ApiKeyModel.__table__
    now = datetime.now(UTC).replace(tzinfo=None)  # SQLite stores it naive
    stored_ids = set(real_hashes)

    # Values as SQLAlchemy's SQLite types store them, inserted with the driver's
    # executemany: building a million parameter dicts through Core takes minutes.
    created = now.strftime("%Y-%m-%d %H:%M:%S.%f")
    columns = [column.name for column in table.columns]
    insert = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    )

    def row(key_id: str, key_hash: str) -> tuple[Any, ...]:
        values = {
            "id": uuid.UUID(int=rng.getrandbits(128)).hex,
            "name": "benchmark key",
            "description": None,
            "is_active": 1,
            "expires_at": None,
            "created_at": created,
            "last_used_at": None,
            "key_id": key_id,
            "key_hash": key_hash,
            "key_secret_first": "xxxx",
            "key_secret_last": "xxxx",
            "scopes": '["read:data"]',
        }
        return tuple(values[name] for name in columns)

    raw = seeding_engine.raw_connection()
    try:
        cursor = raw.cursor()
        rows = [row(key_id, key_hash) for key_id, key_hash in real_hashes.items()]
        while len(stored_ids) < size:
            key_id = uuid.UUID(int=rng.getrandbits(128)).hex[:16]
            if key_id in stored_ids:
                continue
            stored_ids.add(key_id)
            rows.append(row(key_id, _refilled_salt(template)))
            if len(rows) >= _CHUNK:
                cursor.executemany(insert, rows)
                rows = []
        if rows:
            cursor.executemany(insert, rows)
        raw.commit()
    finally:
        raw.close()
    seeding_engine.dispose()

    loop = asyncio.new_event_loop()
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    session = async_sessionmaker(engine, expire_on_commit=False)()
    repository = SqlAlchemyApiKeyRepository(session)
    # The random response delay, off (0.1 to 0.3 s by default).
    plain = ApiKeyService(repo=repository, hasher=hasher, min_delay=0.0, max_delay=0.0)
    cached = CachedApiKeyService(repo=repository, hasher=hasher, min_delay=0.0, max_delay=0.0)

    def full(key_id: str, secret: str) -> str:
        return f"ak_v1-{key_id}-{secret}"

    valid = [full(key_id, secret) for key_id, secret in secrets_by_id.items()]
    unknown: list[str] = []
    while len(unknown) < len(valid):
        key_id = uuid.UUID(int=rng.getrandbits(128)).hex[:16]
        if key_id not in stored_ids:
            unknown.append(full(key_id, "".join(rng.choices(ALPHABET, k=64))))
    keys = KeySets(
        valid=valid,
        wrong_secret=[
            full(key_id, "".join(rng.choices(ALPHABET, k=64))) for key_id in secrets_by_id
        ],
        unknown_id=unknown,
        garbage=garbage_keys(valid, rng, count=max(len(valid), 64)),
        bad_checksum=[typo(key, len(key) - _SECRET_LENGTH, rng) for key in valid],
    )
    subject = KeyshieldSubject(
        size=size,
        path=path,
        keys=keys,
        engine=engine,
        session=session,
        plain=plain,
        cached=cached,
        loop=loop,
        rejection=ApiKeyError,
        seed_report=SeedReport(
            size=size,
            real_keys=real_count,
            filler_hash_pool=1,
            seconds=time.perf_counter() - started,
            hash_seconds=hash_seconds,
        ),
    )
    subject.counter.attach(engine.sync_engine)
    return subject


__all__ = ["CACHED_SUBJECT_NAME", "SUBJECT_NAME", "KeyshieldSubject", "open_subject"]
