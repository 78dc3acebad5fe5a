"""Once ``revoke_api_key`` returns, no validation in this process accepts the key.

Found by this suite: a validation that read the key just before a revocation
committed used to put it in the cache just after, so the revoked key was
accepted again for up to ``cache_ttl``. The cache now refuses entries looked
up before an invalidation.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher, Type

from apikeys import InvalidKeyError, RevokedKeyError, VerificationCache, VerifiedKey
from apikeys.backends.sqlalchemy import AsyncSQLAlchemyKeyManager, SQLAlchemyKeyManager
from tests.integrations.servers import running_server, uvicorn_command

pytestmark = pytest.mark.sqlalchemy


class PausingHasher(PasswordHasher):
    """Pauses inside ``verify`` -- after the row was read, before the cache is filled."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1, type=Type.ID)
        self.pause = False
        self.paused = threading.Event()
        self.resume = threading.Event()

    def verify(self, hash: str | bytes, password: str | bytes) -> Any:
        if self.pause:
            self.pause = False
            self.paused.set()
            assert self.resume.wait(10)
        return super().verify(hash, password)


@pytest.mark.parametrize("operation", ["revoke", "rotate", "delete"])
def test_a_validation_racing_a_revocation_does_not_refill_the_cache(
    tmp_path: Path, operation: str
) -> None:
    hasher = PausingHasher()
    manager = SQLAlchemyKeyManager(f"sqlite:///{tmp_path / 'k.db'}", password_hasher=hasher)
    new = manager.create_api_key("u1", "k")
    results: list[VerifiedKey] = []
    hasher.pause = True
    racing = threading.Thread(target=lambda: results.append(manager.validate_api_key(new.secret)))
    racing.start()
    assert hasher.paused.wait(10)  # the racing validation has read the live row
    if operation == "revoke":
        manager.revoke_api_key(new.id)
    elif operation == "rotate":
        manager.rotate_api_key(new.id)
    else:
        manager.delete_api_key(new.id)
    hasher.resume.set()
    racing.join(10)
    assert [r.id for r in results] == [new.id]  # it started before: it may succeed
    expected = InvalidKeyError if operation == "delete" else RevokedKeyError
    with pytest.raises(expected) as caught:
        manager.validate_api_key(new.secret)
    assert type(caught.value) is expected
    assert len(manager.cache) == 0
    manager.close()


async def test_the_async_manager_has_the_same_guarantee(tmp_path: Path) -> None:
    hasher = PausingHasher()
    manager = AsyncSQLAlchemyKeyManager(f"sqlite:///{tmp_path / 'k.db'}", password_hasher=hasher)
    new = await manager.create_api_key("u1", "k")
    hasher.pause = True
    racing = asyncio.create_task(manager.validate_api_key(new.secret))
    assert await asyncio.to_thread(hasher.paused.wait, 10)
    await manager.revoke_api_key(new.id)
    hasher.resume.set()
    assert (await racing).id == new.id
    with pytest.raises(RevokedKeyError):
        await manager.validate_api_key(new.secret)
    await manager.close()


def test_cache_refuses_entries_looked_up_before_an_invalidation() -> None:
    cache = VerificationCache(ttl=60)
    verified = VerifiedKey(id="abc", user_id="u1", name="k")
    before = cache.generation
    cache.invalidate("other")  # any invalidation: the lookup may be stale
    cache.put(b"d1", verified, generation=before)
    assert cache.get(b"d1") is None
    cache.put(b"d1", verified, generation=cache.generation)
    assert cache.get(b"d1") == verified
    now = cache.generation
    cache.clear()
    cache.put(b"d2", verified, generation=now)
    assert len(cache) == 0
    cache.put(b"d2", verified)  # without a generation: stored as before
    assert cache.get(b"d2") == verified


# --- every manager of the process -------------------------------------------------------


@pytest.mark.parametrize("revoker", ["sync", "async"])
def test_a_revocation_through_one_twin_is_refused_by_the_other_at_once(
    tmp_path: Path, revoker: str
) -> None:
    """The sync and async managers of one process (Django under ASGI) on one database."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    sync_manager = SQLAlchemyKeyManager(url)  # the default cache_ttl: 10 seconds
    loop = asyncio.new_event_loop()
    async_manager = AsyncSQLAlchemyKeyManager(url)
    try:
        new = sync_manager.create_api_key("u1", "k")
        assert sync_manager.validate_api_key(new.secret).id == new.id
        verified = loop.run_until_complete(async_manager.validate_api_key(new.secret))
        assert verified.id == new.id  # now cached by both
        if revoker == "sync":
            sync_manager.revoke_api_key(new.id)
        else:
            loop.run_until_complete(async_manager.revoke_api_key(new.id))
        with pytest.raises(RevokedKeyError):
            sync_manager.validate_api_key(new.secret)
        with pytest.raises(RevokedKeyError):
            loop.run_until_complete(async_manager.validate_api_key(new.secret))
    finally:
        sync_manager.close()
        loop.run_until_complete(async_manager.close())
        loop.close()


def test_a_validation_in_another_manager_racing_a_revocation_does_not_refill_its_cache(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    hasher = PausingHasher()
    issuer = SQLAlchemyKeyManager(url)
    other = SQLAlchemyKeyManager(url, password_hasher=hasher)
    new = issuer.create_api_key("u1", "k")
    results: list[VerifiedKey] = []
    hasher.pause = True
    racing = threading.Thread(target=lambda: results.append(other.validate_api_key(new.secret)))
    racing.start()
    assert hasher.paused.wait(10)  # other has read the live row
    issuer.revoke_api_key(new.id)
    hasher.resume.set()
    racing.join(10)
    assert [r.id for r in results] == [new.id]  # it started before: it may succeed
    with pytest.raises(RevokedKeyError):
        other.validate_api_key(new.secret)
    assert len(other.cache) == 0
    issuer.close()
    other.close()


# --- Django under ASGI, configured from the environment ---------------------------------


@pytest.mark.e2e
@pytest.mark.django
@pytest.mark.parametrize(
    ("revoke_through", "then_through"),
    [("async", "sync"), ("sync", "async")],
    ids=["revoke-async-then-sync", "revoke-sync-then-async"],
)
def test_django_under_asgi_refuses_a_key_revoked_through_the_other_manager_at_once(
    tmp_path: Path, revoke_through: str, then_through: str
) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    with SQLAlchemyKeyManager(url) as seeder:
        admin = seeder.create_api_key("u1", "admin", ["keys:*"])
        victim = seeder.create_api_key("u1", "victim")
    with (
        running_server(
            uvicorn_command, "tests.integrations.django_env_site:application", url
        ) as base_url,
        httpx.Client(base_url=base_url, timeout=10) as http,
    ):
        victim_auth = {"Authorization": f"Bearer {victim.secret}"}
        for side in ("sync", "async"):  # both managers have it cached now (10 s)
            reply = http.get(f"/{side}/whoami", headers=victim_auth)
            assert (reply.status_code, reply.json()) == (200, {"user": "u1"})
        revoked = http.delete(
            f"/{revoke_through}/api-keys/{victim.id}",
            headers={"Authorization": f"Bearer {admin.secret}"},
        )
        assert revoked.status_code in (200, 204), revoked.text
        for side in (then_through, revoke_through):
            refused = http.get(f"/{side}/whoami", headers=victim_auth)
            assert refused.status_code == 403, (side, refused.text)
            assert refused.json()["code"] == "revoked_api_key"
