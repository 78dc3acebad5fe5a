"""Every framework module exports the same public names, so switching is one import line."""

from __future__ import annotations

import importlib

import pytest

SHARED_NAMES = {
    "APIKeyMiddleware",
    "APIKeys",
    "IntegrationSettings",
    "management_router",
    "require_api_key",
    "to_response",
}
MODULES = [
    pytest.param("apikeys.integrations.fastapi", marks=pytest.mark.fastapi),
    pytest.param("apikeys.integrations.starlette", marks=pytest.mark.fastapi),
    pytest.param("apikeys.integrations.flask", marks=pytest.mark.flask),
    pytest.param("apikeys.integrations.django", marks=pytest.mark.django),
]


@pytest.mark.parametrize("module_name", MODULES)
def test_module_exports_the_shared_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = set(module.__all__)
    assert exported >= SHARED_NAMES
    for name in exported:
        assert hasattr(module, name), name
    # One settings class for all: configuration carries over between frameworks.
    from apikeys.integrations._settings import IntegrationSettings

    assert module.IntegrationSettings is IntegrationSettings


def test_fastapi_and_flask_export_exactly_the_shared_names() -> None:
    for module_name in ("apikeys.integrations.fastapi", "apikeys.integrations.flask"):
        assert set(importlib.import_module(module_name).__all__) == SHARED_NAMES
