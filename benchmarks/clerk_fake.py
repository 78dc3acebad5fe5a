"""The Clerk backend against :class:`apikeys.testing.FakeClerk` with injected latency.

Three measurements, each counting the upstream calls the fake received:

- **hot keys**: ``validations`` sync validations cycling over ``hot_keys``
  keys, every answer of the fake delayed by ``latency``; the p50 and p99 of one
  validation and the calls per key (one per key per cache TTL is the target).
- **cold stampede**: ``concurrency`` async validations of one key never seen
  before, started together; how many calls reached the fake (one is the target).
- **garbage**: malformed strings of many kinds; every one must be refused
  with no call. Strings of a Clerk secret's shape are counted apart (Clerk
  alone can refuse them).

The managers run without a verification budget: these measure the cache, the
shared verification and the local refusals; ``benchmarks/clerk_flood.py``
measures the budget.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

from apikeys import InvalidKeyError
from apikeys.backends._clerk import is_clerk_secret
from apikeys.testing import FakeClerk
from benchmarks.apikeys_sqlite import garbage_keys
from benchmarks.harness import percentile

VERIFY = "POST /api_keys/verify"


@dataclass(frozen=True)
class ClerkResult:
    """What the Clerk measurements found."""

    latency_ms: float
    cache_ttl_s: float
    hot_keys: int
    validations: int
    hot_duration_s: float
    hot_calls: int
    hot_p50_us: float
    hot_p99_us: float
    hot_calls_allowed: int
    concurrency: int
    cold_calls: int
    cold_duration_s: float
    garbage_inputs: int
    garbage_calls: int
    shaped_unknown_inputs: int
    shaped_unknown_calls: int

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return asdict(self)


def _hot(fake: FakeClerk, hot_keys: int, validations: int) -> tuple[list[int], int, float, float]:
    manager = fake.key_manager(verification_budget=None)
    try:
        latency, fake.latency = fake.latency, 0.0  # issuing the keys is setup: no delay
        user = fake.new_user_id()
        secrets = [
            manager.create_api_key(user, f"hot {index}", ["read:data"]).secret
            for index in range(hot_keys)
        ]
        fake.latency = latency
        before = fake.count(VERIFY)
        durations = [0] * validations
        clock, validate = time.perf_counter_ns, manager.validate_api_key
        started = time.perf_counter()
        for index in range(validations):
            began = clock()
            validate(secrets[index % hot_keys])
            durations[index] = clock() - began
        elapsed = time.perf_counter() - started
        return sorted(durations), fake.count(VERIFY) - before, elapsed, manager.cache.ttl
    finally:
        manager.close()


async def _cold(fake: FakeClerk, concurrency: int) -> tuple[int, float]:
    manager = fake.async_key_manager(verification_budget=None)
    try:
        latency, fake.latency = fake.latency, 0.0
        secret = (await manager.create_api_key(fake.new_user_id(), "cold", ["read:data"])).secret
        fake.latency = latency
        before = fake.count(VERIFY)
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(manager.validate_api_key(secret) for _ in range(concurrency))
        )
        if len({answer.id for answer in answers}) != 1:
            raise AssertionError("concurrent validations of one key disagreed")
        return fake.count(VERIFY) - before, time.perf_counter() - started
    finally:
        await manager.close()


def _garbage(fake: FakeClerk, rng: random.Random, count: int) -> tuple[int, int, int, int]:
    """Refuse malformed strings; return (malformed, their calls, well-shaped unknown, their calls).

    Clerk documents no checksum, so a string of a Clerk secret's shape
    (``ak_`` and 16 to 509 characters: a truncated key, another vendor's
    ``ak_`` key) can only be refused by Clerk: those are counted apart, as
    unknown keys, not as garbage.
    """
    manager = fake.key_manager(verification_budget=None)
    try:
        valid = [manager.create_api_key(fake.new_user_id(), "shape", []).secret]
        counts = {True: [0, 0], False: [0, 0]}  # well-shaped? -> [inputs, calls]
        for value in garbage_keys(valid, rng, count=count):
            if value == valid[0]:
                continue
            before = fake.count(VERIFY)
            try:
                manager.validate_api_key(value)
            except InvalidKeyError:
                tally = counts[is_clerk_secret(value)]
                tally[0] += 1
                tally[1] += fake.count(VERIFY) - before
                continue
            raise AssertionError("a malformed string was accepted")
        return counts[False][0], counts[False][1], counts[True][0], counts[True][1]
    finally:
        manager.close()


def measure_clerk(
    *,
    latency: float = 0.05,
    hot_keys: int = 100,
    validations: int = 10_000,
    concurrency: int = 100,
    garbage_count: int = 1_000,
    seed: int = 2026,
) -> ClerkResult:
    """Run the three Clerk measurements against fresh fakes answering after ``latency`` seconds."""
    durations, hot_calls, hot_elapsed, ttl = _hot(FakeClerk(latency=latency), hot_keys, validations)
    cold_calls, cold_elapsed = asyncio.run(_cold(FakeClerk(latency=latency), concurrency))
    malformed, malformed_calls, shaped, shaped_calls = _garbage(
        FakeClerk(latency=latency), random.Random(seed), garbage_count
    )
    return ClerkResult(
        latency_ms=latency * 1000,
        cache_ttl_s=ttl,
        hot_keys=hot_keys,
        validations=validations,
        hot_duration_s=hot_elapsed,
        hot_calls=hot_calls,
        hot_p50_us=percentile(durations, 0.50) / 1000,
        hot_p99_us=percentile(durations, 0.99) / 1000,
        # One call per key per TTL window the run spanned.
        hot_calls_allowed=hot_keys * max(1, math.ceil(hot_elapsed / ttl)),
        concurrency=concurrency,
        cold_calls=cold_calls,
        cold_duration_s=cold_elapsed,
        garbage_inputs=malformed,
        garbage_calls=malformed_calls,
        shaped_unknown_inputs=shaped,
        shaped_unknown_calls=shaped_calls,
    )


__all__ = ["ClerkResult", "measure_clerk"]
