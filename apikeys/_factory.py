"""Choose a backend from configuration: URL scheme → lazy registry → entry points → path.

Resolution order for ``create_key_manager(url)``:

1. ``url`` (else ``APIKEYS_BACKEND``; else ``clerk://`` — Clerk is the default).
2. A built-in scheme: ``clerk`` or an SQL dialect (``sqlite``, ``postgresql``,
   ``mysql``, … with any ``+driver``) → the SQLAlchemy backend.
3. An entry point named after the scheme in the ``apikeys.backends`` group
   (``apikeys.async_backends`` for async managers), for third-party backends.
4. A ``package.module:ClassName`` path.

Backends are imported only when chosen, so a missing optional dependency
fails here, with the extra to install, and never at ``import apikeys``.
"""

from __future__ import annotations

import functools
import importlib
import sys
from importlib.metadata import entry_points
from typing import Any, cast

from apikeys._config import Settings, load_settings
from apikeys._errors import ConfigurationError, MissingDependencyError
from apikeys._protocols import AsyncKeyManager, KeyManager

DEFAULT_BACKEND_URL = "clerk://"

# scheme -> (sync class path, async class path); imported lazily.
_BUILTIN_BACKENDS: dict[str, tuple[str, str]] = {
    "clerk": (
        "apikeys.backends.clerk:ClerkKeyManager",
        "apikeys.backends.clerk:AsyncClerkKeyManager",
    ),
    "sqlalchemy": (
        "apikeys.backends.sqlalchemy:SQLAlchemyKeyManager",
        "apikeys.backends.sqlalchemy:AsyncSQLAlchemyKeyManager",
    ),
}
_SQL_DIALECTS = frozenset(
    {"sqlite", "postgresql", "postgres", "mysql", "mariadb", "mssql", "oracle", "cockroachdb"}
)


def backend_scheme(url: str) -> str | None:
    """Return the backend name a URL selects (``sqlalchemy`` for SQL dialects)."""
    if "://" not in url:
        return None
    scheme = url.split("://", 1)[0].lower()
    dialect = scheme.split("+", 1)[0]
    if dialect in _SQL_DIALECTS:
        return "sqlalchemy"
    return scheme


def builtin_backend_of(manager: object) -> str | None:
    """The built-in backend (``clerk``, ``sqlalchemy``) ``manager`` belongs to, or ``None``.

    An instance of a subclass of a built-in manager belongs to that backend.
    Nothing is imported: a backend whose module is not loaded has no managers yet.

    Example:
        >>> builtin_backend_of(create_key_manager("sqlite:///:memory:"))
        'sqlalchemy'
        >>> builtin_backend_of(object()) is None
        True
    """
    # Classes are hashable; typeshed's lru_cache asks for Hashable, which type[...] is not to mypy.
    return _backend_of_class(type(manager))  # type: ignore[arg-type]


@functools.lru_cache(maxsize=64)
def _backend_of_class(manager_class: type[Any]) -> str | None:
    # Cached: every request of an integration asks, and ABC subclass checks are slow.
    for scheme, paths in _BUILTIN_BACKENDS.items():
        for path in paths:
            module_name, _, attribute = path.partition(":")
            known = getattr(sys.modules.get(module_name), attribute, None)
            if isinstance(known, type) and issubclass(manager_class, known):
                return scheme
    return None


def _import_path(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"backend path {path!r} must look like 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only the named module (or a parent package) missing means a bad path; a
        # module merely named alike ("foo" vs "foobar") is a broken dependency.
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigurationError(f"backend module {module_name!r} not found") from exc
        raise
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(f"backend {path!r}: {module_name} has no {attribute!r}") from None


def resolve_backend_class(url: str, *, asynchronous: bool) -> Any:
    """Return the manager class ``url`` selects, importing it only now."""
    scheme = backend_scheme(url)
    if scheme is None:
        if ":" in url:
            return _import_path(url)
        raise ConfigurationError(
            f"backend {url!r} is neither a URL (sqlite:///apikeys.db, clerk://)"
            " nor a 'package.module:ClassName' path"
        )
    if scheme in _BUILTIN_BACKENDS:
        return _import_path(_BUILTIN_BACKENDS[scheme][1 if asynchronous else 0])
    group = "apikeys.async_backends" if asynchronous else "apikeys.backends"
    for entry_point in entry_points(group=group, name=scheme):
        return entry_point.load()
    raise ConfigurationError(
        f"no apikeys backend for {scheme!r} URLs; built in are clerk:// and SQL URLs"
        f" (sqlite:///…, postgresql+psycopg://…); others register in the {group!r} entry point group"
    )


def _build(manager_class: Any, url: str, settings: Settings) -> Any:
    # Every backend class is built through from_settings(url, settings); a
    # third-party class that lacks it is a configuration error, not an AttributeError.
    from_settings = getattr(manager_class, "from_settings", None)
    if not callable(from_settings):
        # Named by class, never by URL: a URL may carry a password.
        raise ConfigurationError(
            f"backend class {getattr(manager_class, '__qualname__', manager_class)!r}"
            " has no from_settings(url, settings) classmethod"
        )
    return from_settings(url, settings)


_DEFAULT_BACKEND_HINT = (
    "no backend is configured, so the default, Clerk (clerk://), was chosen;"
    " for keys in a local database set APIKEYS_BACKEND=sqlite:///apikeys.db"
    " (or pass the URL) with apikeys[sqlalchemy] installed"
)


def _manager_class(
    url: str | None, options: dict[str, Any], *, asynchronous: bool
) -> tuple[Any, str, Settings]:
    """The class configuration selects, with the URL chosen and the settings read."""
    settings = load_settings(**options)
    chosen = url or settings.backend
    try:
        return (
            resolve_backend_class(chosen or DEFAULT_BACKEND_URL, asynchronous=asynchronous),
            chosen or DEFAULT_BACKEND_URL,
            settings,
        )
    except MissingDependencyError as exc:
        if chosen is not None:
            raise
        # Nobody asked for Clerk: say it is the default, and what the local choice is.
        raise MissingDependencyError(exc.package, exc.extra, _DEFAULT_BACKEND_HINT) from exc


def create_key_manager(url: str | None = None, **options: Any) -> KeyManager:
    """Build the synchronous manager configuration asks for.

    Args:
        url: Backend URL or ``module:Class`` path; defaults to ``APIKEYS_BACKEND``,
            then to Clerk (``clerk://``).
        **options: Any :class:`~apikeys.Settings` field, overriding the environment.

    Example:
        >>> manager = create_key_manager("sqlite:///:memory:")
        >>> new = manager.create_api_key("user_1", "ci", ["read:data"])
        >>> manager.validate_api_key(new.secret).user_id
        'user_1'
    """
    manager_class, chosen, settings = _manager_class(url, options, asynchronous=False)
    return cast(KeyManager, _build(manager_class, chosen, settings))


def create_async_key_manager(url: str | None = None, **options: Any) -> AsyncKeyManager:
    """Build the async manager configuration asks for (see :func:`create_key_manager`)."""
    manager_class, chosen, settings = _manager_class(url, options, asynchronous=True)
    return cast(AsyncKeyManager, _build(manager_class, chosen, settings))


__all__ = ["builtin_backend_of", "create_async_key_manager", "create_key_manager"]
