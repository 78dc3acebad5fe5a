"""Django, configured through ``settings.APIKEYS``: a local key sent to a Clerk backend and a
Clerk key sent to the local backend are refused with the documented 403, never a 500 or a success.

The Clerk side is :class:`apikeys.testing.FakeClerk` served over a real socket on
127.0.0.1 (:mod:`tests.clerk_server`), so the manager Django builds from ``BACKEND: "clerk://"``,
``CLERK_API_URL`` and ``CLERK_SECRET_KEY`` is the real one, with its real HTTP
client; the fake counts every call it gets. Requests go through Django's own
test clients: ``Client`` (WSGI, the sync manager) and ``AsyncClient`` (ASGI,
the async manager).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import apikeys
from apikeys.backends.sqlalchemy import SQLAlchemyKeyManager
from apikeys.integrations.django import APIKeys
from apikeys.testing import FAKE_SECRET_KEY, FakeClerk
from tests.clerk_server import served
from tests.integrations.contract import AppOptions, Client, Reply, bearer
from tests.integrations.django_settings import django_client

pytestmark = [pytest.mark.django, pytest.mark.clerk]

VERIFY = "POST /api_keys/verify"
REFUSED = {"code": "invalid_api_key", "message": apikeys.InvalidKeyError().message}


@pytest.fixture
def fake() -> FakeClerk:
    return FakeClerk()


@pytest.fixture
def clerk_api_url(fake: FakeClerk) -> Iterator[str]:
    """The fake served on a free port of 127.0.0.1, as ``CLERK_API_URL``."""
    with served(fake) as url:
        yield url


@pytest.fixture
def local_db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'keys.db'}"


@pytest.fixture
def local_key(local_db: str) -> apikeys.NewAPIKey:
    """A well-formed ``apk_1…`` key issued by a real SQLAlchemy manager."""
    manager = SQLAlchemyKeyManager(local_db)
    try:
        return manager.create_api_key("user_local", "local key", ["read:data"])
    finally:
        manager.close()


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# Sync client: a sync view (the sync manager). Async client: an async view (the async manager).
ROUTES = {"sync": "/protected-sync", "async": "/protected"}


def assert_refused(reply: Reply, *sent: str) -> None:
    """The documented 403: exactly ``REFUSED``, JSON, no challenge, nothing echoed."""
    assert reply.status == 403, (reply.status, reply.text[:300])
    assert reply.json == REFUSED
    assert reply.headers["content-type"].startswith("application/json")
    assert "www-authenticate" not in reply.headers
    for value in sent:
        assert value not in reply.text


def _clerk_app(clerk_api_url: str, flavour: str) -> Any:
    setting = {
        "BACKEND": "clerk://",
        "CLERK_API_URL": clerk_api_url,
        "CLERK_SECRET_KEY": FAKE_SECRET_KEY,
    }
    return django_client("clerk://", AppOptions(), asynchronous=flavour == "async", APIKEYS=setting)


def test_a_local_key_sent_to_a_clerk_backend_is_refused(
    fake: FakeClerk, clerk_api_url: str, local_key: apikeys.NewAPIKey, flavour: str
) -> None:
    issuer = fake.key_manager()
    user_id = fake.new_user_id()
    clerk_key = issuer.create_api_key(user_id, "control", ["read:data"]).secret
    issuer.close()
    route = ROUTES[flavour]
    client: Client
    with _clerk_app(clerk_api_url, flavour) as client:
        manager = APIKeys.current().manager
        assert type(manager).__name__ == "ClerkKeyManager"  # built from settings.APIKEYS
        # The control: the fake's own key, over the socket, is accepted with its owner.
        accepted = client.request("GET", route, headers=bearer(clerk_key))
        assert accepted.status == 200, accepted.text[:300]
        assert accepted.json["user"] == user_id
        assert fake.count(VERIFY) == 1
        # A local ``apk_1…`` key never reaches Clerk: the Clerk manager refuses any secret
        # without the ``ak_`` shape before calling Clerk.
        for headers in (bearer(local_key.secret), {"X-API-Key": local_key.secret}):
            assert_refused(client.request("GET", route, headers=headers), local_key.secret)
        # The contrast: a Clerk-shaped key Clerk does not know is refused by Clerk (one
        # call), and its holder sees exactly what the holder of the local key saw.
        unknown = "ak_" + secrets.token_hex(16)
        assert_refused(client.request("GET", route, headers=bearer(unknown)), unknown)
    assert fake.count(VERIFY) == 2
    # The active-key count and the create, the control's and the unknown key's verification.
    assert fake.count() == 4
    assert all(local_key.secret not in str(request.body) for request in fake.requests)


class QueryCounter:
    """Counts statements sent by every SQLAlchemy engine (the async ones' too) while active."""

    def __init__(self) -> None:
        self.count = 0

    def _on_execute(self, *_args: Any) -> None:
        self.count += 1

    def __enter__(self) -> QueryCounter:
        sa.event.listen(sa.Engine, "before_cursor_execute", self._on_execute)
        return self

    def __exit__(self, *_exc: object) -> None:
        sa.event.remove(sa.Engine, "before_cursor_execute", self._on_execute)


def test_a_clerk_key_sent_to_the_local_backend_is_refused_without_io(
    fake: FakeClerk, local_db: str, local_key: apikeys.NewAPIKey, flavour: str
) -> None:
    issuer = fake.key_manager()
    clerk_key = issuer.create_api_key(fake.new_user_id(), "clerk key", ["read:data"]).secret
    issuer.close()
    route = ROUTES[flavour]
    with (
        django_client(local_db, AppOptions(), asynchronous=flavour == "async") as client,
        QueryCounter() as queries,
    ):
        for headers in (bearer(clerk_key), {"X-API-Key": clerk_key}):
            assert_refused(client.request("GET", route, headers=headers), clerk_key)
        # ``ak_…`` is not this backend's format: refused by the parser, before any query.
        assert queries.count == 0
        # The control: the counter counts, and the local backend serves its own key.
        accepted = client.request("GET", route, headers=bearer(local_key.secret))
        assert accepted.status == 200, accepted.text[:300]
        assert accepted.json["user"] == "user_local"
        assert queries.count >= 1
