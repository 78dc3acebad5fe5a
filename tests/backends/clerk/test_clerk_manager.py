"""Clerk-specific behaviour of both managers over the fake: mapping, configuration, economy."""

from __future__ import annotations

import asyncio
import inspect
import logging
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

import apikeys
from apikeys import (
    BackendUnavailableError,
    ConfigurationError,
    ExpiredKeyError,
    InvalidInputError,
    InvalidKeyError,
    KeyNotFoundError,
    RevokedKeyError,
    VerificationCache,
)
from apikeys.backends.clerk import AsyncClerkKeyManager, ClerkKeyManager
from apikeys.testing import FAKE_SECRET_KEY, FakeClerk
from tests.backends.clerk.twins import Twin
from tests.eventually import eventually_async

pytestmark = pytest.mark.clerk

VERIFY = ("POST", "/api_keys/verify")


def _ms(value: datetime) -> int:
    return round(value.timestamp() * 1000)


# --- configuration -----------------------------------------------------------------


def test_factory_builds_both_twins_from_clerk_url() -> None:
    sync = apikeys.create_key_manager("clerk://", clerk_secret_key="sk_test_abc")
    asynchronous = apikeys.create_async_key_manager("clerk://", clerk_secret_key="sk_test_abc")
    try:
        assert type(sync) is ClerkKeyManager
        assert type(asynchronous) is AsyncClerkKeyManager
        assert sync.api_url == "https://api.clerk.com/v1"
        assert "sk_test_abc" not in repr(sync) and "sk_test_abc" not in repr(vars(sync))
    finally:
        sync.close()
        asyncio.run(asynchronous.close())


def test_clerk_is_the_default_when_the_secret_key_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APIKEYS_BACKEND", raising=False)
    monkeypatch.setenv("CLERK_SECRET_KEY", "sk_live_from_env")
    monkeypatch.setenv("CLERK_API_URL", "http://127.0.0.1:9/v1")
    manager = apikeys.create_key_manager()
    try:
        assert isinstance(manager, ClerkKeyManager)
        assert manager.api_url == "http://127.0.0.1:9/v1"
    finally:
        manager.close()


def test_apikeys_backend_can_name_clerk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIKEYS_BACKEND", "clerk://")
    monkeypatch.setenv("CLERK_SECRET_KEY", "sk_test_from_env")
    monkeypatch.setenv("CLERK_API_VERSION", "2025-11-10")
    monkeypatch.setenv("APIKEYS_CACHE_TTL", "3")
    manager = apikeys.create_async_key_manager()
    assert isinstance(manager, AsyncClerkKeyManager)
    assert (manager.api_version, manager.cache.ttl) == ("2025-11-10", 3.0)
    asyncio.run(manager.close())


def test_missing_secret_key_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APIKEYS_BACKEND", raising=False)
    monkeypatch.delenv("CLERK_SECRET_KEY", raising=False)
    with pytest.raises(ConfigurationError) as caught:
        apikeys.create_key_manager()
    assert "CLERK_SECRET_KEY" in caught.value.message
    assert "APIKEYS_BACKEND=sqlite:///apikeys.db" in caught.value.message
    with pytest.raises(ConfigurationError, match="CLERK_SECRET_KEY"):
        ClerkKeyManager("")


@pytest.mark.parametrize(
    "url", ["clerk://sk_live_x@api.clerk.com", "clerk://api.clerk.com/v1", "clerk://?key=sk_live_x"]
)
def test_clerk_url_carries_nothing(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        apikeys.create_key_manager(url, clerk_secret_key="sk_test_abc")
    assert "CLERK_SECRET_KEY" in caught.value.message
    assert "sk_live_x" not in caught.value.message


@pytest.mark.parametrize(
    "secret_key", ["pk_test_abc", "sk_test with space", "sk_\n", "sk_live_é1", "sk_"]
)
def test_secret_key_must_look_like_one(secret_key: str) -> None:
    with pytest.raises(ConfigurationError, match="sk_live_") as caught:
        ClerkKeyManager(secret_key)
    assert secret_key == "sk_" or secret_key not in caught.value.message


@pytest.mark.parametrize(
    ("api_url", "accepted"),
    [
        ("https://api.clerk.com/v1", True),
        ("http://127.0.0.1:4010", True),
        ("http://localhost:4010/v1/", True),
        ("http://api.clerk.com/v1", False),
        ("https://user:pw@api.clerk.com/v1", False),
        ("https://api.clerk.com/v1?x=1", False),
        ("ftp://api.clerk.com", False),
        ("api.clerk.com", False),
    ],
)
def test_api_url_must_be_https_or_loopback(api_url: str, accepted: bool) -> None:
    if accepted:
        manager = ClerkKeyManager("sk_test_abc", api_url=api_url)
        assert manager.api_url == api_url.rstrip("/")
        manager.close()
    else:
        with pytest.raises(ConfigurationError, match="CLERK_API_URL"):
            ClerkKeyManager("sk_test_abc", api_url=api_url)


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": 0},
        {"max_retries": -1},
        {"retry_backoff": -1.0},
        {"cache_ttl": -1},
        {"api_version": "2025-11-10\r\nX-Injected: 1"},
        {"suspicious_window": 0},
    ],
)
def test_bad_numbers_are_configuration_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        ClerkKeyManager("sk_test_abc", **options)


def test_every_request_carries_auth_version_and_timeout(fake: FakeClerk, user_id: str) -> None:
    seen: list[httpx.Request] = []

    def spy(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return fake.transport.handle_request(request)

    client = httpx.Client(transport=httpx.MockTransport(spy))
    manager = ClerkKeyManager(
        FAKE_SECRET_KEY, http_client=client, api_version="2025-11-10", timeout=1.5, cache_ttl=0
    )
    new = manager.create_api_key(user_id, "headers")
    manager.validate_api_key(new.secret)
    manager.list_api_keys(user_id)
    manager.close()
    assert not client.is_closed  # an injected client stays the caller's
    assert len(seen) == 4  # the list counting active keys, create, verify, list
    for request in seen:
        assert request.headers["Authorization"] == f"Bearer {FAKE_SECRET_KEY}"
        assert request.headers["Clerk-API-Version"] == "2025-11-10"
        assert request.headers["User-Agent"].startswith("apikeys/")
        assert request.extensions["timeout"] == httpx.Timeout(1.5).as_dict()
        assert FAKE_SECRET_KEY not in str(request.url)
    client.close()


def test_a_clock_without_a_timezone_is_refused() -> None:
    naive = lambda: datetime(2031, 5, 1)  # noqa: E731
    with pytest.raises(ConfigurationError, match="clock"):
        ClerkKeyManager("sk_test_abc", clock=naive)
    with pytest.raises(ConfigurationError, match="clock"):
        FakeClerk(clock=naive)


def test_the_fakes_managers_keep_its_clock(flavour: str) -> None:
    now = [datetime(2031, 5, 1, 12, tzinfo=UTC)]  # a year the real clock has not reached
    fake = FakeClerk(clock=lambda: now[0])
    loop = asyncio.new_event_loop() if flavour == "async" else None
    twin = Twin(
        fake.key_manager(cache_ttl=60) if loop is None else fake.async_key_manager(cache_ttl=60),
        loop,
    )
    try:
        new = twin.create_api_key(fake.new_user_id(), "clocked", expiration=timedelta(hours=1))
        assert (new.created_at, new.expires_at) == (now[0], now[0] + timedelta(hours=1))
        assert twin.validate_api_key(new.secret).id == new.id  # cached
        now[0] += timedelta(hours=1)
        with pytest.raises(ExpiredKeyError):
            twin.validate_api_key(new.secret)
    finally:
        twin.close()
        if loop is not None:
            loop.close()


# --- mapping -----------------------------------------------------------------------


def test_create_sends_exactly_the_mapped_fields(twin: Twin, fake: FakeClerk, user_id: str) -> None:
    before = datetime.now(UTC)
    new = twin.create_api_key(
        user_id, "mapped", "read:data write:data", timedelta(hours=2), metadata={"plan": "pro"}
    )
    body = fake.requests[-1].body
    assert set(body) == {"name", "subject", "scopes", "claims", "seconds_until_expiration"}
    assert body["name"] == "mapped" and body["subject"] == user_id
    assert body["scopes"] == ["read:data", "write:data"] and body["claims"] == {"plan": "pro"}
    assert 7195 < body["seconds_until_expiration"] <= 7200
    stored = fake.key(new.id)
    assert stored is not None
    assert new.created_at == datetime.fromtimestamp(stored["created_at"] / 1000, UTC)
    assert new.created_at >= before.replace(microsecond=before.microsecond // 1000 * 1000)
    assert new.hint == "ak_…" + new.secret[-4:]
    assert new.secret.startswith("ak_")
    assert twin.get_api_key(new.id).hint == ""


def test_create_omits_empty_claims_and_expiration(
    twin: Twin, fake: FakeClerk, user_id: str
) -> None:
    new = twin.create_api_key(user_id, "plain")
    assert fake.requests[-1].body == {"name": "plain", "subject": user_id, "scopes": []}
    assert new.expires_at is None and new.metadata == {}


def test_revocation_maps_updated_at_and_reason(twin: Twin, fake: FakeClerk, user_id: str) -> None:
    new = twin.create_api_key(user_id, "revoke me")
    fake.advance(5)
    revoked = twin.revoke_api_key(new.id, reason="leaked")
    stored = fake.key(new.id)
    assert stored is not None
    assert revoked.revoked_at == datetime.fromtimestamp(stored["updated_at"] / 1000, UTC)
    assert revoked.revoked_at is not None
    assert revoked.revoked_at - new.created_at >= timedelta(seconds=5)
    assert revoked.revocation_reason == "leaked"
    revokes = [r for r in fake.requests if r.route == "/api_keys/{id}/revoke"]
    assert revokes[-1].body == {"revocation_reason": "leaked"}
    twin.revoke_api_key(new.id)
    revokes = [r for r in fake.requests if r.route == "/api_keys/{id}/revoke"]
    assert revokes[-1].body == {"revocation_reason": None}


def test_non_object_claims_are_kept_whole(twin: Twin, fake: FakeClerk, user_id: str) -> None:
    new = twin.create_api_key(user_id, "claims")
    with fake.client() as client:
        answer = client.patch(
            f"{fake.api_url}/api_keys/{new.id}",
            json={"claims": ["a", "b"]},
            headers={"Authorization": f"Bearer {fake.secret_key}"},
        )
    assert answer.status_code == 200
    assert twin.get_api_key(new.id).metadata == {"claims": ["a", "b"]}


@pytest.mark.parametrize("bad", ["user_123", "123", "usr_" + "a" * 27, "user_" + "a" * 28])
def test_non_clerk_owners_are_refused_without_a_call(twin: Twin, fake: FakeClerk, bad: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        twin.create_api_key(bad, "fine name")
    assert caught.value.field == "user_id" and "user_" in caught.value.message
    with pytest.raises(InvalidInputError):
        twin.list_api_keys(bad)
    assert fake.count() == 0


@pytest.mark.parametrize("name", ["ab", " x "])
def test_short_names_are_refused_without_a_call(
    twin: Twin, fake: FakeClerk, user_id: str, name: str
) -> None:
    with pytest.raises(InvalidInputError, match="at least 3") as caught:
        twin.create_api_key(user_id, name)
    assert caught.value.field == "name"
    assert fake.count() == 0


@pytest.mark.parametrize("operation", ["get", "revoke", "delete", "rotate"])
def test_ids_clerk_cannot_have_are_not_found_without_a_call(
    twin: Twin, fake: FakeClerk, operation: str
) -> None:
    with pytest.raises(KeyNotFoundError) as caught:
        getattr(twin, f"{operation}_api_key")("apk_123456789012")
    assert caught.value.key_id == "apk_123456789012"
    assert fake.count() == 0


@pytest.mark.parametrize(
    "presented",
    ["apk_1" + "A" * 51, "ak_short", "ak_" + "A" * 20 + "!", "AK_" + "A" * 40, "ak_" + "A" * 600],
)
def test_secrets_of_the_wrong_shape_cost_no_call(
    twin: Twin, fake: FakeClerk, presented: str
) -> None:
    with pytest.raises(InvalidKeyError):
        twin.validate_api_key(presented)
    assert fake.count() == 0


def test_unknown_owner_lists_empty(twin: Twin, fake: FakeClerk, user_id: str) -> None:
    fake.fail_next(404, route="GET /api_keys")
    page = twin.list_api_keys(user_id, limit=7, offset=3)
    assert (page.items, page.total, page.limit, page.offset) == ((), 0, 7, 3)
    assert fake.requests[-1].params == {
        "subject": user_id,
        "include_invalid": "false",
        "limit": "7",
        "offset": "3",
    }


def test_revoke_is_idempotent_even_if_clerk_refuses_a_second_revoke(
    twin: Twin, fake: FakeClerk, user_id: str
) -> None:
    new = twin.create_api_key(user_id, "twice")
    first = twin.revoke_api_key(new.id, reason="first")
    fake.fail_next(400, route="POST /api_keys/{id}/revoke")
    again = twin.revoke_api_key(new.id, reason="second")
    assert (again.revoked_at, again.revocation_reason) == (first.revoked_at, "first")
    # It looks the key up, then lists the owner's keys to finish any cascade.
    assert [(r.method, r.route) for r in fake.requests[-2:]] == [
        ("GET", "/api_keys/{id}"),
        ("GET", "/api_keys"),
    ]


def test_a_refused_revoke_of_a_live_key_is_an_error(
    twin: Twin, fake: FakeClerk, user_id: str
) -> None:
    new = twin.create_api_key(user_id, "live")
    fake.fail_next(400, route="POST /api_keys/{id}/revoke")
    with pytest.raises(InvalidInputError, match="HTTP 400"):
        twin.revoke_api_key(new.id)
    assert twin.get_api_key(new.id).revoked is False


# --- rotation ----------------------------------------------------------------------


def test_rotate_now_revokes_with_reason_rotated(twin: Twin, fake: FakeClerk, user_id: str) -> None:
    old = twin.create_api_key(user_id, "rotate now", ["read:data"])
    new = twin.rotate_api_key(old.id)
    assert [(r.method, r.route) for r in fake.requests[-4:]] == [
        ("GET", "/api_keys/{id}"),
        ("POST", "/api_keys"),
        ("GET", "/api_keys"),  # the keys the old one created, handed over
        ("POST", "/api_keys/{id}/revoke"),
    ]
    old_now = twin.get_api_key(old.id)
    assert old_now.revoked and old_now.revocation_reason == "rotated"
    assert new.hint == "ak_…" + new.secret[-4:]


def test_rotate_with_grace_shortens_the_old_keys_life(
    twin: Twin, fake: FakeClerk, user_id: str
) -> None:
    old = twin.create_api_key(user_id, "graceful")
    twin.rotate_api_key(old.id, grace=600)
    patch = fake.requests[-1]
    assert (patch.method, patch.route) == ("PATCH", "/api_keys/{id}")
    assert set(patch.body) == {"seconds_until_expiration"}
    assert 595 < patch.body["seconds_until_expiration"] <= 600
    stored = fake.key(old.id)
    assert stored is not None and not stored["expired"]
    fake.advance(601)
    stored = fake.key(old.id)
    assert stored is not None and stored["expired"]


def test_rotate_keeps_description_claims_and_creator(
    twin: Twin, fake: FakeClerk, user_id: str
) -> None:
    creator = fake.new_user_id()
    with fake.client() as client:
        made = client.post(
            f"{fake.api_url}/api_keys",
            json={
                "name": "from the dashboard",
                "subject": user_id,
                "description": "made elsewhere",
                "claims": {"tier": 2},
                "scopes": ["odd scope"],
                "created_by": creator,
            },
            headers={"Authorization": f"Bearer {fake.secret_key}"},
        ).json()
    new = twin.rotate_api_key(made["id"])
    stored = fake.key(new.id)
    assert stored is not None
    # The claims are kept, with the meter the replacement spends from: the old key's.
    assert (stored["description"], stored["claims"], stored["created_by"]) == (
        "made elsewhere",
        {"tier": 2, "apikeys": {"meter": made["id"]}},
        creator,
    )
    assert new.scopes == ("odd scope",) and new.metadata == {"tier": 2}


def test_failed_rotation_removes_the_replacement(twin: Twin, fake: FakeClerk, user_id: str) -> None:
    old = twin.create_api_key(user_id, "stays")
    fake.fail_next(503, route="POST /api_keys/{id}/revoke", times=10)
    with pytest.raises(BackendUnavailableError):
        twin.rotate_api_key(old.id)
    everything = twin.list_api_keys(user_id, include_invalid=True)
    assert [k.id for k in everything.items] == [old.id]
    assert not everything.items[0].revoked
    assert fake.count("DELETE", "/api_keys/{id}") == 1


def test_failed_undo_of_a_rotation_is_logged(
    twin: Twin, fake: FakeClerk, user_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    old = twin.create_api_key(user_id, "stuck")
    fake.fail_next(400, route="POST /api_keys/{id}/revoke")
    fake.fail_next(400, route="DELETE /api_keys/{id}")
    with caplog.at_level(logging.ERROR, logger="apikeys.clerk"), pytest.raises(InvalidInputError):
        twin.rotate_api_key(old.id)
    orphan = next(k for k in twin.list_api_keys(user_id).items if k.id != old.id)
    assert f"replacement {orphan.id} could not be deleted" in caplog.text


def test_rotate_refuses_an_expired_key_unless_given_an_expiration(
    twin: Twin, fake: FakeClerk, user_id: str
) -> None:
    old = twin.create_api_key(user_id, "expiring", expiration=timedelta(minutes=1))
    fake.advance(61)
    with pytest.raises(InvalidInputError) as caught:
        twin.rotate_api_key(old.id)
    assert caught.value.field == "expiration"
    new = twin.rotate_api_key(old.id, expiration="2099-12-31")
    # Clerk counts a lifetime from its own clock, which here runs 61 s ahead of ours.
    assert new.expires_at is not None
    skew = new.expires_at - datetime(2100, 1, 1, tzinfo=UTC)
    assert timedelta(seconds=60) <= skew <= timedelta(seconds=62)


# --- economy: cache and single flight ------------------------------------------------


def test_cache_saves_calls_and_local_revocation_clears_it(
    make_twin: Any, fake: FakeClerk, user_id: str
) -> None:
    twin = make_twin(cache_ttl=60)
    new = twin.create_api_key(user_id, "cached", ["read:data"])
    for _ in range(5):
        assert twin.validate_api_key(new.secret, required_scopes=["read:data"]).id == new.id
    assert fake.count(*VERIFY) == 1
    twin.revoke_api_key(new.id)
    with pytest.raises(RevokedKeyError):
        twin.validate_api_key(new.secret)
    assert fake.count(*VERIFY) == 2


def test_cache_entries_age_out_after_the_ttl(make_twin: Any, fake: FakeClerk, user_id: str) -> None:
    now = [0.0]
    twin = make_twin()
    twin.manager.cache = VerificationCache(ttl=10, clock=lambda: now[0])
    new = twin.create_api_key(user_id, "ttl")
    twin.validate_api_key(new.secret)
    now[0] = 9.9
    twin.validate_api_key(new.secret)
    assert fake.count(*VERIFY) == 1
    now[0] = 10.0
    twin.validate_api_key(new.secret)
    assert fake.count(*VERIFY) == 2


def test_refusals_and_failures_are_not_cached(
    make_twin: Any, fake: FakeClerk, user_id: str
) -> None:
    twin = make_twin(cache_ttl=60, max_retries=0)
    new = twin.create_api_key(user_id, "uncached")
    fake.fail_next(503, route="POST /api_keys/verify")
    with pytest.raises(BackendUnavailableError):
        twin.validate_api_key(new.secret)
    assert twin.validate_api_key(new.secret).id == new.id
    assert fake.count(*VERIFY) == 2


async def test_concurrent_async_validations_share_one_call(fake: FakeClerk, user_id: str) -> None:
    manager = fake.async_key_manager()
    new = await manager.create_api_key(user_id, "popular")
    other = await manager.create_api_key(user_id, "other")
    unknown = "ak_" + "Z" * 44
    fake.latency = 0.05
    results = await asyncio.gather(
        *(manager.validate_api_key(new.secret) for _ in range(25)),
        *(manager.validate_api_key(other.secret) for _ in range(25)),
        *(manager.validate_api_key(unknown) for _ in range(25)),
        return_exceptions=True,
    )
    assert [r.id for r in results[:25]] == [new.id] * 25  # type: ignore[union-attr]
    assert [r.id for r in results[25:50]] == [other.id] * 25  # type: ignore[union-attr]
    assert all(type(r) is InvalidKeyError for r in results[50:])
    assert fake.count(*VERIFY) == 3
    # Nothing is left in flight: the next validation of an uncached secret asks Clerk again.
    with pytest.raises(InvalidKeyError):
        await manager.validate_api_key(unknown)
    assert fake.count(*VERIFY) == 4
    await manager.close()


async def test_a_cancelled_waiter_does_not_cancel_the_others(fake: FakeClerk, user_id: str) -> None:
    manager = fake.async_key_manager(cache_ttl=0)
    new = await manager.create_api_key(user_id, "cancel")
    fake.latency = 0.1
    first = asyncio.ensure_future(manager.validate_api_key(new.secret))
    second = asyncio.ensure_future(manager.validate_api_key(new.secret))
    await eventually_async(lambda: fake.count(*VERIFY) == 1)  # the first is at Clerk
    first.cancel()
    assert (await second).id == new.id
    assert first.cancelled()
    assert fake.count(*VERIFY) == 1
    await manager.close()


@pytest.mark.parametrize("known", [True, False], ids=["valid key", "unknown key"])
def test_concurrent_threads_share_one_call(
    fake: FakeClerk, user_id: str, monkeypatch: pytest.MonkeyPatch, known: bool
) -> None:
    import apikeys.backends.clerk as clerk_module

    waiting = threading.Semaphore(0)

    class CountedEvent(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waiting.release()  # a follower is now parked on the leader's call
            return super().wait(timeout)

    class CountedPending(clerk_module._Pending):
        def __init__(self) -> None:
            super().__init__()
            self.done = CountedEvent()

    monkeypatch.setattr(clerk_module, "_Pending", CountedPending)
    release = threading.Event()

    def held(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/verify"):
            assert release.wait(10)
        return fake.transport.handle_request(request)

    with httpx.Client(transport=httpx.MockTransport(held)) as client:
        manager = ClerkKeyManager(
            fake.secret_key, api_url=fake.api_url, http_client=client, cache_ttl=0
        )
        secret = manager.create_api_key(user_id, "threads").secret if known else "ak_" + "Q" * 44
        outcomes: list[str] = []

        def work() -> None:
            try:
                outcomes.append(manager.validate_api_key(secret).user_id)
            except InvalidKeyError as exc:
                outcomes.append(type(exc).__name__)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for _ in range(7):  # the leader is held in the call; the other seven wait for it
            assert waiting.acquire(timeout=10)
        release.set()
        for thread in threads:
            thread.join(timeout=10)
    assert outcomes == [user_id if known else "InvalidKeyError"] * 8
    assert fake.count(*VERIFY) == 1


# --- telling the holder why ----------------------------------------------------------


def test_clerk_404_for_a_revoked_key_still_says_revoked(
    make_twin: Any, fake: FakeClerk, user_id: str
) -> None:
    issuer, checker = make_twin(), make_twin()
    new = issuer.create_api_key(user_id, "will be revoked")
    checker.validate_api_key(new.secret)
    issuer.revoke_api_key(new.id)
    with pytest.raises(RevokedKeyError) as caught:
        checker.validate_api_key(new.secret)
    assert caught.value.key_id == new.id


def test_a_key_known_revoked_is_refused_without_another_call(
    twin: Twin, fake: FakeClerk, user_id: str
) -> None:
    new = twin.create_api_key(user_id, "revoked for good")
    twin.validate_api_key(new.secret)
    twin.revoke_api_key(new.id)
    with pytest.raises(RevokedKeyError):
        twin.validate_api_key(new.secret)
    calls = fake.count()
    for _ in range(5):
        with pytest.raises(RevokedKeyError) as caught:
            twin.validate_api_key(new.secret)
        assert caught.value.key_id == new.id
    assert fake.count() == calls


def test_clerk_404_for_an_expired_key_still_says_expired(
    twin: Twin, fake: FakeClerk, user_id: str
) -> None:
    new = twin.create_api_key(user_id, "will expire", expiration=timedelta(minutes=5))
    twin.validate_api_key(new.secret)
    fake.advance(301)
    with pytest.raises(ExpiredKeyError):
        twin.validate_api_key(new.secret)


def test_never_verified_secrets_get_the_plain_refusal(
    twin: Twin, fake: FakeClerk, user_id: str
) -> None:
    new = twin.create_api_key(user_id, "never checked")
    twin.revoke_api_key(new.id)
    calls = fake.count()
    with pytest.raises(InvalidKeyError) as caught:
        twin.validate_api_key(new.secret)
    assert type(caught.value) is InvalidKeyError
    assert fake.count() == calls + 1  # no lookup: this process never saw it valid


def test_deleted_keys_get_the_plain_refusal(twin: Twin, fake: FakeClerk, user_id: str) -> None:
    new = twin.create_api_key(user_id, "deleted")
    twin.validate_api_key(new.secret)
    twin.delete_api_key(new.id)
    with pytest.raises(InvalidKeyError) as caught:
        twin.validate_api_key(new.secret)
    assert type(caught.value) is InvalidKeyError


# --- secrets stay secret -------------------------------------------------------------


def test_secrets_never_reach_logs_or_errors(
    make_twin: Any, fake: FakeClerk, user_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    twin = make_twin(max_retries=1)
    with caplog.at_level(logging.DEBUG):
        new = twin.create_api_key(user_id, "quiet")
        fake.fail_next(503, times=2)
        with pytest.raises(BackendUnavailableError) as unavailable:
            twin.validate_api_key(new.secret)
        quoting = (
            b'{"errors": [{"message": "bad", "long_message": "secret '
            + new.secret.encode()
            + b' is bad", "code": "x"}]}'
        )
        for status in (400, 422, 503):
            fake.fail_next(status, route="POST /api_keys/verify", body=quoting, times=3)
            with pytest.raises((InvalidKeyError, BackendUnavailableError)) as refused:
                twin.validate_api_key(new.secret)
            assert new.secret not in refused.value.message
        fake.fail_next(
            200,
            route="POST /api_keys",
            body=b'{"id": 1, "secret": "' + new.secret.encode() + b'"}',
        )
        with pytest.raises(BackendUnavailableError) as malformed:
            twin.create_api_key(user_id, "malformed")
    for text in (caplog.text, repr(unavailable.value), repr(malformed.value), repr(twin.manager)):
        assert new.secret not in text
        assert FAKE_SECRET_KEY not in text
    assert malformed.value.__cause__ is None and malformed.value.__context__ is not None
    assert new.secret not in str(malformed.value.__context__)


# --- monitoring events ----------------------------------------------------------------


@pytest.fixture
def events() -> Any:
    seen: list[apikeys.KeyEvent] = []
    listener = apikeys.add_event_listener(seen.append)
    yield seen
    apikeys.remove_event_listener(listener)


def test_every_lifecycle_step_is_reported(
    make_twin: Any, fake: FakeClerk, user_id: str, events: list[apikeys.KeyEvent]
) -> None:
    twin = make_twin(cache_ttl=60)
    new = twin.create_api_key(user_id, "watched", ["read:data"])
    twin.validate_api_key(new.secret)
    twin.validate_api_key(new.secret)  # from the cache: reported all the same
    with pytest.raises(apikeys.InsufficientScopeError):
        twin.validate_api_key(new.secret, required_scopes=["admin"])
    with pytest.raises(InvalidKeyError):
        twin.validate_api_key("garbage")
    rotated = twin.rotate_api_key(new.id)
    twin.revoke_api_key(rotated.id)
    with pytest.raises(RevokedKeyError):
        twin.validate_api_key(new.secret)
    twin.delete_api_key(rotated.id)
    fake.fail_next(503, times=3)
    with pytest.raises(BackendUnavailableError):
        twin.validate_api_key(rotated.secret)
    summary = [(e.kind, e.key_id, e.user_id, e.reason, e.new_key_id) for e in events]
    assert summary == [
        ("created", new.id, user_id, None, None),
        ("validated", new.id, user_id, None, None),
        ("validated", new.id, user_id, None, None),
        ("rejected", new.id, user_id, "insufficient_scope", None),
        ("rejected", None, None, "invalid", None),
        ("rotated", new.id, user_id, None, rotated.id),
        ("revoked", rotated.id, user_id, None, None),
        ("rejected", new.id, None, "revoked", None),
        ("retired_key_used", new.id, None, "revoked", None),
        ("deleted", rotated.id, None, None, None),
        ("rejected", None, None, "unavailable", None),
    ]
    assert {e.source for e in events} == {"clerk"}
    assert all(new.secret not in e.describe() for e in events)


def test_repeated_use_of_a_revoked_key_is_reported_as_retired_not_suspicious(
    make_twin: Any, fake: FakeClerk, user_id: str, events: list[apikeys.KeyEvent]
) -> None:
    twin = make_twin(suspicious_failures=3, suspicious_window=60)
    new = twin.create_api_key(user_id, "leaked")
    twin.validate_api_key(new.secret)
    twin.revoke_api_key(new.id)
    for _ in range(6):  # a client still holding its old key, with the right secret
        with pytest.raises(RevokedKeyError):
            twin.validate_api_key(new.secret)
    assert [e for e in events if e.kind == "suspicious"] == []
    retired = [(e.kind, e.key_id, e.reason) for e in events if e.kind == "retired_key_used"]
    assert retired == [("retired_key_used", new.id, "revoked")]  # once per window


# --- the twins and the import guard ----------------------------------------------------


def test_the_twins_have_the_same_public_methods() -> None:
    def public(cls: type) -> dict[str, list[str]]:
        return {
            name: list(inspect.signature(getattr(cls, name)).parameters)
            for name in dir(cls)
            if not name.startswith("_") and callable(getattr(cls, name))
        }

    assert public(ClerkKeyManager) == public(AsyncClerkKeyManager)
    for name in public(AsyncClerkKeyManager):
        if name != "from_settings":
            assert inspect.iscoroutinefunction(getattr(AsyncClerkKeyManager, name)), name


@pytest.mark.parametrize(
    "statement",
    [
        "import apikeys.backends.clerk",
        "import apikeys.testing",
        "apikeys.create_key_manager('clerk://', clerk_secret_key='sk_test_x')",
    ],
)
def test_without_httpx_the_error_names_the_extra(statement: str) -> None:
    code = (
        "import sys\nsys.modules['httpx'] = None\nimport apikeys\n"
        f"try:\n    {statement}\nexcept apikeys.MissingDependencyError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "httpx is required for this feature: pip install 'apikeys[clerk]'"
    )
