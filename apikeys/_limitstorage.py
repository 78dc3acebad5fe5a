"""A key's limits as the backends store them, and read back strictly.

The SQL backend keeps them in columns of the key's row, the Clerk backend in the key's
``claims`` under one name, :data:`LIMITS_CLAIM`::

    {"apikeys": {"rateLimit": {"limit": 100, "window": 60},
                 "quota": {"limit": 100000, "period": 2592000, "anchor": "2026-01-01T00:00:00Z"},
                 "meter": "ak_..."}}

Every part is optional: a key made elsewhere has no such claim, and so no limits.

**Meters.** A key spends its limits from a meter named by a key id: a new key's own id;
a key made by rotation inherits its predecessor's, so the keys of one rotation lineage
(both alive during a grace period) spend from one rate limit and one quota, and rotating
never refills them. Only an inherited meter is stored in a claim.

**Failing closed.** Stored limits are read on every validation. A stored form that cannot
be read (a row or a claim edited by hand, or written by a newer release with kinds of
limits this one does not know) raises :class:`ValueError`; backends refuse such a key as
invalid rather than let it spend without limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from apikeys._keylimits import Quota, RateLimit

LIMITS_CLAIM = "apikeys"
"""The top-level claim (Clerk) and reserved metadata name that hold a key's limits."""

_CLAIM_PARTS = frozenset({"rateLimit", "quota", "meter"})
_RATE_LIMIT_PARTS = frozenset({"limit", "window"})
_QUOTA_PARTS = frozenset({"limit", "period", "anchor"})
_MAX_METER_LENGTH = 64


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """What a key may spend, as stored: its limits, its quota's anchor and its meter.

    ``quota_anchor`` is when the quota's first period began (set with the quota);
    ``meter_id`` is ``None`` when the key spends from its own meter (its id).
    """

    rate_limit: RateLimit | None = None
    quota: Quota | None = None
    quota_anchor: datetime | None = None
    meter_id: str | None = None


NO_LIMITS = KeyLimits()


def anchor_at(now: datetime) -> datetime:
    """A quota's anchor for one set at ``now``: UTC, in whole seconds as windows count."""
    return now.astimezone(UTC).replace(microsecond=0)


def read_rate_limit(limit: object, window: object) -> RateLimit | None:
    """A rate limit from its stored limit and window (seconds); both ``None``: no limit.

    Raises:
        ValueError: One is missing, or either is out of bounds.
    """
    if limit is None and window is None:
        return None
    try:
        return RateLimit(limit=limit, window=window)  # type: ignore[arg-type]
    except (ValidationError, TypeError):
        raise ValueError("unreadable rate limit") from None


def read_quota(limit: object, period: object, anchor: object) -> Quota | None:
    """A quota from its stored limit, period (seconds or ``None``) and anchor.

    Raises:
        ValueError: The limit is missing with a period or anchor present, the anchor is
            missing with a limit, or a value is out of bounds.
    """
    if limit is None and period is None and anchor is None:
        return None
    if not isinstance(anchor, datetime):
        raise ValueError("unreadable quota: no anchor")
    try:
        return Quota(limit=limit, period=period)  # type: ignore[arg-type]
    except (ValidationError, TypeError):
        raise ValueError("unreadable quota") from None


def limits_to_claim(limits: KeyLimits) -> dict[str, Any] | None:
    """The value of the :data:`LIMITS_CLAIM` claim, or ``None`` when there is nothing to store."""
    claim: dict[str, Any] = {}
    if limits.rate_limit is not None:
        claim["rateLimit"] = limits.rate_limit.model_dump(mode="json")
    if limits.quota is not None:
        if limits.quota_anchor is None:
            raise ValueError("a quota is stored with its anchor")
        anchor = limits.quota_anchor.astimezone(UTC).isoformat().replace("+00:00", "Z")
        claim["quota"] = {**limits.quota.model_dump(mode="json"), "anchor": anchor}
    if limits.meter_id is not None:
        claim["meter"] = limits.meter_id
    return claim or None


def limits_from_claims(claims: Any) -> KeyLimits:
    """A key's limits from its Clerk ``claims``; no :data:`LIMITS_CLAIM` claim: no limits.

    Raises:
        ValueError: The claim is there but not in the form :func:`limits_to_claim` writes.
    """
    if not isinstance(claims, Mapping) or LIMITS_CLAIM not in claims:
        return NO_LIMITS
    claim = claims[LIMITS_CLAIM]
    if not isinstance(claim, Mapping) or not set(claim) <= _CLAIM_PARTS:
        raise ValueError(f"unreadable {LIMITS_CLAIM!r} claim")
    rate_limit = None
    if "rateLimit" in claim:
        rate = _parts(claim["rateLimit"], _RATE_LIMIT_PARTS, required=_RATE_LIMIT_PARTS)
        rate_limit = read_rate_limit(rate["limit"], rate["window"])
    quota = anchor = None
    if "quota" in claim:
        stored = _parts(claim["quota"], _QUOTA_PARTS, required=frozenset({"limit", "anchor"}))
        anchor = _read_instant(stored["anchor"])
        quota = read_quota(stored["limit"], stored.get("period"), anchor)
    meter = claim.get("meter")
    if meter is not None and (
        not isinstance(meter, str) or not meter or len(meter) > _MAX_METER_LENGTH
    ):
        raise ValueError("unreadable meter")
    return KeyLimits(rate_limit, quota, anchor, meter)


def _parts(
    value: object, allowed: frozenset[str], *, required: frozenset[str]
) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not required <= set(value) <= allowed:
        raise ValueError(f"unreadable {LIMITS_CLAIM!r} claim")
    return value


def _read_instant(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("unreadable quota anchor")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("unreadable quota anchor") from None
    if moment.utcoffset() is None:
        raise ValueError("unreadable quota anchor: no time zone")
    return moment.astimezone(UTC)


__all__ = [
    "LIMITS_CLAIM",
    "NO_LIMITS",
    "KeyLimits",
    "anchor_at",
    "limits_from_claims",
    "limits_to_claim",
    "read_quota",
    "read_rate_limit",
]
