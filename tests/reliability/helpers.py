"""Helpers shared by the reliability tests."""

from __future__ import annotations

import apikeys


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wrong_secret_for(secret: str) -> str:
    """A well-formed key with the same lookup id as ``secret`` but another secret."""
    parsed = apikeys.parse_key(secret)
    return apikeys.generate_key(parsed.prefix, id=parsed.id).key
