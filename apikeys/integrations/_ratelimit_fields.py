"""The ``RateLimit-Policy`` and ``RateLimit`` header fields of a limited key, free of any framework.

They follow draft-ietf-httpapi-ratelimit-headers-10: each field is a Structured
Field list with one item per limit the key has, named by an sf-string policy
name, ``"rate"`` for its rate limit and ``"quota"`` for its quota::

    RateLimit-Policy: "rate";q=100;w=60, "quota";q=100000;w=2592000
    RateLimit: "rate";r=42;t=18, "quota";r=99000;t=2000000

``q`` is the limit, ``w`` the window (or period) in seconds, ``r`` what is left
and ``t`` the seconds until the window resets, rounded up, counted from when
the manager read the balances, by the clock it counts with. A one-off quota
never resets: its items have neither ``w`` nor ``t``. A key without limits gets
no fields at all.

A 429 of a key's own limits carries both fields too: every limit of the key,
the one that refused the call at ``r=0`` (no room for it), the others with what
they still have, since a refused call charges nothing.

Example:
    >>> from datetime import UTC, datetime
    >>> from apikeys._keylimits import Window
    >>> from apikeys._meter import Allowance, Balance
    >>> now = datetime.fromtimestamp(1_800_000_042, UTC)
    >>> usage = Allowance(rate_limit=Balance(100, 42, Window(1_800_000_000, 1_800_000_060)))
    >>> usage_fields(usage, now)
    (('RateLimit-Policy', '"rate";q=100;w=60'), ('RateLimit', '"rate";r=42;t=18'))
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime

from apikeys._errors import QuotaExceededError, RateLimitedError
from apikeys._expiry import utcnow
from apikeys._keylimits import Window
from apikeys._meter import Allowance, Balance

POLICY_FIELD = "RateLimit-Policy"
"""The field naming each limit: its quota units ``q`` and window ``w``."""

STATE_FIELD = "RateLimit"
"""The field telling what is left of each limit: ``r`` units, ``t`` seconds to the reset."""

RATE_POLICY = "rate"
"""The policy name of a key's rate limit."""

QUOTA_POLICY = "quota"
"""The policy name of a key's quota."""

HeaderFields = tuple[tuple[str, str], ...]
"""Header fields as ``(name, value)`` pairs, as :class:`~apikeys.integrations._responses.CoreResponse` holds them."""


def _item(policy: str, **parameters: int | None) -> str:
    """One list member: the policy name as an sf-string, then its integer parameters."""
    given = "".join(f";{name}={value}" for name, value in parameters.items() if value is not None)
    return f'"{policy}"{given}'


def _length(window: Window | None) -> int | None:
    return None if window is None else window.end - window.start


def _seconds_to_reset(window: Window | None, now: datetime) -> int | None:
    # Rounded up: a client waiting t seconds must not arrive before the reset.
    return None if window is None else math.ceil(window.seconds_left(now))


def _balances(usage: Allowance) -> list[tuple[str, Balance]]:
    pairs = [(RATE_POLICY, usage.rate_limit), (QUOTA_POLICY, usage.quota)]
    return [(policy, balance) for policy, balance in pairs if balance is not None]


def usage_fields(usage: Allowance | None, now: datetime | None = None) -> HeaderFields:
    """The fields for what a limited key has left; none for ``None`` or no limits.

    The seconds to each reset count from ``now``: by default from when the
    balances were read (``usage.at``), else from the wall clock's now.
    """
    balances = [] if usage is None else _balances(usage)
    if usage is None or not balances:
        return ()
    if now is None:
        now = usage.at if usage.at is not None else utcnow()
    policies = ", ".join(
        _item(policy, q=balance.limit, w=_length(balance.window)) for policy, balance in balances
    )
    states = ", ".join(
        _item(policy, r=balance.remaining, t=_seconds_to_reset(balance.window, now))
        for policy, balance in balances
    )
    return ((POLICY_FIELD, policies), (STATE_FIELD, states))


def refusal_fields(error: RateLimitedError) -> HeaderFields:
    """The fields of a 429 answered because a key's own limits refused a call.

    The error tells which limit refused (a :class:`~apikeys.QuotaExceededError`
    is the quota) and its ``usage`` what every limit had left: the fields name
    them all, the refusing one at ``r=0`` (whatever smaller calls it may still
    let through, it has no room for this one). An error without ``usage``, from
    a manager that does not report it, tells only when the refusing limit
    resets (``retry_after``, rounded up; none for a one-off quota): the 429
    then carries that one ``RateLimit`` item, and no ``RateLimit-Policy``.
    """
    is_quota = isinstance(error, QuotaExceededError)
    usage = error.usage
    if usage is not None and is_quota and usage.quota is not None:
        return usage_fields(replace(usage, quota=replace(usage.quota, remaining=0)))
    if usage is not None and not is_quota and usage.rate_limit is not None:
        return usage_fields(replace(usage, rate_limit=replace(usage.rate_limit, remaining=0)))
    policy = QUOTA_POLICY if is_quota else RATE_POLICY
    retry_after = error.retry_after
    seconds = None
    if retry_after is not None and math.isfinite(retry_after):
        seconds = max(0, math.ceil(retry_after))
    return ((STATE_FIELD, _item(policy, r=0, t=seconds)),)


__all__ = [
    "POLICY_FIELD",
    "QUOTA_POLICY",
    "RATE_POLICY",
    "STATE_FIELD",
    "HeaderFields",
    "refusal_fields",
    "usage_fields",
]
