"""Drive IO-free operation flows synchronously or asynchronously.

A backend writes each operation once, as a generator that yields IO requests
(an SQL statement, an HTTP request, a password hash) and receives their
results. The sync manager drives it with :func:`run_sync`, the async manager
with :func:`run_async`: the logic exists once, the twins only perform IO.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

T = TypeVar("T")
Op = TypeVar("Op")

Flow = Generator[Op, Any, T]
"""A generator that yields IO requests of type ``Op`` and returns a ``T``."""


def run_sync(flow: Generator[Op, Any, T], perform: Callable[[Op], Any]) -> T:
    """Run ``flow`` to completion, performing each yielded request with ``perform``."""
    try:
        request = next(flow)
        while True:
            try:
                result = perform(request)
            except BaseException as exc:
                request = flow.throw(exc)
            else:
                request = flow.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


async def run_async(flow: Generator[Op, Any, T], perform: Callable[[Op], Awaitable[Any]]) -> T:
    """Run ``flow`` to completion, awaiting ``perform`` for each yielded request."""
    try:
        request = next(flow)
        while True:
            try:
                result = await perform(request)
            except BaseException as exc:
                request = flow.throw(exc)
            else:
                request = flow.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


__all__ = ["Flow", "run_async", "run_sync"]
