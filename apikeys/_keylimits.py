"""What a key may spend: a rate limit (calls per window) and a quota (credits per period).

Both are plain values, written once here and read by every backend and integration:
the models, their short text form (``100/1m``, ``100000/30d``, as the CLI takes them),
and the IO-free arithmetic of their windows. Counting (in memory, in Redis, in the
database) lives elsewhere; it asks this module which window a moment falls in.

Windows are fixed, not sliding: a rate limit of 100 a minute admits at most 100 calls
between ``hh:mm:00`` and ``hh:mm:59`` (windows aligned to the Unix epoch, so every process
of a fleet agrees on them without talking), and a quota's periods start at its anchor
(when it was set) and follow each other. A fixed window has one counter, which any store
can move atomically, and one reset time, which is what the ``RateLimit`` header fields
report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)

from apikeys._errors import InvalidInputError

MAX_LIMIT = 10**12
"""The most calls or credits a limit may allow (JSON numbers stay exact far beyond it)."""
MAX_RATE_WINDOW = timedelta(days=1)
"""The longest rate-limit window: longer ones are quotas."""
MAX_QUOTA_PERIOD = timedelta(days=366)
"""The longest quota period (a year, leap years included)."""

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SHORT_FORM = re.compile(r"(?P<limit>[0-9]+)(?:/(?P<count>[0-9]+)?(?P<unit>[smhdw]))?")
_UNIT_BY_SECONDS = sorted(((s, u) for u, s in _UNIT_SECONDS.items()), reverse=True)

_FROZEN = ConfigDict(frozen=True, extra="forbid")


def _whole_seconds(value: Any, *, name: str, longest: timedelta) -> timedelta:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{name} must be a finite number of seconds")
        if value > longest.total_seconds():
            raise ValueError(f"{name} must be at most {format_duration(longest)}")
        value = timedelta(seconds=value)
    if not isinstance(value, timedelta):
        raise ValueError(f"{name} must be a timedelta or a number of seconds")
    if value < timedelta(seconds=1):
        raise ValueError(f"{name} must be at least one second")
    if value > longest:
        raise ValueError(f"{name} must be at most {format_duration(longest)}")
    if value % timedelta(seconds=1):
        raise ValueError(f"{name} must be a whole number of seconds")
    return value


Limit = Annotated[int, Field(strict=True, ge=1, le=MAX_LIMIT)]


class RateLimit(BaseModel):
    """At most ``limit`` calls (or units of cost) in each ``window``.

    Example:
        >>> RateLimit(limit=100, window=60)
        RateLimit(limit=100, window=datetime.timedelta(seconds=60))
        >>> RateLimit.parse("100/1m") == RateLimit(limit=100, window=timedelta(minutes=1))
        True

    Attributes:
        limit: Calls allowed per window, 1 to 10**12.
        window: A whole number of seconds, 1 s to a day; given as a ``timedelta`` or seconds.
    """

    model_config = _FROZEN

    limit: Limit
    window: timedelta

    if TYPE_CHECKING:  # the window may be given in seconds; pydantic turns them into a timedelta

        def __init__(self, *, limit: int, window: timedelta | float) -> None: ...

    @field_validator("window", mode="before")
    @classmethod
    def _check_window(cls, value: Any) -> timedelta:
        return _whole_seconds(value, name="window", longest=MAX_RATE_WINDOW)

    @field_serializer("window", when_used="json")
    def _window_in_seconds(self, window: timedelta) -> int:
        return int(window.total_seconds())

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Read the short form ``<limit>/<window>``: ``100/1m``, ``10/s``, ``5000/1h``.

        Units: ``s``, ``m`` (minutes), ``h``, ``d``, ``w``. Raises
        :class:`~apikeys.InvalidInputError` (``field="rate_limit"``) on anything else.
        """
        limit, window = _parse(text, field="rate_limit", example="100/1m")
        if window is None:
            raise InvalidInputError(
                f"rate_limit {_shown(text)} has no window: write it as 100/1m", field="rate_limit"
            )
        return _build(cls, "rate_limit", limit=limit, window=window)

    def __str__(self) -> str:
        return f"{self.limit}/{format_duration(self.window)}"


class Quota(BaseModel):
    """At most ``limit`` credits in each ``period``, or ever when ``period`` is ``None``.

    Example:
        >>> Quota.parse("100000/30d") == Quota(limit=100_000, period=timedelta(days=30))
        True
        >>> Quota.parse("500").period is None   # a one-off balance: spent, it stays spent
        True

    Attributes:
        limit: Credits per period, 1 to 10**12.
        period: When the credits refill: a whole number of seconds, 1 s to 366 days
            (a ``timedelta`` or seconds), or ``None`` for a balance that never refills.
    """

    model_config = _FROZEN

    limit: Limit
    period: timedelta | None = None

    if TYPE_CHECKING:  # as RateLimit's window

        def __init__(self, *, limit: int, period: timedelta | float | None = None) -> None: ...

    @field_validator("period", mode="before")
    @classmethod
    def _check_period(cls, value: Any) -> timedelta | None:
        if value is None:
            return None
        return _whole_seconds(value, name="period", longest=MAX_QUOTA_PERIOD)

    @field_serializer("period", when_used="json")
    def _period_in_seconds(self, period: timedelta | None) -> int | None:
        return None if period is None else int(period.total_seconds())

    @classmethod
    def parse(cls, text: str) -> Quota:
        """Read the short form ``<limit>/<period>`` (``100000/30d``) or ``<limit>`` (``500``).

        Units as :meth:`RateLimit.parse`. Raises :class:`~apikeys.InvalidInputError`
        (``field="quota"``) on anything else.
        """
        limit, period = _parse(text, field="quota", example="100000/30d")
        return _build(cls, "quota", limit=limit, period=period)

    def __str__(self) -> str:
        if self.period is None:
            return str(self.limit)
        return f"{self.limit}/{format_duration(self.period)}"


def _shown(text: str) -> str:
    # Echo at most a short prefix: the text may be anything a client sent.
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


def _parse(text: object, *, field: str, example: str) -> tuple[int, timedelta | None]:
    if not isinstance(text, str):
        raise InvalidInputError(f"{field} must be text such as {example}", field=field)
    match = _SHORT_FORM.fullmatch(text.strip())
    if match is None:
        raise InvalidInputError(
            f"{field} {_shown(text)} is not of the form {example}"
            " (units: s, m for minutes, h, d, w)",
            field=field,
        )
    limit = _capped(match["limit"], MAX_LIMIT + 1)
    if match["unit"] is None:
        return limit, None
    count = _capped(match["count"] or "1", 10**9)
    seconds = min(count * _UNIT_SECONDS[match["unit"]], 10**9)
    return limit, timedelta(seconds=seconds)


def _capped(digits: str, cap: int) -> int:
    # Past any bound the exact number does not matter (the bound's error says so),
    # and a megabyte of digits must not become a megabyte integer.
    return min(int(digits), cap) if len(digits) <= len(str(cap)) else cap


_Model = TypeVar("_Model", bound=BaseModel)


def first_problem(error: ValidationError) -> tuple[str, str]:
    """Where the first problem of a limit's validation lies (``"window"``), and what it is,
    without pydantic's ``Value error,`` prefix."""
    problem = error.errors()[0]
    where = ".".join(str(part) for part in problem["loc"])
    return where, problem["msg"].removeprefix("Value error, ")


def _build(model: type[_Model], field: str, **values: Any) -> _Model:
    try:
        return model(**values)
    except ValidationError as exc:
        where, message = first_problem(exc)
        raise InvalidInputError(f"{field}.{where}: {message}", field=field) from None


def format_duration(duration: timedelta) -> str:
    """The short form of a whole number of seconds in its largest exact unit: ``30d``, ``90s``."""
    seconds = int(duration.total_seconds())
    for unit_seconds, unit in _UNIT_BY_SECONDS:
        if seconds % unit_seconds == 0:
            return f"{seconds // unit_seconds}{unit}"
    return f"{seconds}s"  # pragma: no cover - every whole number of seconds divides by 1 s


def _allows_no_more(
    child: tuple[int, timedelta | None], parent: tuple[int, timedelta | None]
) -> bool:
    # Compared as values: no more in one window than the parent's limit, and no faster
    # on average. A child of 10/1m may have 5/1m, 5/30s or 10/1h; not 20/1h (20 at once)
    # nor 5/1s (300 a minute). A span of None (a one-off balance) is for ever: only
    # another one-off fits under it. Each key counts on its own meter, so this bounds
    # what a child is given, not what a parent and its children spend together.
    (child_amount, child_span), (parent_amount, parent_span) = child, parent
    if child_amount > parent_amount:
        return False
    if parent_span is None:
        return child_span is None
    if child_span is None:
        return True
    return child_amount * parent_span.total_seconds() <= parent_amount * child_span.total_seconds()


def rate_limit_within(child: RateLimit | None, parent: RateLimit | None) -> bool:
    """Whether ``child`` is no looser than ``parent``: no more calls per window, no faster
    on average (``None``: no limit, looser than any)."""
    if parent is None:
        return True
    if child is None:
        return False
    return _allows_no_more((child.limit, child.window), (parent.limit, parent.window))


def quota_within(child: Quota | None, parent: Quota | None) -> bool:
    """Whether ``child`` is no looser than ``parent``: no more credits per period, no faster
    refill on average, and no refill under a one-off balance (``None``: no quota)."""
    if parent is None:
        return True
    if child is None:
        return False
    return _allows_no_more((child.limit, child.period), (parent.limit, parent.period))


@dataclass(frozen=True, slots=True)
class Window:
    """One fixed window of a limit: ``[start, end)``, as Unix seconds."""

    start: int
    end: int

    def seconds_left(self, now: datetime) -> float:
        """Seconds from ``now`` until the window ends (never negative)."""
        return max(0.0, self.end - now.timestamp())


def rate_window(limit: RateLimit, now: datetime) -> Window:
    """The window of ``limit`` that ``now`` falls in: windows align to the Unix epoch."""
    length = int(limit.window.total_seconds())
    start = int(now.timestamp()) // length * length
    return Window(start, start + length)


def quota_window(quota: Quota, anchor: datetime, now: datetime) -> Window | None:
    """The period of ``quota`` that ``now`` falls in, counting periods from ``anchor``;
    ``None`` for a quota without a period (one balance for ever)."""
    if quota.period is None:
        return None
    length = int(quota.period.total_seconds())
    origin = int(anchor.timestamp())
    # Before the anchor (a clock set back) counts as the first period: never a refill.
    elapsed = max(0, int(now.timestamp()) - origin)
    start = origin + elapsed // length * length
    return Window(start, start + length)


def as_utc(moment: int) -> datetime:
    """A Unix time in seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(moment, UTC)


__all__ = [
    "MAX_LIMIT",
    "MAX_QUOTA_PERIOD",
    "MAX_RATE_WINDOW",
    "Quota",
    "RateLimit",
    "Window",
    "as_utc",
    "first_problem",
    "format_duration",
    "quota_window",
    "quota_within",
    "rate_limit_within",
    "rate_window",
]
