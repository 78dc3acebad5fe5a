"""The Clerk backend keeps a key's limits in its claims, under ``"apikeys"``: the claim's
form, keys made elsewhere, and claims edited by hand in Clerk's dashboard."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import pytest

from apikeys import InvalidInputError, InvalidKeyError
from apikeys._keylimits import Quota, RateLimit
from apikeys.testing import FakeClerk
from tests.backends.clerk.twins import Twin
from tests.redis_server import RedisServer

pytestmark = pytest.mark.clerk


@pytest.fixture
def twin(make_twin: Callable[..., Twin], shared_redis: RedisServer) -> Twin:
    """A manager with its cache off, counting quotas in Redis (Clerk needs it for them)."""
    # No budget: every fake is one Clerk instance, whose budget the session's Redis would share.
    return make_twin(redis_url=shared_redis.url, verification_budget=None)


def _stored_claims(fake: FakeClerk, key_id: str) -> Any:
    stored = fake.key(key_id)
    assert stored is not None
    return copy.deepcopy(stored["claims"])  # the fake's own objects: never change them


def _edit_claims(fake: FakeClerk, key_id: str, claims: Any) -> None:
    """Change a key's claims as someone in Clerk's dashboard would."""
    with fake.client() as client:
        answer = client.patch(
            f"{fake.api_url}/api_keys/{key_id}",
            json={"claims": claims},
            headers={"Authorization": f"Bearer {fake.secret_key}"},
        )
    assert answer.status_code == 200


def _made_elsewhere(fake: FakeClerk, user_id: str, claims: Any) -> dict[str, Any]:
    with fake.client() as client:
        made: dict[str, Any] = client.post(
            f"{fake.api_url}/api_keys",
            json={"name": "from the dashboard", "subject": user_id, "claims": claims},
            headers={"Authorization": f"Bearer {fake.secret_key}"},
        ).json()
    return made


def test_the_limits_claim_has_the_documented_form(
    twin: Twin, fake: FakeClerk, user_id: str
) -> None:
    new = twin.create_api_key(
        user_id, "limited", rate_limit="100/1m", quota="100000/30d", metadata={"tier": 2}
    )
    claims = _stored_claims(fake, new.id)
    anchor = claims["apikeys"]["quota"].pop("anchor")
    assert claims == {
        "tier": 2,
        "apikeys": {
            "rateLimit": {"limit": 100, "window": 60},
            "quota": {"limit": 100000, "period": 2592000},
        },
    }
    assert anchor.endswith("Z") and twin.validate_api_key(new.secret).quota_anchor is not None
    assert new.metadata == {"tier": 2}
    # A rotated key names the meter it spends from; a one-off quota has no period.
    twin.update_api_key_limits(new.id, rate_limit=None, quota="500")
    rotated = twin.rotate_api_key(new.id)
    limits_claim = _stored_claims(fake, rotated.id)["apikeys"]
    assert limits_claim["meter"] == new.id and "rateLimit" not in limits_claim
    assert limits_claim["quota"]["period"] is None
    # Removing every limit leaves the claims as the user's metadata alone.
    twin.update_api_key_limits(rotated.id, quota=None)
    assert _stored_claims(fake, rotated.id) == {"tier": 2, "apikeys": {"meter": new.id}}


def test_a_key_without_limits_sends_no_limits_claim(
    twin: Twin, fake: FakeClerk, user_id: str
) -> None:
    new = twin.create_api_key(user_id, "plain")
    assert _stored_claims(fake, new.id) is None
    assert twin.update_api_key_limits(new.id).rate_limit is None  # nothing to write
    assert fake.count("PATCH") == 0


@pytest.mark.parametrize("claims", [None, {"tier": 2}, ["a", "list"], "text"])
def test_keys_made_elsewhere_have_no_limits_and_meter_themselves(
    twin: Twin, fake: FakeClerk, user_id: str, claims: Any
) -> None:
    made = _made_elsewhere(fake, user_id, claims)
    verified = twin.validate_api_key(made["secret"])
    assert (verified.rate_limit, verified.quota, verified.meter_id) == (None, None, made["id"])
    assert twin.get_api_key(made["id"]).rate_limit is None


def test_limits_cannot_be_stored_in_claims_that_are_not_an_object(
    twin: Twin, fake: FakeClerk, user_id: str
) -> None:
    made = _made_elsewhere(fake, user_id, ["a", "list"])
    with pytest.raises(InvalidInputError) as caught:
        twin.update_api_key_limits(made["id"], rate_limit="10/1s")
    assert caught.value.field == "key_id"
    assert _stored_claims(fake, made["id"]) == ["a", "list"]
    assert twin.rotate_api_key(made["id"]).metadata == {"claims": ["a", "list"]}


@pytest.mark.parametrize(
    "claim",
    [
        "100/1m",
        {"rateLimit": {"limit": 100}},
        {"rateLimit": {"limit": 0, "window": 60}},
        {"rateLimit": {"limit": "100", "window": 60}},
        {"rateLimit": {"limit": 100, "window": 60, "burst": 5}},
        {"quota": {"limit": 500}},  # no anchor
        {"quota": {"limit": 500, "anchor": "2026-01-01T00:00:00"}},  # no time zone
        {"quota": {"limit": 500, "anchor": "yesterday"}},
        {"quota": {"limit": 500, "period": -1, "anchor": "2026-01-01T00:00:00Z"}},
        {"meter": 42},
        {"credits": 5},  # a kind of limit this release does not know
    ],
)
def test_a_limits_claim_edited_by_hand_refuses_the_key_rather_than_unlimit_it(
    make_twin: Any, fake: FakeClerk, user_id: str, claim: Any, caplog: pytest.LogCaptureFixture
) -> None:
    twin = make_twin(cache_ttl=60)
    new = twin.create_api_key(user_id, "edited", rate_limit="5/1s", metadata={"tier": 2})
    _edit_claims(fake, new.id, {"tier": 2, "apikeys": claim})
    with caplog.at_level(logging.ERROR, "apikeys.clerk"), pytest.raises(InvalidKeyError):
        twin.validate_api_key(new.secret)
    assert new.id in caplog.text and new.secret not in caplog.text
    # Listed and fetched (without limits shown), so it can be found and fixed.
    assert twin.get_api_key(new.id).metadata == {"tier": 2}
    assert [key.id for key in twin.list_api_keys(user_id).items] == [new.id]
    # Keeping an unreadable part is refused; rotating would carry it: refused too.
    with pytest.raises(InvalidInputError):
        twin.update_api_key_limits(new.id, rate_limit="5/1s")
    with pytest.raises(InvalidInputError):
        twin.rotate_api_key(new.id)
    fixed = twin.update_api_key_limits(new.id, rate_limit="5/1s", quota=None)
    assert (fixed.rate_limit, fixed.quota) == (RateLimit(limit=5, window=1), None)
    verified = twin.validate_api_key(new.secret)
    assert verified.rate_limit == RateLimit(limit=5, window=1) and verified.meter_id == new.id


def test_an_unreadable_meter_is_not_replaced_by_a_fresh_one(
    twin: Twin, fake: FakeClerk, user_id: str
) -> None:
    new = twin.create_api_key(user_id, "rotated", quota="10")
    rotated = twin.rotate_api_key(new.id)
    claims = _stored_claims(fake, rotated.id)
    _edit_claims(fake, rotated.id, {"apikeys": {**claims["apikeys"], "meter": ""}})
    with pytest.raises(InvalidKeyError):
        twin.validate_api_key(rotated.secret)
    assert twin.get_api_key(rotated.id).quota is None  # shown without limits meanwhile
    assert (
        Quota.parse("10")
        == twin.update_api_key_limits(rotated.id, rate_limit=None, quota="10").quota
    )
