"""The apikeys SQLAlchemy backend on a SQLite file, seeded fast, as a benchmark subject.

Seeding hashes only the keys the workloads present (``real_keys`` of them,
a few hundred) with the manager's own argon2id hasher. Every other row is a
filler: a random id whose ``secret_hash`` is a real hash of some other random
key, taken from a small pool and reused. No workload ever presents a filler's
key, so a reused hash changes nothing measured, while the table, its index
and the database file have their full size. The rows go in through the
backend's exposed ``api_keys_table`` in one bulk transaction.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher

from apikeys import InvalidKeyError, generate_key, parse_key
from apikeys._keyformat import BASE62_ALPHABET, MAX_KEY_LENGTH
from apikeys.backends.sqlalchemy import SQLAlchemyKeyManager, api_keys_table, metadata
from benchmarks.harness import Case
from benchmarks.workloads import KeySets

SUBJECT_NAME = "apikeys-sqlalchemy"
CREATED_BY = "bench-create"
"""Owner of the keys the creation workload issues; they are deleted between batches."""

_INSERT_CHUNK = 10_000  # rows per executemany: bounded memory, few round trips
_LAST_USED_INTERVAL = 3600.0
_COMPONENT_KEYS = 64  # hashed again for argon2_verify: a few suffice, the cost is per call


@dataclass
class QueryCounter:
    """Counts the statements an engine sends to the database driver."""

    count: int = 0

    def attach(self, engine: sa.Engine) -> None:
        """Listen on ``engine`` from now on."""
        sa.event.listen(engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, *_args: Any) -> None:
        self.count += 1


@dataclass
class SeedReport:
    """How a database was filled: reported next to the results."""

    size: int
    real_keys: int
    filler_hash_pool: int
    seconds: float
    hash_seconds: float

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return dict(self.__dict__)


@dataclass
class ApikeysSQLiteSubject:
    """Two managers (verification cache on and off) sharing one engine on one SQLite file.

    Build it with :func:`open_subject`; :meth:`close` disposes of the engine.
    """

    size: int
    path: Path
    manager: SQLAlchemyKeyManager
    uncached: SQLAlchemyKeyManager
    keys: KeySets
    seed_report: SeedReport
    counter: QueryCounter = field(default_factory=QueryCounter)
    name: str = SUBJECT_NAME
    rejection: type[BaseException] = InvalidKeyError
    _created: int = 0

    def validate(self, key: str) -> object:
        """Validate with the default manager (cache on)."""
        return self.manager.validate_api_key(key)

    def validate_uncached(self, key: str) -> object:
        """Validate with the cache-less manager."""
        return self.uncached.validate_api_key(key)

    def create(self) -> object:
        """Issue one key through the public API."""
        # One owner per key: a create pays the count of the owner's active keys as
        # deployed, and no owner reaches max_active_keys_per_owner.
        self._created += 1
        owner = f"{CREATED_BY}-{self._created}"
        return self.manager.create_api_key(owner, "benchmark key", ["read:data"])

    def forget_created(self) -> None:
        """Delete the keys the creation workload issued."""
        with self.manager.engine.begin() as connection:
            connection.execute(
                sa.delete(api_keys_table).where(
                    api_keys_table.c.user_id.startswith(f"{CREATED_BY}-", autoescape=True)
                )
            )

    def queries(self) -> int:
        """Statements sent to SQLite so far, by either manager."""
        return self.counter.count

    def close(self) -> None:
        """Write both managers' noted uses, then dispose of the engine."""
        self.uncached.close()
        self.manager.close()


def open_subject(
    path: Path,
    size: int,
    *,
    real_keys: int,
    filler_hash_pool: int,
    rng: random.Random,
    password_hasher: PasswordHasher | None = None,
) -> ApikeysSQLiteSubject:
    """Create a SQLite file at ``path`` holding ``size`` keys and wrap it as a subject.

    Args:
        path: The database file to create (it must not exist).
        size: Keys to store.
        real_keys: How many of them get a real hash of a known secret; the
            workloads present these. Capped at ``size``.
        filler_hash_pool: Distinct real hashes reused for the other rows.
        rng: Source of filler ids and garbage (not of any secret).
        password_hasher: argon2 parameters other than the backend's defaults.
    """
    if path.exists():
        raise FileExistsError(path)
    started = time.perf_counter()
    # Steady-state figures: a last_used_at write happens once per key per
    # interval; an hour keeps it out of the timed batches (the warm-up pays it).
    options: dict[str, Any] = {"last_used_interval": _LAST_USED_INTERVAL}
    if password_hasher is not None:
        options["password_hasher"] = password_hasher
    manager = SQLAlchemyKeyManager(f"sqlite:///{path}", **options)
    uncached = SQLAlchemyKeyManager(manager.engine, cache_ttl=0, **options)
    real_count = min(real_keys, size)
    hash_started = time.perf_counter()
    presented = [generate_key() for _ in range(real_count)]
    real_rows = [(key.id, manager.hasher.hash(key.key), key.hint) for key in presented]
    pool = [manager.hasher.hash(generate_key().key) for _ in range(filler_hash_pool)]
    hash_seconds = time.perf_counter() - hash_started
    stored_ids = {lookup_id for lookup_id, _, _ in real_rows}
    metadata.create_all(manager.engine)
    now = datetime.now(UTC)
    with manager.engine.begin() as connection:
        rows = [
            _row(lookup_id, secret_hash, hint, now) for lookup_id, secret_hash, hint in real_rows
        ]
        while len(stored_ids) < size:
            lookup_id = "".join(rng.choices(BASE62_ALPHABET, k=12))
            if lookup_id in stored_ids:
                continue
            stored_ids.add(lookup_id)
            hint = f"apk_1{lookup_id[:3]}…{lookup_id[-4:]}"
            rows.append(_row(lookup_id, rng.choice(pool), hint, now))
            if len(rows) >= _INSERT_CHUNK:
                connection.execute(sa.insert(api_keys_table), rows)
                rows = []
        if rows:
            connection.execute(sa.insert(api_keys_table), rows)
    valid = [key.key for key in presented]
    keys = KeySets(
        valid=valid,
        wrong_secret=[generate_key(id=key.id).key for key in presented],
        unknown_id=_unknown_id_keys(stored_ids, real_count),
        garbage=garbage_keys(valid, rng, count=max(real_count, 64)),
        bad_checksum=[_typo(key, rng) for key in valid],
    )
    subject = ApikeysSQLiteSubject(
        size=size,
        path=path,
        manager=manager,
        uncached=uncached,
        keys=keys,
        seed_report=SeedReport(
            size=size,
            real_keys=real_count,
            filler_hash_pool=filler_hash_pool,
            seconds=time.perf_counter() - started,
            hash_seconds=hash_seconds,
        ),
    )
    subject.counter.attach(manager.engine)
    return subject


def argon2_verify(subject: ApikeysSQLiteSubject, ops: int) -> Case:
    """Component of a cache miss: one argon2id check with the manager's hasher, nothing else."""
    keys = subject.keys.valid
    hashes = [subject.manager.hasher.hash(key) for key in keys[:_COMPONENT_KEYS]]
    verify, count = subject.manager.hasher.verify, len(hashes)

    def op(index: int) -> object:
        return verify(hashes[index % count], keys[index % count])

    return Case(subject.name, subject.size, "argon2_verify", ops, op, io_count=subject.queries)


def _row_read(
    subject: ApikeysSQLiteSubject,
    ops: int,
    workload: str,
    read: Callable[[sa.Connection, str], Sequence[Any]],
) -> Case:
    ids = [parse_key(key).id for key in subject.keys.valid]
    engine, count = subject.manager.engine, len(ids)

    def op(index: int) -> object:
        with engine.connect() as connection:
            rows = read(connection, ids[index % count])
        if len(rows) != 1:
            raise AssertionError(f"key #{index % count} is not stored")
        return rows

    return Case(subject.name, subject.size, workload, ops, op, io_count=subject.queries)


def row_lookup(subject: ApikeysSQLiteSubject, ops: int) -> Case:
    """Component of a cache miss: the indexed read of one key's row, as the backend issues it."""
    select_key = subject.manager._select_for_validation  # the backend's own prepared lookup

    def read(connection: sa.Connection, key_id: str) -> Sequence[Any]:
        query = select_key(key_id)
        rows = connection.execute(query.statement, query.parameters).mappings().all()
        return [row for row in rows if not row["decoy"]]  # the decoy row: not stored

    return _row_read(subject, ops, "row_lookup", read)


def row_lookup_prebuilt(subject: ApikeysSQLiteSubject, ops: int) -> Case:
    """The same read with a new ``select`` built per call, as a comparison: what
    building the statement each time would cost (the backend builds it once)."""
    table = api_keys_table

    def read(connection: sa.Connection, key_id: str) -> Sequence[Any]:
        return connection.execute(sa.select(*table.c).where(table.c.id == key_id)).mappings().all()

    return _row_read(subject, ops, "row_lookup_prebuilt", read)


COMPONENTS: dict[str, Callable[[ApikeysSQLiteSubject, int], Case]] = {
    "argon2_verify": argon2_verify,
    "row_lookup": row_lookup,
    "row_lookup_prebuilt": row_lookup_prebuilt,
}
"""The parts of a cache miss, measured alone to show where its time goes."""


def _row(lookup_id: str, secret_hash: str, hint: str, now: datetime) -> dict[str, Any]:
    return {
        "id": lookup_id,
        "user_id": f"bench-user-{lookup_id[:2]}",
        "name": "benchmark key",
        "secret_hash": secret_hash,
        "hint": hint,
        "scopes": ["read:data"],
        "metadata": {},
        "created_at": now,
        "expires_at": None,
        "last_used_at": None,
        "revoked_at": None,
        "revocation_reason": None,
        "meter_id": lookup_id,
    }


def _unknown_id_keys(stored_ids: set[str], count: int) -> list[str]:
    keys: list[str] = []
    while len(keys) < count:
        key = generate_key()
        if key.id not in stored_ids:
            keys.append(key.key)
    return keys


def _typo(key: str, rng: random.Random) -> str:
    """``key`` with one character after its version replaced by another base62 character."""
    position = rng.randrange(len("apk_1"), len(key))
    replacement = rng.choice(BASE62_ALPHABET.replace(key[position], ""))
    return key[:position] + replacement + key[position + 1 :]


def _with_non_ascii(key: str) -> str:
    return key[:20] + "é" + key[21:]


def garbage_keys(valid: list[str], rng: random.Random, *, count: int) -> list[str]:
    """Malformed keys, cycling through the kinds a server actually receives.

    Kinds: empty; random printable text; another vendor's key format;
    our prefix with a wrong length, a wrong version or a non-ASCII character;
    a truncated key; a key with a typo (bad checksum); an over-long string.
    """
    printable = "".join(chr(code) for code in range(32, 127))

    def random_text(low: int, high: int, alphabet: str = printable) -> str:
        return "".join(rng.choices(alphabet, k=rng.randint(low, high)))

    makers: list[Callable[[], str]] = [
        lambda: "",
        lambda: random_text(1, 80),
        lambda: "sk_live_" + random_text(24, 24, BASE62_ALPHABET),
        lambda: "ak_" + random_text(40, 40, BASE62_ALPHABET),
        lambda: "apk_1" + random_text(10, 30, BASE62_ALPHABET),
        lambda: "apk_2" + random_text(51, 51, BASE62_ALPHABET),
        lambda: rng.choice(valid)[:-1],
        lambda: _with_non_ascii(rng.choice(valid)),
        lambda: _typo(rng.choice(valid), rng),
        lambda: random_text(MAX_KEY_LENGTH + 1, MAX_KEY_LENGTH + 200),
    ]
    return [makers[index % len(makers)]() for index in range(count)]


__all__ = [
    "COMPONENTS",
    "CREATED_BY",
    "SUBJECT_NAME",
    "ApikeysSQLiteSubject",
    "QueryCounter",
    "SeedReport",
    "argon2_verify",
    "garbage_keys",
    "open_subject",
    "row_lookup",
    "row_lookup_prebuilt",
]
