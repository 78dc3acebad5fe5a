"""An in-process verification cache with bounded size and staleness.

Entries are keyed by a keyed BLAKE2b digest of the full presented key (with a
random per-process key), so the cache never holds a secret nor anything an
attacker could test guesses against offline. A hit still enforces the key's
expiry; revoke, delete and rotate drop the key's entries at once from every
cache of the process -- every manager's, sync and async alike, whichever one
revoked. Another process learns of a revocation when its entries age out,
after at most ``ttl`` seconds, or at once through a revocation channel
(:mod:`apikeys._revocations`); while such a channel is down the cache is
suspended: it serves and stores nothing.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import weakref
from collections.abc import Callable
from datetime import datetime

from apikeys._expiry import WallClock, as_utc, utcnow
from apikeys._models import VerifiedKey

DEFAULT_CACHE_TTL = 10.0
DEFAULT_CACHE_MAX_ENTRIES = 10_000

# Every live cache of the process, so that a revocation through one manager
# reaches the others: two managers (the sync and async defaults, say) may hold
# the same key. Weak references: a closed and dropped manager's cache goes.
_every_cache: weakref.WeakSet[VerificationCache] = weakref.WeakSet()
_every_cache_lock = threading.Lock()


class VerificationCache:
    """Maps key digests to verified keys, for at most ``ttl`` seconds each.

    Args:
        ttl: Seconds an entry may be served; ``0`` disables the cache.
        max_entries: Upper bound on entries; the oldest is evicted first.
        clock: The monotonic clock entries age by (seconds), injectable for tests.
        wall_clock: The clock a key's expiry is checked against on a hit: the
            managers pass theirs, so that the cache and the store agree on
            whether a key has expired.
    """

    __slots__ = (
        "__weakref__",
        "_by_key_id",
        "_clock",
        "_digest_base",
        "_digest_key",
        "_entries",
        "_generation",
        "_lock",
        "_suspended",
        "_wall_clock",
        "max_entries",
        "ttl",
    )

    def __init__(
        self,
        ttl: float = DEFAULT_CACHE_TTL,
        max_entries: int = DEFAULT_CACHE_MAX_ENTRIES,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: WallClock = utcnow,
    ) -> None:
        if ttl < 0 or max_entries < 1:
            raise ValueError("cache ttl must be >= 0 and max_entries >= 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._wall_clock = wall_clock
        self._digest_key = os.urandom(32)
        # Keying BLAKE2b costs a whole block; copying a keyed state is cheaper.
        self._digest_base = hashlib.blake2b(digest_size=20, key=self._digest_key)
        # digest -> (verified key, key expiry in UTC or None, served until)
        self._entries: dict[bytes, tuple[VerifiedKey, datetime | None, float]] = {}
        self._by_key_id: dict[str, set[bytes]] = {}
        # Counts invalidations, so a put() racing with one can be refused.
        self._generation = 0
        self._suspended = False
        self._lock = threading.Lock()
        with _every_cache_lock:
            _every_cache.add(self)

    @property
    def enabled(self) -> bool:
        """Whether entries are stored at all."""
        return self.ttl > 0

    def digest(self, key: str) -> bytes:
        """The cache key for a presented key: never the key itself."""
        try:
            data = key.encode()
        except UnicodeEncodeError:
            # Untrusted input may hold lone surrogates; it must reach the
            # key-format check (and be refused there), not crash here.
            data = key.encode("utf-8", "surrogatepass")
        state = self._digest_base.copy()
        state.update(data)
        return state.digest()

    def lookup(self, key: str) -> VerifiedKey | None:
        """:meth:`get` the entry for a presented key, in one call: the per-request path."""
        if not self._entries:
            return None  # empty or disabled: no digest to compute
        try:
            data = key.encode()
        except UnicodeEncodeError:
            return self.get(self.digest(key))
        # digest(), inlined: this runs on every validation.
        state = self._digest_base.copy()
        state.update(data)
        return self.get(state.digest())

    def get(self, digest: bytes) -> VerifiedKey | None:
        """Return the fresh entry for ``digest``, dropping it if stale or expired."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        verified, expires_at, served_until = entry
        if self._clock() >= served_until or (
            expires_at is not None and self._wall_clock() >= expires_at
        ):
            self._discard(digest, verified.id)
            return None
        return verified

    @property
    def generation(self) -> int:
        """How many invalidations there have been; read it before looking a key up."""
        return self._generation

    def put(self, digest: bytes, verified: VerifiedKey, *, generation: int | None = None) -> None:
        """Remember a successful verification.

        Args:
            digest: :meth:`digest` of the presented key.
            verified: What its verification returned.
            generation: :attr:`generation` as read before the key was looked up.
                If anything was invalidated since, the lookup may predate a
                revocation, so nothing is stored.
        """
        if not self.enabled:
            return
        # as_utc: a naive expiry means UTC, and naive and aware instants do not compare.
        expires_at = as_utc(verified.expires_at) if verified.expires_at else None
        with self._lock:
            if self._suspended or (generation is not None and generation != self._generation):
                return
            # Re-putting a digest moves it to the end, so eviction takes the oldest. The entry
            # it replaces is unindexed under its own key id, which may not be this one.
            replaced = self._entries.get(digest)
            if replaced is not None:
                self._discard_locked(digest, replaced[0].id)
            while len(self._entries) >= self.max_entries:
                oldest = next(iter(self._entries))
                self._discard_locked(oldest, self._entries[oldest][0].id)
            self._entries[digest] = (verified, expires_at, self._clock() + self.ttl)
            self._by_key_id.setdefault(verified.id, set()).add(digest)

    def invalidate(self, key_id: str) -> None:
        """Forget every entry of ``key_id`` here and in every other cache of the process.

        Called after revoke, delete or rotate: whichever manager did it, no
        manager of the process serves the key from memory afterwards, and none
        caches a lookup of it that started before (each cache's generation moves).
        """
        invalidate_everywhere(key_id)

    def invalidate_here(self, key_id: str) -> None:
        with self._lock:
            self._generation += 1
            for digest in self._by_key_id.pop(key_id, ()):
                self._entries.pop(digest, None)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._clear_locked()

    def _clear_locked(self) -> None:
        # The generation moves too: a lookup that began before must not store its answer.
        self._generation += 1
        self._entries.clear()
        self._by_key_id.clear()

    def suspend(self) -> None:
        """Forget everything and store nothing until :meth:`resume`.

        For when the channel that announces other processes' revocations is
        lost: what this cache holds, or would store, may have been revoked unheard.
        """
        with self._lock:
            self._suspended = True
            self._clear_locked()

    def resume(self) -> None:
        """Store entries again; lookups that started while suspended still store nothing."""
        with self._lock:
            self._suspended = False
            self._generation += 1

    @property
    def suspended(self) -> bool:
        """Whether the cache is suspended (see :meth:`suspend`)."""
        return self._suspended

    def __len__(self) -> int:
        return len(self._entries)

    def _discard(self, digest: bytes, key_id: str) -> None:
        with self._lock:
            self._discard_locked(digest, key_id)

    def _discard_locked(self, digest: bytes, key_id: str) -> None:
        self._entries.pop(digest, None)
        digests = self._by_key_id.get(key_id)
        if digests is not None:
            digests.discard(digest)
            if not digests:
                del self._by_key_id[key_id]


def invalidate_everywhere(key_id: str) -> None:
    """Forget every entry of ``key_id`` in every cache of the process (see :meth:`VerificationCache.invalidate`)."""
    with _every_cache_lock:
        caches = list(_every_cache)
    for cache in caches:
        cache.invalidate_here(key_id)


__all__ = [
    "DEFAULT_CACHE_MAX_ENTRIES",
    "DEFAULT_CACHE_TTL",
    "VerificationCache",
    "invalidate_everywhere",
]
