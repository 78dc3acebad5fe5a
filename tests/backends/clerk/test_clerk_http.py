"""The Clerk managers behind real web apps (each framework's own test client): Clerk's
trouble reaches API clients as the documented statuses, never as success."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from flask import Flask, g

import apikeys
from apikeys.integrations import fastapi as fastapi_integration
from apikeys.integrations import flask as flask_integration
from apikeys.testing import FakeClerk

pytestmark = pytest.mark.clerk


def fastapi_client(fake: FakeClerk, **options: Any) -> Any:
    """A FastAPI app's test client, its manager (``options``) talking to ``fake``."""
    app = FastAPI()
    fastapi_integration.APIKeys(app, manager=fake.async_key_manager(**options))
    readers = Depends(fastapi_integration.require_api_key(scopes=["read:data"]))

    @app.get("/reports")
    async def reports(key: apikeys.VerifiedKey = readers) -> dict[str, str]:
        return {"user": key.user_id}

    return TestClient(app)


def flask_client(fake: FakeClerk, **options: Any) -> Any:
    """A Flask app's test client, its manager (``options``) talking to ``fake``."""
    app = Flask(__name__)
    flask_integration.APIKeys(app, manager=fake.key_manager(**options))

    @app.get("/reports")
    @flask_integration.require_api_key(scopes=["read:data"])
    def reports() -> dict[str, str]:
        return {"user": g.api_key.user_id}

    return app.test_client()


@pytest.fixture(params=["fastapi", "flask"])
def web(request: pytest.FixtureRequest, fake: FakeClerk) -> Any:
    make = fastapi_client if request.param == "fastapi" else flask_client
    return make(fake)


def get_reports(web: Any, secret: str) -> tuple[int, dict[str, Any], Any]:
    answer = web.get("/reports", headers={"Authorization": f"Bearer {secret}"})
    return answer.status_code, answer.json() if callable(answer.json) else answer.json, answer


def test_statuses_over_clerk(web: Any, fake: FakeClerk, user_id: str) -> None:
    issuer = fake.key_manager()
    reader = issuer.create_api_key(user_id, "reader", ["read:data"])
    writer = issuer.create_api_key(user_id, "writer", ["write:data"])

    status, body, _ = get_reports(web, reader.secret)
    assert (status, body) == (200, {"user": user_id})
    status, body, _ = get_reports(web, writer.secret)
    assert (status, body["code"]) == (403, "insufficient_scope")
    calls = fake.count()
    for garbage in ("ak_" + "N" * 44, "apk_1" + "A" * 51):
        status, body, _ = get_reports(web, garbage)
        assert (status, body["code"]) == (403, "invalid_api_key")
    assert fake.count() == calls + 1  # the garbage cost no call


def test_clerk_down_is_503_with_retry_after(web: Any, fake: FakeClerk, user_id: str) -> None:
    secret = fake.key_manager().create_api_key(user_id, "reader", ["read:data"]).secret
    fake.raise_next(httpx.ConnectError, times=3)  # every attempt
    status, body, answer = get_reports(web, secret)
    assert (status, body["code"]) == (503, "backend_unavailable")
    assert answer.headers["Retry-After"] == "1"
    assert secret not in str(body)
    status, _, _ = get_reports(web, secret)  # Clerk is back
    assert status == 200


def test_clerk_429_is_503_with_retry_after_and_pauses_the_next(
    web: Any, fake: FakeClerk, user_id: str
) -> None:
    secret = fake.key_manager().create_api_key(user_id, "reader", ["read:data"]).secret
    fake.rate_limit(retry_after="30")
    status, body, answer = get_reports(web, secret)
    assert (status, body["code"]) == (503, "backend_unavailable")
    assert answer.headers["Retry-After"] == "30"
    calls = fake.count()
    status, body, answer = get_reports(web, secret)  # within the pause: not sent to Clerk
    assert (status, body["code"]) == (503, "backend_unavailable")
    assert 0 < int(answer.headers["Retry-After"]) <= 30
    assert fake.count() == calls
    assert secret not in str(body)


def test_a_wrong_instance_key_is_a_server_error_not_a_client_one(
    web: Any, fake: FakeClerk, user_id: str
) -> None:
    secret = fake.key_manager().create_api_key(user_id, "reader", ["read:data"]).secret
    fake.secret_key = "sk_test_rotated_by_an_admin"  # our configured key no longer works
    status, body, _ = get_reports(web, secret)
    assert (status, body["code"]) == (500, "configuration_error")
