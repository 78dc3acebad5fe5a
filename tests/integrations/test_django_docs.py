"""The Python examples of docs/integrations/django.md run, and answer as documented."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from django.test import Client
from django.test.utils import override_settings
from django.urls import path

import apikeys
from tests.integrations.conftest import OWNER
from tests.integrations.django_settings import configured

pytestmark = pytest.mark.django

PAGE = Path(__file__).resolve().parents[2] / "docs" / "integrations" / "django.md"
_PYTHON_BLOCK_RE = re.compile(r"^```python\n(?P<body>.*?)^```$", re.S | re.M)


@pytest.fixture(scope="module", autouse=True)
def _django() -> Iterator[None]:
    with configured():
        yield


def run_page() -> dict[str, Any]:
    """Run every python block of the page, in order, in one namespace."""
    namespace: dict[str, Any] = {"__name__": "docs_django"}
    text = PAGE.read_text(encoding="utf-8")
    blocks = list(_PYTHON_BLOCK_RE.finditer(text))
    assert len(blocks) == 6
    for match in blocks:
        padding = "\n" * text.count("\n", 0, match.start("body"))
        exec(compile(padding + match.group("body"), str(PAGE), "exec"), namespace)  # noqa: S102
    return namespace


def test_django_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The page's examples run twice in one folder, as a reader re-running them would.
    for run in (1, 2):
        from apikeys.integrations.django import APIKeys

        monkeypatch.chdir(tmp_path)  # the page's sqlite:///apikeys.db is a file here
        monkeypatch.delenv("APIKEYS_BACKEND", raising=False)
        page = run_page()
        manager = apikeys.create_key_manager("sqlite:///apikeys.db")
        try:
            reader = manager.create_api_key(OWNER, "docs", ["read:data"]).secret
            keeper = manager.create_api_key(OWNER, "keeper", ["read:data", "keys:manage"]).secret
            other = manager.create_api_key("user_9", "docs", ["read:data"]).secret
        finally:
            manager.close()

        class URLConf:
            urlpatterns: ClassVar[list[Any]] = [
                *page["urlpatterns"],
                path("drf/data", page["DataView"].as_view()),
                path("drf/reports", page["ReportView"].as_view()),
            ]

        auth = {"Authorization": f"Bearer {reader}"}
        with override_settings(
            APIKEYS=page["APIKEYS"], MIDDLEWARE=page["MIDDLEWARE"], ROOT_URLCONF=URLConf
        ):
            client = Client()
            try:
                assert client.get("/health").json() == {"status": "ok"}  # exempt
                assert client.get("/protected").status_code == 401
                body = client.get("/protected", headers=auth).json()
                assert body["message"] == "API key authentication successful"
                assert body["user"] == OWNER
                assert client.get("/reports", headers=auth).json() == {"owner": OWNER}
                keeper_auth = {"Authorization": f"Bearer {keeper}"}
                assert client.get("/api-keys", headers=keeper_auth).json()["total"] == 2 * run
                assert client.get("/api-keys", headers=auth).status_code == 403
                assert client.get("/drf/data", headers={"X-API-Key": other}).json() == {
                    "owner": "user_9"
                }
                refused = client.get("/drf/reports", headers=auth)
                assert refused.status_code == 403
                assert refused.json()["missingScopes"] == ["read:reports"]
                elsewhere = tmp_path / f"elsewhere-{run}"
                elsewhere.mkdir()
                page["check_protected_view"](elsewhere)
            finally:
                APIKeys.current().close()
        middleware = page["ReadOnlyAPIMiddleware"](lambda request: None)
        assert middleware.required_scopes == ("read:data",)
        assert middleware.exempt == ("/health",)
        assert page["REST_FRAMEWORK"]["EXCEPTION_HANDLER"].startswith("apikeys.integrations.django")
