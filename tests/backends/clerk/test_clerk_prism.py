"""The managers against Stoplight Prism, a mock server driven by Clerk's spec, on 127.0.0.1.

Prism answers with the spec's examples (so every key is the example key,
``ak_3beecc9c…``, whose example times are 1716883200 *milliseconds*, i.e.
January 1970) and refuses requests that break the spec's parameter rules.
It cannot check create/update bodies: their ``claims`` schema (``nullable``
without a ``type``) does not compile in its validator; the tests in
``test_clerk_spec.py`` check those bodies against the spec instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from apikeys import ExpiredKeyError, InvalidInputError, InvalidKeyError, KeyNotFoundError
from apikeys.backends.clerk import AsyncClerkKeyManager, ClerkKeyManager
from tests.backends.clerk.twins import Twin
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.clerk, pytest.mark.e2e]

EXAMPLE_ID = "ak_3beecc9c60adb5f9b850e91a8ee1e992"
SUBJECT = "user_2xhFjEI5X2qWRvtV13BzSj8H6Dk"


@pytest.fixture
def prism(prism_url: str, flavour: str, shared_redis: RedisServer) -> Iterator[Any]:
    """Build managers of the current flavour that talk to Prism, optionally with headers."""
    loop = asyncio.new_event_loop() if flavour == "async" else None
    made: list[Twin] = []

    def make(headers: dict[str, str] | None = None) -> Twin:
        options: dict[str, Any] = {
            "api_url": prism_url,
            "cache_ttl": 0,
            "max_retries": 0,
            "redis_url": shared_redis.url,  # where Clerk counts quotas
            "verification_budget": None,  # which every Prism test would share there
        }
        if flavour == "sync":
            client: Any = httpx.Client(headers=headers)
            manager: Any = ClerkKeyManager("sk_test_prism", http_client=client, **options)
        else:
            client = httpx.AsyncClient(headers=headers)
            manager = AsyncClerkKeyManager("sk_test_prism", http_client=client, **options)
        manager._owns_client = True
        twin = Twin(manager, loop)
        made.append(twin)
        return twin

    yield make
    for twin in made:
        twin.close()
    if loop is not None:
        loop.close()


def test_every_operation_round_trips(prism: Any) -> None:
    manager = prism()
    new = manager.create_api_key(SUBJECT, "from prism", ["read"], timedelta(days=1))
    assert (new.id, new.secret) == (EXAMPLE_ID, "ak_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX")
    assert new.metadata == {"foo": "bar"} and new.scopes == ("read", "write")
    assert manager.get_api_key(EXAMPLE_ID).name == "MY_SERVICE_API_KEY"
    page = manager.list_api_keys(SUBJECT, include_invalid=True, limit=5, offset=1)
    assert [k.id for k in page.items] == [EXAMPLE_ID]
    limited = manager.update_api_key_limits(EXAMPLE_ID, rate_limit="10/1s", quota="500")
    assert limited.id == EXAMPLE_ID
    assert manager.revoke_api_key(EXAMPLE_ID, reason="done").id == EXAMPLE_ID
    manager.delete_api_key(EXAMPLE_ID)
    # The example key "expires" at 1716883200 ms, in 1970: rotation needs a new expiry.
    with pytest.raises(InvalidInputError, match="expired"):
        manager.rotate_api_key(EXAMPLE_ID)
    assert manager.rotate_api_key(EXAMPLE_ID, expiration=timedelta(days=30)).id == EXAMPLE_ID
    with pytest.raises(ExpiredKeyError):
        manager.validate_api_key("ak_" + "A" * 40)


def test_not_found_answers(prism: Any) -> None:
    manager = prism({"Prefer": "code=404"})
    with pytest.raises(KeyNotFoundError):
        manager.get_api_key(EXAMPLE_ID)
    with pytest.raises(KeyNotFoundError):
        manager.delete_api_key(EXAMPLE_ID)
    with pytest.raises(InvalidKeyError) as refused:
        manager.validate_api_key("ak_" + "A" * 40)
    assert type(refused.value) is InvalidKeyError
    assert manager.list_api_keys(SUBJECT).total == 0


def test_bad_request_answers(prism: Any) -> None:
    manager = prism({"Prefer": "code=400"})
    with pytest.raises(InvalidInputError, match="bad_request"):
        manager.create_api_key(SUBJECT, "refused")


def test_prism_checks_what_it_can(prism_url: str) -> None:
    """Prism does refuse requests that break the spec, so the passes above mean something."""
    auth = {"Authorization": "Bearer sk_test_prism"}
    with httpx.Client(base_url=prism_url, headers=auth) as client:
        assert client.get("/api_keys").status_code == 400  # subject is required
        assert client.get("/api_keys/not-an-id").status_code == 400
        assert client.post("/api_keys/verify", json={"token": "x"}).status_code == 400
        assert client.get("/api_keys", params={"subject": SUBJECT}).status_code == 200
    with httpx.Client(base_url=prism_url) as anonymous:
        assert anonymous.get("/api_keys", params={"subject": SUBJECT}).status_code == 401
