"""The revocation listener: announced keys leave every cache; a lost channel suspends the cache."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable

from apikeys._cache import VerificationCache
from apikeys._models import VerifiedKey
from apikeys._revocations import RevocationListener, Subscription

WAIT = 10.0  # the most any step may take; each wait ends as soon as its condition holds


def verified(key_id: str) -> VerifiedKey:
    return VerifiedKey(id=key_id, user_id="user_1", name="k")


class Channel:
    """An in-memory channel: the server side of the subscriptions it hands out."""

    def __init__(self) -> None:
        self.up = True
        self.subscriptions: queue.Queue[Line] = queue.Queue()

    def subscribe(self) -> Subscription:
        if not self.up:
            raise ConnectionRefusedError("channel down")
        line = Line(self)
        self.subscriptions.put(line)
        return line


class Line:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.messages: queue.Queue[str | None] = queue.Queue()  # None: the connection drops
        self.closed = threading.Event()
        self.handled = threading.Event()  # the listener came back for more after a message
        self._delivered = False

    def receive(self, timeout: float) -> Iterable[str]:
        if self._delivered:
            self.handled.set()
        try:
            message = self.messages.get(timeout=timeout)
        except queue.Empty:
            return []
        if message is None:
            raise ConnectionResetError("connection lost")
        self._delivered = True
        return [message]

    def close(self) -> None:
        self.closed.set()


def wait_for(condition: threading.Event) -> None:
    assert condition.wait(WAIT)


def test_the_cache_is_off_until_the_subscription_is_confirmed() -> None:
    cache = VerificationCache(ttl=60)
    channel = Channel()
    channel.up = False
    listener = RevocationListener(channel.subscribe, [cache], name="test", poll=0.01, retry=0.01)
    try:
        listener.start()
        cache.put(cache.digest("k"), verified("a"))
        assert cache.lookup("k") is None  # nothing is trusted before anyone listens
        channel.up = True
        wait_for(listener.connected)
        cache.put(cache.digest("k"), verified("a"))
        assert cache.lookup("k") == verified("a")
    finally:
        listener.close()


def test_an_announced_key_leaves_every_cache_of_the_process() -> None:
    cache, other = VerificationCache(ttl=60), VerificationCache(ttl=60)
    channel = Channel()
    listener = RevocationListener(channel.subscribe, [cache], name="test", poll=0.01)
    try:
        listener.start()
        wait_for(listener.connected)
        for each in (cache, other):
            each.put(each.digest("k"), verified("a"))
            each.put(each.digest("j"), verified("b"))
        line = channel.subscriptions.get(timeout=WAIT)
        line.messages.put("a")
        wait_for(line.handled)
        assert cache.lookup("k") is None and other.lookup("k") is None
        assert cache.lookup("j") == verified("b")
    finally:
        listener.close()


def test_a_lookup_that_began_before_a_lost_channel_is_not_cached_after_it_returns() -> None:
    cache = VerificationCache(ttl=60)
    channel = Channel()
    listener = RevocationListener(channel.subscribe, [cache], name="test", poll=0.01, retry=0.01)
    try:
        listener.start()
        wait_for(listener.connected)
        cache.put(cache.digest("k"), verified("a"))
        read_before = cache.generation  # a validation reads the store now...
        channel.up = False
        line = channel.subscriptions.get(timeout=WAIT)
        line.messages.put(None)  # ...the channel drops (a revocation may be lost)...
        wait_for(line.closed)
        assert not listener.connected.is_set()
        assert cache.lookup("k") is None  # everything cached before the loss is gone
        cache.put(cache.digest("k"), verified("a"))
        assert cache.lookup("k") is None  # and nothing is stored while down
        channel.up = True
        wait_for(listener.connected)
        cache.put(cache.digest("k"), verified("a"), generation=read_before)
        assert cache.lookup("k") is None  # ...and its late answer is not cached either
        cache.put(cache.digest("k"), verified("a"), generation=cache.generation)
        assert cache.lookup("k") == verified("a")  # a lookup begun after the return is
    finally:
        listener.close()


def test_close_stops_the_thread_and_leaves_the_cache_off() -> None:
    cache = VerificationCache(ttl=60)
    channel = Channel()
    listener = RevocationListener(channel.subscribe, [cache], name="test", poll=0.01)
    listener.start()
    wait_for(listener.connected)
    listener.close()
    line = channel.subscriptions.get(timeout=WAIT)
    assert line.closed.wait(WAIT)  # the thread drops its connection as it ends
    cache.put(cache.digest("k"), verified("a"))
    assert cache.lookup("k") is None
