"""The public surface: __all__, lazy imports, py.typed, doctests of the core modules."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import json
import types
import zipfile
from pathlib import Path

import pytest

import apikeys
from tests.core.subprocesses import run_python

EXPECTED_ALL = [
    "KEEP",
    "KEY_PATTERN",
    "MANAGEMENT_SCOPE",
    "APIKey",
    "APIKeyPage",
    "APIKeysError",
    "Allowance",
    "AsyncKeyManager",
    "AuthenticationError",
    "BackendUnavailableError",
    "Balance",
    "ConfigurationError",
    "Expiration",
    "ExpiredKeyError",
    "ForeignUserError",
    "InsecureTransportError",
    "InsufficientScopeError",
    "InvalidInputError",
    "InvalidKeyError",
    "InvalidRequestError",
    "KeyEvent",
    "KeyLimitReachedError",
    "KeyManager",
    "KeyNotFoundError",
    "LifetimeEscalationError",
    "LimitEscalationError",
    "MissingDependencyError",
    "MissingKeyError",
    "NewAPIKey",
    "Quota",
    "QuotaExceededError",
    "RateLimit",
    "RateLimitedError",
    "RevocationIncompleteError",
    "RevokedKeyError",
    "Settings",
    "VerificationBudgetSpentError",
    "VerificationCache",
    "VerifiedKey",
    "__version__",
    "acreate_api_key",
    "add_event_listener",
    "avalidate_api_key",
    "configure",
    "create_api_key",
    "create_async_key_manager",
    "create_key_manager",
    "generate_key",
    "get_async_key_manager",
    "get_key_manager",
    "key_pattern",
    "missing_scopes",
    "normalize_scopes",
    "parse_expiration",
    "parse_key",
    "remove_event_listener",
    "scope_covers",
    "validate_api_key",
]

HEAVY_MODULES = [
    "sqlalchemy",
    "argon2",
    "httpx",
    "fastapi",
    "starlette",
    "flask",
    "django",
    "aiosqlite",
    "psycopg",
]


def isort_style(name: str) -> tuple[int, str]:
    """Ruff's __all__ order (RUF022): CONSTANTS, then Classes, then everything else."""
    if name.isupper() or (name.upper() == name and "_" in name):
        return (0, name)
    if name[0].isupper():
        return (1, name)
    return (2, name)


def test_all_is_exactly_the_expected_public_surface() -> None:
    assert apikeys.__all__ == EXPECTED_ALL


def test_all_is_sorted_and_unique() -> None:
    assert apikeys.__all__ == sorted(apikeys.__all__, key=isort_style)
    assert len(set(apikeys.__all__)) == len(apikeys.__all__)


@pytest.mark.parametrize("name", EXPECTED_ALL)
def test_every_name_resolves(name: str) -> None:
    value = getattr(apikeys, name)
    assert value is not None
    if name != "__version__" and not name.isupper() and not isinstance(value, types.UnionType):
        # Re-exported from a private module: documented where it is defined.
        assert value.__module__.startswith("apikeys._")


def test_every_public_name_is_in_all() -> None:
    public = {
        name
        for name, value in vars(apikeys).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert public <= set(apikeys.__all__)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from apikeys import *", namespace)  # noqa: S102 - a fixed statement
    assert set(namespace) - {"__builtins__"} == set(apikeys.__all__)


def test_version_matches_the_distribution() -> None:
    from importlib.metadata import version

    assert apikeys.__version__ == version("apikeys")


def test_import_apikeys_imports_no_optional_dependency() -> None:
    result = run_python("-c", "import sys, json, apikeys; print(json.dumps(sorted(sys.modules)))")
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    for heavy in HEAVY_MODULES:
        assert not [name for name in loaded if name == heavy or name.startswith(heavy + ".")], heavy
    assert "apikeys.backends.sqlalchemy" not in loaded


def test_import_apikeys_works_with_every_optional_dependency_missing() -> None:
    blocked = ", ".join(repr(name) for name in HEAVY_MODULES)
    result = run_python(
        "-c",
        f"import sys\nfor name in [{blocked}]: sys.modules[name] = None\n"
        "import apikeys\nprint(apikeys.parse_key(apikeys.generate_key().key).prefix)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "apk"


def test_import_reads_no_configuration() -> None:
    # Garbage settings in the environment only matter once a manager is built.
    result = run_python(
        "-c",
        "import apikeys; apikeys.configure(url='sqlite://')",
        env={"APIKEYS_CACHE_TTL": "not-a-number", "APIKEYS_BACKEND": "nope://"},
    )
    assert result.returncode == 0, result.stderr


def test_py_typed_ships_in_the_package() -> None:
    marker = Path(apikeys.__file__).parent / "py.typed"
    assert marker.is_file()


def test_py_typed_ships_in_the_wheel(tmp_path: Path) -> None:
    if importlib.util.find_spec("hatchling") is None:
        pytest.skip("hatchling (the build backend) is not installed")
    result = run_python("-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("apikeys-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "apikeys/py.typed" in names
    assert "apikeys/__init__.py" in names
    assert not [name for name in names if name.startswith("tests/")]


CORE_MODULES = [
    "apikeys",
    "apikeys._scopes",
    "apikeys._factory",
    "apikeys._default",
    "apikeys._keyformat",
    "apikeys._keylimits",
    "apikeys._meter",
]


@pytest.mark.parametrize("module_name", CORE_MODULES)
def test_core_docstring_examples_run(module_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APIKEYS_BACKEND", raising=False)
    module = importlib.import_module(module_name)
    try:
        results = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    finally:
        apikeys.configure()  # _default's example configures the default managers
    assert results.failed == 0


def test_every_import_guard_names_an_extra_that_exists() -> None:
    import re
    import tomllib
    from pathlib import Path

    root = Path(apikeys.__file__).resolve().parent
    extras = tomllib.loads((root.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    named = {
        (path.relative_to(root).as_posix(), extra)
        for path in root.rglob("*.py")
        for extra in re.findall(
            r'MissingDependencyError\((?:"[\w.]+"|[^,()]+), "(\w+)"\) from exc',
            path.read_text(encoding="utf-8"),
        )
    }
    guarded = {extra for _, extra in named}
    assert {
        "starlette",
        "fastapi",
        "flask",
        "django",
        "drf",
        "sqlalchemy",
        "clerk",
        "redis",
    } <= guarded
    assert {(module, extra) for module, extra in named if extra not in extras} == set()
