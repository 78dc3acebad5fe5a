"""Checks that run only after a secret was verified (apikeys._keystate)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from apikeys import ExpiredKeyError, InsufficientScopeError, RevokedKeyError, VerifiedKey
from apikeys._keystate import check_key_state, check_scopes

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def test_a_live_key_passes() -> None:
    check_key_state("k1", revoked=False, expires_at=None, now=NOW)
    check_key_state("k1", revoked=False, expires_at=NOW + timedelta(seconds=1), now=NOW)
    check_key_state("k1", revoked=False, expires_at=datetime(2999, 1, 1))  # naive, real now


def test_a_revoked_key_is_refused_with_its_id() -> None:
    with pytest.raises(RevokedKeyError) as caught:
        check_key_state("k1", revoked=True, expires_at=None, now=NOW)
    assert caught.value.key_id == "k1"
    assert caught.value.status_code == 403


@pytest.mark.parametrize("expires_at", [NOW, NOW - timedelta(days=1), datetime(2029, 12, 31)])
def test_an_expired_key_is_refused_with_its_id(expires_at: datetime) -> None:
    with pytest.raises(ExpiredKeyError) as caught:
        check_key_state("k2", revoked=False, expires_at=expires_at, now=NOW)
    assert caught.value.key_id == "k2"


def test_revocation_is_reported_before_expiry() -> None:
    with pytest.raises(RevokedKeyError):
        check_key_state("k1", revoked=True, expires_at=NOW - timedelta(days=1), now=NOW)


def verified(*scopes: str) -> VerifiedKey:
    return VerifiedKey(id="k3", user_id="u", name="n", scopes=scopes)


def test_check_scopes_returns_the_same_verified_key() -> None:
    key = verified("read:data", "billing:*")
    assert check_scopes(key, ()) is key
    assert check_scopes(key, ("read:data", "billing:invoices")) is key


def test_missing_scopes_are_refused_and_listed() -> None:
    with pytest.raises(InsufficientScopeError) as caught:
        check_scopes(verified("read:data"), ("read:data", "write:data", "admin"))
    assert caught.value.missing_scopes == ("write:data", "admin")
    assert caught.value.key_id == "k3"
    assert "write:data admin" in str(caught.value)


def test_required_scopes_may_be_any_iterable() -> None:
    with pytest.raises(InsufficientScopeError):
        check_scopes(verified(), iter(["read:data"]))
    assert check_scopes(verified("a"), iter(["a"])).id == "k3"
