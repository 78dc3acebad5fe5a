"""Wait for something another thread or process does, as soon as it shows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

WAIT = 10.0
"""The most any one step may take on a loaded machine; each wait ends as soon as its condition holds."""


def eventually(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    """Return once ``condition()`` holds; fail if it does not within ``timeout`` seconds.

    For effects of a background thread or another process: the condition is
    checked every millisecond, so no test waits longer than the effect takes.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{getattr(condition, '__name__', condition)} did not hold in {timeout} s"
            )
        time.sleep(0.001)


async def eventually_async(condition: Callable[[], bool]) -> None:
    """:func:`eventually` for effects of other tasks: the event loop runs them while this waits."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{getattr(condition, '__name__', condition)} did not hold in {WAIT} s"
            )
        await asyncio.sleep(0.001)
