"""djangorestframework-api-key as a benchmark subject: ``APIKey.objects.is_valid`` on SQLite.

Django is configured once per process, minimally (contenttypes, auth and the
peer's app; ``USE_TZ``), with one database alias per stored-key count, each a
SQLite file; the peer's own migrations create its table. Validation is the
peer's documented call, ``APIKey.objects.is_valid(key)``, on the alias's
manager: one indexed read by prefix and one SHA-512 check per call, with no
cache (the peer has none). Seeding writes rows with real SHA-512 hashes for
every key (hashing is cheap here) with one ``executemany`` per chunk on the alias's connection.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.apikeys_sqlite import SeedReport, garbage_keys
from benchmarks.peers import ALPHABET, PeerRefusedError, typo
from benchmarks.workloads import KeySets

SUBJECT_NAME = "drf-api-key"
CREATED_NAME = "bench-create"
_PREFIX_LENGTH, _SECRET_LENGTH = 8, 32  # the peer's KeyGenerator defaults
_CHUNK = 10_000


def configure_django(databases: Mapping[str, Path | Mapping[str, Any]]) -> None:
    """Configure Django for this process with one database per alias.

    A path is a SQLite file; a mapping is Django's settings of another database.
    Call once, before any subject is opened; the aliases are the names
    :func:`open_subject` is given.
    """
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        SECRET_KEY=secrets.token_urlsafe(32),
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "rest_framework_api_key",
        ],
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
            **{
                alias: dict(database)
                if isinstance(database, Mapping)
                else {"ENGINE": "django.db.backends.sqlite3", "NAME": str(database)}
                for alias, database in databases.items()
            },
        },
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()


@dataclass
class DRFAPIKeySubject:
    """The peer's manager bound to one database alias."""

    size: int
    alias: str
    keys: KeySets
    seed_report: SeedReport
    manager: Any
    query_count: list[int] = field(default_factory=lambda: [0])
    name: str = SUBJECT_NAME
    rejection: type[BaseException] = PeerRefusedError

    def validate(self, key: str) -> object:
        """``APIKey.objects.is_valid(key)``; a ``False`` answer raises :class:`PeerRefusedError`."""
        if not self.manager.is_valid(key):
            raise PeerRefusedError
        return True

    def validate_uncached(self, key: str) -> object:
        """The same call: the peer has no cache."""
        return self.validate(key)

    def create(self) -> object:
        """The peer's ``create_key`` on this alias: a random key, its SHA-512 hash, one INSERT.

        ``create_key`` saves through the default database whatever manager it is
        called on, so this is its two lines with ``save(using=alias)``.
        """
        api_key = self.manager.model(name=CREATED_NAME)
        key = self.manager.assign_key(api_key)
        api_key.save(using=self.alias)
        return key

    def forget_created(self) -> None:
        """Delete the keys :meth:`create` issued."""
        self.manager.filter(name=CREATED_NAME).delete()

    def queries(self) -> int:
        """Statements Django sent to this alias's SQLite connection."""
        return self.query_count[0]

    def close(self) -> None:
        """Close this alias's connection."""
        from django.db import connections

        connections[self.alias].close()


def _random(rng: random.Random, length: int) -> str:
    return "".join(rng.choices(ALPHABET, k=length))


def _hashed(key: str) -> str:
    # What the peer's Sha512ApiKeyHasher stores (make_password with it).
    return "sha512$$" + hashlib.sha512(key.encode()).hexdigest()


def open_subject(alias: str, size: int, *, real_keys: int, rng: random.Random) -> DRFAPIKeySubject:
    """Migrate the alias's database and store ``size`` keys in it.

    Args:
        alias: A database alias given to :func:`configure_django`.
        size: Keys to store.
        real_keys: How many stored keys the workloads present (capped at ``size``).
        rng: Source of the keys' prefixes and secrets (a benchmark, not a deployment).
    """
    from django.core.management import call_command
    from django.db import connections, transaction
    from rest_framework_api_key.models import APIKey  # type: ignore[import-not-found, unused-ignore]

    started = time.perf_counter()
    call_command("migrate", "rest_framework_api_key", database=alias, verbosity=0)
    manager = APIKey.objects.db_manager(alias)
    connection = connections[alias]
    table = APIKey._meta.db_table
    # Rows go in through the alias's connection with one executemany per chunk:
    # bulk_create builds a model instance per row and takes minutes for a million.
    insert = (
        f"INSERT INTO {table} (id, prefix, hashed_key, created, name, revoked, expiry_date)"
        " VALUES (%s, %s, %s, %s, %s, %s, NULL)"
    )
    created = connection.ops.adapt_datetimefield_value(datetime.now(UTC))
    prefixes: set[str] = set()
    presented: list[tuple[str, str]] = []
    rows: list[tuple[Any, ...]] = []
    hash_seconds = 0.0
    with transaction.atomic(using=alias), connection.cursor() as cursor:
        while len(prefixes) < size:
            prefix = _random(rng, _PREFIX_LENGTH)
            if prefix in prefixes:
                continue
            prefixes.add(prefix)
            key = f"{prefix}.{_random(rng, _SECRET_LENGTH)}"
            hash_started = time.perf_counter()
            hashed = _hashed(key)
            hash_seconds += time.perf_counter() - hash_started
            if len(presented) < real_keys:
                presented.append((prefix, key))
            rows.append((f"{prefix}.{hashed}", prefix, hashed, created, "benchmark key", False))
            if len(rows) >= _CHUNK:
                cursor.executemany(insert, rows)
                rows = []
        if rows:
            cursor.executemany(insert, rows)
    valid = [key for _, key in presented]
    unknown: list[str] = []
    while len(unknown) < len(valid):
        prefix = _random(rng, _PREFIX_LENGTH)
        if prefix not in prefixes:
            unknown.append(f"{prefix}.{_random(rng, _SECRET_LENGTH)}")
    keys = KeySets(
        valid=valid,
        wrong_secret=[f"{prefix}.{_random(rng, _SECRET_LENGTH)}" for prefix, _ in presented],
        unknown_id=unknown,
        garbage=garbage_keys(valid, rng, count=max(len(valid), 64)),
        bad_checksum=[typo(key, _PREFIX_LENGTH + 1, rng) for key in valid],
    )
    subject = DRFAPIKeySubject(
        size=size,
        alias=alias,
        keys=keys,
        manager=manager,
        seed_report=SeedReport(
            size=size,
            real_keys=len(valid),
            filler_hash_pool=0,
            seconds=time.perf_counter() - started,
            hash_seconds=hash_seconds,
        ),
    )
    connections[alias].execute_wrappers.append(_counting(subject.query_count))
    return subject


def _counting(count: list[int]) -> Callable[..., Any]:
    def wrapper(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        count[0] += 1
        return execute(sql, params, many, context)

    return wrapper


__all__ = ["SUBJECT_NAME", "DRFAPIKeySubject", "configure_django", "open_subject"]
