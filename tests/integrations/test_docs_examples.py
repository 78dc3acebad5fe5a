"""The Python examples of docs/integrations/{fastapi,flask}.md run, and answer as documented."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import apikeys
from tests.integrations.conftest import OWNER

DOCS = Path(__file__).resolve().parents[2] / "docs" / "integrations"
_PYTHON_BLOCK_RE = re.compile(r"^```python\n(?P<body>.*?)^```$", re.S | re.M)


def run_blocks(page: str) -> list[dict[str, Any]]:
    """Run every python block of ``page`` in one namespace; return a snapshot after each."""
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    snapshots = []
    text = (DOCS / page).read_text(encoding="utf-8")
    for match in _PYTHON_BLOCK_RE.finditer(text):
        padding = "\n" * text.count("\n", 0, match.start("body"))
        exec(compile(padding + match.group("body"), str(DOCS / page), "exec"), namespace)  # noqa: S102
        snapshots.append(dict(namespace))
    return snapshots


@pytest.fixture
def in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The docs use ``sqlite:///apikeys.db``: a file in the working directory."""
    monkeypatch.chdir(tmp_path)
    for name in ("APIKEYS_BACKEND",):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _issue_key(scopes: list[str]) -> str:
    manager = apikeys.create_key_manager("sqlite:///apikeys.db")
    try:
        return manager.create_api_key(OWNER, "docs", scopes).secret
    finally:
        manager.close()


@pytest.mark.fastapi
def test_fastapi_page(in_tmp_dir: Path) -> None:
    # The page's examples run twice in one folder, as a reader re-running them would.
    for run in (1, 2):
        from starlette.testclient import TestClient

        snapshots = run_blocks("fastapi.md")
        assert len(snapshots) == 4  # the last one checks its own answers
        # The page's first key: "--scope 'read:data keys:manage'".
        secret = _issue_key(["read:data", "keys:manage"])
        reader = {"Authorization": f"Bearer {_issue_key(['read:data'])}"}
        auth = {"Authorization": f"Bearer {secret}"}
        with TestClient(snapshots[0]["app"]) as client:
            body = client.get("/protected", headers=auth).json()
            assert body["message"] == "API key authentication successful"
            assert body["user"] == OWNER
            assert client.get("/docs").status_code == 200  # exempt, as the page says
            assert client.get("/reports").status_code == 401
            assert client.get("/api-keys", headers=auth).json()["total"] == 2 * run
            assert client.get("/api-keys", headers=reader).status_code == 403
        starlette_app = snapshots[2]["app"]
        with TestClient(starlette_app) as client:
            assert client.get("/reports", headers=auth).json() == {"user": OWNER}
            assert client.get("/api-keys", headers=auth).status_code == 200
            assert client.get("/api-keys", headers=reader).status_code == 403
            assert client.portal is not None  # set while the client is open
            client.portal.call(snapshots[2]["manager"].close)


@pytest.mark.flask
def test_flask_page(in_tmp_dir: Path) -> None:
    # The page's examples run twice in one folder, as a reader re-running them would.
    for run in (1, 2):
        snapshots = run_blocks("flask.md")
        assert len(snapshots) == 2
        app = snapshots[-1]["app"]
        secret = _issue_key(["read:data", "keys:manage"])
        reader = _issue_key(["read:data"])
        client = app.test_client()
        try:
            body = client.get("/protected", headers={"Authorization": f"Bearer {secret}"}).json
            assert body["message"] == "API key authentication successful"
            assert body["user"] == OWNER
            assert client.get("/health").status_code == 404  # no such route, but not refused
            assert client.get("/reports").status_code == 401
            listed = client.get("/api-keys", headers={"X-API-Key": secret}).json
            assert listed["total"] == 2 * run
            refused = client.get("/api-keys", headers={"X-API-Key": reader})
            assert refused.status_code == 403
            assert refused.json["missingScopes"] == ["keys:manage"]
        finally:
            app.extensions["apikeys"].manager.close()
