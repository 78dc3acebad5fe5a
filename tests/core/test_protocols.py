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
    "update_api_key_limits",
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

    # The static check is the annotation (mypy runs over the tests); the loop checks the flavours.
    sync_manager: KeyManager = SQLAlchemyKeyManager("sqlite://")
    async_manager: AsyncKeyManager = AsyncSQLAlchemyKeyManager("sqlite+aiosqlite://")
    sync_manager.close()
    del async_manager
    for name in METHODS:
        assert inspect.iscoroutinefunction(getattr(AsyncSQLAlchemyKeyManager, name)), name
        assert not inspect.iscoroutinefunction(getattr(SQLAlchemyKeyManager, name)), name


def test_isinstance_refuses_the_protocols_rather_than_answer_wrongly() -> None:
    # A structural isinstance() sees names, not flavours: an async manager would pass
    # as a KeyManager. The protocols are for type checkers only, so isinstance() raises.
    pytest.importorskip("sqlalchemy")
    from apikeys.backends.sqlalchemy import SQLAlchemyKeyManager

    manager = SQLAlchemyKeyManager("sqlite://")
    try:
        for protocol in (KeyManager, AsyncKeyManager):
            with pytest.raises(TypeError):
                isinstance(manager, protocol)
    finally:
        manager.close()
