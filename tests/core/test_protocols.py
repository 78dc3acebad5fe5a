"""KeyManager and AsyncKeyManager are twins: same names, same parameters."""

from __future__ import annotations

import inspect

import pytest

from apikeys import AsyncKeyManager, KeyManager

METHODS = [
    "create_api_key",
    "validate_api_key",
    "list_api_keys",
    "get_api_key",
    "revoke_api_key",
    "delete_api_key",
    "rotate_api_key",
    "close",
]


def public_methods(protocol: type) -> list[str]:
    return sorted(
        name
        for name, value in vars(protocol).items()
        if not name.startswith("_") and inspect.isfunction(value)
    )


def test_both_protocols_have_exactly_the_documented_methods() -> None:
    assert public_methods(KeyManager) == sorted(METHODS)
    assert public_methods(AsyncKeyManager) == sorted(METHODS)


@pytest.mark.parametrize("name", METHODS)
def test_twins_share_parameters_and_results(name: str) -> None:
    sync_method = getattr(KeyManager, name)
    async_method = getattr(AsyncKeyManager, name)
    assert inspect.signature(sync_method) == inspect.signature(async_method)
    assert not inspect.iscoroutinefunction(sync_method)
    assert inspect.iscoroutinefunction(async_method)


def test_the_sqlalchemy_managers_satisfy_the_protocols() -> None:
    pytest.importorskip("sqlalchemy")
    from apikeys.backends.sqlalchemy import AsyncSQLAlchemyKeyManager, SQLAlchemyKeyManager

    sync_manager = SQLAlchemyKeyManager("sqlite://")
    try:
        assert isinstance(sync_manager, KeyManager)
    finally:
        sync_manager.close()
    for name in METHODS:
        assert inspect.iscoroutinefunction(getattr(AsyncSQLAlchemyKeyManager, name)), name
        assert not inspect.iscoroutinefunction(getattr(SQLAlchemyKeyManager, name)), name


def test_an_object_missing_a_method_is_not_a_key_manager() -> None:
    class Partial:
        def validate_api_key(self, secret: str) -> None:
            raise NotImplementedError

    assert not isinstance(Partial(), KeyManager)
    assert not isinstance(Partial(), AsyncKeyManager)
