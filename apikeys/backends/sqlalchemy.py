"""The local backend: keys in any SQL database through SQLAlchemy, secrets as argon2id hashes.

SQLite is the embedded default, PostgreSQL the production choice::

    from apikeys.backends.sqlalchemy import SQLAlchemyKeyManager

    manager = SQLAlchemyKeyManager("sqlite:///apikeys.db")
    new = manager.create_api_key("user_123", "CI", ["read:data"])
    manager.validate_api_key(new.secret)

Every operation is written once, IO-free, in a private base, as a generator
that yields IO requests; :class:`SQLAlchemyKeyManager` performs them on a
sync engine, :class:`AsyncSQLAlchemyKeyManager` on an async engine, with the
argon2 work in a worker thread so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import math
import threading
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

from apikeys._config import Settings
from apikeys._errors import BackendUnavailableError, ConfigurationError, MissingDependencyError
from apikeys._usage import AsyncUsageFlusher, UsageBatch, UsageFlusher
from apikeys.backends._shells import Announce, AsyncShell, Spend, SyncShell
from apikeys.backends._sqlalchemy import (
    SCHEMA_VERSION,
    Conflict,
    Hash,
    Query,
    RecordUse,
    SQLAlchemyBase,
    SQLRequest,
    Transaction,
    UTCDateTime,
    Verify,
    Write,
    WriteMany,
    alembic_render_item,
    api_keys_table,
    is_memory_sqlite,
    metadata,
    normalize_url,
    schema_version_table,
)

try:
    import sqlalchemy as sa
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
    from sqlalchemy.pool import StaticPool
except ImportError as exc:
    raise MissingDependencyError("sqlalchemy", "sqlalchemy") from exc

if TYPE_CHECKING:
    from typing import Self

EngineT = TypeVar("EngineT", sa.Engine, AsyncEngine)

DEFAULT_URL = "sqlite:///apikeys.db"

# Named by its public path, as Alembic's autogenerate and reprs print it.
UTCDateTime.__module__ = __name__


# --- engines ---------------------------------------------------------------------------


def _make_engine(url: str | sa.URL, *, asynchronous: bool, timeout: float) -> Any:
    """Build the engine, turning a bad URL or a missing driver into a ConfigurationError."""
    try:
        normalized = normalize_url(url, asynchronous=asynchronous)
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


def _engine_options(url: sa.URL, timeout: float) -> dict[str, Any]:
    """Engine options; ``timeout`` bounds every wait (a lock, a connection, the pool)."""
    options: dict[str, Any] = {"hide_parameters": True}
    if url.get_backend_name() == "sqlite":
        # SQLite's busy timeout: how long a write waits for another connection's lock.
        options["connect_args"] = {"check_same_thread": False, "timeout": timeout}
        if is_memory_sqlite(url):
            # One shared connection, or each connection would see its own empty database.
            options["poolclass"] = StaticPool
    else:
        # No pre-ping (a round trip on every checkout): a pooled connection found
        # dead is replaced and its request run again instead (see _replayable).
        options["pool_timeout"] = timeout
        if url.get_driver_name() in ("psycopg", "psycopg2"):
            # libpq counts whole seconds and refuses less than 2.
            options["connect_args"] = {"connect_timeout": max(2, math.ceil(timeout))}
    return options


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


def _reader_of(engine: EngineT) -> EngineT:
    """The engine that runs a :class:`Query`: one statement, so no transaction around it.

    On a server, a read inside a transaction costs three round trips (``BEGIN``,
    the query, ``ROLLBACK`` when the connection goes back to the pool); in
    autocommit mode it is one. SQLite's driver opens no transaction for a read.
    """
    if engine.dialect.name == "sqlite":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def _rows_of(result: sa.CursorResult[Any]) -> list[sa.RowMapping]:
    return list(result.mappings().all())


# Marks a pooled connection that has served a request; the pool clears it when it
# replaces the driver connection.
_SERVED = "apikeys_served"


def _replayable(exc: sa_exc.DBAPIError, served: bool) -> bool:
    """Whether a request that failed with ``exc`` before any commit may run once more.

    Only when the connection lost was a pooled one that had served before, as
    after a restart, an idle timeout or a terminated session: nothing of the
    request was committed (a write commits after the guarded part, and a
    session that ends rolls its transaction back), and the engine has
    invalidated the pool's connections as old as it. A connection opened for
    the request that fails, or any other error, ends the request.
    """
    return served and exc.connection_invalidated


class SQLAlchemyKeyManager(SyncShell, SQLAlchemyBase):
    """Synchronous manager over a SQLAlchemy engine; safe to share between threads.

    Args:
        url: A SQLAlchemy URL (``sqlite:///apikeys.db``, ``postgresql+psycopg://…``)
            or an :class:`sqlalchemy.Engine` you own.

    Keyword Args:
        key_prefix: Prefix of issued keys (``apk``).
        cache_ttl: Seconds a successful validation is served from memory; ``0``
            disables the cache. It bounds how long another process may still
            accept a key after it is revoked.
        cache_max_entries: Bound on cached validations.
        last_used_interval: Seconds between two writes of ``last_used_at``. A
            validation only notes the use in memory; a background thread (a task
            for the async manager) writes the uses noted since its last run in one
            statement, and once more at :meth:`close`. ``0`` writes it during
            each validation that reaches the database instead.
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
        redis_url: Redis shared by every process. On SQLite, revocations are
            announced there and every process drops the key from its cache at
            once (PostgreSQL needs no Redis for that: the revoking transaction
            sends a ``NOTIFY``). While the channel is down, the cache is off.
        clock: The wall clock (a callable returning an aware UTC ``datetime``)
            that stamps creations, revocations and uses, and that expiry is
            checked against, the cache's included; tests move it instead of
            waiting. Cache entries age by a monotonic clock of their own.
    """

    def __init__(self, url: str | sa.URL | sa.Engine = DEFAULT_URL, **options: Any) -> None:
        super().__init__(**options)
        if isinstance(url, sa.Engine):
            self.engine = url
        else:
            self.engine = _make_engine(url, asynchronous=False, timeout=self.timeout)
        self._validation_lookup = self._validation_lookup_for(self.engine.dialect)
        self._reader = _reader_of(self.engine)
        self._schema_lock = threading.Lock()
        # An in-memory database is one shared connection: transactions of two
        # threads on it would commit or roll back each other's work.
        self._io_lock: AbstractContextManager[Any] = (
            threading.Lock() if is_memory_sqlite(self.engine.url) else nullcontext()
        )
        self._usage_flusher = UsageFlusher(self.usage, self._write_usage, self.last_used_interval)
        self._hear_revocations_on(self._revocation_channel_for(self.engine.url))

    @classmethod
    def from_settings(cls, url: str, settings: Settings) -> Self:
        """Build a manager from a backend URL and :class:`~apikeys.Settings`."""
        return cls(url, **cls._options_from_settings(settings))

    def _write_usage(self, batch: UsageBatch) -> None:
        self._perform(self.usage_write(batch))

    def _ensure_schema(self) -> None:
        if self._schema_ready or not self.create_schema:
            return
        with self._schema_lock:
            if not self._schema_ready:
                with self.engine.begin() as connection:
                    self._schema_setup(connection)
                self._schema_ready = True

    def _perform(self, request: SQLRequest | Announce | Spend) -> Any:
        if isinstance(request, Announce):
            return self._announce(request)
        if isinstance(request, Spend):
            return self._spend(request)
        if isinstance(request, RecordUse):
            self.usage.record(request.key_id, request.at)
            self._usage_flusher.start()
            return None
        if isinstance(request, Hash):
            with self.hash_cap.hold():
                return self._hash(request.key)
        if isinstance(request, Verify):
            with self.hash_cap.hold():
                return self._verify(request)
        try:
            self._ensure_schema()
            with self._io_lock:
                return self._execute(request)
        except sa_exc.IntegrityError as exc:
            raise Conflict from exc
        except sa_exc.SQLAlchemyError as exc:
            raise _database_error(exc, self.engine.url) from exc

    def _execute(self, request: Query | Write | WriteMany | Transaction) -> Any:
        engine = self._reader if isinstance(request, Query) else self.engine
        for attempt in (1, 2):
            with engine.connect() as connection:
                info = connection.info
                served = info.get(_SERVED, False)
                try:
                    result = self._run(connection, request)
                except sa_exc.DBAPIError as exc:
                    if attempt == 1 and _replayable(exc, served):
                        continue
                    raise
                if not isinstance(request, Query):
                    connection.commit()
                info[_SERVED] = True
                return result
        raise AssertionError("unreachable: the second attempt returns or raises")

    @staticmethod
    def _run(connection: sa.Connection, request: Query | Write | WriteMany | Transaction) -> Any:
        """Run ``request`` on ``connection``, a write in a transaction left uncommitted."""
        if isinstance(request, Query):
            return _rows_of(connection.execute(request.statement, request.parameters))
        connection.begin()
        if isinstance(request, Transaction):
            return request.body(connection)
        if isinstance(request, WriteMany):
            connection.execute(request.statement, list(request.rows))
            return None
        return [connection.execute(s).rowcount for s in request.statements]

    def close(self) -> None:
        """Write the uses not yet written, stop listening for revocations and dispose
        of the engine's connection pool."""
        self._usage_flusher.close()
        self._stop_hearing()
        self.engine.dispose()


class AsyncSQLAlchemyKeyManager(AsyncShell, SQLAlchemyBase):
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
        self._reader = _reader_of(self.engine)
        self._schema_lock: asyncio.Lock | None = None
        # See SQLAlchemyKeyManager: tasks must not interleave on the one connection.
        self._io_lock: asyncio.Lock | None = (
            asyncio.Lock() if is_memory_sqlite(self.engine.url) else None
        )
        self._usage_flusher = AsyncUsageFlusher(
            self.usage, self._write_usage, self.last_used_interval
        )
        self._hear_revocations_on(self._revocation_channel_for(self.engine.url))

    @classmethod
    def from_settings(cls, url: str, settings: Settings) -> Self:
        """Build a manager from a backend URL and :class:`~apikeys.Settings`."""
        return cls(url, **cls._options_from_settings(settings))

    async def _write_usage(self, batch: UsageBatch) -> None:
        await self._perform(self.usage_write(batch))

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

    async def _perform(self, request: SQLRequest | Announce | Spend) -> Any:
        if isinstance(request, Announce):
            return await asyncio.to_thread(self._announce, request)
        if isinstance(request, Spend):
            return await self._spend_async(request)
        if isinstance(request, RecordUse):
            self.usage.record(request.key_id, request.at)
            self._usage_flusher.start()
            return None
        if isinstance(request, Hash):
            async with self.hash_cap.hold_async():
                return await asyncio.to_thread(self._hash, request.key)
        if isinstance(request, Verify):
            async with self.hash_cap.hold_async():
                return await asyncio.to_thread(self._verify, request)
        try:
            await self._ensure_schema()
            if self._io_lock is None:
                return await self._execute(request)
            async with self._io_lock:
                return await self._execute(request)
        except sa_exc.IntegrityError as exc:
            raise Conflict from exc
        except sa_exc.SQLAlchemyError as exc:
            raise _database_error(exc, self.engine.url) from exc
        except OSError as exc:  # drivers may surface socket errors unwrapped
            raise BackendUnavailableError(
                "database unavailable (connection)", retry_after=1
            ) from exc

    async def _execute(self, request: Query | Write | WriteMany | Transaction) -> Any:
        engine = self._reader if isinstance(request, Query) else self.engine
        for attempt in (1, 2):
            async with engine.connect() as connection:
                info = connection.info
                served = info.get(_SERVED, False)
                try:
                    result = await self._run(connection, request)
                except sa_exc.DBAPIError as exc:
                    if attempt == 1 and _replayable(exc, served):
                        continue
                    raise
                if not isinstance(request, Query):
                    await connection.commit()
                info[_SERVED] = True
                return result
        raise AssertionError("unreachable: the second attempt returns or raises")

    @staticmethod
    async def _run(
        connection: AsyncConnection, request: Query | Write | WriteMany | Transaction
    ) -> Any:
        """Run ``request`` on ``connection``, a write in a transaction left uncommitted."""
        if isinstance(request, Query):
            return _rows_of(await connection.execute(request.statement, request.parameters))
        await connection.begin()
        if isinstance(request, Transaction):
            return await connection.run_sync(request.body)
        if isinstance(request, WriteMany):
            await connection.execute(request.statement, list(request.rows))
            return None
        return [(await connection.execute(s)).rowcount for s in request.statements]

    async def close(self) -> None:
        """Write the uses not yet written, stop listening for revocations and dispose
        of the engine's connection pool."""
        await self._usage_flusher.close()
        await asyncio.to_thread(self._stop_hearing)
        await self.meter.aclose()
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
