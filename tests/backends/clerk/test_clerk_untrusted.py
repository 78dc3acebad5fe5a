"""Untrusted input, from callers and from the network, never crashes the Clerk backend.

Hypothesis feeds presented secrets, Clerk answers and headers of every shape;
the only outcomes allowed are the documented ones.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apikeys import (
    BackendUnavailableError,
    ExpiredKeyError,
    InvalidKeyError,
    RevokedKeyError,
    VerifiedKey,
)
from apikeys.backends._clerk import (
    ClerkKeyObject,
    error_details,
    is_clerk_secret,
    parse_key_object,
    parse_retry_after,
)
from apikeys.backends.clerk import ClerkKeyManager
from apikeys.testing import FakeClerk

pytestmark = pytest.mark.clerk

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)
# Objects close to a real key object, with any field changed, dropped or added.
key_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.just("ak_" + "a" * 32) | json_scalars,
        "subject": st.just("user_" + "b" * 27) | json_scalars,
        "name": st.just("a name") | json_scalars,
        "scopes": st.lists(st.text(max_size=8), max_size=3) | json_values,
        "claims": json_values,
        "revoked": st.booleans() | json_scalars,
        "expired": st.booleans() | json_scalars,
        "expiration": st.none() | st.floats(-1e20, 1e20) | st.integers(-(2**64), 2**64),
        "created_at": st.floats(-1e20, 1e20) | st.integers(0, 2**64) | json_scalars,
        "last_used_at": st.none() | st.floats(-1e20, 1e20) | json_scalars,
        "updated_at": st.none() | st.integers(0, 2**50) | json_scalars,
        "revocation_reason": st.none() | json_scalars,
        "extra": json_values,
    },
)


@settings(max_examples=100, deadline=None)
@given(payload=json_values | key_like)
def test_key_objects_parse_or_are_malformed(payload: Any) -> None:
    outcome: object
    try:
        outcome = parse_key_object(payload, "get")
    except BackendUnavailableError as error:
        outcome = error.message
    if isinstance(outcome, str):
        assert outcome.startswith("Clerk sent a malformed answer to get")
    else:
        assert isinstance(outcome, ClerkKeyObject) and isinstance(outcome.revoked, bool)


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_error_details_never_fail(body: bytes) -> None:
    details = error_details(httpx.Response(502, content=body))
    assert details.startswith("HTTP 502") and len(details) < 600


@given(header=st.none() | st.text(max_size=40))
def test_retry_after_is_bounded_or_absent(header: str | None) -> None:
    seconds = parse_retry_after(header)
    assert seconds is None or 0.0 <= seconds <= 86_400.0


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    presented=st.text(max_size=80) | st.from_regex(r"ak_[A-Za-z0-9+/=_-]{10,60}", fullmatch=True)
)
def test_presented_secrets_are_refused_and_only_plausible_ones_cost_a_call(
    presented: str,
) -> None:
    fake = FakeClerk()
    with fake.key_manager(cache_ttl=0) as manager, pytest.raises(InvalidKeyError) as caught:
        manager.validate_api_key(presented)
    assert type(caught.value) is InvalidKeyError
    assert fake.count() == (1 if is_clerk_secret(presented) else 0)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=key_like | json_values, status=st.sampled_from([200, 201, 206]))
def test_any_verify_answer_ends_in_a_documented_outcome(payload: Any, status: int) -> None:
    def clerk(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=payload)

    transport = httpx.MockTransport(clerk)
    with httpx.Client(transport=transport) as client:
        manager = ClerkKeyManager("sk_test_x", http_client=client, cache_ttl=0)
        try:
            verified = manager.validate_api_key("ak_" + "A" * 40)
        except (BackendUnavailableError, RevokedKeyError, ExpiredKeyError):
            return
    assert isinstance(verified, VerifiedKey)
    assert payload["revoked"] is False and payload["expired"] is False


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    payload=st.fixed_dictionaries(
        {},
        optional={
            "data": st.lists(key_like, max_size=3) | json_values,
            "total_count": json_scalars,
        },
    )
    | json_values,
    raw=st.sampled_from([b"", b"Infinity", b"NaN", b"-Infinity"]),
)
def test_any_list_answer_ends_in_a_page_or_backend_unavailable(payload: Any, raw: bytes) -> None:
    body = json.dumps(payload).encode()
    if raw and isinstance(payload, dict) and "total_count" in payload:
        body = json.dumps({**payload, "total_count": 0}).encode().replace(b"0}", raw + b"}", 1)

    def clerk(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})

    with httpx.Client(transport=httpx.MockTransport(clerk)) as client:
        manager = ClerkKeyManager("sk_test_x", http_client=client)
        try:
            page = manager.list_api_keys("user_" + "c" * 27)
        except BackendUnavailableError:
            return
    assert page.total >= 0 and all(key.id for key in page.items)
