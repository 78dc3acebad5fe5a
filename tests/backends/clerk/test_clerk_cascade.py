"""Revoking a Clerk key revokes the keys it created; a cascade that cannot finish
says so (``RevocationIncompleteError``, naming the keys still active), never a
silent partial success, and a retry finishes it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from apikeys import KeyLimitReachedError, RevocationIncompleteError
from apikeys.backends.clerk import ClerkKeyManager
from apikeys.testing import FakeClerk
from tests.backends.clerk.twins import Twin

pytestmark = pytest.mark.clerk


def test_a_child_that_cannot_be_revoked_is_named(fake: FakeClerk, user_id: str) -> None:
    refused: set[str] = set()

    def failing_revokes(request: httpx.Request) -> httpx.Response:
        parts = request.url.path.split("/")
        if request.method == "POST" and parts[-1] == "revoke" and parts[-2] in refused:
            return httpx.Response(503, json={"errors": [{"message": "down", "code": "x"}]})
        return fake.transport.handle_request(request)

    with httpx.Client(transport=httpx.MockTransport(failing_revokes)) as client:
        manager = ClerkKeyManager(
            fake.secret_key, api_url=fake.api_url, http_client=client, max_retries=0
        )
        parent = manager.create_api_key(user_id, "parent")
        stuck = manager.create_api_key(user_id, "stuck child", created_by=parent.id)
        fine = manager.create_api_key(user_id, "fine child", created_by=parent.id)
        refused.add(stuck.id)
        with pytest.raises(RevocationIncompleteError) as caught:
            manager.revoke_api_key(parent.id, reason="leaked")
        error = caught.value
        assert (error.status_code, error.code) == (503, "revocation_incomplete")
        assert error.still_active == (stuck.id,)
        assert stuck.id in error.message and parent.id in error.message
        assert manager.get_api_key(parent.id).revoked
        assert manager.get_api_key(fine.id).revoked
        assert manager.get_api_key(stuck.id).active
        refused.clear()
        manager.revoke_api_key(parent.id)  # a retry finishes the cascade
        assert manager.get_api_key(stuck.id).revocation_reason == f"creator {parent.id} revoked"


def test_a_list_that_fails_leaves_the_revocation_incomplete(
    twin: Twin, fake: FakeClerk, user_id: str
) -> None:
    parent = twin.create_api_key(user_id, "parent")
    child = twin.create_api_key(user_id, "child", created_by=parent.id)
    fake.fail_next(503, route="GET /api_keys", times=3)
    with pytest.raises(RevocationIncompleteError) as caught:
        twin.revoke_api_key(parent.id)
    assert caught.value.still_active == ()
    assert "could not be listed" in caught.value.message
    assert twin.get_api_key(parent.id).revoked and twin.get_api_key(child.id).active
    twin.revoke_api_key(parent.id)
    assert twin.get_api_key(child.id).revoked


def test_a_child_created_while_its_creator_is_revoked_is_ended(
    twin: Twin, fake: FakeClerk, user_id: str
) -> None:
    parent = twin.create_api_key(user_id, "parent")
    before = len(fake.requests)

    # The creator is revoked between the check before the create and the one after.
    def revoke_parent_once(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path.endswith("/api_keys"):
            fake._keys[parent.id].revoked = True

    original = fake._dispatch

    def dispatch(request: httpx.Request, route: str) -> tuple[int, Any]:
        answer = original(request, route)
        revoke_parent_once(request)
        return answer

    fake._dispatch = dispatch  # type: ignore[method-assign]
    with pytest.raises(Exception, match="created_by") as caught:
        twin.create_api_key(user_id, "racing child", created_by=parent.id)
    assert caught.value.status_code == 422  # type: ignore[attr-defined]
    created = [r for r in fake.requests[before:] if r.method == "POST" and r.route == "/api_keys"]
    assert len(created) == 1
    (orphan,) = [
        k
        for k in twin.list_api_keys(user_id, include_invalid=True).items
        if k.name == "racing child"
    ]
    assert orphan.revoked
    assert orphan.revocation_reason == f"creator {parent.id} revoked"


def test_rotating_an_expired_key_counts_against_the_limit() -> None:
    """An expired key frees its place; its replacement takes a new one, like a new key."""
    fake = FakeClerk()
    owner = fake.new_user_id()
    with fake.key_manager(max_active_keys_per_owner=2) as manager:
        expiring = manager.create_api_key(owner, "expiring", expiration=timedelta(days=1))
        manager.create_api_key(owner, "kept")
        fake.advance(2 * 86400)  # Clerk's clock: it has expired
        manager.create_api_key(owner, "in its place")
        with pytest.raises(KeyLimitReachedError):
            manager.rotate_api_key(expiring.id, expiration=timedelta(days=365))
        assert {key.name for key in manager.list_api_keys(owner).items} == {
            "kept",
            "in its place",
        }
