"""A helper for property tests whose input may be accepted or refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)


def outcome(call: Callable[[], T], refusal: type[E]) -> T | E:
    """Return what ``call()`` returns, or the ``refusal`` it raised; anything else propagates."""
    try:
        return call()
    except refusal as exc:
        return exc
