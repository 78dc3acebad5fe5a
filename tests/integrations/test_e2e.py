"""End to end: each example app in a real server process on 127.0.0.1, over real HTTP."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest

import apikeys
from tests.integrations.conftest import OWNER, Seeded
from tests.integrations.servers import running_server, uvicorn_command, waitress_command

pytestmark = pytest.mark.e2e

SERVERS = [
    pytest.param(uvicorn_command, "examples.fastapi_app:app", marks=pytest.mark.fastapi,
                 id="fastapi-uvicorn"),
    pytest.param(waitress_command, "examples.flask_app:app", marks=pytest.mark.flask,
                 id="flask-waitress"),
]  # fmt: skip


@pytest.mark.parametrize(("command_for", "app"), SERVERS)
def test_example_app_over_real_http(
    command_for: Callable[[str, int], list[str]], app: str, seeded: Seeded
) -> None:
    with (
        running_server(command_for, app, seeded.url) as base_url,
        httpx.Client(base_url=base_url, timeout=10) as http,
    ):
        assert http.get("/health").json() == {"status": "ok"}

        missing = http.get("/protected")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="api"'
        assert missing.json()["code"] == "missing_api_key"

        auth = {"Authorization": f"Bearer {seeded.admin.secret}"}
        before = datetime.now(UTC)
        protected = http.get("/protected", headers=auth)
        assert protected.status_code == 200
        body = protected.json()
        assert body["message"] == "API key authentication successful"
        assert body["user"] == OWNER
        stamp = datetime.fromisoformat(body["timestamp"])
        assert before - timedelta(seconds=5) <= stamp <= datetime.now(UTC)

        assert (
            http.get("/whoami", headers={"X-API-Key": seeded.reader.secret}).json()["user"] == OWNER
        )
        assert http.get("/whoami").status_code == 401
        revoked = http.get(
            "/protected", headers={"Authorization": f"Bearer {seeded.revoked.secret}"}
        )
        assert revoked.status_code == 403
        assert revoked.json()["code"] == "revoked_api_key"

        # A read-only key manages nothing: no listing, no minting, no revoking.
        reader_auth = {"Authorization": f"Bearer {seeded.reader.secret}"}
        before_refusals = seeded.count_keys()
        for method, path, body in [
            ("GET", "/api-keys", None),
            ("POST", "/api-keys", {"name": "minted", "scopes": ["read:data"]}),
            ("DELETE", f"/api-keys/{seeded.admin.id}", None),
        ]:
            refused = http.request(method, path, headers=reader_auth, json=body)
            assert refused.status_code == 403
            assert refused.headers["www-authenticate"] == (
                'Bearer realm="api", error="insufficient_scope", scope="keys:manage"'
            )
        assert seeded.count_keys() == before_refusals

        created = http.post(
            "/api-keys", headers=auth, json={"name": "e2e", "scopes": ["read:data", "keys:manage"]}
        )
        assert created.status_code == 201
        new_secret = created.json()["secret"]
        new_id = created.json()["id"]
        new_auth = {"Authorization": f"Bearer {new_secret}"}
        assert http.get("/data", headers=new_auth).json()["owner"] == OWNER

        escalation = http.post(
            "/api-keys", headers=new_auth, json={"name": "more", "scopes": ["keys:write"]}
        )
        assert escalation.status_code == 403
        assert escalation.json()["missingScopes"] == ["keys:write"]

        listed = http.get("/api-keys", headers=auth, params={"limit": "100"})
        assert new_id in {item["id"] for item in listed.json()["items"]}
        assert new_secret not in listed.text

        # Concurrent requests: the async manager's pool under uvicorn, the sync
        # manager shared by waitress's worker threads. Misses and hits mixed.
        secrets = [seeded.admin.secret, seeded.reader.secret, new_secret, "apk_1nope"]
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(
                lambda i: http.get("/protected", headers={"X-API-Key": secrets[i % 4]}).status_code,
                range(40),
            ))  # fmt: skip
        assert answers == [200, 200, 200, 403] * 10

        assert http.delete(f"/api-keys/{seeded.other.id}", headers=auth).status_code == 404
        revoke = http.delete(f"/api-keys/{new_id}", headers=auth)
        assert revoke.status_code == 200
        # The server's verification cache is dropped by its own revoke: refused at once.
        assert http.get("/data", headers=new_auth).status_code == 403


@pytest.mark.parametrize(("command_for", "app"), SERVERS)
def test_a_key_rotated_with_grace_elsewhere_mints_only_keys_that_end_with_it(
    command_for: Callable[[str, int], list[str]], app: str, seeded: Seeded
) -> None:
    """The server remembers the leaked key as never expiring (its cache); the rotation,
    done in another process, cut its life to an hour: what it mints ends with it."""
    with (
        running_server(command_for, app, seeded.url) as base_url,
        httpx.Client(base_url=base_url, timeout=10) as http,
    ):
        admin = {"Authorization": f"Bearer {seeded.admin.secret}"}
        leaked = http.post(
            "/api-keys", headers=admin, json={"name": "leaked", "scopes": ["keys:*"]}
        )
        assert leaked.status_code == 201 and leaked.json()["expiresAt"] is None
        auth = {"Authorization": f"Bearer {leaked.json()['secret']}"}
        assert http.get("/api-keys", headers=auth).status_code == 200  # now in its cache

        manager = apikeys.create_key_manager(seeded.url)  # the operator's CLI: rotate --grace 1h
        try:
            manager.rotate_api_key(leaked.json()["id"], grace=3600)
            cut_off = manager.get_api_key(leaked.json()["id"]).expires_at
        finally:
            manager.close()
        assert cut_off is not None

        minted = http.post("/api-keys", headers=auth, json={"name": "minted in the grace period"})
        assert minted.status_code == 201, minted.text
        expires = minted.json()["expiresAt"]
        assert expires is not None, "a key minted by a key with an hour left never expires"
        assert datetime.fromisoformat(expires.replace("Z", "+00:00")) <= cut_off


@pytest.mark.parametrize(("command_for", "app"), SERVERS)
def test_a_limited_keys_fields_and_429_over_real_http(
    command_for: Callable[[str, int], list[str]], app: str, seeded: Seeded
) -> None:
    manager = apikeys.create_key_manager(seeded.url)
    try:
        limited = manager.create_api_key(
            OWNER, "limited", ["read:data"], rate_limit=apikeys.RateLimit(limit=2, window=86400)
        )
    finally:
        manager.close()
    auth = {"Authorization": f"Bearer {limited.secret}"}
    with (
        running_server(command_for, app, seeded.url) as base_url,
        httpx.Client(base_url=base_url, timeout=10) as http,
    ):
        replies = [http.get("/protected", headers=auth) for _ in range(3)]
        unlimited = http.get("/protected", headers={"X-API-Key": seeded.admin.secret})
    assert [reply.status_code for reply in replies] == [200, 200, 429]
    for reply, left in zip(replies[:2], (1, 0), strict=True):
        assert reply.headers["ratelimit-policy"] == '"rate";q=2;w=86400'
        assert reply.headers["ratelimit"].startswith(f'"rate";r={left};t=')
    refused = replies[2]
    assert refused.json()["code"] == "rate_limited"
    assert refused.headers["ratelimit"] == f'"rate";r=0;t={refused.headers["retry-after"]}'
    assert unlimited.status_code == 200
    assert "ratelimit" not in unlimited.headers
