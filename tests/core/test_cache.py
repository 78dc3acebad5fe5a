"""The verification cache: TTL, size bound, invalidation, expiry on hits, digests, threads, races."""

from __future__ import annotations

import os
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from apikeys import VerificationCache, VerifiedKey, generate_key


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def verified(key_id: str = "k1", expires_at: datetime | None = None) -> VerifiedKey:
    return VerifiedKey(id=key_id, user_id="u", name="n", expires_at=expires_at)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_put_entry_is_served(clock: FakeClock) -> None:
    cache = VerificationCache(ttl=10, clock=clock)
    digest = cache.digest("apk_1secret")
    assert cache.get(digest) is None
    entry = verified()
    cache.put(digest, entry)
    assert cache.get(digest) is entry
    assert len(cache) == 1
    assert cache.get(cache.digest("apk_1other")) is None


def test_entries_are_served_for_ttl_seconds_then_dropped(clock: FakeClock) -> None:
    cache = VerificationCache(ttl=10, clock=clock)
    digest = cache.digest("key")
    cache.put(digest, verified())
    clock.advance(9.999)
    assert cache.get(digest) is not None
    clock.advance(0.001)
    assert cache.get(digest) is None
    assert len(cache) == 0  # a stale entry is removed, not only hidden


def test_a_refreshed_entry_gets_a_new_ttl(clock: FakeClock) -> None:
    cache = VerificationCache(ttl=10, clock=clock)
    digest = cache.digest("key")
    cache.put(digest, verified())
    clock.advance(8)
    cache.put(digest, verified())
    clock.advance(8)
    assert cache.get(digest) is not None


def test_ttl_zero_disables_the_cache(clock: FakeClock) -> None:
    cache = VerificationCache(ttl=0, clock=clock)
    assert not cache.enabled
    digest = cache.digest("key")
    cache.put(digest, verified())
    assert cache.get(digest) is None
    assert len(cache) == 0
    assert VerificationCache(ttl=0.5).enabled


@pytest.mark.parametrize(("ttl", "max_entries"), [(-1, 10), (-0.001, 10), (10, 0), (10, -5)])
def test_bad_bounds_are_refused(ttl: float, max_entries: int) -> None:
    with pytest.raises(ValueError, match=r"^cache ttl must be >= 0 and max_entries >= 1$"):
        VerificationCache(ttl=ttl, max_entries=max_entries)


def test_defaults() -> None:
    cache = VerificationCache()
    assert (cache.ttl, cache.max_entries) == (10.0, 10_000)


# --- size bound ---------------------------------------------------------------------------------------


def test_the_size_is_bounded_and_the_oldest_entry_goes_first(clock: FakeClock) -> None:
    cache = VerificationCache(ttl=60, max_entries=3, clock=clock)
    digests = [cache.digest(f"key{i}") for i in range(5)]
    for i, digest in enumerate(digests):
        cache.put(digest, verified(f"k{i}"))
        assert len(cache) == min(i + 1, 3)
    assert [cache.get(d) is not None for d in digests] == [False, False, True, True, True]


def test_refreshing_an_entry_in_a_full_cache_evicts_nothing(clock: FakeClock) -> None:
    cache = VerificationCache(ttl=60, max_entries=2, clock=clock)
    first, second = cache.digest("a"), cache.digest("b")
    cache.put(first, verified("ka"))
    cache.put(second, verified("kb"))
    cache.put(second, verified("kb"))
    assert cache.get(first) is not None
    assert cache.get(second) is not None
    # The refreshed entry is now the newest: a third key evicts "a", not "b".
    cache.put(cache.digest("c"), verified("kc"))
    assert cache.get(first) is None
    assert cache.get(second) is not None


def test_eviction_keeps_the_key_id_index_consistent(clock: FakeClock) -> None:
    cache = VerificationCache(ttl=60, max_entries=1, clock=clock)
    old, new = cache.digest("a"), cache.digest("b")
    cache.put(old, verified("ka"))
    cache.put(new, verified("kb"))
    cache.invalidate("ka")  # already evicted: nothing else may go
    assert cache.get(new) is not None


# --- invalidation ----------------------------------------------------------------------------------------


def test_invalidate_drops_every_entry_of_a_key_id(clock: FakeClock) -> None:
    cache = VerificationCache(ttl=60, clock=clock)
    # Two presented strings for one key (e.g. before and after a case change in a
    # custom backend) and one other key.
    same_key = [cache.digest("form-1"), cache.digest("form-2")]
    other = cache.digest("other")
    for digest in same_key:
        cache.put(digest, verified("k1"))
    cache.put(other, verified("k2"))
    cache.invalidate("k1")
    assert [cache.get(d) for d in same_key] == [None, None]
    assert cache.get(other) is not None
    assert len(cache) == 1
    cache.invalidate("k1")  # idempotent
    cache.invalidate("never-cached")


def test_a_put_racing_an_invalidation_is_refused(clock: FakeClock) -> None:
    cache = VerificationCache(ttl=60, clock=clock)
    digest = cache.digest("key")
    before_lookup = cache.generation
    cache.invalidate("k1")  # a revocation lands while the lookup is in flight
    cache.put(digest, verified("k1"), generation=before_lookup)
    assert cache.get(digest) is None
    assert len(cache) == 0
    # A lookup that started after the invalidation may fill the cache.
    cache.put(digest, verified("k1"), generation=cache.generation)
    assert cache.get(digest) is not None


def test_every_invalidation_and_clear_moves_the_generation(clock: FakeClock) -> None:
    cache = VerificationCache(ttl=60, clock=clock)
    first = cache.generation
    cache.invalidate("never-cached")
    second = cache.generation
    cache.clear()
    assert first < second < cache.generation
    stale = cache.digest("stale")
    cache.put(stale, verified(), generation=second)
    assert cache.get(stale) is None


def test_clear(clock: FakeClock) -> None:
    cache = VerificationCache(ttl=60, clock=clock)
    digest = cache.digest("a")
    cache.put(digest, verified())
    cache.clear()
    assert len(cache) == 0
    assert cache.get(digest) is None
    cache.put(digest, verified())
    assert cache.get(digest) is not None


# --- expiry is enforced on a hit ----------------------------------------------------------------------------


class FakeWallClock:
    """A wall clock (aware UTC datetimes) that moves only when told to."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def wall_clock() -> FakeWallClock:
    """The wall clock the cache reads key expiry against."""
    return FakeWallClock()


def test_a_hit_past_the_keys_expiry_is_dropped(clock: FakeClock, wall_clock: FakeWallClock) -> None:
    cache = VerificationCache(ttl=3600, clock=clock, wall_clock=wall_clock)
    expires_at = wall_clock.now + timedelta(seconds=5)
    digest = cache.digest("key")
    cache.put(digest, verified(expires_at=expires_at))
    wall_clock.advance(4.5)
    assert cache.get(digest) is not None
    wall_clock.advance(0.5)  # exactly the expiry instant
    assert cache.get(digest) is None  # although the TTL has an hour to run
    assert len(cache) == 0


def test_an_expired_key_is_never_served(clock: FakeClock) -> None:
    cache = VerificationCache(ttl=3600, clock=clock)
    digest = cache.digest("key")
    cache.put(digest, verified(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert cache.get(digest) is None


@pytest.fixture
def west_of_utc() -> Iterator[None]:
    """Run in a timezone five hours behind UTC (naive .timestamp() reads local time)."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is POSIX only")
    previous = os.environ.get("TZ")
    os.environ["TZ"] = "EST+05"
    time.tzset()
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = previous
        time.tzset()


@pytest.mark.usefixtures("west_of_utc")
def test_a_naive_expiry_is_read_as_utc(clock: FakeClock) -> None:
    cache = VerificationCache(ttl=3600, clock=clock)
    digest = cache.digest("key")
    an_hour_ago_naive = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1)
    cache.put(digest, verified(expires_at=an_hour_ago_naive))
    assert cache.get(digest) is None


# --- digests ---------------------------------------------------------------------------------------------------


def test_digests_hide_the_key_and_are_stable_per_instance() -> None:
    cache = VerificationCache()
    key = generate_key().key
    digest = cache.digest(key)
    assert isinstance(digest, bytes)
    assert len(digest) == 20
    assert key.encode() not in digest
    assert key[5:-6].encode() not in digest
    assert cache.digest(key) == digest
    assert cache.digest(key + "x") != digest


def test_digests_differ_between_instances() -> None:
    key = generate_key().key
    digests = {VerificationCache().digest(key) for _ in range(20)}
    assert len(digests) == 20  # a random per-instance key: nothing to precompute


def test_digests_of_lone_surrogates_do_not_raise() -> None:
    cache = VerificationCache()
    assert cache.digest("\ud800") != cache.digest("\udfff")
    assert cache.digest("apk_\ud800") != cache.digest("apk_")


@given(key=st.text(max_size=80))
def test_lookup_answers_as_get_of_the_digest(key: str) -> None:
    clock = FakeClock()
    cache = VerificationCache(ttl=10, clock=clock)
    assert cache.lookup(key) is None  # empty: nothing to find
    entry = verified()
    cache.put(cache.digest(key), entry)
    assert cache.lookup(key) is entry is cache.get(cache.digest(key))
    assert cache.lookup(key + "x") is None
    clock.advance(10)
    assert cache.lookup(key) is None
    assert len(cache) == 0  # the stale entry was dropped by the lookup


def test_lookup_of_lone_surrogates_finds_their_entry() -> None:
    cache = VerificationCache()
    entry = verified()
    cache.put(cache.digest("apk_\ud800"), entry)
    assert cache.lookup("apk_\ud800") is entry
    assert cache.lookup("apk_\udfff") is None


def test_lookup_in_a_disabled_cache_finds_nothing(clock: FakeClock) -> None:
    cache = VerificationCache(ttl=0, clock=clock)
    cache.put(cache.digest("key"), verified())
    assert cache.lookup("key") is None


def test_entries_are_not_shared_between_instances(clock: FakeClock) -> None:
    first, second = VerificationCache(clock=clock), VerificationCache(clock=clock)
    first.put(first.digest("key"), verified())
    assert second.get(second.digest("key")) is None


def test_the_cache_holds_no_key_text(clock: FakeClock) -> None:
    cache = VerificationCache(clock=clock)
    key = generate_key().key
    cache.put(cache.digest(key), verified())
    held = repr([cache._entries, cache._by_key_id])
    assert key not in held
    assert key[5:-6] not in held


# --- threads --------------------------------------------------------------------------------------------------------


def test_concurrent_use_keeps_the_bounds_and_the_index_consistent() -> None:
    cache = VerificationCache(ttl=60, max_entries=50)
    key_ids = [f"k{i}" for i in range(20)]
    entries = {key_id: verified(key_id) for key_id in key_ids}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(worker: int) -> None:
        try:
            start.wait()
            for n in range(3000):
                key_id = key_ids[(n * 7 + worker) % len(key_ids)]
                digest = cache.digest(f"{key_id}/{n % 9}")
                if n % 5 == 0:
                    cache.invalidate(key_id)
                elif n % 2:
                    cache.put(digest, entries[key_id])
                else:
                    hit = cache.get(digest)
                    assert hit is None or hit.id == key_id
                assert len(cache) <= cache.max_entries
        except BaseException as exc:  # reported below; a thread must not die silently
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(8)]
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to provoke races
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch_interval)
    assert errors == []
    assert 0 < len(cache) <= 50
    # The key-id index tracks every entry: invalidating every id empties the cache.
    for key_id in key_ids:
        cache.invalidate(key_id)
    assert len(cache) == 0


# --- a model of the cache, checked by hypothesis -----------------------------------------------------------


DIGEST_COUNT = 6
KEY_IDS = ("ka", "kb", "kc")


class CacheModel(RuleBasedStateMachine):
    """Drive a real cache and a plain model of its rules with the same operations."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.cache = VerificationCache(ttl=10, max_entries=3, clock=self.clock)
        self.digests = [self.cache.digest(f"presented-{n}") for n in range(DIGEST_COUNT)]
        # digest index -> served until; dict order is insertion (eviction) order
        self.model: dict[int, float] = {}

    @staticmethod
    def key_id_of(index: int) -> str:
        # One presented key always belongs to the same key id.
        return KEY_IDS[index % len(KEY_IDS)]

    @rule(index=st.integers(0, DIGEST_COUNT - 1))
    def put(self, index: int) -> None:
        self.cache.put(self.digests[index], verified(self.key_id_of(index)))
        self.model.pop(index, None)
        while len(self.model) >= self.cache.max_entries:
            del self.model[next(iter(self.model))]
        self.model[index] = self.clock.now + self.cache.ttl

    @rule(index=st.integers(0, DIGEST_COUNT - 1))
    def get(self, index: int) -> None:
        hit = self.cache.get(self.digests[index])
        served_until = self.model.get(index)
        if served_until is not None and self.clock.now >= served_until:
            del self.model[index]
            served_until = None
        if served_until is None:
            assert hit is None
        else:
            assert hit is not None
            assert hit.id == self.key_id_of(index)

    @rule(key_id=st.sampled_from(KEY_IDS))
    def invalidate(self, key_id: str) -> None:
        self.cache.invalidate(key_id)
        self.model = {i: t for i, t in self.model.items() if self.key_id_of(i) != key_id}

    @rule(seconds=st.sampled_from([0.5, 3.0, 9.99, 10.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def clear(self) -> None:
        self.cache.clear()
        self.model.clear()

    @invariant()
    def same_size(self) -> None:
        # Stale entries linger until read, in the cache and in the model alike.
        assert len(self.cache) == len(self.model)
        assert len(self.cache) <= self.cache.max_entries


TestCacheModel = CacheModel.TestCase
TestCacheModel.settings = settings(max_examples=60, stateful_step_count=40)


# --- revocations racing validations, and the memory bound -------------------------------------


class Store:
    """Key rows as a backend holds them, validated and revoked the way the managers do it.

    A validation reads the cache's generation, then the row, and stores what it read in the
    cache; a revocation marks the row, then invalidates the cache. :meth:`begin_validation`
    stops a validation between the read and the store, so a revocation can land in between.
    """

    def __init__(self, cache: VerificationCache) -> None:
        self.cache = cache
        self.revoked: set[str] = set()

    def begin_validation(self, presented: str, key_id: str) -> Callable[[], None]:
        generation = self.cache.generation
        row_valid = key_id not in self.revoked

        def finish() -> None:
            if row_valid:
                self.cache.put(
                    self.cache.digest(presented), verified(key_id), generation=generation
                )

        return finish

    def revoke(self, key_id: str) -> None:
        self.revoked.add(key_id)
        self.cache.invalidate(key_id)


def test_two_revocations_racing_two_validations_never_put_a_revoked_key_back(
    clock: FakeClock,
) -> None:
    cache = VerificationCache(ttl=60, clock=clock)
    store = Store(cache)
    # Each validation reads a row that is valid, then its key is revoked before it stores it.
    for presented, key_id in (("apk_1first", "k1"), ("apk_1second", "k2")):
        finish = store.begin_validation(presented, key_id)
        store.revoke(key_id)
        finish()
    # Neither revoked key is served from memory; the next validation goes to the store.
    assert cache.lookup("apk_1first") is None
    assert cache.lookup("apk_1second") is None
    assert len(cache) == 0


def test_a_validation_racing_a_clear_stores_nothing(clock: FakeClock) -> None:
    cache = VerificationCache(ttl=60, clock=clock)
    store = Store(cache)
    store.revoke("k0")  # an earlier revocation: the generation has moved once already
    finish = store.begin_validation("apk_1key", "k1")
    cache.clear()
    finish()
    assert cache.lookup("apk_1key") is None


def test_a_suspended_cache_serves_and_stores_nothing_until_resumed(clock: FakeClock) -> None:
    cache = VerificationCache(ttl=60, clock=clock)
    store = Store(cache)
    store.begin_validation("apk_1held", "k1")()
    assert cache.suspended is False
    cache.suspend()  # the revocation channel is lost: a revocation may go unheard
    assert cache.suspended is True
    assert cache.lookup("apk_1held") is None
    store.begin_validation("apk_1key", "k2")()  # begun and finished while suspended
    assert cache.lookup("apk_1key") is None
    assert len(cache) == 0
    cache.resume()
    assert cache.suspended is False
    store.begin_validation("apk_1key", "k2")()
    assert cache.lookup("apk_1key") is not None


def test_a_validation_racing_a_suspension_stores_nothing_even_once_resumed(
    clock: FakeClock,
) -> None:
    cache = VerificationCache(ttl=60, clock=clock)
    store = Store(cache)
    store.revoke("k0")
    finish = store.begin_validation("apk_1key", "k1")
    cache.suspend()  # the revocation channel is lost: a revocation may go unheard
    cache.resume()
    finish()
    assert cache.lookup("apk_1key") is None
    # A validation that began after the resumption is cached again.
    store.begin_validation("apk_1key", "k1")()
    assert cache.lookup("apk_1key") is not None


def test_two_lookups_dropping_the_same_stale_entry_both_answer_none(clock: FakeClock) -> None:
    """Two requests read one stale entry at once: each drops it, neither may fail."""
    meanwhile: list[Callable[[], None]] = []

    def reading_the_clock() -> float:
        # Read by a lookup between finding its entry and dropping it: another request runs.
        while meanwhile:
            meanwhile.pop()()
        return clock()

    cache = VerificationCache(ttl=10, clock=reading_the_clock)
    cache.put(cache.digest("apk_1key"), verified())
    clock.advance(10)
    answers: list[VerifiedKey | None] = []
    meanwhile.append(lambda: answers.append(cache.lookup("apk_1key")))
    answers.append(cache.lookup("apk_1key"))
    assert answers == [None, None]
    assert len(cache) == 0


def _bytes_held_by_the_cache_module(work: Callable[[], None]) -> int:
    """Bytes allocated by ``apikeys._cache`` during ``work`` and still held after it."""
    module_file = sys.modules[VerificationCache.__module__].__file__
    assert module_file is not None
    only_the_cache = [tracemalloc.Filter(True, module_file)]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot().filter_traces(only_the_cache)
        work()
        after = tracemalloc.take_snapshot().filter_traces(only_the_cache)
    finally:
        tracemalloc.stop()
    return sum(stat.size_diff for stat in after.compare_to(before, "filename"))


@pytest.mark.parametrize("way", ["evicted", "aged out", "expired", "re-put"])
def test_max_entries_bounds_memory_however_entries_go(
    clock: FakeClock, wall_clock: FakeWallClock, way: str
) -> None:
    """A stream of distinct keys through a two-entry cache leaves no trace of the keys gone.

    The key-id index must drop a key id with its last entry: otherwise every key ever
    cached stays in memory, and ``max_entries`` bounds nothing.
    """
    cache = VerificationCache(ttl=10, max_entries=2, clock=clock, wall_clock=wall_clock)
    soon = wall_clock.now + timedelta(seconds=1)

    def stream() -> None:
        for n in range(3000):
            presented = f"apk_1key{n}"
            digest = cache.digest(presented)
            if way == "evicted":
                cache.put(digest, verified(f"k{n}"))
            elif way == "aged out":
                cache.put(digest, verified(f"k{n}"))
                clock.advance(10)
                assert cache.lookup(presented) is None
            elif way == "expired":
                cache.put(digest, verified(f"k{n}", expires_at=soon))
                wall_clock.advance(1)
                assert cache.lookup(presented) is None
                wall_clock.now = soon - timedelta(seconds=1)
            else:  # the same key presented again under a new id (a rotated-in row)
                cache.put(cache.digest("apk_1same"), verified(f"k{n}"))

    held = _bytes_held_by_the_cache_module(stream)
    assert len(cache) <= 2
    # Two entries and their index: a few kilobytes. 3000 leaked ids would hold hundreds.
    assert held < 16_000, held
