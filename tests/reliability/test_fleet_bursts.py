"""Burst detection counted in a real Redis: a burst spread over every worker is reported, once.

Each detector or manager here stands for one worker process: its own
connections and its own in-process detector, all pointed at one Redis; the
last test runs real processes. With Redis down, each counts alone, as
without Redis, and validation never fails for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from apikeys import InvalidKeyError, KeyEvent
from apikeys._events import BurstDetector, EventReporter
from apikeys.backends.sqlalchemy import AsyncSQLAlchemyKeyManager, SQLAlchemyKeyManager
from tests.eventually import eventually, eventually_async
from tests.redis_server import RedisServer
from tests.reliability.helpers import FakeClock, wrong_secret_for

pytest.importorskip("redis")
pytest.importorskip("limits")

from apikeys._redis import RETRY_REDIS_AFTER, RedisBurstDetector

pytestmark = pytest.mark.sqlalchemy

REPO = Path(__file__).resolve().parents[2]
THRESHOLD = 6


def suspicious(seen: list[KeyEvent]) -> list[tuple[str | None, int]]:
    return [(event.key_id, event.failures) for event in seen if event.kind == "suspicious"]


def worker(redis: RedisServer, window: float = 60.0, **options: object) -> RedisBurstDetector:
    return RedisBurstDetector(redis.url, BurstDetector(THRESHOLD, window), **options)  # type: ignore[arg-type]


def test_a_burst_spread_over_workers_is_reported_once(redis: RedisServer) -> None:
    workers = [worker(redis) for _ in range(3)]
    reports = [workers[failure % 3].record("k") for failure in range(4 * THRESHOLD)]
    # No worker saw more than a third of the burst; together they report it, once.
    assert reports[: THRESHOLD - 1] == [None] * (THRESHOLD - 1)
    assert reports[THRESHOLD - 1] == THRESHOLD
    assert reports[THRESHOLD:] == [None] * (3 * THRESHOLD)
    assert all(each.record("other") is None for each in workers)  # counted per key id


def test_a_burst_still_going_a_window_later_is_reported_again(redis: RedisServer) -> None:
    workers = [worker(redis, window=1.0) for _ in range(2)]
    reports: list[int | None] = []

    def reported_twice() -> bool:
        reports.append(workers[len(reports) % 2].record("k"))
        return reports.count(THRESHOLD) == 2

    eventually(reported_twice)  # the second report only once the first one's window is over
    assert reports[THRESHOLD - 1] == THRESHOLD


def test_the_async_twin_counts_with_the_sync_one(redis: RedisServer) -> None:
    sync_worker, async_worker = worker(redis), worker(redis)

    async def fail(times: int) -> list[int | None]:
        return [await async_worker.record_async("k") for _ in range(times)]

    assert asyncio.run(fail(THRESHOLD - 2)) == [None] * (THRESHOLD - 2)
    assert sync_worker.record("k") is None
    assert asyncio.run(fail(2)) == [THRESHOLD, None]
    assert sync_worker.record("k") is None


def test_redis_down_counts_in_the_process_and_says_so_once(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    spread = [worker(redis, clock=clock) for _ in range(2)]
    for failure in range(THRESHOLD - 1):
        assert spread[failure % 2].record("k") is None
    redis.kill()
    with caplog.at_level(logging.WARNING, logger="apikeys"):
        # Each worker counts alone now: one that sees a whole burst still reports it.
        reports = [spread[0].record("k") for _ in range(THRESHOLD)]
    assert reports == [None] * (THRESHOLD - 1) + [THRESHOLD]
    assert caplog.text.count("cannot reach Redis") == 1
    redis.start()  # an empty Redis: nothing was persisted
    clock.advance(RETRY_REDIS_AFTER)
    assert [spread[1].record("k") for _ in range(THRESHOLD)] == [None] * (THRESHOLD - 1) + [
        THRESHOLD
    ]


def test_redis_down_in_async_code_counts_in_the_process(redis: RedisServer) -> None:
    detector = worker(redis)
    redis.kill()

    async def burst() -> list[int | None]:
        return [await detector.record_async("k") for _ in range(THRESHOLD)]

    assert asyncio.run(burst()) == [None] * (THRESHOLD - 1) + [THRESHOLD]


def test_the_reporter_counts_in_redis_only_when_told(redis: RedisServer) -> None:
    assert isinstance(EventReporter("test", redis_url=redis.url).detector, RedisBurstDetector)
    assert isinstance(EventReporter("test").detector, BurstDetector)
    disabled = EventReporter("test", suspicious_failures=0, redis_url=redis.url)
    assert isinstance(disabled.detector, BurstDetector)  # nothing to count: no connection


# --- managers sharing one Redis ------------------------------------------------------


def managers(tmp_path: Path, redis: RedisServer) -> list[SQLAlchemyKeyManager]:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    return [
        SQLAlchemyKeyManager(url, suspicious_failures=THRESHOLD, redis_url=redis.url)
        for _ in range(2)
    ]


def test_sync_managers_sharing_redis_see_one_burst(
    tmp_path: Path, redis: RedisServer, events: list[KeyEvent]
) -> None:
    fleet = managers(tmp_path, redis)
    try:
        new = fleet[0].create_api_key("u1", "guessed")
        wrong = wrong_secret_for(new.secret)
        for failure in range(3 * THRESHOLD):
            with pytest.raises(InvalidKeyError):
                fleet[failure % 2].validate_api_key(wrong)
    finally:
        for manager in fleet:
            manager.close()
    assert suspicious(events) == [(new.id, THRESHOLD)]


@pytest.mark.parametrize("redis_down", [False, True], ids=["redis", "redis-down"])
def test_async_managers_sharing_redis_see_one_burst(
    tmp_path: Path, redis: RedisServer, events: list[KeyEvent], redis_down: bool
) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    # Each manager sees half of the burst, which is 1.5 times the threshold: with Redis down
    # each counts alone (the documented fallback) and reports its half.
    reports = 2 if redis_down else 1

    async def scenario() -> str:
        fleet = [
            AsyncSQLAlchemyKeyManager(url, suspicious_failures=THRESHOLD, redis_url=redis.url)
            for _ in range(2)
        ]
        try:
            new = await fleet[0].create_api_key("u1", "guessed")
            wrong = wrong_secret_for(new.secret)
            if redis_down:
                redis.kill()
            for failure in range(3 * THRESHOLD):
                with pytest.raises(InvalidKeyError):  # never a 500, Redis or not
                    await fleet[failure % 2].validate_api_key(wrong)
            # Counting runs beside the refusals, as tasks of the loop.
            await eventually_async(lambda: len(suspicious(events)) == reports)
            return new.id
        finally:
            for manager in fleet:
                await manager.close()

    key_id = asyncio.run(scenario())
    assert suspicious(events) == [(key_id, THRESHOLD)] * reports


def test_managers_refuse_as_usual_while_redis_is_down(
    tmp_path: Path, redis: RedisServer, events: list[KeyEvent]
) -> None:
    fleet = managers(tmp_path, redis)
    try:
        new = fleet[0].create_api_key("u1", "guessed")
        redis.kill()
        for _ in range(THRESHOLD):
            with pytest.raises(InvalidKeyError):  # never a 500: the refusal stands
                fleet[1].validate_api_key(wrong_secret_for(new.secret))
        assert fleet[1].validate_api_key(new.secret).id == new.id
    finally:
        for manager in fleet:
            manager.close()
    assert suspicious(events) == [(new.id, THRESHOLD)]  # counted in the process


# --- real processes -------------------------------------------------------------------

_WORKER = """
import json, sys
import apikeys
from apikeys.backends.sqlalchemy import SQLAlchemyKeyManager
seen = []
apikeys.add_event_listener(lambda event: seen.append(event.kind))
url, redis_url, wrong, failures = sys.argv[1:5]
with SQLAlchemyKeyManager(url, suspicious_failures=int(sys.argv[5]), redis_url=redis_url) as m:
    sys.stdin.readline()  # every worker starts together
    for _ in range(int(failures)):
        try:
            m.validate_api_key(wrong)
        except apikeys.InvalidKeyError:
            pass
print(json.dumps(seen.count("suspicious")))
"""


@pytest.mark.slow
def test_worker_processes_sharing_redis_report_a_spread_burst_once(
    tmp_path: Path, redis: RedisServer
) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    with SQLAlchemyKeyManager(url) as manager:
        new = manager.create_api_key("u1", "guessed")
    processes = 4
    per_process = THRESHOLD // 2  # each sees half a burst: alone, none would report it
    arguments = [url, redis.url, wrong_secret_for(new.secret), str(per_process), str(THRESHOLD)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, *arguments],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(processes)
    ]
    outputs = [process.communicate("go\n", timeout=120)[0] for process in workers]
    assert [process.returncode for process in workers] == [0] * processes
    assert sum(json.loads(output) for output in outputs) == 1
