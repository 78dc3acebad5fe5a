"""What the SQLAlchemy backend promises beyond the shared contract."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher, Type

import apikeys
from apikeys import BackendUnavailableError, ConfigurationError, ExpiredKeyError, InvalidKeyError
from apikeys._keyformat import generate_key, parse_key
from apikeys.backends._sqlalchemy import normalize_url, sqlite_file_of, sqlite_url
from apikeys.backends.sqlalchemy import (
    SCHEMA_VERSION,
    AsyncSQLAlchemyKeyManager,
    SQLAlchemyKeyManager,
    api_keys_table,
    metadata,
    schema_version_table,
)

pytestmark = pytest.mark.sqlalchemy


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "keys.db"


@pytest.fixture
def manager(db_path: Path) -> Iterator[SQLAlchemyKeyManager]:
    with SQLAlchemyKeyManager(f"sqlite:///{db_path}") as made:
        yield made


class QueryCounter:
    """Counts statements an engine sends to the database."""

    def __init__(self, engine: sa.Engine) -> None:
        self.count = 0
        sa.event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: object) -> None:
        self.count += 1


# --- secrets at rest ---------------------------------------------------------------


def test_database_holds_no_secret(manager: SQLAlchemyKeyManager, db_path: Path) -> None:
    created = [manager.create_api_key("u1", f"k{i}", ["read:data"]) for i in range(3)]
    rotated = manager.rotate_api_key(created[0].id)
    for key in [*created[1:], rotated]:
        manager.validate_api_key(key.secret)
    manager.close()
    raw = db_path.read_bytes()
    for path in db_path.parent.iterdir():  # the journal and WAL files too
        raw += path.read_bytes()
    with sqlite3.connect(db_path) as connection:
        rows = connection.execute("SELECT * FROM apikeys_keys").fetchall()
    assert len(rows) == 4
    dumped = repr(rows)
    for key in [*created, rotated]:
        secret_body = key.secret.rpartition("_")[2]
        assert key.secret.encode() not in raw
        assert secret_body[13:45].encode() not in raw  # the random part alone
        assert key.secret not in dumped
    hashes = [row[3] for row in rows]
    assert all(h.startswith("$argon2id$") for h in hashes)


def test_secret_is_hashed_with_argon2id_over_the_whole_key(
    manager: SQLAlchemyKeyManager,
) -> None:
    new = manager.create_api_key("u1", "k")
    with manager.engine.connect() as connection:
        stored = connection.execute(
            sa.select(api_keys_table.c.secret_hash).where(api_keys_table.c.id == new.id)
        ).scalar_one()
    assert PasswordHasher().verify(stored, new.secret)


# --- schema ------------------------------------------------------------------------


def test_schema_is_created_on_first_use_with_its_version(
    manager: SQLAlchemyKeyManager,
) -> None:
    manager.create_api_key("u1", "k")
    inspector = sa.inspect(manager.engine)
    assert {"apikeys_keys", "apikeys_schema"} <= set(inspector.get_table_names())
    indexes = {index["name"]: index for index in inspector.get_indexes("apikeys_keys")}
    assert indexes["ix_apikeys_keys_user_id_created_at"]["column_names"] == [
        "user_id",
        "created_at",
    ]
    assert inspector.get_pk_constraint("apikeys_keys")["constrained_columns"] == ["id"]
    with manager.engine.connect() as connection:
        version = connection.execute(sa.select(schema_version_table.c.version)).scalar_one()
    assert version == SCHEMA_VERSION


def test_exposed_metadata_is_what_the_manager_creates() -> None:
    assert set(metadata.tables) == {"apikeys_keys", "apikeys_schema"}
    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine)
    manager = SQLAlchemyKeyManager(engine)  # tables made by "migrations"
    new = manager.create_api_key("u1", "k")
    assert manager.validate_api_key(new.secret).id == new.id


def test_create_schema_off_leaves_the_database_alone(db_path: Path) -> None:
    manager = SQLAlchemyKeyManager(f"sqlite:///{db_path}", create_schema=False)
    with pytest.raises(BackendUnavailableError):
        manager.create_api_key("u1", "k")
    assert sa.inspect(manager.engine).get_table_names() == []
    manager.close()


def test_newer_schema_is_refused(db_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{db_path}")
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(
            sa.insert(schema_version_table).values(component="keys", version=SCHEMA_VERSION + 1)
        )
    with pytest.raises(ConfigurationError, match="upgrade apikeys"):
        SQLAlchemyKeyManager(engine).create_api_key("u1", "k")


# --- IO economy --------------------------------------------------------------------


def test_garbage_and_cache_hits_cost_no_query(manager: SQLAlchemyKeyManager) -> None:
    new = manager.create_api_key("u1", "k")
    manager.validate_api_key(new.secret)
    counter = QueryCounter(manager.engine)
    for _ in range(50):
        manager.validate_api_key(new.secret)
    for garbage in ["", "apk_1abc", new.secret[:-1] + ("A" if new.secret[-1] != "A" else "B")]:
        with pytest.raises(InvalidKeyError):
            manager.validate_api_key(garbage)
    assert counter.count == 0


def test_cache_miss_is_one_indexed_read_and_refusals_read_the_same(db_path: Path) -> None:
    manager = SQLAlchemyKeyManager(f"sqlite:///{db_path}", cache_ttl=0, last_used_interval=3600)
    new = manager.create_api_key("u1", "k")
    manager.validate_api_key(new.secret)  # records last_used_at once
    statements: list[tuple[str, dict[str, object]]] = []
    sa.event.listen(
        manager.engine,
        "before_cursor_execute",
        lambda _c, _cur, statement, parameters, *_: statements.append((statement, parameters)),
    )
    for _ in range(5):
        manager.validate_api_key(new.secret)
    assert len(statements) == 5
    known_id = parse_key(new.secret).id
    for presented in (generate_key(id=known_id).key, generate_key().key):
        with pytest.raises(InvalidKeyError):
            manager.validate_api_key(presented)
    # A wrong secret for a known id runs the statement an unknown id runs, and
    # both fetch one row: the key's, or the decoy (timed by benchmarks/timing.py).
    (wrong, wrong_parameters), (unknown, unknown_parameters) = statements[-2:]
    assert wrong == unknown == statements[0][0]
    assert "UNION ALL" in wrong and "LIMIT" in wrong
    assert len(wrong_parameters) == len(unknown_parameters)
    with manager.engine.connect() as connection:
        plan = connection.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT * FROM apikeys_keys WHERE id = 'x'"
        ).fetchall()
    assert "USING INDEX" in repr(plan) or "PRIMARY KEY" in repr(plan)
    manager.close()


def test_bookkeeping_write_failure_does_not_refuse_a_valid_key(db_path: Path) -> None:
    # With last_used_interval=0, last_used_at is written during the validation.
    manager = SQLAlchemyKeyManager(f"sqlite:///{db_path}", cache_ttl=0, last_used_interval=0)
    new = manager.create_api_key("u1", "k")

    def refuse_updates(_c: object, _cur: object, statement: str, *_: object) -> None:
        if statement.startswith("UPDATE"):
            raise sqlite3.OperationalError("attempt to write a readonly database")

    sa.event.listen(manager.engine, "before_cursor_execute", refuse_updates)
    assert manager.validate_api_key(new.secret).id == new.id
    manager.close()


# --- argon2 parameters -------------------------------------------------------------


def test_changed_parameters_rehash_on_next_success(db_path: Path) -> None:
    url = f"sqlite:///{db_path}"
    old_params = PasswordHasher(time_cost=1, memory_cost=512, parallelism=1, type=Type.ID)
    new_params = PasswordHasher(time_cost=2, memory_cost=1024, parallelism=1, type=Type.ID)
    with SQLAlchemyKeyManager(url, password_hasher=old_params) as first:
        new = first.create_api_key("u1", "k")
    with SQLAlchemyKeyManager(url, password_hasher=new_params, cache_ttl=0) as second:

        def stored_hash() -> str:
            with second.engine.connect() as connection:
                return str(
                    connection.execute(
                        sa.select(api_keys_table.c.secret_hash).where(api_keys_table.c.id == new.id)
                    ).scalar_one()
                )

        assert "m=512,t=1" in stored_hash()
        with pytest.raises(InvalidKeyError):
            second.validate_api_key(apikeys.generate_key(id=new.id).key)
        assert "m=512,t=1" in stored_hash()  # a failed attempt changes nothing
        assert second.validate_api_key(new.secret).id == new.id
        assert "m=1024,t=2" in stored_hash()
        assert second.validate_api_key(new.secret).id == new.id


def test_settings_reach_the_hasher(db_path: Path) -> None:
    manager = apikeys.create_key_manager(
        f"sqlite:///{db_path}", argon2_memory_cost=2048, argon2_time_cost=2, key_prefix="myapp"
    )
    assert isinstance(manager, SQLAlchemyKeyManager)
    new = manager.create_api_key("u1", "k")
    assert new.secret.startswith("myapp_1")
    with manager.engine.connect() as connection:
        stored = connection.execute(sa.select(api_keys_table.c.secret_hash)).scalar_one()
    assert "m=2048,t=2" in stored
    manager.close()


def test_the_clock_stamps_and_expires_keys(db_path: Path) -> None:
    now = [datetime(2031, 5, 1, 12, tzinfo=UTC)]  # a year the real clock has not reached
    manager = SQLAlchemyKeyManager(f"sqlite:///{db_path}", clock=lambda: now[0])
    new = manager.create_api_key("u1", "k", expiration=timedelta(hours=1))
    assert (new.created_at, new.expires_at) == (now[0], now[0] + timedelta(hours=1))
    assert manager.validate_api_key(new.secret).id == new.id  # cached
    now[0] += timedelta(hours=1)
    with pytest.raises(ExpiredKeyError):
        manager.validate_api_key(new.secret)
    assert manager.list_api_keys("u1").total == 0
    assert manager.revoke_api_key(new.id).revoked_at == now[0]
    manager.close()


def test_a_clock_without_a_timezone_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="clock"):
        SQLAlchemyKeyManager("sqlite://", clock=lambda: datetime(2031, 5, 1))


# --- failure: fail closed ----------------------------------------------------------


def test_unreachable_database_is_unavailable_not_invalid(tmp_path: Path) -> None:
    manager = SQLAlchemyKeyManager(f"sqlite:///{tmp_path / 'missing-dir' / 'keys.db'}")
    key = apikeys.generate_key().key
    with pytest.raises(BackendUnavailableError) as caught:
        manager.validate_api_key(key)
    assert caught.value.status_code == 503
    assert key not in str(caught.value)
    assert key not in repr(caught.value.__cause__)
    with pytest.raises(BackendUnavailableError):
        manager.create_api_key("u1", "k")


async def test_unreachable_database_async(tmp_path: Path) -> None:
    manager = AsyncSQLAlchemyKeyManager(f"sqlite:///{tmp_path / 'missing-dir' / 'keys.db'}")
    with pytest.raises(BackendUnavailableError):
        await manager.validate_api_key(apikeys.generate_key().key)
    await manager.close()
    # aiosqlite's worker thread of the failed connection answers a last, unawaited
    # call a moment later; let it land before this test's event loop closes.
    await asyncio.sleep(0.1)


def test_stopped_postgres_is_unavailable(postgres_url: str) -> None:
    url = sa.make_url(postgres_url).set(port=1, host="127.0.0.1")  # nothing listens there
    manager = SQLAlchemyKeyManager(url)
    with pytest.raises(BackendUnavailableError):
        manager.validate_api_key(apikeys.generate_key().key)
    manager.close()


def test_secrets_never_reach_sql_error_messages(manager: SQLAlchemyKeyManager) -> None:
    new = manager.create_api_key("u1", "k")
    with manager.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE apikeys_keys")
    presented = apikeys.generate_key(id=new.id).key
    with pytest.raises(BackendUnavailableError) as caught:
        manager.validate_api_key(presented)
    chain = f"{caught.value!s} {caught.value!r} {caught.value.__cause__!s}"
    assert presented not in chain
    assert new.secret not in chain
    assert new.id not in chain  # bound parameters are hidden from SQL errors
    assert "parameters hidden" in chain


# --- URLs and construction ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "sync", "asynchronous"),
    [
        ("sqlite:///k.db", "sqlite", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///k.db", "sqlite", "sqlite+aiosqlite"),
        ("postgresql://h/db", "postgresql+psycopg", "postgresql+psycopg"),
        ("postgres://h/db", "postgresql+psycopg", "postgresql+psycopg"),
        ("postgresql+psycopg2://h/db", "postgresql+psycopg2", "postgresql+psycopg"),
        ("postgresql+asyncpg://h/db", "postgresql+psycopg", "postgresql+asyncpg"),
    ],
)
def test_driver_choice(url: str, sync: str, asynchronous: str) -> None:
    assert normalize_url(url, asynchronous=False).drivername == sync
    assert normalize_url(url, asynchronous=True).drivername == asynchronous


@pytest.mark.parametrize("path", ["keys.db", "/srv/keys.db", "/srv/my keys.db", "data/keys.db"])
def test_sqlite_url_names_the_file_it_was_made_for(path: str) -> None:
    url = sqlite_url(Path(path))
    assert url == f"sqlite:///{path}"
    assert sqlite_file_of(url) == path


def test_engine_hides_parameters(manager: SQLAlchemyKeyManager) -> None:
    assert manager.engine.hide_parameters


def test_memory_database_is_shared_by_threads() -> None:
    manager = SQLAlchemyKeyManager("sqlite:///:memory:")
    new = manager.create_api_key("u1", "k")
    seen: list[str] = []
    thread = threading.Thread(
        target=lambda: seen.append(manager.validate_api_key(new.secret).user_id)
    )
    thread.start()
    thread.join()
    assert seen == ["u1"]


# --- concurrency on a real PostgreSQL server ---------------------------------------


@pytest.mark.postgres
def test_threads_on_postgres(postgres_url: str) -> None:
    manager = SQLAlchemyKeyManager(postgres_url, cache_ttl=0)
    owner = f"pg_threads_{datetime.now(UTC).timestamp()}"
    errors: list[BaseException] = []
    created: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        try:
            for i in range(5):
                new = manager.create_api_key(owner, f"t{n}-{i}", ["read:data"])
                assert manager.validate_api_key(new.secret).id == new.id
                rotated = manager.rotate_api_key(new.id)
                with pytest.raises(InvalidKeyError):
                    manager.validate_api_key(new.secret)
                assert manager.validate_api_key(rotated.secret).id == rotated.id
                manager.revoke_api_key(rotated.id)
                with lock:
                    created.extend([new.id, rotated.id])
        except BaseException as exc:  # collected for the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    page = manager.list_api_keys(owner, include_invalid=True, limit=100)
    assert page.total == len(created) == 80
    assert sorted(k.id for k in page.items) == sorted(created)
    assert manager.list_api_keys(owner).total == 0
    manager.close()


@pytest.mark.postgres
async def test_tasks_on_postgres(postgres_url: str) -> None:
    manager = AsyncSQLAlchemyKeyManager(postgres_url, cache_ttl=0)
    owner = f"pg_tasks_{datetime.now(UTC).timestamp()}"

    async def worker(n: int) -> list[str]:
        ids = []
        for i in range(5):
            new = await manager.create_api_key(owner, f"a{n}-{i}")
            assert (await manager.validate_api_key(new.secret)).id == new.id
            await manager.revoke_api_key(new.id)
            with pytest.raises(apikeys.RevokedKeyError):
                await manager.validate_api_key(new.secret)
            ids.append(new.id)
        return ids

    results = await asyncio.gather(*(worker(n) for n in range(10)))
    created = [key_id for ids in results for key_id in ids]
    assert len(set(created)) == 50
    page = await manager.list_api_keys(owner, include_invalid=True, limit=100)
    assert page.total == 50
    await manager.close()


def test_hash_runs_off_the_event_loop(db_path: Path) -> None:
    """While one task hashes, the loop keeps serving others."""
    slow = PasswordHasher(time_cost=3, memory_cost=32768, parallelism=1, type=Type.ID)

    async def scenario() -> int:
        manager = AsyncSQLAlchemyKeyManager(f"sqlite:///{db_path}", password_hasher=slow)
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        await manager.create_api_key("u1", "k")
        done.set()
        await task
        await manager.close()
        return ticks

    assert asyncio.run(scenario()) > 3


def test_expiry_is_stored_in_utc(manager: SQLAlchemyKeyManager) -> None:
    local = datetime(2099, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=5)))
    new = manager.create_api_key("u1", "k", expiration=local)
    assert manager.get_api_key(new.id).expires_at == datetime(2099, 1, 1, 7, 0, tzinfo=UTC)


def test_a_scope_refusal_is_not_a_use(db_path: Path) -> None:
    manager = SQLAlchemyKeyManager(f"sqlite:///{db_path}", last_used_interval=0, cache_ttl=0)
    new = manager.create_api_key("u1", "k", ["read:data"])
    with pytest.raises(apikeys.InsufficientScopeError):
        manager.validate_api_key(new.secret, required_scopes=["write:data"])
    assert manager.get_api_key(new.id).last_used_at is None
    manager.validate_api_key(new.secret, required_scopes=["read:data"])
    assert manager.get_api_key(new.id).last_used_at is not None
    manager.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user:hunter2@h:notaport/db",
        "postgresql+nosuchdriver://user:hunter2@h/db",
        "sqlite://user:hunter2@h/x.db",
        "mysql://user:hunter2@h/db",
        "not a url at all",
    ],
)
@pytest.mark.parametrize("manager_class", [SQLAlchemyKeyManager, AsyncSQLAlchemyKeyManager])
def test_bad_urls_and_missing_drivers_are_configuration_errors(
    url: str, manager_class: type[SQLAlchemyKeyManager | AsyncSQLAlchemyKeyManager]
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        manager_class(url)
    assert "hunter2" not in str(caught.value)
    assert caught.value.__cause__ is None or "hunter2" not in str(caught.value.__cause__)
