"""Revocations that reach every process sharing a store, within milliseconds.

Each process caches verified keys (:mod:`apikeys._cache`). When any process
revokes, deletes, rotates out or cascades a key, it announces the key's id on a
channel every process listens to (PostgreSQL ``LISTEN/NOTIFY``, or Redis
pub/sub); a :class:`RevocationListener` drops the announced keys from every
cache of its process.

A lost announcement would let a revoked key be served from a cache until the
entry ages out, so the listener distrusts the cache whenever it cannot hear:
the cache stays suspended (it serves and stores nothing, every validation asks
the store) from the moment the listener starts until its subscription is
confirmed, and again from the moment the connection is found lost until it is
back. Nothing cached before a loss is served after it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Protocol

from apikeys._cache import VerificationCache, invalidate_everywhere
from apikeys._threads import ProcessThread

logger = logging.getLogger("apikeys")

REVOCATION_CHANNEL = "apikeys_revocations"
"""The channel name, on PostgreSQL and on Redis."""


class Subscription(Protocol):
    """A confirmed subscription to the revocation channel (its IO side)."""

    def receive(self, timeout: float) -> Iterable[str]:
        """Key ids announced since the last call, waiting up to ``timeout`` seconds for one.

        Raises:
            Exception: The connection is lost (any exception counts).
        """
        ...

    def close(self) -> None:
        """Drop the connection."""
        ...


class RevocationChannel(Protocol):
    """Where a manager announces the keys it revokes, and hears everyone's."""

    name: str

    def subscribe(self) -> Subscription:
        """Connect and subscribe; return once the subscription is confirmed."""
        ...

    def announce(self, key_ids: Iterable[str]) -> None:
        """Tell every process ``key_ids`` were revoked (after the change committed)."""
        ...

    def close(self) -> None:
        """Release the channel's connections."""
        ...


class RevocationListener:
    """Hear revocations announced by other processes, in a daemon thread per process.

    Args:
        subscribe: Connects and subscribes, returning once the subscription is
            confirmed (raising if it cannot be).
        caches: The caches to suspend while the channel is down; announced keys
            are dropped from every cache of the process.
        name: What the channel is, for log lines (``"PostgreSQL LISTEN"``).
        poll: Seconds one :meth:`Subscription.receive` may wait; also how often
            a silent connection is checked.
        retry: Seconds between two attempts to reconnect.
    """

    def __init__(
        self,
        subscribe: Callable[[], Subscription],
        caches: Iterable[VerificationCache],
        *,
        name: str,
        poll: float = 1.0,
        retry: float = 1.0,
    ) -> None:
        self.caches = tuple(caches)
        self.name = name
        self.poll = poll
        self.retry = retry
        self._subscribe = subscribe
        self.connected = threading.Event()
        self._thread = ProcessThread(
            "apikeys-revocation-listener", self._run, on_fork=self._forget_parent
        )
        self._suspend()

    def start(self) -> None:
        """Make sure this process's listening thread runs (cheap when it does)."""
        self._thread.start()

    def _forget_parent(self) -> None:
        # The parent's connection stayed in the parent; this child has heard nothing yet.
        self.connected = threading.Event()
        self._suspend()

    def _suspend(self) -> None:
        for cache in self.caches:
            cache.suspend()

    def _run(self, stop: threading.Event) -> None:
        lost_logged = False
        while not stop.is_set():
            try:
                subscription = self._subscribe()
            except Exception as exc:
                if not lost_logged:
                    logger.warning(
                        "apikeys cannot listen for revocations on %s (%s): "
                        "the key cache is off until it can",
                        self.name,
                        type(exc).__name__,
                    )
                    lost_logged = True
                stop.wait(self.retry)
                continue
            # Subscribed: every revocation from now on is heard, so the cache may be trusted again.
            for cache in self.caches:
                cache.resume()
            self.connected.set()
            if lost_logged:
                logger.warning("apikeys listens for revocations on %s again", self.name)
                lost_logged = False
            try:
                self._listen(subscription, stop)
            except Exception as exc:
                self.connected.clear()
                self._suspend()
                if stop.is_set():
                    break  # closed under it: not a loss to report
                logger.warning(
                    "apikeys lost the revocation channel on %s (%s): "
                    "the key cache is off until it is back",
                    self.name,
                    type(exc).__name__,
                )
                lost_logged = True
            finally:
                subscription.close()

    def _listen(self, subscription: Subscription, stop: threading.Event) -> None:
        while not stop.is_set():
            for key_id in subscription.receive(self.poll):
                invalidate_everywhere(key_id)

    def close(self) -> None:
        """Stop listening (the cache stays suspended: nothing announces revocations any more).

        Returns at once: the thread ends, and drops its connection, within ``poll`` seconds.
        """
        self._thread.stop(wait=False)
        self.connected.clear()
        self._suspend()


__all__ = ["REVOCATION_CHANNEL", "RevocationChannel", "RevocationListener", "Subscription"]
