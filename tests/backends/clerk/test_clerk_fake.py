"""The fake Clerk shipped in :mod:`apikeys.testing` behaves as the spec and Clerk do."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_schema_validator import OAS30Validator

from apikeys.testing import FakeClerk, Fault
from tests.backends.clerk.openapi import load_spec

pytestmark = pytest.mark.clerk

VALID_SUBJECT = "user_" + "a" * 27


def _call(fake: FakeClerk, method: str, path: str, **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("headers", {"Authorization": f"Bearer {fake.secret_key}"})
    with fake.client() as client:
        return client.request(method, fake.api_url + path, **kwargs)


def _create(fake: FakeClerk, **body: Any) -> httpx.Response:
    return _call(
        fake, "POST", "/api_keys", json={"name": "a key", "subject": VALID_SUBJECT, **body}
    )


def _error_code(response: httpx.Response) -> str:
    payload = response.json()
    assert set(payload) == {"errors", "clerk_trace_id"}
    assert set(payload["errors"][0]) == {"message", "long_message", "code"}
    code: str = payload["errors"][0]["code"]
    return code


def test_create_answers_201_with_the_secret_once(fake: FakeClerk) -> None:
    before = int(time.time() * 1000)
    answer = _create(fake, scopes=["read"], claims={"a": 1}, seconds_until_expiration=60)
    assert answer.status_code == 201
    key = answer.json()
    assert key["secret"].startswith("ak_") and len(key["secret"]) == 47
    assert before <= key["created_at"] <= int(time.time() * 1000)  # Unix milliseconds
    assert key["expiration"] == key["created_at"] + 60_000
    assert (key["revoked"], key["expired"], key["last_used_at"]) == (False, False, None)
    fetched = _call(fake, "GET", f"/api_keys/{key['id']}").json()
    assert "secret" not in fetched
    assert fetched == {k: v for k, v in key.items() if k != "secret"}
    assert FakeClerk(create_status=200).key_manager().create_api_key(VALID_SUBJECT, "two hundred")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": "ab"}, "form_param_format_invalid"),
        ({"name": " padded"}, "form_param_format_invalid"),
        ({"subject": "user_123"}, "form_param_format_invalid"),
        ({"subject": None}, "form_param_format_invalid"),
        ({"scopes": "read"}, "form_param_format_invalid"),
        ({"scopes": [1]}, "form_param_format_invalid"),
        ({"description": "x" * 256}, "form_param_format_invalid"),
        ({"created_by": "org_" + "a" * 27}, "form_param_format_invalid"),
        ({"seconds_until_expiration": 0}, "form_param_format_invalid"),
        ({"seconds_until_expiration": True}, "form_param_format_invalid"),
        ({"seconds_until_expiration": "60"}, "form_param_format_invalid"),
        ({"type": "ab"}, "form_param_format_invalid"),
        ({"user_id": VALID_SUBJECT}, "form_param_unknown"),
        ({"expiration": 1}, "form_param_unknown"),
    ],
)
def test_create_enforces_the_spec(fake: FakeClerk, body: dict[str, Any], code: str) -> None:
    answer = _create(fake, **body)
    assert answer.status_code == 400
    assert _error_code(answer) == code
    assert fake._keys == {}


@pytest.mark.parametrize("missing", ["name", "subject"])
def test_create_requires_name_and_subject(fake: FakeClerk, missing: str) -> None:
    body = {"name": "a key", "subject": VALID_SUBJECT}
    del body[missing]
    answer = _call(fake, "POST", "/api_keys", json=body)
    assert (answer.status_code, _error_code(answer)) == (400, "form_param_missing")


@pytest.mark.parametrize("content", [b"", b"[]", b"{nope", b'"text"'])
def test_bodies_must_be_json_objects(fake: FakeClerk, content: bytes) -> None:
    answer = _call(
        fake,
        "POST",
        "/api_keys/verify",
        content=content,
        headers={"Authorization": f"Bearer {fake.secret_key}", "Content-Type": "application/json"},
    )
    assert (answer.status_code, _error_code(answer)) == (400, "request_body_invalid")


@pytest.mark.parametrize("authorization", [None, "Bearer sk_test_other", "sk_test_x"])
def test_requests_need_the_instance_key(fake: FakeClerk, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = _call(fake, "GET", "/api_keys", params={"subject": VALID_SUBJECT}, headers=headers)
    assert (answer.status_code, _error_code(answer)) == (401, "authentication_invalid")


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"subject": "nobody"},
        {"subject": VALID_SUBJECT, "limit": "0"},
        {"subject": VALID_SUBJECT, "limit": "101"},
        {"subject": VALID_SUBJECT, "limit": "ten"},
        {"subject": VALID_SUBJECT, "offset": "-1"},
        {"subject": VALID_SUBJECT, "include_invalid": "yes"},
    ],
)
def test_list_enforces_its_parameters(fake: FakeClerk, params: dict[str, str]) -> None:
    answer = _call(fake, "GET", "/api_keys", params=params)
    assert answer.status_code == 400


def test_list_is_newest_first_and_counts_everything(fake: FakeClerk) -> None:
    ids = [_create(fake, name=f"key {i}").json()["id"] for i in range(4)]
    page = _call(fake, "GET", "/api_keys", params={"subject": VALID_SUBJECT, "limit": "2"})
    assert page.json()["total_count"] == 4
    assert [k["id"] for k in page.json()["data"]] == ids[::-1][:2]
    default = _call(fake, "GET", "/api_keys", params={"subject": VALID_SUBJECT}).json()
    assert len(default["data"]) == 4  # the spec's default limit is 10


def test_verify_unknown_revoked_and_expired() -> None:
    still = datetime.fromtimestamp(1_800_000_000, UTC)
    fake = FakeClerk(clock=lambda: still)  # a still clock: exact timestamps
    live = _create(fake, name="live").json()
    revoked = _create(fake, name="revoked").json()
    expiring = _create(fake, name="expiring", seconds_until_expiration=5).json()
    _call(fake, "POST", f"/api_keys/{revoked['id']}/revoke", json={})
    fake.advance(6)

    def verify(secret: str) -> httpx.Response:
        return _call(fake, "POST", "/api_keys/verify", json={"secret": secret})

    ok = verify(live["secret"])
    assert ok.status_code == 200 and ok.json()["last_used_at"] == 1_800_000_006_000
    for secret in ("ak_unknown", revoked["secret"], expiring["secret"]):
        answer = verify(secret)
        assert (answer.status_code, _error_code(answer)) == (404, "resource_not_found")
    fake.invalid_verify = "flags"
    assert verify(revoked["secret"]).json()["revoked"] is True
    assert verify(expiring["secret"]).json()["expired"] is True
    assert verify("ak_unknown").status_code == 404


def test_path_ids_must_look_like_clerk_ids(fake: FakeClerk) -> None:
    assert _call(fake, "GET", "/api_keys/ak_123").status_code == 400
    assert _call(fake, "GET", "/api_keys/ak_" + "0" * 32).status_code == 404
    assert _call(fake, "GET", "/elsewhere").status_code == 404
    created = _create(fake).json()
    legacy = "api_key_" + created["id"][3:]
    assert _call(fake, "GET", f"/api_keys/{legacy}").json()["id"] == created["id"]


def test_update_and_delete(fake: FakeClerk) -> None:
    key = _create(fake, seconds_until_expiration=60).json()
    fake.advance(1)
    updated = _call(
        fake, "PATCH", f"/api_keys/{key['id']}", json={"seconds_until_expiration": None}
    ).json()
    assert updated["expiration"] is None and updated["updated_at"] > key["updated_at"]
    refused = _call(fake, "PATCH", f"/api_keys/{key['id']}", json={"name": "renamed"})
    assert (refused.status_code, _error_code(refused)) == (400, "form_param_unknown")
    deleted = _call(fake, "DELETE", f"/api_keys/{key['id']}")
    assert deleted.json() == {"id": key["id"], "object": "api_key", "deleted": True}
    assert _call(fake, "DELETE", f"/api_keys/{key['id']}").status_code == 404


def test_faults_hit_only_their_route_and_count(fake: FakeClerk) -> None:
    fake.fail_next(503, route="POST /api_keys/verify", times=2, retry_after="7")
    assert _create(fake).status_code == 201
    for _ in range(2):
        answer = _call(fake, "POST", "/api_keys/verify", json={"secret": "ak_x"})
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "7"
        assert _error_code(answer) == "internal_clerk_error"
    assert _call(fake, "POST", "/api_keys/verify", json={"secret": "ak_x"}).status_code == 404
    fake.rate_limit(retry_after=None)
    limited = _call(fake, "GET", "/api_keys", params={"subject": VALID_SUBJECT})
    assert limited.status_code == 429 and "Retry-After" not in limited.headers
    assert _error_code(limited) == "too_many_requests"
    fake.fail_next(404)
    missing = _call(fake, "GET", "/api_keys", params={"subject": VALID_SUBJECT})
    assert (missing.status_code, _error_code(missing)) == (404, "resource_not_found")
    fake.fail_next(200, body=b"<html>")
    assert _call(fake, "GET", "/api_keys", params={"subject": VALID_SUBJECT}).content == b"<html>"
    assert fake.count("POST", "/api_keys/verify") == 3 and fake.count("POST") == 4
    assert fake.count("POST /api_keys/verify") == 3 and fake.count("GET /api_keys") == 3


def test_a_fault_after_the_fact_still_acts(fake: FakeClerk) -> None:
    fake.inject(Fault(exception=httpx.ReadTimeout, after=True, route="POST /api_keys"))
    with pytest.raises(httpx.ReadTimeout):
        _create(fake)
    assert len(fake._keys) == 1


async def test_async_latency_does_not_block_the_loop() -> None:
    fake = FakeClerk(latency=0.2)
    async with fake.async_client() as client:
        started = time.monotonic()
        answers = await asyncio.gather(
            *(
                client.get(
                    fake.api_url + "/api_keys",
                    params={"subject": VALID_SUBJECT},
                    headers={"Authorization": f"Bearer {fake.secret_key}"},
                )
                for _ in range(10)
            )
        )
    assert all(a.status_code == 200 for a in answers)
    assert time.monotonic() - started < 1.0  # ten 0.2 s answers overlapped


# --- the fake accepts exactly what the spec accepts ---------------------------------------

words = st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=30)
subjects = st.one_of(
    st.from_regex(r"(user|org|mch|scim)_[A-Za-z0-9_]{27}", fullmatch=True),
    st.from_regex(r"(user|org|usr)_[A-Za-z0-9]{20,30}", fullmatch=True),
)
fields: dict[str, st.SearchStrategy[Any]] = {
    "name": words,
    "subject": subjects,
    "description": st.none() | st.text(max_size=300),
    "scopes": st.lists(words, max_size=3) | st.lists(st.integers(), min_size=1, max_size=2),
    "claims": st.none() | st.dictionaries(words, st.integers(), max_size=2),
    "created_by": st.none() | subjects,
    "seconds_until_expiration": st.none()
    | st.floats(-10, 1e6, allow_nan=False)
    | st.integers(-5, 10**6)
    | st.booleans(),
    "type": words,
    "unexpected": st.integers(),
}


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.fixed_dictionaries({}, optional=fields))
def test_create_accepts_exactly_what_the_spec_accepts(body: dict[str, Any]) -> None:
    fake = FakeClerk()
    schema = load_spec()["paths"]["/api_keys"]["post"]["requestBody"]["content"]["application/json"]
    spec_accepts = OAS30Validator(schema["schema"]).is_valid(body)
    answer = _call(fake, "POST", "/api_keys", json=body)
    assert answer.status_code == (201 if spec_accepts else 400), (body, answer.json())
