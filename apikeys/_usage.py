"""Key usage kept off the request path: recorded in memory, written in batches.

A validation only notes when a key was used (:meth:`UsageLog.record`, a dict
write); a flusher writes what was noted since its last run in one batch, every
``interval`` seconds and once more at ``close()``:

- :class:`UsageFlusher` runs in a daemon thread, for sync managers;
- :class:`AsyncUsageFlusher` runs as a task on the event loop that validates,
  for async managers (their engines belong to that loop).

A failed write puts its batch back, to be retried at the next run; a crash
loses at most one interval of ``last_used_at``, never a key or a revocation.
Batches are idempotent and monotonic (a write never moves ``last_used_at``
back), so processes sharing a store may flush in any order.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from apikeys._threads import ProcessThread

logger = logging.getLogger("apikeys")

UsageBatch = Mapping[str, datetime]
"""Key id → the latest time the key was seen in use."""


class UsageLog:
    """The latest use of each key since the last flush."""

    __slots__ = ("_lock", "_pending")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, datetime] = {}

    def record(self, key_id: str, at: datetime) -> None:
        """Note that ``key_id`` was used at ``at`` (the later of two notes wins)."""
        with self._lock:
            seen = self._pending.get(key_id)
            if seen is None or at > seen:
                self._pending[key_id] = at

    def latest(self, key_id: str) -> datetime | None:
        """The latest use of ``key_id`` noted and not yet drained, if any."""
        return self._pending.get(key_id)

    def drain(self) -> dict[str, datetime]:
        """Take everything noted so far, leaving the log empty."""
        with self._lock:
            batch, self._pending = self._pending, {}
        return batch

    def restore(self, batch: UsageBatch) -> None:
        """Put back a batch that could not be written, keeping later notes."""
        for key_id, at in batch.items():
            self.record(key_id, at)

    def forget(self) -> None:
        """Drop every note (in a forked child: its parent writes them)."""
        self._lock = threading.Lock()
        self._pending = {}

    def __len__(self) -> int:
        return len(self._pending)


def _report_failure(batch: UsageBatch, exc: BaseException) -> None:
    # The exception's type only: a driver's message may quote the statement's parameters.
    logger.warning(
        "apikeys could not write last_used_at for %d key(s) (%s); retrying at the next flush",
        len(batch),
        type(exc).__name__,
    )


def _flush_if_alive(flush: weakref.WeakMethod[Callable[[], None]]) -> None:
    method = flush()
    if method is not None:
        method()


def _flush_every_interval(flusher_ref: weakref.ref[UsageFlusher], stop: threading.Event) -> None:
    while True:
        flusher = flusher_ref()
        if flusher is None:
            return
        interval = flusher.interval
        del flusher  # not held while waiting
        if stop.wait(interval):
            return
        flusher = flusher_ref()
        if flusher is None:
            return
        flusher.flush()
        del flusher


def _retire(stop: threading.Event, at_exit: Callable[[], None]) -> None:
    # A collected flusher: end its thread and forget its exit hook.
    stop.set()
    atexit.unregister(at_exit)


class UsageFlusher:
    """Write a :class:`UsageLog` from a daemon thread, every ``interval`` seconds and at close.

    The thread starts on the first :meth:`start` of each process, so a manager
    built before a server forks its workers flushes in every worker.

    Args:
        log: Where validations note usage.
        write: Writes one batch (one statement); raising puts the batch back.
        interval: Seconds between two flushes.
    """

    def __init__(self, log: UsageLog, write: Callable[[UsageBatch], None], interval: float) -> None:
        self.log = log
        self.interval = interval
        self._write = write
        # The thread holds the flusher weakly: a manager dropped without close()
        # is collected, and its thread ends with it. A forked child drops its
        # parent's notes: the parent writes them.
        self._thread = ProcessThread(
            "apikeys-usage-flusher",
            functools.partial(_flush_every_interval, weakref.ref(self)),
            on_fork=log.forget,
        )
        # A process that exits without close() (a worker told to stop) still writes
        # what it noted; the weak reference leaves the flusher free to be collected.
        # Each flusher registers its own hook and takes it back when closed or
        # collected, so a process making many managers does not accumulate them.
        self._at_exit = functools.partial(_flush_if_alive, weakref.WeakMethod(self.flush))
        atexit.register(self._at_exit)
        weakref.finalize(self, _retire, self._thread.stop_event, self._at_exit)

    def start(self) -> None:
        """Make sure this process's flushing thread runs (cheap when it does)."""
        self._thread.start()

    def flush(self) -> None:
        """Write what was noted since the last flush, now."""
        batch = self.log.drain()
        if not batch:
            return
        try:
            self._write(batch)
        except Exception as exc:
            self.log.restore(batch)
            _report_failure(batch, exc)

    def close(self) -> None:
        """Stop the thread and write what is left."""
        atexit.unregister(self._at_exit)
        self._thread.stop()
        self.flush()


class AsyncUsageFlusher:
    """The async twin of :class:`UsageFlusher`: a task on the validating event loop.

    Args:
        log: Where validations note usage.
        write: Writes one batch (one statement); raising puts the batch back.
        interval: Seconds between two flushes.
    """

    def __init__(
        self, log: UsageLog, write: Callable[[UsageBatch], Awaitable[None]], interval: float
    ) -> None:
        self.log = log
        self.interval = interval
        self._write = write
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        """Make sure a flushing task runs on the current event loop (cheap when it does)."""
        task = self._task
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            return
        if not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="apikeys-usage-flusher"
            )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> None:
        """Write what was noted since the last flush, now."""
        batch = self.log.drain()
        if not batch:
            return
        try:
            await self._write(batch)
        except Exception as exc:
            self.log.restore(batch)
            _report_failure(batch, exc)

    async def close(self) -> None:
        """Stop the task and write what is left."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            if task.get_loop() is asyncio.get_running_loop():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.flush()


__all__ = ["AsyncUsageFlusher", "UsageBatch", "UsageFlusher", "UsageLog"]
