"""No secret appears anywhere but the one creation answer.

The main manager flows run, sync and async on SQLite, with every logger at
DEBUG (SQLAlchemy's engine and pool included, one engine even with
``echo="debug"`` and bound parameters shown), an event listener, and every
exception kept. Then every log record (message, arguments, extras,
traceback), every exception (message, ``repr``, the whole chain and its
traceback), every returned object's ``repr`` and serialisation, every event,
and the raw bytes of the database files are searched for each secret -- the
full key and, stricter, its 33-character secret part alone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import apikeys
from apikeys import APIKeysError, KeyEvent
from apikeys._keyformat import CHECKSUM_LENGTH, LOOKUP_ID_LENGTH
from apikeys.backends.sqlalchemy import (
    AsyncSQLAlchemyKeyManager,
    SQLAlchemyKeyManager,
    api_keys_table,
)
from tests.reliability.helpers import wrong_secret_for

pytestmark = pytest.mark.sqlalchemy

NOISY_LOGGERS = ("sqlalchemy.engine", "sqlalchemy.pool", "aiosqlite", "asyncio", "apikeys")


class Evidence(logging.Handler):
    """Everything a secret could leak into, as text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.records = 0
        self.secrets: set[str] = set()  # every key created, rotated or presented
        self.layout = logging.Formatter("%(name)s %(levelname)s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        self.texts.append(self.layout.format(record))  # with exc_info and stack_info
        self.texts.append(repr(record.args))
        self.texts.append(repr(vars(record)))

    def exception(self, exc: BaseException) -> None:
        while exc is not None:
            self.texts += [str(exc), repr(exc), *traceback.format_exception(exc)]
            exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]

    def result(self, value: Any) -> Any:
        self.texts.append(repr(value))
        if hasattr(value, "model_dump_json"):
            self.texts.append(value.model_dump_json())
        return value

    def event(self, event: KeyEvent) -> None:
        self.texts += [repr(event), event.describe()]

    def attempt(self, call: Callable[[], Any]) -> Any:
        """Run ``call``; keep its result or the exception it raised."""
        try:
            return self.result(call())
        except APIKeysError as exc:
            self.exception(exc)
            return None


def secret_part(key: str) -> str:
    """The 33 random characters of a local key: the part that must never leak."""
    body = key.rpartition("_")[2]
    return body[1 + LOOKUP_ID_LENGTH : -CHECKSUM_LENGTH]


@pytest.fixture
def evidence() -> Iterator[Evidence]:
    handler = Evidence()
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", *NOISY_LOGGERS)}
    root.addHandler(handler)
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    listener = apikeys.add_event_listener(handler.event)
    try:
        yield handler
    finally:
        apikeys.remove_event_listener(listener)
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def expire_now(manager: Any, key_id: str) -> None:
    """Move a key's expiry into the past, behind the manager's back."""
    engine = manager.engine.sync_engine if hasattr(manager.engine, "sync_engine") else None
    url = (engine or manager.engine).url
    plain = sa.create_engine(url.set(drivername="sqlite"))
    with plain.begin() as connection:
        connection.execute(
            sa.update(api_keys_table)
            .where(api_keys_table.c.id == key_id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    plain.dispose()


def sync_flows(manager: SQLAlchemyKeyManager, evidence: Evidence) -> None:
    new = manager.create_api_key(
        "u1", "ci", ["read:data"], timedelta(days=1), metadata={"team": "x"}
    )
    evidence.secrets.add(new.secret)
    evidence.result(new)
    evidence.result(new.api_key)
    attempt = evidence.attempt
    attempt(lambda: manager.validate_api_key(new.secret, required_scopes=["read:data"]))
    attempt(lambda: manager.validate_api_key(new.secret))  # cache hit
    attempt(lambda: manager.validate_api_key(new.secret, required_scopes=["write:data"]))
    for presented in (
        wrong_secret_for(new.secret),
        apikeys.generate_key().key,  # unknown id
        new.secret[:-1],  # truncated
        new.secret + "x",  # extended
        new.secret.upper(),  # mangled
        new.secret.replace("_", "-"),
    ):
        evidence.secrets.add(presented)
        attempt(functools.partial(manager.validate_api_key, presented))
    for _ in range(3):  # a burst: a suspicious event
        attempt(lambda: manager.validate_api_key(wrong_secret_for(new.secret)))
    attempt(lambda: manager.list_api_keys("u1", include_invalid=True))
    attempt(lambda: manager.get_api_key(new.id))
    graced = manager.rotate_api_key(new.id, grace=60)
    evidence.secrets.add(graced.secret)
    evidence.result(graced)
    rotated = manager.rotate_api_key(graced.id)
    evidence.secrets.add(rotated.secret)
    evidence.result(rotated)
    attempt(lambda: manager.validate_api_key(graced.secret))  # revoked by rotation
    attempt(lambda: manager.validate_api_key(rotated.secret))
    attempt(lambda: manager.rotate_api_key(graced.id))  # refused: revoked
    expire_now(manager, rotated.id)
    attempt(lambda: manager.validate_api_key(rotated.secret))  # expired (cache enforces it too)
    attempt(lambda: manager.revoke_api_key(rotated.id, reason="leaked"))
    attempt(lambda: manager.validate_api_key(rotated.secret))
    attempt(lambda: manager.delete_api_key(rotated.id))
    attempt(lambda: manager.validate_api_key(rotated.secret))
    attempt(lambda: manager.delete_api_key(rotated.id))  # not found


async def async_flows(manager: AsyncSQLAlchemyKeyManager, evidence: Evidence) -> None:
    new = await manager.create_api_key("u2", "ci", ["read:data"], metadata={"team": "y"})
    evidence.secrets.add(new.secret)
    evidence.result(new)

    async def attempt(call: Callable[[], Any]) -> None:
        try:
            evidence.result(await call())
        except APIKeysError as exc:
            evidence.exception(exc)

    await attempt(lambda: manager.validate_api_key(new.secret))
    await attempt(lambda: manager.validate_api_key(new.secret))
    await attempt(lambda: manager.validate_api_key(new.secret, required_scopes=["admin"]))
    wrong = wrong_secret_for(new.secret)
    evidence.secrets.add(wrong)
    for _ in range(4):
        await attempt(lambda: manager.validate_api_key(wrong))
    rotated = await manager.rotate_api_key(new.id)
    evidence.secrets.add(rotated.secret)
    evidence.result(rotated)
    await attempt(lambda: manager.validate_api_key(new.secret))
    await attempt(lambda: manager.revoke_api_key(rotated.id))
    await attempt(lambda: manager.validate_api_key(rotated.secret))
    await attempt(lambda: manager.list_api_keys("u2", include_invalid=True))
    await attempt(lambda: manager.delete_api_key(new.id))


def assert_no_secret_anywhere(evidence: Evidence, files: list[Path]) -> None:
    assert evidence.records > 50, "the loggers were not capturing"
    assert any("SELECT" in text for text in evidence.texts), "no SQL was logged"
    haystack = "\n".join(evidence.texts)
    leaks = [
        secret
        for secret in evidence.secrets
        if secret in haystack or secret_part(secret) in haystack
    ]
    assert leaks == [], "secrets leaked"
    for path in files:
        raw = path.read_bytes()
        assert raw, path
        for secret in evidence.secrets:
            assert secret_part(secret).encode() not in raw, path


def database_files(tmp_path: Path) -> list[Path]:
    return [p for p in tmp_path.iterdir() if p.name.startswith("keys.db")]


def test_sync_flows_leak_no_secret(evidence: Evidence, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    with SQLAlchemyKeyManager(url, suspicious_failures=2) as manager:
        sync_flows(manager, evidence)
    # An engine you build yourself may echo SQL with its parameters: still no secret,
    # because no secret is ever sent to the database.
    loud = sa.create_engine(url, echo="debug", hide_parameters=False)
    with SQLAlchemyKeyManager(loud) as manager:
        sync_flows(manager, evidence)
    # The module-level functions and the default manager.
    apikeys.configure(url=url, suspicious_failures=2)
    try:
        new = apikeys.create_api_key("u3", "default")
        evidence.secrets.add(new.secret)
        evidence.attempt(lambda: apikeys.validate_api_key(new.secret))
        evidence.attempt(lambda: apikeys.validate_api_key(wrong_secret_for(new.secret)))
    finally:
        apikeys.configure()
    # A backend that is down.
    down = SQLAlchemyKeyManager(f"sqlite:///{tmp_path / 'missing' / 'keys.db'}")
    evidence.attempt(lambda: down.validate_api_key(new.secret))
    evidence.attempt(lambda: down.create_api_key("u1", "k"))
    down.close()
    assert_no_secret_anywhere(evidence, database_files(tmp_path))


def test_async_flows_leak_no_secret(evidence: Evidence, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"

    async def scenario() -> None:
        async with AsyncSQLAlchemyKeyManager(url, suspicious_failures=2) as manager:
            await async_flows(manager, evidence)
        apikeys.configure(url=url)
        try:
            new = await apikeys.acreate_api_key("u4", "default")
            evidence.secrets.add(new.secret)
            evidence.result(await apikeys.avalidate_api_key(new.secret))
        finally:
            # configure() closes the default sync manager only; close the async one here.
            await apikeys.get_async_key_manager().close()
            apikeys.configure()

    asyncio.run(scenario())
    assert_no_secret_anywhere(evidence, database_files(tmp_path))


def test_the_search_would_find_a_leak(evidence: Evidence) -> None:
    """The check itself works: a secret logged on purpose is caught."""
    key = apikeys.generate_key().key
    evidence.secrets.add(key)
    logging.getLogger("apikeys.test").debug("careless %s", secret_part(key))
    for _ in range(60):
        logging.getLogger("sqlalchemy.engine").debug("SELECT 1")
    with pytest.raises(AssertionError, match="secrets leaked"):
        assert_no_secret_anywhere(evidence, [])
