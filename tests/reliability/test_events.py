"""Usage monitoring: events, listeners, log records and burst detection."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import apikeys
from apikeys import (
    BackendUnavailableError,
    ExpiredKeyError,
    InsufficientScopeError,
    InvalidInputError,
    InvalidKeyError,
    KeyEvent,
    MissingKeyError,
    RateLimitedError,
    RevokedKeyError,
)
from apikeys import _events as events_module
from apikeys._events import BurstDetector, EventReporter, rejection_reason
from apikeys.backends.sqlalchemy import AsyncSQLAlchemyKeyManager, SQLAlchemyKeyManager
from tests.reliability.helpers import FakeClock, wrong_secret_for

pytestmark = pytest.mark.sqlalchemy


def kinds(seen: list[KeyEvent]) -> list[tuple[str, str | None, str | None]]:
    return [(event.kind, event.key_id, event.reason) for event in seen]


# --- the hook API ------------------------------------------------------------------


def test_listeners_are_added_once_and_removed(events: list[KeyEvent]) -> None:
    extra: list[KeyEvent] = []
    apikeys.add_event_listener(extra.append)
    apikeys.add_event_listener(extra.append)
    events_module.emit(KeyEvent("created", "abc"))
    apikeys.remove_event_listener(extra.append)
    apikeys.remove_event_listener(extra.append)  # unknown now: ignored
    events_module.emit(KeyEvent("deleted", "abc"))
    assert [event.kind for event in extra] == ["created"]
    assert [event.kind for event in events] == ["created", "deleted"]


def test_a_failing_listener_is_logged_and_others_still_run(
    events: list[KeyEvent], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: KeyEvent) -> None:
        raise RuntimeError("listener bug")

    apikeys.add_event_listener(broken)
    later: list[KeyEvent] = []
    apikeys.add_event_listener(later.append)
    try:
        with caplog.at_level(logging.ERROR, logger="apikeys.events"):
            events_module.emit(KeyEvent("revoked", "abc"))
    finally:
        apikeys.remove_event_listener(broken)
        apikeys.remove_event_listener(later.append)
    assert len(later) == 1
    assert any("listener" in r.getMessage() and r.exc_info for r in caplog.records)


def test_event_is_frozen_and_describes_itself() -> None:
    event = KeyEvent("suspicious", "abc", user_id="u1", reason="invalid", failures=12)
    with pytest.raises(AttributeError):
        event.kind = "created"  # type: ignore[misc]
    assert event.describe() == "suspicious key_id=abc user_id=u1 reason=invalid failures=12"
    assert event.at.tzinfo is not None


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (InvalidKeyError(), "invalid"),
        (ExpiredKeyError(), "expired"),
        (RevokedKeyError(), "revoked"),
        (InsufficientScopeError(missing_scopes=["a"]), "insufficient_scope"),
        (MissingKeyError(), "missing"),
        (RateLimitedError(retry_after=1), "rate_limited"),
        (BackendUnavailableError(), "unavailable"),
        (InvalidInputError(), None),
        (ValueError(), None),
    ],
)
def test_rejection_reasons(error: BaseException, reason: str | None) -> None:
    assert rejection_reason(error) == reason


def test_log_records_carry_the_event(caplog: pytest.LogCaptureFixture) -> None:
    reporter = EventReporter("test")
    with caplog.at_level(logging.DEBUG, logger="apikeys.events"):
        reporter.report("validated", "abc", user_id="u1")
        reporter.rejected(InvalidKeyError(), key_id="abc")
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels == [
        (logging.DEBUG, "API key validated key_id=abc user_id=u1 source=test"),
        (logging.INFO, "API key rejected key_id=abc reason=invalid source=test"),
    ]
    assert vars(caplog.records[1])["apikeys_event"].reason == "invalid"


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The arguments of every KeyEvent built from now on."""
    made: list[tuple[Any, ...]] = []
    real = events_module.KeyEvent

    def counting(*args: Any, **kwargs: Any) -> KeyEvent:
        made.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(events_module, "KeyEvent", counting)
    return made


def test_no_event_is_built_when_nobody_listens(built: list[tuple[Any, ...]]) -> None:
    logging.getLogger("apikeys.events").setLevel(logging.WARNING)
    try:
        reporter = EventReporter("test")
        reporter.report("validated", "abc")
        reporter.report("created", "abc")
        reporter.rejected(InvalidKeyError(), key_id="abc")
        assert built == []
        apikeys.add_event_listener(print)
        try:
            reporter.report("validated", "abc")
        finally:
            apikeys.remove_event_listener(print)
        assert len(built) == 1
    finally:
        logging.getLogger("apikeys.events").setLevel(logging.NOTSET)


# --- burst detection ---------------------------------------------------------------


def test_a_burst_is_reported_once_per_window() -> None:
    clock = FakeClock()
    detector = BurstDetector(5, 60.0, clock=clock)
    reports = [detector.record("k") for _ in range(20)]
    assert reports[:4] == [None] * 4
    assert reports[4] == 5
    assert reports[5:] == [None] * 15
    clock.advance(59.0)
    assert all(detector.record("k") is None for _ in range(5))
    clock.advance(1.0)
    assert detector.record("k") == 5  # a window later, still bursting: reported again


def test_slow_failures_are_not_a_burst() -> None:
    clock = FakeClock()
    detector = BurstDetector(5, 60.0, clock=clock)
    for _ in range(100):
        assert detector.record("k") is None
        clock.advance(13.0)  # slower than 5 per minute


def test_detector_memory_is_bounded() -> None:
    detector = BurstDetector(1, 60.0, max_tracked=50)
    for index in range(5000):
        assert detector.record(f"id{index}") == 1
    assert len(detector._counter) <= 50
    assert len(detector._reports._reported) <= 50


def test_detection_can_be_disabled() -> None:
    detector = BurstDetector(0, 60.0)
    assert all(detector.record("k") is None for _ in range(100))


def test_rejections_feed_the_detector_and_raise_a_warning(
    events: list[KeyEvent], caplog: pytest.LogCaptureFixture
) -> None:
    reporter = EventReporter("test", suspicious_failures=3)
    with caplog.at_level(logging.WARNING, logger="apikeys.events"):
        for _ in range(3):
            reporter.rejected(InvalidKeyError(), key_id="abc", user_id="u1")
        reporter.rejected(RateLimitedError(), key_id="abc")  # not counted
        reporter.rejected(InvalidKeyError())  # no id: nothing to count
    suspicious = [e for e in events if e.kind == "suspicious"]
    assert [(e.key_id, e.user_id, e.failures) for e in suspicious] == [("abc", "u1", 3)]
    assert [r.getMessage() for r in caplog.records] == [
        "API key suspicious key_id=abc user_id=u1 reason=invalid source=test failures=3"
    ]


# --- an old key in use is not a guess ------------------------------------------------


def test_retired_keys_are_reported_apart_from_guesses(
    events: list[KeyEvent], caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    reporter = EventReporter("test", suspicious_failures=3, suspicious_window=60.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="apikeys.events"):
        for _ in range(10):  # a client still sending its revoked key, again and again
            reporter.rejected(RevokedKeyError(key_id="old"), user_id="u1")
        reporter.rejected(ExpiredKeyError(key_id="gone"), user_id="u2")
        clock.advance(59.0)
        reporter.rejected(RevokedKeyError(key_id="old"), user_id="u1")
        clock.advance(1.0)
        reporter.rejected(RevokedKeyError(key_id="old"), user_id="u1")  # a window later
    retired = [(e.key_id, e.user_id, e.reason) for e in events if e.kind == "retired_key_used"]
    assert retired == [
        ("old", "u1", "revoked"),
        ("gone", "u2", "expired"),
        ("old", "u1", "revoked"),
    ]
    assert not [e for e in events if e.kind == "suspicious"]
    assert [r.getMessage() for r in caplog.records] == [
        "API key retired_key_used key_id=old user_id=u1 reason=revoked source=test",
        "API key retired_key_used key_id=gone user_id=u2 reason=expired source=test",
        "API key retired_key_used key_id=old user_id=u1 reason=revoked source=test",
    ]


class MovableClock:
    """The managers' wall clock, which a test moves forward."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def _retired_and_guessed(
    manager: SQLAlchemyKeyManager, clock: MovableClock
) -> tuple[str, str, str]:
    """Use a revoked and an expired key with their right secrets, and guess at a third."""
    revoked = manager.create_api_key("u1", "revoked")
    expired = manager.create_api_key("u1", "expired", expiration=timedelta(seconds=30))
    guessed = manager.create_api_key("u1", "guessed")
    manager.revoke_api_key(revoked.id)
    clock.now += timedelta(minutes=1)
    for _ in range(5):
        with pytest.raises(ExpiredKeyError):
            manager.validate_api_key(expired.secret)
    for _ in range(5):
        with pytest.raises(RevokedKeyError):
            manager.validate_api_key(revoked.secret)
        with pytest.raises(InvalidKeyError):
            manager.validate_api_key(wrong_secret_for(guessed.secret))
    return revoked.id, expired.id, guessed.id


def _retired_and_suspicious(seen: list[KeyEvent]) -> list[tuple[str, str | None, str | None]]:
    return [e for e in kinds(seen) if e[0] in ("retired_key_used", "suspicious")]


def test_sync_manager_reports_retired_keys_apart_from_guesses(
    events: list[KeyEvent], tmp_path: Path
) -> None:
    clock = MovableClock()
    with SQLAlchemyKeyManager(
        f"sqlite:///{tmp_path / 'k.db'}", suspicious_failures=3, clock=clock
    ) as manager:
        revoked, expired, guessed = _retired_and_guessed(manager, clock)
    assert _retired_and_suspicious(events) == [
        ("retired_key_used", expired, "expired"),
        ("retired_key_used", revoked, "revoked"),
        ("suspicious", guessed, "invalid"),
    ]


def test_async_manager_reports_retired_keys_apart_from_guesses(
    events: list[KeyEvent], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"

    async def scenario() -> tuple[str, str, str]:
        clock = MovableClock()
        async with AsyncSQLAlchemyKeyManager(url, suspicious_failures=3, clock=clock) as manager:
            revoked = await manager.create_api_key("u1", "revoked")
            expired = await manager.create_api_key(
                "u1", "expired", expiration=timedelta(seconds=30)
            )
            guessed = await manager.create_api_key("u1", "guessed")
            await manager.revoke_api_key(revoked.id)
            clock.now += timedelta(minutes=1)
            for _ in range(5):
                with pytest.raises(ExpiredKeyError):
                    await manager.validate_api_key(expired.secret)
            for _ in range(5):
                with pytest.raises(RevokedKeyError):
                    await manager.validate_api_key(revoked.secret)
                with pytest.raises(InvalidKeyError):
                    await manager.validate_api_key(wrong_secret_for(guessed.secret))
            return revoked.id, expired.id, guessed.id

    revoked, expired, guessed = asyncio.run(scenario())
    assert _retired_and_suspicious(events) == [
        ("retired_key_used", expired, "expired"),
        ("retired_key_used", revoked, "revoked"),
        ("suspicious", guessed, "invalid"),
    ]


# --- the SQLAlchemy backend reports everything -------------------------------------


def test_sync_manager_reports_every_kind(events: list[KeyEvent], tmp_path: Path) -> None:
    with SQLAlchemyKeyManager(f"sqlite:///{tmp_path / 'k.db'}", suspicious_failures=2) as manager:
        new = manager.create_api_key("u1", "k", ["read"])
        manager.validate_api_key(new.secret)  # miss
        manager.validate_api_key(new.secret)  # hit
        with pytest.raises(InsufficientScopeError):
            manager.validate_api_key(new.secret, required_scopes=["write"])
        for _ in range(2):
            with pytest.raises(InvalidKeyError):
                manager.validate_api_key(wrong_secret_for(new.secret))
        with pytest.raises(InvalidKeyError):
            manager.validate_api_key("garbage")
        rotated = manager.rotate_api_key(new.id)
        manager.revoke_api_key(rotated.id)
        manager.revoke_api_key(rotated.id)  # already revoked: no second event
        with pytest.raises(RevokedKeyError):
            manager.validate_api_key(rotated.secret)
        manager.delete_api_key(rotated.id)
    assert kinds(events) == [
        ("created", new.id, None),
        ("validated", new.id, None),
        ("validated", new.id, None),
        ("rejected", new.id, "insufficient_scope"),
        ("rejected", new.id, "invalid"),
        ("rejected", new.id, "invalid"),
        ("suspicious", new.id, "invalid"),
        ("rejected", None, "invalid"),
        ("rotated", new.id, None),
        ("revoked", rotated.id, None),
        ("rejected", rotated.id, "revoked"),
        ("retired_key_used", rotated.id, "revoked"),
        ("deleted", rotated.id, None),
    ]
    assert all(e.source == "sqlalchemy" for e in events)
    assert events[8].new_key_id == rotated.id
    assert {e.user_id for e in events if e.key_id and e.kind != "deleted"} == {"u1"}


def test_unknown_ids_are_reported_like_wrong_secrets(
    events: list[KeyEvent], tmp_path: Path
) -> None:
    with SQLAlchemyKeyManager(f"sqlite:///{tmp_path / 'k.db'}") as manager:
        unknown = apikeys.generate_key()
        with pytest.raises(InvalidKeyError):
            manager.validate_api_key(unknown.key)
    assert kinds(events) == [("rejected", unknown.id, "invalid")]
    assert events[0].user_id is None


def test_unavailable_backend_is_reported(events: list[KeyEvent], tmp_path: Path) -> None:
    manager = SQLAlchemyKeyManager(f"sqlite:///{tmp_path / 'missing' / 'k.db'}")
    key = apikeys.generate_key()
    with pytest.raises(BackendUnavailableError):
        manager.validate_api_key(key.key)
    assert kinds(events) == [("rejected", key.id, "unavailable")]


def test_rate_limited_attempts_are_reported_and_not_counted(events: list[KeyEvent]) -> None:
    reporter = EventReporter("test", suspicious_failures=1)
    reporter.rejected(RateLimitedError(retry_after=1), key_id="abc")
    assert kinds(events) == [("rejected", "abc", "rate_limited")]


def test_async_manager_reports_the_same_events(events: list[KeyEvent], tmp_path: Path) -> None:
    async def scenario() -> str:
        async with AsyncSQLAlchemyKeyManager(f"sqlite:///{tmp_path / 'k.db'}") as manager:
            new = await manager.create_api_key("u1", "k")
            await manager.validate_api_key(new.secret)
            await manager.validate_api_key(new.secret)
            with pytest.raises(InvalidKeyError):
                await manager.validate_api_key(wrong_secret_for(new.secret))
            await manager.revoke_api_key(new.id)
            return new.id

    key_id = asyncio.run(scenario())
    assert kinds(events) == [
        ("created", key_id, None),
        ("validated", key_id, None),
        ("validated", key_id, None),
        ("rejected", key_id, "invalid"),
        ("revoked", key_id, None),
    ]


def test_a_failing_listener_never_breaks_validation(tmp_path: Path) -> None:
    def broken(event: KeyEvent) -> None:
        raise RuntimeError("boom")

    apikeys.add_event_listener(broken)
    try:
        with SQLAlchemyKeyManager(f"sqlite:///{tmp_path / 'k.db'}") as manager:
            new = manager.create_api_key("u1", "k")
            assert manager.validate_api_key(new.secret).id == new.id
            assert manager.validate_api_key(new.secret).id == new.id
            with pytest.raises(InvalidKeyError):
                manager.validate_api_key(wrong_secret_for(new.secret))
    finally:
        apikeys.remove_event_listener(broken)


def test_cache_hits_build_no_event_when_nobody_listens(
    tmp_path: Path, built: list[tuple[Any, ...]]
) -> None:
    logging.getLogger("apikeys.events").setLevel(logging.INFO)  # DEBUG is what hits need
    try:
        with SQLAlchemyKeyManager(f"sqlite:///{tmp_path / 'k.db'}") as manager:
            new = manager.create_api_key("u1", "k")
            manager.validate_api_key(new.secret)
            built.clear()
            for _ in range(100):
                manager.validate_api_key(new.secret)
            assert built == []
    finally:
        logging.getLogger("apikeys.events").setLevel(logging.NOTSET)
