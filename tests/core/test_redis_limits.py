"""Failure limits counted in a real Redis: one limit for every process, and per process while it is down."""

from __future__ import annotations

import asyncio
import logging

import pytest

from apikeys._errors import RateLimitedError
from apikeys._ratelimit import FailureLimiter
from tests.redis_server import RedisServer

pytest.importorskip("redis")
pytest.importorskip("limits")

from apikeys._redis import (
    MAX_RETRY_REDIS_AFTER,
    RETRY_REDIS_AFTER,
    RedisCounters,
    RedisFailureLimiter,
)


def shared(redis: RedisServer, max_failures: int = 5, **options: object) -> RedisFailureLimiter:
    # Each instance stands for one worker process: its own connections and its own local limiter.
    return RedisFailureLimiter(
        redis.url,
        "client-failures",
        FailureLimiter(max_failures, 60.0),
        **options,  # type: ignore[arg-type]
    )


def test_failures_in_several_workers_meet_one_limit(redis: RedisServer) -> None:
    workers = [shared(redis) for _ in range(3)]
    for failure in range(5):
        worker = workers[failure % 3]
        worker.check("203.0.113.7")
        worker.record_failure("203.0.113.7")
    for worker in workers:
        with pytest.raises(RateLimitedError) as refused:
            worker.check("203.0.113.7")
        assert 0 < (refused.value.retry_after or 0) <= 60
        worker.check("198.51.100.1")  # another client is not held back


def test_the_async_twin_counts_with_the_sync_one(redis: RedisServer) -> None:
    sync_worker, async_worker = shared(redis, 4), shared(redis, 4)

    async def fail_twice() -> None:
        for _ in range(2):
            await async_worker.check_async("c")
            await async_worker.record_failure_async("c")

    async def fail_once_more() -> None:
        await async_worker.record_failure_async("c")  # a new loop: a connection of its own

    async def refused() -> None:
        with pytest.raises(RateLimitedError):
            await async_worker.check_async("c")

    asyncio.run(fail_twice())
    sync_worker.record_failure("c")
    sync_worker.check("c")  # three of four
    asyncio.run(fail_once_more())
    with pytest.raises(RateLimitedError):
        sync_worker.check("c")
    asyncio.run(refused())


def test_redis_down_counts_in_the_process_and_says_so_once(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    worker = shared(redis, 3, clock=lambda: now[0])
    worker.record_failure("c")
    redis.kill()
    with caplog.at_level(logging.WARNING, logger="apikeys"):
        worker.check("c")  # no error reaches the caller: the local count is empty, so it passes
        for _ in range(3):
            worker.record_failure("c")
        with pytest.raises(RateLimitedError):
            worker.check("c")  # the limit holds in the process
    assert caplog.text.count("cannot reach Redis") == 1
    redis.start()  # an empty Redis: nothing was persisted
    with pytest.raises(RateLimitedError):
        worker.check("c")  # Redis is left alone for a while: still the local count
    now[0] += RETRY_REDIS_AFTER
    worker.check("c")  # back on the shared count, which Redis lost with its restart
    worker.record_failure("c")


def test_redis_down_in_async_code_counts_in_the_process(redis: RedisServer) -> None:
    worker = shared(redis, 2)
    redis.kill()

    async def flood() -> None:
        for _ in range(2):
            await worker.check_async("c")
            await worker.record_failure_async("c")
        with pytest.raises(RateLimitedError):
            await worker.check_async("c")

    asyncio.run(flood())


def test_take_counts_and_refuses_in_one_step_across_workers(redis: RedisServer) -> None:
    workers = [shared(redis, 3) for _ in range(2)]
    workers[0].take("owner")
    workers[1].take("owner")

    async def third() -> None:
        await workers[1].take_async("owner")
        with pytest.raises(RateLimitedError):
            await workers[0].take_async("owner")

    asyncio.run(third())
    with pytest.raises(RateLimitedError):
        workers[0].take("owner")  # refused takes counted nothing: still exactly at the limit


def test_after_a_failure_one_caller_at_a_time_tries_redis_again_waiting_longer_each_time(
    redis: RedisServer,
) -> None:
    now = [0.0]
    counters = RedisCounters(redis.url, "client-failures", clock=lambda: now[0])
    assert counters.up() and counters.up()  # while Redis works, every caller asks it
    counters.failed(ConnectionError())
    assert not counters.up()
    now[0] += RETRY_REDIS_AFTER
    assert counters.up()  # one caller tries Redis again...
    assert not counters.up()  # ...while the others keep counting in the process
    counters.failed(ConnectionError())  # the try failed: the next wait is twice as long
    now[0] += RETRY_REDIS_AFTER
    assert not counters.up()
    now[0] += RETRY_REDIS_AFTER
    assert counters.up()
    for _ in range(20):
        counters.failed(ConnectionError())
    now[0] += MAX_RETRY_REDIS_AFTER  # the wait is bounded
    assert counters.up()
    counters.succeeded()
    assert counters.up() and counters.up()
    counters.failed(ConnectionError())  # a new outage starts from the shortest wait
    now[0] += RETRY_REDIS_AFTER
    assert counters.up()


def test_a_paused_redis_holds_up_one_check_per_retry_not_every_check(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A Redis that answers nothing (SIGSTOP, a partition) closes no connection: each
    # check would wait for the socket timeout. Only the first does; the others count alone.
    now = [0.0]
    worker = shared(redis, 3, clock=lambda: now[0])
    worker.check("c")
    redis.pause()
    try:
        with caplog.at_level(logging.INFO, logger="apikeys"):
            for _ in range(3):
                worker.record_failure("c")
            with pytest.raises(RateLimitedError):
                worker.check("c")  # the limit holds in the process meanwhile
            assert caplog.text.count("cannot reach Redis") == 1
    finally:
        redis.resume()
    now[0] += RETRY_REDIS_AFTER
    with caplog.at_level(logging.INFO, logger="apikeys"):
        worker.check("c")  # back on the shared count: Redis saw none of the three
    assert "reaches Redis again" in caplog.text
