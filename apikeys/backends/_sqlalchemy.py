"""The IO-free half of the SQLAlchemy backend: schema, statements, URLs and flows.

The tables (:data:`metadata`), the statements built once, the transaction
bodies that run under the per-owner lock, and :class:`SQLAlchemyBase`, whose
operations are generators (see :mod:`apikeys._flow`) that yield the IO
requests :class:`Query`, :class:`Write`, :class:`Transaction`, :class:`Hash`
and :class:`Verify`. The managers in :mod:`apikeys.backends.sqlalchemy`
perform them on a sync or an async engine, argon2 in a worker thread there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import unquote

from apikeys._arguments import (
    KEEP,
    Keep,
    build_create_request,
    check_grace,
    check_key_id,
    check_limit_change,
    check_owner,
    check_page,
    check_reason,
    check_user_id,
)
from apikeys._cache import DEFAULT_CACHE_MAX_ENTRIES, DEFAULT_CACHE_TTL, VerificationCache
from apikeys._config import (
    DEFAULT_ARGON2_MEMORY_COST,
    DEFAULT_ARGON2_PARALLELISM,
    DEFAULT_ARGON2_TIME_COST,
    DEFAULT_MAX_ACTIVE_KEYS_PER_OWNER,
    Settings,
    reject_removed_settings,
)
from apikeys._errors import (
    APIKeysError,
    BackendUnavailableError,
    ConfigurationError,
    InvalidInputError,
    InvalidKeyError,
    KeyLimitReachedError,
    KeyNotFoundError,
    MissingDependencyError,
    RateLimitedError,
)
from apikeys._events import DEFAULT_SUSPICIOUS_FAILURES, DEFAULT_SUSPICIOUS_WINDOW, EventReporter
from apikeys._expiry import (
    MAX_LIFETIME,
    Expiration,
    WallClock,
    as_utc,
    check_clock,
    parse_expiration,
    utcnow,
)
from apikeys._keyformat import (
    DEFAULT_PREFIX,
    ParsedKey,
    generate_key,
    try_parse_key,
    validate_prefix,
)
from apikeys._keylimits import Quota, RateLimit
from apikeys._keystate import check_key_state, check_scopes
from apikeys._limitstorage import KeyLimits, anchor_at, read_quota, read_rate_limit
from apikeys._meter import Allowance, Counter, SpendPlan, plan_spend, settle
from apikeys._models import APIKey, APIKeyPage, NewAPIKey, VerifiedKey
from apikeys._ratelimit import DEFAULT_MAX_TRACKED_KEYS, ConcurrencyCap
from apikeys._revocations import RevocationChannel
from apikeys._usage import UsageBatch, UsageLog
from apikeys.backends._shells import FlowBackend, Spend, meter_for, meter_limits_of, with_usage

try:
    import sqlalchemy as sa
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.engine import make_url
except ImportError as exc:
    raise MissingDependencyError("sqlalchemy", "sqlalchemy") from exc
try:
    from argon2 import PasswordHasher, Type
    from argon2.exceptions import InvalidHashError, VerificationError
except ImportError as exc:
    raise MissingDependencyError("argon2", "sqlalchemy") from exc

# Needs SQLAlchemy: imported once the guards above have run.
from apikeys.backends._postgres_channel import notify

logger = logging.getLogger("apikeys.sqlalchemy")

SCHEMA_VERSION = 3
"""Version of the tables below; bumped (with a migration note) whenever they change.

2 added ``apikeys_keys.created_by`` (and its index); 3 added the key's limits
(``rate_limit``, ``rate_window``, ``quota_limit``, ``quota_period``, ``quota_anchor``),
its quota counter (``quota_used``, ``quota_period_start``) and its ``meter_id`` (and its
index). The manager brings an older database to this version on first use when
``create_schema`` is on.
"""

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
    sa.Column("rate_limit", sa.BigInteger, nullable=True, comment="calls per rate window"),
    sa.Column("rate_window", sa.Integer, nullable=True, comment="rate window, seconds"),
    sa.Column("quota_limit", sa.BigInteger, nullable=True, comment="credits per quota period"),
    sa.Column("quota_period", sa.Integer, nullable=True, comment="seconds; NULL: no refill"),
    sa.Column("quota_anchor", UTCDateTime, nullable=True, comment="start of the first period"),
    sa.Column(
        "quota_used",
        sa.BigInteger,
        nullable=False,
        server_default=sa.text("0"),
        comment="credits spent in the period starting at quota_period_start",
    ),
    sa.Column("quota_period_start", sa.BigInteger, nullable=True, comment="Unix seconds"),
    sa.Column(
        "meter_id",
        sa.String(32),
        nullable=False,
        comment="id of the key whose counts this key spends: the first of its rotations",
    ),
    sa.Index("ix_apikeys_keys_user_id_created_at", "user_id", "created_at"),
    sa.Index("ix_apikeys_keys_created_by", "created_by"),
    sa.Index("ix_apikeys_keys_meter_id", "meter_id"),
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
# of the same shape: either way one row of the same columns is fetched and decoded
# (its timestamps and JSON cost tens of microseconds), so a wrong secret for a known
# id takes the time an unknown id takes (benchmarks/timing.py).
def _validation_statement(decoy: Iterable[sa.ColumnElement[Any]]) -> sa.Executable:
    return (
        sa.union_all(
            sa.select(sa.false().label("decoy"), *api_keys_table.c).where(
                api_keys_table.c.id == sa.bindparam("key_id")
            ),
            sa.select(sa.true(), *decoy),
        )
        .order_by("decoy")
        .limit(1)
    )


# Elsewhere the decoy's values are bound with their columns' types.
_SELECT_FOR_VALIDATION = _validation_statement(
    sa.bindparam(f"decoy_{column.name}", type_=column.type) for column in api_keys_table.c
)
# On these, the decoy's values are written into the statement as text, once per
# manager: each call then binds one value, not thirteen. Either database gives a
# text literal the type of the column above it in the UNION.
_INLINE_DECOY_DIALECTS = frozenset({"sqlite", "postgresql"})


def _decoy_literal(
    column: sa.Column[Any], value: Any, dialect: sa.Dialect
) -> sa.ColumnElement[Any]:
    """``value`` of ``column`` as SQL text for ``dialect``: stored as the column stores it."""
    if value is None:
        return sa.null()
    if isinstance(value, int):
        return sa.literal_column(str(value))
    if dialect.name == "sqlite":
        # SQLite keeps timestamps and JSON as text: the text its bind processors write.
        encode = column.type.dialect_impl(dialect).bind_processor(dialect)
        text = str(value if encode is None else encode(value))
    elif isinstance(value, datetime):
        text = value.isoformat()
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value)
    rendered = sa.literal(text, sa.String()).compile(
        dialect=dialect, compile_kwargs={"literal_binds": True}
    )
    return sa.literal_column(str(rendered))


_RECORD_USES = (
    sa.update(api_keys_table)
    .where(
        api_keys_table.c.id == sa.bindparam("used_id"),
        sa.or_(
            api_keys_table.c.last_used_at.is_(None),
            api_keys_table.c.last_used_at < sa.bindparam("used_at", type_=UTCDateTime),
        ),
    )
    .values(last_used_at=sa.bindparam("used_at", type_=UTCDateTime))
)


_RATE_COLUMNS = ("rate_limit", "rate_window")
_QUOTA_COLUMNS = ("quota_limit", "quota_period", "quota_anchor", "quota_used", "quota_period_start")
# What a rotation copies to the replacement, so that it spends from the same counts.
_CARRIED_COLUMNS = (*_RATE_COLUMNS, *_QUOTA_COLUMNS)


def _seconds(duration: timedelta | None) -> int | None:
    return None if duration is None else int(duration.total_seconds())


def rate_limit_values(rate_limit: RateLimit | None) -> dict[str, Any]:
    """The columns that store ``rate_limit`` (``None``: no rate limit)."""
    if rate_limit is None:
        return dict.fromkeys(_RATE_COLUMNS)
    return {"rate_limit": rate_limit.limit, "rate_window": _seconds(rate_limit.window)}


def quota_values(quota: Quota | None, now: datetime) -> dict[str, Any]:
    """The columns that store ``quota`` set at ``now``: its first period starts then,
    with nothing spent (``None``: no quota)."""
    if quota is None:
        return {**dict.fromkeys(_QUOTA_COLUMNS), "quota_used": 0}
    return {
        "quota_limit": quota.limit,
        "quota_period": _seconds(quota.period),
        "quota_anchor": anchor_at(now),
        "quota_used": 0,
        "quota_period_start": None,
    }


def limits_of(row: Mapping[str, Any]) -> KeyLimits:
    """The limits a key's row stores.

    Raises:
        ValueError: The columns hold no limit this release can read (see
            :mod:`apikeys._limitstorage`).
    """
    quota = read_quota(row["quota_limit"], row["quota_period"], row["quota_anchor"])
    return KeyLimits(
        rate_limit=read_rate_limit(row["rate_limit"], row["rate_window"]),
        quota=quota,
        quota_anchor=None if quota is None else row["quota_anchor"],
        # NULL only in a row an older release wrote and no upgrade has touched.
        meter_id=row["meter_id"] or row["id"],
    )


# IO requests yielded by the flows -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    """Run a SELECT with bound ``parameters``; the result is a list of row mappings."""

    statement: sa.Executable
    parameters: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Write:
    """Run statements in one transaction; the result is their row counts."""

    statements: tuple[sa.Executable, ...]


@dataclass(frozen=True, slots=True)
class Transaction:
    """Run ``body`` on a connection inside one transaction; the result is its return value.

    ``body`` is plain synchronous code: the async twin runs it through
    ``AsyncConnection.run_sync``. Whatever it raises rolls the transaction back.
    """

    body: Callable[[sa.Connection], Any]


@dataclass(frozen=True, slots=True)
class Hash:
    """Hash a key with argon2id (CPU-bound); the result is the PHC string."""

    key: str = ""

    def __repr__(self) -> str:
        return "Hash(<secret>)"


@dataclass(frozen=True, slots=True)
class Verify:
    """Check a key against a stored hash (CPU-bound); the result is a bool."""

    secret_hash: str
    key: str = ""

    def __repr__(self) -> str:
        return "Verify(<secret>)"


@dataclass(frozen=True, slots=True)
class WriteMany:
    """Run one statement once per parameter set, in one transaction (an executemany)."""

    statement: sa.Executable
    rows: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class RecordUse:
    """Note that a key was used at ``at``; its ``last_used_at`` is written by the next flush."""

    key_id: str
    at: datetime


SQLRequest = Query | Write | WriteMany | Transaction | Hash | Verify | RecordUse


class Conflict(Exception):
    """A write hit a unique constraint or a row that changed underneath it."""


# Statements run inside one transaction (see Transaction) ----------------------------
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


def _notify_in(connection: sa.Connection, key_ids: Iterable[str]) -> None:
    """On PostgreSQL, announce ``key_ids``' revocation as this transaction commits."""
    if connection.dialect.name == "postgresql":
        for key_id in key_ids:
            connection.execute(notify(key_id))


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
        _notify_in(connection, [key_id, *descendants])
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
        _notify_in(connection, [key_id, *descendants])
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
) -> Callable[[sa.Connection], dict[str, Any]]:
    """Retire the old key, store its replacement and hand its children over to it.

    The replacement counts against the owner's limit (``max_active``) like any new
    key unless it takes the place of an active key at once: with a grace period both
    stay active for a while, and an expired key frees no place. A replacement never
    outlives the key that created the old one. It carries the old key's limits, meter
    and quota counter. Returns the row stored.
    """

    def body(connection: sa.Connection) -> dict[str, Any]:
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
            raise Conflict
        # Read after the retiring update, which holds the old row until this commits: what
        # the old key has spent up to now stays spent for the replacement (no refill).
        old = (
            connection.execute(
                sa.select(*(table.c[name] for name in _CARRIED_COLUMNS), table.c.meter_id).where(
                    table.c.id == old_id
                )
            )
            .mappings()
            .one()
        )
        stored = {
            **values,
            "expires_at": expires_at,
            **{name: old[name] for name in _CARRIED_COLUMNS},
            "meter_id": old["meter_id"] or old_id,
        }
        connection.execute(sa.insert(table).values(**stored))
        connection.execute(
            sa.update(table).where(table.c.created_by == old_id).values(created_by=values["id"])
        )
        _notify_in(connection, [old_id])
        return stored

    return body


@dataclass(frozen=True, slots=True)
class _Updated:
    """What a change of limits found: the row as it is now (None: no such key)."""

    row: Mapping[str, Any] | None
    revoked: bool = False


def _update_limits_in(
    key_id: str, owner: str | None, changes: Mapping[str, Any]
) -> Callable[[sa.Connection], _Updated]:
    """Write ``changes`` to the key's row unless it is unknown, another owner's or revoked."""

    def body(connection: sa.Connection) -> _Updated:
        table = api_keys_table
        found = connection.execute(
            sa.select(table.c.revoked_at).where(
                table.c.id == key_id, *([table.c.user_id == owner] if owner else [])
            )
        ).first()
        if found is None:
            return _Updated(None)
        if found.revoked_at is not None:
            return _Updated(None, revoked=True)
        if changes:
            updated = connection.execute(
                sa.update(table)
                .where(table.c.id == key_id, table.c.revoked_at.is_(None))
                .values(**changes)
            ).rowcount
            if not updated:  # revoked meanwhile
                return _Updated(None, revoked=True)
            # Other processes drop what they cached of the key, old limits included.
            _notify_in(connection, [key_id])
        row = connection.execute(_SELECT_KEY, {"key_id": key_id}).mappings().one()
        return _Updated(dict(row))

    return body


# --- URLs ---------------------------------------------------------------------------


# --- quotas -------------------------------------------------------------------------


def quota_spend_statement(plan: SpendPlan) -> sa.Update:
    """The one statement that charges ``plan``'s quota counter in every row of its meter,
    if it has room: it matches no row when it has not.

    A counter left in an earlier period starts again from zero in the plan's period;
    one already in a later period (a process whose clock runs ahead moved it there) is
    charged as it stands, so clocks that disagree can only grant less, never more.
    During a rotation's grace period both rows of the meter hold the counter and move
    together.
    """
    (counter,) = plan.counters
    table = api_keys_table
    used, start = table.c.quota_used, table.c.quota_period_start
    values: dict[str, Any]
    if counter.window is None:  # a one-off balance: never refilled
        charged: sa.ColumnElement[Any] = used + plan.cost
        values = {"quota_used": charged}
    else:
        current = start >= counter.window.start  # NULL (never spent): false
        charged = sa.case((current, used + plan.cost), else_=sa.literal(plan.cost, sa.BigInteger))
        values = {
            "quota_used": charged,
            "quota_period_start": sa.case((current, start), else_=counter.window.start),
        }
    return (
        sa.update(table)
        .where(table.c.meter_id == plan.meter_id, charged <= counter.limit)
        .values(**values)
    )


def quota_refund_statement(plan: SpendPlan) -> sa.Update:
    """The statement that gives back what :func:`quota_spend_statement` charged for
    ``plan``, if its counter is still in the plan's period (else there is nothing to give)."""
    (counter,) = plan.counters
    table = api_keys_table
    used, start = table.c.quota_used, table.c.quota_period_start
    same_period = start.is_(None) if counter.window is None else start == counter.window.start
    return (
        sa.update(table)
        .where(table.c.meter_id == plan.meter_id, same_period, used >= plan.cost)
        .values(quota_used=used - plan.cost)
    )


def quota_count_in(rows: list[Mapping[str, Any]], counter: Counter) -> int:
    """What ``rows`` (of one meter) have spent in ``counter``'s period."""
    if not rows:
        return counter.limit  # the key is gone: nothing left to spend
    row = rows[0]
    if counter.window is None or (row["quota_period_start"] or 0) >= counter.window.start:
        return int(row["quota_used"])
    return 0


def _spend_quota_in(plan: SpendPlan) -> Callable[[sa.Connection], int | None]:
    """Charge ``plan``'s quota; the count after charging, or ``None`` when it had no room."""

    def body(connection: sa.Connection) -> int | None:
        statement, used = quota_spend_statement(plan), api_keys_table.c.quota_used
        if connection.dialect.update_returning:
            count = connection.execute(statement.returning(used)).scalar()
            return None if count is None else int(count)
        # A database without UPDATE … RETURNING: read it back in the same transaction.
        if connection.execute(statement).rowcount == 0:
            return None
        read = sa.select(used).where(api_keys_table.c.meter_id == plan.meter_id).limit(1)
        return int(connection.execute(read).scalar_one())

    return body


def normalize_url(url: str | sa.URL, *, asynchronous: bool) -> sa.URL:
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


def is_memory_sqlite(url: sa.URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


# What SQLAlchemy's SQLite dialect reads as a true ``uri`` query value.
_TRUE_WORDS = frozenset({"true", "yes", "on", "y", "t", "1"})


def _query_value(query: Mapping[str, str | tuple[str, ...]], name: str) -> str:
    value = query.get(name, "")
    # A repeated parameter arrives as a tuple; the driver takes the last one.
    return (value if isinstance(value, str) else value[-1] if value else "").strip().lower()


def sqlite_file_of(url: str | sa.URL) -> str | None:
    """Return the file a ``sqlite:`` URL opens, or ``None`` when it opens no file.

    ``None`` for other databases, for in-memory and temporary databases
    (``sqlite://``, ``sqlite:///:memory:``, ``file::memory:`` and ``mode=memory``
    URIs) and for URLs SQLAlchemy cannot parse. A SQLite URI
    (``sqlite:///file:keys.db?mode=ro&uri=true``) gives its path, unescaped as
    SQLite does; a relative path is relative to the working directory, as for SQLite.
    """
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError):  # the manager reports a malformed URL
        return None
    if parsed.get_backend_name() != "sqlite":
        return None
    path = parsed.database or ""
    query = parsed.query
    if _query_value(query, "uri") in _TRUE_WORDS and path.startswith("file:"):
        if _query_value(query, "mode") == "memory" or _query_value(query, "vfs") == "memdb":
            return None
        path = path.removeprefix("file:")
        if path.startswith("//"):  # file://localhost/abs or file:///abs: drop the authority
            path = "/" + path[2:].partition("/")[2]
        path = unquote(path)
    return None if path in ("", ":memory:") else path


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """The ``sqlite:`` URL of a database file (an absolute path gets four slashes)."""
    return f"sqlite:///{os.fspath(path)}"


class SQLAlchemyBase(FlowBackend):
    """Everything but the IO: statements, row mapping and the operation flows.

    Its arguments are those of :class:`apikeys.backends.sqlalchemy.SQLAlchemyKeyManager`,
    documented there.
    """

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
        redis_url: str | None = None,
        clock: WallClock = utcnow,
        **removed: object,
    ) -> None:
        reject_removed_settings(removed, type(self).__name__)
        self.clock = check_clock(clock)
        self.redis_url = redis_url
        self.key_prefix = validate_prefix(key_prefix)
        if max_active_keys_per_owner < 0:
            raise ConfigurationError("max_active_keys_per_owner must be >= 0 (0: no limit)")
        self.max_active_keys_per_owner = max_active_keys_per_owner
        self.cache = VerificationCache(cache_ttl, cache_max_entries, wall_clock=self.clock)
        if not 0 <= last_used_interval <= MAX_LIFETIME.total_seconds():
            raise ConfigurationError("last_used_interval must be >= 0 and at most 100 years")
        self.timeout = timeout
        try:
            self.hash_cap = ConcurrencyCap(max_concurrent_hashes, timeout=timeout)
            self.events = EventReporter(
                "sqlalchemy",
                suspicious_failures=suspicious_failures,
                suspicious_window=suspicious_window,
                max_tracked=max_tracked_key_ids,
                redis_url=redis_url,
            )
        except ValueError as exc:
            raise ConfigurationError(f"invalid abuse-control settings: {exc}") from None
        # Seconds between two flushes of usage; 0: written during each validation.
        self.last_used_interval = float(last_used_interval)
        self.usage = UsageLog()
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
        # revocation set, a scope, no metadata), so it decodes like one. Written into
        # the statement, or bound, by _validation_lookup_for once the engine exists.
        decoy_time = self.clock()
        self._decoy_row: dict[str, Any] = {
            f"decoy_{name}": value
            for name, value in {
                "id": generate_key(self.key_prefix).id,
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
                **rate_limit_values(None),
                **quota_values(None, decoy_time),
                "meter_id": generate_key(self.key_prefix).id,
            }.items()
        }
        self._schema_ready = False
        self.meter = meter_for(redis_url, self.clock)

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
            "redis_url": settings.redis_url.get_secret_value() if settings.redis_url else None,
            "password_hasher": PasswordHasher(
                time_cost=settings.argon2_time_cost,
                memory_cost=settings.argon2_memory_cost,
                parallelism=settings.argon2_parallelism,
                hash_len=32,
                salt_len=16,
                type=Type.ID,
            ),
        }

    def _revocation_channel_for(self, url: sa.URL) -> RevocationChannel | None:
        """PostgreSQL's own LISTEN/NOTIFY; otherwise Redis when ``redis_url`` is set."""
        if url.get_backend_name() == "postgresql":
            from apikeys.backends._postgres_channel import PostgresRevocationChannel

            return PostgresRevocationChannel(url)
        if self.redis_url is not None:
            from apikeys._redis import RedisRevocationChannel

            return RedisRevocationChannel(self.redis_url)
        return None

    # --- CPU work, shared by both twins ------------------------------------------

    def _hash(self, key: str) -> str:
        return self.hasher.hash(key)

    def _verify(self, request: Verify) -> bool:
        try:
            return self.hasher.verify(request.secret_hash, request.key)
        except (VerificationError, InvalidHashError):
            return False

    # --- row mapping -------------------------------------------------------------

    def _to_api_key(self, row: Mapping[str, Any]) -> APIKey:
        # A use this process noted but has not flushed yet shows at once in its own reads.
        last_used = row["last_used_at"]
        noted = self.usage.latest(row["id"])
        if noted is not None and (last_used is None or noted > last_used):
            last_used = noted
        try:
            limits = limits_of(row)
        except ValueError:
            # Shown without limits, so it can be listed and its limits set again;
            # validation refuses it meanwhile (see _to_verified).
            limits = KeyLimits()
        return APIKey(
            id=row["id"],
            user_id=row["user_id"],
            name=row["name"],
            scopes=tuple(row["scopes"]),
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            last_used_at=last_used,
            revoked_at=row["revoked_at"],
            revocation_reason=row["revocation_reason"],
            metadata=row["metadata"],
            hint=row["hint"],
            created_by=row["created_by"],
            rate_limit=limits.rate_limit,
            quota=limits.quota,
        )

    @staticmethod
    def _to_verified(row: Mapping[str, Any]) -> VerifiedKey:
        """The verified key of ``row``; a key whose limits cannot be read is refused."""
        try:
            limits = limits_of(row)
        except ValueError:
            # Never unlimited by accident: a row edited by hand must be fixed first.
            logger.error(
                "API key %s has limits this release cannot read; it is refused until"
                " they are set again (update_api_key_limits)",
                row["id"],
            )
            raise InvalidKeyError(key_id=row["id"]) from None
        return VerifiedKey(
            id=row["id"],
            user_id=row["user_id"],
            name=row["name"],
            scopes=tuple(row["scopes"]),
            expires_at=row["expires_at"],
            metadata=row["metadata"],
            rate_limit=limits.rate_limit,
            quota=limits.quota,
            quota_anchor=limits.quota_anchor,
            meter_id=limits.meter_id or row["id"],
        )

    @staticmethod
    def _select_key(key_id: str) -> Query:
        return Query(_SELECT_KEY, {"key_id": key_id})

    def _select_for_validation(self, key_id: str) -> Query:
        """The row of ``key_id`` with its hash, or the decoy row: always one row."""
        statement, decoy = self._validation_lookup
        return Query(statement, {**decoy, "key_id": key_id})

    def _validation_lookup_for(self, dialect: sa.Dialect) -> tuple[sa.Executable, dict[str, Any]]:
        """The validation statement for ``dialect``, and the decoy values it binds."""
        if dialect.name not in _INLINE_DECOY_DIALECTS:
            return _SELECT_FOR_VALIDATION, self._decoy_row
        statement = _validation_statement(
            _decoy_literal(column, self._decoy_row[f"decoy_{column.name}"], dialect)
            for column in api_keys_table.c
        )
        return statement, {}

    def _fetch_key(
        self, key_id: str, owner: str | None = None
    ) -> Generator[SQLRequest, Any, Mapping[str, Any]]:
        if owner is None:
            rows = yield self._select_key(key_id)
        else:
            rows = yield Query(_SELECT_OWNED_KEY, {"key_id": key_id, "owner": owner})
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
        rate_limit: object,
        quota: object,
    ) -> Generator[SQLRequest, Any, NewAPIKey]:
        request = build_create_request(
            user_id,
            name,
            scopes,
            expiration,
            metadata,
            now=self.clock(),
            created_by=created_by,
            rate_limit=rate_limit,
            quota=quota,
        )
        for _attempt in range(_CREATE_ATTEMPTS):
            new_key = generate_key(self.key_prefix)
            values = {
                "id": new_key.id,
                "user_id": request.user_id,
                "name": request.name,
                "hint": new_key.hint,
                "scopes": list(request.scopes),
                "metadata": request.metadata,
                "created_at": request.now,
                "expires_at": request.expires_at,
                "created_by": request.created_by,
            }
            # A new key spends from a meter of its own, keys minted through /api-keys too.
            limits = {
                **rate_limit_values(request.rate_limit),
                **quota_values(request.quota, request.now),
                "meter_id": new_key.id,
            }
            secret_hash = yield Hash(new_key.key)
            try:
                values["expires_at"] = yield Transaction(
                    _insert_in(
                        {**values, **limits, "secret_hash": secret_hash},
                        request.created_by,
                        self.max_active_keys_per_owner,
                    )
                )
            except Conflict:
                continue  # a lookup id collision (~1 in 10^21): draw another
            self.events.report("created", new_key.id, user_id=request.user_id)
            return NewAPIKey(
                secret=new_key.key,
                scopes=request.scopes,
                rate_limit=request.rate_limit,
                quota=request.quota,
                **_without(values, "scopes"),
            )
        raise BackendUnavailableError("could not store a new key (repeated id conflicts)")

    def _read_presented(self, secret: str) -> ParsedKey:
        parsed = try_parse_key(secret, self.key_prefix)
        if parsed is None:
            raise self._refusal()
        return parsed

    def _validate_flow(
        self, parsed: ParsedKey, required: tuple[str, ...]
    ) -> Generator[SQLRequest, Any, VerifiedKey]:
        secret = parsed.key
        key_id = parsed.id  # the id the key claims (it may not exist)
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
            matched = yield Verify(row["secret_hash"], secret)
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
        return verified

    def _accept(self, row: Mapping[str, Any], secret: str, generation: int) -> VerifiedKey:
        """State checks once ``secret`` is proven to match ``row``; caches the result."""
        check_key_state(
            row["id"],
            revoked=row["revoked_at"] is not None,
            expires_at=row["expires_at"],
            now=self.clock(),
        )
        verified = self._to_verified(row)
        self.cache.put(self.cache.digest(secret), verified, generation=generation)
        return verified

    def _record_use(self, row: Mapping[str, Any], secret: str) -> Generator[SQLRequest, Any, None]:
        """Note the use for the next flush of ``last_used_at``, and upgrade an old hash.

        With ``last_used_interval=0`` there is no flush: ``last_used_at`` is
        written here, in the hash upgrade's write when there is one.
        """
        now = self.clock()
        changes: dict[str, Any] = {}
        if self.hasher.check_needs_rehash(row["secret_hash"]):
            changes["secret_hash"] = yield Hash(secret)
        if self.last_used_interval:
            yield RecordUse(row["id"], now)
        else:
            changes["last_used_at"] = now
        if not changes:
            return
        update = sa.update(api_keys_table).where(api_keys_table.c.id == row["id"]).values(**changes)
        try:
            yield Write((update,))
        except BackendUnavailableError:
            # Verified against the database just now; a failed bookkeeping write
            # (read-only replica, lock) must not turn a valid key away.
            logger.warning("could not record use of API key %s", row["id"])

    def _spend_flow(self, verified: VerifiedKey, cost: int) -> Generator[Any, Any, VerifiedKey]:
        """Charge ``cost`` to the key's quota in the database, then to its rate limit in
        the meter; see :meth:`FlowBackend._spend_flow`.

        The database holds the quota: one conditional ``UPDATE`` per call charges it
        only if it has room, so no restart, crash or Redis loss can grant what was
        spent. Should the rate limit then refuse, a second ``UPDATE`` gives the quota
        back, in the same call; a crash between the two can only leave the quota
        charged for a call that was refused (granting less, never more). The
        refusal then reports the quota as it was before the call.
        """
        limits = meter_limits_of(verified)
        charged: SpendPlan | None = None
        quota = rate_limit = None
        now = self.clock()
        if limits.quota is not None:
            plan = plan_spend(verified.meter_id, replace(limits, rate_limit=None), cost, now)
            count = yield Transaction(_spend_quota_in(plan))
            spent = count is not None
            if not spent:
                count = yield from self._quota_count(plan)
            quota = settle(plan, spent, [count]).quota  # raises when not spent
            charged = plan
        if limits.rate_limit is not None:
            only_rate = replace(limits, quota=None, quota_anchor=None)
            try:
                allowance = yield Spend(verified.meter_id, only_rate, cost)
            except BaseException as exc:
                if charged is not None:
                    yield from self._refund_quota(charged)
                if isinstance(exc, RateLimitedError) and exc.usage is not None:
                    before = None if quota is None else quota.given_back(cost)
                    exc.usage = replace(exc.usage, quota=before)
                raise
            rate_limit = allowance.rate_limit
        return with_usage(verified, Allowance(rate_limit, quota, now))

    @staticmethod
    def _quota_count(plan: SpendPlan) -> Generator[Any, Any, int]:
        """What ``plan``'s quota has spent, read after it refused ``plan``'s cost."""
        table = api_keys_table
        read = sa.select(table.c.quota_used, table.c.quota_period_start).where(
            table.c.meter_id == plan.meter_id
        )
        rows = yield Query(read.limit(1))
        counter = plan.counters[0]
        # At least what refuses the cost: the period may have ended since the UPDATE.
        return max(quota_count_in(rows, counter), counter.limit - plan.cost + 1)

    def _refund_quota(self, plan: SpendPlan) -> Generator[Any, Any, None]:
        try:
            yield Write((quota_refund_statement(plan),))
        except APIKeysError:
            # The call is refused all the same: the quota keeps a charge it should not.
            logger.warning("could not give back the quota of meter %s", plan.meter_id)

    @staticmethod
    def usage_write(batch: UsageBatch) -> WriteMany:
        """The one statement that writes a batch of uses: it never moves ``last_used_at`` back,
        so processes sharing the store may flush in any order."""
        return WriteMany(
            _RECORD_USES, tuple({"used_id": key_id, "used_at": at} for key_id, at in batch.items())
        )

    def _list_flow(
        self, user_id: str, include_invalid: bool, limit: int, offset: int
    ) -> Generator[SQLRequest, Any, APIKeyPage]:
        check_user_id(user_id)
        limit, offset = check_page(limit, offset)
        table = api_keys_table
        condition = table.c.user_id == user_id
        if not include_invalid:
            now = self.clock()
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
        rows = yield Query(page)
        counted = yield Query(sa.select(sa.func.count()).select_from(table).where(condition))
        total = int(next(iter(counted[0].values())))
        items = tuple(self._to_api_key(row) for row in rows)
        return APIKeyPage(items=items, total=total, limit=limit, offset=offset)

    def _get_flow(self, key_id: str, user_id: str | None) -> Generator[SQLRequest, Any, APIKey]:
        row = yield from self._fetch_key(check_key_id(key_id), check_owner(user_id))
        return self._to_api_key(row)

    def _revoke_flow(
        self, key_id: str, reason: str | None, user_id: str | None
    ) -> Generator[SQLRequest, Any, APIKey]:
        key_id, reason, owner = check_key_id(key_id), check_reason(reason), check_owner(user_id)
        try:
            ended: _Ended = yield Transaction(_revoke_in(key_id, owner, reason, self.clock()))
        finally:
            self.cache.invalidate(key_id)
        if ended.row is None:
            raise KeyNotFoundError(key_id=key_id)
        yield from self._announced([key_id, *ended.descendants])
        owner = ended.row["user_id"]
        self._ended_descendants(ended, owner)
        if ended.changed:  # not when it was revoked already
            self.events.report("revoked", key_id, user_id=owner)
        return self._to_api_key(ended.row)

    def _delete_flow(self, key_id: str, user_id: str | None) -> Generator[SQLRequest, Any, None]:
        key_id, owner = check_key_id(key_id), check_owner(user_id)
        try:
            ended: _Ended = yield Transaction(_delete_in(key_id, owner, self.clock()))
        finally:
            self.cache.invalidate(key_id)
        if ended.row is None:
            raise KeyNotFoundError(key_id=key_id)
        yield from self._announced([key_id, *ended.descendants])
        self._ended_descendants(ended, ended.row["user_id"])
        self.events.report("deleted", key_id)

    def _ended_descendants(self, ended: _Ended, user_id: str) -> None:
        for descendant in ended.descendants:
            self.cache.invalidate(descendant)
            self.events.report("revoked", descendant, user_id=user_id)

    def _rotate_flow(
        self, key_id: str, grace: timedelta | float, expiration: Expiration | Keep
    ) -> Generator[SQLRequest, Any, NewAPIKey]:
        key_id, grace = check_key_id(key_id), check_grace(grace)
        old = yield from self._fetch_key(key_id)
        now = self.clock()
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
        secret_hash = yield Hash(new_key.key)
        values = {
            "id": new_key.id,
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
            stored = yield Transaction(
                _rotate_in(
                    key_id,
                    retire,
                    {**values, "secret_hash": secret_hash},
                    self.max_active_keys_per_owner,
                    bool(grace),
                )
            )
        except Conflict:
            raise InvalidInputError(
                "the key was revoked or rotated meanwhile", field="key_id", key_id=key_id
            ) from None
        finally:
            self.cache.invalidate(key_id)
        yield from self._announced([key_id])
        self.events.report("rotated", key_id, user_id=old["user_id"], new_key_id=new_key.id)
        # The replacement carries the old key's limits and spends from its meter and
        # counts: rotating never refills a quota nor resets a rate limit.
        replacement = self._to_api_key(
            {
                **stored,
                "last_used_at": None,
                "revoked_at": None,
                "revocation_reason": None,
            }
        )
        return NewAPIKey(secret=new_key.key, **replacement.model_dump())

    def _update_limits_flow(
        self, key_id: str, rate_limit: object, quota: object, user_id: str | None
    ) -> Generator[SQLRequest, Any, APIKey]:
        key_id, owner = check_key_id(key_id), check_owner(user_id)
        change = check_limit_change(rate_limit, quota)
        changes: dict[str, Any] = {}
        if not isinstance(change.rate_limit, Keep):
            changes.update(rate_limit_values(change.rate_limit))
        if not isinstance(change.quota, Keep):
            changes.update(quota_values(change.quota, self.clock()))
        try:
            updated: _Updated = yield Transaction(_update_limits_in(key_id, owner, changes))
        finally:
            self.cache.invalidate(key_id)
        if updated.revoked:
            raise InvalidInputError(
                "a revoked key's limits cannot be changed", field="key_id", key_id=key_id
            )
        if updated.row is None:
            raise KeyNotFoundError(key_id=key_id)
        if changes:
            yield from self._announced([key_id])
        return self._to_api_key(updated.row)

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


# Columns and indexes added since version 1, and the clause each new column is added with.
_ADDED_COLUMNS = {
    "created_by": "",  # version 2
    **dict.fromkeys(("rate_limit", "rate_window", "quota_limit", "quota_period"), ""),
    "quota_anchor": "",
    "quota_used": " NOT NULL DEFAULT 0",
    "quota_period_start": "",
    "meter_id": "",  # filled and made NOT NULL below
}
_ADDED_INDEXES = ("ix_apikeys_keys_created_by", "ix_apikeys_keys_meter_id")


def _upgrade_schema(connection: sa.Connection) -> None:
    """Bring version 1 or 2 tables to the current version: add the missing columns and
    indexes; every existing key spends from a meter of its own (``meter_id = id``)."""
    table = api_keys_table
    columns = {column["name"] for column in sa.inspect(connection).get_columns(table.name)}
    for name, clause in _ADDED_COLUMNS.items():
        if name not in columns:
            type_ = table.c[name].type.compile(dialect=connection.dialect)
            connection.execute(
                sa.text(f"ALTER TABLE {table.name} ADD COLUMN {name} {type_}{clause}")
            )
    if "meter_id" not in columns:
        connection.execute(sa.update(table).values(meter_id=table.c.id))
        if connection.dialect.name != "sqlite":  # SQLite cannot add NOT NULL to a column
            connection.execute(
                sa.text(f"ALTER TABLE {table.name} ALTER COLUMN meter_id SET NOT NULL")
            )
    for index in table.indexes:
        if index.name in _ADDED_INDEXES:
            index.create(connection, checkfirst=True)


def _without(values: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: value for name, value in values.items() if name not in names}


__all__ = [
    "SCHEMA_VERSION",
    "Conflict",
    "Hash",
    "Query",
    "SQLAlchemyBase",
    "SQLRequest",
    "Transaction",
    "UTCDateTime",
    "Verify",
    "Write",
    "alembic_render_item",
    "api_keys_table",
    "is_memory_sqlite",
    "metadata",
    "normalize_url",
    "schema_version_table",
    "sqlite_file_of",
    "sqlite_url",
]
