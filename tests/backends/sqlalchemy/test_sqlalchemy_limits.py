"""The SQLAlchemy backend's storage of limits beyond the contract: the upgrade of version 2
databases, the quota counter's columns, and rows whose limits cannot be read."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from apikeys import BackendUnavailableError, InvalidKeyError, RevokedKeyError
from apikeys._keylimits import Quota, RateLimit
from apikeys.backends.sqlalchemy import (
    SCHEMA_VERSION,
    AsyncSQLAlchemyKeyManager,
    SQLAlchemyKeyManager,
    api_keys_table,
)
from tests.backends.sqlalchemy.old_schemas import insert_version_2_key, make_version_2_tables

pytestmark = pytest.mark.sqlalchemy

LIMIT_COLUMNS = {
    "rate_limit",
    "rate_window",
    "quota_limit",
    "quota_period",
    "quota_anchor",
    "quota_used",
    "quota_period_start",
    "meter_id",
}


def _columns(engine: sa.Engine) -> dict[str, Any]:
    return {c["name"]: c for c in sa.inspect(engine).get_columns(api_keys_table.name)}


def _row(engine: sa.Engine, key_id: str) -> sa.RowMapping:
    with engine.connect() as connection:
        return (
            connection.execute(sa.select(api_keys_table).where(api_keys_table.c.id == key_id))
            .mappings()
            .one()
        )


def test_a_version_2_database_is_upgraded_on_first_use(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    make_version_2_tables(engine)
    with (
        SQLAlchemyKeyManager(database_url, create_schema=False) as before,
        pytest.raises(BackendUnavailableError),  # the columns are missing
    ):
        before.create_api_key("u1", "needs the upgrade")
    # A key written by version 2: no limits, no meter.
    insert_version_2_key(engine, "oldkey")
    assert LIMIT_COLUMNS.isdisjoint(_columns(engine))

    with SQLAlchemyKeyManager(database_url) as manager:
        kept = manager.get_api_key("oldkey")
        assert (kept.name, kept.rate_limit, kept.quota) == ("from v2", None, None)
        new = manager.create_api_key("u1", "limited", rate_limit="5/1s", quota="10/1d")
        rotated = manager.rotate_api_key(new.id)
        verified = manager.validate_api_key(rotated.secret)
        assert (verified.rate_limit, verified.quota) == (
            RateLimit(limit=5, window=1),
            Quota.parse("10/1d"),
        )
        assert verified.meter_id == new.id
    columns = _columns(engine)
    assert set(columns) >= LIMIT_COLUMNS
    assert columns["meter_id"]["nullable"] is (engine.dialect.name == "sqlite")
    assert columns["quota_used"]["nullable"] is False
    assert _row(engine, "oldkey")["meter_id"] == "oldkey"  # an existing key meters itself
    assert _row(engine, "oldkey")["quota_used"] == 0
    indexes = {i["name"]: i["column_names"] for i in sa.inspect(engine).get_indexes("apikeys_keys")}
    assert indexes["ix_apikeys_keys_meter_id"] == ["meter_id"]
    with engine.connect() as connection:
        version = connection.execute(sa.text("SELECT version FROM apikeys_schema")).scalar_one()
    assert version == SCHEMA_VERSION == 3
    engine.dispose()


def test_the_columns_hold_the_limits_and_a_fresh_counter(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/keys.db"
    with SQLAlchemyKeyManager(url) as manager:
        new = manager.create_api_key("u1", "limited", rate_limit="100/1m", quota="500")
        engine = manager.engine
        row = _row(engine, new.id)
        assert (row["rate_limit"], row["rate_window"]) == (100, 60)
        assert (row["quota_limit"], row["quota_period"]) == (500, None)
        assert (row["quota_used"], row["quota_period_start"], row["meter_id"]) == (0, None, new.id)
        # What the enforcement moved: setting a quota starts afresh; keeping it keeps it.
        with engine.begin() as connection:
            connection.execute(
                sa.update(api_keys_table)
                .where(api_keys_table.c.id == new.id)
                .values(quota_used=7, quota_period_start=1_700_000_000)
            )
        manager.update_api_key_limits(new.id, rate_limit=None)
        assert _row(engine, new.id)["quota_used"] == 7
        rotated = manager.rotate_api_key(new.id)
        carried = _row(engine, rotated.id)
        assert (carried["quota_used"], carried["quota_period_start"]) == (7, 1_700_000_000)
        assert carried["meter_id"] == new.id
        manager.update_api_key_limits(rotated.id, quota="500")
        reset = _row(engine, rotated.id)
        assert (reset["quota_used"], reset["quota_period_start"]) == (0, None)
        manager.update_api_key_limits(rotated.id, quota=None)
        cleared = _row(engine, rotated.id)
        assert (cleared["quota_limit"], cleared["quota_anchor"], cleared["quota_used"]) == (
            None,
            None,
            0,
        )


@pytest.mark.parametrize(
    "values",
    [
        {"rate_limit": 100, "rate_window": None},  # half a rate limit
        {"rate_limit": 0, "rate_window": 60},
        {"rate_limit": 100, "rate_window": 10**6},  # a window longer than a day
        {"quota_limit": 500, "quota_anchor": None},  # a quota without its anchor
        {"quota_limit": None, "quota_period": 86400},
        {"quota_limit": -1},
    ],
)
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_row_whose_limits_cannot_be_read_is_refused_not_unlimited(
    tmp_path: Path, values: dict[str, Any], flavour: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path}/keys.db"
    with SQLAlchemyKeyManager(url, cache_ttl=0) as manager:
        new = manager.create_api_key("u1", "edited by hand", rate_limit="5/1s", quota="9/1d")
        with manager.engine.begin() as connection:
            connection.execute(
                sa.update(api_keys_table).where(api_keys_table.c.id == new.id).values(**values)
            )
        with caplog.at_level(logging.ERROR, "apikeys.sqlalchemy"):
            if flavour == "sync":
                with pytest.raises(InvalidKeyError):
                    manager.validate_api_key(new.secret)
            else:

                async def validate() -> None:
                    async with AsyncSQLAlchemyKeyManager(url) as other:
                        await other.validate_api_key(new.secret)

                with pytest.raises(InvalidKeyError):
                    asyncio.run(validate())
        assert new.id in caplog.text and new.secret not in caplog.text
        # Still listed, so its limits can be set again; then it works.
        assert manager.get_api_key(new.id).name == "edited by hand"
        manager.update_api_key_limits(new.id, rate_limit="5/1s", quota="9/1d")
        assert manager.validate_api_key(new.secret).rate_limit == RateLimit(limit=5, window=1)
        manager.revoke_api_key(new.id)
        with pytest.raises(RevokedKeyError):
            manager.validate_api_key(new.secret)
