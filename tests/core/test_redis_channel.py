"""The Redis revocation channel against a real server: heard at once, and a loss suspends the cache."""

from __future__ import annotations

import threading

import pytest

from apikeys._cache import VerificationCache
from apikeys._models import VerifiedKey
from apikeys._revocations import RevocationListener
from tests.eventually import WAIT, eventually
from tests.redis_server import RedisServer

pytest.importorskip("redis")

from apikeys._redis import RedisRevocationChannel


def verified(key_id: str) -> VerifiedKey:
    return VerifiedKey(id=key_id, user_id="user_1", name="k")


def until(condition: threading.Event) -> None:
    assert condition.wait(WAIT)


def test_a_revocation_announced_by_one_process_reaches_the_listener(redis: RedisServer) -> None:
    cache = VerificationCache(ttl=60)
    channel = RedisRevocationChannel(redis.url)
    listener = RevocationListener(channel.subscribe, [cache], name=channel.name, poll=0.05)
    try:
        listener.start()
        until(listener.connected)
        cache.put(cache.digest("secret-a"), verified("a"))
        cache.put(cache.digest("secret-b"), verified("b"))
        channel.announce(["a"])
        eventually(lambda: cache.lookup("secret-a") is None)
        assert cache.lookup("secret-b") == verified("b")
    finally:
        listener.close()
        channel.close()


@pytest.mark.parametrize("fault", ["killed", "paused"])
def test_redis_lost_mid_run_suspends_the_cache_until_it_is_back(
    fault: str, redis: RedisServer
) -> None:
    """Killed, Redis closes its connections; paused (SIGSTOP), it closes nothing and answers
    nothing, as behind a network partition: only an unanswered PING shows the channel lost."""
    cache = VerificationCache(ttl=60)
    channel = RedisRevocationChannel(redis.url)
    listener = RevocationListener(
        channel.subscribe, [cache], name=channel.name, poll=0.05, retry=0.05
    )
    try:
        listener.start()
        until(listener.connected)
        cache.put(cache.digest("secret-a"), verified("a"))
        if fault == "killed":
            redis.kill()
        else:
            redis.pause()
        try:
            eventually(lambda: cache.lookup("secret-a") is None)
            assert not listener.connected.is_set()
            cache.put(cache.digest("secret-a"), verified("a"))
            assert cache.lookup("secret-a") is None  # nothing stored while no one can hear
            if fault == "killed":
                channel.announce(["a"])  # a revoke while Redis is down: logged, not raised
        finally:
            if fault == "killed":
                redis.start()
            else:
                redis.resume()
        until(listener.connected)
        cache.put(cache.digest("secret-a"), verified("a"), generation=cache.generation)
        assert cache.lookup("secret-a") == verified("a")
    finally:
        listener.close()
        channel.close()
