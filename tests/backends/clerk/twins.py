"""Clerk managers of both flavours behind one sync interface, and their backoff pauses."""

from __future__ import annotations

import inspect
from typing import Any

from tests.contract.backends import SyncFacade

Twin = SyncFacade
"""A manager of either flavour behind one sync interface (the contract suite's facade)."""


def record_sleeps(manager: Any) -> list[float]:
    """Make a Clerk manager record its backoff pauses instead of sleeping them."""
    recorded: list[float] = []
    if inspect.iscoroutinefunction(manager.validate_api_key):

        async def record(seconds: float) -> None:
            recorded.append(seconds)

        manager._sleep = record
    else:
        manager._sleep = recorded.append
    return recorded
