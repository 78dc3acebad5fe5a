"""Usage notes in memory, written in batches by a thread or a task."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import subprocess
import sys
import threading
import weakref
from datetime import UTC, datetime, timedelta

import pytest

from apikeys._usage import AsyncUsageFlusher, UsageBatch, UsageFlusher, UsageLog

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_latest_use_of_each_key_is_kept_and_drained_once() -> None:
    log = UsageLog()
    log.record("a", T0 + timedelta(seconds=5))
    log.record("a", T0)  # an older note (another thread was slower) does not win
    log.record("b", T0)
    assert log.drain() == {"a": T0 + timedelta(seconds=5), "b": T0}
    assert log.drain() == {}


class Store:
    """A store that keeps the latest time per key, as the backends' statement does."""

    def __init__(self) -> None:
        self.rows: dict[str, datetime] = {}
        self.batches: list[dict[str, datetime]] = []
        self.failing = False
        self.written = threading.Event()

    def write(self, batch: UsageBatch) -> None:
        if self.failing:
            raise ConnectionError("password=hunter2 in the driver's message")
        self.batches.append(dict(batch))
        for key_id, at in batch.items():
            self.rows[key_id] = max(at, self.rows.get(key_id, at))
        self.written.set()


def test_a_failed_write_loses_nothing_and_says_so_without_the_drivers_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Store()
    flusher = UsageFlusher(UsageLog(), store.write, interval=3600)
    flusher.log.record("a", T0)
    store.failing = True
    with caplog.at_level(logging.WARNING, logger="apikeys"):
        flusher.flush()
    assert store.rows == {}
    assert "ConnectionError" in caplog.text
    assert "hunter2" not in caplog.text
    flusher.log.record("a", T0 + timedelta(seconds=1))
    flusher.log.record("b", T0)
    store.failing = False
    flusher.flush()
    assert store.batches == [{"a": T0 + timedelta(seconds=1), "b": T0}]


def flusher_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "apikeys-usage-flusher" and t.is_alive()}


def test_the_thread_writes_on_its_interval_and_close_writes_the_rest() -> None:
    store = Store()
    flusher = UsageFlusher(UsageLog(), store.write, interval=0.01)
    before = flusher_threads()
    flusher.start()
    flusher.log.record("a", T0)
    assert store.written.wait(10)
    assert store.rows == {"a": T0}
    flusher.log.record("b", T0)
    flusher.close()
    assert store.rows == {"a": T0, "b": T0}
    assert flusher_threads() <= before
    flusher.start()  # closed: no new thread
    assert flusher_threads() <= before


def test_a_flusher_dropped_without_close_ends_its_thread() -> None:
    # Its write function may hold a whole manager: a running thread must not keep it alive.
    store = Store()
    flusher = UsageFlusher(UsageLog(), store.write, interval=3600)
    before = flusher_threads()
    flusher.start()
    (started,) = flusher_threads() - before
    collected = weakref.ref(flusher)
    del flusher
    gc.collect()
    assert collected() is None
    started.join(10)
    assert not started.is_alive()


def test_close_without_a_thread_still_writes() -> None:
    store = Store()
    flusher = UsageFlusher(UsageLog(), store.write, interval=3600)
    flusher.log.record("a", T0)
    flusher.close()
    assert store.rows == {"a": T0}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_flushes_its_own_notes_not_its_parents() -> None:
    store = Store()
    flusher = UsageFlusher(UsageLog(), store.write, interval=3600)
    flusher.start()
    flusher.log.record("parent", T0)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            flusher.start()
            flusher.log.record("child", T0)
            flusher.close()
            os.write(write_end, ",".join(sorted(store.rows)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        written_by_child = pipe.read()
    os.waitpid(pid, 0)
    assert written_by_child == "child"
    flusher.close()
    assert store.rows == {"parent": T0}


def test_the_async_task_writes_on_its_interval_and_close_writes_the_rest() -> None:
    store = Store()

    async def main() -> None:
        flushed = asyncio.Event()

        async def write(batch: UsageBatch) -> None:
            store.write(batch)
            flushed.set()

        flusher = AsyncUsageFlusher(UsageLog(), write, interval=0.01)
        flusher.start()
        flusher.start()  # idempotent on one loop
        flusher.log.record("a", T0)
        await asyncio.wait_for(flushed.wait(), 10)
        flusher.log.record("b", T0)
        await flusher.close()

    asyncio.run(main())
    assert store.rows == {"a": T0, "b": T0}


def test_the_async_flusher_follows_the_manager_to_a_new_event_loop() -> None:
    store = Store()
    failures = [True]

    async def write(batch: UsageBatch) -> None:
        if failures.pop(0) if failures else False:
            raise ConnectionError("first loop gone")
        store.write(batch)

    flusher = AsyncUsageFlusher(UsageLog(), write, interval=3600)

    async def first() -> None:
        flusher.start()
        flusher.log.record("a", T0)
        await flusher.flush()  # fails: kept for the next run

    async def second() -> None:
        flusher.start()  # the first loop's task died with its loop
        await flusher.close()

    asyncio.run(first())
    asyncio.run(second())
    assert store.rows == {"a": T0}


_EXIT_SCRIPT = """
from datetime import UTC, datetime
from apikeys._usage import UsageFlusher, UsageLog

def write(batch):
    print("wrote", ",".join(sorted(batch)), flush=True)

closed = UsageFlusher(UsageLog(), write, interval=3600)
closed.close()  # its manager is gone: nothing it holds is written at exit
closed.log.record("noted-after-close", datetime.now(UTC))
pending = UsageFlusher(UsageLog(), write, interval=3600)
pending.log.record("noted-before-exit", datetime.now(UTC))
print("exiting", flush=True)
"""


def test_a_process_that_exits_without_close_writes_what_it_noted_and_only_that() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.splitlines() == ["exiting", "wrote noted-before-exit"]
    assert done.stderr == ""
