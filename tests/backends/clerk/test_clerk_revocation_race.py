"""Once ``revoke_api_key`` returns, no validation in this process accepts the key, even one
whose verification was in flight across the revocation (it must not fill the cache)."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from apikeys import RevokedKeyError
from apikeys.backends.clerk import AsyncClerkKeyManager, ClerkKeyManager
from apikeys.testing import FakeClerk

pytestmark = pytest.mark.clerk


class HeldVerify:
    """Lets Clerk answer a verification, then holds the answer until released."""

    def __init__(self, fake: FakeClerk) -> None:
        self.fake = fake
        self.held = threading.Event()
        self.release = threading.Event()
        self.hold_next = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        response = self.fake.transport.handle_request(request)
        if request.url.path.endswith("/verify") and self.hold_next:
            self.hold_next = False
            self.held.set()
            assert self.release.wait(10)
        return response


def test_sync_verification_in_flight_across_a_revoke(fake: FakeClerk, user_id: str) -> None:
    spy = HeldVerify(fake)
    with httpx.Client(transport=httpx.MockTransport(spy)) as client:
        manager = ClerkKeyManager(
            fake.secret_key, api_url=fake.api_url, http_client=client, cache_ttl=60
        )
        new = manager.create_api_key(user_id, "racing")
        spy.hold_next = True
        outcome: list[object] = []
        worker = threading.Thread(
            target=lambda: outcome.append(manager.validate_api_key(new.secret).id)
        )
        worker.start()
        assert spy.held.wait(10)
        manager.revoke_api_key(new.id)
        spy.release.set()
        worker.join(10)
        assert outcome == [new.id]  # it began before the revocation: either answer is fair
        with pytest.raises(RevokedKeyError):
            manager.validate_api_key(new.secret)
        assert len(manager.cache) == 0


async def test_async_verification_in_flight_across_a_revoke(fake: FakeClerk, user_id: str) -> None:
    gate = asyncio.Event()
    held = asyncio.Event()
    hold = {"next": False}

    async def clerk(request: httpx.Request) -> httpx.Response:
        response = fake.transport.handle_request(request)
        if request.url.path.endswith("/verify") and hold["next"]:
            hold["next"] = False
            held.set()
            await gate.wait()
        return response

    async with httpx.AsyncClient(transport=httpx.MockTransport(clerk)) as client:
        manager = AsyncClerkKeyManager(
            fake.secret_key, api_url=fake.api_url, http_client=client, cache_ttl=60
        )
        new = await manager.create_api_key(user_id, "racing")
        hold["next"] = True
        racing = asyncio.ensure_future(manager.validate_api_key(new.secret))
        await held.wait()
        await manager.revoke_api_key(new.id)
        gate.set()
        assert (await racing).id == new.id
        with pytest.raises(RevokedKeyError):
            await manager.validate_api_key(new.secret)
        assert len(manager.cache) == 0
