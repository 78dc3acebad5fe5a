"""Clerk managers in several processes sharing one Redis: a key this SDK ends is refused everywhere at once.

The other process is a real one, with a manager of the same flavour whose
cache would serve a key for a minute; it reaches the fake Clerk over
loopback (:mod:`tests.clerk_server`). Revoking, deleting, rotating or
cascading through this process's manager announces the keys on Redis, and
the other process refuses them within the wait of :func:`~tests.eventually.eventually`,
far inside its ``cache_ttl``. With Redis down, it serves nothing from its cache.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from apikeys import Settings
from apikeys.backends.clerk import ClerkKeyManager
from apikeys.testing import FAKE_SECRET_KEY, FakeClerk
from tests.backends.clerk.twins import Twin
from tests.clerk_server import served
from tests.eventually import WAIT, eventually
from tests.redis_server import RedisServer

pytest.importorskip("redis")

pytestmark = pytest.mark.clerk

REPO = Path(__file__).resolve().parents[3]
CACHE_TTL = 60.0
"""Longer than any wait here: only an announcement explains a prompt refusal."""
VERIFY = "POST /api_keys/verify"

_WORKER = """
import asyncio, json, sys
from apikeys import APIKeysError
from apikeys.backends.clerk import AsyncClerkKeyManager, ClerkKeyManager
from apikeys.testing import FAKE_SECRET_KEY

flavour, api_url, redis_url, cache_ttl = sys.argv[1:5]
options = {"api_url": api_url, "redis_url": redis_url, "cache_ttl": float(cache_ttl)}

def answer(validate):
    try:
        verified = validate()
    except APIKeysError as exc:
        return {"ok": False, "error": type(exc).__name__}
    expires_at = verified.expires_at
    return {"ok": True, "expires_at": expires_at.isoformat() if expires_at else None}

if flavour == "sync":
    with ClerkKeyManager(FAKE_SECRET_KEY, **options) as manager:
        for line in sys.stdin:
            print(json.dumps(answer(lambda: manager.validate_api_key(line.strip()))), flush=True)
else:
    async def main():
        async with AsyncClerkKeyManager(FAKE_SECRET_KEY, **options) as manager:
            while line := await asyncio.to_thread(sys.stdin.readline):
                try:
                    verified = await manager.validate_api_key(line.strip())
                except APIKeysError as exc:
                    verified = exc
                def replay():
                    if isinstance(verified, Exception):
                        raise verified
                    return verified
                print(json.dumps(answer(replay)), flush=True)
    asyncio.run(main())
"""


class OtherProcess:
    """A process with its own Clerk manager, validating the secrets it is sent."""

    def __init__(self, flavour: str, api_url: str, redis_url: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER, flavour, api_url, redis_url, str(CACHE_TTL)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )

    def validate(self, secret: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(secret + "\n")
        self.process.stdin.flush()
        answer: dict[str, Any] = json.loads(self.process.stdout.readline())
        return answer

    def accepts(self, secret: str) -> bool:
        return bool(self.validate(secret)["ok"])

    def close(self) -> None:
        self.process.communicate(timeout=WAIT)  # closes its input: it ends
        assert self.process.returncode == 0


@pytest.fixture
def api_url(fake: FakeClerk) -> Iterator[str]:
    with served(fake) as url:
        yield url


@pytest.fixture
def other(flavour: str, api_url: str, redis: RedisServer) -> Iterator[OtherProcess]:
    worker = OtherProcess(flavour, api_url, redis.url)
    try:
        yield worker
    finally:
        worker.close()


@pytest.fixture
def manager(make_twin: Callable[..., Twin], redis: RedisServer) -> Twin:
    """This process's manager, of the other's flavour, announcing on the same Redis."""
    return make_twin(redis_url=redis.url)


def refused_by(other: OtherProcess, secret: str) -> Callable[[], bool]:
    return lambda: not other.accepts(secret)


def served_from_cache(other: OtherProcess, fake: FakeClerk, secret: str) -> Callable[[], bool]:
    """A condition: ``other`` accepts ``secret`` without asking Clerk (its cache holds it)."""

    def condition() -> bool:
        assert other.accepts(secret)
        asked = fake.count(VERIFY)
        assert other.accepts(secret)
        return fake.count(VERIFY) == asked

    return condition


def test_keys_ended_through_one_process_are_refused_by_another_at_once(
    fake: FakeClerk, user_id: str, manager: Twin, other: OtherProcess
) -> None:
    revoked = manager.create_api_key(user_id, "revoked")
    descendant = manager.create_api_key(user_id, "made by revoked", created_by=revoked.id)
    deleted = manager.create_api_key(user_id, "deleted")
    rotated = manager.create_api_key(user_id, "rotated")
    graced = manager.create_api_key(user_id, "rotated with grace")
    keys = [revoked, descendant, deleted, rotated, graced]
    for key in keys:
        eventually(served_from_cache(other, fake, key.secret))

    manager.revoke_api_key(revoked.id)
    manager.delete_api_key(deleted.id)
    manager.rotate_api_key(rotated.id)
    manager.rotate_api_key(graced.id, grace=timedelta(hours=1))
    rotated_at = datetime.now(UTC)

    for key in (revoked, descendant, deleted, rotated):
        eventually(refused_by(other, key.secret))
    # Still valid for the grace period, which the other process now knows of.
    eventually(lambda: other.validate(graced.secret)["expires_at"] is not None)
    ends = datetime.fromisoformat(other.validate(graced.secret)["expires_at"])
    assert rotated_at + timedelta(minutes=59) < ends <= rotated_at + timedelta(hours=1)


def test_with_redis_down_the_other_process_serves_nothing_from_its_cache(
    fake: FakeClerk, user_id: str, manager: Twin, other: OtherProcess, redis: RedisServer
) -> None:
    key = manager.create_api_key(user_id, "kept")
    eventually(served_from_cache(other, fake, key.secret))
    redis.kill()

    def asks_clerk() -> bool:
        asked = fake.count(VERIFY)
        assert other.accepts(key.secret)
        return fake.count(VERIFY) == asked + 1

    eventually(asks_clerk)  # the channel is lost: the cache is off
    manager.revoke_api_key(key.id)  # unannounced (logged, not raised), yet...
    assert not other.accepts(key.secret)  # ...refused at once: nothing is served from memory
    redis.start()
    again = manager.create_api_key(user_id, "after the outage")
    eventually(served_from_cache(other, fake, again.secret))  # the cache is back


def test_settings_redis_url_reaches_clerk_managers(redis: RedisServer) -> None:
    settings = Settings(clerk_secret_key=SecretStr(FAKE_SECRET_KEY), redis_url=SecretStr(redis.url))
    with ClerkKeyManager.from_settings("clerk://", settings) as manager:
        assert manager.revocations is not None and manager.revocations.name == "Redis pub/sub"
        assert manager.events.detector.shared  # bursts are counted in Redis too
    with ClerkKeyManager(FAKE_SECRET_KEY) as alone:
        assert alone.revocations is None and not alone.events.detector.shared
