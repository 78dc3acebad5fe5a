"""Databases as earlier releases of the SQLAlchemy backend left them, for upgrade tests."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

# The tables as version 2 made them, as PostgreSQL and SQLite were given them.
VERSION_2_DDL = {
    "postgresql": [
        """CREATE TABLE apikeys_keys (
            id VARCHAR(32) NOT NULL, user_id VARCHAR(255) NOT NULL, name VARCHAR(255) NOT NULL,
            secret_hash VARCHAR(255) NOT NULL, hint VARCHAR(64) NOT NULL, scopes JSON NOT NULL,
            metadata JSON NOT NULL, created_at TIMESTAMP WITH TIME ZONE NOT NULL,
            expires_at TIMESTAMP WITH TIME ZONE, last_used_at TIMESTAMP WITH TIME ZONE,
            revoked_at TIMESTAMP WITH TIME ZONE, revocation_reason VARCHAR(500),
            created_by VARCHAR(32), PRIMARY KEY (id))""",
        "CREATE INDEX ix_apikeys_keys_user_id_created_at ON apikeys_keys (user_id, created_at)",
        "CREATE INDEX ix_apikeys_keys_created_by ON apikeys_keys (created_by)",
        """CREATE TABLE apikeys_schema (component VARCHAR(64) NOT NULL,
            version INTEGER NOT NULL, PRIMARY KEY (component))""",
        "INSERT INTO apikeys_schema (component, version) VALUES ('keys', 2)",
    ],
}
VERSION_2_DDL["sqlite"] = [
    statement.replace("TIMESTAMP WITH TIME ZONE", "DATETIME")
    for statement in VERSION_2_DDL["postgresql"]
]


def make_version_2_tables(engine: sa.Engine) -> None:
    """Create the tables of schema version 2, with their version row, as that release did."""
    with engine.begin() as connection:
        for statement in VERSION_2_DDL[engine.dialect.name]:
            connection.exec_driver_sql(statement)


def insert_version_2_key(engine: sa.Engine, key_id: str) -> None:
    """Store a key as version 2 wrote it (owner ``u1``, named ``from v2``): no limits, no meter."""
    created = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO apikeys_keys (id, user_id, name, secret_hash, hint, scopes,"
                " metadata, created_at) VALUES (:id, 'u1', 'from v2', 'x', 'apk_1…',"
                " '[]', '{}', :created)"
            ),
            {
                "id": key_id,
                "created": created.replace(tzinfo=None)
                if engine.dialect.name == "sqlite"
                else created,
            },
        )
