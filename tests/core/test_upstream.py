"""The pieces of the upstream guard, free of IO: known secrets, the moving window, floods."""

from __future__ import annotations

import pytest

from apikeys import RateLimit
from apikeys._upstream import (
    FloodWatch,
    KnownSecrets,
    MemoryUpstreamGuard,
    MovingWindow,
    Outlook,
    parse_verification_budget,
)


class Seconds:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_known_secrets_expire_and_are_bounded() -> None:
    clock = Seconds()
    known = KnownSecrets(2, ttl=100, clock=clock)
    known.learn(b"a")
    known.learn(b"b")
    assert known.knows(b"a") and known.knows(b"b")
    known.learn(b"a")  # verified again: the most recent
    known.learn(b"c")  # past the bound: b, the least recently verified, goes
    assert (known.knows(b"a"), known.knows(b"b"), known.knows(b"c")) == (True, False, True)
    clock.now += 100
    assert not known.knows(b"a")
    known.learn(b"c")
    known.forget(b"c")
    assert not known.knows(b"c")


def test_a_moving_window_never_allows_more_than_its_limit_in_any_window() -> None:
    clock = Seconds()
    window = MovingWindow(3, 10.0, clock)
    assert [window.take() for _ in range(3)] == [None, None, None]
    assert window.take() == 10.0
    clock.now += 4
    assert window.take() == 6.0  # nothing left the window yet
    clock.now += 6
    assert [window.take() for _ in range(4)] == [None, None, None, 10.0]


def test_a_flood_starts_after_a_quiet_window() -> None:
    clock = Seconds()
    watch = FloodWatch(10.0, clock)
    assert watch.refused() is True
    clock.now += 9
    assert watch.refused() is False
    clock.now += 9  # refusals kept coming: the same flood
    assert watch.refused() is False
    clock.now += 10
    assert watch.refused() is True


def test_the_memory_guard_pauses_and_keeps_the_longer_pause() -> None:
    clock = Seconds()
    guard = MemoryUpstreamGuard(None, max_known=10, clock=clock)
    assert guard.look(None) == Outlook(0.0, False)
    assert guard.draw() is None  # no budget: always drawn
    guard.pause(30)
    guard.pause(5)
    clock.now += 10
    assert guard.look(None).paused_for == 20.0
    guard.learn(b"d", succeeded=True)
    assert guard.look(b"d").known
    clock.now += 20
    assert guard.look(b"d") == Outlook(0.0, True)


@pytest.mark.parametrize(
    ("given", "budget"),
    [
        ("20/10s", RateLimit(limit=20, window=10)),
        (" 1000/10s ", RateLimit(limit=1000, window=10)),
        (RateLimit(limit=5, window=60), RateLimit(limit=5, window=60)),
        (None, None),
        (0, None),
        ("0", None),
    ],
)
def test_a_budget_is_read(given: object, budget: RateLimit | None) -> None:
    assert parse_verification_budget(given) == budget


@pytest.mark.parametrize("wrong", ["", "20", "twenty/10s", "20/0s", 20, True, 2.5, [20]])
def test_a_wrong_budget_is_refused(wrong: object) -> None:
    with pytest.raises(ValueError, match="verification_budget"):
        parse_verification_budget(wrong)
