"""Backend selection: URL schemes, entry points, module paths, settings and missing extras."""

from __future__ import annotations

import sys
import textwrap
import types
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import apikeys
from apikeys import ConfigurationError, MissingDependencyError, Settings
from apikeys._config import load_settings
from apikeys._factory import DEFAULT_BACKEND_URL, backend_scheme, resolve_backend_class
from tests.core.subprocesses import run_python

pytest.importorskip("sqlalchemy")
from apikeys.backends.sqlalchemy import (
    AsyncSQLAlchemyKeyManager,
    SQLAlchemyKeyManager,
)

BACKEND_MODULE = '''
class Recorder:
    """A minimal backend: remembers how the factory built it."""

    def __init__(self, url, settings):
        self.url = url
        self.settings = settings

    @classmethod
    def from_settings(cls, url, settings):
        return cls(url, settings)


class SyncBackend(Recorder):
    asynchronous = False


class AsyncBackend(Recorder):
    asynchronous = True


class NoFactory:
    pass
'''


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from no APIKEYS_* configuration."""
    for name in [*Settings.model_fields, "clerk_secret_key", "clerk_api_url"]:
        monkeypatch.delenv(f"APIKEYS_{name.upper()}", raising=False)
    monkeypatch.delenv("CLERK_SECRET_KEY", raising=False)


@pytest.fixture
def backend_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A throwaway importable backend module; returns its name."""
    name = f"apikeys_test_backend_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(BACKEND_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


@pytest.fixture
def entry_point_scheme(tmp_path: Path, backend_module: str) -> str:
    """Register a backend in the entry point groups with a real dist-info; returns its scheme."""
    scheme = f"memo{uuid.uuid4().hex[:8]}"
    dist_info = tmp_path / f"apikeys_test_plugin_{scheme}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: apikeys-test-plugin-{scheme}\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        textwrap.dedent(
            f"""\
            [apikeys.backends]
            {scheme} = {backend_module}:SyncBackend

            [apikeys.async_backends]
            {scheme} = {backend_module}:AsyncBackend
            """
        )
    )
    return scheme


# --- URL schemes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("sqlite:///apikeys.db", "sqlalchemy"),
        ("sqlite://", "sqlalchemy"),
        ("sqlite+aiosqlite:///x.db", "sqlalchemy"),
        ("postgresql://u@h/db", "sqlalchemy"),
        ("postgresql+psycopg://u@h/db", "sqlalchemy"),
        ("postgresql+asyncpg://u@h/db", "sqlalchemy"),
        ("postgres://u@h/db", "sqlalchemy"),
        ("mysql+pymysql://u@h/db", "sqlalchemy"),
        ("SQLite:///X.db", "sqlalchemy"),
        ("clerk://", "clerk"),
        ("Clerk://", "clerk"),
        ("memo://anything", "memo"),
        ("package.module:Class", None),
        ("just-text", None),
    ],
)
def test_backend_scheme(url: str, scheme: str | None) -> None:
    assert backend_scheme(url) == scheme


def test_sqlite_file_urls_give_working_sqlalchemy_managers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    manager = apikeys.create_key_manager(url)
    try:
        assert type(manager) is SQLAlchemyKeyManager
        new = manager.create_api_key("user_1", "ci", ["read:data"], timedelta(days=1))
        assert manager.validate_api_key(new.secret).user_id == "user_1"
    finally:
        manager.close()
    assert (tmp_path / "keys.db").stat().st_size > 0


async def test_async_sqlite_urls_give_working_async_managers(tmp_path: Path) -> None:
    for url in (f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"):
        manager = apikeys.create_async_key_manager(url)
        try:
            assert type(manager) is AsyncSQLAlchemyKeyManager
            new = await manager.create_api_key("user_2", "ci")
            assert (await manager.validate_api_key(new.secret)).id == new.id
        finally:
            await manager.close()


def test_an_async_driver_url_still_gives_a_working_sync_manager(tmp_path: Path) -> None:
    manager = apikeys.create_key_manager(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    try:
        assert type(manager) is SQLAlchemyKeyManager
        new = manager.create_api_key("u", "n")
        assert manager.validate_api_key(new.secret).id == new.id
    finally:
        manager.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://apikeys@127.0.0.1:1/apikeys",
        "postgresql://apikeys@127.0.0.1:1/apikeys",
        "postgres://apikeys@127.0.0.1:1/apikeys",
    ],
)
async def test_postgresql_urls_give_sqlalchemy_managers(url: str) -> None:
    pytest.importorskip("psycopg")
    # Building a manager opens no connection (nothing listens on port 1).
    manager = apikeys.create_key_manager(url)
    async_manager = apikeys.create_async_key_manager(url)
    try:
        assert type(manager) is SQLAlchemyKeyManager
        assert type(async_manager) is AsyncSQLAlchemyKeyManager
        assert manager.engine.url.get_backend_name() == "postgresql"
        assert async_manager.engine.url.get_backend_name() == "postgresql"
        # Nothing listens there: using it fails closed, as unavailable.
        with pytest.raises(apikeys.BackendUnavailableError):
            manager.create_api_key("u", "n")
    finally:
        manager.close()
        await async_manager.close()


def test_settings_reach_the_built_manager() -> None:
    manager = apikeys.create_key_manager("sqlite://", key_prefix="acme", cache_ttl=0)
    try:
        assert isinstance(manager, SQLAlchemyKeyManager)
        assert manager.create_api_key("u", "n").secret.startswith("acme_1")
        assert not manager.cache.enabled
    finally:
        manager.close()


@pytest.mark.parametrize("url", ["redis://localhost/0", "memcached://x", "nope://"])
def test_an_unknown_scheme_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"apikeys\.backends"):
        apikeys.create_key_manager(url)
    with pytest.raises(ConfigurationError, match=r"apikeys\.async_backends"):
        apikeys.create_async_key_manager(url)


@pytest.mark.parametrize("url", ["nonsense", "apikeys.db", "/var/lib/keys.db"])
def test_neither_a_url_nor_a_path_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="neither a URL"):
        apikeys.create_key_manager(url)


# --- module:Class paths -------------------------------------------------------------------------


def test_a_module_class_path(backend_module: str) -> None:
    manager: Any = apikeys.create_key_manager(f"{backend_module}:SyncBackend", key_prefix="xyz")
    assert type(manager).__name__ == "SyncBackend"
    assert manager.url == f"{backend_module}:SyncBackend"
    assert manager.settings.key_prefix == "xyz"
    async_manager: Any = apikeys.create_async_key_manager(f"{backend_module}:AsyncBackend")
    assert async_manager.asynchronous is True


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("apikeys_no_such_module_anywhere:Manager", "not found"),
        ("apikeys_no_such_package.sub.module:Manager", "not found"),
        ("apikeys._factory:NoSuchClass", "has no 'NoSuchClass'"),
        (":Manager", "must look like"),
        ("apikeys._factory:", "must look like"),
    ],
)
def test_bad_paths_are_configuration_errors(path: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        apikeys.create_key_manager(path)


def test_a_class_without_from_settings_is_a_configuration_error(
    backend_module: str, entry_point_scheme: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match="from_settings"):
        apikeys.create_key_manager(f"{backend_module}:NoFactory")
    # Through an entry point, with a password in the URL: the error names the class only.
    dist_info = next(tmp_path.glob("*.dist-info"))
    (dist_info / "entry_points.txt").write_text(
        f"[apikeys.backends]\n{entry_point_scheme} = {backend_module}:NoFactory\n"
    )
    with pytest.raises(ConfigurationError, match="NoFactory") as caught:
        apikeys.create_key_manager(f"{entry_point_scheme}://admin:hunter2@db.internal/keys")
    assert "hunter2" not in str(caught.value)


def test_a_backend_modules_own_missing_dependency_is_not_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "foobar_backend" imports a missing "foobar": that is the error to see, not "not found".
    stem = f"apk{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{stem}_backend.py").write_text(f"import {stem}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as caught:
        apikeys.create_key_manager(f"{stem}_backend:Manager")
    assert not isinstance(caught.value, ConfigurationError)
    assert caught.value.name == stem


# --- entry points -----------------------------------------------------------------------------------


def test_an_entry_point_backend_is_found_by_scheme(entry_point_scheme: str) -> None:
    url = f"{entry_point_scheme}://somewhere/db"
    manager: Any = apikeys.create_key_manager(url, cache_ttl=3)
    assert type(manager).__name__ == "SyncBackend"
    assert manager.url == url
    assert manager.settings.cache_ttl == 3


def test_an_async_entry_point_backend(entry_point_scheme: str) -> None:
    manager: Any = apikeys.create_async_key_manager(f"{entry_point_scheme.upper()}://x")
    assert type(manager).__name__ == "AsyncBackend"


def test_built_in_schemes_win_over_entry_points(entry_point_scheme: str) -> None:
    assert resolve_backend_class("sqlite://", asynchronous=False) is SQLAlchemyKeyManager
    assert resolve_backend_class("sqlite://", asynchronous=True) is AsyncSQLAlchemyKeyManager


# --- the environment and the default --------------------------------------------------------------


def test_apikeys_backend_is_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry_point_scheme: str
) -> None:
    monkeypatch.setenv("APIKEYS_BACKEND", f"{entry_point_scheme}://from-env")
    manager: Any = apikeys.create_key_manager()
    assert manager.url == f"{entry_point_scheme}://from-env"
    # An explicit URL, or a backend= setting, wins over the environment.
    assert apikeys.create_key_manager(f"{entry_point_scheme}://explicit").url.endswith("explicit")  # type: ignore[attr-defined]
    from_option: Any = apikeys.create_key_manager(backend=f"{entry_point_scheme}://option")
    assert from_option.url == f"{entry_point_scheme}://option"


def test_apikeys_backend_builds_a_real_sqlite_manager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "env.db"
    monkeypatch.setenv("APIKEYS_BACKEND", f"sqlite:///{database}")
    manager = apikeys.create_key_manager()
    try:
        assert type(manager) is SQLAlchemyKeyManager
        manager.create_api_key("u", "n")
    finally:
        manager.close()
    assert database.exists()


@pytest.fixture
def fake_clerk(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Stand in for apikeys.backends.clerk, to see what the factory asks it for."""
    module = types.ModuleType("apikeys.backends.clerk")
    exec(BACKEND_MODULE, module.__dict__)  # noqa: S102 - our own source
    module.ClerkKeyManager = module.SyncBackend  # type: ignore[attr-defined]
    module.AsyncClerkKeyManager = module.AsyncBackend  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "apikeys.backends.clerk", module)
    return module


def test_nothing_configured_means_clerk(fake_clerk: types.ModuleType) -> None:
    assert DEFAULT_BACKEND_URL == "clerk://"
    manager: Any = apikeys.create_key_manager()
    assert type(manager) is fake_clerk.ClerkKeyManager
    assert manager.url == "clerk://"
    async_manager: Any = apikeys.create_async_key_manager()
    assert type(async_manager) is fake_clerk.AsyncClerkKeyManager


def test_clerk_urls_target_the_clerk_backend_classes() -> None:
    pytest.importorskip("httpx")
    sync_class = resolve_backend_class("clerk://", asynchronous=False)
    async_class = resolve_backend_class("clerk://", asynchronous=True)
    assert (sync_class.__module__, sync_class.__name__) == (
        "apikeys.backends.clerk",
        "ClerkKeyManager",
    )
    assert (async_class.__module__, async_class.__name__) == (
        "apikeys.backends.clerk",
        "AsyncClerkKeyManager",
    )


def test_an_unconfigured_clerk_default_fails_as_configuration() -> None:
    # No secret key anywhere: whatever the Clerk backend does, it is a setup error.
    with pytest.raises(ConfigurationError):
        apikeys.create_key_manager()


# --- missing extras ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("blocked", ["sqlalchemy", "argon2"])
def test_a_missing_extra_names_the_install_command(blocked: str) -> None:
    code = textwrap.dedent(
        f"""\
        import sys
        sys.modules[{blocked!r}] = None
        import apikeys
        try:
            apikeys.create_key_manager("sqlite://")
        except apikeys.MissingDependencyError as exc:
            print(type(exc).__name__, exc.extra, exc, sep="|")
        """
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    name, extra, message = result.stdout.strip().split("|")
    assert (name, extra) == ("MissingDependencyError", "sqlalchemy")
    assert "pip install 'apikeys[sqlalchemy]'" in message
    assert blocked in message


@pytest.mark.parametrize("factory", ["create_key_manager", "create_async_key_manager"])
@pytest.mark.parametrize("configured", [None, "clerk://"])
def test_without_httpx_the_default_backend_says_it_is_the_default(
    factory: str, configured: str | None
) -> None:
    # Someone who installed only apikeys[sqlalchemy] and configured nothing must learn
    # that Clerk is merely the default, and what the local choice is.
    code = textwrap.dedent(
        f"""\
        import os, sys
        os.environ.pop("APIKEYS_BACKEND", None)
        sys.modules["httpx"] = None
        import apikeys
        try:
            apikeys.{factory}({configured!r})
        except apikeys.MissingDependencyError as exc:
            print(exc.extra, exc, sep="|")
        """
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    extra, message = result.stdout.strip().split("|")
    assert extra == "clerk"
    assert "pip install 'apikeys[clerk]'" in message
    if configured is None:
        assert "default" in message
        assert "APIKEYS_BACKEND=sqlite:///" in message
    else:
        # Asked for by name: the plain install hint, no talk of defaults.
        assert "default" not in message


def test_a_missing_dependency_error_pickles_with_its_hint() -> None:
    import pickle

    error = MissingDependencyError("httpx", "clerk", "a hint")
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert (copy.package, copy.extra, copy.hint, str(copy)) == (
        "httpx",
        "clerk",
        "a hint",
        str(error),
    )


def test_missing_dependency_error_is_a_configuration_error() -> None:
    assert issubclass(MissingDependencyError, ConfigurationError)


# --- settings ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "mentions"),
    [
        ({"no_such_option": 1}, "no_such_option"),
        ({"key_prefix": "Bad"}, "key_prefix"),
        ({"key_prefix": "ak"}, "reserved"),
        ({"key_prefix": "ak_live"}, "reserved"),
        ({"cache_ttl": -1}, "cache_ttl"),
        ({"cache_ttl": float("nan")}, "cache_ttl"),
        ({"cache_max_entries": 0}, "cache_max_entries"),
        ({"last_used_interval": -5}, "last_used_interval"),
        ({"timeout": 0}, "timeout"),
        ({"argon2_time_cost": 0}, "argon2_time_cost"),
        ({"create_schema": "perhaps"}, "create_schema"),
        ({"cache_ttl": float("inf")}, "cache_ttl"),
        ({"timeout": float("inf")}, "timeout"),
        ({"last_used_interval": float("inf")}, "last_used_interval"),
        ({"last_used_interval": 1e300}, "last_used_interval"),
        ({"argon2_memory_cost": 2**32}, "argon2_memory_cost"),
        ({"argon2_time_cost": 2**40}, "argon2_time_cost"),
        ({"argon2_parallelism": 2**32}, "argon2_parallelism"),
    ],
)
def test_bad_settings_are_configuration_errors(options: dict[str, Any], mentions: str) -> None:
    with pytest.raises(ConfigurationError, match=mentions):
        apikeys.create_key_manager("sqlite://", **options)
    with pytest.raises(ConfigurationError, match=mentions):
        apikeys.create_async_key_manager("sqlite://", **options)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("APIKEYS_CACHE_TTL", "-1"),
        ("APIKEYS_CACHE_TTL", "soon"),
        ("APIKEYS_CACHE_TTL", "inf"),
        ("APIKEYS_LAST_USED_INTERVAL", "nan"),
        ("APIKEYS_KEY_PREFIX", "ak"),
    ],
)
def test_bad_settings_from_the_environment_are_configuration_errors(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=variable.removeprefix("APIKEYS_").lower()):
        apikeys.create_key_manager("sqlite://")


def test_a_rejected_secret_setting_is_not_echoed() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(clerk_secret_key=["sk_live_very_secret_value"])
    assert "sk_live_very_secret_value" not in str(caught.value)
    assert caught.value.__cause__ is None or "sk_live" not in str(caught.value.__cause__)


def test_keyword_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIKEYS_KEY_PREFIX", "fromenv")
    monkeypatch.setenv("APIKEYS_CACHE_TTL", "2.5")
    assert load_settings().key_prefix == "fromenv"
    assert load_settings().cache_ttl == 2.5
    settings = load_settings(key_prefix="fromkwargs")
    assert settings.key_prefix == "fromkwargs"
    assert settings.cache_ttl == 2.5  # the environment still fills what kwargs leave out


def test_environment_settings_reach_a_real_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIKEYS_KEY_PREFIX", "envkey")
    manager = apikeys.create_key_manager("sqlite://")
    other = apikeys.create_key_manager("sqlite://", key_prefix="argkey")
    try:
        assert manager.create_api_key("u", "n").secret.startswith("envkey_1")
        assert other.create_api_key("u", "n").secret.startswith("argkey_1")
    finally:
        manager.close()
        other.close()


def test_clerk_settings_read_their_unprefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLERK_SECRET_KEY", "sk_test_abc")
    settings = load_settings()
    assert settings.clerk_secret_key is not None
    assert settings.clerk_secret_key.get_secret_value() == "sk_test_abc"
    assert "sk_test_abc" not in repr(settings)


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.key_prefix = "other"


def test_nothing_is_read_until_a_manager_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIKEYS_CACHE_TTL", "-1")
    apikeys.configure(url="sqlite://")  # configuring reads nothing either
    try:
        with pytest.raises(ConfigurationError):
            apikeys.get_key_manager()
    finally:
        apikeys.configure()
