"""Expiration parsing and checks, free of IO."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta

from apikeys._errors import ConfigurationError, InvalidInputError

Expiration = datetime | date | timedelta | str | None
"""What ``expiration`` accepts: an instant, a last valid day, a lifetime, ISO text or ``None``."""

# Far enough to be surely a mistake, near enough to stay inside every database's range.
MAX_LIFETIME = timedelta(days=365 * 100)


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


WallClock = Callable[[], datetime]
"""A wall clock: called, it tells the current time, timezone-aware in UTC.

Managers take one as ``clock`` (:func:`utcnow` by default), so tests can move
time forward instead of waiting for it.
"""


def check_clock(clock: WallClock) -> WallClock:
    """Return ``clock`` if it tells timezone-aware time, else raise.

    Read once, when a manager is built: a clock of naive datetimes would make
    every later expiry comparison fail.

    Raises:
        ConfigurationError: ``clock`` is not callable or returns no aware datetime.
    """
    now = clock() if callable(clock) else None
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise ConfigurationError(
            "clock must be a callable returning a timezone-aware datetime,"
            " such as lambda: datetime.now(UTC)"
        )
    return clock


def as_utc(value: datetime) -> datetime:
    """Return ``value`` in UTC; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _parse_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def parse_expiration(
    value: Expiration,
    *,
    now: datetime | None = None,
    field: str = "expiration",
    accepted: str = "an ISO 8601 date or date-time",
) -> datetime | None:
    """Turn any accepted ``expiration`` into an aware UTC instant, or ``None``.

    - ``datetime``: that instant (naive means UTC).
    - ``date`` or ``"YYYY-MM-DD"``: valid through that whole day, UTC; the key
      expires at the following midnight.
    - ``timedelta``: that long from ``now``.
    - any other ``str``: ISO 8601 date-time (``Z`` allowed).
    - ``None``: never expires.

    ``accepted`` says, in the error for an unparseable string, what the caller's
    users may write (the command line also takes durations).

    Raises:
        InvalidInputError: The value is unparseable, not in the future, or
            more than 100 years away.
    """
    now = as_utc(now) if now is not None else utcnow()
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            # Any date-only form (2024-12-31, and on Python 3.11+ also 20241231 or
            # 2024-W53-2) means "through that day": datetime.fromisoformat would
            # read the compact forms as that day's first instant instead.
            value = _parse_date(text) or datetime.fromisoformat(
                text.replace("Z", "+00:00").replace("z", "+00:00")
            )
        except ValueError:
            raise InvalidInputError(f"{field} {value!r} is not {accepted}", field=field) from None
    if isinstance(value, datetime):
        try:
            expires_at = as_utc(value)
        except OverflowError:  # e.g. 9999-12-31T23:00-05:00 lies past datetime.max in UTC
            raise InvalidInputError(f"{field} is out of range", field=field) from None
    elif isinstance(value, date):
        if value >= date.max:  # the following midnight is not representable
            raise InvalidInputError(f"{field} is more than 100 years away", field=field)
        expires_at = datetime.combine(value + timedelta(days=1), time(), tzinfo=UTC)
    elif isinstance(value, timedelta):
        if value <= timedelta(0):
            raise InvalidInputError(f"{field} must be a positive duration", field=field)
        if value > MAX_LIFETIME:
            raise InvalidInputError(f"{field} is more than 100 years away", field=field)
        expires_at = now + value
    else:
        raise InvalidInputError(
            f"{field} must be a datetime, date, timedelta, ISO 8601 string or None,"
            f" not {type(value).__name__}",
            field=field,
        )
    if expires_at <= now:
        raise InvalidInputError(f"{field} is in the past", field=field)
    if expires_at - now > MAX_LIFETIME:
        raise InvalidInputError(f"{field} is more than 100 years away", field=field)
    return expires_at


def is_expired(expires_at: datetime | None, now: datetime | None = None) -> bool:
    """Tell whether an expiry instant has passed (``None`` never expires)."""
    if expires_at is None:
        return False
    # Naive datetimes mean UTC here as everywhere (a backend may hand them back
    # naive); comparing naive with aware would raise TypeError.
    return (as_utc(now) if now else utcnow()) >= as_utc(expires_at)


__all__ = [
    "Expiration",
    "WallClock",
    "as_utc",
    "check_clock",
    "is_expired",
    "parse_expiration",
    "utcnow",
]
