"""Worker processes hammering one store at once, window after window, for the exactness tests.

Workers are started with the ``spawn`` method: a fresh interpreter, its own connections,
as a worker of a real deployment. Every worker reads the same fixed clock for each
window, so the windows are the same for all of them whatever the timing.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from apikeys import RateLimitedError

Accepted = dict[tuple[str, int], int]
"""Calls accepted, by (name, window number)."""


def count_accepted(
    call: Callable[[str], object],
    names: Iterable[str],
    windows: list[datetime],
    attempts: int,
    now: list[datetime],
    barrier: Any,
    accepted: Accepted,
) -> None:
    """Make ``call(name)`` ``attempts`` times for every name in each window, all workers
    starting each window together (``now[0]`` is the worker's clock); count what was
    accepted (not refused by a limit) into ``accepted``."""
    names = list(names)
    for number, moment in enumerate(windows):
        now[0] = moment + timedelta(seconds=1)
        barrier.wait(timeout=60)
        for _ in range(attempts):
            for name in names:
                try:
                    call(name)
                except RateLimitedError:
                    continue
                accepted[name, number] = accepted.get((name, number), 0) + 1


def hammer_in_processes(
    target: Callable[..., None], args: tuple[Any, ...], workers: int, *, timeout: float
) -> Accepted:
    """Run ``target(*args, barrier, results)`` in ``workers`` spawned processes at once and
    add up the :data:`Accepted` each puts on ``results``; fail if any of them failed."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(workers)
    results = context.Queue()
    processes = [
        context.Process(target=target, args=(*args, barrier, results)) for _ in range(workers)
    ]
    for process in processes:
        process.start()
    accepted: Accepted = {}
    for _ in processes:
        for where, count in results.get(timeout=timeout).items():
            accepted[where] = accepted.get(where, 0) + count
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return accepted
