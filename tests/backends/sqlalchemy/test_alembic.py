"""The Alembic recipe of docs/backends/sqlalchemy.md, run as written on SQLite and PostgreSQL.

``alembic init``, the ``env.py`` edit the page shows (taken from the page itself),
``revision --autogenerate``, ``upgrade head`` and ``check``; then a manager that
leaves the schema to the migrations issues and validates a key on the result. The
upgrade of a version 2 database runs the same way, with the edit the page shows.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from apikeys.backends.sqlalchemy import SCHEMA_VERSION, SQLAlchemyKeyManager
from tests.backends.sqlalchemy.old_schemas import insert_version_2_key, make_version_2_tables

pytest.importorskip("alembic")

pytestmark = pytest.mark.sqlalchemy

REPO = Path(__file__).resolve().parents[3]
PAGE = REPO / "docs" / "backends" / "sqlalchemy.md"


def _env_snippet() -> str:
    """The ``env.py`` lines of the recipe's step 2, as the page shows them."""
    text = PAGE.read_text(encoding="utf-8")
    recipe = text[text.index("### With Alembic") :]
    match = re.search(r"^ {3}```py\n(?P<body>.*?)^ {3}```", recipe, re.S | re.M)
    assert match, "the Alembic recipe lost its env.py block"
    return textwrap.dedent(match.group("body"))


def _upgrade_snippet() -> str:
    """The lines that replace the generated ``meter_id`` column, as the page shows them."""
    text = PAGE.read_text(encoding="utf-8")
    section = text[text.index("#### Upgrading a version 2 database") :]
    match = re.search(r"^```py\n(?P<body>.*?)^```", section, re.S | re.M)
    assert match, "the upgrade recipe lost its migration block"
    return match.group("body")


def _alembic(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"alembic {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def run_recipe(project: Path, url: str) -> Path:
    """Follow the recipe step by step in ``project``; return the generated migration."""
    migration = start_recipe(project, url)
    _alembic(project, "upgrade", "head")
    _alembic(project, "check")
    return migration


def start_recipe(project: Path, url: str) -> Path:
    """Steps 1 to 3 of the recipe, up to the generated migration (returned), not applied."""
    _alembic(project, "init", "migrations")
    ini = project / "alembic.ini"
    # The URL goes in as Alembic's ini file wants it: '%' doubled for configparser.
    ini.write_text(
        re.sub(
            r"^sqlalchemy\.url = .*$",
            "sqlalchemy.url = " + url.replace("%", "%%"),
            ini.read_text(),
            flags=re.M,
        )
    )
    env = project / "migrations" / "env.py"
    source = env.read_text()
    assert source.count("target_metadata = None") == 1
    source = source.replace("target_metadata = None", _env_snippet())
    # "add render_item=alembic_render_item to both context.configure(...) calls"
    configured = re.subn(
        r"target_metadata=target_metadata\b", "\\g<0>, render_item=alembic_render_item", source
    )
    source, calls = configured
    assert calls == 2, "Alembic's env.py template changed: update the recipe"
    env.write_text(source)
    _alembic(project, "revision", "--autogenerate", "-m", "apikeys tables")
    (migration,) = (project / "migrations" / "versions").glob("*.py")
    return migration


def _works_on_the_migrated_schema(url: str) -> None:
    manager = SQLAlchemyKeyManager(url, create_schema=False, cache_ttl=0)
    try:
        new = manager.create_api_key("user_1", "migrated", ["read:data"], "2099-01-01")
        verified = manager.validate_api_key(new.secret, required_scopes=["read:data"])
        assert verified.id == new.id
        assert manager.get_api_key(new.id).expires_at == new.expires_at
    finally:
        manager.close()


def test_the_recipe_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    migration = run_recipe(tmp_path, url)
    generated = migration.read_text()
    assert "apikeys.backends" not in generated  # nothing of ours to import
    assert "sa.DateTime(timezone=True)" in generated
    _works_on_the_migrated_schema(url)


@pytest.mark.postgres
def test_the_recipe_on_postgres(tmp_path: Path, empty_postgres_database: str) -> None:
    run_recipe(tmp_path, empty_postgres_database)
    engine = sa.create_engine(empty_postgres_database)
    try:
        columns = {c["name"]: c["type"] for c in sa.inspect(engine).get_columns("apikeys_keys")}
    finally:
        engine.dispose()
    assert getattr(columns["expires_at"], "timezone", False) is True
    _works_on_the_migrated_schema(empty_postgres_database)


NEW_IN_VERSION_3 = (
    *("rate_limit", "rate_window", "quota_limit", "quota_period", "quota_anchor"),
    *("quota_used", "quota_period_start", "meter_id"),
)


def test_the_recipe_upgrades_a_version_2_database(tmp_path: Path, database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        make_version_2_tables(engine)
        insert_version_2_key(engine, "oldkey")
        migration = start_recipe(tmp_path, database_url)
        generated = migration.read_text()
        for column in NEW_IN_VERSION_3:
            assert f"op.add_column('apikeys_keys', sa.Column('{column}'" in generated, column
        assert "ix_apikeys_keys_meter_id" in generated
        # The page's edit: meter_id is filled in for the keys already there, then made NOT NULL.
        meter_line = re.compile(
            r"^( +)(op\.add_column\('apikeys_keys', sa\.Column\('meter_id'.*)\n", re.M
        )
        found = meter_line.search(generated)
        assert found, "autogenerate wrote meter_id in another form: update the upgrade recipe"
        assert found.group(2).count("nullable=False") == 1
        indent, line = found.groups()
        edited = indent + line.replace("nullable=False", "nullable=True") + "\n"
        edited += textwrap.indent(_upgrade_snippet(), indent)
        migration.write_text(generated.replace(found.group(0), edited))
        _alembic(tmp_path, "upgrade", "head")
        _alembic(tmp_path, "check")
        with engine.connect() as connection:
            meter = connection.execute(sa.text("SELECT meter_id FROM apikeys_keys")).scalar_one()
            version = connection.execute(sa.text("SELECT version FROM apikeys_schema")).scalar_one()
        assert (meter, version) == ("oldkey", SCHEMA_VERSION)
    finally:
        engine.dispose()
    _works_on_the_migrated_schema(database_url)
