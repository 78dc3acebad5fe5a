"""The local backend: keys in any SQL database through SQLAlchemy, secrets as argon2id hashes.

SQLite is the embedded default, PostgreSQL the production choice::

    from apikeys.backends.sqlalchemy import SQLAlchemyKeyManager

    manager = SQLAlchemyKeyManager("sqlite:///apikeys.db")
    new = manager.create_api_key("user_123", "CI", ["read:data"])
    manager.validate_api_key(new.secret)

Every operation is written once, in :class:`_SQLAlchemyBase`, as a generator
that yields IO requests (:class:`_Query`, :class:`_Write`, :class:`_Hash`,
:class:`_Verify`); :class:`SQLAlchemyKeyManager` performs them on a sync
engine, :class:`AsyncSQLAlchemyKeyManager` on an async engine, with the
argon2 work in a worker thread so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
from collections.abc import Callable, Generator, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from apikeys._imports import require

require("sqlalchemy", "sqlalchemy")
require("argon2", "sqlalchemy")

import sqlalchemy as sa  # noqa: E402
from argon2 import PasswordHasher, Type  # noqa: E402
from argon2.exceptions import InvalidHashError, VerificationError  # noqa: E402
from sqlalchemy import exc as sa_exc  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # noqa: E402
from sqlalchemy.pool import StaticPool  # noqa: E402

from apikeys._arguments import (  # noqa: E402
    KEEP,
    Keep,
    build_create_request,
    check_grace,
    check_key_id,
    check_owner,
    check_page,
    check_reason,
    check_user_id,
)
from apikeys._cache import DEFAULT_CACHE_MAX_ENTRIES, DEFAULT_CACHE_TTL, VerificationCache  # noqa: E402
from apikeys._config import (  # noqa: E402
    DEFAULT_ARGON2_MEMORY_COST,
    DEFAULT_ARGON2_PARALLELISM,
    DEFAULT_ARGON2_TIME_COST,
    DEFAULT_MAX_ACTIVE_KEYS_PER_OWNER,
    Settings,
    reject_removed_settings,
)
from apikeys._errors import (  # noqa: E402
    APIKeysError,
    BackendUnavailableError,
    ConfigurationError,
    InvalidInputError,
    InvalidKeyError,
    KeyLimitReachedError,
    KeyNotFoundError,
)
from apikeys._events import (  # noqa: E402
    DEFAULT_SUSPICIOUS_FAILURES,
    DEFAULT_SUSPICIOUS_WINDOW,
    EventReporter,
    is_wanted,
)
from apikeys._expiry import Expiration, as_utc, parse_expiration, utcnow  # noqa: E402
from apikeys._flow import run_async, run_sync  # noqa: E402
from apikeys._keyformat import (  # noqa: E402
    DEFAULT_PREFIX,
    ParsedKey,
    generate_key,
    try_parse_key,
    validate_prefix,
)
from apikeys._keystate import check_key_state, check_scopes  # noqa: E402
from apikeys._models import APIKey, APIKeyPage, NewAPIKey, VerifiedKey  # noqa: E402
from apikeys._ratelimit import DEFAULT_MAX_TRACKED_KEYS, ConcurrencyCap  # noqa: E402
from apikeys.backends._shells import AsyncShell, FlowBackend, SyncShell  # noqa: E402
from apikeys.backends._verification import cached_verification, required_scopes_of  # noqa: E402

if TYPE_CHECKING:
    from typing import Self

logger = logging.getLogger("apikeys.sqlalchemy")

SCHEMA_VERSION = 2
"""Version of the tables below; bumped (with a migration note) whenever they change.

2 added ``apikeys_keys.created_by`` (and its index); the manager adds both to a
version 1 database on first use when ``create_schema`` is on.
"""

DEFAULT_URL = "sqlite:///apikeys.db"
DEFAULT_TIMEOUT = 5.0
ROTATED_REASON = "rotated"
_CREATE_ATTEMPTS = 3


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database, SQLite included."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        # SQLite has no timezone type: store naive UTC so text comparisons order correctly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


metadata = sa.MetaData()
"""The tables of this backend, for ``alembic`` autogenerate: ``target_metadata = [..., metadata]``."""

api_keys_table = sa.Table(
    "apikeys_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True, comment="public lookup id"),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("secret_hash", sa.String(255), nullable=False, comment="argon2id PHC string"),
    sa.Column("hint", sa.String(64), nullable=False),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.Column("revocation_reason", sa.String(500), nullable=True),
    sa.Column("created_by", sa.String(32), nullable=True, comment="id of the creating key"),
    sa.Index("ix_apikeys_keys_user_id_created_at", "user_id", "created_at"),
    sa.Index("ix_apikeys_keys_created_by", "created_by"),
)
"""One row per key; the primary key is the lookup id embedded in every key."""

schema_version_table = sa.Table(
    "apikeys_schema",
    metadata,
    sa.Column("component", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)
"""The schema version this database was created or migrated to."""


def alembic_render_item(kind: str, item: Any, autogen_context: Any) -> str | Literal[False]:
    """Render this backend's column types in Alembic migrations as plain SQLAlchemy types.

    Pass it as ``render_item=alembic_render_item`` to both ``context.configure(...)``
    calls of Alembic's ``env.py``. Autogenerate would otherwise write
    ``apikeys.backends.sqlalchemy.UTCDateTime()`` into the migration without importing
    it; the column is ``DateTime(timezone=True)`` in the database, and that is what
    the migration needs. Anything else is left to Alembic (``False``).
    """
    if kind == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


_KEY_COLUMNS = [c for c in api_keys_table.c if c.name != "secret_hash"]
# Built once: the lookup runs on every cache miss, and building a statement
# costs about as much as running it on SQLite.
_SELECT_KEY = sa.select(*_KEY_COLUMNS).where(api_keys_table.c.id == sa.bindparam("key_id"))
# The owner in the WHERE clause: another owner's id is the same indexed miss as an unknown one.
_SELECT_OWNED_KEY = _SELECT_KEY.where(api_keys_table.c.user_id == sa.bindparam("owner"))


# Validation reads the row of the presented id, or, when there is none, a decoy row
# of the same shape made of bound values: either way one row of the same columns is
# fetched and decoded (its timestamps and JSON cost tens of microseconds), so a wrong
# secret for a known id takes the time an unknown id takes (benchmarks/timing.py).
def _validation_statement(*, encoded_decoy: bool) -> sa.Executable:
    return (
        sa.union_all(
            sa.select(sa.literal(False).label("decoy"), *api_keys_table.c).where(
                api_keys_table.c.id == sa.bindparam("key_id")
            ),
            sa.select(
                sa.literal(True),
                *(
                    sa.bindparam(
                        f"decoy_{column.name}", type_=sa.String() if encoded_decoy else column.type
                    )
                    for column in api_keys_table.c
                ),
            ),
        )
        .order_by("decoy")
        .limit(1)
    )


_SELECT_FOR_VALIDATION = _validation_statement(encoded_decoy=False)
# SQLite stores JSON and timestamps as text and matches no types across a UNION,
# so there the decoy's values are encoded once, not on every validation (20 µs).
_SELECT_FOR_VALIDATION_ENCODED = _validation_statement(encoded_decoy=True)


# IO requests yielded by the flows -------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Query:
    """Run a SELECT with bound ``parameters``; the result is a list of row mappings."""

    statement: sa.Executable
    parameters: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class _Write:
    """Run statements in one transaction; the result is their row counts.

    With ``require_rows`` a statement that touches no row rolls the whole
    transaction back and raises :class:`_Conflict`.
    """

    statements: tuple[sa.Executable, ...]
    require_rows: bool = False


@dataclass(frozen=True, slots=True)
class _Transaction:
    """Run ``body`` on a connection inside one transaction; the result is its return value.

    ``body`` is plain synchronous code: the async twin runs it through
    ``AsyncConnection.run_sync``. Whatever it raises rolls the transaction back.
    """

    body: Callable[[sa.Connection], Any]


@dataclass(frozen=True, slots=True)
class _Hash:
    """Hash a key with argon2id (CPU-bound); the result is the PHC string."""

    key: str = ""

    def __repr__(self) -> str:
        return "_Hash(<secret>)"


@dataclass(frozen=True, slots=True)
class _Verify:
    """Check a key against a stored hash (CPU-bound); the result is a bool."""

    secret_hash: str
    key: str = ""

    def __repr__(self) -> str:
        return "_Verify(<secret>)"


_Request = _Query | _Write | _Transaction | _Hash | _Verify


class _Conflict(Exception):
    """A write hit a unique constraint or a row that changed underneath it."""


def _database_error(exc: sa_exc.SQLAlchemyError, url: sa.URL) -> BackendUnavailableError:
    """The error a failed database call raises: 503, and, where the cause is a set-up
    mistake an operator can fix, what it is and the fix (it reaches the logs)."""
    # The engine hides bound parameters, and the message names no value either.
    message = f"database unavailable ({type(exc).__name__})"
    cause = str(getattr(exc, "orig", None) or "").lower()
    if isinstance(exc, sa_exc.OperationalError | sa_exc.ProgrammingError):
        if "no such table" in cause or ("relation" in cause and "does not exist" in cause):
            message += (
                f": the table {api_keys_table.name!r} does not exist; run your migrations, or"
                " let the manager create it (create_schema=True, APIKEYS_CREATE_SCHEMA=true)"
            )
        elif url.get_backend_name() == "sqlite" and "unable to open database file" in cause:
            # A file path is no secret; a server URL may carry a password and is never named.
            message += (
                f": SQLite cannot open {url.database!r}; check that its folder exists"
                " and is writable"
            )
    return BackendUnavailableError(message, retry_after=1)


# Statements run inside one transaction (see _Transaction) ----------------------------
#
# Who may create keys for an owner, and which keys a revocation ends, is decided
# under one lock per owner: creating a key under a creator (and counting the
# owner's active keys) and revoking a key with its descendants never interleave.
# On PostgreSQL it is a transaction-scoped advisory lock on the owner; SQLite
# lets one writer in at a time, so a write that opens the transaction is the lock.


def _owner_lock_id(user_id: str) -> int:
    digest = hashlib.blake2b(f"apikeys:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _lock_owner(connection: sa.Connection, user_id: str) -> None:
    """Hold the owner's lock until the transaction ends."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_owner_lock_id(user_id))))
    else:
        # A write that touches no row still takes SQLite's write lock for the transaction.
        table = api_keys_table
        connection.execute(sa.update(table).where(sa.false()).values(id=table.c.id))


def _active(now: datetime) -> sa.ColumnElement[bool]:
    table = api_keys_table
    return sa.and_(
        table.c.revoked_at.is_(None),
        sa.or_(table.c.expires_at.is_(None), table.c.expires_at > now),
    )


def _descendants(key_id: str, user_id: str) -> sa.CTE:
    """Every key ``key_id`` created, and theirs in turn (the owner's keys only)."""
    table = api_keys_table
    tree = (
        sa.select(table.c.id)
        .where(table.c.created_by == key_id, table.c.user_id == user_id)
        .cte("descendants", recursive=True)
    )
    child = table.alias("child")
    # UNION, not UNION ALL: a cycle (only possible in rows written by hand) ends.
    return tree.union(
        sa.select(child.c.id).where(child.c.created_by == tree.c.id, child.c.user_id == user_id)
    )


def _revoke_descendants(
    connection: sa.Connection, key_id: str, user_id: str, now: datetime, verb: str
) -> list[str]:
    """Revoke every live descendant of ``key_id``; return their ids.

    Each key's reason names its own creator: ``creator <id> revoked`` (the
    direct children of ``key_id`` say ``verb``, "revoked" or "deleted").
    """
    table = api_keys_table
    tree = _descendants(key_id, user_id)
    pending = sa.and_(table.c.id.in_(sa.select(tree.c.id)), table.c.revoked_at.is_(None))
    ids = list(connection.execute(sa.select(table.c.id).where(pending)).scalars())
    if ids:
        reason = sa.case(
            (table.c.created_by == key_id, sa.literal(f"creator {key_id} {verb}")),
            else_=sa.literal("creator ") + table.c.created_by + sa.literal(" revoked"),
        )
        connection.execute(
            sa.update(table).where(pending).values(revoked_at=now, revocation_reason=reason)
        )
    return ids


@dataclass(frozen=True, slots=True)
class _Ended:
    """What a revocation or deletion did: the row (None: no such key) and the cascade."""

    row: Mapping[str, Any] | None
    changed: bool = False
    descendants: tuple[str, ...] = ()


def _owner_of(connection: sa.Connection, key_id: str, owner: str | None) -> str | None:
    table = api_keys_table
    statement = sa.select(table.c.user_id).where(table.c.id == key_id)
    if owner is not None:
        statement = statement.where(table.c.user_id == owner)
    found: str | None = connection.execute(statement).scalar_one_or_none()
    return found


def _revoke_in(
    key_id: str, owner: str | None, reason: str | None, now: datetime
) -> Callable[[sa.Connection], _Ended]:
    def body(connection: sa.Connection) -> _Ended:
        user_id = _owner_of(connection, key_id, owner)
        if user_id is None:
            return _Ended(None)
        _lock_owner(connection, user_id)
        table = api_keys_table
        changed = connection.execute(
            sa.update(table)
            .where(table.c.id == key_id, table.c.revoked_at.is_(None))
            .values(revoked_at=now, revocation_reason=reason)
        ).rowcount
        # Also when the key was revoked already: a retry finishes any earlier cascade.
        descendants = _revoke_descendants(connection, key_id, user_id, now, "revoked")
        row = connection.execute(_SELECT_KEY, {"key_id": key_id}).mappings().one_or_none()
        if row is None:  # deleted meanwhile
            return _Ended(None)
        return _Ended(dict(row), bool(changed), tuple(descendants))

    return body


def _delete_in(key_id: str, owner: str | None, now: datetime) -> Callable[[sa.Connection], _Ended]:
    def body(connection: sa.Connection) -> _Ended:
        user_id = _owner_of(connection, key_id, owner)
        if user_id is None:
            return _Ended(None)
        _lock_owner(connection, user_id)
        descendants = _revoke_descendants(connection, key_id, user_id, now, "deleted")
        table = api_keys_table
        deleted = connection.execute(sa.delete(table).where(table.c.id == key_id)).rowcount
        return _Ended({"user_id": user_id} if deleted else None, True, tuple(descendants))

    return body


def _check_room(connection: sa.Connection, user_id: str, now: datetime, max_active: int) -> None:
    """Refuse one more active key for ``user_id`` past ``max_active`` (``0``: no limit)."""
    if not max_active:
        return
    table = api_keys_table
    active = connection.execute(
        sa.select(sa.func.count())
        .select_from(table)
        .where(table.c.user_id == user_id, _active(now))
    ).scalar_one()
    if active >= max_active:
        raise KeyLimitReachedError(limit=max_active)


def _creator_expiry(
    connection: sa.Connection, created_by: str, user_id: str, now: datetime
) -> datetime | None:
    """The creator's expiry as stored now; it must be an active key of the same owner."""
    table = api_keys_table
    creator = connection.execute(
        sa.select(table.c.expires_at).where(
            table.c.id == created_by, table.c.user_id == user_id, _active(now)
        )
    ).first()
    if creator is None:
        raise InvalidInputError(
            "created_by must be an active key of the same owner: the creating key"
            " is unknown, another owner's, revoked or expired",
            field="created_by",
            key_id=created_by,
        )
    ends: datetime | None = creator.expires_at
    return ends


def _insert_in(
    values: Mapping[str, Any], created_by: str | None, max_active: int
) -> Callable[[sa.Connection], datetime | None]:
    """Insert a new key once its creator is checked active and the owner's count allows it.

    A key never outlives its creator: its expiry is capped at the creator's as stored
    now, not as a cached verification remembered it (a rotation with a grace period
    may have shortened it since). Returns the expiry stored.
    """

    def body(connection: sa.Connection) -> datetime | None:
        table = api_keys_table
        user_id, now = values["user_id"], values["created_at"]
        expires_at: datetime | None = values["expires_at"]
        _lock_owner(connection, user_id)
        if created_by is not None:
            ends = _creator_expiry(connection, created_by, user_id, now)
            if ends is not None and (expires_at is None or expires_at > ends):
                expires_at = ends
        _check_room(connection, user_id, now, max_active)
        connection.execute(sa.insert(table).values(**{**values, "expires_at": expires_at}))
        return expires_at

    return body


def _rotate_in(
    old_id: str, retire: sa.Executable, values: Mapping[str, Any], max_active: int, grace: bool
) -> Callable[[sa.Connection], datetime | None]:
    """Retire the old key, store its replacement and hand its children over to it.

    The replacement counts against the owner's limit (``max_active``) like any new
    key unless it takes the place of an active key at once: with a grace period both
    stay active for a while, and an expired key frees no place. A replacement never
    outlives the key that created the old one. Returns the expiry stored.
    """

    def body(connection: sa.Connection) -> datetime | None:
        table = api_keys_table
        user_id, now = values["user_id"], values["created_at"]
        expires_at: datetime | None = values["expires_at"]
        _lock_owner(connection, user_id)
        old_active = connection.execute(
            sa.select(table.c.id).where(table.c.id == old_id, _active(now))
        ).first()
        if grace or old_active is None:
            _check_room(connection, user_id, now, max_active)
        if values["created_by"] is not None:
            ends = _creator_expiry(connection, values["created_by"], user_id, now)
            if ends is not None and (expires_at is None or expires_at > ends):
                expires_at = ends
        if connection.execute(retire).rowcount == 0:
            raise _Conflict
        connection.execute(sa.insert(table).values(**{**values, "expires_at": expires_at}))
        connection.execute(
            sa.update(table).where(table.c.created_by == old_id).values(created_by=values["id"])
        )
        return expires_at

    return body


def _normalize_url(url: str | sa.URL, *, asynchronous: bool) -> sa.URL:
    """Pick an installed driver for the dialect: psycopg 3 for PostgreSQL, aiosqlite for async SQLite."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    driver = parsed.get_driver_name() if "+" in parsed.drivername else ""
    if backend == "postgres":
        backend = "postgresql"
    # Drivers that only work one way are swapped for one that works the way asked.
    if backend == "sqlite":
        if asynchronous:
            driver = "aiosqlite"
        elif driver == "aiosqlite":
            driver = ""
    elif backend == "postgresql":
        one_way = "psycopg2" if asynchronous else "asyncpg"
        if driver in ("", one_way):
            driver = "psycopg"
    return parsed.set(drivername=f"{backend}+{driver}" if driver else backend)


def _make_engine(url: str | sa.URL, *, asynchronous: bool, timeout: float) -> Any:
    """Build the engine, turning a bad URL or a missing driver into a ConfigurationError."""
    try:
        normalized = _normalize_url(url, asynchronous=asynchronous)
        create = create_async_engine if asynchronous else sa.create_engine
        return create(normalized, **_engine_options(normalized, timeout))
    except ModuleNotFoundError as exc:
        raise ConfigurationError(_missing_driver_message(exc.name, url)) from None
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ValueError) as exc:
        # The URL may hold a password, and so may the driver's message: name neither.
        raise ConfigurationError(f"invalid database URL ({type(exc).__name__})") from None


# The extra that brings each tested database's drivers.
_DRIVER_EXTRAS = {"postgresql": "postgres", "sqlite": "sqlalchemy"}


def _missing_driver_message(module: str | None, url: str | sa.URL) -> str:
    """Name the missing driver and, for the databases apikeys tests, the extra that has it."""
    try:
        backend = sa.engine.make_url(url).get_backend_name()
    except sa_exc.ArgumentError:
        backend = "the database"
    extra = _DRIVER_EXTRAS.get(backend)
    if extra is not None:
        return f"the database driver {module!r} is not installed: pip install 'apikeys[{extra}]'"
    return (
        f"the database driver {module!r} for {backend} is not installed: install the"
        f" driver your URL names (apikeys is tested on SQLite and PostgreSQL:"
        f" 'apikeys[sqlalchemy]', 'apikeys[postgres]')"
    )


def _is_memory_sqlite(url: sa.URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _engine_options(url: sa.URL, timeout: float) -> dict[str, Any]:
    """Engine options; ``timeout`` bounds every wait (a lock, a connection, the pool)."""
    options: dict[str, Any] = {"hide_parameters": True}
    if url.get_backend_name() == "sqlite":
        # SQLite's busy timeout: how long a write waits for another connection's lock.
        options["connect_args"] = {"check_same_thread": False, "timeout": timeout}
        if _is_memory_sqlite(url):
            # One shared connection, or each connection would see its own empty database.
            options["poolclass"] = StaticPool
    else:
        options["pool_pre_ping"] = True
        options["pool_timeout"] = timeout
        if url.get_driver_name() in ("psycopg", "psycopg2"):
            # libpq counts whole seconds and refuses less than 2.
            options["connect_args"] = {"connect_timeout": max(2, math.ceil(timeout))}
    return options


class _SQLAlchemyBase(FlowBackend):
    """Everything but the IO: statements, row mapping and the operation flows."""

    # The validation statement and decoy values for the engine's dialect; each
    # twin sets it from _validation_lookup_for once it has built its engine.
    _validation_lookup: tuple[sa.Executable, dict[str, Any]]

    def __init__(
        self,
        *,
        key_prefix: str = DEFAULT_PREFIX,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        cache_max_entries: int = DEFAULT_CACHE_MAX_ENTRIES,
        last_used_interval: float = 60.0,
        create_schema: bool = True,
        password_hasher: PasswordHasher | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_concurrent_hashes: int | None = None,
        max_tracked_key_ids: int = DEFAULT_MAX_TRACKED_KEYS,
        suspicious_failures: int = DEFAULT_SUSPICIOUS_FAILURES,
        suspicious_window: float = DEFAULT_SUSPICIOUS_WINDOW,
        max_active_keys_per_owner: int = DEFAULT_MAX_ACTIVE_KEYS_PER_OWNER,
        **removed: object,
    ) -> None:
        reject_removed_settings(removed, type(self).__name__)
        self.key_prefix = validate_prefix(key_prefix)
        if max_active_keys_per_owner < 0:
            raise ConfigurationError("max_active_keys_per_owner must be >= 0 (0: no limit)")
        self.max_active_keys_per_owner = max_active_keys_per_owner
        self.cache = VerificationCache(cache_ttl, cache_max_entries)
        if last_used_interval < 0:
            raise ConfigurationError("last_used_interval must be >= 0")
        self.timeout = timeout
        try:
            self.hash_cap = ConcurrencyCap(max_concurrent_hashes, timeout=timeout)
            self.events = EventReporter(
                "sqlalchemy",
                suspicious_failures=suspicious_failures,
                suspicious_window=suspicious_window,
                max_tracked=max_tracked_key_ids,
            )
        except ValueError as exc:
            raise ConfigurationError(f"invalid abuse-control settings: {exc}") from None
        self.last_used_interval = timedelta(seconds=last_used_interval)
        self.create_schema = create_schema
        self.hasher = password_hasher or PasswordHasher(
            time_cost=DEFAULT_ARGON2_TIME_COST,
            memory_cost=DEFAULT_ARGON2_MEMORY_COST,
            parallelism=DEFAULT_ARGON2_PARALLELISM,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        # Read and verified against when the id is unknown, so that case costs what a
        # wrong secret costs: shaped like a typical live key (every timestamp but the
        # revocation set, a scope, no metadata), so it decodes like one. Bound as the
        # engine's dialect wants it by _validation_lookup_for, once the engine exists.
        decoy_time = utcnow()
        self._decoy_row: dict[str, Any] = {
            f"decoy_{name}": value
            for name, value in {
                "id": generate_key(self.key_prefix).lookup_id,
                "user_id": "decoy-user",
                "name": "decoy key",
                "secret_hash": self.hasher.hash(generate_key(self.key_prefix).key),
                "hint": "apk_1...",
                "scopes": ["decoy:read"],
                "metadata": {},
                "created_at": decoy_time,
                "expires_at": decoy_time + timedelta(days=365),
                "last_used_at": decoy_time,
                "revoked_at": None,
                "revocation_reason": None,
                "created_by": None,
            }.items()
        }
        self._schema_ready = False

    @staticmethod
    def _options_from_settings(settings: Settings) -> dict[str, Any]:
        return {
            "key_prefix": settings.key_prefix,
            "cache_ttl": settings.cache_ttl,
            "cache_max_entries": settings.cache_max_entries,
            "last_used_interval": settings.last_used_interval,
            "create_schema": settings.create_schema,
            "timeout": settings.timeout,
            "max_concurrent_hashes": settings.max_concurrent_hashes,
            "max_tracked_key_ids": settings.max_tracked_key_ids,
            "suspicious_failures": settings.suspicious_failures,
            "suspicious_window": settings.suspicious_window,
            "max_active_keys_per_owner": settings.max_active_keys_per_owner,
            "password_hasher": PasswordHasher(
                time_cost=settings.argon2_time_cost,
                memory_cost=settings.argon2_memory_cost,
                parallelism=settings.argon2_parallelism,
                hash_len=32,
                salt_len=16,
                type=Type.ID,
            ),
        }

    # --- CPU work, shared by both twins ------------------------------------------

    def _hash(self, key: str) -> str:
        return self.hasher.hash(key)

    def _verify(self, request: _Verify) -> bool:
        try:
            return self.hasher.verify(request.secret_hash, request.key)
        except (VerificationError, InvalidHashError):
            return False

    def _before_io(self, secret: str, required: tuple[str, ...]) -> VerifiedKey | ParsedKey:
        """Everything validation can settle without IO: a cache hit (returned), a
        malformed key (refused), or the parsed key for the flow to look up."""
        try:
            hit = cached_verification(self.cache, secret, required)
        except APIKeysError as exc:
            # Rare (a cached key lacking a scope, or a non-string): look the owner up again.
            cached = self.cache.get(self.cache.digest(secret)) if isinstance(secret, str) else None
            self.events.rejected(exc, user_id=cached.user_id if cached else None)
            raise
        if hit is not None:
            # Checked here, not in report(): a hit that nobody monitors pays one call, no more.
            if is_wanted("validated"):
                self.events.report("validated", hit.key_id, user_id=hit.user_id)
            return hit
        # Parsed here rather than in the flow: garbage, the commonest hostile
        # input, is refused without building a flow and with a single raise.
        parsed = try_parse_key(secret, self.key_prefix)
        if parsed is None:
            refusal = InvalidKeyError()
            self.events.rejected(refusal)
            raise refusal
        return parsed

    # --- row mapping -------------------------------------------------------------

    @staticmethod
    def _to_api_key(row: Mapping[str, Any]) -> APIKey:
        return APIKey(
            id=row["id"],
            user_id=row["user_id"],
            name=row["name"],
            scopes=tuple(row["scopes"]),
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            last_used_at=row["last_used_at"],
            revoked_at=row["revoked_at"],
            revocation_reason=row["revocation_reason"],
            metadata=row["metadata"],
            hint=row["hint"],
            created_by=row["created_by"],
        )

    @staticmethod
    def _to_verified(row: Mapping[str, Any]) -> VerifiedKey:
        return VerifiedKey(
            key_id=row["id"],
            user_id=row["user_id"],
            name=row["name"],
            scopes=tuple(row["scopes"]),
            expires_at=row["expires_at"],
            metadata=row["metadata"],
        )

    @staticmethod
    def _select_key(key_id: str) -> _Query:
        return _Query(_SELECT_KEY, {"key_id": key_id})

    def _select_for_validation(self, key_id: str) -> _Query:
        """The row of ``key_id`` with its hash, or the decoy row: always one row."""
        statement, decoy = self._validation_lookup
        return _Query(statement, {**decoy, "key_id": key_id})

    def _validation_lookup_for(self, dialect: sa.Dialect) -> tuple[sa.Executable, dict[str, Any]]:
        if dialect.name != "sqlite":
            return _SELECT_FOR_VALIDATION, self._decoy_row
        encoded: dict[str, Any] = {}
        for column in api_keys_table.c:
            name = f"decoy_{column.name}"
            encode = column.type.dialect_impl(dialect).bind_processor(dialect)
            value = self._decoy_row[name]
            encoded[name] = value if value is None or encode is None else encode(value)
        return _SELECT_FOR_VALIDATION_ENCODED, encoded

    def _fetch_key(
        self, key_id: str, owner: str | None = None
    ) -> Generator[_Request, Any, Mapping[str, Any]]:
        if owner is None:
            rows = yield self._select_key(key_id)
        else:
            rows = yield _Query(_SELECT_OWNED_KEY, {"key_id": key_id, "owner": owner})
        if not rows:
            raise KeyNotFoundError(key_id=key_id)
        row: Mapping[str, Any] = rows[0]
        return row

    # --- flows ---------------------------------------------------------------------

    def _create_flow(
        self,
        user_id: str,
        name: str,
        scopes: Iterable[str] | str,
        expiration: Expiration,
        metadata: Mapping[str, Any] | None,
        created_by: str | None,
    ) -> Generator[_Request, Any, NewAPIKey]:
        request = build_create_request(
            user_id, name, scopes, expiration, metadata, created_by=created_by
        )
        for _attempt in range(_CREATE_ATTEMPTS):
            new_key = generate_key(self.key_prefix)
            values = {
                "id": new_key.lookup_id,
                "user_id": request.user_id,
                "name": request.name,
                "hint": new_key.hint,
                "scopes": list(request.scopes),
                "metadata": request.metadata,
                "created_at": request.now,
                "expires_at": request.expires_at,
                "created_by": request.created_by,
            }
            secret_hash = yield _Hash(new_key.key)
            try:
                values["expires_at"] = yield _Transaction(
                    _insert_in(
                        {**values, "secret_hash": secret_hash},
                        request.created_by,
                        self.max_active_keys_per_owner,
                    )
                )
            except _Conflict:
                continue  # a lookup id collision (~1 in 10^21): draw another
            self.events.report("created", new_key.lookup_id, user_id=request.user_id)
            return NewAPIKey(
                secret=new_key.key, scopes=request.scopes, **_without(values, "scopes")
            )
        raise BackendUnavailableError("could not store a new key (repeated id conflicts)")

    def _validate_flow(
        self, parsed: ParsedKey, required: tuple[str, ...]
    ) -> Generator[_Request, Any, VerifiedKey]:
        secret = parsed.key
        key_id = parsed.lookup_id  # the id the key claims (it may not exist)
        user_id: str | None = None
        try:
            # Failures are never counted against the id, which anyone may know:
            # a flood of wrong secrets for it must not lock out its holder. The
            # hashing cap bounds what the flood costs; the web integrations
            # can limit each client.
            # Read before the lookup: a revocation committed meanwhile must keep
            # this (possibly older) row out of the cache.
            generation = self.cache.generation
            # An unknown id gets the decoy row, and is checked against its decoy hash:
            # it costs what a wrong secret costs.
            (row,) = yield self._select_for_validation(key_id)
            matched = yield _Verify(row["secret_hash"], secret)
            known = not row["decoy"]
            if not (known and matched):
                if known:
                    user_id = row["user_id"]
                raise InvalidKeyError()
            user_id = row["user_id"]
            verified = check_scopes(self._accept(row, secret, generation), required)
            # Only a validation that succeeds in full counts as a use.
            yield from self._record_use(row, secret)
        except APIKeysError as exc:
            self.events.rejected(exc, key_id=key_id, user_id=user_id)
            raise
        self.events.report("validated", verified.key_id, user_id=verified.user_id)
        return verified

    def _accept(self, row: Mapping[str, Any], secret: str, generation: int) -> VerifiedKey:
        """State checks once ``secret`` is proven to match ``row``; caches the result."""
        check_key_state(
            row["id"], revoked=row["revoked_at"] is not None, expires_at=row["expires_at"]
        )
        verified = self._to_verified(row)
        self.cache.put(self.cache.digest(secret), verified, generation=generation)
        return verified

    def _record_use(self, row: Mapping[str, Any], secret: str) -> Generator[_Request, Any, None]:
        """Write ``last_used_at`` (at most once per interval) and upgrade an old hash."""
        now = utcnow()
        changes: dict[str, Any] = {}
        if self.hasher.check_needs_rehash(row["secret_hash"]):
            changes["secret_hash"] = yield _Hash(secret)
        last_used = row["last_used_at"]
        if last_used is None or now - last_used >= self.last_used_interval:
            changes["last_used_at"] = now
        if not changes:
            return
        update = sa.update(api_keys_table).where(api_keys_table.c.id == row["id"]).values(**changes)
        try:
            yield _Write((update,))
        except BackendUnavailableError:
            # Verified against the database just now; a failed bookkeeping write
            # (read-only replica, lock) must not turn a valid key away.
            logger.warning("could not record use of API key %s", row["id"])

    def _list_flow(
        self, user_id: str, include_invalid: bool, limit: int, offset: int
    ) -> Generator[_Request, Any, APIKeyPage]:
        check_user_id(user_id)
        limit, offset = check_page(limit, offset)
        table = api_keys_table
        condition = table.c.user_id == user_id
        if not include_invalid:
            now = utcnow()
            condition = sa.and_(
                condition,
                table.c.revoked_at.is_(None),
                sa.or_(table.c.expires_at.is_(None), table.c.expires_at > now),
            )
        page = (
            sa.select(*_KEY_COLUMNS)
            .where(condition)
            .order_by(table.c.created_at.desc(), table.c.id)
            .limit(limit)
            .offset(offset)
        )
        rows = yield _Query(page)
        counted = yield _Query(sa.select(sa.func.count()).select_from(table).where(condition))
        total = int(next(iter(counted[0].values())))
        items = tuple(self._to_api_key(row) for row in rows)
        return APIKeyPage(items=items, total=total, limit=limit, offset=offset)

    def _get_flow(self, key_id: str, user_id: str | None) -> Generator[_Request, Any, APIKey]:
        row = yield from self._fetch_key(check_key_id(key_id), check_owner(user_id))
        return self._to_api_key(row)

    def _revoke_flow(
        self, key_id: str, reason: str | None, user_id: str | None
    ) -> Generator[_Request, Any, APIKey]:
        key_id, reason, owner = check_key_id(key_id), check_reason(reason), check_owner(user_id)
        try:
            ended: _Ended = yield _Transaction(_revoke_in(key_id, owner, reason, utcnow()))
        finally:
            self.cache.invalidate(key_id)
        if ended.row is None:
            raise KeyNotFoundError(key_id=key_id)
        owner = ended.row["user_id"]
        self._ended_descendants(ended, owner)
        if ended.changed:  # not when it was revoked already
            self.events.report("revoked", key_id, user_id=owner)
        return self._to_api_key(ended.row)

    def _delete_flow(self, key_id: str, user_id: str | None) -> Generator[_Request, Any, None]:
        key_id, owner = check_key_id(key_id), check_owner(user_id)
        try:
            ended: _Ended = yield _Transaction(_delete_in(key_id, owner, utcnow()))
        finally:
            self.cache.invalidate(key_id)
        if ended.row is None:
            raise KeyNotFoundError(key_id=key_id)
        self._ended_descendants(ended, ended.row["user_id"])
        self.events.report("deleted", key_id)

    def _ended_descendants(self, ended: _Ended, user_id: str) -> None:
        for descendant in ended.descendants:
            self.cache.invalidate(descendant)
            self.events.report("revoked", descendant, user_id=user_id)

    def _rotate_flow(
        self, key_id: str, grace: timedelta | float, expiration: Expiration | Keep
    ) -> Generator[_Request, Any, NewAPIKey]:
        key_id, grace = check_key_id(key_id), check_grace(grace)
        old = yield from self._fetch_key(key_id)
        now = utcnow()
        if old["revoked_at"] is not None:
            raise InvalidInputError(
                "a revoked key cannot be rotated", field="key_id", key_id=key_id
            )
        if expiration is KEEP:
            expires_at = old["expires_at"]
            if expires_at is not None and expires_at <= now:
                raise InvalidInputError(
                    "the key has expired: give the replacement an expiration",
                    field="expiration",
                    key_id=key_id,
                )
        else:
            expires_at = parse_expiration(expiration, now=now)
        new_key = generate_key(self.key_prefix)
        secret_hash = yield _Hash(new_key.key)
        values = {
            "id": new_key.lookup_id,
            "user_id": old["user_id"],
            "name": old["name"],
            "hint": new_key.hint,
            "scopes": old["scopes"],
            "metadata": old["metadata"],
            "created_at": now,
            "expires_at": expires_at,
            "created_by": old["created_by"],
        }
        table = api_keys_table
        retire = sa.update(table).where(table.c.id == key_id, table.c.revoked_at.is_(None))
        if grace:
            cutoff = now + grace
            old_expiry = old["expires_at"]
            retire = retire.values(
                expires_at=cutoff if old_expiry is None else min(cutoff, old_expiry)
            )
        else:
            retire = retire.values(revoked_at=now, revocation_reason=ROTATED_REASON)
        try:
            values["expires_at"] = yield _Transaction(
                _rotate_in(
                    key_id,
                    retire,
                    {**values, "secret_hash": secret_hash},
                    self.max_active_keys_per_owner,
                    bool(grace),
                )
            )
        except _Conflict:
            raise InvalidInputError(
                "the key was revoked or rotated meanwhile", field="key_id", key_id=key_id
            ) from None
        finally:
            self.cache.invalidate(key_id)
        self.events.report("rotated", key_id, user_id=old["user_id"], new_key_id=new_key.lookup_id)
        return NewAPIKey(
            secret=new_key.key, scopes=tuple(old["scopes"]), **_without(values, "scopes")
        )

    # --- schema ------------------------------------------------------------------------

    @staticmethod
    def _schema_setup(connection: sa.Connection) -> None:
        """Create missing tables and record, or check, the schema version."""
        metadata.create_all(connection, checkfirst=True)
        version = connection.execute(
            sa.select(schema_version_table.c.version).where(
                schema_version_table.c.component == "keys"
            )
        ).scalar_one_or_none()
        if version is None:
            connection.execute(
                sa.insert(schema_version_table).values(component="keys", version=SCHEMA_VERSION)
            )
        elif version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"the apikeys tables are at schema version {version}, newer than this"
                f" release understands ({SCHEMA_VERSION}): upgrade apikeys"
            )
        elif version < SCHEMA_VERSION:
            _upgrade_schema(connection)
            connection.execute(
                sa.update(schema_version_table)
                .where(schema_version_table.c.component == "keys")
                .values(version=SCHEMA_VERSION)
            )


def _upgrade_schema(connection: sa.Connection) -> None:
    """Bring version 1 tables to the current version: add ``created_by`` and its index."""
    table = api_keys_table
    columns = {column["name"] for column in sa.inspect(connection).get_columns(table.name)}
    if "created_by" not in columns:
        column = table.c.created_by
        type_ = column.type.compile(dialect=connection.dialect)
        connection.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN created_by {type_}"))
    for index in table.indexes:
        if index.name == "ix_apikeys_keys_created_by":
            index.create(connection, checkfirst=True)


def _without(values: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: value for name, value in values.items() if name not in names}


def _rows_of(result: sa.CursorResult[Any]) -> list[sa.RowMapping]:
    return list(result.mappings().all())


class SQLAlchemyKeyManager(SyncShell, _SQLAlchemyBase):
    """Synchronous manager over a SQLAlchemy engine; safe to share between threads.

    Args:
        url: A SQLAlchemy URL (``sqlite:///apikeys.db``, ``postgresql+psycopg://…``)
            or an :class:`sqlalchemy.Engine` you own.
        key_prefix: Prefix of issued keys (``apk``).
        cache_ttl: Seconds a successful validation is served from memory; ``0``
            disables the cache. It bounds how long another process may still
            accept a key after it is revoked.
        cache_max_entries: Bound on cached validations.
        last_used_interval: Least seconds between two ``last_used_at`` writes of a key.
        create_schema: Create the tables on first use (turn off when migrations own them).
        password_hasher: An ``argon2.PasswordHasher`` with your cost parameters.
        timeout: Longest wait, in seconds, for a database lock, a connection, or a
            hashing turn; past it the call fails with ``BackendUnavailableError``.
        max_concurrent_hashes: argon2 hashes running at once (default: one per CPU),
            served first come, first served. See ``docs/security.md``.
        max_tracked_key_ids: Key ids the burst detector remembers.
        suspicious_failures: Failures against one key id per ``suspicious_window``
            reported as a ``suspicious`` event; ``0`` disables.
        suspicious_window: Seconds over which those failures count, and the least
            time between two ``retired_key_used`` events of one key.
        max_active_keys_per_owner: Active keys one owner may hold; creating one more
            raises ``KeyLimitReachedError``. ``0`` disables the limit.
    """

    def __init__(self, url: str | sa.URL | sa.Engine = DEFAULT_URL, **options: Any) -> None:
        super().__init__(**options)
        if isinstance(url, sa.Engine):
            self.engine = url
        else:
            self.engine = _make_engine(url, asynchronous=False, timeout=self.timeout)
        self._validation_lookup = self._validation_lookup_for(self.engine.dialect)
        self._schema_lock = threading.Lock()
        # An in-memory database is one shared connection: transactions of two
        # threads on it would commit or roll back each other's work.
        self._io_lock: AbstractContextManager[Any] = (
            threading.Lock() if _is_memory_sqlite(self.engine.url) else nullcontext()
        )

    @classmethod
    def from_settings(cls, url: str, settings: Settings) -> Self:
        """Build a manager from a backend URL and :class:`~apikeys.Settings`."""
        return cls(url, **cls._options_from_settings(settings))

    def _ensure_schema(self) -> None:
        if self._schema_ready or not self.create_schema:
            return
        with self._schema_lock:
            if not self._schema_ready:
                with self.engine.begin() as connection:
                    self._schema_setup(connection)
                self._schema_ready = True

    def _perform(self, request: _Request) -> Any:
        if isinstance(request, _Hash):
            with self.hash_cap.hold():
                return self._hash(request.key)
        if isinstance(request, _Verify):
            with self.hash_cap.hold():
                return self._verify(request)
        try:
            self._ensure_schema()
            with self._io_lock:
                if isinstance(request, _Query):
                    with self.engine.connect() as connection:
                        return _rows_of(connection.execute(request.statement, request.parameters))
                if isinstance(request, _Transaction):
                    with self.engine.begin() as connection:
                        return request.body(connection)
                with self.engine.begin() as connection:
                    counts = [connection.execute(s).rowcount for s in request.statements]
                    if request.require_rows and 0 in counts:
                        connection.rollback()
                        raise _Conflict
                    return counts
        except sa_exc.IntegrityError as exc:
            raise _Conflict from exc
        except sa_exc.SQLAlchemyError as exc:
            raise _database_error(exc, self.engine.url) from exc

    def validate_api_key(self, secret: str, *, required_scopes: Iterable[str] = ()) -> VerifiedKey:
        """Validate a presented key; see :meth:`apikeys.KeyManager.validate_api_key`."""
        # No call for the usual () (what every integration passes when a route needs no scope).
        required = () if required_scopes == () else required_scopes_of(required_scopes)
        checked = self._before_io(secret, required)
        if isinstance(checked, VerifiedKey):
            return checked
        return run_sync(self._validate_flow(checked, required), self._perform)

    def close(self) -> None:
        """Dispose of the engine's connection pool."""
        self.engine.dispose()


class AsyncSQLAlchemyKeyManager(AsyncShell, _SQLAlchemyBase):
    """Async manager over a SQLAlchemy async engine; argon2 runs in a worker thread.

    Takes the same arguments as :class:`SQLAlchemyKeyManager`; a plain URL gets
    an async driver (``aiosqlite`` for SQLite, ``psycopg`` for PostgreSQL).
    """

    def __init__(self, url: str | sa.URL | AsyncEngine = DEFAULT_URL, **options: Any) -> None:
        super().__init__(**options)
        if isinstance(url, AsyncEngine):
            self.engine = url
        else:
            self.engine = _make_engine(url, asynchronous=True, timeout=self.timeout)
        self._validation_lookup = self._validation_lookup_for(self.engine.dialect)
        self._schema_lock: asyncio.Lock | None = None
        # See SQLAlchemyKeyManager: tasks must not interleave on the one connection.
        self._io_lock: asyncio.Lock | None = (
            asyncio.Lock() if _is_memory_sqlite(self.engine.url) else None
        )

    @classmethod
    def from_settings(cls, url: str, settings: Settings) -> Self:
        """Build a manager from a backend URL and :class:`~apikeys.Settings`."""
        return cls(url, **cls._options_from_settings(settings))

    async def _ensure_schema(self) -> None:
        if self._schema_ready or not self.create_schema:
            return
        if self._schema_lock is None:
            self._schema_lock = asyncio.Lock()
        async with self._schema_lock:
            if not self._schema_ready:
                async with self.engine.begin() as connection:
                    await connection.run_sync(self._schema_setup)
                self._schema_ready = True

    async def _perform(self, request: _Request) -> Any:
        if isinstance(request, _Hash):
            async with self.hash_cap.hold_async():
                return await asyncio.to_thread(self._hash, request.key)
        if isinstance(request, _Verify):
            async with self.hash_cap.hold_async():
                return await asyncio.to_thread(self._verify, request)
        try:
            await self._ensure_schema()
            if self._io_lock is None:
                return await self._execute(request)
            async with self._io_lock:
                return await self._execute(request)
        except sa_exc.IntegrityError as exc:
            raise _Conflict from exc
        except sa_exc.SQLAlchemyError as exc:
            raise _database_error(exc, self.engine.url) from exc
        except OSError as exc:  # drivers may surface socket errors unwrapped
            raise BackendUnavailableError(
                "database unavailable (connection)", retry_after=1
            ) from exc

    async def _execute(self, request: _Query | _Write | _Transaction) -> Any:
        if isinstance(request, _Query):
            async with self.engine.connect() as connection:
                return _rows_of(await connection.execute(request.statement, request.parameters))
        if isinstance(request, _Transaction):
            async with self.engine.begin() as connection:
                return await connection.run_sync(request.body)
        async with self.engine.begin() as connection:
            counts = [(await connection.execute(s)).rowcount for s in request.statements]
            if request.require_rows and 0 in counts:
                await connection.rollback()
                raise _Conflict
            return counts

    async def validate_api_key(
        self, secret: str, *, required_scopes: Iterable[str] = ()
    ) -> VerifiedKey:
        """Validate a presented key; see :meth:`apikeys.AsyncKeyManager.validate_api_key`."""
        # No call for the usual () (what every integration passes when a route needs no scope).
        required = () if required_scopes == () else required_scopes_of(required_scopes)
        checked = self._before_io(secret, required)
        if isinstance(checked, VerifiedKey):
            return checked
        return await run_async(self._validate_flow(checked, required), self._perform)

    async def close(self) -> None:
        """Dispose of the engine's connection pool."""
        await self.engine.dispose()


__all__ = [
    "SCHEMA_VERSION",
    "AsyncSQLAlchemyKeyManager",
    "SQLAlchemyKeyManager",
    "UTCDateTime",
    "alembic_render_item",
    "api_keys_table",
    "metadata",
    "schema_version_table",
]
