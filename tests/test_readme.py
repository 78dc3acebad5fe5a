"""The README's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import apikeys
from apikeys.backends.clerk import ClerkKeyManager

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def _run(block: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "readme"}
    exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    return namespace


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("APIKEYS_BACKEND", "CLERK_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_the_readme_has_its_examples() -> None:
    assert len(_python_blocks()) == 4


def test_quick_start(capsys: pytest.CaptureFixture[str]) -> None:
    # Twice in the same folder: a reader runs it again with apikeys.db still there.
    for _run_number in range(2):
        namespace = _run(_python_blocks()[0])
        assert "403 revoked_api_key" in capsys.readouterr().out
        namespace["manager"].close()


def test_protect_routes() -> None:
    namespace = _run(_python_blocks()[1])
    issuer = apikeys.create_key_manager("sqlite:///apikeys.db")
    reader = issuer.create_api_key("user_1", "reader", ["read:data"])
    writer = issuer.create_api_key("user_1", "writer", ["write:data"])
    # The first management key, issued outside /api-keys as the README says.
    admin = issuer.create_api_key("user_1", "admin console", [apikeys.MANAGEMENT_SCOPE])
    issuer.close()
    with TestClient(namespace["app"]) as client:
        assert client.get("/protected").status_code == 401
        bearer = {"Authorization": f"Bearer {reader.secret}"}
        assert client.get("/protected", headers=bearer).json() == {"user": "user_1"}
        wrong_scope = {"Authorization": f"Bearer {writer.secret}"}
        refused = client.get("/protected", headers=wrong_scope)
        assert refused.status_code == 403
        assert refused.json()["code"] == "insufficient_scope"
        not_a_manager = client.get("/api-keys", headers=bearer)
        assert not_a_manager.status_code == 403
        assert not_a_manager.json()["missingScopes"] == ["keys:manage"]
        manager_bearer = {"Authorization": f"Bearer {admin.secret}"}
        listed = client.get("/api-keys", headers=manager_bearer).json()
        assert {item["id"] for item in listed["items"]} == {reader.id, writer.id, admin.id}


def test_clerk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLERK_SECRET_KEY", "sk_test_readme")
    namespace = _run(_python_blocks()[2])
    manager = namespace["manager"]
    assert isinstance(manager, ClerkKeyManager)
    assert "sk_test_readme" not in repr(manager)
    manager.close()


def test_rate_limits_and_quotas(capsys: pytest.CaptureFixture[str]) -> None:
    _run(_python_blocks()[3])
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "95 99995"
    assert printed[1].startswith("rate_limited ")
